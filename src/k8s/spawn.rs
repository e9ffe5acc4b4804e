//! Applying chain Jobs: server-side apply under one field manager, with the seed system's
//! idempotency rules made safe.
//!
//! If the Job already exists: Active or Complete means skip (the chain already got here);
//! Failed means delete it with Foreground propagation, wait until the old UID is gone, and
//! re-create it (seed failure 19: a Failed Job that only counted as "exists" wedged the chain
//! for five days).

use std::time::Duration;

pub use chain_core::job::{JobState, job_state};
use k8s_openapi::api::batch::v1::Job;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, Preconditions, PropagationPolicy},
    runtime::wait::{await_condition, conditions},
};

/// The one field manager of every object this tool applies.
pub const FIELD_MANAGER: &str = "k8s-upgrade-chain";

/// What to do with a Complete Job of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnComplete {
    /// The chain already passed this step: leave it (the normal rule).
    Skip,
    /// Re-run it (detection does this for a preflight whose chain never advanced).
    Respawn,
}

/// What [`spawn`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpawnOutcome {
    /// No Job of that name existed; it was created.
    Created,
    /// A Job of that name is still running: nothing was changed.
    SkippedActive,
    /// A Job of that name completed: nothing was changed.
    SkippedComplete,
    /// The old Job (Failed, or Complete with [`OnComplete::Respawn`]) was deleted and a new one
    /// created.
    Respawned { previous: JobState },
}

/// Creates `job` unless a Job of that name is active or complete; replaces a Failed one.
pub async fn spawn(
    client: &Client,
    job: &Job,
    on_complete: OnComplete,
    delete_timeout: Duration,
) -> anyhow::Result<SpawnOutcome> {
    let ns = job.namespace().ok_or_else(|| anyhow::anyhow!("job {} has no namespace", job.name_any()))?;
    let name = job.name_any();
    let api: Api<Job> = Api::namespaced(client.clone(), &ns);
    let existing =
        api.get_opt(&name).await.map_err(|e| anyhow::anyhow!("failed to read Job {ns}/{name}: {e}"))?;
    let outcome = match existing {
        None => SpawnOutcome::Created,
        Some(old)
            if chain_core::job::target_node(&old)
                .zip(chain_core::job::target_node(job))
                .is_some_and(|(a, b)| a != b) =>
        {
            // Never take another node's Job for this one's (a template override may drop the
            // annotation: then the name alone decides, as before). The planner refuses
            // clusters whose nodes' Job names collide, so this Job was not rendered for us.
            return Err(crate::exit::bad_input(anyhow::anyhow!(
                "Job {ns}/{name} already exists for node {}, not {}: Job names collide; rename the node \
                 or delete that Job",
                chain_core::job::target_node(&old).unwrap_or("(none)"),
                chain_core::job::target_node(job).unwrap_or("(none)")
            )));
        }
        Some(old) => match (job_state(&old), on_complete) {
            (JobState::Active, _) => return Ok(SpawnOutcome::SkippedActive),
            (JobState::Complete, OnComplete::Skip) => return Ok(SpawnOutcome::SkippedComplete),
            (previous, _) => {
                delete_and_wait(&api, &old, delete_timeout).await?;
                SpawnOutcome::Respawned { previous }
            }
        },
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(job))
        .await
        .map_err(|e| anyhow::anyhow!("failed to apply Job {ns}/{name}: {e}"))?;
    Ok(outcome)
}

/// Deletes a Job with Foreground propagation and waits until its UID is gone.
///
/// batch/v1 Jobs deleted through the API orphan their pods by default (kubernetes/kubernetes
/// #20902), and an old upgrade pod could still be running when the new one starts; Foreground
/// deletes the pods first. The UID precondition makes sure we delete the Job we looked at.
pub async fn delete_and_wait(api: &Api<Job>, job: &Job, timeout: Duration) -> anyhow::Result<()> {
    let name = job.name_any();
    let ns = job.namespace().unwrap_or_default();
    let uid = job.uid().ok_or_else(|| anyhow::anyhow!("Job {ns}/{name} has no uid"))?;
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        preconditions: Some(Preconditions { uid: Some(uid.clone()), resource_version: None }),
        ..DeleteParams::default()
    };
    match api.delete(&name, &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(e) => anyhow::bail!("failed to delete Job {ns}/{name}: {e}"),
    }
    tokio::time::timeout(timeout, await_condition(api.clone(), &name, conditions::is_deleted(&uid)))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "Job {ns}/{name} (uid {uid}) was still there {}s after its deletion; its pods may be stuck \
                 terminating",
                timeout.as_secs()
            )
        })?
        .map_err(|e| anyhow::anyhow!("failed to watch Job {ns}/{name} being deleted: {e}"))?;
    Ok(())
}
