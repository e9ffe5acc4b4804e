//! The site configuration: one YAML file (`--config` / `CONFIG`, a ConfigMap in production),
//! parsed into one validated [`Settings`] value. Everything site-specific of the seed system
//! (namespace, node roles, hooks such as quiescing tigera-operator) lives here, not in code.
//!
//! Every key is optional; a missing key takes the documented default (see
//! `docs/configuration.md` and [`Settings::default`]). Unknown keys, bad durations, bad URLs and
//! bad versions are errors that name the key and the value.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::names::{check_dns_label, check_dns_subdomain, check_label_key, check_label_value};

/// Validated settings for every command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Namespace of the chain Jobs, the kill switch and the state annotations.
    pub namespace: String,
    /// How control-plane nodes are recognised: a label key (`key`, present with any value) or
    /// `key=value`.
    pub control_plane_label: String,
    /// Prefix of the annotations this tool writes on nodes and on its namespace.
    pub annotation_prefix: String,
    /// How chain Jobs are built.
    pub job: JobSettings,
    /// Every wait of the seed system, with its deadline.
    pub timeouts: Timeouts,
    /// Site-specific hooks of the seed system.
    pub hooks: Hooks,
    /// The compatibility matrix checked by preflight.
    pub compat: crate::compat::CompatSettings,
    /// The Prometheus alert gate and pod-ready ratio.
    pub alerts: crate::alerts::AlertsConfig,
    /// Where metrics are pushed.
    pub pushgateway: crate::metrics::PushgatewayConfig,
    /// Slack notifications.
    pub slack: SlackConfig,
    /// SSH to the nodes (by InternalIP).
    pub ssh: SshConfig,
    /// Node drains.
    pub drain: crate::drain::DrainConfig,
    /// Worker concurrency: how many workers at once, PDB- and zone-safe ([`crate::waves`]).
    pub workers: crate::waves::WorkerSettings,
    /// Base URL of the Kubernetes apt repositories; `/v<X.Y>/deb/` is appended. Detection
    /// probes it for the next minor, and `update_k8s.sh` points apt at it.
    #[serde(with = "crate::alerts::url_str")]
    pub apt_repository: url::Url,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespace: "k8s-upgrade".into(),
            control_plane_label: "node-role.kubernetes.io/control-plane".into(),
            annotation_prefix: "k8s-upgrade-chain/".into(),
            job: JobSettings::default(),
            timeouts: Timeouts::default(),
            hooks: Hooks::default(),
            compat: Default::default(),
            alerts: Default::default(),
            pushgateway: Default::default(),
            slack: Default::default(),
            ssh: Default::default(),
            drain: Default::default(),
            workers: Default::default(),
            apt_repository: url::Url::parse(crate::node_ops::K8S_APT_BASE).expect("default apt base parses"),
        }
    }
}

/// How chain Jobs are rendered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobSettings {
    /// ServiceAccount of every chain Job.
    pub service_account: String,
    /// Image pull Secrets for the Job pods.
    pub image_pull_secrets: Vec<String>,
    /// Secret holding `ssh_key`, `known_hosts` and `slack_webhook`, mounted read-only.
    pub credentials_secret: String,
    /// ConfigMap holding this configuration (`config.yaml`, and the `template` file when one
    /// is configured), mounted read-only at `/etc/k8s-upgrade-chain` in every Job.
    pub config_map: String,
    /// `ttlSecondsAfterFinished` of chain Jobs.
    #[serde(with = "crate::duration::ttl")]
    pub ttl_after_finished: Duration,
    /// Added to the sum of a phase's own deadlines to give the Job's `activeDeadlineSeconds`.
    #[serde(with = "crate::duration::span")]
    pub deadline_margin: Duration,
    /// A Job template file to use instead of the built-in one: a file name next to the config
    /// file (in a cluster, a key of the config ConfigMap, so every Job that renders the next one
    /// has it through the config mount), or an absolute path.
    pub template: Option<String>,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            service_account: "k8s-upgrade-job".into(),
            image_pull_secrets: vec![],
            credentials_secret: "k8s-upgrade-creds".into(),
            config_map: "k8s-upgrade-config".into(),
            ttl_after_finished: Duration::from_secs(7 * 24 * 3600),
            deadline_margin: Duration::from_secs(15 * 60),
            template: None,
        }
    }
}

/// The deadlines of every wait. Defaults are the seed system's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Wait for a node to be Ready on the target version.
    #[serde(with = "crate::duration::deadline")]
    pub node_ready: Duration,
    /// Wait for blocking alerts to clear before draining a worker.
    #[serde(with = "crate::duration::span")]
    pub alert_wait: Duration,
    /// Re-check interval while waiting for alerts.
    #[serde(with = "crate::duration::interval")]
    pub alert_interval: Duration,
    /// Soak after each worker: alert checks spread over this time.
    #[serde(with = "crate::duration::span")]
    pub soak: Duration,
    /// Interval of the alert checks during the soak.
    #[serde(with = "crate::duration::interval")]
    pub soak_interval: Duration,
    /// No node's Ready condition may have changed within this window before preflight passes.
    #[serde(with = "crate::duration::settle")]
    pub settle_window: Duration,
    /// Wait for the pre-upgrade etcd snapshot Job.
    #[serde(with = "crate::duration::deadline")]
    pub etcd_snapshot: Duration,
    /// Deadline of one short SSH probe (versions, plan, diff).
    #[serde(with = "crate::duration::deadline")]
    pub probe: Duration,
    /// Wait for an old Job to be gone before it is re-created.
    #[serde(with = "crate::duration::deadline")]
    pub job_delete: Duration,
    /// How long a phase watches the next Job's pod start; a pod that cannot be scheduled or
    /// cannot pull its image within it is reported (the phase itself has succeeded).
    #[serde(with = "crate::duration::deadline")]
    pub job_start: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let m = |n: u64| Duration::from_secs(n * 60);
        Self {
            node_ready: m(15),
            alert_wait: m(30),
            alert_interval: m(1),
            soak: m(10),
            soak_interval: m(1),
            settle_window: Duration::from_secs(600),
            etcd_snapshot: Duration::from_secs(600),
            probe: m(5),
            job_delete: m(5),
            job_start: m(2),
        }
    }
}

/// Site hooks: what the seed system hard-coded for one cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Hooks {
    /// Deployments scaled to 0 around a control-plane upgrade and restored on every exit path
    /// (the seed quiesced tigera-operator: its crashloop IO storm broke kubeadm's watch).
    /// The replica count is saved in an annotation (`<annotation_prefix>quiesced-replicas`) in
    /// the same patch that scales to 0; a retried phase that skips its node and postflight
    /// restore whatever carries it. The seed's postflight forced tigera-operator to 1 replica
    /// unconditionally; restoring only what the chain saved keeps a Deployment's own count
    /// (not always 1) and leaves alone one an operator scaled to 0 on purpose.
    pub quiesce_deployments: Vec<QuiesceDeployment>,
    /// Scripts run on each control-plane node after its upgrade; failures only warn (the seed
    /// re-applied an OIDC `--authentication-config` that kubeadm dropped).
    pub post_control_plane_scripts: Vec<PostUpgradeScript>,
    /// The CronJob whose Job takes the pre-upgrade etcd snapshot.
    pub etcd_backup: Option<EtcdBackup>,
    /// Top-level keys of `/var/lib/kubelet/config.yaml` that `update_k8s.sh` restores after
    /// kubeadm rewrites the file (node-local kubelet tuning).
    pub preserve_kubelet_keys: Vec<String>,
    /// DaemonSets whose pods must be Running on a worker after its upgrade (a warning only).
    pub expected_daemonsets: Vec<String>,
    /// Upgrade without an etcd snapshot when `etcd_backup` is not set. Default false: the
    /// seed's rule is never to skip the snapshot.
    pub allow_no_etcd_snapshot: bool,
    /// Name that postflight resolves as its DNS smoke test; empty skips it.
    pub smoke_dns_name: Option<String>,
}

impl Default for Hooks {
    fn default() -> Self {
        Self {
            quiesce_deployments: vec![],
            post_control_plane_scripts: vec![],
            etcd_backup: None,
            preserve_kubelet_keys: vec![],
            expected_daemonsets: vec!["calico-node".into(), "kube-proxy".into()],
            allow_no_etcd_snapshot: false,
            smoke_dns_name: Some("kubernetes.default.svc.cluster.local".into()),
        }
    }
}

/// One Deployment to quiesce during control-plane upgrades.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuiesceDeployment {
    pub namespace: String,
    pub name: String,
}

/// A script from a ConfigMap, run over SSH on each upgraded control-plane node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostUpgradeScript {
    /// Short name used in logs and messages.
    pub name: String,
    pub configmap_namespace: String,
    pub configmap_name: String,
    pub configmap_key: String,
    /// After the script, this file on the node must contain `verify_contains`.
    pub verify_file: Option<String>,
    pub verify_contains: Option<String>,
}

/// The etcd backup CronJob used for the pre-upgrade snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdBackup {
    pub namespace: String,
    pub cronjob: String,
    /// Container whose log reports `Backup done: <file> (N bytes)`.
    pub container: Option<String>,
    /// Prefix of the recorded snapshot location (e.g. `nfs://server:/srv/etcd-backup/`).
    #[serde(default)]
    pub location_prefix: String,
    /// Snapshots smaller than this abort the upgrade.
    #[serde(default = "default_min_snapshot_bytes")]
    pub min_bytes: u64,
}

fn default_min_snapshot_bytes() -> u64 {
    1024
}

/// A configuration that could not be used. The message names the key and the value.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("failed to read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid YAML: {message}")]
    Yaml { path: String, message: String },
    /// The document is a sequence or a scalar: serde would map a sequence onto the fields by
    /// position (QA A8).
    #[error("config file {path}: the top level must be a mapping of config keys, got {got}")]
    NotMapping { path: String, got: &'static str },
    #[error("config file {path}: key `{key}`: {message}")]
    Key { path: String, key: String, message: String },
    #[error("config file {path}: key `{key}` has invalid value {}: {reason}", crate::names::shorten(value))]
    Invalid { path: String, key: String, value: String, reason: String },
}

impl Settings {
    /// Reads and validates a config file.
    /// Parses and validates YAML text; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, SettingsError> {
        // YAML -> JSON value -> typed, so that serde_path_to_error can name the failing key.
        let value: serde_json::Value = if text.trim().is_empty() {
            serde_json::Value::Object(Default::default())
        } else {
            // No source snippet, quoted values cut: the file may be a secret given by mistake
            // (`--config` pointing at the SSH key, QA A5).
            serde_saphyr::from_str_with_options(text, crate::redact::yaml_options()).map_err(|e| {
                SettingsError::Yaml {
                    path: origin.into(),
                    message: crate::redact::parser_message(&e.to_string()),
                }
            })?
        };
        let value = match value {
            serde_json::Value::Null => serde_json::Value::Object(Default::default()),
            serde_json::Value::Object(m) => serde_json::Value::Object(m),
            // serde maps a sequence onto a struct's fields by position (`- a` became the
            // namespace, QA A8), and a scalar would be quoted back in the message.
            other => {
                let got = match other {
                    serde_json::Value::Array(_) => "a sequence",
                    serde_json::Value::String(_) => "a string",
                    serde_json::Value::Number(_) => "a number",
                    _ => "a boolean",
                };
                return Err(SettingsError::NotMapping { path: origin.into(), got });
            }
        };
        let settings: Settings = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            let message = crate::redact::parser_message(&e.into_inner().to_string());
            SettingsError::Key { path: origin.into(), key, message }
        })?;
        settings.validate(origin)?;
        Ok(settings)
    }

    /// Checks what serde cannot: names, label syntax, non-zero deadlines.
    pub fn validate(&self, origin: &str) -> Result<(), SettingsError> {
        let invalid = |key: &str, value: &str, reason: &str| SettingsError::Invalid {
            path: origin.into(),
            key: key.into(),
            value: value.into(),
            reason: reason.into(),
        };
        check_dns_label(&self.namespace).map_err(|r| invalid("namespace", &self.namespace, &r))?;
        ControlPlaneSelector::parse(&self.control_plane_label)
            .map_err(|r| invalid("control_plane_label", &self.control_plane_label, &r))?;
        check_annotation_prefix(&self.annotation_prefix)
            .map_err(|r| invalid("annotation_prefix", &self.annotation_prefix, &r))?;
        for (key, name) in [
            ("job.service_account", &self.job.service_account),
            ("job.credentials_secret", &self.job.credentials_secret),
            ("job.config_map", &self.job.config_map),
        ] {
            check_dns_subdomain(name).map_err(|r| invalid(key, name, &r))?;
        }
        if let Some(t) = &self.job.template {
            check_template_path(t).map_err(|r| invalid("job.template", t, &r))?;
        }
        // Paths of secret files, never the secrets: a URL here was accepted, printed by
        // `config` and written into the ConfigMap by `manifests` (QA A5). Only the scheme is
        // shown.
        for (key, p) in
            [("slack.webhook_file", &self.slack.webhook_file), ("ssh.key_file", &self.ssh.key_file)]
        {
            let p = p.to_string_lossy();
            let lower = p.to_ascii_lowercase();
            let url = lower.starts_with("http:") || lower.starts_with("https:");
            if let Some((scheme, _)) = p.split_once("://").or(url.then(|| p.split_once(':')).flatten()) {
                return Err(SettingsError::Key {
                    path: origin.into(),
                    key: key.into(),
                    message: format!(
                        "must be the path of the file holding the secret, not the secret itself (got a value \
                         starting {}://…; put the URL or key into the file, e.g. the credentials Secret)",
                        crate::names::shorten(&scheme.chars().take(16).collect::<String>()).trim_matches('"')
                    ),
                });
            }
        }
        for (i, s) in self.job.image_pull_secrets.iter().enumerate() {
            check_dns_subdomain(s).map_err(|r| invalid(&format!("job.image_pull_secrets[{i}]"), s, &r))?;
        }
        let t = &self.timeouts;
        for (key, d) in [
            ("timeouts.node_ready", t.node_ready),
            ("timeouts.alert_interval", t.alert_interval),
            ("timeouts.soak_interval", t.soak_interval),
            ("timeouts.etcd_snapshot", t.etcd_snapshot),
            ("ssh.command_timeout", self.ssh.command_timeout),
            ("ssh.connect_timeout", self.ssh.connect_timeout),
            ("timeouts.probe", t.probe),
            ("timeouts.job_delete", t.job_delete),
            ("job.ttl_after_finished", self.job.ttl_after_finished),
        ] {
            if d.is_zero() {
                return Err(invalid(key, "0s", "must be greater than zero"));
            }
        }
        for (i, q) in self.hooks.quiesce_deployments.iter().enumerate() {
            let key = format!("hooks.quiesce_deployments[{i}]");
            check_dns_label(&q.namespace)
                .map_err(|r| invalid(&format!("{key}.namespace"), &q.namespace, &r))?;
            check_dns_subdomain(&q.name).map_err(|r| invalid(&format!("{key}.name"), &q.name, &r))?;
        }
        for (i, s) in self.hooks.post_control_plane_scripts.iter().enumerate() {
            let key = format!("hooks.post_control_plane_scripts[{i}]");
            check_dns_label(&s.configmap_namespace)
                .map_err(|r| invalid(&format!("{key}.configmap_namespace"), &s.configmap_namespace, &r))?;
            check_dns_subdomain(&s.configmap_name)
                .map_err(|r| invalid(&format!("{key}.configmap_name"), &s.configmap_name, &r))?;
            if s.verify_file.is_some() != s.verify_contains.is_some() {
                return Err(invalid(
                    &format!("{key}.verify_file"),
                    s.verify_file.as_deref().unwrap_or(""),
                    "verify_file and verify_contains go together",
                ));
            }
        }
        if let Some(b) = &self.hooks.etcd_backup {
            check_dns_label(&b.namespace)
                .map_err(|r| invalid("hooks.etcd_backup.namespace", &b.namespace, &r))?;
            check_dns_subdomain(&b.cronjob)
                .map_err(|r| invalid("hooks.etcd_backup.cronjob", &b.cronjob, &r))?;
        }
        self.drain.validate().map_err(|message| SettingsError::Key {
            path: origin.into(),
            key: "drain".into(),
            message: crate::names::shorten_message(&message),
        })?;
        let key_err = |key: &str, message: String| SettingsError::Key {
            path: origin.into(),
            key: key.into(),
            message: crate::names::shorten_message(&message),
        };
        crate::alerts::Policy::from_config(&self.alerts).map_err(|e| key_err("alerts", e.to_string()))?;
        if let Some(min) = self.alerts.min_pod_ready_ratio
            && !(0.0..=1.0).contains(&min)
        {
            return Err(invalid("alerts.min_pod_ready_ratio", &min.to_string(), "must be between 0 and 1"));
        }
        self.compat.validate().map_err(|message| SettingsError::Key {
            path: origin.into(),
            key: "compat".into(),
            message: crate::names::shorten_message(&message),
        })?;
        for (i, a) in self.compat.addons.iter().enumerate() {
            let key = format!("compat.addons[{i}]");
            if a.name.is_empty() || a.name.len() > 63 || a.name.chars().any(char::is_control) {
                return Err(invalid(&format!("{key}.name"), &a.name, "must be 1 to 63 printable characters"));
            }
            check_dns_label(&a.namespace)
                .map_err(|r| invalid(&format!("{key}.namespace"), &a.namespace, &r))?;
            check_dns_subdomain(&a.resource)
                .map_err(|r| invalid(&format!("{key}.resource"), &a.resource, &r))?;
        }
        for (i, d) in self.hooks.expected_daemonsets.iter().enumerate() {
            check_dns_subdomain(d).map_err(|r| invalid(&format!("hooks.expected_daemonsets[{i}]"), d, &r))?;
        }
        for (i, s) in self.hooks.post_control_plane_scripts.iter().enumerate() {
            let key = format!("hooks.post_control_plane_scripts[{i}]");
            check_configmap_key(&s.configmap_key)
                .map_err(|r| invalid(&format!("{key}.configmap_key"), &s.configmap_key, &r))?;
            if s.name.is_empty() || s.name.chars().any(char::is_control) {
                return Err(invalid(&format!("{key}.name"), &s.name, "must be a non-empty printable name"));
            }
        }
        if let Some(b) = &self.hooks.etcd_backup
            && let Some(c) = &b.container
        {
            check_dns_label(c).map_err(|r| invalid("hooks.etcd_backup.container", c, &r))?;
        }
        if let Some(name) = self.hooks.smoke_dns_name.as_deref().filter(|n| !n.is_empty()) {
            check_dns_subdomain(&name.trim_end_matches('.').to_ascii_lowercase())
                .map_err(|r| invalid("hooks.smoke_dns_name", name, &format!("must be a DNS name: {r}")))?;
        }
        if self.ssh.port == 0 {
            return Err(invalid("ssh.port", "0", "must be between 1 and 65535"));
        }
        check_ssh_user(&self.ssh.user).map_err(|r| invalid("ssh.user", &self.ssh.user, &r))?;
        for (i, sev) in self.alerts.blocking_severities.iter().enumerate() {
            if sev.is_empty() {
                return Err(invalid(
                    &format!("alerts.blocking_severities[{i}]"),
                    sev,
                    "must not be empty: no alert's severity label is",
                ));
            }
            check_label_value(sev)
                .map_err(|r| invalid(&format!("alerts.blocking_severities[{i}]"), sev, &r))?;
        }
        for (key, q) in [
            ("alerts.pod_ready_query", &self.alerts.pod_ready_query),
            ("compat.deprecated_api_query", &self.compat.deprecated_api_query),
        ] {
            if q.trim().is_empty() {
                return Err(invalid(key, q, "must be a PromQL query"));
            }
        }
        for (i, k) in self.hooks.preserve_kubelet_keys.iter().enumerate() {
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(invalid(
                    &format!("hooks.preserve_kubelet_keys[{i}]"),
                    k,
                    "must be a top-level KubeletConfiguration key such as systemReserved",
                ));
            }
        }
        Ok(())
    }

    /// The control-plane selector, already validated.
    /// The settings as YAML, every key written out (what `config` prints; it loads back to
    /// the same settings).
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).expect("settings are plain data and always serialise")
    }

    pub fn control_plane_selector(&self) -> ControlPlaneSelector {
        ControlPlaneSelector::parse(&self.control_plane_label).expect("validated in Settings::validate")
    }

    /// The namespace-annotation settings (one prefix for every annotation this tool writes).
    pub fn annotations(&self) -> crate::annotations::AnnotationsConfig {
        crate::annotations::AnnotationsConfig { prefix: self.annotation_prefix.clone() }
    }
}

/// How control-plane nodes are told apart from workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlaneSelector {
    pub key: String,
    pub value: Option<String>,
}

impl ControlPlaneSelector {
    /// `key` (label present with any value) or `key=value`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (key, value) = match s.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (s, None),
        };
        check_label_key(key)?;
        if let Some(v) = value {
            check_label_value(v)?;
        }
        Ok(Self { key: key.into(), value: value.map(Into::into) })
    }

    /// True when a node with these labels is a control-plane node.
    pub fn matches(&self, labels: Option<&std::collections::BTreeMap<String, String>>) -> bool {
        match (labels.and_then(|l| l.get(&self.key)), &self.value) {
            (Some(_), None) => true,
            (Some(v), Some(want)) => v == want,
            (None, _) => false,
        }
    }
}

/// `job.template`: an absolute path, or a file name next to the config file. A relative path
/// must be a bare file name because in a cluster it is a key of the config ConfigMap (keys are
/// flat: `-`, `_`, `.` and alphanumerics), mounted beside `config.yaml`.
fn check_template_path(t: &str) -> Result<(), String> {
    if Path::new(t).is_absolute() {
        return Ok(());
    }
    let key_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if t.is_empty() || t.len() > 253 || !t.chars().all(key_char) || t == "." || t == ".." {
        return Err("must be an absolute path or a file name next to the config file (a ConfigMap key: \
                    letters, digits, '-', '_' and '.')"
            .into());
    }
    if t == CONFIG_KEY {
        return Err(format!("must not be {CONFIG_KEY}, the config file itself"));
    }
    Ok(())
}

/// Every duration key of the config file with its bounds (see [`crate::duration`]), as
/// docs/configuration.md lists them; a test checks each against what the file reader accepts.
pub const DURATION_BOUNDS: [(&str, crate::duration::Bounds); 24] = {
    use crate::duration::{DEADLINE, INTERVAL, REQUEST, SETTLE, SPAN, TTL};
    [
        ("job.ttl_after_finished", TTL),
        ("job.deadline_margin", SPAN),
        ("timeouts.node_ready", DEADLINE),
        ("timeouts.alert_wait", SPAN),
        ("timeouts.alert_interval", INTERVAL),
        ("timeouts.soak", SPAN),
        ("timeouts.soak_interval", INTERVAL),
        ("timeouts.settle_window", SETTLE),
        ("timeouts.etcd_snapshot", DEADLINE),
        ("timeouts.probe", DEADLINE),
        ("timeouts.job_delete", DEADLINE),
        ("timeouts.job_start", DEADLINE),
        ("alerts.request_timeout", REQUEST),
        ("pushgateway.timeout", REQUEST),
        ("slack.timeout", REQUEST),
        ("ssh.connect_timeout", REQUEST),
        ("ssh.command_timeout", DEADLINE),
        ("ssh.keepalive_interval", INTERVAL),
        ("drain.timeout", DEADLINE),
        ("drain.fallback_after", SPAN),
        ("drain.grace_period_override", SPAN),
        ("drain.kill_switch_interval", INTERVAL),
        ("drain.backoff_min", INTERVAL),
        ("drain.backoff_max", INTERVAL),
    ]
};

/// `annotation_prefix`: a DNS subdomain and `/`, optionally followed by the start of the name
/// (the seed site's `viktorbarzin.me/k8s-upgrade-` gives its old keys,
/// `viktorbarzin.me/k8s-upgrade-in-flight`, ...). Every key built from it must be a valid
/// annotation key (a qualified name).
fn check_annotation_prefix(prefix: &str) -> Result<(), String> {
    let Some((domain, _)) = prefix.split_once('/') else {
        return Err("must be a DNS subdomain followed by '/', e.g. k8s-upgrade-chain/".into());
    };
    check_dns_subdomain(domain).map_err(|r| format!("the part before '/' {r}"))?;
    for suffix in ANNOTATION_SUFFIXES {
        let key = format!("{prefix}{suffix}");
        check_label_key(&key)
            .map_err(|r| format!("gives the annotation key {key:?}, which is invalid: {r}"))?;
    }
    Ok(())
}

/// The names this tool appends to `annotation_prefix` (namespace in-flight record, quiesce).
pub const ANNOTATION_SUFFIXES: [&str; 4] = ["in-flight", "target", "snapshot-path", "quiesced-replicas"];

/// `ssh.user`: a POSIX user name as `useradd` takes it (letters, digits, `.`, `_`, `-`, not
/// starting with `-`, at most 32 characters).
fn check_ssh_user(user: &str) -> Result<(), String> {
    let ok = !user.is_empty()
        && user.len() <= 32
        && !user.starts_with('-')
        && user.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        return Err(
            "must be a user name: 1 to 32 letters, digits, '.', '_' or '-', not starting with '-'".into()
        );
    }
    Ok(())
}

/// A ConfigMap data key (`IsConfigMapKey`): 1 to 253 alphanumerics, `-`, `_` and `.`, not `.`
/// or `..`.
pub fn check_configmap_key(k: &str) -> Result<(), String> {
    let ok = !k.is_empty()
        && k.len() <= 253
        && k != "."
        && k != ".."
        && !k.starts_with("..")
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        return Err("a valid config key must consist of alphanumeric characters, '-', '_' or '.', at most \
                    253, and not be '.' or '..'"
            .into());
    }
    Ok(())
}

/// The key of the config file in the config ConfigMap (`CONFIG` is
/// `/etc/k8s-upgrade-chain/config.yaml` in every Job).
pub const CONFIG_KEY: &str = "config.yaml";

// === sections of outside systems without a pure core of their own ===

/// Default path of the file holding the webhook URL.
pub const DEFAULT_WEBHOOK_FILE: &str = "/secrets/k8s-upgrade/slack_webhook";

/// Slack settings (`slack:` in the config file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlackConfig {
    /// File containing the webhook URL. Default [`DEFAULT_WEBHOOK_FILE`]. Missing = disabled.
    pub webhook_file: PathBuf,
    /// Timeout of one post. Default `5s`.
    #[serde(with = "crate::duration::request")]
    pub timeout: Duration,
}

impl Default for SlackConfig {
    fn default() -> Self {
        Self { webhook_file: DEFAULT_WEBHOOK_FILE.into(), timeout: Duration::from_secs(5) }
    }
}

/// What to do with a host key that known_hosts does not list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyPolicy {
    /// Refuse unknown hosts (the default): every node's key must be in known_hosts.
    #[default]
    Strict,
    /// Trust on first use: an unknown host's key is remembered (in memory, for the life of
    /// this process) and accepted; a key that differs from a remembered or listed one is
    /// still refused. This is what the seed did (`StrictHostKeyChecking=accept-new` with a
    /// known_hosts in /tmp).
    AcceptNew,
}

/// SSH settings. Every field has a default; unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SshConfig {
    /// Remote user; it needs passwordless sudo. Default `k8s-upgrade`, a dedicated account
    /// (the seed used the operator's personal `wizard` account).
    pub user: String,
    /// Remote port. Default 22.
    pub port: u16,
    /// Private key (OpenSSH or PEM, no passphrase). Read into memory, so a Secret mounted
    /// with a too-open mode (0444) still works. Default `/secrets/k8s-upgrade/ssh_key`.
    pub key_file: PathBuf,
    /// OpenSSH known_hosts listing the nodes by InternalIP (`[ip]:port` for ports other than
    /// 22). Default `/secrets/k8s-upgrade/known_hosts`; may be absent with `accept-new`.
    pub known_hosts_file: PathBuf,
    /// `strict` (default) or `accept-new`.
    pub host_key_policy: HostKeyPolicy,
    /// Deadline for the TCP connect, and for each handshake/auth step. Default 10s.
    #[serde(with = "crate::duration::request")]
    pub connect_timeout: Duration,
    /// Overall deadline for a node upgrade script (`update_k8s.sh`). Default 45m. Probes
    /// set their own, shorter, deadlines on the request.
    #[serde(with = "crate::duration::deadline")]
    pub command_timeout: Duration,
    /// Interval of SSH keepalives while a command runs; a node that stops acknowledging for
    /// 4 intervals is treated as gone (TCP_USER_TIMEOUT). Default 15s.
    #[serde(with = "crate::duration::interval")]
    pub keepalive_interval: Duration,
}

impl Default for SshConfig {
    fn default() -> Self {
        Self {
            user: "k8s-upgrade".into(),
            port: 22,
            key_file: "/secrets/k8s-upgrade/ssh_key".into(),
            known_hosts_file: "/secrets/k8s-upgrade/known_hosts".into(),
            host_key_policy: HostKeyPolicy::Strict,
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(45 * 60),
            keepalive_interval: Duration::from_secs(15),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Settings, SettingsError> {
        Settings::from_yaml(yaml, "test.yaml")
    }

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let s = parse("").unwrap();
        assert_eq!(s, Settings::default());
        assert_eq!(s.namespace, "k8s-upgrade");
        assert_eq!(s.timeouts.node_ready, Duration::from_secs(900));
        assert_eq!(s.timeouts.alert_wait, Duration::from_secs(1800));
        assert_eq!(s.timeouts.soak, Duration::from_secs(600));
        assert_eq!(s.timeouts.settle_window, Duration::from_secs(600));
        assert_eq!(s.timeouts.etcd_snapshot, Duration::from_secs(600));
        assert_eq!(s.drain.timeout, Duration::from_secs(1800));
    }

    #[test]
    fn full_file_parses() {
        let s = parse(
            r#"
namespace: upgrades
control_plane_label: node-role.kubernetes.io/master
timeouts: {node_ready: 20m, soak: 1h30m}
hooks:
  quiesce_deployments:
    - {namespace: tigera-operator, name: tigera-operator}
"#,
        )
        .unwrap();
        assert_eq!(s.namespace, "upgrades");
        assert_eq!(s.timeouts.node_ready, Duration::from_secs(1200));
        assert_eq!(s.timeouts.soak, Duration::from_secs(5400));
        assert_eq!(s.timeouts.probe, Timeouts::default().probe, "unset keys keep defaults");
        assert_eq!(s.hooks.quiesce_deployments[0].name, "tigera-operator");
    }

    #[test]
    fn template_is_a_file_name_next_to_the_config_or_an_absolute_path() {
        for ok in ["job.yaml.j2", "site_job-2.j2", "/etc/k8s-upgrade-chain/job.yaml.j2"] {
            parse(&format!("job: {{template: {ok:?}}}\n")).unwrap();
        }
        for bad in ["templates/job.yaml.j2", "../job.yaml.j2", "", "config.yaml", "job yaml"] {
            let e = parse(&format!("job: {{template: {bad:?}}}\n")).unwrap_err().to_string();
            assert!(e.contains("job.template"), "{bad}: {e}");
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse("timeouts:\n  node_redy: 10m\n").unwrap_err().to_string();
        assert!(e.contains("node_redy"), "{e}");
        assert!(e.contains("test.yaml"), "{e}");
    }

    #[test]
    fn bad_duration_names_key_and_value() {
        let e = parse("timeouts:\n  soak: 10 minutes\n").unwrap_err().to_string();
        assert!(e.contains("timeouts.soak"), "{e}");
        assert!(e.contains("10 minutes"), "{e}");
    }

    #[test]
    fn bad_namespace_names_key_and_value() {
        let e = parse("namespace: K8s_Upgrade\n").unwrap_err().to_string();
        assert!(e.contains("`namespace`") && e.contains("K8s_Upgrade"), "{e}");
    }

    #[test]
    fn bad_urls_and_alert_rules_name_the_key() {
        let e = parse("pushgateway:\n  url: not a url\n").unwrap_err().to_string();
        assert!(e.contains("pushgateway.url") && e.contains("not a url"), "{e}");
        let e = parse("alerts:\n  prometheus_url: ftp://prom\n").unwrap_err().to_string();
        assert!(e.contains("alerts.prometheus_url"), "{e}");
        let e = parse("alerts:\n  ignore: ['Foo(']\n").unwrap_err().to_string();
        assert!(e.contains("Foo("), "{e}");
        let e = parse("alerts:\n  min_pod_ready_ratio: 1.5\n").unwrap_err().to_string();
        assert!(e.contains("alerts.min_pod_ready_ratio"), "{e}");
    }

    #[test]
    fn zero_deadline_is_refused() {
        let e = parse("timeouts: {node_ready: 0s}\n").unwrap_err().to_string();
        assert!(e.contains("timeouts.node_ready"), "{e}");
        let e = parse("drain: {timeout: 0s}\n").unwrap_err().to_string();
        assert!(e.contains("drain.timeout"), "{e}");
    }

    #[test]
    fn every_duration_key_has_the_listed_bounds() {
        use crate::duration::format;
        let yaml = |key: &str, d: Duration| {
            let (section, field) = key.split_once('.').unwrap();
            // backoff_max may not be below backoff_min (1s by default).
            let extra = if key == "drain.backoff_min" { ", backoff_max: 1h" } else { "" };
            format!("{section}: {{{field}: {}{extra}}}\n", format(d))
        };
        for (key, b) in DURATION_BOUNDS {
            for ok in [b.min, b.max] {
                parse(&yaml(key, ok)).unwrap_or_else(|e| panic!("{key} {}: {e}", format(ok)));
            }
            let mut bad = vec![b.max + Duration::from_secs(1)];
            if !b.min.is_zero() {
                bad.push(b.min - Duration::from_millis(1));
            }
            for d in bad {
                let e = parse(&yaml(key, d)).unwrap_err().to_string();
                assert!(e.contains(key) && e.contains(&format(d)), "{key} {}: {e}", format(d));
            }
        }
        // And every duration key of the file is in the list.
        let mut listed: Vec<&str> = DURATION_BOUNDS.iter().map(|(k, _)| *k).collect();
        listed.sort();
        let yaml = Settings::default().to_yaml();
        let mut found = vec![];
        let mut section = "";
        for line in yaml.lines() {
            if !line.starts_with(' ') {
                section = line.trim_end_matches(':').split(':').next().unwrap();
            } else if let Some((k, v)) = line.trim().split_once(": ")
                && !line.starts_with("    ")
                && crate::duration::parse(v).is_ok()
            {
                found.push(format!("{section}.{k}"));
            }
        }
        found.push("drain.grace_period_override".into());
        found.sort();
        assert_eq!(listed, found);
    }

    #[test]
    fn annotation_suffixes_are_the_keys_written() {
        let keys = crate::annotations::Keys::new("p.example/");
        for k in [keys.in_flight, keys.target, keys.snapshot_path] {
            assert!(ANNOTATION_SUFFIXES.iter().any(|s| k == format!("p.example/{s}")), "{k}");
        }
    }

    #[test]
    fn classes_of_bad_values_name_their_key() {
        for (yaml, key) in [
            ("ssh: {port: 0}", "ssh.port"),
            ("ssh: {user: ''}", "ssh.user"),
            ("ssh: {user: '-x'}", "ssh.user"),
            ("apt_repository: 'https://x.example/?a=1'", "apt_repository"),
            ("apt_repository: 'https://x.example/#f'", "apt_repository"),
            ("apt_repository: 'https://u:p@x.example/'", "apt_repository"),
            ("annotation_prefix: 'k8s//'", "annotation_prefix"),
            ("annotation_prefix: 'k8s-upgrade-chain'", "annotation_prefix"),
            ("annotation_prefix: 'x.example/-'", "annotation_prefix"),
            ("hooks: {expected_daemonsets: ['Kube_Proxy']}", "hooks.expected_daemonsets[0]"),
            ("hooks: {smoke_dns_name: 'bad name'}", "hooks.smoke_dns_name"),
            ("alerts: {ignore: ['Watchdog)|(.*']}", "alerts"),
            ("alerts: {ignore: ['']}", "alerts"),
            ("alerts: {pod_ready_query: ' '}", "alerts.pod_ready_query"),
        ] {
            let e = parse(yaml).unwrap_err().to_string();
            assert!(e.contains(key), "{yaml}: {e}");
        }
        for ok in [
            "annotation_prefix: 'example.com/k8s-upgrade-'",
            "hooks: {smoke_dns_name: 'Kubernetes.Default.'}",
        ] {
            parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn invalid_yaml_is_reported() {
        let e = parse("namespace: [unclosed\n").unwrap_err().to_string();
        assert!(e.contains("not valid YAML"), "{e}");
    }

    #[test]
    fn annotation_prefix_may_carry_the_start_of_the_name() {
        // The seed site's keys (viktorbarzin.me/k8s-upgrade-in-flight, ...), kept as they are.
        let seed = parse("annotation_prefix: viktorbarzin.me/k8s-upgrade-\n").unwrap();
        let keys = crate::annotations::Keys::new(&seed.annotation_prefix);
        assert_eq!(keys.in_flight, "viktorbarzin.me/k8s-upgrade-in-flight");
        assert_eq!(keys.target, "viktorbarzin.me/k8s-upgrade-target");
        assert_eq!(keys.snapshot_path, "viktorbarzin.me/k8s-upgrade-snapshot-path");
        for bad in ["k8s-upgrade-", "Example.com/x", "example.com/-x", "example.com/a b", "/x"] {
            let e = parse(&format!("annotation_prefix: {bad:?}\n")).unwrap_err().to_string();
            assert!(e.contains("annotation_prefix"), "{bad}: {e}");
        }
    }

    #[test]
    fn control_plane_selector_forms() {
        let any = ControlPlaneSelector::parse("node-role.kubernetes.io/control-plane").unwrap();
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("node-role.kubernetes.io/control-plane".to_string(), String::new());
        assert!(any.matches(Some(&labels)));
        assert!(!any.matches(None));
        let kv = ControlPlaneSelector::parse("role=cp").unwrap();
        labels.insert("role".into(), "worker".into());
        assert!(!kv.matches(Some(&labels)));
        labels.insert("role".into(), "cp".into());
        assert!(kv.matches(Some(&labels)));
        assert!(ControlPlaneSelector::parse("bad key").is_err());
        assert!(ControlPlaneSelector::parse("/x").is_err());
    }
}
