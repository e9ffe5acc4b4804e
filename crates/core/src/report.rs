//! `report`: the weekly Slack report (seed-system.md §8, `nightly-report.py`).
//!
//! Pure: [`compose`] turns what the shell (the binary's `ops::report::gather`) gathered into the
//! message:
//! a headline (blocked / held / upgraded / in progress / nothing to do, with a stale-detector
//! warning), node versions (uniform or MIXED), the detector's age, the detected target, the
//! gate's reasons grouped by what can be done about them, and the Jobs of the last 26 hours.
//! The compatibility gate is re-run only when an upgrade is available and blocked or held, as
//! in the seed.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::{batch::v1::Job, core::v1::Node};
use serde::Serialize;

use crate::{
    compat::{Reason, Tag},
    metrics::{CHAIN_JOB, DETECTION_JOB, Scrape},
};

/// A detector older than this (about 25 h) is reported as stale, as in the seed.
pub const STALE_AFTER_SECONDS: f64 = 90_000.0;
/// Jobs created within this window are listed (26 h, as in the seed).
pub const RECENT_JOBS_SECONDS: i64 = 93_600;
/// The Slack prefix of the report.
pub const PREFIX: &str = "[k8s-upgrade-report]";

/// One recent Job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecentJob {
    /// Job name.
    pub name: String,
    /// `Failed`, `Complete`, `Active` or `Pending`.
    pub status: String,
    /// Seconds since it was created.
    pub age_seconds: i64,
}

/// Everything [`compose`] looks at.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// The Pushgateway's gauges (empty when it could not be read).
    pub metrics: Scrape,
    /// Node name and kubelet version (`v1.34.2`).
    pub nodes: Vec<(String, String)>,
    /// Jobs of the last 26 h in the tool's namespace, newest first.
    pub jobs: Vec<RecentJob>,
    /// The gate's reasons when it was re-run: `None` not re-run, `Err` it could not be.
    pub reasons: Option<Result<Vec<Reason>, String>>,
    /// Epoch seconds now.
    pub now: f64,
}

/// What the gauges say.
#[derive(Debug, Clone, PartialEq)]
pub struct Detected {
    /// `k8s_upgrade_available == 1`.
    pub available: bool,
    /// The `target` label.
    pub target: Option<String>,
    /// The `kind` label.
    pub kind: Option<String>,
    /// The `running` label.
    pub running: Option<String>,
    /// `k8s_upgrade_blocked == 1`.
    pub blocked: bool,
    /// `k8s_upgrade_held == 1`.
    pub held: bool,
    /// `k8s_version_check_last_run_timestamp`.
    pub last_run: Option<f64>,
}

/// Reads the report's gauges from a scrape (pure).
pub fn detected(m: &Scrape) -> Detected {
    let avail = m.find("k8s_upgrade_available", &[("job", DETECTION_JOB)]).next();
    let label = |k: &str| avail.and_then(|s| s.labels.get(k)).filter(|v| !v.is_empty()).cloned();
    let chain = |name: &str| {
        m.find(name, &[("job", CHAIN_JOB)])
            .find(|s| s.labels.get("phase").is_none_or(|p| p.is_empty()))
            .is_some_and(|s| s.value >= 0.5)
    };
    Detected {
        available: avail.is_some_and(|s| s.value >= 0.5),
        target: label("target"),
        kind: label("kind"),
        running: label("running"),
        blocked: chain("k8s_upgrade_blocked"),
        held: chain("k8s_upgrade_held"),
        last_run: m
            .value("k8s_version_check_last_run_timestamp", &[("job", DETECTION_JOB)])
            .filter(|t| *t > 0.0),
    }
}

/// Whether the gate should be re-run for the report: available and blocked or held.
pub fn needs_gate(d: &Detected) -> bool {
    d.available && (d.blocked || d.held)
}

/// `45s`, `12m`, `3h 5m`, `2d 4h` (pure).
pub fn age(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

fn strip_v(v: &str) -> &str {
    v.strip_prefix('v').unwrap_or(v)
}

/// Composes the report (pure).
pub fn compose(inputs: &Inputs) -> String {
    let d = detected(&inputs.metrics);
    let target = d.target.as_deref().map(strip_v).unwrap_or("?");
    let mut versions: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, v) in &inputs.nodes {
        versions.entry(strip_v(v)).or_default().push(name);
    }
    let uniform_on_target = versions.len() == 1 && versions.contains_key(target);

    let headline = if d.available {
        if d.blocked {
            format!("🔴 BLOCKED (action needed) — {target}")
        } else if d.held {
            format!("⏸️ HELD — {target} not yet upgradable")
        } else if uniform_on_target {
            format!("🟢 UPGRADED — all nodes on {target}")
        } else {
            format!("🟡 IN PROGRESS / gate passed — {target}")
        }
    } else {
        "⚪ No upgrade needed".to_string()
    };
    let stale = d.last_run.is_none_or(|t| inputs.now - t > STALE_AFTER_SECONDS);
    let mut out = String::new();
    if stale {
        out.push_str("⚠️ Detector did not run last night — ");
    }
    out.push_str(&format!("Weekly Kubernetes upgrade report: {headline}\n"));

    match versions.len() {
        0 => out.push_str("Nodes: unknown\n"),
        1 => out.push_str(&format!(
            "Nodes: uniform v{} ({} nodes)\n",
            versions.keys().next().unwrap(),
            inputs.nodes.len()
        )),
        _ => {
            let parts: Vec<String> =
                versions.iter().map(|(v, names)| format!("v{v}: {}", names.join(", "))).collect();
            out.push_str(&format!("Nodes: MIXED — {}\n", parts.join("; ")));
        }
    }
    match d.last_run {
        Some(t) => out.push_str(&format!(
            "Detector: last ran {} ago ({})\n",
            age(inputs.now - t),
            if stale { "STALE" } else { "fresh" }
        )),
        None => out.push_str("Detector: no run recorded (STALE)\n"),
    }
    if d.available {
        out.push_str(&format!(
            "Detected: {target} ({} upgrade from {})\n",
            d.kind.as_deref().unwrap_or("?"),
            d.running.as_deref().map(strip_v).unwrap_or("?")
        ));
    } else if let Some(r) = &d.running {
        out.push_str(&format!("Detected: running {}, nothing newer\n", strip_v(r)));
    }

    match &inputs.reasons {
        None => {}
        Some(Err(e)) => out.push_str(&format!("Could not re-run the compatibility gate: {e}\n")),
        Some(Ok(reasons)) => {
            for (tag, title) in [
                (Tag::Actionable, "Action needed"),
                (Tag::Waiting, "Waiting on upstream"),
                (Tag::Pinned, "Pinned (held by us)"),
            ] {
                let group: Vec<&Reason> = reasons.iter().filter(|r| r.tag == tag).collect();
                if !group.is_empty() {
                    out.push_str(&format!("*{title}*\n"));
                    for r in group {
                        out.push_str(&format!("  • {}\n", r.text));
                    }
                }
            }
            if reasons.is_empty() {
                out.push_str("The compatibility gate passes now; the next detection run proceeds.\n");
            }
        }
    }

    if inputs.jobs.is_empty() {
        out.push_str("Recent Jobs (26 h): none\n");
    } else {
        out.push_str("Recent Jobs (26 h):\n");
        for j in &inputs.jobs {
            out.push_str(&format!("  • {} — {} ({} ago)\n", j.name, j.status, age(j.age_seconds as f64)));
        }
    }
    out
}

/// `Failed`, `Complete`, `Active` or `Pending` from a Job's status.
pub fn job_status(job: &Job) -> &'static str {
    match crate::job::job_state(job) {
        crate::job::JobState::Failed => "Failed",
        crate::job::JobState::Complete => "Complete",
        crate::job::JobState::Active => {
            if job.status.as_ref().and_then(|s| s.active).unwrap_or(0) > 0 {
                "Active"
            } else {
                "Pending"
            }
        }
    }
}

/// Jobs created within [`RECENT_JOBS_SECONDS`] of `now`, newest first (pure).
pub fn recent_jobs(jobs: &[Job], now: Timestamp) -> Vec<RecentJob> {
    let mut out: Vec<RecentJob> = jobs
        .iter()
        .filter_map(|j| {
            let created = j.metadata.creation_timestamp.as_ref()?.0;
            let age = now.duration_since(created).as_secs();
            (age <= RECENT_JOBS_SECONDS).then(|| RecentJob {
                name: j.metadata.name.clone().unwrap_or_default(),
                status: job_status(j).into(),
                age_seconds: age,
            })
        })
        .collect();
    out.sort_by_key(|j| (j.age_seconds, j.name.clone()));
    out
}

/// A node's `status.nodeInfo.kubeletVersion` as reported (empty when missing).
pub fn kubelet(n: &Node) -> String {
    n.status
        .as_ref()
        .and_then(|s| s.node_info.as_ref())
        .map(|i| i.kubelet_version.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: f64 = 1_790_000_000.0;

    /// Pushgateway text as the detector and the chain push it.
    struct Gauges(String);

    fn gauges() -> Gauges {
        Gauges(String::new())
    }

    impl Gauges {
        fn available(mut self, kind: &str, running: &str, target: &str) -> Self {
            self.0.push_str(&format!(
                "k8s_upgrade_available{{instance=\"\",job=\"k8s-version-check\",kind=\"{kind}\",running=\"{running}\",target=\"{target}\"}} 1\n"
            ));
            self
        }
        fn nothing_newer(mut self, running: &str) -> Self {
            self.0.push_str(&format!(
                "k8s_upgrade_available{{instance=\"\",job=\"k8s-version-check\",kind=\"none\",running=\"{running}\",target=\"{running}\"}} 0\n"
            ));
            self
        }
        fn ran_ago(mut self, secs: f64) -> Self {
            self.0.push_str(&format!(
                "k8s_version_check_last_run_timestamp{{instance=\"\",job=\"k8s-version-check\"}} {}\n",
                NOW - secs
            ));
            self
        }
        fn chain(mut self, name: &str, v: u8) -> Self {
            self.0.push_str(&format!("{name}{{instance=\"\",job=\"k8s-version-upgrade\"}} {v}\n"));
            self
        }
        fn blocked(self) -> Self {
            self.chain("k8s_upgrade_blocked", 1)
        }
        fn held(self) -> Self {
            self.chain("k8s_upgrade_held", 1)
        }
        fn scrape(&self) -> Scrape {
            Scrape::parse(&format!("# HELP junk\n{}not a sample line\n", self.0))
        }
    }

    fn nodes(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    fn inputs(g: Gauges, n: &[(&str, &str)]) -> Inputs {
        Inputs { metrics: g.scrape(), nodes: nodes(n), jobs: vec![], reasons: None, now: NOW }
    }

    fn reason(tag: Tag, text: &str) -> Reason {
        Reason { tag, text: text.into() }
    }

    fn first_line(s: &str) -> &str {
        s.lines().next().unwrap()
    }

    #[test]
    fn nothing_to_do() {
        let r =
            compose(&inputs(gauges().nothing_newer("1.34.2").ran_ago(3600.0), &[("k8s-master", "v1.34.2")]));
        assert_eq!(first_line(&r), "Weekly Kubernetes upgrade report: ⚪ No upgrade needed");
        assert!(r.contains("Nodes: uniform v1.34.2 (1 nodes)"), "{r}");
        assert!(r.contains("Detector: last ran 1h 0m ago (fresh)"), "{r}");
        assert!(r.contains("Detected: running 1.34.2, nothing newer"), "{r}");
        assert!(r.contains("Recent Jobs (26 h): none"), "{r}");
    }

    #[test]
    fn blocked_lists_actionable_reasons_without_tags() {
        let mut i = inputs(
            gauges().available("minor", "1.35.3", "1.36.0").ran_ago(600.0).blocked(),
            &[("k8s-master", "v1.35.3"), ("k8s-node1", "v1.35.3")],
        );
        i.reasons = Some(Ok(vec![
            reason(Tag::Actionable, "calico 3.30 supports Kubernetes up to 1.35: upgrade calico to >= 3.32"),
            reason(Tag::Actionable, "node k8s-node1 containerd 1.7 < required 2.0"),
        ]));
        let r = compose(&i);
        assert_eq!(first_line(&r), "Weekly Kubernetes upgrade report: 🔴 BLOCKED (action needed) — 1.36.0");
        assert!(r.contains("*Action needed*\n  • calico 3.30"), "{r}");
        assert!(r.contains("  • node k8s-node1 containerd"), "{r}");
        assert!(!r.contains("[ACTIONABLE]") && !r.contains("Waiting on upstream"), "{r}");
        assert!(r.contains("Detected: 1.36.0 (minor upgrade from 1.35.3)"), "{r}");
    }

    #[test]
    fn held_groups_waiting_and_pinned() {
        let mut i = inputs(
            gauges().available("minor", "1.35.3", "1.36.0").ran_ago(600.0).held(),
            &[("k8s-master", "v1.35.3")],
        );
        i.reasons = Some(Ok(vec![
            reason(Tag::Actionable, "calico: upgrade to >= 3.32"),
            reason(Tag::Waiting, "no released kyverno version supports Kubernetes 1.36 yet"),
            reason(Tag::Pinned, "gpu-operator pinned (NVIDIA driver / Ubuntu coupling); holding"),
        ]));
        let r = compose(&i);
        assert_eq!(first_line(&r), "Weekly Kubernetes upgrade report: ⏸️ HELD — 1.36.0 not yet upgradable");
        let a = r.find("*Action needed*").unwrap();
        let w = r.find("*Waiting on upstream*\n  • no released kyverno").unwrap();
        let p = r.find("*Pinned (held by us)*\n  • gpu-operator").unwrap();
        assert!(a < w && w < p, "{r}");
    }

    #[test]
    fn upgraded_normalises_the_v_prefix() {
        let r = compose(&inputs(
            gauges().available("patch", "v1.34.1", "v1.34.2").ran_ago(60.0),
            &[("k8s-master", "v1.34.2"), ("k8s-node1", "1.34.2")],
        ));
        assert_eq!(first_line(&r), "Weekly Kubernetes upgrade report: 🟢 UPGRADED — all nodes on 1.34.2");
        assert!(r.contains("Nodes: uniform v1.34.2 (2 nodes)"), "{r}");
    }

    #[test]
    fn in_progress_shows_mixed_nodes_and_recent_jobs() {
        let mut i = inputs(
            gauges().available("patch", "1.34.1", "1.34.2").ran_ago(7200.0),
            &[("k8s-master", "v1.34.2"), ("k8s-node1", "v1.34.1"), ("k8s-node2", "v1.34.1")],
        );
        i.jobs = vec![
            RecentJob {
                name: "k8s-upgrade-worker-1-34-2-k8s-node1".into(),
                status: "Active".into(),
                age_seconds: 300,
            },
            RecentJob {
                name: "k8s-upgrade-master-1-34-2".into(),
                status: "Complete".into(),
                age_seconds: 5400,
            },
        ];
        let r = compose(&i);
        assert_eq!(first_line(&r), "Weekly Kubernetes upgrade report: 🟡 IN PROGRESS / gate passed — 1.34.2");
        assert!(r.contains("Nodes: MIXED — v1.34.1: k8s-node1, k8s-node2; v1.34.2: k8s-master"), "{r}");
        assert!(r.contains("  • k8s-upgrade-worker-1-34-2-k8s-node1 — Active (5m ago)"), "{r}");
        assert!(r.contains("  • k8s-upgrade-master-1-34-2 — Complete (1h 30m ago)"), "{r}");
    }

    #[test]
    fn stale_or_missing_detector_is_flagged() {
        let r = compose(&inputs(gauges().nothing_newer("1.34.2").ran_ago(90_001.0), &[("m", "v1.34.2")]));
        assert!(r.starts_with("⚠️ Detector did not run last night — Weekly"), "{r}");
        assert!(r.contains("(STALE)"), "{r}");
        let fresh = compose(&inputs(gauges().nothing_newer("1.34.2").ran_ago(89_000.0), &[("m", "v1.34.2")]));
        assert!(!fresh.starts_with("⚠️"), "{fresh}");
        let none = compose(&inputs(gauges(), &[]));
        assert!(
            none.starts_with("⚠️ Detector did not run last night — Weekly Kubernetes upgrade report: ⚪"),
            "{none}"
        );
        assert!(none.contains("Nodes: unknown") && none.contains("no run recorded (STALE)"), "{none}");
    }

    #[test]
    fn gate_failure_is_reported() {
        let mut i = inputs(gauges().available("minor", "1.35.3", "1.36.0").ran_ago(60.0).blocked(), &[]);
        i.reasons = Some(Err("Prometheus unreachable".into()));
        assert!(compose(&i).contains("Could not re-run the compatibility gate: Prometheus unreachable"));
    }

    #[test]
    fn gate_reruns_only_when_available_and_blocked_or_held() {
        let d = |g: Gauges| needs_gate(&detected(&g.scrape()));
        assert!(d(gauges().available("minor", "1.35.3", "1.36.0").blocked()));
        assert!(d(gauges().available("minor", "1.35.3", "1.36.0").held()));
        assert!(!d(gauges().available("minor", "1.35.3", "1.36.0")));
        assert!(!d(gauges().nothing_newer("1.35.3").blocked()));
    }

    #[test]
    fn ages() {
        assert_eq!(age(45.0), "45s");
        assert_eq!(age(720.0), "12m");
        assert_eq!(age(3.0 * 3600.0 + 300.0), "3h 5m");
        assert_eq!(age(2.0 * 86400.0 + 4.0 * 3600.0), "2d 4h");
        assert_eq!(age(-5.0), "0s");
    }

    #[test]
    fn recent_jobs_are_the_last_26_hours_newest_first() {
        use k8s_openapi::{
            api::batch::v1::{JobCondition, JobStatus},
            apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
        };
        let now: Timestamp = "2026-11-23T06:07:00Z".parse().unwrap();
        let job = |name: &str, hours_ago: i64, cond: Option<&str>, active: i32| Job {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(now - jiff::SignedDuration::from_hours(hours_ago))),
                ..Default::default()
            },
            status: Some(JobStatus {
                active: Some(active),
                conditions: cond.map(|c| {
                    vec![JobCondition { type_: c.into(), status: "True".into(), ..Default::default() }]
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let jobs = vec![
            job("old", 27, Some("Complete"), 0),
            job("failed", 20, Some("Failed"), 0),
            job("running", 1, None, 1),
            job("pending", 2, None, 0),
        ];
        let r = recent_jobs(&jobs, now);
        let got: Vec<(&str, &str)> = r.iter().map(|j| (j.name.as_str(), j.status.as_str())).collect();
        assert_eq!(got, [("running", "Active"), ("pending", "Pending"), ("failed", "Failed")]);
    }

    #[test]
    fn deprecated_api_samples_become_gate_input() {
        let s = crate::alerts::Sample {
            labels: BTreeMap::from([
                ("group".to_string(), "flowcontrol.apiserver.k8s.io".to_string()),
                ("version".to_string(), "v1beta3".to_string()),
                ("resource".to_string(), "flowschemas".to_string()),
                ("removed_release".to_string(), "1.32".to_string()),
            ]),
            value: 1.0,
        };
        let d = crate::compat::deprecated_apis(&[s]);
        assert_eq!(d[0].removed_release.as_deref(), Some("1.32"));
        assert_eq!(d[0].resource, "flowschemas");
    }
}
