//! `manifests`: every object the tool needs in the cluster, as plain YAML for
//! `k8s-upgrade-chain manifests | kubectl apply -f -` (the Terraform module in `terraform/`
//! creates the same objects). Pure: [`objects`] builds them, [`render`] prints them.
//!
//! RBAC comes from [`crate::rbac`] (the one list of API calls), so these grants and the
//! Terraform ones cannot drift. The credentials Secret is printed only as a commented template:
//! a real SSH key never passes through this tool.
//!
//! Everything site-specific comes from the settings (the config file): the namespace of every
//! object and of the alert rules' matchers ([`alert_rules`]), the RBAC of the hooks, the object
//! names. The Terraform module derives the same values from the same file
//! (`terraform/modules/config`), and `tests/deploy.rs` checks both against each other.

use serde_json::{Value, json};

use crate::{rbac, settings::Settings};

/// The alert rules file (`deploy/alerts/k8s-upgrade-chain.rules.yaml`), compiled in: the rules
/// for the default namespace. [`alert_rules`] renders them for the configured one.
pub const ALERT_RULES: &str = include_str!("../../../deploy/alerts/k8s-upgrade-chain.rules.yaml");
/// The namespace matcher of [`ALERT_RULES`], the only setting-dependent text in them. Every
/// matcher on the chain's namespace is written exactly like this (a test checks that no other
/// `namespace=` matcher exists), and `terraform/modules/config` replaces the same string.
pub const ALERT_RULES_NAMESPACE_MATCHER: &str = "namespace=\"k8s-upgrade\"";
/// Name of the detection CronJob (and prefix of its Jobs).
pub const DETECTION_CRONJOB: &str = "k8s-version-check";
/// Name of the weekly report CronJob. It must not start with `k8s-upgrade-<phase>-`, or a
/// failed report would trip K8sUpgradeChainJobFailed.
pub const REPORT_CRONJOB: &str = "k8s-upgrade-weekly-report";
/// Label `app` of the detection CronJob's Jobs.
pub const DETECTION_APP: &str = "k8s-version-upgrade";
/// Default detection schedule: Sunday 23:00 UTC, clear of the kured reboot window (seed §1).
pub const DEFAULT_SCHEDULE: &str = "0 23 * * 0";
/// Default report schedule: Monday 06:07 UTC (seed §6).
pub const DEFAULT_REPORT_SCHEDULE: &str = "7 6 * * 1";
/// Deadline of one detection run (seed failure 39: a CronJob with Forbid and no deadline
/// wedges forever on a hung process).
pub const DETECTION_DEADLINE_SECONDS: i64 = 1800;
/// Deadline of one report run.
pub const REPORT_DEADLINE_SECONDS: i64 = 600;

/// What the caller chooses.
#[derive(Debug, Clone)]
pub struct Options {
    /// Image of the CronJobs (and, through `IMAGE`, of the chain Jobs).
    pub image: String,
    /// Detection schedule (cron).
    pub schedule: String,
    /// Weekly report schedule (cron).
    pub report_schedule: String,
    /// Detection runs but spawns nothing (`DRY_RUN=true`).
    pub dry_run: bool,
    /// `false` suspends both CronJobs.
    pub enabled: bool,
    /// The `config.yaml` text stored in the config ConfigMap.
    pub config_yaml: String,
    /// A `job.template` override: its key in the config ConfigMap (the file name the config
    /// gives) and its text.
    pub job_template: Option<(String, String)>,
}

fn labels(app: &str) -> Value {
    json!({"app": app, "app.kubernetes.io/part-of": "k8s-upgrade-chain"})
}

fn meta(name: &str, namespace: Option<&str>, app: &str) -> Value {
    let mut m = json!({"name": name, "labels": labels(app)});
    if let Some(ns) = namespace {
        m["namespace"] = json!(ns);
    }
    m
}

/// The pod template of a CronJob's Jobs: the chain Job template's security settings and
/// mounts (non-root 65532, read-only root, no capabilities, RuntimeDefault seccomp, /tmp). The
/// detection Job renders the preflight Job, so it reads a `job.template` override from the
/// config mount exactly as the chain Jobs do.
fn pod_spec(settings: &Settings, image: &str, container: &str, args: &[&str], env: Value) -> Value {
    let j = &settings.job;
    let pull: Vec<Value> = j.image_pull_secrets.iter().map(|n| json!({"name": n})).collect();
    json!({
        "serviceAccountName": j.service_account,
        "restartPolicy": "Never",
        "imagePullSecrets": pull,
        "securityContext": {
            "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
            "seccompProfile": {"type": "RuntimeDefault"}
        },
        "containers": [{
            "name": container,
            "image": image,
            "args": args,
            "env": env,
            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
            "securityContext": {
                "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                "capabilities": {"drop": ["ALL"]}
            },
            "volumeMounts": [
                {"name": "creds", "mountPath": "/secrets/k8s-upgrade", "readOnly": true},
                {"name": "config", "mountPath": "/etc/k8s-upgrade-chain", "readOnly": true},
                {"name": "tmp", "mountPath": "/tmp"}
            ]
        }],
        "volumes": [
            {"name": "creds", "secret": {"secretName": j.credentials_secret, "defaultMode": 0o440}},
            {"name": "config", "configMap": {"name": j.config_map}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}
        ]
    })
}

fn env(pairs: &[(&str, String)]) -> Value {
    Value::Array(pairs.iter().map(|(k, v)| json!({"name": k, "value": v})).collect())
}

fn cronjob(
    settings: &Settings,
    name: &str,
    app: &str,
    schedule: &str,
    suspend: bool,
    job_spec: Value,
) -> Value {
    json!({
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": meta(name, Some(&settings.namespace), app),
        "spec": {
            "schedule": schedule,
            "timeZone": "Etc/UTC",
            "suspend": suspend,
            "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "startingDeadlineSeconds": 600,
            "jobTemplate": {"metadata": {"labels": labels(app)}, "spec": job_spec}
        }
    })
}

/// Every object, in apply order (pure). The Secret is not among them (see [`render`]).
pub fn objects(settings: &Settings, opts: &Options) -> Vec<Value> {
    let ns = settings.namespace.as_str();
    let app = crate::job::APP_LABEL;
    let sa = settings.job.service_account.as_str();
    let mut out = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": meta(ns, None, app)}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(sa, Some(ns), app)}),
    ];
    for role in rbac::roles(settings) {
        let (kind, binding) = match role.namespace {
            None => ("ClusterRole", "ClusterRoleBinding"),
            Some(_) => ("Role", "RoleBinding"),
        };
        let name = role.scope.role_name();
        out.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": kind,
            "metadata": meta(name, role.namespace.as_deref(), app),
            "rules": role.rules,
        }));
        out.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": binding,
            "metadata": meta(name, role.namespace.as_deref(), app),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}],
        }));
    }
    // One ConfigMap: the config file and, if configured, the Job template override next to it.
    // update_k8s.sh and the built-in template are not shipped as ConfigMaps: the binary uses
    // its own copies, pinned to the image (seed failure 9).
    let mut data = serde_json::Map::new();
    data.insert(crate::settings::CONFIG_KEY.into(), json!(opts.config_yaml));
    if let Some((key, text)) = &opts.job_template {
        data.insert(key.clone(), json!(text));
    }
    out.push(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": meta(&settings.job.config_map, Some(ns), app),
        "data": data,
    }));

    let common = |extra: &[(&str, String)]| {
        let mut e = vec![
            ("CONFIG", "/etc/k8s-upgrade-chain/config.yaml".to_string()),
            ("LOG_FORMAT", "json".to_string()),
            ("HOME", "/tmp".to_string()),
        ];
        e.extend(extra.iter().cloned());
        env(&e)
    };
    let detect_env = common(&[("DRY_RUN", opts.dry_run.to_string()), ("IMAGE", opts.image.clone())]);
    out.push(cronjob(
        settings,
        DETECTION_CRONJOB,
        DETECTION_APP,
        &opts.schedule,
        !opts.enabled,
        json!({
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": 86400,
            "activeDeadlineSeconds": DETECTION_DEADLINE_SECONDS,
            "template": {
                "metadata": {"labels": labels(DETECTION_APP)},
                "spec": pod_spec(settings, &opts.image, "version-check", &["detect"], detect_env),
            }
        }),
    ));
    let report_env = common(&[]);
    out.push(cronjob(
        settings,
        REPORT_CRONJOB,
        "k8s-upgrade-report",
        &opts.report_schedule,
        !opts.enabled,
        json!({
            "backoffLimit": 1,
            "ttlSecondsAfterFinished": 86400,
            "activeDeadlineSeconds": REPORT_DEADLINE_SECONDS,
            "template": {
                "metadata": {"labels": labels("k8s-upgrade-report")},
                "spec": pod_spec(settings, &opts.image, "report", &["report"], report_env),
            }
        }),
    ));
    out
}

/// The credentials Secret as a commented template: fill in and apply it yourself, or let
/// External Secrets create it (see the Terraform module's `external_secret` variables).
pub fn secret_template(settings: &Settings) -> String {
    format!(
        "# The credentials Secret is not generated (this tool never handles a real key). Create it:\n\
         #   kubectl -n {ns} create secret generic {name} \\\n\
         #     --from-file=ssh_key=./k8s-upgrade-key \\\n\
         #     --from-file=known_hosts=./known_hosts \\\n\
         #     --from-literal=slack_webhook=https://hooks.slack.com/services/...\n\
         # or as YAML:\n\
         # apiVersion: v1\n\
         # kind: Secret\n\
         # metadata:\n\
         #   name: {name}\n\
         #   namespace: {ns}\n\
         # type: Opaque\n\
         # stringData:\n\
         #   ssh_key: |\n\
         #     -----BEGIN OPENSSH PRIVATE KEY-----\n\
         #     ...\n\
         #   known_hosts: |\n\
         #     10.0.0.10 ssh-ed25519 AAAA...\n\
         #   slack_webhook: https://hooks.slack.com/services/...\n",
        ns = settings.namespace,
        name = settings.job.credentials_secret
    )
}

/// The Prometheus rules file for the configured namespace: [`ALERT_RULES`] with every
/// namespace matcher on the chain's namespace (pure). `manifests --alert-rules` prints it.
pub fn alert_rules(settings: &Settings) -> String {
    ALERT_RULES.replace(ALERT_RULES_NAMESPACE_MATCHER, &format!("namespace=\"{}\"", settings.namespace))
}

/// The alert rules as a PrometheusRule (monitoring.coreos.com/v1) in the tool's namespace, with
/// the groups of [`alert_rules`].
pub fn prometheus_rule(settings: &Settings) -> Value {
    let rules: Value =
        serde_saphyr::from_str(&alert_rules(settings)).expect("the compiled-in rules file is valid YAML");
    json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": meta("k8s-upgrade-chain", Some(&settings.namespace), crate::job::APP_LABEL),
        "spec": {"groups": rules["groups"]},
    })
}

/// YAML documents separated by `---`.
pub fn to_yaml_stream(objects: &[Value]) -> String {
    objects
        .iter()
        .map(|o| serde_saphyr::to_string(o).expect("JSON values always serialise"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The full `manifests` output: the objects, then the commented Secret template, and with
/// `prometheus_rule` the PrometheusRule too (pure).
pub fn render(settings: &Settings, opts: &Options, prometheus_rule: bool) -> String {
    let mut objs = objects(settings, opts);
    if prometheus_rule {
        objs.push(self::prometheus_rule(settings));
    }
    format!("{}---\n{}", to_yaml_stream(&objs), secret_template(settings))
}

/// The settings as a config file (what the config ConfigMap holds without `--config`).
pub fn config_yaml(settings: &Settings) -> String {
    format!(
        "# k8s-upgrade-chain settings (defaults written out; see examples/config.yaml)\n{}",
        settings.to_yaml()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options {
            image: "registry.example/k8s-upgrade-chain:1".into(),
            schedule: DEFAULT_SCHEDULE.into(),
            report_schedule: DEFAULT_REPORT_SCHEDULE.into(),
            dry_run: true,
            enabled: true,
            config_yaml: "namespace: k8s-upgrade\n".into(),
            job_template: None,
        }
    }

    #[test]
    fn cronjobs_follow_the_options() {
        let objs = objects(&Settings::default(), &opts());
        let detect = objs.iter().find(|o| o["metadata"]["name"] == DETECTION_CRONJOB).unwrap();
        assert_eq!(detect["spec"]["concurrencyPolicy"], "Forbid");
        assert_eq!(detect["spec"]["startingDeadlineSeconds"], 600);
        assert_eq!(detect["spec"]["successfulJobsHistoryLimit"], 3);
        assert_eq!(detect["spec"]["failedJobsHistoryLimit"], 3);
        assert_eq!(detect["spec"]["suspend"], false);
        let job = &detect["spec"]["jobTemplate"]["spec"];
        assert_eq!(job["activeDeadlineSeconds"], DETECTION_DEADLINE_SECONDS);
        let c = &job["template"]["spec"]["containers"][0];
        assert_eq!(c["args"], json!(["detect"]));
        let env: Vec<(String, String)> = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap().into(), e["value"].as_str().unwrap().into()))
            .collect();
        assert!(env.contains(&("DRY_RUN".into(), "true".into())));
        assert!(env.contains(&("IMAGE".into(), opts().image)));
        assert!(env.contains(&("CONFIG".into(), "/etc/k8s-upgrade-chain/config.yaml".into())));
        assert!(env.contains(&("LOG_FORMAT".into(), "json".into())));
        let disabled = objects(&Settings::default(), &Options { enabled: false, ..opts() });
        assert!(
            disabled.iter().filter(|o| o["kind"] == "CronJob").all(|o| o["spec"]["suspend"] == true),
            "enabled=false suspends both CronJobs"
        );
    }

    #[test]
    fn default_config_round_trips() {
        for settings in [
            Settings::default(),
            Settings::from_yaml(include_str!("../../../examples/config.yaml"), "example").unwrap(),
        ] {
            let text = config_yaml(&settings);
            assert_eq!(Settings::from_yaml(&text, "configmap").unwrap(), settings, "{text}");
        }
    }

    #[test]
    fn output_has_no_secret_object() {
        let text = render(&Settings::default(), &opts(), false);
        for doc in text.split("---\n") {
            let v: Value = serde_saphyr::from_str(doc).unwrap_or(Value::Null);
            assert_ne!(v["kind"], "Secret", "{doc}");
        }
        assert!(text.contains("# kind: Secret"));
    }
}
