//! The open-banking story end to end: `bankbridge serve`'s scheduler syncs
//! the sandbox's Belgian-style NextGenPSD2 bank unattended, its embedded
//! `CHIP_OTP` challenge answered by the user's bank card, a virtual card
//! served to a real pcscd through vsmartcard's vpcd (the path a USB reader
//! takes). The card's audit names the sync; a short consent is warned of
//! once through the checks' alert channel; a wrong PIN registered for the
//! card costs exactly one VERIFY, disables the card and leaves the sync in
//! `needs_user`.
//!
//! Needs pcscd with vsmartcard-vpcd (`scripts/pcscd.sh start`; the test
//! script starts it). Without it the test skips, unless CI or
//! `BANKBRIDGE_TEST_PCSCD` is set, where it fails.
mod common;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bankbridge_cap::SmartCard;
use bankbridge_cap::pcsc::{wait_for_card, wait_for_removal};
use bankbridge_cap::virtual_card::VirtualCard;
use bankbridge_cap::vpcd::{SlotsLock, VPCD_DEFAULT_PORT, serve};
use bankbridge_sandbox::receivers::HttpReceiver;
use bankbridge_sandbox::{SandboxConfig, SandboxHandle};
use bankbridge_store::TxQuery;
use common::*;
use rust_decimal::Decimal;
use serde_json::{Value, json};

const SLOT0: &str = "Virtual PCD 00 00";
const WAIT: Duration = Duration::from_secs(15);

/// `connection add` with the password on stdin.
fn add(env: &Env, args: &[&str], password: &str) {
    let mut child = env
        .command(&[&["connection", "add"], args].concat())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "connection add {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The connection `name` as the API shows it, once its last sync has ended
/// (a sync started by the scheduler within a second or two).
async fn synced(base: &str, token: &str, name: &str) -> Value {
    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let list: Value = http
            .get(format!("{base}/api/v1/connections"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let c = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap();
        if !c["last_sync_at"].is_null() && c["running_sync_job"].is_null() {
            return c;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the scheduler did not sync {name}: {c}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Booked (count, sum) per IBAN, stored and at the bank.
async fn stored_and_truth(
    env: &Env,
    sb: &SandboxHandle,
) -> (
    HashMap<String, (u64, Decimal)>,
    HashMap<String, (u64, Decimal)>,
) {
    let store = env.store().await;
    let mut stored = HashMap::new();
    for a in store.list_accounts(None).await.unwrap() {
        let rows = store
            .query_transactions(&TxQuery {
                account_id: Some(a.id),
                status: Some(bankbridge_core::TxStatus::Booked),
                ..Default::default()
            })
            .await
            .unwrap();
        stored.insert(
            a.iban.unwrap().to_string(),
            (rows.len() as u64, rows.iter().map(|t| t.amount).sum()),
        );
    }
    let truth = sb
        .xs2a("be")
        .unwrap()
        .truth()
        .into_iter()
        .map(|t| (t.iban, (t.booked_count, t.booked_sum.parse().unwrap())))
        .collect();
    (stored, truth)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_syncs_the_card_bank_unattended_through_pcscd() {
    let Some(_slots) = SlotsLock::for_tests() else {
        return;
    };
    let sb = bankbridge_sandbox::spawn(SandboxConfig {
        seed: 31,
        accounts: 2,
        transactions: 400,
        years: 1,
        ..SandboxConfig::default()
    })
    .await
    .unwrap();
    let bank = sb.xs2a("be").unwrap().clone();
    let creds = bank.credentials();

    // The user's card, in the reader pcscd sees.
    let card = VirtualCard::new(bank.card().clone()).unwrap();
    let handle = card.handle();
    let slot0 = SocketAddr::from(([127, 0, 0, 1], VPCD_DEFAULT_PORT));
    let mut vpcd = serve(slot0, Box::new(card) as Box<dyn SmartCard>);
    wait_for_card(SLOT0, WAIT).expect("pcscd sees the card");

    let env = Env::sqlite();
    env.run_ok(&["init"]);
    let admin = env
        .run_ok(&["token", "create", "--scope", "admin", "--name", "ops"])
        .trim()
        .to_owned();
    // Alerts: a webhook that wants consent warnings a week ahead.
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
    let http = reqwest::Client::new();
    let post = |path: String, body: Value| {
        http.post(format!("{base}{path}"))
            .bearer_auth(&admin)
            .json(&body)
            .send()
    };
    let fi: Value = post(
        "/api/v1/financial-institutions".into(),
        json!({"name": "Banque Exemple", "country": "BE"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let fi = fi["id"].as_str().unwrap().to_owned();
    let register = |pin: &'static str| {
        post(
            format!("/api/v1/financial-institutions/{fi}/cards"),
            json!({"reader": SLOT0, "label": "my card", "account_reference": "current", "pin": pin}),
        )
    };
    let res = register("1234").await.unwrap();
    assert_eq!(res.status(), 201);
    let card_id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // A consent of 5 days: within the channel's week, so it is warned of.
    add(
        &env,
        &[
            "--name",
            "be",
            "--connector",
            "xs2a",
            "--bank",
            "sandbox-be",
            "--base-url",
            &sb.root_url(),
            "--username",
            &creds.psu_id,
            "--password-stdin",
            "--card",
            &card_id,
            "--interval",
            "1d",
            "--option",
            "consent_days=5",
            "--no-check",
        ],
        &creds.password,
    );
    let verifies_before = handle.verify_count();
    let c = synced(&base, &admin, "be").await;
    let serve_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(c["last_sync_status"], "ok", "{c}\n{serve_log}");
    assert_eq!(c["consent"]["status"], "valid", "{c}");
    // Five days on the bank's calendar (Brussels); "days left" counts from
    // the UTC date, one more from 23:00 UTC (22:00 in summer) to midnight.
    let valid_until = bank.today() + chrono::Days::new(5);
    assert_eq!(c["consent"]["valid_until"], valid_until.to_string(), "{c}");
    let days_left = (valid_until - chrono::Utc::now().date_naive()).num_days();
    assert_eq!(c["consent"]["days_left"], days_left, "{c}");
    assert_eq!(c["consent"]["expires_soon"], true, "{c}");
    assert_eq!(c["settings"]["sca_card"], card_id.as_str());
    let (stored, truth) = stored_and_truth(&env, &sb).await;
    assert_eq!(
        stored, truth,
        "stored booked rows per IBAN differ from the bank's"
    );
    assert_eq!(
        handle.verify_count(),
        verifies_before + 1,
        "one code, one VERIFY"
    );
    assert_eq!(bank.codes_refused(), 0);

    // The card's audit names the sync that used it.
    let audit: Value = http
        .get(format!("{base}/api/v1/cards/audit"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let uses: Vec<&Value> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["token_name"] == "sync:be")
        .collect();
    assert_eq!(uses.len(), 1, "{audit}");
    assert_eq!(uses[0]["outcome"], "ok", "{audit}");

    // The consent warning went out once, and a second sync sends no other.
    let alerts = hook.wait_for(1, Duration::from_secs(20)).await.unwrap();
    let alert = &alerts[0].body;
    assert_eq!(alert["kind"], "consent_expiry", "{alert}");
    assert_eq!(alert["consent"]["connection"], "be");
    assert_eq!(alert["consent"]["days_left"], days_left);
    let id = c["id"].as_i64().unwrap();
    let res = post(format!("/api/v1/connections/{id}/sync"), json!({}))
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(hook.requests().len(), 1, "one warning per consent");

    // A wrong PIN registered for the card: one VERIFY, the card out of use,
    // the sync waits for the user.
    let res = http
        .delete(format!(
            "{base}/api/v1/financial-institutions/{fi}/cards/{card_id}"
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let res = register("9999").await.unwrap();
    assert_eq!(res.status(), 201);
    let wrong_id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    add(
        &env,
        &[
            "--name",
            "be-wrong-pin",
            "--connector",
            "xs2a",
            "--bank",
            "sandbox-be",
            "--base-url",
            &sb.root_url(),
            "--username",
            &creds.psu_id,
            "--password-stdin",
            "--card",
            &wrong_id,
            "--interval",
            "1d",
            "--no-check",
            "--allow-duplicate",
        ],
        &creds.password,
    );
    let verifies_before = handle.verify_count();
    let tries_before = handle.pin_tries_left();
    let c = synced(&base, &admin, "be-wrong-pin").await;
    assert_eq!(c["last_sync_status"], "needs_user", "{c}");
    let why = c["last_sync_error"].as_str().unwrap();
    assert!(
        why.contains(&wrong_id) && why.to_lowercase().contains("pin"),
        "{why}"
    );
    assert_eq!(
        handle.verify_count(),
        verifies_before + 1,
        "exactly one VERIFY"
    );
    assert_eq!(handle.pin_tries_left(), tries_before - 1);
    let card: Value = http
        .get(format!(
            "{base}/api/v1/financial-institutions/{fi}/cards/{wrong_id}"
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(card["status"], "active", "{card}");
    assert_eq!(bank.codes_refused(), 0, "no code reached the bank");

    vpcd.stop();
    wait_for_removal(SLOT0, WAIT).expect("pcscd sees the slot empty");
}
