//! Label selectors (apimachinery string syntax and `metav1.LabelSelector` objects) and field
//! selectors.

use serde_json::Value;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
    Gt(String, i64),
    Lt(String, i64),
}

/// A parsed label selector: all requirements must hold (an empty one matches everything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LabelSelector(pub Vec<Req>);

impl LabelSelector {
    /// Parses `a=b,c!=d,e in (x,y),f notin (z),g,!h,i>3`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for term in split_top_level(s) {
            let t = term.trim();
            if t.is_empty() {
                continue;
            }
            reqs.push(parse_req(t)?);
        }
        Ok(Self(reqs))
    }

    /// Builds the selector a `metav1.LabelSelector` object means (`matchLabels` + `matchExpressions`).
    /// Returns `None` for a null selector.
    pub fn from_object(v: &Value) -> Result<Option<Self>, String> {
        if v.is_null() {
            return Ok(None);
        }
        let mut reqs = Vec::new();
        if let Some(m) = v.get("matchLabels").and_then(Value::as_object) {
            for (k, val) in m {
                reqs.push(Req::Eq(k.clone(), val.as_str().unwrap_or_default().to_string()));
            }
        }
        if let Some(exprs) = v.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e.get("key").and_then(Value::as_str).unwrap_or_default().to_string();
                let values: Vec<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
                    .unwrap_or_default();
                let op = e.get("operator").and_then(Value::as_str).unwrap_or_default();
                reqs.push(match op {
                    "In" => Req::In(key, values),
                    "NotIn" => Req::NotIn(key, values),
                    "Exists" => Req::Exists(key),
                    "DoesNotExist" => Req::NotExists(key),
                    other => {
                        return Err(format!("{other:?} is not a valid label selector operator"));
                    }
                });
            }
        }
        Ok(Some(Self(reqs)))
    }

    /// Whether the labels (`metadata.labels` object or null) satisfy every requirement.
    pub fn matches(&self, labels: Option<&Value>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::NotEq(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
            Req::Gt(k, n) => get(k).and_then(|x| x.parse::<i64>().ok()).is_some_and(|x| x > *n),
            Req::Lt(k, n) => get(k).and_then(|x| x.parse::<i64>().ok()).is_some_and(|x| x < *n),
        })
    }

    /// Renders the selector in string syntax (used by the scale subresource's `status.selector`).
    pub fn render(&self) -> String {
        self.0
            .iter()
            .map(|r| match r {
                Req::Eq(k, v) => format!("{k}={v}"),
                Req::NotEq(k, v) => format!("{k}!={v}"),
                Req::In(k, vs) => format!("{k} in ({})", vs.join(",")),
                Req::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
                Req::Exists(k) => k.clone(),
                Req::NotExists(k) => format!("!{k}"),
                Req::Gt(k, n) => format!("{k}>{n}"),
                Req::Lt(k, n) => format!("{k}<{n}"),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 317
        && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn parse_req(t: &str) -> Result<Req, String> {
    let bad = || {
        format!(
            "unable to parse requirement: found '{t}', expected: key, '!', 'in', 'notin', '=', '==', '!=', 'gt', 'lt'"
        )
    };
    if let Some(k) = t.strip_prefix('!') {
        let k = k.trim();
        return if valid_key(k) { Ok(Req::NotExists(k.into())) } else { Err(bad()) };
    }
    for (op, ctor) in [("!=", Req::NotEq as fn(String, String) -> Req), ("==", Req::Eq), ("=", Req::Eq)] {
        if let Some((k, v)) = t.split_once(op) {
            let (k, v) = (k.trim(), v.trim());
            if !valid_key(k) || v.contains(['=', '!', '(', ')', ' ']) {
                return Err(bad());
            }
            return Ok(ctor(k.into(), v.into()));
        }
    }
    for (op, gt) in [(">", true), ("<", false)] {
        if let Some((k, v)) = t.split_once(op) {
            let k = k.trim();
            let n: i64 = v.trim().parse().map_err(|_| bad())?;
            if !valid_key(k) {
                return Err(bad());
            }
            return Ok(if gt { Req::Gt(k.into(), n) } else { Req::Lt(k.into(), n) });
        }
    }
    let words: Vec<&str> = t.splitn(2, char::is_whitespace).collect();
    if words.len() == 2 {
        let k = words[0];
        let rest = words[1].trim();
        let (notin, list) = if let Some(l) = rest.strip_prefix("notin") {
            (true, l)
        } else if let Some(l) = rest.strip_prefix("in") {
            (false, l)
        } else {
            return Err(bad());
        };
        let list = list.trim();
        let inner = list.strip_prefix('(').and_then(|l| l.strip_suffix(')')).ok_or_else(bad)?;
        let values: Vec<String> =
            inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect();
        if !valid_key(k) || values.is_empty() {
            return Err(bad());
        }
        return Ok(if notin { Req::NotIn(k.into(), values) } else { Req::In(k.into(), values) });
    }
    if valid_key(t) { Ok(Req::Exists(t.into())) } else { Err(bad()) }
}

/// One field-selector term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldReq {
    pub field: String,
    pub value: String,
    pub negate: bool,
}

/// A parsed field selector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldSelector(pub Vec<FieldReq>);

/// The fields each resource supports in field selectors (besides `metadata.name` and
/// `metadata.namespace`, which every resource supports), as in the real registries.
fn supported_fields(plural: &str) -> &'static [&'static str] {
    match plural {
        "pods" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "nodes" => &["spec.unschedulable"],
        "jobs" => &["status.successful"],
        "secrets" => &["type"],
        "namespaces" => &["status.phase"],
        "events" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
            "regarding.kind",
            "regarding.name",
            "regarding.namespace",
        ],
        "replicasets" | "statefulsets" | "replicationcontrollers" => &["status.replicas"],
        _ => &[],
    }
}

impl FieldSelector {
    /// Parses `a=b,c!=d,e==f` and checks every field is supported for the resource
    /// (the real message: `field label not supported: <field>`).
    pub fn parse(s: &str, plural: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for term in s.split(',') {
            let t = term.trim();
            if t.is_empty() {
                continue;
            }
            let (field, value, negate) = if let Some((k, v)) = t.split_once("!=") {
                (k, v, true)
            } else if let Some((k, v)) = t.split_once("==") {
                (k, v, false)
            } else if let Some((k, v)) = t.split_once('=') {
                (k, v, false)
            } else {
                return Err(format!("invalid selector: '{s}'; can't understand '{t}'"));
            };
            let field = field.trim();
            if field != "metadata.name"
                && field != "metadata.namespace"
                && !supported_fields(plural).contains(&field)
            {
                return Err(format!("field label not supported: {field}"));
            }
            out.push(FieldReq { field: field.into(), value: value.trim().into(), negate });
        }
        Ok(Self(out))
    }

    /// Whether the object satisfies every term.
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|r| (field_value(obj, &r.field) == r.value) != r.negate)
    }

    /// The `metadata.name=` value if the selector pins one (used to short-cut lookups).
    pub fn pinned_name(&self) -> Option<&str> {
        self.0.iter().find(|r| r.field == "metadata.name" && !r.negate).map(|r| r.value.as_str())
    }
}

/// The string value of a field, as the registries' field-set functions render it.
fn field_value(obj: &Value, field: &str) -> String {
    let mut cur = obj;
    for part in field.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => {
                return match field {
                    "spec.unschedulable" | "spec.hostNetwork" => "false".into(),
                    "status.successful" | "status.replicas" => "0".into(),
                    _ => String::new(),
                };
            }
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(sel: &str, labels: Value) -> bool {
        LabelSelector::parse(sel).unwrap().matches(Some(&labels))
    }

    #[test]
    fn label_selector_syntax() {
        let l = json!({"app": "web", "tier": "front", "n": "5"});
        assert!(m("app=web", l.clone()));
        assert!(m("app==web", l.clone()));
        assert!(!m("app!=web", l.clone()));
        assert!(m("missing!=x", l.clone()));
        assert!(m("app in (web, db)", l.clone()));
        assert!(!m("app notin (web)", l.clone()));
        assert!(m("missing notin (web)", l.clone()));
        assert!(m("tier", l.clone()));
        assert!(!m("!tier", l.clone()));
        assert!(m("!missing,app=web", l.clone()));
        assert!(m("n>4,n<6", l.clone()));
        assert!(m("", l.clone()));
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("a=b=c").is_err());
    }

    #[test]
    fn label_selector_objects() {
        let s = LabelSelector::from_object(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]
        }))
        .unwrap()
        .unwrap();
        assert!(s.matches(Some(&json!({"app": "web"}))));
        assert!(!s.matches(Some(&json!({"app": "web", "tier": "db"}))));
        assert!(LabelSelector::from_object(&Value::Null).unwrap().is_none());
        assert!(LabelSelector::from_object(&json!({})).unwrap().unwrap().matches(None));
    }

    #[test]
    fn field_selectors() {
        let pod = json!({"metadata": {"name": "a", "namespace": "n"}, "spec": {"nodeName": "k1"}, "status": {"phase": "Running"}});
        let f = FieldSelector::parse("spec.nodeName=k1,status.phase!=Succeeded", "pods").unwrap();
        assert!(f.matches(&pod));
        assert!(!FieldSelector::parse("spec.nodeName==k2", "pods").unwrap().matches(&pod));
        assert_eq!(
            FieldSelector::parse("spec.foo=1", "pods").unwrap_err(),
            "field label not supported: spec.foo"
        );
        assert!(FieldSelector::parse("spec.nodeName=x", "configmaps").is_err());
        assert!(FieldSelector::parse("spec.unschedulable=false", "nodes").unwrap().matches(&json!({})));
    }
}
