//! Chain Jobs: deterministic names, the deadline of each phase, and rendering the template into
//! a typed `Job`, and reading a Job's state back. Pure; applying lives in the binary's
//! `k8s::spawn`, and reading a template override file in its `chain` module.
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
pub const BUILTIN_TEMPLATE: &str = include_str!("../../../templates/job.yaml.j2");

/// Label every chain Job carries (`app=k8s-upgrade-chain`).
pub const APP_LABEL: &str = "k8s-upgrade-chain";

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
///
/// The settings' bounds (`crate::duration`) keep the sum near days; the arithmetic saturates
/// all the same, so no setting can make it panic.
pub fn active_deadline(settings: &Settings, phase: Phase) -> Duration {
    let t = &settings.timeouts;
    let sum = |ds: &[Duration]| ds.iter().fold(Duration::ZERO, |a, d| a.saturating_add(*d));
    let work = match phase {
        // Probes, plan and diff, the etcd snapshot, the containerd fix and its Ready wait.
        Phase::Preflight => sum(&[t.probe.saturating_mul(6), t.etcd_snapshot, t.node_ready]),
        Phase::Master | Phase::ControlPlane => sum(&[
            settings.drain.timeout,
            settings.ssh.command_timeout,
            t.node_ready,
            t.probe.saturating_mul(3),
        ]),
        Phase::Worker => {
            sum(&[t.alert_wait, settings.drain.timeout, settings.ssh.command_timeout, t.node_ready, t.soak])
        }
        Phase::Postflight => t.probe.saturating_mul(2),
    };
    // Spawning the next Job may wait for a Failed one to be deleted first.
    sum(&[work, t.job_delete, settings.job.deadline_margin])
}

/// The annotation naming the node a chain Job acts on (the template sets it).
pub const TARGET_NODE_ANNOTATION: &str = "k8s-upgrade-chain/target-node";

/// The node a chain Job acts on, from [`TARGET_NODE_ANNOTATION`]; `None` for preflight and
/// postflight Jobs (and Jobs from templates that dropped it).
pub fn target_node(job: &Job) -> Option<&str> {
    job.metadata.annotations.as_ref()?.get(TARGET_NODE_ANNOTATION).map(String::as_str)
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
    #[error("invalid image reference {}: {reason}", crate::names::shorten(image))]
    BadImage { image: String, reason: String },
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
    ttl_seconds: i32,
    active_deadline_seconds: i64,
    tool_version: &'a str,
}

/// Renders the Job text (before parsing).
pub fn render_text(
    settings: &Settings,
    template: &str,
    origin: &str,
    req: &JobRequest<'_>,
) -> Result<String, RenderError> {
    crate::image::ImageRef::parse(req.image)
        .map_err(|reason| RenderError::BadImage { image: req.image.to_string(), reason })?;
    let name = req.step.job_name(req.target);
    let ctx = Context {
        job_name: &name,
        namespace: &settings.namespace,
        phase: req.step.phase().as_str(),
        target_node: req.step.node().unwrap_or(""),
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
        // Both bounded when read (`crate::duration::TTL`, `DEADLINE`): the clamps only keep
        // settings built in code within the API's types.
        ttl_seconds: i32::try_from(settings.job.ttl_after_finished.as_secs()).unwrap_or(i32::MAX),
        active_deadline_seconds: i64::try_from(active_deadline(settings, req.step.phase()).as_secs())
            .unwrap_or(i64::MAX),
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
    let want_name = req.step.job_name(req.target);
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

/// The state of an existing Job, from its conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Active,
    Complete,
    Failed,
}

/// Reads a Job's state from its `Complete` / `Failed` conditions.
pub fn job_state(job: &Job) -> JobState {
    let has = |kind: &str| {
        job.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == kind && c.status == "True"))
    };
    if has("Failed") {
        JobState::Failed
    } else if has("Complete") {
        JobState::Complete
    } else {
        JobState::Active
    }
}

/// Serialises a Job as YAML for `render` output (`... | kubectl apply -f -`).
pub fn to_yaml(job: &Job) -> String {
    serde_saphyr::to_string(job).expect("a typed Job always serialises")
}
