//! Flow checks: the runner's throughput on the example Klarna XS2A flow
//! (`examples/flows/klarna-xs2a.toml`, 11 requests a run) against the
//! sandbox's playground at 1 and 32 concurrent runs, and the scheduler of
//! `serve` (`ChecksService`) with 1,000 flows due every second: how late it
//! starts their rounds, how many it starts per second, and the memory one
//! scheduled flow costs.
//!
//! Everything runs in this process, on 127.0.0.1.
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bankbridge_checks::flow::{self, Flow};
use bankbridge_checks::runner::{RunOptions, Runner};
use bankbridge_checks::schedule::Outcome;
use bankbridge_core::MasterKey;
use bankbridge_sandbox::{SandboxConfig, SandboxHandle};
use bankbridge_server::check_secrets::CheckSecrets;
use bankbridge_server::checks::{ChecksConfig, ChecksService};
use bankbridge_server::metrics::Metrics;
use bankbridge_store::{CheckRun, CheckRunQuery, Store};
use chrono::{DateTime, Utc};

use super::{Table, mark, thousands, vm_rss_kib};

const EXAMPLE_FLOW: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/flows/klarna-xs2a.toml"
);
/// (concurrent runs, runs in all) of the example flow.
const EXAMPLE_BATCHES: [(usize, usize); 2] = [(1, 200), (32, 640)];
const SCHEDULED_FLOWS: usize = 1_000;
/// Every scheduled flow's period (`[schedule] every`).
const PERIOD: Duration = Duration::from_secs(1);
/// From starting the scheduler to the measured window: the folder is
/// loaded and the first rounds (spread over one period) have started.
const WARM_UP: Duration = Duration::from_secs(3);
const MEASURED: Duration = Duration::from_secs(10);
/// After stopping the scheduler, time for the runs it started to be stored.
const DRAIN: Duration = Duration::from_secs(2);
const LATENESS_METRIC: &str = "bankbridge_check_scheduler_lateness_seconds";

pub(super) async fn checks_section(dir: &Path, table: &mut Table) {
    let config = SandboxConfig {
        seed: 1,
        accounts: 1,
        transactions: 10,
        years: 1,
        ..SandboxConfig::default()
    };
    let sandbox = match bankbridge_sandbox::spawn(config).await {
        Ok(s) => s,
        Err(e) => {
            return table.error(
                "checks: sandbox",
                &anyhow!(e).context("starting the sandbox"),
            );
        }
    };
    example_flow(&sandbox, table).await;
    scheduler(&sandbox, dir, table).await;
    if let Err(e) = sandbox.shutdown().await {
        eprintln!("bench: stopping the checks sandbox: {e}");
    }
}

// ------------------------------------------------------------ example flow

async fn example_flow(sandbox: &SandboxHandle, table: &mut Table) {
    let flow = match flow::load(Path::new(EXAMPLE_FLOW)) {
        Ok(f) => Arc::new(f),
        Err(e) => return table.error("check run, example flow", &anyhow!(e)),
    };
    let creds = sandbox.state().xs2a_playground().credentials();
    let overrides = [
        (
            "base_url",
            format!("{}/xs2a-playground", sandbox.root_url()),
        ),
        ("api_token", creds.api_token),
        ("password", creds.password),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let opts = RunOptions {
        overrides,
        // Nothing from this process's environment (BANKBRIDGE_VAR_*).
        env: Arc::new(|_| None),
        secrets: Arc::new(|_: &str| None),
        ..RunOptions::default()
    };
    let runner = Runner::new();

    // One run first: the playground makes its RSA key on first use, and a
    // flow that does not pass here would only fail 840 times below.
    eprintln!("bench: checks: the example flow once, as a warm-up…");
    let first = runner.run(&flow, &opts).await;
    if first.outcome == Outcome::Failed {
        return table.error(
            "check run, example flow (warm-up)",
            &anyhow!(
                "the flow failed at step {:?}: {}",
                first.failed_step.as_deref().unwrap_or("-"),
                first.error.as_deref().unwrap_or("no error text")
            ),
        );
    }

    for (clients, runs) in EXAMPLE_BATCHES {
        let measure = format!(
            "check run, {} ({} steps), {clients} concurrent",
            flow.file.rsplit('/').next().unwrap_or("klarna-xs2a.toml"),
            flow.steps.len()
        );
        eprintln!("bench: checks: {runs} runs of the example flow, {clients} at a time…");
        match batch(&runner, &flow, &opts, clients, runs).await {
            Ok(b) => {
                let n = b.latencies.len();
                let secs = b.elapsed.as_secs_f64().max(1e-9);
                let mean_ms = b.latencies.iter().sum::<f64>() / n.max(1) as f64;
                let per_run = b.requests as f64 / n.max(1) as f64;
                let mut note = format!(
                    "p50 {:.1} ms, p99 {:.1} ms a run; {:.2} ms a request on average \
                     ({:.0} requests a run, {} requests/s); {} failed {}",
                    percentile(&b.latencies, 0.50),
                    percentile(&b.latencies, 0.99),
                    mean_ms / per_run.max(1.0),
                    per_run,
                    thousands((b.requests as f64 / secs).round() as u64),
                    b.failed,
                    mark(b.failed == 0),
                );
                if b.degraded > 0 {
                    note.push_str(&format!(", {} degraded", b.degraded));
                }
                if let Some(f) = &b.first_failure {
                    table.failed = true;
                    eprintln!(
                        "bench: checks: {} of {runs} runs FAILED; the first: {f}",
                        b.failed
                    );
                    note.push_str(&format!(" (first: {f})"));
                }
                table.push(
                    measure,
                    thousands(n as u64),
                    Some(b.elapsed),
                    format!("{} runs/s", thousands((n as f64 / secs).round() as u64)),
                    "",
                    note,
                );
            }
            Err(e) => table.error(measure, &e),
        }
    }
}

struct Batch {
    elapsed: Duration,
    /// Per run, milliseconds, sorted.
    latencies: Vec<f64>,
    requests: u64,
    failed: usize,
    degraded: usize,
    first_failure: Option<String>,
}

/// `runs` runs of `flow`, `clients` at a time, with one shared runner.
async fn batch(
    runner: &Runner,
    flow: &Arc<Flow>,
    opts: &RunOptions,
    clients: usize,
    runs: usize,
) -> Result<Batch> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (runner, flow, opts, next) = (runner.clone(), flow.clone(), opts.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < runs {
                let t = Instant::now();
                let r = runner.run(&flow, &opts).await;
                let took = t.elapsed();
                let requests: u64 = r.steps.iter().map(|s| u64::from(s.requests)).sum();
                let failure = (r.outcome == Outcome::Failed).then(|| {
                    format!(
                        "step {:?}: {}",
                        r.failed_step.as_deref().unwrap_or("-"),
                        r.error.as_deref().unwrap_or("no error text")
                    )
                });
                done.push((took, r.outcome, requests, failure));
            }
            done
        }));
    }
    let mut b = Batch {
        elapsed: Duration::ZERO,
        latencies: Vec::with_capacity(runs),
        requests: 0,
        failed: 0,
        degraded: 0,
        first_failure: None,
    };
    for t in tasks {
        for (took, outcome, requests, failure) in t.await.context("a run task panicked")? {
            b.latencies.push(took.as_secs_f64() * 1000.0);
            b.requests += requests;
            match outcome {
                Outcome::Passed => {}
                Outcome::Degraded => b.degraded += 1,
                Outcome::Failed => b.failed += 1,
            }
            if b.first_failure.is_none() {
                b.first_failure = failure;
            }
        }
    }
    b.elapsed = started.elapsed();
    b.latencies.sort_by(f64::total_cmp);
    Ok(b)
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

// ------------------------------------------------------------ scheduler

/// One request a run, to a cheap playground route, every second, no jitter.
fn small_flow(i: usize, url: &str) -> String {
    format!(
        r#"name = "bench flow {i}"
timeout = "10s"
certificate_check = false

[schedule]
every = "{}s"
jitter = "0s"

[[steps]]
name = "Playground stats"
url = "{url}"
assert = [{{ status = "2xx" }}]
"#,
        PERIOD.as_secs()
    )
}

fn rss_kib() -> u64 {
    vm_rss_kib(std::process::id()).unwrap_or(0)
}

struct Scheduled {
    load_time: Duration,
    window: Duration,
    /// The scheduler's lateness histogram over the window.
    lateness: Histogram,
    /// Runner start minus the round's slot, per run started in the window (ms, sorted).
    run_lateness: Vec<f64>,
    failed: usize,
    degraded: usize,
    first_failure: Option<String>,
    rss_before_kib: u64,
    rss_loaded_kib: u64,
    rss_end_kib: u64,
}

async fn scheduler(sandbox: &SandboxHandle, dir: &Path, table: &mut Table) {
    let flows = thousands(SCHEDULED_FLOWS as u64);
    let measure = format!(
        "checks scheduler: {flows} flows every {} s, round start lateness",
        PERIOD.as_secs()
    );
    let s = match scheduled(sandbox, dir).await {
        Ok(s) => s,
        Err(e) => return table.error(measure, &e),
    };
    let h = &s.lateness;
    let rounds = h.count;
    let secs = s.window.as_secs_f64().max(1e-9);
    let expected = SCHEDULED_FLOWS as f64 / PERIOD.as_secs_f64();
    let mut note = format!(
        "runner start after the slot: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} stored runs, \
         exact); scheduler metric: p50 ≤ {}, p99 ≤ {} (histogram bucket bounds), mean {:.1} ms; \
         tick 100 ms; {} failed {}",
        percentile(&s.run_lateness, 0.50),
        percentile(&s.run_lateness, 0.99),
        s.run_lateness.last().copied().unwrap_or(0.0),
        thousands(s.run_lateness.len() as u64),
        bound(h.quantile(0.50)),
        bound(h.quantile(0.99)),
        h.sum / rounds.max(1) as f64 * 1000.0,
        s.failed,
        mark(s.failed == 0),
    );
    if s.degraded > 0 {
        note.push_str(&format!(", {} degraded", s.degraded));
    }
    if let Some(f) = &s.first_failure {
        table.failed = true;
        eprintln!(
            "bench: checks: {} scheduled runs FAILED; the first: {f}",
            s.failed
        );
        note.push_str(&format!(" (first: {f})"));
    }
    table.push(
        measure,
        thousands(rounds),
        Some(s.window),
        format!(
            "{} rounds/s",
            thousands((rounds as f64 / secs).round() as u64)
        ),
        format!(
            "expected {}/s {}",
            thousands(expected.round() as u64),
            mark(rounds as f64 / secs >= expected * 0.95)
        ),
        note,
    );

    let per_flow =
        |after: u64| after.saturating_sub(s.rss_before_kib) as f64 / SCHEDULED_FLOWS as f64;
    table.push(
        format!("checks scheduler: memory per scheduled flow ({flows} flows)"),
        flows,
        Some(s.load_time),
        format!("{:.1} KiB/flow", per_flow(s.rss_end_kib)),
        "",
        format!(
            "RSS {:.1} MiB before; {:.1} MiB once loaded ({:.1} KiB/flow, folder read in {:.2} s); \
             {:.1} MiB after {} s of rounds ({:.1} KiB/flow: flow, state, metric series, SQLite \
             cache, runs in flight)",
            s.rss_before_kib as f64 / 1024.0,
            s.rss_loaded_kib as f64 / 1024.0,
            per_flow(s.rss_loaded_kib),
            s.load_time.as_secs_f64(),
            s.rss_end_kib as f64 / 1024.0,
            (WARM_UP + MEASURED).as_secs(),
            per_flow(s.rss_end_kib),
        ),
    );
}

/// "≤ 64 ms" for a bucket's upper bound in seconds.
fn bound(le: f64) -> String {
    if le.is_infinite() {
        "+Inf".into()
    } else {
        format!("{:.0} ms", le * 1000.0)
    }
}

async fn scheduled(sandbox: &SandboxHandle, dir: &Path) -> Result<Scheduled> {
    let flows_dir = dir.join("checks-flows");
    std::fs::create_dir_all(&flows_dir)?;
    let url = format!("{}/_sandbox/xs2a-playground/stats", sandbox.root_url());
    eprintln!("bench: checks: writing {SCHEDULED_FLOWS} flow files…");
    for i in 0..SCHEDULED_FLOWS {
        std::fs::write(
            flows_dir.join(format!("bench-{i:04}.toml")),
            small_flow(i, &url),
        )?;
    }
    let store = bankbridge_store::open(&format!("sqlite://{}", dir.join("checks.db").display()))
        .await
        .context("opening the checks store")?;
    let metrics = Arc::new(Metrics::new());

    let rss_before_kib = rss_kib();
    let service = ChecksService::new(
        ChecksConfig::new(&flows_dir),
        store.clone(),
        store.clone(),
        metrics.clone(),
        CheckSecrets::new(store.clone(), Arc::new(MasterKey::generate())),
    );
    eprintln!(
        "bench: checks: the scheduler with {SCHEDULED_FLOWS} flows for {} s…",
        (WARM_UP + MEASURED).as_secs()
    );
    let started = Instant::now();
    let task = service.spawn();
    let result = drive(&service, &metrics, started).await;
    task.abort();
    let Driven {
        load_time,
        rss_loaded_kib,
        window,
        lateness,
        from,
        to,
        rss_end_kib,
        anchors,
    } = result?;

    // Runs started before `to` finish and are stored (the sandbox is still up).
    tokio::time::sleep(DRAIN).await;
    let runs = stored_runs(store.as_ref()).await?;
    let mut run_lateness = Vec::new();
    let (mut failed, mut degraded, mut first_failure) = (0, 0, None);
    let period_us = PERIOD.as_micros() as i64;
    for r in runs
        .iter()
        .filter(|r| r.started_at >= from && r.started_at < to)
    {
        let anchor = anchors
            .get(&r.check_id)
            .with_context(|| format!("a run of an unknown check {:?}", r.check_id))?;
        // Slots are `anchor + k × period` (no jitter, skipped slots stay on
        // the grid), so the run's lateness is its offset into the period.
        let off = (r.started_at - *anchor)
            .num_microseconds()
            .context("offset overflow")?
            .rem_euclid(period_us);
        run_lateness.push(off as f64 / 1000.0);
        match r.outcome.as_str() {
            "passed" => {}
            "degraded" => degraded += 1,
            _ => {
                failed += 1;
                if first_failure.is_none() {
                    first_failure = Some(format!(
                        "{}: step {:?}: {}",
                        r.check_id,
                        r.failed_step.as_deref().unwrap_or("-"),
                        r.error.as_deref().unwrap_or("no error text")
                    ));
                }
            }
        }
    }
    if run_lateness.is_empty() {
        bail!("no runs stored in the measured window");
    }
    run_lateness.sort_by(f64::total_cmp);
    Ok(Scheduled {
        load_time,
        window,
        lateness,
        run_lateness,
        failed,
        degraded,
        first_failure,
        rss_before_kib,
        rss_loaded_kib,
        rss_end_kib,
    })
}

/// What [`drive`] saw.
struct Driven {
    load_time: Duration,
    rss_loaded_kib: u64,
    window: Duration,
    lateness: Histogram,
    /// The measured window in wall-clock time.
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    rss_end_kib: u64,
    /// Each check's next slot: its cadence grid.
    anchors: HashMap<String, DateTime<Utc>>,
}

/// Waits for the folder to load, warms up, then measures one window.
async fn drive(service: &ChecksService, metrics: &Metrics, started: Instant) -> Result<Driven> {
    loop {
        let (list, errors) = service.summaries();
        if let Some(e) = errors.first() {
            bail!("{} flow files refused, e.g. {e}", errors.len());
        }
        if list.len() >= SCHEDULED_FLOWS {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!(
                "only {} of {SCHEDULED_FLOWS} flows loaded after 30 s",
                list.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let load_time = started.elapsed();
    let rss_loaded_kib = rss_kib();

    tokio::time::sleep((started + WARM_UP).saturating_duration_since(Instant::now())).await;
    let before = Histogram::parse(&metrics.encode(), LATENESS_METRIC)?;
    let (from, t0) = (Utc::now(), Instant::now());
    tokio::time::sleep(MEASURED).await;
    let after = Histogram::parse(&metrics.encode(), LATENESS_METRIC)?;
    let (to, window) = (Utc::now(), t0.elapsed());
    let rss_end_kib = rss_kib();
    let anchors = service
        .summaries()
        .0
        .into_iter()
        .map(|s| (s.id, s.next_run_at))
        .collect();
    Ok(Driven {
        load_time,
        rss_loaded_kib,
        window,
        lateness: after.minus(&before),
        from,
        to,
        rss_end_kib,
        anchors,
    })
}

/// Every stored run, newest first.
async fn stored_runs(store: &dyn Store) -> Result<Vec<CheckRun>> {
    let mut all = Vec::new();
    let mut before_id = None;
    loop {
        let page = store
            .list_check_runs(&CheckRunQuery {
                before_id,
                limit: 5_000,
                ..CheckRunQuery::default()
            })
            .await?;
        let Some(last) = page.last() else {
            return Ok(all);
        };
        before_id = Some(last.id);
        all.extend(page);
    }
}

/// A Prometheus histogram read back from the text exposition.
#[derive(Debug, PartialEq)]
struct Histogram {
    /// (upper bound in seconds, cumulative count), ascending, ending with +Inf.
    buckets: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn parse(text: &str, name: &str) -> Result<Histogram> {
        let mut h = Histogram {
            buckets: Vec::new(),
            sum: 0.0,
            count: 0,
        };
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            let value = |s: &str| s.split_whitespace().next().unwrap_or("").to_owned();
            if let Some(v) = rest.strip_prefix("_sum ") {
                h.sum = value(v).parse().with_context(|| format!("in {line:?}"))?;
            } else if let Some(v) = rest.strip_prefix("_count ") {
                h.count = value(v).parse().with_context(|| format!("in {line:?}"))?;
            } else if let Some(v) = rest.strip_prefix("_bucket{le=\"") {
                let (le, n) = v
                    .split_once("\"}")
                    .with_context(|| format!("in {line:?}"))?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().with_context(|| format!("in {line:?}"))?
                };
                h.buckets.push((
                    le,
                    value(n).parse().with_context(|| format!("in {line:?}"))?,
                ));
            }
        }
        if h.buckets.is_empty() {
            bail!("no {name} histogram in the metrics");
        }
        h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Ok(h)
    }

    /// The observations made between `earlier` and `self`.
    fn minus(&self, earlier: &Histogram) -> Histogram {
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|&(le, n)| {
                    let before = earlier
                        .buckets
                        .iter()
                        .find(|b| b.0 == le)
                        .map_or(0, |b| b.1);
                    (le, n.saturating_sub(before))
                })
                .collect(),
            sum: self.sum - earlier.sum,
            count: self.count.saturating_sub(earlier.count),
        }
    }

    /// The upper bound of the bucket holding quantile `q` (seconds).
    fn quantile(&self, q: f64) -> f64 {
        let rank = ((self.count as f64 * q).ceil() as u64).max(1);
        self.buckets
            .iter()
            .find(|b| b.1 >= rank)
            .map_or(f64::INFINITY, |b| b.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_histogram_is_read_from_the_metrics() {
        let m = Metrics::new();
        let empty = Histogram::parse(&m.encode(), LATENESS_METRIC).unwrap();
        assert_eq!(empty.count, 0);
        for ms in [0, 3, 3, 50, 900] {
            m.observe_lateness(Duration::from_millis(ms));
        }
        let h = Histogram::parse(&m.encode(), LATENESS_METRIC)
            .unwrap()
            .minus(&empty);
        assert_eq!(h.count, 5);
        assert!((h.sum - 0.956).abs() < 1e-9);
        assert_eq!(h.buckets.last().unwrap().0, f64::INFINITY);
        assert_eq!(h.quantile(0.5), 0.004);
        assert_eq!(h.quantile(0.99), 1.024);
    }

    #[test]
    fn the_small_flow_parses() {
        let f = flow::parse(
            "bench-0001",
            "bench-0001.toml",
            &small_flow(1, "http://127.0.0.1:1/x"),
        )
        .unwrap();
        assert_eq!(f.steps.len(), 1);
        assert_eq!(f.schedule.every(), PERIOD);
        assert_eq!(f.schedule.jitter(), Duration::ZERO);
    }

    #[test]
    fn the_example_flow_loads() {
        let f = flow::load(Path::new(EXAMPLE_FLOW)).unwrap();
        assert_eq!(f.steps.len(), 11);
    }

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
