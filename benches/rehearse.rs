//! Rehearsal wall time at scale: the whole chain (`detect`, then every Job's `step`) on a
//! generated cluster of 21 nodes / 1,029 pods and of 100 nodes / 5,000 pods, as
//! `k8s-upgrade-chain rehearse --nodes N --pods-per-node M` runs it (default speed, the
//! site's default settings), one worker at a time; and the 100-node one again at
//! `workers.concurrency` 4, its worker Jobs running beside each other. Prints, per run: wall
//! time, the process's CPU time over the run (user + system, all threads), the Jobs, the scaled
//! soak on the simulation's clock, pods evicted, evictions refused and retried, pods deleted by
//! the fallback; the worker stage as it ran on the simulation's clock (most Jobs at once, first
//! start to last end) beside the projection's scheduling of the same Jobs' times and the
//! projection with the real waits; and at the end the process's peak resident memory. No
//! assertions: figures only.
//!
//! Run: `cargo bench --bench rehearse` (the three runs), or `cargo bench --bench rehearse --
//! 100x50:4` for one (`NODESxPODS_PER_NODE[:CONCURRENCY]`, repeatable).

use std::time::{Duration, Instant};

use chain_core::settings::Settings;
use k8s_upgrade_chain::rehearse::{self, Options, Source, generated::ClusterSize};

/// The runs measured by default (nodes, pods per node, `workers.concurrency`): the 21
/// nodes / ~1k pods and 100 nodes / 5k pods one worker at a time, and 100 nodes 4 at a time.
const RUNS: [(u32, u32, u32); 3] = [(21, 49, 1), (100, 50, 1), (100, 50, 4)];

/// CPU time of this process so far (user + system, every thread), from `/proc/self/stat`
/// (fields 14 and 15, in clock ticks of 1/100 s: `USER_HZ` is 100 on every Linux ABI).
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: count after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i - 3)?.parse::<u64>().ok();
    Some(Duration::from_millis((ticks(14)? + ticks(15)?) * 10))
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// `NODESxPODS_PER_NODE[:CONCURRENCY]`.
fn parse_run(s: &str) -> Option<(u32, u32, u32)> {
    let (size, c) = s.split_once(':').unwrap_or((s, "1"));
    let (n, p) = size.split_once('x')?;
    Some((n.parse().ok()?, p.parse().ok()?, c.parse().ok()?))
}

async fn run(nodes: u32, pods_per_node: u32, concurrency: u32) {
    let size = ClusterSize::new(nodes, pods_per_node).expect("a valid size");
    let opts = Options {
        source: Source::Generated(size),
        version: None,
        speed: rehearse::DEFAULT_SPEED,
        image: "registry.local/k8s-upgrade-chain:bench".into(),
    };
    let mut site = Settings::default();
    site.workers.concurrency = chain_core::waves::Concurrency::new(concurrency).expect("a valid concurrency");
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let report = rehearse::rehearse(&site, opts, &|_: &str| {}).await.expect("rehearsal runs");
    let wall = t0.elapsed();
    let cpu = cpu_time().zip(cpu0).map(|(b, a)| b.saturating_sub(a));
    let soak: Duration = report.jobs.iter().map(|j| j.simulated_soak).sum();
    let evicted: usize = report.jobs.iter().map(|j| j.evicted.len()).sum();
    let fallback: usize = report.jobs.iter().map(|j| j.fallback_deleted.len()).sum();
    let refusals: usize = report.jobs.iter().map(|j| j.eviction_refusals).sum();
    println!(
        "rehearse {:>3} nodes / {:>4} pods, workers.concurrency {concurrency}: wall {:>6.1} s, cpu {} ({} Jobs, {}; soak {:.1} s on the simulated clock); {evicted} evicted, {refusals} evictions refused and retried, {fallback} deleted by the fallback",
        size.nodes(),
        size.pods(),
        wall.as_secs_f64(),
        cpu.map_or("n/a".into(), |c| format!("{:.1} s", c.as_secs_f64())),
        report.jobs.len(),
        if report.completed { "chain completed" } else { "chain STOPPED" },
        soak.as_secs_f64(),
    );
    if let Some(w) = &report.workers {
        println!(
            "  worker stage {}: {} Jobs, at most {} at once (limit {}, most of one zone at once {}, most cordoned at once {}), {:.1} s from the first start to the last end; the projection's scheduling of the same Jobs' times {:.1} s; projected with the real waits {:.1} h",
            report.clock.describe(),
            w.jobs,
            w.in_flight_at_most,
            w.limit,
            w.in_one_zone_at_most,
            w.cordoned_at_most,
            w.ran.as_secs_f64(),
            w.scheduled.as_secs_f64(),
            w.projected.as_secs_f64() / 3600.0
        );
    }
    println!("  projected, the whole chain: {:.1} h", report.projected.as_secs_f64() / 3600.0);
    if concurrency != 1 {
        return;
    }
    // The projected duration of this chain at several worker concurrencies (rehearse's model;
    // the generated nodes are in 3 zones, so never more than 3 workers at once with the zone
    // rule; "without zones" as if the nodes carried no zone label).
    let workers = report.jobs.iter().filter(|j| j.phase == chain_core::plan::Phase::Worker).count();
    for c in [1u32, 4, 8, 16] {
        let w = chain_core::waves::WorkerSettings {
            concurrency: chain_core::waves::Concurrency::new(c).expect("valid"),
            ..Default::default()
        };
        let (zoned, _) = rehearse::project(&report.jobs, &report.zones, report.ready_workers, &w);
        let (free, _) = rehearse::project(&report.jobs, &Default::default(), report.ready_workers, &w);
        println!(
            "  projected, {workers} workers at workers.concurrency {c:>2}: {:.1} h without zone labels, {:.1} h in the generated 3 zones",
            free.as_secs_f64() / 3600.0,
            zoned.as_secs_f64() / 3600.0
        );
    }
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<(u32, u32, u32)> = std::env::args().skip(1).filter_map(|a| parse_run(&a)).collect();
    let runs = if args.is_empty() { RUNS.to_vec() } else { args };
    // As the `rehearse` command runs it: one thread, the simulation on the simulated clock.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    for (nodes, ppn, concurrency) in runs {
        runtime.block_on(run(nodes, ppn, concurrency));
    }
    match peak_rss_mib() {
        Some(mib) => println!("peak resident memory: {mib:.1} MiB"),
        None => println!("peak resident memory: unavailable (no /proc/self/status)"),
    }
}
