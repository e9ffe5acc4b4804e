//! The in-flight record on the tool's namespace: when the chain started, its target and the
//! etcd snapshot path, as three annotations written and removed together in one merge patch.
//!
//! `kubectl describe ns k8s-upgrade` then shows what is in flight, and the detector's leaked-latch
//! reconcile can clear it. Keys are `<prefix>in-flight`, `<prefix>target` and
//! `<prefix>snapshot-path`; the prefix is a setting (default `k8s-upgrade-chain/`; the seed used
//! `viktorbarzin.me/k8s-upgrade-`).

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::version::Version;

/// Default annotation key prefix.
pub const DEFAULT_PREFIX: &str = "k8s-upgrade-chain/";

/// Annotation settings (`annotations:` in the config file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnnotationsConfig {
    /// Key prefix, e.g. `example.com/k8s-upgrade-`. Default [`DEFAULT_PREFIX`].
    pub prefix: String,
}

impl Default for AnnotationsConfig {
    fn default() -> Self {
        Self { prefix: DEFAULT_PREFIX.into() }
    }
}

/// The three keys for a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// `<prefix>in-flight`: RFC 3339 start time.
    pub in_flight: String,
    /// `<prefix>target`: target version `X.Y.Z`.
    pub target: String,
    /// `<prefix>snapshot-path`: etcd snapshot path (empty until taken).
    pub snapshot_path: String,
}

impl Keys {
    /// The keys under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self {
            in_flight: format!("{prefix}in-flight"),
            target: format!("{prefix}target"),
            snapshot_path: format!("{prefix}snapshot-path"),
        }
    }
}

/// What is in flight, as recorded on the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    /// When the chain started.
    pub since: Timestamp,
    /// The target version.
    pub target: Version,
    /// The etcd snapshot path, once taken.
    pub snapshot_path: Option<String>,
}

/// The namespace's annotations could not be read as an in-flight record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// Some of the keys are present and others not (written by hand, or a foreign writer).
    #[error("namespace annotations are incomplete: {present} is set but {missing} is not")]
    Partial {
        /// A key that is present.
        present: String,
        /// A required key that is missing.
        missing: String,
    },
    /// A value does not parse.
    #[error("namespace annotation {key}={value:?} is invalid: {message}")]
    Invalid {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Why.
        message: String,
    },
}

/// Pure: the merge patch that sets all three annotations.
pub fn set_patch(keys: &Keys, record: &InFlight) -> serde_json::Value {
    serde_json::json!({ "metadata": { "annotations": {
        keys.in_flight.clone(): record.since.to_string(),
        keys.target.clone(): record.target.to_string(),
        keys.snapshot_path.clone(): record.snapshot_path.clone().unwrap_or_default(),
    }}})
}

/// Pure: the merge patch that removes all three (a JSON merge patch deletes keys set to null).
pub fn clear_patch(keys: &Keys) -> serde_json::Value {
    serde_json::json!({ "metadata": { "annotations": {
        keys.in_flight.clone(): null,
        keys.target.clone(): null,
        keys.snapshot_path.clone(): null,
    }}})
}

/// Pure: reads the record from a namespace's annotations. `Ok(None)` when none of the keys is
/// set; an error when only some are, or a value does not parse.
pub fn parse(keys: &Keys, annotations: &BTreeMap<String, String>) -> Result<Option<InFlight>, ParseError> {
    let get = |k: &String| annotations.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let (since, target) = match (get(&keys.in_flight), get(&keys.target)) {
        (None, None) => {
            return match get(&keys.snapshot_path) {
                None => Ok(None),
                Some(_) => Err(ParseError::Partial {
                    present: keys.snapshot_path.clone(),
                    missing: keys.in_flight.clone(),
                }),
            };
        }
        (Some(_), None) => {
            return Err(ParseError::Partial {
                present: keys.in_flight.clone(),
                missing: keys.target.clone(),
            });
        }
        (None, Some(_)) => {
            return Err(ParseError::Partial {
                present: keys.target.clone(),
                missing: keys.in_flight.clone(),
            });
        }
        (Some(s), Some(t)) => (s, t),
    };
    let invalid = |key: &String, value: &str, message: String| ParseError::Invalid {
        key: key.clone(),
        value: value.to_string(),
        message,
    };
    let since: Timestamp =
        since.parse().map_err(|e: jiff::Error| invalid(&keys.in_flight, since, e.to_string()))?;
    let target: Version = target
        .parse()
        .map_err(|e: crate::version::VersionError| invalid(&keys.target, target, e.to_string()))?;
    Ok(Some(InFlight { since, target, snapshot_path: get(&keys.snapshot_path).map(String::from) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new(DEFAULT_PREFIX)
    }

    fn record() -> InFlight {
        InFlight {
            since: "2026-11-21T10:00:00Z".parse().unwrap(),
            target: "1.34.2".parse().unwrap(),
            snapshot_path: Some("/var/backups/etcd/pre-1-34-2.db".into()),
        }
    }

    fn annotations_of(patch: &serde_json::Value) -> BTreeMap<String, String> {
        serde_json::from_value(patch["metadata"]["annotations"].clone()).unwrap()
    }

    #[test]
    fn keys_follow_the_prefix() {
        let k = Keys::new("example.com/k8s-upgrade-");
        assert_eq!(k.in_flight, "example.com/k8s-upgrade-in-flight");
        assert_eq!(k.target, "example.com/k8s-upgrade-target");
        assert_eq!(k.snapshot_path, "example.com/k8s-upgrade-snapshot-path");
    }

    #[test]
    fn set_patch_writes_all_three_and_reads_back() {
        let patch = set_patch(&keys(), &record());
        let ann = annotations_of(&patch);
        assert_eq!(ann["k8s-upgrade-chain/in-flight"], "2026-11-21T10:00:00Z");
        assert_eq!(ann["k8s-upgrade-chain/target"], "1.34.2");
        assert_eq!(parse(&keys(), &ann), Ok(Some(record())));
    }

    #[test]
    fn no_snapshot_yet_writes_an_empty_path() {
        let r = InFlight { snapshot_path: None, ..record() };
        let ann = annotations_of(&set_patch(&keys(), &r));
        assert_eq!(ann["k8s-upgrade-chain/snapshot-path"], "");
        assert_eq!(parse(&keys(), &ann), Ok(Some(r)));
    }

    #[test]
    fn clear_patch_nulls_all_three() {
        let patch = clear_patch(&keys());
        let ann = patch["metadata"]["annotations"].as_object().unwrap();
        assert_eq!(ann.len(), 3);
        assert!(ann.values().all(serde_json::Value::is_null));
    }

    #[test]
    fn absent_is_none_and_other_annotations_are_ignored() {
        let ann = BTreeMap::from([("unrelated".to_string(), "x".to_string())]);
        assert_eq!(parse(&keys(), &ann), Ok(None));
    }

    #[test]
    fn partial_or_invalid_records_are_errors_naming_the_key() {
        let only_target = BTreeMap::from([("k8s-upgrade-chain/target".to_string(), "1.34.2".to_string())]);
        let err = parse(&keys(), &only_target).unwrap_err();
        assert!(err.to_string().contains("k8s-upgrade-chain/in-flight"), "{err}");
        let only_path = BTreeMap::from([("k8s-upgrade-chain/snapshot-path".to_string(), "/x".to_string())]);
        assert!(matches!(parse(&keys(), &only_path), Err(ParseError::Partial { .. })));
        let mut bad = annotations_of(&set_patch(&keys(), &record()));
        bad.insert("k8s-upgrade-chain/in-flight".into(), "yesterday".into());
        let err = parse(&keys(), &bad).unwrap_err();
        assert!(
            matches!(&err, ParseError::Invalid { key, .. } if key == "k8s-upgrade-chain/in-flight"),
            "{err}"
        );
        let mut bad = annotations_of(&set_patch(&keys(), &record()));
        bad.insert("k8s-upgrade-chain/target".into(), "latest".into());
        assert!(matches!(parse(&keys(), &bad), Err(ParseError::Invalid { .. })));
    }
}
