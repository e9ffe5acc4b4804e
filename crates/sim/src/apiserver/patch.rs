//! Patch flavours and the simplified server-side-apply field ownership.
//!
//! * JSON merge patch (RFC 7386) via the `json-patch` crate.
//! * JSON patch (RFC 6902) via the `json-patch` crate.
//! * Strategic merge patch: merge-patch semantics plus keyed merging of the lists the
//!   Kubernetes types mark `patchStrategy: merge` (containers/env/volumes/conditions/... by
//!   their merge key), union of `finalizers`, and the directives `$patch: replace|delete`,
//!   `$deleteFromPrimitiveList/<field>`; `$setElementOrder` and `$retainKeys` are ignored.
//! * Server-side apply: ownership is tracked per manager at leaf paths (map-lists by item,
//!   other lists atomic), see [`apply`].

use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

/// A path of object keys from the root to a leaf.
pub(crate) type Path = Vec<String>;

/// RFC 7386 merge patch.
pub(crate) fn merge(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// RFC 6902 JSON patch.
pub(crate) fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let p: json_patch::Patch = serde_json::from_value(patch.clone()).map_err(|e| e.to_string())?;
    json_patch::patch(target, &p).map_err(|e| e.to_string())
}

/// The merge key of the list fields Kubernetes types merge by key in strategic merge patch.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "conditions" | "addresses" => "type",
        "ownerReferences" => "uid",
        "hostAliases" => "ip",
        "ports" => {
            if items.iter().any(|i| i.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        _ => return None,
    })
}

/// Strategic merge patch (see the module doc for what is honoured).
pub(crate) fn strategic(target: &mut Value, patch: &Value) {
    let Some(pobj) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if pobj.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut v = patch.clone();
        v.as_object_mut().unwrap().remove("$patch");
        *target = v;
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    for (k, v) in pobj {
        if k == "$patch" || k.starts_with("$setElementOrder/") || k == "$retainKeys" {
            continue;
        }
        let t = target.as_object_mut().unwrap();
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(cur)), Some(del)) = (t.get_mut(field), v.as_array()) {
                cur.retain(|x| !del.contains(x));
            }
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        match v {
            Value::Array(items) => {
                if k == "finalizers" {
                    let cur = t.entry(k.clone()).or_insert_with(|| json!([]));
                    if let Value::Array(cur) = cur {
                        for i in items {
                            if !cur.contains(i) {
                                cur.push(i.clone());
                            }
                        }
                    }
                } else if let (Some(mk), Some(Value::Array(_))) = (merge_key(k, items), t.get(k)) {
                    let Some(Value::Array(cur)) = t.get_mut(k) else { unreachable!() };
                    for item in items {
                        let key = item.get(mk);
                        let del = item.get("$patch").and_then(Value::as_str) == Some("delete");
                        let pos = cur.iter().position(|c| key.is_some() && c.get(mk) == key);
                        match (pos, del) {
                            (Some(p), true) => {
                                cur.remove(p);
                            }
                            (None, true) => {}
                            (Some(p), false) => strategic(&mut cur[p], item),
                            (None, false) => {
                                let mut fresh = Value::Object(Map::new());
                                strategic(&mut fresh, item);
                                cur.push(fresh);
                            }
                        }
                    }
                } else {
                    t.insert(k.clone(), v.clone());
                }
            }
            Value::Object(_) => {
                let slot = t.entry(k.clone()).or_insert(Value::Null);
                strategic(slot, v);
            }
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Top-level and metadata fields the server owns; never tracked as managed fields.
fn untracked(path: &[String]) -> bool {
    match path.first().map(String::as_str) {
        Some("apiVersion" | "kind" | "status") => true,
        Some("metadata") => matches!(
            path.get(1).map(String::as_str),
            Some(
                "name"
                    | "namespace"
                    | "uid"
                    | "resourceVersion"
                    | "generation"
                    | "creationTimestamp"
                    | "managedFields"
                    | "deletionTimestamp"
                    | "deletionGracePeriodSeconds"
                    | "selfLink"
                    | "generateName"
            )
        ),
        _ => false,
    }
}

/// The key of the lists server-side apply treats as maps (`listType=map` in the OpenAPI
/// schema) here; other lists are atomic.
fn ssa_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers" | "initContainers" | "ephemeralContainers" | "env" | "volumes" | "imagePullSecrets" => {
            "name"
        }
        "volumeMounts" => "mountPath",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "hostAliases" => "ip",
        _ => return None,
    })
}

/// The path component of a keyed list item: `k:{"name":"main"}` (the fieldsV1 spelling).
fn item_component(field: &str, item: &Value) -> Option<String> {
    let k = ssa_key(field)?;
    let v = item.get(k).filter(|v| v.is_string() || v.is_number())?;
    let mut m = Map::new();
    m.insert(k.to_string(), v.clone());
    Some(format!("k:{}", Value::Object(m)))
}

/// Whether a list is handled as a map (an empty one too, when the field is a map-list).
fn keyed(field: &str, items: &[Value]) -> bool {
    ssa_key(field).is_some() && items.iter().all(|i| item_component(field, i).is_some())
}

/// (key field, key value) of a `k:{...}` component.
fn parse_component(c: &str) -> Option<(String, Value)> {
    let v: Value = serde_json::from_str(c.strip_prefix("k:")?).ok()?;
    let (k, val) = v.as_object()?.iter().next()?;
    Some((k.clone(), val.clone()))
}

/// Leaf paths of a value: objects and keyed lists are descended into, anything else (atomic
/// lists included) is a leaf.
pub(crate) fn leaf_paths(v: &Value) -> BTreeSet<Path> {
    fn walk(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, c) in m {
                    prefix.push(k.clone());
                    walk(c, prefix, out);
                    prefix.pop();
                }
            }
            Value::Array(items) if prefix.last().is_some_and(|f| keyed(f, items)) => {
                let field = prefix.last().cloned().unwrap_or_default();
                for item in items {
                    prefix.push(item_component(&field, item).unwrap_or_default());
                    walk(item, prefix, out);
                    prefix.pop();
                }
            }
            _ => {
                if !prefix.is_empty() && !untracked(prefix) {
                    out.insert(prefix.clone());
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

fn step<'a>(cur: &'a Value, comp: &str) -> Option<&'a Value> {
    match parse_component(comp) {
        Some((k, val)) => cur.as_array()?.iter().find(|i| i.get(&k) == Some(&val)),
        None => cur.get(comp),
    }
}

fn step_mut<'a>(cur: &'a mut Value, comp: &str) -> Option<&'a mut Value> {
    match parse_component(comp) {
        Some((k, val)) => cur.as_array_mut()?.iter_mut().find(|i| i.get(&k) == Some(&val)),
        None => cur.get_mut(comp),
    }
}

fn value_at<'a>(v: &'a Value, p: &[String]) -> Option<&'a Value> {
    p.iter().try_fold(v, |cur, k| step(cur, k))
}

/// Removes a leaf; removing a keyed item's key field removes the whole item.
fn remove_path(v: &mut Value, p: &[String]) {
    let Some((last, parents)) = p.split_last() else {
        return;
    };
    if let Some((item, list_path)) = parents.split_last()
        && let Some((k, val)) = parse_component(item)
        && *last == k
    {
        let mut cur = &mut *v;
        for c in list_path {
            match step_mut(cur, c) {
                Some(n) => cur = n,
                None => return,
            }
        }
        if let Some(a) = cur.as_array_mut() {
            a.retain(|i| i.get(&k) != Some(&val));
        }
        return;
    }
    let mut cur = v;
    for k in parents {
        match step_mut(cur, k) {
            Some(c) => cur = c,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
}

fn deep_merge(target: &mut Value, src: &Value) {
    match (target.as_object_mut(), src.as_object()) {
        (Some(t), Some(s)) => {
            for (k, v) in s {
                match t.get_mut(k) {
                    Some(tv) if tv.is_object() && v.is_object() => deep_merge(tv, v),
                    Some(Value::Array(ta)) if v.as_array().is_some_and(|sa| keyed(k, sa)) && keyed(k, ta) => {
                        for item in v.as_array().into_iter().flatten() {
                            let comp = item_component(k, item).unwrap_or_default();
                            let (key, val) = parse_component(&comp).unwrap_or_default();
                            match ta.iter_mut().find(|i| i.get(&key) == Some(&val)) {
                                Some(existing) => deep_merge(existing, item),
                                None => ta.push(item.clone()),
                            }
                        }
                    }
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        _ => *target = src.clone(),
    }
}

/// `.spec.containers[name="main"].image`, as upstream prints a field path.
fn render_path(p: &[String]) -> String {
    p.iter()
        .map(|c| match parse_component(c) {
            Some((k, v)) => format!("[{k}={v}]"),
            None => format!(".{c}"),
        })
        .collect()
}

/// Encodes paths as `fieldsV1` (`{"f:spec":{"f:replicas":{}}}`).
fn encode(paths: &BTreeSet<Path>) -> Value {
    let mut root = Value::Object(Map::new());
    for p in paths {
        let mut cur = &mut root;
        for k in p {
            let key = if k.starts_with("k:") { k.clone() } else { format!("f:{k}") };
            cur = cur.as_object_mut().unwrap().entry(key).or_insert_with(|| Value::Object(Map::new()));
        }
    }
    root
}

fn decode(v: &Value) -> BTreeSet<Path> {
    fn walk(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
        let children: Vec<(&String, &Value)> = v
            .as_object()
            .map(|m| m.iter().filter(|(k, _)| k.starts_with("f:") || k.starts_with("k:")).collect())
            .unwrap_or_default();
        if children.is_empty() {
            if !prefix.is_empty() {
                out.insert(prefix.clone());
            }
            return;
        }
        for (k, c) in children {
            prefix.push(if k.starts_with("k:") { k.clone() } else { k[2..].to_string() });
            walk(c, prefix, out);
            prefix.pop();
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// One `metadata.managedFields` entry, decoded.
#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    paths: BTreeSet<Path>,
}

fn entries(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| Entry {
                    manager: e["manager"].as_str().unwrap_or_default().into(),
                    operation: e["operation"].as_str().unwrap_or_default().into(),
                    api_version: e["apiVersion"].as_str().unwrap_or_default().into(),
                    time: e["time"].as_str().unwrap_or_default().into(),
                    paths: decode(&e["fieldsV1"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn store_entries(obj: &mut Value, es: Vec<Entry>) {
    let arr: Vec<Value> = es
        .into_iter()
        .filter(|e| !e.paths.is_empty())
        .map(|e| {
            json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": encode(&e.paths),
            })
        })
        .collect();
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if arr.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(arr));
        }
    }
}

fn overlaps(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// A field owned by another manager with a different value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Conflict {
    /// The manager as upstream's `printManager` renders it: `"alpha"` for an Apply manager,
    /// `"kubectl" using v1 at 2026-01-01T00:00:00Z` for an Update manager.
    pub manager: String,
    /// `.spec.replicas`
    pub field: String,
}

fn print_manager(e: &Entry) -> String {
    if e.operation == "Update" {
        if e.time.is_empty() {
            return format!("{:?} using {}", e.manager, e.api_version);
        }
        return format!("{:?} using {} at {}", e.manager, e.api_version, e.time);
    }
    format!("{:?}", e.manager)
}

/// Server-side apply of `config` by `manager` onto `current` (None = create).
///
/// Simplification: ownership at leaf paths (map-lists per item, other lists atomic). A config leaf conflicts when another
/// manager owns an overlapping path and the live value differs from the applied one; `force`
/// takes such fields over. Fields this manager applied before and no longer applies are
/// removed unless another manager also owns them.
pub(crate) fn apply(
    current: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
    api_version: &str,
    now: &str,
) -> Result<Value, Vec<Conflict>> {
    let cfg_paths = leaf_paths(config);
    let mine = |e: &Entry| e.manager == manager && e.operation == "Apply";
    let Some(current) = current else {
        let mut obj = config.clone();
        store_entries(
            &mut obj,
            vec![Entry {
                manager: manager.into(),
                operation: "Apply".into(),
                api_version: api_version.into(),
                time: now.into(),
                paths: cfg_paths,
            }],
        );
        return Ok(obj);
    };
    let mut es = entries(current);
    let mut conflicts = Vec::new();
    for e in es.iter().filter(|e| !mine(e)) {
        for q in &cfg_paths {
            if e.paths.iter().any(|p| overlaps(p, q)) && value_at(current, q) != value_at(config, q) {
                conflicts.push(Conflict { manager: print_manager(e), field: render_path(q) });
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    if force {
        for e in es.iter_mut().filter(|e| !mine(e)) {
            e.paths.retain(|p| {
                !cfg_paths.iter().any(|q| overlaps(p, q) && value_at(current, q) != value_at(config, q))
            });
        }
    }
    let old_owned: BTreeSet<Path> = es.iter().filter(|e| mine(e)).flat_map(|e| e.paths.clone()).collect();
    let mut result = current.clone();
    for p in old_owned.difference(&cfg_paths) {
        // Dropping a keyed item's key field drops the item: only when nobody else owns any
        // field in it.
        let scope: &[String] = match p.split_last() {
            Some((last, parents))
                if parents.last().and_then(|c| parse_component(c)).is_some_and(|(k, _)| k == *last) =>
            {
                parents
            }
            _ => p,
        };
        let shared = es.iter().filter(|e| !mine(e)).any(|e| e.paths.iter().any(|o| overlaps(o, scope)))
            || (scope.len() < p.len() && cfg_paths.iter().any(|q| q.starts_with(scope)));
        if !shared && !cfg_paths.iter().any(|q| overlaps(q, p)) {
            remove_path(&mut result, p);
        }
    }
    let mut cfg = config.clone();
    if let Some(m) = cfg.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
        m.remove("resourceVersion");
    }
    deep_merge(&mut result, &cfg);
    let without_mf = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("managedFields");
        }
        v
    };
    let unchanged = without_mf(&result) == without_mf(current);
    let entry = Entry {
        manager: manager.into(),
        operation: "Apply".into(),
        api_version: api_version.into(),
        time: now.into(),
        paths: cfg_paths,
    };
    match es.iter().position(mine) {
        // A no-op apply leaves the object, its resourceVersion included, as it was.
        Some(i) if unchanged && es[i].paths == entry.paths => {}
        Some(i) => es[i] = entry,
        None => es.push(entry),
    }
    store_entries(&mut result, es);
    Ok(result)
}

/// Records a non-apply write by `manager`: the leaves it changed become its own (operation
/// `Update`) and leave every other manager; leaves that disappeared leave everyone.
pub(crate) fn track_update(old: &Value, new: &mut Value, manager: &str, api_version: &str, now: &str) {
    let old_paths = leaf_paths(old);
    let new_paths = leaf_paths(new);
    let changed: BTreeSet<Path> =
        new_paths.iter().filter(|p| value_at(old, p) != value_at(new, p)).cloned().collect();
    let removed: BTreeSet<Path> = old_paths.difference(&new_paths).cloned().collect();
    let mut es = entries(old);
    for e in es.iter_mut() {
        let other = !(e.manager == manager && e.operation == "Update");
        e.paths.retain(|p| {
            let gone = removed.iter().any(|r| overlaps(p, r)) && value_at(new, p).is_none();
            let taken = other && changed.iter().any(|c| overlaps(p, c));
            !gone && !taken
        });
    }
    if !changed.is_empty() {
        match es.iter_mut().find(|e| e.manager == manager && e.operation == "Update") {
            Some(e) => {
                e.paths.extend(changed);
                e.time = now.into();
            }
            None => es.push(Entry {
                manager: manager.into(),
                operation: "Update".into(),
                api_version: api_version.into(),
                time: now.into(),
                paths: changed,
            }),
        }
    }
    store_entries(new, es);
}

/// Upstream's `getConflictMessage` (managedfields/internal/conflict.go).
pub(crate) fn conflict_message(cs: &[Conflict]) -> String {
    if cs.len() == 1 {
        return format!("Apply failed with 1 conflict: conflict with {}: {}", cs[0].manager, cs[0].field);
    }
    let mut managers: Vec<&str> = cs.iter().map(|c| c.manager.as_str()).collect();
    managers.sort();
    managers.dedup();
    let mut lines = Vec::new();
    for m in managers {
        lines.push(format!("conflicts with {m}:"));
        lines.extend(cs.iter().filter(|c| c.manager == m).map(|c| format!("- {}", c.field)));
    }
    format!("Apply failed with {} conflicts: {}", cs.len(), lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategic_merges_lists_by_key() {
        let mut t = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]},
                           "metadata": {"finalizers": ["f1"]}});
        strategic(
            &mut t,
            &json!({"spec": {"containers": [{"name": "b", "image": "z"}, {"name": "a", "$patch": "delete"}]},
                    "metadata": {"finalizers": ["f2"]}}),
        );
        assert_eq!(t["spec"]["containers"], json!([{"name": "b", "image": "z"}]));
        assert_eq!(t["metadata"]["finalizers"], json!(["f1", "f2"]));
        strategic(&mut t, &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["f1"]}}));
        assert_eq!(t["metadata"]["finalizers"], json!(["f2"]));
        strategic(&mut t, &json!({"metadata": {"finalizers": null}}));
        assert!(t["metadata"].get("finalizers").is_none());
    }

    #[test]
    fn apply_conflicts_and_force() {
        let a = apply(None, &json!({"metadata": {"name": "x"}, "data": {"k": "1"}}), "a", false, "v1", "t")
            .unwrap();
        assert_eq!(decode(&a["metadata"]["managedFields"][0]["fieldsV1"]).len(), 1);
        let err =
            apply(Some(&a), &json!({"metadata": {"name": "x"}, "data": {"k": "2"}}), "b", false, "v1", "t")
                .unwrap_err();
        assert_eq!(err[0].field, ".data.k");
        assert_eq!(conflict_message(&err), "Apply failed with 1 conflict: conflict with \"a\": .data.k");
        // Same value: shared ownership, no conflict.
        let shared =
            apply(Some(&a), &json!({"metadata": {"name": "x"}, "data": {"k": "1"}}), "b", false, "v1", "t")
                .unwrap();
        assert_eq!(shared["metadata"]["managedFields"].as_array().unwrap().len(), 2);
        let forced =
            apply(Some(&a), &json!({"metadata": {"name": "x"}, "data": {"k": "2"}}), "b", true, "v1", "t")
                .unwrap();
        assert_eq!(forced["data"]["k"], "2");
        assert_eq!(forced["metadata"]["managedFields"].as_array().unwrap().len(), 1);
        // Dropping a field from the config removes it.
        let two = apply(
            Some(&a),
            &json!({"metadata": {"name": "x"}, "data": {"k": "1", "j": "2"}}),
            "a",
            false,
            "v1",
            "t",
        )
        .unwrap();
        let one =
            apply(Some(&two), &json!({"metadata": {"name": "x"}, "data": {"k": "1"}}), "a", false, "v1", "t")
                .unwrap();
        assert!(one["data"].get("j").is_none());
    }

    #[test]
    fn keyed_lists_merge_by_key_under_apply() {
        let dep = |containers: Value| json!({"metadata": {"name": "d"}, "spec": {"containers": containers}});
        let a = apply(None, &dep(json!([{"name": "app", "image": "a:1"}])), "alpha", false, "apps/v1", "t")
            .unwrap();
        // Another manager adds a sidecar: both containers stay.
        let b = apply(
            Some(&a),
            &dep(json!([{"name": "sidecar", "image": "s:1"}])),
            "beta",
            false,
            "apps/v1",
            "t",
        )
        .unwrap();
        assert_eq!(b["spec"]["containers"].as_array().unwrap().len(), 2);
        let mf = &b["metadata"]["managedFields"][1]["fieldsV1"];
        assert!(mf.pointer("/f:spec/f:containers/k:{\"name\":\"sidecar\"}/f:image").is_some(), "{mf}");
        // A conflicting image names the item.
        let err =
            apply(Some(&b), &dep(json!([{"name": "app", "image": "a:2"}])), "beta", false, "apps/v1", "t")
                .unwrap_err();
        assert_eq!(err[0].field, ".spec.containers[name=\"app\"].image");
        // beta drops its sidecar: it goes, app stays.
        let c = apply(Some(&b), &dep(json!([])), "beta", false, "apps/v1", "t").unwrap();
        let names: Vec<&str> =
            c["spec"]["containers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["app"]);
    }

    #[test]
    fn updates_take_ownership() {
        let a = apply(None, &json!({"metadata": {"name": "x"}, "data": {"k": "1"}}), "a", false, "v1", "t")
            .unwrap();
        let mut b = a.clone();
        b["data"]["k"] = json!("2");
        track_update(&a, &mut b, "kubectl", "v1", "t");
        let es = entries(&b);
        assert_eq!(es.len(), 1);
        assert_eq!(es[0].manager, "kubectl");
        assert!(
            apply(Some(&b), &json!({"metadata": {"name": "x"}, "data": {"k": "3"}}), "a", false, "v1", "t")
                .is_err()
        );
    }
}
