//! The compatibility gate of preflight (and of the weekly report) with what it reads: each
//! addon's images from the API, the deprecated APIs still requested from Prometheus, and the
//! nodes' runtimes; the decision is [`chain_core::compat::evaluate`].

use std::fmt;

use chain_core::{
    compat::{self, Addon, AddonKind, CompatSettings, Minor, Verdict},
    version::Version,
};
use futures::future::join_all;
use k8s_openapi::api::core::v1::Node;

use crate::prometheus::AlertGate;

/// Reads the gate's inputs and evaluates it for `target` from `running` (the oldest kubelet's
/// minor). `prometheus` is `Err` when no Prometheus client could be built: the deprecated-API
/// check then reports it, and the gate fails safe.
pub async fn verdict(
    client: &kube::Client,
    prometheus: Result<&AlertGate, String>,
    settings: &CompatSettings,
    target: Version,
    running: Minor,
    nodes: &[Node],
) -> Verdict {
    let addon_images = join_all(settings.addons.iter().map(|a| read_addon_images(client, a))).await;
    let deprecated_apis = match prometheus {
        Ok(gate) => gate
            .instant_query(&settings.deprecated_api_query)
            .await
            .map(|samples| compat::deprecated_apis(&samples))
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    let runtimes = compat::runtimes(nodes);
    compat::evaluate(
        settings,
        &compat::Inputs {
            target,
            running,
            addon_images: &addon_images,
            deprecated_apis: &deprecated_apis,
            runtimes: &runtimes,
        },
    )
}

/// Reads the image references of an addon's workload (all containers and init containers).
pub async fn read_addon_images(client: &kube::Client, addon: &Addon) -> Result<Vec<String>, String> {
    use k8s_openapi::api::{
        apps::v1::{DaemonSet, Deployment, StatefulSet},
        core::v1::PodTemplateSpec,
    };
    use kube::Api;
    async fn template<K>(
        client: &kube::Client,
        ns: &str,
        name: &str,
        f: fn(K) -> Option<PodTemplateSpec>,
    ) -> Result<Option<PodTemplateSpec>, kube::Error>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(client.clone(), ns);
        Ok(api.get_opt(name).await?.and_then(f))
    }
    let (ns, name) = (addon.namespace.as_str(), addon.resource.as_str());
    let tmpl = match addon.kind {
        AddonKind::Deployment => {
            template::<Deployment>(client, ns, name, |d| d.spec.map(|s| s.template)).await
        }
        AddonKind::Daemonset => template::<DaemonSet>(client, ns, name, |d| d.spec.map(|s| s.template)).await,
        AddonKind::Statefulset => {
            template::<StatefulSet>(client, ns, name, |d| d.spec.map(|s| s.template)).await
        }
    }
    .map_err(|e| format!("failed to read {:?} {ns}/{name}: {e}", addon.kind))?
    .ok_or_else(|| format!("{:?} {ns}/{name} not found", addon.kind))?;
    let spec = tmpl.spec.unwrap_or_default();
    Ok(spec
        .init_containers
        .unwrap_or_default()
        .into_iter()
        .chain(spec.containers)
        .filter_map(|c| c.image)
        .collect())
}
