//! Slack notifications through an incoming webhook. Best-effort by design.
//!
//! - The webhook URL is a secret: it is read from a file (a mounted Secret), kept in a type
//!   whose `Debug` is redacted, and never logged. reqwest errors embed the request URL, so every
//!   error is stripped with `without_url()` before it is formatted.
//! - A missing file disables notifications with one info log; that is not an error.
//! - A failed post (timeout, 429, 500, refused) is a warning and never an error for the caller
//!   (seed §2.0: "a failed post only prints a warning and never fails the phase").
//! - Messages carry a prefix naming the sender: `[k8s-upgrade-<phase>(:<node>)]`, or
//!   `[k8s-version-check]` for detection.

use std::path::Path;

use chain_core::settings::SlackConfig;

/// The detection step's prefix.
pub const DETECTION_PREFIX: &str = "[k8s-version-check]";

/// The prefix of a phase's messages: `[k8s-upgrade-worker:k8s-node2]`, `[k8s-upgrade-preflight]`.
pub fn phase_prefix(phase: &str, node: Option<&str>) -> String {
    match node.filter(|n| !n.is_empty()) {
        Some(node) => format!("[k8s-upgrade-{phase}:{node}]"),
        None => format!("[k8s-upgrade-{phase}]"),
    }
}

/// The webhook URL. `Debug` and `Display` never show it.
#[derive(Clone)]
struct Webhook(reqwest::Url);

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Webhook(<redacted>)")
    }
}

/// What became of a message. Nothing here is an error for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Slack accepted it.
    Sent,
    /// Notifications are disabled (no webhook file); nothing was sent.
    Disabled,
    /// The post failed; a warning was logged. `reason` never contains the URL.
    Failed {
        /// What went wrong.
        reason: String,
    },
}

/// A Slack notifier with a fixed prefix.
#[derive(Debug, Clone)]
pub struct Slack {
    target: Option<(reqwest::Client, Webhook)>,
    prefix: String,
}

impl Slack {
    /// Builds a notifier from the config, reading the webhook file now. A missing file
    /// disables notifications (one info log); an unreadable, empty or malformed one disables
    /// them with a warning. Never fails.
    pub fn from_config(cfg: &SlackConfig, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        let target =
            read_webhook(&cfg.webhook_file).and_then(|hook| match crate::http::client(cfg.timeout) {
                Ok(client) => Some((client, hook)),
                Err(e) => {
                    tracing::warn!(
                        "Slack notifications disabled: failed to build an HTTP client: {}",
                        e.without_url()
                    );
                    None
                }
            });
        Self { target, prefix }
    }

    /// A notifier that sends nothing.
    pub fn disabled(prefix: impl Into<String>) -> Self {
        Self { target: None, prefix: prefix.into() }
    }

    /// Whether messages are actually sent.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// The prefix put before every message.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Posts `{prefix} {text}`. Failures are logged as warnings and returned as
    /// [`Delivery::Failed`]; callers may ignore the result.
    pub async fn post(&self, text: &str) -> Delivery {
        let Some((client, hook)) = &self.target else {
            return Delivery::Disabled;
        };
        let body = serde_json::json!({ "text": format!("{} {}", self.prefix, text) });
        let result = client.post(hook.0.clone()).json(&body).send().await;
        let reason = match result {
            Ok(resp) if resp.status().is_success() => return Delivery::Sent,
            Ok(resp) => {
                let status = resp.status();
                let retry = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| format!(" (Retry-After {v})"))
                    .unwrap_or_default();
                let detail = resp.text().await.unwrap_or_default();
                let detail: String = detail.trim().chars().take(100).collect();
                format!("Slack answered HTTP {status}{retry}: {detail}")
            }
            Err(e) => crate::http::describe(&e.without_url()),
        };
        tracing::warn!("failed to post to Slack (notifications are best-effort; carrying on): {reason}");
        Delivery::Failed { reason }
    }
}

fn read_webhook(path: &Path) -> Option<Webhook> {
    let raw = match std::fs::read_to_string(path) {
        Ok(raw) => raw,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!("Slack notifications disabled: no webhook file at {}", path.display());
            return None;
        }
        Err(e) => {
            tracing::warn!(
                "Slack notifications disabled: failed to read webhook file {}: {e}",
                path.display()
            );
            return None;
        }
    };
    let raw = raw.trim();
    if raw.is_empty() {
        tracing::warn!("Slack notifications disabled: webhook file {} is empty", path.display());
        return None;
    }
    match reqwest::Url::parse(raw) {
        // The parse error text does not echo the input, but say nothing about it anyway.
        Ok(url) if matches!(url.scheme(), "http" | "https") => Some(Webhook(url)),
        _ => {
            tracing::warn!(
                "Slack notifications disabled: webhook file {} does not hold an http(s) URL",
                path.display()
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(phase_prefix("worker", Some("k8s-node2")), "[k8s-upgrade-worker:k8s-node2]");
        assert_eq!(phase_prefix("preflight", None), "[k8s-upgrade-preflight]");
        assert_eq!(phase_prefix("postflight", Some("")), "[k8s-upgrade-postflight]");
    }

    #[test]
    fn the_webhook_is_redacted_in_debug() {
        let hook = Webhook(reqwest::Url::parse("https://hooks.slack.com/services/T/B/SECRET").unwrap());
        let slack = Slack { target: None, prefix: "p".into() };
        assert!(!format!("{hook:?}").contains("SECRET"));
        assert!(!format!("{slack:?}").contains("SECRET"));
    }

    #[test]
    fn missing_empty_and_malformed_files_disable() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = |name: &str| SlackConfig { webhook_file: dir.path().join(name), ..Default::default() };
        assert!(!Slack::from_config(&cfg("absent"), "p").is_enabled());
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        assert!(!Slack::from_config(&cfg("empty"), "p").is_enabled());
        std::fs::write(dir.path().join("bad"), "not a url").unwrap();
        assert!(!Slack::from_config(&cfg("bad"), "p").is_enabled());
        std::fs::write(dir.path().join("ok"), "https://hooks.example/x\n").unwrap();
        assert!(Slack::from_config(&cfg("ok"), "p").is_enabled());
    }

    #[test]
    fn config_defaults() {
        let cfg: SlackConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg.webhook_file, Path::new(chain_core::settings::DEFAULT_WEBHOOK_FILE));
        assert_eq!(cfg.timeout, std::time::Duration::from_secs(5));
    }
}
