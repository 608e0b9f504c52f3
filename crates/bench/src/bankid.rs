//! BankID: the simulator's capacity (orders started per second, collects
//! per second) and 10,000 concurrent pending orders polled every 2 s
//! through the order driver, with memory printed for both sides.
//!
//! The simulator runs as a child process (`bankbridge sandbox`), so the
//! drivers' memory (this process) and the simulator's are measured apart.
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bankbridge_bankid::BankIdClient;
use bankbridge_bankid::driver::{DriveOptions, OrderApi, OrderEvent, StartedOrder, drive_with};
use bankbridge_bankid::types::AuthRequest;
use bankbridge_bankid::{BankIdError, CollectResponse};
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

use super::{Table, thousands, vm_rss_kib};

const CLIENTS: usize = 32;
const CAPACITY_SECS: u64 = 5;
/// Orders the start measure makes at most: well under the simulator's cap
/// (200,000 held), with room for the pending measure's orders after it, so
/// a fast machine ends the measure early instead of meeting the cap.
const MAX_STARTS: u64 = 150_000;
const PENDING_ORDERS: usize = 10_000;
/// Long enough for several 2 s polls of every order, short of the
/// simulator's 30 s start window.
const PENDING_SECS: u64 = 16;

struct Simulator {
    child: tokio::process::Child,
    client: BankIdClient,
}

async fn start_simulator(dir: &std::path::Path, hooks: &super::Hooks) -> Result<Simulator> {
    let exe = std::env::current_exe().context("finding the bankbridge binary")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut child = tokio::process::Command::new(exe)
        .args([
            "sandbox",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--bankid-port",
            "0",
            "--transactions",
            "10",
        ])
        .env("BANKBRIDGE_HOME", dir.join("bankid-home"))
        .env("BANKBRIDGE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting bankbridge sandbox")?;
    let stdout = child.stdout.take().context("the sandbox's stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    loop {
        match lines.next_line().await? {
            Some(l) if l.starts_with("try it:") => break,
            Some(_) => {}
            None => bail!("the sandbox ended before serving BankID"),
        }
    }
    let client = (hooks.sandbox_bankid_client)(format!("http://127.0.0.1:{port}")).await?;
    Ok(Simulator { child, client })
}

pub(super) async fn bankid_section(dir: &std::path::Path, table: &mut Table, hooks: &super::Hooks) {
    let sim = match start_simulator(dir, hooks).await {
        Ok(sim) => sim,
        Err(e) => return table.error("BankID simulator", &e),
    };
    let measure = "BankID simulator: orders started (auth)";
    let mut refs = Vec::new();
    match capacity(&sim.client, true, &mut refs).await {
        Ok((n, d)) => table.push(
            measure,
            thousands(n),
            Some(d),
            format!(
                "{} orders/s",
                thousands((n as f64 / d.as_secs_f64()) as u64)
            ),
            "",
            format!(
                "{CLIENTS} concurrent RP clients over mutual TLS, simulator in a child process"
            ),
        ),
        Err(e) => table.error(measure, &e),
    }
    let measure = "BankID simulator: collects";
    match capacity(&sim.client, false, &mut refs).await {
        Ok((n, d)) => table.push(
            measure,
            thousands(n),
            Some(d),
            format!(
                "{} collects/s",
                thousands((n as f64 / d.as_secs_f64()) as u64)
            ),
            "",
            format!("{CLIENTS} concurrent RP clients, over the pending orders just started"),
        ),
        Err(e) => table.error(measure, &e),
    }
    let measure = format!(
        "{} pending orders driven at once (collect every 2 s, QR every 1 s)",
        thousands(PENDING_ORDERS as u64)
    );
    match pending_orders(&sim).await {
        Ok(r) => table.push(
            measure,
            thousands(PENDING_ORDERS as u64),
            Some(r.elapsed),
            format!("{} collects/s", thousands((r.collects as f64 / r.elapsed.as_secs_f64()) as u64)),
            format!("expected ≈ {}/s", thousands(PENDING_ORDERS as u64 / 2)),
            format!(
                "{} QR frames, {} errors; drivers' RSS {} MiB → {} MiB ({:.1} KiB/order); simulator RSS {} MiB",
                thousands(r.qr_frames),
                r.errors,
                r.rss_before_kib / 1024,
                r.rss_peak_kib / 1024,
                (r.rss_peak_kib.saturating_sub(r.rss_before_kib)) as f64 / PENDING_ORDERS as f64,
                r.sim_rss_kib / 1024,
            ),
        ),
        Err(e) => table.error(measure, &e),
    }
    drop(sim);
}

/// `CLIENTS` tasks starting orders (or collecting `refs`) for `CAPACITY_SECS`.
async fn capacity(
    client: &BankIdClient,
    start: bool,
    refs: &mut Vec<String>,
) -> Result<(u64, Duration)> {
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(CAPACITY_SECS);
    let shared_refs = Arc::new(std::mem::take(refs));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (client, done, shared_refs) = (client.clone(), done.clone(), shared_refs.clone());
        tasks.push(tokio::spawn(async move {
            let mut made = Vec::new();
            let mut i = c;
            while Instant::now() < until {
                if start && done.load(Ordering::Relaxed) >= MAX_STARTS {
                    break;
                }
                if start {
                    let order = client.auth(&AuthRequest::new("192.0.2.1")).await?;
                    made.push(order.order_ref);
                } else {
                    if shared_refs.is_empty() {
                        bail!("no orders to collect");
                    }
                    client.collect(&shared_refs[i % shared_refs.len()]).await?;
                    i += CLIENTS;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(made)
        }));
    }
    let mut made = Vec::new();
    for t in tasks {
        made.extend(t.await??);
    }
    let elapsed = started.elapsed();
    *refs = if start {
        made
    } else {
        Arc::try_unwrap(shared_refs).unwrap_or_default()
    };
    Ok((done.load(Ordering::Relaxed), elapsed))
}

/// The RP client, counting the collects the drivers make.
struct Counting {
    client: BankIdClient,
    collects: Arc<AtomicU64>,
}

impl OrderApi for Counting {
    fn collect(
        &self,
        order_ref: &str,
    ) -> impl Future<Output = Result<CollectResponse, BankIdError>> + Send {
        self.collects.fetch_add(1, Ordering::Relaxed);
        self.client.collect(order_ref)
    }

    fn cancel(&self, order_ref: &str) -> impl Future<Output = Result<(), BankIdError>> + Send {
        self.client.cancel(order_ref)
    }
}

struct PendingRun {
    elapsed: Duration,
    collects: u64,
    qr_frames: u64,
    errors: u64,
    rss_before_kib: u64,
    rss_peak_kib: u64,
    sim_rss_kib: u64,
}

async fn pending_orders(sim: &Simulator) -> Result<PendingRun> {
    // Start the orders first (their QR clocks start now).
    let mut orders = Vec::with_capacity(PENDING_ORDERS);
    let mut starts = Vec::new();
    for chunk in 0..CLIENTS {
        let client = sim.client.clone();
        starts.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for _ in (chunk..PENDING_ORDERS).step_by(CLIENTS) {
                mine.push(client.auth(&AuthRequest::new("192.0.2.2")).await?);
            }
            Ok::<_, anyhow::Error>(mine)
        }));
    }
    for s in starts {
        orders.extend(s.await??);
    }
    let rss_before_kib = vm_rss_kib(std::process::id()).unwrap_or(0);
    let collects = Arc::new(AtomicU64::new(0));
    let qr_frames = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let started = Instant::now();
    let mut drives = Vec::with_capacity(PENDING_ORDERS);
    let api = Arc::new(Counting {
        client: sim.client.clone(),
        collects: collects.clone(),
    });
    for (i, order) in orders.into_iter().enumerate() {
        let api = api.clone();
        let (qr_frames, errors) = (qr_frames.clone(), errors.clone());
        let options = DriveOptions::default().with_cancel(stop.child_token());
        // Orders arrive spread over one poll interval, as a real RP's do,
        // rather than all collecting in the same instant.
        let offset = Duration::from_secs(2) * i as u32 / PENDING_ORDERS as u32;
        drives.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let started = StartedOrder::from(order);
            let _ = drive_with(api.as_ref(), started, options, |event| match event {
                OrderEvent::Qr(_) => {
                    qr_frames.fetch_add(1, Ordering::Relaxed);
                }
                OrderEvent::Error(_) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            })
            .await;
        }));
    }
    let mut rss_peak_kib = rss_before_kib;
    while started.elapsed() < Duration::from_secs(PENDING_SECS) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_peak_kib = rss_peak_kib.max(vm_rss_kib(std::process::id()).unwrap_or(0));
    }
    let elapsed = started.elapsed();
    let collected = collects.load(Ordering::Relaxed);
    let sim_rss_kib = sim.child.id().and_then(vm_rss_kib).unwrap_or(0);
    stop.cancel();
    for d in drives {
        let _ = d.await;
    }
    Ok(PendingRun {
        elapsed,
        collects: collected,
        qr_frames: qr_frames.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        rss_before_kib,
        rss_peak_kib,
        sim_rss_kib,
    })
}
