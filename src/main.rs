//! Entry point: parse flags, set up logging and TLS, run the command, map errors to exit codes
//! (documented in `exit.rs` and the README).

use std::process::ExitCode;

use k8s_upgrade_chain::{
    cli::{Cli, Command},
    commands, exit, telemetry,
};

fn main() -> ExitCode {
    let cli = Cli::parse_args();
    let default_log = if matches!(cli.command, Command::Rehearse(_)) { "warn" } else { "info" };
    telemetry::init_with_default(cli.global.log_format, default_log);
    // One process-wide crypto provider for kube and reqwest (see rust-ecosystem.md §0.2).
    let _ = rustls::crypto::ring::default_provider().install_default();
    // `rehearse` runs on one thread: only a current-thread runtime can run the simulation on a
    // simulated clock (`rehearse::rehearse`), so its scaled waits cost no wall time.
    let mut builder = if matches!(cli.command, Command::Rehearse(_)) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            return exit::report(
                &anyhow::Error::new(e).context("failed to start the async runtime"),
                cli.global.log_format,
            );
        }
    };
    let log_format = cli.global.log_format;
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => exit::report(&e, log_format),
    }
}
