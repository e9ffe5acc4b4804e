//! Deployment artefacts: the Terraform module parses and is `terraform fmt` clean, its RBAC
//! (generated from `rbac::CALLS`) and the `manifests` output grant exactly the calls the binary
//! makes, and both agree; Terraform, `manifests` and the alert rules take every site setting
//! from the same config file.
//!
//! Terraform runs for real (`terraform` on the PATH; the build machines have it): `fmt -check`,
//! and `apply` of `terraform/modules/config`, the provider-less module that reads the config
//! file, which needs no network. The rest of the module needs the kubernetes provider, which
//! cannot be downloaded here, so its resources are evaluated with hcl-rs, with the `local`
//! values the real module run returned.
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
    let mut files = Vec::new();
    for dir in ["terraform", "terraform/modules/config"] {
        files.extend(
            std::fs::read_dir(root().join(dir))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "tf")),
        );
    }
    files.sort();
    assert!(files.len() >= 6, "expected the module's .tf files, found {files:?}");
    files
}

/// Runs `terraform ARGS` (in `dir`, with its data dir in `data`) and returns (success, output).
fn terraform(args: &[&str], dir: &Path, data: &Path) -> (bool, String) {
    let out = std::process::Command::new("terraform")
        .args(args)
        .current_dir(dir)
        .env("TF_DATA_DIR", data)
        .env("TF_IN_AUTOMATION", "1")
        .env("TF_INPUT", "0")
        .env("CHECKPOINT_DISABLE", "1")
        // No user CLI config (plugin caches, credentials): the run must not depend on it.
        .env("TF_CLI_CONFIG_FILE", "/dev/null")
        .output()
        .unwrap_or_else(|e| {
            panic!("failed to run terraform ({e}): it must be on the PATH (the build machines have /usr/local/bin/terraform)")
        });
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The outputs of `terraform/modules/config` for a config file and Job template, from a real
/// `terraform apply` (the module has no provider and no resource: it runs offline and changes
/// nothing). Err holds terraform's message.
fn config_module(config_yaml: Option<&str>, job_template: Option<&str>) -> Result<serde_json::Value, String> {
    let tmp = tempfile::tempdir().unwrap();
    let (state, data) = (tmp.path().join("terraform.tfstate"), tmp.path().join("data"));
    let state_arg = format!("-state={}", state.display());
    let mut args = vec!["apply", "-auto-approve", "-input=false", "-lock=false", "-no-color", &state_arg];
    let vars: Vec<String> = [("config_yaml", config_yaml), ("job_template", job_template)]
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
        .collect();
    for v in &vars {
        args.extend(["-var", v]);
    }
    let dir = root().join("terraform/modules/config");
    let (ok, out) = terraform(&args, &dir, &data);
    if !ok {
        return Err(out);
    }
    let (ok, out) = terraform(&["output", "-json", "-no-color", &state_arg], &dir, &data);
    assert!(ok, "{out}");
    let outputs: serde_json::Value = serde_json::from_str(&out).unwrap();
    let values = outputs.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v["value"].clone())).collect();
    Ok(serde_json::Value::Object(values))
}

/// The config module's outputs for `settings`' config file (None: no config_yaml).
fn module_for(config_yaml: Option<&str>) -> serde_json::Value {
    config_module(config_yaml, None).unwrap_or_else(|e| panic!("terraform/modules/config failed:\n{e}"))
}

fn hcl_value(v: &serde_json::Value) -> Value {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn terraform_fmt_is_clean() {
    let data = tempfile::tempdir().unwrap();
    let (ok, out) = terraform(
        &["fmt", "-check", "-recursive", "-diff", "-no-color"],
        &root().join("terraform"),
        data.path(),
    );
    assert!(
        ok,
        "terraform fmt -check -recursive terraform/ failed; run `terraform fmt -recursive terraform`:\n{out}"
    );
    // The check can fail: a misaligned attribute is reported.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("terraform/outputs.tf")).unwrap();
    let mutated = text.replacen("  value       =", "  value =", 1);
    assert_ne!(mutated, text);
    std::fs::write(dir.path().join("outputs.tf"), mutated).unwrap();
    let (ok, out) = terraform(&["fmt", "-check", "-no-color"], dir.path(), data.path());
    assert!(!ok, "a misformatted file passed terraform fmt -check: {out}");
}

fn parse(path: &Path) -> Body {
    let text = std::fs::read_to_string(path).unwrap();
    hcl::parse(&text).unwrap_or_else(|e| panic!("{} does not parse as HCL: {e}", path.display()))
}

fn example() -> Settings {
    k8s_upgrade_chain::config::load(&root().join("examples/config.yaml")).unwrap()
}

fn example_yaml() -> String {
    std::fs::read_to_string(root().join("examples/config.yaml")).unwrap()
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

/// The module's `local` values (main.tf's `locals`, which copy the config module's outputs),
/// from a real run of the config module on `config_yaml`.
fn locals(config_yaml: Option<&str>) -> hcl::Map<String, Value> {
    let body = parse(&root().join("terraform/main.tf"));
    let module = module_for(config_yaml);
    let outputs: BTreeSet<String> = parse(&root().join("terraform/modules/config/main.tf"))
        .blocks()
        .filter(|b| b.identifier() == "output")
        .map(|b| b.labels()[0].as_str().to_string())
        .collect();
    let mut ctx = Context::new();
    ctx.declare_var("module", hcl::value!({ config = (hcl_value(&module)) }));
    let mut out = hcl::Map::new();
    for b in body.blocks().filter(|b| b.identifier() == "locals") {
        for a in b.body().attributes() {
            // The copies of the config module's outputs, and what evaluates without the rest
            // of the module (the labels).
            let text = hcl::format::to_string(a.expr()).unwrap();
            if let Some(output) = text.strip_prefix("module.config.") {
                // `terraform output` leaves out null outputs: the declaration is what counts.
                assert!(
                    outputs.contains(output),
                    "main.tf uses module.config.{output}, which does not exist"
                );
                out.insert(a.key().to_string(), hcl_value(&module[output]));
            } else if let Ok(v) = a.expr().evaluate(&ctx) {
                out.insert(a.key().to_string(), v);
            }
        }
    }
    for k in
        ["namespace", "etcd_backup_namespace", "post_upgrade_configmaps", "quiesce_deployments", "labels"]
    {
        assert!(out.contains_key(k), "main.tf has no local {k} from the config module");
    }
    out
}

fn length(args: FuncArgs) -> Result<Value, String> {
    match &args[0] {
        Value::Array(a) => Ok(Value::from(a.len() as u64)),
        Value::Object(o) => Ok(Value::from(o.len() as u64)),
        Value::String(s) => Ok(Value::from(s.chars().count() as u64)),
        other => Err(format!("length of {other:?}")),
    }
}

fn context(locals: hcl::Map<String, Value>) -> Context<'static> {
    let mut ctx = Context::new();
    ctx.declare_var("local", Value::Object(locals));
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
/// the module's `locals` (`count` and `dynamic "rule"` honoured).
fn terraform_rules(body: &Body, locals: hcl::Map<String, Value>) -> Vec<(Option<String>, PolicyRule)> {
    let ctx = context(locals);
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
        // `for_each` over a map: one instance per key, with `each.key` and `each.value`.
        let instances: Vec<Context<'_>> = match attr(role.body(), "for_each") {
            None => vec![ctx.clone()],
            Some(e) => match eval(&ctx, e) {
                Value::Object(map) => map
                    .into_iter()
                    .map(|(k, v)| {
                        let mut c = ctx.clone();
                        c.declare_var("each", hcl::value!({ key = (k), value = (v) }));
                        c
                    })
                    .collect(),
                other => panic!("for_each {other:?}"),
            },
        };
        for ctx in &instances {
            let meta = role.body().blocks().find(|b| b.identifier() == "metadata").expect("metadata");
            let ns = attr(meta.body(), "namespace").map(|e| eval(ctx, e).as_str().unwrap().to_string());
            for b in role.body().blocks() {
                match b.identifier() {
                    "rule" => out.push((ns.clone(), rule_of(ctx, b.body()))),
                    "dynamic" => {
                        let for_each = eval(ctx, attr(b.body(), "for_each").unwrap());
                        let n = match for_each {
                            Value::Array(a) => a.len(),
                            other => panic!("for_each {other:?}"),
                        };
                        let content: &Block =
                            b.body().blocks().find(|c| c.identifier() == "content").unwrap();
                        for _ in 0..n {
                            out.push((ns.clone(), rule_of(ctx, content.body())));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

fn rbac_body() -> Body {
    parse(&root().join("terraform/rbac.tf"))
}

#[test]
fn terraform_grants_exactly_the_calls() {
    for (settings, yaml) in [(Settings::default(), None), (example(), Some(example_yaml()))] {
        let granted = terraform_rules(&rbac_body(), locals(yaml.as_deref()));
        let cov = rbac::check(&rbac::required(&settings), &granted);
        assert!(cov.is_exact(), "terraform/rbac.tf vs crates/core/src/rbac.rs:\n{cov}");
    }
}

#[test]
fn terraform_missing_a_rule_fails_the_check() {
    let text = std::fs::read_to_string(root().join("terraform/rbac.tf")).unwrap();
    let mutated = text.replacen("resources  = [\"pods/log\"]", "resources  = [\"pods/status\"]", 1);
    assert_ne!(mutated, text);
    let granted = terraform_rules(&hcl::parse(&mutated).unwrap(), locals(Some(&example_yaml())));
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
    assert_eq!(roles.len(), 6);
}

fn opts() -> Options {
    Options {
        image: "img:1".into(),
        schedule: manifests::DEFAULT_SCHEDULE.into(),
        report_schedule: manifests::DEFAULT_REPORT_SCHEDULE.into(),
        dry_run: false,
        enabled: true,
        config_yaml: "namespace: k8s-upgrade\n".into(),
        job_template: None,
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
    let sa = docs.iter().find(|d| d["kind"] == "ServiceAccount").expect("a ServiceAccount");
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
                && b["subjects"][0]["name"] == sa["metadata"]["name"]
                && b["subjects"][0]["namespace"] == sa["metadata"]["namespace"]
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
    for (settings, yaml) in [(Settings::default(), None), (example(), Some(example_yaml()))] {
        let tf = atoms(&terraform_rules(&rbac_body(), locals(yaml.as_deref())));
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
                // The chain Job template's mount points, and nothing else.
                assert_eq!(
                    mounts,
                    [
                        ("creds", "/secrets/k8s-upgrade"),
                        ("config", "/etc/k8s-upgrade-chain"),
                        ("tmp", "/tmp")
                    ]
                );
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
    let tf = std::fs::read_to_string(root().join("terraform/main.tf")).unwrap();
    let mounts = |text: &str, key: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.trim().strip_prefix(key))
            .map(|p| p.trim().trim_matches('"').to_string())
            .collect()
    };
    let want = ["/secrets/k8s-upgrade", "/etc/k8s-upgrade-chain", "/tmp"];
    assert_eq!(mounts(t, "mountPath:"), want, "templates/job.yaml.j2");
    assert_eq!(mounts(&tf, "mount_path = "), want, "terraform/main.tf");
}

#[test]
fn prometheus_rule_has_the_rules_file_groups() {
    let file: serde_json::Value = serde_saphyr::from_str(manifests::ALERT_RULES).unwrap();
    let on_disk: serde_json::Value = serde_saphyr::from_str(
        &std::fs::read_to_string(root().join("deploy/alerts/k8s-upgrade-chain.rules.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(file, on_disk);
    // The file is the rendering for the default namespace.
    assert_eq!(manifests::alert_rules(&Settings::default()), manifests::ALERT_RULES);
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
            "K8sUpgradeNodeAwaitingAck",
            "K8sUpgradeBlocked"
        ]
    );
}

/// Every `namespace` label matcher in PromQL text (`namespace="x"`, `=~`, `!=`, `!~`).
fn namespace_matchers(rules: &str) -> Vec<String> {
    let re = regex::Regex::new(r#"\bnamespace\s*(=~|!=|!~|=)\s*"([^"]*)""#).unwrap();
    re.captures_iter(rules).map(|c| format!("{}{}", &c[1], &c[2])).collect()
}

#[test]
fn every_namespace_matcher_of_the_rules_is_rendered() {
    // The renderer replaces one exact matcher text; a matcher written any other way would keep
    // the default namespace silently. The file has only that form.
    let matchers = namespace_matchers(manifests::ALERT_RULES);
    assert!(!matchers.is_empty());
    assert_eq!(
        matchers.len(),
        manifests::ALERT_RULES.matches(manifests::ALERT_RULES_NAMESPACE_MATCHER).count()
    );
    // And the check catches one: a regex matcher is not rendered.
    let odd = manifests::ALERT_RULES.replacen(
        manifests::ALERT_RULES_NAMESPACE_MATCHER,
        "namespace=~\"k8s-upgrade\"",
        1,
    );
    assert_ne!(namespace_matchers(&odd).len(), odd.matches(manifests::ALERT_RULES_NAMESPACE_MATCHER).count());
}

/// A site config that changes everything the install paths take from it.
const SITE_CONFIG: &str = "\
# A site that moved the chain.
namespace: ops-upgrades
job:
  service_account: upgrader
  credentials_secret: upgrader-creds
  config_map: upgrader-config
  image_pull_secrets: [regcred]
hooks:
  etcd_backup:
    namespace: backups
    cronjob: etcd-backup
  post_control_plane_scripts:
    - {name: oidc, configmap_namespace: kube-system, configmap_name: oidc-restore, configmap_key: restore.sh}
    - {name: audit, configmap_namespace: kube-system, configmap_name: audit-policy, configmap_key: apply.sh}
";

/// The binary's `manifests` for a config file (the CLI path users take).
fn manifests_cli(config: &Path, extra: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_k8s-upgrade-chain"))
        .arg("--config")
        .arg(config)
        .arg("manifests")
        .args(extra)
        .env_remove("IMAGE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn changing_the_namespace_changes_every_install_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("site.yaml");
    std::fs::write(&config, SITE_CONFIG).unwrap();
    let settings = k8s_upgrade_chain::config::load(&config).unwrap();
    let ns = "ops-upgrades";
    assert_eq!(settings.namespace, ns);

    // Terraform: the config module reads the same file.
    let module = module_for(Some(SITE_CONFIG));
    assert_eq!(module["namespace"], ns);
    assert_eq!(module["service_account"], "upgrader");
    assert_eq!(module["credentials_secret"], "upgrader-creds");
    assert_eq!(module["config_map"], "upgrader-config");
    assert_eq!(module["image_pull_secrets"], serde_json::json!(["regcred"]));
    assert_eq!(module["etcd_backup_namespace"], "backups");
    assert_eq!(module["config_map_data"], serde_json::json!({"config.yaml": SITE_CONFIG}));
    let mut cms: Vec<String> = module["post_upgrade_configmaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().into())
        .collect();
    cms.sort();
    assert_eq!(cms, ["audit-policy", "oidc-restore"]);

    // Every namespaced object of main.tf lands in that namespace.
    let locals = locals(Some(SITE_CONFIG));
    let mut ctx = context(locals.clone());
    let main = parse(&root().join("terraform/main.tf"));
    let ns_resource = main
        .blocks()
        .find(|b| b.identifier() == "resource" && b.labels()[0].as_str() == "kubernetes_namespace_v1")
        .unwrap();
    let meta = |b: &Block| b.body().blocks().find(|m| m.identifier() == "metadata").cloned();
    let ns_name = eval(&ctx, attr(meta(ns_resource).unwrap().body(), "name").unwrap());
    assert_eq!(ns_name, Value::from(ns));
    ctx.declare_var("kubernetes_namespace_v1", hcl::value!({ this = { metadata = [{ name = (ns_name) }] } }));
    let mut namespaced = 0;
    for b in main.blocks().filter(|b| b.identifier() == "resource") {
        if let Some(m) = meta(b)
            && let Some(e) = attr(m.body(), "namespace")
        {
            assert_eq!(eval(&ctx, e), Value::from(ns), "{:?}", b.labels());
            namespaced += 1;
        }
    }
    assert!(namespaced >= 4, "only {namespaced} namespaced resources in main.tf");
    // The ExternalSecret's manifest (an HCL object, not a block) too.
    assert!(std::fs::read_to_string(root().join("terraform/main.tf")).unwrap().contains(
        "namespace = kubernetes_namespace_v1.this.metadata[0].name\n      labels    = local.labels"
    ));

    // RBAC: Terraform and `manifests` grant exactly the calls for this config, in its namespaces.
    let tf = terraform_rules(&rbac_body(), locals);
    let cov = rbac::check(&rbac::required(&settings), &tf);
    assert!(cov.is_exact(), "terraform/rbac.tf with the site config:\n{cov}");
    let text = manifests_cli(&config, &["--prometheus-rule"]);
    let (docs, m) = manifest_rules(&text);
    assert_eq!(atoms(&tf), atoms(&m));
    for d in &docs {
        match d["kind"].as_str().unwrap() {
            "Namespace" => assert_eq!(d["metadata"]["name"], ns),
            "ClusterRole" | "ClusterRoleBinding" => {}
            "Role" | "RoleBinding" if d["metadata"]["name"] == "k8s-upgrade-job-etcd-backup" => {
                assert_eq!(d["metadata"]["namespace"], "backups")
            }
            // Events about Nodes (cluster-scoped) go to `default`, as kubectl's do.
            "Role" | "RoleBinding" if d["metadata"]["name"] == "k8s-upgrade-job-node-events" => {
                assert_eq!(d["metadata"]["namespace"], "default")
            }
            _ => assert_eq!(d["metadata"]["namespace"], ns, "{d}"),
        }
    }
    let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    assert_eq!(cm["metadata"]["name"], "upgrader-config");
    assert_eq!(cm["data"], module["config_map_data"]);

    // Alert rules: the binary's rules file, its PrometheusRule and Terraform's output are the
    // same rendering, with every namespace matcher on the site's namespace.
    let rules = manifests_cli(&config, &["--alert-rules"]);
    assert_eq!(rules, manifests::alert_rules(&settings));
    assert_eq!(module["alert_rules"], rules.as_str());
    let matchers = namespace_matchers(&rules);
    assert_eq!(matchers, vec![format!("={ns}"); namespace_matchers(manifests::ALERT_RULES).len()]);
    let pr = docs.iter().find(|d| d["kind"] == "PrometheusRule").unwrap();
    assert_eq!(pr["metadata"]["namespace"], ns);
    let parsed: serde_json::Value = serde_saphyr::from_str(&rules).unwrap();
    assert_eq!(pr["spec"]["groups"], parsed["groups"]);
    // promtool accepts the rendered file.
    std::fs::write(dir.path().join("rules.yaml"), &rules).unwrap();
    let out = std::process::Command::new("/usr/bin/promtool")
        .args(["check", "rules"])
        .arg(dir.path().join("rules.yaml"))
        .output()
        .expect("promtool (Debian package prometheus)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_template_override_travels_in_the_config_configmap_on_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("site.yaml");
    let yaml = "namespace: ops-upgrades\njob:\n  template: site-job.yaml.j2\n";
    std::fs::write(&config, yaml).unwrap();
    let template = format!("{{#- site override -#}}\n{}", chain_core::job::BUILTIN_TEMPLATE);
    std::fs::write(dir.path().join("site-job.yaml.j2"), &template).unwrap();

    let docs: Vec<serde_json::Value> = manifests_cli(&config, &[])
        .split("\n---\n")
        .filter_map(|d| serde_saphyr::from_str::<serde_json::Value>(d).ok())
        .filter(|d| d.is_object())
        .collect();
    let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    assert_eq!(cm["data"], serde_json::json!({"config.yaml": yaml, "site-job.yaml.j2": template}));
    let module = config_module(Some(yaml), Some(&template)).unwrap();
    assert_eq!(module["config_map_data"], cm["data"]);

    // Either half alone is refused, by both.
    let err = config_module(Some(yaml), None).unwrap_err();
    assert!(err.contains("job_template must hold the template's text"), "{err}");
    let err = config_module(Some("namespace: x\n"), Some(&template)).unwrap_err();
    assert!(err.contains("config_yaml has no job.template"), "{err}");
    std::fs::remove_file(dir.path().join("site-job.yaml.j2")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_k8s-upgrade-chain"))
        .arg("--config")
        .arg(&config)
        .arg("manifests")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("site-job.yaml.j2"));
}

#[test]
fn the_config_module_defaults_are_the_binary_defaults() {
    let d = Settings::default();
    for yaml in [None, Some(""), Some("# only a comment\n"), Some("{}\n")] {
        let m = module_for(yaml);
        assert_eq!(m["namespace"], d.namespace.as_str(), "{yaml:?}");
        assert_eq!(m["service_account"], d.job.service_account.as_str());
        assert_eq!(m["credentials_secret"], d.job.credentials_secret.as_str());
        assert_eq!(m["config_map"], d.job.config_map.as_str());
        assert_eq!(m["image_pull_secrets"], serde_json::json!([]));
        assert_eq!(m["etcd_backup_namespace"], serde_json::Value::Null);
        assert_eq!(m["post_upgrade_configmaps"], serde_json::json!([]));
        assert_eq!(m["alert_rules"], manifests::ALERT_RULES);
        let text = m["config_map_data"]["config.yaml"].as_str().unwrap();
        assert_eq!(Settings::from_yaml(text, "terraform").unwrap(), d);
    }
}

#[test]
fn dockerfile_builds_the_script_image_from_a_complete_context() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    // The builder runs the project's image script; the image is scratch plus its root
    // filesystem (tests/image.rs builds the same image with umoci and compares the config).
    for want in [
        "FROM rust:bookworm AS builder",
        "scripts/build-image.sh rootfs /rootfs",
        "FROM scratch",
        "COPY --from=builder /rootfs/ /",
    ] {
        assert!(dockerfile.contains(want), "Dockerfile lacks {want:?}");
    }
    // The build context must keep everything the release build and the script read
    // (include_str! targets, the workspace member, the lock file, the image's files).
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
        "scripts/build-image.sh",
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

/// The variables' defaults, as Terraform would take them.
fn variable_defaults() -> Value {
    let body = parse(&root().join("terraform/variables.tf"));
    let mut vars = hcl::Map::new();
    for b in body.blocks().filter(|b| b.identifier() == "variable") {
        let default = attr(b.body(), "default").map_or(Value::Null, |e| eval(&Context::new(), e));
        vars.insert(b.labels()[0].as_str().to_string(), default);
    }
    Value::Object(vars)
}

/// What each CronJob's deadlines and history are in `terraform/main.tf` (the `cronjobs` local
/// through `kubernetes_cron_job_v1.this`, for each of its entries), keyed by CronJob name.
fn terraform_cronjob_timing() -> std::collections::BTreeMap<String, serde_json::Value> {
    let body = parse(&root().join("terraform/main.tf"));
    let mut ctx = Context::new();
    ctx.declare_var("var", variable_defaults());
    ctx.declare_func(
        "tostring",
        FuncDef::builder().param(ParamType::Any).build(|args: FuncArgs| Ok(Value::from(args[0].to_string()))),
    );
    let cronjobs = body
        .blocks()
        .filter(|b| b.identifier() == "locals")
        .flat_map(|b| b.body().attributes())
        .find(|a| a.key() == "cronjobs")
        .map(|a| eval(&ctx, a.expr()))
        .expect("main.tf has a cronjobs local");
    let resource = body
        .blocks()
        .find(|b| b.identifier() == "resource" && b.labels()[0].as_str() == "kubernetes_cron_job_v1")
        .expect("main.tf has the CronJob resource");
    let block = |b: &'_ Body, name: &str| -> Body {
        b.blocks()
            .find(|x| x.identifier() == name)
            .unwrap_or_else(|| panic!("no {name} block"))
            .body()
            .clone()
    };
    let spec = block(resource.body(), "spec");
    let job_spec = block(&block(&spec, "job_template"), "spec");
    let Value::Object(cronjobs) = cronjobs else { panic!("cronjobs is not a map") };
    let mut out = std::collections::BTreeMap::new();
    for (key, value) in cronjobs {
        let mut each = Context::new();
        each.declare_var("var", variable_defaults());
        each.declare_var("each", hcl::value!({ key = (key.clone()), value = (value.clone()) }));
        let get = |b: &Body, k: &str| {
            let v = eval(&each, attr(b, k).unwrap_or_else(|| panic!("no {k} in the CronJob resource")));
            serde_json::to_value(v).unwrap()
        };
        let name = value.as_object().and_then(|o| o.get("name")).and_then(Value::as_str).unwrap().to_string();
        out.insert(
            name,
            serde_json::json!({
                "concurrencyPolicy": get(&spec, "concurrency_policy"),
                "startingDeadlineSeconds": get(&spec, "starting_deadline_seconds"),
                "successfulJobsHistoryLimit": get(&spec, "successful_jobs_history_limit"),
                "failedJobsHistoryLimit": get(&spec, "failed_jobs_history_limit"),
                "activeDeadlineSeconds": get(&job_spec, "active_deadline_seconds"),
                "backoffLimit": get(&job_spec, "backoff_limit"),
                "ttlSecondsAfterFinished": get(&job_spec, "ttl_seconds_after_finished"),
            }),
        );
    }
    out
}

/// The same figures from `manifests` (crates/core/src/manifests.rs).
fn manifests_cronjob_timing() -> std::collections::BTreeMap<String, serde_json::Value> {
    manifests::objects(&Settings::default(), &opts())
        .into_iter()
        .filter(|o| o["kind"] == "CronJob")
        .map(|o| {
            let (spec, job) = (&o["spec"], &o["spec"]["jobTemplate"]["spec"]);
            (
                o["metadata"]["name"].as_str().unwrap().to_string(),
                serde_json::json!({
                    "concurrencyPolicy": spec["concurrencyPolicy"],
                    "startingDeadlineSeconds": spec["startingDeadlineSeconds"],
                    "successfulJobsHistoryLimit": spec["successfulJobsHistoryLimit"],
                    "failedJobsHistoryLimit": spec["failedJobsHistoryLimit"],
                    "activeDeadlineSeconds": job["activeDeadlineSeconds"],
                    "backoffLimit": job["backoffLimit"],
                    "ttlSecondsAfterFinished": job["ttlSecondsAfterFinished"],
                }),
            )
        })
        .collect()
}

#[test]
fn terraform_cronjob_deadlines_are_the_manifests_deadlines() {
    // Seed failure 39: a CronJob with Forbid and no deadline wedges forever; both install paths
    // must give the same deadlines (and history, backoff, TTL) to the same CronJobs.
    let tf = terraform_cronjob_timing();
    let yaml = manifests_cronjob_timing();
    assert_eq!(tf.keys().collect::<Vec<_>>(), [manifests::REPORT_CRONJOB, manifests::DETECTION_CRONJOB]);
    for (name, t) in &tf {
        assert!(t["activeDeadlineSeconds"].as_u64().is_some_and(|s| s > 0), "{name} has no deadline: {t}");
    }
    assert_eq!(tf, yaml, "terraform/main.tf vs manifests");
}
