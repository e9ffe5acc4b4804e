//! The kill switch: ConfigMap `k8s-upgrade-killswitch` in the tool's namespace.
//!
//! Present means halt: log its `reason`, spawn nothing, exit 0. Unreadable (API error,
//! Forbidden) means stop with an error. The seed system treated any error as "absent" and
//! ran on; we fail closed.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};

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

/// The kill switch could not be read; callers must stop.
#[derive(Debug, thiserror::Error)]
#[error("failed to read the kill switch ConfigMap {namespace}/{NAME} (failing closed: nothing was changed)")]
pub struct Unreadable {
    pub namespace: String,
    #[source]
    pub source: kube::Error,
}

/// Reads the kill switch. `Ok(Absent)` only on a clean 404.
pub async fn check(client: &Client, namespace: &str) -> Result<KillSwitch, Unreadable> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(NAME).await {
        Ok(None) => Ok(KillSwitch::Absent),
        Ok(Some(cm)) => Ok(KillSwitch::Present { reason: reason_of(&cm) }),
        Err(source) => Err(Unreadable { namespace: namespace.to_string(), source }),
    }
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
