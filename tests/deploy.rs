//! Deployment artefacts: the Terraform module parses, its RBAC (generated from `rbac::CALLS`)
//! and the `manifests` output grant exactly the calls the binary makes, and both agree.
//!
//! `UPDATE_GENERATED=1 cargo test --test deploy` rewrites `terraform/rbac.tf` from the list.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use chain_core::{
    manifests::{self, Options},
    rbac::{self, Grant},
    settings::Settings,
};
use hcl::{
    Block, Body, Expression, Value,
    eval::{Context, Evaluate, FuncArgs, FuncDef, ParamType},
};
use k8s_openapi::api::rbac::v1::PolicyRule;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tf_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("terraform"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "tf"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "expected the module's .tf files, found {files:?}");
    files
}

fn parse(path: &Path) -> Body {
    let text = std::fs::read_to_string(path).unwrap();
    hcl::parse(&text).unwrap_or_else(|e| panic!("{} does not parse as HCL: {e}", path.display()))
}

fn example() -> Settings {
    k8s_upgrade_chain::config::load(&root().join("examples/config.yaml")).unwrap()
}

#[test]
fn every_tf_file_parses() {
    for f in tf_files() {
        let body = parse(&f);
        assert!(body.iter().next().is_some(), "{} is empty", f.display());
    }
}

#[test]
fn a_syntax_error_is_caught_by_the_parser() {
    let text = std::fs::read_to_string(root().join("terraform/main.tf")).unwrap();
    let broken =
        text.replacen("resource \"kubernetes_namespace_v1\" \"this\" {", "resource \"x\" \"y\" {{", 1);
    assert!(hcl::parse(&broken).is_err());
}

#[test]
fn rbac_tf_is_generated_from_the_list() {
    let path = root().join("terraform/rbac.tf");
    let generated = rbac::terraform_hcl();
    if std::env::var_os("UPDATE_GENERATED").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "terraform/rbac.tf differs from crates/core/src/rbac.rs; regenerate it: UPDATE_GENERATED=1 cargo test --test deploy"
    );
}

/// Variable values: the module's defaults, overridden by `overrides`.
fn variables(overrides: &[(&str, Value)]) -> hcl::Map<String, Value> {
    let body = parse(&root().join("terraform/variables.tf"));
    let mut vars = hcl::Map::new();
    for b in body.blocks().filter(|b| b.identifier() == "variable") {
        let name = b.labels()[0].as_str().to_string();
        let default = b
            .body()
            .attributes()
            .find(|a| a.key() == "default")
            .map(|a| a.expr().evaluate(&Context::new()).unwrap())
            .unwrap_or(Value::Null);
        vars.insert(name, default);
    }
    for (k, v) in overrides {
        assert!(vars.contains_key(*k), "no variable {k}");
        vars.insert(k.to_string(), v.clone());
    }
    vars
}

fn length(args: FuncArgs) -> Result<Value, String> {
    match &args[0] {
        Value::Array(a) => Ok(Value::from(a.len() as u64)),
        Value::Object(o) => Ok(Value::from(o.len() as u64)),
        Value::String(s) => Ok(Value::from(s.chars().count() as u64)),
        other => Err(format!("length of {other:?}")),
    }
}

fn context(vars: hcl::Map<String, Value>) -> Context<'static> {
    let mut ctx = Context::new();
    ctx.declare_var("var", Value::Object(vars));
    ctx.declare_var("local", hcl::value!({ labels = {} }));
    ctx.declare_func("length", FuncDef::builder().param(ParamType::Any).build(length));
    ctx
}

fn eval(ctx: &Context<'_>, e: &Expression) -> Value {
    e.evaluate(ctx).unwrap_or_else(|err| panic!("cannot evaluate {e:?}: {err}"))
}

fn attr<'b>(b: &'b Body, key: &str) -> Option<&'b Expression> {
    b.attributes().find(|a| a.key() == key).map(|a| a.expr())
}

fn strings(v: Value) -> Option<Vec<String>> {
    match v {
        Value::Array(items) => {
            Some(items.into_iter().map(|i| i.as_str().expect("a string").to_string()).collect())
        }
        Value::Null => None,
        other => panic!("expected a list, got {other:?}"),
    }
}

fn rule_of(ctx: &Context<'_>, body: &Body) -> PolicyRule {
    let get = |k: &str| attr(body, k).and_then(|e| strings(eval(ctx, e)));
    PolicyRule {
        api_groups: get("api_groups"),
        resources: get("resources"),
        resource_names: get("resource_names").filter(|n| !n.is_empty()),
        non_resource_urls: get("non_resource_urls"),
        verbs: get("verbs").unwrap_or_default(),
    }
}

/// The rules the module's roles grant, with the namespace they are bound in, evaluated with
/// `vars` (`count` and `dynamic "rule"` honoured).
fn terraform_rules(body: &Body, vars: hcl::Map<String, Value>) -> Vec<(Option<String>, PolicyRule)> {
    let ctx = context(vars);
    let mut out = Vec::new();
    let roles = body.blocks().filter(|b| {
        b.identifier() == "resource"
            && matches!(b.labels()[0].as_str(), "kubernetes_cluster_role_v1" | "kubernetes_role_v1")
    });
    for role in roles {
        if let Some(count) = attr(role.body(), "count")
            && eval(&ctx, count) == Value::from(0u64)
        {
            continue;
        }
        let meta = role.body().blocks().find(|b| b.identifier() == "metadata").expect("metadata");
        let ns = attr(meta.body(), "namespace").map(|e| eval(&ctx, e).as_str().unwrap().to_string());
        for b in role.body().blocks() {
            match b.identifier() {
                "rule" => out.push((ns.clone(), rule_of(&ctx, b.body()))),
                "dynamic" => {
                    let for_each = eval(&ctx, attr(b.body(), "for_each").unwrap());
                    let n = match for_each {
                        Value::Array(a) => a.len(),
                        other => panic!("for_each {other:?}"),
                    };
                    let content: &Block = b.body().blocks().find(|c| c.identifier() == "content").unwrap();
                    for _ in 0..n {
                        out.push((ns.clone(), rule_of(&ctx, content.body())));
                    }
                }
                _ => {}
            }
        }
    }
    out
}

fn rbac_body() -> Body {
    parse(&root().join("terraform/rbac.tf"))
}

/// The module's variables that correspond to the example config.
fn example_vars() -> Vec<(&'static str, Value)> {
    vec![
        ("etcd_backup_namespace", Value::from("default")),
        ("post_upgrade_configmaps", hcl::value!(["apiserver-oidc-restore"])),
    ]
}

#[test]
fn terraform_grants_exactly_the_calls() {
    for (settings, overrides) in [(Settings::default(), vec![]), (example(), example_vars())] {
        let granted = terraform_rules(&rbac_body(), variables(&overrides));
        let cov = rbac::check(&rbac::required(&settings), &granted);
        assert!(cov.is_exact(), "terraform/rbac.tf vs crates/core/src/rbac.rs:\n{cov}");
    }
}

#[test]
fn terraform_missing_a_rule_fails_the_check() {
    let text = std::fs::read_to_string(root().join("terraform/rbac.tf")).unwrap();
    let mutated = text.replacen("resources  = [\"pods/log\"]", "resources  = [\"pods/status\"]", 1);
    assert_ne!(mutated, text);
    let granted = terraform_rules(&hcl::parse(&mutated).unwrap(), variables(&example_vars()));
    let cov = rbac::check(&rbac::required(&example()), &granted);
    assert!(cov.uncovered.iter().any(|g| g.resource == "pods/log"), "{cov}");
    assert!(cov.unneeded.iter().any(|g| g.resource == "pods/status"), "{cov}");
}

#[test]
fn terraform_bindings_bind_every_role_to_the_service_account() {
    let body = rbac_body();
    let roles: BTreeSet<String> = body
        .blocks()
        .filter(|b| matches!(b.labels()[0].as_str(), "kubernetes_cluster_role_v1" | "kubernetes_role_v1"))
        .map(|b| b.labels()[1].as_str().to_string())
        .collect();
    let bound: BTreeSet<String> = body
        .blocks()
        .filter(|b| b.labels()[0].as_str().ends_with("_binding_v1"))
        .map(|b| {
            let subject = b.body().blocks().find(|s| s.identifier() == "subject").unwrap();
            let name = format!("{:?}", attr(subject.body(), "name").unwrap());
            assert!(name.contains("kubernetes_service_account_v1"), "{name}");
            b.labels()[1].as_str().to_string()
        })
        .collect();
    assert_eq!(roles, bound);
    assert_eq!(roles.len(), 4);
}

fn opts() -> Options {
    Options {
        image: "img:1".into(),
        schedule: manifests::DEFAULT_SCHEDULE.into(),
        report_schedule: manifests::DEFAULT_REPORT_SCHEDULE.into(),
        dry_run: false,
        enabled: true,
        config_yaml: "namespace: k8s-upgrade\n".into(),
    }
}

/// Parses `manifests` output: every document, and the rules of its roles with their namespace
/// (only roles bound to the chain's ServiceAccount count).
fn manifest_rules(text: &str) -> (Vec<serde_json::Value>, Vec<(Option<String>, PolicyRule)>) {
    let docs: Vec<serde_json::Value> = text
        .split("\n---\n")
        .filter_map(|d| serde_saphyr::from_str::<serde_json::Value>(d).ok())
        .filter(|d| d.is_object())
        .collect();
    let mut rules = Vec::new();
    for d in &docs {
        if !matches!(d["kind"].as_str(), Some("Role" | "ClusterRole")) {
            continue;
        }
        let ns = d["metadata"]["namespace"].as_str().map(String::from);
        let bound = docs.iter().any(|b| {
            matches!(b["kind"].as_str(), Some("RoleBinding" | "ClusterRoleBinding"))
                && b["roleRef"]["name"] == d["metadata"]["name"]
                && b["roleRef"]["kind"] == d["kind"]
                && b["metadata"]["namespace"] == d["metadata"]["namespace"]
                && b["subjects"][0]["name"] == "k8s-upgrade-job"
        });
        assert!(bound, "role {} is not bound", d["metadata"]["name"]);
        for r in d["rules"].as_array().unwrap() {
            rules.push((ns.clone(), serde_json::from_value::<PolicyRule>(r.clone()).unwrap()));
        }
    }
    (docs, rules)
}

#[test]
fn manifests_grant_exactly_the_calls() {
    for settings in [Settings::default(), example()] {
        let text = manifests::render(&settings, &opts(), true);
        let (_, granted) = manifest_rules(&text);
        let cov = rbac::check(&rbac::required(&settings), &granted);
        assert!(cov.is_exact(), "manifests vs crates/core/src/rbac.rs:\n{cov}");
    }
}

fn atoms(rules: &[(Option<String>, PolicyRule)]) -> BTreeSet<Grant> {
    rules.iter().flat_map(|(ns, r)| rbac::expand(ns.as_deref(), r)).collect()
}

#[test]
fn terraform_and_manifests_grant_the_same_rules() {
    for (settings, overrides) in [(Settings::default(), vec![]), (example(), example_vars())] {
        let tf = atoms(&terraform_rules(&rbac_body(), variables(&overrides)));
        let (_, m) = manifest_rules(&manifests::render(&settings, &opts(), false));
        assert_eq!(tf, atoms(&m));
    }
}

#[test]
fn manifests_objects_are_valid_kubernetes_objects() {
    use k8s_openapi::api::{
        batch::v1::CronJob,
        core::v1::{ConfigMap, Namespace, ServiceAccount},
    };
    let settings = example();
    let text = manifests::render(&settings, &opts(), true);
    let (docs, _) = manifest_rules(&text);
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    for k in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "CronJob",
        "PrometheusRule",
    ] {
        assert!(kinds.contains(&k), "no {k} in {kinds:?}");
    }
    assert!(!kinds.contains(&"Secret"));
    for d in &docs {
        let v = d.clone();
        match d["kind"].as_str().unwrap() {
            "Namespace" => drop(serde_json::from_value::<Namespace>(v).unwrap()),
            "ServiceAccount" => drop(serde_json::from_value::<ServiceAccount>(v).unwrap()),
            "ConfigMap" => {
                let cm: ConfigMap = serde_json::from_value(v).unwrap();
                assert_eq!(cm.metadata.namespace.as_deref(), Some("k8s-upgrade"));
            }
            "CronJob" => {
                let cj: CronJob = serde_json::from_value(v).unwrap();
                let pod = cj.spec.unwrap().job_template.spec.unwrap().template.spec.unwrap();
                let c = &pod.containers[0];
                let sc = c.security_context.as_ref().unwrap();
                assert_eq!(sc.read_only_root_filesystem, Some(true));
                assert_eq!(pod.security_context.as_ref().unwrap().run_as_user, Some(65532));
                let mounts: Vec<(&str, &str)> = c
                    .volume_mounts
                    .as_ref()
                    .unwrap()
                    .iter()
                    .map(|m| (m.name.as_str(), m.mount_path.as_str()))
                    .collect();
                // The chain Job template's mount points.
                for m in [
                    ("creds", "/secrets/k8s-upgrade"),
                    ("config", "/etc/k8s-upgrade-chain"),
                    ("scripts", "/scripts"),
                    ("tmp", "/tmp"),
                ] {
                    assert!(mounts.contains(&m), "{m:?} not in {mounts:?}");
                }
            }
            _ => {}
        }
    }
    // The config ConfigMap holds a config the tool loads.
    let cm = docs.iter().find(|d| d["metadata"]["name"] == "k8s-upgrade-config").unwrap();
    Settings::from_yaml(cm["data"]["config.yaml"].as_str().unwrap(), "configmap").unwrap();
}

#[test]
fn chain_job_template_mounts_match_the_manifests() {
    let t = chain_core::job::BUILTIN_TEMPLATE;
    for path in ["/secrets/k8s-upgrade", "/etc/k8s-upgrade-chain", "/scripts", "/tmp"] {
        assert!(t.contains(&format!("mountPath: {path}")), "template lacks {path}");
    }
    let tf = std::fs::read_to_string(root().join("terraform/main.tf")).unwrap();
    for path in ["/secrets/k8s-upgrade", "/etc/k8s-upgrade-chain", "/scripts", "/tmp"] {
        assert!(tf.contains(&format!("mount_path = \"{path}\"")), "terraform lacks {path}");
    }
}

#[test]
fn prometheus_rule_has_the_rules_file_groups() {
    let file: serde_json::Value = serde_saphyr::from_str(manifests::ALERT_RULES).unwrap();
    let on_disk: serde_json::Value = serde_saphyr::from_str(
        &std::fs::read_to_string(root().join("deploy/alerts/k8s-upgrade-chain.rules.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(file, on_disk);
    let pr = manifests::prometheus_rule(&Settings::default());
    assert_eq!(pr["spec"]["groups"], file["groups"]);
    let names: Vec<&str> =
        file["groups"][0]["rules"].as_array().unwrap().iter().map(|r| r["alert"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "K8sVersionSkew",
            "EtcdPreUpgradeSnapshotMissing",
            "K8sUpgradeStalled",
            "K8sUpgradeChainJobFailed",
            "K8sUpgradeBlocked"
        ]
    );
}

#[test]
fn dockerfile_builds_a_nonroot_distroless_image_from_a_complete_context() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    for want in [
        "FROM rust:bookworm AS builder",
        "libssl-dev",
        "cargo build --release --locked --bin k8s-upgrade-chain",
        "FROM gcr.io/distroless/cc-debian12:nonroot",
        "COPY templates/job.yaml.j2 ",
        "COPY scripts/update_k8s.sh ",
        "USER 65532:65532",
        "ENTRYPOINT [\"/usr/local/bin/k8s-upgrade-chain\"]",
    ] {
        assert!(dockerfile.contains(want), "Dockerfile lacks {want:?}");
    }
    // The build context must keep everything the release build reads (include_str! targets,
    // the workspace member, the lock file).
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    let patterns: Vec<&str> =
        ignore.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "src/lib.rs",
        "benches/plan.rs",
        "crates/core/Cargo.toml",
        "crates/sim/Cargo.toml",
        "templates/job.yaml.j2",
        "scripts/update_k8s.sh",
        "deploy/alerts/k8s-upgrade-chain.rules.yaml",
    ] {
        assert!(root().join(needed).exists(), "{needed} does not exist");
        for p in &patterns {
            let p = p.trim_start_matches("**/");
            let excluded = needed == p
                || needed.starts_with(&format!("{p}/"))
                || p.strip_prefix('*').is_some_and(|suffix| needed.ends_with(suffix));
            assert!(!excluded, ".dockerignore pattern {p:?} drops {needed}");
        }
    }
}
