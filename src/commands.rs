//! The commands: each one resolves its inputs, calls the pure core and the thin I/O modules, and
//! prints. `main.rs` only parses flags, sets up logging and maps the result to an exit code.

use std::io::Write as _;

use k8s_openapi::api::core::v1::{Node, Toleration};
use serde::Serialize;

use chain_core::{
    job::{self, JobRequest},
    plan::{self, Kind, Placement, PlannedJob, Snapshot},
    settings::Settings,
    version::Version,
};

use crate::{
    args::{Invocation, ManifestsArgs, PlanArgs, RehearseArgs, RenderArgs, Resolved},
    cli::{Cli, Output, ReportArgs, StatusArgs},
    exit::bad_input,
    k8s::{self, Clients},
};

/// Runs one command: resolves every input first ([`crate::args::resolve`]: nothing connects
/// before the flags, env, config and input files are all valid), then runs it.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let Invocation { settings, context, command } = crate::args::resolve(cli)?;
    let context = context.as_deref();
    match command {
        Resolved::Plan(args) => plan_command(&settings, context, args).await,
        Resolved::Render(args) => render_command(&settings, context, &args).await,
        Resolved::Detect(args) => {
            let ctx = production_ctx(settings, context, args.image.to_string()).await?;
            let outcome = crate::chain::detect::detect(&ctx, args.dry_run).await?;
            println!("{}", describe_detection(&outcome));
            Ok(())
        }
        Resolved::Step(args) => {
            let ctx = production_ctx(settings, context, args.image.to_string()).await?;
            let input = crate::chain::StepInput { step: args.step, target: args.version, kind: args.kind };
            let ended = crate::chain::run_step(&ctx, &input).await?;
            println!("{}: {ended:?}", input.step);
            Ok(())
        }
        Resolved::Drain(args) => {
            let clients = k8s::connect(context).await?;
            let out = crate::drain::drain_command(
                &clients,
                args.node.as_str(),
                &settings.namespace,
                &settings.drain,
                args.dry_run,
            )
            .await?;
            print!("{out}");
            Ok(())
        }
        Resolved::Uncordon(args) => {
            let clients = k8s::connect(context).await?;
            println!("{}", crate::drain::uncordon_command(&clients, args.node.as_str()).await?);
            Ok(())
        }
        Resolved::Ack(args) => {
            let clients = k8s::connect(context).await?;
            let node = args.node.as_str();
            let acked = crate::ops::ack::acknowledge(&clients.api, &settings, node).await?;
            print!("{}", crate::ops::ack::describe(node, &acked, &settings.namespace));
            Ok(())
        }
        Resolved::Rehearse(args) => rehearse_command(&settings, context, &args).await,
        Resolved::Config => {
            print!("{}", settings.to_yaml());
            Ok(())
        }
        Resolved::Version => {
            println!("k8s-upgrade-chain {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Resolved::Manifests(args) => {
            manifests_command(&settings, *args);
            Ok(())
        }
        Resolved::Status(args) => status_command(&settings, context, &args).await,
        Resolved::Report(args) => report_command(&settings, context, &args).await,
    }
}

/// `manifests`: prints [`chain_core::manifests::render`] for the loaded settings (or, with
/// `--alert-rules`, only [`chain_core::manifests::alert_rules`]). The config ConfigMap holds the
/// `--config` file verbatim (comments kept), or the defaults when there is none, and a
/// `job.template` override beside it.
fn manifests_command(settings: &Settings, args: ManifestsArgs) {
    if args.alert_rules {
        print!("{}", chain_core::manifests::alert_rules(settings));
        return;
    }
    let opts = chain_core::manifests::Options {
        image: args.image.to_string(),
        schedule: args.schedule.to_string(),
        report_schedule: args.report_schedule.to_string(),
        dry_run: args.dry_run,
        enabled: !args.suspend,
        config_yaml: args.config_yaml,
        job_template: args.job_template,
    };
    print!("{}", chain_core::manifests::render(settings, &opts, args.prometheus_rule));
}

/// `status`: reads the cluster (and optionally the Pushgateway) and prints [`chain_core::status::summarize`].
async fn status_command(settings: &Settings, context: Option<&str>, args: &StatusArgs) -> anyhow::Result<()> {
    let clients = k8s::connect(context).await?;
    let status = crate::ops::status::read(&clients.api, settings, args.pushgateway).await?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&status)?),
        Output::Text => print!("{}", chain_core::status::text(&status)),
    }
    Ok(())
}

/// `report`: gathers, composes, prints, and posts to Slack unless `--dry-run`.
async fn report_command(settings: &Settings, context: Option<&str>, args: &ReportArgs) -> anyhow::Result<()> {
    let clients = k8s::connect(context).await?;
    let inputs = crate::ops::report::gather(&clients.api, settings, jiff::Timestamp::now()).await?;
    let text = chain_core::report::compose(&inputs);
    print!("{text}");
    if args.dry_run {
        tracing::info!("dry run: not posting to Slack");
        return Ok(());
    }
    match crate::slack::Slack::from_config(&settings.slack, chain_core::report::PREFIX).post(&text).await {
        crate::slack::Delivery::Sent => tracing::info!("report posted to Slack"),
        crate::slack::Delivery::Disabled => tracing::info!("Slack is not configured; report printed only"),
        crate::slack::Delivery::Failed { reason } => tracing::warn!("report not posted: {reason}"),
    }
    Ok(())
}

/// `rehearse`: progress on stdout as it happens, then the summary (or one JSON report).
async fn rehearse_command(
    settings: &Settings,
    context: Option<&str>,
    args: &RehearseArgs,
) -> anyhow::Result<()> {
    use crate::rehearse::{Options, Source};
    let source = match args.size {
        _ if args.from_cluster => Source::Live(k8s::connect(context).await?),
        Some(size) => Source::Generated(size),
        None => Source::Builtin,
    };
    let opts =
        Options { source, version: args.version, speed: args.speed, image: chain_core::DEFAULT_IMAGE.into() };
    let text = args.output == Output::Text;
    // With -o json the progress lines are not printed: the note goes to stderr.
    if !text && let Some(note) = crate::rehearse::builtin_backup_note(settings, !args.from_cluster) {
        eprintln!("{note}");
    }
    let progress = move |line: &str| {
        if text {
            println!("{line}");
        }
    };
    let report = crate::rehearse::rehearse(settings, opts, &progress).await?;
    match args.output {
        Output::Text => print!("{}", crate::rehearse::summary_text(&report)),
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    if !report.completed {
        let last =
            report.jobs.last().map_or("detection".to_string(), |j| format!("{} ({})", j.name, j.result));
        return Err(crate::chain::abort(format!("rehearsal: the chain stopped at {last}")));
    }
    Ok(())
}

/// The production chain context: kube clients from the kubeconfig or service account, SSH to
/// the nodes, Prometheus and the Pushgateway from the settings.
async fn production_ctx(
    settings: Settings,
    context: Option<&str>,
    image: String,
) -> anyhow::Result<crate::chain::Ctx> {
    let clients = k8s::connect(context).await?;
    let exec = crate::node::ssh::SshExec::new(settings.ssh.clone())
        .map_err(|e| bad_input(anyhow::anyhow!("failed to load the SSH key (ssh.key_file): {e}")))?;
    crate::chain::Ctx::new(settings, clients, std::sync::Arc::new(exec), image)
}

fn describe_detection(d: &crate::chain::detect::Detection) -> String {
    use crate::chain::detect::Detection;
    match d {
        Detection::Halted(r) => format!("halted by the kill switch: {r}"),
        Detection::UpToDate { running } => format!("no upgrade needed: running {running}"),
        Detection::Target { running, target, kind, action } => {
            format!("target {target} ({kind} from {running}); {}", action.describe())
        }
    }
}

/// Reads the nodes and builds the planner's snapshot.
pub async fn snapshot(clients: &Clients, settings: &Settings) -> anyhow::Result<Snapshot> {
    let nodes = k8s::list_nodes(&clients.api).await?;
    Ok(Snapshot::from_nodes(&nodes, &settings.control_plane_selector())?)
}

/// JSON form of `plan -o json`.
#[derive(Debug, Serialize)]
pub struct PlanReport {
    pub target: Version,
    pub running: Version,
    pub kind: Kind,
    /// Every node already runs the target ([`plan::up_to_date`]): no Job is planned, as
    /// detection reports "no upgrade needed".
    pub nothing_to_do: bool,
    pub jobs: Vec<PlannedJob>,
    /// Nodes already on the target that get no Job of their own (workers and further control
    /// planes: the chain passes over them). The master keeps its Job, which skips its work
    /// (`skip` in [`PlannedJob`]).
    pub on_target_without_job: Vec<String>,
    /// With `workers.concurrency` above 1: the workers that run together, wave by wave, if
    /// every worker takes the same time ([`chain_core::waves::waves`]). Empty (and left out of
    /// the JSON) with one worker at a time.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<Vec<String>>,
    /// With `workers.concurrency` above 1: how many workers may be in flight on this snapshot,
    /// and why ([`chain_core::waves::WorkerSettings::limit_of`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_limit: Option<chain_core::waves::Limit>,
}

/// Builds the plan report from a snapshot (pure). The target must pass the planner's rule
/// ([`plan::check_target`]: no node newer than it, no minor skipped), and the nodes' Job names
/// be distinct. A target every node already runs plans nothing ([`PlanReport::nothing_to_do`]).
pub fn plan_report(snap: &Snapshot, target: Version) -> anyhow::Result<PlanReport> {
    let running = snap.running_version();
    let kind = plan::check_target(snap, target)?;
    let nothing_to_do = plan::up_to_date(snap, target);
    let jobs = if nothing_to_do { vec![] } else { plan::chain(snap, target)? };
    let on_target_without_job = if nothing_to_do {
        vec![]
    } else {
        snap.nodes()
            .filter(|n| n.on_target(target) && !jobs.iter().any(|j| j.step.node() == Some(n.name.as_str())))
            .map(|n| n.name.clone())
            .collect()
    };
    Ok(PlanReport {
        target,
        running,
        kind,
        nothing_to_do,
        jobs,
        on_target_without_job,
        waves: vec![],
        worker_limit: None,
    })
}

async fn plan_command(settings: &Settings, context: Option<&str>, args: PlanArgs) -> anyhow::Result<()> {
    let (snap, zones) = match args.snapshot {
        Some(snap) => (snap, args.zones),
        None => {
            let nodes = k8s::list_nodes(&k8s::connect(context).await?.api).await?;
            let zones = chain_core::waves::zones(&nodes, &settings.workers.topology_label);
            (Snapshot::from_nodes(&nodes, &settings.control_plane_selector())?, zones)
        }
    };
    let mut report = plan_report(&snap, args.version)?;
    if !settings.workers.sequential() && !report.nothing_to_do {
        report.waves = chain_core::waves::waves(&snap, &zones, args.version, &settings.workers);
        report.worker_limit = Some(chain_core::waves::plan_limit(&snap, &settings.workers));
    }
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
        Output::Text => {
            write!(out, "{}", plan_text(&report))?;
            write!(out, "{}", waves_text(&report, settings))?;
        }
    }
    Ok(())
}

/// Reads a saved node list (see [`crate::args::read_nodes_file`]).
pub fn read_nodes_file(path: &std::path::Path) -> anyhow::Result<Vec<Node>> {
    crate::args::read_nodes_file(path)
}

/// The worker waves of a plan as text (nothing with one worker at a time).
pub fn waves_text(report: &PlanReport, settings: &Settings) -> String {
    if report.waves.is_empty() {
        return String::new();
    }
    let w = &settings.workers;
    let mut limit = match w.max_unavailable {
        Some(m) => format!("concurrency {}, max_unavailable {m}", w.concurrency.get()),
        None => format!("concurrency {}", w.concurrency.get()),
    };
    if let Some(l) = &report.worker_limit {
        limit.push_str(&format!("; {l}"));
    }
    let mut s = format!(
        "worker waves ({limit}; never two nodes with one {} value at once; each worker Job that ends starts the next pending one):\n",
        w.topology_label.as_str()
    );
    for (i, wave) in report.waves.iter().enumerate() {
        s.push_str(&format!("  wave {}: {}\n", i + 1, wave.join(", ")));
    }
    s
}

/// The text form of a plan: a header, then one row per Job, then the nodes already on target
/// that get no Job. A target every node runs says "nothing to do" and plans nothing.
pub fn plan_text(report: &PlanReport) -> String {
    if report.nothing_to_do {
        return format!("nothing to do: every node is on v{} (no Job is planned)\n", report.target);
    }
    let mut s = format!(
        "target {} ({} upgrade; running {}, the oldest kubelet)\n",
        report.target, report.kind, report.running
    );
    let rows: Vec<[String; 6]> = report
        .jobs
        .iter()
        .enumerate()
        .map(|(i, j)| {
            [
                (i + 1).to_string(),
                j.job_name.clone(),
                j.step.phase().to_string(),
                j.step.node().unwrap_or("-").to_string(),
                j.placement.run_on.clone(),
                describe_tolerations(&j.placement.tolerations)
                    + if j.skip { "  (on target: skips its work)" } else { "" },
            ]
        })
        .collect();
    let header = ["#", "JOB", "PHASE", "NODE", "RUNS ON", "TOLERATIONS"].map(String::from);
    let mut widths = [0usize; 6];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        s.push_str(line.join("  ").trim_end());
        s.push('\n');
    }
    if !report.on_target_without_job.is_empty() {
        s.push_str(&format!(
            "on target (no Job: the chain passes over them): {}\n",
            report.on_target_without_job.join(", ")
        ));
    }
    s
}

fn describe_tolerations(t: &[Toleration]) -> String {
    if t.is_empty() {
        return "-".into();
    }
    t.iter()
        .map(|t| format!("{}:{}", t.key.as_deref().unwrap_or("*"), t.effect.as_deref().unwrap_or("*")))
        .collect::<Vec<_>>()
        .join(",")
}

async fn render_command(settings: &Settings, context: Option<&str>, args: &RenderArgs) -> anyhow::Result<()> {
    let step = &args.step;
    let (placement, kind) = match (&args.run_on, args.kind) {
        // Offline: no client is built (QA B1). The taints of the node are not checked; the
        // computed placement below (without --run-on) is the one that reads them.
        (Some((run_on, tolerations)), Some(kind)) => {
            (Placement { run_on: run_on.to_string(), tolerations: tolerations.clone() }, kind)
        }
        _ => {
            let clients = k8s::connect(context).await?;
            let snap = snapshot(&clients, settings).await?;
            step.validate(&snap)?;
            // The planner's rule holds with or without --kind: never a downgrade.
            let checked = plan::check_target(&snap, args.version)?;
            let kind = args.kind.unwrap_or(checked);
            (plan::placement(&snap, step)?, kind)
        }
    };
    let (template, origin) = crate::config::load_template(settings)?;
    let req =
        JobRequest { step, target: args.version, kind, image: args.image.as_str(), placement: &placement };
    let job = job::render(settings, &template, &origin, &req)?;
    print!("{}", job::to_yaml(&job));
    Ok(())
}
