//! scripts/update_k8s.sh, run over real SSH (sshd on loopback) against command shims that
//! record every call (tests/fixtures/shims). Each test uses its own loopback address.

mod support;

use std::{
    collections::BTreeMap, fs, os::unix::process::CommandExt, path::Path, process::Command, time::Duration,
};

use chain_core::node_exec::{ExecOutput, ExecRequest, ExitStatus, NodeExec};
use k8s_upgrade_chain::{
    node::probes::{self, ProbeError},
    node::ssh::SshExec,
};
use support::sshd::SshdNode;

const SCRIPT: &str = include_str!("../scripts/update_k8s.sh");
const IGNORE: &str = "--ignore-preflight-errors=CoreDNSMigration,CoreDNSUnsupportedPlugins";
/// Non-interactive conffile handling on every install.
const INSTALL: &str =
    "apt-get install -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold";

const NODE_KUBELET_CONFIG: &str = "\
apiVersion: kubelet.config.k8s.io/v1beta1
allowedUnsafeSysctls:
- net.core.somaxconn
authentication:
  anonymous:
    enabled: false
cgroupDriver: systemd
kind: KubeletConfiguration
systemReserved:
  cpu: 500m
  memory: 1Gi
";

/// What `kubeadm upgrade` writes from the kubelet-config ConfigMap: node-local keys gone.
const CLUSTER_KUBELET_CONFIG: &str = "\
apiVersion: kubelet.config.k8s.io/v1beta1
authentication:
  anonymous:
    enabled: false
cgroupDriver: systemd
evictionHard:
  memory.available: 100Mi
kind: KubeletConfiguration
rotateCertificates: true
";

/// A node on 1.33.5 with the three packages held, like a real kubeadm node.
fn node_on_1_33(name: &str, ip: &str) -> SshdNode {
    let node = SshdNode::start(name, ip);
    node.install(&["kubeadm", "kubelet", "kubectl"], "1.33.5-1.1");
    node.set_state("cluster-kubelet-config.yaml", CLUSTER_KUBELET_CONFIG);
    let root = node.root();
    fs::write(root.join("var/lib/kubelet/config.yaml"), NODE_KUBELET_CONFIG).unwrap();
    fs::create_dir_all(root.join("etc/kubernetes/manifests")).unwrap();
    fs::write(
        root.join("etc/kubernetes/manifests/kube-apiserver.yaml"),
        "spec:\n  containers:\n  - image: registry.k8s.io/kube-apiserver:v1.33.5\n",
    )
    .unwrap();
    node
}

async fn run_script(node: &SshdNode, args: &[&str]) -> ExecOutput {
    let req = ExecRequest::script("update_k8s.sh", SCRIPT, args.iter().copied())
        .unwrap()
        .capture(true)
        .timeout(Duration::from_secs(120));
    SshExec::new(node.ssh_config()).unwrap().run(&node.target(), req).await.unwrap()
}

/// The calls that act on the node, in order (reads like dpkg-query and showhold left out).
fn actions(node: &SshdNode) -> Vec<String> {
    node.calls()
        .into_iter()
        .filter(|c| !c.starts_with("sudo ") && !c.starts_with("dpkg-query ") && c != "apt-mark showhold")
        .collect()
}

fn installed(node: &SshdNode, pkg: &str) -> String {
    node.state_file(&format!("installed/{pkg}")).unwrap()
}

fn held(node: &SshdNode) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(node.state().join("held"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// Every file under `dir` with its contents.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.display().to_string(), fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn prelude() -> Vec<String> {
    vec![
        "curl -fsSL --retry 3 -o TMP/Release.key https://pkgs.k8s.io/core:/stable:/v1.34/deb/Release.key"
            .into(),
        "gpg --batch --yes --dearmor -o TMP/keyring.gpg TMP/Release.key".into(),
    ]
}

/// Replaces the script's mktemp dir in recorded calls with TMP.
fn normalise(calls: Vec<String>) -> Vec<String> {
    let re = regex::Regex::new(r"/tmp/tmp\.[A-Za-z0-9]+").unwrap();
    calls.into_iter().map(|c| re.replace_all(&c, "TMP").into_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_upgrade_runs_plan_then_apply_with_the_explicit_version() {
    let node = node_on_1_33("k8s-master", "127.0.1.11");
    // Through the chain's entry point rather than a hand-built request.
    let exec = SshExec::new(node.ssh_config()).unwrap();
    let update = probes::UpdateNode::new(probes::NodeRole::Master, "1.34.2".parse().unwrap());
    let out = probes::update_node(&exec, &node.target(), &update, Duration::from_secs(120)).await.unwrap();
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.ends_with("Done\n"), "{}", out.stdout);

    let mut want = prelude();
    want.extend([
        "apt-mark unhold kubeadm kubelet kubectl".to_string(),
        "apt-get update".into(),
        format!("{INSTALL} kubeadm=1.34.2-*"),
        format!("kubeadm upgrade plan v1.34.2 {IGNORE}"),
        format!("kubeadm upgrade apply v1.34.2 -y {IGNORE} --skip-phases=addon/coredns"),
        format!("{INSTALL} kubelet=1.34.2-* kubectl=1.34.2-*"),
        "apt-mark hold kubeadm kubelet kubectl".into(),
        "systemctl daemon-reload".into(),
        "systemctl restart kubelet".into(),
    ]);
    assert_eq!(normalise(actions(&node)), want);
    for p in ["kubeadm", "kubelet", "kubectl"] {
        assert_eq!(installed(&node, p), "1.34.2-1.1");
    }
    assert_eq!(held(&node), ["kubeadm", "kubectl", "kubelet"]);

    let root = node.root();
    assert_eq!(
        fs::read_to_string(root.join("etc/apt/sources.list.d/kubernetes.list")).unwrap(),
        "deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://pkgs.k8s.io/core:/stable:/v1.34/deb/ /\n"
    );
    let keyring = fs::read_to_string(root.join("etc/apt/keyrings/kubernetes-apt-keyring.gpg")).unwrap();
    assert!(keyring.contains("/v1.34/deb/Release.key"), "{keyring}");
    // kubeadm's rewrite of the kubelet config is shown as a diff even when nothing is restored.
    assert!(out.stdout.contains("-systemReserved:"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_upgrade_runs_upgrade_node_and_restores_node_local_kubelet_keys() {
    let node = node_on_1_33("k8s-node1", "127.0.1.12");
    let out = run_script(
        &node,
        &[
            "--role",
            "worker",
            "--release",
            "1.34.2",
            "--preserve-kubelet-keys",
            "systemReserved,allowedUnsafeSysctls",
            "--preserve-kubelet-keys=evictionHard",
        ],
    )
    .await;
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);

    let mut want = prelude();
    want.extend([
        "apt-mark unhold kubeadm kubelet kubectl".to_string(),
        "apt-get update".into(),
        format!("{INSTALL} kubeadm=1.34.2-*"),
        "kubeadm upgrade node".into(),
        format!("{INSTALL} kubelet=1.34.2-* kubectl=1.34.2-*"),
        "apt-mark hold kubeadm kubelet kubectl".into(),
        "systemctl daemon-reload".into(),
        "systemctl restart kubelet".into(),
    ]);
    assert_eq!(normalise(actions(&node)), want);

    let config = fs::read_to_string(node.root().join("var/lib/kubelet/config.yaml")).unwrap();
    // Cluster-wide keys from kubeadm's rewrite stay; node-local ones come back; a listed key
    // the node did not have before (evictionHard) is removed again.
    assert!(config.contains("rotateCertificates: true\n"), "{config}");
    assert!(config.contains("systemReserved:\n  cpu: 500m\n  memory: 1Gi\n"), "{config}");
    assert!(config.contains("allowedUnsafeSysctls:\n- net.core.somaxconn\n"), "{config}");
    assert!(!config.contains("evictionHard"), "{config}");
    assert!(out.stdout.contains("restored kubelet config key systemReserved"), "{}", out.stdout);
    assert!(out.stdout.contains("+rotateCertificates: true"), "diff missing: {}", out.stdout);

    // Running again changes nothing: the restore is already in place.
    let before = snapshot(&node.root());
    node.clear_calls();
    let again = run_script(
        &node,
        &[
            "--role",
            "worker",
            "--release",
            "1.34.2",
            "--preserve-kubelet-keys",
            "systemReserved,allowedUnsafeSysctls,evictionHard",
        ],
    )
    .await;
    assert!(again.success(), "{}", again.stdout);
    assert_eq!(snapshot(&node.root()), before);
    assert_eq!(normalise(actions(&node)), prelude());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_control_planes_run_upgrade_node() {
    let node = node_on_1_33("k8s-master2", "127.0.1.13");
    let out = run_script(&node, &["--role", "control-plane", "--release", "1.34.2"]).await;
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
    let mut want = prelude();
    want.extend([
        "apt-mark unhold kubeadm kubelet kubectl".to_string(),
        "apt-get update".into(),
        format!("{INSTALL} kubeadm=1.34.2-*"),
        format!("kubeadm upgrade node {IGNORE} --skip-phases=addon/coredns"),
        format!("{INSTALL} kubelet=1.34.2-* kubectl=1.34.2-*"),
        "apt-mark hold kubeadm kubelet kubectl".into(),
        "systemctl daemon-reload".into(),
        "systemctl restart kubelet".into(),
    ]);
    assert_eq!(normalise(actions(&node)), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_is_retried_with_etcd_upgrade_off() {
    let node = node_on_1_33("k8s-master", "127.0.1.14");
    node.set_state("apply_failures", "2");
    let out = run_script(&node, &["--role", "master", "--release", "1.34.2"]).await;
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
    let applies: Vec<String> =
        actions(&node).into_iter().filter(|c| c.starts_with("kubeadm upgrade apply")).collect();
    let base = format!("kubeadm upgrade apply v1.34.2 -y {IGNORE} --skip-phases=addon/coredns");
    assert_eq!(
        applies,
        [base.clone(), format!("{base} --etcd-upgrade=false"), format!("{base} --etcd-upgrade=false")]
    );
    assert!(out.stdout.contains("failed (attempt 2 of 3)"), "{}", out.stdout);
    assert_eq!(installed(&node, "kubelet"), "1.34.2-1.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_retries_wait_30_seconds_by_default() {
    // Seed failure 12: a slow master needed a pause between attempts. The harness's sessions
    // set UPDATE_K8S_RETRY_DELAY=0; this node runs the script with its own default, and its
    // `sleep` shim records the delay without waiting for it.
    let node = node_on_1_33("k8s-master", "127.0.1.22");
    node.set_state("env", "unset UPDATE_K8S_RETRY_DELAY\n");
    node.set_state("fake_sleep", "");
    node.set_state("apply_failures", "2");
    let out = run_script(&node, &["--role", "master", "--release", "1.34.2"]).await;
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
    let around: Vec<String> = actions(&node)
        .into_iter()
        .filter(|c| c.starts_with("kubeadm upgrade apply") || c.starts_with("sleep"))
        .map(|c| if c.starts_with("kubeadm") { "apply".into() } else { c })
        .collect();
    assert_eq!(around, ["apply", "sleep 30", "apply", "sleep 30", "apply"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_apply_failures_exit_1_before_touching_the_kubelet() {
    let node = node_on_1_33("k8s-master", "127.0.1.15");
    node.set_state("apply_failures", "3");
    let out = run_script(&node, &["--role", "master", "--release", "1.34.2"]).await;
    assert_eq!(out.status, ExitStatus::Code(1), "{}", out.stdout);
    assert!(out.stdout.contains("failed 3 times"), "{}", out.stdout);
    let acts = actions(&node);
    assert_eq!(acts.iter().filter(|c| c.starts_with("kubeadm upgrade apply")).count(), 3);
    assert!(!acts.iter().any(|c| c.starts_with("systemctl")), "{acts:?}");
    assert_eq!(installed(&node, "kubelet"), "1.33.5-1.1");

    // The re-run resumes: kubeadm is already installed, apply runs again and succeeds.
    node.clear_calls();
    let out = run_script(&node, &["--role", "master", "--release", "1.34.2"]).await;
    assert!(out.success(), "{}", out.stdout);
    let acts = actions(&node);
    assert!(!acts.iter().any(|c| c.contains("kubeadm=")), "{acts:?}");
    assert_eq!(acts.iter().filter(|c| c.starts_with("kubeadm upgrade apply")).count(), 1);
    assert_eq!(installed(&node, "kubelet"), "1.34.2-1.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_on_an_upgraded_master_changes_nothing() {
    let node = node_on_1_33("k8s-master", "127.0.1.16");
    let args = ["--role", "master", "--release", "1.34.2"];
    assert!(run_script(&node, &args).await.success());
    let files = snapshot(&node.root());
    let state = (held(&node), installed(&node, "kubeadm"), installed(&node, "kubelet"));
    node.clear_calls();

    let out = run_script(&node, &args).await;
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("nothing changed; kubelet not restarted"), "{}", out.stdout);
    assert_eq!(normalise(actions(&node)), prelude());
    assert_eq!(snapshot(&node.root()), files);
    assert_eq!((held(&node), installed(&node, "kubeadm"), installed(&node, "kubelet")), state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_fails_the_script() {
    let node = node_on_1_33("k8s-node2", "127.0.1.17");
    node.set_state("apt_get_fails", "");
    let out = run_script(&node, &["--role", "worker", "--release", "1.34.2"]).await;
    assert_eq!(out.status, ExitStatus::Code(100), "{}", out.stdout);
    assert!(!actions(&node).iter().any(|c| c.starts_with("kubeadm")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_reading_stdin_cannot_swallow_the_script() {
    let node = node_on_1_33("k8s-node3", "127.0.1.18");
    node.set_state("read_stdin", "");
    let out = run_script(&node, &["--role", "worker", "--release", "1.34.2"]).await;
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.ends_with("Done\n"), "{}", out.stdout);
    assert_eq!(node.state_file("stdin_seen").as_deref(), Some(""));
    assert!(node.calls().contains(&"systemctl restart kubelet".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apt_base_option_points_source_and_key_at_a_mirror() {
    let node = node_on_1_33("k8s-node4", "127.0.1.19");
    let out = run_script(
        &node,
        &["--role", "worker", "--release", "1.34.2", "--apt-base", "https://mirror.example/k8s/"],
    )
    .await;
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        fs::read_to_string(node.root().join("etc/apt/sources.list.d/kubernetes.list")).unwrap(),
        "deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://mirror.example/k8s/v1.34/deb/ /\n"
    );
    assert!(
        node.calls()
            .iter()
            .any(|c| c.starts_with("curl ")
                && c.ends_with(" https://mirror.example/k8s/v1.34/deb/Release.key")),
        "{:#?}",
        node.calls()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_node_update_is_an_error_with_the_output_tail() {
    let node = node_on_1_33("k8s-master", "127.0.1.20");
    node.set_state("apply_failures", "3");
    let exec = SshExec::new(node.ssh_config()).unwrap();
    let update = probes::UpdateNode::new(probes::NodeRole::Master, "1.34.2".parse().unwrap());
    let err =
        probes::update_node(&exec, &node.target(), &update, Duration::from_secs(120)).await.unwrap_err();
    assert!(matches!(&err, ProbeError::Failed { status: ExitStatus::Code(1), .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("k8s-master") && msg.contains("couldn't upgrade control plane"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_refuses_while_one_is_still_running() {
    let node = node_on_1_33("k8s-node5", "127.0.1.21");
    let lock = node.root().join("run/lock/update_k8s.lock");
    fs::create_dir_all(lock.parent().unwrap()).unwrap();
    fs::write(&lock, "").unwrap();
    // Hold the lock the way a still-running first run would.
    // -o: the lock stays with flock itself (not its sleep child), so killing flock frees it.
    let mut holder =
        Command::new("flock").arg("-o").arg(&lock).args(["sleep", "60"]).process_group(0).spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while Command::new("flock").args(["-n"]).arg(&lock).arg("true").status().unwrap().success() {
        assert!(std::time::Instant::now() < deadline, "lock holder never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = run_script(&node, &["--role", "worker", "--release", "1.34.2"]).await;
    // Kill flock and its sleep together (own process group).
    let _ = Command::new("kill").args(["-KILL", "--"]).arg(format!("-{}", holder.id())).status();
    let _ = holder.wait();
    assert_eq!(out.status, ExitStatus::Code(1), "{}", out.stdout);
    assert!(out.stdout.contains("another update_k8s.sh is still running"), "{}", out.stdout);
    assert!(!actions(&node).iter().any(|c| c.starts_with("apt-") || c.starts_with("kubeadm")));

    // Once the first run is gone, the lock is free again.
    let out = run_script(&node, &["--role", "worker", "--release", "1.34.2"]).await;
    assert!(out.success(), "{}", out.stdout);
}

fn local(args: &[&str]) -> std::process::Output {
    Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/update_k8s.sh"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn usage_errors_exit_2_before_doing_anything() {
    for args in [
        &[][..],
        &["--role", "master"],
        &["--release", "1.34.2"],
        &["--role", "boss", "--release", "1.34.2"],
        &["--role", "worker", "--release", "1.34"],
        &["--role", "worker", "--release", "v1.34.2"],
        &["--role", "worker", "--release", "1.34.2", "--extra"],
        &["--role"],
        &["--role", "worker", "--release", "1.34.2", "--preserve-kubelet-keys", "a b"],
        &["--role", "worker", "--release", "1.34.2", "--preserve-kubelet-keys", ""],
    ] {
        let out = local(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("Usage: update_k8s.sh"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let help = local(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).starts_with("Usage: update_k8s.sh"));
}

#[test]
fn shellcheck_passes_on_the_scripts_and_the_shims() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shims = root.join("tests/fixtures/shims");
    let mut files = vec![root.join("scripts/update_k8s.sh"), root.join("scripts/build-image.sh")];
    for e in fs::read_dir(&shims).unwrap() {
        files.push(e.unwrap().path());
    }
    let out = Command::new("shellcheck")
        .args(["-x", "-P", "SCRIPTDIR", "--shell=bash"])
        .args(&files)
        .output()
        .expect("shellcheck must be installed (Debian package shellcheck)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
