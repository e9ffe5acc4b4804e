//! The kill switch: ConfigMap `k8s-upgrade-killswitch` in the tool's namespace. Present means
//! halt: log its `reason`, spawn nothing, exit 0. (Reading it is the shell's
//! `k8s::killswitch::check`, which fails closed.)

use k8s_openapi::api::core::v1::ConfigMap;

/// Name of the kill-switch ConfigMap.
pub const NAME: &str = "k8s-upgrade-killswitch";

/// What the kill switch says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillSwitch {
    /// No kill-switch ConfigMap: carry on.
    Absent,
    /// The ConfigMap exists: halt cleanly. `reason` is its `data.reason`, or a placeholder.
    Present { reason: String },
}

/// The `reason` key of the ConfigMap, trimmed; a placeholder when it is missing or empty.
pub fn reason_of(cm: &ConfigMap) -> String {
    cm.data
        .as_ref()
        .and_then(|d| d.get("reason"))
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "(no reason given)".to_string())
}
