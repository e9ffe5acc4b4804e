//! The chain end to end: `detect`, then every Job's `step` as it appears, on the test
//! apiserver with real sshd nodes (shim node commands), a real Pushgateway and Prometheus.

mod support;

use std::time::Duration;

use chain_core::{
    compat::{Addon, AddonKind, Minor},
    plan::{Kind, Phase, Step},
};
use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{Namespace, PodSpec},
};
use k8s_upgrade_chain::{
    chain::{
        Ended,
        detect::{Action, Detection},
    },
    k8s::spawn::{OnComplete, SpawnOutcome},
};
use sim::apiserver::fixtures as tf;
use support::chain::{Cluster, Layout, NS};

fn small(net: u8) -> Layout<'static> {
    Layout {
        control_planes: &["k8s-master"],
        workers: &["k8s-node1", "k8s-node2", "k8s-node3", "k8s-node4"],
        running: "1.34.1",
        target: "1.34.2",
        net,
    }
}

/// Applies the Job of `step` as an operator would with `render | kubectl apply`.
async fn spawn(c: &Cluster, step: Step, target: &str, kind: Kind) -> SpawnOutcome {
    let ctx = c.ctx();
    let snap = ctx.snapshot().await.unwrap();
    k8s_upgrade_chain::chain::spawn_step(&ctx, &snap, &step, target.parse().unwrap(), kind, OnComplete::Skip)
        .await
        .unwrap()
}

async fn outcome(c: &Cluster, phase: &str, node: &str, outcome: &str) -> Option<f64> {
    let text = c.pgw.metrics_text().await;
    chain_core::metrics::Scrape::parse(&text)
        .value("k8s_upgrade_phase_outcome", &[("phase", phase), ("node", node), ("outcome", outcome)])
}

const CP_TAINT: &str = "node-role.kubernetes.io/control-plane:NoSchedule";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_chain_one_control_plane_seven_workers() {
    let c = Cluster::start(Layout {
        control_planes: &["k8s-master"],
        workers: &[
            "k8s-node1",
            "k8s-node2",
            "k8s-node3",
            "k8s-node4",
            "k8s-node5",
            "k8s-node6",
            "k8s-node10",
        ],
        running: "1.34.1",
        target: "1.34.2",
        net: 31,
    })
    .await;

    let d = c.detect().await;
    assert_eq!(
        d,
        Detection::Target {
            running: "1.34.1".parse().unwrap(),
            target: "1.34.2".parse().unwrap(),
            kind: Kind::Patch,
            action: Action::Spawned { step: Step::Preflight, outcome: SpawnOutcome::Created }
        }
    );
    assert_eq!(c.metric_in("k8s_upgrade_available", "k8s-version-check").await, Some(1.0));

    let ran = c.run_chain().await;
    let order: Vec<String> = ran.iter().map(|j| j.name.clone()).collect();
    for j in &ran {
        eprintln!("{} -> {:?}", j.name, j.result);
    }
    assert_eq!(
        order,
        [
            "k8s-upgrade-preflight-1-34-2",
            "k8s-upgrade-master-1-34-2",
            "k8s-upgrade-worker-1-34-2-k8s-node1",
            "k8s-upgrade-worker-1-34-2-k8s-node2",
            "k8s-upgrade-worker-1-34-2-k8s-node3",
            "k8s-upgrade-worker-1-34-2-k8s-node4",
            "k8s-upgrade-worker-1-34-2-k8s-node5",
            "k8s-upgrade-worker-1-34-2-k8s-node6",
            "k8s-upgrade-worker-1-34-2-k8s-node10",
            "k8s-upgrade-postflight-1-34-2",
        ]
    );
    for j in &ran {
        assert!(matches!(j.result, Ok(Ended::Done)), "{} failed: {:?}", j.name, j.result);
        assert_ne!(j.node.as_deref(), Some(j.run_on.as_str()), "{} runs on the node it drains", j.name);
        match j.phase {
            Phase::Worker => {
                assert_eq!(j.run_on, "k8s-master", "{}", j.name);
                assert_eq!(j.tolerations, [CP_TAINT], "{}", j.name);
            }
            _ => assert_eq!(j.run_on, "k8s-node1", "{}", j.name),
        }
        // In flight from preflight to the last worker; cleared by postflight.
        let want = if j.phase == Phase::Postflight { Some(0.0) } else { Some(1.0) };
        assert_eq!(j.in_flight, want, "in_flight after {}", j.name);
        assert_eq!(j.annotated, j.phase != Phase::Postflight, "annotations after {}", j.name);
    }
    for n in &c.nodes {
        assert_eq!(c.kubelet(&n.name), "v1.34.2", "{} on target", n.name);
        assert!(!c.cordoned(&n.name), "{} uncordoned", n.name);
    }
    let master_calls = c.node("k8s-master").calls();
    assert!(master_calls.iter().any(|l| l.starts_with("kubeadm upgrade apply v1.34.2")), "{master_calls:?}");
    let w = c.node("k8s-node10").calls();
    assert!(w.iter().any(|l| l.starts_with("kubeadm upgrade node")), "{w:?}");
    assert!(!w.iter().any(|l| l.starts_with("kubeadm upgrade apply")), "{w:?}");
    // Progress is visible in `kubectl describe`: Events on the node and on the Job.
    let events = c.srv.list::<k8s_openapi::api::events::v1::Event>(None);
    let reasons = |kind: &str, name: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| {
                e.regarding
                    .as_ref()
                    .is_some_and(|r| r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name))
            })
            .filter_map(|e| e.reason.clone())
            .collect()
    };
    let node_reasons = reasons("Node", "k8s-node10");
    for want in ["DrainStarted", "PodsEvicted", "UpgradeRan", "Uncordoned", "NodeReady", "SoakDone"] {
        assert!(node_reasons.iter().any(|r| r == want), "{want} missing on node: {node_reasons:?}");
    }
    assert!(
        events.iter().any(|e| e
            .regarding
            .as_ref()
            .and_then(|r| r.uid.as_deref())
            .is_some_and(|u| !u.is_empty()))
    );
    let job_reasons = reasons("Job", "k8s-upgrade-worker-1-34-2-k8s-node10");
    assert!(
        job_reasons.contains(&"PhaseStarted".to_string())
            && job_reasons.contains(&"PhaseSucceeded".to_string()),
        "{job_reasons:?}"
    );
    // The quiesced Deployment came back after the control-plane upgrade.
    let op: k8s_openapi::api::apps::v1::Deployment =
        c.srv.get(Some("tigera-operator"), "tigera-operator").unwrap();
    assert_eq!(op.spec.unwrap().replicas, Some(1));
    assert!(!op.metadata.annotations.unwrap_or_default().contains_key("k8s-upgrade-chain/quiesced-replicas"));
    assert_eq!(c.metric("k8s_upgrade_snapshot_taken").await, Some(0.0));
    assert_eq!(c.metric("k8s_upgrade_blocked").await, Some(0.0));
    assert_eq!(c.metric("k8s_upgrade_held").await, Some(0.0));
}

/// The commands between backticks in a message the tool printed.
fn backticked(msg: &str) -> Vec<String> {
    msg.split('`').skip(1).step_by(2).map(String::from).collect()
}

/// The one printed command that starts with `prefix`.
fn printed(msg: &str, prefix: &str) -> String {
    backticked(msg)
        .into_iter()
        .find(|c| c.starts_with(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}...` command in {msg:?}"))
}

/// The runbook writes `line` (each part of an `A && B` line) as a command line of its own: the
/// resume paths it documents are the ones these tests run.
fn runbook_has(line: &str) {
    let runbook = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/runbook.md")).unwrap();
    for part in line.split(" && ") {
        assert!(
            runbook.lines().any(|l| l.trim() == part.trim()),
            "docs/runbook.md does not show the resume command {part:?}"
        );
    }
}

fn names(ran: &[support::chain::RanJob]) -> Vec<&str> {
    ran.iter().map(|j| j.name.as_str()).collect()
}

/// Issue 16's decision and issue 17 item 1: a node whose own upgrade failed stays cordoned, and
/// nothing retries it (detection, a hand-applied Job) until an operator acknowledges it with the
/// command the tool printed; the alert fires meanwhile; detection then resumes the chain there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_node_upgrade_waits_for_an_acknowledgement_then_detection_resumes_there() {
    let c = Cluster::start(small(32)).await;
    c.node("k8s-node3").set_state("apt_get_fails", "");
    c.detect().await;
    let ran = c.run_chain().await;
    let last = ran.last().unwrap();
    assert_eq!(last.name, "k8s-upgrade-worker-1-34-2-k8s-node3");
    let err = last.result.as_ref().unwrap_err();
    assert!(err.contains("k8s-node3") && err.contains("stays cordoned"), "{err}");
    assert!(c.cordoned("k8s-node3"), "the node whose upgrade failed stays cordoned");
    assert!(!c.cordoned("k8s-node2") && !c.cordoned("k8s-node4"));
    assert_eq!(c.kubelet("k8s-node2"), "v1.34.2");
    assert_eq!(c.kubelet("k8s-node4"), "v1.34.1", "the chain did not move on");
    let record = c.upgrade_started("k8s-node3").expect("the upgrade-started record stays");
    assert!(record.starts_with("worker 1.34.2 "), "{record}");
    assert!(c.event_reasons("Node", "k8s-node3").contains(&"UpgradeAwaitingAck".to_string()));
    // State is clear: still in flight, the failure recorded, the node awaiting a human.
    assert_eq!(c.metric("k8s_upgrade_in_flight").await, Some(1.0));
    assert_eq!(outcome(&c, "worker", "k8s-node3", "failed").await, Some(1.0));
    assert_eq!(outcome(&c, "worker", "k8s-node2", "succeeded").await, Some(1.0));
    assert_eq!(c.gauge("k8s_upgrade_awaiting_ack", &[("node", "k8s-node3")]).await, Some(1.0));
    // The shipped alert's expression is true for exactly that node.
    let expr = support::prom::shipped_alert_expr("K8sUpgradeNodeAwaitingAck");
    c.prom.wait_for_series(&expr).await;
    let firing = c.prom.query(&expr).await;
    assert_eq!(firing.len(), 1, "{firing:?}");
    assert_eq!(firing[0]["metric"]["node"], "k8s-node3");
    // What the tool printed: the acknowledgement, not a retry.
    let abort = c.slack_message("ABORT worker k8s-node3");
    let ack = printed(&abort, "k8s-upgrade-chain ack");
    assert_eq!(ack, "k8s-upgrade-chain ack k8s-node3");
    assert_eq!(
        printed(&abort, "kubectl annotate"),
        "kubectl annotate node k8s-node3 k8s-upgrade-chain/upgrade-started-"
    );
    let trigger = printed(&abort, "kubectl -n k8s-upgrade create job --from=cronjob/");

    // Detection does not retry it; it alerts (the gauge is restated from the node).
    let jobs_before = c.chain_jobs();
    match c.detect().await {
        Detection::Target { action: Action::AwaitingAck { nodes }, .. } => assert_eq!(nodes, ["k8s-node3"]),
        other => panic!("expected detection to wait for an acknowledgement, got {other:?}"),
    }
    assert_eq!(c.chain_jobs(), jobs_before, "nothing spawned");
    assert!(c.slack_message("not resuming").contains("k8s-upgrade-chain ack k8s-node3"));
    assert_eq!(c.gauge("k8s_upgrade_awaiting_ack", &[("node", "k8s-node3")]).await, Some(1.0));
    // `status` shows it and prints the command.
    let status = k8s_upgrade_chain::ops::status::read(&c.srv.client(), &c.settings, false).await.unwrap();
    assert_eq!(status.overall, chain_core::status::Overall::AwaitingAck);
    let text = chain_core::status::text(&status);
    assert!(text.contains("acknowledge with: k8s-upgrade-chain ack k8s-node3"), "{text}");
    assert!(
        status.next_steps.iter().any(|n| n.contains("then acknowledge: k8s-upgrade-chain ack k8s-node3"))
    );

    // Re-running the phase by hand without the acknowledgement touches nothing either.
    let calls = c.node("k8s-node3").calls().len();
    c.run_operator_line(
        "kubectl -n k8s-upgrade delete job k8s-upgrade-worker-1-34-2-k8s-node3 --cascade=foreground && \
         k8s-upgrade-chain render --phase worker --node k8s-node3 --version 1.34.2 | kubectl apply -f -",
    )
    .await;
    let refused = c.run_chain().await;
    assert_eq!(names(&refused), ["k8s-upgrade-worker-1-34-2-k8s-node3"]);
    let err = refused[0].result.as_ref().unwrap_err();
    assert!(
        err.contains("awaits an acknowledgement") && err.contains("k8s-upgrade-chain ack k8s-node3"),
        "{err}"
    );
    assert_eq!(c.node("k8s-node3").calls().len(), calls, "nothing ran on the node");
    assert!(c.cordoned("k8s-node3"));

    // The operator fixes the node and runs the printed commands: the acknowledgement, then
    // detection, which resumes the chain at node3 (not at preflight).
    std::fs::remove_file(c.node("k8s-node3").state().join("apt_get_fails")).unwrap();
    runbook_has(&ack);
    runbook_has(&trigger);
    let out = c.run_operator_line(&ack).await;
    assert!(out[0].contains("acknowledged node k8s-node3"), "{out:?}");
    assert_eq!(c.upgrade_started("k8s-node3"), None);
    assert_eq!(c.gauge("k8s_upgrade_awaiting_ack", &[("node", "k8s-node3")]).await, Some(0.0));
    assert!(c.event_reasons("Node", "k8s-node3").contains(&"UpgradeAcknowledged".to_string()));
    let detected = c.run_operator_line(&trigger).await;
    assert!(
        detected[0].contains("Worker { node: \"k8s-node3\" }") && detected[0].contains("Respawned"),
        "{detected:?}"
    );
    let ran = c.run_chain().await;
    assert_eq!(
        names(&ran),
        [
            "k8s-upgrade-worker-1-34-2-k8s-node3",
            "k8s-upgrade-worker-1-34-2-k8s-node4",
            "k8s-upgrade-postflight-1-34-2"
        ]
    );
    assert!(ran.iter().all(|j| j.result.is_ok()), "{ran:?}");
    assert!(!c.cordoned("k8s-node3"));
    assert_eq!(c.upgrade_started("k8s-node3"), None, "seen through: the record is gone");
    assert_eq!(c.metric("k8s_upgrade_in_flight").await, Some(0.0));
    // A second acknowledgement has nothing to do.
    let (code, out, _) = c.run_binary(&["ack", "k8s-node3"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("nothing changed"), "{out}");
}

/// A node whose upgrade was cut short (its pod killed by the deadline, nothing pushed) is found
/// by detection from the node alone; the documented kubectl acknowledgement works too, and
/// detection then sets the alert's gauge back to 0 and resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_interrupted_upgrade_is_found_by_detection_and_acknowledged_with_kubectl() {
    let c = Cluster::start(Layout { workers: &["k8s-node1", "k8s-node2"], ..small(50) }).await;
    c.detect().await;
    // preflight, master, worker node1 run; node2's pod is killed in the middle of its upgrade.
    for _ in 0..3 {
        let job = c.next_job().unwrap();
        assert!(c.run_job(&job).await.result.is_ok());
    }
    let job = c.next_job().unwrap();
    let name = job.metadata.name.clone().unwrap();
    assert_eq!(name, "k8s-upgrade-worker-1-34-2-k8s-node2");
    k8s_upgrade_chain::drain::cordon(&c.srv.client(), "k8s-node2").await.unwrap();
    let started = chain_core::resume::UpgradeStarted::recorded(
        Phase::Worker,
        "1.34.2".parse().unwrap(),
        jiff::Timestamp::now(),
    );
    k8s_upgrade_chain::k8s::records::mark_upgrade_started(&c.srv.client(), "k8s-node2", &started)
        .await
        .unwrap();
    c.srv.fail_job(NS, &name, "DeadlineExceeded");
    assert_eq!(c.gauge("k8s_upgrade_awaiting_ack", &[("node", "k8s-node2")]).await, None, "nothing pushed");

    match c.detect().await {
        Detection::Target { action: Action::AwaitingAck { nodes }, .. } => assert_eq!(nodes, ["k8s-node2"]),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.gauge("k8s_upgrade_awaiting_ack", &[("node", "k8s-node2")]).await, Some(1.0));
    let status = k8s_upgrade_chain::ops::status::read(&c.srv.client(), &c.settings, false).await.unwrap();
    let kubectl = status
        .next_steps
        .iter()
        .find_map(|n| n.split("(or: ").nth(1).and_then(|r| r.split(')').next()))
        .expect("status prints the kubectl form")
        .to_string();
    assert_eq!(kubectl, "kubectl annotate node k8s-node2 k8s-upgrade-chain/upgrade-started-");
    let runbook = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/runbook.md")).unwrap();
    assert!(
        runbook.contains(&format!("`{}`", kubectl.replace("k8s-node2", "k8s-node3"))),
        "the runbook's form"
    );
    c.run_operator_line(&kubectl).await;
    match c.detect().await {
        Detection::Target {
            action: Action::Spawned { step, outcome: SpawnOutcome::Respawned { .. } },
            ..
        } => {
            assert_eq!(step, Step::worker("k8s-node2"))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        c.gauge("k8s_upgrade_awaiting_ack", &[("node", "k8s-node2")]).await,
        Some(0.0),
        "reset by detection"
    );
    let ran = c.run_chain().await;
    assert_eq!(names(&ran), ["k8s-upgrade-worker-1-34-2-k8s-node2", "k8s-upgrade-postflight-1-34-2"]);
    assert!(ran.iter().all(|j| j.result.is_ok()), "{ran:?}");
    assert!(!c.cordoned("k8s-node2"));
    assert_eq!(c.kubelet("k8s-node2"), "v1.34.2");
}

/// Issue 17 item 1: after a kill-switch halt, deleting the switch and running detection (the
/// runbook's and the message's resume path) resumes the chain at the halted step, not at
/// preflight.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_halted_chain_resumes_at_the_halted_step_when_detection_runs() {
    let c = Cluster::start(small(33)).await;
    c.detect().await;
    let srv = c.srv.clone();
    let ran = c
        .run_chain_with(|name| {
            if name.ends_with("k8s-node2") {
                srv.insert(tf::configmap(NS, "k8s-upgrade-killswitch", &[("reason", "storage storm")]));
            }
        })
        .await;
    let last = ran.last().unwrap();
    assert_eq!(last.name, "k8s-upgrade-worker-1-34-2-k8s-node2");
    assert_eq!(last.result, Ok(Ended::Halted("storage storm".into())));
    assert!(!c.cordoned("k8s-node2"), "halted before touching the node");
    assert_eq!(c.kubelet("k8s-node2"), "v1.34.1");
    assert!(!c.chain_jobs().iter().any(|j| j.ends_with("k8s-node3")), "nothing spawned after the halt");
    assert_eq!(outcome(&c, "worker", "k8s-node2", "halted").await, Some(1.0));
    // Detection halts too while the switch is there.
    assert_eq!(c.detect().await, Detection::Halted("storage storm".into()));

    // The message says how to resume; so does `status` (and the runbook, section 6).
    let halted = c.slack_message("HALTED by kill switch before worker k8s-node2");
    assert!(halted.contains("let the next detection run resume the chain at this step"), "{halted}");
    let trigger = printed(&halted, "kubectl -n k8s-upgrade create job --from=cronjob/");
    let status = k8s_upgrade_chain::ops::status::read(&c.srv.client(), &c.settings, false).await.unwrap();
    let step = &status.next_steps[0];
    assert!(step.contains("kubectl -n k8s-upgrade delete configmap k8s-upgrade-killswitch"), "{step}");
    let started_before = c.metric("k8s_upgrade_started_timestamp").await.unwrap();
    let plans = c.node("k8s-master").calls().iter().filter(|l| l.starts_with("kubeadm upgrade plan")).count();

    runbook_has("kubectl -n k8s-upgrade delete configmap k8s-upgrade-killswitch");
    runbook_has(&trigger);
    c.run_operator_line("kubectl -n k8s-upgrade delete configmap k8s-upgrade-killswitch").await;
    let detected = c.run_operator_line(&trigger).await;
    assert!(detected[0].contains("Worker { node: \"k8s-node2\" }"), "{detected:?}");
    assert!(detected[0].contains("Respawned { previous: Complete }"), "{detected:?}");
    assert!(c.slack_message("Resuming the chain").contains("complete (halted)"));
    // The chain's run starts again now: K8sUpgradeStalled measures this run.
    assert!(c.metric("k8s_upgrade_started_timestamp").await.unwrap() > started_before);
    let ran = c.run_chain().await;
    assert_eq!(
        names(&ran),
        [
            "k8s-upgrade-worker-1-34-2-k8s-node2",
            "k8s-upgrade-worker-1-34-2-k8s-node3",
            "k8s-upgrade-worker-1-34-2-k8s-node4",
            "k8s-upgrade-postflight-1-34-2"
        ]
    );
    assert!(ran.iter().all(|j| j.result.is_ok()), "{ran:?}");
    for n in &c.nodes {
        assert_eq!(c.kubelet(&n.name), "v1.34.2", "{}", n.name);
    }
    let plans_after =
        c.node("k8s-master").calls().iter().filter(|l| l.starts_with("kubeadm upgrade plan")).count();
    assert_eq!(plans_after, plans, "preflight did not run again");
    assert_eq!(c.metric("k8s_upgrade_in_flight").await, Some(0.0));
}

/// Issue 17 item 2: a changed host key is found by the check before the cordon, so the node is
/// left as it was; the printed re-run (delete the Job, render and apply it) works once
/// known_hosts is fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_changed_host_key_is_found_before_the_node_is_cordoned() {
    let mut c =
        Cluster::start(Layout { workers: &["k8s-node1", "k8s-node2", "k8s-node3"], ..small(51) }).await;
    c.detect().await;
    let mut reinstalled = false;
    let mut last = None;
    while let Some(job) = c.next_job() {
        if job.metadata.name.as_deref() == Some("k8s-upgrade-worker-1-34-2-k8s-node2") && !reinstalled {
            c.node_mut("k8s-node2").restart_with_new_host_key();
            reinstalled = true;
        }
        last = Some(c.run_job(&job).await);
    }
    let last = last.unwrap();
    assert_eq!(last.name, "k8s-upgrade-worker-1-34-2-k8s-node2");
    let err = last.result.as_ref().unwrap_err();
    assert!(err.contains("cannot be reached") && err.contains("nothing was changed"), "{err}");
    assert!(err.to_lowercase().contains("host key"), "{err}");
    // Nothing happened to the node: not cordoned, no drain, no record, nothing ran there.
    assert!(!c.cordoned("k8s-node2"));
    assert!(c.pods_on("k8s-node2").contains(&"web-1".to_string()), "{:?}", c.pods_on("k8s-node2"));
    assert!(!c.event_reasons("Node", "k8s-node2").contains(&"DrainStarted".to_string()));
    assert_eq!(c.upgrade_started("k8s-node2"), None);
    assert!(!c.node("k8s-node2").calls().iter().any(|l| l.starts_with("kubeadm")));
    let abort = c.slack_message("ABORT worker k8s-node2");
    let rerun = printed(&abort, "kubectl -n k8s-upgrade delete job");
    assert_eq!(
        rerun,
        "kubectl -n k8s-upgrade delete job k8s-upgrade-worker-1-34-2-k8s-node2 --cascade=foreground && \
         k8s-upgrade-chain render --phase worker --node k8s-node2 --version 1.34.2 | kubectl apply -f -"
    );

    // The operator updates known_hosts (the Secret) and re-runs the phase as printed (and as
    // the runbook shows it).
    runbook_has(&rerun);
    c.refresh_known_hosts();
    c.run_operator_line(&rerun).await;
    let ran = c.run_chain().await;
    assert_eq!(
        names(&ran),
        [
            "k8s-upgrade-worker-1-34-2-k8s-node2",
            "k8s-upgrade-worker-1-34-2-k8s-node3",
            "k8s-upgrade-postflight-1-34-2"
        ]
    );
    assert!(ran.iter().all(|j| j.result.is_ok()), "{ran:?}");
    assert_eq!(c.kubelet("k8s-node2"), "v1.34.2");
}

/// Issue 17 item 1: a phase that failed before its node's upgrade started (alerts firing) left
/// the node untouched; the printed detection trigger resumes the chain at that step.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failure_before_the_upgrade_is_resumed_by_detection_at_that_step() {
    let c = Cluster::start(Layout { workers: &["k8s-node1", "k8s-node2", "k8s-node3"], ..small(52) }).await;
    c.detect().await;
    let mut last = None;
    while let Some(job) = c.next_job() {
        if job.metadata.name.as_deref() == Some("k8s-upgrade-worker-1-34-2-k8s-node2") {
            c.pgw.push_raw("test-switch", "k8s_test_block 1\n").await;
            c.prom.wait_for_alerts(&[("TestClusterCritical", "firing")]).await;
        }
        last = Some(c.run_job(&job).await);
    }
    let last = last.unwrap();
    assert_eq!(last.name, "k8s-upgrade-worker-1-34-2-k8s-node2");
    assert!(last.result.as_ref().unwrap_err().contains("TestClusterCritical"), "{:?}", last.result);
    assert!(!c.cordoned("k8s-node2"));
    assert_eq!(c.upgrade_started("k8s-node2"), None, "its upgrade never started");
    let abort = c.slack_message("ABORT worker k8s-node2");
    let trigger = printed(&abort, "kubectl -n k8s-upgrade create job --from=cronjob/");
    // `status` names both ways for this failure.
    let status = k8s_upgrade_chain::ops::status::read(&c.srv.client(), &c.settings, false).await.unwrap();
    let steps = status.next_steps.join("\n");
    assert!(steps.contains("trigger detection, which resumes the chain at this step"), "{steps}");
    assert!(
        steps.contains("k8s-upgrade-chain render --phase worker --node k8s-node2 --version 1.34.2"),
        "{steps}"
    );

    c.pgw.push_raw("test-switch", "k8s_test_block 0\n").await;
    c.prom.wait_for_not_firing("TestClusterCritical").await;
    runbook_has(&trigger);
    let detected = c.run_operator_line(&trigger).await;
    assert!(
        detected[0].contains("Worker { node: \"k8s-node2\" }") && detected[0].contains("Failed"),
        "{detected:?}"
    );
    let ran = c.run_chain().await;
    assert_eq!(
        names(&ran),
        [
            "k8s-upgrade-worker-1-34-2-k8s-node2",
            "k8s-upgrade-worker-1-34-2-k8s-node3",
            "k8s-upgrade-postflight-1-34-2"
        ]
    );
    assert!(ran.iter().all(|j| j.result.is_ok()), "{ran:?}");
    // Nothing left to do: detection says so and spawns nothing.
    match c.detect().await {
        Detection::UpToDate { .. } => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_compatibility_verdict_stops_quietly() {
    let c = Cluster::start(small(34)).await;
    c.srv.insert(tf::namespace("nvidia"));
    c.srv.insert(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "gpu-operator", "namespace": "nvidia"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "gpu-operator"}},
                 "template": {"metadata": {"labels": {"app": "gpu-operator"}},
                              "spec": {"containers": [{"name": "op", "image": "nvcr.io/nvidia/gpu-operator:v25.10.0"}]}}}
    }));
    let mut settings = c.settings.clone();
    settings.compat.addons.push(Addon {
        name: "gpu-operator".into(),
        namespace: "nvidia".into(),
        kind: AddonKind::Deployment,
        resource: "gpu-operator".into(),
        image_re: r"gpu-operator:v(\d+\.\d+)".into(),
        max_k8s: [(Minor(25, 10), Minor(1, 34)), (Minor(26, 3), Minor(1, 35))].into(),
        pinned: true,
        pin_reason: Some("driver coupling".into()),
    });
    let ctx = c.ctx_with(settings.clone());
    let snap = ctx.snapshot().await.unwrap();
    let target = "1.35.0".parse().unwrap();
    k8s_upgrade_chain::chain::spawn_step(
        &ctx,
        &snap,
        &Step::Preflight,
        target,
        Kind::Minor,
        OnComplete::Skip,
    )
    .await
    .unwrap();
    let job =
        c.srv.get::<k8s_openapi::api::batch::v1::Job>(Some(NS), "k8s-upgrade-preflight-1-35-0").unwrap();
    let ran = c.run_job_with(&job, settings).await;
    match &ran.result {
        Ok(Ended::Refused(r)) => assert!(r.starts_with("HELD") && r.contains("[PINNED] gpu-operator"), "{r}"),
        other => panic!("expected a held refusal, got {other:?}"),
    }
    assert_eq!(c.metric("k8s_upgrade_held").await, Some(1.0));
    assert_eq!(c.metric("k8s_upgrade_blocked").await, Some(0.0));
    assert_eq!(c.metric("k8s_upgrade_in_flight").await, None, "refused before anything changed");
    assert_eq!(c.chain_jobs(), ["k8s-upgrade-preflight-1-35-0"], "no master Job");
    assert!(
        c.node("k8s-master").calls().iter().all(|l| !l.starts_with("kubeadm")),
        "nothing ran on the nodes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_preflight_is_respawned_by_detection() {
    let c = Cluster::start(small(35)).await;
    c.pgw.push_raw("test-switch", "k8s_test_block 1\n").await;
    c.prom.wait_for_alerts(&[("TestClusterCritical", "firing")]).await;
    c.detect().await;
    let ran = c.run_chain().await;
    assert_eq!(ran.len(), 1);
    let err = ran[0].result.as_ref().unwrap_err();
    assert!(err.contains("TestClusterCritical"), "{err}");

    c.pgw.push_raw("test-switch", "k8s_test_block 0\n").await;
    c.prom.wait_for_not_firing("TestClusterCritical").await;
    match c.detect().await {
        Detection::Target {
            action: Action::Spawned { step: Step::Preflight, outcome: SpawnOutcome::Respawned { .. } },
            ..
        } => {}
        other => panic!("expected the Failed preflight to be re-spawned, got {other:?}"),
    }
    let ran = c.run_chain().await;
    assert_eq!(ran.len(), 1 + 1 + 4 + 1);
    assert!(ran.iter().all(|j| j.result.is_ok()), "{ran:?}");
    assert_eq!(c.kubelet("k8s-node4"), "v1.34.2");
    // A Complete preflight whose chain advanced is left alone by the next detection.
    match c.detect().await {
        Detection::UpToDate { .. } => {}
        other => panic!("expected up to date, got {other:?}"),
    }
}

/// Seed failure 37: a leaked in-flight latch with no chain to continue is cleared; the chain's
/// Jobs stay (history, expiring with their TTL).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn detection_reconciles_a_leaked_latch() {
    let mut c = Cluster::start(Layout { running: "1.34.2", target: "1.34.2", ..small(36) }).await;
    // Up to date: no newer patch, no next minor.
    let repo = support::chain::AptRepo::start(&[]).await;
    c.settings.apt_repository = repo.url.parse().unwrap();
    let started = jiff::Timestamp::now().as_second() - 13 * 3600;
    c.pgw
        .push_raw(
            "k8s-version-upgrade",
            &format!("k8s_upgrade_in_flight 1\nk8s_upgrade_started_timestamp {started}\n"),
        )
        .await;
    // A stale chain Job from an older run, no longer active.
    c.srv.insert(tf::job(NS, "k8s-upgrade-worker-1-34-1-k8s-node1", "img").as_object().cloned().map(|mut j| {
        j.insert("metadata".into(), serde_json::json!({"name": "k8s-upgrade-worker-1-34-1-k8s-node1", "namespace": NS, "labels": {"app": "k8s-upgrade-chain", "phase": "worker", "target-version": "1-34-1"}}));
        serde_json::Value::Object(j)
    }).unwrap());
    c.srv.complete_job(NS, "k8s-upgrade-worker-1-34-1-k8s-node1");

    assert_eq!(c.detect().await, Detection::UpToDate { running: "1.34.2".parse().unwrap() });
    assert_eq!(c.metric("k8s_upgrade_in_flight").await, None, "the chain group was deleted");
    assert!(c.in_flight_annotations().is_empty());
    assert_eq!(c.chain_jobs(), ["k8s-upgrade-worker-1-34-1-k8s-node1"], "the history stays");
}

/// A chain whose record is in flight but whose Jobs are gone (their TTL passed) and whose
/// nodes are all on target: detection runs it to its end instead of leaving the latch, and
/// postflight clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_in_flight_chain_without_jobs_is_run_to_its_end() {
    let mut c = Cluster::start(Layout {
        workers: &["k8s-node1", "k8s-node2"],
        running: "1.34.2",
        target: "1.34.2",
        ..small(53)
    })
    .await;
    let repo = support::chain::AptRepo::start(&[]).await;
    c.settings.apt_repository = repo.url.parse().unwrap();
    c.srv.modify::<Namespace>(None, NS, |ns| {
        ns["metadata"]["annotations"] = serde_json::json!({
            "k8s-upgrade-chain/in-flight": "2026-01-01T00:00:00Z",
            "k8s-upgrade-chain/target": "1.34.2",
        });
    });
    match c.detect().await {
        Detection::Target { action: Action::Spawned { step: Step::Preflight, .. }, target, .. } => {
            assert_eq!(target.to_string(), "1.34.2")
        }
        other => panic!("{other:?}"),
    }
    let ran = c.run_chain().await;
    assert!(ran.iter().all(|j| j.result.is_ok()), "{ran:?}");
    assert_eq!(ran.last().unwrap().name, "k8s-upgrade-postflight-1-34-2");
    assert!(
        matches!(ran[0].result, Ok(Ended::Skipped(_))),
        "preflight had nothing to prepare: {:?}",
        ran[0].result
    );
    assert!(c.in_flight_annotations().is_empty(), "postflight cleared the record");
    assert!(
        c.nodes.iter().all(|n| !n.calls().iter().any(|l| l.starts_with("kubeadm"))),
        "no node upgraded again"
    );
    assert_eq!(c.detect().await, Detection::UpToDate { running: "1.34.2".parse().unwrap() });
}

/// Issue 17 item 3: re-running a completed preflight after the chain finished changes nothing:
/// no annotations, no metrics, no Jobs; `status` stays idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rerunning_a_completed_preflight_after_the_chain_changes_nothing() {
    let c = Cluster::start(Layout { workers: &["k8s-node1", "k8s-node2"], ..small(54) }).await;
    c.detect().await;
    let ran = c.run_chain().await;
    assert!(ran.iter().all(|j| j.result.is_ok()), "{ran:?}");
    let metrics = c.chain_metrics().await;
    assert!(metrics.iter().any(|l| l.starts_with("k8s_upgrade_in_flight")), "{metrics:?}");
    let jobs = c.chain_jobs();
    let events = c.srv.list::<k8s_openapi::api::events::v1::Event>(None).len();

    // The operator re-runs preflight by hand.
    c.run_operator_line(
        "kubectl -n k8s-upgrade delete job k8s-upgrade-preflight-1-34-2 --cascade=foreground && \
         k8s-upgrade-chain render --phase preflight --version 1.34.2 | kubectl apply -f -",
    )
    .await;
    let again = c.run_chain().await;
    assert_eq!(names(&again), ["k8s-upgrade-preflight-1-34-2"]);
    match &again[0].result {
        Ok(Ended::Skipped(why)) => assert!(why.contains("every node is already on v1.34.2"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(c.in_flight_annotations().is_empty(), "{:?}", c.in_flight_annotations());
    assert_eq!(again[0].in_flight, Some(0.0));
    assert_eq!(c.chain_metrics().await, metrics, "no metric pushed");
    assert_eq!(c.chain_jobs(), jobs, "no Job spawned");
    assert_eq!(c.srv.list::<k8s_openapi::api::events::v1::Event>(None).len(), events, "no Event");
    let job: Job = c.srv.get(Some(NS), "k8s-upgrade-preflight-1-34-2").unwrap();
    assert!(
        !job.metadata.annotations.unwrap_or_default().contains_key(chain_core::resume::OUTCOME_ANNOTATION)
    );
    let status = k8s_upgrade_chain::ops::status::read(&c.srv.client(), &c.settings, false).await.unwrap();
    assert_eq!(status.overall, chain_core::status::Overall::Idle);
    assert_eq!(status.next_steps, ["Nothing to do."]);
}

/// Issue 17 item 2: a static setting is checked before any record is written (no etcd backup
/// and no opt-out: not even the access review runs), and every node is checked over SSH
/// before preflight marks anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn preflight_checks_settings_and_every_node_before_it_marks_anything() {
    let mut c =
        Cluster::start(Layout { workers: &["k8s-node1", "k8s-node2", "k8s-node3"], ..small(55) }).await;
    let with_backup = c.settings.clone();
    c.settings.hooks.etcd_backup = None;
    c.detect().await;
    c.srv.reset_requests();
    let ran = c.run_chain().await;
    assert_eq!(names(&ran), ["k8s-upgrade-preflight-1-34-2"]);
    let err = ran[0].result.as_ref().unwrap_err();
    assert!(err.contains("no etcd backup configured"), "{err}");
    assert_eq!(c.metric("k8s_upgrade_in_flight").await, None, "nothing marked in flight");
    assert!(c.in_flight_annotations().is_empty());
    let reviews = c.srv.requests().iter().filter(|r| r.path.contains("selfsubjectaccessreviews")).count();
    assert_eq!(reviews, 0, "refused before reading anything");
    assert!(
        c.nodes.iter().flat_map(|n| n.calls()).all(|l| l.starts_with("apt-") || l.starts_with("sudo -n apt"))
    );

    // With a backup, but one node unreachable: refused before marking, nothing prepared.
    c.settings = with_backup;
    c.node_mut("k8s-node3").kill_all();
    c.detect().await;
    let ran = c.run_chain().await;
    assert_eq!(names(&ran), ["k8s-upgrade-preflight-1-34-2"]);
    let err = ran[0].result.as_ref().unwrap_err();
    assert!(err.contains("node k8s-node3 cannot be reached"), "{err}");
    assert_eq!(c.metric("k8s_upgrade_in_flight").await, None);
    assert!(c.in_flight_annotations().is_empty());
    assert!(
        c.srv.list::<Job>(Some("default")).iter().all(|j| !j
            .metadata
            .name
            .as_deref()
            .unwrap()
            .starts_with("pre-upgrade-etcd")),
        "no etcd snapshot taken"
    );
}

/// Issue 17 item 5: with the site's snapshot opt-out, preflight says so in a gauge, and the
/// shipped EtcdPreUpgradeSnapshotMissing rule stays quiet on what the chain really pushed
/// (`an_empty_etcd_snapshot_aborts_before_any_node_is_touched` shows it true without it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_snapshot_opt_out_does_not_page() {
    let mut c = Cluster::start(Layout { workers: &["k8s-node1"], ..small(56) }).await;
    c.settings.hooks.etcd_backup = None;
    c.settings.hooks.allow_no_etcd_snapshot = true;
    c.detect().await;
    let job = c.next_job().unwrap();
    let pre = c.run_job(&job).await;
    assert!(matches!(pre.result, Ok(Ended::Done)), "{:?}", pre.result);
    assert_eq!(c.metric("k8s_upgrade_in_flight").await, Some(1.0));
    assert_eq!(c.metric("k8s_upgrade_snapshot_taken").await, Some(0.0));
    assert_eq!(c.metric("k8s_upgrade_snapshot_skipped").await, Some(1.0));
    c.prom.wait_for_series("k8s_upgrade_snapshot_skipped == 1 and on () k8s_upgrade_in_flight == 1").await;
    let expr = support::prom::shipped_alert_expr("EtcdPreUpgradeSnapshotMissing");
    assert_eq!(c.prom.query(&expr).await, Vec::<serde_json::Value>::new());
    let ran = c.run_chain().await;
    assert!(ran.iter().all(|j| j.result.is_ok()), "{ran:?}");
    assert_eq!(c.metric("k8s_upgrade_snapshot_skipped").await, Some(0.0), "cleared with the chain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ha_control_plane_upgrades_one_at_a_time_before_workers() {
    let c = Cluster::start(Layout {
        control_planes: &["k8s-cp1", "k8s-cp2", "k8s-cp3"],
        workers: &["k8s-node1", "k8s-node2"],
        running: "1.34.1",
        target: "1.34.2",
        net: 37,
    })
    .await;
    c.detect().await;
    let ran = c.run_chain().await;
    let order: Vec<&str> = ran.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(
        order,
        [
            "k8s-upgrade-preflight-1-34-2",
            "k8s-upgrade-master-1-34-2",
            "k8s-upgrade-control-plane-1-34-2-k8s-cp2",
            "k8s-upgrade-control-plane-1-34-2-k8s-cp3",
            "k8s-upgrade-worker-1-34-2-k8s-node1",
            "k8s-upgrade-worker-1-34-2-k8s-node2",
            "k8s-upgrade-postflight-1-34-2",
        ]
    );
    assert!(ran.iter().all(|j| j.result.is_ok()), "{ran:?}");
    assert!(c.node("k8s-cp1").calls().iter().any(|l| l.starts_with("kubeadm upgrade apply v1.34.2")));
    for cp in ["k8s-cp2", "k8s-cp3"] {
        let calls = c.node(cp).calls();
        assert!(calls.iter().any(|l| l.starts_with("kubeadm upgrade node")), "{cp}: {calls:?}");
        assert!(!calls.iter().any(|l| l.starts_with("kubeadm upgrade apply")), "{cp}: {calls:?}");
    }
    let w = ran.iter().find(|j| j.phase == Phase::Worker).unwrap();
    assert_eq!(w.run_on, "k8s-cp1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rerunning_a_completed_phase_is_safe() {
    let c = Cluster::start(Layout { workers: &["k8s-node1", "k8s-node2"], ..small(38) }).await;
    c.detect().await;
    let ran = c.run_chain().await;
    assert!(ran.iter().all(|j| j.result.is_ok()), "{ran:?}");
    let calls_before = c.node("k8s-node2").calls().len();
    let jobs_before = c.chain_jobs();

    // The operator re-runs node2's phase by hand.
    let input = k8s_upgrade_chain::chain::StepInput {
        step: Step::worker("k8s-node2"),
        target: "1.34.2".parse().unwrap(),
        kind: Kind::Patch,
    };
    let ended = k8s_upgrade_chain::chain::run_step(&c.ctx(), &input).await.unwrap();
    assert!(matches!(ended, Ended::Skipped(_)), "{ended:?}");
    assert_eq!(c.node("k8s-node2").calls().len(), calls_before, "nothing ran on the node");
    assert!(!c.cordoned("k8s-node2"));
    assert_eq!(c.chain_jobs(), jobs_before, "the Complete postflight was not re-spawned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_minor_upgrade_is_detected_through_redirects_and_runs() {
    let mut c = Cluster::start(Layout {
        control_planes: &["k8s-master"],
        workers: &["k8s-node1", "k8s-node2"],
        running: "1.34.2",
        target: "1.35.3",
        net: 39,
    })
    .await;
    let repo = support::chain::AptRepo::start(&[("1.35", &["1.35.0", "1.35.3", "1.35.1"])]).await;
    c.settings.apt_repository = repo.url.parse().unwrap();
    let d = k8s_upgrade_chain::chain::detect::detect(&c.ctx(), false).await.unwrap();
    assert_eq!(
        d,
        Detection::Target {
            running: "1.34.2".parse().unwrap(),
            target: "1.35.3".parse().unwrap(),
            kind: Kind::Minor,
            action: Action::Spawned { step: Step::Preflight, outcome: SpawnOutcome::Created }
        }
    );
    let ran = c.run_chain().await;
    assert_eq!(ran.len(), 5, "{ran:?}");
    assert!(ran.iter().all(|j| j.result.is_ok()), "{ran:?}");
    for n in &c.nodes {
        assert_eq!(c.kubelet(&n.name), "v1.35.3");
    }
    assert!(c.node("k8s-master").calls().iter().any(|l| l.starts_with("kubeadm upgrade apply v1.35.3")));

    // A repository without the next minor: nothing to do.
    let empty = support::chain::AptRepo::start(&[]).await;
    c.settings.apt_repository = empty.url.parse().unwrap();
    let d = k8s_upgrade_chain::chain::detect::detect(&c.ctx(), true).await.unwrap();
    assert_eq!(d, Detection::UpToDate { running: "1.35.3".parse().unwrap() });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_control_plane_upgrade_restores_quiesced_deployments() {
    let c = Cluster::start(small(40)).await;
    c.node("k8s-master").set_state("apply_failures", "3");
    c.detect().await;
    let ran = c.run_chain().await;
    let last = ran.last().unwrap();
    assert_eq!(last.name, "k8s-upgrade-master-1-34-2");
    assert!(last.result.is_err(), "{:?}", last.result);
    // Seed failure 27: the operator stayed at 0 replicas after a failed control-plane phase.
    let op: k8s_openapi::api::apps::v1::Deployment =
        c.srv.get(Some("tigera-operator"), "tigera-operator").unwrap();
    assert_eq!(op.spec.unwrap().replicas, Some(1), "restored on the error path");
    assert!(c.cordoned("k8s-master"), "its own upgrade failed: it stays cordoned");
    let calls = c.node("k8s-master").calls();
    assert_eq!(calls.iter().filter(|l| l.starts_with("kubeadm upgrade apply")).count(), 3, "{calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn preflight_refuses_inside_the_settle_window_and_without_prometheus() {
    let c = Cluster::start(small(41)).await;
    c.detect().await;
    let job =
        c.srv.get::<k8s_openapi::api::batch::v1::Job>(Some(NS), "k8s-upgrade-preflight-1-34-2").unwrap();
    // The simulated nodes turned Ready seconds ago: inside the default 10-minute window.
    let mut settings = c.settings.clone();
    settings.timeouts.settle_window = Duration::from_secs(600);
    let ran = c.run_job_with(&job, settings).await;
    let err = ran.result.unwrap_err();
    assert!(err.contains("settle window") && err.contains("k8s-node1"), "{err}");
    assert_eq!(c.metric("k8s_upgrade_in_flight").await, None, "aborted before marking in flight");

    // Prometheus unreachable: the alert gate fails closed (the seed ran on).
    spawn(&c, Step::Preflight, "1.34.2", Kind::Patch).await;
    let job =
        c.srv.get::<k8s_openapi::api::batch::v1::Job>(Some(NS), "k8s-upgrade-preflight-1-34-2").unwrap();
    let mut settings = c.settings.clone();
    settings.alerts.prometheus_url = "http://127.0.0.1:9/".parse().unwrap();
    let ran = c.run_job_with(&job, settings).await;
    match ran.result {
        Ok(Ended::Refused(r)) => assert!(r.contains("could not query Prometheus"), "{r}"),
        other => panic!("expected a blocked refusal, got {other:?}"),
    }
    assert_eq!(c.metric("k8s_upgrade_blocked").await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_empty_etcd_snapshot_aborts_before_any_node_is_touched() {
    let c = Cluster::start(small(42)).await;
    *c.backup_log.lock().unwrap() = "Backup done: etcd-snapshot.db (512 bytes)\n".into();
    c.detect().await;
    let ran = c.run_chain().await;
    assert_eq!(ran.len(), 1);
    let err = ran[0].result.as_ref().unwrap_err();
    assert!(err.contains("512 bytes") && err.contains("1024"), "{err}");
    // In flight without a snapshot: exactly what EtcdPreUpgradeSnapshotMissing alerts on.
    assert_eq!(c.metric("k8s_upgrade_in_flight").await, Some(1.0));
    assert_eq!(c.metric("k8s_upgrade_snapshot_taken").await, Some(0.0));
    assert_eq!(c.metric("k8s_upgrade_snapshot_skipped").await, Some(0.0));
    c.prom.wait_for_series(&support::prom::shipped_alert_expr("EtcdPreUpgradeSnapshotMissing")).await;
    assert!(c.nodes.iter().all(|n| !n.calls().iter().any(|l| l.starts_with("kubeadm upgrade apply"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partial_chain_resumes_without_redoing_finished_nodes() {
    let c = Cluster::start(small(43)).await;
    // A previous run upgraded the control plane and node1, then stopped.
    c.srv.set_kubelet_version("k8s-master", "v1.34.2");
    c.srv.set_kubelet_version("k8s-node1", "v1.34.2");
    // The post-upgrade script must not run either: the control plane is not upgraded again.
    let mut settings = c.settings.clone();
    settings.hooks.post_control_plane_scripts = c.oidc_restore();
    k8s_upgrade_chain::chain::detect::detect(&c.ctx_with(settings), false).await.unwrap();
    let ran = c.run_chain().await;
    let names: Vec<&str> = ran.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "k8s-upgrade-preflight-1-34-2",
            "k8s-upgrade-master-1-34-2",
            "k8s-upgrade-worker-1-34-2-k8s-node2",
            "k8s-upgrade-worker-1-34-2-k8s-node3",
            "k8s-upgrade-worker-1-34-2-k8s-node4",
            "k8s-upgrade-postflight-1-34-2",
        ]
    );
    assert!(matches!(ran[1].result, Ok(Ended::Skipped(_))), "{:?}", ran[1].result);
    let master = c.node("k8s-master").calls();
    // Seed failure 28: kubeadm plan on an at-target control plane prints no apply line.
    assert!(!master.iter().any(|l| l.starts_with("kubeadm")), "{master:?}");
    assert!(!master.iter().any(|l| l.contains("oidc-restore-marker")), "{master:?}");
    assert!(c.node("k8s-node1").calls().iter().all(|l| !l.starts_with("kubeadm")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn post_upgrade_scripts_run_on_the_upgraded_control_plane() {
    let mut c = Cluster::start(Layout { workers: &["k8s-node1"], ..small(44) }).await;
    c.settings.hooks.post_control_plane_scripts = c.oidc_restore();
    c.detect().await;
    let ran = c.run_chain().await;
    assert!(ran.iter().all(|j| j.result.is_ok()), "{ran:?}");
    let master = c.node("k8s-master").calls();
    let apply = master.iter().position(|l| l.starts_with("kubeadm upgrade apply")).unwrap();
    let script = master.iter().position(|l| l.contains("oidc-restore-marker")).expect("the script ran");
    assert!(script > apply, "after the upgrade: {master:?}");
    assert!(!c.node("k8s-node1").calls().iter().any(|l| l.contains("oidc-restore-marker")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_removed_mid_chain_is_passed_over() {
    let c = Cluster::start(small(45)).await;
    c.detect().await;
    let srv = c.srv.clone();
    let ran = c
        .run_chain_with(|name| {
            if name.ends_with("k8s-node3") {
                srv.remove::<k8s_openapi::api::core::v1::Node>(None, "k8s-node3");
            }
        })
        .await;
    let names: Vec<&str> = ran.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names.len(), 7, "{names:?}");
    let node3 = ran.iter().find(|j| j.name.ends_with("k8s-node3")).unwrap();
    assert!(
        matches!(&node3.result, Ok(Ended::Skipped(why)) if why.contains("no longer exists")),
        "{:?}",
        node3.result
    );
    assert!(ran.iter().all(|j| j.result.is_ok()), "{ran:?}");
    assert_eq!(c.kubelet("k8s-node4"), "v1.34.2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_rbac_stops_preflight_before_anything_changes() {
    let c = Cluster::start(small(46)).await;
    // Seed failure 25: without pods/log the etcd check aborted after the latch was set.
    c.srv.deny("get", "", "pods/log");
    c.detect().await;
    let ran = c.run_chain().await;
    assert_eq!(ran.len(), 1);
    let err = ran[0].result.as_ref().unwrap_err();
    assert!(err.contains("lacks 1 permission") && err.contains("get core/pods/log"), "{err}");
    assert_eq!(c.metric("k8s_upgrade_in_flight").await, None, "nothing marked in flight");
    // Detection's apt-cache query is all that ran on a node.
    assert!(
        c.nodes.iter().flat_map(|n| n.calls()).all(|l| l.starts_with("apt-") || l.starts_with("sudo")),
        "nothing changed on any node"
    );
}

/// The site's `job.template` override: the built-in template plus a marker annotation, so
/// every Job rendered from it can be told apart.
fn site_template() -> String {
    let marked = chain_core::job::BUILTIN_TEMPLATE.replacen(
        "  annotations:\n",
        "  annotations:\n    site.example/template: override\n",
        1,
    );
    assert_ne!(marked, chain_core::job::BUILTIN_TEMPLATE);
    marked
}

/// Installs the chain's objects as `manifests` prints them for `settings` with `template` in
/// the config ConfigMap, and returns the detection CronJob's pod spec.
fn install(c: &Cluster, settings: &chain_core::settings::Settings, template: Option<&str>) -> PodSpec {
    use chain_core::manifests::{self, Options};
    let opts = Options {
        image: support::chain::IMAGE.into(),
        schedule: manifests::DEFAULT_SCHEDULE.into(),
        report_schedule: manifests::DEFAULT_REPORT_SCHEDULE.into(),
        dry_run: false,
        enabled: true,
        config_yaml: manifests::config_yaml(settings),
        job_template: template.map(|t| (settings.job.template.clone().unwrap(), t.to_string())),
    };
    let objects = manifests::objects(settings, &opts);
    for cm in objects.iter().filter(|o| o["kind"] == "ConfigMap") {
        c.srv.insert(cm.clone());
    }
    let cronjob = objects.iter().find(|o| o["metadata"]["name"] == manifests::DETECTION_CRONJOB).unwrap();
    serde_json::from_value(cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"].clone()).unwrap()
}

fn marked(job: &Job) -> bool {
    job.metadata.annotations.as_ref().and_then(|a| a.get("site.example/template")).map(String::as_str)
        == Some("override")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_template_override_renders_every_job_of_the_chain() {
    let c = Cluster::start(Layout { workers: &["k8s-node1", "k8s-node2"], ..small(47) }).await;
    let mut settings = c.settings.clone();
    settings.job.template = Some("site-job.yaml.j2".into());
    let detection = install(&c, &settings, Some(&site_template()));

    // Detection runs with what its CronJob's pod mounts, and renders preflight from the override.
    let root = tempfile::tempdir().unwrap();
    let in_pod = c.settings_in_pod(&detection, root.path()).unwrap();
    assert_eq!(
        in_pod.job.template.as_deref().map(std::path::Path::new),
        Some(root.path().join("etc/k8s-upgrade-chain/site-job.yaml.j2").as_path())
    );
    let d = k8s_upgrade_chain::chain::detect::detect(&c.ctx_with(in_pod), false).await.unwrap();
    assert!(
        matches!(d, Detection::Target { action: Action::Spawned { outcome: SpawnOutcome::Created, .. }, .. }),
        "{d:?}"
    );

    // Each chain Job, spawned from the override, renders the next one from the same override,
    // read through its own config mount.
    let ran = c.run_chain_in_pods().await;
    let order: Vec<&str> = ran.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(
        order,
        [
            "k8s-upgrade-preflight-1-34-2",
            "k8s-upgrade-master-1-34-2",
            "k8s-upgrade-worker-1-34-2-k8s-node1",
            "k8s-upgrade-worker-1-34-2-k8s-node2",
            "k8s-upgrade-postflight-1-34-2",
        ]
    );
    for j in &ran {
        assert!(matches!(j.result, Ok(Ended::Done)), "{} failed: {:?}", j.name, j.result);
    }
    let jobs = c.srv.list::<Job>(Some(NS));
    let chain: Vec<&Job> =
        jobs.iter().filter(|j| order.contains(&j.metadata.name.as_deref().unwrap())).collect();
    assert_eq!(chain.len(), order.len());
    for j in chain {
        assert!(marked(j), "{} was not rendered from the override", j.metadata.name.as_deref().unwrap());
    }
    for n in &c.nodes {
        assert_eq!(c.kubelet(&n.name), "v1.34.2", "{} on target", n.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_override_without_the_config_mount_stops_at_the_first_job() {
    let c = Cluster::start(Layout { workers: &["k8s-node1"], ..small(48) }).await;
    let mut settings = c.settings.clone();
    settings.job.template = Some("site-job.yaml.j2".into());
    // The override drops the config mount: its Jobs cannot read the config, nor the override.
    let template = site_template().replacen(
        "            - name: config\n              mountPath: /etc/k8s-upgrade-chain\n              readOnly: true\n",
        "",
        1,
    );
    assert_ne!(template, site_template());
    let detection = install(&c, &settings, Some(&template));
    let root = tempfile::tempdir().unwrap();
    // The detection pod checks the template when it loads its config (QA A6): refused there,
    // before anything is applied. (Before, the preflight Job was applied and failed in its pod.)
    let err = c.settings_in_pod(&detection, root.path()).unwrap_err();
    assert!(err.contains("does not mount the config ConfigMap"), "{err}");
    // A template that reached the chain unchecked is refused by its own render, before the
    // first Job is applied.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site-job.yaml.j2");
    std::fs::write(&path, &template).unwrap();
    let mut unchecked = c.settings.clone();
    unchecked.job.template = Some(path.display().to_string());
    let err = k8s_upgrade_chain::chain::detect::detect(&c.ctx_with(unchecked), false).await.unwrap_err();
    assert!(format!("{err:#}").contains("does not mount the config ConfigMap"), "{err:#}");
    assert!(
        c.srv.get::<k8s_openapi::api::batch::v1::Job>(Some(NS), "k8s-upgrade-preflight-1-34-2").is_none(),
        "no Job was applied"
    );

    // And a config naming a template the ConfigMap lacks is refused when the detection pod
    // loads it (exit 2, bad input).
    install(&c, &settings, None);
    let root = tempfile::tempdir().unwrap();
    let err = c.settings_in_pod(&detection, root.path()).unwrap_err();
    assert!(err.contains("failed to read the Job template") && err.contains("site-job.yaml.j2"), "{err}");
}
