//! The HTTP surface: routing, verbs, list/watch, patches, subresources, faults and the request log.

use crate::apiserver::patch;
use crate::apiserver::resources::{self, PODS, RESOURCES, ResDef, Route, Target};
use crate::apiserver::selector::{FieldSelector, LabelSelector};
use crate::apiserver::status::{self, ApiError};
use crate::apiserver::store::{DeleteOpts, Deleted, Event, Shared, State, name_of, ns_of, uid_of};
use crate::apiserver::{Fault, RecordedRequest};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};

pub(crate) type Body = BoxBody<Bytes, Infallible>;

pub(crate) struct Inner {
    pub shared: Arc<Shared>,
    pub faults: Mutex<Vec<Fault>>,
    pub requests: Mutex<Vec<RecordedRequest>>,
    pub shutdown: watch::Receiver<bool>,
    pub server_version: String,
    pub addr: std::net::SocketAddr,
    /// `(verb, group, resource)` that SelfSubjectAccessReviews answer as not allowed.
    pub denied: Mutex<Vec<(String, String, String)>>,
}

fn full(code: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(body.into()).boxed())
        .unwrap()
}

fn json_resp(code: u16, v: &Value) -> Response<Body> {
    full(code, "application/json", serde_json::to_vec(v).unwrap_or_default())
}

fn err_resp(e: ApiError) -> Response<Body> {
    let mut r = json_resp(e.code, &e.body);
    if let Some(ra) = e.body.pointer("/details/retryAfterSeconds").and_then(Value::as_i64) {
        r.headers_mut().insert(header::RETRY_AFTER, ra.to_string().parse().unwrap());
    }
    r
}

fn verb_of(method: &Method, route: &Route, params: &HashMap<String, String>) -> &'static str {
    let named = matches!(route, Route::Resource(Target { name: Some(_), .. }));
    match *method {
        Method::GET if named => "get",
        Method::GET if matches!(params.get("watch").map(String::as_str), Some("true" | "1")) => "watch",
        Method::GET if matches!(route, Route::Resource(_)) => "list",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "unknown",
    }
}

/// Entry point for one HTTP request.
pub(crate) async fn handle(inner: Arc<Inner>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let headers = req.headers().clone();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let params: HashMap<String, String> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let route = resources::route(&path);
    let verb = verb_of(&method, &route, &params);
    let resp = match inner.fault_for(&method, &path, &query, &route, verb) {
        Some(Err(e)) => err_resp(e),
        None if method == Method::POST
            && path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" =>
        {
            access_review(&inner, &body)
        }
        Some(Ok(delay)) => {
            tokio::time::sleep(delay).await;
            dispatch(&inner, &method, &route, &params, &headers, &body, verb)
        }
        None => dispatch(&inner, &method, &route, &params, &headers, &body, verb),
    };
    let path_q = if query.is_empty() { path } else { format!("{path}?{query}") };
    inner.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(RecordedRequest {
        method: method.to_string(),
        path: path_q,
        verb: verb.to_string(),
        status: resp.status().as_u16(),
    });
    Ok(resp)
}

impl Inner {
    fn fault_for(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        route: &Route,
        verb: &str,
    ) -> Option<Result<Duration, ApiError>> {
        let mut faults = self.faults.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (def, name, ns) = match route {
            Route::Resource(t) => (Some(&RESOURCES[t.res]), t.name.as_deref(), t.namespace.as_deref()),
            _ => (None, None, None),
        };
        let full_path = format!("{path}?{query}");
        let idx = faults.iter().position(|f| {
            f.times != Some(0)
                && f.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()))
                && f.path_contains.as_deref().is_none_or(|p| full_path.contains(p))
                && f.resource
                    .as_deref()
                    .is_none_or(|r| def.is_some_and(|d| d.plural == r || d.qualified() == r))
                && f.name.as_deref().is_none_or(|n| name == Some(n))
        })?;
        let f = &mut faults[idx];
        if let Some(t) = f.times.as_mut() {
            *t -= 1;
        }
        if let Some(d) = f.delay {
            return Some(Ok(d));
        }
        Some(Err(ApiError::for_code(f.status, f.message.clone(), def, name, verb, ns)))
    }
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body)
        .or_else(|_| serde_saphyr::from_slice::<Value>(body))
        .map_err(|e| ApiError::bad_request(format!("the body of the request was in an unknown format: {e}")))
}

fn strip_type(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("kind");
        o.remove("apiVersion");
    }
    v
}

fn manager(params: &HashMap<String, String>, headers: &http::HeaderMap) -> String {
    if let Some(m) = params.get("fieldManager").filter(|m| !m.is_empty()) {
        return m.clone();
    }
    // managerOrUserAgent: the user agent up to the first '/' (empty when there is none,
    // as with kube-rs, which sends no User-Agent).
    headers
        .get(header::USER_AGENT)
        .and_then(|u| u.to_str().ok())
        .map(|u| u.split('/').next().unwrap_or(u).to_string())
        .unwrap_or_default()
}

fn dry_run(params: &HashMap<String, String>) -> bool {
    params.get("dryRun").is_some_and(|d| d == "All")
}

fn dispatch(
    inner: &Arc<Inner>,
    method: &Method,
    route: &Route,
    params: &HashMap<String, String>,
    headers: &http::HeaderMap,
    body: &[u8],
    verb: &str,
) -> Response<Body> {
    let result = match route {
        Route::Health => return full(200, "text/plain; charset=utf-8", "ok"),
        Route::Version => return json_resp(200, &version_body(&inner.server_version)),
        Route::CoreVersions => {
            return json_resp(
                200,
                &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": inner.addr.to_string()}]}),
            );
        }
        Route::Groups => return json_resp(200, &groups_body()),
        Route::GroupVersion { group, version } => {
            return json_resp(200, &resource_list(group, version));
        }
        Route::Unknown => Err(ApiError::no_route()),
        Route::Resource(t) => {
            if verb == "watch" {
                return watch(inner, t, params, partial_metadata(headers));
            }
            resource(inner, method, t, params, headers, body)
        }
    };
    match result {
        Ok(r) => r,
        Err(e) => err_resp(e),
    }
}

fn resource(
    inner: &Arc<Inner>,
    method: &Method,
    t: &Target,
    params: &HashMap<String, String>,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let def = &RESOURCES[t.res];
    let ns = t.namespace.clone().unwrap_or_default();
    let mut st = inner.shared.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let sub = t.subresource.as_deref();
    match (method.clone(), t.name.as_deref(), sub) {
        (Method::GET, None, None) => list(&st, t, params, partial_metadata(headers)),
        (Method::POST, None, None) => {
            if def.namespaced && t.namespace.is_none() {
                return Err(ApiError::method_not_allowed());
            }
            let mut obj = parse_body(body)?;
            if !obj.is_object() {
                return Err(ApiError::bad_request("the body of the request was in an unknown format"));
            }
            check_ns(def, &obj, &ns)?;
            let mgr = manager(params, headers);
            State::track(&json!({}), &mut obj, &mgr);
            let created = st.create(t.res, &ns, obj, dry_run(params))?;
            Ok(json_resp(201, &created))
        }
        (Method::DELETE, None, None) => {
            let sel = selectors(def, params)?;
            let opts = delete_opts(params, body)?;
            let names: Vec<String> = st
                .iter(t.res, t.namespace.as_deref())
                .filter(|(_, v)| {
                    sel.0.as_ref().is_none_or(|s| s.matches(v.pointer("/metadata/labels")))
                        && sel.1.as_ref().is_none_or(|f| f.matches(v))
                })
                .map(|(_, v)| format!("{}/{}", ns_of(v), name_of(v)))
                .collect();
            let mut items = Vec::new();
            for n in names {
                let (o_ns, o_name) = n.split_once('/').unwrap();
                if let Ok(Deleted::Marked(v) | Deleted::Removed(v)) = st.delete(t.res, o_ns, o_name, &opts) {
                    items.push(strip_type(v));
                }
            }
            Ok(json_resp(
                200,
                &json!({"kind": format!("{}List", def.kind), "apiVersion": def.api_version(), "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}),
            ))
        }
        (Method::GET, Some(name), None | Some("status")) => match st.get(t.res, &ns, name) {
            Some(v) if partial_metadata(headers) => Ok(json_resp(200, &to_partial(v))),
            Some(v) => Ok(json_resp(200, v)),
            None => Err(ApiError::not_found(def, name)),
        },
        (Method::PUT, Some(name), None | Some("status")) => {
            let mut next = parse_body(body)?;
            if !next.is_object() || !next.get("metadata").is_none_or(Value::is_object) {
                return Err(ApiError::bad_request("the body of the request was in an unknown format"));
            }
            check_ns(def, &next, &ns)?;
            let prev = st.get(t.res, &ns, name).cloned().ok_or_else(|| ApiError::not_found(def, name))?;
            if next.pointer("/metadata/managedFields").is_none()
                && let Some(mf) = prev.pointer("/metadata/managedFields")
            {
                next["metadata"]["managedFields"] = mf.clone();
            }
            State::track(&prev, &mut next, &manager(params, headers));
            let out = st.update(t.res, &ns, name, next, sub, dry_run(params))?;
            Ok(json_resp(200, &out))
        }
        (Method::PATCH, Some(name), None | Some("status")) => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|c| c.to_str().ok())
                .unwrap_or("")
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            patch_object(&mut st, t.res, &ns, name, sub, &ct, params, headers, body)
        }
        (Method::DELETE, Some(name), None) => {
            let opts = delete_opts(params, body)?;
            let returns_object = t.res == PODS || matches!(def.plural, "services" | "namespaces");
            let deleted = if t.res == PODS {
                st.guard_budgets(&ns, name, "delete", |st| st.delete(t.res, &ns, name, &opts))
            } else {
                st.delete(t.res, &ns, name, &opts)
            };
            match deleted? {
                Deleted::Marked(v) => Ok(json_resp(200, &v)),
                Deleted::Removed(v) if returns_object => Ok(json_resp(200, &v)),
                Deleted::Removed(v) => {
                    let mut d = json!({"name": name, "kind": def.plural, "uid": uid_of(&v)});
                    if !def.group.is_empty() {
                        d["group"] = json!(def.group);
                    }
                    Ok(json_resp(200, &status::success(None, Some(d))))
                }
            }
        }
        (Method::POST, Some(name), Some("eviction")) if t.res == PODS => {
            let ev = parse_body(body)?;
            if ev.pointer("/metadata/name").and_then(Value::as_str) != Some(name) {
                return Err(ApiError::bad_request("name in URL does not match name in Eviction object"));
            }
            let mut opts = match ev.get("deleteOptions") {
                Some(d) if d.is_object() => delete_opts_from(d),
                _ => DeleteOpts::default(),
            };
            opts.dry_run |= dry_run(params);
            let (code, body) = st.guard_budgets(&ns, name, "eviction", |st| st.evict(&ns, name, opts))?;
            Ok(json_resp(code, &body))
        }
        (Method::GET, Some(name), Some("log")) if t.res == PODS => {
            if st.get(PODS, &ns, name).is_none() {
                return Err(ApiError::not_found(def, name));
            }
            let Some(text) = st.logs.get(&(ns.clone(), name.to_string())) else {
                return Err(ApiError::for_code(
                    404,
                    Some(format!("the server could not find the requested resource ( pods/log {name})")),
                    Some(def),
                    Some(name),
                    "get",
                    Some(&ns),
                ));
            };
            let text = match params.get("tailLines").and_then(|n| n.parse::<usize>().ok()) {
                Some(n) => {
                    let lines: Vec<&str> = text.lines().collect();
                    let mut out = lines[lines.len().saturating_sub(n)..].join("\n");
                    if !out.is_empty() && text.ends_with('\n') {
                        out.push('\n');
                    }
                    out
                }
                None => text.clone(),
            };
            Ok(full(200, "text/plain", text))
        }
        (m, Some(name), Some("scale"))
            if matches!(def.plural, "deployments" | "replicasets" | "statefulsets") =>
        {
            let obj = st.get(t.res, &ns, name).cloned().ok_or_else(|| ApiError::not_found(def, name))?;
            let scale = State::scale_of(&obj);
            let new_scale = match m {
                Method::GET => return Ok(json_resp(200, &scale)),
                Method::PUT => parse_body(body)?,
                Method::PATCH => {
                    let ct = headers.get(header::CONTENT_TYPE).and_then(|c| c.to_str().ok()).unwrap_or("");
                    let p = parse_body(body)?;
                    let mut s = scale.clone();
                    if ct.starts_with("application/json-patch+json") {
                        patch::json_patch(&mut s, &p).map_err(|e| {
                            ApiError::for_code(422, Some(e), Some(def), Some(name), "patch", Some(&ns))
                        })?;
                    } else {
                        patch::strategic(&mut s, &p);
                    }
                    s
                }
                _ => return Err(ApiError::method_not_allowed()),
            };
            let replicas = new_scale.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0);
            let mut next = obj.clone();
            next["spec"]["replicas"] = json!(replicas);
            meta_remove_rv(&mut next);
            State::track(&obj, &mut next, &manager(params, headers));
            let out = st.update(t.res, &ns, name, next, None, dry_run(params))?;
            Ok(json_resp(200, &State::scale_of(&out)))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn meta_remove_rv(v: &mut Value) {
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
}

fn check_ns(def: &ResDef, obj: &Value, ns: &str) -> Result<(), ApiError> {
    let body_ns = ns_of(obj);
    if def.namespaced && !body_ns.is_empty() && body_ns != ns {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn patch_object(
    st: &mut State,
    res: usize,
    ns: &str,
    name: &str,
    sub: Option<&str>,
    ct: &str,
    params: &HashMap<String, String>,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let def = &RESOURCES[res];
    let p = parse_body(body)?;
    let dry = dry_run(params);
    if ct == "application/apply-patch+yaml" {
        let Some(mgr) = params.get("fieldManager").filter(|m| !m.is_empty()) else {
            // validation.ValidatePatchOptions: 422 on PatchOptions, before the object is looked up.
            return Err(patch_options_invalid(
                "fieldManager",
                "FieldValueRequired",
                "Required value: is required for apply patch",
            ));
        };
        let force = params.get("force").is_some_and(|f| f == "true");
        if !p.is_object() || !p.get("metadata").is_none_or(Value::is_object) {
            return Err(ApiError::bad_request("the body of the request was in an unknown format"));
        }
        let body_name = name_of(&p);
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        if p.get("apiVersion").and_then(Value::as_str) != Some(def.api_version().as_str())
            || p.get("kind").and_then(Value::as_str) != Some(def.kind)
        {
            return Err(ApiError::bad_request(format!(
                "invalid object type: {}, Kind={}",
                p.get("apiVersion").and_then(Value::as_str).unwrap_or(""),
                p.get("kind").and_then(Value::as_str).unwrap_or("")
            )));
        }
        check_ns(def, &p, ns)?;
        let mut cfg = p.clone();
        cfg["metadata"]["name"] = json!(name);
        let now = crate::apiserver::store::now_str();
        let av = def.api_version();
        let current = st.get(res, ns, name).cloned();
        let merged = patch::apply(current.as_ref(), &cfg, mgr, force, &av, &now).map_err(|cs| {
            let causes: Vec<Value> = cs
                .iter()
                .map(|c| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {}", c.manager), "field": c.field}))
                .collect();
            // errors.NewApplyConflict: the details carry only the causes.
            let d = json!({"causes": causes});
            ApiError {
                code: 409,
                body: json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": patch::conflict_message(&cs), "reason": "Conflict", "details": d, "code": 409}),
            }
        })?;
        return match current {
            None => {
                if sub.is_some() {
                    return Err(ApiError::not_found(def, name));
                }
                let created = st.create(res, ns, merged, dry)?;
                Ok(json_resp(201, &created))
            }
            Some(_) => {
                let mut next = merged;
                meta_remove_rv(&mut next);
                if let Some(rv) = p.pointer("/metadata/resourceVersion") {
                    next["metadata"]["resourceVersion"] = rv.clone();
                }
                Ok(json_resp(200, &st.update(res, ns, name, next, sub, dry)?))
            }
        };
    }
    if params.contains_key("force") {
        return Err(patch_options_invalid(
            "force",
            "FieldValueForbidden",
            "Forbidden: may not be specified for non-apply patch",
        ));
    }
    let prev = st.get(res, ns, name).cloned().ok_or_else(|| ApiError::not_found(def, name))?;
    let mut next = prev.clone();
    meta_remove_rv(&mut next);
    match ct {
        "application/merge-patch+json" => patch::merge(&mut next, &p),
        "application/strategic-merge-patch+json" => patch::strategic(&mut next, &p),
        "application/json-patch+json" => {
            let mut with_rv = prev.clone();
            patch::json_patch(&mut with_rv, &p).map_err(|e| {
                ApiError::for_code(
                    422,
                    Some(format!("the server rejected our request due to an error in our request: {e}")),
                    Some(def),
                    Some(name),
                    "patch",
                    Some(ns),
                )
            })?;
            next = with_rv;
            if next.pointer("/metadata/resourceVersion") == prev.pointer("/metadata/resourceVersion") {
                meta_remove_rv(&mut next);
            }
        }
        other => {
            return Err(ApiError::for_code(
                415,
                Some(format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"
                )),
                None,
                None,
                "patch",
                None,
            ));
        }
    }
    if !next.is_object() || !next.get("metadata").is_none_or(Value::is_object) {
        return Err(ApiError::for_code(
            422,
            Some("the patched object is not a valid object".into()),
            Some(def),
            Some(name),
            "patch",
            Some(ns),
        ));
    }
    State::track(&prev, &mut next, &manager(params, headers));
    Ok(json_resp(200, &st.update(res, ns, name, next, sub, dry)?))
}

/// 422 Invalid on `PatchOptions.meta.k8s.io ""`.
fn patch_options_invalid(field: &str, reason: &str, detail: &str) -> ApiError {
    ApiError {
        code: 422,
        body: json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("PatchOptions.meta.k8s.io \"\" is invalid: {field}: {detail}"),
            "reason": "Invalid",
            "details": {"group": "meta.k8s.io", "kind": "PatchOptions", "causes": [{"reason": reason, "message": detail, "field": field}]},
            "code": 422,
        }),
    }
}

type Selectors = (Option<LabelSelector>, Option<FieldSelector>);

fn selectors(def: &ResDef, params: &HashMap<String, String>) -> Result<Selectors, ApiError> {
    let ls = match params.get("labelSelector").filter(|s| !s.is_empty()) {
        Some(s) => Some(LabelSelector::parse(s).map_err(ApiError::bad_request)?),
        None => None,
    };
    let fs = match params.get("fieldSelector").filter(|s| !s.is_empty()) {
        Some(s) => Some(FieldSelector::parse(s, def.plural).map_err(ApiError::bad_request)?),
        None => None,
    };
    Ok((ls, fs))
}

fn matches(sel: &Selectors, v: &Value) -> bool {
    sel.0.as_ref().is_none_or(|s| s.matches(v.pointer("/metadata/labels")))
        && sel.1.as_ref().is_none_or(|f| f.matches(v))
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

/// Whether the client asked for `PartialObjectMetadata` (kube's `*_metadata` calls and
/// `metadata_watcher`).
fn partial_metadata(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"))
}

fn to_partial(v: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": v.get("metadata").cloned().unwrap_or(json!({}))})
}

fn list(
    st: &State,
    t: &Target,
    params: &HashMap<String, String>,
    partial: bool,
) -> Result<Response<Body>, ApiError> {
    let def = &RESOURCES[t.res];
    let sel = selectors(def, params)?;
    let limit = params.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0);
    let (list_rv, start) = match params.get("continue").filter(|c| !c.is_empty()) {
        Some(c) => {
            let decoded = unhex(c).ok_or_else(|| ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))?;
            let mut parts = decoded.splitn(3, '\0');
            let rv = parts
                .next()
                .and_then(|r| r.parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("continue key is not valid"))?;
            let ns = parts.next().unwrap_or_default().to_string();
            let name = parts.next().unwrap_or_default().to_string();
            (rv, Some((ns, name)))
        }
        None => (st.rv, None),
    };
    let ns = t.namespace.as_deref();
    let iter = match start {
        Some(k) => st.iter_after(t.res, ns, k),
        None => st.iter(t.res, ns),
    };
    let mut items = Vec::new();
    let mut last_key = None;
    let mut more = false;
    let mut remaining = 0usize;
    let pinned = sel.1.as_ref().and_then(|f| f.pinned_name()).map(String::from);
    for (k, v) in iter {
        if pinned.as_deref().is_some_and(|n| n != k.1) || !matches(&sel, v) {
            continue;
        }
        if limit.is_some_and(|l| items.len() >= l) {
            more = true;
            remaining += 1;
            if sel.0.is_some() || sel.1.is_some() {
                break;
            }
            continue;
        }
        items.push(if partial { to_partial(v) } else { strip_type(v.clone()) });
        last_key = Some(k.clone());
    }
    let mut meta = json!({"resourceVersion": list_rv.to_string()});
    if more && let Some((kns, kname)) = last_key {
        meta["continue"] = json!(hex(&format!("{list_rv}\0{kns}\0{kname}")));
        if sel.0.is_none() && sel.1.is_none() {
            meta["remainingItemCount"] = json!(remaining);
        }
    }
    let (kind, api_version) = if partial {
        ("PartialObjectMetadataList".to_string(), "meta.k8s.io/v1".to_string())
    } else {
        (format!("{}List", def.kind), def.api_version())
    };
    Ok(json_resp(200, &json!({"kind": kind, "apiVersion": api_version, "metadata": meta, "items": items})))
}

fn delete_opts_from(d: &Value) -> DeleteOpts {
    let mut propagation = d.get("propagationPolicy").and_then(Value::as_str).map(String::from);
    if propagation.is_none() {
        propagation = match d.get("orphanDependents").and_then(Value::as_bool) {
            Some(true) => Some("Orphan".into()),
            Some(false) => Some("Background".into()),
            None => None,
        };
    }
    DeleteOpts {
        grace: d.get("gracePeriodSeconds").and_then(Value::as_i64),
        propagation,
        uid: d.pointer("/preconditions/uid").and_then(Value::as_str).map(String::from),
        resource_version: d
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(String::from),
        dry_run: d.get("dryRun").and_then(Value::as_array).is_some_and(|a| a.iter().any(|x| x == "All")),
    }
}

fn delete_opts(params: &HashMap<String, String>, body: &[u8]) -> Result<DeleteOpts, ApiError> {
    let b = parse_body(body)?;
    let mut o = if b.is_object() { delete_opts_from(&b) } else { DeleteOpts::default() };
    if let Some(g) = params.get("gracePeriodSeconds").and_then(|g| g.parse().ok()) {
        o.grace = Some(g);
    }
    if let Some(p) = params.get("propagationPolicy") {
        o.propagation = Some(p.clone());
    }
    if let Some(p) = &o.propagation
        && !matches!(p.as_str(), "Orphan" | "Background" | "Foreground")
    {
        return Err(ApiError::for_code(
            422,
            Some(format!(
                "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: {p:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
            )),
            None,
            None,
            "delete",
            None,
        ));
    }
    o.dry_run |= dry_run(params);
    Ok(o)
}

// ----- watch -----

fn event_line(typ: &str, obj: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": typ, "object": obj})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn watch(inner: &Arc<Inner>, t: &Target, params: &HashMap<String, String>, partial: bool) -> Response<Body> {
    let def = RESOURCES[t.res];
    let sel = match selectors(&def, params) {
        Ok(s) => s,
        Err(e) => return err_resp(e),
    };
    let timeout = params.get("timeoutSeconds").and_then(|s| s.parse::<u64>().ok()).unwrap_or(1800);
    let bookmarks = params.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let send_initial = params.get("sendInitialEvents").is_some_and(|b| b == "true");
    let rv_param = params.get("resourceVersion").and_then(|r| r.parse::<u64>().ok()).filter(|r| *r > 0);
    let ns = t.namespace.clone();
    let res = t.res;
    let (tx, rx) = mpsc::channel::<Bytes>(1024);
    let mut first: Vec<Bytes> = Vec::new();
    let mut expired = false;
    let (start_rv, sub) = {
        let st = inner.shared.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if rv_param.is_none() || send_initial {
            for (_, v) in st.iter(res, ns.as_deref()) {
                if matches(&sel, v) {
                    first.push(event_line("ADDED", &shape(v, partial)));
                }
            }
            if send_initial && bookmarks {
                first.push(event_line("BOOKMARK", &json!({"kind": def.kind, "apiVersion": def.api_version(), "metadata": {"resourceVersion": st.rv.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}})));
            }
        } else if let Some(rv) = rv_param {
            match st.events_since(res, rv) {
                Ok(evs) => {
                    for ev in evs {
                        if let Some(line) = render(&ev, res, ns.as_deref(), &sel, partial) {
                            first.push(line);
                        }
                    }
                }
                Err(oldest) => {
                    // The watch cache's message: the requested and the oldest kept - 1.
                    let e = ApiError::expired(format!("too old resource version: {rv} ({oldest})"));
                    first.push(event_line("ERROR", &e.body));
                    expired = true;
                }
            }
        }
        (st.rv, st.subscribe())
    };
    let mut shutdown = inner.shutdown.clone();
    let kind = def.kind;
    let api_version = def.api_version();
    let shared = Arc::downgrade(&inner.shared);
    tokio::spawn(async move {
        for line in first {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        if expired {
            return;
        }
        let mut sub: broadcast::Receiver<Arc<Event>> = sub;
        let mut last = start_rv;
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                ev = sub.recv() => match ev {
                    Ok(ev) => {
                        if ev.rv <= last { continue; }
                        last = ev.rv;
                        if let Some(line) = render(&ev, res, ns.as_deref(), &sel, partial)
                            && tx.send(line).await.is_err() {
                            return;
                        }
                    }
                    // A slow watcher is closed; the client re-watches from its last resourceVersion.
                    Err(_) => return,
                },
                _ = &mut deadline => {
                    if bookmarks {
                        let rv = shared.upgrade().map(|s| s.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).rv).unwrap_or(last);
                        let _ = tx.send(event_line("BOOKMARK", &json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": rv.max(last).to_string()}}))).await;
                    }
                    return;
                }
                _ = shutdown.changed() => return,
                _ = tx.closed() => return,
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::TRANSFER_ENCODING, "chunked")
        .body(StreamBody::new(stream).boxed())
        .unwrap()
}

/// An event as a filtered watch delivers it (None = not for this watch).
fn render(ev: &Event, res: usize, ns: Option<&str>, sel: &Selectors, partial: bool) -> Option<Bytes> {
    if ev.res != res || ns.is_some_and(|n| n != ev.ns) {
        return None;
    }
    let now = matches(sel, &ev.obj);
    let before = ev.prev.as_ref().is_some_and(|p| matches(sel, p));
    let typ = match ev.typ {
        "MODIFIED" => match (before, now) {
            (true, true) => "MODIFIED",
            (false, true) => "ADDED",
            (true, false) => "DELETED",
            (false, false) => return None,
        },
        "DELETED" if before || now => "DELETED",
        "ADDED" if now => "ADDED",
        _ => return None,
    };
    Some(event_line(typ, &shape(&ev.obj, partial)))
}

fn shape(v: &Value, partial: bool) -> std::borrow::Cow<'_, Value> {
    if partial { std::borrow::Cow::Owned(to_partial(v)) } else { std::borrow::Cow::Borrowed(v) }
}

// ----- discovery -----

fn version_body(v: &str) -> Value {
    let trimmed = v.trim_start_matches('v');
    let mut parts = trimmed.split('.');
    let major = parts.next().unwrap_or("1");
    let minor = parts.next().unwrap_or("33");
    json!({
        "major": major, "minor": minor, "gitVersion": v,
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24.0", "compiler": "gc", "platform": "linux/amd64",
    })
}

fn groups_body() -> Value {
    let mut groups: Vec<Value> = Vec::new();
    for d in RESOURCES.iter().filter(|d| !d.group.is_empty()) {
        if groups.iter().any(|g| g["name"] == d.group) {
            continue;
        }
        let gv = json!({"groupVersion": d.api_version(), "version": d.version});
        groups.push(json!({"name": d.group, "versions": [gv.clone()], "preferredVersion": gv}));
    }
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource_list(group: &str, version: &str) -> Value {
    let mut out = Vec::new();
    let verbs = json!(["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]);
    for d in RESOURCES.iter().filter(|d| d.group == group && d.version == version) {
        let singular = d.kind.to_lowercase();
        out.push(json!({"name": d.plural, "singularName": singular, "namespaced": d.namespaced, "kind": d.kind, "verbs": verbs}));
        if d.has_status {
            out.push(json!({"name": format!("{}/status", d.plural), "singularName": "", "namespaced": d.namespaced, "kind": d.kind, "verbs": ["get", "patch", "update"]}));
        }
        if matches!(d.plural, "deployments" | "replicasets" | "statefulsets") {
            out.push(json!({"name": format!("{}/scale", d.plural), "singularName": "", "namespaced": true, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
        if d.plural == "pods" {
            out.push(json!({"name": "pods/eviction", "singularName": "", "namespaced": true, "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]}));
            out.push(json!({"name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]}));
        }
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out})
}

/// SelfSubjectAccessReview (authorization.k8s.io/v1): never stored; answered 201 with the spec
/// and `status.allowed`, which is false only for what [`Inner::denied`] lists.
fn access_review(inner: &Inner, body: &[u8]) -> Response<Body> {
    let Ok(mut review) = serde_json::from_slice::<Value>(body) else {
        return json_resp(
            400,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "BadRequest", "code": 400, "message": "invalid SelfSubjectAccessReview body"}),
        );
    };
    let attrs = review.pointer("/spec/resourceAttributes").cloned().unwrap_or(Value::Null);
    let field = |k: &str| attrs.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let resource = match field("subresource") {
        s if s.is_empty() => field("resource"),
        s => format!("{}/{s}", field("resource")),
    };
    let denied = inner.denied.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let allowed = attrs.is_null()
        || !denied.iter().any(|(v, g, r)| *v == field("verb") && *g == field("group") && *r == resource);
    review["status"] = if allowed {
        json!({"allowed": true, "reason": "testapi allows everything not denied"})
    } else {
        json!({"allowed": false})
    };
    json_resp(201, &review)
}
