//! Exit codes, documented in the README and in `--help`.
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success; also kill switch present, upgrade held or blocked (nothing to retry) |
//! | 1 | a gate aborted the phase (alerts, unhealthy nodes, settle window, failed checks) |
//! | 2 | bad input: flags, env, config, template, versions, node names, kubeconfig |
//! | 3 | unexpected failure (API, SSH, timeouts) |

use std::process::ExitCode;

/// A gate refused to go on; the phase aborted on purpose (exit 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GateAbort(pub String);

/// The input was wrong (exit 2). Wraps the error that names the input.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct BadInput(pub anyhow::Error);

/// Wraps any error as bad input.
pub fn bad_input(e: impl Into<anyhow::Error>) -> anyhow::Error {
    anyhow::Error::new(BadInput(e.into()))
}

/// Maps an error to its exit code by looking through its chain.
pub fn code_for(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.is::<GateAbort>() {
            return 1;
        }
        if cause.is::<BadInput>()
            || cause.is::<chain_core::settings::SettingsError>()
            || cause.is::<chain_core::plan::PlanError>()
            || cause.is::<chain_core::job::RenderError>()
            || cause.is::<chain_core::version::VersionError>()
        {
            return 2;
        }
    }
    3
}

/// The error chain as one line, `outer: cause: cause`, each cause once: a message that
/// already quotes its source (thiserror's `{source}` with `#[source]`) is not followed by the
/// same text again (`No such file or directory (os error 2): No such file or directory (os
/// error 2)`, QA C).
pub fn chain_text(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Prints the error chain (secrets masked, [`redact`]) on stderr, as a JSON line with
/// `--log-format json` like every other line a Job writes, and returns the exit code.
pub fn report(err: &anyhow::Error, format: crate::cli::LogFormat) -> ExitCode {
    let code = code_for(err);
    let message = redact(&(chain_text(err) + &crate::k8s::server_note(err)));
    match format {
        crate::cli::LogFormat::Text => eprintln!("error: {message}"),
        crate::cli::LogFormat::Json => eprintln!(
            "{}",
            serde_json::json!({
                "timestamp": jiff::Timestamp::now().to_string(),
                "level": "ERROR",
                "message": message,
                "exit_code": code,
            })
        ),
    }
    ExitCode::from(code)
}

/// The values of the secret files this process knows of ([`register_secret_files`]).
static SECRETS: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

/// The largest secret file read for [`register_secret_files`]: a webhook URL or an SSH key is
/// a few KB; anything larger is not one of them.
const SECRET_FILE_MAX: u64 = 64 * 1024;

/// Remembers the contents of the configured secret files (`slack.webhook_file`,
/// `ssh.key_file`), when this process can read them, so that [`redact`] masks them wherever
/// they would leave the process: an input file, a template or an HTTP error that quotes one
/// (defence in depth behind [`chain_core::redact::parser_message`], QA A5). A file that is
/// missing or unreadable is skipped: the command that needs it reports that itself.
pub fn register_secret_files(settings: &chain_core::settings::Settings) {
    for path in [&settings.slack.webhook_file, &settings.ssh.key_file] {
        let small = std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() <= SECRET_FILE_MAX);
        if let (true, Ok(text)) = (small, std::fs::read_to_string(path)) {
            register_secret(text.trim());
        }
    }
}

/// Remembers one secret value for [`redact`] (values under 8 characters are not masked).
pub fn register_secret(value: &str) {
    if value.len() >= 8
        && let Ok(mut s) = SECRETS.write()
        && !s.iter().any(|v| v == value)
    {
        s.push(value.to_string());
        // Each line of a multi-line secret too: a message may quote one line of it.
        for line in value.lines().map(str::trim).filter(|l| l.len() >= 16) {
            if !s.iter().any(|v| v == line) {
                s.push(line.to_string());
            }
        }
    }
}

/// Masks PEM private keys and the registered secrets in text about to leave the process
/// (the fatal error line here, every log line through [`crate::telemetry`]).
pub fn redact(text: &str) -> String {
    match SECRETS.read() {
        Ok(s) => chain_core::redact::mask(text, &s),
        Err(_) => chain_core::redact::mask(text, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(code_for(&anyhow::Error::new(GateAbort("alerts firing".into()))), 1);
        assert_eq!(code_for(&bad_input(anyhow::anyhow!("bad node name"))), 2);
        let plan = anyhow::Error::new(chain_core::plan::PlanError::NoNodes).context("failed to plan");
        assert_eq!(code_for(&plan), 2);
        assert_eq!(code_for(&anyhow::anyhow!("connection refused")), 3);
    }

    #[test]
    fn each_cause_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory (os error 2)");
        let e = anyhow::Error::new(chain_core::job::RenderError::ReadTemplate {
            path: "/x.j2".into(),
            source: io,
        })
        .context("failed to load the configuration (--config / CONFIG)");
        assert_eq!(
            chain_text(&e),
            "failed to load the configuration (--config / CONFIG): failed to read the Job template /x.j2: \
             No such file or directory (os error 2)"
        );
    }

    #[test]
    fn registered_secrets_and_private_keys_are_masked() {
        register_secret("https://hooks.slack.com/services/T0/B0/REDACTTEST1");
        let text = "post to https://hooks.slack.com/services/T0/B0/REDACTTEST1 failed; key \
                    -----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n-----END OPENSSH PRIVATE KEY-----";
        let out = redact(text);
        assert!(!out.contains("REDACTTEST1") && !out.contains("b3Bl"), "{out}");
        assert!(out.contains(chain_core::redact::SECRET_MASK) && out.contains(chain_core::redact::PEM_MASK));
    }
}
