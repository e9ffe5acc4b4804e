//! Exit codes, documented in the README and in `--help`.
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success; also kill switch present, upgrade held or blocked (nothing to retry) |
//! | 1 | a gate aborted the phase (alerts, unhealthy nodes, settle window, failed checks) |
//! | 2 | bad input: flags, env, config, template, versions, node names |
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

/// Prints the error chain and returns the exit code.
pub fn report(err: &anyhow::Error) -> ExitCode {
    eprintln!("error: {err:#}");
    ExitCode::from(code_for(err))
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
}
