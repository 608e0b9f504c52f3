//! The NextGenPSD2 connector's full sync: the sandbox's Belgian-style bank
//! (embedded SCA answered by a virtual card in an in-process reader, the
//! user present so the consent's daily budget does not apply), 100,000
//! transactions over loopback with `_links.next` paging, checked against
//! the bank's truth; then a re-sync that must write nothing.
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use bankbridge_cap::emv::{self, CapRequest, PinPolicy};
use bankbridge_cap::transport::{Readers, VirtualReaders};
use bankbridge_cap::virtual_card::VirtualCard;
use bankbridge_core::{
    Attendance, ConnectionSettings, Credentials, MasterKey, ScaAnswer, ScaChallenge, ScaSolver,
    ScaSolverError, Secret,
};
use bankbridge_sandbox::SandboxConfig;
use bankbridge_store::{SqliteStore, Store};
use bankbridge_sync::{ConnectorFactory, Syncer};
use rust_decimal::Decimal;

use crate::{Table, per_second, thousands};

/// Transactions of the one account the section syncs.
const TRANSACTIONS: usize = 100_000;

/// The user at a terminal with their card in a reader.
struct CardAtHand {
    readers: VirtualReaders,
}

#[async_trait]
impl ScaSolver for CardAtHand {
    async fn solve(&self, challenge: &ScaChallenge) -> Result<ScaAnswer, ScaSolverError> {
        let request = match challenge {
            ScaChallenge::CardReaderLogin { challenge } => CapRequest::Login {
                challenge: challenge.clone(),
            },
            ScaChallenge::CardReaderSign { numbers } => CapRequest::Sign {
                numbers: numbers.clone(),
            },
            _ => return Ok(ScaAnswer::NotNow),
        };
        let mut session = self
            .readers
            .connect("reader")
            .map_err(|e| ScaSolverError(e.to_string()))?;
        let code = emv::run(
            session.as_mut(),
            &request,
            &Secret::from("1234"),
            None,
            PinPolicy { min_tries: 1 },
        )
        .map_err(|e| ScaSolverError(e.to_string()))?;
        Ok(ScaAnswer::Code(Secret::new(code.response)))
    }

    fn attendance(&self) -> Attendance {
        Attendance {
            psu_present: true,
            redirect_uri: None,
        }
    }
}

pub(crate) async fn xs2a_section(dir: &Path, table: &mut Table) {
    const MEASURE: &str = "xs2a full sync (NextGenPSD2 sandbox over loopback)";
    if let Err(e) = full_sync(dir, table, MEASURE).await {
        table.error(MEASURE, &e);
    }
}

async fn full_sync(dir: &Path, table: &mut Table, measure: &str) -> Result<()> {
    eprintln!("bench: generating the NextGenPSD2 bank: 1 account × {TRANSACTIONS} transactions…");
    let sandbox = bankbridge_sandbox::spawn(SandboxConfig {
        seed: 5,
        accounts: 1,
        transactions: TRANSACTIONS,
        years: 2,
        ..SandboxConfig::default()
    })
    .await
    .context("starting the sandbox")?;
    let bank = sandbox.xs2a("be").context("no be bank")?.clone();
    // The bank writes its books on first use: before the clock starts.
    let _ = bank.truth();
    let readers = VirtualReaders::new();
    readers.insert("reader", Box::new(VirtualCard::new(bank.card().clone())?));
    let solver = CardAtHand { readers };

    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("xs2a.db")).await?);
    let key = Arc::new(MasterKey::generate());
    let factory: ConnectorFactory = Arc::new(|connection, settings, credentials| {
        bankbridge_connectors::build(&connection.connector, settings, credentials)
    });
    let syncer = Syncer::new(store.clone(), key.clone(), factory);
    let creds = bank.credentials();
    let mut settings = ConnectionSettings::new(creds.base_url.clone(), creds.psu_id.clone());
    settings.window_days = 366;
    settings.options.insert("bank".into(), "sandbox-be".into());
    let connection = bankbridge_sync::add_connection(
        store.as_ref(),
        &key,
        "xs2a-bench",
        "xs2a",
        &settings,
        &Credentials::with_password(Secret::new(creds.password.clone())),
    )
    .await?;

    eprintln!("bench: xs2a full sync…");
    let started = Instant::now();
    let full = syncer
        .sync_with_solver(&connection, &|_| {}, &solver)
        .await?;
    let took = started.elapsed();
    let rows = full.inserted + full.updated + full.unchanged;
    let check = match check(store.as_ref(), &bank).await {
        Ok(()) => "✓ matches the bank's truth".to_owned(),
        Err(e) => {
            table.failed = true;
            format!("✗ {e:#}")
        }
    };
    table.push(
        measure,
        thousands(rows),
        Some(took),
        per_second(rows, took, "tx/s"),
        "",
        format!(
            "{check}; {} windows of up to 366 days, {} rows a page",
            full.windows, bank.profile.page_size
        ),
    );

    let connection = store
        .get_connection(connection.id)
        .await?
        .context("the connection vanished")?;
    let started = Instant::now();
    let again = syncer
        .sync_with_solver(&connection, &|_| {}, &solver)
        .await?;
    let took_again = started.elapsed();
    let wrote = again.inserted + again.updated + again.voided;
    if wrote != 0 {
        table.failed = true;
    }
    table.push(
        "xs2a re-sync (consent kept, overlap only)",
        thousands(again.inserted + again.updated + again.unchanged),
        Some(took_again),
        "",
        "",
        format!("{wrote} rows written (0 expected); no new SCA"),
    );
    Ok(())
}

/// Booked rows per IBAN against the bank's truth.
async fn check(store: &dyn Store, bank: &bankbridge_sandbox::xs2a::Xs2aBank) -> Result<()> {
    for t in bank.truth() {
        let account = store
            .list_accounts(None)
            .await?
            .into_iter()
            .find(|a| a.iban.as_ref().is_some_and(|i| i.as_str() == t.iban))
            .with_context(|| format!("{}: not stored", t.iban))?;
        let totals = store.account_totals(account.id).await?;
        let sum: Decimal = t.booked_sum.parse()?;
        if totals.booked_count != t.booked_count || totals.booked_sum != sum {
            bail!(
                "{}: stored {} booked rows summing {}, the bank has {} summing {sum}",
                t.iban,
                totals.booked_count,
                totals.booked_sum,
                t.booked_count
            );
        }
    }
    Ok(())
}
