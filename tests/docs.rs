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
