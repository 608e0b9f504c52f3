//! End to end: the `bankbridge` binary against the simulated keypad bank
//! (shuffled PIN keypad, 21-day tokens, index-paged transactions behind a
//! 90-day 2FA gate, PDF statements) over loopback, on real SQLite and real
//! PostgreSQL.
//!
//! The story: an unattended `sync --json` stops at the 2FA gate in
//! `needs_user` with every row up to it stored; `sync --sca wait` with the
//! simulated user approving completes exactly the bank's truth without a
//! duplicate; statements are stored byte for byte and once; later syncs reuse
//! the kept tokens (no PIN), a revoked or expired token costs one PIN login,
//! a token close to expiry is refreshed. A wrong PIN is sent once. The server's sync
//! jobs say `needs_user` too, and serve the documents.
use std::collections::HashMap;
use std::io::Write;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bankbridge_connectors::keypad::{decode_keypad, encode_pin};
use bankbridge_sandbox::{SandboxConfig, SandboxHandle, SandboxState};
use bankbridge_store::{Store, TxQuery};
use chrono::{Days, NaiveDate};
use rust_decimal::Decimal;
use serde_json::Value;
use sha2::{Digest, Sha256};

mod common;

use common::*;

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 3, 14).unwrap()
}

fn boundary() -> NaiveDate {
    today().checked_sub_days(Days::new(90)).unwrap()
}

/// Three accounts over two contracts, three years of history.
async fn keypad_sandbox(accounts: usize) -> SandboxHandle {
    bankbridge_sandbox::spawn(SandboxConfig {
        seed: 42,
        accounts,
        transactions: 1200,
        years: 3,
        today: Some(today()),
        ..SandboxConfig::default()
    })
    .await
    .unwrap()
}

fn add_keypad(env: &Env, sb: &SandboxHandle, name: &str, pin: &str, extra: &[&str]) {
    let creds = sb.keypad().credentials();
    let base_url = sb.keypad_base_url();
    let mut args = vec![
        "connection",
        "add",
        "--name",
        name,
        "--connector",
        "keypad",
        "--base-url",
        &base_url,
        "--username",
        &creds.identifier,
        "--password-stdin",
    ];
    args.extend_from_slice(extra);
    let mut child = env
        .command(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{pin}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run the binary off the async runtime (the sandbox serves on it).
async fn run(env: &Env, args: &[&str], log: bool) -> Output {
    let mut cmd = env.command(args);
    if log {
        cmd.env(
            "BANKBRIDGE_LOG",
            "bankbridge_connectors=info,bankbridge_sync=info",
        );
    }
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// `sync --json [extra]`: the summary, the exit code, stderr.
async fn sync(env: &Env, extra: &[&str]) -> (Value, i32, String) {
    let mut args = vec!["sync", "--json"];
    args.extend_from_slice(extra);
    let out = run(env, &args, true).await;
    let stdout = String::from_utf8(out.stdout).unwrap();
    let line = stdout.lines().last().unwrap_or("{}");
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"));
    (
        v,
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The simulated user, approving every 2FA request as it appears.
struct Approver {
    stop: Arc<AtomicBool>,
    approved: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

fn approve_as_they_come(state: SandboxState) -> Approver {
    let stop = Arc::new(AtomicBool::new(false));
    let approved = Arc::new(AtomicUsize::new(0));
    let (s, a) = (stop.clone(), approved.clone());
    let task = tokio::spawn(async move {
        while !s.load(Ordering::SeqCst) {
            for r in state.keypad().pending_requests() {
                if state.keypad().approve(Some(&r.request_id)).is_ok() {
                    a.fetch_add(1, Ordering::SeqCst);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    Approver {
        stop,
        approved,
        task,
    }
}

impl Approver {
    async fn finish(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        self.approved.load(Ordering::SeqCst)
    }
}

/// Per IBAN: (rows, sum) stored, from `from` on when given.
async fn stored(store: &dyn Store, from: Option<NaiveDate>) -> HashMap<String, (u64, Decimal)> {
    let mut out = HashMap::new();
    for a in store.list_accounts(None).await.unwrap() {
        let rows = store
            .query_transactions(&TxQuery {
                account_id: Some(a.id),
                from,
                ..Default::default()
            })
            .await
            .unwrap();
        out.insert(
            a.iban.unwrap().to_string(),
            (rows.len() as u64, rows.iter().map(|t| t.amount).sum()),
        );
    }
    out
}

fn truth(sb: &SandboxHandle) -> HashMap<String, (u64, Decimal)> {
    sb.keypad()
        .truth()
        .into_iter()
        .map(|t| (t.iban, (t.count, t.sum.parse().unwrap())))
        .collect()
}

/// GET `url` with the `Authorization` header `auth` and read its JSON answer.
async fn get_json(http: &reqwest::Client, auth: &str, url: String) -> Value {
    http.get(url)
        .header("Authorization", auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn pin_logins(stderr: &str) -> usize {
    stderr.matches("keypad: logged in with the PIN").count()
}

async fn the_whole_story(env: Env) {
    let sb = keypad_sandbox(3).await;
    let creds = sb.keypad().credentials();
    env.run_ok(&["init"]);
    add_keypad(&env, &sb, "bank", &creds.pin, &[]);
    let store = env.store().await;
    let contracts: std::collections::HashSet<String> = sb
        .keypad()
        .truth()
        .into_iter()
        .map(|t| t.contract_id)
        .collect();
    assert_eq!(contracts.len(), 2, "three accounts over two contracts");

    // 1. Unattended (no terminal): stops at the gate, everything before it stored.
    let (v, code, err) = sync(&env, &[]).await;
    assert_eq!(v["status"], "needs_user", "{v}\n{err}");
    assert_eq!(code, 2, "needs_user exits with 2: {err}");
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains("approve the request on your trusted device"),
        "{message}"
    );
    assert!(message.contains("approval 1 of 2"), "{message}");
    let ibans: Vec<String> = store
        .list_accounts(None)
        .await
        .unwrap()
        .iter()
        .filter_map(|a| a.iban.as_ref().map(|i| i.as_str().to_owned()))
        .collect();
    assert!(
        ibans.iter().any(|i| message.contains(i.as_str())),
        "the account is named: {message}"
    );
    assert!(
        message.contains(&format!("from {} on stored", boundary())),
        "{message}"
    );
    assert_eq!(v["challenge"]["kind"], "decoupled");
    assert_eq!(pin_logins(&err), 1);
    let at_gate = stored(store.as_ref(), None).await;
    assert_eq!(at_gate.len(), 3);
    for a in store.list_accounts(None).await.unwrap() {
        let cp = store.checkpoint(a.id).await.unwrap();
        assert_eq!(cp.oldest_covered, Some(boundary()), "{}", a.provider_id);
        assert!(!cp.backfill_done);
        let oldest = store
            .query_transactions(&TxQuery {
                account_id: Some(a.id),
                limit: Some(1),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(oldest[0].booking_date >= boundary());
    }
    let stored_rows: u64 = at_gate.values().map(|v| v.0).sum();
    assert_eq!(v["inserted"].as_u64(), Some(stored_rows));
    assert!(
        v["documents"].as_u64().unwrap() > 0,
        "statements need no 2FA: {v}"
    );
    assert_eq!(
        sb.keypad().pending_requests().len(),
        1,
        "one 2FA request for the whole unattended run"
    );
    let list: Value = serde_json::from_str(&env.run_ok(&["connection", "list", "--json"])).unwrap();
    assert_eq!(list[0]["last_sync_status"], "needs_user");

    // 2. With the simulated user approving: one approval per contract, then exactly the truth.
    let approver = approve_as_they_come(sb.state().clone());
    let (v, code, err) = sync(&env, &["--sca", "wait"]).await;
    let approvals = approver.finish().await;
    assert!(
        err.contains("Waiting for the approval"),
        "the user is told: {err}"
    );
    // The approval says which it is, for which contract and account, and
    // (this being the sandbox) how to approve here. The first contract's
    // request was approved after the first run: one approval is left.
    assert!(
        err.contains("approval 1 of 2 (one per contract): contract 2 of 2, account FR"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "approve with `curl -X POST {}/_sandbox/keypad/approve`",
            sb.root_url()
        )),
        "{err}"
    );
    assert_eq!((v["status"].as_str(), code), (Some("ok"), 0), "{v}\n{err}");
    // The first run's request expired unapproved or was approved here: at most one extra.
    assert!(
        (contracts.len()..=contracts.len() + 1).contains(&approvals),
        "{approvals} approvals"
    );
    assert_eq!(pin_logins(&err), 0, "the kept tokens were reused: {err}");
    let full = stored(store.as_ref(), None).await;
    assert_eq!(full, truth(&sb), "count and sum per IBAN");
    let total: u64 = full.values().map(|v| v.0).sum();
    assert_eq!(
        v["inserted"].as_u64().unwrap() + stored_rows,
        total,
        "every row inserted once over the two syncs: {v}"
    );
    // The rows of the first sync were not written again at the old boundary.
    assert_eq!(stored(store.as_ref(), Some(boundary())).await, at_gate);
    let list: Value = serde_json::from_str(&env.run_ok(&["connection", "list", "--json"])).unwrap();
    assert_eq!(list[0]["last_sync_status"], "ok");
    eprintln!(
        "[{}] keypad: {} rows at the gate, {} after approval ({} approvals); truth {:?}",
        env.db_kind(),
        stored_rows,
        total,
        approvals,
        truth(&sb)
    );

    // 3. Statements: stored once each, byte for byte.
    let docs: Value = serde_json::from_str(&env.run_ok(&["documents", "list", "--json"])).unwrap();
    let docs = docs.as_array().unwrap();
    let mut checked = 0;
    for t in sb.keypad().truth() {
        for s in &t.statements {
            let found: Vec<&Value> = docs.iter().filter(|d| d["sha256"] == s.sha256).collect();
            assert_eq!(found.len(), 1, "statement {} of {}", s.month, t.iban);
            checked += 1;
        }
    }
    assert!(checked > 60, "3 years of monthly statements: {checked}");
    let first = docs
        .iter()
        .find(|d| d["kind"] == "statement")
        .expect("a statement");
    assert!(
        docs.iter()
            .filter(|d| d["kind"] == "statement")
            .all(|d| d["account_id"].is_i64()),
        "statements name their account's IBAN: linked to it"
    );
    let out = env.home.path().join("statement.pdf");
    env.run_ok(&[
        "documents",
        "get",
        &first["id"].as_i64().unwrap().to_string(),
        "--output",
        out.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&out).unwrap();
    assert!(bytes.starts_with(b"%PDF-"));
    assert_eq!(
        hex::encode(Sha256::digest(&bytes)),
        first["sha256"].as_str().unwrap()
    );
    assert_eq!(
        sb.keypad()
            .truth()
            .iter()
            .flat_map(|t| t.statements.iter())
            .filter(|s| s.sha256 == first["sha256"].as_str().unwrap())
            .count(),
        1
    );

    // 4. A re-sync: kept tokens, nothing new, no document again.
    let (v, code, err) = sync(&env, &[]).await;
    assert_eq!((v["status"].as_str(), code), (Some("ok"), 0), "{v}\n{err}");
    assert_eq!(
        (v["inserted"].as_u64(), v["documents"].as_u64()),
        (Some(0), Some(0)),
        "{v}"
    );
    assert_eq!(pin_logins(&err), 0, "{err}");
    let docs_again: Value =
        serde_json::from_str(&env.run_ok(&["documents", "list", "--json"])).unwrap();
    assert_eq!(docs_again.as_array().unwrap().len(), docs.len());

    // 5. Revoked tokens: exactly one PIN login, then on.
    assert!(sb.keypad().revoke_all() > 0);
    let (v, code, err) = sync(&env, &[]).await;
    assert_eq!((v["status"].as_str(), code), (Some("ok"), 0), "{v}\n{err}");
    assert_eq!(pin_logins(&err), 1, "{err}");
    assert_eq!(stored(store.as_ref(), None).await, truth(&sb));

    // 6. Fifteen days later the tokens have six days left: refreshed, no PIN.
    sb.keypad().advance(15);
    let (v, code, err) = sync(&env, &[]).await;
    assert_eq!((v["status"].as_str(), code), (Some("ok"), 0), "{v}\n{err}");
    assert!(err.contains("refreshed before it expired"), "{err}");
    assert_eq!(pin_logins(&err), 0, "{err}");
    assert!(
        v["inserted"].as_u64().unwrap() > 0,
        "fifteen new days booked: {v}"
    );
    assert_eq!(
        stored(store.as_ref(), None).await,
        truth(&sb),
        "after 15 days"
    );

    // 7. Twenty-two days without a sync: the tokens expired; one PIN login.
    sb.keypad().advance(22);
    let (v, code, err) = sync(&env, &[]).await;
    assert_eq!((v["status"].as_str(), code), (Some("ok"), 0), "{v}\n{err}");
    assert_eq!(pin_logins(&err), 1, "{err}");
    assert_eq!(
        stored(store.as_ref(), None).await,
        truth(&sb),
        "after 22 more days"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_keypad_gate_approval_documents_and_tokens() {
    the_whole_story(Env::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_keypad_gate_approval_documents_and_tokens() {
    if let Some(env) = Env::postgres().await {
        the_whole_story(env).await;
    }
}

/// A wrong PIN reaches the bank once, however often someone asks for a
/// sync: the error says so, the bank counts one login, and new credentials
/// (or an explicit --force) are what sends a PIN again.
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_pin_is_tried_once_and_the_error_is_clear() {
    let env = Env::sqlite();
    let sb = keypad_sandbox(1).await;
    let real = sb.keypad().credentials();
    let wrong = if real.pin == "000000" {
        "111111"
    } else {
        "000000"
    };
    env.run_ok(&["init"]);
    // Stored unchecked: this test counts what the syncs send.
    add_keypad(&env, &sb, "bank", wrong, &["--no-check"]);
    let (v, code, err) = sync(&env, &[]).await;
    assert_eq!(
        (v["status"].as_str(), code),
        (Some("credentials_refused"), 1),
        "{v}\n{err}"
    );
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("the bank refused the login"), "{e}");
    assert!(e.contains("2 attempt(s) left"), "{e}");
    assert!(e.contains("fix the connection's PIN"), "{e}");
    assert!(
        !e.contains(wrong) && !err.contains(wrong),
        "the PIN leaked: {e}\n{err}"
    );
    // Nine more manual syncs: none sends the PIN.
    for _ in 0..9 {
        let (v, code, _) = sync(&env, &[]).await;
        assert_eq!(
            (v["status"].as_str(), code),
            (Some("credentials_refused"), 1),
            "{v}"
        );
        let e = v["error"].as_str().unwrap();
        assert!(e.contains("not sent again"), "{e}");
        assert!(e.contains("connection update bank"), "{e}");
    }
    assert_eq!(
        sb.keypad().pin_logins(),
        (1, 1),
        "10 manual syncs with a wrong PIN: the bank saw one login"
    );
    let list: Value = serde_json::from_str(&env.run_ok(&["connection", "list", "--json"])).unwrap();
    assert_eq!(list[0]["last_sync_status"], "credentials_refused");
    assert_eq!(list[0]["credentials_refused"], true);

    // Ask the bank how many attempts are left: one more wrong PIN leaves 1.
    let http = reqwest::Client::new();
    let base = sb.keypad_base_url();
    let field: Value = http
        .get(format!("{base}/api/login/keypad"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (seed, keys) = decode_keypad(field["keypad"].as_str().unwrap()).unwrap();
    let r = http
        .post(format!("{base}/api/login"))
        .json(&serde_json::json!({
            "callingUrl": "/connexion", "clientTimestamp": 1_700_000_000, "encryptedIdentifier": false,
            "identifier": real.identifier, "keypad": encode_pin(&seed, &keys, wrong).unwrap(),
            "sessionId": "00000000000000000000001"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["remainingAttempts"], 1,
        "the sync used exactly one attempt: {body}"
    );
    sb.keypad().unlock();

    // --force sends the stored (still wrong) PIN once more; a new PIN
    // through `connection update` lifts the block and syncs.
    let (v, _, _) = sync(&env, &["--force"]).await;
    assert_eq!(v["status"], "credentials_refused", "{v}");
    assert_eq!(sb.keypad().pin_logins(), (3, 3));
    let out = env
        .command(&["connection", "update", "bank", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            writeln!(child.stdin.take().unwrap(), "{}", real.pin)?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("updated the credentials"));
    let (v, _, err) = sync(&env, &[]).await;
    // Logged in (the bank may still want its 2FA for old history).
    assert!(
        matches!(v["status"].as_str(), Some("ok" | "needs_user")),
        "{v}\n{err}"
    );
    assert_eq!(sb.keypad().pin_logins(), (4, 3));
}

/// Through `serve`: a sync job stops in `needs_user` (jobs are unattended),
/// keeps what it stored in its summary, and the documents are served.
#[tokio::test(flavor = "multi_thread")]
async fn serve_reports_needs_user_and_serves_documents() {
    let env = Env::sqlite();
    let sb = keypad_sandbox(1).await;
    env.run_ok(&["init"]);
    add_keypad(&env, &sb, "bank", &sb.keypad().credentials().pin, &[]);
    let token = env
        .run_ok(&["token", "create", "--scope", "write", "--name", "t"])
        .trim()
        .to_owned();
    let (_server, base, _log) = env.serve().await;
    let http = reqwest::Client::new();
    let auth = format!("Bearer {token}");
    let r = http
        .post(format!("{base}/api/v1/connections/1/sync"))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let job: Value = r.json().await.unwrap();
    let id = job["id"].as_i64().unwrap();
    let mut job = job;
    for _ in 0..600 {
        job = get_json(&http, &auth, format!("{base}/api/v1/syncs/{id}")).await;
        if !matches!(job["status"].as_str(), Some("queued" | "running")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(job["status"], "needs_user", "{job}");
    assert!(job["summary"]["inserted"].as_u64().unwrap() > 0, "{job}");
    assert!(
        job["error"].as_str().unwrap().contains("trusted device"),
        "{job}"
    );
    let conns = get_json(&http, &auth, format!("{base}/api/v1/connections")).await;
    assert_eq!(
        conns["data"][0]["last_sync_status"], "needs_user",
        "{conns}"
    );

    let docs = get_json(
        &http,
        &auth,
        format!("{base}/api/v1/documents?connection=1&from=2024-01-01"),
    )
    .await;
    let docs = docs["data"].as_array().unwrap();
    assert!(!docs.is_empty());
    assert!(
        docs.iter()
            .all(|d| d["date"].as_str().unwrap() >= "2024-01-01")
    );
    let doc = &docs[0];
    let r = http
        .get(format!("{base}/api/v1/documents/{}/content", doc["id"]))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/pdf");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let cd = r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cd.starts_with("attachment; filename=\""), "{cd}");
    assert!(cd.contains(".pdf\""), "{cd}");
    let bytes = r.bytes().await.unwrap();
    assert_eq!(
        hex::encode(Sha256::digest(&bytes)),
        doc["sha256"].as_str().unwrap()
    );
    let r = http
        .get(format!("{base}/api/v1/documents?nope=1"))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .get(format!("{base}/api/v1/documents/999999/content"))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let spec = get_json(&http, &auth, format!("{base}/api/v1/openapi.json")).await;
    for path in [
        "/api/v1/documents",
        "/api/v1/documents/{id}",
        "/api/v1/documents/{id}/content",
    ] {
        assert!(
            spec["paths"].get(path).is_some(),
            "{path} in the OpenAPI document"
        );
    }
}

/// A first sync in a terminal over two contracts: two approvals, each saying
/// which of how many it is, for which contract and account.
#[tokio::test(flavor = "multi_thread")]
async fn each_approval_says_which_of_how_many_it_is() {
    let env = Env::sqlite();
    let sb = keypad_sandbox(3).await;
    env.run_ok(&["init"]);
    add_keypad(&env, &sb, "bank", &sb.keypad().credentials().pin, &[]);
    let approver = approve_as_they_come(sb.state().clone());
    let (v, code, err) = sync(&env, &["--sca", "wait"]).await;
    let approvals = approver.finish().await;
    assert_eq!((v["status"].as_str(), code), (Some("ok"), 0), "{v}\n{err}");
    assert_eq!(approvals, 2, "{err}");
    let first = err.find("approval 1 of 2 (one per contract): contract 1 of 2, account FR");
    let second = err.find("approval 2 of 2 (one per contract): contract 2 of 2, account FR");
    assert!(
        first.is_some() && second.is_some() && first < second,
        "{err}"
    );
    assert_eq!(
        err.matches("the sandbox's trusted device: approve with `curl -X POST")
            .count(),
        2,
        "{err}"
    );
}
