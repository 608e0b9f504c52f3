//! The client and the driver over real HTTPS with mutual TLS, against the
//! scripted server of `common`. Certificates are made fresh for each test.
mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::Method;
use bankbridge_bankid::qr::verify_qr_data;
use bankbridge_bankid::{
    AuthRequest, BankIdClient, BankIdError, BlockingBankIdClient, CallInitiator, DriveOptions,
    Environment, ErrorCode, HintCode, OrderEvent, Outcome, PaymentRequest, PhoneAuthRequest,
    PhoneSignRequest, SignRequest, StartedOrder, Status, TransactionMoney, UserVisibleTransaction,
    drive, spawn_drive,
};
use common::*;
use rcgen::ExtendedKeyUsagePurpose;
use serde_json::json;
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

#[tokio::test]
async fn mutual_tls_round_trip_of_every_endpoint() {
    let pki = Pki::new();
    let server = start(&pki, defaults()).await;
    let client = client(&pki, &server);

    let order = client
        .auth(&AuthRequest::new("192.0.2.10").with_personal_number(&pnr()))
        .await
        .unwrap();
    assert_eq!(order.order_ref, ORDER);
    assert_eq!(order.auto_start_token, AUTOSTART);
    assert_eq!(order.qr_start_secret.expose(), SECRET);
    assert!(verify_qr_data(&order.qr_code().data_at(0), TOKEN, SECRET).is_some());

    client
        .sign(&SignRequest::new("192.0.2.10", "Jag godkänner avtalet"))
        .await
        .unwrap();
    client
        .payment(&PaymentRequest::new(
            "192.0.2.10",
            UserVisibleTransaction::card("Kaffebaren", TransactionMoney::from_minor(4500, "SEK")),
        ))
        .await
        .unwrap();
    let phone = client
        .phone_auth(&PhoneAuthRequest::new(&pnr(), CallInitiator::User))
        .await
        .unwrap();
    assert_eq!(phone.order_ref, ORDER);
    client
        .phone_sign(&PhoneSignRequest::new(&pnr(), CallInitiator::Rp, "Godkänn"))
        .await
        .unwrap();
    let collected = client.collect(ORDER).await.unwrap();
    assert_eq!(collected.status, Status::Pending);
    assert_eq!(collected.hint_code, Some(HintCode::OutstandingTransaction));
    client.cancel(ORDER).await.unwrap();
    client.check_connection().await.unwrap();

    let calls = server.calls();
    let endpoints: Vec<&str> = calls.iter().map(|c| c.endpoint.as_str()).collect();
    assert_eq!(
        endpoints,
        [
            "auth",
            "sign",
            "payment",
            "phone/auth",
            "phone/sign",
            "collect",
            "cancel",
            "auth"
        ]
    );
    for call in &calls[..7] {
        assert_eq!(call.method, Method::POST);
        assert_eq!(call.content_type.as_deref(), Some("application/json"));
        // The server saw our client certificate.
        assert_eq!(
            call.client_cert.as_deref(),
            Some(pki.client.cert_der.as_ref())
        );
    }
    assert_eq!(calls[7].method, Method::GET);
    // Exact wire shapes.
    assert_eq!(
        calls[0].body,
        json!({"endUserIp": "192.0.2.10", "requirement": {"personalNumber": PNR}})
    );
    assert_eq!(
        calls[1].body["userVisibleData"],
        json!(base64_of("Jag godkänner avtalet"))
    );
    assert_eq!(
        calls[2].body["userVisibleTransaction"]["money"],
        json!({"amount": "45,00", "currency": "SEK"})
    );
    assert_eq!(
        calls[3].body,
        json!({"personalNumber": PNR, "callInitiator": "user"})
    );
    assert_eq!(calls[4].body["callInitiator"], json!("RP"));
    assert_eq!(calls[5].body, json!({"orderRef": ORDER}));
    assert_eq!(calls[6].body, json!({"orderRef": ORDER}));
}

fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn a_client_without_certificate_is_refused() {
    let pki = Pki::new();
    let server = start(&pki, defaults()).await;
    // reqwest's rustls client with the CA pinned but no identity: build it by
    // hand, since our builder insists on an identity.
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let result = http
        .post(server.base.join("collect").unwrap())
        .json(&json!({"orderRef": ORDER}))
        .send()
        .await;
    assert!(result.is_err(), "{result:?}");
    assert_eq!(server.calls().len(), 0);
    assert!(server.handshake_failures.load(Ordering::SeqCst) >= 1);
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let pki = Pki::new();
    let server = start(&pki, defaults()).await;
    let stranger =
        Ca::new("Some other CA").leaf("Intruder", &[], ExtendedKeyUsagePurpose::ClientAuth);
    let client = BankIdClient::builder()
        .environment(Environment::Custom(server.base.clone()))
        .identity_pem(&stranger.cert_pem, &stranger.key_pem)
        .server_ca_pem(pki.ca.pem())
        .build()
        .unwrap();
    let err = client.collect(ORDER).await.unwrap_err();
    assert!(is_transport(&err), "{err:?}");
    assert_eq!(server.calls().len(), 0);
}

#[tokio::test]
async fn a_server_from_the_wrong_ca_is_refused() {
    let pki = Pki::new();
    let server = start(&pki, defaults()).await;
    let other = Ca::new("Not the BankID CA");
    let client = BankIdClient::builder()
        .environment(Environment::Custom(server.base.clone()))
        .identity_pem(&pki.client.cert_pem, &pki.client.key_pem)
        .server_ca_pem(other.pem())
        .build()
        .unwrap();
    let err = client
        .auth(&AuthRequest::new("192.0.2.10"))
        .await
        .unwrap_err();
    assert!(is_transport(&err), "{err:?}");
    assert_eq!(err.rfa(), Some(5));
    assert_eq!(server.calls().len(), 0);
}

#[tokio::test]
async fn a_pkcs12_identity_works_and_a_wrong_password_is_a_config_error() {
    let pki = Pki::new();
    let server = start(&pki, defaults()).await;
    let chain = p12_keystore::PrivateKeyChain::new(
        &pki.client.key_der,
        [1u8, 2, 3, 4],
        [p12_keystore::Certificate::from_der(pki.client.cert_der.as_ref()).unwrap()],
    );
    let mut store = p12_keystore::KeyStore::new();
    store.add_entry("rp", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
    let p12 = store.writer("qwerty123").write().unwrap();

    let client = BankIdClient::builder()
        .environment(Environment::Custom(server.base.clone()))
        .identity_pkcs12(p12.clone(), "qwerty123")
        .server_ca_pem(pki.ca.pem())
        .build()
        .unwrap();
    client.cancel(ORDER).await.unwrap();
    assert_eq!(
        server.calls()[0].client_cert.as_deref(),
        Some(pki.client.cert_der.as_ref())
    );

    let err = BankIdClient::builder()
        .environment(Environment::Custom(server.base.clone()))
        .identity_pkcs12(p12, "wrong")
        .server_ca_pem(pki.ca.pem())
        .build()
        .unwrap_err();
    assert!(matches!(err, BankIdError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("password"), "{err}");
}

#[tokio::test]
async fn error_bodies_become_typed_errors() {
    let pki = Pki::new();
    let server = start(
        &pki,
        responder(|call| {
            let body = |code: &str, details: &str| {
                json!({"errorCode": code, "details": details}).to_string()
            };
            Some(
                match (call.endpoint.as_str(), call.body["orderRef"].as_str()) {
                    ("auth", _) => (
                        400,
                        body("alreadyInProgress", "Order already in progress for pno"),
                    ),
                    ("sign", _) => (503, body("maintenance", "Down for maintenance")),
                    ("payment", _) => (500, "<html>Bad gateway</html>".into()),
                    ("phone/auth", _) => (401, body("unauthorized", "No client certificate")),
                    ("phone/sign", _) => (418, body("teapotOverflow", "Something new")),
                    ("collect", Some("bad-json")) => (200, "not json".into()),
                    ("collect", Some("qr-leak")) => (
                        200,
                        json!({"orderRef": ORDER, "qrStartSecret": SECRET, "status": 7})
                            .to_string(),
                    ),
                    ("collect", _) => (400, body("invalidParameters", "No such order")),
                    ("cancel", Some("not-empty")) => (200, json!({"cancelled": true}).to_string()),
                    ("cancel", _) => (200, "{ }".into()),
                    _ => return None,
                },
            )
        }),
    )
    .await;
    let client = client(&pki, &server);

    let err = client
        .auth(&AuthRequest::new("192.0.2.10").with_personal_number(&pnr()))
        .await
        .unwrap_err();
    match &err {
        BankIdError::Api {
            status,
            code,
            details,
            endpoint,
        } => {
            assert_eq!(
                (*status, code, details.as_str(), *endpoint),
                (
                    400,
                    &ErrorCode::AlreadyInProgress,
                    "Order already in progress for pno",
                    "auth"
                )
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.rfa(), Some(4));
    assert!(!err.is_transient());

    let err = client
        .sign(&SignRequest::new("192.0.2.10", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::Maintenance));
    assert_eq!(err.status(), Some(503));
    assert!(err.is_transient());

    let err = client
        .payment(&PaymentRequest::new(
            "192.0.2.10",
            UserVisibleTransaction::npa("Butiken"),
        ))
        .await
        .unwrap_err();
    match &err {
        BankIdError::Decode { status, body, .. } => {
            assert_eq!(*status, 500);
            assert!(body.contains("Bad gateway"), "{body}");
        }
        other => panic!("{other:?}"),
    }

    let err = client
        .phone_auth(&PhoneAuthRequest::new(&pnr(), CallInitiator::Rp))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::Unauthorized));

    let err = client
        .phone_sign(&PhoneSignRequest::new(&pnr(), CallInitiator::Rp, "x"))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&ErrorCode::Unknown("teapotOverflow".into()))
    );
    assert_eq!(err.status(), Some(418));

    let err = client.collect(ORDER).await.unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::InvalidParameters));
    assert_eq!(
        err.to_string(),
        "BankID refused collect with HTTP 400 invalidParameters: No such order"
    );

    let err = client.collect("bad-json").await.unwrap_err();
    assert!(
        matches!(err, BankIdError::Decode { status: 200, .. }),
        "{err:?}"
    );

    // A malformed success body never quotes the secret.
    let err = client.collect("qr-leak").await.unwrap_err();
    let printed = format!("{err} {err:?}");
    assert!(matches!(err, BankIdError::Decode { .. }), "{printed}");
    assert!(!printed.contains(SECRET), "{printed}");

    client.cancel(ORDER).await.unwrap();
    let err = client.cancel("not-empty").await.unwrap_err();
    assert!(matches!(err, BankIdError::Decode { .. }), "{err:?}");
}

#[tokio::test]
async fn invalid_requests_are_not_sent() {
    let pki = Pki::new();
    let server = start(&pki, defaults()).await;
    let client = client(&pki, &server);
    let mut sign = SignRequest::new("192.0.2.10", "x");
    sign.user_visible_data = None;
    let err = client.sign(&sign).await.unwrap_err();
    assert!(matches!(err, BankIdError::InvalidRequest(_)), "{err:?}");
    assert!(err.to_string().contains("userVisibleData"), "{err}");
    let err = client
        .auth(&AuthRequest::new("not-an-ip"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("endUserIp"), "{err}");
    let mut phone = PhoneAuthRequest::new(&pnr(), CallInitiator::User);
    phone.personal_number = "199001011238".into();
    assert!(client.phone_auth(&phone).await.is_err());
    assert!(client.collect("").await.is_err());
    assert!(client.cancel(" ").await.is_err());
    assert_eq!(server.calls().len(), 0);
}

#[test]
fn the_blocking_client_works_without_a_runtime() {
    let pki = Pki::new();
    // The server needs a runtime of its own, on another thread.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(start(&pki, defaults()));
    let blocking = BlockingBankIdClient::new(client(&pki, &server)).unwrap();
    let order = blocking.auth(&AuthRequest::new("192.0.2.10")).unwrap();
    assert_eq!(order.order_ref, ORDER);
    assert_eq!(blocking.collect(ORDER).unwrap().status, Status::Pending);
    blocking.cancel(ORDER).unwrap();
    let mut events = Vec::new();
    let outcome = blocking
        .drive(
            order.into(),
            DriveOptions::default()
                .with_poll_interval(Duration::from_secs(1))
                .with_deadline(Duration::from_millis(1500)),
            |e| events.push(e),
        )
        .unwrap();
    assert_eq!(outcome, Outcome::DeadlineExceeded);
    assert!(matches!(events.last(), Some(OrderEvent::DeadlineExceeded)));
    assert_eq!(server.count("collect"), 3);
}

// ---------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_driver_polls_every_two_seconds_by_default_and_cancels_at_the_deadline() {
    let pki = Pki::new();
    let server = start(&pki, defaults()).await;
    let client = client(&pki, &server);
    let order = client.auth(&AuthRequest::new("192.0.2.10")).await.unwrap();
    let mut events = Vec::new();
    let outcome = drive(
        &client,
        StartedOrder::from(&order),
        DriveOptions::default().with_deadline(Duration::from_millis(4500)),
        |e| events.push(e),
    )
    .await
    .unwrap();
    assert_eq!(outcome, Outcome::DeadlineExceeded);
    // Collects at 0, 2 and 4 s.
    assert_eq!(server.count("collect"), 3);
    // The deadline cancelled the order at BankID, once.
    let cancels: Vec<Call> = server
        .calls()
        .into_iter()
        .filter(|c| c.endpoint == "cancel")
        .collect();
    assert_eq!(cancels.len(), 1);
    assert_eq!(cancels[0].body, json!({"orderRef": ORDER}));

    // QR data every second, t = 0..=4, each one verifiable; one hint.
    let qrs: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            OrderEvent::Qr(d) => Some(verify_qr_data(d, TOKEN, SECRET).expect("valid QR data")),
            _ => None,
        })
        .collect();
    assert_eq!(qrs, [0, 1, 2, 3, 4]);
    let hints: Vec<&HintCode> = events
        .iter()
        .filter_map(|e| match e {
            OrderEvent::Hint(h) => Some(h),
            _ => None,
        })
        .collect();
    assert_eq!(hints, [&HintCode::OutstandingTransaction]);
    assert!(matches!(events.last(), Some(OrderEvent::DeadlineExceeded)));
}

#[tokio::test]
async fn the_driver_reports_hint_changes_and_completes() {
    let pki = Pki::new();
    let server = start(
        &pki,
        responder(|call| {
            if call.endpoint != "collect" {
                return None;
            }
            let pending = |hint: &str| {
                json!({"orderRef": ORDER, "status": "pending", "hintCode": hint}).to_string()
            };
            Some(match call.nth {
                0 | 1 => (200, pending("outstandingTransaction")),
                2 => (200, pending("started")),
                3 => (200, pending("userSign")),
                _ => (200, complete_body()),
            })
        }),
    )
    .await;
    let client = client(&pki, &server);
    let order = client.auth(&AuthRequest::new("192.0.2.10")).await.unwrap();
    let mut handle = spawn_drive(
        client.clone(),
        order.into(),
        DriveOptions::default().with_poll_interval(Duration::from_secs(1)),
    );
    let mut seen = Vec::new();
    while let Some(event) = handle.events.recv().await {
        match event {
            OrderEvent::Qr(_) => {}
            OrderEvent::Hint(h) => seen.push(h.to_string()),
            OrderEvent::Complete(data) => {
                assert_eq!(data.user.personal_number, PNR);
                seen.push("complete".into());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        seen,
        ["outstandingTransaction", "started", "userSign", "complete"]
    );
    let outcome = handle.task.await.unwrap().unwrap();
    assert!(matches!(outcome, Outcome::Complete(_)));
    assert_eq!(server.count("collect"), 5);
    assert_eq!(server.count("cancel"), 0);
}

#[tokio::test]
async fn the_driver_ends_on_failure_and_on_cancellation() {
    let pki = Pki::new();
    let server = start(
        &pki,
        responder(|call| {
            (call.endpoint == "collect" && call.body["orderRef"] == "fails").then(|| {
                (
                    200,
                    json!({"orderRef": "fails", "status": "failed", "hintCode": "userCancel"})
                        .to_string(),
                )
            })
        }),
    )
    .await;
    let client = client(&pki, &server);

    let outcome = drive(
        &client,
        StartedOrder::phone("fails"),
        DriveOptions::default(),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(outcome, Outcome::Failed(HintCode::UserCancel));

    let token = CancellationToken::new();
    let canceller = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        canceller.cancel();
    });
    let mut events = Vec::new();
    let outcome = drive(
        &client,
        StartedOrder::phone(ORDER),
        DriveOptions::default().with_cancel(token),
        |e| events.push(e),
    )
    .await
    .unwrap();
    assert_eq!(outcome, Outcome::Cancelled);
    // A phone order: no QR events.
    assert!(!events.iter().any(|e| matches!(e, OrderEvent::Qr(_))));
    assert!(matches!(events.last(), Some(OrderEvent::Cancelled)));
    assert_eq!(server.count("cancel"), 1);
}
