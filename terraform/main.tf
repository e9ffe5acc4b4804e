# k8s-upgrade-chain: the namespace, ServiceAccount, credentials Secret, config ConfigMap and
# the detection and weekly report CronJobs. RBAC is in rbac.tf (generated). `k8s-upgrade-chain
# manifests` prints the same objects as plain YAML.

# Every site setting comes from config_yaml, the file the binary reads: one source for this
# module, `manifests` and the alert rules.
module "config" {
  source       = "./modules/config"
  config_yaml  = var.config_yaml
  job_template = var.job_template
}

locals {
  labels = {
    "app.kubernetes.io/part-of" = "k8s-upgrade-chain"
  }

  # Names and namespaces from the config (job.*, hooks.*); mount points match
  # templates/job.yaml.j2 (the chain Jobs).
  namespace               = module.config.namespace
  service_account         = module.config.service_account
  credentials_secret      = module.config.credentials_secret
  config_map              = module.config.config_map
  image_pull_secrets      = module.config.image_pull_secrets
  etcd_backup_namespace   = module.config.etcd_backup_namespace
  post_upgrade_configmaps = module.config.post_upgrade_configmaps
  quiesce_deployments     = module.config.quiesce_deployments

  cronjobs = {
    detect = {
      name                    = "k8s-version-check"
      app                     = "k8s-version-upgrade"
      schedule                = var.schedule
      container               = "version-check"
      args                    = ["detect"]
      backoff_limit           = 0
      active_deadline_seconds = 1800
      env = {
        DRY_RUN = tostring(var.dry_run)
        IMAGE   = var.image
      }
    }
    report = {
      # Must not start with k8s-upgrade-<phase>- (K8sUpgradeChainJobFailed matches those).
      name                    = "k8s-upgrade-weekly-report"
      app                     = "k8s-upgrade-report"
      schedule                = var.report_schedule
      container               = "report"
      args                    = ["report"]
      backoff_limit           = 1
      active_deadline_seconds = 600
      env                     = {}
    }
  }
}

resource "kubernetes_namespace_v1" "this" {
  metadata {
    name   = local.namespace
    labels = local.labels
  }
  lifecycle {
    # The chain writes its in-flight record here (src/annotations.rs).
    ignore_changes = [metadata[0].annotations]
  }
}

resource "kubernetes_service_account_v1" "job" {
  metadata {
    name      = local.service_account
    namespace = kubernetes_namespace_v1.this.metadata[0].name
    labels    = local.labels
  }
}

# Credentials: ssh_key, known_hosts (host-key pinning) and slack_webhook.
resource "kubernetes_manifest" "credentials" {
  count = var.external_secret.enabled ? 1 : 0
  manifest = {
    apiVersion = "external-secrets.io/v1"
    kind       = "ExternalSecret"
    metadata = {
      name      = local.credentials_secret
      namespace = kubernetes_namespace_v1.this.metadata[0].name
      labels    = local.labels
    }
    spec = {
      refreshInterval = var.external_secret.refresh_interval
      secretStoreRef = {
        kind = var.external_secret.secret_store_kind
        name = var.external_secret.secret_store_name
      }
      target = { name = local.credentials_secret }
      data = [
        for key in ["ssh_key", "known_hosts", "slack_webhook"] : {
          secretKey = key
          remoteRef = { key = var.external_secret.remote_key, property = key }
        }
      ]
    }
  }
  # ESO 2.x takes server-side-apply ownership of refreshInterval (seed §6).
  field_manager {
    force_conflicts = true
  }
}

resource "kubernetes_secret_v1" "credentials" {
  count = var.external_secret.enabled ? 0 : 1
  metadata {
    name      = local.credentials_secret
    namespace = kubernetes_namespace_v1.this.metadata[0].name
    labels    = local.labels
  }
  data = var.credentials
}

resource "kubernetes_config_map_v1" "config" {
  metadata {
    name      = local.config_map
    namespace = kubernetes_namespace_v1.this.metadata[0].name
    labels    = local.labels
  }
  # config.yaml and, with a job.template override, the template beside it: every Job that
  # renders the next one (detection, each chain Job) reads it through the config mount.
  # update_k8s.sh and the built-in template are compiled into the binary (seed failure 9).
  data = module.config.config_map_data
}

resource "kubernetes_cron_job_v1" "this" {
  for_each = local.cronjobs

  metadata {
    name      = each.value.name
    namespace = kubernetes_namespace_v1.this.metadata[0].name
    labels    = merge(local.labels, { app = each.value.app })
  }

  spec {
    schedule                      = each.value.schedule
    timezone                      = "Etc/UTC"
    suspend                       = !var.enabled
    concurrency_policy            = "Forbid"
    successful_jobs_history_limit = 3
    failed_jobs_history_limit     = 3
    starting_deadline_seconds     = 600

    job_template {
      metadata {
        labels = merge(local.labels, { app = each.value.app })
      }
      spec {
        backoff_limit              = each.value.backoff_limit
        ttl_seconds_after_finished = 86400
        # A CronJob with Forbid and no deadline wedges forever on a hung run (seed failure 39).
        active_deadline_seconds = each.value.active_deadline_seconds

        template {
          metadata {
            labels = merge(local.labels, { app = each.value.app })
          }
          spec {
            service_account_name = kubernetes_service_account_v1.job.metadata[0].name
            restart_policy       = "Never"

            dynamic "image_pull_secrets" {
              for_each = local.image_pull_secrets
              content {
                name = image_pull_secrets.value
              }
            }

            security_context {
              run_as_non_root = true
              run_as_user     = 65532
              run_as_group    = 65532
              fs_group        = 65532
              seccomp_profile {
                type = "RuntimeDefault"
              }
            }

            container {
              name  = each.value.container
              image = var.image
              args  = each.value.args

              env {
                name  = "CONFIG"
                value = "/etc/k8s-upgrade-chain/config.yaml"
              }
              env {
                name  = "LOG_FORMAT"
                value = "json"
              }
              env {
                name  = "HOME"
                value = "/tmp"
              }
              dynamic "env" {
                for_each = each.value.env
                content {
                  name  = env.key
                  value = env.value
                }
              }

              resources {
                requests = {
                  cpu    = "50m"
                  memory = "64Mi"
                }
                limits = {
                  memory = "256Mi"
                }
              }

              security_context {
                allow_privilege_escalation = false
                read_only_root_filesystem  = true
                capabilities {
                  drop = ["ALL"]
                }
              }

              volume_mount {
                name       = "creds"
                mount_path = "/secrets/k8s-upgrade"
                read_only  = true
              }
              volume_mount {
                name       = "config"
                mount_path = "/etc/k8s-upgrade-chain"
                read_only  = true
              }
              volume_mount {
                name       = "tmp"
                mount_path = "/tmp"
              }
            }

            volume {
              name = "creds"
              secret {
                secret_name  = local.credentials_secret
                default_mode = "0440"
              }
            }
            volume {
              name = "config"
              config_map {
                name = kubernetes_config_map_v1.config.metadata[0].name
              }
            }
            volume {
              name = "tmp"
              empty_dir {
                size_limit = "64Mi"
              }
            }
          }
        }
      }
    }
  }

  lifecycle {
    # Kyverno and similar mutate dns_config into pods (seed §1).
    ignore_changes = [spec[0].job_template[0].spec[0].template[0].spec[0].dns_config]
  }
}
