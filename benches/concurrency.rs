//! Projected duration of the worker stage at several worker concurrencies: 100 workers at
//! `workers.concurrency` 1, 4, 8 and 16, with the zone rule (workers spread over 3 zones) and
//! without zone labels.
//!
//! The worker times are measured, not assumed: the built-in rehearsal runs the whole chain (the
//! real `detect` and `step` code on the simulator), and each worker Job's projection with the
//! real waits (`rehearse`'s model: the measured work, the node upgrade estimate, the real
//! 10-minute soak, ...) is taken from it. The 100 workers take those projections in turn, and
//! `rehearse::project` schedules them on the slots as the claims run them
//! (`chain_core::waves::makespan`), every other Job of the chain added one after another.
//! No assertions: figures only. Run: `cargo bench --bench concurrency`.

use std::{collections::BTreeMap, time::Duration};

use chain_core::{
    plan::Phase,
    settings::Settings,
    waves::{Concurrency, WorkerSettings},
};
use k8s_upgrade_chain::rehearse::{self, Options, Source};

const WORKERS: usize = 100;

fn hm(d: Duration) -> String {
    let m = d.as_secs() / 60;
    format!("{}h{:02}m", m / 60, m % 60)
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let opts = Options {
        source: Source::Builtin,
        version: None,
        speed: rehearse::DEFAULT_SPEED,
        image: "registry.local/k8s-upgrade-chain:bench".into(),
    };
    let report = runtime
        .block_on(rehearse::rehearse(&Settings::default(), opts, &|_: &str| {}))
        .expect("the built-in rehearsal runs");
    assert!(report.completed, "the built-in rehearsal completed");
    let measured: Vec<_> = report.jobs.iter().filter(|j| j.phase == Phase::Worker).cloned().collect();
    let mut jobs: Vec<_> = report.jobs.iter().filter(|j| j.phase != Phase::Worker).cloned().collect();
    for i in 0..WORKERS {
        let mut j = measured[i % measured.len()].clone();
        j.node = Some(format!("worker-{:03}", i + 1));
        jobs.push(j);
    }
    let mean = measured.iter().map(|j| j.projected).sum::<Duration>() / measured.len() as u32;
    let zoned: BTreeMap<String, String> = (0..WORKERS)
        .map(|i| (format!("worker-{:03}", i + 1), format!("zone-{}", ["a", "b", "c"][i % 3])))
        .collect();
    println!(
        "projected chain duration, {WORKERS} workers (each worker Job projected at {} on average from the built-in rehearsal: drain, upgrade, ready wait, 10 min soak):",
        hm(mean)
    );
    for c in [1u32, 4, 8, 16] {
        let w =
            WorkerSettings { concurrency: Concurrency::new(c).expect("valid"), ..WorkerSettings::default() };
        let (free, _) = rehearse::project(&jobs, &BTreeMap::new(), WORKERS, &w);
        let (zones, _) = rehearse::project(&jobs, &zoned, WORKERS, &w);
        println!(
            "  workers.concurrency {c:>2}: {} without zone labels; {} with the workers in 3 zones (one per zone at a time)",
            hm(free),
            hm(zones)
        );
    }
}
