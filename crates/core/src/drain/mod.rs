//! Drain policy, pure: which pods to remove and how ([`select`]), which disruption budgets
//! cover a pod ([`pdb`]), the one per-pod decision the drain and its dry run share: what the
//! eviction API will answer and when a refused pod is deleted directly ([`decide`]), what an
//! eviction answer means and how long to wait ([`outcome`]), and the drain settings. The drain engine
//! that talks to the API is the binary's `drain` module.

pub mod decide;
pub mod outcome;
pub mod pdb;
pub mod select;

#[cfg(any(test, feature = "testing"))]
pub mod fixtures;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use decide::{Decision, Fallback, FallbackKind, Rules};
pub use outcome::{DrainSummary, EvictOutcome, Remaining, RemainingPod, Removal};
pub use select::{DrainPolicy, PodRef, RefuseReason, Selection, SkipReason};

/// Annotation we set when we cordon a node; its value is [`OWNER`].
pub const CORDONED_BY: &str = "k8s-upgrade-chain/cordoned-by";
/// Annotation with the RFC 3339 time we cordoned the node.
pub const CORDONED_AT: &str = "k8s-upgrade-chain/cordoned-at";
/// Value of [`CORDONED_BY`].
pub const OWNER: &str = "k8s-upgrade-chain";

/// The most evictions in flight at once `drain.concurrency` allows: far above any useful
/// value (each is one request to the apiserver), low enough that a typo cannot flood it.
pub const MAX_CONCURRENCY: usize = 1000;

/// Drain settings (the `drain:` section of the config file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrainConfig {
    /// Evictions in flight at once, 1 to [`MAX_CONCURRENCY`]. Default 8 (kubectl: unbounded;
    /// brupop: 5).
    pub concurrency: usize,
    /// Deadline for the whole drain, cordon to last pod gone. Default `30m`. When it passes
    /// the phase fails, and the node is uncordoned again if the chain cordoned it: its own
    /// upgrade has not started, so it can take workloads (the seed's drain had no deadline).
    #[serde(with = "crate::duration::deadline")]
    pub timeout: Duration,
    /// How long a pod must have been refused by a deadlocked PDB (or by several PDBs, each
    /// within its budget without it) before it is deleted directly. Default `0s`, as the
    /// seed's `predrain_unstick`.
    #[serde(with = "crate::duration::span")]
    pub fallback_after: Duration,
    /// Delete a pod that is not Ready as soon as its PDB refuses it while it cannot recover
    /// (`currentHealthy < desiredHealthy`): a pod that is not Ready counts toward no budget,
    /// so removing it costs no availability (the reasoning of `unhealthyPodEvictionPolicy:
    /// AlwaysAllow`). Default true; false waits for the budget like any refused eviction.
    pub unhealthy_fallback: bool,
    /// Grace period for every evicted or deleted pod instead of each pod's own
    /// `terminationGracePeriodSeconds`. Default none: the pod's own. The seed drained with
    /// `--grace-period=300`, which gave every pod five minutes whatever it declared: a pod
    /// that hangs on SIGTERM with a 30 s grace held the drain for 300 s, and one that needs
    /// more than 300 s to shut down (a database flushing) was killed early. The owner's own
    /// figure is the one that knows; `drain.timeout` bounds the whole drain either way.
    #[serde(with = "crate::duration::opt_span")]
    pub grace_period_override: Option<Duration>,
    /// Evict pods no controller will recreate (bare pods, orphaned DaemonSet pods).
    /// Default true, as the seed's `--force`.
    pub force: bool,
    /// Evict pods with emptyDir volumes. Default true, as the seed's `--delete-emptydir-data`.
    pub delete_emptydir_data: bool,
    /// How often the kill switch is re-read during the drain. Default `5s`. A drain halted
    /// by it stops evicting at once; the phase then uncordons the node if the chain cordoned
    /// it and exits 0.
    #[serde(with = "crate::duration::interval")]
    pub kill_switch_interval: Duration,
    /// First retry delay after a refused eviction; at least 1 s. Default `1s`.
    #[serde(with = "crate::duration::interval")]
    pub backoff_min: Duration,
    /// Cap of the exponential retry delay. Default `5s` (kubectl's fixed delay).
    #[serde(with = "crate::duration::interval")]
    pub backoff_max: Duration,
}

impl Default for DrainConfig {
    fn default() -> Self {
        Self {
            concurrency: 8,
            timeout: Duration::from_secs(30 * 60),
            fallback_after: Duration::ZERO,
            unhealthy_fallback: true,
            grace_period_override: None,
            force: true,
            delete_emptydir_data: true,
            kill_switch_interval: Duration::from_secs(5),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(5),
        }
    }
}

impl DrainConfig {
    /// Refuses settings that would hot-loop or never start.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            return Err(format!("drain.concurrency must be between 1 and {MAX_CONCURRENCY}"));
        }
        if self.timeout.is_zero() {
            return Err("drain.timeout must be more than 0s".into());
        }
        if self.backoff_min < outcome::MIN_RETRY_DELAY {
            return Err(
                "drain.backoff_min must be at least 1s (a zero retry delay hot-loops, kubeone#4181)".into()
            );
        }
        if self.backoff_max < self.backoff_min {
            return Err("drain.backoff_max must not be below drain.backoff_min".into());
        }
        if self.kill_switch_interval < Duration::from_secs(1) {
            return Err("drain.kill_switch_interval must be at least 1s".into());
        }
        Ok(())
    }

    /// The pure selection policy these settings imply.
    pub fn policy(&self, self_pod: Option<PodRef>) -> DrainPolicy {
        DrainPolicy { force: self.force, delete_emptydir_data: self.delete_emptydir_data, self_pod }
    }

    /// The rules of the per-pod decision these settings imply.
    pub fn rules(&self) -> Rules {
        Rules { fallback_after: self.fallback_after, unhealthy_fallback: self.unhealthy_fallback }
    }

    /// [`DrainConfig::grace_period_override`] in whole seconds, for DeleteOptions.
    pub fn grace_seconds(&self) -> Option<i64> {
        self.grace_period_override.map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_are_documented_values() {
        let c = DrainConfig::default();
        assert_eq!(c.concurrency, 8);
        assert_eq!(c.timeout, Duration::from_secs(1800));
        assert_eq!(c.fallback_after, Duration::ZERO);
        assert!(c.unhealthy_fallback);
        assert_eq!(c.grace_period_override, None);
        assert!(c.force && c.delete_emptydir_data);
        assert_eq!(c.kill_switch_interval, Duration::from_secs(5));
        assert_eq!((c.backoff_min, c.backoff_max), (Duration::from_secs(1), Duration::from_secs(5)));
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn config_reads_yaml_with_durations() {
        let c: DrainConfig = serde_saphyr::from_str(
            "concurrency: 4\ntimeout: 45m\nfallback_after: 2m\ngrace_period_override: 30s\nforce: false\n",
        )
        .unwrap();
        assert_eq!(c.concurrency, 4);
        assert_eq!(c.timeout, Duration::from_secs(2700));
        assert_eq!(c.fallback_after, Duration::from_secs(120));
        assert_eq!(c.grace_period_override, Some(Duration::from_secs(30)));
        assert!(!c.force);
        assert!(c.delete_emptydir_data, "unset keys keep their defaults");
        let back: DrainConfig = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn config_refuses_unknown_keys_and_bad_values() {
        assert!(serde_saphyr::from_str::<DrainConfig>("concurency: 4\n").is_err());
        assert!(serde_saphyr::from_str::<DrainConfig>("timeout: 600\n").is_err());
        let bad = |c: DrainConfig| c.validate().unwrap_err();
        assert!(bad(DrainConfig { concurrency: 0, ..Default::default() }).contains("concurrency"));
        assert!(
            bad(DrainConfig { backoff_min: Duration::ZERO, ..Default::default() }).contains("backoff_min")
        );
        assert!(
            bad(DrainConfig {
                backoff_max: Duration::from_millis(1500),
                backoff_min: Duration::from_secs(2),
                ..Default::default()
            })
            .contains("backoff_max")
        );
        assert!(bad(DrainConfig { timeout: Duration::ZERO, ..Default::default() }).contains("timeout"));
    }
}
