//! Logging: human-readable text on a terminal, JSON lines in Jobs (`LOG_FORMAT=json`).
//! Filter with `RUST_LOG` (default `info`).

use std::io::IsTerminal as _;

use tracing_subscriber::{EnvFilter, fmt, fmt::MakeWriter, util::SubscriberInitExt as _};

use crate::cli::LogFormat;

/// Installs the global subscriber (logs go to stderr; stdout carries command output).
pub fn init(format: LogFormat) {
    init_with_default(format, "info");
}

/// [`init`] with another filter when `RUST_LOG` is unset (`rehearse` shows only warnings: its
/// progress on stdout tells the story).
pub fn init_with_default(format: LogFormat, default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref());
    let _ = match format {
        LogFormat::Text => fmt()
            .with_env_filter(filter)
            .with_writer(RedactedStderr)
            .with_ansi(ansi)
            .with_target(false)
            .try_init(),
        LogFormat::Json => json_subscriber(filter, RedactedStderr).try_init().map_err(Into::into),
    };
}

/// The JSON-lines subscriber of the Jobs (`LOG_FORMAT=json`): one object per event, the
/// event's fields flattened next to tracing's own keys (`timestamp`, `level`, `target`, the
/// current span), so an event field must never be named like one of those: `target_version`,
/// not `target` (issue 17 item 6: jq keeps one of two equal keys, strict parsers refuse the
/// line). `tests/logs.rs` parses every line a whole chain writes and rejects duplicate keys.
pub fn json_subscriber<W>(filter: EnvFilter, writer: W) -> impl tracing::Subscriber + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    fmt().with_env_filter(filter).with_writer(writer).with_ansi(false).json().flatten_event(true).finish()
}

/// stderr through [`crate::exit::redact`]: every log line has PEM private keys and the known
/// secrets masked before it leaves the process (QA A5). tracing-subscriber formats an event
/// into one buffer and writes it with one `write_all`, so a secret is never split across two
/// writes.
#[derive(Debug, Clone, Copy)]
pub struct RedactedStderr;

impl<'a> MakeWriter<'a> for RedactedStderr {
    type Writer = Redacting<std::io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        Redacting(std::io::stderr())
    }
}

/// A writer that masks secrets in what it writes ([`RedactedStderr`]).
#[derive(Debug)]
pub struct Redacting<W>(pub W);

impl<W: std::io::Write> std::io::Write for Redacting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let masked = crate::exit::redact(&String::from_utf8_lossy(buf));
        self.0.write_all(masked.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// ANSI colours only on a terminal, and never when `NO_COLOR` is set to anything but the
/// empty string (https://no-color.org). Logs piped to a file or collected from a Job stay
/// plain text.
pub fn colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))), "an empty NO_COLOR does not count");
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
        assert!(!colour(false, Some(OsStr::new("1"))));
    }

    #[test]
    fn log_lines_are_redacted() {
        use std::io::Write as _;
        let mut w = Redacting(Vec::new());
        let line = b"WARN ssh failed: -----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\n";
        assert_eq!(w.write(line).unwrap(), line.len());
        let out = String::from_utf8(w.0).unwrap();
        assert!(!out.contains("MIIE") && out.contains(chain_core::redact::PEM_MASK), "{out}");
    }
}
