//! API defaulting (pkg/apis/core/v1/defaults.go, apps/batch defaults) for pod specs, so that
//! objects read back look like a real server's and a re-applied manifest compares equal.

use serde_json::{Value, json};

fn set_default(obj: &mut serde_json::Map<String, Value>, key: &str, v: Value) {
    if obj.get(key).is_none_or(Value::is_null) {
        obj.insert(key.to_string(), v);
    }
}

/// `imagePullPolicy` default: Always for `:latest` or an untagged image, else IfNotPresent.
fn pull_policy(image: &str) -> &'static str {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        return "IfNotPresent";
    }
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn container(c: &mut Value) {
    let Some(o) = c.as_object_mut() else { return };
    let image = o.get("image").and_then(Value::as_str).unwrap_or_default().to_string();
    set_default(o, "imagePullPolicy", json!(pull_policy(&image)));
    set_default(o, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(o, "terminationMessagePolicy", json!("File"));
    set_default(o, "resources", json!({}));
    if let Some(Value::Array(ports)) = o.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
        }
    }
}

/// SetDefaults_PodSpec and the container defaults. `restart_policy` is the default for
/// `restartPolicy` (Always for pods and workload templates; Jobs require one).
pub(crate) fn pod_spec(spec: &mut Value, restart_policy: Option<&str>) {
    let Some(o) = spec.as_object_mut() else {
        return;
    };
    if let Some(rp) = restart_policy {
        set_default(o, "restartPolicy", json!(rp));
    }
    set_default(o, "dnsPolicy", json!("ClusterFirst"));
    set_default(o, "schedulerName", json!("default-scheduler"));
    set_default(o, "securityContext", json!({}));
    set_default(o, "terminationGracePeriodSeconds", json!(30));
    for key in ["containers", "initContainers"] {
        if let Some(Value::Array(cs)) = o.get_mut(key) {
            cs.iter_mut().for_each(container);
        }
    }
}

/// Defaults a template (`spec.template.spec`) in place.
pub(crate) fn template(obj: &mut Value, pointer: &str, restart_policy: Option<&str>) {
    if let Some(spec) = obj.pointer_mut(pointer) {
        pod_spec(spec, restart_policy);
    }
}

/// What the admission chain adds to a pod created through the API (ServiceAccount,
/// DefaultTolerationSeconds, Priority). The projected token volume is not added.
pub(crate) fn pod_admission(pod: &mut Value) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    set_default(spec, "serviceAccountName", json!("default"));
    let sa = spec.get("serviceAccountName").cloned().unwrap_or(json!("default"));
    set_default(spec, "serviceAccount", sa);
    set_default(spec, "priority", json!(0));
    set_default(spec, "enableServiceLinks", json!(true));
    set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    if let Value::Array(ts) = tolerations {
        for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
            if !ts.iter().any(|t| t["key"] == key) {
                ts.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
            }
        }
    }
}

/// Applies the defaults a kind's templates get (called on create and before update checks).
pub(crate) fn for_kind(kind: &str, obj: &mut Value) {
    match kind {
        "Pod" => {
            if let Some(spec) = obj.get_mut("spec") {
                pod_spec(spec, Some("Always"));
            }
        }
        "Job" => template(obj, "/spec/template/spec", None),
        "CronJob" => template(obj, "/spec/jobTemplate/spec/template/spec", None),
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => {
            template(obj, "/spec/template/spec", Some("Always"));
            if let Some(s) = obj.get_mut("spec").and_then(Value::as_object_mut)
                && kind != "DaemonSet"
            {
                set_default(s, "replicas", json!(1));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policies() {
        assert_eq!(pull_policy("nginx"), "Always");
        assert_eq!(pull_policy("nginx:latest"), "Always");
        assert_eq!(pull_policy("registry:5000/nginx"), "Always");
        assert_eq!(pull_policy("registry:5000/nginx:1.2"), "IfNotPresent");
        assert_eq!(pull_policy("nginx@sha256:abc"), "IfNotPresent");
    }

    #[test]
    fn pod_defaults_are_idempotent() {
        let mut p = json!({"spec": {"containers": [{"name": "a", "image": "x:1"}]}});
        for_kind("Pod", &mut p);
        let once = p.clone();
        for_kind("Pod", &mut p);
        assert_eq!(p, once);
        assert_eq!(p["spec"]["restartPolicy"], "Always");
        assert_eq!(p["spec"]["containers"][0]["terminationMessagePolicy"], "File");
    }
}
