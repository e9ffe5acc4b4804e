//! [`NodeExec`] over SSH, on the `ssh2` crate (libssh2).
//!
//! libssh2 is blocking FFI, so each request runs start to finish inside one
//! `tokio::task::spawn_blocking` closure. Once the command starts the session is switched to
//! non-blocking mode and one loop services stdin, stdout and stderr together: reading stdout
//! to EOF before stderr deadlocks as soon as the remote fills the stderr window
//! (rust-ecosystem.md §3). Every step has a deadline; a dropped connection surfaces as
//! [`ExecError::Dropped`], never as a hang or as a made-up exit status.

use std::{
    collections::HashMap,
    fmt,
    io::{self, Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use ssh2::{Channel, CheckResult, HashType, HostKeyType, KnownHostFileKind, MethodType, Session};

use chain_core::{
    node_exec::{CAPTURE_LIMIT, ExecError, ExecOutput, ExecRequest, ExitStatus, NodeExec, NodeTarget},
    settings::{HostKeyPolicy, SshConfig},
};

/// Why [`SshExec::new`] failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot read SSH private key file {path}: {source}")]
pub struct KeyFileError {
    /// The configured key file.
    pub path: PathBuf,
    /// The I/O error (never the file's contents).
    pub source: io::Error,
}

/// The private key text. Debug is redacted so it cannot end up in a log by accident.
struct PrivateKey(String);

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// Host keys learned under [`HostKeyPolicy::AcceptNew`]: (address, port) -> (algorithm, key).
type Learned = Arc<Mutex<HashMap<(IpAddr, u16), (&'static str, Vec<u8>)>>>;

/// [`NodeExec`] over SSH.
#[derive(Debug, Clone)]
pub struct SshExec {
    cfg: Arc<SshConfig>,
    key: Arc<PrivateKey>,
    learned: Learned,
}

impl SshExec {
    /// Reads the private key into memory. Fails when the key file cannot be read.
    pub fn new(cfg: SshConfig) -> Result<Self, KeyFileError> {
        let key = std::fs::read_to_string(&cfg.key_file)
            .map_err(|source| KeyFileError { path: cfg.key_file.clone(), source })?;
        Ok(Self { cfg: Arc::new(cfg), key: Arc::new(PrivateKey(key)), learned: Arc::default() })
    }

    /// The settings in use.
    pub fn config(&self) -> &SshConfig {
        &self.cfg
    }
}

/// Sets the flag when dropped: tells the blocking worker its caller has gone away.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl NodeExec for SshExec {
    fn run<'a>(
        &'a self,
        target: &'a NodeTarget,
        req: ExecRequest,
    ) -> BoxFuture<'a, Result<ExecOutput, ExecError>> {
        Box::pin(async move {
            let cancel = Arc::new(AtomicBool::new(false));
            let _guard = CancelOnDrop(cancel.clone());
            let this = self.clone();
            let t = target.clone();
            let what = req.describe();
            // Start the clock now: time spent queued for a blocking thread counts.
            let deadline = Instant::now() + req.timeout;
            let joined = tokio::task::spawn_blocking(move || {
                Run {
                    cfg: &this.cfg,
                    key: &this.key,
                    learned: &this.learned,
                    target: &t,
                    what: req.describe(),
                    cancel: &cancel,
                    deadline,
                    timeout: req.timeout,
                }
                .run(&req)
            })
            .await;
            joined.unwrap_or_else(|e| {
                Err(ExecError::Protocol {
                    node: target.node.clone(),
                    addr: target.addr,
                    stage: "worker",
                    reason: format!("{what}: SSH worker thread failed: {e}"),
                })
            })
        })
    }
}

/// One request's context inside the blocking worker.
struct Run<'a> {
    cfg: &'a SshConfig,
    key: &'a PrivateKey,
    learned: &'a Learned,
    target: &'a NodeTarget,
    what: String,
    cancel: &'a AtomicBool,
    deadline: Instant,
    timeout: Duration,
}

impl Run<'_> {
    fn node(&self) -> String {
        self.target.node.clone()
    }

    fn timed_out(&self) -> ExecError {
        ExecError::TimedOut {
            node: self.node(),
            addr: self.target.addr,
            what: self.what.clone(),
            after: self.timeout,
        }
    }

    fn protocol(&self, stage: &'static str, e: impl fmt::Display) -> ExecError {
        ExecError::Protocol { node: self.node(), addr: self.target.addr, stage, reason: e.to_string() }
    }

    fn dropped(&self, e: impl fmt::Display) -> ExecError {
        ExecError::Dropped {
            node: self.node(),
            addr: self.target.addr,
            what: self.what.clone(),
            reason: e.to_string(),
        }
    }

    fn setup(&self, reason: String) -> ExecError {
        ExecError::Setup { node: self.node(), addr: self.target.addr, reason }
    }

    fn remaining(&self) -> Option<Duration> {
        self.deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
    }

    /// The blocking-mode timeout for one connect-phase step: the connect timeout, capped by
    /// what is left of the overall deadline.
    fn step_timeout(&self) -> Result<Duration, ExecError> {
        let left = self.remaining().ok_or_else(|| self.timed_out())?;
        Ok(left.min(self.cfg.connect_timeout))
    }

    /// Maps a libssh2 error in a blocking step: its timeout becomes ours.
    fn step_error(&self, stage: &'static str, e: ssh2::Error) -> ExecError {
        if is_timeout(&e) {
            // The step hit the connect timeout or the deadline.
            if self.remaining().is_none() {
                return self.timed_out();
            }
            return self.protocol(stage, format!("no answer within {:?}", self.cfg.connect_timeout));
        }
        self.protocol(stage, e.message())
    }

    fn run(&self, req: &ExecRequest) -> Result<ExecOutput, ExecError> {
        let sess = self.connect()?;
        self.exec(&sess, req)
    }

    fn connect(&self) -> Result<Session, ExecError> {
        let (addr, port) = (self.target.addr, self.cfg.port);
        let wait = self.step_timeout()?;
        let tcp = TcpStream::connect_timeout(&SocketAddr::new(addr, port), wait).map_err(|e| {
            if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock {
                ExecError::ConnectTimeout { node: self.node(), addr, port, after: wait }
            } else {
                ExecError::Connect { node: self.node(), addr, port, reason: e.to_string() }
            }
        })?;
        let _ = tcp.set_nodelay(true);
        self.detect_dead_peer(&tcp);

        let known = self.known_hosts_text()?;
        let mut sess = Session::new().map_err(|e| self.protocol("session setup", e))?;
        sess.set_tcp_stream(tcp);
        sess.set_timeout(millis(self.step_timeout()?));
        self.pin_host_key_algorithms(&sess, known.as_deref());
        sess.handshake().map_err(|e| self.step_error("handshake", e))?;
        self.check_host_key(&sess, known.as_deref())?;

        sess.set_timeout(millis(self.step_timeout()?));
        sess.userauth_pubkey_memory(&self.cfg.user, None, &self.key.0, None).map_err(|e| {
            if is_timeout(&e) {
                return self.step_error("authentication", e);
            }
            ExecError::Auth {
                node: self.node(),
                addr,
                user: self.cfg.user.clone(),
                reason: e.message().to_string(),
            }
        })?;
        if !sess.authenticated() {
            return Err(ExecError::Auth {
                node: self.node(),
                addr,
                user: self.cfg.user.clone(),
                reason: "server did not accept the key".into(),
            });
        }
        let keepalive = self.cfg.keepalive_interval.as_secs().clamp(1, u64::from(u32::MAX));
        sess.set_keepalive(true, keepalive as u32);
        Ok(sess)
    }

    /// Makes the kernel fail the socket when the peer stops acknowledging: our SSH
    /// keepalives are data, so with TCP_USER_TIMEOUT a node that vanishes (power loss,
    /// partition) errors the session after 4 keepalive intervals instead of hanging until
    /// the request deadline. Best effort: failures to set the options are ignored.
    fn detect_dead_peer(&self, tcp: &TcpStream) {
        let sock = socket2::SockRef::from(tcp);
        let every = self.cfg.keepalive_interval.max(Duration::from_secs(1));
        let _ = sock.set_tcp_keepalive(
            &socket2::TcpKeepalive::new().with_time(every).with_interval(every).with_retries(4),
        );
        #[cfg(target_os = "linux")]
        let _ = sock.set_tcp_user_timeout(Some(every * 4));
    }

    /// known_hosts contents; `None` when the file is absent and the policy allows it.
    fn known_hosts_text(&self) -> Result<Option<String>, ExecError> {
        let path = &self.cfg.known_hosts_file;
        match std::fs::read_to_string(path) {
            Ok(s) => Ok(Some(s)),
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    && self.cfg.host_key_policy == HostKeyPolicy::AcceptNew =>
            {
                Ok(None)
            }
            Err(e) => Err(self.setup(format!("cannot read known_hosts file {}: {e}", path.display()))),
        }
    }

    /// Asks the server for a host key of a type we have on record for it. libssh2 compares
    /// the offered key with every listed key for the host regardless of type, so a server
    /// offering ed25519 to a known_hosts listing only its RSA key reads as a MISMATCH.
    fn pin_host_key_algorithms(&self, sess: &Session, known: Option<&str>) {
        let host = self.target.addr.to_string();
        let mut wanted = known.map(|k| host_key_algorithms(k, &host, self.cfg.port)).unwrap_or_default();
        if let Some((algo, _)) = self.learned.lock().unwrap().get(&(self.target.addr, self.cfg.port)) {
            wanted.extend(algorithms_for_key_type(algo));
        }
        let supported = sess.supported_algs(MethodType::HostKey).unwrap_or_default();
        let prefs: Vec<&str> = wanted.into_iter().filter(|a| supported.contains(a)).collect::<Vec<_>>();
        if !prefs.is_empty() {
            // Best effort: if libssh2 refuses the list it keeps its default order.
            let _ = sess.method_pref(MethodType::HostKey, &prefs.join(","));
        }
    }

    fn check_host_key(&self, sess: &Session, known: Option<&str>) -> Result<(), ExecError> {
        let (addr, port) = (self.target.addr, self.cfg.port);
        let (key, kind) =
            sess.host_key().ok_or_else(|| self.protocol("host key check", "server sent no host key"))?;
        let key_type = host_key_type_name(kind);
        let fingerprint =
            sess.host_key_hash(HashType::Sha256).map(fingerprint_sha256).unwrap_or_else(|| "SHA256:?".into());
        let mismatch = || ExecError::HostKeyMismatch {
            node: self.node(),
            addr,
            key_type: key_type.into(),
            fingerprint: fingerprint.clone(),
        };

        let mut result = CheckResult::NotFound;
        if let Some(text) = known {
            let mut kh = sess.known_hosts().map_err(|e| self.protocol("host key check", e))?;
            // libssh2 only reads files; parse from the text we already hold.
            for line in text.lines() {
                let l = line.trim();
                if l.is_empty() || l.starts_with('#') || l.starts_with('@') {
                    continue;
                }
                // Lines libssh2 cannot parse (unsupported key types) are skipped, like ssh.
                let _ = kh.read_str(l, KnownHostFileKind::OpenSSH);
            }
            result = kh.check_port(&addr.to_string(), port, key);
        }
        match result {
            CheckResult::Match => return Ok(()),
            CheckResult::Mismatch => return Err(mismatch()),
            CheckResult::Failure => {
                return Err(self.protocol("host key check", "libssh2 known_hosts check failed"));
            }
            CheckResult::NotFound => {}
        }
        if self.cfg.host_key_policy == HostKeyPolicy::Strict {
            return Err(ExecError::HostKeyUnknown {
                node: self.node(),
                addr,
                key_type: key_type.into(),
                fingerprint,
            });
        }
        let mut learned = self.learned.lock().unwrap();
        match learned.get(&(addr, port)) {
            Some((_, k)) if k.as_slice() == key => Ok(()),
            Some(_) => Err(mismatch()),
            None => {
                tracing::warn!(
                    node = %self.target.node,
                    %addr,
                    %fingerprint,
                    "trusting unknown host key on first use ({key_type}); host_key_policy is accept-new"
                );
                learned.insert((addr, port), (key_type, key.to_vec()));
                Ok(())
            }
        }
    }

    /// Runs the request on an authenticated session, in four stages: start the command,
    /// pump stdin/stdout/stderr until both output streams end, wait for the exit status, and
    /// close the session.
    fn exec(&self, sess: &Session, req: &ExecRequest) -> Result<ExecOutput, ExecError> {
        let mut ch = self.start(sess, req)?;
        let node = self.target.node.as_str();
        let mut out = Sink::new(node, "stdout", req.capture, req.stream);
        let mut err = Sink::new(node, "stderr", req.capture, req.stream);
        self.pump(sess, &mut ch, req.stdin_bytes(), &mut out, &mut err)?;
        let status = self.wait_exit(&mut ch)?;
        out.finish();
        err.finish();
        tracing::info!(
            node = %self.target.node,
            stdout_bytes = out.total,
            stderr_bytes = err.total,
            "{} finished: {status}",
            self.what
        );
        sess.set_blocking(true);
        sess.set_timeout(1000);
        let _ = sess.disconnect(None, "done", None);
        Ok(ExecOutput {
            status,
            stdout: out.captured(),
            stderr: err.captured(),
            stdout_bytes: out.total,
            stderr_bytes: err.total,
        })
    }

    /// Opens a channel, starts the remote command and switches to non-blocking I/O.
    fn start(&self, sess: &Session, req: &ExecRequest) -> Result<Channel, ExecError> {
        sess.set_timeout(millis(self.step_timeout()?));
        let mut ch = sess.channel_session().map_err(|e| self.step_error("channel open", e))?;
        ch.exec(&req.remote_command()).map_err(|e| self.step_error("exec", e))?;
        sess.set_blocking(false);
        tracing::info!(node = %self.target.node, addr = %self.target.addr, "running {}", self.what);
        Ok(ch)
    }

    /// Services stdin, stdout and stderr together until the remote has sent EOF on both
    /// output streams: reading stdout to EOF before stderr deadlocks as soon as the remote
    /// fills the stderr window. Sends keepalives on the way; honours the deadline and cancel.
    fn pump(
        &self,
        sess: &Session,
        ch: &mut Channel,
        stdin: &[u8],
        out: &mut Sink<'_>,
        err: &mut Sink<'_>,
    ) -> Result<(), ExecError> {
        let mut input = Stdin { bytes: stdin, written: 0, eof_sent: false };
        let mut buf = vec![0u8; 32 * 1024];
        let mut idle = Duration::from_millis(1);
        let mut next_keepalive = Instant::now() + self.cfg.keepalive_interval;
        let (mut out_done, mut err_done) = (false, false);
        loop {
            if self.cancel.load(Ordering::Relaxed) || self.remaining().is_none() {
                return Err(self.timed_out());
            }
            let mut progressed = self.feed_stdin(ch, &mut input)?;
            progressed |= self.read_stream(ch, 0, &mut buf, out, &mut out_done)?;
            progressed |= self.read_stream(ch, 1, &mut buf, err, &mut err_done)?;
            if out_done && err_done {
                return Ok(());
            }
            if Instant::now() >= next_keepalive {
                if let Err(e) = sess.keepalive_send()
                    && !is_eagain(&e)
                {
                    return Err(self.dropped(e.message()));
                }
                next_keepalive = Instant::now() + self.cfg.keepalive_interval;
            }
            if progressed {
                idle = Duration::from_millis(1);
            } else {
                // No readiness API without unsafe code (no poll(2) on the socket): back off
                // briefly instead. Latency stays in milliseconds; CPU stays near idle.
                std::thread::sleep(idle);
                idle = (idle * 2).min(Duration::from_millis(20));
            }
        }
    }

    /// Writes what the channel takes of the rest of stdin, then EOF once. Returns whether
    /// anything moved.
    fn feed_stdin(&self, ch: &mut Channel, input: &mut Stdin<'_>) -> Result<bool, ExecError> {
        if input.written < input.bytes.len() {
            return match ch.write(&input.bytes[input.written..]) {
                Ok(n) => {
                    input.written += n;
                    Ok(n > 0)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
                // The remote closed its stdin early (a script that exits before reading all of
                // it): not our failure, the exit status tells.
                Err(_) if ch.eof() => {
                    input.written = input.bytes.len();
                    Ok(false)
                }
                Err(e) => Err(self.dropped(e)),
            };
        }
        if input.eof_sent {
            return Ok(false);
        }
        match ch.send_eof() {
            Ok(()) => {
                input.eof_sent = true;
                Ok(true)
            }
            Err(e) if is_eagain(&e) => Ok(false),
            Err(_) if ch.eof() => {
                input.eof_sent = true;
                Ok(false)
            }
            Err(e) => Err(self.dropped(e.message())),
        }
    }

    /// Reads everything stream `id` (0 stdout, 1 stderr) has now into `sink`; sets `done` at
    /// its EOF. Returns whether anything was read.
    fn read_stream(
        &self,
        ch: &mut Channel,
        id: i32,
        buf: &mut [u8],
        sink: &mut Sink<'_>,
        done: &mut bool,
    ) -> Result<bool, ExecError> {
        let mut progressed = false;
        while !*done {
            match ch.stream(id).read(buf) {
                Ok(0) => *done = true,
                Ok(n) => {
                    sink.push(&buf[..n]);
                    progressed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(self.dropped(e)),
            }
        }
        Ok(progressed)
    }

    /// After EOF on both streams, waits for the channel close that carries the exit status. A
    /// connection that breaks here is a drop, never status 0.
    fn wait_exit(&self, ch: &mut Channel) -> Result<ExitStatus, ExecError> {
        loop {
            match ch.wait_close() {
                Ok(()) => break,
                Err(e) if is_eagain(&e) => {
                    if self.cancel.load(Ordering::Relaxed) || self.remaining().is_none() {
                        return Err(self.timed_out());
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(self.dropped(e.message())),
            }
        }
        let signal = ch.exit_signal().ok().and_then(|s| s.exit_signal).filter(|s| !s.is_empty());
        Ok(match signal {
            Some(sig) => ExitStatus::Signal(sig),
            None => ExitStatus::Code(ch.exit_status().map_err(|e| self.dropped(e.message()))?),
        })
    }
}

/// What is left to send on the remote command's stdin.
struct Stdin<'a> {
    bytes: &'a [u8],
    written: usize,
    eof_sent: bool,
}

/// libssh2's LIBSSH2_ERROR_EAGAIN and LIBSSH2_ERROR_TIMEOUT (libssh2-sys is not a direct
/// dependency).
const LIBSSH2_ERROR_EAGAIN: i32 = -37;
const LIBSSH2_ERROR_TIMEOUT: i32 = -9;

fn is_eagain(e: &ssh2::Error) -> bool {
    matches!(e.code(), ssh2::ErrorCode::Session(LIBSSH2_ERROR_EAGAIN))
}

fn is_timeout(e: &ssh2::Error) -> bool {
    matches!(e.code(), ssh2::ErrorCode::Session(LIBSSH2_ERROR_TIMEOUT))
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
}

/// Collects one output stream: splits lines for the log, keeps the tail, counts bytes.
struct Sink<'a> {
    node: &'a str,
    stream_name: &'static str,
    capture: bool,
    stream: bool,
    partial: Vec<u8>,
    tail: Vec<u8>,
    total: u64,
}

/// A line longer than this is logged in pieces rather than buffered without bound.
const MAX_LINE: usize = 64 * 1024;

impl<'a> Sink<'a> {
    fn new(node: &'a str, stream_name: &'static str, capture: bool, stream: bool) -> Self {
        Self { node, stream_name, capture, stream, partial: Vec::new(), tail: Vec::new(), total: 0 }
    }

    fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        if self.capture {
            self.tail.extend_from_slice(data);
            // Trim in batches so the copy is amortised.
            if self.tail.len() > 2 * CAPTURE_LIMIT {
                let cut = self.tail.len() - CAPTURE_LIMIT;
                self.tail.drain(..cut);
            }
        }
        if self.stream {
            for chunk in data.split_inclusive(|b| *b == b'\n') {
                self.partial.extend_from_slice(chunk);
                if chunk.ends_with(b"\n") || self.partial.len() >= MAX_LINE {
                    self.emit();
                }
            }
        }
    }

    fn emit(&mut self) {
        let line = String::from_utf8_lossy(&self.partial);
        let line = line.trim_end_matches(['\n', '\r']);
        tracing::info!(node = %self.node, stream = self.stream_name, "[{}] {}", self.node, line);
        self.partial.clear();
    }

    fn finish(&mut self) {
        if self.stream && !self.partial.is_empty() {
            self.emit();
        }
    }

    fn captured(&self) -> String {
        let start = self.tail.len().saturating_sub(CAPTURE_LIMIT);
        String::from_utf8_lossy(&self.tail[start..]).into_owned()
    }
}

/// The SSH name of a host key type, as known_hosts and `ssh-keygen -l` print it.
fn host_key_type_name(kind: HostKeyType) -> &'static str {
    match kind {
        HostKeyType::Rsa => "ssh-rsa",
        HostKeyType::Dss => "ssh-dss",
        HostKeyType::Ecdsa256 => "ecdsa-sha2-nistp256",
        HostKeyType::Ecdsa384 => "ecdsa-sha2-nistp384",
        HostKeyType::Ecdsa521 => "ecdsa-sha2-nistp521",
        HostKeyType::Ed25519 => "ssh-ed25519",
        HostKeyType::Unknown => "unknown",
    }
}

/// Host key algorithms that produce keys of a known_hosts key type, best first.
fn algorithms_for_key_type(key_type: &str) -> Vec<&'static str> {
    match key_type {
        "ssh-ed25519" => vec!["ssh-ed25519"],
        "ecdsa-sha2-nistp256" => vec!["ecdsa-sha2-nistp256"],
        "ecdsa-sha2-nistp384" => vec!["ecdsa-sha2-nistp384"],
        "ecdsa-sha2-nistp521" => vec!["ecdsa-sha2-nistp521"],
        "ssh-rsa" => vec!["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
        _ => vec![],
    }
}

/// The host key algorithms to ask `host:port` for, from the plain-text entries of a
/// known_hosts file (OpenSSH writes `host` for port 22 and `[host]:port` otherwise).
/// Hashed entries cannot be matched here; they still count in libssh2's own check.
pub fn host_key_algorithms(known_hosts: &str, host: &str, port: u16) -> Vec<&'static str> {
    let bracketed = format!("[{host}]:{port}");
    let mut out: Vec<&'static str> = Vec::new();
    for line in known_hosts.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('@') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(hosts), Some(key_type)) = (fields.next(), fields.next()) else {
            continue;
        };
        let matches = hosts.split(',').any(|h| h == bracketed || (port == 22 && h == host));
        if matches {
            for a in algorithms_for_key_type(key_type) {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
    }
    out
}

/// `SHA256:<base64 without padding>`, the fingerprint format of `ssh-keygen -l` and `ssh`.
pub fn fingerprint_sha256(digest: &[u8]) -> String {
    format!("SHA256:{}", base64_nopad(digest))
}

fn base64_nopad(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_documented_values() {
        let c = SshConfig::default();
        assert_eq!(c.user, "k8s-upgrade");
        assert_eq!(c.port, 22);
        assert_eq!(c.key_file, PathBuf::from("/secrets/k8s-upgrade/ssh_key"));
        assert_eq!(c.host_key_policy, HostKeyPolicy::Strict);
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.command_timeout, Duration::from_secs(2700));
    }

    #[test]
    fn config_reads_yaml_with_defaults_and_refuses_unknown_fields() {
        let c: SshConfig = serde_saphyr::from_str(
            "user: wizard\nhost_key_policy: accept-new\nconnect_timeout: 5s\ncommand_timeout: 1h\n",
        )
        .unwrap();
        assert_eq!(c.user, "wizard");
        assert_eq!(c.host_key_policy, HostKeyPolicy::AcceptNew);
        assert_eq!(c.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.command_timeout, Duration::from_secs(3600));
        assert_eq!(c.port, 22);
        assert!(serde_saphyr::from_str::<SshConfig>("usr: x\n").is_err());
        assert!(serde_saphyr::from_str::<SshConfig>("connect_timeout: 10\n").is_err());
        assert!(serde_saphyr::from_str::<SshConfig>("host_key_policy: yolo\n").is_err());
    }

    #[test]
    fn base64_matches_rfc4648_vectors_without_padding() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_nopad(input.as_bytes()), want);
        }
        assert_eq!(fingerprint_sha256(&[0xff; 3]), "SHA256:////");
    }

    #[test]
    fn host_key_algorithms_follow_openssh_host_forms() {
        let kh = "\
# comment
10.0.0.5 ssh-ed25519 AAAA
10.0.0.5,k8s-node1 ssh-rsa AAAA
[10.0.0.6]:2222 ecdsa-sha2-nistp256 AAAA
|1|hashed= ssh-ed25519 AAAA
@cert-authority * ssh-ed25519 AAAA
";
        assert_eq!(
            host_key_algorithms(kh, "10.0.0.5", 22),
            ["ssh-ed25519", "rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]
        );
        assert!(host_key_algorithms(kh, "10.0.0.5", 2222).is_empty());
        assert_eq!(host_key_algorithms(kh, "10.0.0.6", 2222), ["ecdsa-sha2-nistp256"]);
        assert!(host_key_algorithms(kh, "10.0.0.6", 22).is_empty());
        assert!(host_key_algorithms(kh, "10.0.0.7", 22).is_empty());
    }

    #[test]
    fn private_key_debug_is_redacted() {
        assert_eq!(format!("{:?}", PrivateKey("-----BEGIN".into())), "PrivateKey(<redacted>)");
    }

    /// Runs `f` with a subscriber that writes plain messages to the returned buffer.
    fn capture_logs(f: impl FnOnce()) -> String {
        let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || SharedBuf(sink.clone()))
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .with_level(false)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        String::from_utf8(buf.lock().unwrap().clone()).unwrap()
    }

    struct SharedBuf(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedBuf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn streamed_lines_are_logged_whole_and_prefixed_with_the_node() {
        let logs = capture_logs(|| {
            let mut s = Sink::new("k8s-node1", "stdout", true, true);
            s.push(b"[upgrade] first li");
            s.push(b"ne\r\nsecond\nthird without newline");
            s.finish();
            assert_eq!(s.total, 50);
            assert_eq!(s.captured(), "[upgrade] first line\r\nsecond\nthird without newline");
        });
        let lines: Vec<&str> = logs.lines().collect();
        assert_eq!(lines.len(), 3, "{logs}");
        assert!(lines[0].starts_with("[k8s-node1] [upgrade] first line node="), "{logs}");
        assert!(lines[1].starts_with("[k8s-node1] second node="), "{logs}");
        assert!(lines[2].starts_with("[k8s-node1] third without newline node="), "{logs}");
        assert!(lines.iter().all(|l| l.contains("stream=\"stdout\"")), "{logs}");
    }

    #[test]
    fn capture_keeps_the_tail_and_counts_everything() {
        let mut s = Sink::new("n", "stderr", true, false);
        let chunk = vec![b'x'; 700 * 1024];
        for _ in 0..5 {
            s.push(&chunk);
        }
        s.push(b"END");
        assert_eq!(s.total, 5 * 700 * 1024 + 3);
        let got = s.captured();
        assert_eq!(got.len(), CAPTURE_LIMIT);
        assert!(got.ends_with("xEND"));
        let mut quiet = Sink::new("n", "stdout", false, false);
        quiet.push(b"hello\n");
        assert_eq!(quiet.captured(), "");
        assert_eq!(quiet.total, 6);
    }
}
