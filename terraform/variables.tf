# Inputs of the k8s-upgrade-chain module. The RBAC rules (rbac.tf) are generated from the
# binary's list of API calls (crates/core/src/rbac.rs); etcd_backup_namespace and post_upgrade_configmaps
# must match the `hooks:` of config_yaml, or the chain is denied the calls those hooks make.

variable "namespace" {
  description = "Namespace of the chain Jobs, the kill switch and the state annotations (the config's `namespace`)."
  type        = string
  default     = "k8s-upgrade"
}

variable "image" {
  description = "Image of the CronJobs and the chain Jobs (a registry you control: seed failure 18)."
  type        = string
  default     = "ghcr.io/k8s-upgrade-chain/k8s-upgrade-chain:0.1.0"
}

variable "image_pull_secrets" {
  description = "Image pull Secrets of the CronJob pods (also set job.image_pull_secrets in config_yaml for the chain Jobs)."
  type        = list(string)
  default     = []
}

variable "schedule" {
  description = "Detection schedule (cron, UTC). Default Sunday 23:00, clear of the kured reboot window."
  type        = string
  default     = "0 23 * * 0"
}

variable "report_schedule" {
  description = "Weekly report schedule (cron, UTC). Default Monday 06:07."
  type        = string
  default     = "7 6 * * 1"
}

variable "enabled" {
  description = "false suspends both CronJobs (an in-flight chain keeps going: use the kill switch for that)."
  type        = bool
  default     = true
}

variable "dry_run" {
  description = "Detection runs fully and pushes metrics but spawns no chain Job (DRY_RUN=true)."
  type        = bool
  default     = false
}

variable "config_yaml" {
  description = "The k8s-upgrade-chain config file (examples/config.yaml). null: defaults with this namespace."
  type        = string
  default     = null
}

variable "etcd_backup_namespace" {
  description = "Namespace of the etcd backup CronJob (hooks.etcd_backup.namespace); null when no etcd_backup hook is configured."
  type        = string
  default     = null
}

variable "post_upgrade_configmaps" {
  description = "ConfigMap names of hooks.post_control_plane_scripts (read by name, cluster-wide)."
  type        = list(string)
  default     = []
}

variable "external_secret" {
  description = "Create the credentials Secret from an ExternalSecret (External Secrets Operator) instead of a plain Secret."
  type = object({
    enabled           = bool
    secret_store_kind = optional(string, "ClusterSecretStore")
    secret_store_name = optional(string, "vault-kv")
    remote_key        = optional(string, "k8s-upgrade")
    refresh_interval  = optional(string, "15m")
  })
  default = { enabled = false }
}

variable "credentials" {
  description = "Contents of the plain credentials Secret (ssh_key, known_hosts, slack_webhook) when external_secret is disabled. Sensitive."
  type        = map(string)
  default     = {}
  sensitive   = true
}
