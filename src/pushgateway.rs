//! The Prometheus Pushgateway over HTTP, the shell around [`chain_core::metrics`].
//!
//! # Failure is a warning
//! [`Pushgateway::push`] never returns an error: it logs a warning and returns
//! [`PushOutcome::Failed`], so a phase cannot be failed by a metrics outage by accident.

use chain_core::metrics::{CONTENT_TYPE, Grouping, Metric, PushgatewayConfig, Scrape, encode};
use url::Url;

/// What happened to a push. Failure has already been logged as a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// The Pushgateway accepted the metrics.
    Pushed,
    /// The push failed; the phase goes on.
    Failed {
        /// Why.
        reason: String,
    },
}

/// A Pushgateway request failed (for the calls whose callers branch: delete, read).
#[derive(Debug, thiserror::Error)]
#[error("failed to {action} Pushgateway {url}: {message}")]
pub struct PushgatewayError {
    /// What we tried: "push to", "delete group at", "read".
    pub action: &'static str,
    /// The URL (not secret).
    pub url: String,
    /// Transport error or HTTP status and body.
    pub message: String,
}

/// The Pushgateway client.
#[derive(Debug, Clone)]
pub struct Pushgateway {
    http: reqwest::Client,
    base: Url,
}

impl Pushgateway {
    /// Builds a client from the config.
    pub fn new(cfg: &PushgatewayConfig) -> Result<Self, PushgatewayError> {
        let http = crate::http::client(cfg.timeout).map_err(|e| PushgatewayError {
            action: "build a client for",
            url: cfg.url.to_string(),
            message: e.to_string(),
        })?;
        Ok(Self { http, base: cfg.url.clone() })
    }

    async fn send(
        &self,
        action: &'static str,
        req: reqwest::RequestBuilder,
        url: &Url,
    ) -> Result<String, PushgatewayError> {
        let err = |message: String| PushgatewayError { action, url: url.to_string(), message };
        let resp = req.send().await.map_err(|e| err(crate::http::describe(&e)))?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| err(crate::http::describe(&e)))?;
        if !status.is_success() {
            return Err(err(format!("HTTP {status}: {}", body.trim())));
        }
        Ok(body)
    }

    /// POSTs `metrics` to `group` (replacing only the families named). Never fails: a problem
    /// is logged as a warning and returned as [`PushOutcome::Failed`].
    pub async fn push(&self, group: &Grouping, metrics: &[Metric]) -> PushOutcome {
        match self.try_push(group, metrics).await {
            Ok(()) => PushOutcome::Pushed,
            Err(e) => {
                tracing::warn!("{e} (metrics are best-effort; carrying on)");
                PushOutcome::Failed { reason: e.to_string() }
            }
        }
    }

    /// POSTs `metrics` to `group`, returning the error (for callers that must know).
    pub async fn try_push(&self, group: &Grouping, metrics: &[Metric]) -> Result<(), PushgatewayError> {
        let url = group.url(&self.base);
        let req = self
            .http
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(encode(metrics));
        self.send("push to", req, &url).await.map(drop)
    }

    /// DELETEs a whole group (all its metrics), e.g. the leaked in-flight latch.
    pub async fn delete_group(&self, group: &Grouping) -> Result<(), PushgatewayError> {
        let url = group.url(&self.base);
        self.send("delete group at", self.http.delete(url.clone()), &url).await.map(drop)
    }

    /// Reads and parses the Pushgateway's `/metrics`.
    pub async fn read(&self) -> Result<Scrape, PushgatewayError> {
        let mut url = self.base.clone();
        url.path_segments_mut().expect("http(s) URLs have a path").pop_if_empty().push("metrics");
        let body = self.send("read", self.http.get(url.clone()), &url).await?;
        Ok(Scrape::parse(&body))
    }
}
