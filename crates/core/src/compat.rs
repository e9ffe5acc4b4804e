//! The compatibility gate of preflight: will the cluster's addons, API clients and container
//! runtime survive the target version? Pure: [`evaluate`] decides from what the shell read.
//!
//! Port of the seed's `compat-gate.py` (seed-system.md §8) with its lessons: addons are checked
//! only on minor jumps (seed failure 31), an unreadable version refuses to upgrade blind, and
//! refusals are classified so that nothing un-actionable pages anyone (seed failure 35):
//! `ACTIONABLE` reasons block (`k8s_upgrade_blocked`), `WAITING` and `PINNED` ones hold
//! (`k8s_upgrade_held`), and held wins when both appear.

use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Serialize};

use crate::version::Version;

/// A `major.minor` pair (`1.36`, `3.30`), compared numerically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Minor(pub u32, pub u32);

impl Minor {
    /// Parses `X.Y`, or the leading `X.Y` of a longer version (`v3.30.2`, `2.0.5-1`).
    pub fn parse_prefix(s: &str) -> Option<Minor> {
        let s = s.trim().trim_start_matches('v');
        let mut it = s.split(|c: char| !c.is_ascii_digit());
        let major = it.next()?.parse().ok()?;
        let rest = &s[s.find('.')? + 1..];
        let minor_digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        Some(Minor(major, minor_digits.parse().ok()?))
    }

    /// Parses exactly `X.Y`.
    pub fn parse_exact(s: &str) -> Result<Minor, String> {
        let bad = || format!("invalid version {s:?}: expected X.Y");
        let (a, b) = s.split_once('.').ok_or_else(bad)?;
        let num = |p: &str| {
            if p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()) || p.len() > 9 {
                Err(bad())
            } else {
                p.parse().map_err(|_| bad())
            }
        };
        Ok(Minor(num(a)?, num(b)?))
    }

    pub fn of(v: Version) -> Minor {
        Minor(v.major, v.minor)
    }
}

impl fmt::Display for Minor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

impl Serialize for Minor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Minor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Minor::parse_exact(&s).map_err(serde::de::Error::custom)
    }
}

/// The compatibility matrix (the seed's `addon-compat.json`), from the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompatSettings {
    /// Addons whose supported Kubernetes range is checked on minor upgrades.
    pub addons: Vec<Addon>,
    /// Minimum containerd `X.Y` per Kubernetes minor.
    pub containerd_min: BTreeMap<Minor, Minor>,
    /// PromQL for deprecated API use; series need `group`, `version`, `resource` and
    /// `removed_release` labels.
    pub deprecated_api_query: String,
}

impl Default for CompatSettings {
    fn default() -> Self {
        Self {
            addons: vec![],
            containerd_min: BTreeMap::from([(Minor(1, 37), Minor(2, 0))]),
            deprecated_api_query: "apiserver_requested_deprecated_apis".into(),
        }
    }
}

/// Kind of the object that runs an addon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddonKind {
    Deployment,
    Daemonset,
    Statefulset,
}

/// One addon of the matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Addon {
    pub name: String,
    pub namespace: String,
    pub kind: AddonKind,
    /// Name of the Deployment / DaemonSet / StatefulSet.
    pub resource: String,
    /// Regex over image references; capture group 1 is the addon's `X.Y`.
    pub image_re: String,
    /// Addon version floor `X.Y` → the highest Kubernetes minor it supports.
    pub max_k8s: BTreeMap<Minor, Minor>,
    /// Held by us on purpose (e.g. a driver coupling): refusals are PINNED, not ACTIONABLE.
    #[serde(default)]
    pub pinned: bool,
    #[serde(default)]
    pub pin_reason: Option<String>,
}

impl CompatSettings {
    /// Checks the regexes compile and have a capture group; the error names the addon.
    pub fn validate(&self) -> Result<(), String> {
        for a in &self.addons {
            let re = regex::Regex::new(&a.image_re)
                .map_err(|e| format!("compat.addons[{}].image_re {:?}: {e}", a.name, a.image_re))?;
            if re.captures_len() < 2 {
                return Err(format!(
                    "compat.addons[{}].image_re {:?} needs a capture group for the version",
                    a.name, a.image_re
                ));
            }
            if a.max_k8s.is_empty() {
                return Err(format!("compat.addons[{}].max_k8s is empty", a.name));
            }
        }
        Ok(())
    }
}

/// How a refusal can be resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Tag {
    /// We can fix it now (upgrade an addon, migrate API clients, upgrade containerd): blocks.
    Actionable,
    /// Nobody can fix it yet (no released addon supports the target): holds quietly.
    Waiting,
    /// We chose to hold it (a pinned addon): holds quietly.
    Pinned,
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tag::Actionable => "ACTIONABLE",
            Tag::Waiting => "WAITING",
            Tag::Pinned => "PINNED",
        })
    }
}

/// One reason the gate refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    pub tag: Tag,
    pub text: String,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.tag, self.text)
    }
}

/// The gate's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", content = "reasons", rename_all = "lowercase")]
pub enum Verdict {
    /// Nothing stands in the way.
    Pass,
    /// Only waiting or pinned reasons, or a mix (held wins): stop quietly.
    Held(Vec<Reason>),
    /// Actionable reasons only: stop and ask for action.
    Blocked(Vec<Reason>),
}

/// A series of `apiserver_requested_deprecated_apis`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeprecatedApi {
    pub group: String,
    pub version: String,
    pub resource: String,
    pub removed_release: Option<String>,
}

/// Everything the gate looks at, gathered by the caller.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    pub target: Version,
    /// The oldest kubelet's minor.
    pub running: Minor,
    /// Per addon (same order as the settings): its image references, or an error reading them.
    pub addon_images: &'a [Result<Vec<String>, String>],
    /// Deprecated API series, or why they could not be read.
    pub deprecated_apis: &'a Result<Vec<DeprecatedApi>, String>,
    /// Per node: name and `containerRuntimeVersion` (`containerd://2.0.5`).
    pub runtimes: &'a [(String, String)],
}

/// Decides. Pure.
pub fn evaluate(settings: &CompatSettings, inputs: &Inputs<'_>) -> Verdict {
    let target = Minor::of(inputs.target);
    let mut reasons = Vec::new();
    let mut push = |tag, text: String| reasons.push(Reason { tag, text });

    // Addons only on minor jumps: a patch stays inside the range the addon already supports.
    if target > inputs.running {
        for (addon, images) in settings.addons.iter().zip(inputs.addon_images) {
            match addon_version(addon, images) {
                Err(why) => push(
                    Tag::Actionable,
                    format!(
                        "{}: could not read running version ({why}) — refusing to upgrade blind",
                        addon.name
                    ),
                ),
                Ok(running_addon) => {
                    if let Some((tag, text)) = check_addon(addon, running_addon, target) {
                        push(tag, text);
                    }
                }
            }
        }
    }

    match inputs.deprecated_apis {
        Err(why) => {
            push(Tag::Actionable, format!("could not query Prometheus ({why}) — refusing to upgrade blind"))
        }
        Ok(series) => {
            for api in series {
                let Some(removed) = api.removed_release.as_deref().and_then(Minor::parse_prefix) else {
                    continue;
                };
                if target >= removed {
                    let group = if api.group.is_empty() { "core" } else { &api.group };
                    push(
                        Tag::Actionable,
                        format!(
                            "deprecated API {group}/{} {} is still requested and is removed in {removed} — migrate callers first",
                            api.version, api.resource
                        ),
                    );
                }
            }
        }
    }

    if let Some(floor) = settings.containerd_min.get(&target) {
        for (node, runtime) in inputs.runtimes {
            let version = runtime.strip_prefix("containerd://").unwrap_or(runtime);
            match Minor::parse_prefix(version) {
                Some(have) if have >= *floor => {}
                _ => push(
                    Tag::Actionable,
                    format!("node {node} containerd {version} < required {floor} for Kubernetes {target}"),
                ),
            }
        }
    }

    reasons.sort_by(|a, b| a.tag.cmp(&b.tag).then_with(|| a.text.cmp(&b.text)));
    reasons.dedup();
    if reasons.is_empty() {
        Verdict::Pass
    } else if reasons.iter().any(|r| r.tag != Tag::Actionable) {
        Verdict::Held(reasons)
    } else {
        Verdict::Blocked(reasons)
    }
}

/// The addon's running `X.Y`: capture group 1 of `image_re` on the first image that matches.
fn addon_version(addon: &Addon, images: &Result<Vec<String>, String>) -> Result<Minor, String> {
    let images = images.as_ref().map_err(Clone::clone)?;
    let re = regex::Regex::new(&addon.image_re).map_err(|e| format!("bad image_re: {e}"))?;
    images
        .iter()
        .find_map(|img| re.captures(img).and_then(|c| c.get(1)).and_then(|m| Minor::parse_prefix(m.as_str())))
        .ok_or_else(|| format!("no image of {:?} matches {:?}", images, addon.image_re))
}

fn check_addon(addon: &Addon, running: Minor, target: Minor) -> Option<(Tag, String)> {
    let Some((floor, ceiling)) = addon.max_k8s.range(..=running).next_back() else {
        return Some((
            Tag::Actionable,
            format!("{} {running} is below the lowest version in the matrix — upgrade it first", addon.name),
        ));
    };
    if target <= *ceiling {
        return None;
    }
    let supported =
        format!("{} {running} (matrix floor {floor}) supports Kubernetes up to {ceiling}", addon.name);
    if addon.pinned {
        let why = addon.pin_reason.as_deref().unwrap_or("no reason recorded");
        return Some((Tag::Pinned, format!("{supported}, target {target}; pinned ({why}); holding")));
    }
    let newer = addon.max_k8s.range(running..).find(|(f, max)| **f > running && **max >= target);
    Some(match newer {
        Some((f, _)) => {
            (Tag::Actionable, format!("{supported}, target {target}: upgrade {} to >= {f}", addon.name))
        }
        None => (
            Tag::Waiting,
            format!("{supported}: no released {} version supports Kubernetes {target} yet", addon.name),
        ),
    })
}

/// `apiserver_requested_deprecated_apis` samples as the gate's input .
pub fn deprecated_apis(samples: &[crate::alerts::Sample]) -> Vec<DeprecatedApi> {
    samples
        .iter()
        .map(|s| {
            let l = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
            DeprecatedApi {
                group: l("group"),
                version: l("version"),
                resource: l("resource"),
                removed_release: s.labels.get("removed_release").filter(|r| !r.is_empty()).cloned(),
            }
        })
        .collect()
}

/// Each node's name and `status.nodeInfo.containerRuntimeVersion` (empty when missing), the
/// runtime input of [`evaluate`].
pub fn runtimes(nodes: &[k8s_openapi::api::core::v1::Node]) -> Vec<(String, String)> {
    nodes
        .iter()
        .map(|n| {
            let rt = n
                .status
                .as_ref()
                .and_then(|s| s.node_info.as_ref())
                .map(|i| i.container_runtime_version.clone())
                .unwrap_or_default();
            (n.metadata.name.clone().unwrap_or_default(), rt)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minor_parsing() {
        assert_eq!(Minor::parse_prefix("v3.30.2"), Some(Minor(3, 30)));
        assert_eq!(Minor::parse_prefix("2.0.5-1"), Some(Minor(2, 0)));
        assert_eq!(Minor::parse_prefix("25.10"), Some(Minor(25, 10)));
        assert_eq!(Minor::parse_prefix("latest"), None);
        assert!(Minor(3, 4) < Minor(3, 30));
        assert!(Minor::parse_exact("1.3x").is_err());
        assert!(Minor::parse_exact("1").is_err());
    }
}
