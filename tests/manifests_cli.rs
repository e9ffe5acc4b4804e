//! `manifests`, `status` and `report` as a user runs them.

use assert_cmd::Command;

fn bin() -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin!("k8s-upgrade-chain"));
    // Never reach a real cluster from tests.
    c.env("KUBECONFIG", "/nonexistent/kubeconfig").env_remove("KUBERNETES_SERVICE_HOST");
    for v in ["IMAGE", "CONFIG", "DRY_RUN"] {
        c.env_remove(v);
    }
    c
}

fn docs(text: &str) -> Vec<serde_json::Value> {
    text.split("\n---\n")
        .filter_map(|d| serde_saphyr::from_str::<serde_json::Value>(d).ok())
        .filter(|d| d.is_object())
        .collect()
}

#[test]
fn manifests_with_the_example_config_and_flags() {
    let out = bin()
        .args([
            "--config",
            "examples/config.yaml",
            "manifests",
            "--image",
            "registry.example/k8s-upgrade-chain:9",
        ])
        .args([
            "--schedule",
            "0 22 * * 6",
            "--report-schedule",
            "0 7 * * 1",
            "--dry-run",
            "--prometheus-rule",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let docs = docs(&text);
    let cronjob =
        |name: &str| docs.iter().find(|d| d["kind"] == "CronJob" && d["metadata"]["name"] == name).unwrap();
    let detect = cronjob("k8s-version-check");
    assert_eq!(detect["spec"]["schedule"], "0 22 * * 6");
    let c = &detect["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "registry.example/k8s-upgrade-chain:9");
    assert!(c["env"].as_array().unwrap().iter().any(|e| e["name"] == "DRY_RUN" && e["value"] == "true"));
    assert_eq!(cronjob("k8s-upgrade-weekly-report")["spec"]["schedule"], "0 7 * * 1");
    // The config ConfigMap holds the --config file verbatim, comments included.
    let cm = docs.iter().find(|d| d["metadata"]["name"] == "k8s-upgrade-config").unwrap();
    let example = std::fs::read_to_string("examples/config.yaml").unwrap();
    assert_eq!(cm["data"]["config.yaml"], example.as_str());
    // The etcd backup hook brings its Role; the PrometheusRule is there; no Secret object.
    assert!(
        docs.iter().any(|d| d["kind"] == "Role" && d["metadata"]["name"] == "k8s-upgrade-job-etcd-backup")
    );
    assert!(docs.iter().any(|d| d["kind"] == "PrometheusRule"));
    assert!(!docs.iter().any(|d| d["kind"] == "Secret"));
    assert!(text.contains("# kind: Secret"));
}

#[test]
fn manifests_defaults_and_suspend() {
    let out = bin().args(["manifests", "--suspend"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let docs = docs(&String::from_utf8(out.stdout).unwrap());
    let cronjobs: Vec<&serde_json::Value> = docs.iter().filter(|d| d["kind"] == "CronJob").collect();
    assert_eq!(cronjobs.len(), 2);
    assert!(cronjobs.iter().all(|c| c["spec"]["suspend"] == true));
    assert_eq!(cronjobs[0]["spec"]["schedule"], "0 23 * * 0");
    assert!(!docs.iter().any(|d| d["kind"] == "PrometheusRule"));
}

#[test]
fn manifests_with_a_missing_config_is_bad_input() {
    let out = bin().args(["--config", "/nonexistent/site.yaml", "manifests"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn status_and_report_without_a_cluster_fail_cleanly() {
    for args in [&["status"][..], &["report", "--dry-run"][..]] {
        let out = bin().args(args).output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("Kubernetes configuration") || err.contains("kubeconfig"), "{args:?}: {err}");
    }
}
