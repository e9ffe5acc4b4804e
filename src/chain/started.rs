//! After spawning the next Job: does its pod actually start? Seed failure 36 left pinned Jobs
//! Pending for five days on a new taint, and failure 18 nearly lost the image; neither made a
//! sound. A pod that is unschedulable or cannot pull its image is reported loudly (Slack and
//! an Event on the Job). The phase that spawned it has succeeded either way.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, api::ListParams};

/// Why a pod is not starting, if it visibly is not.
pub fn stuck_reason(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    if let Some(c) = status
        .conditions
        .as_ref()
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled" && c.status == "False"))
        && c.reason.as_deref() == Some("Unschedulable")
    {
        return Some(format!("unschedulable: {}", c.message.clone().unwrap_or_default()));
    }
    for cs in
        status.container_statuses.iter().flatten().chain(status.init_container_statuses.iter().flatten())
    {
        if let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let reason = w.reason.as_deref().unwrap_or_default();
            if matches!(
                reason,
                "ErrImagePull"
                    | "ImagePullBackOff"
                    | "InvalidImageName"
                    | "CreateContainerConfigError"
                    | "CreateContainerError"
            ) {
                return Some(format!(
                    "container {}: {reason}: {}",
                    cs.name,
                    w.message.clone().unwrap_or_default()
                ));
            }
        }
    }
    None
}

/// What became of the Job's pod within the deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Running (or already finished).
    Started,
    /// Visibly stuck, with the reason.
    Stuck(String),
    /// Still Pending (or no pod yet) at the deadline, with no visible reason.
    NotYet,
}

/// Polls the Job's pods (label `job-name`) every second until one runs or is visibly stuck.
pub async fn wait_started(
    client: &Client,
    namespace: &str,
    job: &str,
    timeout: Duration,
) -> anyhow::Result<Start> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let deadline = tokio::time::Instant::now() + timeout;
    let params = ListParams::default().labels(&format!("job-name={job}"));
    loop {
        let pods = api
            .list(&params)
            .await
            .map_err(|e| anyhow::anyhow!("failed to list the pods of Job {namespace}/{job}: {e}"))?
            .items;
        for p in &pods {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
            if matches!(phase, "Running" | "Succeeded" | "Failed") {
                return Ok(Start::Started);
            }
            if let Some(r) = stuck_reason(p) {
                return Ok(Start::Stuck(r));
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Start::NotYet);
        }
        tokio::time::sleep(Duration::from_secs(1).min(timeout)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateWaiting, ContainerStatus, PodCondition, PodStatus,
    };

    #[test]
    fn recognises_unschedulable_and_image_pull_failures() {
        let unschedulable = Pod {
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "PodScheduled".into(),
                    status: "False".into(),
                    reason: Some("Unschedulable".into()),
                    message: Some("0/5 nodes: 1 node(s) had untolerated taint {nvidia.com/gpu: }".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(stuck_reason(&unschedulable).unwrap().contains("untolerated taint"));
        let pull = Pod {
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: "upgrade-step".into(),
                    state: Some(ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some("ImagePullBackOff".into()),
                            message: Some("manifest unknown".into()),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(stuck_reason(&pull).unwrap().contains("ImagePullBackOff"));
        assert_eq!(stuck_reason(&Pod::default()), None);
    }
}
