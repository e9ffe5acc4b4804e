# Inputs of the k8s-upgrade-chain module. The RBAC rules (rbac.tf) are generated from the
# binary's list of API calls (crates/core/src/rbac.rs). The site settings (namespace, object
# names, image pull Secrets, the hooks whose RBAC rbac.tf grants) are not variables: they come
# from config_yaml, the file the binary reads (modules/config), so they cannot disagree with it.

variable "image" {
  description = "Image of the CronJobs and the chain Jobs (a registry you control: seed failure 18)."
  type        = string
  default     = "ghcr.io/k8s-upgrade-chain/k8s-upgrade-chain:0.1.0"
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
  description = "The k8s-upgrade-chain config file (examples/config.yaml, docs/configuration.md); null: every key at its default. Namespace, names, image pull Secrets and hooks come from it."
  type        = string
  default     = null
}

variable "job_template" {
  description = "Text of a Job template override (start from templates/job.yaml.j2); config_yaml must name it as a file name, e.g. `job: {template: job.yaml.j2}`. null: the built-in template."
  type        = string
  default     = null
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
