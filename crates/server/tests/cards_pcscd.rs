//! The card service against virtual cards served to a real pcscd through
//! vpcd (the path a USB reader takes): what the card answers to VERIFY, or
//! a card pulled out right after it, takes the card out of use with
//! exactly one VERIFY sent; a CAP-only card without a card number is
//! registered, used and recognised by its records.
//!
//! Needs pcscd with vsmartcard-vpcd (`scripts/pcscd.sh start`); without it
//! the tests skip, unless `CI` or `BANKBRIDGE_TEST_PCSCD` is set.
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bankbridge_cap::SmartCard;
use bankbridge_cap::emv::CapRequest;
use bankbridge_cap::pcsc::{wait_for_card, wait_for_removal};
use bankbridge_cap::verify;
use bankbridge_cap::virtual_card::{
    CardHandle, CardKey, Profile, VerifyFault, VirtualCard, VirtualCardConfig,
};
use bankbridge_cap::vpcd::{SlotsLock, VPCD_DEFAULT_PORT, VpcdHandle, serve};
use bankbridge_server::ServerConfig;
use bankbridge_store::Scope;
use common::*;
use serde_json::{Value, json};

const SLOT0: &str = "Virtual PCD 00 00";
const WAIT: Duration = Duration::from_secs(15);
const PIN: &str = "73915";

fn slot0() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], VPCD_DEFAULT_PORT))
}

/// A card in vpcd's slot 0, once pcscd sees it.
fn insert(config: VirtualCardConfig) -> (VpcdHandle, CardHandle) {
    let card = VirtualCard::new(config).unwrap();
    let handle = card.handle();
    let vpcd = serve(slot0(), Box::new(card) as Box<dyn SmartCard>);
    wait_for_card(SLOT0, WAIT).expect("pcscd sees the card");
    (vpcd, handle)
}

fn remove(mut vpcd: VpcdHandle) {
    vpcd.stop();
    wait_for_removal(SLOT0, WAIT).expect("pcscd sees the slot empty");
}

struct Rig {
    server: TestServer,
    admin: String,
    write: String,
    institution: String,
}

impl Rig {
    async fn start() -> Rig {
        // None: this machine's PC/SC readers, through pcscd.
        let server = TestServer::start_with_readers(ServerConfig::default(), None).await;
        let admin = server.token(Scope::Admin).await;
        let write = server.token(Scope::Write).await;
        let res = server
            .post_json(
                "/api/v1/financial-institutions",
                &admin,
                &json!({"name": "Card Bank", "country": "gb"}),
            )
            .await;
        assert_eq!(res.status(), 201);
        let institution: Value = res.json().await.unwrap();
        Rig {
            server,
            admin,
            write,
            institution: institution["id"].as_str().unwrap().to_owned(),
        }
    }

    fn cards(&self) -> String {
        format!("/api/v1/financial-institutions/{}/cards", self.institution)
    }

    async fn register(&self) -> Value {
        let res = self
            .server
            .post_json(
                &self.cards(),
                &self.admin,
                &json!({"reader": SLOT0, "label": "shared card", "account_reference": "GB33BUKB20201555555555", "pin": PIN}),
            )
            .await;
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, 201, "{body}");
        body
    }

    async fn login(&self, card: &str) -> reqwest::Response {
        self.server
            .post_json(
                &format!("{}/{card}/logins", self.cards()),
                &self.write,
                &json!({"challenge": "12345678"}),
            )
            .await
    }

    async fn view(&self, card: &str) -> Value {
        self.server
            .get_json(&format!("{}/{card}", self.cards()), &self.admin)
            .await
    }

    async fn patch(&self, card: &str, body: Value) -> reqwest::Response {
        self.server
            .client
            .patch(self.server.url(&format!("{}/{card}", self.cards())))
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn delete(&self, card: &str) {
        let res = self
            .server
            .client
            .delete(self.server.url(&format!("{}/{card}", self.cards())))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_answer_but_9000_to_verify_takes_the_card_out_with_one_verify() {
    let Some(_slots) = SlotsLock::for_tests() else {
        return;
    };
    let rig = Rig::start().await;
    let cases: [(VerifyFault, u16, &str, &str); 4] = [
        (VerifyFault::Answer(0x6300), 409, "wrong_pin", "disabled"),
        (VerifyFault::Answer(0x63C2), 409, "wrong_pin", "disabled"),
        (VerifyFault::Answer(0x6983), 409, "card_blocked", "blocked"),
        (
            VerifyFault::RemoveAfter,
            503,
            "pin_outcome_unknown",
            "disabled",
        ),
    ];
    for (fault, status, code, state) in cases {
        let (vpcd, handle) = insert(VirtualCardConfig::new(Profile::CapBe, PIN));
        let card = rig.register().await;
        let id = card["id"].as_str().unwrap();
        handle.set_verify_fault(Some(fault));
        expect_error(rig.login(id).await, status, code).await;
        assert_eq!(handle.verify_count(), 1, "{fault:?}");
        if fault == VerifyFault::RemoveAfter {
            // The card is back in the reader: it still gets no PIN.
            wait_for_removal(SLOT0, WAIT).unwrap();
            vpcd.insert();
            wait_for_card(SLOT0, WAIT).unwrap();
        }
        let view = rig.view(id).await;
        assert_eq!(view["status"], state, "{fault:?}: {view}");
        assert_eq!(view["pin_refused"], true, "{fault:?}");
        let again = if state == "blocked" {
            "card_blocked"
        } else {
            "card_disabled"
        };
        for _ in 0..3 {
            expect_error(rig.login(id).await, 409, again).await;
        }
        assert_eq!(handle.verify_count(), 1, "{fault:?}: one VERIFY, ever");

        if state == "disabled" {
            // Enabled again only together with a new PIN.
            expect_error(
                rig.patch(id, json!({"status": "active"})).await,
                409,
                "new_pin_required",
            )
            .await;
            handle.set_verify_fault(None);
            let res = rig.patch(id, json!({"status": "active", "pin": PIN})).await;
            assert_eq!(res.status(), 200);
            let res = rig.login(id).await;
            assert_eq!(res.status(), 200, "{fault:?}");
            assert_eq!(handle.verify_count(), 2);
        }
        rig.delete(id).await;
        remove(vpcd);
    }
    rig.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cap_only_card_without_a_number_is_registered_used_and_recognised() {
    let Some(_slots) = SlotsLock::for_tests() else {
        return;
    };
    let rig = Rig::start().await;
    let mut config = VirtualCardConfig::new(Profile::CapUk, PIN);
    config.key = CardKey::derive("uk cap-only card");
    let (vpcd, handle) = insert(config.clone());
    let card = rig.register().await;
    let id = card["id"].as_str().unwrap().to_owned();
    assert_eq!(card["masked_pan"], Value::Null, "{card}");
    assert_eq!(card["psn"], Value::Null, "{card}");
    assert_eq!(card["records_digest"].as_str().unwrap().len(), 64);

    // Codes the issuer accepts.
    let res = rig.login(&id).await;
    assert_eq!(res.status(), 200);
    let code: Value = res.json().await.unwrap();
    let request = CapRequest::Login {
        challenge: Some("12345678".into()),
    };
    let atc = code["atc"].as_u64().unwrap() as u16;
    assert_eq!(
        verify::verify_code(
            &config,
            &request,
            code["response"].as_str().unwrap(),
            atc - 1,
            1
        ),
        Some(atc)
    );
    assert_eq!(handle.verify_count(), 1);
    remove(vpcd);

    // Another card in the same reader (one with a number) gets no PIN.
    let (vpcd, other) = insert(VirtualCardConfig::new(Profile::CapBe, PIN));
    let err = expect_error(rig.login(&id).await, 409, "wrong_card").await;
    assert!(
        err["message"].as_str().unwrap().contains("no PIN was sent"),
        "{err}"
    );
    assert_eq!(other.verify_count(), 0);
    remove(vpcd);

    // The card itself, back: recognised.
    let (vpcd, handle) = insert(config);
    assert_eq!(rig.login(&id).await.status(), 200);
    assert_eq!(handle.verify_count(), 1);
    remove(vpcd);
    rig.server.shutdown().await;
}
