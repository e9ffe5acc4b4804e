//! Prometheus: the alert gate and instant queries over HTTP, the imperative shell around
//! [`chain_core::alerts`]. It fails **closed**: if Prometheus cannot be asked, or its answer
//! cannot be read, the verdict is [`GateVerdict::Unavailable`], which blocks (the seed passed).

use std::time::Duration;

use chain_core::alerts::{
    Alert, AlertsConfig, ConfigError, GateVerdict, Policy, QueryError, RatioVerdict, Sample, evaluate,
    parse_alerts, parse_envelope, parse_query, ratio_verdict, single_value,
};
use url::Url;

/// The alert gate and instant-query client (the imperative shell around [`evaluate`]).
#[derive(Debug, Clone)]
pub struct AlertGate {
    http: reqwest::Client,
    base: Url,
    policy: Policy,
    pod_ready_query: String,
    min_pod_ready_ratio: Option<f64>,
}

impl AlertGate {
    /// Builds the gate from its config (compiles the policy, builds the HTTP client).
    pub fn new(cfg: &AlertsConfig) -> Result<Self, ConfigError> {
        if let Some(min) = cfg.min_pod_ready_ratio
            && !(0.0..=1.0).contains(&min)
        {
            return Err(ConfigError::BadRatio(min));
        }
        let policy = Policy::from_config(cfg)?;
        let http =
            crate::http::client(cfg.request_timeout).map_err(|e| ConfigError::Client(e.to_string()))?;
        Ok(Self {
            http,
            base: cfg.prometheus_url.clone(),
            policy,
            pod_ready_query: cfg.pod_ready_query.clone(),
            min_pod_ready_ratio: cfg.min_pod_ready_ratio,
        })
    }

    /// The compiled policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    fn endpoint(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        let joined = format!("{}/{}", url.path().trim_end_matches('/'), path);
        url.set_path(&joined);
        url
    }

    async fn get(&self, url: Url) -> Result<String, QueryError> {
        let shown = url.to_string();
        let unreachable = |e: reqwest::Error| QueryError::Unreachable {
            url: shown.clone(),
            message: crate::http::describe(&e),
        };
        let resp = self.http.get(url.clone()).send().await.map_err(unreachable)?;
        let status = resp.status();
        let body = resp.text().await.map_err(unreachable)?;
        // Prometheus answers API errors (bad query) with 4xx/5xx and a JSON envelope; prefer its
        // message when there is one.
        if !status.is_success() {
            if let Err(api @ QueryError::Api { .. }) = parse_envelope::<serde_json::Value>(&shown, &body) {
                return Err(api);
            }
            return Err(QueryError::Status {
                url: shown,
                status: status.as_u16(),
                body: truncate(&body, 200),
            });
        }
        Ok(body)
    }

    /// Fetches every alert Prometheus knows (`GET /api/v1/alerts`).
    pub async fn fetch_alerts(&self) -> Result<Vec<Alert>, QueryError> {
        let url = self.endpoint("api/v1/alerts");
        let body = self.get(url.clone()).await?;
        parse_alerts(url.as_str(), &body)
    }

    /// Asks once. Any failure to ask is [`GateVerdict::Unavailable`], which blocks.
    pub async fn check_once(&self) -> GateVerdict {
        match self.fetch_alerts().await {
            Ok(alerts) => evaluate(&alerts, &self.policy),
            Err(e) => GateVerdict::Unavailable { reason: e.to_string() },
        }
    }

    /// Asks every `interval` until nothing blocks or `budget` is spent. Returns
    /// [`GateVerdict::Pass`] as soon as a check passes, otherwise the last blocking verdict
    /// (the names still firing, or why Prometheus could not be asked).
    pub async fn wait_until_clear(&self, budget: Duration, interval: Duration) -> GateVerdict {
        let deadline = tokio::time::Instant::now() + budget;
        loop {
            let verdict = match tokio::time::timeout_at(deadline, self.check_once()).await {
                Ok(v) => v,
                Err(_) => GateVerdict::Unavailable {
                    reason: format!(
                        "no answer from Prometheus within the wait budget of {}",
                        chain_core::duration::format(budget)
                    ),
                },
            };
            if !verdict.blocks() {
                return verdict;
            }
            let now = tokio::time::Instant::now();
            if now + interval > deadline {
                return verdict;
            }
            tracing::info!(%verdict, "alert gate blocked; checking again in {}", chain_core::duration::format(interval));
            tokio::time::sleep(interval).await;
        }
    }

    /// Runs an instant query (`GET /api/v1/query?query=...`) at the server's current time.
    pub async fn instant_query(&self, query: &str) -> Result<Vec<Sample>, QueryError> {
        let mut url = self.endpoint("api/v1/query");
        url.query_pairs_mut().append_pair("query", query);
        let body = self.get(url.clone()).await?;
        parse_query(url.as_str(), &body)
    }

    /// The pod-ready ratio from the configured query; `Ok(None)` when there is no data.
    pub async fn pod_ready_ratio(&self) -> Result<Option<f64>, QueryError> {
        Ok(single_value(&self.instant_query(&self.pod_ready_query).await?))
    }

    /// The pod-ready ratio and its verdict against the configured `min_pod_ready_ratio`. A
    /// failed query is logged as a warning and reads as an unknown ratio, which passes when no
    /// minimum is configured (report-only, as in the seed) and blocks when one is.
    pub async fn pod_ready(&self) -> (Option<f64>, RatioVerdict) {
        let ratio = match self.pod_ready_ratio().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("pod-ready ratio unknown: {e}");
                None
            }
        };
        (ratio, ratio_verdict(ratio, self.min_pod_ready_ratio))
    }
}

fn truncate(s: &str, max: usize) -> String {
    let s = s.trim();
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_validation() {
        let cfg: AlertsConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg, AlertsConfig::default());
        assert_eq!(cfg.request_timeout, Duration::from_secs(20));
        let cfg: AlertsConfig =
            serde_json::from_str(r#"{"prometheus_url":"http://prom:9090/sub/","request_timeout":"5s"}"#)
                .unwrap();
        assert_eq!(cfg.request_timeout, Duration::from_secs(5));
        let gate = AlertGate::new(&cfg).unwrap();
        assert_eq!(gate.endpoint("api/v1/alerts").as_str(), "http://prom:9090/sub/api/v1/alerts");
        assert!(serde_json::from_str::<AlertsConfig>(r#"{"prometheus_url":"not a url"}"#).is_err());
        assert!(serde_json::from_str::<AlertsConfig>(r#"{"prometheus_url":"ftp://x"}"#).is_err());
        assert!(serde_json::from_str::<AlertsConfig>(r#"{"typo":1}"#).is_err());
        let bad = AlertsConfig { min_pod_ready_ratio: Some(1.5), ..Default::default() };
        assert_eq!(AlertGate::new(&bad).unwrap_err(), ConfigError::BadRatio(1.5));
        let bad = AlertsConfig { ignore: vec!["(".into()], ..Default::default() };
        assert!(matches!(AlertGate::new(&bad).unwrap_err(), ConfigError::BadIgnore { .. }));
    }
}
