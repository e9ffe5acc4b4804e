//! The pre-upgrade etcd snapshot: a Job created from the site's backup CronJob, verified by the
//! size its log reports (seed §2.1 step 9; seed failure 2: etcdctl over SSH hit a missing
//! mount, so the existing backup CronJob is reused).

use std::time::Duration;

use k8s_openapi::api::{
    batch::v1::{CronJob, Job, JobTemplateSpec},
    core::v1::Pod,
};
use kube::{
    Api, Client,
    api::{ListParams, LogParams, ObjectMeta, PostParams},
    runtime::wait::await_condition,
};

use crate::k8s::spawn;
use chain_core::{settings::EtcdBackup, version::Version};

/// A verified snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Where it is: the configured prefix plus the file name from the log.
    pub location: String,
    pub bytes: u64,
    pub job: String,
}

/// Finds `Backup done: <file> (<N> bytes)` in the log: the file is the third whitespace field.
pub fn parse_backup_log(log: &str) -> Option<(String, u64)> {
    let line = log.lines().rev().find(|l| l.trim_start().starts_with("Backup done:"))?;
    let file = line.split_whitespace().nth(2)?.to_string();
    let open = line.rfind('(')?;
    let bytes = line[open + 1..].split_whitespace().next()?.parse().ok()?;
    Some((file, bytes))
}

/// The Job template of the backup CronJob. Preflight reads it among its gates, before it marks
/// anything, so a missing or unreadable CronJob stops the chain while nothing has changed.
pub async fn check_backup(client: &Client, cfg: &EtcdBackup) -> anyhow::Result<JobTemplateSpec> {
    let ns = &cfg.namespace;
    let cronjobs: Api<CronJob> = Api::namespaced(client.clone(), ns);
    let cj = cronjobs
        .get(&cfg.cronjob)
        .await
        .map_err(|e| anyhow::anyhow!("failed to read the etcd backup CronJob {ns}/{}: {e}", cfg.cronjob))?;
    cj.spec
        .map(|s| s.job_template)
        .ok_or_else(|| anyhow::anyhow!("etcd backup CronJob {ns}/{} has no jobTemplate", cfg.cronjob))
}

/// Creates the snapshot Job from the CronJob, waits for it, and verifies the size.
pub async fn take_snapshot(
    client: &Client,
    cfg: &EtcdBackup,
    target: Version,
    timeout: Duration,
) -> anyhow::Result<Snapshot> {
    let ns = &cfg.namespace;
    let tmpl = check_backup(client, cfg).await?;
    let name = chain_core::plan::fit_name(&format!(
        "pre-upgrade-etcd-{}-{}",
        target.label(),
        jiff::Timestamp::now().as_second()
    ));
    let mut labels = tmpl.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    labels.insert("app.kubernetes.io/created-by".into(), "k8s-upgrade-chain".into());
    let job = Job {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            labels: Some(labels),
            annotations: Some(
                [("cronjob.kubernetes.io/instantiate".to_string(), "manual".to_string())].into(),
            ),
            ..Default::default()
        },
        spec: tmpl.spec,
        status: None,
    };
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    jobs.create(&PostParams::default(), &job)
        .await
        .map_err(|e| anyhow::anyhow!("failed to create etcd snapshot Job {ns}/{name}: {e}"))?;
    let finished = |j: Option<&Job>| j.is_some_and(|j| spawn::job_state(j) != spawn::JobState::Active);
    let done = tokio::time::timeout(timeout, await_condition(jobs.clone(), &name, finished)).await;
    let job = match done {
        Ok(Ok(Some(j))) => j,
        Ok(Ok(None)) => anyhow::bail!("etcd snapshot Job {ns}/{name} disappeared while we waited"),
        Ok(Err(e)) => anyhow::bail!("failed to watch etcd snapshot Job {ns}/{name}: {e}"),
        Err(_) => {
            return Err(super::abort(format!(
                "etcd snapshot Job {ns}/{name} did not complete within {}",
                chain_core::duration::format(timeout)
            )));
        }
    };
    if spawn::job_state(&job) == spawn::JobState::Failed {
        return Err(super::abort(format!("etcd snapshot Job {ns}/{name} failed")));
    }
    let log = job_log(client, ns, &name, cfg.container.as_deref()).await?;
    let (file, bytes) = parse_backup_log(&log).ok_or_else(|| {
        super::abort(format!(
            "etcd snapshot Job {ns}/{name} log has no `Backup done: <file> (<N> bytes)` line"
        ))
    })?;
    if bytes < cfg.min_bytes {
        return Err(super::abort(format!(
            "etcd snapshot {file} is {bytes} bytes, under the {} byte minimum: refusing to upgrade without a real snapshot",
            cfg.min_bytes
        )));
    }
    Ok(Snapshot { location: format!("{}{file}", cfg.location_prefix), bytes, job: name })
}

async fn job_log(client: &Client, ns: &str, job: &str, container: Option<&str>) -> anyhow::Result<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
        .map_err(|e| anyhow::anyhow!("failed to list pods of etcd snapshot Job {ns}/{job}: {e}"))?;
    let pod = list
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .next()
        .ok_or_else(|| anyhow::anyhow!("etcd snapshot Job {ns}/{job} has no pod to read the log of"))?;
    let params =
        LogParams { container: container.map(Into::into), tail_lines: Some(20), ..Default::default() };
    match pods.logs(&pod, &params).await {
        Ok(log) => Ok(log),
        // The configured container may not exist; the seed fell back to the default one.
        Err(_) if container.is_some() => pods
            .logs(&pod, &LogParams { tail_lines: Some(20), ..Default::default() })
            .await
            .map_err(|e| anyhow::anyhow!("failed to read the log of pod {ns}/{pod}: {e}")),
        Err(e) => Err(anyhow::anyhow!("failed to read the log of pod {ns}/{pod}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_backup_line() {
        let log = "starting\nBackup done: etcd-20261121.db (52428800 bytes)\n";
        assert_eq!(parse_backup_log(log), Some(("etcd-20261121.db".into(), 52_428_800)));
        assert_eq!(parse_backup_log("Backup done: x.db\n"), None);
        assert_eq!(parse_backup_log("nothing here"), None);
    }
}
