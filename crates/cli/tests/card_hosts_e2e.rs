//! Card hosts end to end: two `bankbridge card agent` processes, each with
//! its own data directory, serve the readers of "their" machine to a
//! central `bankbridge serve` over loopback HTTP. Three virtual cards sit in
//! pcscd's vpcd readers (two on host A, one on host B; all behind the one
//! pcscd of this machine, each agent told which readers are its own).
//!
//! Shows: 50 concurrent logins over the 3 cards all give codes the card's
//! issuer accepts; each card's APDU log (written by the virtual card itself)
//! has its sessions one after the other, never interleaved, and the codes'
//! counters are consecutive per card; a host killed mid-job answers
//! `reader_offline` for its cards, the card whose job it held is taken out
//! of use (the PIN may have reached it), and the other host's cards work on.
//!
//! Needs pcscd with vsmartcard-vpcd and the second vpcd device that
//! `scripts/pcscd.sh start` adds (four slots). Without them this test skips,
//! unless CI or `BANKBRIDGE_TEST_PCSCD` is set, where it fails.
mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bankbridge_cap::emv::CapRequest;
use bankbridge_cap::pcsc::{PcscReaders, wait_for_card};
use bankbridge_cap::transport::Readers;
use bankbridge_cap::verify;
use bankbridge_cap::virtual_card::{CardKey, Profile, VirtualCardConfig};
use bankbridge_cap::vpcd::SlotsLock;
use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);
const LOGINS: usize = 50;

/// A virtual card in one vpcd slot.
struct Slot {
    port: u16,
    reader: &'static str,
    seed: &'static str,
    pan: &'static str,
}

const CARDS: [Slot; 3] = [
    Slot {
        port: 35963,
        reader: "Virtual PCD 00 00",
        seed: "host-a card 1",
        pan: "6703000000000000011",
    },
    Slot {
        port: 35964,
        reader: "Virtual PCD 00 01",
        seed: "host-a card 2",
        pan: "6703000000000000029",
    },
    Slot {
        port: 35965,
        reader: "Virtual PCD 01 00",
        seed: "host-b card 1",
        pan: "6703000000000000037",
    },
];

fn config(slot: &Slot) -> VirtualCardConfig {
    let mut c = VirtualCardConfig::new(Profile::CapBe, "1234");
    c.key = CardKey::derive(slot.seed);
    c.pan = slot.pan.to_owned();
    c
}

fn insert(env: &Env, slot: &Slot, log: &std::path::Path, delay_ms: u64) -> KillOnDrop {
    let child = KillOnDrop(Some(
        env.command(&[
            "card",
            "virtual",
            "--vpcd",
            &format!("127.0.0.1:{}", slot.port),
            "--key-seed",
            slot.seed,
            "--pan",
            slot.pan,
            "--apdu-log",
            &log.display().to_string(),
            "--apdu-delay-ms",
            &delay_ms.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    ));
    wait_for_card(slot.reader, WAIT).expect("pcscd sees the virtual card");
    child
}

/// A card agent with its own data directory, serving readers matching `only`.
fn agent(server: &str, token: &str, only: &str) -> (KillOnDrop, tempfile::TempDir) {
    let home = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(home.path().join("agent.log")).unwrap();
    let child = std::process::Command::new(BIN)
        .args(["card", "agent", "--server", server, "--reader", only])
        .env("BANKBRIDGE_HOME", home.path())
        .env("BANKBRIDGE_TOKEN", token)
        .env("BANKBRIDGE_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    (KillOnDrop(Some(child)), home)
}

/// The four vpcd slots, or why not.
fn four_slots() -> Result<(), String> {
    let names: Vec<String> = PcscReaders::new()
        .list()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|r| r.name)
        .collect();
    if CARDS.iter().all(|c| names.iter().any(|n| n == c.reader)) {
        Ok(())
    } else {
        Err(format!(
            "pcscd has not the second vpcd device (readers: {names:?}); stop pcscd and run scripts/pcscd.sh start"
        ))
    }
}

/// The APDU log lines of one card: (session, command).
fn apdu_log(path: &std::path::Path) -> Vec<(u64, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["session"].as_u64().unwrap(),
                v["command"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn card_agents_serve_their_readers_to_the_central_server() {
    let Some(_slots) = SlotsLock::for_tests() else {
        return;
    };
    if let Err(why) = four_slots() {
        let required = ["BANKBRIDGE_TEST_PCSCD", "CI"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
        assert!(!required, "{why}");
        eprintln!("skipping: {why}");
        return;
    }
    let env = Env::sqlite();
    env.run_ok(&["init"]);
    let token = |args: &[&str]| {
        env.run_ok(&[&["token", "create"], args].concat())
            .trim()
            .to_owned()
    };
    let admin = token(&["--scope", "admin", "--name", "ops"]);
    let write = token(&["--scope", "write", "--name", "web-team"]);
    let host_a = token(&["--scope", "card-agent", "--host", "pi-a", "--name", "pi-a"]);
    let host_b = token(&["--scope", "card-agent", "--host", "pi-b", "--name", "pi-b"]);
    let logs = tempfile::tempdir().unwrap();
    let log_of = |i: usize| logs.path().join(format!("card-{i}.jsonl"));
    let mut cards: Vec<KillOnDrop> = CARDS
        .iter()
        .enumerate()
        .map(|(i, slot)| insert(&env, slot, &log_of(i), 0))
        .collect();

    let (_server, base, server_log) = env.serve().await;
    let (_agent_a, agent_a_home) = agent(&base, &host_a, "Virtual PCD 00");
    let (agent_b, agent_b_home) = agent(&base, &host_b, "Virtual PCD 01 00");
    let mut agent_b = Some(agent_b);
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let (http, url, admin) = (http.clone(), format!("{base}{path}"), admin.clone());
        async move {
            let res = http.get(url).bearer_auth(admin).send().await.unwrap();
            assert!(res.status().is_success(), "{}", res.status());
            res.json::<Value>().await.unwrap()
        }
    };
    let post = |path: String, token: &str, body: Value| {
        let (http, url, token) = (http.clone(), format!("{base}{path}"), token.to_owned());
        async move {
            let res = http
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    // Both hosts come online with their own readers only.
    let started = Instant::now();
    loop {
        let hosts = get("/api/v1/card-hosts").await;
        let online: BTreeMap<String, usize> = hosts["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["online"] == true)
            .map(|h| {
                (
                    h["name"].as_str().unwrap().to_owned(),
                    h["readers"].as_array().unwrap().len(),
                )
            })
            .collect();
        if online.get("pi-a") == Some(&2) && online.get("pi-b") == Some(&1) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the agents did not come online: {hosts}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The agent token can do nothing but its own host's jobs.
    let res = http
        .get(format!("{base}/api/v1/accounts"))
        .bearer_auth(&host_a)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let (status, body) = post(
        "/api/v1/card-agent/jobs?host=pi-b".into(),
        &host_a,
        json!({"public_key": "A".repeat(43) + "=", "readers": []}),
    )
    .await;
    assert_eq!(status, 403, "{body}");

    // Register the three cards, each on its host.
    let (status, fi) = post(
        "/api/v1/financial-institutions".into(),
        &admin,
        json!({"name": "Card Bank", "country": "BE"}),
    )
    .await;
    assert_eq!(status, 201, "{fi}");
    let fi = fi["id"].as_str().unwrap().to_owned();
    let mut ids = Vec::new();
    for (i, (slot, host)) in CARDS.iter().zip(["pi-a", "pi-a", "pi-b"]).enumerate() {
        let (status, card) = post(
            format!("/api/v1/financial-institutions/{fi}/cards"),
            &admin,
            json!({"host": host, "reader": slot.reader, "label": format!("card {i}"),
                   "account_reference": format!("BE{i}"), "pin": "1234"}),
        )
        .await;
        assert_eq!(status, 201, "{card}");
        assert_eq!(card["host"], host);
        assert_eq!(
            card["masked_pan"].as_str().unwrap(),
            format!("**** **** **** {}", &slot.pan[slot.pan.len() - 4..])
        );
        ids.push(card["id"].as_str().unwrap().to_owned());
    }
    let readers = get("/api/v1/card-readers").await;
    let hosted: Vec<(&str, &str)> = readers["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| Some((r["host"].as_str()?, r["name"].as_str()?)))
        .collect();
    assert!(hosted.contains(&("pi-b", "Virtual PCD 01 00")), "{readers}");

    // 50 concurrent logins over the three cards.
    let before: Vec<usize> = (0..3).map(|i| apdu_log(&log_of(i)).len()).collect();
    let mut tasks = Vec::new();
    for n in 0..LOGINS {
        let card = n % 3;
        let challenge = format!("{:08}", 10_000_000 + n * 7919);
        let path = format!(
            "/api/v1/financial-institutions/{fi}/cards/{}/logins",
            ids[card]
        );
        let call = post(path, &write, json!({ "challenge": challenge }));
        tasks.push(tokio::spawn(async move {
            let (status, body) = call.await;
            (card, challenge, status, body)
        }));
    }
    let mut atcs: BTreeMap<usize, Vec<u16>> = BTreeMap::new();
    for task in tasks {
        let (card, challenge, status, body) = task.await.unwrap();
        assert_eq!(status, 200, "login on card {card}: {body}");
        let atc = body["atc"].as_u64().unwrap() as u16;
        let expected = verify::expected_code(
            &config(&CARDS[card]),
            &CapRequest::Login {
                challenge: Some(challenge),
            },
            atc,
        )
        .unwrap();
        assert_eq!(
            body["response"].as_str().unwrap(),
            expected.response,
            "card {card}'s issuer accepts the code"
        );
        atcs.entry(card).or_default().push(atc);
    }
    // Each card counted one code per login, one after the other.
    for (card, list) in &mut atcs {
        list.sort();
        assert!(
            list.windows(2).all(|w| w[1] == w[0] + 1),
            "card {card}'s counters are not consecutive: {list:?}"
        );
    }
    // The cards' own logs: sessions never interleave.
    tokio::time::sleep(Duration::from_millis(200)).await; // the logs flush every 50 ms
    for i in 0..3 {
        let log = apdu_log(&log_of(i));
        let log = &log[before[i]..];
        let mut seen = Vec::new();
        for (session, _) in log {
            if seen.last() != Some(session) {
                assert!(
                    !seen.contains(session),
                    "card {i}: session {session} resumed after another one: interleaved APDUs"
                );
                seen.push(*session);
            }
        }
        let verifies = log.iter().filter(|(_, c)| c.starts_with("0020")).count();
        assert_eq!(
            verifies,
            atcs[&i].len(),
            "card {i}: one VERIFY per login (its log: {} APDUs over {} sessions)",
            log.len(),
            seen.len()
        );
    }
    // The PIN went to the agents sealed: neither it nor a code is in a log.
    let server_text = std::fs::read_to_string(&server_log).unwrap();
    let agent_text = std::fs::read_to_string(agent_a_home.path().join("agent.log")).unwrap();
    assert!(
        agent_text.contains("card agent: job finished"),
        "{agent_text}"
    );
    for text in [&server_text, &agent_text] {
        assert!(!text.contains("\"1234\""), "a PIN in a log");
        assert!(!text.contains("pin_sealed"), "a sealed PIN in a log");
    }

    // Host B dies mid-job: its card slowed down so that the agent is inside
    // the card session when it is killed.
    drop(cards.pop());
    cards.push(insert(&env, &CARDS[2], &log_of(2), 150));
    let slow = {
        let path = format!(
            "/api/v1/financial-institutions/{fi}/cards/{}/logins",
            ids[2]
        );
        let call = post(path, &write, json!({ "challenge": "12345678" }));
        tokio::spawn(call)
    };
    // Kill it once its job is in progress there.
    let started = Instant::now();
    loop {
        let hosts = get("/api/v1/card-hosts").await;
        let busy = hosts["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["name"] == "pi-b" && h["in_progress"] == 1);
        if busy {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "host B never took the job: {hosts}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(agent_b.take());
    let (status, body) = slow.await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "pin_outcome_unknown", "{body}");
    // Its card is out of use until an admin checks it and sets the PIN again.
    let card = get(&format!(
        "/api/v1/financial-institutions/{fi}/cards/{}",
        ids[2]
    ))
    .await;
    assert_eq!(card["status"], "disabled", "{card}");
    assert_eq!(card["pin_refused"], true, "{card}");
    assert!(
        card["status_reason"].as_str().unwrap().contains("pi-b"),
        "{card}"
    );
    // Re-enabled by an admin, the card's host is still gone: reader_offline.
    let res = http
        .patch(format!(
            "{base}/api/v1/financial-institutions/{fi}/cards/{}",
            ids[2]
        ))
        .bearer_auth(&admin)
        .json(&json!({"status": "active", "pin": "1234"}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    let (status, body) = post(
        format!(
            "/api/v1/financial-institutions/{fi}/cards/{}/logins",
            ids[2]
        ),
        &write,
        json!({ "challenge": "1234" }),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("reader_offline")),
        "{body}"
    );
    // Host A's cards are unaffected.
    for id in &ids[..2] {
        let (status, body) = post(
            format!("/api/v1/financial-institutions/{fi}/cards/{id}/logins"),
            &write,
            json!({ "challenge": "4321" }),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let hosts = get("/api/v1/card-hosts").await;
    let b = hosts["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "pi-b")
        .unwrap();
    assert_eq!(b["online"], false, "{hosts}");
    drop(agent_b_home);
}
