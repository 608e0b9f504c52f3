//! The card service's overhead per login: HTTP + reader queue + the APDU
//! exchange, with a virtual card in an in-process reader and with the same
//! card behind a real pcscd (vsmartcard's vpcd reader), at 1 and 16
//! concurrent clients, and with that pcscd card on a card host: a `bankbridge
//! card agent` child process serving it to the server over loopback HTTP
//! (long-polled jobs, the PIN sealed to the host). The direct `emv::run` time
//! (no HTTP, no queue) is the baseline the overhead is read against.
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bankbridge_cap::emv::{self, CapRequest, PinPolicy};
use bankbridge_cap::pcsc::{self, PcscReaders};
use bankbridge_cap::transport::{Readers, VirtualReaders};
use bankbridge_cap::virtual_card::{Profile, VirtualCard, VirtualCardConfig};
use bankbridge_cap::vpcd;
use bankbridge_core::{MasterKey, Secret};
use bankbridge_server::{AppState, ServerConfig};
use bankbridge_store::{Scope, SqliteStore, Store};
use serde_json::json;

use super::{Table, thousands};

const PIN: &str = "1234";
const LOGINS_PER_RUN: usize = 200;
const VPCD_READER: &str = "Virtual PCD 00 00";

pub(super) async fn cards_section(dir: &std::path::Path, table: &mut Table) {
    let measure = "card login, direct emv::run (no HTTP, no queue)";
    let direct_p50 = match direct_baseline() {
        Ok(lat) => {
            push_latencies(
                table,
                measure,
                &lat,
                "in-process virtual cap-be card".into(),
            );
            lat.p50_ms
        }
        Err(e) => {
            table.error(measure, &e);
            0.0
        }
    };
    let overhead = |lat: &Latencies, what: &str| {
        format!(
            "{what}; service overhead at p50 {:.2} ms over the direct run",
            lat.p50_ms - direct_p50
        )
    };

    let readers = VirtualReaders::new();
    readers.insert(
        "bench reader",
        Box::new(
            VirtualCard::new(VirtualCardConfig::new(Profile::CapBe, PIN)).expect("valid card"),
        ),
    );
    for clients in [1usize, 16] {
        let measure = format!("card login over HTTP, in-process reader, {clients} client(s)");
        match service_run(
            dir,
            Arc::new(readers.clone()),
            "bench reader",
            clients,
            Via::Local,
        )
        .await
        {
            Ok(lat) => {
                let note = overhead(&lat, "one virtual card; HTTP + queue + APDUs + audit");
                push_latencies(table, &measure, &lat, note)
            }
            Err(e) => table.error(measure, &e),
        }
    }

    // The same card behind pcscd.
    let pcscd = PcscReaders::new();
    let reachable = tokio::task::spawn_blocking(move || pcscd.list()).await;
    if !matches!(reachable, Ok(Ok(_))) {
        table.push(
            "card login over HTTP, real pcscd + vpcd",
            "",
            None,
            "",
            "",
            "pcscd not running (scripts/pcscd.sh start)",
        );
        return;
    }
    // The vpcd slots are machine-wide: take turns with tests and other benches.
    let _slots = match vpcd::SlotsLock::acquire(Duration::from_secs(120)) {
        Ok(lock) => lock,
        Err(e) => return table.error("card login, real pcscd", &anyhow::Error::from(e)),
    };
    let card = VirtualCard::new(VirtualCardConfig::new(Profile::CapBe, PIN)).expect("valid card");
    let mut vpcd = vpcd::serve(
        std::net::SocketAddr::from(([127, 0, 0, 1], vpcd::VPCD_DEFAULT_PORT)),
        Box::new(card),
    );
    let ready =
        tokio::task::spawn_blocking(|| pcsc::wait_for_card(VPCD_READER, Duration::from_secs(10)))
            .await;
    match ready {
        Ok(Ok(reader)) => {
            for (via, what) in [
                (Via::Local, "real pcscd + vpcd"),
                (Via::Agent, "through a card agent, real pcscd + vpcd"),
            ] {
                for clients in [1usize, 16] {
                    let measure = format!("card login over HTTP, {what}, {clients} client(s)");
                    let readers: Arc<dyn Readers> = match via {
                        Via::Local => Arc::new(PcscReaders::new()),
                        // The server has no reader of its own: the agent has it.
                        Via::Agent => Arc::new(VirtualReaders::new()),
                    };
                    match service_run(dir, readers, &reader, clients, via).await {
                        Ok(lat) => {
                            let note = overhead(
                                &lat,
                                match via {
                                    Via::Local => {
                                        "virtual card served to pcscd over vpcd (loopback)"
                                    }
                                    Via::Agent => {
                                        "the same card on a card host: agent child process, loopback HTTP"
                                    }
                                },
                            );
                            push_latencies(table, &measure, &lat, note)
                        }
                        Err(e) => table.error(measure, &e),
                    }
                }
            }
        }
        Ok(Err(e)) => table.error("card login, real pcscd", &anyhow::Error::from(e)),
        Err(e) => table.error("card login, real pcscd", &anyhow::Error::from(e)),
    }
    vpcd.stop();
}

fn push_latencies(table: &mut Table, measure: &str, lat: &Latencies, note: String) {
    table.push(
        measure,
        thousands(lat.count as u64),
        Some(lat.total),
        format!("{:.0} logins/s", lat.count as f64 / lat.total.as_secs_f64()),
        "",
        format!("p50 {:.2} ms, p99 {:.2} ms; {note}", lat.p50_ms, lat.p99_ms),
    );
}

struct Latencies {
    count: usize,
    total: Duration,
    p50_ms: f64,
    p99_ms: f64,
}

fn summarise(mut samples: Vec<Duration>, total: Duration) -> Latencies {
    samples.sort();
    let pick = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    Latencies {
        count: samples.len(),
        total,
        p50_ms: pick(0.50),
        p99_ms: pick(0.99),
    }
}

fn direct_baseline() -> Result<Latencies> {
    let readers = VirtualReaders::new();
    readers.insert(
        "direct",
        Box::new(VirtualCard::new(VirtualCardConfig::new(
            Profile::CapBe,
            PIN,
        ))?),
    );
    let pin = Secret::new(PIN.to_owned());
    let started = Instant::now();
    let mut samples = Vec::with_capacity(LOGINS_PER_RUN);
    for i in 0..LOGINS_PER_RUN {
        let t = Instant::now();
        let mut session = readers.connect("direct")?;
        let request = CapRequest::Login {
            challenge: Some(format!("{}", 1000 + i)),
        };
        emv::run(session.as_mut(), &request, &pin, None, PinPolicy::default())?;
        samples.push(t.elapsed());
    }
    Ok(summarise(samples, started.elapsed()))
}

/// Where the server finds the card's reader.
#[derive(Clone, Copy)]
enum Via {
    /// Its own readers.
    Local,
    /// A card host: `bankbridge card agent` (a child process) serving the
    /// pcscd reader.
    Agent,
}

const BENCH_HOST: &str = "bench-host";

/// A server over `readers` on loopback; register `reader`'s card, then
/// `LOGINS_PER_RUN` logins from `clients` concurrent clients.
async fn service_run(
    dir: &std::path::Path,
    readers: Arc<dyn Readers>,
    reader: &str,
    clients: usize,
    via: Via,
) -> Result<Latencies> {
    let db = dir.join(format!("cards-{}.db", rand_suffix()));
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).await?);
    let key = Arc::new(MasterKey::generate());
    // The card service syncs nothing: a factory that builds no connector.
    let no_banks: bankbridge_sync::ConnectorFactory =
        Arc::new(|_, _, _| Err("the card benchmark syncs no bank".into()));
    let syncer = bankbridge_sync::Syncer::new(store.clone(), key, no_banks);
    let state = AppState::with_readers(
        store.clone(),
        syncer,
        vec![],
        ServerConfig {
            reader_wait: Duration::from_secs(120),
            ..Default::default()
        },
        readers,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(bankbridge_server::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    let result = async {
        let (admin, admin_rec) = bankbridge_server::auth::new_token("bench-admin", Scope::Admin);
        let (write, write_rec) = bankbridge_server::auth::new_token("bench", Scope::Write);
        store.create_token(&admin_rec).await?;
        store.create_token(&write_rec).await?;
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(clients)
            .build()?;
        let fi: serde_json::Value = client
            .post(format!("{base}/api/v1/financial-institutions"))
            .bearer_auth(admin.expose())
            .json(&json!({"name": "Bench Bank"}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let fi = fi["id"].as_str().context("institution id")?.to_owned();
        let host = match via {
            Via::Local => None,
            Via::Agent => Some(BENCH_HOST),
        };
        let _agent = match via {
            Via::Local => None,
            Via::Agent => {
                let (token, mut record) =
                    bankbridge_server::auth::new_token("bench-agent", Scope::CardAgent);
                record.location = Some(BENCH_HOST.to_owned());
                store.create_token(&record).await?;
                Some(start_agent(dir, &client, &base, admin.expose(), token.expose(), reader).await?)
            }
        };
        let res = client
            .post(format!("{base}/api/v1/financial-institutions/{fi}/cards"))
            .bearer_auth(admin.expose())
            .json(&json!({"host": host, "reader": reader, "label": "bench", "account_reference": "bench", "pin": PIN}))
            .send()
            .await?;
        if !res.status().is_success() {
            bail!("registering the card: {}", res.text().await?);
        }
        let card: serde_json::Value = res.json().await?;
        let url = format!(
            "{base}/api/v1/financial-institutions/{fi}/cards/{}/logins",
            card["id"].as_str().context("card id")?
        );
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (client, url, token) = (client.clone(), url.clone(), write.expose().clone());
            let share = LOGINS_PER_RUN / clients + usize::from(c < LOGINS_PER_RUN % clients);
            tasks.push(tokio::spawn(async move {
                let mut samples = Vec::with_capacity(share);
                for i in 0..share {
                    let t = Instant::now();
                    let res = client
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&json!({"challenge": format!("{}", c * 1000 + i)}))
                        .send()
                        .await?;
                    if !res.status().is_success() {
                        bail!("login answered {}: {}", res.status(), res.text().await?);
                    }
                    res.bytes().await?;
                    samples.push(t.elapsed());
                }
                Ok(samples)
            }));
        }
        let mut samples = Vec::with_capacity(LOGINS_PER_RUN);
        for t in tasks {
            samples.extend(t.await??);
        }
        Ok(summarise(samples, started.elapsed()))
    }
    .await;
    let _ = stop.send(());
    let _ = server.await;
    result
}

/// `bankbridge card agent` for [`BENCH_HOST`] serving `reader`, once the
/// server lists the host online with it.
async fn start_agent(
    dir: &std::path::Path,
    client: &reqwest::Client,
    base: &str,
    admin: &str,
    token: &str,
    reader: &str,
) -> Result<tokio::process::Child> {
    let home = dir.join(format!("card-agent-{}", rand_suffix()));
    std::fs::create_dir_all(&home)?;
    let exe = std::env::current_exe().context("finding the bankbridge binary")?;
    let child = tokio::process::Command::new(exe)
        .args(["card", "agent", "--server", base, "--reader", reader])
        .env("BANKBRIDGE_HOME", &home)
        .env("BANKBRIDGE_TOKEN", token)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting the card agent")?;
    let started = Instant::now();
    loop {
        let hosts: serde_json::Value = client
            .get(format!("{base}/api/v1/card-hosts"))
            .bearer_auth(admin)
            .send()
            .await?
            .json()
            .await?;
        let ready = hosts["data"].as_array().is_some_and(|list| {
            list.iter().any(|h| {
                h["name"] == BENCH_HOST
                    && h["online"] == true
                    && h["readers"]
                        .as_array()
                        .is_some_and(|r| r.iter().any(|r| r["name"] == reader))
            })
        });
        if ready {
            return Ok(child);
        }
        if started.elapsed() > Duration::from_secs(20) {
            bail!("the card agent did not come online: {hosts}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
