//! The binary as a user runs it: flags, env vars, output and exit codes.

use assert_cmd::Command;

fn bin() -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin!("k8s-upgrade-chain"));
    // Never reach a real cluster from tests.
    c.env("KUBECONFIG", "/nonexistent/kubeconfig").env_remove("KUBERNETES_SERVICE_HOST");
    for v in ["PHASE", "TARGET_NODE", "TARGET_VERSION", "KIND", "IMAGE", "CONFIG", "NODES_FILE"] {
        c.env_remove(v);
    }
    c
}

fn stdout(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn plan_from_the_example_cluster() {
    let text = stdout(bin().args(["plan", "--nodes-file", "examples/nodes.yaml", "--version", "v1.34.2"]));
    assert!(text.starts_with("target 1.34.2 (patch upgrade; running 1.34.1"), "{text}");
    let workers: Vec<&str> = text.lines().filter(|l| l.contains(" worker ")).collect();
    assert_eq!(workers.len(), 7);
    assert!(workers.last().unwrap().contains("k8s-node10"), "natural order puts node10 last");
    assert!(text.contains("k8s-upgrade-preflight-1-34-2") && text.contains("nvidia.com/gpu:NoSchedule"));
}

#[test]
fn plan_json_via_env() {
    let text = stdout(
        bin()
            .args(["plan", "-o", "json"])
            .env("NODES_FILE", "examples/nodes.yaml")
            .env("TARGET_VERSION", "1.35.0"),
    );
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["kind"], "minor");
    assert_eq!(v["jobs"].as_array().unwrap().len(), 10);
    assert_eq!(v["jobs"][2]["placement"]["run_on"], "k8s-master");
}

#[test]
fn render_offline_via_env_is_a_valid_job() {
    let text = stdout(
        bin()
            .args([
                "render",
                "--run-on",
                "k8s-master",
                "--toleration",
                "node-role.kubernetes.io/control-plane:NoSchedule",
            ])
            .env("PHASE", "worker")
            .env("TARGET_NODE", "k8s-node3")
            .env("TARGET_VERSION", "1.34.2")
            .env("KIND", "patch")
            .env("IMAGE", "registry.local/k8s-upgrade-chain:test"),
    );
    let job: k8s_openapi::api::batch::v1::Job = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(job.metadata.name.as_deref(), Some("k8s-upgrade-worker-1-34-2-k8s-node3"));
    let pod = job.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.containers[0].image.as_deref(), Some("registry.local/k8s-upgrade-chain:test"));
}

#[test]
fn bad_input_exits_2_and_names_the_input() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["render", "--phase", "worker", "--version", "1.34.2", "--kind", "patch", "--run-on", "x"],
            "needs a target node",
        ),
        (
            &[
                "render",
                "--phase",
                "worker",
                "--node",
                "k8s-node1",
                "--version",
                "1.34.2",
                "--kind",
                "patch",
                "--run-on",
                "k8s-node1",
            ],
            "never runs on the node it drains",
        ),
        (&["render", "--phase", "upgrade", "--version", "1.34.2"], "unknown phase \"upgrade\""),
        (
            &[
                "render",
                "--phase",
                "worker",
                "--node",
                "Bad_Node",
                "--version",
                "1.34.2",
                "--kind",
                "patch",
                "--run-on",
                "x",
            ],
            "invalid node name \"Bad_Node\"",
        ),
        (
            &[
                "render",
                "--phase",
                "preflight",
                "--version",
                "1.34.2",
                "--kind",
                "patch",
                "--run-on",
                "x",
                "--toleration",
                "gpu",
            ],
            "invalid --toleration \"gpu\"",
        ),
        (&["plan", "--version", "1.34"], "invalid Kubernetes version \"1.34\""),
        (&["plan", "--version", "1.30.0", "--nodes-file", "examples/nodes.yaml"], "kubeadm cannot downgrade"),
        (
            &["plan", "--version", "1.34.2", "--nodes-file", "/nonexistent/nodes.yaml"],
            "/nonexistent/nodes.yaml",
        ),
        (&["plan", "--version", "1.34.2", "--nodes-file", "Cargo.toml"], "Cargo.toml"),
    ];
    for (args, want) in cases {
        let out = bin().args(*args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: expected {want:?} in {err}");
    }
}

#[test]
fn bad_config_exits_2_naming_key_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, "timeouts:\n  soak: ten minutes\n").unwrap();
    let out = bin()
        .args(["plan", "--version", "1.34.2", "--nodes-file", "examples/nodes.yaml"])
        .env("CONFIG", &cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("timeouts.soak") && err.contains("ten minutes"), "{err}");
}

#[test]
fn no_cluster_is_an_unexpected_failure_exit_3() {
    let out = bin().args(["plan", "--version", "1.34.2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn render_run_on_warns_when_a_taint_is_not_tolerated() {
    use sim::apiserver::fixtures::node;
    let srv = sim::apiserver::TestApiServer::start().await;
    srv.insert(node("gpu-1").ready().taint("nvidia.com/gpu", "", "NoSchedule"));
    srv.insert(node("k8s-master").ready().control_plane());
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    srv.write_kubeconfig(&kubeconfig).unwrap();
    let render = move |run_on: &'static str, toleration: &'static str| {
        let kubeconfig = kubeconfig.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = bin();
            c.env("KUBECONFIG", &kubeconfig).env("RUST_LOG", "warn").args([
                "render",
                "--phase",
                "preflight",
                "--version",
                "1.34.2",
                "--kind",
                "patch",
                "--run-on",
                run_on,
            ]);
            if !toleration.is_empty() {
                c.args(["--toleration", toleration]);
            }
            let out = c.output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stderr).to_string()
        })
    };
    let warned = render("gpu-1", "").await.unwrap();
    assert!(
        warned.contains("the Job would stay Pending on --run-on gpu-1: taint nvidia.com/gpu:NoSchedule is not tolerated (--toleration nvidia.com/gpu:NoSchedule)"),
        "{warned}"
    );
    let quiet = render("gpu-1", "nvidia.com/gpu:NoSchedule").await.unwrap();
    assert!(!quiet.contains("Pending"), "{quiet}");
    let cp = render("k8s-master", "").await.unwrap();
    assert!(cp.contains("taint node-role.kubernetes.io/control-plane:NoSchedule is not tolerated"), "{cp}");
}

#[test]
fn logs_piped_to_a_file_carry_no_colour_codes() {
    // stderr is a pipe here. Without a cluster, render --run-on logs a warning (it cannot
    // check the node's taints): plain text, no ANSI escapes.
    let out = bin()
        .args(["render", "--phase", "preflight", "--version", "1.34.2", "--kind", "patch", "--run-on", "n1"])
        .env("RUST_LOG", "debug")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("WARN") && stderr.contains("could not check the taints"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
}
