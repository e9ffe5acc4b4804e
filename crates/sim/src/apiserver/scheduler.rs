//! The scheduler's node filters for the pods the simulated Job controller creates, and the
//! `PodScheduled=False` message kube-scheduler writes when no node fits.
//!
//! Filters, in kube-scheduler's default order (v1.28 `pkg/scheduler/framework/plugins`), the
//! first failing one giving a node's reason:
//! * NodeUnschedulable: `spec.unschedulable` unless the pod tolerates
//!   `node.kubernetes.io/unschedulable:NoSchedule` — "node(s) were unschedulable";
//! * NodeName: `spec.nodeName` set and different — "node(s) didn't match the requested node name";
//! * TaintToleration: a `NoSchedule`/`NoExecute` taint the pod does not tolerate — "node(s) had
//!   untolerated taint {key: value}". A node whose Ready condition is not True carries
//!   `node.kubernetes.io/not-ready:NoSchedule` (the node lifecycle controller's
//!   TaintNodesByCondition), so it counts as tainted even when the stored object has no taint;
//! * NodeAffinity: `spec.nodeSelector` against the node's labels, and the required node
//!   affinity (`nodeSelectorTerms` ORed; in a term `matchExpressions` on labels and
//!   `matchFields` on `metadata.name` ANDed) — "node(s) didn't match Pod's node
//!   affinity/selector". Only `matchFields` reads the node's *name*: the
//!   `kubernetes.io/hostname` label is the kubelet's hostname, which differs from the node name
//!   when nodes are registered under an FQDN (issue 12 item 4).

use serde_json::Value;

/// Why `node` cannot take a pod with `spec`, or `Ok` if it can.
pub(crate) fn fits(spec: &Value, node: &Value) -> Result<(), String> {
    let tolerations: Vec<&Value> =
        spec.get("tolerations").and_then(Value::as_array).map(|a| a.iter().collect()).unwrap_or_default();
    let tolerated =
        |key: &str, value: &str, effect: &str| tolerations.iter().any(|t| tolerates(t, key, value, effect));
    if node.pointer("/spec/unschedulable") == Some(&Value::Bool(true))
        && !tolerated("node.kubernetes.io/unschedulable", "", "NoSchedule")
    {
        return Err("node(s) were unschedulable".into());
    }
    let name = node.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    if let Some(want) = spec.get("nodeName").and_then(Value::as_str).filter(|n| !n.is_empty())
        && want != name
    {
        return Err("node(s) didn't match the requested node name".into());
    }
    let mut taints: Vec<(String, String, String)> = node
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|t| {
                    let s = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
                    (s("key"), s("value"), s("effect"))
                })
                .collect()
        })
        .unwrap_or_default();
    let ready = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
    if !ready && !taints.iter().any(|(k, _, _)| k == "node.kubernetes.io/not-ready") {
        taints.push(("node.kubernetes.io/not-ready".into(), String::new(), "NoSchedule".into()));
    }
    for (key, value, effect) in &taints {
        if matches!(effect.as_str(), "NoSchedule" | "NoExecute") && !tolerated(key, value, effect) {
            return Err(format!("node(s) had untolerated taint {{{key}: {value}}}"));
        }
    }
    if !affinity_matches(spec, node) {
        return Err("node(s) didn't match Pod's node affinity/selector".into());
    }
    Ok(())
}

/// `v1.Toleration.ToleratesTaint`: an empty key with `Exists` tolerates everything; an empty
/// effect matches every effect; `Equal` (the default operator) compares the value.
fn tolerates(t: &Value, key: &str, value: &str, effect: &str) -> bool {
    let s = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or_default();
    if !s("effect").is_empty() && s("effect") != effect {
        return false;
    }
    if !s("key").is_empty() && s("key") != key {
        return false;
    }
    match s("operator") {
        "Exists" => true,
        "" | "Equal" => s("key") == key && s("value") == value,
        _ => false,
    }
}

fn affinity_matches(spec: &Value, node: &Value) -> bool {
    let labels = node.pointer("/metadata/labels").and_then(Value::as_object);
    let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    if let Some(sel) = spec.get("nodeSelector").and_then(Value::as_object)
        && !sel.iter().all(|(k, v)| label(k) == v.as_str())
    {
        return false;
    }
    let Some(terms) = spec
        .pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array)
    else {
        return true;
    };
    let name = node.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    // nodeaffinity.NewNodeSelector: terms are ORed; a term with no requirements matches nothing.
    terms.iter().any(|term| {
        let exprs = term.get("matchExpressions").and_then(Value::as_array);
        let fields = term.get("matchFields").and_then(Value::as_array);
        if exprs.is_none_or(Vec::is_empty) && fields.is_none_or(Vec::is_empty) {
            return false;
        }
        exprs.into_iter().flatten().all(|r| requirement(r, label(r["key"].as_str().unwrap_or_default())))
            && fields.into_iter().flatten().all(|r| {
                // Only metadata.name is a supported field (NodeSelectorRequirement validation).
                r["key"] == "metadata.name" && requirement(r, Some(name))
            })
    })
}

/// One `NodeSelectorRequirement` against the value the node has (None: absent).
fn requirement(r: &Value, have: Option<&str>) -> bool {
    let values: Vec<&str> = r
        .get("values")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let num = |s: &str| s.parse::<i64>().ok();
    match r["operator"].as_str().unwrap_or_default() {
        "In" => have.is_some_and(|h| values.contains(&h)),
        "NotIn" => have.is_none_or(|h| !values.contains(&h)),
        "Exists" => have.is_some(),
        "DoesNotExist" => have.is_none(),
        "Gt" => {
            matches!((have.and_then(num), values.first().and_then(|v| num(v))), (Some(h), Some(v)) if h > v)
        }
        "Lt" => {
            matches!((have.and_then(num), values.first().and_then(|v| num(v))), (Some(h), Some(v)) if h < v)
        }
        _ => false,
    }
}

/// The `PodScheduled=False` message for a pod no node fits (`framework.FitError.Error`): the
/// reasons counted per node, sorted, then the post-filter (preemption) verdict, which for these
/// filters is always "not helpful". E.g. `0/4 nodes are available: 4 node(s) didn't match Pod's
/// node affinity/selector. preemption: 0/4 nodes are available: 4 Preemption is not helpful for
/// scheduling..`
pub(crate) fn unschedulable_message(reasons: &[String]) -> String {
    let total = reasons.len();
    let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for r in reasons {
        *counts.entry(r.as_str()).or_default() += 1;
    }
    let mut parts: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    format!(
        "0/{total} nodes are available: {}. preemption: 0/{total} nodes are available: {total} Preemption is not helpful for scheduling..",
        parts.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, hostname: &str) -> Value {
        json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": hostname}},
               "spec": {}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    }

    fn pinned_by_name(name: &str) -> Value {
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [name]}]}]}}}})
    }

    #[test]
    fn match_fields_reads_the_name_and_node_selector_the_labels() {
        let fqdn = node("k8s-node1.example.com", "k8s-node1");
        assert_eq!(fits(&pinned_by_name("k8s-node1.example.com"), &fqdn), Ok(()));
        assert!(fits(&pinned_by_name("k8s-node1"), &fqdn).is_err());
        let by_label = json!({"nodeSelector": {"kubernetes.io/hostname": "k8s-node1.example.com"}});
        assert_eq!(fits(&by_label, &fqdn).unwrap_err(), "node(s) didn't match Pod's node affinity/selector");
        assert_eq!(fits(&json!({"nodeSelector": {"kubernetes.io/hostname": "k8s-node1"}}), &fqdn), Ok(()));
    }

    #[test]
    fn taints_cordons_and_not_ready_nodes_come_first() {
        let mut n = node("cp", "cp");
        n["spec"]["taints"] =
            json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]);
        let spec = pinned_by_name("cp");
        assert_eq!(
            fits(&spec, &n).unwrap_err(),
            "node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"
        );
        let mut tolerant = spec.clone();
        tolerant["tolerations"] = json!([{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}]);
        assert_eq!(fits(&tolerant, &n), Ok(()));
        n["spec"]["unschedulable"] = json!(true);
        assert_eq!(fits(&tolerant, &n).unwrap_err(), "node(s) were unschedulable");
        let mut down = node("w", "w");
        down["status"]["conditions"][0]["status"] = json!("False");
        assert_eq!(
            fits(&json!({}), &down).unwrap_err(),
            "node(s) had untolerated taint {node.kubernetes.io/not-ready: }"
        );
    }

    #[test]
    fn terms_are_ored_requirements_anded() {
        let n = node("a", "a");
        let spec = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]},
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["a"]}],
             "matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["c"]}]}]}}}});
        assert_eq!(fits(&spec, &n), Ok(()));
        let empty_term = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{}]}}}});
        assert!(fits(&empty_term, &n).is_err());
    }

    #[test]
    fn the_message_counts_reasons_like_kube_scheduler() {
        let r = |s: &str| s.to_string();
        assert_eq!(
            unschedulable_message(&vec![r("node(s) didn't match Pod's node affinity/selector"); 4]),
            "0/4 nodes are available: 4 node(s) didn't match Pod's node affinity/selector. preemption: 0/4 nodes are available: 4 Preemption is not helpful for scheduling.."
        );
        let mixed = unschedulable_message(&[
            r("node(s) didn't match Pod's node affinity/selector"),
            r("node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"),
            r("node(s) didn't match Pod's node affinity/selector"),
        ]);
        assert!(mixed.starts_with("0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, 2 node(s) didn't match"), "{mixed}");
    }
}
