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
    /// The template's own error, as its kind and line only: minijinja's alternate form quotes
    /// the template's source, and a template path pointing at a secret file must not print
    /// the secret (QA A5).
    /// Not a `#[source]`: an error chain would print minijinja's own text after it again.
    #[error("failed to render the Job template {origin}: {}", template_error(error))]
    Template { origin: String, error: minijinja::Error },
    /// The rendered text is not a batch/v1 Job. `message` is the parser's, with its location,
    /// without the rendered text ([`crate::redact::parser_message`]).
    #[error("the Job template {origin} did not render a valid batch/v1 Job: {message}")]
    Parse { origin: String, message: String },
    #[error(
        "the Job template {origin} rendered {field} = {}, expected {}",
        crate::names::shorten(got),
        crate::names::shorten(want)
    )]
    Mismatch { origin: String, field: &'static str, got: String, want: String },
    /// The Job lost something every chain Job needs ([`check_job`]).
    #[error("the Job template {origin} renders an unusable {phase} Job: {reason}")]
    Unusable { origin: String, phase: &'static str, reason: String },
}

/// A minijinja error as its kind, its line and its parser detail, never the template source
/// that `{:#}` adds (the detail names tokens by kind, never quotes the source). Printed once:
/// minijinja's `Display` already holds the detail, its `source()` is none.
fn template_error(e: &minijinja::Error) -> String {
    let mut s = e.kind().to_string();
    if let Some(detail) = e.detail() {
        s.push_str(": ");
        s.push_str(&crate::redact::parser_message(&crate::names::shorten_message(detail)));
    }
    if let Some(line) = e.line() {
        s.push_str(&format!(" (line {line})"));
    }
    s
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
    let tmpl_err = |error| RenderError::Template { origin: origin.to_string(), error };
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
    // No snippet, no `--- rendered ---` dump: a template that is really a secret file would
    // print the secret (QA A5).
    let job: Job =
        serde_saphyr::from_str_with_options(&text, crate::redact::yaml_options()).map_err(|e| {
            RenderError::Parse {
                origin: origin.to_string(),
                message: crate::redact::parser_message(&e.to_string()),
            }
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
    check_job(settings, req, &job).map_err(|reason| RenderError::Unusable {
        origin: origin.to_string(),
        phase: req.step.phase().as_str(),
        reason,
    })?;
    Ok(job)
}

/// Where every chain Job mounts the config ConfigMap (`CONFIG` is `config.yaml` in it).
pub const CONFIG_MOUNT_PATH: &str = "/etc/k8s-upgrade-chain";

/// What a chain Job must keep whatever the template says (QA A6): a pod spec; the placement,
/// pinned with a required node affinity whose every term is `matchFields` `metadata.name In
/// [run_on]` (the only field the apiserver supports in `matchFields`; a term without it would
/// let the scheduler pick any node, the drained one included) and no `nodeName` elsewhere;
/// and the config ConfigMap mounted at [`CONFIG_MOUNT_PATH`] (without it the Job cannot read
/// its config nor render the next Job).
pub fn check_job(settings: &Settings, req: &JobRequest<'_>, job: &Job) -> Result<(), String> {
    let pod = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .ok_or("it has no spec.template.spec (the pod)")?;
    let run_on = req.placement.run_on.as_str();
    let drained = req.step.node();
    if let Some(n) = pod.node_name.as_deref().filter(|n| !n.is_empty())
        && n != run_on
    {
        return Err(format!(
            "spec.template.spec.nodeName is {}, not the run-on node {}",
            crate::names::shorten(n),
            crate::names::shorten(run_on)
        ));
    }
    let terms = pod
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
        .map(|r| r.node_selector_terms.as_slice())
        .unwrap_or_default();
    if terms.is_empty() {
        return Err("it has no required node affinity: the Job must be pinned to its run-on node with \
                    matchFields metadata.name (the built-in template shows how), or it may land on the \
                    node it drains"
            .into());
    }
    for (i, term) in terms.iter().enumerate() {
        let fields = term.match_fields.as_deref().unwrap_or_default();
        if let Some(f) = fields.iter().find(|f| f.key != "metadata.name") {
            return Err(format!(
                "nodeSelectorTerms[{i}].matchFields has key {}: the apiserver supports only metadata.name \
                 there",
                crate::names::shorten(&f.key)
            ));
        }
        let pinned = fields.iter().any(|f| {
            f.operator == "In" && f.values.as_deref() == Some(std::slice::from_ref(&run_on.to_string()))
        });
        if !pinned {
            let why = match drained {
                Some(d) if fields.iter().any(|f| f.values.iter().flatten().any(|v| v == d)) => {
                    format!(" (it allows the drained node {})", crate::names::shorten(d))
                }
                _ => String::new(),
            };
            return Err(format!(
                "nodeSelectorTerms[{i}] does not pin the run-on node: expected matchFields metadata.name In \
                 [{run_on}]{why}"
            ));
        }
    }
    let config_volumes: Vec<&str> = pod
        .volumes
        .iter()
        .flatten()
        .filter(|v| v.config_map.as_ref().is_some_and(|c| c.name == settings.job.config_map))
        .map(|v| v.name.as_str())
        .collect();
    let mounted = pod.containers.iter().flat_map(|c| c.volume_mounts.iter().flatten()).any(|m| {
        m.mount_path.trim_end_matches('/') == CONFIG_MOUNT_PATH && config_volumes.contains(&m.name.as_str())
    });
    if !mounted {
        return Err(format!(
            "it does not mount the config ConfigMap {} (job.config_map) at {CONFIG_MOUNT_PATH}: the Job \
             could not read its config nor render the next Job",
            settings.job.config_map
        ));
    }
    Ok(())
}

/// The node names [`check_template`] renders with.
pub const SAMPLE_TARGET_NODE: &str = "template-check-target";
/// See [`SAMPLE_TARGET_NODE`].
pub const SAMPLE_RUN_ON: &str = "template-check-run-on";

/// Checks a Job template once, where it enters (settings load, QA A6): it renders, for every
/// phase and both kinds, with sample nodes and a toleration, a batch/v1 Job that passes
/// [`render`]'s checks (name, namespace, label) and [`check_job`]. The chain renders the same
/// way before it applies anything, so a template that passes here fails there only on values
/// the samples do not have.
pub fn check_template(settings: &Settings, template: &str, origin: &str) -> Result<(), RenderError> {
    let target: Version = "1.34.2".parse().expect("a valid version");
    let placement = Placement {
        run_on: SAMPLE_RUN_ON.into(),
        tolerations: vec![k8s_openapi::api::core::v1::Toleration {
            key: Some("node-role.kubernetes.io/control-plane".into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        }],
    };
    for phase in Phase::ALL {
        let node = phase.targets_a_node().then_some(SAMPLE_TARGET_NODE);
        let step = Step::from_parts(phase, node).expect("a node exactly for node phases");
        for kind in [Kind::Patch, Kind::Minor] {
            let req =
                JobRequest { step: &step, target, kind, image: crate::DEFAULT_IMAGE, placement: &placement };
            render(settings, template, origin, &req)?;
        }
    }
    Ok(())
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
