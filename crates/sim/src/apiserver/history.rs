//! One resource's window of recent watch events, after the apiserver's watch cache
//! (`k8s.io/apiserver/pkg/storage/cacher/watch_cache.go`, v1.28: `updateCache`,
//! `resizeCacheLocked`, `getAllEventsSinceLocked`).
//!
//! Upstream keeps one such window per resource. It starts at 100 events and, when full,
//! doubles (up to 102,400) while its oldest event is younger than 75 s, halves (down to 100)
//! when even the newest quarter is older than that, and otherwise drops its oldest event. A
//! watch from a resourceVersion older than the window gets `410 Expired` with
//! `too old resource version: <asked> (<oldest kept - 1>)`. Keeping every event instead made
//! the simulator hold about a gigabyte for a 100-node rehearsal.

use crate::apiserver::store::Event;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long upstream wants to keep events (`eventFreshDuration`: the bookmark frequency,
/// 60 s, plus a margin), before the server's time scale.
pub(crate) const EVENT_FRESH: Duration = Duration::from_secs(75);

/// The smallest window (`defaultLowerBoundCapacity`).
pub(crate) const LOWER_BOUND: usize = 100;

/// The largest window (`defaultUpperBoundCapacity`, 100 × 1024).
pub(crate) const UPPER_BOUND: usize = 100 * 1024;

/// The event window of one resource.
#[derive(Debug)]
pub(crate) struct History {
    /// The kept events, oldest first; never more than `capacity`.
    events: VecDeque<Arc<Event>>,
    capacity: usize,
    lower: usize,
    upper: usize,
    fresh: Duration,
    /// The resourceVersion of the last (re)list: server start, or [`History::relist`].
    list_rv: u64,
    /// Whether an event was dropped since that list (`removedEventSinceRelist`).
    removed: bool,
}

impl History {
    /// An empty window listed at `list_rv` (above 0), holding between `min(100, upper)` and
    /// `upper` events (at least 1), keeping events younger than `fresh` while it can.
    pub(crate) fn new(upper: usize, fresh: Duration, list_rv: u64) -> Self {
        let upper = upper.max(1);
        let lower = LOWER_BOUND.min(upper);
        Self {
            events: VecDeque::with_capacity(lower),
            capacity: lower,
            lower,
            upper,
            fresh,
            list_rv,
            removed: false,
        }
    }

    fn full(&self) -> bool {
        self.events.len() >= self.capacity
    }

    /// `resizeCacheLocked`: grow while the oldest event is fresh, shrink when the newest
    /// quarter is stale. Dropping events here does not count as a removal (upstream neither);
    /// the push that follows on a full window does.
    fn resize(&mut self, now: Instant) {
        if !self.full() {
            return;
        }
        let age = |e: &Event| now.saturating_duration_since(e.at);
        if self.events.front().is_some_and(|e| age(e) < self.fresh) {
            self.capacity = (self.capacity * 2).min(self.upper);
            return;
        }
        let quarter = self.events.len() - self.capacity / 4;
        if self.events.get(quarter).is_some_and(|e| age(e) > self.fresh) {
            let capacity = (self.capacity / 2).max(self.lower);
            if capacity < self.capacity {
                let drop = self.events.len().saturating_sub(capacity);
                self.events.drain(..drop);
                self.capacity = capacity;
                self.events.shrink_to(capacity);
            }
        }
    }

    /// `updateCache`: records `ev` (its `at` is the record time, never before the last one's).
    pub(crate) fn push(&mut self, ev: Arc<Event>) {
        self.resize(ev.at);
        if self.full() {
            self.events.pop_front();
            self.removed = true;
        }
        self.events.push_back(ev);
    }

    /// The oldest resourceVersion a watch can start from (`oldest - 1` upstream).
    pub(crate) fn oldest_watchable(&self) -> u64 {
        let oldest = match self.events.front() {
            Some(e) if self.removed => e.rv,
            _ => self.list_rv + 1,
        };
        oldest - 1
    }

    /// The kept events after `rv` (exclusive), or `Err(oldest - 1)` when `rv` is older than
    /// the window (the watch gets 410 `too old resource version: <rv> (<that>)`).
    pub(crate) fn since(&self, rv: u64) -> Result<Vec<Arc<Event>>, u64> {
        let oldest = self.oldest_watchable();
        if rv < oldest {
            return Err(oldest);
        }
        let start = self.events.partition_point(|e| e.rv <= rv);
        Ok(self.events.range(start..).cloned().collect())
    }

    /// Forgets every event, as upstream's `Replace` after a relist at `rv` does: a watch from
    /// before `rv` gets 410.
    pub(crate) fn relist(&mut self, rv: u64) {
        self.events.clear();
        self.list_rv = rv;
        self.removed = false;
    }

    /// The current capacity (between the bounds).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many events are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    fn ev(rv: u64, at: Instant) -> Arc<Event> {
        Arc::new(Event {
            rv,
            typ: "ADDED",
            res: 0,
            ns: String::new(),
            obj: Arc::new(Value::Null),
            prev: None,
            at,
        })
    }

    fn rvs(h: &History, since: u64) -> Vec<u64> {
        h.since(since).unwrap().iter().map(|e| e.rv).collect()
    }

    #[test]
    fn a_window_that_never_dropped_an_event_serves_every_resource_version_since_its_list() {
        let t = Instant::now();
        let mut h = History::new(UPPER_BOUND, EVENT_FRESH, 1);
        for rv in 2..=50 {
            h.push(ev(rv, t));
        }
        assert_eq!(h.oldest_watchable(), 1);
        assert_eq!(rvs(&h, 1).len(), 49);
        assert_eq!(rvs(&h, 48), [49, 50]);
        assert_eq!(rvs(&h, 50), Vec::<u64>::new());
    }

    #[test]
    fn a_full_window_of_stale_events_drops_the_oldest_and_answers_oldest_minus_one() {
        let t = Instant::now();
        let mut h = History::new(UPPER_BOUND, EVENT_FRESH, 1);
        // 100 events, all older than 75 s when the 101st and 102nd come.
        for rv in 2..=101 {
            h.push(ev(rv, t));
        }
        let later = t + Duration::from_secs(76);
        h.push(ev(102, later));
        h.push(ev(103, later));
        // The 101st push halves nothing (the newest quarter is stale, but 100 is the floor)
        // and drops rv 2, the 102nd drops rv 3: the oldest kept is 4.
        assert_eq!((h.capacity(), h.len()), (100, 100));
        assert_eq!(h.since(2).unwrap_err(), 3);
        assert_eq!(rvs(&h, 3).first(), Some(&4));
        assert_eq!(h.oldest_watchable(), 3);
    }

    #[test]
    fn a_full_window_of_fresh_events_doubles_instead_of_dropping() {
        let t = Instant::now();
        let mut h = History::new(UPPER_BOUND, EVENT_FRESH, 1);
        for rv in 2..=102 {
            h.push(ev(rv, t + Duration::from_secs(1)));
        }
        assert_eq!((h.capacity(), h.len()), (200, 101));
        assert_eq!(h.oldest_watchable(), 1);
    }

    #[test]
    fn a_window_whose_newest_quarter_is_stale_halves() {
        let t = Instant::now();
        let mut h = History::new(UPPER_BOUND, EVENT_FRESH, 1);
        for rv in 2..=201 {
            h.push(ev(rv, t));
        }
        assert_eq!((h.capacity(), h.len()), (200, 200));
        // Full, and even the newest quarter is older than 75 s: halve to 100 (dropping
        // 2..=101), then drop 102 for the new event.
        h.push(ev(202, t + Duration::from_secs(80)));
        assert_eq!((h.capacity(), h.len()), (100, 100));
        assert_eq!(rvs(&h, 102).first(), Some(&103));
        assert_eq!(h.since(101).unwrap_err(), 102);
    }

    #[test]
    fn a_relist_forgets_every_event() {
        let t = Instant::now();
        let mut h = History::new(UPPER_BOUND, EVENT_FRESH, 1);
        for rv in 2..=10 {
            h.push(ev(rv, t));
        }
        h.relist(10);
        assert_eq!(h.since(9).unwrap_err(), 10);
        assert_eq!(rvs(&h, 10), Vec::<u64>::new());
        h.push(ev(11, t));
        assert_eq!(rvs(&h, 10), [11]);
    }

    #[test]
    fn an_upper_bound_below_one_hundred_is_the_only_bound() {
        let t = Instant::now();
        let mut h = History::new(3, EVENT_FRESH, 1);
        for rv in 2..=6 {
            h.push(ev(rv, t));
        }
        assert_eq!((h.capacity(), rvs(&h, 3)), (3, vec![4, 5, 6]));
        assert_eq!(h.since(2).unwrap_err(), 3);
    }

    proptest! {
        /// Whatever the timing: the window is the newest events, in order, between the bounds;
        /// a watch is refused exactly when it would miss a dropped event; and a fresh event is
        /// dropped only when the window is at its upper bound.
        #[test]
        fn the_window_keeps_the_newest_events_and_drops_fresh_ones_only_at_the_upper_bound(
            gaps in proptest::collection::vec(0u64..3_000, 1..700),
            upper in 1usize..300,
        ) {
            let fresh = Duration::from_secs(75);
            let t0 = Instant::now();
            let mut h = History::new(upper, fresh, 1);
            let mut now = t0;
            let mut all: Vec<(u64, Instant)> = Vec::new();
            for (i, gap) in gaps.iter().enumerate() {
                now += Duration::from_millis(*gap);
                let rv = 2 + i as u64 * 2; // resourceVersions of one resource are not consecutive
                let before: Vec<u64> = h.events.iter().map(|e| e.rv).collect();
                let cap_before = h.capacity();
                h.push(ev(rv, now));
                all.push((rv, now));
                let kept: Vec<u64> = h.events.iter().map(|e| e.rv).collect();
                // The newest events, in order, ending with this one.
                let n = kept.len();
                let expect: Vec<u64> = all[all.len() - n..].iter().map(|(r, _)| *r).collect();
                prop_assert_eq!(&kept, &expect);
                prop_assert!(h.capacity() >= LOWER_BOUND.min(upper) && h.capacity() <= upper);
                prop_assert!(n <= h.capacity());
                for dropped in before.iter().filter(|r| **r < kept[0]) {
                    let at = all.iter().find(|(r, _)| r == dropped).unwrap().1;
                    let stale = now.saturating_duration_since(at) >= fresh;
                    prop_assert!(stale || cap_before == upper, "fresh event {} dropped below the upper bound", dropped);
                }
            }
            // Watching from every resourceVersion: served only when no event after it is gone,
            // refused (as upstream) below the oldest kept minus one.
            let first_kept = h.events.front().unwrap().rv;
            let dropped_any = all.len() > h.len();
            let last = all.last().unwrap().0;
            let near = first_kept.saturating_sub(3).max(1)..=first_kept + 3;
            for rv in (1..=last).step_by(17).chain(near).chain([last]) {
                match h.since(rv) {
                    Ok(evs) => {
                        prop_assert!(!dropped_any || rv + 1 >= first_kept);
                        let want: Vec<u64> = all.iter().map(|(r, _)| *r).filter(|r| *r > rv).collect();
                        prop_assert_eq!(evs.iter().map(|e| e.rv).collect::<Vec<_>>(), want);
                    }
                    Err(oldest) => {
                        prop_assert!(dropped_any);
                        prop_assert_eq!(oldest, first_kept - 1);
                        prop_assert!(rv < oldest);
                    }
                }
            }
        }
    }
}
