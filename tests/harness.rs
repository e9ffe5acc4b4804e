//! The test harnesses start real components (Prometheus, Pushgateway, sshd); each keeps all
//! of its state in its own test's temp dir, gone with the harness, so no test can see what an
//! earlier one, an earlier run or another suite on the machine left behind (issue 17 item 8:
//! Debian's Pushgateway persisted to `/var/lib/prometheus/pushgateway.data` by default, and
//! chain tests read `k8s_upgrade_in_flight 1` from another run's chain).
//!
//! Checked two ways: against the binaries themselves (every path-valued default they print in
//! `--help`, or `sshd -T` for sshd, points into the test's dir or is a read-only file of the
//! package), and by running them: state written by one instance is not seen by the next and
//! is gone when its harness is dropped.

mod support;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use support::{
    prom::{PROMETHEUS, PUSHGATEWAY, Prometheus, Pushgateway, state_flags},
    sshd::SshdNode,
};

/// Flags of `binary` whose default (in `--help`) is an absolute path: flag → default.
fn path_defaults(binary: &str) -> BTreeMap<String, String> {
    let out = Command::new(binary).arg("--help").output().unwrap_or_else(|e| panic!("{binary}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let re = regex::Regex::new(r#"--([a-z][a-z0-9.\-]*)="(/[^"]*)""#).unwrap();
    let found: BTreeMap<String, String> =
        re.captures_iter(&text).map(|c| (c[1].to_string(), c[2].to_string())).collect();
    assert!(!found.is_empty(), "no path defaults found in {binary} --help:\n{text}");
    found
}

/// Path-valued flags a harness leaves at their default, each with the reason it holds no
/// state (read-only files of the package, or not a file at all).
fn read_only(binary: &str) -> BTreeMap<&'static str, &'static str> {
    match binary {
        PUSHGATEWAY => [
            ("web.local-assets", "the package's static web assets, only read"),
            ("web.telemetry-path", "an HTTP path, not a file"),
        ]
        .into(),
        PROMETHEUS => [
            ("web.local-assets", "the package's static web assets, only read"),
            ("web.console.templates", "console templates of the package, only read"),
            ("web.console.libraries", "console libraries of the package, only read"),
            ("storage.agent.path", "agent mode only: refused in server mode, which the harness runs"),
        ]
        .into(),
        other => panic!("{other}"),
    }
}

#[test]
fn every_path_default_of_prometheus_and_the_pushgateway_is_overridden_or_read_only() {
    let dir = Path::new("/the-test-dir");
    for binary in [PUSHGATEWAY, PROMETHEUS] {
        let set: BTreeMap<&str, PathBuf> = state_flags(binary, dir).into_iter().collect();
        let allowed = read_only(binary);
        let defaults = path_defaults(binary);
        for (flag, default) in &defaults {
            match (set.get(flag.as_str()), allowed.get(flag.as_str())) {
                (Some(p), _) => {
                    assert!(p.starts_with(dir), "{binary} --{flag}={} is outside the test dir", p.display())
                }
                (None, Some(_)) => {}
                (None, None) => panic!(
                    "{binary} --{flag} defaults to {default}, a path outside the test's dir: set it in \
                     tests/support/prom.rs state_flags (or, if the binary only reads it, list it here)"
                ),
            }
        }
        for flag in set.keys().chain(allowed.keys()) {
            assert!(defaults.contains_key(*flag), "{binary} has no path flag --{flag} (any more?)");
        }
    }
}

#[test]
fn every_path_sshd_uses_is_in_the_test_dir_or_read_only() {
    let node = SshdNode::start("k8s-harness", "127.0.2.40");
    let out = Command::new("/usr/sbin/sshd")
        .arg("-T")
        .arg("-f")
        .arg(node.dir.path().join("sshd_config"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let effective = String::from_utf8(out.stdout).unwrap();
    // Files sshd only reads, or programs it may run, from the package.
    let read_only = [("modulifile", "/etc/ssh/moduli"), ("xauthlocation", "/usr/bin/xauth")];
    let mut checked = 0;
    for line in effective.lines() {
        let Some((key, value)) = line.split_once(' ') else { continue };
        for v in value.split_whitespace().filter(|v| v.starts_with('/')) {
            checked += 1;
            assert!(
                Path::new(v).starts_with(node.dir.path()) || read_only.contains(&(key, v)),
                "sshd `{key} {v}` is outside the test's dir"
            );
        }
    }
    assert!(effective.lines().any(|l| l == "pidfile none"), "sshd writes no PID file");
    assert!(checked >= 3, "host key, authorized keys and the read-only files: {effective}");
    let dir = node.dir.path().to_path_buf();
    drop(node);
    assert!(!dir.exists(), "{} outlived its sshd", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushgateway_leaves_nothing_for_the_next_one() {
    let mut first = Pushgateway::start().await;
    first.push_raw("k8s-version-upgrade", "k8s_upgrade_in_flight 1\n").await;
    assert!(first.metrics_text().await.contains("k8s_upgrade_in_flight{"));
    let dir = first.dir().to_path_buf();
    // As a service manager stops it: the Pushgateway writes its persistence file on the way out.
    first.stop_gracefully();
    let persisted = std::fs::read(dir.join("pushgateway.data")).unwrap_or_default();
    let log = first.log();
    drop(first);

    let next = Pushgateway::start().await;
    let text = next.metrics_text().await;
    assert!(
        !text.contains("k8s_upgrade_in_flight"),
        "the next Pushgateway loaded the last one's metrics:\n{text}"
    );
    assert!(!persisted.is_empty(), "it persisted its metrics, into its own dir:\n{log}");
    assert!(!dir.exists(), "{} outlived its Pushgateway", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_keeps_its_tsdb_in_its_dir_and_takes_it_along() {
    let mut prom = Prometheus::start(&[], None).await;
    let dir = prom.dir().to_path_buf();
    let data = dir.join("data");
    assert!(data.join("wal").is_dir() || data.join("lock").exists(), "its TSDB is in its own dir");
    prom.stop_gracefully();
    drop(prom);
    assert!(!dir.exists(), "{} outlived its Prometheus", dir.display());
}
