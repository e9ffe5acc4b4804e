//! Seed parity (issue 16): for each recorded failure of the system this tool replaces
//! (`seed-system.md` §10) that the code prevents, a test that fails if the behaviour is
//! removed or moved. Each drives `detect` and the chain Jobs' `step` on the test apiserver,
//! with real sshd nodes (shim node commands), a real Pushgateway (behind a recorder that keeps
//! every push) and Prometheus, and a recording Slack webhook.

mod support;

use std::{path::Path, time::Duration};

use chain_core::{
    compat::{Addon, AddonKind, Minor},
    plan::{Kind, Step},
    settings::Settings,
};
use k8s_openapi::api::{apps::v1::Deployment, batch::v1::Job};
use k8s_upgrade_chain::{
    chain::{
        self, Ended, StepInput,
        detect::{Action, Detection},
    },
    k8s::spawn::{JobState, OnComplete, SpawnOutcome},
};
use sim::apiserver::fixtures as tf;
use support::chain::{AptRepo, Cluster, IMAGE, Layout, NS};

const QUIESCED: &str = "k8s-upgrade-chain/quiesced-replicas";

fn small(net: u8) -> Layout<'static> {
    Layout {
        control_planes: &["k8s-master"],
        workers: &["k8s-node1", "k8s-node2"],
        running: "1.34.1",
        target: "1.34.2",
        net,
    }
}

/// Applies the Job of `step` as an operator would with `render | kubectl apply`.
async fn spawn_with(c: &Cluster, settings: &Settings, step: Step, target: &str, kind: Kind) -> SpawnOutcome {
    let ctx = c.ctx_with(settings.clone());
    let snap = ctx.snapshot().await.unwrap();
    chain::spawn_step(&ctx, &snap, &step, target.parse().unwrap(), kind, OnComplete::Skip).await.unwrap()
}

/// Polls `f` every 20 ms until it holds; panics naming `what` after 60 s.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn operator(c: &Cluster) -> Deployment {
    c.srv.get(Some("tigera-operator"), "tigera-operator").unwrap()
}

fn replicas_and_saved(d: &Deployment) -> (Option<i32>, Option<String>) {
    (
        d.spec.as_ref().and_then(|s| s.replicas),
        d.metadata.annotations.as_ref().and_then(|a| a.get(QUIESCED)).cloned(),
    )
}

/// The messages a sender posted (`[k8s-upgrade-preflight]`, `[k8s-version-check]`, ...).
fn from(messages: &[String], prefix: &str) -> Vec<String> {
    messages.iter().filter(|m| m.starts_with(prefix)).cloned().collect()
}

// === §10.13: tigera-operator quiesced around `kubeadm upgrade apply` ===

/// The Deployment the site quiesces is at 0 replicas at the very moment `kubeadm upgrade
/// apply` runs, on the first attempt and on the retry, and back to its replicas afterwards.
/// The shim `kubeadm` on the node reads the Deployment from the apiserver while apply runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_quiesced_deployment_is_at_zero_while_kubeadm_upgrade_apply_runs() {
    let c = Cluster::start(small(60)).await;
    let master = c.node("k8s-master");
    master.set_state(
        "observe_on_apply",
        &format!("{}/apis/apps/v1/namespaces/tigera-operator/deployments/tigera-operator\n", c.srv.url()),
    );
    // The first apply fails (seed failure 12): the retry must run quiesced too.
    master.set_state("apply_failures", "1");
    assert_eq!(replicas_and_saved(&operator(&c)), (Some(1), None));
    c.detect().await;
    let ran = c.run_chain().await;
    assert!(ran.iter().all(|j| j.result.is_ok()), "{ran:?}");

    let dir = master.state().join("observed");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let names: Vec<String> = files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into()).collect();
    assert_eq!(names, ["apply-1-1.json", "apply-2-1.json"], "one observation per apply");
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let d: Deployment =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}: {text}", f.display()));
        assert_eq!(
            replicas_and_saved(&d),
            (Some(0), Some("1".into())),
            "during {}: the Deployment must be quiesced",
            f.display()
        );
    }
    assert_eq!(replicas_and_saved(&operator(&c)), (Some(1), None), "restored after the upgrade");
}

// === §10.27: restore on every exit path ===

/// A control-plane Job killed between its quiesce and its restore (activeDeadlineSeconds, a
/// SIGKILL: no code of its own runs) leaves the Deployment at 0. The retried Job restores it at
/// once, even though it refuses the node until an operator acknowledges the interrupted upgrade
/// (issue 16's decision): the node stays cordoned for that operator. After the acknowledgement
/// the retry finds the node on target, skips its work and uncordons it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_control_plane_job_that_skips_restores_what_a_killed_run_quiesced() {
    let c = Cluster::start(small(61)).await;
    c.detect().await;
    let preflight = c.next_job().unwrap();
    assert!(c.run_job(&preflight).await.result.is_ok());

    // The master Job runs until kubeadm apply is under way, then is killed.
    let master = c.node("k8s-master");
    master.set_state("hold_apply", "");
    let input =
        StepInput { step: Step::master("k8s-master"), target: "1.34.2".parse().unwrap(), kind: Kind::Patch };
    let ctx = c.ctx();
    let mut step = Box::pin(chain::run_step(&ctx, &input));
    let apply_started = eventually("kubeadm upgrade apply to start", || {
        master.calls().iter().any(|l| l.starts_with("kubeadm upgrade apply"))
    });
    tokio::select! {
        r = &mut step => panic!("the control-plane Job ended before it was killed: {r:?}"),
        () = apply_started => {}
    }
    // The kill: the phase's future is dropped mid-await, none of its own code runs again.
    drop(step);
    c.srv.fail_job(NS, "k8s-upgrade-master-1-34-2", "DeadlineExceeded");
    // The session died with the Job; the node came up on the new version anyway (kubeadm had
    // done its work), as the kubelet reports.
    std::fs::remove_file(master.state().join("hold_apply")).unwrap();
    c.srv.set_kubelet_version("k8s-master", "v1.34.2");
    assert!(c.cordoned("k8s-master"), "the killed run had cordoned it");
    assert_eq!(replicas_and_saved(&operator(&c)), (Some(0), Some("1".into())), "left quiesced by the kill");

    // The retry: the Failed Job is replaced; its phase refuses the unacknowledged node but
    // restores the Deployment first.
    let out = spawn_with(&c, &c.settings, Step::master("k8s-master"), "1.34.2", Kind::Patch).await;
    assert!(matches!(out, SpawnOutcome::Respawned { previous: JobState::Failed }), "{out:?}");
    let retry = c.next_job().unwrap();
    assert_eq!(retry.metadata.name.as_deref(), Some("k8s-upgrade-master-1-34-2"));
    let ran = c.run_job(&retry).await;
    let refused = ran.result.expect_err("an interrupted upgrade awaits an acknowledgement");
    assert!(refused.contains("k8s-upgrade-chain ack k8s-master"), "{refused}");
    assert_eq!(replicas_and_saved(&operator(&c)), (Some(1), None), "restored by the refused retry");
    assert!(c.cordoned("k8s-master"), "the node stays cordoned for the operator");

    // The operator acknowledges; the next retry skips the upgrade and uncordons the node.
    k8s_upgrade_chain::ops::ack::acknowledge(&c.srv.client(), &c.settings, "k8s-master").await.unwrap();
    let out = spawn_with(&c, &c.settings, Step::master("k8s-master"), "1.34.2", Kind::Patch).await;
    assert!(matches!(out, SpawnOutcome::Respawned { .. }), "{out:?}");
    let retry = c.next_job().unwrap();
    let ran = c.run_job(&retry).await;
    assert!(matches!(ran.result, Ok(Ended::Skipped(_))), "{:?}", ran.result);
    assert_eq!(replicas_and_saved(&operator(&c)), (Some(1), None));
    assert!(!c.cordoned("k8s-master"), "the node the killed run cordoned is back in service");
}

/// Postflight is the backstop: a Deployment still carrying its saved replica count (a killed
/// control-plane Job whose retry an operator skipped by hand, runbook §7) is restored before
/// the chain ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postflight_restores_a_deployment_left_quiesced() {
    let c = Cluster::start(Layout { workers: &["k8s-node1"], ..small(62) }).await;
    for n in &c.nodes {
        c.srv.set_kubelet_version(&n.name, "v1.34.2");
    }
    chain::quiesce::quiesce(
        &c.srv.client(),
        &c.settings.annotation_prefix,
        &c.settings.hooks.quiesce_deployments,
    )
    .await
    .unwrap();
    assert_eq!(replicas_and_saved(&operator(&c)), (Some(0), Some("1".into())));
    spawn_with(&c, &c.settings, Step::Postflight, "1.34.2", Kind::Patch).await;
    let ran = c.run_job(&c.next_job().unwrap()).await;
    assert_eq!(ran.result, Ok(Ended::Done));
    assert_eq!(replicas_and_saved(&operator(&c)), (Some(1), None), "restored by postflight");
}

// === §10.18 and §10.36: a Job whose pod cannot start ===

/// Detection checks that Job 0 started: an image the registry lost (seed failure 18) leaves
/// the preflight pod in ImagePullBackOff, and detection says so (Slack, and a Warning Event on
/// the Job for `kubectl describe`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn detection_reports_a_preflight_job_whose_image_cannot_be_pulled() {
    let c = Cluster::start(small(63)).await;
    c.srv.missing_image(IMAGE);
    match c.detect().await {
        Detection::Target { action: Action::Spawned { outcome: SpawnOutcome::Created, .. }, .. } => {}
        other => panic!("expected the preflight Job to be created, got {other:?}"),
    }
    let job = "k8s-upgrade-preflight-1-34-2";
    let warned = from(&c.slack_messages(), "[k8s-version-check]");
    assert!(
        warned.iter().any(|m| m.contains(&format!("WARN: Job {job} cannot start"))
            && m.contains("ImagePullBackOff")
            && m.contains(&format!("Back-off pulling image \"{IMAGE}\""))),
        "{warned:?}"
    );
    let events = c.events_on("Job", job);
    assert!(
        events.iter().any(|(t, r, n)| t == "Warning" && r == "CannotStart" && n.contains("ImagePullBackOff")),
        "{events:?}"
    );
}

/// A phase checks that the Job it spawned started: the registry lost the image after
/// preflight's own pod started, so the control-plane Job cannot pull it. Preflight has done
/// its work (it succeeds) and reports the stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_phase_reports_the_next_job_whose_image_cannot_be_pulled() {
    let c = Cluster::start(small(64)).await;
    c.detect().await;
    let preflight = c.next_job().unwrap();
    c.srv.missing_image(IMAGE);
    let ran = c.run_job(&preflight).await;
    assert_eq!(ran.result, Ok(Ended::Done));
    let next = "k8s-upgrade-master-1-34-2";
    let warned = from(&c.slack_messages(), "[k8s-upgrade-preflight]");
    assert!(
        warned
            .iter()
            .any(|m| m.contains(&format!("WARN: Job {next} cannot start")) && m.contains("ImagePullBackOff")),
        "{warned:?}"
    );
    let events = c.events_on("Job", next);
    assert!(
        events.iter().any(|(t, r, n)| t == "Warning" && r == "CannotStart" && n.contains("ImagePullBackOff")),
        "{events:?}"
    );
}

/// The same for a pod no node can take (seed failure 36 left pinned Jobs Pending for five
/// days): a site template adds a nodeSelector only the workers match, so the first worker Job,
/// pinned to the control plane, is Unschedulable. The control-plane phase reports it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_phase_reports_the_next_job_that_cannot_be_scheduled() {
    let mut c = Cluster::start(small(65)).await;
    let dir = tempfile::tempdir().unwrap();
    let template = chain_core::job::BUILTIN_TEMPLATE.replacen(
        "      restartPolicy: Never\n",
        "      restartPolicy: Never\n      nodeSelector:\n        node-pool: system\n",
        1,
    );
    assert_ne!(template, chain_core::job::BUILTIN_TEMPLATE);
    let path = dir.path().join("job.yaml.j2");
    std::fs::write(&path, template).unwrap();
    c.settings.job.template = Some(path.display().to_string());
    for w in ["k8s-node1", "k8s-node2"] {
        c.srv.modify::<k8s_openapi::api::core::v1::Node>(None, w, |n| {
            n["metadata"]["labels"]["node-pool"] = "system".into();
        });
    }
    c.detect().await;
    for phase in ["preflight", "master"] {
        let job = c.next_job().unwrap();
        assert!(job.metadata.name.as_deref().unwrap().contains(phase));
        let ran = c.run_job(&job).await;
        assert_eq!(ran.result, Ok(Ended::Done), "{phase}");
    }
    let next = "k8s-upgrade-worker-1-34-2-k8s-node1";
    let warned = from(&c.slack_messages(), "[k8s-upgrade-master:k8s-master]");
    assert!(
        warned.iter().any(|m| m.contains(&format!("WARN: Job {next} cannot start"))
            && m.contains("unschedulable: 0/3 nodes are available")),
        "{warned:?}"
    );
    let events = c.events_on("Job", next);
    assert!(
        events
            .iter()
            .any(|(t, r, n)| t == "Warning" && r == "CannotStart" && n.contains("node affinity/selector")),
        "{events:?}"
    );
}

// === §10.34: OIDC drift warns, kubeadm scratch is pruned ===

/// A `kubeadm upgrade diff` that drops `--authentication-config` is a warning, never a block;
/// the prune of kubeadm's scratch runs on the first control plane (and only there), removing
/// only old `kubeadm-backup-*` / `kubeadm-upgraded-manifests*` directories.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_authentication_config_warns_and_the_scratch_prune_runs_on_the_first_control_plane() {
    let c = Cluster::start(Layout { control_planes: &["k8s-cp1", "k8s-cp2"], ..small(66) }).await;
    let diff = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/probe_samples/kubeadm-diff-authn-dropped.txt"),
    )
    .unwrap();
    c.node("k8s-cp1").set_state("diff.txt", &diff);
    let scratch = |node: &str| c.node(node).root().join("etc/kubernetes/tmp");
    for node in ["k8s-cp1", "k8s-cp2"] {
        for (name, age) in [
            ("kubeadm-backup-etcd-2026-06-24-03-11-52", Some("5 days ago")),
            ("kubeadm-upgraded-manifests2387441093", Some("4 days ago")),
            ("kubeadm-backup-manifests-fresh", None),
            ("unrelated-old", Some("9 days ago")),
        ] {
            let d = scratch(node).join(name);
            std::fs::create_dir_all(d.join("sub")).unwrap();
            if let Some(age) = age {
                assert!(
                    std::process::Command::new("touch")
                        .arg("-d")
                        .arg(age)
                        .arg(&d)
                        .status()
                        .unwrap()
                        .success()
                );
            }
        }
    }
    c.detect().await;
    let ran = c.run_chain().await;
    assert_eq!(ran.len(), 1 + 1 + 1 + 2 + 1, "{ran:?}");
    assert!(ran.iter().all(|j| j.result.is_ok()), "the drift does not abort: {ran:?}");
    let warned = from(&c.slack_messages(), "[k8s-upgrade-preflight]");
    assert!(
        warned
            .iter()
            .any(|m| m.contains("WARN: kubeadm upgrade apply v1.34.2 will drop --authentication-config")),
        "{warned:?}"
    );
    let left = |node: &str| {
        let mut v: Vec<String> = std::fs::read_dir(scratch(node))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into())
            .collect();
        v.sort();
        v
    };
    assert_eq!(left("k8s-cp1"), ["kubeadm-backup-manifests-fresh", "unrelated-old"], "pruned");
    assert_eq!(left("k8s-cp2").len(), 4, "only the first control plane is pruned");
}

// === §10.35: refusals that cannot be acted on are quiet ===

fn gpu_operator(c: &Cluster, version: &str) {
    c.srv.insert(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "gpu-operator", "namespace": "nvidia"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "gpu-operator"}},
                 "template": {"metadata": {"labels": {"app": "gpu-operator"}},
                              "spec": {"containers": [{"name": "op", "image": format!("nvcr.io/nvidia/gpu-operator:v{version}")}]}}}
    }));
}

fn with_gpu_operator(settings: &Settings, pinned: bool) -> Settings {
    let mut s = settings.clone();
    s.compat.addons.push(Addon {
        name: "gpu-operator".into(),
        namespace: "nvidia".into(),
        kind: AddonKind::Deployment,
        resource: "gpu-operator".into(),
        image_re: r"gpu-operator:v(\d+\.\d+)".into(),
        max_k8s: [(Minor(25, 10), Minor(1, 34)), (Minor(26, 3), Minor(1, 35))].into(),
        pinned,
        pin_reason: pinned.then(|| "driver coupling".into()),
    });
    s
}

/// Detection re-spawns, without a word, a Complete preflight whose chain never advanced (the
/// gate held or blocked it), and leaves alone one whose control-plane Job exists. Each verdict
/// pushes its gauges once per preflight (no 1 → 0 → 1 flap that would re-notify the alert), a
/// held verdict posts nothing to Slack, a blocked one posts its reasons.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn held_and_blocked_preflights_are_quiet_and_respawned_silently_until_the_chain_advances() {
    let mut c = Cluster::start(Layout { running: "1.34.2", target: "1.34.2", ..small(67) }).await;
    let repo = AptRepo::start(&[("1.35", &["1.35.0"])]).await;
    c.settings.apt_repository = repo.url.parse().unwrap();
    c.node("k8s-master").set_state(
        "plan.txt",
        "You can now apply the upgrade by executing the following command:\n\n\tkubeadm upgrade apply v1.35.0\n",
    );
    c.srv.insert(tf::namespace("nvidia"));
    gpu_operator(&c, "25.10.0");
    let held = with_gpu_operator(&c.settings, true);
    let blocked = with_gpu_operator(&c.settings, false);
    let preflight = "k8s-upgrade-preflight-1-35-0";

    // One detection and one preflight run; returns what detection did with Job 0, how the
    // preflight ended, and the pushes and Slack messages of that preflight run.
    let round = async |settings: &Settings| {
        let before_slack = c.slack_messages().len();
        let d = chain::detect::detect(&c.ctx_with(settings.clone()), false).await.unwrap();
        let Detection::Target { action: Action::Spawned { outcome: spawned, .. }, .. } = d else {
            panic!("{d:?}")
        };
        let detect_slack = c.slack_messages()[before_slack..].to_vec();
        let job = c.next_job().expect("a preflight Job to run");
        assert_eq!(job.metadata.name.as_deref(), Some(preflight));
        let (pushes_before, slack_before) = (c.pushes.seen().len(), c.slack_messages().len());
        let ran = c.run_job_with(&job, settings.clone()).await;
        let pushes = c.pushes.seen()[pushes_before..].to_vec();
        let gauges = (
            support::prom::pushed_values(&pushes, "k8s-version-upgrade", "k8s_upgrade_held"),
            support::prom::pushed_values(&pushes, "k8s-version-upgrade", "k8s_upgrade_blocked"),
        );
        (spawned, detect_slack, ran.result, gauges, c.slack_messages()[slack_before..].to_vec())
    };

    // Held: pinned upstream; announced once by detection, quiet afterwards.
    let (spawned, detect_slack, result, gauges, slack) = round(&held).await;
    assert_eq!(spawned, SpawnOutcome::Created);
    assert!(detect_slack.iter().any(|m| m.contains(&format!("Spawned {preflight}"))), "{detect_slack:?}");
    assert!(matches!(&result, Ok(Ended::Refused(r)) if r.starts_with("HELD")), "{result:?}");
    assert_eq!(gauges, (vec![1.0], vec![0.0]), "each gauge pushed once, no pre-reset");
    assert_eq!(slack, Vec::<String>::new(), "a held verdict says nothing");

    // The next detection: the Complete preflight never advanced, so it is re-spawned, silently.
    let (spawned, detect_slack, result, gauges, slack) = round(&held).await;
    assert_eq!(spawned, SpawnOutcome::Respawned { previous: JobState::Complete });
    assert_eq!(detect_slack, Vec::<String>::new(), "a silent re-spawn");
    assert!(matches!(&result, Ok(Ended::Refused(r)) if r.starts_with("HELD")), "{result:?}");
    assert_eq!(gauges, (vec![1.0], vec![0.0]));
    assert_eq!(slack, Vec::<String>::new());

    // Blocked (an upgrade of the addon is needed): said once per preflight, gauges once.
    let (spawned, detect_slack, result, gauges, slack) = round(&blocked).await;
    assert_eq!(spawned, SpawnOutcome::Respawned { previous: JobState::Complete });
    assert_eq!(detect_slack, Vec::<String>::new());
    assert!(matches!(&result, Ok(Ended::Refused(r)) if r.starts_with("BLOCKED")), "{result:?}");
    assert_eq!(gauges, (vec![0.0], vec![1.0]));
    assert_eq!(slack.len(), 1, "{slack:?}");
    assert!(slack[0].contains("BLOCKED v1.35.0") && slack[0].contains("gpu-operator"), "{slack:?}");

    // The addon is upgraded: the gate passes and the chain advances to its control-plane Job.
    gpu_operator(&c, "26.3.1");
    let (spawned, _, result, gauges, _) = round(&blocked).await;
    assert_eq!(spawned, SpawnOutcome::Respawned { previous: JobState::Complete });
    assert_eq!(result, Ok(Ended::Done));
    assert_eq!(gauges, (vec![0.0], vec![0.0]));
    assert!(c.chain_jobs().contains(&"k8s-upgrade-master-1-35-0".to_string()), "{:?}", c.chain_jobs());

    // A Complete preflight whose chain advanced is left alone: its control-plane Job runs.
    let before = c.slack_messages().len();
    let d = chain::detect::detect(&c.ctx_with(blocked.clone()), false).await.unwrap();
    assert!(
        matches!(&d, Detection::Target { action: Action::Running { job }, .. } if job == "k8s-upgrade-master-1-35-0"),
        "{d:?}"
    );
    assert_eq!(c.slack_messages()[before..], [] as [String; 0]);
    let job: Job = c.srv.get(Some(NS), preflight).unwrap();
    assert_eq!(k8s_upgrade_chain::k8s::spawn::job_state(&job), JobState::Complete);
}

// === smaller gaps ===

/// `kubeadm upgrade plan` proposing another version than the target aborts preflight (exit
/// 1) before anything changes (seed failure 33).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kubeadm_plan_for_another_version_aborts_preflight() {
    let c = Cluster::start(small(68)).await;
    c.node("k8s-master").set_state(
        "plan.txt",
        "You can now apply the upgrade by executing the following command:\n\n\tkubeadm upgrade apply v1.34.3\n",
    );
    c.detect().await;
    let input = StepInput { step: Step::Preflight, target: "1.34.2".parse().unwrap(), kind: Kind::Patch };
    let err = chain::run_step(&c.ctx(), &input).await.unwrap_err();
    assert_eq!(k8s_upgrade_chain::exit::code_for(&err), 1, "{err:#}");
    assert!(
        format!("{err:#}").contains("kubeadm upgrade plan proposes v1.34.3, not the requested v1.34.2"),
        "{err:#}"
    );
    assert_eq!(c.metric("k8s_upgrade_in_flight").await, None, "nothing marked in flight");
    assert_eq!(c.chain_jobs(), ["k8s-upgrade-preflight-1-34-2"], "no control-plane Job");
    assert!(c.nodes.iter().flat_map(|n| n.calls()).all(|l| !l.starts_with("kubeadm upgrade apply")));
}

/// A post-upgrade script that fails (the seed's OIDC restore) only warns: the chain goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_post_upgrade_script_only_warns() {
    let mut c = Cluster::start(Layout { workers: &["k8s-node1"], ..small(69) }).await;
    c.settings.hooks.post_control_plane_scripts = c.oidc_restore();
    c.srv.insert(tf::configmap(
        "kube-system",
        "apiserver-oidc-restore",
        &[("restore.sh", "systemctl restart oidc-restore-marker\nexit 3\n")],
    ));
    c.detect().await;
    let ran = c.run_chain().await;
    assert_eq!(ran.len(), 4, "{ran:?}");
    assert!(ran.iter().all(|j| j.result.is_ok()), "{ran:?}");
    assert!(c.node("k8s-master").calls().iter().any(|l| l.contains("oidc-restore-marker")), "the script ran");
    let warned = from(&c.slack_messages(), "[k8s-upgrade-master:k8s-master]");
    assert!(
        warned.iter().any(|m| m.contains("WARN: post-upgrade script oidc-restore failed on k8s-master")),
        "{warned:?}"
    );
    assert_eq!(c.kubelet("k8s-node1"), "v1.34.2", "the chain went on");
}
