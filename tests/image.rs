//! The container image, built the way CI builds it (`scripts/build-image.sh oci`: the static
//! binary, then umoci, no daemon, no registry) and run from its unpacked root filesystem with
//! nothing else present: `chroot` into it as user 65532 (root gives the test that; as another
//! user it runs through `unshare --map-root-user`).
//!
//! The image is built once per run of this test binary (several minutes: the release build
//! with LTO, and OpenSSL from source), in `target/image` (the script's cargo target dir, reused
//! between runs) and `target/tmp/image-<pid>` (the layout, rebuilt by each run in its own
//! directory). The script's output,
//! and the image size, go straight to the test's stderr, so CI's log shows them.
//!
//! A pod sees more than the image: the kubelet mounts /etc/hosts, /etc/resolv.conf, the
//! ConfigMaps and Secrets. Tests that need those work on their own copy of the root
//! filesystem and add exactly those files.
//!
//! Needs umoci (Debian package `umoci`) and, for name resolution, dnsmasq (`dnsmasq-base`);
//! `.ci/run` installs both.

mod support;

use std::{
    io::Write as _,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::OnceLock,
    time::Duration,
};

use k8s_openapi::api::batch::v1::Job;
use serde_json::Value;

const BIN: &str = "/usr/local/bin/k8s-upgrade-chain";
const TAG: &str = "test";
/// The size goal of the issue that introduced the scratch image: the unpacked root filesystem
/// (what `docker image ls` shows) under 20 MB. The compressed layer is about half of it.
const MAX_UNPACKED_BYTES: u64 = 20_000_000;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The built image: its OCI layout, the unpacked root filesystem (never written by tests:
/// they copy it), its config and sizes.
struct Image {
    layout: PathBuf,
    rootfs: PathBuf,
    config: Value,
    layers: usize,
    compressed: u64,
    unpacked: u64,
}

static IMAGE: OnceLock<Result<Image, String>> = OnceLock::new();

/// The image, built on first use. A failed build is remembered, so the other tests fail with
/// its message instead of building again.
fn image() -> &'static Image {
    match IMAGE.get_or_init(build) {
        Ok(image) => image,
        Err(e) => panic!("{e}"),
    }
}

fn is_root() -> bool {
    // The owner of /proc/self is the process's effective uid.
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd.output().map_err(|e| format!("failed to run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out)
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout.join("blobs").join(digest.replace(':', "/"))
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn tree_size(path: &Path) -> u64 {
    let meta = std::fs::symlink_metadata(path).unwrap();
    if meta.is_dir() {
        std::fs::read_dir(path).unwrap().map(|e| tree_size(&e.unwrap().path())).sum()
    } else {
        meta.len()
    }
}

/// This process's own build directory, `target/tmp/image-<pid>`: two runs of this test at
/// once (two suites on the machine) must not rebuild each other's layout. Directories of
/// processes that are gone are removed first.
fn build_dir() -> Result<PathBuf, String> {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    for e in std::fs::read_dir(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let stale = match name.strip_prefix("image-").map(str::parse::<u32>) {
            Some(Ok(pid)) => !Path::new(&format!("/proc/{pid}")).exists(),
            _ => name == "image", // the single shared directory of earlier versions
        };
        if stale {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let dir = tmp.join(format!("image-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

fn build() -> Result<Image, String> {
    let dir = build_dir()?;
    let layout = dir.join("oci");
    // Output inherited: cargo's progress and the script's size line reach the log directly.
    let status = Command::new(root().join("scripts/build-image.sh"))
        .arg("oci")
        .arg(&layout)
        .arg(TAG)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("failed to run scripts/build-image.sh: {e}"))?;
    if !status.success() {
        return Err(format!("scripts/build-image.sh oci failed ({status}); its output is above"));
    }
    let bundle = dir.join("bundle");
    let mut unpack = Command::new("umoci");
    unpack.arg("unpack");
    if !is_root() {
        unpack.arg("--rootless");
    }
    run(unpack.arg("--image").arg(format!("{}:{TAG}", layout.display())).arg(&bundle))?;

    let index = read_json(&layout.join("index.json"))?;
    let manifest_desc = &index["manifests"][0];
    let manifest = read_json(&blob(&layout, manifest_desc["digest"].as_str().unwrap_or_default()))?;
    let config = read_json(&blob(&layout, manifest["config"]["digest"].as_str().unwrap_or_default()))?;
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    let size = |v: &Value| v["size"].as_u64().unwrap_or_default();
    let compressed = layers.iter().map(size).sum::<u64>() + size(&manifest["config"]) + size(manifest_desc);
    let rootfs = bundle.join("rootfs");
    let unpacked = tree_size(&rootfs);
    // Straight to stderr, past the test harness's capture: CI's log shows the size.
    let _ = writeln!(
        std::io::stderr(),
        "image size: {compressed} bytes compressed ({} layer(s), config and manifest), {unpacked} bytes unpacked",
        layers.len()
    );
    Ok(Image { layout, rootfs, config, layers: layers.len(), compressed, unpacked })
}

/// A private copy of the image's root filesystem, as a pod would start from it.
struct Pod {
    _dir: tempfile::TempDir,
    rootfs: PathBuf,
}

impl Pod {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        run(Command::new("cp").arg("-a").arg(&image().rootfs).arg(&rootfs)).unwrap();
        Self { _dir: dir, rootfs }
    }

    /// Adds a file as a mount would (owned by root, readable by all).
    fn mount(&self, path: &str, text: &str) {
        let p = self.rootfs.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    /// Runs the image's entrypoint with `args` and only `env` (as user 65532 when root).
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        run_in(&self.rootfs, args, env)
    }
}

fn run_in(rootfs: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = if is_root() {
        // Absolute paths: the child's environment is cleared, PATH included.
        let mut c = Command::new("/usr/sbin/chroot");
        c.arg("--userspec=65532:65532").arg(rootfs);
        c
    } else {
        // Without root, a user namespace gives the chroot (the process is then "root" inside).
        let mut c = Command::new("/usr/bin/unshare");
        c.arg("--map-root-user").arg(format!("--root={}", rootfs.display()));
        c
    };
    cmd.arg(BIN).args(args).env_clear().envs(env.iter().copied()).stdin(Stdio::null());
    cmd.output().unwrap_or_else(|e| panic!("failed to run {cmd:?}: {e}"))
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Every file of a root filesystem: relative path, mode (with type bits), uid.
fn files(rootfs: &Path) -> Vec<(String, u32, u32)> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, u32, u32)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            out.push((p.strip_prefix(base).unwrap().display().to_string(), m.mode(), m.uid()));
            if m.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(rootfs, rootfs, &mut out);
    out.sort();
    out
}

#[test]
fn the_image_is_scratch_plus_the_static_binary_and_its_files() {
    let image = image();
    let dirs = 0o040000;
    let file = 0o100000;
    let want: Vec<(&str, u32)> = vec![
        ("etc", dirs | 0o755),
        ("etc/group", file | 0o644),
        ("etc/nsswitch.conf", file | 0o644),
        ("etc/passwd", file | 0o644),
        ("etc/ssl", dirs | 0o755),
        ("etc/ssl/certs", dirs | 0o755),
        ("etc/ssl/certs/ca-certificates.crt", file | 0o644),
        ("tmp", dirs | 0o1777),
        ("usr", dirs | 0o755),
        ("usr/local", dirs | 0o755),
        ("usr/local/bin", dirs | 0o755),
        ("usr/local/bin/k8s-upgrade-chain", file | 0o755),
        ("usr/share", dirs | 0o755),
        ("usr/share/k8s-upgrade-chain", dirs | 0o755),
        ("usr/share/k8s-upgrade-chain/scripts", dirs | 0o755),
        ("usr/share/k8s-upgrade-chain/scripts/update_k8s.sh", file | 0o644),
        ("usr/share/k8s-upgrade-chain/templates", dirs | 0o755),
        ("usr/share/k8s-upgrade-chain/templates/job.yaml.j2", file | 0o644),
    ];
    let have = files(&image.rootfs);
    let octal = |v: Vec<(&str, u32)>| -> Vec<(String, String)> {
        v.into_iter().map(|(p, m)| (p.to_string(), format!("{m:o}"))).collect()
    };
    let have_modes: Vec<(&str, u32)> = have.iter().map(|(p, m, _)| (p.as_str(), *m)).collect();
    assert_eq!(octal(have_modes), octal(want), "the image's files and modes");
    if is_root() {
        assert!(have.iter().all(|(_, _, uid)| *uid == 0), "every file is owned by root: {have:?}");
    }
    let read = |p: &str| std::fs::read_to_string(image.rootfs.join(p)).unwrap();
    assert_eq!(read("etc/passwd"), "nonroot:x:65532:65532:nonroot:/tmp:/sbin/nologin\n");
    assert_eq!(read("etc/group"), "nonroot:x:65532:\n");
    assert_eq!(read("etc/nsswitch.conf"), "hosts: files dns\n");
    assert_eq!(read("usr/share/k8s-upgrade-chain/templates/job.yaml.j2"), chain_core::job::BUILTIN_TEMPLATE);
    assert_eq!(
        read("usr/share/k8s-upgrade-chain/scripts/update_k8s.sh"),
        std::fs::read_to_string(root().join("scripts/update_k8s.sh")).unwrap()
    );
    let certs = read("etc/ssl/certs/ca-certificates.crt");
    assert!(certs.matches("-----BEGIN CERTIFICATE-----").count() > 50, "a CA bundle");

    // A static executable: no program interpreter (PT_INTERP, ELF64 program headers).
    let elf = std::fs::read(image.rootfs.join("usr/local/bin/k8s-upgrade-chain")).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    let types: Vec<u32> = (0..phnum)
        .map(|i| u32::from_le_bytes(elf[phoff + i * phentsize..][..4].try_into().unwrap()))
        .collect();
    assert!(!types.contains(&3), "the binary has a PT_INTERP: it is not static ({types:?})");

    assert_eq!(image.layers, 1);
    assert!(
        image.unpacked < MAX_UNPACKED_BYTES,
        "the image grew to {} bytes unpacked ({} compressed): over the {MAX_UNPACKED_BYTES} bytes goal",
        image.unpacked,
        image.compressed
    );
}

/// The final stage of the Dockerfile: `(instruction, arguments)` after `FROM scratch`.
fn dockerfile_final_stage() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let stage = text.rsplit_once("\nFROM scratch\n").expect("a final FROM scratch stage").1;
    stage
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (i, a) = l.split_once(' ').unwrap_or((l, ""));
            (i.to_string(), a.trim().to_string())
        })
        .collect()
}

#[test]
fn the_oci_config_is_the_dockerfiles() {
    let image = image();
    let c = &image.config;
    assert_eq!(c["os"], "linux");
    let cfg = &c["config"];
    let stage = dockerfile_final_stage();
    let arg = |i: &str| stage.iter().find(|(k, _)| k == i).map(|(_, a)| a.clone()).unwrap_or_default();
    assert_eq!(
        arg("COPY"),
        "--from=builder /rootfs/ /",
        "the Dockerfile copies the script's root filesystem"
    );
    assert_eq!(cfg["User"], arg("USER"));
    assert_eq!(cfg["WorkingDir"], arg("WORKDIR"));
    let entrypoint: Value = serde_json::from_str(&arg("ENTRYPOINT")).unwrap();
    assert_eq!(cfg["Entrypoint"], entrypoint);
    assert_eq!(cfg["Env"], serde_json::json!([arg("ENV")]));
    assert_eq!(cfg["Cmd"], Value::Null);
    let instructions: Vec<&str> = stage.iter().map(|(i, _)| i.as_str()).collect();
    assert_eq!(
        instructions,
        ["COPY", "ENV", "WORKDIR", "USER", "ENTRYPOINT"],
        "nothing else in the final stage"
    );
    assert_eq!(cfg["User"], "65532:65532");
    assert_eq!(cfg["Entrypoint"], serde_json::json!([BIN]));
    assert!(image.layout.join("oci-layout").exists());
}

const RENDER: &[&str] = &[
    "render",
    "--phase",
    "worker",
    "--node",
    "k8s-node2",
    "--version",
    "1.34.2",
    "--kind",
    "patch",
    "--run-on",
    "k8s-master",
    "--toleration",
    "node-role.kubernetes.io/control-plane:NoSchedule",
    "--image",
    "registry.example/k8s-upgrade-chain:0.1.0",
];

#[test]
fn version_render_and_manifests_run_from_an_empty_root() {
    let rootfs = &image().rootfs;
    let out = run_in(rootfs, &["version"], &[]);
    assert_eq!(stdout(&out), format!("k8s-upgrade-chain {}\n", env!("CARGO_PKG_VERSION")));

    let text = stdout(&run_in(rootfs, RENDER, &[]));
    let job: Job = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(job.metadata.name.as_deref(), Some("k8s-upgrade-worker-1-34-2-k8s-node2"));
    let pod = job.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.containers[0].image.as_deref(), Some("registry.example/k8s-upgrade-chain:0.1.0"));

    let text =
        stdout(&run_in(rootfs, &["manifests", "--image", "registry.example/k8s-upgrade-chain:0.1.0"], &[]));
    let docs: Vec<Value> = text
        .split("\n---\n")
        .filter_map(|d| serde_saphyr::from_str::<Value>(d).ok())
        .filter(Value::is_object)
        .collect();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    for k in ["Namespace", "ServiceAccount", "ClusterRole", "ConfigMap", "CronJob"] {
        assert!(kinds.contains(&k), "no {k} in {kinds:?}");
    }
    let alert_rules = stdout(&run_in(rootfs, &["manifests", "--alert-rules"], &[]));
    assert_eq!(alert_rules, chain_core::manifests::ALERT_RULES);

    // Bad input is still exit 2 in the image (the error path works without a libc on disk).
    let out = run_in(rootfs, &["render", "--phase", "worker", "--version", "1.34.2"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_template_override_in_the_config_mount_is_used_in_the_image() {
    let pod = Pod::new();
    // What the config ConfigMap mount gives a Job: config.yaml and the override beside it.
    pod.mount("/etc/k8s-upgrade-chain/config.yaml", "job:\n  template: site-job.yaml.j2\n");
    let marked = chain_core::job::BUILTIN_TEMPLATE.replacen(
        "  annotations:\n",
        "  annotations:\n    site.example/template: override\n",
        1,
    );
    pod.mount("/etc/k8s-upgrade-chain/site-job.yaml.j2", &marked);
    let text = stdout(&pod.run(RENDER, &[("CONFIG", "/etc/k8s-upgrade-chain/config.yaml")]));
    let job: Job = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(job.metadata.annotations.unwrap()["site.example/template"], "override");
}

/// A `dnsmasq` (Debian `dnsmasq-base`) answering for a few names on a loopback address of its
/// own, port 53 (resolv.conf cannot name a port). Everything else under `.test` is NXDOMAIN,
/// as a cluster DNS answers for names it does not know. Killed on drop.
struct Dns {
    child: std::process::Child,
    addr: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Dns {
    fn start(names: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("dnsmasq.log");
        let mut last = String::new();
        // A loopback address unlikely to be in use by another test run on the machine.
        let seed = std::process::id() as usize;
        for attempt in 0..8 {
            let n = seed.wrapping_add(attempt * 7919);
            let addr = format!("127.53.{}.{}", n / 250 % 250 + 1, n % 250 + 2);
            let mut cmd = Command::new("/usr/sbin/dnsmasq");
            cmd.args(["--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts"])
                .args(["--bind-interfaces", "--port=53", "--pid-file=", "--log-queries", "--log-facility=-"])
                .arg(format!("--listen-address={addr}"))
                .arg("--address=/test/");
            for name in names {
                cmd.arg(format!("--address=/{name}/127.0.0.1"));
            }
            let out = std::fs::File::create(&log).unwrap();
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .expect("/usr/sbin/dnsmasq (Debian package dnsmasq-base)");
            // Ready once our dnsmasq says it started (it binds first; a port another process
            // holds makes it exit instead), or gone. A failing bind of our own would not tell
            // our dnsmasq from another one on that address.
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!(
                        "dnsmasq on {addr} exited ({status}): {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                    break;
                }
                if std::fs::read_to_string(&log).unwrap_or_default().contains("started, version") {
                    return Self { child, addr, log, _dir: dir };
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = format!("dnsmasq on {addr} did not bind within 30 s");
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("dnsmasq did not start: {last}");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_pushgateway_and_slack_resolve_by_name_inside_the_image() {
    use sim::apiserver::{TestApiServer, fixtures as tf};
    use support::prom::{Prometheus, Pushgateway, Reply, StubHttp};
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Build first (minutes, blocking) so the servers below do not idle meanwhile.
    let pod = tokio::task::spawn_blocking(Pod::new).await.unwrap();

    // A cluster whose detector found 1.34.2 and whose gate blocked it: `report` reads the
    // gauges from the Pushgateway, re-runs the gate against Prometheus and posts to Slack.
    let srv = TestApiServer::builder().start().await;
    srv.insert(tf::namespace("k8s-upgrade"));
    for (name, cp) in [("k8s-master", true), ("k8s-node1", false)] {
        let node = tf::node(name).ready().kubelet("v1.34.1").internal_ip("10.0.0.9");
        srv.insert(if cp { node.control_plane() } else { node }.build());
    }
    let pgw = Pushgateway::start().await;
    let now = jiff::Timestamp::now().as_second();
    pgw.push_raw(
        "k8s-version-check",
        &format!(
            "k8s_upgrade_available{{kind=\"patch\",running=\"1.34.1\",target=\"1.34.2\"}} 1\n\
             k8s_version_check_last_run_timestamp {}\n",
            now - 600
        ),
    )
    .await;
    pgw.push_raw("k8s-version-upgrade", "k8s_upgrade_blocked 1\n").await;
    pgw.push_raw(
        "apiserver",
        "apiserver_requested_deprecated_apis{group=\"flowcontrol.apiserver.k8s.io\",version=\"v1beta3\",resource=\"flowschemas\",removed_release=\"1.32\"} 1\n",
    )
    .await;
    let prom = Prometheus::start(&[], Some(&pgw)).await;
    prom.wait_for_series("apiserver_requested_deprecated_apis").await;
    let slack = StubHttp::start(Reply::Status(200, vec![], "ok".into())).await;
    let port = |url: &str| url.rsplit(':').next().unwrap().to_string();

    // What the kubelet puts into the pod: /etc/hosts (hostAliases: the Pushgateway), a
    // resolv.conf with the cluster's search path and ndots:5 (Prometheus by a short Service
    // name, Slack by a full name), the config and credentials mounts.
    let dns = Dns::start(&["prometheus.monitoring.svc.cluster.test", "hooks.slack.test"]);
    pod.mount("/etc/hosts", "127.0.0.1 localhost\n127.0.0.1 pushgateway.hosts.test\n");
    pod.mount(
        "/etc/resolv.conf",
        &format!(
            "nameserver {}\nsearch k8s-upgrade.svc.cluster.test svc.cluster.test cluster.test\noptions ndots:5\n",
            dns.addr
        ),
    );
    pod.mount(
        "/etc/k8s-upgrade-chain/config.yaml",
        &format!(
            "pushgateway:\n  url: http://pushgateway.hosts.test:{}\nalerts:\n  prometheus_url: http://prometheus.monitoring:{}\n",
            port(&pgw.url),
            port(&prom.url)
        ),
    );
    pod.mount(
        "/secrets/k8s-upgrade/slack_webhook",
        &format!("http://hooks.slack.test:{}/services/T000/B000/XXXX\n", port(&slack.url)),
    );
    pod.mount("/etc/kubeconfig", &srv.kubeconfig_yaml());

    let rootfs = pod.rootfs.clone();
    let out = tokio::task::spawn_blocking(move || {
        run_in(
            &rootfs,
            &["report"],
            &[
                ("CONFIG", "/etc/k8s-upgrade-chain/config.yaml"),
                ("KUBECONFIG", "/etc/kubeconfig"),
                ("HOME", "/tmp"),
                ("RUST_LOG", "debug"),
            ],
        )
    })
    .await
    .unwrap();
    let text = stdout(&out);
    let log = String::from_utf8_lossy(&out.stderr);
    // The Pushgateway, through /etc/hosts: the gauges are there.
    assert!(text.starts_with("Weekly Kubernetes upgrade report: 🔴 BLOCKED"), "{text}\n{log}");
    // Prometheus, through DNS and the search path: the re-run gate read the deprecated API.
    assert!(!text.contains("could not query Prometheus"), "{text}\n{log}");
    assert!(
        text.contains("deprecated API flowcontrol.apiserver.k8s.io/v1beta3 flowschemas is still requested"),
        "{text}\n{log}"
    );
    // Slack, through DNS: the report was posted.
    let posts = slack.seen();
    assert_eq!(posts.len(), 1, "{posts:?}\n{log}");
    assert_eq!(posts[0].path, "/services/T000/B000/XXXX");
    let body: Value = serde_json::from_str(&posts[0].body).unwrap();
    assert!(body["text"].as_str().unwrap().contains("BLOCKED"), "{body}");
    // And the names really went through the DNS server (and the hosts name did not).
    let queries = dns.log();
    for name in ["prometheus.monitoring.svc.cluster.test", "hooks.slack.test"] {
        assert!(queries.contains(&format!("query[A] {name} from")), "no query for {name}:\n{queries}");
    }
    assert!(!queries.contains("query[A] pushgateway.hosts.test from"), "{queries}");
}
