output "namespace" {
  description = "Namespace of the chain."
  value       = kubernetes_namespace_v1.this.metadata[0].name
}

output "service_account" {
  description = "ServiceAccount of every Job of the chain."
  value       = kubernetes_service_account_v1.job.metadata[0].name
}

output "detection_cronjob" {
  description = "Name of the detection CronJob (kubectl create job --from=cronjob/<name> ...)."
  value       = kubernetes_cron_job_v1.this["detect"].metadata[0].name
}

output "report_cronjob" {
  description = "Name of the weekly report CronJob."
  value       = kubernetes_cron_job_v1.this["report"].metadata[0].name
}

output "cluster_role" {
  description = "Name of the ClusterRole granted to the ServiceAccount."
  value       = kubernetes_cluster_role_v1.cluster.metadata[0].name
}

output "alert_rules" {
  description = "The Prometheus rules file for the chain's namespace (`rule_files:`; the same text as `k8s-upgrade-chain manifests --alert-rules`)."
  value       = module.config.alert_rules
}
