//! The weekly report's inputs, read from the cluster, Prometheus and the Pushgateway; the
//! message itself is [`chain_core::report::compose`].

use chain_core::{
    compat::{self, Reason},
    metrics::Scrape,
    report::{Inputs, detected, kubelet, needs_gate, recent_jobs},
    settings::Settings,
    version::Version,
};
use jiff::Timestamp;
use k8s_openapi::api::{batch::v1::Job, core::v1::Node};

/// Re-runs the compatibility gate for `target` the way preflight does (addon images,
/// deprecated APIs from Prometheus, node runtimes) and returns its reasons.
pub async fn gate_reasons(
    client: &kube::Client,
    settings: &Settings,
    nodes: &[Node],
    target: Version,
) -> Result<Vec<Reason>, String> {
    let running = nodes
        .iter()
        .filter_map(|n| kubelet(n).parse::<Version>().ok())
        .min()
        .map(compat::Minor::of)
        .ok_or("no node reports a kubelet version")?;
    let prometheus = crate::prometheus::AlertGate::new(&settings.alerts).map_err(|e| e.to_string());
    let verdict = crate::chain::compat::verdict(
        client,
        prometheus.as_ref().map_err(Clone::clone),
        &settings.compat,
        target,
        running,
        nodes,
    )
    .await;
    Ok(match verdict {
        compat::Verdict::Pass => vec![],
        compat::Verdict::Held(r) | compat::Verdict::Blocked(r) => r,
    })
}

/// Gathers the report's inputs. The Pushgateway failing gives empty gauges (and a stale
/// headline), as in the seed; nodes and Jobs must be readable.
pub async fn gather(client: &kube::Client, settings: &Settings, now: Timestamp) -> anyhow::Result<Inputs> {
    use kube::{Api, api::ListParams};
    let metrics = match crate::pushgateway::Pushgateway::new(&settings.pushgateway) {
        Ok(p) => p.read().await.unwrap_or_else(|e| {
            tracing::warn!("report without gauges: {e}");
            Scrape::default()
        }),
        Err(e) => {
            tracing::warn!("report without gauges: {e}");
            Scrape::default()
        }
    };
    let nodes = crate::k8s::list_nodes(client).await?;
    let ns = settings.namespace.as_str();
    let jobs = Api::<Job>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| anyhow::anyhow!("failed to list Jobs in namespace {ns}: {e}"))?
        .items;
    let d = detected(&metrics);
    let reasons = if needs_gate(&d) {
        Some(match d.target.as_deref().map(|t| t.parse::<Version>()) {
            Some(Ok(target)) => gate_reasons(client, settings, &nodes, target).await,
            Some(Err(e)) => Err(format!("bad target label: {e}")),
            None => Err("k8s_upgrade_available has no target label".into()),
        })
    } else {
        None
    };
    Ok(Inputs {
        metrics,
        nodes: nodes.iter().map(|n| (n.metadata.name.clone().unwrap_or_default(), kubelet(n))).collect(),
        jobs: recent_jobs(&jobs, now),
        reasons,
        now: chain_core::metrics::epoch_seconds(now),
    })
}
