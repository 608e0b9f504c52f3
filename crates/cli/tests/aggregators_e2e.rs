//! The aggregator story end to end with the binary. GoCardless: `connection add
//! --connector gocardless` picks the bank by country and name, prints the
//! bank's page, catches the browser's return on a loopback port and runs
//! the first sync; `serve` warns once of the agreement's end; once it has
//! ended, a scheduled-style sync stops in `needs_user` with the re-link
//! instruction, and `bankbridge sync` in a "terminal" links again with new
//! account ids and continues the same accounts' history. On SQLite and on
//! PostgreSQL (when `BANKBRIDGE_TEST_PG_URL` is set). Enable Banking: the
//! same linking with the application's key, the code coming back on the
//! loopback port, and a re-sync that writes nothing.
mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bankbridge_sandbox::SandboxConfig;
use bankbridge_sandbox::receivers::HttpReceiver;
use bankbridge_store::TxQuery;
use common::*;
use rust_decimal::Decimal;
use serde_json::{Value, json};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Lines of a child's stderr as they come.
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for the bank's page address (a URL with `marker` in it) among the
/// lines, then does what the user does there: agrees, and the browser
/// follows the bank back to the command's loopback port. Returns every line read.
async fn agree_at(lines: &mpsc::Receiver<String>, marker: &str) -> Vec<String> {
    let started = Instant::now();
    let mut seen = Vec::new();
    let link = loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no link printed: {seen:#?}"
        );
        match lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let found = line
                    .split_whitespace()
                    .find(|w| w.contains(marker))
                    .map(str::to_owned);
                seen.push(line);
                if let Some(link) = found {
                    break link;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(e) => panic!("the command ended before printing a link: {e}: {seen:#?}"),
        }
    };
    // The page's form, then the redirects back (to the command's port).
    let page = reqwest::Client::new()
        .post(&link)
        .form(&[("user", "alex"), ("code", "1234"), ("action", "approve")])
        .send()
        .await
        .unwrap();
    assert!(page.url().path().starts_with("/callback"), "{}", page.url());
    let text = page.text().await.unwrap();
    assert!(text.contains("bankbridge goes on"), "{text}");
    seen
}

async fn agree_at_the_bank(lines: &mpsc::Receiver<String>) -> Vec<String> {
    agree_at(lines, "/_sandbox/gocardless/psd2/start/").await
}

fn finish(mut child: Child, lines: mpsc::Receiver<String>, mut seen: Vec<String>) -> String {
    let status = child.wait().unwrap();
    seen.extend(lines.try_iter());
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(status.success(), "{status}: {}\n{stdout}", seen.join("\n"));
    stdout
}

/// Booked (count, sum) and pending count per IBAN, stored and at the bank
/// (`truth`, from the simulator).
async fn stored_and_truth(
    env: &Env,
    truth: Vec<bankbridge_sandbox::fibank::AccountTruth>,
) -> (
    HashMap<String, ((u64, Decimal), u64)>,
    HashMap<String, ((u64, Decimal), u64)>,
) {
    let store = env.store().await;
    let mut stored = HashMap::new();
    for a in store.list_accounts(None).await.unwrap() {
        let rows = store
            .query_transactions(&TxQuery {
                account_id: Some(a.id),
                ..Default::default()
            })
            .await
            .unwrap();
        let booked: Vec<_> = rows
            .iter()
            .filter(|t| t.status == bankbridge_core::TxStatus::Booked)
            .collect();
        stored.insert(
            a.iban.unwrap().to_string(),
            (
                (booked.len() as u64, booked.iter().map(|t| t.amount).sum()),
                (rows.len() - booked.len()) as u64,
            ),
        );
    }
    let truth = truth
        .into_iter()
        .map(|t| {
            (
                t.iban,
                (
                    (t.booked_count, t.booked_sum.parse().unwrap()),
                    t.pending_count,
                ),
            )
        })
        .collect();
    (stored, truth)
}

async fn connection(base: &str, token: &str, name: &str) -> Value {
    let list: Value = reqwest::Client::new()
        .get(format!("{base}/api/v1/connections"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap()
}

async fn link_warn_expire_relink(env: Env) {
    let sb = bankbridge_sandbox::spawn(SandboxConfig {
        seed: 41,
        accounts: 2,
        transactions: 300,
        years: 1,
        ..SandboxConfig::default()
    })
    .await
    .unwrap();
    let gc = sb.gocardless().clone();
    let keys = gc.credentials();
    env.run_ok(&["init"]);
    let admin = env
        .run_ok(&["token", "create", "--scope", "admin", "--name", "ops"])
        .trim()
        .to_owned();

    // A wrong name lists what GoCardless reaches; nothing is stored.
    let out = env
        .command(&[
            "connection",
            "add",
            "--name",
            "gc",
            "--connector",
            "gocardless",
            "--base-url",
            &keys.base_url,
            "--username",
            &keys.secret_id,
            "--password-stdin",
            "--country",
            "LV",
            "--institution",
            "Nordbank",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = out;
    writeln!(out.stdin.take().unwrap(), "{}", keys.secret_key).unwrap();
    let out = out.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("SANDBOXFINANCE_SFIN0000") && err.contains("Revolut"),
        "{err}"
    );

    // Linking as a person does it: the bank by country and name, its page,
    // the browser back on a loopback port, the first sync. Five days of
    // access: within the alert channel's week.
    let port = free_port().to_string();
    let mut child = env
        .command(&[
            "connection",
            "add",
            "--name",
            "gc",
            "--connector",
            "gocardless",
            "--base-url",
            &keys.base_url,
            "--username",
            &keys.secret_id,
            "--password-stdin",
            "--country",
            "LV",
            "--institution",
            "sandbox finance",
            "--option",
            "access_days=5",
            "--interval",
            "1d",
            "--link",
            "--redirect-port",
            &port,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{}", keys.secret_key).unwrap();
    let lines = stderr_lines(&mut child);
    let seen = agree_at_the_bank(&lines).await;
    assert!(
        seen.iter()
            .any(|l| l.contains("Sandbox Finance (SANDBOXFINANCE_SFIN0000)")),
        "{seen:#?}"
    );
    let stdout = finish(child, lines, seen);
    assert!(stdout.contains("linked; first sync"), "{stdout}");
    let (stored, truth) = stored_and_truth(&env, sb.gocardless().truth()).await;
    assert_eq!(stored, truth, "the first sync reads the bank's history");
    let accounts_before: Vec<i64> = env
        .store()
        .await
        .list_accounts(None)
        .await
        .unwrap()
        .iter()
        .map(|a| a.id)
        .collect();

    // `serve` warns once of the agreement's end.
    let hook = HttpReceiver::start().await.unwrap();
    let checks = env.home.path().join("checks");
    std::fs::create_dir_all(&checks).unwrap();
    std::fs::write(
        checks.join("channels.toml"),
        format!(
            "[[channel]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{}/alerts\"\n\
             consent_expiry = true\nconsent_expiry_threshold_days = 7\n",
            hook.url().trim_end_matches('/')
        ),
    )
    .unwrap();
    let (_server, base, log) = env
        .serve_with(
            &[
                "--scheduler-tick",
                "1",
                "--checks",
                checks.to_str().unwrap(),
            ],
            &[],
        )
        .await;
    let alerts = hook.wait_for(1, Duration::from_secs(20)).await.unwrap();
    let alert = &alerts[0].body;
    assert_eq!(alert["kind"], "consent_expiry", "{alert}");
    assert_eq!(alert["consent"]["connection"], "gc");
    assert_eq!(alert["consent"]["days_left"], 4, "{alert}");
    let c = connection(&base, &admin, "gc").await;
    assert_eq!(c["consent"]["status"], "valid", "{c}");

    // Past its end, a sync without the user stops for the user and says how.
    gc.advance(6).unwrap();
    let id = c["id"].as_i64().unwrap();
    let res = reqwest::Client::new()
        .post(format!("{base}/api/v1/connections/{id}/sync"))
        .bearer_auth(&admin)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    let started = Instant::now();
    let c = loop {
        let c = connection(&base, &admin, "gc").await;
        if c["last_sync_status"] == "needs_user" {
            break c;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{c}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let why = c["last_sync_error"].as_str().unwrap();
    assert!(why.contains("end-user agreement"), "{why}");
    assert!(why.contains("link the bank again"), "{why}");
    assert_eq!(c["consent"]["status"], "expired", "{c}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(hook.requests().len(), 1, "one warning per agreement");

    // The user links again from a terminal: new ids, the same accounts.
    let port = free_port().to_string();
    let mut child = env
        .command(&[
            "sync",
            "--connection",
            "gc",
            "--sca",
            "wait",
            "--redirect-port",
            &port,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut child);
    let seen = agree_at_the_bank(&lines).await;
    finish(child, lines, seen);
    let store = env.store().await;
    let accounts_after: Vec<i64> = store
        .list_accounts(None)
        .await
        .unwrap()
        .iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(accounts_after, accounts_before, "no duplicate accounts");
    let (stored, truth) = stored_and_truth(&env, sb.gocardless().truth()).await;
    assert_eq!(
        stored, truth,
        "history continues with no duplicate transaction"
    );
    let c = connection(&base, &admin, "gc").await;
    assert_eq!(c["last_sync_status"], "ok", "{c}");
    assert_eq!(c["consent"]["status"], "valid", "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_warned_expired_and_relinked_on_sqlite() {
    link_warn_expire_relink(Env::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_warned_expired_and_relinked_on_postgres() {
    let Some(env) = Env::postgres().await else {
        return;
    };
    link_warn_expire_relink(env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_banking_is_linked_with_the_application_key_and_synced() {
    let sb = bankbridge_sandbox::spawn(SandboxConfig {
        seed: 43,
        accounts: 2,
        transactions: 300,
        years: 1,
        ..SandboxConfig::default()
    })
    .await
    .unwrap();
    let app = sb.enablebanking().credentials();
    let env = Env::sqlite();
    env.run_ok(&["init"]);
    let key_file = env.home.path().join("app-key.pem");
    std::fs::write(&key_file, &app.private_key_pem).unwrap();
    let port = free_port().to_string();
    let mut child = env
        .command(&[
            "connection",
            "add",
            "--name",
            "eb",
            "--connector",
            "enablebanking",
            "--base-url",
            &app.base_url,
            "--application-id",
            &app.application_id,
            "--private-key",
            key_file.to_str().unwrap(),
            "--country",
            "FI",
            "--institution",
            "pankki",
            "--link",
            "--redirect-port",
            &port,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut child);
    let seen = agree_at(&lines, "/_sandbox/enablebanking/auth/").await;
    assert!(
        seen.iter().any(|l| l.contains("bank: Sandbox Pankki (FI)")),
        "{seen:#?}"
    );
    let stdout = finish(child, lines, seen);
    assert!(stdout.contains("linked; first sync"), "{stdout}");
    let (stored, truth) = stored_and_truth(&env, sb.enablebanking().truth()).await;
    assert_eq!(stored, truth, "the first sync reads the bank's history");
    // A scheduled-style run (no terminal): the session holds, nothing new.
    let (summary, ok, err) = env.sync();
    assert!(ok, "{err}");
    assert_eq!(summary["status"], "ok", "{summary}");
    assert_eq!(summary["inserted"], 0, "{summary}");
    assert_eq!(summary["updated"], 0, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn klarna_is_linked_through_its_form_and_the_bank_page_and_synced() {
    use bankbridge_sandbox::xs2a_playground::{PASSWORD, PREFIX};
    let sb = bankbridge_sandbox::spawn(SandboxConfig {
        seed: 47,
        accounts: 2,
        transactions: 300,
        years: 1,
        ..SandboxConfig::default()
    })
    .await
    .unwrap();
    let pg = sb.klarna().credentials();
    let env = Env::sqlite();
    env.run_ok(&["init"]);
    let port = free_port().to_string();
    let base = format!("{}{PREFIX}", sb.root_url());
    // A bank Klarna does not list: the candidates are shown, nothing is stored.
    let mut wrong = env
        .command(&[
            "connection",
            "add",
            "--name",
            "kl",
            "--connector",
            "klarna",
            "--base-url",
            &base,
            "--username",
            &pg.username,
            "--password-stdin",
            "--country",
            "DE",
            "--institution",
            "no such bank",
            "--no-link",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(wrong.stdin.take().unwrap(), "{}", pg.api_token).unwrap();
    let out = wrong.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("Testbank") && said.contains("00000"),
        "{said}"
    );
    assert!(
        env.store()
            .await
            .list_connections()
            .await
            .unwrap()
            .is_empty()
    );
    let mut child = env
        .command(&[
            "connection",
            "add",
            "--name",
            "kl",
            "--connector",
            "klarna",
            "--base-url",
            &base,
            "--username",
            &pg.username,
            "--password-stdin",
            "--country",
            "de",
            "--institution",
            "testbank",
            "--link",
            "--redirect-port",
            &port,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The API token, then the PIN Klarna's form asks for (a script's way).
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{}\n{PASSWORD}", pg.api_token).unwrap();
    drop(stdin);
    let lines = stderr_lines(&mut child);
    let seen = agree_at(&lines, "/testbank/authorize").await;
    assert!(
        seen.iter()
            .any(|l| l.contains("bank: Testbank (00000, DE)")),
        "{seen:#?}"
    );
    let stdout = finish(child, lines, seen);
    assert!(stdout.contains("linked; first sync"), "{stdout}");
    let (stored, truth) = stored_and_truth(&env, sb.klarna().truth()).await;
    assert_eq!(stored, truth, "the first sync reads the bank's history");
    // A scheduled-style run: the consent holds, nothing new is written.
    let (summary, ok, err) = env.sync();
    assert!(ok, "{err}");
    assert_eq!(summary["status"], "ok", "{summary}");
    assert_eq!(summary["inserted"], 0, "{summary}");
    assert_eq!(summary["updated"], 0, "{summary}");
    // The API token is sealed, never shown.
    let shown = env.run(&["connection", "list"]);
    assert!(
        !String::from_utf8_lossy(&shown.stdout).contains(&pg.api_token),
        "the token stays secret"
    );
}
