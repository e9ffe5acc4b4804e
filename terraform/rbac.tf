# GENERATED from src/rbac.rs (CALLS) by `UPDATE_GENERATED=1 cargo test --test deploy`.
# Do not edit: add the API call to src/rbac.rs and regenerate. tests/deploy.rs fails when
# this file differs from the generator or grants more or less than the code needs.

resource "kubernetes_cluster_role_v1" "cluster" {
  metadata {
    name   = "k8s-upgrade-job"
    labels = local.labels
  }

  # cluster::list_nodes, step (Ready wait), status, report
  rule {
    api_groups = [""]
    resources  = ["nodes"]
    verbs      = ["get", "list", "watch"]
  }

  # step: cordon / uncordon
  rule {
    api_groups = [""]
    resources  = ["nodes"]
    verbs      = ["patch"]
  }

  # step: drain (list pods on the node, wait until gone, fallback delete)
  rule {
    api_groups = [""]
    resources  = ["pods"]
    verbs      = ["get", "list", "watch", "delete"]
  }

  # step: drain (eviction API)
  rule {
    api_groups = [""]
    resources  = ["pods/eviction"]
    verbs      = ["create"]
  }

  # step: predrain unstick (PDB of single replicas)
  rule {
    api_groups = ["policy"]
    resources  = ["poddisruptionbudgets"]
    verbs      = ["list"]
  }

  # step: drain (owner classification)
  rule {
    api_groups = ["apps"]
    resources  = ["replicasets"]
    verbs      = ["get"]
  }

  # step: drain (owner classification); compat::read_addon_images
  rule {
    api_groups = ["apps"]
    resources  = ["statefulsets"]
    verbs      = ["get"]
  }

  # step: drain (DaemonSet pods stay); compat::read_addon_images
  rule {
    api_groups = ["apps"]
    resources  = ["daemonsets"]
    verbs      = ["get"]
  }

  # compat::read_addon_images; step: quiesce (hooks.quiesce_deployments)
  rule {
    api_groups = ["apps"]
    resources  = ["deployments"]
    verbs      = ["get", "patch"]
  }

  # step: quiesce (scale to 0 and back)
  rule {
    api_groups = ["apps"]
    resources  = ["deployments/scale"]
    verbs      = ["get", "patch"]
  }

  # annotations (in-flight record)
  rule {
    api_groups     = [""]
    resources      = ["namespaces"]
    resource_names = [var.namespace]
    verbs          = ["get", "patch"]
  }

  # step: post-upgrade scripts (hooks.post_control_plane_scripts)
  dynamic "rule" {
    for_each = length(var.post_upgrade_configmaps) > 0 ? [1] : []
    content {
      api_groups     = [""]
      resources      = ["configmaps"]
      resource_names = var.post_upgrade_configmaps
      verbs          = ["get"]
    }
  }

  # step: apiserver health after the master upgrade
  rule {
    non_resource_urls = ["/readyz"]
    verbs             = ["get"]
  }

  # step: apiserver health after the master upgrade
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
    namespace = var.namespace
  }
}

resource "kubernetes_role_v1" "tool_namespace" {
  metadata {
    name      = "k8s-upgrade-job"
    namespace = var.namespace
    labels    = local.labels
  }

  # spawn (server-side apply, respawn of Failed Jobs, await deletion); detect; status; report
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
    namespace = var.namespace
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
    namespace = var.namespace
  }
}

resource "kubernetes_role_v1" "etcd_backup" {
  count = var.etcd_backup_namespace == null ? 0 : 1

  metadata {
    name      = "k8s-upgrade-job-etcd-backup"
    namespace = var.etcd_backup_namespace
    labels    = local.labels
  }

  # step: etcd snapshot (create Job from CronJob)
  rule {
    api_groups = ["batch"]
    resources  = ["cronjobs"]
    verbs      = ["get"]
  }

  # step: etcd snapshot Job
  rule {
    api_groups = ["batch"]
    resources  = ["jobs"]
    verbs      = ["create", "get", "list", "watch", "patch", "delete"]
  }

  # step: etcd snapshot (read the backup byte count; seed failure 25)
  rule {
    api_groups = [""]
    resources  = ["pods/log"]
    verbs      = ["get"]
  }
}

resource "kubernetes_role_binding_v1" "etcd_backup" {
  count = var.etcd_backup_namespace == null ? 0 : 1

  metadata {
    name      = "k8s-upgrade-job-etcd-backup"
    namespace = var.etcd_backup_namespace
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
    namespace = var.namespace
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
    namespace = var.namespace
  }
}
