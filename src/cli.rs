//! Command-line interface: the raw flags. Every flag can also be set by the environment
//! variable named in its help (chain Jobs configure themselves through env: `PHASE`,
//! `TARGET_NODE`, `TARGET_VERSION`, `KIND`, `IMAGE`, `CONFIG`).
//!
//! Values stay raw strings here: [`crate::args::resolve`] checks every one of them, with the
//! config file and the input files, in one step before anything connects, and its errors name
//! the flag and its env var (exit 2).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Upgrades a kubeadm Kubernetes cluster node by node, as a chain of Kubernetes Jobs.
///
/// Exit codes: 0 success (also: kill switch present, upgrade held or blocked); 1 a gate
/// aborted; 2 bad input (flags, env, config, template, versions, node names); 3 unexpected
/// failure.
#[derive(Debug, Parser)]
#[command(name = "k8s-upgrade-chain", disable_version_flag = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Site configuration file (YAML). Without it the built-in defaults apply.
    #[arg(long, env = "CONFIG", global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Log format: `text` for terminals, `json` in Jobs.
    #[arg(long, env = "LOG_FORMAT", global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Kubeconfig context to use (default: the current context, or the in-cluster service account).
    #[arg(long, env = "KUBE_CONTEXT", global = true, value_name = "NAME")]
    pub context: Option<String>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Output format of read-only commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the chain that would run: target, then each Job with its node, run-on node and
    /// tolerations (read-only).
    Plan(PlanArgs),
    /// Print the Job a phase would apply, as YAML (`... | kubectl apply -f -` runs one phase).
    Render(RenderArgs),
    /// Detection (the CronJob): find the target version, push metrics, reconcile leaked
    /// state, and start the chain by applying the preflight Job.
    Detect(DetectArgs),
    /// Run one chain phase (every chain Job runs this; the phase comes from `PHASE`).
    Step(StepArgs),
    /// Cordon and drain a node with the chain's PDB-aware drain engine.
    Drain(DrainArgs),
    /// Uncordon a node, only if the chain cordoned it.
    Uncordon(UncordonArgs),
    /// Acknowledge that a node's own upgrade failed and was dealt with, so the chain may retry
    /// it: until then detection resumes nothing and the K8sUpgradeNodeAwaitingAck alert fires.
    Ack(AckArgs),
    /// Rehearse the whole chain on a simulated cluster (built-in, or a read-only copy of the
    /// live one with --from-cluster): the real detect and step code, simulated nodes, scaled
    /// waits; ends with a summary and the projected real duration.
    Rehearse(RehearseArgs),
    /// Print the effective configuration (the `--config` file with every default filled in)
    /// as YAML.
    Config,
    /// Print this tool's version.
    Version,
    /// Print every object the tool needs (namespace, RBAC, ConfigMaps, CronJobs) as YAML for
    /// `... | kubectl apply -f -`. The credentials Secret is printed only as a commented template.
    Manifests(ManifestsArgs),
    /// Show the chain's progress: target, phase, each node's state, the last error and what to
    /// do next (read-only).
    Status(StatusArgs),
    /// Compose the weekly Slack report and post it (`--dry-run` prints it instead).
    Report(ReportArgs),
}

/// `manifests` flags.
#[derive(Debug, Args)]
pub struct ManifestsArgs {
    /// Image of the CronJobs and the chain Jobs.
    #[arg(long, env = "IMAGE", default_value = chain_core::DEFAULT_IMAGE)]
    pub image: String,
    /// Detection schedule (cron, UTC: five fields or a descriptor such as @weekly).
    #[arg(long, env = "SCHEDULE", value_name = "CRON", default_value = chain_core::manifests::DEFAULT_SCHEDULE)]
    pub schedule: String,
    /// Weekly report schedule (cron, UTC).
    #[arg(long, env = "REPORT_SCHEDULE", value_name = "CRON", default_value = chain_core::manifests::DEFAULT_REPORT_SCHEDULE)]
    pub report_schedule: String,
    /// Detection runs fully and pushes metrics but spawns no chain Job (`DRY_RUN=true` in the
    /// detection CronJob).
    #[arg(long, env = "DRY_RUN", value_parser = env_bool("DRY_RUN"))]
    pub dry_run: bool,
    /// Create both CronJobs suspended.
    #[arg(long, env = "SUSPEND", value_parser = env_bool("SUSPEND"))]
    pub suspend: bool,
    /// Also print the alert rules as a PrometheusRule (Prometheus Operator).
    #[arg(long, env = "PROMETHEUS_RULE", value_parser = env_bool("PROMETHEUS_RULE"))]
    pub prometheus_rule: bool,
    /// Print only the Prometheus rules file for this config (for `rule_files:`), instead of
    /// the objects.
    #[arg(long, env = "ALERT_RULES", value_parser = env_bool("ALERT_RULES"), conflicts_with = "prometheus_rule")]
    pub alert_rules: bool,
}

/// `status` flags.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Output format.
    #[arg(short = 'o', long, env = "OUTPUT", value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Also read the chain's gauges from the Pushgateway (`pushgateway.url` in the config).
    #[arg(long, env = "PUSHGATEWAY", value_parser = env_bool("PUSHGATEWAY"))]
    pub pushgateway: bool,
}

/// `report` flags.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Print the report instead of posting it to Slack.
    #[arg(long, env = "DRY_RUN", value_parser = env_bool("DRY_RUN"))]
    pub dry_run: bool,
}

/// `rehearse` flags.
#[derive(Debug, Args)]
pub struct RehearseArgs {
    /// Copy the live cluster (read-only: get and list only) into the simulator and rehearse on it.
    #[arg(long, env = "FROM_CLUSTER", value_parser = env_bool("FROM_CLUSTER"))]
    pub from_cluster: bool,
    /// Target Kubernetes version (X.Y.Z). Default: the next patch of the running version.
    #[arg(long = "version", env = "TARGET_VERSION", value_name = "X.Y.Z")]
    pub version: Option<String>,
    /// Rehearse on a generated cluster of this many nodes (2 to 5000; 3 control planes from 10
    /// nodes on) instead of the built-in 5-node one: Deployments and StatefulSets under
    /// PodDisruptionBudgets of every kind, bare pods, DaemonSets, single-replica deadlocks.
    #[arg(long, env = "REHEARSE_NODES", value_name = "N", conflicts_with = "from_cluster")]
    pub nodes: Option<String>,
    /// Pods per node on average in the generated cluster (--nodes): N × M pods in all, at most
    /// 110 on a node (the kubelet's default maxPods).
    #[arg(long, env = "REHEARSE_PODS_PER_NODE", value_name = "M", default_value = "50", requires = "nodes")]
    pub pods_per_node: String,
    /// Divide the waits and soaks by this, 1 to 100000 (600: a 10m soak takes 1s).
    #[arg(long, env = "REHEARSE_SPEED", default_value_t = crate::rehearse::DEFAULT_SPEED.to_string())]
    pub speed: String,
    /// Output format: progress and a summary as text, or one JSON report at the end.
    #[arg(short = 'o', long, env = "OUTPUT", value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// `detect` flags.
#[derive(Debug, Args)]
pub struct DetectArgs {
    /// Detect and push metrics, but spawn nothing.
    #[arg(long, env = "DRY_RUN", value_parser = env_bool("DRY_RUN"))]
    pub dry_run: bool,
    /// Image of the chain Jobs to spawn.
    #[arg(long, env = "IMAGE", default_value = chain_core::DEFAULT_IMAGE)]
    pub image: String,
}

/// `step` flags (set by the Job template through env).
#[derive(Debug, Args)]
pub struct StepArgs {
    /// Phase to run.
    #[arg(long, env = "PHASE")]
    pub phase: String,
    /// Target node (master, control-plane and worker phases).
    #[arg(long, env = "TARGET_NODE", value_name = "NODE")]
    pub node: Option<String>,
    /// Target Kubernetes version (X.Y.Z).
    #[arg(long = "version", env = "TARGET_VERSION", value_name = "X.Y.Z")]
    pub version: String,
    /// `patch` or `minor`.
    #[arg(long, env = "KIND")]
    pub kind: String,
    /// Image of the chain Jobs this step spawns.
    #[arg(long, env = "IMAGE", default_value = chain_core::DEFAULT_IMAGE)]
    pub image: String,
}

/// `drain` flags.
#[derive(Debug, Args)]
pub struct DrainArgs {
    /// Node to drain.
    #[arg(value_name = "NODE", env = "TARGET_NODE")]
    pub node: String,
    /// List what would be evicted, skipped and blocked; change nothing.
    #[arg(long, env = "DRY_RUN", value_parser = env_bool("DRY_RUN"))]
    pub dry_run: bool,
}

/// `uncordon` flags.
#[derive(Debug, Args)]
pub struct UncordonArgs {
    /// Node to uncordon.
    #[arg(value_name = "NODE", env = "TARGET_NODE")]
    pub node: String,
}

/// `ack` flags.
#[derive(Debug, Args)]
pub struct AckArgs {
    /// Node whose failed upgrade to acknowledge.
    #[arg(value_name = "NODE", env = "TARGET_NODE")]
    pub node: String,
}

/// `plan` flags.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Target Kubernetes version (X.Y.Z).
    #[arg(long = "version", env = "TARGET_VERSION", value_name = "X.Y.Z")]
    pub version: String,
    /// Output format.
    #[arg(short = 'o', long, env = "OUTPUT", value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Plan from a saved node list (`kubectl get nodes -o json > nodes.json`, or `-o yaml`;
    /// `-` reads stdin) instead of the live cluster.
    #[arg(long, env = "NODES_FILE", value_name = "PATH")]
    pub nodes_file: Option<PathBuf>,
}

/// `render` flags.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Phase of the Job.
    #[arg(long, env = "PHASE")]
    pub phase: String,
    /// Target node (master, control-plane and worker phases).
    #[arg(long, env = "TARGET_NODE", value_name = "NODE")]
    pub node: Option<String>,
    /// Target Kubernetes version (X.Y.Z).
    #[arg(long = "version", env = "TARGET_VERSION", value_name = "X.Y.Z")]
    pub version: String,
    /// `patch` or `minor`. Default: derived from the cluster's running version.
    #[arg(long, env = "KIND")]
    pub kind: Option<String>,
    /// Image of the chain Jobs.
    #[arg(long, env = "IMAGE", default_value = chain_core::DEFAULT_IMAGE)]
    pub image: String,
    /// Render without reading the cluster (no client is built): pin the Job to this node
    /// instead of computing the placement (needs --kind). Nothing checks that the Job's
    /// tolerations cover the node's taints: without --run-on, render reads the cluster and
    /// computes a placement that does.
    #[arg(long, env = "RUN_ON", value_name = "NODE")]
    pub run_on: Option<String>,
    /// With --run-on: tolerate this taint (`KEY:EFFECT`, repeatable).
    #[arg(
        long = "toleration",
        env = "TOLERATIONS",
        value_delimiter = ',',
        value_name = "KEY:EFFECT",
        requires = "run_on"
    )]
    pub tolerations: Vec<String>,
}

impl Cli {
    /// Parses the command line and the environment, exiting on a usage error (exit 2). An
    /// invalid value is named by its flag in clap's message; a tip names its environment
    /// variable too, since the value may have come from either (QA B3).
    pub fn parse_args() -> Self {
        use clap::Parser as _;
        Self::try_parse().unwrap_or_else(|e| with_env_tip(e).exit())
    }
}

/// Adds to clap's error for an invalid value a tip naming the flag's environment variable.
pub fn with_env_tip(mut e: clap::Error) -> clap::Error {
    use clap::{
        CommandFactory as _,
        error::{ContextKind, ContextValue},
    };
    let Some(ContextValue::String(shown)) = e.get(ContextKind::InvalidArg) else {
        return e;
    };
    let flag = shown.split_whitespace().next().unwrap_or_default().to_string();
    if let Some(env) = env_of(&Cli::command(), &flag) {
        e.insert(
            ContextKind::Suggested,
            ContextValue::StyledStrs(vec![
                format!("the value comes from {flag} / {env} (the flag, or else the environment variable)")
                    .into(),
            ]),
        );
    }
    e
}

/// The environment variable of the argument clap shows as `shown` (`--output`, `<NODE>`), in
/// `cmd` or any of its subcommands.
fn env_of(cmd: &clap::Command, shown: &str) -> Option<String> {
    let found = cmd.get_arguments().find(|a| match a.get_long() {
        Some(long) => shown == format!("--{long}"),
        None => a.get_value_names().is_some_and(|v| v.iter().any(|n| shown == format!("<{n}>"))),
    });
    match found.and_then(|a| a.get_env()) {
        Some(env) => Some(env.to_string_lossy().into_owned()),
        None => cmd.get_subcommands().find_map(|c| env_of(c, shown)),
    }
}

/// A boolean flag that can also be set through `env`: only `true`/`false` (and clap's other
/// spellings: 1/0, yes/no, on/off) are accepted from the environment, never "anything non-empty
/// is true". The error names the variable.
fn env_bool(env: &'static str) -> impl Fn(&str) -> Result<bool, String> + Clone + Send + Sync + 'static {
    move |s: &str| match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(format!("{env} must be true or false")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// Every flag of every command can be set through an environment variable (QA B2):
    /// architecture.md and the README promise it, and `tests/cli.rs` tries each one.
    #[test]
    fn every_flag_has_an_env_var() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if matches!(id, "help" | "version") || a.get_env().is_some() {
                    continue;
                }
                missing.push(format!("{path} {id}"));
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = vec![];
        walk(&Cli::command(), "k8s-upgrade-chain", &mut missing);
        assert!(missing.is_empty(), "flags without an env var: {missing:?}");
    }

    #[test]
    fn a_bad_value_names_the_env_var_too() {
        for (args, want) in [
            (vec!["x", "status", "-o", "yaml"], "--output / OUTPUT"),
            (vec!["x", "--log-format", "xml", "version"], "--log-format / LOG_FORMAT"),
            (vec!["x", "manifests", "--suspend=maybe"], "--suspend / SUSPEND"),
        ] {
            let e = with_env_tip(Cli::try_parse_from(&args).unwrap_err()).to_string();
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }
}
