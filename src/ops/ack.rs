//! `ack NODE`: an operator acknowledges that a node's own upgrade failed and was dealt with, so
//! the chain may retry it (chain_core::resume). Until then detection spawns nothing and the
//! `K8sUpgradeNodeAwaitingAck` alert fires.
//!
//! It removes the node's upgrade-started record (guarded by the node's resourceVersion, so a
//! record written meanwhile is not removed unseen), sets `k8s_upgrade_awaiting_ack` back to 0
//! and records an Event on the node. It refuses while a chain Job works on the node: its
//! upgrade is then in progress, not failed. The node stays cordoned: the retried phase drains
//! and uncordons it as usual. The same without this binary:
//! `kubectl annotate node NODE k8s-upgrade-chain/upgrade-started-` (the next detection run then
//! resets the gauge).

use chain_core::{
    job::{JobState, job_state},
    metrics::{Grouping, Metric},
    resume::{UPGRADE_STARTED_ANNOTATION, UpgradeStarted},
    settings::Settings,
    status::TARGET_NODE_ANNOTATION,
};
use k8s_openapi::api::{batch::v1::Job, core::v1::Node};
use kube::{
    Api, Client, Resource as _,
    api::{ListParams, Patch, PatchParams},
};

use crate::{
    chain::{abort, trigger_detection},
    exit::bad_input,
    k8s::events::{Events, Milestone},
    pushgateway::Pushgateway,
};

/// What `ack` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acked {
    /// The record was removed.
    Acknowledged {
        /// What it said.
        started: UpgradeStarted,
    },
    /// The node carried no record: nothing to acknowledge, nothing changed on the node.
    NothingToAcknowledge,
}

/// Acknowledges `node`'s failed upgrade. Errors: the node does not exist (exit 2), a chain Job
/// works on it (exit 1), an API call failed (exit 3).
pub async fn acknowledge(client: &Client, settings: &Settings, node: &str) -> anyhow::Result<Acked> {
    let nodes: Api<Node> = Api::all(client.clone());
    let current = nodes
        .get_opt(node)
        .await
        .map_err(|e| anyhow::anyhow!("failed to read node {node}: {e}"))?
        .ok_or_else(|| bad_input(anyhow::anyhow!("node {node} does not exist")))?;
    let push = Pushgateway::new(&settings.pushgateway).ok();
    let Some(started) = UpgradeStarted::of(&current) else {
        // A stale gauge (the record removed with kubectl) goes back to 0 all the same.
        if let Some(p) = &push {
            p.push(&Grouping::node(node), &[Metric::AwaitingAck(false)]).await;
        }
        return Ok(Acked::NothingToAcknowledge);
    };
    let ns = &settings.namespace;
    let jobs = Api::<Job>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("app={}", chain_core::job::APP_LABEL)))
        .await
        .map_err(|e| anyhow::anyhow!("failed to list chain Jobs in {ns}: {e}"))?;
    if let Some(busy) = jobs.items.iter().find(|j| {
        job_state(j) == JobState::Active
            && j.metadata.annotations.as_ref().and_then(|a| a.get(TARGET_NODE_ANNOTATION)).map(String::as_str)
                == Some(node)
    }) {
        return Err(abort(format!(
            "chain Job {} is running on node {node}: its upgrade is in progress, not failed; nothing to acknowledge",
            busy.metadata.name.as_deref().unwrap_or_default()
        )));
    }
    let patch = serde_json::json!({"metadata": {
        "resourceVersion": current.metadata.resource_version,
        "annotations": {UPGRADE_STARTED_ANNOTATION: null},
    }});
    nodes.patch(node, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(|e| match e {
        kube::Error::Api(s) if s.code == 409 => {
            anyhow::anyhow!("node {node} changed while it was being acknowledged; run the command again")
        }
        e => anyhow::anyhow!("failed to remove {UPGRADE_STARTED_ANNOTATION} from node {node}: {e}"),
    })?;
    if let Some(p) = &push {
        p.push(&Grouping::node(node), &[Metric::AwaitingAck(false)]).await;
    }
    Events::new(client.clone(), None)
        .record(&current.object_ref(&()), &Milestone::Acknowledged(started.describe()))
        .await;
    Ok(Acked::Acknowledged { started })
}

/// What `ack` prints.
pub fn describe(node: &str, acked: &Acked, namespace: &str) -> String {
    match acked {
        Acked::Acknowledged { started } => format!(
            "acknowledged node {node}: {}.\nIt stays cordoned until its phase runs again. The next detection run \
             resumes the chain there; to run it now: {}\n",
            started.describe(),
            trigger_detection(namespace)
        ),
        Acked::NothingToAcknowledge => {
            format!("node {node} has no failed upgrade to acknowledge; nothing changed\n")
        }
    }
}
