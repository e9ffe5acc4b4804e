//! `metav1.Status` bodies shaped like the real apiserver's (k8s.io/apimachinery errors.go).

use crate::apiserver::resources::ResDef;
use serde_json::{Value, json};

/// An error answer: HTTP code plus a Status body.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub code: u16,
    pub body: Value,
}

fn status(code: u16, reason: &str, message: String, details: Option<Value>) -> ApiError {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "code": code,
    });
    if !reason.is_empty() {
        body["reason"] = json!(reason);
    }
    if let Some(d) = details {
        body["details"] = d;
    }
    ApiError { code, body }
}

fn details(def: &ResDef, name: &str) -> Value {
    let mut d = json!({"name": name, "kind": def.plural});
    if !def.group.is_empty() {
        d["group"] = json!(def.group);
    }
    d
}

impl ApiError {
    pub fn not_found(def: &ResDef, name: &str) -> Self {
        status(404, "NotFound", format!("{} {:?} not found", def.qualified(), name), Some(details(def, name)))
    }

    /// 404 for an unknown path (`the server could not find the requested resource`).
    pub fn no_route() -> Self {
        status(404, "NotFound", "the server could not find the requested resource".into(), Some(json!({})))
    }

    pub fn already_exists(def: &ResDef, name: &str) -> Self {
        status(
            409,
            "AlreadyExists",
            format!("{} {:?} already exists", def.qualified(), name),
            Some(details(def, name)),
        )
    }

    /// `Operation cannot be fulfilled on pods "x": <why>`.
    pub fn conflict(def: &ResDef, name: &str, why: &str) -> Self {
        status(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {} {:?}: {why}", def.qualified(), name),
            Some(details(def, name)),
        )
    }

    /// The optimistic-concurrency conflict of an update with a stale resourceVersion.
    pub fn stale(def: &ResDef, name: &str) -> Self {
        Self::conflict(
            def,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        status(400, "BadRequest", message.into(), None)
    }

    pub fn method_not_allowed() -> Self {
        status(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".into(),
            Some(json!({})),
        )
    }

    /// 422 Invalid with one `FieldValueInvalid` cause.
    pub fn invalid(def: &ResDef, name: &str, field: &str, value: &Value, what: &str) -> Self {
        let rendered = serde_json::to_string(value).unwrap_or_default();
        let detail = format!("Invalid value: {rendered}: {what}");
        let mut d = json!({
            "name": name,
            "kind": def.kind,
            "causes": [{"reason": "FieldValueInvalid", "message": detail, "field": field}],
        });
        if !def.group.is_empty() {
            d["group"] = json!(def.group);
        }
        status(
            422,
            "Invalid",
            format!("{} {:?} is invalid: {field}: {detail}", def.qualified_kind(), name),
            Some(d),
        )
    }

    /// 422 Invalid with a `FieldValueNotSupported` cause.
    pub fn unsupported(def: &ResDef, name: &str, field: &str, value: &str, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        let detail = format!("Unsupported value: {value:?}: supported values: {}", list.join(", "));
        let mut d = json!({
            "name": name,
            "kind": def.kind,
            "causes": [{"reason": "FieldValueNotSupported", "message": detail, "field": field}],
        });
        if !def.group.is_empty() {
            d["group"] = json!(def.group);
        }
        status(
            422,
            "Invalid",
            format!("{} {:?} is invalid: {field}: {detail}", def.qualified_kind(), name),
            Some(d),
        )
    }

    /// 422 Invalid for a list of `FieldValueInvalid` errors (the aggregate message brackets
    /// more than one).
    pub fn invalid_fields(def: &ResDef, name: &str, errs: &[(String, String)]) -> Self {
        let causes: Vec<Value> = errs
            .iter()
            .map(|(f, m)| json!({"reason": "FieldValueInvalid", "message": m, "field": f}))
            .collect();
        let rendered: Vec<String> = errs.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        let all =
            if rendered.len() == 1 { rendered[0].clone() } else { format!("[{}]", rendered.join(", ")) };
        let mut d = json!({"name": name, "kind": def.kind, "causes": causes});
        if !def.group.is_empty() {
            d["group"] = json!(def.group);
        }
        status(422, "Invalid", format!("{} {:?} is invalid: {all}", def.qualified_kind(), name), Some(d))
    }

    /// 422 Invalid with a `FieldValueForbidden` cause.
    pub fn forbidden_field(def: &ResDef, name: &str, field: &str, why: &str) -> Self {
        let detail = format!("Forbidden: {why}");
        let mut d = json!({
            "name": name,
            "kind": def.kind,
            "causes": [{"reason": "FieldValueForbidden", "message": detail, "field": field}],
        });
        if !def.group.is_empty() {
            d["group"] = json!(def.group);
        }
        status(
            422,
            "Invalid",
            format!("{} {:?} is invalid: {field}: {detail}", def.qualified_kind(), name),
            Some(d),
        )
    }

    /// 422 Invalid with a `FieldValueRequired` cause.
    pub fn required(def: &ResDef, name: &str, field: &str, what: &str) -> Self {
        let detail = format!("Required value: {what}");
        let mut d = json!({
            "name": name,
            "kind": def.kind,
            "causes": [{"reason": "FieldValueRequired", "message": detail, "field": field}],
        });
        if !def.group.is_empty() {
            d["group"] = json!(def.group);
        }
        status(
            422,
            "Invalid",
            format!("{} {:?} is invalid: {field}: {detail}", def.qualified_kind(), name),
            Some(d),
        )
    }

    /// 403 from the NamespaceLifecycle admission plugin for a create (an eviction too) in a
    /// namespace being deleted, with the `NamespaceTerminating` cause
    /// (plugin/pkg/admission/namespace/lifecycle/admission.go). Measured on v1.28.7
    /// (real-api-answers.md case 7): `pods "web-8844c9497-bkqgg" is forbidden: unable to create
    /// new content in namespace b because it is being terminated`.
    pub fn namespace_terminating(def: &ResDef, name: &str, ns: &str) -> Self {
        let mut d = details(def, name);
        d["causes"] = json!([{
            "reason": "NamespaceTerminating",
            "message": format!("namespace {ns} is being terminated"),
            "field": "metadata.namespace",
        }]);
        status(
            403,
            "Forbidden",
            format!(
                "{} {:?} is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                def.qualified(),
                name
            ),
            Some(d),
        )
    }

    /// 403 `errors.NewForbidden(policy.Resource("poddisruptionbudget"), pdb, err)` as the
    /// eviction handler's `checkAndDecrement` answers for a budget it cannot trust (negative
    /// `disruptionsAllowed`, or more than 2000 `disruptedPods`).
    pub fn pdb_forbidden(pdb: &str, why: &str) -> Self {
        status(
            403,
            "Forbidden",
            format!("poddisruptionbudget.policy {pdb:?} is forbidden: {why}"),
            Some(json!({"name": pdb, "group": "policy", "kind": "poddisruptionbudget"})),
        )
    }

    /// 410 Gone as the real watch cache / etcd sends it for a compacted resourceVersion.
    pub fn expired(message: String) -> Self {
        status(410, "Expired", message, None)
    }

    /// A generic failure for an injected fault, with the reason the real server uses for the code.
    pub fn for_code(
        code: u16,
        message: Option<String>,
        def: Option<&ResDef>,
        name: Option<&str>,
        verb: &str,
        namespace: Option<&str>,
    ) -> Self {
        let (reason, default_msg) = match code {
            400 => ("BadRequest", "the request is invalid".to_string()),
            401 => ("Unauthorized", "Unauthorized".to_string()),
            403 => {
                let res = def.map(|d| d.plural).unwrap_or("resource");
                let group = def.map(|d| d.group).unwrap_or("");
                let obj = match (def, name) {
                    (Some(d), Some(n)) => format!("{} {:?}", d.qualified(), n),
                    (Some(d), None) => d.qualified(),
                    _ => "resource".into(),
                };
                let scope = match namespace {
                    Some(ns) => format!(" in the namespace {ns:?}"),
                    None => " at the cluster scope".into(),
                };
                (
                    "Forbidden",
                    format!(
                        "{obj} is forbidden: User \"system:serviceaccount:upgrade:k8s-upgrade-chain\" cannot {verb} resource {res:?} in API group {group:?}{scope}"
                    ),
                )
            }
            404 => ("NotFound", "the server could not find the requested resource".into()),
            405 => ("MethodNotAllowed", "the server does not allow this method on the requested resource".into()),
            409 => ("Conflict", "the object has been modified; please apply your changes to the latest version and try again".into()),
            410 => ("Expired", "too old resource version".into()),
            422 => ("Invalid", "the request is invalid".into()),
            429 => ("TooManyRequests", "the server has received too many requests and has asked us to try again later".into()),
            500 => ("InternalError", "Internal error occurred: injected fault".into()),
            503 => ("ServiceUnavailable", "the server is currently unable to handle the request".into()),
            504 => ("Timeout", "the server was unable to return a response in the time allotted, but may still be processing the request".into()),
            _ => ("", format!("injected fault {code}")),
        };
        let d = match (def, name) {
            (Some(d), Some(n)) => Some(details(d, n)),
            (Some(d), None) => Some({
                let mut v = json!({"kind": d.plural});
                if !d.group.is_empty() {
                    v["group"] = json!(d.group);
                }
                v
            }),
            _ => None,
        };
        status(code, reason, message.unwrap_or(default_msg), d)
    }
}

/// A Success Status, optionally with details (as the generic registry returns for deletes).
pub(crate) fn success(code: Option<u16>, details: Option<Value>) -> Value {
    let mut body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"});
    if let Some(c) = code {
        body["code"] = json!(c);
    }
    if let Some(d) = details {
        body["details"] = d;
    }
    body
}
