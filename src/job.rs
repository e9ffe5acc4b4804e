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

/// `k8s-upgrade-<phase>-<X-Y-Z>[-<node>]`, at most 63 characters: a longer name keeps its
/// head and ends in `-` plus 8 hex digits of a hash of the full name, so it stays unique and
/// deterministic. The master Job keeps the seed's node-less name `k8s-upgrade-master-<X-Y-Z>`
/// (there is one per target, and existing alerts and runbooks know it by that name).
pub fn job_name(phase: Phase, version: Version, node: Option<&str>) -> String {
    let mut full = format!("k8s-upgrade-{}-{}", phase.as_str(), version.label());
    if let Some(node) = node.filter(|_| matches!(phase, Phase::ControlPlane | Phase::Worker)) {
        full.push('-');
        full.push_str(node);
    }
    fit_name(&full)
}

/// Shortens a name to [`MAX_NAME`] with a hash suffix when needed.
pub fn fit_name(full: &str) -> String {
    if full.len() <= MAX_NAME {
        return full.to_string();
    }
    let hash = format!("{:08x}", fnv1a32(full.as_bytes()));
    let head = full[..MAX_NAME - 1 - hash.len()].trim_end_matches(['-', '.']);
    format!("{head}-{hash}")
}

fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c9dc5u32, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
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
