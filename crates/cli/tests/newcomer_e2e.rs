//! The first hour of a new user, end to end: the real binary against the
//! sandbox, used the way the README tells people to, mistakes included.
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bankbridge_core::TxStatus;
use bankbridge_sandbox::{SandboxConfig, SandboxHandle};
use bankbridge_store::{Store, TxQuery};
use serde_json::Value;

mod common;

use common::*;

async fn sandbox(transactions: usize, latency_ms: u64) -> SandboxHandle {
    let mut config = SandboxConfig {
        seed: 11,
        accounts: 2,
        transactions,
        years: 2,
        ..SandboxConfig::default()
    };
    config.fault.latency_ms = latency_ms;
    bankbridge_sandbox::spawn(config).await.unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run the binary under a pseudo-terminal (util-linux `script`), feeding
/// `input` to it: how a person at a terminal answers a prompt.
fn at_terminal(env: &Env, args: &[&str], input: &str) -> Option<Output> {
    if Command::new("script").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "util-linux `script` is needed in CI"
        );
        eprintln!("SKIPPED the terminal part: util-linux `script` is not installed");
        return None;
    }
    let line = std::iter::once(BIN)
        .chain(args.iter().copied())
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("BANKBRIDGE_HOME", env.home.path())
        .env("BANKBRIDGE_DB", &env.db)
        .env_remove("BANKBRIDGE_MASTER_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        // Give the prompt a moment to appear, as a person would.
        std::thread::sleep(Duration::from_millis(500));
        stdin.write_all(input.as_bytes()).unwrap();
    }
    Some(child.wait_with_output().unwrap())
}

async fn transactions_of(store: &dyn Store, connection_id: i64) -> usize {
    store
        .query_transactions(&TxQuery {
            connection_id: Some(connection_id),
            limit: Some(1_000_000),
            ..Default::default()
        })
        .await
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_people_can_live_with() {
    let env = Env::sqlite();
    let sb = sandbox(300, 0).await;
    env.run_ok(&["init"]);

    // A wrong base URL: `add` logs in first and names where and why.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{closed}");
    let mut typo = env
        .command(&[
            "connection",
            "add",
            "--name",
            "typo",
            "--connector",
            "fibank",
            "--base-url",
            &url,
            "--username",
            "someone",
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        writeln!(typo.stdin.take().unwrap(), "pw").unwrap();
    }
    let out = typo.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("connection refused at {url}")) && err.contains("--base-url right?"),
        "{err}"
    );
    assert!(
        env.store()
            .await
            .list_connections()
            .await
            .unwrap()
            .is_empty()
    );

    // The right one; then the same login again is refused unless asked for.
    env.add_connection(&sb, "fibank", &sb.credentials().password);
    let twin = env.try_add_connection(&sb, "fibank-2", &sb.credentials().password, &[]);
    assert!(!twin.status.success());
    let err = stderr(&twin);
    assert!(
        err.contains("connection fibank") && err.contains("--allow-duplicate"),
        "{err}"
    );
    let twin = env.try_add_connection(
        &sb,
        "fibank-2",
        &sb.credentials().password,
        &["--allow-duplicate"],
    );
    assert!(twin.status.success(), "{}", stderr(&twin));

    let list = env.run_ok(&["connection", "list"]);
    assert!(list.contains("WHY"), "{list}");
    assert!(
        list.lines().filter(|l| l.contains("never")).count() == 2,
        "{list}"
    );

    assert!(
        env.run(&["sync", "--connection", "fibank"])
            .status
            .success()
    );
    // A password that is wrong by now: the list says why the sync failed.
    let mut update = env
        .command(&["connection", "update", "fibank-2", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        writeln!(update.stdin.take().unwrap(), "not-it-any-more").unwrap();
    }
    assert!(update.wait_with_output().unwrap().status.success());
    assert!(
        !env.run(&["sync", "--connection", "fibank-2"])
            .status
            .success()
    );
    let list = env.run_ok(&["connection", "list"]);
    let row = list.lines().find(|l| l.contains("fibank-2")).unwrap();
    assert!(
        row.contains("credentials_refused") && row.contains("refused the login"),
        "{list}"
    );

    // Remove: counted first; without a terminal it needs --yes.
    let store = env.store().await;
    let fibank = store.find_connection("fibank").await.unwrap().unwrap();
    let rows = transactions_of(store.as_ref(), fibank.id).await;
    assert!(rows > 0);
    let out = env.run(&["connection", "remove", "fibank"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("--yes") && err.contains(&format!("2 account(s), {rows} transaction(s)")),
        "{err}"
    );
    assert!(store.find_connection("fibank").await.unwrap().is_some());
    // At a terminal it asks: "n" keeps everything, "y" removes.
    if let Some(out) = at_terminal(&env, &["connection", "remove", "fibank"], "n\n") {
        let text = stdout(&out);
        assert!(!out.status.success(), "{text}");
        assert!(
            text.contains("[y/N]") && text.contains("nothing removed"),
            "{text}"
        );
        assert_eq!(transactions_of(store.as_ref(), fibank.id).await, rows);
        let out = at_terminal(&env, &["connection", "remove", "fibank"], "y\n").unwrap();
        let text = stdout(&out);
        assert!(out.status.success(), "{text}");
        assert!(
            text.contains(&format!("deleted 2 account(s), {rows} transaction(s)")),
            "{text}"
        );
        assert!(store.find_connection("fibank").await.unwrap().is_none());
        assert_eq!(transactions_of(store.as_ref(), fibank.id).await, 0);
    }
    let out = env.run_ok(&["connection", "remove", "fibank-2", "--yes"]);
    assert!(out.contains("removed connection fibank-2"), "{out}");
    assert!(store.find_connection("fibank-2").await.unwrap().is_none());
}

/// Accounts, categories and amounts as money, in every output.
#[tokio::test(flavor = "multi_thread")]
async fn accounts_categories_and_money_everywhere() {
    let env = Env::sqlite();
    let sb = sandbox(400, 0).await;
    env.init_with_fibank(&sb);
    assert!(env.sync().1);
    let store = env.store().await;
    let accounts = store.list_accounts(None).await.unwrap();
    assert_eq!(accounts.len(), 2);

    // `accounts`: IBAN, currency, balance now, last sync.
    let table = env.run_ok(&["accounts"]);
    for a in &accounts {
        let iban = a.iban.as_ref().unwrap().as_str();
        let row = table.lines().find(|l| l.contains(iban)).unwrap();
        assert!(row.contains(a.currency.as_str()), "{row}");
        assert!(!row.contains("never"), "{row}");
    }
    let json: Value = serde_json::from_str(&env.run_ok(&["accounts", "--json"])).unwrap();
    for a in json.as_array().unwrap() {
        let amount = a["balance"]["amount"].as_str().unwrap();
        assert!(two_places(amount), "{a}");
        assert_eq!(a["connection"], "fibank");
    }

    // `transactions`: account, IBAN and category columns; amounts right-aligned
    // with two places.
    let table = env.run_ok(&["transactions", "--limit", "0"]);
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    for column in ["AMOUNT", "ACCOUNT", "IBAN", "CATEGORY"] {
        assert!(header.contains(column), "{header}");
    }
    let amount_end = header.find("AMOUNT").unwrap() + "AMOUNT".len();
    let mut n = 0;
    for line in lines {
        let cell: String = line.chars().take(amount_end).collect();
        let amount = cell.split_whitespace().last().unwrap();
        assert!(two_places(amount), "{line}");
        n += 1;
    }
    let total = store
        .query_transactions(&TxQuery {
            limit: Some(100_000),
            ..Default::default()
        })
        .await
        .unwrap()
        .len();
    assert_eq!(n, total);
    let json: Value =
        serde_json::from_str(&env.run_ok(&["transactions", "--limit", "0", "--json"])).unwrap();
    assert!(
        json.as_array()
            .unwrap()
            .iter()
            .all(|t| two_places(t["amount"].as_str().unwrap()))
    );

    // An account that does not exist is an error, not an empty table.
    let out = env.run(&["transactions", "--account", "999999"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no account with id 999999"),
        "{}",
        stderr(&out)
    );

    // Categories: a dry run counts per category with examples and writes
    // nothing; the real run fills the column and `--category` selects it.
    let rules = env.home.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\ncategory = \"spending\"\nmax_amount = \"0\"\n",
    )
    .unwrap();
    let rules_arg = rules.to_str().unwrap();
    let dry = env.run_ok(&["categorize", "--rules", rules_arg, "--dry-run"]);
    let spending = dry.lines().find(|l| l.starts_with("spending")).unwrap();
    let debits = store
        .query_transactions(&TxQuery {
            max_amount: Some(rust_decimal::Decimal::ZERO),
            limit: Some(100_000),
            ..Default::default()
        })
        .await
        .unwrap()
        .len();
    assert!(
        spending.contains(&format!(" {debits} ")) && spending.contains(" -"),
        "{dry}"
    );
    let none = env.run_ok(&["transactions", "--category", "spending", "--limit", "0"]);
    assert_eq!(none.lines().count(), 1, "the dry run wrote: {none}");
    env.run_ok(&["categorize", "--rules", rules_arg]);
    let json: Value = serde_json::from_str(&env.run_ok(&[
        "transactions",
        "--category",
        "spending",
        "--limit",
        "0",
        "--json",
    ]))
    .unwrap();
    assert_eq!(json.as_array().unwrap().len(), debits);

    // CSV: the new columns at the end, amounts as money.
    let csv = env.run_ok(&["export", "--format", "csv"]);
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (amount, category, account_name, account_iban) = (
        col("amount"),
        col("category"),
        col("account_name"),
        col("account_iban"),
    );
    assert_eq!(account_iban, headers.len() - 1);
    for rec in reader.records() {
        let rec = rec.unwrap();
        assert!(two_places(&rec[amount]), "{rec:?}");
        assert!(!rec[account_name].is_empty() && !rec[account_iban].is_empty());
        assert_eq!(rec[amount].starts_with('-'), &rec[category] == "spending");
    }
    // OFX amounts too.
    let ofx = env.run_ok(&["export", "--format", "ofx"]);
    for amt in ofx
        .lines()
        .filter_map(|l| l.strip_prefix("<TRNAMT>"))
        .map(|l| l.trim_end_matches("</TRNAMT>"))
    {
        assert!(two_places(amt), "{amt}");
    }
}

/// `-8.00`, `12.50`: the sandbox's currencies have two minor places.
fn two_places(amount: &str) -> bool {
    amount
        .trim_start_matches('-')
        .split_once('.')
        .is_some_and(|(units, cents)| {
            !units.is_empty()
                && units.bytes().all(|b| b.is_ascii_digit())
                && cents.len() == 2
                && cents.bytes().all(|b| b.is_ascii_digit())
        })
}

/// An export, a pending payment that books, a sync, a second export:
/// ofxtools (PyPI) reads both, and every transaction is there once by FITID.
#[tokio::test(flavor = "multi_thread")]
async fn ofx_exports_import_each_transaction_once() {
    let python = std::env::var("BANKBRIDGE_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let has_ofxtools = Command::new(&python)
        .args(["-c", "import ofxtools"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_ofxtools {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 with ofxtools is required in CI (scripts/test.sh installs it)"
        );
        eprintln!("SKIPPED: python3 with `ofxtools` is not available (pip install ofxtools)");
        return;
    }
    let env = Env::sqlite();
    let sb = sandbox(1500, 0).await;
    env.init_with_fibank(&sb);
    assert!(env.sync().1);
    let store = env.store().await;
    let pending = store
        .query_transactions(&TxQuery {
            status: Some(TxStatus::Pending),
            limit: Some(10_000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        !pending.is_empty(),
        "the sandbox shows pending card payments"
    );
    let first = env.home.path().join("first.ofx");
    env.run_ok(&["export", "--format", "ofx", "-o", first.to_str().unwrap()]);

    let r = reqwest::Client::new()
        .post(format!("{}/_sandbox/fibank/advance", sb.root_url()))
        .json(&serde_json::json!({"days": 5}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert!(env.sync().1);
    let booked_since = store
        .query_transactions(&TxQuery {
            limit: Some(100_000),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.status == TxStatus::Booked && pending.iter().any(|p| p.id == t.id))
        .count();
    assert!(booked_since > 0, "no pending payment booked in 5 days");
    let second = env.home.path().join("second.ofx");
    env.run_ok(&["export", "--format", "ofx", "-o", second.to_str().unwrap()]);

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ofx_import.py");
    let out = Command::new(&python)
        .arg(&script)
        .args([&first, &second])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let booked = store
        .query_transactions(&TxQuery {
            status: Some(TxStatus::Booked),
            limit: Some(100_000),
            ..Default::default()
        })
        .await
        .unwrap()
        .len() as u64;
    // Imported one after the other, as an accounting tool does.
    assert_eq!(report["imported"], booked, "{report}");
    assert_eq!(
        report["second_new"],
        report["second"].as_u64().unwrap() - report["first"].as_u64().unwrap(),
        "{report}"
    );
    assert_eq!(report["first_missing_in_second"], 0, "{report}");
}

/// A sync that finds another running says "busy" with its own exit code;
/// Ctrl-C says how to go on; a closed pipe ends quietly; logs in a file hold
/// no colour codes.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_behaves_in_pipes_and_scripts() {
    let env = Env::sqlite();
    let sb = sandbox(3000, 10).await;
    env.init_with_fibank(&sb);
    let store = env.store().await;

    // A slow sync in the background holds the connection.
    let mut first = env
        .command(&["sync"])
        .env("BANKBRIDGE_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let c = store.find_connection("fibank").await.unwrap().unwrap();
        if c.lease_owner.is_some() && transactions_of(store.as_ref(), c.id).await > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the sync never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = env.run(&["sync", "--json"]);
    assert_eq!(second.status.code(), Some(3), "{}", stderr(&second));
    let v: Value = serde_json::from_str(stdout(&second).trim()).unwrap();
    assert_eq!(v["status"], "busy", "{v}");
    let second = env.run(&["sync"]);
    assert_eq!(second.status.code(), Some(3));
    assert!(
        stderr(&second).contains("fibank: busy:"),
        "{}",
        stderr(&second)
    );

    // Ctrl-C: the first sync stops, says how to resume, exits 130.
    let pid = first.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = tokio::task::spawn_blocking(move || {
        first.stdin.take();
        first.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("interrupted: run sync again to resume"),
        "{err}"
    );
    // Logs went to a pipe: plain text, no escape codes.
    assert!(err.contains("INFO"), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "colour codes off a terminal: {err:?}"
    );
    let list = env.run_ok(&["connection", "list"]);
    assert!(list.contains("interrupted"), "{list}");
    let (summary, ok, err) = env.sync();
    assert!(ok, "{err}");
    assert!(summary["inserted"].as_u64().unwrap() > 0);

    // A reader that goes away: no panic, no error message.
    for command in ["transactions --limit 0", "export --format csv", "accounts"] {
        let line = format!("'{BIN}' {command} | head -c 10 >/dev/null");
        let out = Command::new("sh")
            .args(["-c", &line])
            .env("BANKBRIDGE_HOME", env.home.path())
            .env("BANKBRIDGE_DB", &env.db)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(err.trim().is_empty(), "{command} | head: {err}");
    }
}
