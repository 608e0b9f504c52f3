//! The benchmark behind `bankbridge bench`: speed figures as one printed
//! table (never assertions). A crate of its own so the binary's commands
//! stay small, and so that it may use the store's `test-support` helpers
//! (synthetic rows, the raw bulk insert) that production code never sees.
//! It calls the real engine (its window step, [`bankbridge_sync::window`]),
//! store, server and simulators, never a copy of them.
//!
//! Everything runs in a throwaway directory, all traffic on 127.0.0.1:
//!
//! 1. a full sync of the in-process sandbox (checked against its truth), then
//!    a no-op re-sync;
//! 2. "reconcile alone": the same windows, fetched beforehand, reconciled and
//!    committed into a fresh store exactly as the engine does, without network;
//! 3. the baseline: the same rows bulk-inserted with plain multi-row INSERTs,
//!    one transaction per window, no reads, no diff;
//! 4. `GET /api/v1/transactions?limit=100` under `wrk`, with and without the
//!    server's page cache;
//! 5. exports run as child processes (`bankbridge export`), their peak RSS
//!    measured, at two sizes, to show memory does not grow with the rows; and
//!    the JSON export beside `sqlite3 -json` printing the same rows;
//! 6. card service logins ([`cards`]): per-login latency over HTTP with a
//!    virtual card in an in-process reader and behind a real pcscd, at 1 and
//!    16 clients, against the direct algorithm time.
//!
//! 7. BankID ([`bankid`]): the simulator's capacity (orders started and
//!    collects per second) and 10,000 pending orders driven at once, with
//!    memory printed for the drivers and the simulator.
//!
//! 8. flow checks ([`checks`]): runs per second of the example Klarna XS2A
//!    flow against the sandbox at 1 and 32 concurrent runs, and the
//!    scheduler with 1,000 flows due every second: round start lateness,
//!    rounds per second and memory per scheduled flow.
//!
//! `--only cards` (or sync, api, export, bankid, checks; repeatable) runs just those parts.
//!
//! Progress goes to stderr, the table to stdout. A step that fails prints an
//! error row and the others still run; the exit status is then 1. Missed
//! targets are shown, not failed.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bankbridge_bankid::BankIdClient;
use bankbridge_core::{
    ConnectionSettings, Credentials, DateWindow, FetchedAccount, MasterKey, Secret, WindowPage,
};
use bankbridge_sandbox::{SandboxConfig, SandboxHandle};
use bankbridge_store::{
    BankWrites, Checkpoint, Connections, Lease, LeaseToken, Scope, SqliteStore, Store, TxWrite,
};
use bankbridge_sync::plan::{self, PlanBounds};
use bankbridge_sync::reconcile;
use bankbridge_sync::window;
use bankbridge_sync::{ConnectorFactory, SyncOptions, SyncSummary, Syncer};
use futures::future::BoxFuture;
use raw::{RawWindow, bench_account, raw_sqlite_insert, synthetic_rows};

mod bankid;
mod cards;
mod checks;
mod dashboard;
pub mod raw;
mod xs2a;
use rust_decimal::Decimal;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Transactions per account in the simulated bank.
    #[arg(long, default_value_t = 100_000)]
    pub transactions: usize,
    /// Accounts in the simulated bank.
    #[arg(long, default_value_t = 3)]
    pub accounts: usize,
    /// Rows of the large export (one of 100,000 rows runs too, to compare peak memory).
    #[arg(long, default_value_t = 1_000_000)]
    pub export_rows: usize,
    /// Seconds of load per `wrk` run.
    #[arg(long, default_value_t = 10)]
    pub wrk_seconds: u64,
    /// Leave out the HTTP API measurements.
    #[arg(long)]
    pub skip_api: bool,
    /// Leave out the export measurements.
    #[arg(long)]
    pub skip_export: bool,
    /// Leave out the card service measurements.
    #[arg(long)]
    pub skip_cards: bool,
    /// Leave out the BankID measurements.
    #[arg(long)]
    pub skip_bankid: bool,
    /// Leave out the flow-check measurements.
    #[arg(long)]
    pub skip_checks: bool,
    /// Leave out the dashboard measurements.
    #[arg(long)]
    pub skip_dashboard: bool,
    /// Leave out the NextGenPSD2 (xs2a) sync.
    #[arg(long)]
    pub skip_xs2a: bool,
    /// Run only these sections (repeatable): sync, api, dashboard, export, cards, bankid, checks, xs2a.
    #[arg(long, value_enum)]
    pub only: Vec<Section>,
}

/// The parts of the benchmark.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// Full sync, no-op re-sync, reconcile vs raw insert.
    Sync,
    /// `/api/v1/transactions` under wrk (needs the sync section's database).
    Api,
    /// The dashboard's overview and first transactions page (needs the sync section's database).
    Dashboard,
    /// CSV/JSON/OFX exports and their peak memory.
    Export,
    /// Card service logins (in-process virtual card and real pcscd).
    Cards,
    /// BankID simulator capacity and 10,000 driven orders.
    Bankid,
    /// Flow-check runs per second and the scheduler with 1,000 flows.
    Checks,
    /// A full sync of 100,000 transactions from the NextGenPSD2 sandbox bank.
    Xs2a,
}

impl BenchArgs {
    fn wants(&self, section: Section) -> bool {
        let skipped = match section {
            Section::Sync => false,
            Section::Api => self.skip_api,
            Section::Dashboard => self.skip_dashboard,
            Section::Export => self.skip_export,
            Section::Cards => self.skip_cards,
            Section::Bankid => self.skip_bankid,
            Section::Checks => self.skip_checks,
            Section::Xs2a => self.skip_xs2a,
        };
        if self.only.is_empty() {
            !skipped
        } else {
            self.only.contains(&section)
                || (section == Section::Sync
                    && (self.only.contains(&Section::Api)
                        || self.only.contains(&Section::Dashboard)))
        }
    }
}

/// Targets from the issue.
const RECONCILE_VS_RAW_MIN: f64 = 0.50;
const NOOP_VS_FULL_MAX: f64 = 0.10;
/// `GET /api/v1/transactions?limit=100` with the page cache on and off.
const API_MIN_RPS_CACHED: f64 = 10_000.0;
const API_MIN_RPS_UNCACHED: f64 = 2_500.0;
/// The JSON export's wall time over `sqlite3 -json` printing the same rows.
const EXPORT_JSON_VS_SQLITE3_MAX: f64 = 1.25;
/// Peak memory of the large export over the small one still counted as "constant".
const EXPORT_PEAK_RATIO_MAX: f64 = 1.25;
const EXPORT_SMALL_ROWS: usize = 100_000;
const WRK_THREADS: u32 = 2;
const WRK_CONNECTIONS: u32 = 16;
const API_PATH: &str = "/api/v1/transactions?limit=100";

/// One line of the printed table.
struct Row {
    measure: String,
    rows: String,
    seconds: String,
    rate: String,
    target: String,
    note: String,
}

#[derive(Default)]
struct Table {
    rows: Vec<Row>,
    failed: bool,
}

impl Table {
    fn push(
        &mut self,
        measure: impl Into<String>,
        rows: impl Into<String>,
        seconds: Option<Duration>,
        rate: impl Into<String>,
        target: impl Into<String>,
        note: impl Into<String>,
    ) {
        self.rows.push(Row {
            measure: measure.into(),
            rows: rows.into(),
            seconds: seconds.map_or(String::new(), |d| format!("{:.3}", d.as_secs_f64())),
            rate: rate.into(),
            target: target.into(),
            note: note.into(),
        });
    }

    fn error(&mut self, measure: impl Into<String>, e: &anyhow::Error) {
        let measure = measure.into();
        eprintln!("bench: {measure} failed: {e:#}");
        self.failed = true;
        self.push(measure, "", None, "", "", format!("ERROR: {e:#}"));
    }

    fn print(&self) {
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                vec![
                    r.measure.clone(),
                    r.rows.clone(),
                    r.seconds.clone(),
                    r.rate.clone(),
                    r.target.clone(),
                    r.note.clone(),
                ]
            })
            .collect();
        print_table(
            &["MEASURE", "ROWS", "SECONDS", "RATE", "VS TARGET", "NOTE"],
            &rows,
        );
    }
}

/// What the benchmark needs from the binary that runs it.
pub struct Hooks {
    /// A BankID client of the sandbox whose root URL is given.
    pub sandbox_bankid_client:
        Box<dyn Fn(String) -> BoxFuture<'static, Result<BankIdClient>> + Send + Sync>,
}

/// Left-aligned columns, two spaces apart.
fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}

pub async fn run(args: BenchArgs, hooks: Hooks) -> Result<ExitCode> {
    let dir = tempfile::Builder::new()
        .prefix("bankbridge-bench-")
        .tempdir()?;
    eprintln!(
        "bench: working in {} (deleted at the end)",
        dir.path().display()
    );
    if cfg!(debug_assertions) {
        eprintln!("bench: this is a debug build; use `cargo run --release -p bankbridge -- bench`");
    }
    let load_at_start = load_average();
    let mut table = Table::default();

    let synced = if args.wants(Section::Sync) {
        sync_section(&args, dir.path(), &mut table).await
    } else {
        None
    };
    if args.wants(Section::Api) {
        match &synced {
            Some((store, _)) => {
                api_section(args.wrk_seconds, store.clone(), dir.path(), &mut table).await
            }
            None => table.error(
                format!("API GET {API_PATH}"),
                &anyhow!("no synced database to serve (the sync step failed)"),
            ),
        }
    }
    if args.wants(Section::Dashboard) {
        match &synced {
            Some((store, _)) => {
                dashboard::dashboard_section(store.as_ref(), dir.path(), &mut table).await
            }
            None => table.error(
                "dashboard pages",
                &anyhow!("no synced database to serve (the sync step failed)"),
            ),
        }
    }
    drop(synced);
    if args.wants(Section::Export) {
        export_section(args.export_rows, dir.path(), &mut table).await;
    }
    if args.wants(Section::Cards) {
        cards::cards_section(dir.path(), &mut table).await;
    }
    if args.wants(Section::Bankid) {
        bankid::bankid_section(dir.path(), &mut table, &hooks).await;
    }
    if args.wants(Section::Checks) {
        checks::checks_section(dir.path(), &mut table).await;
    }
    if args.wants(Section::Xs2a) {
        xs2a::xs2a_section(dir.path(), &mut table).await;
    }

    println!();
    println!(
        "bankbridge bench: {} accounts × {} transactions, {} cores, SQLite (WAL), {}; load average {} before the start",
        args.accounts,
        args.transactions,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if cfg!(debug_assertions) {
            "DEBUG BUILD (not representative)"
        } else {
            "release build"
        },
        load_at_start,
    );
    table.print();
    Ok(if table.failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

// ------------------------------------------------------------------ sync

/// Full sync, no-op re-sync, reconcile alone and the raw baseline. Returns
/// the synced store for the API step when the full sync worked.
async fn sync_section(
    args: &BenchArgs,
    dir: &Path,
    table: &mut Table,
) -> Option<(Arc<dyn Store>, Syncer)> {
    let config = SandboxConfig {
        seed: 1,
        accounts: args.accounts,
        transactions: args.transactions,
        years: 5,
        ..SandboxConfig::default()
    };
    if let Err(e) = config.validate() {
        table.error("sandbox", &anyhow::Error::from(e));
        return None;
    }
    eprintln!(
        "bench: generating the sandbox bank: {} accounts × {} transactions over 5 years…",
        args.accounts, args.transactions
    );
    let sandbox = match bankbridge_sandbox::spawn(config).await {
        Ok(s) => s,
        Err(e) => {
            table.error("sandbox", &anyhow!(e).context("starting the sandbox"));
            return None;
        }
    };

    let synced = match full_and_noop_sync(&sandbox, dir, table).await {
        Ok(s) => Some(s),
        Err(e) => {
            table.error("full sync (sandbox over loopback)", &e);
            None
        }
    };

    eprintln!("bench: fetching every window once more, to reconcile without network…");
    match fetch_all(&sandbox).await {
        Ok(fetched) => {
            if let Err(e) = reconcile_vs_raw(&fetched, dir, table).await {
                table.error("reconcile + commit / raw INSERT", &e);
            }
        }
        Err(e) => table.error("reconcile + commit (fetching the windows)", &e),
    }
    drop(sandbox);
    synced
}

async fn full_and_noop_sync(
    sandbox: &SandboxHandle,
    dir: &Path,
    table: &mut Table,
) -> Result<(Arc<dyn Store>, Syncer)> {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("sync.db")).await?);
    // In the key file the API section's `serve` reads: the database is bound
    // to the key that sealed its credentials.
    let key = Arc::new(MasterKey::create_file(
        &dir.join(API_HOME).join("master.key"),
    )?);
    let connectors: ConnectorFactory = Arc::new(|connection, settings, credentials| {
        bankbridge_connectors::build(&connection.connector, settings, credentials)
    });
    let syncer = Syncer::new(store.clone(), key.clone(), connectors);
    let creds = sandbox.credentials();
    let settings = ConnectionSettings::new(sandbox.base_url(), &creds.username);
    let connection = bankbridge_sync::add_connection(
        store.as_ref(),
        &key,
        "fibank-bench",
        "fibank",
        &settings,
        &Credentials::with_password(Secret::new(creds.password.clone())),
    )
    .await?;

    eprintln!("bench: full sync…");
    let windows = AtomicU64::new(0);
    let progress = |e: bankbridge_sync::SyncEvent| {
        if let bankbridge_sync::SyncEvent::WindowDone { .. } = e {
            let n = windows.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_multiple_of(100) {
                eprintln!("bench:   {n} windows");
            }
        }
    };
    let started = Instant::now();
    let full = syncer.sync(&connection, &progress).await?;
    let full_time = started.elapsed();
    let rows = full.inserted + full.updated + full.unchanged;
    let check = match check_truth(store.as_ref(), sandbox, &full).await {
        Ok(()) => "✓ matches the bank's truth".to_owned(),
        Err(e) => {
            table.failed = true;
            format!("✗ {e:#}")
        }
    };
    table.push(
        "full sync (sandbox over loopback)",
        thousands(rows),
        Some(full_time),
        per_second(rows, full_time, "tx/s"),
        "",
        format!(
            "{check}; {} windows, {} accounts",
            full.windows, full.accounts
        ),
    );

    eprintln!("bench: no-op re-sync…");
    // As the `sync` command does: the connection as stored now (with its kept session).
    let connection = store
        .get_connection(connection.id)
        .await?
        .context("the connection vanished")?;
    let started = Instant::now();
    let again = syncer.sync(&connection, &|_| {}).await?;
    let noop_time = started.elapsed();
    let ratio = noop_time.as_secs_f64() / full_time.as_secs_f64().max(1e-9);
    let wrote = again.inserted + again.updated + again.voided;
    table.push(
        "no-op re-sync",
        thousands(again.inserted + again.updated + again.unchanged),
        Some(noop_time),
        "",
        format!(
            "no-op/full {ratio:.3} (≤ {NOOP_VS_FULL_MAX:.2} {})",
            mark(ratio <= NOOP_VS_FULL_MAX)
        ),
        format!(
            "{} inserted, {} updated, {} voided {}; {} windows",
            again.inserted,
            again.updated,
            again.voided,
            mark(wrote == 0),
            again.windows
        ),
    );
    Ok((store, syncer))
}

/// Stored booked count and sum per IBAN equal the sandbox's, and the sync
/// inserted every booked and pending row once.
async fn check_truth(store: &dyn Store, sandbox: &SandboxHandle, s: &SyncSummary) -> Result<()> {
    let truth = sandbox.truth();
    let mut stored = HashMap::new();
    for a in store.list_accounts(None).await? {
        let t = store.account_totals(a.id).await?;
        let iban = a.iban.map(|i| i.to_string()).unwrap_or_default();
        stored.insert(iban, (t.booked_count, t.booked_sum));
    }
    let mut expected_rows = 0;
    for t in &truth {
        let sum: Decimal = t
            .booked_sum
            .parse()
            .with_context(|| format!("truth sum {:?}", t.booked_sum))?;
        match stored.get(&t.iban) {
            Some(&(n, s)) if n == t.booked_count && s == sum => {}
            Some((n, s)) => bail!(
                "{}: stored {n} booked rows summing {s}, the bank has {} summing {sum}",
                t.iban,
                t.booked_count
            ),
            None => bail!("{}: account not stored", t.iban),
        }
        expected_rows += t.booked_count + t.pending_count;
    }
    if stored.len() != truth.len() {
        bail!(
            "{} accounts stored, the bank has {}",
            stored.len(),
            truth.len()
        );
    }
    if s.inserted != expected_rows {
        bail!(
            "inserted {} rows, the bank has {expected_rows} booked and pending",
            s.inserted
        );
    }
    Ok(())
}

/// One account's windows as the engine plans them on a first sync, with their pages.
struct FetchedAccountWindows {
    account: FetchedAccount,
    /// (window, page, checkpoint after committing it), newest window first.
    windows: Vec<(DateWindow, WindowPage, Checkpoint)>,
}

/// Log in with the connector and fetch the windows a first sync fetches.
async fn fetch_all(sandbox: &SandboxHandle) -> Result<Vec<FetchedAccountWindows>> {
    let creds = sandbox.credentials();
    let settings = ConnectionSettings::new(sandbox.base_url(), &creds.username);
    let mut connector = bankbridge_connectors::build(
        "fibank",
        &settings,
        Credentials::with_password(Secret::new(creds.password.clone())),
    )
    .map_err(|e| anyhow!(e))?;
    connector.login().await?;
    let accounts = connector.accounts().await?;
    let empty_streak_limit = SyncOptions::default().empty_streak_limit;
    let mut out = Vec::new();
    for account in accounts {
        let bounds = PlanBounds::new(
            connector.today(),
            &connector.limits(),
            settings.window_days,
            settings.overlap_days,
            settings.since,
        );
        let mut cp = Checkpoint::default();
        let mut windows = Vec::new();
        while let Some(w) = plan::next_backfill_window(&cp, &bounds, bounds.window_days) {
            let page = connector
                .window(&account, w)
                .await
                .with_context(|| format!("fetching {} {w}", account.provider_id))?;
            let next = plan::after_backfill(
                &cp,
                &bounds,
                w,
                page.transactions.is_empty(),
                empty_streak_limit,
            );
            cp = next.clone();
            windows.push((w, page, next));
        }
        out.push(FetchedAccountWindows { account, windows });
    }
    Ok(out)
}

/// A fresh SQLite store with one connection holding `accounts`; returns the
/// account ids in the same order.
async fn fresh_store(
    path: &Path,
    accounts: &[FetchedAccountWindows],
) -> Result<(SqliteStore, LeaseToken, Vec<i64>)> {
    let store = SqliteStore::open(path).await?;
    let key = MasterKey::generate();
    let settings = ConnectionSettings::new("http://127.0.0.1:9/fibank", "bench");
    let connection = bankbridge_sync::add_connection(
        &store,
        &key,
        "bench",
        "fibank",
        &settings,
        &Credentials::with_password("pw".into()),
    )
    .await?;
    let now = chrono::Utc::now();
    let lease = match store
        .acquire_sync_lease(connection.id, "bench", now, now + chrono::Duration::days(1))
        .await?
    {
        Lease::Acquired(lease) => lease,
        Lease::Held { owner, .. } => bail!("a fresh bench database is leased by {owner}"),
    };
    let mut ids = Vec::new();
    for a in accounts {
        ids.push(store.upsert_account(lease, &a.account, now).await?.id);
    }
    Ok((store, lease, ids))
}

async fn reconcile_vs_raw(
    fetched: &[FetchedAccountWindows],
    dir: &Path,
    table: &mut Table,
) -> Result<()> {
    let total: u64 = fetched
        .iter()
        .flat_map(|a| &a.windows)
        .map(|(_, p, _)| p.transactions.len() as u64)
        .sum();
    let window_count: usize = fetched.iter().map(|a| a.windows.len()).sum();

    // The baseline's rows, made before any clock starts: the same identity
    // and fields reconcile gives them.
    let writes: Vec<Vec<Vec<TxWrite>>> = fetched
        .iter()
        .map(|a| {
            a.windows
                .iter()
                .map(|(_, page, _)| {
                    reconcile::identify(&page.transactions)
                        .into_iter()
                        .zip(&page.transactions)
                        .map(|((key, fp), tx)| reconcile::to_write(tx, key, fp, None))
                        .collect()
                })
                .collect()
        })
        .collect();

    // Raw before and after reconcile: both see the same warm file system cache,
    // and the faster run is the baseline.
    eprintln!("bench: raw SQLite bulk insert (run 1)…");
    let raw1 = raw_run(&dir.join("raw1.db"), fetched, &writes).await?;
    eprintln!("bench: reconcile + commit into a fresh store…");
    let (rec, void_pass, stats) = reconcile_run(&dir.join("reconcile.db"), fetched).await?;
    eprintln!("bench: raw SQLite bulk insert (run 2)…");
    let raw2 = raw_run(&dir.join("raw2.db"), fetched, &writes).await?;
    let raw = raw1.min(raw2);

    let ratio = raw.as_secs_f64() / rec.as_secs_f64().max(1e-9);
    table.push(
        "reconcile + commit alone (no network)",
        thousands(total),
        Some(rec),
        per_second(total, rec, "tx/s"),
        format!(
            "reconcile/raw {ratio:.2} (≥ {RECONCILE_VS_RAW_MIN:.2} {})",
            mark(ratio >= RECONCILE_VS_RAW_MIN)
        ),
        format!(
            "{window_count} windows of load_window+plan+commit_window; {} inserted, {} updated; \
             end-of-sync pending check +{:.3} s (not in the rate)",
            thousands(stats.inserted),
            stats.updated,
            void_pass.as_secs_f64()
        ),
    );
    table.push(
        "raw SQLite multi-row INSERT (baseline)",
        thousands(total),
        Some(raw),
        per_second(total, raw, "tx/s"),
        "",
        format!(
            "same rows and windows, 1 transaction each; best of {:.3} s / {:.3} s",
            raw1.as_secs_f64(),
            raw2.as_secs_f64()
        ),
    );
    Ok(())
}

async fn raw_run(
    path: &Path,
    fetched: &[FetchedAccountWindows],
    writes: &[Vec<Vec<TxWrite>>],
) -> Result<Duration> {
    let (store, lease, ids) = fresh_store(path, fetched).await?;
    let connection_id = lease.connection_id;
    store.close().await;
    let windows: Vec<RawWindow<'_>> = writes
        .iter()
        .zip(&ids)
        .flat_map(|(account_windows, &account_id)| {
            account_windows.iter().map(move |rows| RawWindow {
                connection_id,
                account_id,
                rows,
            })
        })
        .collect();
    Ok(raw_sqlite_insert(path, &windows).await?)
}

/// What the engine does per window on a first sync, minus the fetch: load the
/// stored rows, plan, commit with the checkpoint. Returns the time of that,
/// the time of the end-of-sync pending check, and the plan counts.
async fn reconcile_run(
    path: &Path,
    fetched: &[FetchedAccountWindows],
) -> Result<(Duration, Duration, reconcile::ReconcileStats)> {
    let (store, lease, ids) = fresh_store(path, fetched).await?;
    let mut stats = reconcile::ReconcileStats::default();
    let mut windows_time = Duration::ZERO;
    let mut void_time = Duration::ZERO;
    for (a, &account_id) in fetched.iter().zip(&ids) {
        // The engine's step takes each page by value: copied before the clock starts.
        let pages: Vec<_> = a.windows.iter().map(|(_, page, _)| page.clone()).collect();
        let started = Instant::now();
        let mut acc = window::AccountProgress::new(lease, account_id);
        let mut cp = Checkpoint::default();
        for ((w, _, next), page) in a.windows.iter().zip(pages) {
            let applied =
                window::apply_window(&store, &mut acc, *w, page, &cp, next, chrono::Utc::now())
                    .await?;
            stats.inserted += applied.stats.inserted;
            stats.updated += applied.stats.updated;
            stats.unchanged += applied.stats.unchanged;
            cp = next.clone();
        }
        windows_time += started.elapsed();

        let started = Instant::now();
        stats.voided += window::void_vanished(&store, &acc, &cp, chrono::Utc::now()).await?;
        void_time += started.elapsed();
    }
    store.close().await;
    Ok((windows_time, void_time, stats))
}

// ------------------------------------------------------------------ API

/// The data folder of the API section's `serve`.
const API_HOME: &str = "api-home";

/// The API as users run it: `bankbridge serve` in a child process over the
/// database the full sync just wrote, with its page cache on (the default)
/// and off.
async fn api_section(secs: u64, store: Arc<dyn Store>, dir: &Path, table: &mut Table) {
    let (token, record) = bankbridge_server::auth::new_token("bench-read", Scope::Read);
    if let Err(e) = store.create_token(&record).await {
        table.error(format!("API GET {API_PATH}"), &anyhow::Error::from(e));
        return;
    }
    let wrk = find_on_path("wrk");
    for (label, cache_ms, min_rps) in [
        ("page cache 1 s (default)", 1000u64, API_MIN_RPS_CACHED),
        ("page cache off", 0, API_MIN_RPS_UNCACHED),
    ] {
        let measure = format!("API GET {API_PATH}, {label}");
        let result = async {
            let cache = cache_ms.to_string();
            let (mut server, base) = serve_child(dir, &["--page-cache-ms", &cache]).await?;
            let result = api_load(
                &format!("{base}{API_PATH}"),
                token.expose(),
                wrk.as_deref(),
                secs,
            )
            .await;
            let _ = server.kill().await;
            result
        }
        .await;
        match result {
            Ok(Some(w)) => {
                let ok = w.rps >= min_rps && w.bad_responses == 0 && w.socket_errors.is_none();
                let mut note = format!(
                    "p50 {} ms, p99 {} ms, {} requests (`bankbridge serve` child, wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS}, same machine)",
                    w.p50_ms.map_or("?".into(), |v| format!("{v:.2}")),
                    w.p99_ms.map_or("?".into(), |v| format!("{v:.2}")),
                    thousands(w.requests),
                );
                if w.bad_responses > 0 {
                    note.push_str(&format!("; ✗ {} non-2xx responses", w.bad_responses));
                }
                if let Some(s) = &w.socket_errors {
                    note.push_str(&format!("; ✗ socket errors: {s}"));
                }
                table.push(
                    measure,
                    "100/page",
                    Some(Duration::from_secs(secs)),
                    format!("{} req/s", thousands(w.rps.round() as u64)),
                    format!("≥ {} req/s {}", thousands(min_rps as u64), mark(ok)),
                    note,
                );
            }
            Ok(None) => table.push(
                measure,
                "",
                None,
                "",
                "",
                "wrk not installed (apt-get install wrk)",
            ),
            Err(e) => table.error(measure, &e),
        }
    }
}

/// `bankbridge serve` on the sync section's database (this binary, a child
/// process), once it answers: the child (killed on drop) and its base URL.
async fn serve_child(dir: &Path, extra: &[&str]) -> Result<(tokio::process::Child, String)> {
    let home = dir.join(API_HOME);
    let exe = std::env::current_exe().context("finding the bankbridge binary")?;
    let db = dir.join("sync.db");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let run = |args: &[&str]| {
        let mut c = tokio::process::Command::new(&exe);
        c.args(args)
            .env("BANKBRIDGE_HOME", &home)
            .env("BANKBRIDGE_DB", &db)
            .env("BANKBRIDGE_LOG", "warn")
            .env_remove("BANKBRIDGE_MASTER_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        c
    };
    if !home.join("master.key").exists() {
        run(&["init"]).status().await.context("bankbridge init")?;
    }
    let listen = format!("127.0.0.1:{port}");
    let server = run(&[&["serve", "--listen", &listen], extra].concat())
        .spawn()
        .context("starting bankbridge serve")?;
    let base = format!("http://{listen}");
    let started = Instant::now();
    while reqwest::get(format!("{base}/healthz")).await.is_err() {
        if started.elapsed() > Duration::from_secs(30) {
            bail!("bankbridge serve did not answer /healthz within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((server, base))
}

/// What `wrk` reported.
#[derive(Debug, Default, PartialEq)]
struct WrkReport {
    rps: f64,
    requests: u64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    bad_responses: u64,
    socket_errors: Option<String>,
}

/// Check one request by hand, then load the URL with `wrk` (None without it).
async fn api_load(
    url: &str,
    token: &str,
    wrk: Option<&Path>,
    secs: u64,
) -> Result<Option<WrkReport>> {
    let res = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await?;
    let status = res.status();
    let body: serde_json::Value = res.json().await?;
    let n = body["data"].as_array().map_or(0, Vec::len);
    if !status.is_success() || n != 100 {
        bail!("the check request got {status} with {n} rows (expected 200 with 100)");
    }
    let Some(wrk) = wrk else {
        return Ok(None);
    };
    eprintln!("bench: wrk for {secs} s on {url}…");
    let out = tokio::process::Command::new(wrk)
        .arg(format!("-t{WRK_THREADS}"))
        .arg(format!("-c{WRK_CONNECTIONS}"))
        .arg(format!("-d{secs}s"))
        .arg("--latency")
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"))
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_wrk(&text)
        .with_context(|| format!("reading wrk's output:\n{text}"))
        .map(Some)
}

fn parse_wrk(text: &str) -> Result<WrkReport> {
    let mut r = WrkReport::default();
    let mut saw_rps = false;
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse()?;
            saw_rps = true;
        } else if let Some(v) = line.strip_prefix("50%") {
            r.p50_ms = wrk_duration_ms(v.trim());
        } else if let Some(v) = line.strip_prefix("99%") {
            r.p99_ms = wrk_duration_ms(v.trim());
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            r.bad_responses = v.trim().parse()?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            let counts = v
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok());
            if counts.sum::<u64>() > 0 {
                r.socket_errors = Some(v.trim().to_owned());
            }
        } else if let Some((n, rest)) = line.split_once(" requests in ")
            && rest.contains("read")
        {
            r.requests = n.trim().parse()?;
        }
    }
    if !saw_rps {
        bail!("no Requests/sec line");
    }
    Ok(r)
}

/// `wrk` durations: `812.00us`, `2.63ms`, `1.02s`, `1.5m`.
fn wrk_duration_ms(s: &str) -> Option<f64> {
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        "h" => n * 3_600_000.0,
        _ => return None,
    })
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

// ------------------------------------------------------------------ export

async fn export_section(export_rows: usize, dir: &Path, table: &mut Table) {
    let mut sizes = vec![EXPORT_SMALL_ROWS.min(export_rows), export_rows];
    sizes.dedup();
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            table.error("export", &anyhow::Error::from(e));
            return;
        }
    };
    let mut dbs = Vec::new();
    for &n in &sizes {
        let path = dir.join(format!("export-{n}.db"));
        eprintln!("bench: building a {n}-row database for the export…");
        match build_export_db(&path, n).await {
            Ok(()) => dbs.push((n, path)),
            Err(e) => table.error(format!("export: building {n} rows"), &e),
        }
    }
    let home = dir.join("export-home");
    if let Err(e) = std::fs::create_dir_all(&home) {
        table.error("export", &anyhow::Error::from(e));
        return;
    }
    let time = Path::new("/usr/bin/time");
    let gnu_time = time.is_file()
        && std::process::Command::new(time)
            .args(["-f", "%M", "-o", "/dev/null", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    for format in [
        "csv",
        "json",
        "ofx",
        "beancount",
        "ledger",
        "qif",
        "camt053",
        "camt053-02",
    ] {
        let mut peaks: Vec<(usize, u64)> = Vec::new();
        for (n, db) in &dbs {
            let measure = format!("export {format}, child process");
            eprintln!("bench: export {format} of {n} rows…");
            match run_export(&exe, db, &home, format, gnu_time.then_some(time)).await {
                Ok(x) => {
                    let mut target = String::new();
                    if let Some(&(small_n, small_peak)) = peaks.first() {
                        let ratio = x.peak_kib as f64 / (small_peak.max(1)) as f64;
                        target = format!(
                            "peak vs {} rows {ratio:.2}× (≤ {EXPORT_PEAK_RATIO_MAX:.2} {})",
                            thousands(small_n as u64),
                            mark(ratio <= EXPORT_PEAK_RATIO_MAX)
                        );
                    }
                    peaks.push((*n, x.peak_kib));
                    let mut note = format!(
                        "peak RSS {:.1} MiB{}; {:.0} MB written",
                        x.peak_kib as f64 / 1024.0,
                        if x.exact_peak { "" } else { " (sampled)" },
                        x.bytes as f64 / 1e6
                    );
                    if x.rows != *n as u64 {
                        table.failed = true;
                        note.push_str(&format!("; ✗ exported {} rows, expected {n}", x.rows));
                    }
                    table.push(
                        measure,
                        thousands(x.rows),
                        Some(x.took),
                        per_second(x.rows, x.took, "rows/s"),
                        target,
                        note,
                    );
                }
                Err(e) => table.error(format!("{measure} ({n} rows)"), &e),
            }
        }
    }
    if let Some((n, db)) = dbs.last() {
        json_vs_sqlite3(&exe, db, *n, &home, gnu_time.then_some(time), table).await;
    }
}

/// The columns of a transaction, as `sqlite3 -json` prints them for the
/// side-by-side run.
const SQLITE3_JSON_QUERY: &str = "SELECT id, connection_id, account_id, provider_id, \
     pending_provider_id, fingerprint, status, booking_date, value_date, transaction_date, amount, \
     currency, original_amount, original_currency, running_balance, raw_label, label, \
     counterparty_name, counterparty_iban, remittance_info, bank_code, raw, category, first_seen, \
     last_seen, updated_at FROM transactions ORDER BY booking_date, id";

/// `bankbridge export --format json` against `sqlite3 -json` printing the
/// same rows of the same file to /dev/null, alternating, best of three each
/// (the first run of either warms the page cache for both).
async fn json_vs_sqlite3(
    exe: &Path,
    db: &Path,
    n: usize,
    home: &Path,
    time: Option<&Path>,
    table: &mut Table,
) {
    let measure = "export json vs `sqlite3 -json`, side by side";
    let Some(sqlite3) = find_on_path("sqlite3") else {
        table.push(
            measure,
            "",
            None,
            "",
            "",
            "sqlite3 not installed (apt-get install sqlite3)",
        );
        return;
    };
    let result = async {
        let mut ours: Option<ExportRun> = None;
        let mut theirs: Option<Duration> = None;
        for round in 0..3 {
            eprintln!("bench: export json vs sqlite3 -json, round {}…", round + 1);
            let started = Instant::now();
            let out = tokio::process::Command::new(&sqlite3)
                .arg("-json")
                .arg("-readonly")
                .arg(db)
                .arg(SQLITE3_JSON_QUERY)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .await
                .context("running sqlite3")?;
            let took = started.elapsed();
            if !out.status.success() {
                bail!(
                    "sqlite3 failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            theirs = Some(theirs.map_or(took, |t| t.min(took)));
            let run = run_export(exe, db, home, "json", time).await?;
            if run.rows != n as u64 {
                bail!("exported {} rows, expected {n}", run.rows);
            }
            if ours.as_ref().is_none_or(|o| run.took < o.took) {
                ours = Some(run);
            }
        }
        Ok::<_, anyhow::Error>((ours.context("no run")?, theirs.context("no run")?))
    }
    .await;
    match result {
        Ok((ours, theirs)) => {
            let ratio = ours.took.as_secs_f64() / theirs.as_secs_f64().max(1e-9);
            table.push(
                measure,
                thousands(n as u64),
                Some(ours.took),
                per_second(n as u64, ours.took, "rows/s"),
                format!(
                    "{ratio:.2}× sqlite3 (≤ {EXPORT_JSON_VS_SQLITE3_MAX:.2} {})",
                    mark(ratio <= EXPORT_JSON_VS_SQLITE3_MAX)
                ),
                format!(
                    "sqlite3 -json {:.3} s; best of 3 each, alternating; peak RSS {:.1} MiB",
                    theirs.as_secs_f64(),
                    ours.peak_kib as f64 / 1024.0
                ),
            );
        }
        Err(e) => table.error(measure, &e),
    }
}

/// A database of `n` synthetic rows in one account, bulk-inserted.
async fn build_export_db(path: &Path, n: usize) -> Result<()> {
    let store = SqliteStore::open(path).await?;
    let (lease, account_id) = bench_account(&store, "export").await?;
    let connection_id = lease.connection_id;
    store.close().await;
    const CHUNK: usize = 50_000;
    let mut start = 0;
    while start < n {
        let end = (start + CHUNK).min(n);
        let rows = synthetic_rows(start..end, 250);
        let windows: Vec<RawWindow<'_>> = rows
            .chunks(5_000)
            .map(|rows| RawWindow {
                connection_id,
                account_id,
                rows,
            })
            .collect();
        raw_sqlite_insert(path, &windows).await?;
        start = end;
    }
    Ok(())
}

struct ExportRun {
    took: Duration,
    rows: u64,
    bytes: u64,
    peak_kib: u64,
    /// From the kernel's own accounting (`/usr/bin/time`), not sampled.
    exact_peak: bool,
}

/// `bankbridge export --format F` on `db` as a child process writing to
/// /dev/null through its standard output, with its peak resident memory.
async fn run_export(
    exe: &Path,
    db: &Path,
    home: &Path,
    format: &str,
    time: Option<&Path>,
) -> Result<ExportRun> {
    let rss_file = home.join("maxrss");
    let mut cmd = match time {
        Some(time) => {
            let mut c = tokio::process::Command::new(time);
            c.arg("-f").arg("%M").arg("-o").arg(&rss_file).arg(exe);
            c
        }
        None => tokio::process::Command::new(exe),
    };
    cmd.args(["export", "--format", format])
        .env("BANKBRIDGE_DB", db)
        .env("BANKBRIDGE_HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().context("starting the export")?;
    let pid = child.id();
    let mut stderr = child.stderr.take().context("no stderr pipe")?;
    let read_stderr = tokio::spawn(async move {
        let mut s = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut s).await;
        s
    });
    let mut sampled_kib = 0;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if time.is_none()
            && let Some(kib) = pid.and_then(vm_hwm_kib)
        {
            sampled_kib = sampled_kib.max(kib);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let took = started.elapsed();
    let err = read_stderr.await.unwrap_or_default();
    if !status.success() {
        bail!("export exited with {status}: {}", err.trim());
    }
    let (rows, bytes) = parse_export_stderr(&err)
        .with_context(|| format!("no \"exported N transactions\" line in: {}", err.trim()))?;
    let (peak_kib, exact_peak) = match time {
        Some(_) => {
            let text =
                std::fs::read_to_string(&rss_file).context("reading /usr/bin/time's output")?;
            let kib = text
                .lines()
                .rev()
                .find_map(|l| l.trim().parse::<u64>().ok())
                .with_context(|| format!("/usr/bin/time wrote {text:?}"))?;
            (kib, true)
        }
        None => (sampled_kib, false),
    };
    Ok(ExportRun {
        took,
        rows,
        bytes,
        peak_kib,
        exact_peak,
    })
}

/// `exported 1000000 transactions (312345678 bytes)`
fn parse_export_stderr(s: &str) -> Option<(u64, u64)> {
    let line = s.lines().find(|l| l.starts_with("exported "))?;
    let mut words = line.split_whitespace();
    let rows = words.nth(1)?.parse().ok()?;
    let bytes = words.nth(1)?.trim_start_matches('(').parse().ok()?;
    Some((rows, bytes))
}

/// Peak resident set of a running process, from /proc (Linux).
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmHWM:")
}

/// Resident memory of a process now.
fn vm_rss_kib(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmRSS:")
}

/// A `/proc/PID/status` field in KiB.
fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

// ------------------------------------------------------------------ formatting

/// The 1-minute load average (other work on the machine skews every figure).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn mark(ok: bool) -> &'static str {
    if ok { "✓" } else { "✗" }
}

fn per_second(n: u64, d: Duration, unit: &str) -> String {
    let rate = n as f64 / d.as_secs_f64().max(1e-9);
    format!("{} {unit}", thousands(rate.round() as u64))
}

/// 1234567 → "1,234,567"
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_read() {
        let text = "Running 10s test @ http://127.0.0.1:1/api/v1/transactions?limit=100
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.80ms    1.02ms  20.43ms   80.00%
    Req/Sec     5.80k   400.00     6.50k    70.00%
  Latency Distribution
     50%  812.00us
     75%    3.10ms
     90%    3.80ms
     99%    1.20s
  115000 requests in 10.00s, 1.50GB read
  Socket errors: connect 0, read 3, write 0, timeout 0
  Non-2xx or 3xx responses: 12
Requests/sec:  11500.50
Transfer/sec:    153.00MB
";
        let r = parse_wrk(text).unwrap();
        assert_eq!(r.rps, 11500.5);
        assert_eq!(r.requests, 115_000);
        assert_eq!(r.p50_ms, Some(0.812));
        assert_eq!(r.p99_ms, Some(1200.0));
        assert_eq!(r.bad_responses, 12);
        assert!(r.socket_errors.is_some());
        assert!(parse_wrk("garbage").is_err());
    }

    #[test]
    fn export_summary_and_numbers_are_read() {
        assert_eq!(
            parse_export_stderr("exported 1000000 transactions (312345678 bytes)\n"),
            Some((1_000_000, 312_345_678))
        );
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
