# The site settings the module needs, read from the one config file (`config_yaml`, the same
# file the binary reads from the config ConfigMap), so that Terraform, `k8s-upgrade-chain
# manifests` and the alert rules cannot disagree: the namespace, the object names, the
# namespaces and ConfigMaps the hooks touch (RBAC), and the namespace matchers of the rules.
#
# Every default below is the binary's default (docs/configuration.md). This module has no
# provider and no resource, so tests/deploy.rs runs it with the real terraform, offline, and
# compares its outputs with the binary's for the same file.

variable "config_yaml" {
  description = "The k8s-upgrade-chain config file; null: every key at its default."
  type        = string
  default     = null
}

variable "job_template" {
  description = "Text of the Job template override the config names in job.template; null: none."
  type        = string
  default     = null
}

locals {
  # No file, an empty one or one with comments only: every key at its default (yamldecode
  # refuses a document without content).
  config_content = var.config_yaml == null ? "" : trimspace(replace(var.config_yaml, "/(?m)^\\s*#.*$/", ""))
  config         = yamldecode(local.config_content == "" ? "{}" : var.config_yaml)
  job            = try(local.config.job, null)
  hooks          = try(local.config.hooks, null)

  namespace          = try(coalesce(local.config.namespace), "k8s-upgrade")
  service_account    = try(coalesce(local.job.service_account), "k8s-upgrade-job")
  credentials_secret = try(coalesce(local.job.credentials_secret), "k8s-upgrade-creds")
  config_map         = try(coalesce(local.job.config_map), "k8s-upgrade-config")
  image_pull_secrets = try(tolist(local.job.image_pull_secrets), [])
  template_key       = try(local.job.template, null)

  etcd_backup_namespace = try(local.hooks.etcd_backup.namespace, null)
  post_upgrade_configmaps = distinct([
    for s in try(tolist(local.hooks.post_control_plane_scripts), []) : s.configmap_name
  ])
  # hooks.quiesce_deployments as namespace => Deployment names: the chain may patch those
  # Deployments only, each in its own namespace (rbac.tf, role "quiesce").
  quiesce_list = try(tolist(local.hooks.quiesce_deployments), [])
  quiesce_deployments = {
    for ns in distinct([for d in local.quiesce_list : d.namespace]) :
    ns => sort(distinct([for d in local.quiesce_list : d.name if d.namespace == ns]))
  }

  config_text = coalesce(var.config_yaml, "# k8s-upgrade-chain: every key at its default (docs/configuration.md)\n")

  # The rules file is written for the default namespace; every matcher on it has exactly this
  # form (src/manifests.rs ALERT_RULES_NAMESPACE_MATCHER does the same replacement).
  alert_rules = replace(
    file("${path.module}/../../../deploy/alerts/k8s-upgrade-chain.rules.yaml"),
    "namespace=\"k8s-upgrade\"",
    "namespace=\"${local.namespace}\"",
  )
}

output "namespace" {
  description = "Namespace of the chain (`namespace`)."
  value       = local.namespace
}

output "service_account" {
  description = "ServiceAccount of every Job (`job.service_account`)."
  value       = local.service_account
}

output "credentials_secret" {
  description = "The credentials Secret (`job.credentials_secret`)."
  value       = local.credentials_secret
}

output "config_map" {
  description = "The config ConfigMap (`job.config_map`)."
  value       = local.config_map
}

output "image_pull_secrets" {
  description = "Image pull Secrets of every Job (`job.image_pull_secrets`)."
  value       = local.image_pull_secrets
}

output "etcd_backup_namespace" {
  description = "Namespace of the etcd backup CronJob (`hooks.etcd_backup.namespace`); null without one."
  value       = local.etcd_backup_namespace
}

output "post_upgrade_configmaps" {
  description = "ConfigMaps of `hooks.post_control_plane_scripts` (read by name, cluster-wide)."
  value       = local.post_upgrade_configmaps
}

output "quiesce_deployments" {
  description = "Deployments of `hooks.quiesce_deployments`, as namespace => names (patched by name, in their namespace)."
  value       = local.quiesce_deployments
}

output "config_map_data" {
  description = "Data of the config ConfigMap: config.yaml and, with an override, the Job template under the file name job.template gives."
  value = merge(
    { "config.yaml" = local.config_text },
    local.template_key == null ? {} : { (local.template_key) = var.job_template },
  )

  # A template the config names must be in the ConfigMap, next to config.yaml: the chain Jobs
  # read it through the config mount (/etc/k8s-upgrade-chain).
  precondition {
    condition     = local.template_key == null || (var.job_template != null && can(regex("^[-._a-zA-Z0-9]+$", local.template_key)))
    error_message = "config_yaml sets job.template: it must be a file name (e.g. job.yaml.j2), and job_template must hold the template's text."
  }
  precondition {
    condition     = var.job_template == null || local.template_key != null
    error_message = "job_template is set but config_yaml has no job.template naming it (e.g. `job: {template: job.yaml.j2}`)."
  }
}

output "alert_rules" {
  description = "The Prometheus rules file for this namespace (what `k8s-upgrade-chain manifests --alert-rules` prints)."
  value       = local.alert_rules
}
