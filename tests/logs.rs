//! The JSON logs of the Jobs (`LOG_FORMAT=json`) are lines that every JSON parser reads the
//! same way: no object has the same key twice (issue 17 item 6: `"target":"1.34.3"` beside
//! tracing's own `"target":"k8s_upgrade_chain::chain"`; serde_json and jq silently keep the
//! last one, strict parsers refuse the line).
//!
//! One test per process: it installs the production JSON subscriber globally, writing into a
//! buffer, runs a whole chain (detection and every Job) on the test apiserver with real sshd
//! nodes, Prometheus and Pushgateway, then parses every line it wrote with a parser that
//! rejects duplicate keys at any depth.

mod support;

use std::{
    collections::HashSet,
    fmt,
    sync::{Arc, Mutex},
};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use support::chain::{Cluster, Layout};

/// A JSON value read with duplicate object keys refused (serde_json's `Value` keeps the last).
struct Unique;

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueVisitor)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Unique;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_unit<E>(self) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
        while seq.next_element::<Unique>()?.is_some() {}
        Ok(Unique)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            map.next_value::<Unique>()?;
        }
        Ok(Unique)
    }
}

/// Checks one line: Err says why a strict parser refuses it.
fn strict(line: &str) -> Result<(), String> {
    serde_json::from_str::<Unique>(line).map(drop).map_err(|e| e.to_string())
}

#[test]
fn the_checker_refuses_duplicate_keys_at_any_depth() {
    assert_eq!(strict(r#"{"target":"k8s_upgrade_chain::chain","target_version":"1.34.3"}"#), Ok(()));
    assert!(
        strict(r#"{"target":"1.34.3","target":"k8s_upgrade_chain::chain"}"#).unwrap_err().contains("target")
    );
    assert!(strict(r#"{"span":{"name":"a","name":"b"}}"#).is_err());
    assert!(strict(r#"{"spans":[{"x":1,"x":2}]}"#).is_err());
    assert!(strict("not json").is_err());
    // What serde_json alone accepts without a word.
    assert!(serde_json::from_str::<serde_json::Value>(r#"{"a":1,"a":2}"#).is_ok());
}

/// A `MakeWriter` appending to a shared buffer.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'w self) -> Buffer {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_json_log_line_of_a_whole_chain_has_unique_keys() {
    use tracing_subscriber::util::SubscriberInitExt as _;
    let buffer = Buffer::default();
    // Every level of the tool's own code; the libraries at the production default (info).
    let filter = tracing_subscriber::EnvFilter::new("info,k8s_upgrade_chain=trace,chain_core=trace");
    k8s_upgrade_chain::telemetry::json_subscriber(filter, buffer.clone()).try_init().unwrap();

    let c = Cluster::start(Layout {
        control_planes: &["k8s-master"],
        workers: &["k8s-node1", "k8s-node2"],
        running: "1.34.1",
        target: "1.34.2",
        net: 75,
    })
    .await;
    c.detect().await;
    let ran = c.run_chain().await;
    assert_eq!(ran.len(), 5, "{ran:?}");
    assert!(ran.iter().all(|j| j.result.is_ok()), "{ran:?}");

    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let refused: Vec<String> =
        lines.iter().filter_map(|l| strict(l).err().map(|e| format!("{e}: {l}"))).collect();
    assert!(
        refused.is_empty(),
        "{} of {} lines refused:\n{}",
        refused.len(),
        lines.len(),
        refused.join("\n")
    );
    // The capture saw the chain: one `phase started` per Job, each with its target version.
    let started: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["message"] == "phase started")
        .collect();
    assert_eq!(started.len(), 5, "{text}");
    for v in &started {
        assert_eq!(v["target_version"], "1.34.2", "{v}");
        assert_eq!(v["target"], "k8s_upgrade_chain::chain", "{v}");
    }
}
