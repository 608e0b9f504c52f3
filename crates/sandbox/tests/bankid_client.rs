//! bankbridge's own BankID client and order driver against the simulator,
//! over mutual TLS: auth, sign, phone auth, payment and cancel complete;
//! each failure hint (userCancel, expiredTransaction, startFailed) ends the
//! drive as the RP guidelines expect. The simulated user acts on the events
//! the driver reports, as a person with the app would.
use std::sync::Arc;
use std::time::Duration;

use bankbridge_bankid::driver::{DriveOptions, OrderEvent, Outcome, StartedOrder, spawn_drive};
use bankbridge_bankid::types::{
    AuthRequest, CallInitiator, PaymentRequest, PersonalNumber, PhoneAuthRequest, SignRequest,
    TransactionMoney, UserVisibleTransaction,
};
use bankbridge_bankid::{BankIdClient, BankIdError, Environment, HintCode};
use bankbridge_sandbox::bankid::{
    Approval, BankIdSim, BankIdSimConfig, BankIdSimHandle, SimClock, spawn_with,
};

const PERSON: &str = "199001011239";

struct Rig {
    handle: BankIdSimHandle,
    clock: SimClock,
    client: BankIdClient,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let clock = SimClock::new();
        // `started` lasts 1 s by default: with the driver's 1 s collects a
        // busy machine could poll past it, and the test looks for it.
        let config = BankIdSimConfig {
            started_hint_secs: 3,
            ..BankIdSimConfig::default()
        };
        let handle = spawn_with(dir.path(), 0, config, clock.clone())
            .await
            .unwrap();
        let paths = handle.sim().paths().clone();
        let client = BankIdClient::builder()
            .environment(Environment::Custom(handle.base_url().parse().unwrap()))
            .identity_pem(
                std::fs::read(&paths.rp_cert).unwrap(),
                std::fs::read(&paths.rp_key).unwrap(),
            )
            .server_ca_pem(std::fs::read(&paths.ca_cert).unwrap())
            .build()
            .unwrap();
        Rig {
            handle,
            clock,
            client,
            _dir: dir,
        }
    }

    fn sim(&self) -> &Arc<BankIdSim> {
        self.handle.sim()
    }
}

/// What the simulated user does when the driver reports something.
#[derive(Clone, Copy, PartialEq)]
enum User {
    /// Scan the first QR, approve at userSign.
    Approve,
    /// Scan the first QR, press cancel at userSign.
    Decline,
    /// For phone orders: confirm the call, approve at userSign.
    PhoneApprove,
    /// Scan, then walk away (the order expires).
    ScanAndLeave,
    /// Never open the app.
    Absent,
}

/// Drive `order` with 1 s polls while `user` acts; the hints seen and the outcome.
async fn run(rig: &Rig, order: StartedOrder, user: User) -> (Vec<HintCode>, Outcome) {
    let order_ref: uuid::Uuid = order.order_ref.parse().unwrap();
    let mut drive = spawn_drive(
        rig.client.clone(),
        order,
        DriveOptions::default()
            .with_poll_interval(Duration::from_secs(1))
            .with_deadline(Duration::from_secs(60)),
    );
    let mut hints = Vec::new();
    let mut scanned = false;
    while let Some(event) = drive.events.recv().await {
        match event {
            OrderEvent::Qr(data) if !scanned && user != User::Absent => {
                rig.sim().scan(&data).unwrap();
                scanned = true;
                if user == User::ScanAndLeave {
                    // Past the three-minute order lifetime.
                    rig.clock.advance(Duration::from_secs(181));
                }
            }
            OrderEvent::Qr(_) if user == User::Absent && !scanned => {
                // Past the start window without the app ever starting.
                rig.clock.advance(Duration::from_secs(31));
                scanned = true;
            }
            OrderEvent::Hint(hint) => {
                match (&hint, user) {
                    (HintCode::UserCallConfirm, User::PhoneApprove) => {
                        rig.sim().confirm_call(order_ref).unwrap();
                    }
                    (HintCode::UserSign, User::Approve | User::PhoneApprove) => {
                        rig.sim()
                            .approve(
                                order_ref,
                                Approval {
                                    personal_number: Some(PERSON.into()),
                                    ..Default::default()
                                },
                            )
                            .unwrap();
                    }
                    (HintCode::UserSign, User::Decline) => {
                        rig.sim().decline(order_ref).unwrap();
                    }
                    _ => {}
                }
                hints.push(hint);
            }
            _ => {}
        }
    }
    let outcome = drive.task.await.unwrap().unwrap();
    (hints, outcome)
}

fn person() -> PersonalNumber {
    PersonalNumber::parse(PERSON).unwrap()
}

fn completed_by_person(outcome: &Outcome) {
    match outcome {
        Outcome::Complete(data) => {
            assert_eq!(data.user.personal_number, PERSON);
            assert!(!data.signature.is_empty() && !data.ocsp_response.is_empty());
        }
        other => panic!("expected completion, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_sign_phone_and_payment_complete() {
    let rig = Rig::start().await;
    let auth = rig
        .client
        .auth(&AuthRequest::new("192.0.2.10").with_personal_number(&person()))
        .await
        .unwrap();
    let (hints, outcome) = run(&rig, auth.into(), User::Approve).await;
    // The app starts (scan), finds the ID, asks the user to sign.
    let at = |h: HintCode| hints.iter().position(|x| *x == h);
    assert!(at(HintCode::Started) < at(HintCode::UserSign), "{hints:?}");
    assert!(at(HintCode::Started).is_some(), "{hints:?}");
    completed_by_person(&outcome);
    if let Outcome::Complete(data) = &outcome {
        assert_eq!(data.device.ip_address, "192.0.2.10");
    }

    let sign = rig
        .client
        .sign(&SignRequest::new("192.0.2.11", "Transfer 100 SEK to Alice"))
        .await
        .unwrap();
    let (_, outcome) = run(&rig, sign.into(), User::Approve).await;
    completed_by_person(&outcome);

    let phone = rig
        .client
        .phone_auth(&PhoneAuthRequest::new(&person(), CallInitiator::Rp))
        .await
        .unwrap();
    let (hints, outcome) = run(&rig, phone.into(), User::PhoneApprove).await;
    assert_eq!(hints.first(), Some(&HintCode::UserCallConfirm));
    completed_by_person(&outcome);

    let payment = rig
        .client
        .payment(&PaymentRequest::new(
            "192.0.2.12",
            UserVisibleTransaction::card(
                "Coffee Shop AB",
                TransactionMoney::from_minor(4500, "SEK"),
            ),
        ))
        .await
        .unwrap();
    let (_, outcome) = run(&rig, payment.into(), User::Approve).await;
    completed_by_person(&outcome);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_hint_ends_the_drive() {
    let rig = Rig::start().await;
    for (user, expected) in [
        (User::Decline, HintCode::UserCancel),
        (User::ScanAndLeave, HintCode::ExpiredTransaction),
        (User::Absent, HintCode::StartFailed),
    ] {
        let order = rig
            .client
            .auth(&AuthRequest::new("192.0.2.20"))
            .await
            .unwrap();
        let (_, outcome) = run(&rig, order.into(), user).await;
        assert_eq!(outcome, Outcome::Failed(expected));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_the_errors_that_follow() {
    let rig = Rig::start().await;
    let order = rig
        .client
        .auth(&AuthRequest::new("192.0.2.30").with_personal_number(&person()))
        .await
        .unwrap();
    // A second order for the same person while the first is pending.
    let err = rig
        .client
        .auth(&AuthRequest::new("192.0.2.30").with_personal_number(&person()))
        .await
        .unwrap_err();
    assert_eq!(
        err.code().map(|c| c.as_str()),
        Some("alreadyInProgress"),
        "{err}"
    );
    let fresh = rig
        .client
        .auth(&AuthRequest::new("192.0.2.30"))
        .await
        .unwrap();
    rig.client.cancel(&fresh.order_ref).await.unwrap();
    let err = rig.client.collect(&fresh.order_ref).await.unwrap_err();
    assert_eq!(
        err.code().map(|c| c.as_str()),
        Some("invalidParameters"),
        "{err}"
    );
    let err = rig.client.cancel(&fresh.order_ref).await.unwrap_err();
    assert!(matches!(err, BankIdError::Api { status: 400, .. }), "{err}");
    // The driver's own cancel: the drive ends Cancelled.
    let drive = spawn_drive(
        rig.client.clone(),
        StartedOrder::from(&order),
        DriveOptions::default(),
    );
    drive.cancel.cancel();
    assert_eq!(drive.task.await.unwrap().unwrap(), Outcome::Cancelled);
}
