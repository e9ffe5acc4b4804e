//! The kill switch: ConfigMap `k8s-upgrade-killswitch` in the tool's namespace.
//!
//! Present means halt: log its `reason`, spawn nothing, exit 0. Unreadable (API error,
//! Forbidden) means stop with an error. The seed system treated any error as "absent" and
//! ran on; we fail closed.

use chain_core::killswitch::reason_of;
pub use chain_core::killswitch::{KillSwitch, NAME};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};

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
