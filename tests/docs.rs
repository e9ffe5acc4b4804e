//! Documentation that must match the code.

use chain_core::settings::Settings;

fn yaml_block(markdown: &str) -> String {
    let start = markdown.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let end = markdown[start..].find("```").expect("block end") + start;
    markdown[start..end].to_string()
}

fn keys(v: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    if let serde_json::Value::Object(m) = v {
        for (k, v) in m {
            let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            out.push(path.clone());
            // Maps whose keys are data (versions), not settings, stop here.
            if k != "containerd_min" {
                keys(v, &path, out);
            }
        }
    }
}

#[test]
fn configuration_reference_is_the_defaults_and_lists_every_key() {
    let doc = std::fs::read_to_string("docs/configuration.md").unwrap();
    let block = yaml_block(&doc);
    let parsed = Settings::from_yaml(&block, "docs/configuration.md").unwrap();
    assert_eq!(parsed, Settings::default(), "docs/configuration.md must show the built-in defaults");

    let documented: serde_json::Value = serde_saphyr::from_str(&block).unwrap();
    let actual = serde_json::to_value(Settings::default()).unwrap();
    let (mut a, mut b) = (vec![], vec![]);
    keys(&documented, "", &mut a);
    keys(&actual, "", &mut b);
    a.sort();
    b.sort();
    assert_eq!(a, b, "every setting is documented, and nothing else");
}

#[test]
fn example_config_is_valid() {
    k8s_upgrade_chain::config::load(std::path::Path::new("examples/config.yaml")).unwrap();
}

#[test]
fn configuration_reference_lists_every_duration_bound() {
    let doc = std::fs::read_to_string("docs/configuration.md").unwrap();
    for (key, b) in chain_core::settings::DURATION_BOUNDS {
        let row = format!(
            "| `{key}` | {} | {} |",
            chain_core::duration::format(b.min),
            chain_core::duration::format(b.max)
        );
        assert!(doc.contains(&row), "docs/configuration.md must list {row}");
    }
}

/// `examples/config.yaml` is the seed site's configuration: it must run that site as the seed
/// system did (seed-system.md §1, §2, §4, §6 and failure 17).
#[test]
fn the_example_config_runs_the_seed_site_as_before() {
    let site = k8s_upgrade_chain::config::load(std::path::Path::new("examples/config.yaml")).unwrap();
    let defaults = Settings::default();
    assert_eq!(site.namespace, "k8s-upgrade");
    assert_eq!(site.job.image_pull_secrets, ["registry-credentials"], "the seed's pull Secret");
    assert_eq!(site.ssh.user, "wizard", "the seed's SSH user");
    // The seed's namespace annotations, so a record it left is read and cleared.
    let keys = chain_core::annotations::Keys::new(&site.annotation_prefix);
    assert_eq!(
        [keys.in_flight, keys.target, keys.snapshot_path],
        [
            "viktorbarzin.me/k8s-upgrade-in-flight",
            "viktorbarzin.me/k8s-upgrade-target",
            "viktorbarzin.me/k8s-upgrade-snapshot-path"
        ]
    );
    // The seed's ignore list, and every default one (setting the key replaces the list).
    let policy = chain_core::alerts::Policy::from_config(&site.alerts).unwrap();
    for name in
        ["RecentNodeReboot", "IngressTTFBCritical", "K8sUpgradeStalled", "EtcdPreUpgradeSnapshotMissing"]
            .iter()
            .copied()
            .chain(defaults.alerts.ignore.iter().map(String::as_str))
    {
        assert!(policy.ignores(name), "the seed site's config must ignore {name}");
    }
    // Its hooks and waits.
    let quiesce: Vec<(&str, &str)> =
        site.hooks.quiesce_deployments.iter().map(|d| (d.namespace.as_str(), d.name.as_str())).collect();
    assert_eq!(quiesce, [("tigera-operator", "tigera-operator")]);
    let backup = site.hooks.etcd_backup.as_ref().expect("the seed's etcd backup CronJob");
    assert_eq!((backup.namespace.as_str(), backup.cronjob.as_str()), ("default", "backup-etcd"));
    assert_eq!(backup.container.as_deref(), Some("backup-manage"));
    assert_eq!(backup.location_prefix, "nfs://192.168.1.127:/srv/nfs/etcd-backup/");
    assert_eq!(backup.min_bytes, 1024);
    let script = &site.hooks.post_control_plane_scripts[0];
    assert_eq!(
        (script.configmap_namespace.as_str(), script.configmap_name.as_str(), script.configmap_key.as_str()),
        ("kube-system", "apiserver-oidc-restore", "restore.sh")
    );
    let t = &site.timeouts;
    assert_eq!(
        [t.node_ready, t.alert_wait, t.soak, t.settle_window, t.etcd_snapshot].map(|d| d.as_secs()),
        [900, 1800, 600, 600, 600]
    );
    assert_eq!(site.alerts.prometheus_url.as_str(), "http://prometheus-server.monitoring.svc.cluster.local/");
    assert_eq!(site.pushgateway.url.as_str(), "http://prometheus-prometheus-pushgateway.monitoring:9091/");
}
