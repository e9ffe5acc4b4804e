//! Slack notifications against a local HTTP receiver.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chain_core::settings::SlackConfig;
use k8s_upgrade_chain::slack::{Delivery, Slack, phase_prefix};
use support::prom::{Reply, StubHttp, free_port};

/// The secret part of the webhook path; it must never show up in logs or results.
const TOKEN: &str = "T0000SECRET/B0000SECRET/xoxTOPSECRETtoken";

/// A `tracing` writer that keeps everything for inspection.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).to_string()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures every log line (all levels) for the current thread; tokio tests run on one thread.
fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

/// A notifier whose webhook file points at `base` + the secret path.
fn slack_for(base: &str, timeout: Duration, dir: &tempfile::TempDir) -> (Slack, String) {
    let url = format!("{base}/services/{TOKEN}");
    let file = dir.path().join("slack_webhook");
    std::fs::write(&file, format!("{url}\n")).unwrap();
    let cfg = SlackConfig { webhook_file: file, timeout };
    (Slack::from_config(&cfg, phase_prefix("worker", Some("k8s-node2"))), url)
}

fn assert_secret_absent(haystack: &str, url: &str) {
    assert!(!haystack.contains("SECRET"), "secret leaked: {haystack}");
    assert!(!haystack.contains(url), "webhook URL leaked: {haystack}");
    assert!(!haystack.contains("/services/"), "webhook path leaked: {haystack}");
}

#[tokio::test]
async fn posts_prefixed_json_text() {
    let stub = StubHttp::start(Reply::Status(200, vec![], "ok".into())).await;
    let dir = tempfile::tempdir().unwrap();
    let (slack, _) = slack_for(&stub.url, Duration::from_secs(5), &dir);
    assert!(slack.is_enabled());

    assert_eq!(slack.post("drained, evicted 7 pods").await, Delivery::Sent);

    let seen = stub.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("POST", &*format!("/services/{TOKEN}")));
    assert!(seen[0].headers.iter().any(|(k, v)| k == "content-type" && v.starts_with("application/json")));
    let body: serde_json::Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(body, serde_json::json!({"text": "[k8s-upgrade-worker:k8s-node2] drained, evicted 7 pods"}));
}

#[tokio::test]
async fn failures_are_warnings_and_never_reveal_the_url() {
    let (logs, _guard) = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let mut reasons = Vec::new();

    let e500 = StubHttp::start(Reply::Status(500, vec![], "internal_error".into())).await;
    let (slack, url) = slack_for(&e500.url, Duration::from_secs(5), &dir);
    let Delivery::Failed { reason } = slack.post("hello").await else { panic!("500 must fail") };
    assert!(reason.contains("HTTP 500") && reason.contains("internal_error"), "{reason}");
    assert_secret_absent(&reason, &url);
    reasons.push((reason, url));

    let e429 =
        StubHttp::start(Reply::Status(429, vec![("retry-after".into(), "30".into())], "rate_limited".into()))
            .await;
    let (slack, url) = slack_for(&e429.url, Duration::from_secs(5), &dir);
    let Delivery::Failed { reason } = slack.post("hello").await else { panic!("429 must fail") };
    assert!(reason.contains("HTTP 429") && reason.contains("Retry-After 30"), "{reason}");
    reasons.push((reason, url));

    let hang = StubHttp::start(Reply::Hang).await;
    let (slack, url) = slack_for(&hang.url, Duration::from_millis(300), &dir);
    let Delivery::Failed { reason } = slack.post("hello").await else { panic!("timeout must fail") };
    assert!(reason.contains("timed out"), "{reason}");
    assert_eq!(hang.seen().len(), 1, "the request did reach the receiver");
    reasons.push((reason, url));

    let (slack, url) = slack_for(&format!("http://127.0.0.1:{}", free_port()), Duration::from_secs(5), &dir);
    let Delivery::Failed { reason } = slack.post("hello").await else { panic!("refused must fail") };
    reasons.push((reason, url));

    let logged = logs.text();
    assert_eq!(logged.matches("WARN").count(), 4, "one warning per failure:\n{logged}");
    for (reason, url) in &reasons {
        assert_secret_absent(reason, url);
        assert_secret_absent(&logged, url);
    }
    // Debug output of the notifier hides it too.
    assert_secret_absent(&format!("{slack:?}"), &reasons[3].1);
}

#[tokio::test]
async fn a_missing_webhook_file_disables_with_one_info_log() {
    let (logs, _guard) = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let cfg = SlackConfig { webhook_file: dir.path().join("absent"), ..SlackConfig::default() };
    let slack = Slack::from_config(&cfg, "[k8s-version-check]");
    assert!(!slack.is_enabled());
    assert_eq!(slack.post("x").await, Delivery::Disabled);
    assert_eq!(slack.post("y").await, Delivery::Disabled);
    let logged = logs.text();
    assert_eq!(logged.lines().count(), 1, "{logged}");
    assert!(logged.contains("INFO") && logged.contains("Slack notifications disabled"), "{logged}");
}
