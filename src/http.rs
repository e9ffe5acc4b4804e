//! The one HTTP client set-up shared by the Prometheus, Pushgateway and Slack shells.

use std::time::Duration;

/// A reqwest client with one overall timeout, on the ring provider (installed here if the
/// binary has not already: reqwest's `rustls-no-provider` mode panics without one).
pub fn client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(timeout).connect_timeout(timeout).build()
}

/// A reqwest error without its URL (callers may put secrets in URLs; here it is just tidier),
/// with its source chain, e.g. "error sending request: connection refused".
pub fn describe(e: &reqwest::Error) -> String {
    let mut out = if e.is_timeout() { "timed out".to_string() } else { String::new() };
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = cur {
        let msg = err.to_string();
        if !msg.is_empty() && !out.contains(&msg) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&msg);
        }
        cur = err.source();
    }
    out
}
