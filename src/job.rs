//! Chain Jobs: deterministic names, the deadline of each phase, and rendering the template into
//! a typed `Job`. Pure; applying lives in [`crate::spawn`].
//!
//! Rendering follows rust-ecosystem.md §4: strict undefined variables, escaping chosen
//! explicitly (JSON literals, never by file name: minijinja JSON-escapes `*.yaml` silently),
//! names built in Rust, and the text parsed into a typed `Job` before anything is applied.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;

use crate::{
    plan::{Kind, Phase, Placement, Step},
    settings::Settings,
    version::Version,
};

/// The built-in Job template, pinned into the binary so that the logic that renders a Job and
/// the template it renders always match (seed failure 9: a Job started 16 s after a ConfigMap
/// update ran the old script).
pub const BUILTIN_TEMPLATE: &str = include_str!("../templates/job.yaml.j2");

/// Label every chain Job carries (`app=k8s-upgrade-chain`).
pub const APP_LABEL: &str = "k8s-upgrade-chain";

/// Kubernetes caps label values (and so Job names, which become the `job-name` pod label) at 63.
pub const MAX_NAME: usize = 63;

/// `k8s-upgrade-<phase>-<X-Y-Z>[-<node>]`, a DNS-1123 label (see [`fit_name`]). The master Job
/// keeps the seed's node-less name `k8s-upgrade-master-<X-Y-Z>` (there is one per target, and
/// existing alerts and runbooks know it by that name).
pub fn job_name(phase: Phase, version: Version, node: Option<&str>) -> String {
    let mut full = format!("k8s-upgrade-{}-{}", phase.as_str(), version.label());
    if let Some(node) = node.filter(|_| matches!(phase, Phase::ControlPlane | Phase::Worker)) {
        full.push('-');
        full.push_str(node);
    }
    fit_name(&full)
}

/// Makes `full` a DNS-1123 label of at most [`MAX_NAME`] characters, deterministically.
///
/// A name that already is one is kept. Otherwise every character outside `[a-z0-9-]` (the
/// dots of an FQDN node name, upper case) becomes `-`, as much of that as fits is kept, and
/// `-` plus 16 hex digits of a 64-bit FNV-1a hash of the *original* name is appended: `a.b`
/// and `a-b` get different names, and so do two long names sharing their first 46 characters.
/// The apiserver warns on Job names with dots ("a DNS label is recommended"), and the pods
/// and hostnames of the Job inherit them.
pub fn fit_name(full: &str) -> String {
    let is_label = full.len() <= MAX_NAME
        && full.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !full.starts_with('-')
        && !full.ends_with('-');
    if is_label {
        return full.to_string();
    }
    let hash = format!("{:016x}", fnv1a64(full.as_bytes()));
    let readable: String =
        full.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let keep = readable.len().min(MAX_NAME - 1 - hash.len());
    let head = readable[..keep].trim_matches('-');
    if head.is_empty() {
        return format!("x{hash}");
    }
    format!("{head}-{hash}")
}

/// 64-bit FNV-1a: deterministic across builds and platforms (std's hasher is not).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// The node a chain Job's pod is pinned to: `nodeName`, else the one `metadata.name` of the
/// required node affinity's `matchFields` (how the template pins it), else the
/// `kubernetes.io/hostname` nodeSelector that Jobs rendered by earlier versions used.
pub fn pinned_node(spec: &k8s_openapi::api::core::v1::PodSpec) -> Option<String> {
    if let Some(n) = spec.node_name.clone().filter(|n| !n.is_empty()) {
        return Some(n);
    }
    let by_name = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
        .and_then(|r| {
            r.node_selector_terms.iter().flat_map(|t| t.match_fields.iter().flatten()).find_map(|f| {
                (f.key == "metadata.name" && f.operator == "In")
                    .then(|| f.values.as_ref().and_then(|v| v.first().cloned()))
                    .flatten()
            })
        });
    by_name.or_else(|| spec.node_selector.as_ref().and_then(|s| s.get("kubernetes.io/hostname")).cloned())
}

/// `activeDeadlineSeconds` of a phase's Job: the sum of the deadlines of the waits the phase
/// performs, plus `job.deadline_margin`. The seed had none and a hung drain wedged for days
/// (seed failure 39).
pub fn active_deadline(settings: &Settings, phase: Phase) -> Duration {
    let t = &settings.timeouts;
    let work = match phase {
        // Probes, plan and diff, the etcd snapshot, the containerd fix and its Ready wait.
        Phase::Preflight => t.probe * 6 + t.etcd_snapshot + t.node_ready,
        Phase::Master | Phase::ControlPlane => {
            settings.drain.timeout + settings.ssh.command_timeout + t.node_ready + t.probe * 3
        }
        Phase::Worker => {
            t.alert_wait + settings.drain.timeout + settings.ssh.command_timeout + t.node_ready + t.soak
        }
        Phase::Postflight => t.probe * 2,
    };
    // Spawning the next Job may wait for a Failed one to be deleted first.
    work + t.job_delete + settings.job.deadline_margin
}

/// Everything a rendered Job depends on.
#[derive(Debug, Clone)]
pub struct JobRequest<'a> {
    pub step: &'a Step,
    pub target: Version,
    pub kind: Kind,
    pub image: &'a str,
    pub placement: &'a Placement,
}

/// Why a Job could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("invalid image reference {0:?}: must be non-empty with no whitespace")]
    BadImage(String),
    #[error("failed to read the Job template {path}: {source}")]
    ReadTemplate {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to render the Job template {origin}: {source:#}")]
    Template {
        origin: String,
        #[source]
        source: minijinja::Error,
    },
    #[error(
        "the Job template {origin} did not render a valid batch/v1 Job: {message}\n--- rendered ---\n{text}"
    )]
    Parse { origin: String, message: String, text: String },
    #[error("the Job template {origin} rendered {field} = {got:?}, expected {want:?}")]
    Mismatch { origin: String, field: &'static str, got: String, want: String },
}

#[derive(Serialize)]
struct Context<'a> {
    job_name: &'a str,
    namespace: &'a str,
    phase: &'a str,
    target_node: &'a str,
    target_version: String,
    version_label: String,
    kind: &'a str,
    image: &'a str,
    run_on: &'a str,
    tolerations: &'a [k8s_openapi::api::core::v1::Toleration],
    service_account: &'a str,
    image_pull_secrets: Vec<serde_json::Value>,
    credentials_secret: &'a str,
    config_map: &'a str,
    scripts_config_map: &'a str,
    ttl_seconds: u64,
    active_deadline_seconds: u64,
    tool_version: &'a str,
}

/// The template text and where it came from (`builtin` or the configured path).
pub fn load_template(settings: &Settings) -> Result<(String, String), RenderError> {
    match &settings.job.template {
        None => Ok((BUILTIN_TEMPLATE.to_string(), "builtin".to_string())),
        Some(path) => std::fs::read_to_string(path)
            .map(|t| (t, path.clone()))
            .map_err(|source| RenderError::ReadTemplate { path: path.clone(), source }),
    }
}

/// Renders the Job text (before parsing).
pub fn render_text(
    settings: &Settings,
    template: &str,
    origin: &str,
    req: &JobRequest<'_>,
) -> Result<String, RenderError> {
    if req.image.is_empty() || req.image.chars().any(char::is_whitespace) {
        return Err(RenderError::BadImage(req.image.to_string()));
    }
    let name = job_name(req.step.phase, req.target, req.step.node.as_deref());
    let ctx = Context {
        job_name: &name,
        namespace: &settings.namespace,
        phase: req.step.phase.as_str(),
        target_node: req.step.node.as_deref().unwrap_or(""),
        target_version: req.target.to_string(),
        version_label: req.target.label(),
        kind: req.kind.as_str(),
        image: req.image,
        run_on: &req.placement.run_on,
        tolerations: &req.placement.tolerations,
        service_account: &settings.job.service_account,
        image_pull_secrets: settings
            .job
            .image_pull_secrets
            .iter()
            .map(|n| serde_json::json!({ "name": n }))
            .collect(),
        credentials_secret: &settings.job.credentials_secret,
        config_map: &settings.job.config_map,
        scripts_config_map: &settings.job.scripts_config_map,
        ttl_seconds: settings.job.ttl_after_finished.as_secs(),
        active_deadline_seconds: active_deadline(settings, req.step.phase).as_secs(),
        tool_version: env!("CARGO_PKG_VERSION"),
    };
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::Json);
    let tmpl_err = |source| RenderError::Template { origin: origin.to_string(), source };
    env.add_template("job", template).map_err(tmpl_err)?;
    env.get_template("job").and_then(|t| t.render(minijinja::value::Serde(&ctx))).map_err(tmpl_err)
}

/// Renders and parses the Job, and checks that the template kept the names we computed.
pub fn render(
    settings: &Settings,
    template: &str,
    origin: &str,
    req: &JobRequest<'_>,
) -> Result<Job, RenderError> {
    let text = render_text(settings, template, origin, req)?;
    let job: Job = serde_saphyr::from_str(&text).map_err(|e| RenderError::Parse {
        origin: origin.to_string(),
        message: e.to_string(),
        text: text.clone(),
    })?;
    let want_name = job_name(req.step.phase, req.target, req.step.node.as_deref());
    let checks = [
        ("metadata.name", job.metadata.name.clone().unwrap_or_default(), want_name),
        (
            "metadata.namespace",
            job.metadata.namespace.clone().unwrap_or_default(),
            settings.namespace.clone(),
        ),
        (
            "metadata.labels.app",
            job.metadata.labels.as_ref().and_then(|l| l.get("app")).cloned().unwrap_or_default(),
            APP_LABEL.to_string(),
        ),
    ];
    for (field, got, want) in checks {
        if got != want {
            return Err(RenderError::Mismatch { origin: origin.to_string(), field, got, want });
        }
    }
    Ok(job)
}

/// Serialises a Job as YAML for `render` output (`... | kubectl apply -f -`).
pub fn to_yaml(job: &Job) -> String {
    serde_saphyr::to_string(job).expect("a typed Job always serialises")
}
