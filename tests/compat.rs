//! The compatibility gate, on the seed's own matrix (examples/config.yaml) and edge cases.

use chain_core::{
    compat::{DeprecatedApi, Inputs, Minor, Tag, Verdict, evaluate},
    settings::Settings,
    version::Version,
};

fn example() -> Settings {
    k8s_upgrade_chain::config::load(std::path::Path::new("examples/config.yaml")).unwrap()
}

fn v(s: &str) -> Version {
    s.parse().unwrap()
}

/// The seed cluster's running addons (calico 3.30, ESO 2.6, kyverno 1.18, gpu-operator 25.10).
fn seed_images() -> Vec<Result<Vec<String>, String>> {
    vec![
        Ok(vec!["quay.io/calico/node:v3.30.2".into()]),
        Ok(vec!["ghcr.io/external-secrets/external-secrets:v2.6.0".into()]),
        Ok(vec!["reg.example/kyverno/kyverno:v1.18.1".into()]),
        Ok(vec!["nvcr.io/nvidia/gpu-operator:v25.10.0".into()]),
    ]
}

fn runtimes(v: &str) -> Vec<(String, String)> {
    vec![
        ("k8s-master".into(), format!("containerd://{v}")),
        ("k8s-node1".into(), format!("containerd://{v}")),
    ]
}

fn run(
    target: &str,
    running: Minor,
    images: &[Result<Vec<String>, String>],
    apis: Result<Vec<DeprecatedApi>, String>,
    rt: &[(String, String)],
) -> Verdict {
    let s = example();
    evaluate(
        &s.compat,
        &Inputs { target: v(target), running, addon_images: images, deprecated_apis: &apis, runtimes: rt },
    )
}

fn tags(verdict: &Verdict) -> Vec<(Tag, String)> {
    match verdict {
        Verdict::Pass => vec![],
        Verdict::Held(r) | Verdict::Blocked(r) => r.iter().map(|r| (r.tag, r.text.clone())).collect(),
    }
}

#[test]
fn seed_matrix_regression_for_a_1_36_jump() {
    // Calico can be upgraded (3.32 supports 1.36): ACTIONABLE. ESO and kyverno have no release
    // for 1.36: WAITING. gpu-operator is pinned: PINNED. Held wins.
    let verdict = run("1.36.0", Minor(1, 35), &seed_images(), Ok(vec![]), &runtimes("2.0.5"));
    let t = tags(&verdict);
    assert!(matches!(verdict, Verdict::Held(_)), "{verdict:?}");
    let find = |name: &str| {
        t.iter().find(|(_, text)| text.starts_with(name)).unwrap_or_else(|| panic!("{name} in {t:?}"))
    };
    assert_eq!(find("calico").0, Tag::Actionable);
    assert!(find("calico").1.contains("upgrade calico to >= 3.32"), "{t:?}");
    assert_eq!(find("external-secrets").0, Tag::Waiting);
    assert_eq!(find("kyverno").0, Tag::Waiting);
    assert_eq!(find("gpu-operator").0, Tag::Pinned);
    assert!(find("gpu-operator").1.contains("NVIDIA driver"), "{t:?}");
}

#[test]
fn patches_skip_the_addon_check() {
    // Seed failure 31: a patch was blocked by an addon ceiling below the running minor.
    let images = vec![Err("gone".to_string()); 4];
    assert_eq!(run("1.35.4", Minor(1, 35), &images, Ok(vec![]), &runtimes("2.0.5")), Verdict::Pass);
    // A target below or at the running minor never checks addons either.
    assert_eq!(run("1.35.0", Minor(1, 35), &seed_images(), Ok(vec![]), &runtimes("1.7.2")), Verdict::Pass);
}

#[test]
fn a_supported_minor_passes() {
    assert_eq!(run("1.35.0", Minor(1, 34), &seed_images(), Ok(vec![]), &runtimes("2.0.5")), Verdict::Pass);
}

#[test]
fn unreadable_addon_version_refuses_blind_on_minor_jumps() {
    let mut images = seed_images();
    images[0] = Ok(vec!["quay.io/calico/node:latest".into()]);
    images[1] = Err("deployment external-secrets/external-secrets not found".into());
    let verdict = run("1.35.0", Minor(1, 34), &images, Ok(vec![]), &runtimes("2.0.5"));
    let t = tags(&verdict);
    assert!(matches!(verdict, Verdict::Blocked(_)), "{verdict:?}");
    assert_eq!(t.len(), 2);
    assert!(
        t.iter().all(|(tag, text)| *tag == Tag::Actionable && text.contains("refusing to upgrade blind"))
    );
}

#[test]
fn addon_below_the_matrix_is_actionable() {
    let mut images = seed_images();
    images[0] = Ok(vec!["quay.io/calico/node:v3.20.0".into()]);
    let t = tags(&run("1.35.0", Minor(1, 34), &images, Ok(vec![]), &runtimes("2.0.5")));
    assert!(t[0].1.contains("below the lowest version in the matrix"), "{t:?}");
}

#[test]
fn deprecated_apis_removed_in_the_target_block_even_for_patches() {
    let apis = vec![
        DeprecatedApi {
            group: "flowcontrol.apiserver.k8s.io".into(),
            version: "v1beta3".into(),
            resource: "flowschemas".into(),
            removed_release: Some("1.32".into()),
        },
        DeprecatedApi {
            group: "".into(),
            version: "v1".into(),
            resource: "componentstatuses".into(),
            removed_release: None,
        },
        DeprecatedApi {
            group: "batch".into(),
            version: "v1beta1".into(),
            resource: "cronjobs".into(),
            removed_release: Some("1.40".into()),
        },
    ];
    let verdict = run("1.35.1", Minor(1, 35), &seed_images(), Ok(apis), &runtimes("2.0.5"));
    let t = tags(&verdict);
    assert!(matches!(verdict, Verdict::Blocked(_)));
    assert_eq!(t.len(), 1, "{t:?}");
    assert!(t[0].1.contains("flowcontrol.apiserver.k8s.io/v1beta3 flowschemas"), "{t:?}");

    let verdict =
        run("1.35.1", Minor(1, 35), &seed_images(), Err("connection refused".into()), &runtimes("2.0.5"));
    assert!(tags(&verdict)[0].1.contains("could not query Prometheus"));
    assert!(matches!(verdict, Verdict::Blocked(_)));
}

#[test]
fn containerd_minimum_per_target_minor() {
    let rt = vec![
        ("k8s-master".to_string(), "containerd://2.0.5".to_string()),
        ("k8s-node1".to_string(), "containerd://1.7.27".to_string()),
        ("k8s-node2".to_string(), "cri-o://1.30".to_string()),
    ];
    let s = example();
    let images: Vec<Result<Vec<String>, String>> = Vec::new();
    let mut compat = s.compat.clone();
    compat.addons.clear();
    let verdict = evaluate(
        &compat,
        &Inputs {
            target: v("1.37.0"),
            running: Minor(1, 37),
            addon_images: &images,
            deprecated_apis: &Ok(vec![]),
            runtimes: &rt,
        },
    );
    let t = tags(&verdict);
    assert_eq!(t.len(), 2, "{t:?}");
    assert!(t.iter().any(|(_, x)| x.contains("k8s-node1 containerd 1.7.27 < required 2.0")));
    assert!(t.iter().any(|(_, x)| x.contains("k8s-node2")), "an unparsable runtime fails safe");
    // 1.36 has no floor in the matrix.
    let verdict = evaluate(
        &compat,
        &Inputs {
            target: v("1.36.0"),
            running: Minor(1, 36),
            addon_images: &images,
            deprecated_apis: &Ok(vec![]),
            runtimes: &rt,
        },
    );
    assert_eq!(verdict, Verdict::Pass);
}

#[test]
fn bad_matrix_is_a_config_error() {
    let e = Settings::from_yaml("compat:\n  addons:\n    - {name: x, namespace: a, kind: deployment, resource: r, image_re: 'x:v\\d+', max_k8s: {\"1.0\": \"1.30\"}}\n", "t.yaml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("capture group"), "{e}");
    let e = Settings::from_yaml("compat:\n  containerd_min: {\"1.37\": \"two\"}\n", "t.yaml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("compat.containerd_min") && e.contains("two"), "{e}");
}
