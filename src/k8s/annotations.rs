//! The in-flight record on the tool's namespace, read and written through the API (the record
//! itself, its keys and its parsing are [`chain_core::annotations`]).

use chain_core::annotations::{AnnotationsConfig, InFlight, Keys, ParseError, clear_patch, parse, set_patch};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

/// An API call on the namespace failed.
#[derive(Debug, thiserror::Error)]
pub enum AnnotationError {
    /// The patch or get failed.
    #[error("failed to {action} in-flight annotations on namespace {namespace}: {source}")]
    Api {
        /// "write", "remove" or "read".
        action: &'static str,
        /// The namespace.
        namespace: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The annotations are there but do not parse.
    #[error("failed to read in-flight annotations on namespace {namespace}: {source}")]
    Parse {
        /// The namespace.
        namespace: String,
        /// Why.
        #[source]
        source: ParseError,
    },
}

/// Reads and writes the in-flight annotations of one namespace.
#[derive(Clone)]
pub struct NamespaceAnnotations {
    api: Api<Namespace>,
    namespace: String,
    keys: Keys,
}

impl NamespaceAnnotations {
    /// For namespace `namespace` with the configured prefix.
    pub fn new(client: Client, namespace: &str, cfg: &AnnotationsConfig) -> Self {
        Self { api: Api::all(client), namespace: namespace.into(), keys: Keys::new(&cfg.prefix) }
    }

    /// The keys in use.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    async fn patch(&self, action: &'static str, body: serde_json::Value) -> Result<(), AnnotationError> {
        self.api
            .patch(&self.namespace, &PatchParams::default(), &Patch::Merge(&body))
            .await
            .map(drop)
            .map_err(|source| AnnotationError::Api { action, namespace: self.namespace.clone(), source })
    }

    /// Writes all three annotations in one merge patch.
    pub async fn write(&self, record: &InFlight) -> Result<(), AnnotationError> {
        self.patch("write", set_patch(&self.keys, record)).await
    }

    /// Removes all three annotations in one merge patch (a no-op when absent).
    pub async fn clear(&self) -> Result<(), AnnotationError> {
        self.patch("remove", clear_patch(&self.keys)).await
    }

    /// Reads the record back; `Ok(None)` when nothing is in flight.
    pub async fn read(&self) -> Result<Option<InFlight>, AnnotationError> {
        let ns = self.api.get(&self.namespace).await.map_err(|source| AnnotationError::Api {
            action: "read",
            namespace: self.namespace.clone(),
            source,
        })?;
        let annotations = ns.metadata.annotations.unwrap_or_default();
        parse(&self.keys, &annotations)
            .map_err(|source| AnnotationError::Parse { namespace: self.namespace.clone(), source })
    }
}
