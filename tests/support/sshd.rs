//! A real OpenSSH server per simulated node, for tests.
//!
//! Each [`SshdNode`] runs `/usr/sbin/sshd -D -e` from a temp dir, on its own loopback address
//! and a free port, with a generated ed25519 host key and an authorized client key. Every
//! session runs through a ForceCommand wrapper that puts the command shims of
//! `tests/fixtures/shims` first on PATH and points them at the node's state dir, so remote
//! `sudo bash -s`, `kubeadm`, `apt-get`, ... are emulated and logged to `state/calls.log`.
//! The file tree the node script touches is rooted at `root/` (`UPDATE_K8S_ROOT`).
//! Every wait has a deadline; drop kills sshd and every session it spawned.
//!
//! Every piece of sshd's state is in the temp dir (its config, host keys, authorized keys and
//! log; no PID file: `PidFile none`), removed on drop. Readiness is read from sshd's *own* log
//! ("Server listening on <ip> port <port>."), not from a TCP connect that another test's sshd
//! could answer; a port taken in between (another suite on the machine) is reported by sshd
//! ("Bind to port ... failed") and the harness picks another.
#![allow(dead_code)]

use std::{
    fs,
    net::{IpAddr, SocketAddr, TcpListener},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use chain_core::{
    node_exec::NodeTarget,
    settings::{HostKeyPolicy, SshConfig},
};

/// How long to wait for sshd to accept connections.
const START_DEADLINE: Duration = Duration::from_secs(15);

/// A running sshd standing in for one node.
pub struct SshdNode {
    /// Node name used in targets and errors.
    pub name: String,
    /// Loopback address sshd listens on.
    pub ip: IpAddr,
    /// Port sshd listens on.
    pub port: u16,
    /// Temp dir holding config, keys, `state/` and `root/`.
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    /// Host key files in `dir`, the first being `host_key`.
    host_keys: Vec<String>,
    /// `ssh-keygen -t` kind of `host_key`.
    host_key_kind: String,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn keygen(path: &Path, kind: &str) {
    let _ = fs::remove_file(path);
    let _ = fs::remove_file(path.with_extension("pub"));
    run(Command::new("ssh-keygen").args(["-q", "-t", kind, "-N", "", "-C", "test", "-f"]).arg(path));
}

fn shims_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/shims")
}

/// A free port on `ip` (bound then released; sshd binds it right after).
fn free_port(ip: IpAddr) -> u16 {
    TcpListener::bind(SocketAddr::new(ip, 0))
        .unwrap_or_else(|e| panic!("cannot bind {ip}: {e}"))
        .local_addr()
        .unwrap()
        .port()
}

/// The current user name (sshd only lets it in when not root).
fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

impl SshdNode {
    /// Starts a node named `name` on loopback address `ip` (e.g. "127.0.0.11").
    pub fn start(name: &str, ip: &str) -> Self {
        Self::start_with_host_keys(name, ip, &["ed25519"])
    }

    /// Starts a node whose sshd has host keys of these `ssh-keygen -t` kinds (e.g.
    /// `["ed25519", "rsa"]`): the first in `host_key`, the others in `host_key_<kind>`.
    pub fn start_with_host_keys(name: &str, ip: &str, kinds: &[&str]) -> Self {
        Self::build(name, ip, kinds, None).unwrap_or_else(|e| panic!("sshd for {name} did not start: {e}"))
    }

    /// Starts a node listening on a given port (several nodes on distinct loopback addresses
    /// can share one, as real nodes share port 22). Err when sshd cannot take the port (held
    /// by another process) or does not start: the caller picks another port.
    pub fn try_start_on_port(name: &str, ip: &str, port: u16) -> Result<Self, String> {
        Self::build(name, ip, &["ed25519"], Some(port))
    }

    fn build(name: &str, ip: &str, kinds: &[&str], port: Option<u16>) -> Result<Self, String> {
        let ip: IpAddr = ip.parse().unwrap();
        let dir = tempfile::Builder::new().prefix(&format!("sshd-{name}-")).tempdir().unwrap();
        let d = dir.path();
        for sub in ["state", "root", "root/var/lib/kubelet"] {
            fs::create_dir_all(d.join(sub)).unwrap();
        }
        let mut host_keys = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            let file = if i == 0 { "host_key".to_string() } else { format!("host_key_{kind}") };
            keygen(&d.join(&file), kind);
            host_keys.push(file);
        }
        keygen(&d.join("client_key"), "ed25519");
        fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        // Privilege separation dir sshd insists on when run as root.
        let _ = fs::create_dir_all("/run/sshd");

        // `--norc`: bash run by sshd sources root's ~/.bashrc even when not interactive, and
        // that file belongs to the machine, not the test (here it ran `pyenv rehash`, whose
        // `sleep 0.1` the sleep shim then recorded among the node's commands).
        let wrapper = d.join("wrapper.sh");
        fs::write(
            &wrapper,
            format!(
                "#!/bin/bash\n\
                 export PATH={shims}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
                 export SHIM_STATE={state}\n\
                 export UPDATE_K8S_ROOT={root}\n\
                 export UPDATE_K8S_RETRY_DELAY=0\n\
                 if [ -f {state}/env ]; then . {state}/env; fi\n\
                 exec /bin/bash --norc -c \"$SSH_ORIGINAL_COMMAND\"\n",
                shims = shims_dir().display(),
                state = d.join("state").display(),
                root = d.join("root").display(),
            ),
        )
        .unwrap();
        fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();

        let host_key_kind = kinds[0].to_string();
        let mut node = Self { name: name.into(), ip, port: 0, dir, child: None, host_keys, host_key_kind };
        match port {
            Some(port) => node.launch(port).map(|()| node),
            None => {
                // A free port may be taken before sshd binds it: pick another.
                let mut last = String::new();
                for _ in 0..5 {
                    match node.launch(free_port(ip)) {
                        Ok(()) => return Ok(node),
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
        }
    }

    /// Starts sshd on `port` and waits until its own log says it listens there. Err (sshd
    /// stopped) when the port is held by another process or sshd exits early.
    fn launch(&mut self, port: u16) -> Result<(), String> {
        let d = self.dir.path().to_path_buf();
        self.port = port;
        let listen = match self.ip {
            IpAddr::V4(ip) => format!("{ip}:{port}"),
            IpAddr::V6(ip) => format!("[{ip}]:{port}"),
        };
        let config = format!(
            "ListenAddress {listen}\n\
             {host_keys}\
             PidFile none\n\
             AuthorizedKeysFile {d}/authorized_keys\n\
             AllowUsers {user}\n\
             StrictModes no\n\
             UsePAM no\n\
             PermitRootLogin prohibit-password\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\n\
             ForceCommand {d}/wrapper.sh\n\
             LogLevel VERBOSE\n",
            d = d.display(),
            user = whoami(),
            host_keys =
                self.host_keys.iter().map(|f| format!("HostKey {}/{f}\n", d.display())).collect::<String>(),
        );
        fs::write(d.join("sshd_config"), config).unwrap();
        let log = fs::File::create(d.join("sshd.log")).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start /usr/sbin/sshd (Debian package openssh-server)");
        self.child = Some(child);
        self.wait_listening()
    }

    /// Waits for sshd's own "Server listening on <ip> port <port>." (a TCP connect could be
    /// answered by another process holding the port).
    fn wait_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_DEADLINE;
        let want = format!("Server listening on {} port {}.", self.ip, self.port);
        loop {
            let log = self.sshd_log();
            if log.contains(&want) {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(format!("sshd on {}:{} exited ({status}): {log}", self.ip, self.port));
            }
            if Instant::now() > deadline {
                self.kill_all();
                return Err(format!(
                    "sshd on {}:{} not listening after {START_DEADLINE:?}: {log}",
                    self.ip, self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// sshd's own log (stderr), for failure messages.
    pub fn sshd_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// The node as a target.
    pub fn target(&self) -> NodeTarget {
        NodeTarget::new(self.name.clone(), self.ip)
    }

    /// The client private key.
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    /// The host public key line (`ssh-ed25519 AAAA... test`).
    pub fn host_key_pub(&self) -> String {
        fs::read_to_string(self.dir.path().join("host_key.pub")).unwrap()
    }

    /// The host key fingerprint as `ssh-keygen -l` prints it (`SHA256:...`).
    pub fn host_key_fingerprint(&self) -> String {
        let out =
            Command::new("ssh-keygen").arg("-lf").arg(self.dir.path().join("host_key.pub")).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        text.split_whitespace().nth(1).unwrap().to_string()
    }

    /// The known_hosts line OpenSSH writes for this node (`[ip]:port` since port != 22).
    pub fn known_hosts_line(&self) -> String {
        self.known_hosts_line_of("host_key")
    }

    /// The known_hosts line for one host key file (`host_key`, `host_key_rsa`, ...).
    pub fn known_hosts_line_of(&self, file: &str) -> String {
        let mut parts = fs::read_to_string(self.dir.path().join(format!("{file}.pub"))).unwrap();
        parts.truncate(parts.trim_end().len());
        let mut it = parts.split_whitespace();
        let (t, k) = (it.next().unwrap(), it.next().unwrap());
        format!("[{}]:{} {t} {k}\n", self.ip, self.port)
    }

    /// Writes a known_hosts file listing this node and returns its path.
    pub fn write_known_hosts(&self) -> PathBuf {
        let path = self.dir.path().join("known_hosts");
        fs::write(&path, self.known_hosts_line()).unwrap();
        path
    }

    /// Client settings for this node: strict host keys against [`Self::write_known_hosts`].
    pub fn ssh_config(&self) -> SshConfig {
        SshConfig {
            user: whoami(),
            port: self.port,
            key_file: self.client_key(),
            known_hosts_file: self.write_known_hosts(),
            host_key_policy: HostKeyPolicy::Strict,
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(120),
            keepalive_interval: Duration::from_secs(5),
        }
    }

    /// The node's state dir (shim state and `calls.log`).
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The node's fake filesystem root (`UPDATE_K8S_ROOT`).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Writes a state file (e.g. `installed/kubeadm` = `1.33.5-1.1`).
    pub fn set_state(&self, name: &str, value: &str) {
        let p = self.state().join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, value).unwrap();
    }

    /// Reads a state file.
    pub fn state_file(&self, name: &str) -> Option<String> {
        fs::read_to_string(self.state().join(name)).ok()
    }

    /// Marks packages as installed at `version` (Debian version) and held, as on a real node.
    pub fn install(&self, packages: &[&str], version: &str) {
        for p in packages {
            self.set_state(&format!("installed/{p}"), version);
            self.set_state(&format!("held/{p}"), "");
        }
    }

    /// The recorded shim calls, one `name args` per entry.
    pub fn calls(&self) -> Vec<String> {
        self.state_file("calls.log").unwrap_or_default().lines().map(String::from).collect()
    }

    /// Forgets the recorded calls.
    pub fn clear_calls(&self) {
        let _ = fs::remove_file(self.state().join("calls.log"));
    }

    /// Kills sshd and every session it spawned (a node going away mid-command).
    pub fn kill_all(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_tree(child.id());
            let _ = child.wait();
        }
    }

    /// Replaces the host key (a reinstalled node) and restarts sshd on the same address
    /// and port.
    pub fn restart_with_new_host_key(&mut self) {
        self.kill_all();
        keygen(&self.dir.path().join("host_key"), &self.host_key_kind.clone());
        // The old listener may hold the port for a moment after the kill: retry until it binds.
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            match self.launch(self.port) {
                Ok(()) => return,
                Err(e) => assert!(Instant::now() < deadline, "sshd did not restart: {e}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// SIGKILLs `pid` and all its descendants (sshd's per-connection children call setsid, so a
/// process-group kill would miss them).
fn kill_tree(pid: u32) {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        all.extend(children_of(all[i]));
        i += 1;
    }
    for p in all {
        let _ = Command::new("kill").arg("-KILL").arg(p.to_string()).stderr(Stdio::null()).status();
    }
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(child) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so parse after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

impl Drop for SshdNode {
    fn drop(&mut self) {
        self.kill_all();
    }
}
