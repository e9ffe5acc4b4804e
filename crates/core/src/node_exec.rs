//! The seam through which the chain acts on a node: run a script or a command there.
//!
//! [`NodeExec`] is implemented over SSH by [`crate::ssh::SshExec`]; a simulator can implement
//! it to drive the chain without machines. Requests are plain values ([`ExecRequest`]) so the
//! planning code can build and test them without any I/O.

use std::{fmt, net::IpAddr, time::Duration};

use futures_core::future::BoxFuture;

/// How much of each output stream [`ExecOutput`] keeps (the tail): 1 MiB.
pub const CAPTURE_LIMIT: usize = 1 << 20;

/// Default overall deadline for a request built without [`ExecRequest::timeout`]: 5 minutes.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// The node to act on. Addressed by its InternalIP, never by DNS name: bare node names do not
/// resolve from inside pods (seed history 4f295986, ed53b34b).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeTarget {
    /// The Kubernetes node name, used in logs and errors.
    pub node: String,
    /// The node's InternalIP.
    pub addr: IpAddr,
}

impl NodeTarget {
    /// A target for `node` at `addr`.
    pub fn new(node: impl Into<String>, addr: IpAddr) -> Self {
        Self { node: node.into(), addr }
    }
}

impl fmt::Display for NodeTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.node, self.addr)
    }
}

/// What to run on the node.
#[derive(Clone, PartialEq, Eq)]
pub enum ExecPayload {
    /// A local script sent as the stdin of a remote `sudo -n bash -s -- ARGS`. `-n`: sudo
    /// must never prompt, or it would read the script from stdin as a password.
    Script {
        /// A short name for logs and errors, e.g. `update_k8s.sh`.
        name: String,
        /// The script text.
        body: String,
        /// Arguments, each validated by [`validate_arg`] and quoted with [`shell_quote`].
        args: Vec<String>,
    },
    /// One command line, run by the remote login shell, with optional stdin bytes.
    Command {
        /// The command line as the remote shell will read it. Quote any values with
        /// [`shell_quote`].
        line: String,
        /// Bytes written to the command's stdin (then EOF). `None` sends EOF at once.
        stdin: Option<Vec<u8>>,
    },
}

impl fmt::Debug for ExecPayload {
    // Script bodies and stdin can be large (and stdin might hold a restore script): keep
    // them out of Debug output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Script { name, body, args } => f
                .debug_struct("Script")
                .field("name", name)
                .field("body_bytes", &body.len())
                .field("args", args)
                .finish(),
            Self::Command { line, stdin } => f
                .debug_struct("Command")
                .field("line", line)
                .field("stdin_bytes", &stdin.as_ref().map(Vec::len))
                .finish(),
        }
    }
}

/// A request to run something on a node, with its deadline and output handling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// What to run.
    pub payload: ExecPayload,
    /// Overall deadline for the request, connecting included.
    pub timeout: Duration,
    /// Keep the (tail of the) output in [`ExecOutput`]; probes need it, long scripts don't.
    pub capture: bool,
    /// Log every output line through `tracing`, prefixed with the node name.
    pub stream: bool,
}

/// A script argument or request that cannot be sent safely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid remote argument {arg:?}: {reason}")]
pub struct InvalidArg {
    /// The offending argument.
    pub arg: String,
    /// Why it was refused.
    pub reason: &'static str,
}

/// Refuses arguments that cannot travel on one remote command line unambiguously:
/// empty strings, NUL bytes and line breaks.
pub fn validate_arg(arg: &str) -> Result<(), InvalidArg> {
    let reason = if arg.is_empty() {
        "empty"
    } else if arg.contains('\0') {
        "contains a NUL byte"
    } else if arg.contains('\n') || arg.contains('\r') {
        "contains a line break"
    } else {
        return Ok(());
    };
    Err(InvalidArg { arg: arg.to_string(), reason })
}

/// Quotes `s` for a POSIX shell: unchanged when it only holds safe characters, otherwise
/// wrapped in single quotes with embedded `'` written as `'\''`.
pub fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if safe { s.to_string() } else { format!("'{}'", s.replace('\'', r"'\''")) }
}

impl ExecRequest {
    /// Runs `body` on the node as `sudo -n bash -s -- ARGS`, streamed to the log and not
    /// captured. Fails when an argument is refused by [`validate_arg`].
    pub fn script(
        name: impl Into<String>,
        body: impl Into<String>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<Self, InvalidArg> {
        let args: Vec<String> = args.into_iter().map(Into::into).collect();
        for a in &args {
            validate_arg(a)?;
        }
        Ok(Self {
            payload: ExecPayload::Script { name: name.into(), body: body.into(), args },
            timeout: DEFAULT_TIMEOUT,
            capture: false,
            stream: true,
        })
    }

    /// Runs one command line on the node, captured and not streamed (the probe default).
    pub fn command(line: impl Into<String>) -> Self {
        Self {
            payload: ExecPayload::Command { line: line.into(), stdin: None },
            timeout: DEFAULT_TIMEOUT,
            capture: true,
            stream: false,
        }
    }

    /// Sets the bytes sent to a command's stdin (ignored for scripts, whose stdin is the body).
    pub fn with_stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        if let ExecPayload::Command { stdin, .. } = &mut self.payload {
            *stdin = Some(bytes.into());
        }
        self
    }

    /// Sets the overall deadline.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets whether the output is kept in [`ExecOutput`].
    pub fn capture(mut self, on: bool) -> Self {
        self.capture = on;
        self
    }

    /// Sets whether output lines are logged as they arrive.
    pub fn stream(mut self, on: bool) -> Self {
        self.stream = on;
        self
    }

    /// The command line the remote side executes.
    pub fn remote_command(&self) -> String {
        match &self.payload {
            ExecPayload::Script { args, .. } => {
                let mut line = String::from("sudo -n bash -s --");
                for a in args {
                    line.push(' ');
                    line.push_str(&shell_quote(a));
                }
                line
            }
            ExecPayload::Command { line, .. } => line.clone(),
        }
    }

    /// The bytes sent to the remote stdin before EOF.
    pub fn stdin_bytes(&self) -> &[u8] {
        match &self.payload {
            ExecPayload::Script { body, .. } => body.as_bytes(),
            ExecPayload::Command { stdin, .. } => stdin.as_deref().unwrap_or_default(),
        }
    }

    /// A short description for logs and errors: the script name, or the command line.
    pub fn describe(&self) -> String {
        match &self.payload {
            ExecPayload::Script { name, args, .. } => format!("{name} {}", args.join(" ")),
            ExecPayload::Command { line, .. } => line.clone(),
        }
    }
}

/// How the remote command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal (name as sent by sshd, e.g. `KILL`).
    Signal(String),
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Code(c) => write!(f, "exit status {c}"),
            Self::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// The result of a request that ran to completion (whatever its exit status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// How the command ended.
    pub status: ExitStatus,
    /// The last [`CAPTURE_LIMIT`] bytes of stdout (empty unless captured), lossily UTF-8.
    pub stdout: String,
    /// The last [`CAPTURE_LIMIT`] bytes of stderr (empty unless captured), lossily UTF-8.
    pub stderr: String,
    /// Total stdout bytes received, captured or not.
    pub stdout_bytes: u64,
    /// Total stderr bytes received, captured or not.
    pub stderr_bytes: u64,
}

impl ExecOutput {
    /// True when the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status == ExitStatus::Code(0)
    }
}

/// Why a request did not run to completion. Every variant names the node and its address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// The TCP connection could not be opened.
    #[error("cannot connect to node {node} at {addr}:{port}: {reason}")]
    Connect { node: String, addr: IpAddr, port: u16, reason: String },
    /// The TCP connection did not open within the connect timeout.
    #[error("timed out after {after:?} connecting to node {node} at {addr}:{port}")]
    ConnectTimeout { node: String, addr: IpAddr, port: u16, after: Duration },
    /// The SSH handshake or another protocol step failed.
    #[error("SSH {stage} with node {node} at {addr} failed: {reason}")]
    Protocol { node: String, addr: IpAddr, stage: &'static str, reason: String },
    /// The host key differs from the one recorded for this address: refused.
    #[error(
        "host key of node {node} at {addr} does not match known_hosts (got {key_type} {fingerprint}): refusing to connect; if the node was reinstalled, update the known_hosts Secret"
    )]
    HostKeyMismatch { node: String, addr: IpAddr, key_type: String, fingerprint: String },
    /// No host key is recorded for this address and the policy is strict: refused.
    #[error(
        "host key of node {node} at {addr} is not in known_hosts (got {key_type} {fingerprint}) and host_key_policy is strict: add it to the known_hosts Secret"
    )]
    HostKeyUnknown { node: String, addr: IpAddr, key_type: String, fingerprint: String },
    /// Local SSH settings could not be used (unreadable key or known_hosts file, ...).
    #[error("SSH setup for node {node} at {addr} failed: {reason}")]
    Setup { node: String, addr: IpAddr, reason: String },
    /// The server refused our key.
    #[error("SSH authentication as {user:?} on node {node} at {addr} failed: {reason}")]
    Auth { node: String, addr: IpAddr, user: String, reason: String },
    /// The connection broke while the command was running; its outcome is unknown.
    #[error(
        "connection to node {node} at {addr} dropped while running {what:?}: {reason} (the command's outcome is unknown)"
    )]
    Dropped { node: String, addr: IpAddr, what: String, reason: String },
    /// The request's overall deadline passed.
    #[error("{what:?} on node {node} at {addr} timed out after {after:?}")]
    TimedOut { node: String, addr: IpAddr, what: String, after: Duration },
}

impl ExecError {
    /// The node the failed request was for.
    pub fn node(&self) -> &str {
        match self {
            Self::Connect { node, .. }
            | Self::ConnectTimeout { node, .. }
            | Self::Protocol { node, .. }
            | Self::HostKeyMismatch { node, .. }
            | Self::HostKeyUnknown { node, .. }
            | Self::Setup { node, .. }
            | Self::Auth { node, .. }
            | Self::Dropped { node, .. }
            | Self::TimedOut { node, .. } => node,
        }
    }
}

/// Runs requests on nodes. Dyn-compatible so the chain can hold an `Arc<dyn NodeExec>` and a
/// simulator can stand in for SSH.
pub trait NodeExec: Send + Sync {
    /// Runs `req` on `target`. A non-zero exit status is an `Ok` [`ExecOutput`]; `Err` means
    /// the request did not run to completion (connect, auth, host key, drop, timeout).
    fn run<'a>(
        &'a self,
        target: &'a NodeTarget,
        req: ExecRequest,
    ) -> BoxFuture<'a, Result<ExecOutput, ExecError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_leaves_safe_words_alone_and_wraps_the_rest() {
        assert_eq!(shell_quote("1.34.2"), "1.34.2");
        assert_eq!(shell_quote("--role=master"), "--role=master");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$(reboot)"), "'$(reboot)'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn quoted_words_survive_a_real_shell() {
        let nasty = ["a b", "it's", "$(echo x)", "`id`", "*", "a\\b", "\"q\"", ";&|"];
        let line = nasty.iter().map(|s| shell_quote(s)).collect::<Vec<_>>().join(" ");
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("printf '%s\\n' {line}"))
            .output()
            .unwrap();
        let got: Vec<_> = String::from_utf8(out.stdout).unwrap().lines().map(String::from).collect();
        assert_eq!(got, nasty);
    }

    #[test]
    fn script_args_are_validated() {
        for bad in ["", "a\nb", "a\rb", "a\0b"] {
            assert!(ExecRequest::script("s", "", ["--x", bad]).is_err(), "{bad:?}");
        }
        let ok = ExecRequest::script("update_k8s.sh", "echo", ["--role", "master", "--release", "1.34.2"])
            .unwrap();
        assert_eq!(ok.remote_command(), "sudo -n bash -s -- --role master --release 1.34.2");
        assert_eq!(ok.stdin_bytes(), b"echo");
        assert!(ok.stream && !ok.capture);
    }

    #[test]
    fn commands_capture_by_default_and_carry_stdin() {
        let r = ExecRequest::command("cat").with_stdin("hi").timeout(Duration::from_secs(5));
        assert_eq!(r.remote_command(), "cat");
        assert_eq!(r.stdin_bytes(), b"hi");
        assert!(r.capture && !r.stream);
        assert_eq!(r.timeout, Duration::from_secs(5));
        assert_eq!(ExecRequest::command("true").stdin_bytes(), b"");
    }

    #[test]
    fn debug_output_hides_script_bodies() {
        let r = ExecRequest::script("s.sh", "SECRET-ish body", ["a"]).unwrap();
        assert!(!format!("{r:?}").contains("SECRET"));
    }
}
