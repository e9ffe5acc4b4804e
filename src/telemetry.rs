//! Logging: human-readable text on a terminal, JSON lines in Jobs (`LOG_FORMAT=json`).
//! Filter with `RUST_LOG` (default `info`).

use std::io::IsTerminal as _;

use tracing_subscriber::{EnvFilter, fmt};

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
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
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
}
