//! Gauges pushed to the Prometheus Pushgateway, and reading them back: the metric families, the
//! 0.0.4 text encoding, grouping URLs and parsing the Pushgateway's `/metrics`. Pure.
//!
//! # Why hand-written text
//! prometheus-client encodes OpenMetrics (`# EOF`, `# UNIT`, counters as `foo_total`), and the
//! Pushgateway parses only the classic 0.0.4 text format (prometheus/pushgateway#400). We push
//! a handful of gauges from a batch Job, so [`encode`] writes the 0.0.4 text directly: one
//! `# HELP` and `# TYPE name gauge` per family, samples grouped under it, LF line endings,
//! escaped label values. That is smaller and easier to check than adapting the registry output.
//!
//! # Groups and POST
//! - `job="k8s-version-upgrade"` ([`Grouping::chain`]): the chain-wide latch gauges
//!   (`k8s_upgrade_in_flight`, `_started_timestamp`, `_snapshot_taken`, `_blocked`, `_held`).
//! - `job="k8s-version-upgrade", phase=..., node=...` ([`Grouping::phase`]): one group per phase
//!   Job (no `node` for preflight/postflight), holding the phase timestamps, outcome and drain
//!   figures. Per-Job groups matter because a push replaces whole metric families within its
//!   group: in one shared group, node3's outcome would erase node2's.
//! - `job="k8s-version-check"` ([`Grouping::detection`]): the detector's gauges.
//! - `job="k8s-version-upgrade", node=...` ([`Grouping::node`]): a node's own state across
//!   phases: `k8s_upgrade_awaiting_ack` (its upgrade failed and waits for a human).
//!
//! Pushes use **POST**, which replaces only the families named in the push and keeps the rest of
//! the group: a phase can push `..._phase_started_timestamp` when it starts and the outcome
//! later without re-sending the start; the preflight can set `blocked` without touching
//! `in_flight`. PUT (replace the whole group) would make every push restate everything.
//! The shell's `pushgateway::Pushgateway::delete_group` (HTTP DELETE) drops a group: the
//! leaked-latch reconcile.
//!
//! This module is the data (families, encoding, grouping URLs, parsing `/metrics`); the HTTP
//! client, for which a failed push is only a warning, is the binary's `pushgateway` module.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

/// The chain's group: `job/k8s-version-upgrade`.
pub const CHAIN_JOB: &str = "k8s-version-upgrade";
/// The detector's group: `job/k8s-version-check`.
pub const DETECTION_JOB: &str = "k8s-version-check";
/// Default Pushgateway base URL (the seed's in-cluster service).
pub const DEFAULT_URL: &str = "http://prometheus-prometheus-pushgateway.monitoring:9091";
/// The Content-Type of the classic text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Where and how to push (`pushgateway:` in the config file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushgatewayConfig {
    /// Base URL; `/metrics/job/...` is appended. Default [`DEFAULT_URL`].
    #[serde(with = "crate::alerts::url_str")]
    pub url: Url,
    /// Timeout of one request. Default `5s`.
    #[serde(with = "crate::duration::request")]
    pub timeout: Duration,
}

impl Default for PushgatewayConfig {
    fn default() -> Self {
        Self { url: Url::parse(DEFAULT_URL).expect("default URL parses"), timeout: Duration::from_secs(5) }
    }
}

/// How a phase ended, as the `outcome` label of `k8s_upgrade_phase_outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseOutcome {
    /// Started, not finished yet.
    Running,
    /// Finished its work.
    Succeeded,
    /// A gate refused (blocked or held); nothing was changed. Exit 0.
    Refused,
    /// Stopped by the kill switch.
    Halted,
    /// Aborted with an error.
    Failed,
}

impl PhaseOutcome {
    /// Every outcome.
    pub const ALL: [PhaseOutcome; 5] = [
        PhaseOutcome::Running,
        PhaseOutcome::Succeeded,
        PhaseOutcome::Refused,
        PhaseOutcome::Halted,
        PhaseOutcome::Failed,
    ];

    /// The outcome a label (or annotation) value names, if any.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseOutcome::Running => "running",
            PhaseOutcome::Succeeded => "succeeded",
            PhaseOutcome::Refused => "refused",
            PhaseOutcome::Halted => "halted",
            PhaseOutcome::Failed => "failed",
        }
    }
}

/// Every gauge this tool pushes. The names are the seed's, kept exactly, so its alerts and
/// dashboards keep working; the `Phase*`, `Drain*` and `Pods*` gauges are new.
#[derive(Debug, Clone, PartialEq)]
pub enum Metric {
    /// `k8s_upgrade_in_flight` (chain group): 1 from preflight until postflight finishes.
    InFlight(bool),
    /// `k8s_upgrade_started_timestamp` (chain group): epoch seconds the chain started; 0 when idle.
    StartedTimestamp(f64),
    /// `k8s_upgrade_snapshot_taken` (chain group): 1 once the pre-upgrade etcd snapshot is verified.
    SnapshotTaken(bool),
    /// `k8s_upgrade_snapshot_skipped` (chain group): 1 while a chain runs without a pre-upgrade
    /// etcd snapshot because the site opted out (`hooks.allow_no_etcd_snapshot`), so the
    /// `EtcdPreUpgradeSnapshotMissing` alert does not page for a decision the site made.
    SnapshotSkipped(bool),
    /// `k8s_upgrade_blocked` (chain group): 1 when a gate refusal needs a human (ACTIONABLE).
    Blocked(bool),
    /// `k8s_upgrade_held` (chain group): 1 when the upgrade waits on something known (quiet).
    Held(bool),
    /// `k8s_upgrade_available{kind,running,target}` (detection group): 1 when a target exists;
    /// otherwise pushed as `{kind="none",running=R,target=R}` 0.
    Available {
        /// `patch`, `minor` or `none`.
        kind: String,
        /// The running (oldest kubelet) version.
        running: String,
        /// The target version (= running when none).
        target: String,
        /// Whether an upgrade is available.
        available: bool,
    },
    /// `k8s_version_check_last_run_timestamp` (detection group): epoch seconds of the last run.
    VersionCheckLastRun(f64),
    /// `k8s_upgrade_phase_started_timestamp` (phase group): epoch seconds the phase started.
    PhaseStarted(f64),
    /// `k8s_upgrade_phase_finished_timestamp` (phase group): epoch seconds the phase ended.
    PhaseFinished(f64),
    /// `k8s_upgrade_phase_outcome{outcome}` (phase group): 1 for the phase's current outcome.
    PhaseOutcome(PhaseOutcome),
    /// `k8s_upgrade_drain_duration_seconds` (phase group): wall time of the node's drain.
    DrainDuration(Duration),
    /// `k8s_upgrade_pods_evicted` (phase group): pods removed through the eviction API.
    PodsEvicted(u64),
    /// `k8s_upgrade_pods_fallback_deleted` (phase group): pods deleted after eviction stayed
    /// blocked past its deadline.
    PodsFallbackDeleted(u64),
    /// `k8s_upgrade_awaiting_ack` (node group, [`Grouping::node`]): 1 while the node's own
    /// upgrade failed (or was cut short) and no operator has acknowledged it
    /// (`k8s-upgrade-chain ack NODE`); 0 once acknowledged. The `K8sUpgradeNodeAwaitingAck`
    /// alert fires on it.
    AwaitingAck(bool),
}

/// Names and HELP text of every family, in one table so docs and tests read the same list.
pub const FAMILIES: &[(&str, &str)] = &[
    (
        "k8s_upgrade_in_flight",
        "1 while an upgrade chain is in flight (set by preflight, cleared by postflight).",
    ),
    ("k8s_upgrade_started_timestamp", "Unix time the in-flight upgrade chain started; 0 when idle."),
    ("k8s_upgrade_snapshot_taken", "1 once the pre-upgrade etcd snapshot was taken and verified."),
    ("k8s_upgrade_blocked", "1 when a gate refused the upgrade and a human must act."),
    ("k8s_upgrade_held", "1 when the upgrade is held waiting on a known condition (no action needed)."),
    (
        "k8s_upgrade_available",
        "1 when a Kubernetes upgrade is available; labels give kind, running and target versions.",
    ),
    ("k8s_version_check_last_run_timestamp", "Unix time of the last version check run."),
    ("k8s_upgrade_phase_started_timestamp", "Unix time the phase Job started its work."),
    ("k8s_upgrade_phase_finished_timestamp", "Unix time the phase Job finished (any outcome)."),
    (
        "k8s_upgrade_phase_outcome",
        "1 for the phase's current outcome (running, succeeded, refused, halted, failed).",
    ),
    ("k8s_upgrade_drain_duration_seconds", "Wall-clock seconds the node drain took."),
    ("k8s_upgrade_pods_evicted", "Pods removed from the node through the eviction API during the drain."),
    (
        "k8s_upgrade_pods_fallback_deleted",
        "Pods deleted directly after eviction stayed blocked past its deadline.",
    ),
    (
        "k8s_upgrade_snapshot_skipped",
        "1 while the chain runs without an etcd snapshot because the site opted out (hooks.allow_no_etcd_snapshot).",
    ),
    (
        "k8s_upgrade_awaiting_ack",
        "1 while the node's own upgrade failed and waits for an operator's acknowledgement (k8s-upgrade-chain ack NODE).",
    ),
];

impl Metric {
    /// The metric name.
    pub fn name(&self) -> &'static str {
        let i = match self {
            Metric::InFlight(_) => 0,
            Metric::StartedTimestamp(_) => 1,
            Metric::SnapshotTaken(_) => 2,
            Metric::Blocked(_) => 3,
            Metric::Held(_) => 4,
            Metric::Available { .. } => 5,
            Metric::VersionCheckLastRun(_) => 6,
            Metric::PhaseStarted(_) => 7,
            Metric::PhaseFinished(_) => 8,
            Metric::PhaseOutcome(_) => 9,
            Metric::DrainDuration(_) => 10,
            Metric::PodsEvicted(_) => 11,
            Metric::PodsFallbackDeleted(_) => 12,
            Metric::SnapshotSkipped(_) => 13,
            Metric::AwaitingAck(_) => 14,
        };
        FAMILIES[i].0
    }

    /// The HELP text.
    pub fn help(&self) -> &'static str {
        let name = self.name();
        FAMILIES.iter().find(|(n, _)| *n == name).map(|(_, h)| *h).unwrap_or("")
    }

    /// Sample labels (grouping labels are added by the Pushgateway).
    pub fn labels(&self) -> Vec<(&'static str, String)> {
        match self {
            Metric::Available { kind, running, target, .. } => {
                vec![("kind", kind.clone()), ("running", running.clone()), ("target", target.clone())]
            }
            Metric::PhaseOutcome(o) => vec![("outcome", o.as_str().to_string())],
            _ => vec![],
        }
    }

    /// The sample value.
    pub fn value(&self) -> f64 {
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        match self {
            Metric::InFlight(b)
            | Metric::SnapshotTaken(b)
            | Metric::SnapshotSkipped(b)
            | Metric::Blocked(b)
            | Metric::Held(b)
            | Metric::AwaitingAck(b) => flag(*b),
            Metric::Available { available, .. } => flag(*available),
            Metric::StartedTimestamp(t)
            | Metric::VersionCheckLastRun(t)
            | Metric::PhaseStarted(t)
            | Metric::PhaseFinished(t) => *t,
            Metric::PhaseOutcome(_) => 1.0,
            Metric::DrainDuration(d) => d.as_secs_f64(),
            Metric::PodsEvicted(n) | Metric::PodsFallbackDeleted(n) => *n as f64,
        }
    }
}

impl Metric {
    /// The chain group's gauges when no chain is in flight: what postflight pushes at the end
    /// (seed §2.4 step 7): in_flight, snapshot_taken, started_timestamp, blocked and held all 0,
    /// and snapshot_skipped 0 (ours).
    pub fn chain_cleared() -> Vec<Metric> {
        vec![
            Metric::InFlight(false),
            Metric::SnapshotTaken(false),
            Metric::SnapshotSkipped(false),
            Metric::StartedTimestamp(0.0),
            Metric::Blocked(false),
            Metric::Held(false),
        ]
    }
}

/// Epoch seconds of a timestamp, for the `*_timestamp` gauges.
pub fn epoch_seconds(t: jiff::Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

/// Pure: the 0.0.4 text of `metrics`, families in first-seen order, each with HELP and TYPE.
pub fn encode(metrics: &[Metric]) -> String {
    let mut order: Vec<&'static str> = Vec::new();
    let mut by_name: BTreeMap<&'static str, Vec<&Metric>> = BTreeMap::new();
    for m in metrics {
        if !by_name.contains_key(m.name()) {
            order.push(m.name());
        }
        by_name.entry(m.name()).or_default().push(m);
    }
    let mut out = String::new();
    for name in order {
        let family = &by_name[name];
        let _ = writeln!(out, "# HELP {name} {}", escape_help(family[0].help()));
        let _ = writeln!(out, "# TYPE {name} gauge");
        for m in family {
            out.push_str(name);
            let labels = m.labels();
            if !labels.is_empty() {
                let parts: Vec<String> =
                    labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape_label_value(v))).collect();
                let _ = write!(out, "{{{}}}", parts.join(","));
            }
            let _ = writeln!(out, " {}", format_value(m.value()));
        }
    }
    out
}

/// Label value escaping of the text format: backslash, double quote and newline.
pub fn escape_label_value(v: &str) -> String {
    v.replace('\\', r"\\").replace('"', "\\\"").replace('\n', r"\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', r"\\").replace('\n', r"\n")
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        // `{}` prints integers without a fraction and never uses an exponent: exact and parseable.
        format!("{v}")
    }
}

/// A Pushgateway grouping key: `job` plus ordered extra labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grouping {
    /// The `job` label.
    pub job: String,
    /// Further grouping labels, in path order.
    pub labels: Vec<(String, String)>,
}

impl Grouping {
    /// `job="k8s-version-upgrade"`: the chain-wide latch gauges.
    pub fn chain() -> Self {
        Self { job: CHAIN_JOB.into(), labels: vec![] }
    }

    /// `job="k8s-version-check"`: the detector.
    pub fn detection() -> Self {
        Self { job: DETECTION_JOB.into(), labels: vec![] }
    }

    /// `job="k8s-version-upgrade", node`: one node's own state across phases (whether its
    /// failed upgrade awaits an acknowledgement). Detection restates it from the nodes'
    /// annotations on every run; the phase and `ack` write it when it changes.
    pub fn node(node: &str) -> Self {
        Self { job: CHAIN_JOB.into(), labels: vec![("node".into(), node.into())] }
    }

    /// `job="k8s-version-upgrade", phase, node`: one phase Job's gauges (`node` only for
    /// per-node phases).
    pub fn phase(phase: &str, node: Option<&str>) -> Self {
        let mut labels = vec![("phase".to_string(), phase.to_string())];
        if let Some(node) = node {
            labels.push(("node".into(), node.into()));
        }
        Self { job: CHAIN_JOB.into(), labels }
    }

    /// Pure: `{base}/metrics/job/<job>[/<label>/<value>...]`. Values that are empty or contain
    /// `/` use the `<label>@base64/<urlsafe base64>` form; others are percent-encoded.
    pub fn url(&self, base: &Url) -> Url {
        let mut url = base.clone();
        {
            let mut segs = url.path_segments_mut().expect("http(s) URLs have a path");
            segs.pop_if_empty().push("metrics");
            for (k, v) in std::iter::once(("job", self.job.as_str()))
                .chain(self.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            {
                if v.is_empty() || v.contains('/') {
                    segs.push(&format!("{k}@base64")).push(&base64_url(v.as_bytes()));
                } else {
                    segs.push(k).push(v);
                }
            }
        }
        url
    }
}

/// URL-safe base64 with padding (RFC 4648 §5); an empty value is `=`, as the Pushgateway wants.
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    if bytes.is_empty() {
        return "=".into();
    }
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One parsed sample of exposition text.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrapedSample {
    /// Metric name.
    pub name: String,
    /// All labels (including `job`, `instance` and other grouping labels).
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// Parsed Pushgateway `/metrics` text: samples plus `# TYPE` declarations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    /// Samples in file order.
    pub samples: Vec<ScrapedSample>,
    /// Family name to declared type (`gauge`, `counter`, ...).
    pub types: BTreeMap<String, String>,
}

impl Scrape {
    /// Pure, tolerant parse: comments other than `# TYPE` and lines that do not parse are
    /// skipped (the reconcile must read what it can, not fail on one odd line).
    pub fn parse(text: &str) -> Self {
        let mut scrape = Scrape::default();
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (it.next(), it.next()) {
                    scrape.types.insert(name.into(), kind.into());
                }
            } else if !line.is_empty()
                && !line.starts_with('#')
                && let Some(s) = parse_sample(line)
            {
                scrape.samples.push(s);
            }
        }
        scrape
    }

    /// Samples named `name` whose labels include every `(key, value)` in `matching`.
    pub fn find<'a>(
        &'a self,
        name: &'a str,
        matching: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a ScrapedSample> {
        self.samples.iter().filter(move |s| {
            s.name == name && matching.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The value of the first sample matching, if any.
    pub fn value(&self, name: &str, matching: &[(&str, &str)]) -> Option<f64> {
        self.find(name, matching).next().map(|s| s.value)
    }

    /// The chain latch as the detector's reconcile needs it: `k8s_upgrade_in_flight` and
    /// `k8s_upgrade_started_timestamp` in the chain group (`job="k8s-version-upgrade"`, no
    /// phase label).
    pub fn chain_latch(&self) -> ChainLatch {
        let chain = |name: &str| {
            self.find(name, &[("job", CHAIN_JOB)])
                .find(|s| s.labels.get("phase").is_none_or(|p| p.is_empty()))
                .map(|s| s.value)
        };
        ChainLatch {
            in_flight: chain("k8s_upgrade_in_flight").map(|v| v >= 0.5),
            started_timestamp: chain("k8s_upgrade_started_timestamp").filter(|t| *t > 0.0),
        }
    }
}

impl Scrape {
    /// The nodes whose `k8s_upgrade_awaiting_ack` (node group) reads 1, sorted: detection sets
    /// those that no longer await an acknowledgement back to 0.
    pub fn awaiting_ack_nodes(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self
            .find("k8s_upgrade_awaiting_ack", &[("job", CHAIN_JOB)])
            .filter(|s| s.value >= 0.5)
            .filter_map(|s| s.labels.get("node").filter(|n| !n.is_empty()).cloned())
            .collect();
        nodes.sort();
        nodes.dedup();
        nodes
    }
}

/// The chain's latch gauges read back; `None` when not pushed (or 0 for the timestamp).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChainLatch {
    /// `k8s_upgrade_in_flight == 1`.
    pub in_flight: Option<bool>,
    /// `k8s_upgrade_started_timestamp`, epoch seconds, when non-zero.
    pub started_timestamp: Option<f64>,
}

fn parse_sample(line: &str) -> Option<ScrapedSample> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = parse_labels(r, &mut labels)?;
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(ScrapedSample { name: name.into(), labels, value })
}

/// Parses `k="v",k2="v2"}` (after the `{`), returning the text after `}`.
fn parse_labels<'a>(mut s: &'a str, labels: &mut BTreeMap<String, String>) -> Option<&'a str> {
    loop {
        s = s.trim_start().trim_start_matches(',').trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Some(rest);
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_string();
        s = s[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        labels.insert(key, value);
        s = &s[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_gauges_in_the_classic_text_format() {
        let text = encode(&[
            Metric::InFlight(true),
            Metric::StartedTimestamp(1_763_726_400.0),
            Metric::Available {
                kind: "patch".into(),
                running: "1.34.1".into(),
                target: "1.34.2".into(),
                available: true,
            },
        ]);
        insta::assert_snapshot!(text, @r###"
        # HELP k8s_upgrade_in_flight 1 while an upgrade chain is in flight (set by preflight, cleared by postflight).
        # TYPE k8s_upgrade_in_flight gauge
        k8s_upgrade_in_flight 1
        # HELP k8s_upgrade_started_timestamp Unix time the in-flight upgrade chain started; 0 when idle.
        # TYPE k8s_upgrade_started_timestamp gauge
        k8s_upgrade_started_timestamp 1763726400
        # HELP k8s_upgrade_available 1 when a Kubernetes upgrade is available; labels give kind, running and target versions.
        # TYPE k8s_upgrade_available gauge
        k8s_upgrade_available{kind="patch",running="1.34.1",target="1.34.2"} 1
        "###);
        assert!(!text.contains("# EOF") && !text.contains('\r'));
    }

    #[test]
    fn samples_of_one_family_share_one_type_line() {
        let text = encode(&[
            Metric::PhaseOutcome(PhaseOutcome::Running),
            Metric::InFlight(false),
            Metric::PhaseOutcome(PhaseOutcome::Failed),
        ]);
        assert_eq!(text.matches("# TYPE k8s_upgrade_phase_outcome gauge").count(), 1);
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                r#"k8s_upgrade_phase_outcome{outcome="running"} 1"#,
                r#"k8s_upgrade_phase_outcome{outcome="failed"} 1"#,
                "k8s_upgrade_in_flight 0"
            ]
        );
    }

    #[test]
    fn every_family_has_a_unique_well_formed_name_and_help() {
        let mut names: Vec<&str> = FAMILIES.iter().map(|(n, _)| *n).collect();
        assert!(names.iter().all(|n| {
            n.starts_with("k8s_")
                && n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        }));
        assert!(FAMILIES.iter().all(|(_, h)| !h.is_empty()));
        names.sort();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len());
    }

    #[test]
    fn values_are_exact_and_specials_spelt_the_prometheus_way() {
        assert_eq!(format_value(1.5), "1.5");
        assert_eq!(format_value(1_763_726_400.25), "1763726400.25");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(Metric::DrainDuration(Duration::from_millis(1500)).value(), 1.5);
        assert_eq!(Metric::PodsEvicted(7).value(), 7.0);
        let t: jiff::Timestamp = "2026-11-21T12:00:00.5Z".parse().unwrap();
        assert_eq!(epoch_seconds(t), 1_795_262_400.5);
    }

    #[test]
    fn label_values_are_escaped_and_read_back() {
        let tricky = "a\\b \"q\"\nnext";
        let text = encode(&[Metric::Available {
            kind: tricky.into(),
            running: "1".into(),
            target: "2".into(),
            available: false,
        }]);
        assert!(text.contains(r#"kind="a\\b \"q\"\nnext""#), "{text}");
        let back = Scrape::parse(&text);
        assert_eq!(back.samples[0].labels["kind"], tricky);
        assert_eq!(back.types["k8s_upgrade_available"], "gauge");
    }

    #[test]
    fn grouping_urls() {
        let base = Url::parse("http://pgw:9091").unwrap();
        assert_eq!(Grouping::chain().url(&base).as_str(), "http://pgw:9091/metrics/job/k8s-version-upgrade");
        assert_eq!(
            Grouping::detection().url(&base).as_str(),
            "http://pgw:9091/metrics/job/k8s-version-check"
        );
        assert_eq!(
            Grouping::phase("worker", Some("k8s-node2")).url(&base).as_str(),
            "http://pgw:9091/metrics/job/k8s-version-upgrade/phase/worker/node/k8s-node2"
        );
        let sub = Url::parse("http://pgw:9091/prefix/").unwrap();
        assert_eq!(
            Grouping::phase("pre flight", None).url(&sub).as_str(),
            "http://pgw:9091/prefix/metrics/job/k8s-version-upgrade/phase/pre%20flight"
        );
        let slash = Grouping { job: "a/b".into(), labels: vec![("node".into(), String::new())] };
        assert_eq!(slash.url(&base).as_str(), "http://pgw:9091/metrics/job@base64/YS9i/node@base64/=");
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, want) in [
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("/var/tmp", "L3Zhci90bXA="),
            ("\u{ff}\u{fe}", "w7_Dvg=="),
        ] {
            assert_eq!(base64_url(input.as_bytes()), want, "{input:?}");
        }
    }

    #[test]
    fn parses_pushgateway_text_tolerantly() {
        let text = include_str!("../../../tests/fixtures/prometheus/pushgateway-metrics.txt");
        let s = Scrape::parse(text);
        assert_eq!(
            s.chain_latch(),
            ChainLatch { in_flight: Some(true), started_timestamp: Some(1_763_726_400.0) }
        );
        assert_eq!(s.types["k8s_upgrade_in_flight"], "gauge");
        assert_eq!(
            s.value("k8s_upgrade_phase_outcome", &[("node", "k8s-node2"), ("outcome", "succeeded")]),
            Some(1.0)
        );
        assert_eq!(
            s.value("push_time_seconds", &[("job", "k8s-version-upgrade"), ("phase", "")]),
            Some(1.7637264e9)
        );
        assert_eq!(s.value("missing", &[]), None);
        assert!(s.samples.iter().all(|x| !x.name.contains("garbage")));
    }

    #[test]
    fn chain_cleared_reads_back_as_idle() {
        let s = encode(&Metric::chain_cleared())
            .replace("k8s_upgrade_in_flight 0", "k8s_upgrade_in_flight{job=\"k8s-version-upgrade\"} 0")
            .replace(
                "k8s_upgrade_started_timestamp 0",
                "k8s_upgrade_started_timestamp{job=\"k8s-version-upgrade\"} 0",
            );
        assert_eq!(
            Scrape::parse(&s).chain_latch(),
            ChainLatch { in_flight: Some(false), started_timestamp: None }
        );
    }

    #[test]
    fn an_empty_or_zero_latch_reads_as_idle() {
        assert_eq!(Scrape::parse("").chain_latch(), ChainLatch { in_flight: None, started_timestamp: None });
        let idle = Scrape::parse(
            "k8s_upgrade_in_flight{instance=\"\",job=\"k8s-version-upgrade\"} 0\nk8s_upgrade_started_timestamp{instance=\"\",job=\"k8s-version-upgrade\"} 0\n",
        );
        assert_eq!(idle.chain_latch(), ChainLatch { in_flight: Some(false), started_timestamp: None });
    }

    #[test]
    fn outcomes_read_back_from_their_label_values() {
        for o in PhaseOutcome::ALL {
            assert_eq!(PhaseOutcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(PhaseOutcome::parse("Succeeded"), None);
        assert_eq!(PhaseOutcome::parse(""), None);
    }

    #[test]
    fn node_groups_and_the_nodes_awaiting_an_acknowledgement() {
        let base = Url::parse("http://pgw:9091").unwrap();
        assert_eq!(
            Grouping::node("k8s-node3").url(&base).as_str(),
            "http://pgw:9091/metrics/job/k8s-version-upgrade/node/k8s-node3"
        );
        let s = Scrape::parse(
            "k8s_upgrade_awaiting_ack{instance=\"\",job=\"k8s-version-upgrade\",node=\"k8s-node3\"} 1\n\
             k8s_upgrade_awaiting_ack{instance=\"\",job=\"k8s-version-upgrade\",node=\"k8s-node1\"} 0\n\
             k8s_upgrade_awaiting_ack{instance=\"\",job=\"other\",node=\"k8s-node2\"} 1\n\
             k8s_upgrade_awaiting_ack{instance=\"\",job=\"k8s-version-upgrade\",node=\"k8s-master\"} 1\n",
        );
        assert_eq!(s.awaiting_ack_nodes(), ["k8s-master", "k8s-node3"]);
        let text = encode(&[Metric::AwaitingAck(true), Metric::SnapshotSkipped(false)]);
        assert!(
            text.contains("# TYPE k8s_upgrade_awaiting_ack gauge\nk8s_upgrade_awaiting_ack 1\n"),
            "{text}"
        );
        assert!(text.contains("k8s_upgrade_snapshot_skipped 0\n"), "{text}");
    }

    #[test]
    fn config_defaults() {
        let cfg: PushgatewayConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg, PushgatewayConfig::default());
        assert_eq!(cfg.timeout, Duration::from_secs(5));
        assert!(serde_json::from_str::<PushgatewayConfig>(r#"{"url":"nope"}"#).is_err());
    }
}
