//! Job rendering: snapshot tests of the rendered text, parse-back into a typed Job, names.

use chain_core::{
    fixtures::{cluster, node},
    job::{self, JobRequest},
    plan::{Kind, MAX_NAME, Phase, Snapshot, Step, job_name, placement},
    settings::Settings,
    version::Version,
};

fn v(s: &str) -> Version {
    s.parse().unwrap()
}

fn render_step(
    settings: &Settings,
    nodes: &[k8s_openapi::api::core::v1::Node],
    step: Step,
) -> (String, k8s_openapi::api::batch::v1::Job) {
    let snap = Snapshot::from_nodes(nodes, &settings.control_plane_selector()).unwrap();
    let placement = placement(&snap, &step).unwrap();
    let req = JobRequest {
        step: &step,
        target: v("1.34.2"),
        kind: Kind::Patch,
        image: "registry.example/k8s-upgrade-chain:0.1.0",
        placement: &placement,
    };
    let text = job::render_text(settings, job::BUILTIN_TEMPLATE, "builtin", &req).unwrap();
    let parsed = job::render(settings, job::BUILTIN_TEMPLATE, "builtin", &req).unwrap();
    (text, parsed)
}

#[test]
fn worker_job_renders_as_expected() {
    let mut settings = Settings::default();
    settings.job.image_pull_secrets = vec!["registry-credentials".into()];
    let (text, job) = render_step(&settings, &cluster(1, 3, "v1.34.1"), Step::worker("k8s-node2"));
    insta::assert_snapshot!("worker_job", text);

    assert_eq!(job.metadata.name.as_deref(), Some("k8s-upgrade-worker-1-34-2-k8s-node2"));
    let labels = job.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["app"], "k8s-upgrade-chain");
    assert_eq!(labels["phase"], "worker");
    assert_eq!(labels["target-version"], "1-34-2");
    let spec = job.spec.as_ref().unwrap();
    assert_eq!(spec.backoff_limit, Some(1));
    assert_eq!(spec.ttl_seconds_after_finished, Some(7 * 24 * 3600));
    assert_eq!(
        spec.active_deadline_seconds,
        Some(job::active_deadline(&settings, Phase::Worker).as_secs() as i64)
    );
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(job::pinned_node(pod).as_deref(), Some("k8s-master"));
    assert!(pod.node_selector.is_none(), "pinned by node name, not by the hostname label");
    let tol = pod.tolerations.as_ref().unwrap();
    assert_eq!(tol.len(), 1);
    assert_eq!(tol[0].key.as_deref(), Some("node-role.kubernetes.io/control-plane"));
    let c = &pod.containers[0];
    let env: Vec<(String, String)> = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect();
    for (k, want) in [
        ("PHASE", "worker"),
        ("TARGET_NODE", "k8s-node2"),
        ("TARGET_VERSION", "1.34.2"),
        ("KIND", "patch"),
        ("IMAGE", "registry.example/k8s-upgrade-chain:0.1.0"),
    ] {
        assert!(env.contains(&(k.to_string(), want.to_string())), "env {k}={want} missing: {env:?}");
    }
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.capabilities.as_ref().unwrap().drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert_eq!(pod.security_context.as_ref().unwrap().run_as_non_root, Some(true));
    assert!(
        c.volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .filter(|m| m.mount_path != "/tmp")
            .all(|m| m.read_only == Some(true))
    );
    assert_eq!(pod.service_account_name.as_deref(), Some("k8s-upgrade-job"));
}

#[test]
fn preflight_job_on_a_gpu_worker() {
    let nodes = vec![
        node("k8s-master").control_plane().kubelet("1.34.1").ip("10.0.0.1").build(),
        node("k8s-node1").kubelet("1.34.1").ip("10.0.0.11").taint("nvidia.com/gpu", "NoSchedule").build(),
    ];
    let (text, job) = render_step(&Settings::default(), &nodes, Step::Preflight);
    insta::assert_snapshot!("preflight_job", text);
    let pod = job.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.tolerations.unwrap()[0].key.as_deref(), Some("nvidia.com/gpu"));
    assert!(pod.image_pull_secrets.unwrap_or_default().is_empty());
}

#[test]
fn hostile_values_cannot_break_the_document() {
    // Values are emitted as JSON literals: a colon, a hash or a newline stays inside the string.
    let mut settings = Settings::default();
    settings.job.service_account = "sa".into();
    let nodes = cluster(1, 2, "1.34.1");
    let snap = Snapshot::from_nodes(&nodes, &settings.control_plane_selector()).unwrap();
    let step = Step::Preflight;
    let mut p = placement(&snap, &step).unwrap();
    p.run_on = "weird: value # not a comment\n  injected: true".into();
    let req =
        JobRequest { step: &step, target: v("1.34.2"), kind: Kind::Patch, image: "img:1", placement: &p };
    let job = job::render(&settings, job::BUILTIN_TEMPLATE, "builtin", &req).unwrap();
    let pod = job.spec.unwrap().template.spec.unwrap();
    assert_eq!(job::pinned_node(&pod).as_deref(), Some("weird: value # not a comment\n  injected: true"));
}

#[test]
fn bad_inputs_and_templates_are_clear_errors() {
    let settings = Settings::default();
    let nodes = cluster(1, 2, "1.34.1");
    let snap = Snapshot::from_nodes(&nodes, &settings.control_plane_selector()).unwrap();
    let step = Step::Preflight;
    let p = placement(&snap, &step).unwrap();
    let req =
        |image| JobRequest { step: &step, target: v("1.34.2"), kind: Kind::Minor, image, placement: &p };

    let e = job::render(&settings, job::BUILTIN_TEMPLATE, "builtin", &req("")).unwrap_err().to_string();
    assert!(e.contains("invalid image reference"), "{e}");
    let e = job::render(&settings, job::BUILTIN_TEMPLATE, "builtin", &req("a b")).unwrap_err().to_string();
    assert!(e.contains("\"a b\""), "{e}");

    // Strict undefined: a typo in a custom template is an error, not an empty string.
    let e = job::render(&settings, "metadata: {name: {{ job_nam }}}", "custom.j2", &req("img"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("custom.j2") && e.contains("undefined"), "{e}");

    // Not a Job.
    let e = job::render(&settings, "kind: [", "custom.j2", &req("img")).unwrap_err().to_string();
    assert!(e.contains("did not render a valid batch/v1 Job"), "{e}");

    // A template that builds its own name is refused: names are computed in Rust.
    let tmpl = job::BUILTIN_TEMPLATE.replace("name: {{ job_name }}", "name: upgrade-{{ phase }}");
    let e = job::render(&settings, &tmpl, "custom.j2", &req("img")).unwrap_err().to_string();
    assert!(e.contains("metadata.name"), "{e}");

    let mut s = settings.clone();
    s.job.template = Some("/nonexistent/job.yaml.j2".into());
    let e = k8s_upgrade_chain::config::load_template(&s).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/job.yaml.j2"), "{e}");
}

#[test]
fn names_are_deterministic_and_fit_63() {
    assert_eq!(job_name(Phase::Preflight, v("1.34.2"), None), "k8s-upgrade-preflight-1-34-2");
    assert_eq!(job_name(Phase::Master, v("1.34.2"), Some("k8s-master")), "k8s-upgrade-master-1-34-2");
    assert_eq!(
        job_name(Phase::Worker, v("1.34.2"), Some("k8s-node10")),
        "k8s-upgrade-worker-1-34-2-k8s-node10"
    );
    assert_eq!(
        job_name(Phase::ControlPlane, v("1.34.2"), Some("cp2")),
        "k8s-upgrade-control-plane-1-34-2-cp2"
    );

    let long_a = "worker-node-with-a-really-long-name-in-rack-17.datacenter.example.com";
    let long_b = "worker-node-with-a-really-long-name-in-rack-18.datacenter.example.com";
    let a = job_name(Phase::Worker, v("1.34.12"), Some(long_a));
    let b = job_name(Phase::Worker, v("1.34.12"), Some(long_b));
    assert!(a.len() <= MAX_NAME && b.len() <= MAX_NAME, "{a} {b}");
    assert_ne!(a, b, "different nodes keep different names");
    assert_eq!(a, job_name(Phase::Worker, v("1.34.12"), Some(long_a)), "deterministic");
    assert!(a.starts_with("k8s-upgrade-worker-1-34-12-worker-node"));
    for n in [&a, &b] {
        assert!(is_dns_label(n), "{n}");
    }
}

/// RFC 1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63.
fn is_dns_label(s: &str) -> bool {
    s.len() <= MAX_NAME
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[test]
fn node_names_with_dots_give_dns_labels_that_never_collide() {
    // The apiserver warns on dots in Job names ("a DNS label is recommended: must not contain
    // dots"), and the Job's pod names and hostnames inherit them.
    let fqdn = job_name(Phase::Worker, v("1.34.2"), Some("k8s-node1.example.com"));
    assert!(is_dns_label(&fqdn), "{fqdn}");
    assert!(fqdn.starts_with("k8s-upgrade-worker-1-34-2-k8s-node1-exam"), "{fqdn}");
    // The hash is of the original name: the dotted and the dashed node differ.
    let dashed = job_name(Phase::Worker, v("1.34.2"), Some("k8s-node1-example-com"));
    assert_eq!(dashed, "k8s-upgrade-worker-1-34-2-k8s-node1-example-com", "a valid label is kept as it is");
    assert_ne!(fqdn, dashed);
    let (ab, a_b) = (
        job_name(Phase::ControlPlane, v("1.34.2"), Some("a.b")),
        job_name(Phase::ControlPlane, v("1.34.2"), Some("a-b")),
    );
    assert_ne!(ab, a_b);
    assert!(is_dns_label(&ab) && ab.starts_with("k8s-upgrade-control-plane-1-34-2-a-b-"), "{ab}");
    // 13 base-32 characters (65 bits) of hash, after as much of the readable name as fits.
    assert_eq!(ab.rsplit('-').next().unwrap().len(), chain_core::plan::HASH_LEN, "{ab}");
    // Distinct nodes, distinct names, across a fleet of long look-alike FQDNs.
    let names: std::collections::BTreeSet<String> = (0..2000)
        .map(|i| {
            job_name(Phase::Worker, v("1.34.12"), Some(&format!("worker-{i}.rack-a.datacenter.example.com")))
        })
        .collect();
    assert_eq!(names.len(), 2000);
    assert!(names.iter().all(|n| is_dns_label(n)));
}

#[test]
fn deadlines_cover_each_phase_waits() {
    let s = Settings::default();
    let t = &s.timeouts;
    let worker = job::active_deadline(&s, Phase::Worker);
    assert!(worker >= t.alert_wait + s.drain.timeout + s.ssh.command_timeout + t.node_ready + t.soak);
    assert!(job::active_deadline(&s, Phase::Preflight) >= t.etcd_snapshot + t.node_ready);
    assert!(
        job::active_deadline(&s, Phase::Master) >= s.drain.timeout + s.ssh.command_timeout + t.node_ready
    );
    assert!(job::active_deadline(&s, Phase::Postflight) > std::time::Duration::ZERO);
}
