//! Reads what the compatibility gate ([`chain_core::compat`]) needs from the API: the images
//! of each addon's workload.

use std::fmt;

use chain_core::compat::{Addon, AddonKind};

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
