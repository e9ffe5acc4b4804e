//! Node health as the phases gate on it: Ready on a version, and no pressure (seed §2.1 step 2).
//! Pure.

use k8s_openapi::api::core::v1::Node;

use crate::version::Version;

/// True when the node's Ready condition is `True` and its kubelet reports `want`.
pub fn ready_on(node: &Node, want: Version) -> bool {
    let status = node.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let version =
        status.and_then(|s| s.node_info.as_ref()).and_then(|i| i.kubelet_version.parse::<Version>().ok());
    ready && version == Some(want)
}

/// Nodes that are not healthy: Ready not True, or Memory/DiskPressure True (seed §2.1 step 2).
pub fn unhealthy(nodes: &[Node]) -> Vec<String> {
    nodes
        .iter()
        .filter_map(|n| {
            let name = n.metadata.name.clone().unwrap_or_default();
            let conds = n.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
            let is = |t: &str, v: &str| conds.iter().any(|c| c.type_ == t && c.status == v);
            let mut why = Vec::new();
            if !is("Ready", "True") {
                why.push("not Ready");
            }
            if is("MemoryPressure", "True") {
                why.push("MemoryPressure");
            }
            if is("DiskPressure", "True") {
                why.push("DiskPressure");
            }
            (!why.is_empty()).then(|| format!("{name} ({})", why.join(", ")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::node;

    #[test]
    fn ready_on_needs_both_ready_and_version() {
        let v: Version = "1.34.2".parse().unwrap();
        assert!(ready_on(&node("n").kubelet("v1.34.2").build(), v));
        assert!(!ready_on(&node("n").kubelet("v1.34.1").build(), v));
        assert!(!ready_on(&node("n").kubelet("v1.34.2").not_ready().build(), v));
    }

    #[test]
    fn unhealthy_names_node_and_reason() {
        let nodes = [node("a").build(), node("b").not_ready().build()];
        assert_eq!(unhealthy(&nodes), ["b (not Ready)"]);
    }
}
