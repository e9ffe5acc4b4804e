//! Kubernetes' own rules for the names and labels the chain writes or matches, so a value that
//! would make the API refuse an object is refused where it enters.
//!
//! Each `check_*` copies one function of `k8s.io/apimachinery/pkg/util/validation`
//! (`validation.go`) exactly, neither looser nor stricter, and returns the reason a value
//! breaks the rule (upstream's wording), for an error that names the input. [`NodeName`] is a
//! node name that can only hold a valid one.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// `DNS1123LabelMaxLength`: namespaces, Job names, the label part of a subdomain rule.
pub const DNS1123_LABEL_MAX: usize = 63;
/// `DNS1123SubdomainMaxLength`: most object names, node names included.
pub const DNS1123_SUBDOMAIN_MAX: usize = 253;
/// `LabelValueMaxLength`, also the name part of a qualified name (`qualifiedNameMaxLength`).
pub const LABEL_VALUE_MAX: usize = 63;

fn lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `IsDNS1123Label`: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, 1 to 63 characters. What namespaces and
/// Job names must be.
pub fn check_dns_label(s: &str) -> Result<(), String> {
    if s.len() > DNS1123_LABEL_MAX {
        return Err(format!("must be no more than {DNS1123_LABEL_MAX} characters"));
    }
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && lower_alnum(b[0])
        && lower_alnum(b[b.len() - 1])
        && b.iter().all(|&c| lower_alnum(c) || c == b'-');
    if !ok {
        return Err("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', \
                    and must start and end with an alphanumeric character"
            .into());
    }
    Ok(())
}

/// `IsDNS1123Subdomain`: `[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`, at
/// most 253 characters. What most object names, node names included, must be. Unlike a DNS
/// hostname, a part between dots may be longer than 63 characters: upstream checks only the
/// total length.
pub fn check_dns_subdomain(s: &str) -> Result<(), String> {
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        return Err(format!("must be no more than {DNS1123_SUBDOMAIN_MAX} characters"));
    }
    let ok = !s.is_empty()
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && lower_alnum(b[0])
                && lower_alnum(b[b.len() - 1])
                && b.iter().all(|&c| lower_alnum(c) || c == b'-')
        });
    if !ok {
        return Err("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
                    '-' or '.', and must start and end with an alphanumeric character"
            .into());
    }
    Ok(())
}

/// `(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?`: the shape of label values and of the name
/// part of qualified names.
fn qualified_shape(s: &str) -> bool {
    let b = s.as_bytes();
    b.is_empty()
        || (b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')))
}

/// `IsValidLabelValue`: empty, or at most 63 alphanumerics, `-`, `_` and `.`, starting and
/// ending alphanumeric.
pub fn check_label_value(v: &str) -> Result<(), String> {
    if v.len() > LABEL_VALUE_MAX {
        return Err(format!("must be no more than {LABEL_VALUE_MAX} characters"));
    }
    if !qualified_shape(v) {
        return Err("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' \
                    or '.', and must start and end with an alphanumeric character"
            .into());
    }
    Ok(())
}

/// `IsQualifiedName`: `[prefix/]name`, the prefix a DNS-1123 subdomain, the name 1 to 63
/// alphanumerics, `-`, `_` and `.`, starting and ending alphanumeric. What label and
/// annotation keys and toleration keys must be.
pub fn check_qualified_name(k: &str) -> Result<(), String> {
    let parts: Vec<&str> = k.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                return Err("prefix part must be non-empty".into());
            }
            check_dns_subdomain(prefix).map_err(|r| format!("prefix part {r}"))?;
            name
        }
        _ => {
            return Err(
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must \
                        start and end with an alphanumeric character, with an optional DNS subdomain \
                        prefix and '/'"
                    .into(),
            );
        }
    };
    if name.is_empty() {
        return Err("name part must be non-empty".into());
    }
    if name.len() > LABEL_VALUE_MAX {
        return Err(format!("name part must be no more than {LABEL_VALUE_MAX} characters"));
    }
    if !qualified_shape(name) {
        return Err(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and \
                    end with an alphanumeric character"
                .into(),
        );
    }
    Ok(())
}

/// A label key: a qualified name ([`check_qualified_name`]).
pub fn check_label_key(k: &str) -> Result<(), String> {
    check_qualified_name(k)
}

/// How much of a value an error message quotes before it is cut.
pub const SHOWN_MAX: usize = 80;

/// A value as an error message quotes it: the whole of a short value, the first
/// [`SHOWN_MAX`] characters of a long one and how many more there were (cut at a character
/// boundary). Quoted with `{:?}`, so control characters are escaped.
pub fn shorten(value: &str) -> String {
    match value.char_indices().nth(SHOWN_MAX) {
        None => format!("{value:?}"),
        Some((cut, _)) => {
            let more = value[cut..].chars().count();
            format!("{:?}… ({more} more characters)", &value[..cut])
        }
    }
}

/// How much of a parser's message an error keeps (parsers quote the value they refused).
pub const MESSAGE_MAX: usize = 400;

/// A parser's message, cut after [`MESSAGE_MAX`] characters (at a character boundary) with
/// how many more there were: a 100 KB value must not become a 100 KB error.
pub fn shorten_message(message: &str) -> String {
    match message.char_indices().nth(MESSAGE_MAX) {
        None => message.to_string(),
        Some((cut, _)) => {
            format!("{}… ({} more characters)", &message[..cut], message[cut..].chars().count())
        }
    }
}

/// A node name: a DNS-1123 subdomain (`metadata.name` of a Node), checked when built. The
/// chain's node phases, `drain`, `uncordon` and `render --run-on` take one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct NodeName(String);

impl NodeName {
    /// Checks `s` by Kubernetes' rule for node names ([`check_dns_subdomain`]).
    pub fn parse(s: &str) -> Result<Self, String> {
        check_dns_subdomain(s)?;
        Ok(Self(s.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl FromStr for NodeName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for NodeName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<NodeName> for String {
    fn from(n: NodeName) -> String {
        n.0
    }
}

impl<'de> Deserialize<'de> for NodeName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s)
            .map_err(|r| serde::de::Error::custom(format!("invalid node name {}: {r}", shorten(&s))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomain_is_upstreams_rule() {
        for ok in ["a", "k8s-node1", "k8s-node1.example.com", "0", "a--b", "1.2.3.4", &"a".repeat(253)] {
            assert!(check_dns_subdomain(ok).is_ok(), "{ok}");
        }
        // A part longer than 63 is fine: upstream checks only the total length.
        assert!(check_dns_subdomain(&format!("{}.example", "a".repeat(100))).is_ok());
        for bad in ["", "-a", "a-", "A", "a_b", "a..b", ".a", "a.", "é", "a b", &"a".repeat(254), "a.-b"] {
            assert!(check_dns_subdomain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_rules() {
        assert!(check_dns_label(&"a".repeat(63)).is_ok());
        assert!(check_dns_label(&"a".repeat(64)).is_err());
        assert!(check_dns_label("a.b").is_err());
        assert!(check_label_value("").is_ok());
        assert!(check_label_value("A_b.c-D").is_ok());
        assert!(check_label_value("_a").is_err());
        assert!(check_label_value(&"a".repeat(64)).is_err());
    }

    #[test]
    fn qualified_names() {
        for ok in ["a", "node-role.kubernetes.io/control-plane", "example.com/A_b", "nvidia.com/gpu"] {
            assert!(check_qualified_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/a", "a/", "a/b/c", "Example.com/a", "a b", "-a", &"a".repeat(64)] {
            assert!(check_qualified_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shorten_cuts_long_values_on_a_character_boundary() {
        assert_eq!(shorten("abc"), "\"abc\"");
        let long = format!("{}é{}", "a".repeat(79), "b".repeat(40));
        let s = shorten(&long);
        assert!(s.starts_with(&format!("\"{}é\"", "a".repeat(79))), "{s}");
        assert!(s.ends_with("(40 more characters)"), "{s}");
    }

    #[test]
    fn shorten_message_keeps_short_messages_and_cuts_long_ones_on_a_character_boundary() {
        assert_eq!(shorten_message("bad port"), "bad port");
        let exact = "m".repeat(MESSAGE_MAX);
        assert_eq!(shorten_message(&exact), exact);
        let long = format!("{}é{}", "a".repeat(MESSAGE_MAX - 1), "b".repeat(1000));
        let s = shorten_message(&long);
        assert!(s.starts_with(&format!("{}é…", "a".repeat(MESSAGE_MAX - 1))), "{s}");
        assert!(s.ends_with("(1000 more characters)"), "{s}");
    }
}
