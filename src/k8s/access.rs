//! Checks, before anything changes, that this process may make every API call the chain makes
//! ([`chain_core::rbac::CALLS`], `rehearse`'s own reads left out).

use chain_core::{
    rbac::{Grant, required_by_chain},
    settings::Settings,
};

/// Asks the apiserver, with one SelfSubjectAccessReview per grant, whether this process may
/// make every call the chain makes ([`chain_core::rbac::required_by_chain`]: the rows of
/// [`chain_core::rbac::CALLS`] but `rehearse --from-cluster`'s own reads); returns the grants
/// it may not. Preflight runs it before any change, so a missing rule stops the chain before it
/// marks anything in flight (seed failure 25: a missing `pods/log` rule aborted after the latch
/// was set; an out-of-band grant had masked it).
pub async fn verify_access(client: &kube::Client, settings: &Settings) -> anyhow::Result<Vec<Grant>> {
    use futures::StreamExt as _;
    use k8s_openapi::api::authorization::v1::{
        NonResourceAttributes, ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    let api: kube::Api<SelfSubjectAccessReview> = kube::Api::all(client.clone());
    let reviews = required_by_chain(settings).into_iter().map(|g| {
        let spec = if let Some(path) = g.resource.strip_prefix('/').map(|p| format!("/{p}")) {
            SelfSubjectAccessReviewSpec {
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(path),
                    verb: Some(g.verb.clone()),
                }),
                ..Default::default()
            }
        } else {
            let (resource, subresource) = match g.resource.split_once('/') {
                Some((r, s)) => (r.to_string(), Some(s.to_string())),
                None => (g.resource.clone(), None),
            };
            SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some(g.group.clone()),
                    resource: Some(resource),
                    subresource,
                    verb: Some(g.verb.clone()),
                    namespace: g.namespace.clone(),
                    name: g.name.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            }
        };
        let review = SelfSubjectAccessReview { spec, ..Default::default() };
        let api = api.clone();
        async move {
            let answer = api
                .create(&kube::api::PostParams::default(), &review)
                .await
                .map_err(|e| anyhow::anyhow!("failed to ask the apiserver whether we may {g}: {e}"))?;
            Ok::<_, anyhow::Error>((g, answer.status.is_some_and(|s| s.allowed)))
        }
    });
    let answers: Vec<anyhow::Result<(Grant, bool)>> =
        futures::stream::iter(reviews).buffered(8).collect().await;
    let mut denied = Vec::new();
    for a in answers {
        let (g, allowed) = a?;
        if !allowed {
            denied.push(g);
        }
    }
    Ok(denied)
}
