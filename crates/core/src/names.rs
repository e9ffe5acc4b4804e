//! Kubernetes' own rules for the names and labels the chain writes or matches, so a value that
//! would make the API refuse an object is refused where it enters.
//!
//! Each returns the reason a value breaks the rule, for an error that names the input.

/// RFC 1123 label: what namespaces and Job names must be.
pub fn check_dns_label(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err("must be 1 to 63 characters".into());
    }
    if !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || s.starts_with('-')
        || s.ends_with('-')
    {
        return Err("must be lowercase letters, digits and '-', starting and ending alphanumeric".into());
    }
    Ok(())
}

/// RFC 1123 subdomain: what most object names (and node names) must be.
pub fn check_dns_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err("must be 1 to 253 characters".into());
    }
    for part in s.split('.') {
        check_dns_label(part).map_err(|_| {
            "must be lowercase letters, digits, '-' and '.', each part starting and ending alphanumeric"
                .to_string()
        })?;
    }
    Ok(())
}

pub fn check_label_value(v: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if v.len() > 63
        || !v.chars().all(ok_char)
        || v.starts_with(|c: char| !c.is_ascii_alphanumeric())
        || v.ends_with(|c: char| !c.is_ascii_alphanumeric())
    {
        return Err(format!("label value {v:?} is not valid (at most 63 alphanumerics, '-', '_', '.')"));
    }
    Ok(())
}

pub fn check_label_key(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        check_dns_subdomain(p).map_err(|r| format!("label key prefix {p:?} {r}"))?;
    }
    if name.is_empty() {
        return Err(format!("label key {k:?} has an empty name"));
    }
    check_label_value(name).map_err(|_| format!("label key name {name:?} is not valid"))
}
