//! The object validation clients most often trip over: names and label syntax (apimachinery
//! validation), with the upstream messages (Kubernetes 1.33 wording: "characters").

use serde_json::Value;

/// One field error: (field path, detail such as `Invalid value: "x": must be ...`).
pub(crate) type FieldError = (String, String);

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

fn alnum_lower(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| alnum_lower(c) || c == '-')
        && s.starts_with(alnum_lower)
        && s.ends_with(alnum_lower)
}

fn dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(dns_label)
}

fn label_value_ok(v: &str) -> bool {
    v.is_empty()
        || (v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

fn invalid(value: &str, why: &str) -> String {
    format!("Invalid value: {value:?}: {why}")
}

/// `metadata.name` for a resource (namespaces: RFC 1123 label; services: DNS-1035 label;
/// anything else: RFC 1123 subdomain).
pub(crate) fn name(plural: &str, name: &str) -> Vec<FieldError> {
    let f = "metadata.name".to_string();
    let mut out = Vec::new();
    match plural {
        "namespaces" => {
            if name.len() > 63 {
                out.push((f.clone(), invalid(name, "must be no more than 63 characters")));
            }
            if !dns_label(name) {
                out.push((f, invalid(name, LABEL_MSG)));
            }
        }
        "services" => {
            if name.len() > 63 {
                out.push((f.clone(), invalid(name, "must be no more than 63 characters")));
            }
            if !dns_label(name) || !name.starts_with(|c: char| c.is_ascii_lowercase()) {
                out.push((f, invalid(name, DNS1035_MSG)));
            }
        }
        "events" => {}
        _ => {
            if name.len() > 253 {
                out.push((f.clone(), invalid(name, "must be no more than 253 characters")));
            }
            if !dns_subdomain(name) {
                out.push((f, invalid(name, SUBDOMAIN_MSG)));
            }
        }
    }
    out
}

/// A label map at `field` (`metadata.labels`, `spec.template.labels`).
pub(crate) fn labels(field: &str, labels: Option<&Value>) -> Vec<FieldError> {
    let mut out = Vec::new();
    let Some(m) = labels.and_then(Value::as_object) else {
        return out;
    };
    for (k, v) in m {
        let (prefix, key_name) = match k.split_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, k.as_str()),
        };
        if let Some(p) = prefix
            && (!dns_subdomain(p) || p.len() > 253)
        {
            out.push((field.to_string(), invalid(k, &format!("prefix part {SUBDOMAIN_MSG}"))));
        }
        if key_name.is_empty() || key_name.len() > 63 || !label_value_ok(key_name) {
            let why = if key_name.len() > 63 {
                "name part must be no more than 63 characters".to_string()
            } else {
                QUALIFIED_NAME_MSG.to_string()
            };
            out.push((field.to_string(), invalid(k, &why)));
        }
        let v = v.as_str().unwrap_or_default();
        if v.len() > 63 {
            out.push((field.to_string(), invalid(v, "must be no more than 63 characters")));
        }
        if !label_value_ok(v) {
            out.push((field.to_string(), invalid(v, LABEL_VALUE_MSG)));
        }
    }
    out
}

/// Everything checked for an object of this resource.
pub(crate) fn object(plural: &str, obj: &Value) -> Vec<FieldError> {
    let n = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let mut errs = name(plural, n);
    errs.extend(labels("metadata.labels", obj.pointer("/metadata/labels")));
    for (ptr, field) in [
        ("/spec/template/metadata/labels", "spec.template.labels"),
        ("/spec/jobTemplate/spec/template/metadata/labels", "spec.jobTemplate.spec.template.labels"),
    ] {
        errs.extend(labels(field, obj.pointer(ptr)));
    }
    // ToAggregate drops duplicate messages.
    let mut seen = Vec::new();
    errs.retain(|e| {
        if seen.contains(e) {
            false
        } else {
            seen.push(e.clone());
            true
        }
    });
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names() {
        assert!(name("pods", "web-1.a").is_empty());
        assert_eq!(name("pods", "Web").len(), 1);
        assert_eq!(name("namespaces", "a.b").len(), 1);
        assert_eq!(name("services", "1abc").len(), 1);
        assert_eq!(name("jobs", &"a".repeat(254)).len(), 1);
    }

    #[test]
    fn label_rules() {
        assert!(
            labels("metadata.labels", Some(&json!({"app.kubernetes.io/name": "web", "x": ""}))).is_empty()
        );
        let long = "a".repeat(64);
        let e = labels("spec.template.labels", Some(&json!({"job-name": long})));
        assert_eq!(e[0].1, format!("Invalid value: \"{long}\": must be no more than 63 characters"));
        assert_eq!(labels("metadata.labels", Some(&json!({"a": "-x"}))).len(), 1);
        assert_eq!(labels("metadata.labels", Some(&json!({"Bad_/x": "y"}))).len(), 1);
    }
}
