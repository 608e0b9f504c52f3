//! End to end through a real pcscd: `bankbridge card virtual` serves a card
//! to vsmartcard's vpcd reader, and `bankbridge card m1|m2` and the card
//! service in `bankbridge serve` reach it over PC/SC like a USB reader.
//!
//! Needs pcscd with vsmartcard-vpcd (`scripts/pcscd.sh start`; the test
//! script starts it). Without it these tests skip, unless CI or
//! `BANKBRIDGE_TEST_PCSCD` is set, where they fail.
mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use bankbridge_cap::emv::CapRequest;
use bankbridge_cap::pcsc::{wait_for_card, wait_for_removal};
use bankbridge_cap::verify;
use bankbridge_cap::virtual_card::{CardKey, Profile, VirtualCardConfig};
use bankbridge_cap::vpcd::SlotsLock;
use common::*;
use serde_json::{Value, json};

const SLOT0: &str = "Virtual PCD 00 00";
const WAIT: Duration = Duration::from_secs(15);

/// `bankbridge card virtual …` in vpcd slot 0, once pcscd sees the card.
fn insert_card(env: &Env, args: &[&str]) -> KillOnDrop {
    let mut full = vec!["card", "virtual", "--vpcd", "127.0.0.1:35963"];
    full.extend_from_slice(args);
    let child = KillOnDrop(Some(
        env.command(&full)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    wait_for_card(SLOT0, WAIT).expect("pcscd sees the virtual card");
    child
}

fn remove_card(card: KillOnDrop) {
    drop(card);
    wait_for_removal(SLOT0, WAIT).expect("pcscd notices the card is gone");
}

/// `bankbridge card <mode> …` with `pin` on stdin; stdout.
fn card_cli(env: &Env, args: &[&str], pin: Option<&str>) -> (bool, String, String) {
    let mut full = vec!["card"];
    full.extend_from_slice(args);
    if pin.is_some() {
        full.push("--pin-stdin");
    }
    let mut child = env
        .command(&full)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(pin) = pin {
        writeln!(child.stdin.take().unwrap(), "{pin}").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn fixture(name: &str) -> String {
    format!(
        "{}/../cap/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn recorded_vectors_through_pcscd() {
    let Some(_slots) = SlotsLock::for_tests() else {
        return;
    };
    let env = Env::sqlite();
    let cases: [(&str, &[&str], &str); 4] = [
        ("cap_be.replay", &["m1"], "23790240"),
        ("cap_be.replay", &["m1", "1234"], "23580039"),
        ("cap_be.replay", &["m2", "1234"], "23719593"),
        ("bancontact_be.replay", &["m1"], "53780079"),
    ];
    for (recording, args, code) in cases {
        let card = insert_card(&env, &["--replay", &fixture(recording)]);
        let mut full = args.to_vec();
        full.extend_from_slice(&["--reader", "0", "--json"]);
        let (ok, stdout, stderr) = card_cli(&env, &full, Some("1234"));
        assert!(ok, "{recording} {args:?}: {stderr}");
        let v: Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(v["response"], code, "{recording} {args:?}");
        remove_card(card);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_service_through_pcscd_gives_codes_the_issuer_verifies() {
    let Some(_slots) = SlotsLock::for_tests() else {
        return;
    };
    let env = Env::sqlite();
    env.run_ok(&["init"]);
    let mut config = VirtualCardConfig::new(Profile::CapBe, "24681357");
    config.key = CardKey::derive("e2e card");
    let card = insert_card(
        &env,
        &[
            "--profile",
            "cap-be",
            "--pin",
            "24681357",
            "--key-seed",
            "e2e card",
        ],
    );

    // The command line, PIN on stdin.
    let (ok, stdout, stderr) = card_cli(&env, &["readers", "--json"], None);
    assert!(ok, "{stderr}");
    let readers: Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        readers
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == SLOT0 && r["card_present"] == true),
        "{readers}"
    );
    let (ok, stdout, stderr) = card_cli(
        &env,
        &["m1", "123456", "--reader", "Virtual PCD 00 00", "--json"],
        Some("24681357"),
    );
    assert!(ok, "{stderr}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    let atc = v["atc"].as_u64().unwrap() as u16;
    let login = |c: &str| CapRequest::Login {
        challenge: Some(c.to_owned()),
    };
    assert_eq!(
        v["response"],
        verify::expected_code(&config, &login("123456"), atc)
            .unwrap()
            .response
    );

    // The service in `serve`: register the card, then logins and signs over HTTP.
    let admin = env
        .run_ok(&["token", "create", "--scope", "admin", "--name", "ops"])
        .trim()
        .to_owned();
    let write = env
        .run_ok(&["token", "create", "--scope", "write", "--name", "dev-ci"])
        .trim()
        .to_owned();
    let (server, base, log_path) = env.serve().await;
    let http = reqwest::Client::new();
    let post = |path: String, token: &str, body: Value| {
        http.post(format!("{base}{path}"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let fi: Value = post(
        "/api/v1/financial-institutions".into(),
        &admin,
        json!({"name": "KBC", "country": "BE"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let fi = fi["id"].as_str().unwrap().to_owned();
    let res = post(
        format!("/api/v1/financial-institutions/{fi}/cards"),
        &admin,
        json!({"reader": "Virtual PCD 00 00", "label": "test card", "account_reference": "BE68539007547034", "pin": "24681357"}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 201);
    let registered: Value = res.json().await.unwrap();
    let last4 = &config.pan[config.pan.len() - 4..];
    assert_eq!(registered["masked_pan"], format!("**** **** **** {last4}"));
    let card_id = registered["id"].as_str().unwrap().to_owned();
    let cards_path = format!("/api/v1/financial-institutions/{fi}/cards/{card_id}");

    let mut codes = Vec::new();
    for challenge in ["1111", "98765432"] {
        let r: Value = post(
            format!("{cards_path}/logins"),
            &write,
            json!({"challenge": challenge}),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        let atc = r["atc"].as_u64().unwrap() as u16;
        let expected = verify::expected_code(&config, &login(challenge), atc).unwrap();
        assert_eq!(r["response"], expected.response, "{r}");
        codes.push(expected.response);
    }
    let r: Value = post(
        format!("{cards_path}/signs"),
        &write,
        json!({"challenges": ["1000", "3101234567"]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let sign = CapRequest::Sign {
        numbers: vec!["1000".into(), "3101234567".into()],
    };
    let atc = r["atc"].as_u64().unwrap() as u16;
    assert_eq!(
        r["response"],
        verify::expected_code(&config, &sign, atc).unwrap().response
    );
    codes.push(r["response"].as_str().unwrap().to_owned());

    // The registered card from the command line: its stored PIN, no prompt.
    let (ok, stdout, stderr) = card_cli(&env, &["m1", "--reader", "0", "--json"], None);
    assert!(ok, "{stderr}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    let atc = v["atc"].as_u64().unwrap() as u16;
    assert_eq!(
        v["response"],
        verify::expected_code(&config, &CapRequest::Login { challenge: None }, atc)
            .unwrap()
            .response
    );

    // Every use audited with who asked.
    let audit: Value = http
        .get(format!("{base}/api/v1/cards/audit"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let who: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["token_name"].as_str().unwrap())
        .collect();
    assert_eq!(who.len(), 5, "{audit}");
    assert!(who[0].starts_with("cli:"), "{who:?}");
    assert_eq!(&who[1..4], &["dev-ci", "dev-ci", "dev-ci"]);
    assert_eq!(who[4], "ops");

    // Pulled out: a clear answer, and the server keeps serving.
    remove_card(card);
    let res = post(format!("{cards_path}/logins"), &write, json!({}))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert!(
        ["no_card", "reader_unavailable"].contains(&body["code"].as_str().unwrap()),
        "{body}"
    );

    drop(server);
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(logs.contains("card used"), "the server logs card uses");
    for secret in ["24681357", "2824681357FFFFFF"] {
        assert!(!logs.contains(secret), "the PIN appears in the server log");
    }
    for code in &codes {
        assert!(
            !logs.contains(code.as_str()),
            "a code appears in the server log"
        );
    }
}

/// A CAP-only application without a card number (the UK kind): `card m1`
/// and `card m2` compute its codes through pcscd.
#[test]
fn a_card_without_a_number_gives_codes_from_the_command_line() {
    let Some(_slots) = SlotsLock::for_tests() else {
        return;
    };
    let env = Env::sqlite();
    let mut config = VirtualCardConfig::new(Profile::CapUk, "4321");
    config.key = CardKey::derive("uk card");
    let card = insert_card(
        &env,
        &[
            "--profile",
            "cap-uk",
            "--pin",
            "4321",
            "--key-seed",
            "uk card",
        ],
    );
    let cases = [
        CapRequest::Login {
            challenge: Some("12345678".into()),
        },
        CapRequest::Sign {
            numbers: vec!["100".into(), "12345678".into()],
        },
    ];
    for request in cases {
        let args: Vec<String> = match &request {
            CapRequest::Login { challenge } => {
                vec!["m1".into(), challenge.clone().unwrap()]
            }
            CapRequest::Sign { numbers } => {
                let mut a = vec!["m2".to_owned()];
                a.extend(numbers.iter().cloned());
                a
            }
        };
        let mut full: Vec<&str> = args.iter().map(String::as_str).collect();
        full.extend_from_slice(&["--reader", "0", "--json"]);
        let (ok, stdout, stderr) = card_cli(&env, &full, Some("4321"));
        assert!(ok, "{request:?}: {stderr}");
        let v: Value = serde_json::from_str(stdout.trim()).unwrap();
        let atc = v["atc"].as_u64().unwrap() as u16;
        assert_eq!(
            v["response"],
            verify::expected_code(&config, &request, atc)
                .unwrap()
                .response,
            "{request:?}"
        );
    }
    remove_card(card);
}
