//! The card service over real loopback HTTP, with virtual EMV cards in
//! in-process readers: registration, logins and signs verified with the
//! card's key, one operation per reader at a time with readers in parallel,
//! PIN safety, audit, and secrets kept out of answers and logs. (The same
//! path through a real pcscd is in the cli crate's end-to-end tests.)
mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bankbridge_cap::emv::CapRequest;
use bankbridge_cap::transport::{SmartCard, VirtualReaders};
use bankbridge_cap::verify;
use bankbridge_cap::virtual_card::{CardHandle, CardKey, Profile, VirtualCard, VirtualCardConfig};
use bankbridge_server::ServerConfig;
use bankbridge_store::Scope;
use common::*;
use serde_json::{Value, json};

/// Eight digits, so that a timestamp or id cannot contain it by chance.
const PIN: &str = "90817263";
/// The same PIN as a VERIFY command would carry it.
const PIN_BLOCK: &str = "2890817263FFFFFF";

/// Watches how many readers are mid-operation at once.
#[derive(Default)]
struct Activity {
    active: AtomicUsize,
    max_active: AtomicUsize,
}

/// A virtual card that takes `delay` per APDU (a real card takes tens of
/// milliseconds) and reports to `Activity` while a session uses it.
struct SlowCard {
    inner: VirtualCard,
    delay: Duration,
    in_session: bool,
    activity: Arc<Activity>,
}

impl SmartCard for SlowCard {
    fn atr(&self) -> Vec<u8> {
        self.inner.atr()
    }

    fn reset(&mut self) {
        if self.in_session {
            self.in_session = false;
            self.activity.active.fetch_sub(1, Ordering::SeqCst);
        }
        self.inner.reset();
    }

    fn process(&mut self, capdu: &[u8]) -> Option<Vec<u8>> {
        if !self.in_session {
            self.in_session = true;
            let now = self.activity.active.fetch_add(1, Ordering::SeqCst) + 1;
            self.activity.max_active.fetch_max(now, Ordering::SeqCst);
        }
        std::thread::sleep(self.delay);
        self.inner.process(capdu)
    }
}

struct Rig {
    server: TestServer,
    readers: VirtualReaders,
    activity: Arc<Activity>,
    admin: String,
    write: String,
    institution: String,
}

fn config_for(n: usize, pin: &str) -> VirtualCardConfig {
    let mut config = VirtualCardConfig::new(Profile::CapBe, pin);
    config.pan = format!("67039900000000{n:04}1");
    config.key = CardKey::derive(&format!("test card {n}"));
    config
}

impl Rig {
    async fn start(reader_wait: Duration) -> Rig {
        capture_logs();
        let readers = VirtualReaders::new();
        let server = TestServer::start_with_readers(
            ServerConfig {
                reader_wait,
                ..Default::default()
            },
            Some(Arc::new(readers.clone())),
        )
        .await;
        let admin = server.token(Scope::Admin).await;
        let write = server.token(Scope::Write).await;
        let res = server
            .post_json(
                "/api/v1/financial-institutions",
                &admin,
                &json!({"name": "Test Bank", "country": "be"}),
            )
            .await;
        assert_eq!(res.status(), 201);
        let institution: Value = res.json().await.unwrap();
        Rig {
            server,
            readers,
            activity: Arc::default(),
            admin,
            write,
            institution: institution["id"].as_str().unwrap().to_owned(),
        }
    }

    /// Put a card in reader `name`; returns its handle.
    fn insert(&self, name: &str, config: VirtualCardConfig, delay: Duration) -> CardHandle {
        let card = VirtualCard::new(config).unwrap();
        let handle = card.handle();
        self.readers.insert(
            name,
            Box::new(SlowCard {
                inner: card,
                delay,
                in_session: false,
                activity: self.activity.clone(),
            }),
        );
        handle
    }

    async fn register(&self, reader: &str, stored_pin: &str) -> Value {
        let res = self
            .server
            .post_json(
                &format!("/api/v1/financial-institutions/{}/cards", self.institution),
                &self.admin,
                &json!({"reader": reader, "label": format!("card in {reader}"),
                        "account_reference": "BE68 5390 0754 7034", "pin": stored_pin}),
            )
            .await;
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, 201, "{body}");
        body
    }

    fn card_path(&self, card: &str, action: &str) -> String {
        format!(
            "/api/v1/financial-institutions/{}/cards/{card}/{action}",
            self.institution
        )
    }

    /// A login without a challenge in a task of its own: (status, code),
    /// the code `ok` for a success.
    fn spawn_login(&self, card: &str) -> tokio::task::JoinHandle<(u16, String)> {
        let (base, path, token, client) = (
            self.server.base.clone(),
            self.card_path(card, "logins"),
            self.write.clone(),
            self.server.client.clone(),
        );
        tokio::spawn(async move {
            let res = client
                .post(format!("{base}{path}"))
                .bearer_auth(token)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            let body: Value = res.json().await.unwrap();
            (status, body["code"].as_str().unwrap_or("ok").to_owned())
        })
    }

    async fn login(&self, card: &str, challenge: Option<&str>) -> reqwest::Response {
        let body = match challenge {
            Some(c) => json!({"challenge": c}),
            None => json!({}),
        };
        self.server
            .post_json(&self.card_path(card, "logins"), &self.write, &body)
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_logins_over_three_cards_are_right_serial_per_reader_and_parallel_across() {
    let rig = Rig::start(Duration::from_secs(60)).await;
    let mut configs = HashMap::new();
    let mut handles = HashMap::new();
    let mut cards = Vec::new();
    for n in 0..3 {
        let reader = format!("Reader {n}");
        let config = config_for(n, PIN);
        handles.insert(
            reader.clone(),
            rig.insert(&reader, config.clone(), Duration::from_millis(2)),
        );
        let card = rig.register(&reader, PIN).await;
        assert_eq!(
            card["masked_pan"],
            format!("**** **** **** {}", &config.pan[config.pan.len() - 4..])
        );
        assert_eq!(card["psn"], "01");
        assert_eq!(card["status"], "active");
        assert!(card.get("pin").is_none() && !card.to_string().contains(PIN));
        let id = card["id"].as_str().unwrap().to_owned();
        configs.insert(id.clone(), (config, reader));
        cards.push(id);
    }
    // Registration sends no PIN.
    assert!(handles.values().all(|h| h.verify_count() == 0));

    let mut tasks = Vec::new();
    for i in 0..50usize {
        let card = cards[i % 3].clone();
        let challenge = format!("{}", 10_000_000 + i * 7919);
        let base = rig.server.base.clone();
        let path = rig.card_path(&card, "logins");
        let token = rig.write.clone();
        let client = rig.server.client.clone();
        tasks.push(tokio::spawn(async move {
            let res = client
                .post(format!("{base}{path}"))
                .bearer_auth(token)
                .json(&json!({"challenge": challenge}))
                .send()
                .await
                .unwrap();
            let status = res.status();
            let body: Value = res.json().await.unwrap();
            (card, challenge, status, body)
        }));
    }
    let mut codes = Vec::new();
    let mut atcs: HashMap<String, Vec<u64>> = HashMap::new();
    for t in tasks {
        let (card, challenge, status, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
        let (config, _) = &configs[&card];
        let atc = body["atc"].as_u64().unwrap() as u16;
        let expected = verify::expected_code(
            config,
            &CapRequest::Login {
                challenge: Some(challenge.clone()),
            },
            atc,
        )
        .unwrap();
        assert_eq!(
            body["response"], expected.response,
            "card {card} challenge {challenge}"
        );
        atcs.entry(card).or_default().push(u64::from(atc));
        codes.push(expected.response);
    }
    // Every login used its own ATC: none lost, none shared.
    for (card, mut list) in atcs {
        list.sort();
        let first = list[0];
        assert_eq!(
            list,
            (first..first + list.len() as u64).collect::<Vec<_>>(),
            "{card}"
        );
    }
    // One operation at a time per reader: each card saw whole sessions, one
    // after another, each with one VERIFY and then its two GENERATE ACs.
    for (reader, handle) in &handles {
        let log = handle.apdu_log();
        let mut sessions: Vec<u64> = log.iter().map(|a| a.0).collect();
        let sorted = {
            let mut s = sessions.clone();
            s.sort();
            s
        };
        assert_eq!(sessions, sorted, "{reader}: APDUs of sessions interleaved");
        sessions.dedup();
        let mut per_session: HashMap<u64, Vec<String>> = HashMap::new();
        for a in &log {
            per_session.entry(a.0).or_default().push(a.1.clone());
        }
        let ops: Vec<&Vec<String>> = per_session
            .values()
            .filter(|cmds| cmds.iter().any(|c| c.starts_with("80AE")))
            .collect();
        assert!(ops.len() >= 16, "{reader}: {} operations", ops.len());
        for cmds in ops {
            assert_eq!(cmds.iter().filter(|c| c.starts_with("0020")).count(), 1);
            assert_eq!(cmds.iter().filter(|c| c.starts_with("80AE")).count(), 2);
        }
        assert_eq!(handle.pin_tries_left(), 3);
    }
    assert!(
        rig.activity.max_active.load(Ordering::SeqCst) >= 2,
        "readers never worked in parallel"
    );

    // A sign (M2) on one card, checked the same way.
    let res = rig
        .server
        .post_json(
            &rig.card_path(&cards[0], "signs"),
            &rig.write,
            &json!({"challenges": ["1000", "123456"]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let (config, _) = &configs[&cards[0]];
    let sign = CapRequest::Sign {
        numbers: vec!["1000".into(), "123456".into()],
    };
    let atc = body["atc"].as_u64().unwrap() as u16;
    assert_eq!(
        body["response"],
        verify::expected_code(config, &sign, atc).unwrap().response
    );

    // Every use is audited, newest first, with the token's name.
    let audit = rig
        .server
        .get_json("/api/v1/cards/audit?limit=1000", &rig.admin)
        .await;
    let entries = audit["data"].as_array().unwrap();
    assert_eq!(
        entries.len(),
        3 + 50 + 1,
        "3 registrations, 50 logins, 1 sign"
    );
    assert_eq!(entries[0]["mode"], "m2");
    assert!(
        entries
            .iter()
            .all(|e| e["outcome"] == "ok" && e["token_name"].as_str().unwrap().starts_with("test-"))
    );
    expect_error(
        rig.server.get("/api/v1/cards/audit", &rig.write).await,
        403,
        "forbidden",
    )
    .await;

    // Neither the PIN nor any code reached the logs.
    let logs = logs();
    assert!(logs.contains("card used"), "the card service logs its uses");
    for secret in [PIN, PIN_BLOCK] {
        if let Some(at) = logs.find(secret) {
            panic!(
                "the PIN was logged: …{}…",
                &logs[at.saturating_sub(200)..(at + 50).min(logs.len())]
            );
        }
    }
    for code in &codes {
        assert!(!logs.contains(code.as_str()), "a code was logged");
    }
    rig.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_stored_pin_is_tried_exactly_once() {
    let rig = Rig::start(Duration::from_secs(60)).await;
    let handle = rig.insert("Reader W", config_for(7, "1234"), Duration::ZERO);
    let card = rig.register("Reader W", "0000").await;
    let id = card["id"].as_str().unwrap();

    // Five developers ask at once: one VERIFY reaches the card, ever.
    let mut tasks = Vec::new();
    for _ in 0..5 {
        tasks.push(rig.spawn_login(id));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    outcomes.sort();
    assert_eq!(
        outcomes.iter().filter(|(_, c)| c == "wrong_pin").count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|(_, c)| c == "card_disabled")
            .count(),
        4,
        "{outcomes:?}"
    );
    assert_eq!(handle.verify_count(), 1);
    assert_eq!(handle.pin_tries_left(), 2);

    let view = rig
        .server
        .get_json(
            &format!(
                "/api/v1/financial-institutions/{}/cards/{id}",
                rig.institution
            ),
            &rig.admin,
        )
        .await;
    assert_eq!(view["status"], "disabled");
    assert!(
        view["status_reason"]
            .as_str()
            .unwrap()
            .contains("2 tries left")
    );

    // Fixing the PIN and enabling the card again: with 2 tries left the
    // default minimum (3) still keeps the PIN off the card.
    let res = rig
        .server
        .client
        .patch(rig.server.url(&format!(
            "/api/v1/financial-institutions/{}/cards/{id}",
            rig.institution
        )))
        .bearer_auth(&rig.admin)
        .json(&json!({"pin": "1234", "status": "active"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    expect_error(rig.login(id, None).await, 409, "pin_tries_low").await;
    assert_eq!(handle.verify_count(), 1, "no VERIFY below the minimum");

    // The audit trail tells the story.
    let audit = rig
        .server
        .get_json(&format!("/api/v1/cards/audit?card={id}"), &rig.admin)
        .await;
    let entries: Vec<(&str, &str)> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["mode"].as_str().unwrap(), e["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(entries.len(), 7, "{entries:?}");
    assert_eq!(entries[0], ("m1", "pin_tries_low"));
    assert_eq!(entries[6], ("register", "ok"));
    assert_eq!(entries.iter().filter(|e| e.1 == "wrong_pin").count(), 1);
    assert_eq!(entries.iter().filter(|e| e.1 == "disabled").count(), 4);
    rig.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_counter_at_two_sends_no_verify() {
    let rig = Rig::start(Duration::from_secs(60)).await;
    let mut config = config_for(8, PIN);
    config.pin_tries_left = 2;
    let handle = rig.insert("Reader T", config, Duration::ZERO);
    let card = rig.register("Reader T", PIN).await;
    let body = expect_error(
        rig.login(card["id"].as_str().unwrap(), None).await,
        409,
        "pin_tries_low",
    )
    .await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("no PIN was sent")
    );
    assert_eq!(handle.verify_count(), 0);
    assert_eq!(handle.pin_tries_left(), 2);
    rig.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn busy_reader_removed_card_and_bad_requests_get_clear_codes() {
    let rig = Rig::start(Duration::from_millis(100)).await;
    // About 0.5 s per operation against a 0.1 s wait: a queue forms and
    // overflows.
    let handle = rig.insert("Reader S", config_for(9, PIN), Duration::from_millis(35));
    let card = rig.register("Reader S", PIN).await;
    let id = card["id"].as_str().unwrap().to_owned();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        tasks.push(rig.spawn_login(&id));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    assert!(outcomes.contains(&(200, "ok".into())), "{outcomes:?}");
    assert!(
        outcomes.contains(&(503, "reader_busy".into())),
        "{outcomes:?}"
    );

    // Pulled out mid-operation.
    handle.set_remove_after(Some(5));
    expect_error(rig.login(&id, None).await, 503, "card_removed").await;
    expect_error(rig.login(&id, None).await, 503, "no_card").await;

    // Bad input never reaches a reader.
    for body in [
        json!({"challenge": "12ab"}),
        json!({"challenge": 1234}),
        json!({"challenge": "1", "pin": "1234"}),
    ] {
        let res = rig
            .server
            .post_json(&rig.card_path(&id, "logins"), &rig.write, &body)
            .await;
        assert_eq!(res.status(), 400, "{body}");
    }
    let res = rig
        .server
        .post_json(
            &rig.card_path(&id, "signs"),
            &rig.write,
            &json!({"challenges": []}),
        )
        .await;
    assert_eq!(res.status(), 400);
    expect_error(rig.login("card_00000000", None).await, 404, "not_found").await;
    // Read tokens cannot use cards; write tokens cannot register them.
    let read = rig.server.token(Scope::Read).await;
    let res = rig
        .server
        .post_json(&rig.card_path(&id, "logins"), &read, &json!({}))
        .await;
    expect_error(res, 403, "forbidden").await;
    let res = rig
        .server
        .post_json(
            &format!("/api/v1/financial-institutions/{}/cards", rig.institution),
            &rig.write,
            &json!({"reader": "Reader S", "label": "x", "account_reference": "y", "pin": "1234"}),
        )
        .await;
    expect_error(res, 403, "forbidden").await;
    // A reader with a registered card cannot take a second registration.
    rig.readers.insert(
        "Reader S",
        Box::new(VirtualCard::new(config_for(9, PIN)).unwrap()),
    );
    let res = rig
        .server
        .post_json(
            &format!("/api/v1/financial-institutions/{}/cards", rig.institution),
            &rig.admin,
            &json!({"reader": "Reader S", "label": "x", "account_reference": "y", "pin": "1234"}),
        )
        .await;
    expect_error(res, 409, "conflict").await;
    rig.server.shutdown().await;
}

/// The store cannot record that a card may have refused its PIN (another
/// process holds the database's write lock): the card is held out of use in
/// memory, the reader's turn is kept until the write lands, and no second
/// VERIFY reaches the card.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refusal_the_store_cannot_record_yet_is_held_in_memory() {
    use sqlx::Connection as _;
    let rig = Rig::start(Duration::from_secs(60)).await;
    let handle = rig.insert("Reader L", config_for(11, "1234"), Duration::ZERO);
    let card = rig.register("Reader L", "0000").await;
    let id = card["id"].as_str().unwrap().to_owned();

    // Another process takes the write lock of the SQLite file.
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(&rig.server.db_path);
    let mut blocker = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut blocker)
        .await
        .unwrap();

    let first = rig.spawn_login(&id);
    let started = std::time::Instant::now();
    while handle.verify_count() == 0 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(handle.verify_count(), 1);
    // Past two of the store's 5 s busy timeouts (the request's token touch
    // waits one out first): the card's first write failed and is retried.
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(
        !first.is_finished(),
        "the turn is held until the write lands"
    );
    let in_store = rig.server.store.get_card(&id).await.unwrap().unwrap();
    assert_eq!(in_store.status.as_str(), "active", "not recorded yet");
    // Another request is refused from memory, without a VERIFY.
    let second = rig.spawn_login(&id);
    tokio::time::sleep(Duration::from_millis(300)).await;
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    blocker.close().await.unwrap();

    assert_eq!(first.await.unwrap(), (409, "wrong_pin".to_owned()));
    assert_eq!(second.await.unwrap(), (409, "card_disabled".to_owned()));
    assert_eq!(handle.verify_count(), 1, "exactly one VERIFY");
    let card = rig.server.store.get_card(&id).await.unwrap().unwrap();
    assert_eq!(card.status.as_str(), "disabled");
    assert!(card.pin_refused);
    let logs = logs();
    assert!(
        logs.contains("holding its reader and retrying"),
        "{}",
        logs.lines()
            .filter(|l| l.contains("ERROR") || l.contains("WARN"))
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    rig.server.shutdown().await;
}
