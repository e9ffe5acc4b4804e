//! Kubernetes release versions (`X.Y.Z`), as kubeadm, kubelet and apt name them.

use std::{fmt, str::FromStr};

/// A Kubernetes release `major.minor.patch`. Parsed with or without a leading `v`
/// (`kubeletVersion` carries one, apt and our env vars do not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

/// Why a version string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid Kubernetes version {input:?}: expected X.Y.Z (an optional leading 'v' is allowed)")]
pub struct VersionError {
    pub input: String,
}

impl Version {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self { major, minor, patch }
    }

    /// `X-Y-Z`, the form used in Job names and label values.
    pub fn label(&self) -> String {
        format!("{}-{}-{}", self.major, self.minor, self.patch)
    }

    /// `X.Y`, the apt repository track (`pkgs.k8s.io/core:/stable:/vX.Y/deb/`).
    pub fn minor_track(&self) -> String {
        format!("{}.{}", self.major, self.minor)
    }

    /// True when `self` and `other` share major and minor.
    pub fn same_minor(&self, other: &Version) -> bool {
        self.major == other.major && self.minor == other.minor
    }
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || VersionError { input: s.to_string() };
        let body = s.strip_prefix('v').unwrap_or(s);
        let mut parts = body.split('.');
        let mut next = || -> Result<u32, VersionError> {
            let p = parts.next().ok_or_else(err)?;
            // Only plain decimal digits: no signs, spaces, or pre-release suffixes; no leading
            // zero, as semver says (`01.34.2` is not a version, QA C).
            if p.is_empty()
                || p.len() > 9
                || !p.bytes().all(|b| b.is_ascii_digit())
                || (p.len() > 1 && p.starts_with('0'))
            {
                return Err(err());
            }
            p.parse().map_err(|_| err())
        };
        let v = Version::new(next()?, next()?, next()?);
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(v)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl serde::Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_and_without_v() {
        assert_eq!("1.34.2".parse::<Version>().unwrap(), Version::new(1, 34, 2));
        assert_eq!("v1.34.2".parse::<Version>().unwrap(), Version::new(1, 34, 2));
        assert_eq!(
            "1.30.0".parse::<Version>().unwrap(),
            Version::new(1, 30, 0),
            "a lone 0 is no leading zero"
        );
    }

    #[test]
    fn refuses_malformed() {
        for bad in [
            "",
            "1.34",
            "1.34.2.1",
            "v",
            "1.x.2",
            "1.34.-2",
            " 1.34.2",
            "1.34.2-rc.1",
            "vv1.2.3",
            "1..2",
            "01.34.2",
            "1.034.2",
            "1.34.02",
            "v1.34.00",
        ] {
            assert!(bad.parse::<Version>().is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn orders_numerically() {
        let a: Version = "1.9.10".parse().unwrap();
        let b: Version = "1.10.2".parse().unwrap();
        assert!(a < b);
        assert!("1.34.10".parse::<Version>().unwrap() > "1.34.9".parse().unwrap());
    }

    #[test]
    fn label_and_track() {
        let v = Version::new(1, 34, 2);
        assert_eq!(v.label(), "1-34-2");
        assert_eq!(v.minor_track(), "1.34");
        assert_eq!(v.to_string(), "1.34.2");
    }
}
