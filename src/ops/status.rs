//! `status`: reads the chain's Jobs, the nodes, the in-flight record, the kill switch and,
//! optionally, the Pushgateway, and summarises them with [`chain_core::status::summarize`].
//! Read-only.

use chain_core::settings::Settings;
use chain_core::status::{Inputs, Status, summarize};
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;

/// Reads everything [`summarize`] needs and summarizes. Jobs and nodes must be readable; the
/// in-flight record, the kill switch and the Pushgateway are best-effort (warnings).
pub async fn read(client: &kube::Client, settings: &Settings, pushgateway: bool) -> anyhow::Result<Status> {
    use kube::{Api, api::ListParams};
    let ns = settings.namespace.as_str();
    let jobs = Api::<Job>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("app={}", chain_core::job::APP_LABEL)))
        .await
        .map_err(|e| anyhow::anyhow!("failed to list chain Jobs in namespace {ns}: {e}"))?
        .items;
    let nodes = crate::k8s::list_nodes(client).await?;
    let mut errors = Vec::new();
    let in_flight =
        match crate::k8s::annotations::NamespaceAnnotations::new(client.clone(), ns, &settings.annotations())
            .read()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                errors.push(e.to_string());
                None
            }
        };
    let kill = match crate::k8s::killswitch::check(client, ns).await {
        Ok(k) => Some(k),
        Err(e) => {
            errors.push(e.to_string());
            None
        }
    };
    let scrape = if pushgateway {
        match crate::pushgateway::Pushgateway::new(&settings.pushgateway) {
            Ok(p) => match p.read().await {
                Ok(s) => Some(s),
                Err(e) => {
                    errors.push(e.to_string());
                    None
                }
            },
            Err(e) => {
                errors.push(e.to_string());
                None
            }
        }
    } else {
        None
    };
    // The worker claims (worker concurrency above 1): best effort, like the in-flight record.
    let claims = match kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone()).get(ns).await {
        Ok(n) => {
            let keys = chain_core::waves::ClaimKeys::new(&settings.annotation_prefix);
            match chain_core::waves::Claims::parse(&keys, &n.metadata.annotations.unwrap_or_default()) {
                Ok(c) => Some(c),
                Err(e) => {
                    errors.push(format!("namespace {ns}: {e}"));
                    None
                }
            }
        }
        Err(e) => {
            errors.push(format!("failed to read the worker claims on namespace {ns}: {e}"));
            None
        }
    };
    let inputs = Inputs {
        jobs: &jobs,
        claims: claims.as_ref(),
        nodes: &nodes,
        in_flight: in_flight.as_ref(),
        kill_switch: kill.as_ref(),
        metrics: scrape.as_ref(),
        read_errors: errors,
        now: Timestamp::now(),
    };
    Ok(summarize(&inputs, settings))
}
