//! Card hosts over real loopback HTTP: a card agent written here in a few
//! lines (poll, `remote::run_job` on in-process virtual readers, answer)
//! stands for `bankbridge card agent`, whose own end-to-end test (through
//! pcscd, two agent processes) is in the cli crate. Shows the protocol and
//! the rules: registration and codes through a host, the PIN sealed to the
//! host, a refused PIN taking the card out of use across the network, an
//! offline host answered at once, and what an agent token may do.
mod common;

use std::sync::Arc;
use std::time::Duration;

use bankbridge_cap::emv::CapRequest;
use bankbridge_cap::remote::{CardJob, HostKey, JobWork, run_job};
use bankbridge_cap::transport::{Readers, VirtualReaders};
use bankbridge_cap::verify;
use bankbridge_cap::virtual_card::{CardKey, Profile, VirtualCard, VirtualCardConfig};
use bankbridge_store::Scope;
use common::*;
use serde_json::{Value, json};

fn card_config(pin: &str) -> VirtualCardConfig {
    let mut config = VirtualCardConfig::new(Profile::CapBe, pin);
    config.key = CardKey::derive("card host test");
    config
}

/// Polls for `host` until stopped; every job it got is sent to `seen`.
fn spawn_agent(
    server: &TestServer,
    token: String,
    readers: VirtualReaders,
    seen: tokio::sync::mpsc::UnboundedSender<CardJob>,
) -> tokio::task::JoinHandle<()> {
    let client = reqwest::Client::new();
    let base = server.url("");
    tokio::spawn(async move {
        let key = Arc::new(HostKey::generate());
        loop {
            let list = readers.list().unwrap();
            let res = client
                .post(format!("{base}/api/v1/card-agent/jobs?wait_ms=2000"))
                .bearer_auth(&token)
                .json(&json!({ "public_key": key.public(), "readers": list }))
                .send()
                .await
                .unwrap();
            assert!(res.status().is_success(), "{}", res.status());
            let jobs: Value = res.json().await.unwrap();
            for job in jobs["data"].as_array().unwrap() {
                let job: CardJob = serde_json::from_value(job.clone()).unwrap();
                let _ = seen.send(job.clone());
                let id = job.id.clone();
                let (readers, key) = (readers.clone(), key.clone());
                let outcome = tokio::task::spawn_blocking(move || run_job(&readers, &key, &job))
                    .await
                    .unwrap();
                let res = client
                    .post(format!("{base}/api/v1/card-agent/results"))
                    .bearer_auth(&token)
                    .json(&json!({ "job_id": id, "outcome": outcome }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 202);
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_card_on_a_host_computes_through_its_agent_under_the_same_rules() {
    let server =
        TestServer::start_with_readers(Default::default(), Some(Arc::new(VirtualReaders::new())))
            .await;
    let admin = server.token(Scope::Admin).await;
    let write = server.token(Scope::Write).await;
    let agent_token = server.token_at(Scope::CardAgent, Some("pi")).await;
    let readers = VirtualReaders::new();
    readers.insert(
        "Reader 0",
        Box::new(VirtualCard::new(card_config("4711")).unwrap()),
    );

    // No agent yet: the host is offline, registration says so.
    let res = server
        .post_json(
            "/api/v1/financial-institutions",
            &admin,
            &json!({"name": "Bank"}),
        )
        .await;
    let fi = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let register = json!({"host": "pi", "reader": "Reader 0", "label": "team card",
        "account_reference": "BE01", "pin": "4711"});
    let res = server
        .post_json(
            &format!("/api/v1/financial-institutions/{fi}/cards"),
            &admin,
            &register,
        )
        .await;
    expect_error(res, 503, "reader_offline").await;

    let (tx, mut jobs) = tokio::sync::mpsc::unbounded_channel();
    let agent = spawn_agent(&server, agent_token.clone(), readers.clone(), tx);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let hosts = server.get_json("/api/v1/card-hosts", &admin).await;
    assert_eq!(hosts["data"][0]["name"], "pi");
    assert_eq!(hosts["data"][0]["online"], true);
    assert_eq!(hosts["data"][0]["readers"][0]["name"], "Reader 0");

    let res = server
        .post_json(
            &format!("/api/v1/financial-institutions/{fi}/cards"),
            &admin,
            &register,
        )
        .await;
    assert_eq!(res.status(), 201);
    let card: Value = res.json().await.unwrap();
    assert_eq!(card["host"], "pi");
    let id = card["id"].as_str().unwrap().to_owned();
    assert!(matches!(jobs.recv().await.unwrap().work, JobWork::Identify));

    // A login: the code is the card's, the PIN travelled sealed.
    let login = format!("/api/v1/financial-institutions/{fi}/cards/{id}/logins");
    let res = server
        .post_json(&login, &write, &json!({"challenge": "13579"}))
        .await;
    assert_eq!(res.status(), 200);
    let code: Value = res.json().await.unwrap();
    let expected = verify::expected_code(
        &card_config("4711"),
        &CapRequest::Login {
            challenge: Some("13579".into()),
        },
        code["atc"].as_u64().unwrap() as u16,
    )
    .unwrap();
    assert_eq!(code["response"], expected.response.as_str());
    let job = jobs.recv().await.unwrap();
    let JobWork::Compute { pin_sealed, .. } = &job.work else {
        panic!("a login job computes");
    };
    assert!(!pin_sealed.contains("4711"));
    assert!(
        !format!("{job:?}").contains(pin_sealed.as_str()),
        "Debug hides it"
    );

    // A sign (M2) over the numbers a payment shows, the same way.
    let sign = format!("/api/v1/financial-institutions/{fi}/cards/{id}/signs");
    let res = server
        .post_json(&sign, &write, &json!({"challenges": ["2500", "12345678"]}))
        .await;
    assert_eq!(res.status(), 200);
    let code: Value = res.json().await.unwrap();
    let expected = verify::expected_code(
        &card_config("4711"),
        &CapRequest::Sign {
            numbers: vec!["2500".into(), "12345678".into()],
        },
        code["atc"].as_u64().unwrap() as u16,
    )
    .unwrap();
    assert_eq!(code["response"], expected.response.as_str());
    assert!(matches!(
        jobs.recv().await.unwrap().work,
        JobWork::Compute {
            request: CapRequest::Sign { .. },
            ..
        }
    ));

    // The card's real PIN changed: the stored one is refused once, and the
    // card is out of use after that, across the network too.
    readers.insert(
        "Reader 0",
        Box::new(VirtualCard::new(card_config("1111")).unwrap()),
    );
    let res = server
        .post_json(&login, &write, &json!({"challenge": "1"}))
        .await;
    expect_error(res, 409, "wrong_pin").await;
    let res = server
        .post_json(&login, &write, &json!({"challenge": "2"}))
        .await;
    expect_error(res, 409, "card_disabled").await;
    let card = server
        .get_json(
            &format!("/api/v1/financial-institutions/{fi}/cards/{id}"),
            &admin,
        )
        .await;
    assert_eq!(card["pin_refused"], true);

    // An agent token may do nothing else; another host's jobs are not its.
    assert_eq!(
        server.get("/api/v1/accounts", &agent_token).await.status(),
        403
    );
    let res = server
        .post_json(
            "/api/v1/card-agent/jobs?host=other",
            &agent_token,
            &json!({"public_key": HostKey::generate().public(), "readers": []}),
        )
        .await;
    assert_eq!(res.status(), 403);
    let res = server
        .post_json(
            "/api/v1/card-agent/jobs",
            &write,
            &json!({"public_key": HostKey::generate().public(), "readers": []}),
        )
        .await;
    assert_eq!(res.status(), 403);
    // A key that is not one is refused.
    let res = server
        .post_json(
            "/api/v1/card-agent/jobs",
            &agent_token,
            &json!({"public_key": "not-a-key", "readers": []}),
        )
        .await;
    assert_eq!(res.status(), 400);

    // The agent stops: after the grace period its cards answer reader_offline.
    agent.abort();
    let res = server
        .client
        .patch(server.url(&format!("/api/v1/financial-institutions/{fi}/cards/{id}")))
        .bearer_auth(&admin)
        .json(&json!({"status": "active", "pin": "1111"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let res = server
        .post_json(&login, &write, &json!({"challenge": "3"}))
        .await;
    expect_error(res, 503, "reader_offline").await;
    let audit = server.get_json("/api/v1/cards/audit", &admin).await;
    assert_eq!(audit["data"][0]["outcome"], "reader_offline");
    server.shutdown().await;
}
