//! Least privilege, in one place: [`CALLS`] lists every Kubernetes API call the binary makes,
//! and both the `manifests` command and the Terraform module (`terraform/rbac.tf`, generated
//! by [`terraform_hcl`]) grant exactly that list, so the grants cannot drift from the code.
//!
//! The seed system lost a preflight to a missing `pods/log` rule that an out-of-band grant had
//! masked in testing (seed failure 25): every permission is codified here, and [`check`] proves
//! a rule set covers each call and nothing more. To add a call, add a row to [`CALLS`], run
//! `UPDATE_GENERATED=1 cargo test --test deploy` to regenerate `terraform/rbac.tf`, and commit.
//!
//! Each scope becomes one Role (or the ClusterRole) bound to the chain's ServiceAccount:
//! - [`Scope::Cluster`]: ClusterRole `k8s-upgrade-job` (nodes, pods across namespaces, ...).
//! - [`Scope::ToolNamespace`]: Role `k8s-upgrade-job` in the tool's namespace.
//! - [`Scope::EtcdBackupNamespace`]: Role `k8s-upgrade-job-etcd-backup` in the namespace of the
//!   etcd backup CronJob (absent when no `hooks.etcd_backup` is configured).
//! - [`Scope::QuiesceNamespace`]: Role `k8s-upgrade-job-quiesce` in each namespace of
//!   `hooks.quiesce_deployments`, granting `patch` on those Deployments by name only (none
//!   when the list is empty): patching any Deployment's pod template is close to
//!   cluster-admin, so the chain gets it only where the config asks for it.
//! - [`Scope::DefaultNamespace`]: Role `k8s-upgrade-job-node-events` in `default`, where
//!   Events about cluster-scoped objects (Nodes) are written by kube's recorder.
//! - [`Scope::Rehearse`]: ClusterRole `k8s-upgrade-job-rehearse`, the reads of
//!   `rehearse --from-cluster` that the chain itself does not make (list namespaces and the
//!   workload controllers). Read-only, and separate so a site can leave it out: the chain never
//!   needs it, and preflight's access review ([`required_by_chain`]) does not ask for it.

use std::collections::BTreeSet;

use k8s_openapi::api::rbac::v1::PolicyRule;
use serde::Serialize;

use crate::settings::Settings;

/// Where a call is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Cluster-scoped objects, or namespaced objects in any namespace.
    Cluster,
    /// The tool's namespace (`namespace` setting).
    ToolNamespace,
    /// The namespace of `hooks.etcd_backup` (skipped when not configured).
    EtcdBackupNamespace,
    /// The `default` namespace (Events about Nodes).
    DefaultNamespace,
    /// Each namespace of `hooks.quiesce_deployments` (none when the list is empty).
    QuiesceNamespace,
    /// Cluster-wide reads of `rehearse --from-cluster` only, in a ClusterRole of their own.
    Rehearse,
}

impl Scope {
    /// Every scope, in the order roles are emitted.
    pub const ALL: [Scope; 6] = [
        Scope::Cluster,
        Scope::ToolNamespace,
        Scope::EtcdBackupNamespace,
        Scope::DefaultNamespace,
        Scope::QuiesceNamespace,
        Scope::Rehearse,
    ];

    /// Whether the chain (detect, the phases, status, report, ack) needs this scope; only
    /// `rehearse --from-cluster` needs [`Scope::Rehearse`].
    pub fn used_by_chain(self) -> bool {
        self != Scope::Rehearse
    }

    /// Name of the ClusterRole / Role holding this scope's rules (and of its binding).
    pub fn role_name(self) -> &'static str {
        match self {
            Scope::Cluster | Scope::ToolNamespace => "k8s-upgrade-job",
            Scope::EtcdBackupNamespace => "k8s-upgrade-job-etcd-backup",
            Scope::DefaultNamespace => "k8s-upgrade-job-node-events",
            Scope::QuiesceNamespace => "k8s-upgrade-job-quiesce",
            Scope::Rehearse => "k8s-upgrade-job-rehearse",
        }
    }

    /// The namespaces of this scope under `settings`, in order: `[None]` for the cluster
    /// scope, empty when the scope does not apply (no etcd backup hook, no Deployment to
    /// quiesce).
    pub fn namespaces(self, settings: &Settings) -> Vec<Option<String>> {
        match self {
            Scope::Cluster | Scope::Rehearse => vec![None],
            Scope::ToolNamespace => vec![Some(settings.namespace.clone())],
            Scope::EtcdBackupNamespace => {
                settings.hooks.etcd_backup.iter().map(|b| Some(b.namespace.clone())).collect()
            }
            Scope::DefaultNamespace => vec![Some("default".into())],
            Scope::QuiesceNamespace => {
                let set: BTreeSet<&str> =
                    settings.hooks.quiesce_deployments.iter().map(|d| d.namespace.as_str()).collect();
                set.into_iter().map(|n| Some(n.to_string())).collect()
            }
        }
    }

    /// The Terraform expression of this scope's namespace (see `terraform/variables.tf`).
    fn terraform_namespace(self) -> Option<&'static str> {
        match self {
            Scope::Cluster | Scope::Rehearse => None,
            Scope::ToolNamespace => Some("local.namespace"),
            Scope::EtcdBackupNamespace => Some("local.etcd_backup_namespace"),
            Scope::DefaultNamespace => Some("\"default\""),
            Scope::QuiesceNamespace => Some("each.key"),
        }
    }
}

/// Which objects of the resource a call touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Names {
    /// Any object (no `resourceNames`).
    Any,
    /// Only the tool's namespace object (namespaces are cluster-scoped).
    ToolNamespace,
    /// Only the kill-switch ConfigMap.
    KillSwitch,
    /// Only the ConfigMaps of `hooks.post_control_plane_scripts` (skipped when none).
    PostUpgradeConfigMaps,
    /// Only the Deployments of `hooks.quiesce_deployments` in the Role's namespace.
    QuiesceDeployments,
}

/// One API call (or group of verbs on one resource) the binary makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Call {
    /// API group (`""` for core).
    pub group: &'static str,
    /// Resource, `resource/subresource`, or a non-resource URL starting with `/`.
    pub resource: &'static str,
    /// Verbs.
    pub verbs: &'static [&'static str],
    /// Where.
    pub scope: Scope,
    /// Which objects.
    pub names: Names,
    /// The code that makes the call, and why.
    pub needed_by: &'static str,
}

const fn call(
    group: &'static str,
    resource: &'static str,
    verbs: &'static [&'static str],
    scope: Scope,
    names: Names,
    needed_by: &'static str,
) -> Call {
    Call { group, resource, verbs, scope, names, needed_by }
}

use Names::{Any, KillSwitch, PostUpgradeConfigMaps, QuiesceDeployments, ToolNamespace as ToolNs};
use Scope::{Cluster, DefaultNamespace, EtcdBackupNamespace, QuiesceNamespace, Rehearse, ToolNamespace};

/// Every API call the binary makes. THE list: extend it when code starts making a new call.
#[rustfmt::skip]
pub const CALLS: &[Call] = &[
    // Nodes: planning, cordon/uncordon, Ready waits.
    call("", "nodes", &["get", "list", "watch"], Cluster, Any, "cluster::list_nodes, chain (node lookups, Ready wait), drain, status, report"),
    call("", "nodes", &["patch"], Cluster, Any, "drain: cordon / uncordon; the upgrade-started record of a node phase; ack"),
    // Drain and pod health checks.
    call("", "pods", &["list", "watch", "delete"], Cluster, Any, "drain (pods on the node, watch them go, fallback delete); chain::nodes (system and control-plane pods); etcd snapshot pod"),
    call("", "pods/eviction", &["create"], Cluster, Any, "drain (eviction API)"),
    call("policy", "poddisruptionbudgets", &["list"], Cluster, Any, "drain (PDB classification)"),
    call("apps", "daemonsets", &["get"], Cluster, Any, "drain (DaemonSet pods stay); chain::compat::read_addon_images"),
    call("apps", "statefulsets", &["get"], Cluster, Any, "chain::compat::read_addon_images"),
    call("apps", "deployments", &["get"], Cluster, Any, "chain::compat::read_addon_images; chain::quiesce (read before scaling)"),
    // Patching a Deployment's pod template runs any image as its ServiceAccount: only the
    // configured Deployments, by name, in their own namespaces (QA A7).
    call("apps", "deployments", &["patch"], QuiesceNamespace, QuiesceDeployments, "chain::quiesce (hooks.quiesce_deployments: replicas to 0 and back)"),
    // Chain Jobs in the tool's namespace. `create` too: server-side apply of a new object needs it.
    call("batch", "jobs", &["create", "get", "list", "watch", "patch", "delete"], ToolNamespace, Any, "spawn (server-side apply, respawn of Failed and stopped Jobs, await deletion); a phase's outcome annotation on its own Job; detect (resume decision); status; report; ack"),
    call("", "configmaps", &["get"], ToolNamespace, KillSwitch, "killswitch::check"),
    call("", "namespaces", &["get", "patch"], Cluster, ToolNs, "annotations (in-flight record); chain::claims (worker claims, resourceVersion-guarded); status"),
    call("", "namespaces", &["get"], Cluster, Any, "drain --dry-run (is a pod's namespace being deleted: its evictions are refused)"),
    call("events.k8s.io", "events", &["create", "patch"], ToolNamespace, Any, "events (milestones on Jobs)"),
    call("events.k8s.io", "events", &["create", "patch"], DefaultNamespace, Any, "events (milestones on Nodes: cluster-scoped objects report into default)"),
    // Pre-upgrade etcd snapshot: a Job created from the backup CronJob, its log verified.
    call("batch", "cronjobs", &["get"], EtcdBackupNamespace, Any, "chain::etcd (the Job template of the backup CronJob)"),
    call("batch", "jobs", &["create", "list", "watch"], EtcdBackupNamespace, Any, "chain::etcd (create the snapshot Job, wait for it)"),
    call("", "pods/log", &["get"], EtcdBackupNamespace, Any, "chain::etcd (read the backup byte count; seed failure 25)"),
    // Post-control-plane scripts.
    call("", "configmaps", &["get"], Cluster, PostUpgradeConfigMaps, "chain::phases (hooks.post_control_plane_scripts)"),
    // Preflight checks every permission above before it changes anything (seed failure 25).
    call("authorization.k8s.io", "selfsubjectaccessreviews", &["create"], Cluster, Any, "rbac::verify_access (preflight)"),
    // Control-plane health.
    call("", "/readyz", &["get"], Cluster, Any, "chain::nodes::health_endpoints"),
    call("", "/livez", &["get"], Cluster, Any, "chain::nodes::health_endpoints"),
    // rehearse --from-cluster copies the cluster read-only. Its other reads (nodes, pods, PDBs,
    // the kill-switch and post-upgrade ConfigMaps, the etcd backup CronJob) are the chain's
    // own grants above.
    call("", "namespaces", &["list"], Rehearse, Any, "rehearse --from-cluster (rehearse::cluster::copy_live: every namespace)"),
    call("apps", "deployments", &["list"], Rehearse, Any, "rehearse --from-cluster (copy_live: the pods' owners)"),
    call("apps", "replicasets", &["list"], Rehearse, Any, "rehearse --from-cluster (copy_live: the pods' owners)"),
    call("apps", "statefulsets", &["list"], Rehearse, Any, "rehearse --from-cluster (copy_live: the pods' owners)"),
    call("apps", "daemonsets", &["list"], Rehearse, Any, "rehearse --from-cluster (copy_live: the pods' owners)"),
];

/// One atomic permission: a verb on a resource (or URL) in a namespace (or cluster-wide), on
/// one named object or any.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Grant {
    /// `None`: cluster-wide (ClusterRole).
    pub namespace: Option<String>,
    /// API group (`""` core); empty for URLs.
    pub group: String,
    /// Resource, `resource/subresource` or `/url`.
    pub resource: String,
    /// Verb.
    pub verb: String,
    /// `None`: any object.
    pub name: Option<String>,
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() { "core" } else { &self.group };
        write!(
            f,
            "{} {group}/{}{} in {}",
            self.verb,
            self.resource,
            self.name.as_ref().map(|n| format!(" named {n}")).unwrap_or_default(),
            self.namespace.as_deref().unwrap_or("the cluster")
        )
    }
}

/// The resolved names of `names` under `settings` in `namespace`: `None` = any;
/// `Some(empty)` = the call does not apply.
fn resolve_names(names: Names, settings: &Settings, namespace: Option<&str>) -> Option<Vec<String>> {
    match names {
        QuiesceDeployments => {
            let set: BTreeSet<String> = settings
                .hooks
                .quiesce_deployments
                .iter()
                .filter(|d| Some(d.namespace.as_str()) == namespace)
                .map(|d| d.name.clone())
                .collect();
            Some(set.into_iter().collect())
        }
        Any => None,
        ToolNs => Some(vec![settings.namespace.clone()]),
        KillSwitch => Some(vec![crate::killswitch::NAME.to_string()]),
        PostUpgradeConfigMaps => {
            let set: BTreeSet<String> =
                settings.hooks.post_control_plane_scripts.iter().map(|s| s.configmap_name.clone()).collect();
            Some(set.into_iter().collect())
        }
    }
}

/// The atomic grants [`CALLS`] need under `settings` (pure): what the RBAC grants.
pub fn required(settings: &Settings) -> BTreeSet<Grant> {
    required_of(CALLS.iter(), settings)
}

/// The grants the chain needs ([`Scope::used_by_chain`]): what preflight's access review asks
/// for. `rehearse --from-cluster`'s own reads are left out: the chain runs without them.
pub fn required_by_chain(settings: &Settings) -> BTreeSet<Grant> {
    required_of(CALLS.iter().filter(|c| c.scope.used_by_chain()), settings)
}

fn required_of<'a>(calls: impl Iterator<Item = &'a Call>, settings: &Settings) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for c in calls {
        for namespace in c.scope.namespaces(settings) {
            let names: Vec<Option<String>> = match resolve_names(c.names, settings, namespace.as_deref()) {
                None => vec![None],
                Some(list) => list.into_iter().map(Some).collect(),
            };
            for verb in c.verbs {
                for name in &names {
                    out.insert(Grant {
                        namespace: namespace.clone(),
                        group: c.group.into(),
                        resource: c.resource.into(),
                        verb: (*verb).into(),
                        name: name.clone(),
                    });
                }
            }
        }
    }
    out
}

/// One Role or the ClusterRole: its scope, namespace and rules.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleRules {
    /// The scope.
    pub scope: Scope,
    /// `None` for the ClusterRole.
    pub namespace: Option<String>,
    /// Rules, one per row of [`CALLS`] (in order).
    pub rules: Vec<PolicyRule>,
}

fn policy_rule(c: &Call, names: Option<Vec<String>>) -> PolicyRule {
    let verbs = c.verbs.iter().map(|v| v.to_string()).collect();
    if c.resource.starts_with('/') {
        return PolicyRule { non_resource_urls: Some(vec![c.resource.into()]), verbs, ..Default::default() };
    }
    PolicyRule {
        api_groups: Some(vec![c.group.into()]),
        resources: Some(vec![c.resource.into()]),
        resource_names: names,
        verbs,
        ..Default::default()
    }
}

/// The rules of every Role/ClusterRole under `settings` (pure). Scopes that do not apply, and
/// rows whose named objects are not configured, are left out: an empty `resourceNames` would
/// grant every object.
pub fn roles(settings: &Settings) -> Vec<RoleRules> {
    Scope::ALL
        .into_iter()
        .flat_map(|scope| scope.namespaces(settings).into_iter().map(move |ns| (scope, ns)))
        .filter_map(|(scope, namespace)| {
            let rules: Vec<PolicyRule> = CALLS
                .iter()
                .filter(|c| c.scope == scope)
                .filter_map(|c| match resolve_names(c.names, settings, namespace.as_deref()) {
                    Some(list) if list.is_empty() => None,
                    names => Some(policy_rule(c, names)),
                })
                .collect();
            (!rules.is_empty()).then_some(RoleRules { scope, namespace, rules })
        })
        .collect()
}

/// Result of [`check`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Needed grants no rule covers.
    pub uncovered: Vec<Grant>,
    /// Granted permissions no call needs (a wildcard counts as unneeded).
    pub unneeded: Vec<Grant>,
}

impl Coverage {
    /// Exactly the needed permissions.
    pub fn is_exact(&self) -> bool {
        self.uncovered.is_empty() && self.unneeded.is_empty()
    }
}

impl std::fmt::Display for Coverage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for g in &self.uncovered {
            writeln!(f, "missing: {g}")?;
        }
        for g in &self.unneeded {
            writeln!(f, "not needed: {g}")?;
        }
        Ok(())
    }
}

fn list(v: &Option<Vec<String>>) -> Vec<String> {
    v.clone().unwrap_or_default()
}

/// Whether `rule`, bound in `namespace` (`None` = ClusterRole via ClusterRoleBinding), allows
/// `g`, with Kubernetes RBAC semantics (`*` wildcards, empty `resourceNames` = any).
pub fn allows(namespace: Option<&str>, rule: &PolicyRule, g: &Grant) -> bool {
    let has = |l: &[String], v: &str| l.iter().any(|x| x == "*" || x == v);
    let verb_ok = has(&rule.verbs, &g.verb);
    if g.resource.starts_with('/') {
        return namespace.is_none()
            && verb_ok
            && list(&rule.non_resource_urls)
                .iter()
                .any(|u| u == &g.resource || u.strip_suffix('*').is_some_and(|p| g.resource.starts_with(p)));
    }
    let ns_ok = match (namespace, &g.namespace) {
        (None, _) => true,
        (Some(a), Some(b)) => a == b,
        (Some(_), None) => false,
    };
    let names = list(&rule.resource_names);
    let name_ok = names.is_empty() || g.name.as_ref().is_some_and(|n| names.contains(n));
    ns_ok
        && verb_ok
        && name_ok
        && has(&list(&rule.api_groups), &g.group)
        && has(&list(&rule.resources), &g.resource)
}

/// The atomic grants of a rule bound in `namespace` (wildcards kept as `*`).
pub fn expand(namespace: Option<&str>, rule: &PolicyRule) -> Vec<Grant> {
    let mut out = Vec::new();
    let grant = |group: &str, resource: &str, verb: &str, name: Option<&String>| Grant {
        namespace: namespace.map(String::from),
        group: group.into(),
        resource: resource.into(),
        verb: verb.into(),
        name: name.cloned(),
    };
    for verb in &rule.verbs {
        for url in list(&rule.non_resource_urls) {
            out.push(grant("", &url, verb, None));
        }
        for group in list(&rule.api_groups) {
            for resource in list(&rule.resources) {
                let names = list(&rule.resource_names);
                if names.is_empty() {
                    out.push(grant(&group, &resource, verb, None));
                }
                for n in &names {
                    out.push(grant(&group, &resource, verb, Some(n)));
                }
            }
        }
    }
    out
}

/// Checks that `granted` (rules with the namespace they are bound in) covers every grant in
/// `needed` and grants nothing else (pure).
pub fn check(needed: &BTreeSet<Grant>, granted: &[(Option<String>, PolicyRule)]) -> Coverage {
    let uncovered = needed
        .iter()
        .filter(|g| !granted.iter().any(|(ns, r)| allows(ns.as_deref(), r, g)))
        .cloned()
        .collect();
    let unneeded: BTreeSet<Grant> =
        granted.iter().flat_map(|(ns, r)| expand(ns.as_deref(), r)).filter(|g| !needed.contains(g)).collect();
    Coverage { uncovered, unneeded: unneeded.into_iter().collect() }
}

/// The rules of [`roles`] as (namespace, rule) pairs, ready for [`check`].
pub fn flatten(roles: &[RoleRules]) -> Vec<(Option<String>, PolicyRule)> {
    roles.iter().flat_map(|r| r.rules.iter().map(|rule| (r.namespace.clone(), rule.clone()))).collect()
}

fn hcl_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// The Terraform text of `terraform/rbac.tf`: the ClusterRole, the Roles and their bindings,
/// generated from [`CALLS`] (pure). Names that depend on the config are Terraform variables;
/// optional scopes and named rules use `count` / `dynamic` so an empty list never widens a
/// grant.
pub fn terraform_hcl() -> String {
    let mut s = String::from(
        "# GENERATED from crates/core/src/rbac.rs (CALLS) by `UPDATE_GENERATED=1 cargo test --test deploy`.\n\
         # Do not edit: add the API call to crates/core/src/rbac.rs and regenerate. tests/deploy.rs fails when\n\
         # this file differs from the generator or grants more or less than the code needs.\n",
    );
    for scope in Scope::ALL {
        let ident = match scope {
            Scope::Cluster => "cluster",
            Scope::ToolNamespace => "tool_namespace",
            Scope::EtcdBackupNamespace => "etcd_backup",
            Scope::DefaultNamespace => "node_events",
            Scope::QuiesceNamespace => "quiesce",
            Scope::Rehearse => "rehearse",
        };
        let (kind, binding, role_kind) = match scope {
            Scope::Cluster | Scope::Rehearse => {
                ("kubernetes_cluster_role_v1", "kubernetes_cluster_role_binding_v1", "ClusterRole")
            }
            _ => ("kubernetes_role_v1", "kubernetes_role_binding_v1", "Role"),
        };
        let (count, count_ref) = match scope {
            Scope::EtcdBackupNamespace => {
                ("  count = local.etcd_backup_namespace == null ? 0 : 1\n\n", "[0]")
            }
            // One Role per namespace of hooks.quiesce_deployments (namespace => names); none
            // when the list is empty.
            Scope::QuiesceNamespace => ("  for_each = local.quiesce_deployments\n\n", "[each.key]"),
            _ => ("", ""),
        };
        let name = scope.role_name();
        // Aligned as `terraform fmt` aligns them, so the generated file is fmt-clean.
        let metadata = match scope.terraform_namespace() {
            Some(n) => format!(
                "  metadata {{\n    name      = \"{name}\"\n    namespace = {n}\n    labels    = local.labels\n  }}\n"
            ),
            None => format!("  metadata {{\n    name   = \"{name}\"\n    labels = local.labels\n  }}\n"),
        };
        s.push_str(&format!("\nresource \"{kind}\" \"{ident}\" {{\n{count}{metadata}"));
        for c in CALLS.iter().filter(|c| c.scope == scope) {
            s.push_str(&format!("\n  # {}\n", c.needed_by));
            let verbs = hcl_list(c.verbs);
            if c.resource.starts_with('/') {
                s.push_str(&format!(
                    "  rule {{\n    non_resource_urls = [{:?}]\n    verbs             = {verbs}\n  }}\n",
                    c.resource
                ));
                continue;
            }
            let (group, resource) = (format!("[{:?}]", c.group), format!("[{:?}]", c.resource));
            let kill_switch = format!("[{:?}]", crate::killswitch::NAME);
            let names = match c.names {
                Any => None,
                ToolNs => Some("[local.namespace]"),
                KillSwitch => Some(kill_switch.as_str()),
                PostUpgradeConfigMaps => Some("local.post_upgrade_configmaps"),
                QuiesceDeployments => Some("each.value"),
            };
            let body = |i: &str| match names {
                None => {
                    format!("{i}api_groups = {group}\n{i}resources  = {resource}\n{i}verbs      = {verbs}\n")
                }
                Some(n) => format!(
                    "{i}api_groups     = {group}\n{i}resources      = {resource}\n{i}resource_names = {n}\n{i}verbs          = {verbs}\n"
                ),
            };
            if c.names == PostUpgradeConfigMaps {
                // An empty resource_names would grant every ConfigMap: no rule at all instead.
                s.push_str(&format!(
                    "  dynamic \"rule\" {{\n    for_each = length(local.post_upgrade_configmaps) > 0 ? [1] : []\n    content {{\n{}    }}\n  }}\n",
                    body("      ")
                ));
            } else {
                s.push_str(&format!("  rule {{\n{}  }}\n", body("    ")));
            }
        }
        s.push_str("}\n");
        s.push_str(&format!(
            "\nresource \"{binding}\" \"{ident}\" {{\n{count}{metadata}  role_ref {{\n    api_group = \"rbac.authorization.k8s.io\"\n    kind      = \"{role_kind}\"\n    name      = {kind}.{ident}{count_ref}.metadata[0].name\n  }}\n  subject {{\n    kind      = \"ServiceAccount\"\n    name      = kubernetes_service_account_v1.job.metadata[0].name\n    namespace = local.namespace\n  }}\n}}\n"
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Settings {
        Settings::from_yaml(include_str!("../../../examples/config.yaml"), "examples/config.yaml").unwrap()
    }

    #[test]
    fn generated_roles_grant_exactly_the_calls() {
        for settings in [Settings::default(), example()] {
            let cov = check(&required(&settings), &flatten(&roles(&settings)));
            assert!(cov.is_exact(), "{cov}");
        }
    }

    #[test]
    fn removing_any_rule_is_caught() {
        let settings = example();
        let needed = required(&settings);
        let granted = flatten(&roles(&settings));
        for i in 0..granted.len() {
            let mut mutated = granted.clone();
            let removed = mutated.remove(i);
            let cov = check(&needed, &mutated);
            assert!(!cov.uncovered.is_empty(), "removing {removed:?} went unnoticed");
        }
    }

    #[test]
    fn dropping_one_verb_or_name_is_caught() {
        let settings = example();
        let needed = required(&settings);
        let mut granted = flatten(&roles(&settings));
        let pos = granted
            .iter()
            .position(|(_, r)| r.resources.as_deref() == Some(&["pods".to_string()][..]))
            .unwrap();
        granted[pos].1.verbs.retain(|v| v != "delete");
        let cov = check(&needed, &granted);
        assert_eq!(cov.uncovered.len(), 1, "{cov}");
        assert_eq!(cov.uncovered[0].verb, "delete");
    }

    #[test]
    fn widening_is_caught() {
        let settings = example();
        let needed = required(&settings);
        let mut granted = flatten(&roles(&settings));
        // The kill-switch rule without its resourceNames would read every ConfigMap.
        for (_, r) in granted.iter_mut() {
            if r.resource_names.as_deref() == Some(&[crate::killswitch::NAME.to_string()][..]) {
                r.resource_names = None;
            }
        }
        let cov = check(&needed, &granted);
        assert!(cov.uncovered.is_empty());
        assert!(cov.unneeded.iter().any(|g| g.resource == "configmaps" && g.name.is_none()), "{cov}");
        // A wildcard verb, and a Role in the wrong namespace.
        let mut granted = flatten(&roles(&settings));
        granted[0].1.verbs.push("*".into());
        granted.push((Some("kube-system".into()), granted[1].1.clone()));
        let cov = check(&needed, &granted);
        assert!(cov.unneeded.iter().any(|g| g.verb == "*"), "{cov}");
        assert!(cov.unneeded.iter().any(|g| g.namespace.as_deref() == Some("kube-system")), "{cov}");
    }

    #[test]
    fn a_tool_namespace_role_does_not_cover_other_namespaces() {
        let settings = example();
        let needed = required(&settings);
        let mut granted = flatten(&roles(&settings));
        // Move the etcd-backup Job rules into the tool namespace: the snapshot Job is elsewhere.
        for (ns, _) in granted.iter_mut() {
            if ns.as_deref() == Some("default") {
                *ns = Some(settings.namespace.clone());
            }
        }
        let cov = check(&needed, &granted);
        assert!(cov.uncovered.iter().any(|g| g.resource == "pods/log"), "{cov}");
    }

    #[test]
    fn optional_scopes_follow_the_settings() {
        let plain = Settings::default();
        let r = roles(&plain);
        assert!(r.iter().all(|r| r.scope != Scope::EtcdBackupNamespace));
        // No post-upgrade scripts: no configmaps rule at cluster scope at all (an empty
        // resourceNames would grant every ConfigMap).
        let cluster = r.iter().find(|r| r.scope == Scope::Cluster).unwrap();
        assert!(
            cluster.rules.iter().all(|r| r.resources.as_deref() != Some(&["configmaps".to_string()][..]))
        );
        let ex = roles(&example());
        let backup = ex.iter().find(|r| r.scope == Scope::EtcdBackupNamespace).unwrap();
        assert_eq!(backup.namespace.as_deref(), Some("default"));
    }

    /// QA A7: `patch` on Deployments only for the configured quiesce Deployments, by name, in
    /// their own namespaces; none at all when the list is empty.
    #[test]
    fn deployment_patch_is_granted_only_for_the_quiesced_deployments() {
        let patches = |settings: &Settings| -> Vec<Grant> {
            required(settings)
                .into_iter()
                .filter(|g| {
                    g.resource == "deployments" && !matches!(g.verb.as_str(), "get" | "list" | "watch")
                })
                .collect()
        };
        let plain = Settings::default();
        assert_eq!(patches(&plain), vec![], "no quiesce_deployments: no write on any Deployment");
        assert!(roles(&plain).iter().all(|r| r.scope != Scope::QuiesceNamespace));
        let mut s = plain.clone();
        s.hooks.quiesce_deployments = vec![
            crate::settings::QuiesceDeployment {
                namespace: "tigera-operator".into(),
                name: "tigera-operator".into(),
            },
            crate::settings::QuiesceDeployment { namespace: "kube-system".into(), name: "a".into() },
            crate::settings::QuiesceDeployment { namespace: "kube-system".into(), name: "b".into() },
        ];
        let shown: Vec<String> = patches(&s).iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "patch apps/deployments named a in kube-system",
                "patch apps/deployments named b in kube-system",
                "patch apps/deployments named tigera-operator in tigera-operator",
            ]
        );
        let r = roles(&s);
        let quiesce: Vec<&RoleRules> = r.iter().filter(|r| r.scope == Scope::QuiesceNamespace).collect();
        assert_eq!(quiesce.len(), 2);
        assert_eq!(quiesce[0].namespace.as_deref(), Some("kube-system"));
        assert_eq!(quiesce[0].rules[0].resource_names, Some(vec!["a".to_string(), "b".to_string()]));
        let cluster = r.iter().find(|r| r.scope == Scope::Cluster).unwrap();
        for rule in &cluster.rules {
            if rule.resources.as_deref() == Some(&["deployments".to_string()][..]) {
                assert_eq!(rule.verbs, ["get"], "{rule:?}");
            }
        }
        let cov = check(&required(&s), &flatten(&r));
        assert!(cov.is_exact(), "{cov}");
        // The old cluster-wide patch is caught as wider than needed.
        let mut wide = flatten(&r);
        wide.push((
            None,
            PolicyRule {
                api_groups: Some(vec!["apps".into()]),
                resources: Some(vec!["deployments".into()]),
                verbs: vec!["patch".into()],
                ..Default::default()
            },
        ));
        assert!(check(&required(&s), &wide).unneeded.iter().any(|g| g.verb == "patch" && g.name.is_none()));
    }

    #[test]
    fn the_rehearsal_grant_is_read_only_and_not_asked_for_by_preflight() {
        let settings = example();
        let all = required(&settings);
        let chain = required_by_chain(&settings);
        let rehearse: Vec<&Grant> = all.difference(&chain).collect();
        assert!(!rehearse.is_empty());
        for g in &rehearse {
            assert!(matches!(g.verb.as_str(), "get" | "list" | "watch"), "{g}");
            assert_eq!(g.namespace, None, "{g}");
        }
        assert!(rehearse.iter().any(|g| g.resource == "namespaces" && g.verb == "list"));
        let r = roles(&settings);
        let role = r.iter().find(|r| r.scope == Scope::Rehearse).unwrap();
        assert_eq!(role.namespace, None);
        assert_eq!(Scope::Rehearse.role_name(), "k8s-upgrade-job-rehearse");
        assert!(terraform_hcl().contains("resource \"kubernetes_cluster_role_v1\" \"rehearse\""));
    }

    #[test]
    fn every_row_names_its_user_and_verbs() {
        for c in CALLS {
            assert!(!c.verbs.is_empty() && !c.needed_by.is_empty(), "{c:?}");
            if c.resource.starts_with('/') {
                assert_eq!(c.scope, Scope::Cluster, "non-resource URLs are cluster-wide: {c:?}");
            }
        }
    }
}
