# GENERATED from crates/core/src/rbac.rs (CALLS) by `UPDATE_GENERATED=1 cargo test --test deploy`.
# Do not edit: add the API call to crates/core/src/rbac.rs and regenerate. tests/deploy.rs fails when
# this file differs from the generator or grants more or less than the code needs.

resource "kubernetes_cluster_role_v1" "cluster" {
  metadata {
    name   = "k8s-upgrade-job"
    labels = local.labels
  }

  # cluster::list_nodes, chain (node lookups, Ready wait), drain, status, report
  rule {
    api_groups = [""]
    resources  = ["nodes"]
    verbs      = ["get", "list", "watch"]
  }

  # drain: cordon / uncordon; the upgrade-started record of a node phase; ack
  rule {
    api_groups = [""]
    resources  = ["nodes"]
    verbs      = ["patch"]
  }

  # drain (pods on the node, watch them go, fallback delete); chain::nodes (system and control-plane pods); etcd snapshot pod
  rule {
    api_groups = [""]
    resources  = ["pods"]
    verbs      = ["list", "watch", "delete"]
  }

  # drain (eviction API)
  rule {
    api_groups = [""]
    resources  = ["pods/eviction"]
    verbs      = ["create"]
  }

  # drain (PDB classification)
  rule {
    api_groups = ["policy"]
    resources  = ["poddisruptionbudgets"]
    verbs      = ["list"]
  }

  # drain (DaemonSet pods stay); chain::compat::read_addon_images
  rule {
    api_groups = ["apps"]
    resources  = ["daemonsets"]
    verbs      = ["get"]
  }

  # chain::compat::read_addon_images
  rule {
    api_groups = ["apps"]
    resources  = ["statefulsets"]
    verbs      = ["get"]
  }

  # chain::compat::read_addon_images; chain::quiesce (read before scaling)
  rule {
    api_groups = ["apps"]
    resources  = ["deployments"]
    verbs      = ["get"]
  }

  # annotations (in-flight record); chain::claims (worker claims, resourceVersion-guarded); status
  rule {
    api_groups     = [""]
    resources      = ["namespaces"]
    resource_names = [local.namespace]
    verbs          = ["get", "patch"]
  }

  # drain --dry-run (is a pod's namespace being deleted: its evictions are refused)
  rule {
    api_groups = [""]
    resources  = ["namespaces"]
    verbs      = ["get"]
  }

  # chain::phases (hooks.post_control_plane_scripts)
  dynamic "rule" {
    for_each = length(local.post_upgrade_configmaps) > 0 ? [1] : []
    content {
      api_groups     = [""]
      resources      = ["configmaps"]
      resource_names = local.post_upgrade_configmaps
      verbs          = ["get"]
    }
  }

  # rbac::verify_access (preflight)
  rule {
    api_groups = ["authorization.k8s.io"]
    resources  = ["selfsubjectaccessreviews"]
    verbs      = ["create"]
  }

  # chain::nodes::health_endpoints
  rule {
    non_resource_urls = ["/readyz"]
    verbs             = ["get"]
  }

  # chain::nodes::health_endpoints
  rule {
    non_resource_urls = ["/livez"]
    verbs             = ["get"]
  }
}

resource "kubernetes_cluster_role_binding_v1" "cluster" {
  metadata {
    name   = "k8s-upgrade-job"
    labels = local.labels
  }
  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "ClusterRole"
    name      = kubernetes_cluster_role_v1.cluster.metadata[0].name
  }
  subject {
    kind      = "ServiceAccount"
    name      = kubernetes_service_account_v1.job.metadata[0].name
    namespace = local.namespace
  }
}

resource "kubernetes_role_v1" "tool_namespace" {
  metadata {
    name      = "k8s-upgrade-job"
    namespace = local.namespace
    labels    = local.labels
  }

  # spawn (server-side apply, respawn of Failed and stopped Jobs, await deletion); a phase's outcome annotation on its own Job; detect (resume decision); status; report; ack
  rule {
    api_groups = ["batch"]
    resources  = ["jobs"]
    verbs      = ["create", "get", "list", "watch", "patch", "delete"]
  }

  # killswitch::check
  rule {
    api_groups     = [""]
    resources      = ["configmaps"]
    resource_names = ["k8s-upgrade-killswitch"]
    verbs          = ["get"]
  }

  # events (milestones on Jobs)
  rule {
    api_groups = ["events.k8s.io"]
    resources  = ["events"]
    verbs      = ["create", "patch"]
  }
}

resource "kubernetes_role_binding_v1" "tool_namespace" {
  metadata {
    name      = "k8s-upgrade-job"
    namespace = local.namespace
    labels    = local.labels
  }
  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "Role"
    name      = kubernetes_role_v1.tool_namespace.metadata[0].name
  }
  subject {
    kind      = "ServiceAccount"
    name      = kubernetes_service_account_v1.job.metadata[0].name
    namespace = local.namespace
  }
}

resource "kubernetes_role_v1" "etcd_backup" {
  count = local.etcd_backup_namespace == null ? 0 : 1

  metadata {
    name      = "k8s-upgrade-job-etcd-backup"
    namespace = local.etcd_backup_namespace
    labels    = local.labels
  }

  # chain::etcd (the Job template of the backup CronJob)
  rule {
    api_groups = ["batch"]
    resources  = ["cronjobs"]
    verbs      = ["get"]
  }

  # chain::etcd (create the snapshot Job, wait for it)
  rule {
    api_groups = ["batch"]
    resources  = ["jobs"]
    verbs      = ["create", "list", "watch"]
  }

  # chain::etcd (read the backup byte count; seed failure 25)
  rule {
    api_groups = [""]
    resources  = ["pods/log"]
    verbs      = ["get"]
  }
}

resource "kubernetes_role_binding_v1" "etcd_backup" {
  count = local.etcd_backup_namespace == null ? 0 : 1

  metadata {
    name      = "k8s-upgrade-job-etcd-backup"
    namespace = local.etcd_backup_namespace
    labels    = local.labels
  }
  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "Role"
    name      = kubernetes_role_v1.etcd_backup[0].metadata[0].name
  }
  subject {
    kind      = "ServiceAccount"
    name      = kubernetes_service_account_v1.job.metadata[0].name
    namespace = local.namespace
  }
}

resource "kubernetes_role_v1" "node_events" {
  metadata {
    name      = "k8s-upgrade-job-node-events"
    namespace = "default"
    labels    = local.labels
  }

  # events (milestones on Nodes: cluster-scoped objects report into default)
  rule {
    api_groups = ["events.k8s.io"]
    resources  = ["events"]
    verbs      = ["create", "patch"]
  }
}

resource "kubernetes_role_binding_v1" "node_events" {
  metadata {
    name      = "k8s-upgrade-job-node-events"
    namespace = "default"
    labels    = local.labels
  }
  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "Role"
    name      = kubernetes_role_v1.node_events.metadata[0].name
  }
  subject {
    kind      = "ServiceAccount"
    name      = kubernetes_service_account_v1.job.metadata[0].name
    namespace = local.namespace
  }
}

resource "kubernetes_role_v1" "quiesce" {
  for_each = local.quiesce_deployments

  metadata {
    name      = "k8s-upgrade-job-quiesce"
    namespace = each.key
    labels    = local.labels
  }

  # chain::quiesce (hooks.quiesce_deployments: replicas to 0 and back)
  rule {
    api_groups     = ["apps"]
    resources      = ["deployments"]
    resource_names = each.value
    verbs          = ["patch"]
  }
}

resource "kubernetes_role_binding_v1" "quiesce" {
  for_each = local.quiesce_deployments

  metadata {
    name      = "k8s-upgrade-job-quiesce"
    namespace = each.key
    labels    = local.labels
  }
  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "Role"
    name      = kubernetes_role_v1.quiesce[each.key].metadata[0].name
  }
  subject {
    kind      = "ServiceAccount"
    name      = kubernetes_service_account_v1.job.metadata[0].name
    namespace = local.namespace
  }
}

resource "kubernetes_cluster_role_v1" "rehearse" {
  metadata {
    name   = "k8s-upgrade-job-rehearse"
    labels = local.labels
  }

  # rehearse --from-cluster (rehearse::cluster::copy_live: every namespace)
  rule {
    api_groups = [""]
    resources  = ["namespaces"]
    verbs      = ["list"]
  }

  # rehearse --from-cluster (copy_live: the pods' owners)
  rule {
    api_groups = ["apps"]
    resources  = ["deployments"]
    verbs      = ["list"]
  }

  # rehearse --from-cluster (copy_live: the pods' owners)
  rule {
    api_groups = ["apps"]
    resources  = ["replicasets"]
    verbs      = ["list"]
  }

  # rehearse --from-cluster (copy_live: the pods' owners)
  rule {
    api_groups = ["apps"]
    resources  = ["statefulsets"]
    verbs      = ["list"]
  }

  # rehearse --from-cluster (copy_live: the pods' owners)
  rule {
    api_groups = ["apps"]
    resources  = ["daemonsets"]
    verbs      = ["list"]
  }
}

resource "kubernetes_cluster_role_binding_v1" "rehearse" {
  metadata {
    name   = "k8s-upgrade-job-rehearse"
    labels = local.labels
  }
  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "ClusterRole"
    name      = kubernetes_cluster_role_v1.rehearse.metadata[0].name
  }
  subject {
    kind      = "ServiceAccount"
    name      = kubernetes_service_account_v1.job.metadata[0].name
    namespace = local.namespace
  }
}
