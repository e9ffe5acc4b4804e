//! The Kubernetes API: the clients every caller takes, listing nodes, and one module per kind of
//! call: applying Jobs ([`spawn`]), the kill switch, Events, the in-flight annotations, the
//! access review of preflight.

pub mod access;
pub mod annotations;
pub mod events;
pub mod killswitch;
pub mod records;
pub mod spawn;

use anyhow::Context as _;
use kube::{Client, Config};

/// The two clients the tool uses.
///
/// `api` keeps kube's default retry policy (429/503/504 with backoff) for ordinary calls.
/// `evict` has it switched off: since kube 4.0 (kube-rs/kube#2007) every client retries 429
/// up to 15 times, which would hide a PDB-blocked eviction for minutes inside one call. The
/// drain engine runs its own eviction loop with jitter, a deadline and kill-switch checks.
#[derive(Clone)]
pub struct Clients {
    pub api: Client,
    pub evict: Client,
}

impl Clients {
    /// Builds both clients from one resolved configuration.
    pub fn from_config(config: Config) -> anyhow::Result<Self> {
        if let Ok(mut s) = SERVER.write() {
            *s = Some(config.cluster_url.to_string());
        }
        let api = Client::try_from(config.clone()).context("failed to build the Kubernetes client")?;
        let evict = Client::try_from(without_retry(config))
            .context("failed to build the Kubernetes eviction client")?;
        Ok(Self { api, evict })
    }

    /// Kubeconfig first (`$KUBECONFIG`, `~/.kube/config`), then the in-cluster service account,
    /// which is what a Job pod uses.
    ///
    /// Loading touches no network: a kubeconfig that is missing, unreadable or malformed (or,
    /// in a pod, a missing service account) is bad input (exit 2), named by its path (QA B5).
    pub async fn infer() -> anyhow::Result<Self> {
        let config = Config::infer()
            .await
            .with_context(|| {
                format!(
                    "failed to load a Kubernetes configuration: the kubeconfig {} or the in-cluster \
                     service account",
                    kubeconfig_paths()
                )
            })
            .map_err(crate::exit::bad_input)?;
        Self::from_config(config)
    }
}

/// The kubeconfig files kube reads, as an error names them: `$KUBECONFIG` (a `:`-separated
/// list), else `~/.kube/config`.
fn kubeconfig_paths() -> String {
    match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        Some(v) => format!("{} (KUBECONFIG)", v.to_string_lossy()),
        None => match std::env::var_os("HOME") {
            Some(home) => format!("{}/.kube/config", home.to_string_lossy()),
            None => "~/.kube/config".to_string(),
        },
    }
}

/// The API server of the clients built last ([`Clients::from_config`]), for [`server_note`].
static SERVER: std::sync::RwLock<Option<String>> = std::sync::RwLock::new(None);

/// ` (Kubernetes API server URL)` when `err` is a failure to reach the API server (kube's
/// `ServiceError` / `HyperError`: connection refused, DNS, TLS), whose own text never names
/// the server (QA C); empty otherwise.
pub fn server_note(err: &anyhow::Error) -> String {
    let unreachable = err.chain().any(|c| {
        matches!(c.downcast_ref::<kube::Error>(), Some(kube::Error::Service(_) | kube::Error::HyperError(_)))
    });
    match SERVER.read().ok().and_then(|s| s.clone()) {
        Some(url) if unreachable => format!(" (Kubernetes API server {url})"),
        _ => String::new(),
    }
}

/// The configuration for the eviction client: kube's built-in retry off.
pub fn without_retry(mut config: Config) -> Config {
    config.default_retry = false;
    config
}

/// Connects with an explicit kubeconfig context, or infers the configuration.
pub async fn connect(context: Option<&str>) -> anyhow::Result<Clients> {
    match context {
        None => Clients::infer().await,
        Some(ctx) => {
            let opts =
                kube::config::KubeConfigOptions { context: Some(ctx.to_string()), ..Default::default() };
            // Reading the kubeconfig touches no network: a context it lacks is bad input (exit 2).
            let config = Config::from_kubeconfig(&opts)
                .await
                .with_context(|| {
                    format!(
                        "failed to load kubeconfig context {ctx:?} (--context / KUBE_CONTEXT) from {}",
                        kubeconfig_paths()
                    )
                })
                .map_err(crate::exit::bad_input)?;
            Clients::from_config(config)
        }
    }
}

/// Lists every node, 500 per page. An expired continue token (410 Gone) restarts the list.
pub async fn list_nodes(client: &Client) -> anyhow::Result<Vec<k8s_openapi::api::core::v1::Node>> {
    use k8s_openapi::api::core::v1::Node;
    use kube::{Api, api::ListParams};
    let api: Api<Node> = Api::all(client.clone());
    'restart: for _attempt in 0..3 {
        let mut out = Vec::new();
        let mut params = ListParams::default().limit(500);
        loop {
            let page = match api.list(&params).await {
                Ok(page) => page,
                Err(kube::Error::Api(s)) if s.code == 410 => continue 'restart,
                Err(e) => return Err(anyhow::Error::new(e).context("failed to list nodes")),
            };
            out.extend(page.items);
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(out),
            }
        }
    }
    anyhow::bail!("failed to list nodes: the list kept expiring (410 Gone) while paging")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_config_has_retry_off() {
        let cfg = Config::new("http://127.0.0.1:1".parse().unwrap());
        assert!(cfg.default_retry, "kube's default is retry on; this test guards the assumption");
        assert!(!without_retry(cfg).default_retry);
    }
}
