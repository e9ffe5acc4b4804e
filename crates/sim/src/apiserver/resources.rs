//! The table of served resources and the URL grammar.

/// One served resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResDef {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    /// Has a `status` subresource: writes through the main endpoint keep the old status,
    /// writes through `/status` keep the old spec (as the real registry strategies do).
    pub has_status: bool,
}

impl ResDef {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods` or `jobs.batch`, as in the real Status messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Job.batch` / `Pod`: the qualified kind used by 422 Invalid messages.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() { self.kind.to_string() } else { format!("{}.{}", self.kind, self.group) }
    }
}

const fn r(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    has_status: bool,
) -> ResDef {
    ResDef { group, version, plural, kind, namespaced, has_status }
}

/// Everything the server knows. Index into this table is the storage key.
pub(crate) const RESOURCES: &[ResDef] = &[
    r("", "v1", "pods", "Pod", true, true),
    r("", "v1", "nodes", "Node", false, true),
    r("", "v1", "namespaces", "Namespace", false, true),
    r("", "v1", "configmaps", "ConfigMap", true, false),
    r("", "v1", "secrets", "Secret", true, false),
    r("", "v1", "events", "Event", true, false),
    r("", "v1", "services", "Service", true, true),
    r("events.k8s.io", "v1", "events", "Event", true, false),
    r("apps", "v1", "deployments", "Deployment", true, true),
    r("apps", "v1", "daemonsets", "DaemonSet", true, true),
    r("apps", "v1", "replicasets", "ReplicaSet", true, true),
    r("apps", "v1", "statefulsets", "StatefulSet", true, true),
    r("batch", "v1", "jobs", "Job", true, true),
    r("batch", "v1", "cronjobs", "CronJob", true, true),
    r("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", true, true),
    r("coordination.k8s.io", "v1", "leases", "Lease", true, false),
];

pub(crate) const PODS: usize = 0;
pub(crate) const NODES: usize = 1;
pub(crate) const NAMESPACES: usize = 2;
pub(crate) const DEPLOYMENTS: usize = 8;
pub(crate) const REPLICASETS: usize = 10;
pub(crate) const STATEFULSETS: usize = 11;
pub(crate) const JOBS: usize = 12;
pub(crate) const PDBS: usize = 14;

/// Looks a resource up by group, version and plural.
pub(crate) fn find(group: &str, version: &str, plural: &str) -> Option<usize> {
    RESOURCES.iter().position(|d| d.group == group && d.version == version && d.plural == plural)
}

/// Looks a resource up by `apiVersion` and `kind` (what a manifest carries).
pub(crate) fn find_kind(api_version: &str, kind: &str) -> Option<usize> {
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    RESOURCES.iter().position(|d| d.group == group && d.version == version && d.kind == kind)
}

/// A parsed resource URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub res: usize,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// What a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Resource(Target),
    /// `/api/v1` or `/apis/{g}/{v}`: an APIResourceList.
    GroupVersion {
        group: String,
        version: String,
    },
    /// `/api`.
    CoreVersions,
    /// `/apis`.
    Groups,
    Version,
    Health,
    Unknown,
}

/// Parses an apiserver path (no query).
pub(crate) fn route(path: &str) -> Route {
    let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["readyz" | "livez" | "healthz", ..] => return Route::Health,
        ["version"] => return Route::Version,
        ["api"] => return Route::CoreVersions,
        ["apis"] => return Route::Groups,
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Route::Unknown,
    };
    if rest.is_empty() {
        if RESOURCES.iter().any(|d| d.group == group && d.version == version) {
            return Route::GroupVersion { group: group.to_string(), version: version.to_string() };
        }
        return Route::Unknown;
    }
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if find(group, version, plural).is_some_and(|i| RESOURCES[i].namespaced) =>
        {
            (Some(ns.to_string()), [&[*plural][..], tail].concat())
        }
        _ => (None, rest.to_vec()),
    };
    let Some(res) = find(group, version, rest[0]) else {
        return Route::Unknown;
    };
    if namespace.is_none() && RESOURCES[res].namespaced && rest.len() > 1 {
        // A namespaced resource addressed without its namespace only supports collection lists.
        return Route::Unknown;
    }
    match rest.len() {
        1 => Route::Resource(Target { res, namespace, name: None, subresource: None }),
        2 => Route::Resource(Target { res, namespace, name: Some(rest[1].to_string()), subresource: None }),
        3 => Route::Resource(Target {
            res,
            namespace,
            name: Some(rest[1].to_string()),
            subresource: Some(rest[2].to_string()),
        }),
        _ => Route::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route("/api/v1/namespaces/apps/pods/web-1/eviction"),
            Route::Resource(Target {
                res: PODS,
                namespace: Some("apps".into()),
                name: Some("web-1".into()),
                subresource: Some("eviction".into())
            })
        );
        assert_eq!(
            route("/api/v1/namespaces/apps"),
            Route::Resource(Target {
                res: NAMESPACES,
                namespace: None,
                name: Some("apps".into()),
                subresource: None
            })
        );
        assert_eq!(
            route("/api/v1/pods"),
            Route::Resource(Target { res: PODS, namespace: None, name: None, subresource: None })
        );
        assert_eq!(
            route("/apis/batch/v1/namespaces/x/jobs"),
            Route::Resource(Target { res: JOBS, namespace: Some("x".into()), name: None, subresource: None })
        );
        assert_eq!(route("/apis/batch/v2/jobs"), Route::Unknown);
        assert_eq!(route("/readyz"), Route::Health);
    }
}
