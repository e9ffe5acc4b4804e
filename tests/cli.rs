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
    assert!(text.contains("k8s-upgrade-preflight-1-34-2"), "{text}");
    // The chain's own Jobs prefer a worker without a scheduling taint over the GPU node k8s-node1.
    let preflight = text.lines().find(|l| l.contains(" preflight ")).unwrap();
    assert!(preflight.contains("k8s-node2") && !text.contains("nvidia.com/gpu"), "{text}");
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
        (
            &["render", "--phase", "upgrade", "--version", "1.34.2"],
            "invalid --phase / PHASE \"upgrade\": unknown phase",
        ),
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
            "invalid node name (--node / TARGET_NODE) \"Bad_Node\"",
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
            "invalid --toleration / TOLERATIONS \"gpu\"",
        ),
        (&["plan", "--version", "1.34"], "invalid --version / TARGET_VERSION \"1.34\""),
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
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .env("KUBECONFIG", unreachable_kubeconfig(dir.path()))
        .args(["plan", "--version", "1.34.2"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    // The error names the server it could not reach (QA C).
    assert!(err.contains("(Kubernetes API server https://127.0.0.1:1/)"), "{err}");
}

/// `render --run-on` renders without reading the cluster (QA B1): with a kubeconfig whose
/// server refuses connections and every log level on, it logs nothing at all. Before, it built
/// a client to check the node's taints and logged kube's `ERROR ... client error (Connect)`.
#[test]
fn render_run_on_is_offline() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .env("KUBECONFIG", unreachable_kubeconfig(dir.path()))
        .env("RUST_LOG", "trace")
        .args(["render", "--phase", "preflight", "--version", "1.34.2", "--kind", "patch", "--run-on", "n1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.is_empty(), "render --run-on must not contact the cluster: {stderr}");
}

#[test]
fn logs_piped_to_a_file_carry_no_colour_codes() {
    // stderr is a pipe here. kube logs the refused connection: plain text, no ANSI escapes.
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .env("KUBECONFIG", unreachable_kubeconfig(dir.path()))
        .args(["status"])
        .env("RUST_LOG", "debug")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DEBUG") && stderr.contains("error: "), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
}

/// With `--log-format json` every stderr line is a JSON object, the fatal one included (QA C).
#[test]
fn json_logs_end_with_a_json_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .env("KUBECONFIG", unreachable_kubeconfig(dir.path()))
        .args(["--log-format", "json", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let last = lines.last().unwrap();
    assert_eq!(last["level"], "ERROR");
    assert_eq!(last["exit_code"], 3);
    assert!(last["message"].as_str().unwrap().contains("failed to list chain Jobs"), "{last}");
}

/// A kubeconfig whose cluster is a closed loopback port: a command that connected before
/// validating would fail with exit 3 (connection refused), never 2.
fn unreachable_kubeconfig(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: \"https://127.0.0.1:1\"}}]\n\
         users: [{name: u, user: {token: t}}]\ncontexts: [{name: ctx, context: {cluster: c, user: u}}]\n\
         current-context: ctx\n",
    )
    .unwrap();
    path
}

/// Every flag and env var of every subcommand, with bad values: exit 2, a message naming the
/// input, never a panic (101), never a connection first (3), and a long value shortened.
#[test]
fn table_of_bad_input_for_every_flag_and_env_var() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = unreachable_kubeconfig(dir.path());
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let node = |name: &str, cp: bool, kubelet: &str| {
        let labels = if cp { r#""node-role.kubernetes.io/control-plane": """# } else { "" };
        format!(
            r#"{{"kind":"Node","metadata":{{"name":"{name}","labels":{{{labels}}}}},"status":{{"nodeInfo":{{"kubeletVersion":"{kubelet}"}},"addresses":[{{"type":"InternalIP","address":"10.0.0.1"}}],"conditions":[{{"type":"Ready","status":"True"}}]}}}}"#
        )
    };
    let list = |nodes: &[String]| format!(r#"{{"kind":"List","items":[{}]}}"#, nodes.join(","));
    let ok_nodes = file("ok.json", &list(&[node("cp1", true, "v1.34.1"), node("w1", false, "v1.34.1")]));
    let bad_name =
        file("bad-name.json", &list(&[node("cp1", true, "v1.34.1"), node("Bad_Node", false, "v1.34.1")]));
    let duplicate = file(
        "dup.json",
        &list(&[node("cp1", true, "v1.34.1"), node("w1", false, "v1.34.1"), node("w1", false, "v1.34.1")]),
    );
    let long: &'static str = "x".repeat(5000).leak();
    // A kubeconfig holds tokens: its parse error names the file and never quotes a line.
    let bad_kubeconfig =
        file("bad-kubeconfig", "apiVersion: v1\nusers: [{token: tok3nSECRET\nclusters: {not: [a list\n");
    let multibyte = format!("{}é{}", "a".repeat(27), "b".repeat(40));

    // (args, env, what stderr must name)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let step_env = |bad: (&'static str, &'static str)| {
        let mut env =
            vec![("PHASE", "worker"), ("TARGET_NODE", "w1"), ("TARGET_VERSION", "1.34.2"), ("KIND", "patch")];
        env.retain(|(k, _)| *k != bad.0);
        env.push(bad);
        env
    };
    // A valid offline render, with `extra` flags replacing (or adding to) its own.
    let render = |extra: &[&'static str]| {
        let mut a = vec![
            "render",
            "--phase",
            "worker",
            "--node",
            "w1",
            "--version",
            "1.34.2",
            "--kind",
            "patch",
            "--run-on",
            "cp1",
        ];
        for pair in extra.chunks(2) {
            match a.iter().position(|x| *x == pair[0]) {
                Some(i) => a[i + 1] = pair[1],
                None => a.extend_from_slice(pair),
            }
        }
        a
    };
    let cases: Vec<Case<'_>> = vec![
        // global
        (vec!["--config", "/nonexistent/site.yaml", "version"], vec![], "/nonexistent/site.yaml"),
        (vec!["version"], vec![("CONFIG", "/nonexistent/site.yaml")], "CONFIG"),
        (vec!["--log-format", "xml", "version"], vec![], "--log-format"),
        (vec!["version"], vec![("LOG_FORMAT", "xml")], "--log-format / LOG_FORMAT"),
        (vec!["--context", "", "status"], vec![], "--context / KUBE_CONTEXT"),
        (vec!["status"], vec![("KUBE_CONTEXT", "")], "KUBE_CONTEXT"),
        (vec!["--context", "no-such-context", "status"], vec![], "KUBE_CONTEXT"),
        // a kubeconfig that is missing or malformed is bad input naming the file (QA B5)
        (vec!["status"], vec![("KUBECONFIG", "/nonexistent/kc")], "/nonexistent/kc"),
        (vec!["plan", "--version", "1.34.2"], vec![("KUBECONFIG", &bad_kubeconfig)], &bad_kubeconfig),
        // plan
        (vec!["plan", "--version", "1.34"], vec![], "--version / TARGET_VERSION"),
        (vec!["plan", "--version", "01.34.2"], vec![], "--version / TARGET_VERSION"),
        (vec!["plan"], vec![("TARGET_VERSION", "latest")], "TARGET_VERSION"),
        (vec!["plan", "--version", "1.34.2", "-o", "xml"], vec![], "--output"),
        (vec!["plan", "--version", "1.34.2"], vec![("OUTPUT", "yaml")], "--output / OUTPUT"),
        (
            vec!["plan", "--version", "1.34.2", "--nodes-file", "/nonexistent/n.json"],
            vec![],
            "/nonexistent/n.json",
        ),
        (
            vec!["plan", "--version", "1.34.2"],
            vec![("NODES_FILE", "/nonexistent/n.json")],
            "/nonexistent/n.json",
        ),
        (vec!["plan", "--version", "1.34.2", "--nodes-file", &bad_name], vec![], "Bad_Node"),
        (vec!["plan", "--version", "1.34.2", "--nodes-file", &duplicate], vec![], "w1 is listed twice"),
        (vec!["plan", "--version", "1.30.0", "--nodes-file", &ok_nodes], vec![], "cannot downgrade"),
        (vec!["plan", "--version", "1.36.0", "--nodes-file", &ok_nodes], vec![], "skips a minor"),
        // render
        (render(&["--phase", "upgrade"]), vec![], "--phase / PHASE"),
        (vec!["render", "--version", "1.34.2"], vec![("PHASE", "Worker")], "PHASE"),
        (render(&["--node", "Bad_Node"]), vec![], "--node / TARGET_NODE"),
        (
            vec!["render", "--phase", "worker", "--version", "1.34.2", "--kind", "patch", "--run-on", "cp1"],
            vec![("TARGET_NODE", &multibyte)],
            "TARGET_NODE",
        ),
        (render(&["--version", "1.34.2-rc.1"]), vec![], "--version / TARGET_VERSION"),
        (render(&["--kind", "major"]), vec![], "--kind / KIND"),
        (
            vec!["render", "--phase", "preflight", "--version", "1.34.2", "--run-on", "cp1"],
            vec![("KIND", "Patch")],
            "KIND",
        ),
        (render(&["--image", ""]), vec![], "--image / IMAGE"),
        (render(&[]), vec![("IMAGE", "Registry/Tool:1")], "IMAGE"),
        (render(&["--run-on", "CP1"]), vec![], "--run-on / RUN_ON"),
        (
            vec!["render", "--phase", "preflight", "--version", "1.34.2", "--kind", "patch"],
            vec![("RUN_ON", "cp_1")],
            "RUN_ON",
        ),
        (render(&["--toleration", "gpu"]), vec![], "--toleration / TOLERATIONS"),
        (render(&["--toleration", "bad key:NoSchedule"]), vec![], "--toleration / TOLERATIONS"),
        (render(&[]), vec![("TOLERATIONS", "a:NoSchedule,b:Never")], "TOLERATIONS"),
        // detect
        (vec!["detect", "--image", "a b"], vec![], "--image / IMAGE"),
        (vec!["detect"], vec![("IMAGE", "")], "IMAGE"),
        (vec!["detect"], vec![("DRY_RUN", "maybe")], "DRY_RUN"),
        // step: every env var of the Job template
        (vec!["step"], step_env(("PHASE", "upgrade")), "PHASE"),
        (vec!["step"], step_env(("TARGET_NODE", "Bad_Node")), "TARGET_NODE"),
        (vec!["step"], step_env(("TARGET_NODE", long)), "TARGET_NODE"),
        (vec!["step"], step_env(("TARGET_VERSION", "1.34")), "TARGET_VERSION"),
        (vec!["step"], step_env(("KIND", "both")), "KIND"),
        (vec!["step"], step_env(("IMAGE", "")), "IMAGE"),
        (
            vec!["step"],
            vec![
                ("PHASE", "preflight"),
                ("TARGET_NODE", "w1"),
                ("TARGET_VERSION", "1.34.2"),
                ("KIND", "patch"),
            ],
            "takes no target node",
        ),
        (
            vec!["step"],
            vec![("PHASE", "worker"), ("TARGET_VERSION", "1.34.2"), ("KIND", "patch")],
            "needs a target node",
        ),
        // drain, uncordon
        (vec!["drain", "Bad_Node"], vec![], "NODE / TARGET_NODE"),
        (vec!["drain"], vec![("TARGET_NODE", "-w1")], "TARGET_NODE"),
        (vec!["drain", "w1"], vec![("DRY_RUN", "perhaps")], "DRY_RUN"),
        (vec!["uncordon", "w1."], vec![], "NODE / TARGET_NODE"),
        (vec!["uncordon"], vec![("TARGET_NODE", "")], "TARGET_NODE"),
        // rehearse
        (vec!["rehearse", "--version", "next"], vec![], "--version / TARGET_VERSION"),
        (vec!["rehearse"], vec![("TARGET_VERSION", "1.34.x")], "TARGET_VERSION"),
        (vec!["rehearse", "--speed", "0"], vec![], "--speed / REHEARSE_SPEED"),
        (vec!["rehearse"], vec![("REHEARSE_SPEED", "inf")], "REHEARSE_SPEED"),
        (vec!["rehearse"], vec![("FROM_CLUSTER", "sure")], "FROM_CLUSTER"),
        (vec!["rehearse", "--nodes", "ten"], vec![], "--nodes / REHEARSE_NODES"),
        (vec!["rehearse"], vec![("REHEARSE_NODES", "1")], "a generated cluster has 2 to 5000 nodes"),
        (vec!["rehearse"], vec![("REHEARSE_NODES", "1")], "--nodes / REHEARSE_NODES"),
        (
            vec!["rehearse", "--nodes", "10", "--pods-per-node", "100000000000"],
            vec![],
            "expected a whole number from 1 to 110",
        ),
        (vec!["rehearse", "--nodes", "5001"], vec![], "a generated cluster has 2 to 5000 nodes"),
        (
            vec!["rehearse", "--nodes", "100", "--pods-per-node", "many"],
            vec![],
            "--pods-per-node / REHEARSE_PODS_PER_NODE",
        ),
        (vec!["rehearse", "--nodes", "10"], vec![("REHEARSE_PODS_PER_NODE", "500")], "maxPods of 110"),
        (vec!["rehearse", "--pods-per-node", "20"], vec![], "--nodes"),
        (vec!["rehearse", "--from-cluster", "--nodes", "20"], vec![], "--from-cluster"),
        (vec!["rehearse", "-o", "xml"], vec![], "--output"),
        (vec!["rehearse"], vec![("OUTPUT", "xml")], "--output / OUTPUT"),
        // manifests
        (vec!["manifests", "--image", ""], vec![], "--image / IMAGE"),
        (vec!["manifests"], vec![("IMAGE", "Tool:1")], "IMAGE"),
        (vec!["manifests", "--schedule", "not a cron"], vec![], "--schedule"),
        (vec!["manifests", "--schedule", "0 23 * * 7"], vec![], "--schedule"),
        (vec!["manifests", "--report-schedule", "TZ=UTC 0 6 * * 1"], vec![], "--report-schedule"),
        (vec!["manifests"], vec![("SCHEDULE", "not a cron")], "--schedule"),
        (vec!["manifests"], vec![("REPORT_SCHEDULE", "@fortnightly")], "--report-schedule"),
        (vec!["manifests"], vec![("DRY_RUN", "maybe")], "DRY_RUN"),
        (vec!["manifests", "--suspend=perhaps"], vec![], "--suspend / SUSPEND"),
        (vec!["manifests"], vec![("SUSPEND", "perhaps")], "SUSPEND"),
        (vec!["manifests"], vec![("PROMETHEUS_RULE", "si")], "PROMETHEUS_RULE"),
        (vec!["manifests"], vec![("ALERT_RULES", "si")], "ALERT_RULES"),
        (vec!["manifests"], vec![("ALERT_RULES", "true"), ("PROMETHEUS_RULE", "true")], "--prometheus-rule"),
        // status, report
        (vec!["status", "-o", "xml"], vec![], "--output"),
        (vec!["status"], vec![("OUTPUT", "yaml")], "--output / OUTPUT"),
        (vec!["status"], vec![("PUSHGATEWAY", "yes please")], "PUSHGATEWAY"),
        (vec!["report"], vec![("DRY_RUN", "2")], "DRY_RUN"),
    ];
    for (args, env, want) in &cases {
        let mut c = bin();
        c.env("KUBECONFIG", &kubeconfig).args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {err}");
        assert!(err.contains(want), "{args:?} {env:?}: expected {want:?} in {err}");
        assert!(!err.contains("tok3nSECRET"), "{args:?} {env:?}: a kubeconfig line was quoted: {err}");
        assert!(
            err.len() < 2000,
            "{args:?}: a long value must be shortened in the message: {} bytes",
            err.len()
        );
    }
}

/// Bad config values, one key at a time: `config` exits 2 naming the key, for each class the
/// issue found (huge and zero durations, an ignore entry that escapes its anchor, out-of-range
/// ports, names the API refuses, URLs that take a query).
#[test]
fn table_of_bad_config_keys() {
    let dir = tempfile::tempdir().unwrap();
    let huge = "999999999999h".repeat(2000);
    let cases: Vec<(String, &str)> = vec![
        (format!("timeouts: {{probe: {huge}}}"), "timeouts.probe"),
        ("timeouts: {probe: 999999999999h}".into(), "timeouts.probe"),
        ("timeouts: {alert_wait: 100000h}".into(), "timeouts.alert_wait"),
        ("timeouts: {settle_window: 200h}".into(), "timeouts.settle_window"),
        ("ssh: {command_timeout: 9999999h}".into(), "ssh.command_timeout"),
        ("ssh: {keepalive_interval: 0s}".into(), "ssh.keepalive_interval"),
        ("ssh: {keepalive_interval: 99999999h}".into(), "ssh.keepalive_interval"),
        ("drain: {backoff_max: 999999999h}".into(), "drain.backoff_max"),
        ("drain: {backoff_min: 0s}".into(), "drain.backoff_min"),
        ("drain: {concurrency: 0}".into(), "drain"),
        ("workers: {max_unavailable: -3}".into(), "a count above 0 or a percentage such as 25%"),
        ("workers: {max_unavailable: 2.5}".into(), "a count above 0 or a percentage such as 25%"),
        ("timeouts: {soak: 1h1h}".into(), "the unit h is repeated"),
        ("alerts: {ignore: ['Watchdog)|(.*']}".into(), "Watchdog)|(.*"),
        ("alerts: {ignore: ['.*']}".into(), "alerts"),
        ("alerts: {ignore: ['Watchdog|.+']}".into(), "alerts"),
        ("alerts: {request_timeout: 0s}".into(), "alerts.request_timeout"),
        ("alerts: {blocking_severities: ['']}".into(), "alerts.blocking_severities"),
        ("pushgateway: {timeout: 0s}".into(), "pushgateway.timeout"),
        ("slack: {timeout: 0s}".into(), "slack.timeout"),
        ("job: {ttl_after_finished: 604800h}".into(), "job.ttl_after_finished"),
        ("ssh: {port: 0}".into(), "ssh.port"),
        ("ssh: {port: 70000}".into(), "ssh.port"),
        ("ssh: {user: ''}".into(), "ssh.user"),
        ("apt_repository: 'https://pkgs.k8s.io/core:/stable:/?x=1'".into(), "apt_repository"),
        ("apt_repository: 'https://pkgs.k8s.io/core:/stable:/#top'".into(), "apt_repository"),
        ("annotation_prefix: 'k8s//'".into(), "annotation_prefix"),
        ("annotation_prefix: 'Example.com/'".into(), "annotation_prefix"),
        ("compat: {addons: [{name: calico, namespace: Calico_System, kind: daemonset, resource: calico-node, image_re: 'calico/node:v(\\d+\\.\\d+)', max_k8s: {'3.30': '1.35'}}]}".into(), "compat.addons[0].namespace"),
        ("compat: {addons: [{name: calico, namespace: calico-system, kind: daemonset, resource: Calico_Node, image_re: 'calico/node:v(\\d+\\.\\d+)', max_k8s: {'3.30': '1.35'}}]}".into(), "compat.addons[0].resource"),
        ("hooks: {expected_daemonsets: [Calico_Node]}".into(), "hooks.expected_daemonsets[0]"),
        ("namespace: K8s_Upgrade".into(), "namespace"),
        ("job: {service_account: 'a b'}".into(), "job.service_account"),
        (format!("ssh: {{port: '{}'}}", "9".repeat(20_000)), "ssh.port"),
        (format!("namespace: {}", "n".repeat(20_000)), "namespace"),
        (format!("alerts: {{ignore: ['{}(']}}", "A".repeat(20_000)), "alerts"),
    ];
    for (i, (yaml, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("c{i}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        let out = bin().args(["config"]).env("CONFIG", &path).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let shown: String = yaml.chars().take(80).collect();
        assert_eq!(out.status.code(), Some(2), "{shown}: {err}");
        assert!(err.contains(want), "{shown}: expected {want:?} in {err}");
        assert!(err.len() < 2000, "{shown}: a long value must be shortened: {} bytes", err.len());
    }
}

/// What `config` prints loads back, and prints the same again, extreme values included.
#[test]
fn config_output_loads_back_extremes_included() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site.yaml");
    std::fs::write(
        &path,
        "timeouts: {node_ready: 24h, soak: 0s, settle_window: 7d, probe: 1s}\n"
            .replace("7d", "168h")
            + "job: {ttl_after_finished: 8760h, deadline_margin: 0s}\nssh: {port: 65535, keepalive_interval: 1h}\n\
               drain: {grace_period_override: 1s500ms, backoff_max: 1h}\nalerts: {request_timeout: 10m, ignore: [Watchdog, 'Kube.*Down']}\n",
    )
    .unwrap();
    let first = stdout(bin().arg("config").env("CONFIG", &path));
    let again = dir.path().join("again.yaml");
    std::fs::write(&again, &first).unwrap();
    let second = stdout(bin().arg("config").env("CONFIG", &again));
    assert_eq!(first, second);
    assert!(
        first.contains("ttl_after_finished: 8760h") && first.contains("grace_period_override: 1s500ms"),
        "{first}"
    );
}

/// A node list file of `(name, control plane, kubelet)` in `dir`.
fn nodes_file(dir: &std::path::Path, name: &str, nodes: &[(&str, bool, &str)]) -> String {
    let items: Vec<String> = nodes
        .iter()
        .enumerate()
        .map(|(i, (name, cp, kubelet))| {
            let labels = if *cp { r#""node-role.kubernetes.io/control-plane": """# } else { "" };
            format!(
                r#"{{"kind":"Node","metadata":{{"name":"{name}","labels":{{{labels}}}}},"status":{{"nodeInfo":{{"kubeletVersion":"{kubelet}"}},"addresses":[{{"type":"InternalIP","address":"10.0.0.{}"}}],"conditions":[{{"type":"Ready","status":"True"}}]}}}}"#,
                i + 1
            )
        })
        .collect();
    let p = dir.join(name);
    std::fs::write(&p, format!(r#"{{"kind":"List","items":[{}]}}"#, items.join(","))).unwrap();
    p.display().to_string()
}

/// QA A4: a target older than any node's kubelet is a downgrade of that node, even when the
/// oldest kubelet is older still: exit 2, naming the nodes and their versions.
#[test]
fn plan_refuses_a_target_older_than_any_node() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            [("cp1", true, "v1.35.0"), ("w1", false, "v1.35.0"), ("w2", false, "v1.34.5")],
            "1.34.6",
            "cp1 (v1.35.0), w1 (v1.35.0)",
        ),
        (
            [("cp1", true, "v1.34.1"), ("w1", false, "v1.32.3"), ("w2", false, "v1.34.1")],
            "1.33.0",
            "cp1 (v1.34.1), w2 (v1.34.1)",
        ),
    ];
    for (i, (nodes, target, named)) in cases.iter().enumerate() {
        let file = nodes_file(dir.path(), &format!("n{i}.json"), nodes);
        let out = bin().args(["plan", "--version", target, "--nodes-file", &file]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{target}: {err}");
        assert!(err.contains(named) && err.contains("cannot downgrade"), "{target}: {err}");
        assert!(out.stdout.is_empty(), "nothing planned: {}", String::from_utf8_lossy(&out.stdout));
    }
}

/// QA A4/B6: a target every node runs plans nothing (exit 0, as detection's "no upgrade
/// needed"); on-target workers of a partial run are listed, not silently left out.
#[test]
fn plan_of_the_running_version_has_nothing_to_do_and_on_target_nodes_are_shown() {
    let text = stdout(bin().args(["plan", "--nodes-file", "examples/nodes.yaml", "--version", "1.34.1"]));
    assert_eq!(text, "nothing to do: every node is on v1.34.1 (no Job is planned)\n");
    let json = stdout(bin().args([
        "plan",
        "-o",
        "json",
        "--nodes-file",
        "examples/nodes.yaml",
        "--version",
        "1.34.1",
    ]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["nothing_to_do"], true);
    assert_eq!(v["jobs"].as_array().unwrap().len(), 0);

    let dir = tempfile::tempdir().unwrap();
    let file = nodes_file(
        dir.path(),
        "partial.json",
        &[
            ("cp1", true, "v1.34.2"),
            ("w1", false, "v1.34.1"),
            ("w2", false, "v1.34.2"),
            ("w3", false, "v1.34.2"),
        ],
    );
    let text = stdout(bin().args(["plan", "--nodes-file", &file, "--version", "1.34.2"]));
    assert!(text.contains("(on target: skips its work)"), "{text}");
    assert!(text.contains("on target (no Job: the chain passes over them): w2, w3\n"), "{text}");
}

/// QA A3: workers.concurrency 1000 without max_unavailable never puts every worker in one
/// wave: one schedulable worker stays up, and `plan` says why the limit is lower.
#[test]
fn plan_caps_concurrency_so_one_schedulable_worker_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(&cfg, "workers: {concurrency: 1000}\n").unwrap();
    let text = stdout(bin().args([
        "--config",
        cfg.to_str().unwrap(),
        "plan",
        "--nodes-file",
        "examples/nodes.yaml",
        "--version",
        "1.34.2",
    ]));
    assert!(text.contains("limit 6: capped so one schedulable worker stays up"), "{text}");
    let wave1 = text.lines().find(|l| l.trim_start().starts_with("wave 1:")).unwrap();
    assert_eq!(wave1.matches("k8s-node").count(), 6, "{text}");
    assert!(text.contains("wave 2: "), "{text}");
}

/// The env vars of `manifests` take effect, as their flags do (QA B2).
#[test]
fn manifests_flags_work_through_env() {
    let suspended = stdout(bin().arg("manifests").env("SUSPEND", "true"));
    assert!(suspended.contains("suspend: true") && !suspended.contains("suspend: false"), "{suspended}");
    let rules = stdout(bin().arg("manifests").env("ALERT_RULES", "1"));
    assert!(rules.starts_with("groups:") || rules.contains("\ngroups:"), "{rules}");
    assert!(!rules.contains("kind: CronJob"), "{rules}");
    let schedule = stdout(bin().arg("manifests").env("SCHEDULE", "17 3 * * *"));
    assert!(schedule.contains("17 3 * * *"), "{schedule}");
}

/// A fake private key, shaped like the real thing, and a webhook URL in files, as they sit
/// in the credentials Secret.
const FAKE_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\n\
    b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n\
    QyNTUxOQAAACDdclruiDjG3hXkRmPEPXlkZtyRbhHtshRQqUksaZjHdgAAAIiVC0dklQtH\n\
    -----END OPENSSH PRIVATE KEY-----\n";
const FAKE_WEBHOOK: &str = "https://hooks.slack.com/services/T000/B000/SECRETTOKEN123\n";

/// The SSH key and the webhook URL are never printed, whichever input points at their files
/// (QA A5): a config file, a node list, a Job template; and a URL given as
/// `slack.webhook_file` is refused (exit 2) without being echoed.
#[test]
fn secrets_are_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let key = write("ssh_key", FAKE_KEY);
    let webhook = write("slack_webhook", FAKE_WEBHOOK);
    let secrets = format!("ssh: {{key_file: {key}}}\nslack: {{webhook_file: {webhook}}}\n");
    let tpl_key = write("tpl-key.yaml", &format!("{secrets}job: {{template: {key}}}\n"));
    let tpl_webhook = write("tpl-webhook.yaml", &format!("job: {{template: {webhook}}}\n"));
    let url_config =
        write("url.yaml", "slack: {webhook_file: \"https://hooks.slack.com/services/T0/B0/SECRETXYZ\"}\n");
    let url_key = write("url-key.yaml", "ssh: {key_file: \"s3://bucket/SECRETXYZ\"}\n");
    let render = [
        "render",
        "--phase",
        "worker",
        "--node",
        "a",
        "--version",
        "1.34.2",
        "--kind",
        "patch",
        "--run-on",
        "b",
    ];
    let plan = ["plan", "--version", "1.34.2", "--nodes-file"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--config", &key, "config"], &key),
        (vec!["--config", &webhook, "config"], &webhook),
        (plan.iter().copied().chain([webhook.as_str()]).collect(), &webhook),
        (plan.iter().copied().chain([key.as_str()]).collect(), &key),
        (["--config", tpl_key.as_str()].into_iter().chain(render).collect(), "job.template"),
        (["--config", tpl_webhook.as_str()].into_iter().chain(render).collect(), "job.template"),
        (vec!["--config", &tpl_webhook, "manifests"], &webhook),
        (vec!["--config", &url_config, "config"], "slack.webhook_file"),
        (vec!["--config", &url_config, "manifests"], "slack.webhook_file"),
        (vec!["--config", &url_key, "config"], "ssh.key_file"),
    ];
    for (args, want) in &cases {
        for format in ["text", "json"] {
            let out =
                bin().args(["--log-format", format]).args(args).env("RUST_LOG", "trace").output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            let all = format!("{}{err}", String::from_utf8_lossy(&out.stdout));
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            let want = if *want == "job.template" { "Job template" } else { want };
            assert!(err.contains(want), "{args:?}: expected {want:?} in {err}");
            for secret in
                ["b3BlbnNzaC1rZXkt", "QyNTUxOQAAACDdclru", "SECRETTOKEN123", "SECRETXYZ", "/services/T0"]
            {
                assert!(!all.contains(secret), "{args:?} printed a secret ({secret}): {all}");
            }
        }
    }
}

/// Job templates are checked where they enter (QA A6): `render`, `manifests` and `config` all
/// refuse each broken template with exit 2 and a message naming what is wrong; the built-in
/// template given as an override passes all three. QA's templates are in
/// tests/fixtures/templates.
#[test]
fn broken_job_templates_are_refused_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = std::path::Path::new("tests/fixtures/templates");
    let builtin = std::fs::read_to_string("templates/job.yaml.j2").unwrap();
    let mut templates: Vec<(String, String, &str)> = [
        ("bad.j2", "syntax error"),
        ("undef.j2", "undefined value"),
        ("notjob.j2", "did not render a valid batch/v1 Job"),
        ("wrongname.j2", "metadata.name"),
        ("nomount.j2", "does not mount the config ConfigMap"),
        ("noaff.j2", "no required node affinity"),
        ("badaff.j2", "supports only metadata.name"),
        ("ssti.j2", "range has too many elements"),
    ]
    .into_iter()
    .map(|(f, want)| (f.to_string(), std::fs::read_to_string(fixtures.join(f)).unwrap(), want))
    .collect();
    templates.push((
        "drained.j2".into(),
        builtin.replace(
            "values: [{{ run_on }}]",
            "values: [{{ run_on }}{% if target_node %}, {{ target_node }}{% endif %}]",
        ),
        "allows the drained node",
    ));
    templates.push((
        "nodename.j2".into(),
        builtin.replace(
            "      restartPolicy: Never\n",
            "      restartPolicy: Never\n      nodeName: {{ target_node }}\n",
        ),
        "nodeName",
    ));
    templates.push(("ok.j2".into(), builtin.clone(), ""));
    let commands: [&[&str]; 3] = [
        &[
            "render",
            "--phase",
            "worker",
            "--node",
            "w1",
            "--version",
            "1.34.2",
            "--kind",
            "patch",
            "--run-on",
            "cp1",
        ],
        &["manifests"],
        &["config"],
    ];
    for (name, text, want) in &templates {
        std::fs::write(dir.path().join(name), text).unwrap();
        let cfg = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&cfg, format!("job: {{template: {name}}}\n")).unwrap();
        for args in commands {
            let out = bin().arg("--config").arg(&cfg).args(args).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            if want.is_empty() {
                assert!(out.status.success(), "{name} {args:?}: {err}");
            } else {
                assert_eq!(out.status.code(), Some(2), "{name} {args:?}: {err}");
                assert!(
                    err.contains(want) && err.contains(name.as_str()),
                    "{name} {args:?}: expected {want:?} in {err}"
                );
            }
        }
    }
    // A template that does not exist.
    let cfg = dir.path().join("nope.yaml");
    std::fs::write(&cfg, "job: {template: nope.j2}\n").unwrap();
    let out = bin().arg("--config").arg(&cfg).arg("config").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("nope.j2"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "the cause once: {err}");
}

/// A config whose top level is not a mapping is refused naming the file (QA A8): serde mapped
/// a sequence onto the fields by position (`- a` became the namespace).
#[test]
fn a_config_that_is_not_a_mapping_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (i, text) in
        ["- a\n- b\n", "- a\n", "just a string\n", "42\n", "true\n", "[k8s-upgrade]\n"].iter().enumerate()
    {
        let path = dir.path().join(format!("c{i}.yaml"));
        std::fs::write(&path, text).unwrap();
        let out = bin().arg("--config").arg(&path).arg("config").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text:?}: {err}");
        assert!(
            err.contains(&path.display().to_string()) && err.contains("must be a mapping"),
            "{text:?}: {err}"
        );
    }
}
