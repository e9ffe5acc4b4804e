//! Container image references, checked by the grammar the kubelet pulls with.
//!
//! The apiserver only refuses an empty image or one with surrounding whitespace; a reference
//! it accepts but the kubelet cannot parse leaves the Job's pod in `InvalidImageName` for as long
//! as nobody looks. So a reference is checked here by the grammar of the kubelet's parser,
//! `github.com/distribution/reference` (`regexp.go`, `ParseNormalizedNamed`): an optional
//! registry host and port, a lowercase repository path, an optional tag and an optional
//! digest, and at most 255 characters of name.

use std::{fmt, str::FromStr, sync::LazyLock};

use regex::Regex;
use serde::{Deserialize, Serialize};

/// `NameTotalLengthMax` of distribution/reference.
pub const NAME_MAX: usize = 255;

/// `ReferenceRegexp` of distribution/reference, anchored; groups: 1 name, 2 tag, 3 digest.
static REFERENCE: LazyLock<Regex> = LazyLock::new(|| {
    let alphanumeric = "[a-z0-9]+";
    let separator = "(?:[._]|__|[-]+)";
    let path_component = format!("{alphanumeric}(?:{separator}{alphanumeric})*");
    let domain_component = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
    let ipv6 = r"\[(?:[a-fA-F0-9:]+)\]";
    let domain_name = format!(r"{domain_component}(?:\.{domain_component})*");
    let host = format!("(?:{domain_name}|{ipv6})");
    let domain_and_port = format!("{host}(?::[0-9]+)?");
    let name = format!("(?:{domain_and_port}/)?{path_component}(?:/{path_component})*");
    // Go's `\w` is ASCII (RE2); the regex crate's is Unicode, so the class is spelled out.
    let tag = "[0-9A-Za-z_][0-9A-Za-z_.-]{0,127}";
    let digest = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][[:xdigit:]]{32,}";
    Regex::new(&format!("^({name})(?::({tag}))?(?:@({digest}))?$")).expect("the reference grammar compiles")
});

/// A container image reference the kubelet can pull, e.g.
/// `ghcr.io/k8s-upgrade-chain/k8s-upgrade-chain:0.1.0` or `registry:5000/tool@sha256:…`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ImageRef(String);

impl ImageRef {
    /// Checks `s`; the error says what is wrong (not the value: the caller names the input).
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        if s.trim() != s {
            return Err("must not have leading or trailing whitespace".into());
        }
        let Some(c) = REFERENCE.captures(s) else {
            return Err("is not an image reference ([registry[:port]/]repository[:tag][@digest], the \
                        repository in lower case)"
                .into());
        };
        let name = c.get(1).map_or("", |m| m.as_str());
        if name.len() > NAME_MAX {
            return Err(format!("repository name must not be longer than {NAME_MAX} characters"));
        }
        // ParseNormalizedNamed: a bare 64-hex name is an image ID, not a name.
        if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("is an image ID (64 hex digits), not a repository name".into());
        }
        Ok(Self(s.to_string()))
    }

    /// The reference.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ImageRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ImageRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(|r| {
            serde::de::Error::custom(format!("invalid image {}: {r}", crate::names::shorten(&s)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_the_kubelet_pulls() {
        for ok in [
            crate::DEFAULT_IMAGE,
            "busybox",
            "library/busybox:1.36",
            "registry.local/k8s-upgrade-chain:test",
            "localhost:5000/a/b_c__d-e:v1.2.3-rc.1",
            "[::1]:5000/tool:1",
            "Registry.Example.COM/tool:1",
            "ghcr.io/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "ghcr.io/a/b:1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(ImageRef::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_what_the_kubelet_cannot_pull() {
        for bad in [
            "",
            " busybox",
            "busybox ",
            "Busybox",
            "a b",
            "busybox:",
            "busybox:-1",
            "-busybox",
            "busybox@sha256:abc",
            "a//b",
            "busybox:tag:tag",
            &format!("{}:1", "a".repeat(256)),
            &format!("busybox:{}", "t".repeat(129)),
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?}");
        }
    }
}
