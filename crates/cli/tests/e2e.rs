//! End to end: the `bankbridge` binary against the simulated Fibank over
//! loopback, on real SQLite and real PostgreSQL.
//!
//! Dataset size per account: `BB_E2E_TRANSACTIONS` (default 3000; the issue's
//! measurements use 100000).
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bankbridge_core::TxStatus;
use bankbridge_sandbox::{FaultConfig, FaultKind, SandboxConfig, SandboxHandle};
use bankbridge_store::{Store, TxQuery};
use rust_decimal::Decimal;
use serde_json::Value;

mod common;

use common::*;

fn tx_per_account() -> usize {
    std::env::var("BB_E2E_TRANSACTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

async fn sandbox(config: SandboxConfig) -> SandboxHandle {
    bankbridge_sandbox::spawn(config).await.unwrap()
}

fn dataset() -> SandboxConfig {
    SandboxConfig {
        seed: 7,
        accounts: 3,
        transactions: tx_per_account(),
        years: 5,
        ..SandboxConfig::default()
    }
}

/// Per IBAN: (booked count, booked sum) as stored.
async fn stored_totals(store: &dyn Store) -> HashMap<String, (u64, Decimal)> {
    let mut out = HashMap::new();
    for a in store.list_accounts(None).await.unwrap() {
        let t = store.account_totals(a.id).await.unwrap();
        out.insert(a.iban.unwrap().to_string(), (t.booked_count, t.booked_sum));
    }
    out
}

fn truth(sandbox: &SandboxHandle) -> HashMap<String, (u64, Decimal)> {
    sandbox
        .truth()
        .into_iter()
        .map(|t| {
            (
                t.iban,
                (t.booked_count, t.booked_sum.parse::<Decimal>().unwrap()),
            )
        })
        .collect()
}

async fn assert_matches_truth(env: &Env, sandbox: &SandboxHandle) {
    let store = env.store().await;
    assert_eq!(
        stored_totals(store.as_ref()).await,
        truth(sandbox),
        "stored booked count/sum per IBAN differ from the bank's truth"
    );
}

async fn full_sync_then_noop(env: Env) {
    let sb = sandbox(dataset()).await;
    env.init_with_fibank(&sb);
    let t0 = Instant::now();
    let (first, ok, err) = env.sync();
    let full = t0.elapsed();
    assert!(ok, "first sync failed: {err}");
    let expected: u64 = truth(&sb).values().map(|(n, _)| n).sum::<u64>()
        + sb.truth().iter().map(|t| t.pending_count).sum::<u64>();
    assert_eq!(first["inserted"].as_u64().unwrap(), expected, "{first}");
    assert!(
        first["windows"].as_u64().unwrap() >= 3 * 61,
        "5 years in ≤30-day windows: {first}"
    );
    assert_matches_truth(&env, &sb).await;

    let before = chrono::Utc::now();
    let t1 = Instant::now();
    let (second, ok, err) = env.sync();
    let noop = t1.elapsed();
    assert!(ok, "second sync failed: {err}");
    eprintln!(
        "[{}] full sync {:.1}s: {first}\n[{}] no-op re-sync {:.1}s: {second}",
        env.db_kind(),
        full.as_secs_f64(),
        env.db_kind(),
        noop.as_secs_f64()
    );
    assert_eq!(
        (
            second["inserted"].as_u64(),
            second["updated"].as_u64(),
            second["voided"].as_u64()
        ),
        (Some(0), Some(0), Some(0)),
        "{second}"
    );
    let store = env.store().await;
    let touched = store
        .query_transactions(&TxQuery {
            updated_since: Some(before),
            limit: Some(10),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        touched.is_empty(),
        "a sync over unchanged data rewrote rows: {touched:?}"
    );
    assert_matches_truth(&env, &sb).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_full_sync_matches_truth_and_resync_writes_nothing() {
    full_sync_then_noop(Env::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_full_sync_matches_truth_and_resync_writes_nothing() {
    if let Some(env) = Env::postgres().await {
        full_sync_then_noop(env).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_sync_killed_halfway_resumes_to_exactly_the_truth() {
    killed_then_resumed(Env::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_sync_killed_halfway_resumes_to_exactly_the_truth() {
    if let Some(env) = Env::postgres().await {
        killed_then_resumed(env).await;
    }
}

async fn killed_then_resumed(env: Env) {
    let mut config = dataset();
    config.fault.latency_ms = 15;
    let sb = sandbox(config).await;
    env.init_with_fibank(&sb);
    let total: u64 = truth(&sb).values().map(|(n, _)| n).sum();

    let mut child = env
        .command(&["sync", "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let store = env.store().await;
    let started = Instant::now();
    loop {
        let stored: u64 = stored_totals(store.as_ref())
            .await
            .values()
            .map(|(n, _)| n)
            .sum();
        if stored >= total / 3 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the sync ended before it could be killed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "sync made no progress"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let stored: u64 = stored_totals(store.as_ref())
        .await
        .values()
        .map(|(n, _)| n)
        .sum();
    assert!(stored < total, "killed too late to prove anything");
    // The killed sync is what `connection list` tells first.
    let list = env.run_ok(&["connection", "list"]);
    assert!(
        list.contains("interrupted") && list.contains("run sync again to resume"),
        "{list}"
    );
    let json: Value = serde_json::from_str(&env.run_ok(&["connection", "list", "--json"])).unwrap();
    assert_eq!(json[0]["activity"], "interrupted");

    let (summary, ok, err) = env.sync();
    assert!(ok, "resumed sync failed: {err}");
    assert_matches_truth(&env, &sb).await;
    let (again, _, _) = env.sync();
    assert_eq!(again["inserted"], 0, "{again}");
    eprintln!(
        "[{}] killed at {stored}/{total} booked rows; resume: {summary}",
        env.db_kind()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_retries_and_expiring_sessions_still_converge_to_the_truth() {
    let env = Env::sqlite();
    let mut config = dataset();
    config.fault = FaultConfig {
        fault_rate: 0.1,
        session_ttl_requests: Some(40),
        ..FaultConfig::default()
    };
    let sb = sandbox(config).await;
    env.run_ok(&["init"]);
    // `add`'s one test login may meet an injected fault; the sync retries.
    let added = env.try_add_connection(&sb, "fibank", &sb.credentials().password, &["--no-check"]);
    assert!(added.status.success());
    let t0 = Instant::now();
    let out = env
        .command(&["sync", "--json"])
        .env("BANKBRIDGE_LOG", "bankbridge_sync=info")
        .output()
        .unwrap();
    let (ok, err) = (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert!(ok, "sync with faults failed: {err} {summary}");
    assert_matches_truth(&env, &sb).await;
    let retries = err.matches("retrying").count();
    let relogins = err.matches("logging in again").count();
    assert!(
        retries > 0 && relogins > 0,
        "the faults were not exercised: {retries} retries, {relogins} re-logins"
    );
    eprintln!(
        "fault-rate 0.1 sync {:.1}s, {retries} retries, {relogins} re-logins: {summary}",
        t0.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_long_windows_are_fetched_in_smaller_ones() {
    let env = Env::sqlite();
    let sb = sandbox(SandboxConfig {
        max_range_days: Some(10),
        ..dataset()
    })
    .await;
    env.init_with_fibank(&sb);
    let (summary, ok, err) = env.sync();
    assert!(ok, "{err}");
    assert_matches_truth(&env, &sb).await;
    let (again, ok, _) = env.sync();
    assert!(ok);
    assert_eq!(again["inserted"], 0, "first {summary} then {again}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bank_refusing_even_one_day_gives_a_clear_error_and_no_rows() {
    let env = Env::sqlite();
    let sb = sandbox(SandboxConfig {
        transactions: 200,
        max_range_days: Some(0),
        ..dataset()
    })
    .await;
    env.init_with_fibank(&sb);
    let out = env.run(&["sync"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("refused the window"), "{stderr}");
    assert!(env.has_no_transactions().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn pending_rows_book_in_place_and_vanished_ones_are_voided() {
    let env = Env::sqlite();
    let sb = sandbox(SandboxConfig {
        transactions: 2000,
        ..dataset()
    })
    .await;
    env.init_with_fibank(&sb);
    assert!(env.sync().1);
    let store = env.store().await;
    let pending_before = store
        .query_transactions(&TxQuery {
            status: Some(TxStatus::Pending),
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        !pending_before.is_empty(),
        "the sandbox should show pending card payments"
    );

    let r = reqwest::Client::new()
        .post(format!("{}/_sandbox/fibank/advance", sb.root_url()))
        .json(&serde_json::json!({"days": 5}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let (summary, ok, err) = env.sync();
    assert!(ok, "{err}");
    assert_matches_truth(&env, &sb).await;

    let mut linked = 0;
    let mut voided = 0;
    for p in &pending_before {
        let now = store
            .query_transactions(&TxQuery {
                account_id: Some(p.account_id),
                limit: Some(1000),
                from: Some(p.booking_date),
                ..Default::default()
            })
            .await
            .unwrap();
        let row = now
            .iter()
            .find(|t| t.id == p.id)
            .expect("a pending row was deleted");
        match row.status {
            TxStatus::Booked => {
                assert_eq!(
                    row.pending_provider_id.as_deref(),
                    Some(p.provider_id.as_str())
                );
                linked += 1;
            }
            TxStatus::Void => voided += 1,
            TxStatus::Pending => {}
        }
    }
    assert!(
        linked > 0,
        "no pending row booked in 5 sandbox days: {summary}"
    );
    assert_eq!(summary["voided"].as_u64().unwrap(), voided, "{summary}");
    // Booked rows equal the truth, so no booked row duplicates its pending one.
    let current_pending: u64 = sb.truth().iter().map(|t| t.pending_count).sum();
    let stored_pending = store
        .query_transactions(&TxQuery {
            status: Some(TxStatus::Pending),
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(stored_pending.len() as u64, current_pending);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_bank_input_gives_clear_errors_and_stores_nothing() {
    let cases: Vec<(&str, FaultConfig, &str)> = vec![
        (
            "malformed JSON",
            FaultConfig::always(FaultKind::Malformed),
            "cannot read",
        ),
        (
            "truncated JSON",
            FaultConfig::always(FaultKind::Truncated),
            "truncated",
        ),
        (
            "invalid IBAN",
            FaultConfig::always(FaultKind::BadIban),
            "IBAN",
        ),
    ];
    for (what, fault, needle) in cases {
        let env = Env::sqlite();
        let sb = sandbox(SandboxConfig {
            transactions: 200,
            fault,
            ..dataset()
        })
        .await;
        env.run_ok(&["init"]);
        // The bank's faults may already hit the test login of `add`.
        let added =
            env.try_add_connection(&sb, "fibank", &sb.credentials().password, &["--no-check"]);
        assert!(added.status.success());
        let out = env
            .command(&["sync"])
            .env("BANKBRIDGE_SYNC_MAX_ATTEMPTS", "3")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: sync should fail");
        assert!(stderr.contains(needle), "{what}: unclear error: {stderr}");
        assert!(
            env.has_no_transactions().await,
            "{what}: partial rows were stored"
        );
        let conns = env.store().await.list_connections().await.unwrap();
        assert_eq!(
            conns[0].last_sync_status,
            bankbridge_store::SyncOutcome::Failed,
            "{what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_is_refused_clearly_and_never_printed() {
    let env = Env::sqlite();
    let sb = sandbox(SandboxConfig {
        transactions: 100,
        ..dataset()
    })
    .await;
    env.run_ok(&["init"]);
    // `connection add` logs in first: the wrong password is refused there,
    // clearly, and nothing is stored.
    let refused = env.try_add_connection(&sb, "fibank", "not-the-password-42", &[]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("refused the login") && stderr.contains("Nothing was stored"),
        "{stderr}"
    );
    assert!(!stderr.contains("not-the-password-42"));
    assert!(
        env.store()
            .await
            .list_connections()
            .await
            .unwrap()
            .is_empty()
    );
    // Stored without the check, the sync says the same.
    let added = env.try_add_connection(&sb, "fibank", "not-the-password-42", &["--no-check"]);
    assert!(added.status.success());
    let out = env
        .command(&["sync"])
        .env("BANKBRIDGE_LOG", "trace")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("refused the login"), "{stderr}");
    assert!(
        !stderr.contains("not-the-password-42"),
        "the password leaked into the output"
    );
    assert!(env.has_no_transactions().await);
    // Sealed at rest: the database file never holds the password in clear.
    let bytes = std::fs::read(&env.db).unwrap();
    assert!(!bytes.windows(19).any(|w| w == b"not-the-password-42"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_is_not_a_database_is_refused_and_left_alone() {
    let env = Env::sqlite();
    std::fs::write(
        &env.db,
        b"these are my holiday notes, not a database\n".repeat(100),
    )
    .unwrap();
    let before = std::fs::read(&env.db).unwrap();
    let out = env.run(&["transactions"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not a") && stderr.contains("database"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&env.db).unwrap(),
        before,
        "the file was modified"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn export_writes_every_transaction() {
    let env = Env::sqlite();
    let sb = sandbox(SandboxConfig {
        transactions: 500,
        ..dataset()
    })
    .await;
    env.init_with_fibank(&sb);
    assert!(env.sync().1);
    let total: u64 = env
        .store()
        .await
        .query_transactions(&TxQuery {
            limit: Some(100_000),
            ..Default::default()
        })
        .await
        .unwrap()
        .len() as u64;
    let csv = env.home.path().join("out.csv");
    env.run_ok(&[
        "export",
        "--format",
        "csv",
        "--output",
        csv.to_str().unwrap(),
    ]);
    let mut reader = csv::Reader::from_path(&csv).unwrap();
    assert_eq!(reader.records().count() as u64, total);
    let json = env.run_ok(&["export", "--format", "json"]);
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v.as_array().unwrap().len() as u64, total);
    // A pipe (like /dev/null) is written in place, never replaced by a file.
    let fifo = env.home.path().join("out.fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    env.run_ok(&[
        "export",
        "--format",
        "csv",
        "--output",
        fifo.to_str().unwrap(),
    ]);
    let through_pipe = reader.join().unwrap();
    assert_eq!(
        through_pipe,
        std::fs::read(&csv).unwrap(),
        "the pipe got another export than the file"
    );
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::metadata(&fifo).unwrap().file_type().is_fifo(),
        "the pipe was replaced"
    );
    let table = env.run_ok(&["transactions", "--limit", "5"]);
    assert_eq!(table.lines().count(), 6, "{table}");
}

/// `serve` answers bad requests with JSON errors and keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn serve_survives_bad_requests_and_serves_synced_data() {
    let env = Env::sqlite();
    let sb = sandbox(SandboxConfig {
        transactions: 300,
        ..dataset()
    })
    .await;
    env.run_ok(&["init"]);
    let token = env
        .run_ok(&["token", "create", "--scope", "write", "--name", "t"])
        .trim()
        .to_owned();
    let (server, base, log_path) = env.serve().await;
    let http = reqwest::Client::new();
    let auth = format!("Bearer {token}");
    let code = |v: Value| v["code"].as_str().unwrap_or_default().to_owned();

    let r = http
        .get(format!("{base}/api/v1/transactions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(code(r.json().await.unwrap()), "unauthorized");
    let r = http
        .get(format!("{base}/api/v1/transactions"))
        .header("Authorization", "Bearer bb_nope_nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(format!("{base}/api/v1/nothing-here"))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(code(r.json().await.unwrap()), "not_found");
    let r = http
        .post(format!("{base}/api/v1/connections"))
        .header("Authorization", &auth)
        .header("Content-Type", "application/json")
        .body(vec![b' '; 100 << 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.headers()["connection"],
        "close",
        "a 413 must not leave the connection open for reuse"
    );
    let r = http
        .post(format!("{base}/api/v1/connections"))
        .header("Authorization", &auth)
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // A connection added and synced through the API.
    let creds = sb.credentials();
    let r = http
        .post(format!("{base}/api/v1/connections"))
        .header("Authorization", &auth)
        .json(&serde_json::json!({"name": "api-fibank", "connector": "fibank", "base_url": sb.base_url(), "username": creds.username, "password": creds.password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    assert!(
        !created.to_string().contains(&creds.password),
        "the password came back"
    );
    let id = created["id"].as_i64().unwrap();
    let job: Value = http
        .post(format!("{base}/api/v1/connections/{id}/sync"))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job_id = job["id"].as_i64().unwrap();
    let started = Instant::now();
    let done = loop {
        let j: Value = http
            .get(format!("{base}/api/v1/syncs/{job_id}"))
            .header("Authorization", &auth)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if j["status"] == "succeeded" || j["status"] == "failed" {
            break j;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "sync job never finished: {j}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done["status"], "succeeded", "{done}");
    let page: Value = http
        .get(format!("{base}/api/v1/transactions?limit=10"))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 10);
    assert!(page["next"].is_string());
    assert!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );

    drop(server);
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logs.contains("sync succeeded"),
        "the server log misses the sync"
    );
    assert!(
        !logs.contains(&creds.password),
        "the bank password appears in the server log"
    );
    assert!(
        !logs.contains(&token),
        "the API token appears in the server log"
    );
}

/// The demo's printed `curl` lines work: transactions with the read token,
/// a card login with the card token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_prints_working_curl_lines() {
    use std::io::BufRead;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = KillOnDrop(Some(
        Command::new(BIN)
            .args([
                "demo",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--transactions",
                "300",
            ])
            .env_remove("BANKBRIDGE_MASTER_KEY")
            .env_remove("BANKBRIDGE_DB")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let stdout = child.0.as_mut().unwrap().stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line.contains("Ctrl-C");
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    })
    .await
    .unwrap();
    let curl = |marker: &str| -> Vec<String> {
        let line = lines
            .iter()
            .find(|l| l.contains(marker))
            .unwrap_or_else(|| panic!("no {marker:?} line in {lines:#?}"));
        line.split('\'').map(str::to_owned).collect()
    };
    // `curl -s -H 'Authorization: Bearer T' 'URL'`
    let tx = curl("/api/v1/transactions?limit=5");
    let http = reqwest::Client::new();
    let page: Value = http
        .get(&tx[3])
        .header("authorization", tx[1].trim_start_matches("Authorization: "))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 5, "{page}");
    // `curl -s -X POST -H 'Authorization: Bearer T' -H '…' -d '{…}' 'URL'`
    let login = curl("/logins");
    let res = http
        .post(&login[7])
        .header(
            "authorization",
            login[1].trim_start_matches("Authorization: "),
        )
        .header("content-type", "application/json")
        .body(login[5].clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let code: Value = res.json().await.unwrap();
    assert!(
        code["response"]
            .as_str()
            .is_some_and(|r| r.bytes().all(|b| b.is_ascii_digit())),
        "{code}"
    );
    // `curl -s -X POST -H 'Authorization: …' -H '…' -d '{"type": "auth"}' 'URL'`
    let bankid = curl("/api/v1/bankid/orders");
    let res = http
        .post(&bankid[7])
        .header(
            "authorization",
            bankid[1].trim_start_matches("Authorization: "),
        )
        .header("content-type", "application/json")
        .body(bankid[5].clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let order: Value = res.json().await.unwrap();
    assert!(order["events_url"].as_str().is_some(), "{order}");
}

/// Category rules at import (`BANKBRIDGE_CATEGORIES`), as an API filter, and
/// re-applied by `bankbridge categorize`; the raw label never changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn categories_at_import_in_the_api_and_reapplied() {
    let env = Env::sqlite();
    let sb = sandbox(SandboxConfig {
        transactions: 200,
        ..dataset()
    })
    .await;
    env.init_with_fibank(&sb);
    let rules = env.home.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\ncategory = \"income\"\nmin_amount = \"0.01\"\n\n[[rule]]\ncategory = \"spending\"\nmax_amount = \"-0.01\"\n",
    )
    .unwrap();
    let out = env
        .command(&["sync", "--json"])
        .env("BANKBRIDGE_CATEGORIES", &rules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = env.store().await;
    let rows = store.query_transactions(&TxQuery::default()).await.unwrap();
    assert!(!rows.is_empty());
    for r in &rows {
        let expected = if r.amount.is_sign_positive() && !r.amount.is_zero() {
            Some("income")
        } else if r.amount.is_sign_negative() {
            Some("spending")
        } else {
            None
        };
        assert_eq!(r.category.as_deref(), expected, "{r:?}");
    }
    let before: Vec<String> = rows.iter().map(|r| r.raw_label.clone()).collect();

    // The API filters by category.
    let token = env
        .run_ok(&["token", "create", "--scope", "read", "--name", "t"])
        .trim()
        .to_owned();
    let (_server, base, _) = env.serve().await;
    let page: Value = reqwest::Client::new()
        .get(format!(
            "{base}/api/v1/transactions?category=income&limit=1000"
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let data = page["data"].as_array().unwrap();
    assert_eq!(
        data.len(),
        rows.iter()
            .filter(|r| r.category.as_deref() == Some("income"))
            .count()
    );
    assert!(data.iter().all(|t| t["category"] == "income"));

    // Re-applied with other rules: a dry run changes nothing, a real run does.
    let other = env.home.path().join("other.toml");
    std::fs::write(
        &other,
        "[[rule]]\ncategory = \"everything\"\nlabel = \".\"\n",
    )
    .unwrap();
    let dry: Value = serde_json::from_str(
        env.run_ok(&[
            "categorize",
            "--rules",
            other.to_str().unwrap(),
            "--dry-run",
            "--json",
        ])
        .trim(),
    )
    .unwrap();
    assert_eq!(dry["changed"], rows.len() as u64);
    let rows_now = store.query_transactions(&TxQuery::default()).await.unwrap();
    assert!(
        rows_now
            .iter()
            .all(|r| r.category.as_deref() != Some("everything"))
    );
    let done: Value = serde_json::from_str(
        env.run_ok(&["categorize", "--rules", other.to_str().unwrap(), "--json"])
            .trim(),
    )
    .unwrap();
    assert_eq!(done["changed"], rows.len() as u64);
    let after = store.query_transactions(&TxQuery::default()).await.unwrap();
    assert!(
        after
            .iter()
            .all(|r| r.category.as_deref() == Some("everything"))
    );
    assert_eq!(
        after
            .iter()
            .map(|r| r.raw_label.clone())
            .collect::<Vec<_>>(),
        before
    );
    // A broken rules file names the file, rule and field.
    std::fs::write(&other, "[[rule]]\ncategory = \"x\"\nlabel = \"(\"\n").unwrap();
    let out = env.run(&["categorize", "--rules", other.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("other.toml") && err.contains("rule 1") && err.contains("label"),
        "{err}"
    );
}

/// At rest: a new data folder is the owner's only (0700), the database and
/// its -wal/-shm files too (0600); and the database remembers its master
/// key, so starting with another key fails before anything is sealed.
#[tokio::test(flavor = "multi_thread")]
async fn data_at_rest_is_private_and_bound_to_its_master_key() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::sqlite();
    let home = env.home.path().join("fresh").join("bankbridge");
    let db = home.join("bankbridge.db");
    let run = |args: &[&str], key: Option<&str>| {
        let mut c = env.command(args);
        c.env("BANKBRIDGE_HOME", &home).env("BANKBRIDGE_DB", &db);
        if let Some(k) = key {
            c.env("BANKBRIDGE_MASTER_KEY", k);
        }
        c.output().unwrap()
    };
    let out = run(&["init"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("check value"));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&home), 0o700, "the data folder");
    assert_eq!(mode(&home.join("master.key")), 0o600);
    // While the database is open the WAL files exist (SQLite removes them
    // when the last connection closes); all three are private.
    let out = run(&["token", "create", "--scope", "read", "--name", "t"], None);
    assert!(out.status.success());
    let open = bankbridge_store::open(db.to_str().unwrap()).await.unwrap();
    open.list_connections().await.unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        let p = std::path::PathBuf::from(p);
        assert!(
            p.exists(),
            "{} is missing while the database is open",
            p.display()
        );
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
    drop(open);
    // A database file left group-readable by an older version is tightened.
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(run(&["token", "list"], None).status.success());
    assert_eq!(mode(&db), 0o600);

    // Another master key: refused at once, naming both check values, and
    // nothing is sealed under it.
    let other = "22".repeat(32);
    let before = std::fs::read(&db).unwrap();
    for args in [
        &["init"][..],
        &["sync"][..],
        &["check", "secret", "list"][..],
    ] {
        let out = run(args, Some(&other));
        assert!(!out.status.success(), "{args:?} ran with another key");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("check value"), "{args:?}: {stderr}");
        assert!(stderr.contains("BANKBRIDGE_MASTER_KEY"), "{stderr}");
    }
    let echo = std::process::Command::new(env!("CARGO_BIN_EXE_bankbridge"))
        .args([
            "connection",
            "add",
            "--name",
            "x",
            "--connector",
            "fibank",
            "--base-url",
        ])
        .args([
            "https://my.fibank.bg",
            "--username",
            "u",
            "--password-stdin",
        ])
        .env("BANKBRIDGE_HOME", &home)
        .env("BANKBRIDGE_DB", &db)
        .env("BANKBRIDGE_MASTER_KEY", &other)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            writeln!(child.stdin.take().unwrap(), "secret-pw")?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(!echo.status.success());
    let store = bankbridge_store::open(db.to_str().unwrap()).await.unwrap();
    assert!(
        store.list_connections().await.unwrap().is_empty(),
        "nothing sealed"
    );
    drop(before);
}

/// Secrets go only where they belong: a connection's base URL is https (or
/// this machine), and so is an agent's server.
#[test]
fn secrets_are_sent_over_tls_or_not_at_all() {
    let env = Env::sqlite();
    env.run_ok(&["init"]);
    let out = env.run(&[
        "connection",
        "add",
        "--name",
        "plain",
        "--connector",
        "fibank",
        "--base-url",
        "http://my.fibank.bg",
        "--username",
        "u",
        "--password-stdin",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--base-url") && stderr.contains("https"),
        "{stderr}"
    );
    let out = env.run(&[
        "check",
        "agent",
        "--location",
        "eu",
        "--server",
        "http://checks.example:8080",
        "--token",
        "bb_x",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("https"), "{stderr}");
}
