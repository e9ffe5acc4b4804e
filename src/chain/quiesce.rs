//! Quiescing site Deployments around a control-plane upgrade (the seed scaled tigera-operator
//! to 0: its crashloop IO storm pushed kubeadm past its static-pod-hash watch, seed failure 13).
//!
//! The replica count is saved in an annotation on the Deployment in the same patch that scales
//! it to 0, so any later run (a retry, postflight) can restore it: seed failure 27 left the
//! operator at 0 for 1.5 h when a retry skipped the phase that would have restored it.

use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use tracing::{info, warn};

use chain_core::settings::QuiesceDeployment;

/// Annotation key holding the replica count to restore.
pub fn annotation(prefix: &str) -> String {
    format!("{prefix}quiesced-replicas")
}

/// Reads each Deployment to quiesce, before the drain: an API error stops the phase while
/// nothing has changed; a Deployment that does not exist is a warning (as in [`quiesce`]).
pub async fn check(client: &Client, deployments: &[QuiesceDeployment]) -> anyhow::Result<()> {
    for d in deployments {
        let api: Api<Deployment> = Api::namespaced(client.clone(), &d.namespace);
        if api
            .get_opt(&d.name)
            .await
            .map_err(|e| {
                anyhow::anyhow!("failed to read Deployment {}/{} to quiesce: {e}", d.namespace, d.name)
            })?
            .is_none()
        {
            warn!("Deployment {}/{} to quiesce does not exist; it will be skipped", d.namespace, d.name);
        }
    }
    Ok(())
}

/// Scales each Deployment to 0, remembering its replicas. A Deployment that does not exist is
/// a warning; one already quiesced by an earlier run keeps its saved count.
pub async fn quiesce(client: &Client, prefix: &str, deployments: &[QuiesceDeployment]) -> anyhow::Result<()> {
    let key = annotation(prefix);
    for d in deployments {
        let api: Api<Deployment> = Api::namespaced(client.clone(), &d.namespace);
        let Some(dep) = api.get_opt(&d.name).await.map_err(|e| {
            anyhow::anyhow!("failed to read Deployment {}/{} to quiesce it: {e}", d.namespace, d.name)
        })?
        else {
            warn!("Deployment {}/{} to quiesce does not exist; skipping", d.namespace, d.name);
            continue;
        };
        let saved = dep.metadata.annotations.as_ref().and_then(|a| a.get(&key)).cloned();
        let replicas =
            saved.unwrap_or_else(|| dep.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).to_string());
        let patch = serde_json::json!({
            "metadata": {"annotations": {key.clone(): replicas}},
            "spec": {"replicas": 0},
        });
        api.patch(&d.name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(|e| {
            anyhow::anyhow!("failed to scale Deployment {}/{} to 0: {e}", d.namespace, d.name)
        })?;
        info!("quiesced Deployment {}/{} (was {replicas} replicas)", d.namespace, d.name);
    }
    Ok(())
}

/// Restores every Deployment that carries the saved count. Errors are collected, never stop
/// the loop: this runs on every exit path.
pub async fn restore(client: &Client, prefix: &str, deployments: &[QuiesceDeployment]) -> Vec<String> {
    let key = annotation(prefix);
    let mut errors = Vec::new();
    for d in deployments {
        let api: Api<Deployment> = Api::namespaced(client.clone(), &d.namespace);
        let dep = match api.get_opt(&d.name).await {
            Ok(Some(dep)) => dep,
            Ok(None) => continue,
            Err(e) => {
                errors
                    .push(format!("failed to read Deployment {}/{} to restore it: {e}", d.namespace, d.name));
                continue;
            }
        };
        let Some(saved) = dep.metadata.annotations.as_ref().and_then(|a| a.get(&key)) else { continue };
        let Ok(replicas) = saved.parse::<i32>() else {
            errors.push(format!("Deployment {}/{} has an unreadable {key} = {saved:?}", d.namespace, d.name));
            continue;
        };
        let patch = serde_json::json!({
            "metadata": {"annotations": {key.clone(): null}},
            "spec": {"replicas": replicas},
        });
        match api.patch(&d.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => info!("restored Deployment {}/{} to {replicas} replicas", d.namespace, d.name),
            Err(e) => errors.push(format!("failed to restore Deployment {}/{}: {e}", d.namespace, d.name)),
        }
    }
    errors
}
