//! Node and pod checks of the phases: waiting for a node to be Ready on the target version
//! (through a watch, with a deadline), node health, control-plane and DaemonSet pods, and the
//! postflight smoke tests.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{Api, Client, api::ListParams, runtime::wait::await_condition};

use chain_core::{health::ready_on, version::Version};

/// Waits until `node` is Ready on `want`, through a watch on that one node (no polling).
pub async fn wait_node_ready(
    client: &Client,
    node: &str,
    want: Version,
    timeout: Duration,
) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let cond = move |n: Option<&Node>| n.is_some_and(|n| ready_on(n, want));
    let waited = tokio::time::timeout(timeout, await_condition(api, node, cond)).await;
    match waited {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(anyhow::anyhow!(
            "failed to watch node {node} while waiting for it to be Ready on v{want}: {e}"
        )),
        Err(_) => Err(super::abort(format!(
            "node {node} was not Ready on v{want} within {}",
            chain_core::duration::format(timeout)
        ))),
    }
}

fn running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

fn name(p: &Pod) -> &str {
    p.metadata.name.as_deref().unwrap_or_default()
}

/// kube-system control-plane pods of `node` (label `tier=control-plane`) that are not Running.
/// An empty list on a node that has none is also a failure: the static pods must be there.
pub async fn control_plane_pods_not_running(client: &Client, node: &str) -> anyhow::Result<Vec<String>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let pods = api
        .list(&ListParams::default().labels("tier=control-plane").fields(&format!("spec.nodeName={node}")))
        .await
        .map_err(|e| anyhow::anyhow!("failed to list control-plane pods on node {node}: {e}"))?
        .items;
    if pods.is_empty() {
        return Ok(vec![format!("no pod labelled tier=control-plane on node {node}")]);
    }
    Ok(pods.iter().filter(|p| !running(p)).map(|p| name(p).to_string()).collect())
}

/// Expected DaemonSets (by name prefix) without a Running pod on `node`.
pub async fn missing_daemonset_pods(
    client: &Client,
    node: &str,
    expected: &[String],
) -> anyhow::Result<Vec<String>> {
    if expected.is_empty() {
        return Ok(vec![]);
    }
    let api: Api<Pod> = Api::all(client.clone());
    let pods = api
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .map_err(|e| anyhow::anyhow!("failed to list pods on node {node}: {e}"))?
        .items;
    Ok(expected
        .iter()
        .filter(|ds| !pods.iter().any(|p| running(p) && name(p).starts_with(ds.as_str())))
        .cloned()
        .collect())
}

/// kube-system pods named like the control plane and CoreDNS that are not Running (postflight).
pub async fn system_pods_not_running(client: &Client) -> anyhow::Result<Vec<String>> {
    const PREFIXES: [&str; 5] =
        ["kube-apiserver-", "kube-controller-manager-", "kube-scheduler-", "etcd-", "coredns-"];
    let api: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let pods = api
        .list(&ListParams::default())
        .await
        .map_err(|e| anyhow::anyhow!("failed to list kube-system pods: {e}"))?
        .items;
    let mut bad: Vec<String> = pods
        .iter()
        .filter(|p| PREFIXES.iter().any(|pre| name(p).starts_with(pre)) && !running(p))
        .map(|p| name(p).to_string())
        .collect();
    for pre in ["kube-apiserver-", "coredns-"] {
        if !pods.iter().any(|p| name(p).starts_with(pre)) {
            bad.push(format!("no {pre}* pod in kube-system"));
        }
    }
    Ok(bad)
}

/// `GET /readyz` and `/livez` through the API client; each must answer exactly `ok`.
pub async fn health_endpoints(client: &Client) -> Vec<String> {
    let mut bad = Vec::new();
    for path in ["/readyz", "/livez"] {
        let req = http::Request::get(path).body(Vec::new()).expect("static request");
        match client.request_text(req).await {
            Ok(body) if body.trim() == "ok" => {}
            Ok(body) => bad.push(format!("{path} answered {:?}", body.chars().take(200).collect::<String>())),
            Err(e) => bad.push(format!("{path} failed: {e}")),
        }
    }
    bad
}

/// Resolves `name` (cluster DNS from inside the Job pod).
pub async fn resolve(name: &str, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, tokio::net::lookup_host((name, 443))).await {
        Ok(Ok(mut addrs)) => match addrs.next() {
            Some(_) => Ok(()),
            None => Err(format!("DNS name {name} resolved to no address")),
        },
        Ok(Err(e)) => Err(format!("DNS name {name} did not resolve: {e}")),
        Err(_) => Err(format!("DNS lookup of {name} timed out")),
    }
}
