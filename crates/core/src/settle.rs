//! The settle window (pure): no disruptive step while any node's Ready condition changed
//! recently.
//!
//! After a kured reboot (or a reboot the chain itself caused) nodes flap and alerts are noisy;
//! the seed waited 600 s after the last Ready transition (seed §10 item 7). The seed's check was
//! silently a no-op when busybox `date` could not parse the timestamp (item 23), so here a node
//! whose transition time is missing blocks, with a reason naming it. (An unparsable timestamp
//! never reaches this module: k8s-openapi refuses it when the Node is deserialised, which fails
//! the list call loudly.)

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;

/// Default settle window: 600 s (seed §10 item 7).
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(600);

/// Whether every node has been stable long enough.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettleVerdict {
    /// Every node's Ready condition is older than the window.
    Settled,
    /// These nodes block (sorted by node name).
    Unsettled {
        /// The blocking nodes and why.
        nodes: Vec<Unsettled>,
    },
}

impl SettleVerdict {
    /// Whether a disruptive step must wait.
    pub fn blocks(&self) -> bool {
        !matches!(self, SettleVerdict::Settled)
    }

    /// The longest remaining wait among the nodes that will settle on their own, if any.
    pub fn longest_remaining(&self) -> Option<Duration> {
        match self {
            SettleVerdict::Settled => None,
            SettleVerdict::Unsettled { nodes } => nodes
                .iter()
                .filter_map(|n| match n.reason {
                    UnsettledReason::RecentTransition { remaining, .. } => Some(remaining),
                    _ => None,
                })
                .max(),
        }
    }
}

/// One node that blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsettled {
    /// The node name (`(unnamed)` if the object had none).
    pub node: String,
    /// Why it blocks.
    pub reason: UnsettledReason,
}

/// Why a node blocks the settle window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnsettledReason {
    /// Ready changed `ago` ago; `remaining` until the window has passed.
    RecentTransition {
        /// Time since the transition.
        ago: Duration,
        /// Time left in the window.
        remaining: Duration,
    },
    /// The transition time is in the future (clock skew): treated as "just now".
    TransitionInFuture {
        /// How far ahead.
        ahead: Duration,
    },
    /// The node has no Ready condition at all.
    NoReadyCondition,
    /// The Ready condition has no `lastTransitionTime`.
    NoTransitionTime,
}

impl std::fmt::Display for Unsettled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fmt = crate::duration::format;
        let node = &self.node;
        match &self.reason {
            UnsettledReason::RecentTransition { ago, remaining } => {
                write!(f, "node {node}: Ready changed {} ago, settles in {}", fmt(*ago), fmt(*remaining))
            }
            UnsettledReason::TransitionInFuture { ahead } => write!(
                f,
                "node {node}: Ready lastTransitionTime is {} in the future (clock skew?)",
                fmt(*ahead)
            ),
            UnsettledReason::NoReadyCondition => {
                write!(f, "node {node}: no Ready condition reported")
            }
            UnsettledReason::NoTransitionTime => {
                write!(f, "node {node}: Ready condition has no lastTransitionTime")
            }
        }
    }
}

impl std::fmt::Display for SettleVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SettleVerdict::Settled => f.write_str("all nodes settled"),
            SettleVerdict::Unsettled { nodes } => {
                let parts: Vec<String> = nodes.iter().map(ToString::to_string).collect();
                f.write_str(&parts.join("; "))
            }
        }
    }
}

/// Decides the settle window over a snapshot of nodes at `now`.
///
/// A node blocks when its Ready condition changed less than `window` before `now` (sub-second
/// precision; exactly `window` ago counts as settled), when the change is in the future, or
/// when the condition or its timestamp is missing. The Ready *status* is not judged here:
/// readiness is the node-ready wait's business; this only asks "has it been stable?".
pub fn evaluate(nodes: &[Node], now: Timestamp, window: Duration) -> SettleVerdict {
    let mut blocking: Vec<Unsettled> = nodes
        .iter()
        .filter_map(|node| {
            let name = node.metadata.name.clone().unwrap_or_else(|| "(unnamed)".into());
            unsettled_reason(node, now, window).map(|reason| Unsettled { node: name, reason })
        })
        .collect();
    if blocking.is_empty() {
        return SettleVerdict::Settled;
    }
    blocking.sort_by(|a, b| a.node.cmp(&b.node));
    SettleVerdict::Unsettled { nodes: blocking }
}

fn unsettled_reason(node: &Node, now: Timestamp, window: Duration) -> Option<UnsettledReason> {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    let Some(ready) = ready else {
        return Some(UnsettledReason::NoReadyCondition);
    };
    let Some(changed) = ready.last_transition_time.as_ref() else {
        return Some(UnsettledReason::NoTransitionTime);
    };
    let elapsed = now.duration_since(changed.0);
    if elapsed.is_negative() {
        return Some(UnsettledReason::TransitionInFuture { ahead: elapsed.unsigned_abs() });
    }
    let ago = elapsed.unsigned_abs();
    (ago < window).then(|| UnsettledReason::RecentTransition { ago, remaining: window - ago })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    const NOW: &str = "2026-11-21T12:00:00Z";

    fn now() -> Timestamp {
        NOW.parse().unwrap()
    }

    /// `Node::test("k8s-node1").ready_since_secs_ago(30)` and friends.
    trait NodeFixture {
        fn test(name: &str) -> Self;
        fn ready_changed_at(self, at: &str) -> Self;
        fn ready_since_secs_ago(self, secs: i64) -> Self;
        fn ready_without_timestamp(self) -> Self;
    }

    impl NodeFixture for Node {
        fn test(name: &str) -> Self {
            Node {
                metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
                status: Some(NodeStatus::default()),
                ..Default::default()
            }
        }
        fn ready_changed_at(mut self, at: &str) -> Self {
            let time = Time(at.parse().unwrap());
            set_ready(&mut self, Some(time));
            self
        }
        fn ready_since_secs_ago(self, secs: i64) -> Self {
            let at = now() - k8s_openapi::jiff::SignedDuration::from_secs(secs);
            self.ready_changed_at(&at.to_string())
        }
        fn ready_without_timestamp(mut self) -> Self {
            set_ready(&mut self, None);
            self
        }
    }

    fn set_ready(node: &mut Node, time: Option<Time>) {
        let status = node.status.get_or_insert_with(Default::default);
        status.conditions = Some(vec![
            NodeCondition {
                type_: "MemoryPressure".into(),
                status: "False".into(),
                last_transition_time: None,
                ..Default::default()
            },
            NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                last_transition_time: time,
                ..Default::default()
            },
        ]);
    }

    fn verdict(nodes: &[Node]) -> SettleVerdict {
        evaluate(nodes, now(), DEFAULT_WINDOW)
    }

    #[test]
    fn nodes_stable_for_longer_than_the_window_are_settled() {
        let nodes = [
            Node::test("k8s-master").ready_since_secs_ago(86_400),
            Node::test("k8s-node1").ready_since_secs_ago(601),
        ];
        assert_eq!(verdict(&nodes), SettleVerdict::Settled);
        assert!(!verdict(&nodes).blocks());
    }

    #[test]
    fn exactly_the_window_ago_is_settled() {
        assert_eq!(verdict(&[Node::test("a").ready_since_secs_ago(600)]), SettleVerdict::Settled);
    }

    #[test]
    fn a_recent_transition_blocks_and_says_how_long() {
        let v = verdict(&[
            Node::test("k8s-node3").ready_since_secs_ago(120),
            Node::test("k8s-node1").ready_since_secs_ago(10_000),
            Node::test("k8s-node2").ready_since_secs_ago(599),
        ]);
        assert_eq!(
            v,
            SettleVerdict::Unsettled {
                nodes: vec![
                    Unsettled {
                        node: "k8s-node2".into(),
                        reason: UnsettledReason::RecentTransition {
                            ago: Duration::from_secs(599),
                            remaining: Duration::from_secs(1)
                        }
                    },
                    Unsettled {
                        node: "k8s-node3".into(),
                        reason: UnsettledReason::RecentTransition {
                            ago: Duration::from_secs(120),
                            remaining: Duration::from_secs(480)
                        }
                    },
                ]
            }
        );
        assert_eq!(v.longest_remaining(), Some(Duration::from_secs(480)));
        assert_eq!(
            v.to_string(),
            "node k8s-node2: Ready changed 9m59s ago, settles in 1s; \
             node k8s-node3: Ready changed 2m ago, settles in 8m"
        );
    }

    #[test]
    fn sub_second_timestamps_count() {
        let v = verdict(&[Node::test("a").ready_changed_at("2026-11-21T11:50:00.5Z")]);
        assert!(v.blocks(), "599.5 s ago is inside the window");
    }

    #[test]
    fn missing_timestamp_blocks_naming_the_node() {
        let v = verdict(&[Node::test("k8s-node4").ready_without_timestamp()]);
        assert_eq!(v.to_string(), "node k8s-node4: Ready condition has no lastTransitionTime");
        assert_eq!(v.longest_remaining(), None);
    }

    #[test]
    fn missing_ready_condition_blocks() {
        let mut bare = Node::test("k8s-node5");
        bare.status = None;
        let v = verdict(&[bare, Node::test("k8s-node6")]);
        let SettleVerdict::Unsettled { nodes } = v else { panic!("expected unsettled") };
        assert_eq!(nodes.len(), 2);
        assert!(nodes.iter().all(|n| n.reason == UnsettledReason::NoReadyCondition));
    }

    #[test]
    fn a_future_transition_blocks() {
        let v = verdict(&[Node::test("a").ready_since_secs_ago(-30)]);
        assert_eq!(
            v,
            SettleVerdict::Unsettled {
                nodes: vec![Unsettled {
                    node: "a".into(),
                    reason: UnsettledReason::TransitionInFuture { ahead: Duration::from_secs(30) }
                }]
            }
        );
    }

    #[test]
    fn a_custom_window_and_no_nodes() {
        let nodes = [Node::test("a").ready_since_secs_ago(120)];
        assert_eq!(evaluate(&nodes, now(), Duration::from_secs(60)), SettleVerdict::Settled);
        assert_eq!(evaluate(&[], now(), DEFAULT_WINDOW), SettleVerdict::Settled);
    }

    #[test]
    fn reads_transition_times_as_the_apiserver_writes_them() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "k8s-node1"},
            "status": {"conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-21T11:58:00Z"}
            ]}
        }))
        .unwrap();
        assert!(verdict(&[node]).blocks());
        let bad = serde_json::from_value::<Node>(serde_json::json!({
            "metadata": {"name": "k8s-node1"},
            "status": {"conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "Sat Nov 21 11:58"}
            ]}
        }));
        assert!(bad.is_err(), "an unparsable time fails loudly at deserialisation");
    }
}
