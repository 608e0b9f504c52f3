//! Card hosts end to end: two `bankbridge card agent` processes, each with
//! its own data directory, serve the readers of "their" machine to a
//! central `bankbridge serve` over loopback HTTP. Host A has two virtual
//! cards in pcscd's two vpcd readers (PC/SC, as USB readers); host B has one
//! in an in-process reader of its own (`--virtual-card`: vpcd has only two
//! slots, and one machine has one pcscd).
//!
//! Shows: 50 concurrent logins over the 3 cards all give codes the card's
//! issuer accepts; each card's APDU log (written by the virtual card itself)
//! has its sessions one after the other, never interleaved, with one VERIFY
//! per login, and the codes' counters are consecutive per card; a host
//! killed mid-job answers `reader_offline` for its cards, the card whose job
//! it held is taken out of use (the PIN may have reached it), and the other
//! host's card works on.
//!
//! Needs pcscd with vsmartcard-vpcd (`scripts/pcscd.sh start`). Without it
//! this test skips, unless CI or `BANKBRIDGE_TEST_PCSCD` is set, where it
//! fails.
mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bankbridge_cap::emv::CapRequest;
use bankbridge_cap::pcsc::wait_for_card;
use bankbridge_cap::verify;
use bankbridge_cap::virtual_card::{CardKey, Profile, VirtualCardConfig};
use bankbridge_cap::vpcd::SlotsLock;
use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);
const LOGINS: usize = 50;

/// A virtual card: in a vpcd slot (`port`), or in host B's own reader.
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
        port: 0,
        reader: "Virtual card 1",
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
fn agent(server: &str, token: &str, only: &str, extra: &[&str]) -> (KillOnDrop, tempfile::TempDir) {
    let home = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(home.path().join("agent.log")).unwrap();
    let child = std::process::Command::new(BIN)
        .args(["card", "agent", "--server", server, "--reader", only])
        .args(extra)
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
    let mut cards: Vec<KillOnDrop> = CARDS[..2]
        .iter()
        .enumerate()
        .map(|(i, slot)| insert(&env, slot, &log_of(i), 0))
        .collect();

    let (_server, base, server_log) = env.serve().await;
    let (agent_a, agent_a_home) = agent(&base, &host_a, "Virtual PCD 00", &[]);
    let mut agent_a = Some(agent_a);
    let b_card = format!("seed={},pan={}", CARDS[2].seed, CARDS[2].pan);
    let b_log = log_of(2).display().to_string();
    let (_agent_b, _agent_b_home) = agent(
        &base,
        &host_b,
        "Virtual card",
        &["--virtual-card", &b_card, "--apdu-log", &b_log],
    );
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
    assert!(hosted.contains(&("pi-b", "Virtual card 1")), "{readers}");
    assert!(hosted.contains(&("pi-a", "Virtual PCD 00 01")), "{readers}");

    // 50 concurrent logins over the three cards.
    let burst = Instant::now();
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
    eprintln!(
        "{LOGINS} concurrent logins over 3 cards on 2 hosts: all right in {:?}",
        burst.elapsed()
    );
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
        let leak = text.lines().find(|l| l.contains("\"pin_sealed\":"));
        assert!(leak.is_none(), "a sealed PIN in a log: {leak:?}");
    }

    // Host A dies mid-job: its first card slowed down so that the agent is
    // inside the card session when it is killed.
    drop(cards.remove(0));
    cards.insert(0, insert(&env, &CARDS[0], &log_of(0), 150));
    let slow = {
        let path = format!(
            "/api/v1/financial-institutions/{fi}/cards/{}/logins",
            ids[0]
        );
        let call = post(path, &write, json!({ "challenge": "12345678" }));
        tokio::spawn(call)
    };
    let started = Instant::now();
    loop {
        let hosts = get("/api/v1/card-hosts").await;
        let busy = hosts["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["name"] == "pi-a" && h["in_progress"] == 1);
        if busy {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "host A never took the job: {hosts}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = Instant::now();
    drop(agent_a.take());
    let (status, body) = slow.await.unwrap();
    let noticed = killed.elapsed();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "pin_outcome_unknown", "{body}");
    eprintln!("the server gave up the killed host's job {noticed:?} after the kill");
    // Its card is out of use until an admin checks it and sets the PIN again.
    let card = get(&format!(
        "/api/v1/financial-institutions/{fi}/cards/{}",
        ids[0]
    ))
    .await;
    assert_eq!(card["status"], "disabled", "{card}");
    assert_eq!(card["pin_refused"], true, "{card}");
    assert!(
        card["status_reason"].as_str().unwrap().contains("pi-a"),
        "{card}"
    );
    // The host's other card: reader_offline at once.
    let login = |id: &str, challenge: &str| {
        post(
            format!("/api/v1/financial-institutions/{fi}/cards/{id}/logins"),
            &write,
            json!({ "challenge": challenge }),
        )
    };
    let asked = Instant::now();
    let (status, body) = login(&ids[1], "1234").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("reader_offline")),
        "{body}"
    );
    assert!(asked.elapsed() < Duration::from_secs(2), "answered at once");
    // Re-enabled by an admin, the first card's host is still gone.
    let res = http
        .patch(format!(
            "{base}/api/v1/financial-institutions/{fi}/cards/{}",
            ids[0]
        ))
        .bearer_auth(&admin)
        .json(&json!({"status": "active", "pin": "1234"}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    let (status, body) = login(&ids[0], "5678").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("reader_offline")),
        "{body}"
    );
    // Host B's card is unaffected.
    let (status, body) = login(&ids[2], "4321").await;
    assert_eq!(status, 200, "{body}");
    let hosts = get("/api/v1/card-hosts").await;
    let online: BTreeMap<&str, bool> = hosts["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["name"].as_str().unwrap(), h["online"] == true))
        .collect();
    assert_eq!(
        online,
        BTreeMap::from([("pi-a", false), ("pi-b", true)]),
        "{hosts}"
    );
}
