//! Pushgateway pushes read back from a real `prometheus-pushgateway`.

mod support;

use std::time::Duration;

use chain_core::metrics::{
    CHAIN_JOB, ChainLatch, DETECTION_JOB, FAMILIES, Grouping, Metric, PhaseOutcome, PushgatewayConfig, Scrape,
};
use k8s_upgrade_chain::pushgateway::{PushOutcome, Pushgateway};
use support::prom::{Pushgateway as PgwProcess, free_port};

fn client(url: &str) -> Pushgateway {
    Pushgateway::new(&PushgatewayConfig { url: url.parse().unwrap(), timeout: Duration::from_secs(5) })
        .unwrap()
}

/// Every metric this tool pushes, with the group it belongs in.
fn everything() -> Vec<(Grouping, Vec<Metric>)> {
    vec![
        (
            Grouping::chain(),
            vec![
                Metric::InFlight(true),
                Metric::StartedTimestamp(1_795_262_400.0),
                Metric::SnapshotTaken(true),
                Metric::SnapshotSkipped(false),
                Metric::Blocked(false),
                Metric::Held(true),
            ],
        ),
        (
            Grouping::detection(),
            vec![
                Metric::Available {
                    kind: "patch".into(),
                    running: "1.34.1".into(),
                    target: "1.34.2".into(),
                    available: true,
                },
                Metric::VersionCheckLastRun(1_795_262_401.5),
            ],
        ),
        (
            Grouping::phase("worker", Some("k8s-node2")),
            vec![
                Metric::PhaseStarted(1_795_262_402.0),
                Metric::PhaseFinished(1_795_262_500.0),
                Metric::PhaseOutcome(PhaseOutcome::Succeeded),
                Metric::DrainDuration(Duration::from_millis(42_500)),
                Metric::PodsEvicted(17),
                Metric::PodsFallbackDeleted(2),
            ],
        ),
        (Grouping::node("k8s-node3"), vec![Metric::AwaitingAck(true)]),
    ]
}

fn labels_of(group: &Grouping) -> Vec<(String, String)> {
    let mut l = vec![("job".to_string(), group.job.clone()), ("instance".to_string(), String::new())];
    l.extend(group.labels.iter().cloned());
    l
}

#[tokio::test]
async fn every_metric_reads_back_as_a_gauge_with_its_grouping_labels() {
    let pgw = PgwProcess::start().await;
    let gw = client(&pgw.url);
    for (group, metrics) in everything() {
        assert_eq!(gw.push(&group, &metrics).await, PushOutcome::Pushed, "{group:?}\n{}", pgw.log());
    }

    let raw = pgw.metrics_text().await;
    let scrape = gw.read().await.unwrap();
    // The client's read and a raw GET agree on our families (the gateway's own go_* vary).
    let ours =
        |s: &Scrape| s.samples.iter().filter(|x| x.name.starts_with("k8s_")).cloned().collect::<Vec<_>>();
    assert_eq!(ours(&scrape), ours(&Scrape::parse(&raw)));
    let mut seen_families = 0;
    for (group, metrics) in everything() {
        for m in metrics {
            assert!(raw.contains(&format!("# TYPE {} gauge", m.name())), "no TYPE line for {}", m.name());
            assert!(
                raw.contains(&format!("# HELP {} {}", m.name(), m.help())),
                "no HELP line for {}",
                m.name()
            );
            let mut want = labels_of(&group);
            want.extend(m.labels().into_iter().map(|(k, v)| (k.to_string(), v)));
            let matching: Vec<(&str, &str)> = want.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let found: Vec<_> = scrape.find(m.name(), &matching).collect();
            assert_eq!(found.len(), 1, "{} with {matching:?} in\n{raw}", m.name());
            assert_eq!(found[0].value, m.value(), "{}", m.name());
            // Exactly the grouping labels plus the sample's own: nothing else was added.
            assert_eq!(found[0].labels.len(), want.len(), "{:?}", found[0].labels);
            seen_families += 1;
        }
    }
    assert_eq!(seen_families, FAMILIES.len(), "the test covers every family");
    assert_eq!(
        scrape.chain_latch(),
        ChainLatch { in_flight: Some(true), started_timestamp: Some(1_795_262_400.0) }
    );
    assert_eq!(
        scrape.value("k8s_upgrade_pods_evicted", &[("node", "k8s-node2"), ("phase", "worker")]),
        Some(17.0)
    );
    assert_eq!(scrape.value("k8s_upgrade_drain_duration_seconds", &[("node", "k8s-node2")]), Some(42.5));
}

#[tokio::test]
async fn post_replaces_only_the_families_pushed() {
    let pgw = PgwProcess::start().await;
    let gw = client(&pgw.url);
    gw.push(&Grouping::chain(), &[Metric::InFlight(true), Metric::StartedTimestamp(100.0)]).await;
    gw.push(&Grouping::chain(), &[Metric::Blocked(true)]).await;
    let s = gw.read().await.unwrap();
    assert_eq!(
        s.value("k8s_upgrade_in_flight", &[("job", CHAIN_JOB)]),
        Some(1.0),
        "untouched by the second push"
    );
    assert_eq!(s.value("k8s_upgrade_blocked", &[("job", CHAIN_JOB)]), Some(1.0));

    // A phase's outcome moves from running to succeeded: the old sample is replaced, not kept.
    let phase = Grouping::phase("worker", Some("k8s-node3"));
    gw.push(&phase, &[Metric::PhaseStarted(200.0), Metric::PhaseOutcome(PhaseOutcome::Running)]).await;
    gw.push(&phase, &[Metric::PhaseFinished(300.0), Metric::PhaseOutcome(PhaseOutcome::Succeeded)]).await;
    // Another node's group is separate: its outcome does not erase node3's.
    gw.push(&Grouping::phase("worker", Some("k8s-node4")), &[Metric::PhaseOutcome(PhaseOutcome::Failed)])
        .await;
    let s = gw.read().await.unwrap();
    let node3: Vec<_> = s.find("k8s_upgrade_phase_outcome", &[("node", "k8s-node3")]).collect();
    assert_eq!(node3.len(), 1);
    assert_eq!(node3[0].labels["outcome"], "succeeded");
    assert_eq!(s.value("k8s_upgrade_phase_started_timestamp", &[("node", "k8s-node3")]), Some(200.0));
    assert_eq!(
        s.value("k8s_upgrade_phase_outcome", &[("node", "k8s-node4"), ("outcome", "failed")]),
        Some(1.0)
    );

    // The detector's availability is replaced whole: a stale target does not linger.
    gw.push(
        &Grouping::detection(),
        &[Metric::Available {
            kind: "patch".into(),
            running: "1.34.1".into(),
            target: "1.34.2".into(),
            available: true,
        }],
    )
    .await;
    gw.push(
        &Grouping::detection(),
        &[Metric::Available {
            kind: "none".into(),
            running: "1.34.2".into(),
            target: "1.34.2".into(),
            available: false,
        }],
    )
    .await;
    let s = gw.read().await.unwrap();
    let avail: Vec<_> = s.find("k8s_upgrade_available", &[("job", DETECTION_JOB)]).collect();
    assert_eq!(avail.len(), 1);
    assert_eq!((avail[0].labels["kind"].as_str(), avail[0].value), ("none", 0.0));
}

#[tokio::test]
async fn deleting_the_chain_group_clears_the_latch_only() {
    let pgw = PgwProcess::start().await;
    let gw = client(&pgw.url);
    gw.push(&Grouping::chain(), &[Metric::InFlight(true), Metric::StartedTimestamp(100.0)]).await;
    gw.push(&Grouping::phase("preflight", None), &[Metric::PhaseOutcome(PhaseOutcome::Failed)]).await;
    gw.push(&Grouping::detection(), &[Metric::VersionCheckLastRun(5.0)]).await;
    assert_eq!(gw.read().await.unwrap().chain_latch().in_flight, Some(true));

    gw.delete_group(&Grouping::chain()).await.unwrap();
    let s = gw.read().await.unwrap();
    assert_eq!(s.chain_latch(), ChainLatch { in_flight: None, started_timestamp: None });
    assert_eq!(s.value("k8s_upgrade_phase_outcome", &[("phase", "preflight")]), Some(1.0));
    assert_eq!(s.value("k8s_version_check_last_run_timestamp", &[]), Some(5.0));
}

#[tokio::test]
async fn awkward_grouping_values_use_the_base64_form() {
    let pgw = PgwProcess::start().await;
    let gw = client(&pgw.url);
    let group = Grouping::phase("worker", Some("rack/7 node"));
    assert_eq!(gw.push(&group, &[Metric::PodsEvicted(3)]).await, PushOutcome::Pushed);
    let s = gw.read().await.unwrap();
    assert_eq!(
        s.value("k8s_upgrade_pods_evicted", &[("node", "rack/7 node"), ("phase", "worker")]),
        Some(3.0)
    );
    gw.delete_group(&group).await.unwrap();
    assert_eq!(gw.read().await.unwrap().value("k8s_upgrade_pods_evicted", &[]), None);
}

#[tokio::test]
async fn a_failed_push_is_a_value_not_an_error() {
    let gw = client(&format!("http://127.0.0.1:{}", free_port()));
    match gw.push(&Grouping::chain(), &[Metric::InFlight(true)]).await {
        PushOutcome::Failed { reason } => {
            assert!(reason.contains("failed to push to Pushgateway"), "{reason}")
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(gw.delete_group(&Grouping::chain()).await.is_err());
    assert!(gw.read().await.is_err());
}

#[tokio::test]
async fn a_rejected_push_reports_the_gateways_answer() {
    let pgw = PgwProcess::start().await;
    let gw = client(&pgw.url);
    // The Pushgateway refuses a family whose HELP differs from an existing one of the same name
    // in another group; that surfaces as Failed with its message, never as a panic or error.
    pgw.push_raw(
        "other",
        "# HELP k8s_upgrade_held something else\n# TYPE k8s_upgrade_held counter\nk8s_upgrade_held 1\n",
    )
    .await;
    let outcome = gw.push(&Grouping::chain(), &[Metric::Held(true)]).await;
    match outcome {
        PushOutcome::Failed { reason } => assert!(reason.contains("HTTP 400"), "{reason}"),
        PushOutcome::Pushed => {
            panic!("expected the inconsistent push to be refused:\n{}", pgw.metrics_text().await)
        }
    }
}
