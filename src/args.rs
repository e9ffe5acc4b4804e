//! The one validation step: raw flags and env vars ([`crate::cli`]), the config file and the
//! input files become validated arguments before anything connects.
//!
//! Every value is checked by the Kubernetes rule of the field it ends up in (node names as
//! DNS-1123 subdomains, images as references the kubelet pulls, schedules as the apiserver
//! parses them, toleration keys as qualified names), and an error names the flag and its env
//! var (exit 2). The commands ([`crate::commands`]) take only these types, so a command cannot
//! start with an invalid value.

use std::path::Path;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Node, Toleration};

use chain_core::{
    cron::CronSchedule,
    image::ImageRef,
    names::{NodeName, shorten},
    plan::{Kind, Phase, Snapshot, Step},
    settings::Settings,
    version::Version,
};

use crate::{
    cli::{self, Cli, Command, Output},
    exit::bad_input,
    rehearse::generated::ClusterSize,
};

/// A validated invocation: the settings, the kubeconfig context and the command.
#[derive(Debug)]
pub struct Invocation {
    /// The config file with every default filled in, validated.
    pub settings: Settings,
    /// `--context` / `KUBE_CONTEXT`.
    pub context: Option<String>,
    /// The command and its validated arguments.
    pub command: Resolved,
}

/// Each command with its validated arguments.
#[derive(Debug)]
pub enum Resolved {
    Plan(PlanArgs),
    Render(RenderArgs),
    Detect(DetectArgs),
    Step(StepArgs),
    Drain(NodeArgs),
    Uncordon(NodeArgs),
    /// `ack`: the node whose failed upgrade an operator acknowledges.
    Ack(NodeArgs),
    Rehearse(RehearseArgs),
    Config,
    Version,
    Manifests(Box<ManifestsArgs>),
    Status(cli::StatusArgs),
    Report(cli::ReportArgs),
}

/// `plan`: the target, the output format and, with `--nodes-file`, the snapshot it holds.
#[derive(Debug)]
pub struct PlanArgs {
    pub version: Version,
    pub output: Output,
    /// Built from `--nodes-file` (names checked, no duplicates); `None` reads the cluster.
    pub snapshot: Option<Snapshot>,
    /// The failure domains of the nodes of `--nodes-file` (`workers.topology_label`), for the
    /// worker waves.
    pub zones: std::collections::BTreeMap<String, String>,
}

/// `render`: the step, target, kind, image and, with `--run-on`, the placement given.
#[derive(Debug)]
pub struct RenderArgs {
    pub step: Step,
    pub version: Version,
    pub kind: Option<Kind>,
    pub image: ImageRef,
    /// `--run-on` and its `--toleration`s; `None` computes the placement from the cluster.
    pub run_on: Option<(NodeName, Vec<Toleration>)>,
}

/// `detect`.
#[derive(Debug)]
pub struct DetectArgs {
    pub dry_run: bool,
    pub image: ImageRef,
}

/// `step`: everything a chain Job's env gives it.
#[derive(Debug)]
pub struct StepArgs {
    pub step: Step,
    pub version: Version,
    pub kind: Kind,
    pub image: ImageRef,
}

/// `drain` and `uncordon`.
#[derive(Debug)]
pub struct NodeArgs {
    pub node: NodeName,
    pub dry_run: bool,
}

/// `rehearse`.
#[derive(Debug)]
pub struct RehearseArgs {
    pub from_cluster: bool,
    pub version: Option<Version>,
    /// `--nodes` and `--pods-per-node`: a generated cluster instead of the built-in one.
    pub size: Option<ClusterSize>,
    /// 1 to [`MAX_SPEED`].
    pub speed: f64,
    pub output: Output,
}

/// The largest `--speed`: a 45 min upgrade script then takes 27 ms, already below what the
/// simulator can measure.
pub const MAX_SPEED: f64 = 100_000.0;

/// `manifests`: the flags, and the config file and Job template the ConfigMap carries.
#[derive(Debug)]
pub struct ManifestsArgs {
    pub image: ImageRef,
    pub schedule: CronSchedule,
    pub report_schedule: CronSchedule,
    pub dry_run: bool,
    pub suspend: bool,
    pub prometheus_rule: bool,
    pub alert_rules: bool,
    /// The `--config` file as written (comments kept), or the defaults.
    pub config_yaml: String,
    /// The `job.template` override: its ConfigMap key and its text.
    pub job_template: Option<(String, String)>,
}

/// Resolves the raw command line: loads and validates the config, then every flag of the
/// command. Reads files (config, template, node list), never the network.
pub fn resolve(cli: Cli) -> anyhow::Result<Invocation> {
    let config_path = cli.global.config.as_deref();
    let settings = crate::config::load_or_default(config_path)?;
    // Known from here on, the secrets are masked in every error and log line (QA A5).
    crate::exit::register_secret_files(&settings);
    let context = match cli.global.context {
        Some(c) => Some(context_name(&c)?),
        None => None,
    };
    let command = match cli.command {
        Command::Plan(a) => Resolved::Plan(plan(&settings, a)?),
        Command::Render(a) => Resolved::Render(render(a)?),
        Command::Detect(a) => Resolved::Detect(DetectArgs { dry_run: a.dry_run, image: image(&a.image)? }),
        Command::Step(a) => Resolved::Step(StepArgs {
            step: step(&a.phase, a.node.as_deref())?,
            version: version(&a.version)?,
            kind: kind(&a.kind)?,
            image: image(&a.image)?,
        }),
        Command::Drain(a) => Resolved::Drain(NodeArgs { node: node_arg(&a.node)?, dry_run: a.dry_run }),
        Command::Uncordon(a) => Resolved::Uncordon(NodeArgs { node: node_arg(&a.node)?, dry_run: false }),
        Command::Ack(a) => Resolved::Ack(NodeArgs { node: node_arg(&a.node)?, dry_run: false }),
        Command::Rehearse(a) => Resolved::Rehearse(RehearseArgs {
            from_cluster: a.from_cluster,
            version: a.version.as_deref().map(version).transpose()?,
            size: a.nodes.as_deref().map(|n| cluster_size(n, &a.pods_per_node)).transpose()?,
            speed: speed(&a.speed)?,
            output: a.output,
        }),
        Command::Config => Resolved::Config,
        Command::Version => Resolved::Version,
        Command::Manifests(a) => Resolved::Manifests(Box::new(manifests(&settings, config_path, a)?)),
        Command::Status(a) => Resolved::Status(a),
        Command::Report(a) => Resolved::Report(a),
    };
    Ok(Invocation { settings, context, command })
}

fn invalid(input: &str, value: &str, reason: impl std::fmt::Display) -> anyhow::Error {
    bad_input(anyhow::anyhow!("invalid {input} {}: {reason}", shorten(value)))
}

/// `--version` / `TARGET_VERSION`.
pub fn version(s: &str) -> anyhow::Result<Version> {
    s.parse::<Version>().map_err(|_| {
        invalid(
            "--version / TARGET_VERSION",
            s,
            "expected a Kubernetes version X.Y.Z (an optional leading 'v')",
        )
    })
}

fn kind(s: &str) -> anyhow::Result<Kind> {
    s.parse().map_err(|_: String| invalid("--kind / KIND", s, "expected patch or minor"))
}

fn phase(s: &str) -> anyhow::Result<Phase> {
    s.parse().map_err(|_: String| {
        invalid(
            "--phase / PHASE",
            s,
            "unknown phase: expected one of preflight, master, control-plane, worker, postflight",
        )
    })
}

/// A node name given on the command line (`--node`, `TARGET_NODE`, `NODE`).
fn node_arg(s: &str) -> anyhow::Result<NodeName> {
    NodeName::parse(s).map_err(|r| invalid("node name (NODE / TARGET_NODE)", s, r))
}

/// `PHASE` and `TARGET_NODE` as a step: the node checked as a node name, and paired with the
/// phase (node phases need one, preflight and postflight take none). An empty `TARGET_NODE`
/// is none (the Job template sets it empty for preflight and postflight).
fn step(phase_raw: &str, node: Option<&str>) -> anyhow::Result<Step> {
    let phase = phase(phase_raw)?;
    let node = node.filter(|n| !n.is_empty());
    if let Some(n) = node {
        NodeName::parse(n).map_err(|r| invalid("node name (--node / TARGET_NODE)", n, r))?;
    }
    Step::from_parts(phase, node).map_err(bad_input)
}

/// `--image` / `IMAGE`: a reference the kubelet can pull.
fn image(s: &str) -> anyhow::Result<ImageRef> {
    ImageRef::parse(s).map_err(|r| invalid("image (--image / IMAGE)", s, r))
}

/// `--speed` / `REHEARSE_SPEED`.
fn speed(s: &str) -> anyhow::Result<f64> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (1.0..=MAX_SPEED).contains(&v) => Ok(v),
        _ => Err(invalid(
            "speed (--speed / REHEARSE_SPEED)",
            s,
            format!("expected a number from 1 to {MAX_SPEED}"),
        )),
    }
}

/// `--nodes` / `REHEARSE_NODES` and `--pods-per-node` / `REHEARSE_PODS_PER_NODE`: whole
/// numbers, then a size within Kubernetes' documented limits ([`ClusterSize::new`]).
fn cluster_size(nodes: &str, pods_per_node: &str) -> anyhow::Result<ClusterSize> {
    use crate::rehearse::generated::{MAX_NODES, MAX_PODS_PER_NODE, MIN_NODES};
    let whole = |input: &str, s: &str, (min, max): (u32, u32)| {
        s.trim()
            .parse::<u32>()
            .map_err(|_| invalid(input, s, format!("expected a whole number from {min} to {max}")))
    };
    let n = whole("node count (--nodes / REHEARSE_NODES)", nodes, (MIN_NODES, MAX_NODES))?;
    let p = whole(
        "pods per node (--pods-per-node / REHEARSE_PODS_PER_NODE)",
        pods_per_node,
        (1, MAX_PODS_PER_NODE),
    )?;
    ClusterSize::new(n, p).map_err(|e| {
        bad_input(anyhow::anyhow!(
            "invalid cluster size (--nodes / REHEARSE_NODES, --pods-per-node / REHEARSE_PODS_PER_NODE): {e}"
        ))
    })
}

/// `--context` / `KUBE_CONTEXT`: a kubeconfig context name (non-empty, printable).
fn context_name(s: &str) -> anyhow::Result<String> {
    if s.is_empty() || s.len() > 253 || s.chars().any(char::is_control) {
        return Err(invalid("context (--context / KUBE_CONTEXT)", s, "must be a kubeconfig context name"));
    }
    Ok(s.to_string())
}

/// `--toleration` / `TOLERATIONS`: `KEY:EFFECT`, the key a qualified name (what the apiserver
/// requires of a toleration key), tolerated with `Exists`.
pub fn toleration(s: &str) -> anyhow::Result<Toleration> {
    let input = "--toleration / TOLERATIONS";
    let Some((key, effect)) = s.rsplit_once(':') else {
        return Err(invalid(
            input,
            s,
            "expected KEY:EFFECT with EFFECT NoSchedule, NoExecute or PreferNoSchedule",
        ));
    };
    if !matches!(effect, "NoSchedule" | "NoExecute" | "PreferNoSchedule") {
        return Err(invalid(input, s, "EFFECT must be NoSchedule, NoExecute or PreferNoSchedule"));
    }
    chain_core::names::check_qualified_name(key).map_err(|r| invalid(input, s, format!("the key {r}")))?;
    Ok(Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    })
}

fn render(a: cli::RenderArgs) -> anyhow::Result<RenderArgs> {
    let step = step(&a.phase, a.node.as_deref())?;
    let kind = a.kind.as_deref().map(kind).transpose()?;
    let run_on = match a.run_on {
        Some(raw) => {
            let run_on =
                NodeName::parse(&raw).map_err(|r| invalid("node name (--run-on / RUN_ON)", &raw, r))?;
            if kind.is_none() {
                return Err(bad_input(anyhow::anyhow!("--run-on needs --kind (patch or minor)")));
            }
            if step.node() == Some(run_on.as_str()) {
                return Err(bad_input(anyhow::anyhow!(
                    "--run-on {run_on} is the node this phase drains: a Job never runs on the node it drains"
                )));
            }
            let tolerations = a.tolerations.iter().map(|t| toleration(t)).collect::<anyhow::Result<_>>()?;
            Some((run_on, tolerations))
        }
        None => None,
    };
    Ok(RenderArgs { step, version: version(&a.version)?, kind, image: image(&a.image)?, run_on })
}

fn plan(settings: &Settings, a: cli::PlanArgs) -> anyhow::Result<PlanArgs> {
    let version = version(&a.version)?;
    let (snapshot, zones) = match &a.nodes_file {
        Some(path) => {
            let nodes = read_nodes_file(path)?;
            let snap = Snapshot::from_nodes(&nodes, &settings.control_plane_selector())
                .with_context(|| format!("nodes file {} (--nodes-file / NODES_FILE)", path.display()))
                .map_err(bad_input)?;
            (Some(snap), chain_core::waves::zones(&nodes, &settings.workers.topology_label))
        }
        None => (None, Default::default()),
    };
    Ok(PlanArgs { version, output: a.output, snapshot, zones })
}

fn manifests(
    settings: &Settings,
    config_path: Option<&Path>,
    a: cli::ManifestsArgs,
) -> anyhow::Result<ManifestsArgs> {
    let schedule = |flag: &str, s: &str| {
        CronSchedule::parse(s).map_err(|r| invalid(&format!("schedule ({flag})"), s, r))
    };
    let (config_yaml, job_template) = match config_path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("failed to read config file {}", p.display()))
                .map_err(bad_input)?;
            // The file as written (before `job.template` was resolved next to it).
            let raw = Settings::from_yaml(&text, &p.display().to_string()).map_err(bad_input)?;
            (text, job_template_entry(&raw, settings)?)
        }
        None => (chain_core::manifests::config_yaml(settings), None),
    };
    Ok(ManifestsArgs {
        image: image(&a.image)?,
        schedule: schedule("--schedule", &a.schedule)?,
        report_schedule: schedule("--report-schedule", &a.report_schedule)?,
        dry_run: a.dry_run,
        suspend: a.suspend,
        prometheus_rule: a.prometheus_rule,
        alert_rules: a.alert_rules,
        config_yaml,
        job_template,
    })
}

/// The config ConfigMap's copy of a `job.template` override: the key is the file name the
/// config file gives (`raw`, as written), the text is read from where [`crate::config::load`]
/// resolved it (`loaded`: next to the config file). An absolute path cannot be carried: it
/// names a file the Jobs would not have.
fn job_template_entry(raw: &Settings, loaded: &Settings) -> anyhow::Result<Option<(String, String)>> {
    let (Some(key), Some(path)) = (&raw.job.template, &loaded.job.template) else {
        return Ok(None);
    };
    if Path::new(key).is_absolute() {
        return Err(bad_input(anyhow::anyhow!(
            "job.template {key:?} is an absolute path, which the Jobs would not have: give a file name \
             next to the config file (e.g. `template: job.yaml.j2`) and `manifests` puts it into the \
             config ConfigMap"
        )));
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read the Job template {path} (job.template)"))
        .map_err(bad_input)?;
    Ok(Some((key.clone(), text)))
}

/// Reads nodes saved by `kubectl get nodes -o json` or `-o yaml` (a List or NodeList) or one
/// Node. JSON is read with serde_json (no size budget: a 5,000-node list is tens of MB); YAML
/// with serde-saphyr under a budget raised for node lists (its default, sized for config
/// files, refuses a 700-node list).
pub fn read_nodes_file(path: &Path) -> anyhow::Result<Vec<Node>> {
    let shown = path.display();
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("failed to read nodes from stdin")
    } else {
        std::fs::read_to_string(path).with_context(|| format!("failed to read nodes file {shown}"))
    }
    .map_err(bad_input)?;
    parse_nodes(&text, &shown.to_string())
}

/// Parses a node list (see [`read_nodes_file`]); `origin` names it in errors. A JSON list (what
/// `kubectl get nodes -o json` prints) is read straight into typed Nodes: an intermediate JSON
/// value tripled the peak memory of a 5,000-node list. A YAML list goes through a JSON value:
/// deserialising Nodes straight from serde-saphyr compiles a second copy of every Node type's
/// deserialiser into the binary, and that pushed the image over its 20 MB goal.
pub fn parse_nodes(text: &str, origin: &str) -> anyhow::Result<Vec<Node>> {
    /// The document's kind and, for a list, its items; a single Node is read again as one.
    #[derive(serde::Deserialize)]
    struct Doc {
        #[serde(default)]
        kind: String,
        #[serde(default)]
        items: Option<Vec<Node>>,
    }
    let json = text.trim_start().starts_with('{');
    let yaml = || {
        serde_saphyr::from_str_with_options::<serde_json::Value>(text, nodes_yaml_options())
            .map_err(|e| e.to_string())
    };
    // serde quotes the value it refused: a "node list" that is really a secret file must not
    // be echoed (QA A5).
    let redacted = |e: String| chain_core::redact::parser_message(&e);
    let (format, doc) = if json {
        ("JSON", serde_json::from_str::<Doc>(text).map_err(|e| e.to_string()))
    } else {
        ("YAML", yaml().and_then(|v| serde_json::from_value::<Doc>(v).map_err(|e| e.to_string())))
    };
    let doc = doc.map_err(|e| {
        bad_input(anyhow::anyhow!("nodes file {origin} is not a valid {format} node list: {}", redacted(e)))
    })?;
    match (doc.kind.as_str(), doc.items) {
        ("List" | "NodeList", Some(items)) => Ok(items),
        ("List" | "NodeList", None) => Ok(vec![]),
        ("Node", _) => {
            let node = if json {
                serde_json::from_str::<Node>(text).map_err(|e| e.to_string())
            } else {
                yaml().and_then(|v| serde_json::from_value::<Node>(v).map_err(|e| e.to_string()))
            };
            node.map(|n| vec![n]).map_err(|e| {
                bad_input(anyhow::anyhow!("nodes file {origin} has an invalid Node: {}", redacted(e)))
            })
        }
        (other, _) => Err(bad_input(anyhow::anyhow!(
            "nodes file {origin} holds kind {}; expected a List or NodeList of Nodes (kubectl get nodes -o json)",
            shorten(other)
        ))),
    }
}

/// serde-saphyr's budget raised for node lists: about 200 YAML nodes per Node (labels,
/// conditions, images), for 20,000 Nodes.
fn nodes_yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_events = 10_000_000;
    budget.max_nodes = 5_000_000;
    let mut options = chain_core::redact::yaml_options();
    options.budget = Some(budget);
    options
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nodes(n: usize) -> Vec<Node> {
        let mut out = chain_core::fixtures::cluster(3, n - 3, "v1.34.1");
        for (i, node) in out.iter_mut().enumerate() {
            let status = node.status.get_or_insert_with(Default::default);
            // The 50 images a kubelet reports by default (--node-status-max-images).
            status.images = Some(
                (0..50)
                    .map(|j| k8s_openapi::api::core::v1::ContainerImage {
                        names: Some(vec![
                            format!("registry.example.com/team-{j}/service-{j}@sha256:{:064x}", i * 31 + j),
                            format!("registry.example.com/team-{j}/service-{j}:v1.{j}.{i}"),
                        ]),
                        size_bytes: Some(1 << 24),
                    })
                    .collect(),
            );
        }
        out
    }

    /// Issue 13: a 700-node `kubectl get nodes` list (7 MB) exceeded the YAML parser's default
    /// budget; JSON is read without one, YAML under a budget raised for node lists.
    #[test]
    fn a_700_node_list_reads_as_json_and_as_yaml() {
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": nodes(700)});
        let json = serde_json::to_string_pretty(&list).unwrap(); // as kubectl prints it
        assert!(json.len() > 7_000_000, "{} bytes", json.len());
        assert_eq!(parse_nodes(&json, "nodes.json").unwrap().len(), 700);
        // What failed before: the same text through the YAML parser and its default budget.
        let as_yaml = serde_saphyr::from_str::<serde_json::Value>(&json);
        assert!(as_yaml.is_err(), "the YAML parser's default budget took a 700-node JSON list");
        let yaml = serde_saphyr::to_string(&list).unwrap();
        assert_eq!(parse_nodes(&yaml, "nodes.yaml").unwrap().len(), 700);
        let one = serde_json::to_string(&nodes(4)[0]).unwrap();
        assert_eq!(parse_nodes(&one, "node.json").unwrap().len(), 1);
        let e = parse_nodes(r#"{"kind":"PodList","items":[]}"#, "pods.json").unwrap_err().to_string();
        assert!(e.contains("PodList"), "{e}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn node_lists_and_flags_never_panic(
            text in prop_oneof![
                r#"\{"kind":"(List|Node|NodeList)","items":\[(\{"metadata":\{"name":"[a-zA-Z_é.-]{0,10}"\}\},?){0,3}\]\}"#,
                "(kind: (List|Node)\n)?items:\n(- metadata: \\{name: [a-z.-]{0,8}\\}\n){0,3}",
                ".{0,80}",
            ],
            flag in ".{0,40}",
        ) {
            let _ = parse_nodes(&text, "fuzz");
            if let Ok(t) = toleration(&flag) {
                prop_assert!(chain_core::names::check_qualified_name(t.key.as_deref().unwrap()).is_ok());
            }
            let _ = speed(&flag);
            let _ = version(&flag);
            let _ = context_name(&flag);
            if let Ok(s) = step("worker", Some(&flag)) {
                prop_assert!(NodeName::parse(s.node().unwrap()).is_ok());
            }
        }
    }
}
