//! The pre-upgrade etcd snapshot decision (pure): take one with the site's backup CronJob,
//! go on without one because the site opted out, or refuse to upgrade.
//!
//! It depends on the settings alone, so preflight takes it before anything else, before any
//! record is written (issue 17: preflight used to mark the chain in flight, then refuse). The
//! rehearsal takes the same decision from the same settings: it never invents a backup for a
//! site that has none.

use crate::settings::{EtcdBackup, Hooks};

/// Why preflight refuses when no backup is configured and the site did not opt out.
pub const REFUSAL: &str = "no etcd backup configured (hooks.etcd_backup): refusing to upgrade without a \
                           snapshot; set hooks.allow_no_etcd_snapshot to accept the risk";

/// What preflight does about the snapshot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SnapshotPolicy<'a> {
    /// Take it through this backup CronJob and verify its size.
    Take(&'a EtcdBackup),
    /// No backup configured and `hooks.allow_no_etcd_snapshot` set: go on without one. The chain
    /// pushes `k8s_upgrade_snapshot_skipped 1` so the snapshot alert does not page.
    OptedOut,
    /// No backup configured and no opt-out: preflight refuses ([`REFUSAL`]).
    Refuse,
}

impl SnapshotPolicy<'_> {
    /// Whether the chain runs without a snapshot on purpose (the `k8s_upgrade_snapshot_skipped`
    /// gauge).
    pub fn skipped(&self) -> bool {
        matches!(self, SnapshotPolicy::OptedOut)
    }
}

/// The policy of `hooks`. A configured backup always wins over the opt-out.
pub fn policy(hooks: &Hooks) -> SnapshotPolicy<'_> {
    match (&hooks.etcd_backup, hooks.allow_no_etcd_snapshot) {
        (Some(backup), _) => SnapshotPolicy::Take(backup),
        (None, true) => SnapshotPolicy::OptedOut,
        (None, false) => SnapshotPolicy::Refuse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup() -> EtcdBackup {
        EtcdBackup {
            namespace: "default".into(),
            cronjob: "backup-etcd".into(),
            container: None,
            location_prefix: String::new(),
            min_bytes: 1024,
        }
    }

    #[test]
    fn a_configured_backup_is_taken_even_with_the_opt_out() {
        let b = backup();
        for allow in [false, true] {
            let hooks =
                Hooks { etcd_backup: Some(b.clone()), allow_no_etcd_snapshot: allow, ..Hooks::default() };
            assert_eq!(policy(&hooks), SnapshotPolicy::Take(&b));
            assert!(!policy(&hooks).skipped());
        }
    }

    #[test]
    fn without_a_backup_the_opt_out_decides() {
        let refuse = Hooks::default();
        assert_eq!(policy(&refuse), SnapshotPolicy::Refuse);
        assert!(!policy(&refuse).skipped());
        let opted = Hooks { allow_no_etcd_snapshot: true, ..Hooks::default() };
        assert_eq!(policy(&opted), SnapshotPolicy::OptedOut);
        assert!(policy(&opted).skipped());
    }
}
