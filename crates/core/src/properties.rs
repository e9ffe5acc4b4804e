//! Property tests over every parser and name builder of the core (issue 13), on random and
//! real-world-shaped input: none panics, every accepted name is one the API accepts (by an
//! oracle written from upstream's regular expressions), distinct nodes get distinct Job names,
//! `config` output loads back to the same settings, and the alert gate blocks on every firing
//! critical alert the ignore list does not name. Case counts keep the whole suite near a
//! minute on the 2-core build machines.

use std::{collections::BTreeMap, sync::LazyLock, time::Duration};

use proptest::{collection::vec, option, prelude::*, sample::select};
use regex::Regex;

use crate::{
    alerts::{Alert, AlertState, GateVerdict, Policy, evaluate},
    cron::CronSchedule,
    duration,
    fixtures::node,
    image::ImageRef,
    job::{self, JobRequest},
    names::{self, NodeName},
    plan::{self, HASH_LEN, MAX_NAME, Phase, Placement, Snapshot, Step},
    settings::{ControlPlaneSelector, Settings},
    version::Version,
};

// Upstream's patterns (k8s.io/apimachinery/pkg/util/validation), as the oracle.
static SUBDOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$").unwrap()
});
static LABEL: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").unwrap());
static QUALIFIED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$").unwrap());

fn oracle_subdomain(s: &str) -> bool {
    s.len() <= 253 && SUBDOMAIN.is_match(s)
}
fn oracle_label(s: &str) -> bool {
    s.len() <= 63 && LABEL.is_match(s)
}
fn oracle_label_value(s: &str) -> bool {
    s.is_empty() || (s.len() <= 63 && QUALIFIED.is_match(s))
}
fn oracle_qualified(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    let (prefix, name) = match parts.as_slice() {
        [n] => (None, *n),
        [p, n] => (Some(*p), *n),
        _ => return false,
    };
    prefix.is_none_or(|p| !p.is_empty() && oracle_subdomain(p))
        && name.len() <= 63
        && QUALIFIED.is_match(name)
}

/// Names as clusters have them: short hostnames, FQDNs, cloud pool names, numbered racks,
/// with the occasional character the rule refuses (upper case, `_`, `é`, empty parts).
fn name_shaped() -> impl Strategy<Value = String> {
    prop_oneof![valid_name_shaped(), "[-a-zA-Z0-9_.é/]{0,30}", ".{0,40}"]
}

/// The valid shapes of [`name_shaped`].
fn valid_name_shaped() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?",
        "k8s-(node|master|worker)[0-9]{1,4}(\\.[a-z]{2,10}){0,3}",
        "gke-[a-z]{3,12}-[a-z]{3,12}-pool-[0-9a-f]{8}-[a-z0-9]{4}",
        "ip-10-[0-9]{1,3}-[0-9]{1,3}-[0-9]{1,3}\\.[a-z]{2}-[a-z]{4,9}-[0-9]\\.compute\\.internal",
        "[a-z0-9]{60,70}(\\.[a-z0-9]{1,70}){0,2}",
    ]
}

fn version() -> impl Strategy<Value = Version> {
    prop_oneof![
        (1u32..=1, 28u32..=40, 0u32..=30).prop_map(|(a, b, c)| Version::new(a, b, c)),
        (0u32..=999_999_999, 0u32..=999_999_999, 0u32..=999_999_999)
            .prop_map(|(a, b, c)| Version::new(a, b, c)),
    ]
}

fn phase() -> impl Strategy<Value = Phase> {
    select(Phase::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn name_rules_are_upstreams_exactly(s in prop_oneof![name_shaped(), "[a-zA-Z0-9._/-]{0,300}"]) {
        prop_assert_eq!(names::check_dns_subdomain(&s).is_ok(), oracle_subdomain(&s), "subdomain {:?}", s);
        prop_assert_eq!(names::check_dns_label(&s).is_ok(), oracle_label(&s), "label {:?}", s);
        prop_assert_eq!(names::check_label_value(&s).is_ok(), oracle_label_value(&s), "label value {:?}", s);
        prop_assert_eq!(names::check_qualified_name(&s).is_ok(), oracle_qualified(&s), "qualified {:?}", s);
        prop_assert_eq!(NodeName::parse(&s).is_ok(), oracle_subdomain(&s));
        let _ = names::shorten(&s);
        let _ = names::shorten_message(&s);
    }

    #[test]
    fn job_names_are_valid_labels_and_deterministic(phase in phase(), v in version(), n in option::of(name_shaped())) {
        let a = plan::job_name(phase, v, n.as_deref());
        prop_assert!(oracle_label(&a), "{:?} from {:?}", a, n);
        prop_assert_eq!(&a, &plan::job_name(phase, v, n.as_deref()));
        let f = plan::fit_name(n.as_deref().unwrap_or(""));
        prop_assert!(oracle_label(&f), "{:?}", f);
        // A name that fits as it is stays as it is (the seed's names for short nodes).
        if let Some(n) = &n {
            let full = format!("k8s-upgrade-{}-{}-{n}", phase.as_str(), v.label());
            if matches!(phase, Phase::Worker | Phase::ControlPlane) && oracle_label(&full) {
                prop_assert_eq!(&a, &full);
            }
        }
    }

    #[test]
    fn distinct_nodes_get_distinct_job_names(
        stem in valid_name_shaped(),
        a in "([.-]?[a-z0-9]{1,6}){0,2}",
        b in "([.-]?[a-z0-9]{1,6}){0,2}",
        phase in select(vec![Phase::Worker, Phase::ControlPlane]),
        v in version(),
    ) {
        // Real-world collisions come from long shared prefixes (pool names, FQDNs): the two
        // names share `stem` and differ in what follows.
        let (x, y) = (format!("{stem}{a}"), format!("{stem}{b}"));
        prop_assume!(x != y && NodeName::parse(&x).is_ok() && NodeName::parse(&y).is_ok());
        prop_assert_ne!(plan::job_name(phase, v, Some(&x)), plan::job_name(phase, v, Some(&y)));
    }

    #[test]
    fn durations_never_panic_and_round_trip(s in prop_oneof![
        "([0-9]{1,13}(h|m|s|ms)){1,8}",
        "(999999999999h){1,3000}",
        ".{0,30}",
    ]) {
        if let Ok(d) = duration::parse(&s) {
            prop_assert_eq!(duration::parse(&duration::format(d)), Ok(d));
        }
        for b in [duration::DEADLINE, duration::REQUEST, duration::INTERVAL, duration::SPAN, duration::SETTLE, duration::TTL] {
            if let Ok(d) = duration::parse_within(&s, b) {
                prop_assert!(d >= b.min && d <= b.max);
            }
        }
    }

    #[test]
    fn versions_never_panic_and_round_trip(s in prop_oneof!["v?[0-9]{1,11}\\.[0-9]{1,11}\\.[0-9]{1,11}", ".{0,20}"]) {
        if let Ok(v) = s.parse::<Version>() {
            prop_assert_eq!(v.to_string().parse::<Version>(), Ok(v));
            prop_assert!(oracle_label(&v.label()));
        }
    }

    #[test]
    fn cron_and_images_never_panic(s in ".{0,60}") {
        let _ = CronSchedule::parse(&s);
        let _ = ImageRef::parse(&s);
    }

    #[test]
    fn well_formed_schedules_are_accepted(
        m in "(\\*|[0-5]?[0-9])(/[1-9])?",
        h in "(\\*|1?[0-9]|2[0-3])",
        dom in "(\\*|[1-9]|[12][0-9]|3[01])",
        mon in "(\\*|[1-9]|1[0-2]|jan|DEC)",
        dow in "(\\*|[0-6]|mon-fri|SUN)",
    ) {
        let spec = format!("{m} {h} {dom} {mon} {dow}");
        prop_assert!(CronSchedule::parse(&spec).is_ok(), "{}", spec);
    }

    #[test]
    fn well_formed_images_are_accepted(
        host in option::of("[a-z0-9]{1,10}(\\.[a-z0-9]{1,10}){0,2}\\.io(:[0-9]{2,5})?"),
        path in "[a-z0-9]{1,10}([._-][a-z0-9]{1,5}){0,2}(/[a-z0-9]{1,10}){0,2}",
        tag in option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
    ) {
        let mut r = host.map(|h| format!("{h}/")).unwrap_or_default();
        r.push_str(&path);
        if let Some(t) = tag {
            r.push(':');
            r.push_str(&t);
        }
        prop_assert!(ImageRef::parse(&r).is_ok(), "{}", r);
    }
}

// === the alert gate ===

fn alert_name() -> impl Strategy<Value = String> {
    "[A-Z][A-Za-z0-9_]{0,15}"
}

fn firing(name: &str, severity: &str, state: AlertState) -> Alert {
    Alert {
        labels: BTreeMap::from([("alertname".into(), name.into()), ("severity".into(), severity.into())]),
        state,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Plain names: the gate blocks exactly on the firing critical alerts not on the list.
    #[test]
    fn the_gate_blocks_on_every_firing_critical_alert_not_ignored(
        ignore in vec(alert_name(), 0..6),
        alerts in vec((alert_name(), select(vec!["critical", "warning", "info"]), select(vec![AlertState::Firing, AlertState::Pending, AlertState::Inactive])), 0..12),
    ) {
        let policy = Policy::new(&["critical".to_string()], &ignore).unwrap();
        let alerts: Vec<Alert> = alerts.iter().map(|(n, s, st)| firing(n, s, *st)).collect();
        let mut want: Vec<String> = alerts
            .iter()
            .filter(|a| a.state == AlertState::Firing && a.severity() == Some("critical") && !ignore.iter().any(|i| i == a.name()))
            .map(|a| a.name().to_string())
            .collect();
        want.sort();
        want.dedup();
        let verdict = evaluate(&alerts, &policy);
        if want.is_empty() {
            prop_assert_eq!(verdict, GateVerdict::Pass);
        } else {
            prop_assert_eq!(verdict, GateVerdict::Blocked { alerts: want });
        }
    }

    /// Hostile entries (regex fragments that only balance inside a wrapper, comments, flags,
    /// catch-alls): an accepted list ignores a name only if one entry, compiled on its own,
    /// matches it, and never ignores a name no rule defines.
    #[test]
    fn no_ignore_entry_can_silently_disable_the_gate(
        entries in vec(vec(select(vec![
            "Watchdog", "KubeNode", ")", "(", "|", ".*", ".+", "(?x)", "#", "\n", "\\w+", "[A-Z]", "?", "(?:", "$", "^", "Down", "Alert",
        ]), 1..6).prop_map(|parts| parts.concat()), 1..4),
        name in alert_name(),
    ) {
        let Ok(policy) = Policy::new(&["critical".to_string()], &entries) else { return Ok(()) };
        for canary in crate::alerts::CANARY_NAMES {
            prop_assert!(!policy.ignores(canary), "{:?} ignores {:?}", entries, canary);
        }
        if policy.ignores(&name) {
            prop_assert!(
                entries.iter().any(|e| Regex::new(e).is_ok_and(|re| re.is_match(&name))),
                "{:?} ignores {:?} though no entry alone matches it", entries, name
            );
            prop_assert!(evaluate(&[firing(&name, "critical", AlertState::Firing)], &policy) == GateVerdict::Pass);
        } else {
            prop_assert!(evaluate(&[firing(&name, "critical", AlertState::Firing)], &policy).blocks());
        }
    }
}

// === settings: `config` output loads back to the same settings ===

fn bounded(b: duration::Bounds) -> impl Strategy<Value = Duration> {
    let (lo, hi) = (b.min.as_millis() as u64, b.max.as_millis() as u64);
    prop_oneof![
        Just(b.min),
        Just(b.max),
        (lo..=hi).prop_map(Duration::from_millis),
        (lo / 1000..=hi / 1000).prop_map(move |s| Duration::from_secs(s).max(b.min))
    ]
}

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?"
}

fn settings() -> impl Strategy<Value = Settings> {
    use duration::{DEADLINE, INTERVAL, REQUEST, SETTLE, SPAN, TTL};
    let names = (
        label(),
        label(),
        "[a-z0-9]{1,10}(\\.[a-z0-9]{1,10}){0,2}/([a-z][-a-z0-9]{0,8})?",
        vec(label(), 0..3),
        vec(label(), 0..3),
    );
    let waits = (
        (bounded(DEADLINE), bounded(SPAN), bounded(INTERVAL), bounded(SPAN), bounded(INTERVAL)),
        (bounded(SETTLE), bounded(DEADLINE), bounded(DEADLINE), bounded(DEADLINE), bounded(DEADLINE)),
        (bounded(TTL), bounded(SPAN), bounded(REQUEST), bounded(REQUEST), bounded(REQUEST)),
    );
    let ssh =
        (1u16..=65535, "[a-z_][a-z0-9_-]{0,20}", bounded(REQUEST), bounded(DEADLINE), bounded(INTERVAL));
    let drain = (
        1usize..=1000,
        bounded(DEADLINE),
        bounded(SPAN),
        option::of(bounded(SPAN)),
        bounded(INTERVAL),
        (1u64..=3600).prop_map(Duration::from_secs),
        any::<bool>(),
    );
    let alerts = (vec(alert_name(), 0..4), option::of(0.0f64..=1.0));
    (names, waits, ssh, drain, alerts).prop_map(|(names, waits, ssh, drain, alerts)| {
        let mut s = Settings::default();
        (
            s.namespace,
            s.job.service_account,
            s.annotation_prefix,
            s.job.image_pull_secrets,
            s.hooks.expected_daemonsets,
        ) = names;
        let ((a, b, c, d, e), (f, g, h, i, j), (k, l, m, n, o)) = waits;
        let t = &mut s.timeouts;
        (t.node_ready, t.alert_wait, t.alert_interval, t.soak, t.soak_interval) = (a, b, c, d, e);
        (t.settle_window, t.etcd_snapshot, t.probe, t.job_delete, t.job_start) = (f, g, h, i, j);
        (
            s.job.ttl_after_finished,
            s.job.deadline_margin,
            s.alerts.request_timeout,
            s.pushgateway.timeout,
            s.slack.timeout,
        ) = (k, l, m, n, o);
        (s.ssh.port, s.ssh.user, s.ssh.connect_timeout, s.ssh.command_timeout, s.ssh.keepalive_interval) =
            ssh;
        let (conc, timeout, fallback, grace, ks, backoff_max, force) = drain;
        s.drain.concurrency = conc;
        s.drain.timeout = timeout;
        s.drain.fallback_after = fallback;
        s.drain.grace_period_override = grace;
        s.drain.kill_switch_interval = ks;
        s.drain.backoff_max = backoff_max.max(s.drain.backoff_min);
        s.drain.force = force;
        (s.alerts.ignore, s.alerts.min_pod_ready_ratio) = alerts;
        s
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn config_output_loads_back_to_the_same_settings(s in settings()) {
        let yaml = s.to_yaml();
        let back = Settings::from_yaml(&yaml, "config output");
        prop_assert!(back.is_ok(), "{:?}\n{}", back, yaml);
        prop_assert_eq!(back.unwrap(), s.clone());
        // Every Job of such settings renders, its deadline within the API's types.
        let step = Step::worker("k8s-node1");
        let placement = Placement { run_on: "k8s-master".into(), tolerations: vec![] };
        let req = JobRequest { step: &step, target: Version::new(1, 34, 2), kind: plan::Kind::Patch, image: crate::DEFAULT_IMAGE, placement: &placement };
        let rendered = job::render(&s, job::BUILTIN_TEMPLATE, "builtin", &req);
        prop_assert!(rendered.is_ok(), "{:?}", rendered.err());
        for p in Phase::ALL {
            prop_assert!(job::active_deadline(&s, p) < Duration::from_secs(30 * 86_400));
        }
    }

    #[test]
    fn any_config_text_is_refused_or_valid_never_a_panic(
        pairs in vec((select(vec![
            "namespace", "annotation_prefix", "control_plane_label", "timeouts", "timeouts.probe", "ssh", "alerts", "drain", "job", "apt_repository",
        ]), ".{0,40}"), 0..5),
    ) {
        let yaml: String = pairs.iter().map(|(k, v)| match k.split_once('.') {
            Some((a, b)) => format!("{a}:\n  {b}: {v:?}\n"),
            None => format!("{k}: {v:?}\n"),
        }).collect();
        if let Ok(s) = Settings::from_yaml(&yaml, "fuzz") {
            prop_assert!(s.validate("fuzz").is_ok());
            prop_assert!(oracle_label(&s.namespace));
        }
    }

    /// Snapshots from any node list: refused with a reason, or every node a valid, unique name
    /// and every Job of the chain a valid, unique DNS label.
    #[test]
    fn snapshots_and_chains_from_any_node_list(
        nodes in vec((name_shaped(), any::<bool>(), 0u32..3, any::<bool>()), 0..8),
        target_patch in 0u32..4,
    ) {
        let selector = ControlPlaneSelector::parse("node-role.kubernetes.io/control-plane").unwrap();
        let built: Vec<_> = nodes.iter().enumerate().map(|(i, (n, cp, patch, ready))| {
            let b = node(n).kubelet(&format!("v1.34.{patch}")).ip(&format!("10.0.0.{i}"));
            let b = if *cp { b.control_plane() } else { b.worker() };
            (if *ready { b } else { b.not_ready() }).build()
        }).collect();
        let Ok(snap) = Snapshot::from_nodes(&built, &selector) else { return Ok(()) };
        let mut seen = std::collections::HashSet::new();
        for n in snap.nodes() {
            prop_assert!(oracle_subdomain(&n.name));
            prop_assert!(seen.insert(n.name.clone()), "duplicate {:?}", n.name);
        }
        if let Ok(jobs) = plan::chain(&snap, Version::new(1, 34, target_patch)) {
            let mut names = std::collections::HashSet::new();
            for j in &jobs {
                prop_assert!(oracle_label(&j.job_name) && j.job_name.len() <= MAX_NAME);
                prop_assert!(names.insert(j.job_name.clone()), "two Jobs named {}", j.job_name);
            }
        }
    }
}

#[test]
fn hashed_names_carry_the_whole_hash_and_as_much_of_the_node_as_fits() {
    let v = Version::new(1, 34, 2);
    let fqdn = plan::job_name(Phase::Worker, v, Some("k8s-node1.example.com"));
    assert!(fqdn.starts_with("k8s-upgrade-worker-1-34-2-k8s-node1-example-com-"), "{fqdn}");
    assert_eq!(fqdn.len(), "k8s-upgrade-worker-1-34-2-k8s-node1-example-com-".len() + HASH_LEN);
    // GKE-style: the first label does not fit; its head and its tail (where pools differ) do.
    let gke = plan::job_name(Phase::Worker, v, Some("gke-production-cluster-default-pool-1a2b3c4d-xyz1"));
    assert_eq!(gke.len(), MAX_NAME, "{gke}");
    assert!(gke.starts_with("k8s-upgrade-worker-1-34-2-gke-prod"), "{gke}");
    assert!(gke.contains("d-xyz1-"), "{gke}");
    // Multi-byte characters are cut as characters (issue 13: 27 × a + é + 40 × b panicked).
    let odd = format!("{}é{}", "a".repeat(27), "b".repeat(40));
    assert!(oracle_label(&plan::job_name(Phase::Worker, v, Some(&odd))));
    assert!(oracle_label(&plan::fit_name(&odd)));
}

/// 300,000 GKE-style pool names (the search that found a collision of the 32-bit hash): all
/// their Job names distinct.
#[test]
fn three_hundred_thousand_pool_names_get_distinct_job_names() {
    let v = Version::new(1, 34, 12);
    let mut seen = std::collections::HashSet::with_capacity(300_000);
    for pool in 0..100u32 {
        for i in 0..3000u32 {
            let n = format!("gke-production-europe-west4-pool-{pool:02}-{:08x}-{:04x}", pool * 7919, i);
            assert!(seen.insert(plan::job_name(Phase::Worker, v, Some(&n))), "collision at {n}");
        }
    }
}

/// A cluster of 1 to 3 control planes and 1 to 6 workers, each on one of a few versions
/// around 1.34 (so targets land below, on and above them), some cordoned or not Ready.
fn mixed_cluster() -> impl Strategy<Value = Snapshot> {
    let node_v = (33u32..=35, 0u32..=3, any::<bool>(), any::<bool>());
    (vec(node_v.clone(), 1..=3), vec(node_v, 1..=6)).prop_map(|(cps, ws)| {
        let build = |name: String, (minor, patch, cordoned, ready): (u32, u32, bool, bool), i: usize| {
            let mut b = node(&name).kubelet(&format!("v1.{minor}.{patch}")).ip(&format!(
                "10.0.{}.{}",
                i / 200,
                i % 200 + 1
            ));
            if cordoned {
                b = b.cordoned();
            }
            if !ready {
                b = b.not_ready();
            }
            b
        };
        let mut nodes = Vec::new();
        for (i, c) in cps.into_iter().enumerate() {
            nodes.push(build(format!("cp{i}"), c, nodes.len()).control_plane().build());
        }
        for (i, w) in ws.into_iter().enumerate() {
            nodes.push(build(format!("w{i}"), w, nodes.len()).build());
        }
        Snapshot::from_nodes(&nodes, &Settings::default().control_plane_selector()).unwrap()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// QA A4: for any snapshot and target, the plan never holds a Job whose node runs a newer
    /// kubelet than the target (a downgrade), nor a Job that does work on a node on target; a
    /// target below any node is refused, naming every such node.
    #[test]
    fn the_plan_never_takes_a_node_back(snap in mixed_cluster(), minor in 33u32..=36, patch in 0u32..=4) {
        let target = Version::new(1, minor, patch);
        let newer: Vec<&str> = snap.nodes().filter(|n| n.kubelet > target).map(|n| n.name.as_str()).collect();
        match plan::chain(&snap, target) {
            Ok(jobs) => {
                prop_assert!(newer.is_empty(), "planned with {:?} newer than {}", newer, target);
                for j in &jobs {
                    if let Some(n) = j.step.node() {
                        let kubelet = snap.node(n).unwrap().kubelet;
                        prop_assert!(kubelet <= target, "{} on v{} planned for v{}", j.step, kubelet, target);
                        prop_assert_eq!(j.skip, kubelet == target);
                    }
                }
                prop_assert!(plan::check_target(&snap, target).is_ok());
            }
            Err(plan::PlanError::Downgrade { target: t, nodes }) => {
                prop_assert_eq!(t, target);
                prop_assert!(!newer.is_empty());
                for n in newer.iter().take(10) {
                    prop_assert!(nodes.contains(&format!("{n} (v")), "{} not named in {}", n, nodes);
                }
            }
            Err(e) => prop_assert!(newer.is_empty(), "{e} although {:?} are newer", newer),
        }
        // Whatever the snapshot, the steps picked among pending nodes (after the master: the
        // further control planes and the workers) never pick a node at or past the target.
        // (The master step always follows preflight; on a node newer than the target it is
        // refused by the same rule, in the step itself.)
        {
            let done = Step::master(&snap.first_control_plane().name);
            if let plan::Next::Step(s) = plan::next_after(&snap, target, &done)
                && let Some(n) = s.node()
            {
                prop_assert!(snap.node(n).unwrap().kubelet < target, "{} picked for v{}", s, target);
            }
        }
    }
}
