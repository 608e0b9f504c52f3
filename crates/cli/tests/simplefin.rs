//! The SimpleFIN server, driven by an independent client (simplefin4py,
//! PyPI) as a budgeting app would: a token made on the command line is
//! claimed once for an Access URL, the accounts and transactions the client
//! reads are the sandbox bank's, a second claim and a revoked token get 403.
//! The protocol's filters are checked over plain HTTP.
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::str::FromStr;

use common::*;
use rust_decimal::Decimal;
use serde_json::Value;

fn client(python: &str, args: &[&str]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/simplefin_client.py");
    Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .unwrap()
}

fn dec(v: &Value) -> Decimal {
    Decimal::from_str(v.as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_independent_simplefin_client_claims_once_and_reads_the_truth() {
    let python = std::env::var("BANKBRIDGE_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let has_client = Command::new(&python)
        .args(["-c", "import simplefin4py"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_client {
        assert!(
            std::env::var_os("CI").is_none(),
            "simplefin4py is required in CI (scripts/test.sh installs it)"
        );
        eprintln!("SKIPPED: pip install simplefin4py");
        return;
    }
    let (sb, env) = synced_fibank(31, 800).await;
    let truth = fibank_truth(&sb).await;
    let store = env.store().await;
    let accounts = store.list_accounts(None).await.unwrap();
    assert_eq!(accounts.len(), 3);
    let truth_of = |id: &str| -> &Value {
        let account = accounts
            .iter()
            .find(|a| format!("acct-{}", a.id) == id)
            .unwrap();
        let iban = account.iban.as_ref().unwrap().as_str();
        truth.iter().find(|t| t["iban"] == iban).unwrap()
    };
    let (_server, base, _log) = env.serve().await;

    // A token for two of the three accounts.
    let (a, b) = (accounts[0].id.to_string(), accounts[1].id.to_string());
    let setup = env
        .run_ok(&[
            "simplefin",
            "token",
            "create",
            "--name",
            "actual",
            "--account",
            &a,
            "--account",
            &b,
            "--url",
            &base,
        ])
        .trim()
        .to_owned();
    let claimed = client(&python, &["claim", &setup]);
    assert!(
        claimed.status.success(),
        "{}",
        String::from_utf8_lossy(&claimed.stderr)
    );
    let access_url = String::from_utf8(claimed.stdout).unwrap().trim().to_owned();
    assert!(
        access_url.contains('@') && access_url.ends_with("/simplefin"),
        "{access_url}"
    );
    // A claim URL works once.
    let again = client(&python, &["claim", &setup]);
    assert_eq!(
        again.status.code(),
        Some(3),
        "a second claim is refused with 403"
    );

    let read = client(&python, &["accounts", &access_url]);
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let seen: Value = serde_json::from_slice(&read.stdout).unwrap();
    assert_eq!(seen["errors"], serde_json::json!([]));
    let seen: BTreeMap<String, Value> = serde_json::from_value(seen["accounts"].clone()).unwrap();
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        vec![format!("acct-{a}"), format!("acct-{b}")],
        "only the accounts the token names"
    );
    for (id, account) in &seen {
        let bank = truth_of(id);
        assert_eq!(account["currency"], bank["currency"]);
        assert_eq!(dec(&account["balance"]), dec(&bank["balance"]), "{id}");
        assert_eq!(
            account["count"], bank["booked_count"],
            "{id}: pending left out by default"
        );
        assert_eq!(dec(&account["sum"]), dec(&bank["booked_sum"]), "{id}");
        assert_eq!(
            account["unique_ids"], account["count"],
            "{id}: ids unique in the account"
        );
        assert_eq!(account["posted_sorted"], true);
        assert!(
            account["non_ascii"].as_u64().unwrap() > 0,
            "Cyrillic labels kept"
        );
    }

    // The protocol's filters, over plain HTTP with the Access URL's credentials.
    let url = reqwest::Url::parse(&access_url).unwrap();
    let (user, password) = (
        url.username().to_owned(),
        url.password().unwrap().to_owned(),
    );
    let root = access_url.replace(&format!("{user}:{password}@"), "");
    let http = reqwest::Client::new();
    let get = |query: &'static str| {
        let http = http.clone();
        let (root, user, password) = (root.clone(), user.clone(), password.clone());
        async move {
            http.get(format!("{root}/accounts{query}"))
                .basic_auth(user, Some(password))
                .send()
                .await
                .unwrap()
        }
    };
    let all: Value = get("?pending=1").await.json().await.unwrap();
    for account in all["accounts"].as_array().unwrap() {
        let bank = truth_of(account["id"].as_str().unwrap());
        let rows = account["transactions"].as_array().unwrap();
        let pending = rows.iter().filter(|t| t["pending"] == true).count() as u64;
        assert_eq!(pending, bank["pending_count"].as_u64().unwrap());
        assert_eq!(
            rows.len() as u64 - pending,
            bank["booked_count"].as_u64().unwrap()
        );
        assert!(
            account["org"]["sfin-url"]
                .as_str()
                .unwrap()
                .ends_with("/simplefin")
        );
        assert!(account["balance-date"].as_i64().unwrap() > 0);
        assert!(
            rows.iter()
                .all(|t| t["amount"].is_string() && t["posted"].as_i64() > Some(0))
        );
    }
    // start-date (inclusive) and end-date (exclusive) pick the rows posted between.
    let rows = all["accounts"][0]["transactions"].as_array().unwrap();
    let posted: Vec<i64> = rows.iter().map(|t| t["posted"].as_i64().unwrap()).collect();
    let (start, end) = (posted[posted.len() / 4], posted[posted.len() / 2]);
    let window = format!(
        "?pending=1&start-date={start}&end-date={end}&account={}",
        all["accounts"][0]["id"].as_str().unwrap()
    );
    let part: Value = http
        .get(format!("{root}/accounts{window}"))
        .basic_auth(&user, Some(&password))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        part["accounts"].as_array().unwrap().len(),
        1,
        "account= filters"
    );
    let want = posted.iter().filter(|p| **p >= start && **p < end).count();
    assert_eq!(
        part["accounts"][0]["transactions"]
            .as_array()
            .unwrap()
            .len(),
        want
    );
    let balances: Value = get("?balances-only=1").await.json().await.unwrap();
    assert!(balances["accounts"][0].get("transactions").is_none());
    assert_eq!(get("?start-date=soon").await.status(), 400);
    let info: Value = reqwest::get(format!("{root}/info"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["versions"], serde_json::json!(["1.0"]));
    // Wrong credentials: 403.
    let wrong = http
        .get(format!("{root}/accounts"))
        .basic_auth(&user, Some("not-the-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 403);

    // The token list shows it claimed and used, never a secret.
    let list = env.run_ok(&["simplefin", "token", "list", "--json"]);
    assert!(list.contains("\"actual\"") && list.contains("claimed_at"));
    assert!(!list.contains(&password));

    // Revoked: the client gets 403.
    env.run_ok(&["simplefin", "token", "revoke", "actual"]);
    let refused = client(&python, &["accounts", &access_url]);
    assert_eq!(refused.status.code(), Some(4), "a revoked token gets 403");

    // A token needs accounts that exist.
    let out = env.run(&[
        "simplefin",
        "token",
        "create",
        "--name",
        "x",
        "--account",
        "999",
        "--url",
        &base,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no account 999"));
}
