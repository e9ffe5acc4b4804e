//! The alert rules file passes `promtool check rules` and its unit tests
//! (`deploy/alerts/k8s-upgrade-chain.test.yaml`) under `promtool test rules`; the unit tests
//! fail when a guard the seed learned the hard way is removed.
//!
//! Needs /usr/bin/promtool (Debian package `prometheus`; CI installs it with apt).

use std::{path::PathBuf, process::Command};

const PROMTOOL: &str = "/usr/bin/promtool";

fn alerts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/alerts")
}

fn promtool(args: &[&str], dir: &std::path::Path) -> (bool, String) {
    assert!(
        std::path::Path::new(PROMTOOL).exists(),
        "{PROMTOOL} is missing: install the Debian package `prometheus` (apt-get install prometheus)"
    );
    let out = Command::new(PROMTOOL).args(args).current_dir(dir).output().expect("failed to run promtool");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn rules_pass_promtool_check() {
    let (ok, out) = promtool(&["check", "rules", "k8s-upgrade-chain.rules.yaml"], &alerts_dir());
    assert!(ok, "{out}");
    assert!(out.contains("6 rules found"), "{out}");
}

#[test]
fn rules_pass_their_unit_tests() {
    let (ok, out) = promtool(&["test", "rules", "k8s-upgrade-chain.test.yaml"], &alerts_dir());
    assert!(ok, "{out}");
}

/// Copies the rules and tests to a temp dir with `edit` applied to the rules, runs the tests.
fn run_mutated(edit: impl Fn(&str) -> String) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let rules = std::fs::read_to_string(alerts_dir().join("k8s-upgrade-chain.rules.yaml")).unwrap();
    let mutated = edit(&rules);
    assert_ne!(mutated, rules, "the mutation did not apply");
    std::fs::write(dir.path().join("k8s-upgrade-chain.rules.yaml"), mutated).unwrap();
    std::fs::copy(
        alerts_dir().join("k8s-upgrade-chain.test.yaml"),
        dir.path().join("k8s-upgrade-chain.test.yaml"),
    )
    .unwrap();
    promtool(&["test", "rules", "k8s-upgrade-chain.test.yaml"], dir.path())
}

#[test]
fn stalled_without_the_live_job_guard_fails_the_leaked_latch_test() {
    let (ok, out) = run_mutated(|r| {
        r.replacen(
            &format!("{STALL}\n          and on ()\n          sum(kube_job_status_active{{namespace=\"k8s-upgrade\", job_name=~\"k8s-upgrade-(preflight|master|control-plane|worker|postflight)-.*\"}}) > 0"),
            STALL,
            1,
        )
    });
    assert!(!ok, "{out}");
    assert!(out.contains("leaked latch"), "{out}");
}

/// The stall measure of `K8sUpgradeStalled`: time since the chain's last progress.
const STALL: &str = "(time() - max({__name__=~\"k8s_upgrade_(started|phase_started|phase_finished)_timestamp\", job=\"k8s-version-upgrade\"})) > 14400";

#[test]
fn stalled_measuring_the_chains_age_fails_the_healthy_long_chain_test() {
    // The seed's literal rule (QA A1): a healthy chain longer than 4 h paged.
    let (ok, out) = run_mutated(|r| {
        r.replacen(
            STALL,
            "(time() - max(k8s_upgrade_started_timestamp{job=\"k8s-version-upgrade\"} > 0)) > 14400",
            1,
        )
    });
    assert!(!ok, "{out}");
    assert!(out.contains("a healthy 22h chain"), "{out}");
}

#[test]
fn chain_job_failed_on_any_failed_pod_fails_the_retry_test() {
    let (ok, out) = run_mutated(|r| r.replacen(", reason=~\"BackoffLimitExceeded|DeadlineExceeded\"", "", 1));
    assert!(!ok, "{out}");
    assert!(out.contains("retry succeeded"), "{out}");
}

#[test]
fn skew_without_the_job_guard_fails_the_active_chain_test() {
    let (ok, out) = run_mutated(|r| {
        r.replacen(
            "count(count by (kubelet_version) (kube_node_info)) > 1\n          unless on ()\n          sum(kube_job_status_active{namespace=\"k8s-upgrade\", job_name=~\"k8s-upgrade-(preflight|master|control-plane|worker|postflight)-.*\"}) > 0",
            "count(count by (kubelet_version) (kube_node_info)) > 1",
            1,
        )
    });
    assert!(!ok, "{out}");
    assert!(out.contains("chain Job is active"), "{out}");
}

#[test]
fn snapshot_alert_without_the_opt_out_fails_the_opt_out_test() {
    let (ok, out) = run_mutated(|r| {
        r.replacen(
            "\n          unless on ()\n          max(k8s_upgrade_snapshot_skipped{job=\"k8s-version-upgrade\"}) == 1",
            "",
            1,
        )
    });
    assert!(!ok, "{out}");
    assert!(out.contains("snapshot opt-out"), "{out}");
}

#[test]
fn awaiting_ack_alert_that_ignores_the_gauge_value_fails() {
    let (ok, out) = run_mutated(|r| {
        r.replacen(
            "max by (node) (k8s_upgrade_awaiting_ack{job=\"k8s-version-upgrade\"}) == 1",
            "max by (node) (k8s_upgrade_awaiting_ack{job=\"k8s-version-upgrade\"}) >= 0",
            1,
        )
    });
    assert!(!ok, "{out}");
    assert!(out.contains("until it is acknowledged"), "{out}");
}

#[test]
fn phase_regex_without_control_plane_fails() {
    let (ok, out) = run_mutated(|r| r.replace("master|control-plane|worker", "master|worker"));
    assert!(!ok, "{out}");
}
