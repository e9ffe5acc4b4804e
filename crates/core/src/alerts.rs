//! The alert gate: may the chain touch the cluster while Prometheus says something is wrong?
//!
//! The pure core is [`evaluate`]: an alert blocks iff it is firing, its `severity` label is in
//! the blocking set (default: `critical` only — an alert denylist was a losing battle, seed
//! §10 item 14) and its name is not on the ignore list (seed §10 items 7, 17, 37: kured
//! reboots, a chronic unrelated critical, and the pipeline's own criticals deadlocked the chain).
//!
//! The shell (`prometheus::AlertGate` in the binary) fails **closed**: if Prometheus cannot be asked, or its answer
//! cannot be read, the verdict is [`GateVerdict::Unavailable`], which blocks. The seed treated an
//! unreachable Prometheus as "nothing firing" and passed.
//!
//! The same client also runs instant queries: the pod-ready ratio reported by postflight (and
//! optionally gated with `min_pod_ready_ratio`), and later the deprecated-API checks.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

/// Default Prometheus base URL (the seed's in-cluster service).
pub const DEFAULT_PROMETHEUS_URL: &str = "http://prometheus-server.monitoring.svc.cluster.local:80";

/// Default pod-ready ratio query: ready pods over Running pods (seed §2.4 step 4).
pub const DEFAULT_POD_READY_QUERY: &str =
    r#"sum(kube_pod_status_ready{condition="true"}) / sum(kube_pod_status_phase{phase="Running"})"#;

/// Settings for the alert gate (`alerts:` in the config file). Every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Prometheus base URL; `/api/v1/...` is appended. Default [`DEFAULT_PROMETHEUS_URL`].
    #[serde(with = "url_str")]
    pub prometheus_url: Url,
    /// Values of the `severity` label that block. Default `["critical"]`.
    pub blocking_severities: Vec<String>,
    /// Alert names that never block: each entry is a plain name or a regex, parsed on its own
    /// and matched against the whole name; an entry that would match every alert is refused
    /// (see [`Policy::new`]). Default: `RecentNodeReboot`
    /// (kured reboots), `K8sUpgradeStalled` and `EtcdPreUpgradeSnapshotMissing` (the chain's
    /// own criticals, which would deadlock a resume): the alerts every install has. The seed
    /// also ignored `IngressTTFBCritical`, a critical of its own site (ingress latency from
    /// its NAS, seed failure 17); a site with such an alert lists it, as
    /// `examples/config.yaml` does for the seed site. Setting the key replaces the list.
    pub ignore: Vec<String>,
    /// Timeout of one request to Prometheus (the alert gate, the pod-ready ratio, and the
    /// compatibility gate's deprecated-API query). Default `20s`, the seed compatibility
    /// gate's: every gate fails closed, so a Prometheus slowed by the upgrade's own IO (seed
    /// failures 11 and 34) must get the time the seed gave it before a gate refuses, and a
    /// refusal costs a week (the next detection run).
    #[serde(with = "crate::duration::request")]
    pub request_timeout: Duration,
    /// Instant query whose value is the pod-ready ratio. Default [`DEFAULT_POD_READY_QUERY`].
    pub pod_ready_query: String,
    /// If set, a pod-ready ratio below this (or an unknown ratio) blocks. Default: unset,
    /// i.e. the ratio is only reported, as in the seed.
    pub min_pod_ready_ratio: Option<f64>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            prometheus_url: Url::parse(DEFAULT_PROMETHEUS_URL).expect("default URL parses"),
            blocking_severities: vec!["critical".into()],
            ignore: ["RecentNodeReboot", "K8sUpgradeStalled", "EtcdPreUpgradeSnapshotMissing"]
                .map(String::from)
                .to_vec(),
            request_timeout: Duration::from_secs(20),
            pod_ready_query: DEFAULT_POD_READY_QUERY.into(),
            min_pod_ready_ratio: None,
        }
    }
}

/// Serde adaptor: a base [`Url`] as a string, validated on read: `http` or `https`, a host,
/// and nothing a path is appended to badly or that would leak when logged (a query, a
/// fragment, credentials).
pub mod url_str {
    use url::Url;

    pub fn serialize<S: serde::Serializer>(u: &Url, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(u.as_str())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Url, D::Error> {
        let raw: String = serde::Deserialize::deserialize(d)?;
        parse_base(&raw).map_err(serde::de::Error::custom)
    }

    /// Checks a base URL; the error quotes it (shortened).
    pub fn parse_base(raw: &str) -> Result<Url, String> {
        let shown = crate::names::shorten(raw);
        let url = Url::parse(raw.trim()).map_err(|e| format!("invalid URL {shown}: {e}"))?;
        let why = if !matches!(url.scheme(), "http" | "https") {
            Some("scheme must be http or https")
        } else if url.host_str().is_none_or(str::is_empty) {
            Some("it has no host")
        } else if url.query().is_some() {
            Some("a base URL takes no query (paths are appended to it)")
        } else if url.fragment().is_some() {
            Some("a base URL takes no fragment (paths are appended to it)")
        } else if !url.username().is_empty() || url.password().is_some() {
            Some("credentials in a URL end up in logs and `config` output")
        } else {
            None
        };
        match why {
            Some(why) => Err(format!("invalid URL {shown}: {why}")),
            None => Ok(url),
        }
    }
}

/// A bad alert-gate setting.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    /// An `ignore` entry is not a valid regex on its own, or would ignore every alert.
    #[error("alerts.ignore entry {} is refused: {message}", crate::names::shorten(entry))]
    BadIgnore {
        /// The entry as written.
        entry: String,
        /// The regex compiler's complaint.
        message: String,
    },
    /// `blocking_severities` is empty, so nothing could ever block.
    #[error("alerts.blocking_severities is empty: the gate would never block")]
    NoSeverities,
    /// A `blocking_severities` entry is empty: no alert's severity label is.
    #[error("alerts.blocking_severities has an empty entry, which no alert's severity matches")]
    EmptySeverity,
    /// `min_pod_ready_ratio` is outside 0..=1.
    #[error("alerts.min_pod_ready_ratio {0} is outside 0..=1")]
    BadRatio(f64),
    /// The HTTP client could not be built.
    #[error("failed to build the Prometheus HTTP client: {0}")]
    Client(String),
}

/// Which alerts block: the compiled form of [`AlertsConfig`]'s severities and ignore list.
#[derive(Debug, Clone)]
pub struct Policy {
    severities: BTreeSet<String>,
    /// The ignore entries, each parsed on its own and anchored as a syntax tree; `None` when
    /// the list is empty.
    ignore: Option<regex_automata::meta::Regex>,
}

/// Alert names no rule defines: an ignore entry that matches one of them matches far more
/// than the alerts it was written for (`.*`, `.+`, `\w+`, `Watchdog|.*`), and would silently
/// turn the gate off.
pub const CANARY_NAMES: [&str; 4] = ["", "x", "ZzNoRuleDefinesThisAlert", "k8s_upgrade_chain:canary:0"];

impl Policy {
    /// Compiles a policy. Each ignore entry must stand alone: it is parsed by itself (so
    /// `Watchdog)|(.*`, which only balances inside a wrapper, is refused) and anchored as a
    /// syntax tree, never by pasting text around it, so a plain name matches only itself and a
    /// regex must match the whole alert name. An entry that matches a name no rule defines
    /// ([`CANARY_NAMES`]) is refused: it would ignore every alert.
    pub fn new(blocking_severities: &[String], ignore: &[String]) -> Result<Self, ConfigError> {
        use regex_automata::meta;
        use regex_syntax::hir::{Hir, Look};
        if blocking_severities.is_empty() {
            return Err(ConfigError::NoSeverities);
        }
        for s in blocking_severities {
            if s.is_empty() {
                return Err(ConfigError::EmptySeverity);
            }
        }
        let bad = |entry: &str, message: String| ConfigError::BadIgnore { entry: entry.to_string(), message };
        let build = |hirs: &[Hir]| {
            meta::Regex::builder()
                .configure(meta::Config::new().nfa_size_limit(Some(10 << 20)))
                .build_many_from_hir(hirs)
                .map_err(|e| e.to_string())
        };
        let mut hirs = Vec::with_capacity(ignore.len());
        for entry in ignore {
            if entry.is_empty() {
                return Err(bad(entry, "an empty entry ignores nothing; remove it".into()));
            }
            // The syntax the regex crate accepts (its default nest limit included).
            let hir = regex_syntax::ParserBuilder::new()
                .nest_limit(250)
                .build()
                .parse(entry)
                .map_err(|e| bad(entry, e.to_string()))?;
            let anchored = Hir::concat(vec![Hir::look(Look::Start), hir, Hir::look(Look::End)]);
            let one = build(std::slice::from_ref(&anchored)).map_err(|e| bad(entry, e))?;
            if let Some(canary) = CANARY_NAMES.iter().find(|c| one.is_match(**c)) {
                return Err(bad(
                    entry,
                    format!(
                        "it matches {canary:?}, an alert name no rule defines, so it would ignore every \
                         alert and turn the gate off; list the alerts to ignore by name"
                    ),
                ));
            }
            hirs.push(anchored);
        }
        let ignore =
            if hirs.is_empty() { None } else { Some(build(&hirs).map_err(|e| bad(&ignore.join(", "), e))?) };
        Ok(Self { severities: blocking_severities.iter().cloned().collect(), ignore })
    }

    /// The policy of a config.
    pub fn from_config(cfg: &AlertsConfig) -> Result<Self, ConfigError> {
        Self::new(&cfg.blocking_severities, &cfg.ignore)
    }

    /// Whether `name` is on the ignore list.
    pub fn ignores(&self, name: &str) -> bool {
        self.ignore.as_ref().is_some_and(|re| re.is_match(name))
    }

    /// Whether this one alert blocks.
    pub fn blocks(&self, alert: &Alert) -> bool {
        alert.state == AlertState::Firing
            && alert.severity().is_some_and(|s| self.severities.contains(s))
            && !self.ignores(alert.name())
    }
}

/// One alert from `GET /api/v1/alerts` (unknown fields ignored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Alert {
    /// Labels, including `alertname` and usually `severity`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `firing`, `pending` or `inactive`.
    pub state: AlertState,
}

impl Alert {
    /// The `alertname` label, or `""`.
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map(String::as_str).unwrap_or("")
    }

    /// The `severity` label, if any.
    pub fn severity(&self) -> Option<&str> {
        self.labels.get("severity").map(String::as_str)
    }
}

/// An alert's state as Prometheus reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// Condition true for at least the rule's `for`.
    Firing,
    /// Condition true, `for` not yet elapsed: never blocks.
    Pending,
    /// Not active.
    Inactive,
    /// A state this tool does not know: never blocks on its own.
    #[serde(other)]
    Unknown,
}

/// The gate's answer. Only [`GateVerdict::Pass`] lets a phase go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateVerdict {
    /// Nothing blocking is firing.
    Pass,
    /// These alerts (unique names, sorted) are firing and block.
    Blocked {
        /// The blocking alert names.
        alerts: Vec<String>,
    },
    /// Prometheus could not be asked or answered nonsense; this blocks too (fail closed).
    Unavailable {
        /// What went wrong.
        reason: String,
    },
}

impl GateVerdict {
    /// Whether the phase must not go on.
    pub fn blocks(&self) -> bool {
        !matches!(self, GateVerdict::Pass)
    }
}

impl std::fmt::Display for GateVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GateVerdict::Pass => f.write_str("no blocking alerts firing"),
            GateVerdict::Blocked { alerts } => {
                write!(f, "blocking alerts firing: {}", alerts.join(", "))
            }
            GateVerdict::Unavailable { reason } => {
                write!(f, "alert state unknown, treated as blocked: {reason}")
            }
        }
    }
}

/// The pure gate decision: the unique, sorted names of the alerts that block.
pub fn evaluate(alerts: &[Alert], policy: &Policy) -> GateVerdict {
    let blocking: BTreeSet<&str> = alerts.iter().filter(|a| policy.blocks(a)).map(Alert::name).collect();
    if blocking.is_empty() {
        GateVerdict::Pass
    } else {
        GateVerdict::Blocked { alerts: blocking.into_iter().map(String::from).collect() }
    }
}

/// The pod-ready ratio compared with an optional minimum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RatioVerdict {
    /// No minimum configured, or the ratio meets it.
    Pass,
    /// The ratio is below the minimum.
    TooLow {
        /// The measured ratio.
        ratio: f64,
        /// The configured minimum.
        min: f64,
    },
    /// A minimum is configured but the ratio is unknown (no data): blocks.
    Unknown {
        /// The configured minimum.
        min: f64,
    },
}

/// Pure: compares a measured ratio with an optional minimum. Without a minimum, always passes.
pub fn ratio_verdict(ratio: Option<f64>, min: Option<f64>) -> RatioVerdict {
    match (min, ratio) {
        (None, _) => RatioVerdict::Pass,
        (Some(min), None) => RatioVerdict::Unknown { min },
        (Some(min), Some(r)) if r >= min => RatioVerdict::Pass,
        (Some(min), Some(ratio)) => RatioVerdict::TooLow { ratio, min },
    }
}

/// One sample of an instant query result.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series labels (empty for a scalar).
    pub labels: BTreeMap<String, String>,
    /// The value (`NaN` and infinities as Prometheus reports them).
    pub value: f64,
}

/// Prometheus could not answer a query.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Connect failure, timeout, or a broken body.
    #[error("failed to reach Prometheus at {url}: {message}")]
    Unreachable {
        /// The URL asked (Prometheus URLs are not secret).
        url: String,
        /// The transport error.
        message: String,
    },
    /// A non-2xx status.
    #[error("Prometheus at {url} answered HTTP {status}: {body}")]
    Status {
        /// The URL asked.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// `status: "error"` in the JSON envelope.
    #[error("Prometheus at {url} returned an error ({error_type}): {error}")]
    Api {
        /// The URL asked.
        url: String,
        /// `errorType`.
        error_type: String,
        /// `error`.
        error: String,
    },
    /// The body is not the JSON we expect.
    #[error("failed to parse the answer of Prometheus at {url}: {message}")]
    Parse {
        /// The URL asked.
        url: String,
        /// The parser's complaint.
        message: String,
    },
}

#[derive(Deserialize)]
struct Envelope<T> {
    status: String,
    data: Option<T>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct AlertsData {
    alerts: Vec<Alert>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum QueryData {
    Vector(Vec<VectorSample>),
    Scalar((f64, String)),
    Matrix(serde::de::IgnoredAny),
    String(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct VectorSample {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// Pure: parses a `GET /api/v1/alerts` body into alerts.
pub fn parse_alerts(url: &str, body: &str) -> Result<Vec<Alert>, QueryError> {
    let data: AlertsData = parse_envelope(url, body)?;
    Ok(data.alerts)
}

/// Pure: parses a `GET /api/v1/query` body into samples (a scalar is one unlabelled sample).
pub fn parse_query(url: &str, body: &str) -> Result<Vec<Sample>, QueryError> {
    let parse_err = |message: String| QueryError::Parse { url: url.to_string(), message };
    let value = |raw: &str| {
        parse_value(raw).ok_or_else(|| parse_err(format!("sample value {raw:?} is not a number")))
    };
    match parse_envelope::<QueryData>(url, body)? {
        QueryData::Vector(v) => {
            v.into_iter().map(|s| Ok(Sample { labels: s.metric, value: value(&s.value.1)? })).collect()
        }
        QueryData::Scalar((_, raw)) => Ok(vec![Sample { labels: BTreeMap::new(), value: value(&raw)? }]),
        QueryData::Matrix(_) | QueryData::String(_) => {
            Err(parse_err("expected an instant vector or scalar result".into()))
        }
    }
}

/// Prometheus' float spelling: `NaN`, `+Inf`, `-Inf` or a decimal.
fn parse_value(raw: &str) -> Option<f64> {
    match raw {
        "NaN" => Some(f64::NAN),
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        other => other.parse().ok(),
    }
}

pub fn parse_envelope<T: serde::de::DeserializeOwned>(url: &str, body: &str) -> Result<T, QueryError> {
    let env: Envelope<T> = serde_json::from_str(body)
        .map_err(|e| QueryError::Parse { url: url.to_string(), message: e.to_string() })?;
    if env.status != "success" {
        return Err(QueryError::Api {
            url: url.to_string(),
            error_type: env.error_type.unwrap_or_else(|| "unknown".into()),
            error: env.error.unwrap_or_else(|| format!("status {:?}", env.status)),
        });
    }
    env.data.ok_or_else(|| QueryError::Parse {
        url: url.to_string(),
        message: "no data in a success answer".into(),
    })
}

/// The value of a single-valued query: the first sample; `None` for no data or `NaN` (0/0).
pub fn single_value(samples: &[Sample]) -> Option<f64> {
    samples.first().map(|s| s.value).filter(|v| !v.is_nan())
}

/// Alert checks during a soak: one per interval, at least one.
pub fn soak_rounds(soak: Duration, interval: Duration) -> u32 {
    if soak.is_zero() {
        return 0;
    }
    ((soak.as_millis() / interval.as_millis().max(1)) as u32).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(name: &str) -> Alert {
        Alert { labels: BTreeMap::from([("alertname".into(), name.into())]), state: AlertState::Firing }
    }

    impl Alert {
        fn severity_(mut self, s: &str) -> Self {
            self.labels.insert("severity".into(), s.into());
            self
        }
        fn pending(mut self) -> Self {
            self.state = AlertState::Pending;
            self
        }
    }

    fn default_policy() -> Policy {
        Policy::from_config(&AlertsConfig::default()).unwrap()
    }

    fn blocked(names: &[&str]) -> GateVerdict {
        GateVerdict::Blocked { alerts: names.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn a_firing_critical_blocks() {
        let v = evaluate(&[alert("KubeAPIServerDown").severity_("critical")], &default_policy());
        assert_eq!(v, blocked(&["KubeAPIServerDown"]));
        assert!(v.blocks());
    }

    #[test]
    fn warnings_info_and_unlabelled_alerts_pass() {
        let alerts = [
            alert("PVCStuckPending").severity_("warning"),
            alert("NodeMaintenanceInProgress").severity_("info"),
            alert("NoSeverity"),
        ];
        assert_eq!(evaluate(&alerts, &default_policy()), GateVerdict::Pass);
    }

    #[test]
    fn pending_and_inactive_criticals_pass() {
        let mut inactive = alert("B").severity_("critical");
        inactive.state = AlertState::Inactive;
        let alerts = [alert("A").severity_("critical").pending(), inactive];
        assert_eq!(evaluate(&alerts, &default_policy()), GateVerdict::Pass);
    }

    #[test]
    fn default_ignore_list_covers_reboots_and_the_chains_own_criticals() {
        let alerts = ["RecentNodeReboot", "K8sUpgradeStalled", "EtcdPreUpgradeSnapshotMissing"]
            .map(|n| alert(n).severity_("critical"));
        assert_eq!(evaluate(&alerts, &default_policy()), GateVerdict::Pass);
    }

    #[test]
    fn plain_ignore_names_match_the_whole_name_only() {
        let p = Policy::new(&["critical".into()], &["NodeReboot".into()]).unwrap();
        assert!(p.ignores("NodeReboot"));
        assert!(!p.ignores("RecentNodeReboot"));
        assert!(!p.ignores("NodeRebootX"));
    }

    #[test]
    fn regex_ignore_entries_are_anchored() {
        let p = Policy::new(&["critical".into()], &["Nas.*|Ingress(TTFB)?Critical".into()]).unwrap();
        assert!(p.ignores("NasDiskFull"));
        assert!(p.ignores("IngressTTFBCritical"));
        assert!(p.ignores("IngressCritical"));
        assert!(!p.ignores("MyNasDiskFull"), "must not match mid-name");
        let alerts =
            [alert("NasDiskFull").severity_("critical"), alert("MyNasDiskFull").severity_("critical")];
        assert_eq!(evaluate(&alerts, &p), blocked(&["MyNasDiskFull"]));
    }

    #[test]
    fn invalid_regex_is_a_config_error_naming_it() {
        let err = Policy::new(&["critical".into()], &["Ok".into(), "Bad(".into()]).unwrap_err();
        assert!(matches!(&err, ConfigError::BadIgnore { entry, .. } if entry == "Bad("), "{err}");
        assert!(err.to_string().contains("\"Bad(\""));
    }

    #[test]
    fn empty_severity_set_is_refused() {
        assert_eq!(Policy::new(&[], &[]).unwrap_err(), ConfigError::NoSeverities);
    }

    #[test]
    fn configurable_severities() {
        let p = Policy::new(&["critical".into(), "page".into()], &[]).unwrap();
        let alerts = [alert("A").severity_("page"), alert("B").severity_("warning")];
        assert_eq!(evaluate(&alerts, &p), blocked(&["A"]));
    }

    #[test]
    fn names_are_unique_and_sorted() {
        let alerts = [
            alert("Zed").severity_("critical"),
            alert("Alpha").severity_("critical"),
            alert("Zed").severity_("critical"),
        ];
        assert_eq!(evaluate(&alerts, &default_policy()), blocked(&["Alpha", "Zed"]));
    }

    #[test]
    fn unavailable_blocks() {
        assert!(GateVerdict::Unavailable { reason: "x".into() }.blocks());
        assert!(!GateVerdict::Pass.blocks());
    }

    #[test]
    fn parses_a_real_alerts_answer() {
        let body = include_str!("../../../tests/fixtures/prometheus/alerts-answer.json");
        let alerts = parse_alerts("http://p", body).unwrap();
        assert_eq!(alerts.len(), 3);
        assert_eq!(evaluate(&alerts, &default_policy()), blocked(&["MysqlStandaloneDown"]));
    }

    #[test]
    fn error_envelope_and_garbage_are_errors() {
        let err = parse_alerts("http://p", r#"{"status":"error","errorType":"bad_data","error":"boom"}"#)
            .unwrap_err();
        assert!(matches!(err, QueryError::Api { .. }), "{err}");
        assert!(err.to_string().contains("boom"));
        assert!(matches!(parse_alerts("http://p", "<html>").unwrap_err(), QueryError::Parse { .. }));
        assert!(matches!(
            parse_alerts("http://p", r#"{"status":"success"}"#).unwrap_err(),
            QueryError::Parse { .. }
        ));
    }

    #[test]
    fn parses_vector_scalar_and_special_values() {
        let v = parse_query(
            "http://p",
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"b"},"value":[1.5,"0.97"]}]}}"#,
        )
        .unwrap();
        assert_eq!(v, vec![Sample { labels: BTreeMap::from([("a".into(), "b".into())]), value: 0.97 }]);
        assert_eq!(single_value(&v), Some(0.97));
        let s = parse_query(
            "http://p",
            r#"{"status":"success","data":{"resultType":"scalar","result":[1,"+Inf"]}}"#,
        )
        .unwrap();
        assert_eq!(s[0].value, f64::INFINITY);
        let nan = parse_query(
            "http://p",
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#,
        )
        .unwrap();
        assert_eq!(single_value(&nan), None, "0/0 is no data");
        let empty =
            parse_query("http://p", r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#)
                .unwrap();
        assert_eq!(single_value(&empty), None);
        let bad = parse_query(
            "http://p",
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"x"]}]}}"#,
        );
        assert!(bad.is_err());
    }

    #[test]
    fn ratio_gate_is_optional_and_fails_closed_when_configured() {
        assert_eq!(ratio_verdict(None, None), RatioVerdict::Pass);
        assert_eq!(ratio_verdict(Some(0.1), None), RatioVerdict::Pass);
        assert_eq!(ratio_verdict(Some(0.95), Some(0.9)), RatioVerdict::Pass);
        assert_eq!(ratio_verdict(Some(0.9), Some(0.9)), RatioVerdict::Pass);
        assert_eq!(ratio_verdict(Some(0.5), Some(0.9)), RatioVerdict::TooLow { ratio: 0.5, min: 0.9 });
        assert_eq!(ratio_verdict(None, Some(0.9)), RatioVerdict::Unknown { min: 0.9 });
    }

    #[test]
    fn soak_rounds_cover_the_soak() {
        assert_eq!(soak_rounds(Duration::from_secs(600), Duration::from_secs(60)), 10);
        assert_eq!(soak_rounds(Duration::from_secs(30), Duration::from_secs(60)), 1);
        assert_eq!(soak_rounds(Duration::ZERO, Duration::from_secs(60)), 0);
    }
}
