//! The BankID RP API simulator over real HTTPS with the generated RP client
//! certificate: every endpoint and refusal, the order state machine on the
//! simulator's clock, the simulated user through the sandbox's control
//! routes, and completionData checked cryptographically.
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bankbridge_sandbox::bankid::{self, AlreadyInProgressPolicy, BankIdSim, BankIdSimConfig, der};
use bankbridge_sandbox::{BankIdSandboxConfig, SandboxConfig, SandboxHandle};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use quick_xml::events::Event;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const PNR: &str = "199001011239";
const PNR2: &str = "198504120018";
const PNR3: &str = "197912319873";

/// A sandbox with a BankID simulator, an RP client holding the generated
/// client certificate, and a plain client for the control routes.
struct Env {
    sb: SandboxHandle,
    rp: reqwest::Client,
    http: reqwest::Client,
    base: String,
    _dir: tempfile::TempDir,
}

fn rp_client(dir: &Path, with_identity: bool) -> reqwest::Client {
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    let mut b = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .timeout(Duration::from_secs(20));
    if with_identity {
        let mut pem = std::fs::read(dir.join("rp-cert.pem")).unwrap();
        pem.extend(std::fs::read(dir.join("rp-key.pem")).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

async fn env_with(sim: BankIdSimConfig) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let sb = bankbridge_sandbox::spawn(SandboxConfig {
        seed: 1,
        accounts: 1,
        transactions: 5,
        years: 1,
        bankid: Some(BankIdSandboxConfig {
            cert_dir: dir.path().to_path_buf(),
            port: 0,
            sim,
        }),
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox with BankID starts");
    let endpoint = sb.bankid().expect("BankID endpoint");
    assert!(endpoint.base_url.starts_with("https://127.0.0.1:"));
    assert!(endpoint.base_url.ends_with("/rp/v6.0/"));
    assert_eq!(endpoint.ca_cert, dir.path().join("ca.pem"));
    Env {
        rp: rp_client(dir.path(), true),
        http: reqwest::Client::new(),
        base: endpoint.base_url,
        sb,
        _dir: dir,
    }
}

async fn env() -> Env {
    env_with(BankIdSimConfig::default()).await
}

impl Env {
    fn sim(&self) -> &Arc<BankIdSim> {
        self.sb.bankid_sim().unwrap()
    }

    fn advance(&self, secs: u64) {
        self.sim().clock().advance(Duration::from_secs(secs));
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .rp
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        let v = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text:?}"));
        (status, v)
    }

    /// Expect a 400 invalidParameters whose details mention `needle`.
    async fn refused(&self, path: &str, body: Value, needle: &str) {
        let (s, v) = self.post(path, body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path} {body}: {v}");
        assert_eq!(v["errorCode"], "invalidParameters", "{path} {body}: {v}");
        let details = v["details"].as_str().unwrap();
        assert!(
            details.contains(needle),
            "{path} {body}: details {details:?} should mention {needle:?}"
        );
    }

    async fn start(&self, path: &str, body: Value) -> Value {
        let (s, v) = self.post(path, body.clone()).await;
        assert_eq!(s, StatusCode::OK, "{path} {body}: {v}");
        v
    }

    async fn auth(&self) -> Value {
        self.start("auth", json!({"endUserIp": "192.0.2.7"})).await
    }

    async fn collect(&self, order_ref: &Value) -> Value {
        let (s, v) = self.post("collect", json!({"orderRef": order_ref})).await;
        assert_eq!(s, StatusCode::OK, "collect: {v}");
        assert_eq!(&v["orderRef"], order_ref);
        v
    }

    async fn hint(&self, order_ref: &Value) -> String {
        let v = self.collect(order_ref).await;
        format!(
            "{}/{}",
            v["status"].as_str().unwrap(),
            v["hintCode"].as_str().unwrap_or("-")
        )
    }

    async fn control(&self, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let url = format!("{}/_sandbox/bankid/{path}", self.sb.root_url());
        let req = match body {
            Some(b) => self.http.post(url).json(&b),
            None => self.http.post(url),
        };
        let r = req.send().await.unwrap();
        (r.status(), r.json().await.unwrap())
    }

    /// Scan the order's QR code as it is now.
    async fn scan(&self, start: &Value) -> (StatusCode, Value) {
        let order = self
            .sim()
            .order(start["orderRef"].as_str().unwrap().parse().unwrap())
            .unwrap();
        let qr = bankbridge_bankid::qr::qr_data(
            start["qrStartToken"].as_str().unwrap(),
            start["qrStartSecret"].as_str().unwrap(),
            order.age_secs,
        );
        self.control("scan", Some(json!({ "qrData": qr }))).await
    }

    async fn approve(&self, order_ref: &Value, body: Value) -> (StatusCode, Value) {
        self.control(
            &format!("orders/{}/approve", order_ref.as_str().unwrap()),
            Some(body),
        )
        .await
    }
}

fn is_uuid(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == 36 && uuid::Uuid::parse_str(s).is_ok())
}

fn b64(s: &str) -> String {
    B64.encode(s)
}

#[tokio::test]
async fn every_endpoint_answers_in_the_reference_shape() {
    let e = env().await;
    for (path, body) in [
        ("auth", json!({"endUserIp": "192.0.2.7"})),
        (
            "sign",
            json!({"endUserIp": "2001:db8::1", "userVisibleData": b64("Sign this")}),
        ),
        (
            "payment",
            json!({"endUserIp": "192.0.2.7", "userVisibleTransaction": {"transactionType": "card", "recipient": {"name": "Shop AB"}, "money": {"amount": "100,00", "currency": "SEK"}}}),
        ),
    ] {
        let v = e.start(path, body).await;
        let mut keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "autoStartToken",
                "orderRef",
                "qrStartSecret",
                "qrStartToken"
            ],
            "{path}"
        );
        for k in keys {
            assert!(is_uuid(&v[k]), "{path} {k}: {v}");
        }
        assert_eq!(
            e.hint(&v["orderRef"]).await,
            "pending/outstandingTransaction"
        );
    }
    for (path, body) in [
        (
            "phone/auth",
            json!({"personalNumber": PNR, "callInitiator": "user"}),
        ),
        (
            "phone/sign",
            json!({"personalNumber": PNR2, "callInitiator": "RP", "userVisibleData": b64("Sign")}),
        ),
    ] {
        let v = e.start(path, body).await;
        assert_eq!(v.as_object().unwrap().len(), 1, "{path}: {v}");
        assert!(is_uuid(&v["orderRef"]));
        assert_eq!(e.hint(&v["orderRef"]).await, "pending/userCallConfirm");
    }

    // cancel answers exactly {}; the order is then unknown to collect and cancel.
    let v = e.auth().await;
    let r =
        e.rp.post(format!("{}cancel", e.base))
            .json(&json!({"orderRef": v["orderRef"]}))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    assert_eq!(r.text().await.unwrap(), "{}");
    e.refused("collect", json!({"orderRef": v["orderRef"]}), "cancelled")
        .await;
    e.refused(
        "cancel",
        json!({"orderRef": v["orderRef"]}),
        "already cancelled",
    )
    .await;
    let unknown = uuid::Uuid::new_v4().to_string();
    e.refused("cancel", json!({"orderRef": unknown}), "no such order")
        .await;
    e.refused("collect", json!({"orderRef": unknown}), "no such order")
        .await;
    e.refused("collect", json!({"orderRef": "invalid-uuid"}), "orderRef")
        .await;
}

#[tokio::test]
async fn request_validation_names_the_field() {
    let e = env().await;
    let ip = "192.0.2.7";
    let card = json!({"transactionType": "card", "recipient": {"name": "Shop"}, "money": {"amount": "1,00", "currency": "SEK"}});
    let cases = [
        ("auth", json!({}), "endUserIp is missing"),
        (
            "auth",
            json!({"endUserIp": "300.1.1.1"}),
            "endUserIp is not a valid",
        ),
        (
            "auth",
            json!({"endUserIp": 17}),
            "endUserIp must be a string",
        ),
        (
            "sign",
            json!({"endUserIp": ip}),
            "userVisibleData is missing",
        ),
        (
            "sign",
            json!({"endUserIp": ip, "userVisibleData": "***"}),
            "userVisibleData is not valid base64",
        ),
        (
            "sign",
            json!({"endUserIp": ip, "userVisibleData": B64.encode([0xff, 0xfe])}),
            "UTF-8",
        ),
        (
            "sign",
            json!({"endUserIp": ip, "userVisibleData": "QUFB".repeat(10_001)}),
            "userVisibleData is 40004 characters long",
        ),
        (
            "auth",
            json!({"endUserIp": ip, "userNonVisibleData": "QUFB".repeat(50_001)}),
            "userNonVisibleData is 200004 characters long",
        ),
        (
            "auth",
            json!({"endUserIp": ip, "requirement": {"personalNumber": "19900101123"}}),
            "requirement.personalNumber must be 12 digits",
        ),
        (
            "auth",
            json!({"endUserIp": ip, "requirement": {"personalNumber": "199001011238"}}),
            "requirement.personalNumber has a wrong check digit",
        ),
        (
            "auth",
            json!({"endUserIp": ip, "requirement": {"cardReader": "class9"}}),
            "requirement.cardReader",
        ),
        (
            "auth",
            json!({"endUserIp": ip, "requirement": {"risk": "none"}}),
            "requirement.risk",
        ),
        (
            "auth",
            json!({"endUserIp": ip, "requirement": {"certificatePolicies": "1.2.3"}}),
            "requirement.certificatePolicies",
        ),
        (
            "auth",
            json!({"endUserIp": ip, "requirement": {"mrtd": 1}}),
            "requirement.mrtd must be true or false",
        ),
        (
            "auth",
            json!({"endUserIp": ip, "web": {"userAgent": "x"}, "app": {"deviceOS": "iOS"}}),
            "web and app",
        ),
        (
            "auth",
            json!({"endUserIp": ip, "returnUrl": ""}),
            "returnUrl must be 1 to 512",
        ),
        (
            "auth",
            json!({"endUserIp": ip, "userVisibleDataFormat": "html"}),
            "userVisibleDataFormat",
        ),
        (
            "auth",
            json!({"endUserIp": ip, "personalNumber": PNR}),
            "personalNumber is not a parameter",
        ),
        (
            "phone/auth",
            json!({"personalNumber": PNR}),
            "callInitiator is missing",
        ),
        (
            "phone/auth",
            json!({"personalNumber": PNR, "callInitiator": "rp"}),
            "callInitiator must be \"user\" or \"RP\"",
        ),
        (
            "phone/auth",
            json!({"callInitiator": "user"}),
            "personalNumber is missing",
        ),
        (
            "phone/auth",
            json!({"personalNumber": "123", "callInitiator": "user"}),
            "personalNumber must be 12 digits",
        ),
        (
            "phone/sign",
            json!({"personalNumber": PNR, "callInitiator": "user"}),
            "userVisibleData is missing",
        ),
        (
            "payment",
            json!({"endUserIp": ip}),
            "userVisibleTransaction is missing",
        ),
        (
            "payment",
            json!({"endUserIp": ip, "userVisibleTransaction": card, "riskFlags": ["sunspots"]}),
            "riskFlags[0]",
        ),
        ("collect", json!({}), "orderRef is missing"),
        (
            "collect",
            json!({"orderRef": 5}),
            "orderRef must be a string",
        ),
        (
            "cancel",
            json!({"orderRef": "12345"}),
            "orderRef is not a valid",
        ),
        ("auth", json!([1, 2]), "JSON object"),
    ];
    for (path, body, needle) in cases {
        e.refused(path, body, needle).await;
    }
    // Not JSON at all.
    let r =
        e.rp.post(format!("{}auth", e.base))
            .header("content-type", "application/json")
            .body("{\"endUserIp\":")
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errorCode"], "invalidParameters");
    assert!(v["details"].as_str().unwrap().contains("not valid JSON"));
    // Over the body cap: invalidParameters, never a 413 or 500.
    let big = json!({"endUserIp": ip, "userNonVisibleData": "A".repeat(300_000)});
    e.refused("auth", big, "larger than 262144 bytes").await;
}

#[tokio::test]
async fn transport_refusals_are_json() {
    let e = env().await;
    // No client certificate: the handshake passes, the API answers 401.
    let anon = rp_client(e._dir.path(), false);
    let r = anon
        .post(format!("{}auth", e.base))
        .json(&json!({"endUserIp": "192.0.2.7"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errorCode"], "unauthorized");
    assert!(
        v["details"]
            .as_str()
            .unwrap()
            .contains("client certificate")
    );

    // A client certificate from another CA fails the TLS handshake.
    let other = tempfile::tempdir().unwrap();
    let other_sim = bankid::spawn(other.path(), BankIdSimConfig::default())
        .await
        .unwrap();
    let ca = std::fs::read(e._dir.path().join("ca.pem")).unwrap();
    let mut pem = std::fs::read(other.path().join("rp-cert.pem")).unwrap();
    pem.extend(std::fs::read(other.path().join("rp-key.pem")).unwrap());
    let foreign = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .identity(reqwest::Identity::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let refused = foreign
        .post(format!("{}auth", e.base))
        .json(&json!({"endUserIp": "192.0.2.7"}))
        .send()
        .await;
    assert!(refused.is_err(), "a foreign client cert must not get in");
    // …while that simulator's own RP certificate works there.
    let own = rp_client(other.path(), true)
        .post(format!("{}auth", other_sim.base_url()))
        .json(&json!({"endUserIp": "192.0.2.7"}))
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), StatusCode::OK);
    other_sim.shutdown().await;

    // 405 on GET (the health probe of the official sample RP).
    let r = e.rp.get(format!("{}auth", e.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()["allow"], "POST");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errorCode"], "methodNotAllowed");

    // 415 without Content-Type: application/json.
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut req =
            e.rp.post(format!("{}auth", e.base))
                .body(r#"{"endUserIp":"192.0.2.7"}"#);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["errorCode"], "unsupportedMediaType");
    }
    // A charset parameter is fine.
    let r =
        e.rp.post(format!("{}auth", e.base))
            .header("content-type", "application/json; charset=UTF-8")
            .body(r#"{"endUserIp":"192.0.2.7"}"#)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // 404 JSON for unknown paths, inside and outside the API prefix.
    for path in ["rp/v6.0/nope", "rp/v5.1/auth", "", "rp/v6.0/auth/"] {
        let url = format!("{}{path}", e.base.trim_end_matches("rp/v6.0/").to_owned());
        let r = e.rp.post(url).json(&json!({})).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["errorCode"], "notFound", "{path}");
    }
}

#[tokio::test]
async fn already_in_progress_refuses_and_cancels_the_pending_order() {
    let e = env().await;
    let req = json!({"endUserIp": "192.0.2.7", "requirement": {"personalNumber": PNR}});
    let first = e.start("auth", req.clone()).await;
    let (s, v) = e.post("auth", req.clone()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["errorCode"], "alreadyInProgress");
    assert_eq!(e.hint(&first["orderRef"]).await, "failed/cancelled");
    // The person is free again.
    let second = e.start("auth", req.clone()).await;
    // Any order kind counts: sign and phone for the same person.
    let (_, v) = e
        .post(
            "sign",
            json!({"endUserIp": "192.0.2.7", "userVisibleData": b64("x"), "requirement": {"personalNumber": PNR}}),
        )
        .await;
    assert_eq!(v["errorCode"], "alreadyInProgress");
    assert_eq!(e.hint(&second["orderRef"]).await, "failed/cancelled");
    let phone = e
        .start(
            "phone/auth",
            json!({"personalNumber": PNR, "callInitiator": "user"}),
        )
        .await;
    let (_, v) = e.post("auth", req.clone()).await;
    assert_eq!(v["errorCode"], "alreadyInProgress");
    assert_eq!(e.hint(&phone["orderRef"]).await, "failed/cancelled");
    // Orders naming no one never conflict.
    e.auth().await;
    e.auth().await;
}

#[tokio::test]
async fn already_in_progress_policies() {
    let e = env_with(BankIdSimConfig {
        already_in_progress: AlreadyInProgressPolicy::RefuseOnly,
        ..BankIdSimConfig::default()
    })
    .await;
    let req = json!({"endUserIp": "192.0.2.7", "requirement": {"personalNumber": PNR}});
    let first = e.start("auth", req.clone()).await;
    let (_, v) = e.post("auth", req.clone()).await;
    assert_eq!(v["errorCode"], "alreadyInProgress");
    assert_eq!(
        e.hint(&first["orderRef"]).await,
        "pending/outstandingTransaction"
    );

    let e = env_with(BankIdSimConfig {
        already_in_progress: AlreadyInProgressPolicy::ReplaceExisting,
        ..BankIdSimConfig::default()
    })
    .await;
    let first = e.start("auth", req.clone()).await;
    let second = e.start("auth", req.clone()).await;
    assert_eq!(e.hint(&first["orderRef"]).await, "failed/cancelled");
    assert_eq!(
        e.hint(&second["orderRef"]).await,
        "pending/outstandingTransaction"
    );
}

#[tokio::test]
async fn qr_codes_are_checked_like_the_app_does() {
    let e = env().await;
    let start = e.auth().await;
    let token = start["qrStartToken"].as_str().unwrap();
    let secret = start["qrStartSecret"].as_str().unwrap();

    // Malformed, unknown token, forged HMAC.
    let (s, v) = e
        .control("scan", Some(json!({"qrData": "bankid.nope"})))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"], "invalid_qr");
    let stranger = uuid::Uuid::new_v4().to_string();
    let (s, v) = e
        .control(
            "scan",
            Some(json!({"qrData": bankbridge_bankid::qr::qr_data(&stranger, secret, 0)})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["error"], "unknown_qr");
    let forged = bankbridge_bankid::qr::qr_data(token, "not-the-secret", 0);
    let (s, v) = e.control("scan", Some(json!({"qrData": forged}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"], "forged_qr");

    // Too old: the code of second 0, shown 5 s later.
    e.advance(5);
    let old = bankbridge_bankid::qr::qr_data(token, secret, 0);
    let (s, v) = e.control("scan", Some(json!({"qrData": old}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"], "qr_too_old");
    assert!(v["message"].as_str().unwrap().contains("at most 2 s old"));
    // From the future.
    let ahead = bankbridge_bankid::qr::qr_data(token, secret, 60);
    let (_, v) = e.control("scan", Some(json!({"qrData": ahead}))).await;
    assert_eq!(v["error"], "qr_from_future");
    assert_eq!(
        e.hint(&start["orderRef"]).await,
        "pending/outstandingTransaction"
    );

    // A fresh code (two seconds old is still fine) starts the order.
    let age = e
        .sim()
        .order(start["orderRef"].as_str().unwrap().parse().unwrap())
        .unwrap()
        .age_secs;
    let fresh = bankbridge_bankid::qr::qr_data(token, secret, age - 2);
    let (s, v) = e.control("scan", Some(json!({"qrData": fresh}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "pending");
    assert_eq!(v["startedVia"], "qr");
    assert!(v.get("qrStartSecret").is_none());
    assert_eq!(e.hint(&start["orderRef"]).await, "pending/started");
    e.advance(1);
    assert_eq!(e.hint(&start["orderRef"]).await, "pending/userSign");
    // Scanning again is refused: the app already has it.
    let (s, _) = e.scan(&start).await;
    assert_eq!(s, StatusCode::CONFLICT);
}

#[tokio::test]
async fn hints_progress_through_mrtd_to_complete() {
    let e = env().await;
    let start = e
        .start(
            "auth",
            json!({"endUserIp": "192.0.2.7", "requirement": {"mrtd": true, "personalNumber": PNR}}),
        )
        .await;
    let r = &start["orderRef"];
    assert_eq!(e.hint(r).await, "pending/outstandingTransaction");
    // Approving before the app has the order is refused.
    let (s, _) = e.approve(r, json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, v) = e.scan(&start).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(e.hint(r).await, "pending/started");
    e.advance(1);
    assert_eq!(e.hint(r).await, "pending/userMrtd");
    e.advance(2);
    assert_eq!(e.hint(r).await, "pending/userSign");
    // The wrong person is refused; the order stays pending.
    let (s, v) = e.approve(r, json!({"personalNumber": PNR2})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"], "wrong_person");
    let (s, v) = e.approve(r, json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "complete");
    let done = e.collect(r).await;
    assert_eq!(done["status"], "complete");
    assert!(done.get("hintCode").is_none());
    let cd = &done["completionData"];
    assert_eq!(cd["stepUp"], json!({"mrtd": true}));
    assert_eq!(cd["user"]["personalNumber"], PNR);
    assert!(cd.get("risk").is_none());
}

#[tokio::test]
async fn autostart_and_decline() {
    let e = env().await;
    let start = e
        .start(
            "sign",
            json!({"endUserIp": "192.0.2.7", "userVisibleData": b64("Pay 100 SEK")}),
        )
        .await;
    let r = &start["orderRef"];
    // Declining needs the order in the app.
    let (s, _) = e
        .control(&format!("orders/{}/decline", r.as_str().unwrap()), None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, v) = e
        .control(
            "autostart",
            Some(json!({"autoStartToken": start["autoStartToken"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["startedVia"], "autoStart");
    let (s, _) = e
        .control(
            "autostart",
            Some(json!({"autoStartToken": uuid::Uuid::new_v4()})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = e
        .control(&format!("orders/{}/decline", r.as_str().unwrap()), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(e.hint(r).await, "failed/userCancel");
    // Failed orders cannot be cancelled, approved or declined.
    e.refused("cancel", json!({"orderRef": r}), "failed").await;
    let (s, _) = e.approve(r, json!({"personalNumber": PNR})).await;
    assert_eq!(s, StatusCode::CONFLICT);
}

#[tokio::test]
async fn collect_windows_follow_the_clock() {
    let e = env().await;
    // Completed: collectable for 180 s.
    let start = e.auth().await;
    let r = start["orderRef"].clone();
    e.scan(&start).await;
    let (s, v) = e.approve(&r, json!({"personalNumber": PNR})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    e.advance(179);
    assert_eq!(e.collect(&r).await["status"], "complete");
    assert_eq!(e.collect(&r).await["status"], "complete");
    e.advance(2);
    e.refused("collect", json!({"orderRef": r}), "orderRef")
        .await;

    // Failed: collectable for 300 s.
    let start = e.auth().await;
    let r = start["orderRef"].clone();
    e.scan(&start).await;
    e.control(&format!("orders/{}/decline", r.as_str().unwrap()), None)
        .await;
    e.advance(299);
    assert_eq!(e.hint(&r).await, "failed/userCancel");
    e.advance(2);
    e.refused("collect", json!({"orderRef": r}), "orderRef")
        .await;
}

#[tokio::test]
async fn unstarted_orders_fail_start_failed_and_started_ones_expire() {
    let e = env().await;
    let idle = e.auth().await;
    let scanned = e.auth().await;
    let phone = e
        .start(
            "phone/auth",
            json!({"personalNumber": PNR3, "callInitiator": "RP"}),
        )
        .await;
    e.scan(&scanned).await;
    e.advance(29);
    assert_eq!(
        e.hint(&idle["orderRef"]).await,
        "pending/outstandingTransaction"
    );
    e.advance(1);
    assert_eq!(e.hint(&idle["orderRef"]).await, "failed/startFailed");
    assert_eq!(e.hint(&scanned["orderRef"]).await, "pending/userSign");
    assert_eq!(e.hint(&phone["orderRef"]).await, "pending/userCallConfirm");
    e.advance(150);
    assert_eq!(
        e.hint(&scanned["orderRef"]).await,
        "failed/expiredTransaction"
    );
    assert_eq!(
        e.hint(&phone["orderRef"]).await,
        "failed/expiredTransaction"
    );
    // An expired order frees its person.
    e.start(
        "phone/auth",
        json!({"personalNumber": PNR3, "callInitiator": "RP"}),
    )
    .await;
}

#[tokio::test]
async fn phone_flows() {
    let e = env().await;
    // Declined before confirming the call.
    let a = e
        .start(
            "phone/auth",
            json!({"personalNumber": PNR, "callInitiator": "user"}),
        )
        .await;
    let (s, v) = e
        .control(
            &format!("orders/{}/decline", a["orderRef"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(e.hint(&a["orderRef"]).await, "failed/userDeclinedCall");

    // Confirmed, then declined while signing: userCancel.
    let b = e
        .start(
            "phone/auth",
            json!({"personalNumber": PNR, "callInitiator": "user"}),
        )
        .await;
    let rb = b["orderRef"].as_str().unwrap();
    let (s, _) = e.control(&format!("orders/{rb}/confirm-call"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(e.hint(&b["orderRef"]).await, "pending/started");
    e.advance(1);
    assert_eq!(e.hint(&b["orderRef"]).await, "pending/userSign");
    let (s, _) = e.control(&format!("orders/{rb}/confirm-call"), None).await;
    assert_eq!(s, StatusCode::CONFLICT);
    e.control(&format!("orders/{rb}/decline"), None).await;
    assert_eq!(e.hint(&b["orderRef"]).await, "failed/userCancel");

    // phone/sign approved straight from the call prompt (confirm + sign).
    let c = e
        .start(
            "phone/sign",
            json!({"personalNumber": PNR, "callInitiator": "RP", "userVisibleData": b64("Phone deal"), "requirement": {"pinCode": true}}),
        )
        .await;
    let (s, v) = e.approve(&c["orderRef"], json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let done = e.collect(&c["orderRef"]).await;
    let cd = &done["completionData"];
    assert_eq!(cd["user"]["personalNumber"], PNR);
    // No endUserIp on phone orders: the device address is loopback.
    assert_eq!(cd["device"]["ipAddress"], "127.0.0.1");
    let xml = check_signature(cd, Some("Phone deal"), "Signing");
    assert!(!xml.contains("TokenStartRequired"));
}

#[tokio::test]
async fn payment_orders_complete_with_risk() {
    let e = env().await;
    let start = e
        .start(
            "payment",
            json!({
                "endUserIp": "192.0.2.9",
                "returnRisk": true,
                "userVisibleData": b64("Card payment"),
                "userVisibleTransaction": {"transactionType": "card", "recipient": {"name": "Shop AB"}, "money": {"amount": "1000,00", "currency": "SEK"}},
                "riskFlags": ["newCard", "largeAmount"],
            }),
        )
        .await;
    e.control(
        "autostart",
        Some(json!({"autoStartToken": start["autoStartToken"]})),
    )
    .await;
    let (s, v) = e
        .approve(
            &start["orderRef"],
            json!({"personalNumber": PNR2, "risk": "moderate"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let done = e.collect(&start["orderRef"]).await;
    assert_eq!(done["completionData"]["risk"], "moderate");
    assert_eq!(done["completionData"]["device"]["ipAddress"], "192.0.2.9");
    check_signature(&done["completionData"], Some("Card payment"), "Signing");

    // Riskier than the RP accepts: transactionRiskBlocked.
    let start = e
        .start(
            "auth",
            json!({"endUserIp": "192.0.2.9", "requirement": {"risk": "low"}}),
        )
        .await;
    e.scan(&start).await;
    let (s, v) = e
        .approve(
            &start["orderRef"],
            json!({"personalNumber": PNR2, "risk": "high"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        e.hint(&start["orderRef"]).await,
        "failed/transactionRiskBlocked"
    );
}

#[tokio::test]
async fn completion_data_carries_a_verifiable_signature_and_ocsp_response() {
    let e = env().await;
    let start = e
        .start(
            "sign",
            json!({
                "endUserIp": "192.0.2.7",
                "userVisibleData": b64("Jag godkänner & signerar <avtalet>"),
                "userNonVisibleData": b64("internal-ref-42"),
                "requirement": {"certificatePolicies": ["1.2.3.4.5", "1.2.752.78.*"]},
            }),
        )
        .await;
    e.scan(&start).await;
    let (s, v) = e
        .approve(&start["orderRef"], json!({"personalNumber": PNR}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let done = e.collect(&start["orderRef"]).await;
    let cd = &done["completionData"];
    let mut keys: Vec<&String> = cd.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "bankIdIssueDate",
            "device",
            "ocspResponse",
            "signature",
            "user"
        ]
    );
    let user = &cd["user"];
    assert_eq!(user["personalNumber"], PNR);
    assert_eq!(
        user["name"].as_str().unwrap(),
        format!(
            "{} {}",
            user["givenName"].as_str().unwrap(),
            user["surname"].as_str().unwrap()
        )
    );
    // Deterministic: the same number is the same person.
    let again = bankid::users::User::from_personal_number(PNR);
    assert_eq!(user["name"], again.name.as_str());
    assert_eq!(cd["device"]["ipAddress"], "192.0.2.7");
    assert_eq!(cd["device"]["uhi"], again.uhi.as_str());
    let issued = cd["bankIdIssueDate"].as_str().unwrap();
    assert!(chrono::NaiveDate::parse_from_str(issued, "%Y-%m-%d").is_ok());

    let xml = check_signature(cd, Some("Jag godkänner & signerar <avtalet>"), "Signing");
    assert!(xml.contains("<value>1.2.752.78.*</value>"), "{xml}");
    assert!(xml.contains("<usrNonVisibleData>"));
    // The srvInfo name is the RP certificate's subject.
    let name = between(&xml, "<name>", "</name>");
    let rp = String::from_utf8(B64.decode(name).unwrap()).unwrap();
    assert!(rp.contains("CN=FP Testcert bankbridge"), "{rp}");
}

fn between<'a>(s: &'a str, from: &str, to: &str) -> &'a str {
    let a = s.find(from).unwrap_or_else(|| panic!("{from} in {s}")) + from.len();
    let b = a + s[a..].find(to).unwrap();
    &s[a..b]
}

/// The raw text of the element that starts with `open` (its end tag is
/// `</name>` where name is the first word of `open`).
fn element<'a>(xml: &'a str, open: &str) -> &'a str {
    let name = open
        .trim_start_matches('<')
        .split([' ', '>'])
        .next()
        .unwrap();
    let a = xml.find(open).unwrap_or_else(|| panic!("{open} in {xml}"));
    let close = format!("</{name}>");
    let b = a + xml[a..].find(&close).unwrap() + close.len();
    &xml[a..b]
}

/// Check completionData.signature and ocspResponse for real: XML shape,
/// reference digests, SignatureValue under the user's key, OCSP structure
/// and signature. Returns the XML.
fn check_signature(cd: &Value, visible: Option<&str>, func_id: &str) -> String {
    let xml = String::from_utf8(B64.decode(cd["signature"].as_str().unwrap()).unwrap()).unwrap();

    // Walk it with an XML parser: well-formed, the expected elements.
    let mut reader = quick_xml::Reader::from_str(&xml);
    let mut path: Vec<String> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    let mut digests: Vec<(String, String)> = Vec::new();
    let mut certs: Vec<Vec<u8>> = Vec::new();
    let mut sig_value = String::new();
    let mut func = String::new();
    let mut usr_visible = String::new();
    let mut current_uri = String::new();
    loop {
        match reader.read_event().unwrap() {
            Event::Start(t) => {
                let name = String::from_utf8(t.name().as_ref().to_vec()).unwrap();
                if name == "Reference" {
                    for a in t.attributes() {
                        let a = a.unwrap();
                        if a.key.as_ref() == b"URI" {
                            current_uri = String::from_utf8(a.value.to_vec()).unwrap();
                        }
                    }
                }
                path.push(name);
                seen.push(path.join("/"));
            }
            Event::Text(t) => {
                let text = String::from_utf8(t.to_vec()).unwrap();
                match path.last().map(String::as_str) {
                    Some("DigestValue") => digests.push((current_uri.clone(), text)),
                    Some("X509Certificate") => certs.push(B64.decode(text).unwrap()),
                    Some("SignatureValue") => sig_value = text,
                    Some("funcId") => func = text,
                    Some("usrVisibleData") => usr_visible = text,
                    _ => {}
                }
            }
            Event::End(_) => {
                path.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    for want in [
        "Signature/SignedInfo/CanonicalizationMethod",
        "Signature/SignedInfo/SignatureMethod",
        "Signature/SignedInfo/Reference/DigestValue",
        "Signature/SignatureValue",
        "Signature/KeyInfo/X509Data/X509Certificate",
        "Signature/Object/bankIdSignedData/srvInfo/nonce",
        "Signature/Object/bankIdSignedData/srvInfo/displayName",
        "Signature/Object/bankIdSignedData/clientInfo/funcId",
        "Signature/Object/bankIdSignedData/clientInfo/env/ai/uhi",
        "Signature/Object/bankIdSignedData/clientInfo/env/ai/requirement/condition/type",
    ] {
        assert!(seen.iter().any(|s| s == want), "{want} missing in {xml}");
    }
    assert_eq!(func, func_id);
    assert_eq!(certs.len(), 3, "user, issuing CA, root");
    match visible {
        Some(text) => assert_eq!(
            String::from_utf8(B64.decode(&usr_visible).unwrap()).unwrap(),
            text
        ),
        None => assert!(usr_visible.is_empty()),
    }

    // Digests of the referenced elements, computed here.
    let signed_data = element(&xml, "<bankIdSignedData ");
    assert!(signed_data.starts_with(
        r#"<bankIdSignedData xmlns="http://www.bankid.com/signature/v1.0.0/types" Id="bidSignedData">"#
    ));
    let key_info = element(&xml, "<KeyInfo ");
    let signed_info = element(&xml, "<SignedInfo ");
    assert_eq!(
        digests,
        vec![
            (
                "#bidSignedData".to_owned(),
                B64.encode(Sha256::digest(signed_data.as_bytes()))
            ),
            (
                "#bidKeyInfo".to_owned(),
                B64.encode(Sha256::digest(key_info.as_bytes()))
            ),
        ]
    );

    // SignatureValue: ECDSA P-256 (r‖s) over SignedInfo under the user's key.
    let user_cert = der::cert_fields(&certs[0]).unwrap();
    let ca_cert = der::cert_fields(&certs[1]).unwrap();
    assert_eq!(user_cert.issuer, ca_cert.subject);
    let user_key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_FIXED,
        user_cert.public_key,
    );
    user_key
        .verify(signed_info.as_bytes(), &B64.decode(&sig_value).unwrap())
        .expect("SignatureValue verifies");
    let mut tampered = signed_info.as_bytes().to_vec();
    tampered[30] ^= 1;
    assert!(
        user_key
            .verify(&tampered, &B64.decode(&sig_value).unwrap())
            .is_err()
    );

    // OCSP: OCSPResponse{successful, basic{tbs, ecdsa-with-SHA256, sig, certs}}.
    let ocsp = B64.decode(cd["ocspResponse"].as_str().unwrap()).unwrap();
    let (outer, rest) = der::read(&ocsp).unwrap();
    assert!(rest.is_empty());
    let parts = der::children(outer.content).unwrap();
    assert_eq!(parts[0].raw, &[0x0a, 1, 0], "responseStatus successful");
    let bytes = der::children(der::children(parts[1].content).unwrap()[0].content).unwrap();
    assert_eq!(
        bytes[0].raw,
        &[0x06, 9, 0x2b, 6, 1, 5, 5, 7, 0x30, 1, 1],
        "id-pkix-ocsp-basic"
    );
    let (basic, _) = der::read(bytes[1].content).unwrap();
    let basic = der::children(basic.content).unwrap();
    let tbs = basic[0];
    let sig = &basic[2].content[1..];
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_ASN1,
        ca_cert.public_key,
    )
    .verify(tbs.raw, sig)
    .expect("OCSP signature verifies under the issuing CA");
    // The single response is about the user's certificate, and good.
    let tbs_parts = der::children(tbs.content).unwrap();
    let single = der::children(der::children(tbs_parts[2].content).unwrap()[0].content).unwrap();
    let cert_id = der::children(single[0].content).unwrap();
    assert_eq!(cert_id[3].content, user_cert.serial);
    assert_eq!(
        cert_id[1].content,
        Sha256::digest(user_cert.issuer).as_slice()
    );
    assert_eq!(single[1].raw, &[0x80, 0], "certStatus good");
    openssl_reads_ocsp(&ocsp);
    xmlsec_verifies(&xml, &certs[2]);
    xml
}

/// When xmlsec1 is installed, it must verify the signature document as
/// XML-DSig (its own C14N, the references, the signature and the
/// certificate chain up to the simulator's root).
fn xmlsec_verifies(xml: &str, root_der: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let sig = dir.path().join("sig.xml");
    let root = dir.path().join("root.pem");
    std::fs::write(&sig, xml).unwrap();
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        B64.encode(root_der)
    );
    std::fs::write(&root, pem).unwrap();
    let Ok(out) = Command::new("xmlsec1")
        .args([
            "--verify",
            "--id-attr:Id",
            "bankIdSignedData",
            "--id-attr:Id",
            "KeyInfo",
            "--trusted-pem",
        ])
        .arg(&root)
        .arg(&sig)
        .output()
    else {
        eprintln!(
            "xmlsec1 not found: signature checked by this test's own digest and ECDSA checks only"
        );
        return;
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "xmlsec1 refused the signature:\n{err}"
    );
    assert!(err.contains("SignedInfo References (ok/all): 2/2"), "{err}");
}

/// When openssl is installed, it must parse the response too.
fn openssl_reads_ocsp(der: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ocsp.der");
    std::fs::write(&path, der).unwrap();
    let Ok(out) = Command::new("openssl")
        .args(["ocsp", "-noverify", "-resp_text", "-respin"])
        .arg(&path)
        .output()
    else {
        eprintln!("openssl not found: OCSP checked by the structure test only");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("OCSP Response Status: successful"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Cert Status: good"), "{text}");
}

#[tokio::test]
async fn control_routes_inform_and_list() {
    let e = env().await;
    let info: Value = e
        .http
        .get(format!("{}/_sandbox/bankid/info", e.sb.root_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["baseUrl"], e.base.as_str());
    assert!(
        info["caPem"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    for k in ["caCertPath", "rpCertPath", "rpKeyPath"] {
        assert!(Path::new(info[k].as_str().unwrap()).is_file(), "{k}");
    }
    assert_eq!(info["config"]["order_lifetime_secs"], 180);
    let start = e.auth().await;
    let list: Value = e
        .http
        .get(format!("{}/_sandbox/bankid/orders", e.sb.root_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list[0]["orderRef"], start["orderRef"]);
    assert_eq!(list[0]["hintCode"], "outstandingTransaction");
    assert!(
        !list
            .to_string()
            .contains(start["qrStartSecret"].as_str().unwrap())
    );
    let (s, v) = e.control("advance", Some(json!({"seconds": 31}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(e.hint(&start["orderRef"]).await, "failed/startFailed");
    let (s, v) = e.control("orders/not-a-uuid/approve", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, _) = e
        .control(&format!("orders/{}/approve", uuid::Uuid::new_v4()), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn certificates_are_made_once_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let a = bankid::spawn(dir.path(), BankIdSimConfig::default())
        .await
        .unwrap();
    let ca = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    let rp = std::fs::read_to_string(dir.path().join("rp-cert.pem")).unwrap();
    #[cfg(unix)]
    for key in ["ca-key.pem", "server-key.pem", "rp-key.pem"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    a.shutdown().await;
    let b = bankid::spawn(dir.path(), BankIdSimConfig::default())
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ca.pem")).unwrap(),
        ca
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("rp-cert.pem")).unwrap(),
        rp
    );
    // The old RP certificate still gets in.
    let r = rp_client(dir.path(), true)
        .post(format!("{}auth", b.base_url()))
        .json(&json!({"endUserIp": "192.0.2.7"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The user's signature chains to the same root across runs.
    let start: Value = r.json().await.unwrap();
    let sim = b.sim();
    let r: uuid::Uuid = start["orderRef"].as_str().unwrap().parse().unwrap();
    sim.autostart(start["autoStartToken"].as_str().unwrap())
        .unwrap();
    let view = sim
        .approve(
            r,
            bankid::Approval {
                personal_number: Some(PNR.into()),
                ..Default::default()
            },
        )
        .unwrap();
    let cd = view.completion_data.unwrap();
    let xml = String::from_utf8(B64.decode(cd["signature"].as_str().unwrap()).unwrap()).unwrap();
    let root_in_xml = between(&xml, "</X509Certificate><X509Certificate>", "</X509Data>");
    let root_in_xml = root_in_xml.rsplit("<X509Certificate>").next().unwrap();
    let root_in_xml = root_in_xml.trim_end_matches("</X509Certificate>");
    let ca_der = B64
        .decode(
            ca.lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .unwrap();
    assert_eq!(B64.decode(root_in_xml).unwrap(), ca_der);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulators_starting_together_share_one_certificate_set() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = tokio::join!(
        bankid::spawn(dir.path(), BankIdSimConfig::default()),
        bankid::spawn(dir.path(), BankIdSimConfig::default()),
        bankid::spawn(dir.path(), BankIdSimConfig::default()),
    );
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert_eq!(a.ca_pem(), b.ca_pem());
    assert_eq!(a.ca_pem(), c.ca_pem());
    assert!(!dir.path().join(".generating").exists());
    // A set mixed from two generations is refused with a clear error.
    let other = tempfile::tempdir().unwrap();
    bankid::spawn(other.path(), BankIdSimConfig::default())
        .await
        .unwrap();
    std::fs::copy(other.path().join("ca.pem"), dir.path().join("ca.pem")).unwrap();
    let err = bankid::spawn(dir.path(), BankIdSimConfig::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("was not issued by ca.pem"), "{err}");
    assert!(err.contains("delete the directory"), "{err}");
}

#[tokio::test]
async fn ten_thousand_pending_orders() {
    let dir = tempfile::tempdir().unwrap();
    let h = bankid::spawn(dir.path(), BankIdSimConfig::default())
        .await
        .unwrap();
    let client = rp_client(dir.path(), true);
    let url = format!("{}auth", h.base_url());
    let started = std::time::Instant::now();
    let refs: Vec<String> = futures_like_join(10_000, 32, |_| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let v: Value = client
                .post(&url)
                .json(&json!({"endUserIp": "192.0.2.7"}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["orderRef"].as_str().unwrap().to_owned()
        }
    })
    .await;
    eprintln!("10,000 auth orders in {:?}", started.elapsed());
    assert_eq!(refs.len(), 10_000);
    let views = h.sim().orders();
    assert_eq!(views.len(), 10_000);
    assert!(
        views
            .iter()
            .all(|v| v.hint_code == Some("outstandingTransaction"))
    );
    // The last one still collects normally.
    let v: Value = client
        .post(format!("{}collect", h.base_url()))
        .json(&json!({"orderRef": refs[9_999]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["hintCode"], "outstandingTransaction");
    h.shutdown().await;
}

/// Run `n` futures made by `make`, at most `width` at a time, in order.
async fn futures_like_join<F, Fut, T>(n: usize, width: usize, make: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let batch: Vec<_> = (i..(i + width).min(n))
            .map(|j| tokio::spawn(make(j)))
            .collect();
        for t in batch {
            out.push(t.await.unwrap());
        }
        i += width;
    }
    out
}
