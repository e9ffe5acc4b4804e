//! SshExec against a real sshd on loopback (see tests/support/sshd.rs).
//!
//! Each test uses its own loopback address so parallel tests never share a server.

mod support;

use std::{fs, os::unix::fs::PermissionsExt, process::Command, time::Duration};

use chain_core::{
    node_exec::{ExecError, ExecRequest, ExitStatus, NodeExec},
    settings::{HostKeyPolicy, SshConfig},
};
use k8s_upgrade_chain::node::ssh::SshExec;
use support::sshd::SshdNode;

fn exec_for(node: &SshdNode) -> SshExec {
    SshExec::new(node.ssh_config()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_a_command_and_returns_output_and_status() {
    let node = SshdNode::start("k8s-node1", "127.0.0.11");
    let exec = exec_for(&node);
    let out =
        exec.run(&node.target(), ExecRequest::command("echo hello; echo oops >&2; exit 3")).await.unwrap();
    assert_eq!(out.status, ExitStatus::Code(3));
    assert!(!out.success());
    assert_eq!(out.stdout, "hello\n");
    assert_eq!(out.stderr, "oops\n");

    let ok = exec.run(&node.target(), ExecRequest::command("cat").with_stdin("piped\n")).await.unwrap();
    assert!(ok.success());
    assert_eq!(ok.stdout, "piped\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_is_reported_as_a_signal() {
    let node = SshdNode::start("k8s-node1", "127.0.0.12");
    let out = exec_for(&node).run(&node.target(), ExecRequest::command("kill -TERM $$")).await.unwrap();
    assert_eq!(out.status, ExitStatus::Signal("TERM".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_run_under_sudo_bash_with_quoted_args() {
    let node = SshdNode::start("k8s-node1", "127.0.0.13");
    let script = "printf '<%s>\\n' \"$@\"; echo \"user=$(id -un)\"\n";
    let req =
        ExecRequest::script("args.sh", script, ["--role", "it's a $(test)", "*"]).unwrap().capture(true);
    let out = exec_for(&node).run(&node.target(), req).await.unwrap();
    assert!(out.success(), "{out:?}");
    assert!(out.stdout.starts_with("<--role>\n<it's a $(test)>\n<*>\n"), "{}", out.stdout);
    assert!(node.calls().iter().any(|c| c.starts_with("sudo -n bash -s -- --role")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_megabytes_on_both_streams_at_once_all_arrive() {
    let node = SshdNode::start("k8s-node1", "127.0.0.14");
    // 1_300_000 lines of 8 bytes ("0000001\n") = 10.4 MB on each stream, concurrently.
    let cmd = "seq -w 1 1300000 & seq -w 1 1300000 >&2; wait";
    let req = ExecRequest::command(cmd).stream(true).timeout(Duration::from_secs(120));
    let out = exec_for(&node).run(&node.target(), req).await.unwrap();
    assert!(out.success());
    assert_eq!(out.stdout_bytes, 10_400_000);
    assert_eq!(out.stderr_bytes, 10_400_000);
    assert!(out.stdout.ends_with("1299999\n1300000\n"));
    assert!(out.stderr.ends_with("1299999\n1300000\n"));
    assert!(out.stdout.len() <= chain_core::node_exec::CAPTURE_LIMIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_host_key_is_refused_naming_node_address_and_fingerprint() {
    let node = SshdNode::start("k8s-node2", "127.0.0.15");
    let mut cfg = node.ssh_config();
    // known_hosts lists a different key for this address.
    let other = SshdNode::start("other", "127.0.0.16");
    let line = other
        .known_hosts_line()
        .replace(&format!("[{}]:{}", other.ip, other.port), &format!("[{}]:{}", node.ip, node.port));
    cfg.known_hosts_file = node.dir.path().join("kh_wrong");
    fs::write(&cfg.known_hosts_file, line).unwrap();
    let err = SshExec::new(cfg).unwrap().run(&node.target(), ExecRequest::command("true")).await.unwrap_err();
    assert!(matches!(err, ExecError::HostKeyMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("k8s-node2"), "{msg}");
    assert!(msg.contains("127.0.0.15"), "{msg}");
    assert!(msg.contains(&node.host_key_fingerprint()), "{msg}");
    assert!(node.calls().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_host_is_refused_in_strict_mode() {
    let node = SshdNode::start("k8s-node3", "127.0.0.17");
    let mut cfg = node.ssh_config();
    cfg.known_hosts_file = node.dir.path().join("kh_empty");
    fs::write(&cfg.known_hosts_file, "# nothing here\n").unwrap();
    let err = SshExec::new(cfg.clone())
        .unwrap()
        .run(&node.target(), ExecRequest::command("true"))
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::HostKeyUnknown { .. }), "{err:?}");
    assert!(err.to_string().contains(&node.host_key_fingerprint()), "{err}");

    // A missing known_hosts file is a setup error in strict mode, naming the path.
    cfg.known_hosts_file = node.dir.path().join("absent");
    let err = SshExec::new(cfg).unwrap().run(&node.target(), ExecRequest::command("true")).await.unwrap_err();
    assert!(matches!(err, ExecError::Setup { .. }), "{err:?}");
    assert!(err.to_string().contains("absent"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_new_trusts_an_unknown_host_once_and_refuses_a_changed_key() {
    let mut node = SshdNode::start("k8s-node4", "127.0.0.18");
    let mut cfg = node.ssh_config();
    cfg.known_hosts_file = node.dir.path().join("absent");
    cfg.host_key_policy = HostKeyPolicy::AcceptNew;
    let exec = SshExec::new(cfg).unwrap();
    let out = exec.run(&node.target(), ExecRequest::command("echo first")).await.unwrap();
    assert_eq!(out.stdout, "first\n");
    let out = exec.run(&node.target(), ExecRequest::command("echo again")).await.unwrap();
    assert_eq!(out.stdout, "again\n");

    node.restart_with_new_host_key();
    let err = exec.run(&node.target(), ExecRequest::command("true")).await.unwrap_err();
    assert!(matches!(err, ExecError::HostKeyMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains(&node.host_key_fingerprint()), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_new_still_refuses_a_key_that_contradicts_known_hosts() {
    let mut node = SshdNode::start("k8s-node5", "127.0.0.19");
    let mut cfg = node.ssh_config(); // lists the current key
    cfg.host_key_policy = HostKeyPolicy::AcceptNew;
    node.restart_with_new_host_key();
    let err = SshExec::new(cfg).unwrap().run(&node.target(), ExecRequest::command("true")).await.unwrap_err();
    assert!(matches!(err, ExecError::HostKeyMismatch { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_world_readable_key_file_still_works() {
    let node = SshdNode::start("k8s-node1", "127.0.0.20");
    for mode in [0o644, 0o444] {
        fs::set_permissions(node.client_key(), fs::Permissions::from_mode(mode)).unwrap();
        let out = exec_for(&node).run(&node.target(), ExecRequest::command("echo ok")).await.unwrap();
        assert_eq!(out.stdout, "ok\n", "mode {mode:o}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_server_does_not_know_fails_authentication() {
    let node = SshdNode::start("k8s-node1", "127.0.0.21");
    let other = SshdNode::start("other", "127.0.0.22");
    let mut cfg = node.ssh_config();
    cfg.key_file = other.client_key();
    let err = SshExec::new(cfg).unwrap().run(&node.target(), ExecRequest::command("true")).await.unwrap_err();
    assert!(matches!(err, ExecError::Auth { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("k8s-node1") && msg.contains("127.0.0.21"), "{msg}");
    assert!(!msg.contains("PRIVATE KEY"), "{msg}");
}

#[test]
fn an_unreadable_key_file_is_an_error_naming_the_path_only() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SshConfig { key_file: dir.path().join("nope"), ..Default::default() };
    let err = SshExec::new(cfg).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_mid_command_fails_clearly() {
    let mut node = SshdNode::start("k8s-node6", "127.0.0.23");
    let exec = exec_for(&node);
    let target = node.target();
    let marker = node.state().join("started");
    let cmd = format!("echo started; touch {}; sleep 60; echo never", marker.display());
    let req = ExecRequest::command(cmd).timeout(Duration::from_secs(100));
    let run = tokio::spawn(async move { exec.run(&target, req).await });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !marker.exists() {
        assert!(std::time::Instant::now() < deadline, "remote command never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.kill_all();
    let res = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("run did not return after the connection dropped")
        .unwrap();
    let err = res.unwrap_err();
    // Dropped, not TimedOut: the drop was noticed without waiting for the 100 s deadline.
    assert!(matches!(err, ExecError::Dropped { .. }), "{err:?}");
    assert!(err.to_string().contains("k8s-node6"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_deadline_fires() {
    let node = SshdNode::start("k8s-node1", "127.0.0.24");
    let req = ExecRequest::command("sleep 30").timeout(Duration::from_secs(2));
    let err = exec_for(&node).run(&node.target(), req).await.unwrap_err();
    assert!(matches!(err, ExecError::TimedOut { .. }), "{err:?}");
    assert!(err.to_string().contains("sleep 30"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_a_connect_error() {
    let node = SshdNode::start("k8s-node1", "127.0.0.25");
    let mut cfg = node.ssh_config();
    cfg.port = {
        let l = std::net::TcpListener::bind("127.0.0.25:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = SshExec::new(cfg).unwrap().run(&node.target(), ExecRequest::command("true")).await.unwrap_err();
    assert!(matches!(err, ExecError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("127.0.0.25"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_over_ipv6_loopback() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("SKIPPED: no IPv6 loopback on this machine");
        return;
    }
    let node = SshdNode::start("k8s-node1", "::1");
    let out = exec_for(&node).run(&node.target(), ExecRequest::command("echo v6")).await.unwrap();
    assert_eq!(out.stdout, "v6\n");
}

// ----- probes over SSH, against the command shims -----

mod probes_over_ssh {
    use super::*;
    use chain_core::version::Version;
    use k8s_upgrade_chain::node::probes::{self, AuthConfigDrift, PlanTarget, ProbeError};

    fn sample(name: &str) -> String {
        fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/probe_samples").join(name),
        )
        .unwrap()
    }

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plan_madison_containerd_and_diff_probes_parse_node_output() {
        let node = SshdNode::start("k8s-master", "127.0.2.11");
        node.set_state("plan.txt", &sample("kubeadm-plan-1.34-minor.txt"));
        node.set_state("madison.txt", &sample("madison-kubeadm-1.35.txt"));
        node.set_state("diff.txt", &sample("kubeadm-diff-authn-dropped.txt"));
        node.set_state("installed/containerd.io", "1.7.27-1");
        let exec = exec_for(&node);
        let t = node.target();

        let plan = probes::probe_upgrade_plan(&exec, &t, v("1.34.1")).await.unwrap();
        assert_eq!(plan, PlanTarget::Apply(v("1.34.1")));
        let latest = probes::probe_latest_patch(&exec, &t, v("1.35.0")).await.unwrap();
        assert_eq!(latest, Some(v("1.35.5")));
        let containerd = probes::probe_containerd_version(&exec, &t).await.unwrap();
        assert_eq!(containerd, v("1.7.27"));
        let drift = probes::probe_auth_config_drift(&exec, &t, v("1.34.1")).await.unwrap();
        assert!(matches!(drift, AuthConfigDrift::Dropped(_)), "{drift:?}");

        let calls = node.calls();
        for want in [
            "kubeadm upgrade plan v1.34.1 --ignore-preflight-errors=CoreDNSMigration,CoreDNSUnsupportedPlugins",
            "apt-get update -o Dir::Etc::sourcelist=sources.list.d/kubernetes.list -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0",
            "apt-cache madison kubeadm",
            "containerd --version",
            "kubeadm upgrade diff v1.34.1",
        ] {
            assert!(calls.iter().any(|c| c == want), "missing {want:?} in {calls:#?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_probe_names_node_and_stderr() {
        let node = SshdNode::start("k8s-node3", "127.0.2.12");
        node.set_state("apt_get_fails", "");
        let err =
            probes::probe_latest_patch(&exec_for(&node), &node.target(), v("1.35.0")).await.unwrap_err();
        assert!(matches!(err, ProbeError::Failed { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("k8s-node3") && msg.contains("simulated failure"), "{msg}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn containerd_skew_fix_installs_holds_and_restarts() {
        let node = SshdNode::start("k8s-master", "127.0.2.13");
        node.install(&["containerd.io"], "1.7.27-1");
        let exec = exec_for(&node);
        probes::fix_containerd_skew(&exec, &node.target(), v("1.7.28")).await.unwrap();
        let acts: Vec<String> = node.calls().into_iter().filter(|c| !c.starts_with("sudo ")).collect();
        assert_eq!(
            acts,
            [
                "apt-mark unhold containerd.io",
                "apt-get install -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold containerd.io=1.7.28-*",
                "apt-mark hold containerd.io",
                "systemctl restart containerd"
            ]
        );
        assert_eq!(probes::probe_containerd_version(&exec, &node.target()).await.unwrap(), v("1.7.28"));
        assert!(node.state().join("held/containerd.io").exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn apt_repo_rewrite_points_at_the_new_minor() {
        let node = SshdNode::start("k8s-node1", "127.0.2.14");
        probes::rewrite_apt_repo(&exec_for(&node), &node.target(), v("1.35.2"), probes::K8S_APT_BASE)
            .await
            .unwrap();
        let root = node.root();
        assert_eq!(
            fs::read_to_string(root.join("etc/apt/sources.list.d/kubernetes.list")).unwrap(),
            "deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://pkgs.k8s.io/core:/stable:/v1.35/deb/ /\n"
        );
        let keyring = fs::read_to_string(root.join("etc/apt/keyrings/kubernetes-apt-keyring.gpg")).unwrap();
        assert_eq!(keyring, "https://pkgs.k8s.io/core:/stable:/v1.35/deb/Release.key\n");
        let calls = node.calls();
        assert!(
            calls
                .iter()
                .any(|c| c == "curl -fsSL --retry 3 https://pkgs.k8s.io/core:/stable:/v1.35/deb/Release.key"),
            "{calls:#?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_post_upgrade_script_runs_and_its_result_is_checked() {
        let node = SshdNode::start("k8s-master", "127.0.2.16");
        let exec = exec_for(&node);
        let manifest = node.root().join("kube-apiserver.yaml");
        fs::write(&manifest, "    - --authorization-mode=Node,RBAC\n").unwrap();
        let path = manifest.to_str().unwrap();
        let needle = "--authentication-config=";
        assert!(!probes::probe_file_contains(&exec, &node.target(), path, needle).await.unwrap());

        let restore = "set -eu\nf=\"$UPDATE_K8S_ROOT/kube-apiserver.yaml\"\n\
                       sed -i 's|^    - --authorization-mode|    - --authentication-config=/etc/kubernetes/auth.yaml\\n&|' \"$f\"\n\
                       echo restored\n";
        let out =
            probes::run_post_upgrade_script(&exec, &node.target(), "oidc-restore", restore).await.unwrap();
        assert_eq!(out.stdout, "restored\n");
        assert!(probes::probe_file_contains(&exec, &node.target(), path, needle).await.unwrap());

        let err = probes::probe_file_contains(&exec, &node.target(), "/nonexistent/manifest", needle)
            .await
            .unwrap_err();
        assert!(matches!(err, ProbeError::Failed { .. }), "{err:?}");

        let err = probes::run_post_upgrade_script(&exec, &node.target(), "oidc-restore", "exit 4\n")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("exit status 4"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prune_removes_only_old_kubeadm_scratch() {
        let node = SshdNode::start("k8s-master", "127.0.2.15");
        // kubeadm's own scratch directory, under the node's file tree (`UPDATE_K8S_ROOT`).
        let scratch = node.root().join(probes::KUBEADM_SCRATCH_DIR.trim_start_matches('/'));
        for (name, age) in [
            ("kubeadm-backup-etcd-2026-06-24-03-11-52", Some("5 days ago")),
            ("kubeadm-upgraded-manifests2387441093", Some("4 days ago")),
            ("kubeadm-backup-manifests-fresh", None),
            ("unrelated-old", Some("9 days ago")),
        ] {
            let d = scratch.join(name);
            fs::create_dir_all(d.join("sub")).unwrap();
            if let Some(age) = age {
                let st = Command::new("touch").arg("-d").arg(age).arg(&d).status().unwrap();
                assert!(st.success());
            }
        }
        let report = probes::prune_kubeadm_scratch(&exec_for(&node), &node.target()).await.unwrap();
        let mut pruned: Vec<String> =
            report.pruned.iter().map(|p| p.rsplit('/').next().unwrap().to_string()).collect();
        pruned.sort();
        assert_eq!(
            pruned,
            ["kubeadm-backup-etcd-2026-06-24-03-11-52", "kubeadm-upgraded-manifests2387441093"]
        );
        assert!(!scratch.join("kubeadm-upgraded-manifests2387441093").exists());
        assert!(scratch.join("kubeadm-backup-manifests-fresh").exists());
        assert!(scratch.join("unrelated-old").exists());
        let fs_usage = report.root_fs.expect("df output parsed");
        assert!(fs_usage.size_kib > 0 && fs_usage.use_percent <= 100);

        // A missing directory prunes nothing and still reports usage.
        let report = probes::prune_dir(
            &exec_for(&node),
            &node.target(),
            "/nonexistent/k8s-upgrade-test",
            probes::KUBEADM_SCRATCH_MAX_AGE,
        )
        .await
        .unwrap();
        assert!(report.pruned.is_empty());
        assert!(report.root_fs.is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_speaks_ssh_fails_the_handshake_within_the_connect_timeout() {
    let node = SshdNode::start("k8s-node7", "127.0.0.26");
    // Accepts TCP and then says nothing.
    let silent = std::net::TcpListener::bind("127.0.0.26:0").unwrap();
    let mut cfg = node.ssh_config();
    cfg.port = silent.local_addr().unwrap().port();
    cfg.connect_timeout = Duration::from_secs(1);
    let holder = std::thread::spawn(move || {
        let conn = silent.accept();
        std::thread::sleep(Duration::from_secs(5));
        drop(conn);
    });
    let err = SshExec::new(cfg)
        .unwrap()
        .run(&node.target(), ExecRequest::command("true").timeout(Duration::from_secs(60)))
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::Protocol { stage: "handshake", .. }), "{err:?}");
    assert!(err.to_string().contains("k8s-node7"), "{err}");
    holder.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_that_gets_no_answer_times_out() {
    use socket2::{Domain, Socket, Type};
    let node = SshdNode::start("k8s-node8", "127.0.0.27");
    // A listener that never accepts, with its backlog filled: further SYNs are dropped, so a
    // connect gets no answer at all (like a powered-off node).
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    sock.bind(&"127.0.0.27:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    sock.listen(0).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            fillers.push(s);
        }
    }
    let mut cfg = node.ssh_config();
    cfg.port = addr.port();
    cfg.connect_timeout = Duration::from_secs(1);
    let err = SshExec::new(cfg).unwrap().run(&node.target(), ExecRequest::command("true")).await.unwrap_err();
    assert!(matches!(err, ExecError::ConnectTimeout { .. }), "{err:?}");
    assert!(err.to_string().contains("127.0.0.27"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_key_type_on_record_is_the_one_asked_for() {
    // sshd offers ed25519 and RSA; known_hosts only lists the RSA key (and, for the second
    // check, only the ed25519 key). Either must verify: the client asks for the type on record.
    let node = SshdNode::start_with_host_keys("k8s-node9", "127.0.0.28", &["ed25519", "rsa", "ecdsa"]);
    for file in ["host_key_rsa", "host_key_ecdsa", "host_key"] {
        let mut cfg = node.ssh_config();
        cfg.known_hosts_file = node.dir.path().join(format!("kh_{file}"));
        fs::write(&cfg.known_hosts_file, node.known_hosts_line_of(file)).unwrap();
        let out = SshExec::new(cfg)
            .unwrap()
            .run(&node.target(), ExecRequest::command("echo ok"))
            .await
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(out.stdout, "ok\n", "{file}");
    }
}
