//! The simulated keypad bank over loopback HTTP, driven by hand with reqwest
//! and a client-side keypad encoder written here from the contract
//! (`docs/keypad-bank-api.md`), independently of the server's codec.
use std::collections::HashSet;

use bankbridge_sandbox::keypad::{self, codec};
use bankbridge_sandbox::{KeypadConfig, SandboxConfig, SandboxHandle};
use base64::Engine;
use chrono::NaiveDate;
use proptest::prelude::*;
use rand::SeedableRng;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 6, 15).unwrap()
}

fn small(seed: u64) -> SandboxConfig {
    SandboxConfig {
        seed,
        accounts: 3,
        transactions: 1500,
        years: 2,
        today: Some(today()),
        ..SandboxConfig::default()
    }
}

async fn sandbox(seed: u64) -> SandboxHandle {
    bankbridge_sandbox::spawn(small(seed)).await.unwrap()
}

// --- The client side of the contract, written from the article. ---

/// `reverse`, pairs of hex digits, ASCII: the last 10 characters are the keys.
fn client_read_keypad(field: &str) -> (String, Vec<char>) {
    let reversed: Vec<char> = field.chars().rev().collect();
    let chars: Vec<char> = reversed
        .chunks(2)
        .map(|pair| {
            let hex: String = pair.iter().collect();
            char::from(u8::from_str_radix(&hex, 16).unwrap())
        })
        .collect();
    let (seed, keys) = chars.split_at(chars.len() - 10);
    (seed.iter().collect(), keys.to_vec())
}

/// Each PIN digit by its index among the keys; `reverse(hex(seed ‖ mangled))`.
fn client_token(seed: &str, keys: &[char], pin: &str) -> String {
    let mangled: String = pin
        .chars()
        .map(|d| {
            let i = keys.iter().position(|k| *k == d).unwrap();
            char::from_digit(i as u32, 10).unwrap()
        })
        .collect();
    let hex: String = format!("{seed}{mangled}")
        .chars()
        .map(|c| format!("{:x}", c as u32))
        .collect();
    hex.chars().rev().collect()
}

/// base64 of the contract id without its last 2 characters.
fn short_id(id: &str) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(id);
    b[..b.len() - 2].to_owned()
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(sb: &SandboxHandle) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: sb.keypad_base_url(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    async fn keypad(&self) -> String {
        let r = self
            .http
            .get(self.url("api/login/keypad"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers().contains_key("date"));
        let v: Value = r.json().await.unwrap();
        v["keypad"].as_str().unwrap().to_owned()
    }

    async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (StatusCode, Value) {
        let mut req = self.http.post(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    /// `POST api/login/refresh` with `refresh` as the refresh token.
    async fn refresh(&self, refresh: &Value) -> (StatusCode, Value) {
        self.post("api/login/refresh", None, &json!({"refreshToken": refresh}))
            .await
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    /// `POST api/login` with a fresh keypad.
    async fn login(&self, identifier: &str, pin: &str) -> (StatusCode, Value) {
        let (seed, keys) = client_read_keypad(&self.keypad().await);
        let token = client_token(&seed, &keys, pin);
        self.post(
            "api/login",
            None,
            &json!({
                "callingUrl": "/connexion",
                "clientTimestamp": 1_692_997_262,
                "encryptedIdentifier": false,
                "identifier": identifier,
                "keypad": token,
                "sessionId": "00000000000000000000001",
            }),
        )
        .await
    }

    async fn login_ok(&self, sb: &SandboxHandle) -> Value {
        let creds = sb.keypad().credentials();
        let (status, body) = self.login(&creds.identifier, &creds.pin).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Log in and open contract `i`: (contract token body, contract id).
    async fn contract(&self, sb: &SandboxHandle, i: usize) -> (Value, String) {
        let login = self.login_ok(sb).await;
        let id = login["contracts"][i]["id"].as_str().unwrap().to_owned();
        let (status, body) = self
            .post(
                "api/login/contract",
                login["accessToken"].as_str(),
                &json!({"clientTimestamp": 1_692_997_262, "contractId": short_id(&id)}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        (body, id)
    }

    async fn accounts(&self, token: &str, contract_id: &str) -> Vec<Value> {
        let (status, body) = self
            .get(
                &format!(
                    "api/user/accounts?type=current&contract_id={}&is_eligible_for_identity=false&include_aggregate_account=false",
                    short_id(contract_id)
                ),
                token,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["accounts"].as_array().unwrap().clone()
    }

    async fn rows(&self, token: &str, account: &Value, range: &str) -> (StatusCode, Value) {
        self.get(
            &format!(
                "api/user/{}/transactions?contract_id={}&range={range}",
                account["external_id"].as_str().unwrap(),
                account["internal_id"].as_str().unwrap()
            ),
            token,
        )
        .await
    }

    async fn control(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let root = self.base.trim_end_matches("/keypad");
        let r = self
            .http
            .post(format!("{root}/_sandbox/keypad/{path}"))
            .json(body)
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    async fn control_get(&self, path: &str) -> Value {
        let root = self.base.trim_end_matches("/keypad");
        let r = self
            .http
            .get(format!("{root}/_sandbox/keypad/{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

fn cents(v: &Value) -> i64 {
    (v.as_f64().unwrap() * 100.0).round() as i64
}

fn decimal_cents(s: &str) -> i64 {
    let neg = s.starts_with('-');
    let (units, frac) = s.trim_start_matches('-').split_once('.').unwrap();
    let c = units.parse::<i64>().unwrap() * 100 + frac.parse::<i64>().unwrap();
    if neg { -c } else { c }
}

fn booking_date(row: &Value) -> NaiveDate {
    NaiveDate::parse_from_str(&s(&row["booking_date_time"])[..10], "%Y-%m-%d").unwrap()
}

// --- The tests. ---

#[test]
fn article_example() {
    let keys = *b"0348957621";
    let field = codec::encode_field("5820164937201846", &keys);
    assert!(field.starts_with("13236373539383433303"), "{field}");
    let (seed, client_keys) = client_read_keypad(&field);
    assert_eq!(seed, "5820164937201846");
    assert_eq!(
        client_keys,
        ['0', '3', '4', '8', '9', '5', '7', '6', '2', '1']
    );
    assert_eq!(codec::decode_field(&field).unwrap(), (seed.clone(), keys));
    // PIN 011000 with those keys is mangled to 099000.
    let token = client_token(&seed, &client_keys, "011000");
    assert!(token.starts_with("030303939303"), "{token}");
    let (server_seed, mangled) = codec::decode_token(&token).unwrap();
    assert_eq!(
        (server_seed.as_str(), mangled.as_str()),
        (seed.as_str(), "099000")
    );
    assert_eq!(codec::unmangle(&mangled, &keys).unwrap(), "011000");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Any keypad the simulator issues, read and answered by the client,
    /// decodes back to the PIN on the server.
    #[test]
    fn every_issued_layout_round_trips(rng_seed in any::<u64>(), pin in "[0-9]{6}") {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(rng_seed);
        let (seed, keys) = codec::new_keypad(&mut rng);
        let field = codec::encode_field(&seed, &keys);
        prop_assert!(field.bytes().all(|b| b.is_ascii_digit()));
        let (client_seed, client_keys) = client_read_keypad(&field);
        prop_assert_eq!(&client_seed, &seed);
        let token = client_token(&client_seed, &client_keys, &pin);
        let (server_seed, mangled) = codec::decode_token(&token).unwrap();
        prop_assert_eq!(&server_seed, &seed);
        prop_assert_eq!(codec::unmangle(&mangled, &keys).unwrap(), pin.clone());
        prop_assert_eq!(codec::mangle(&pin, &keys).unwrap(), mangled);
    }

    /// Garbage never panics the decoders.
    #[test]
    fn decoders_take_any_string(s in ".{0,80}") {
        let _ = codec::decode_token(&s);
        let _ = codec::decode_field(&s);
    }
}

#[tokio::test]
async fn login_contract_accounts_and_paging() {
    let sb = sandbox(1).await;
    let c = Client::new(&sb);
    let login = c.login_ok(&sb).await;
    assert!(login["multiFactorAuth"].is_null());
    assert!(login["userName"].as_str().unwrap().starts_with('M'));
    let contracts = login["contracts"].as_array().unwrap();
    assert_eq!(contracts.len(), 2);
    let expires = login["expiresAt"].as_i64().unwrap();
    let issued = sb.keypad().now().timestamp();
    assert!(
        (expires - issued - 21 * 86_400).abs() < 5,
        "{expires} {issued}"
    );

    // The login token opens contracts but reads no account.
    let (status, body) = c
        .get(
            &format!(
                "api/user/accounts?type=current&contract_id={}",
                short_id(s(&contracts[0]["id"]))
            ),
            s(&login["accessToken"]),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "CONTRACT_TOKEN_REQUIRED");

    let (ct, contract_id) = c.contract(&sb, 0).await;
    let token = s(&ct["accessToken"]).to_owned();
    let accounts = c.accounts(&token, &contract_id).await;
    // Three accounts over two contracts: 0 and 2 in the first.
    assert_eq!(accounts.len(), 2);
    let truth = sb.keypad().truth();
    for a in &accounts {
        assert_eq!(a["type"], "current");
        assert_eq!(a["amount"]["currenty"], "EUR");
        let t = truth.iter().find(|t| t.iban == s(&a["iban"])).unwrap();
        assert_eq!(s(&a["amount"]["value"]), t.balance);
        assert_eq!(s(&a["external_id"]), t.external_id);
        assert!(bankbridge_core::Iban::parse(s(&a["iban"])).is_ok());
    }
    // The contract token of another contract sees its own accounts only.
    let (ct1, contract_1) = c.contract(&sb, 1).await;
    let other = c.accounts(s(&ct1["accessToken"]), &contract_1).await;
    assert_eq!(other.len(), 1);
    let (status, body) = c.rows(&token, &other[0], "0-9").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "UNKNOWN_ACCOUNT");

    // Paging: newest first, overlapping ranges agree, at most 100 rows.
    let acct = &accounts[0];
    let (status, first) = c.rows(&token, acct, "0-99").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["isFailover"], false);
    let first = first["accountTransactions"].as_array().unwrap().clone();
    assert_eq!(first.len(), 100);
    assert!(
        first
            .windows(2)
            .all(|p| booking_date(&p[0]) >= booking_date(&p[1]))
    );
    assert!(booking_date(&first[0]) <= today());
    let (_, second) = c.rows(&token, acct, "50-149").await;
    let second = second["accountTransactions"].as_array().unwrap();
    assert_eq!(&first[50..], &second[..50]);
    let (_, one) = c.rows(&token, acct, "7-7").await;
    assert_eq!(one["accountTransactions"][0], first[7]);
    let mut codes = HashSet::new();
    for r in &first {
        assert_eq!(r["is_accounted"], true);
        assert_eq!(r["are_details_available"], false);
        assert_eq!(r["amount"]["currency"], "EUR");
        assert!(r["amount"]["value"].is_number());
        assert!(r["nature"].is_string() && r["label"].is_string());
        assert!(s(&r["booking_date_time"]).ends_with("T00:00:00.000Z"));
        codes.insert(r.get("movement_code_type").is_some());
    }
    assert_eq!(codes.len(), 2, "movement_code_type sometimes absent");
    let labels: Vec<&str> = first.iter().map(|r| s(&r["label"])).collect();
    assert!(labels.iter().any(|l| l.starts_with("CB ")), "{labels:?}");

    // Past the end: the rows that exist, then none.
    let count = truth
        .iter()
        .find(|t| t.iban == s(&acct["iban"]))
        .unwrap()
        .count;
    c.post("api/auth/2fa", Some(&token), &json!({})).await;
    c.control("approve", &json!({})).await;
    let (status, tail) = c
        .rows(&token, acct, &format!("{}-{}", count - 3, count + 10))
        .await;
    assert_eq!(status, StatusCode::OK, "{tail}");
    assert_eq!(tail["accountTransactions"].as_array().unwrap().len(), 3);
    let (_, none) = c
        .rows(&token, acct, &format!("{}-{}", count + 5, count + 10))
        .await;
    assert_eq!(none["accountTransactions"], json!([]));
    sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn wrong_pins_lock_the_identifier() {
    let sb = sandbox(2).await;
    let c = Client::new(&sb);
    let creds = sb.keypad().credentials();
    let wrong = if creds.pin == "000000" {
        "111111"
    } else {
        "000000"
    };

    // A right PIN resets the count.
    let (status, body) = c.login(&creds.identifier, wrong).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "BAD_CREDENTIALS");
    assert_eq!(body["remainingAttempts"], 2);
    c.login_ok(&sb).await;
    let (_, body) = c.login(&creds.identifier, wrong).await;
    assert_eq!(body["remainingAttempts"], 2);
    let (_, body) = c.login(&creds.identifier, wrong).await;
    assert_eq!(body["remainingAttempts"], 1);
    let (status, body) = c.login(&creds.identifier, wrong).await;
    assert_eq!(status, StatusCode::LOCKED, "{body}");
    assert_eq!(body["code"], "ACCOUNT_LOCKED");
    // Then always locked, even with the right PIN.
    let (status, _) = c.login(&creds.identifier, &creds.pin).await;
    assert_eq!(status, StatusCode::LOCKED);

    // An unknown identifier answers like a wrong PIN.
    let (status, body) = c.login("12345678901", &creds.pin).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "BAD_CREDENTIALS");

    // The sandbox can unlock.
    let (status, _) = c.control("unlock", &json!({})).await;
    assert_eq!(status, StatusCode::OK);
    c.login_ok(&sb).await;
    sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn keypads_are_single_use_and_checked() {
    let sb = sandbox(3).await;
    let c = Client::new(&sb);
    let creds = sb.keypad().credentials();
    let field = c.keypad().await;
    assert_ne!(field, c.keypad().await, "a new keypad every time");
    let (seed, keys) = client_read_keypad(&field);
    assert_eq!(seed.len(), 16);
    let body = |token: String| {
        json!({"callingUrl": "/connexion", "clientTimestamp": 1, "encryptedIdentifier": false,
               "identifier": creds.identifier, "keypad": token, "sessionId": "1"})
    };
    let token = client_token(&seed, &keys, &creds.pin);
    let (status, _) = c.post("api/login", None, &body(token.clone())).await;
    assert_eq!(status, StatusCode::OK);
    let (status, again) = c.post("api/login", None, &body(token)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(again["code"], "KEYPAD_INVALID");
    // A seed the bank never issued.
    let forged = client_token("1234567890123456", &keys, &creds.pin);
    let (status, body_) = c.post("api/login", None, &body(forged)).await;
    assert_eq!(
        (status, s(&body_["code"])),
        (StatusCode::BAD_REQUEST, "KEYPAD_INVALID")
    );
    // Keypads last 5 minutes on the bank's clock.
    let (seed, keys) = client_read_keypad(&c.keypad().await);
    c.control("advance", &json!({"days": 1})).await;
    let (status, body_) = c
        .post(
            "api/login",
            None,
            &body(client_token(&seed, &keys, &creds.pin)),
        )
        .await;
    assert_eq!(
        (status, s(&body_["code"])),
        (StatusCode::BAD_REQUEST, "KEYPAD_INVALID")
    );
    sb.shutdown().await.unwrap();
}

/// The index of the first row booked more than 90 days before today, found
/// by probing single rows (`len`: the account's row count).
async fn first_gated(c: &Client, token: &str, acct: &Value, len: u64) -> u64 {
    let mut lo = 0u64;
    let mut hi = len;
    while lo < hi {
        let mid = (lo + hi) / 2;
        let (status, _) = c.rows(token, acct, &format!("{mid}-{mid}")).await;
        if status == StatusCode::FORBIDDEN {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

#[tokio::test]
async fn ninety_day_gate_and_manual_2fa() {
    let sb = sandbox(4).await;
    let c = Client::new(&sb);
    let (ct, contract_id) = c.contract(&sb, 0).await;
    let token = s(&ct["accessToken"]).to_owned();
    let acct = c.accounts(&token, &contract_id).await.remove(0);
    let limit = today() - chrono::Days::new(90);

    let len = sb
        .keypad()
        .truth()
        .iter()
        .find(|t| t.iban == s(&acct["iban"]))
        .unwrap()
        .count;
    let k = first_gated(&c, &token, &acct, len).await;
    assert!(0 < k && k < len, "{k} of {len}");
    let (status, body) = c.rows(&token, &acct, &format!("{k}-{k}")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], "2FA_REQUIRED");
    assert!(body.get("accountTransactions").is_none());
    let (status, body) = c.rows(&token, &acct, &format!("{}-{}", k - 1, k - 1)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(booking_date(&body["accountTransactions"][0]) >= limit);
    // A range reaching one gated row is refused whole.
    let (status, _) = c.rows(&token, &acct, &format!("{}-{}", k - 50, k)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The decoupled 2FA: request, pending, approve on the "device", approved.
    let (status, req) = c.post("api/auth/2fa", Some(&token), &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{req}");
    let id = s(&req["requestId"]).to_owned();
    let (_, poll) = c.get(&format!("api/auth/2fa/{id}"), &token).await;
    assert_eq!(poll["status"], "pending");
    let pending = c.control_get("requests").await;
    assert_eq!(pending[0]["requestId"], id.as_str());
    assert_eq!(pending[0]["contractId"], contract_id.as_str());
    let (status, approved) = c.control("approve", &json!({"requestId": id})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(approved["approved"], json!([id]));
    let (_, poll) = c.get(&format!("api/auth/2fa/{id}"), &token).await;
    assert_eq!(poll["status"], "approved");
    assert_eq!(c.control_get("requests").await, json!([]));
    let (status, again) = c.control("approve", &json!({"requestId": id})).await;
    assert_eq!(
        (status, s(&again["code"])),
        (StatusCode::CONFLICT, "NOT_PENDING")
    );

    let (status, body) = c.rows(&token, &acct, &format!("{k}-{k}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(booking_date(&body["accountTransactions"][0]) < limit);

    // Tokens refreshed from it keep the right; a new login does not have it.
    let (status, refreshed) = c.refresh(&ct["refreshToken"]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = c
        .rows(s(&refreshed["accessToken"]), &acct, &format!("{k}-{k}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (fresh, _) = c.contract(&sb, 0).await;
    let (status, _) = c
        .rows(s(&fresh["accessToken"]), &acct, &format!("{k}-{k}"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A declined request, and one left to expire (5 minutes).
    let fresh = s(&fresh["accessToken"]).to_owned();
    let (_, req) = c.post("api/auth/2fa", Some(&fresh), &json!({})).await;
    let declined = s(&req["requestId"]).to_owned();
    let (_, d) = c.control("decline", &json!({})).await;
    assert_eq!(d["declined"], json!([declined]));
    let (_, poll) = c.get(&format!("api/auth/2fa/{declined}"), &fresh).await;
    assert_eq!(poll["status"], "declined");
    let (_, req) = c.post("api/auth/2fa", Some(&fresh), &json!({})).await;
    let late = s(&req["requestId"]).to_owned();
    c.control("advance", &json!({"days": 1})).await;
    let (_, poll) = c.get(&format!("api/auth/2fa/{late}"), &fresh).await;
    assert_eq!(poll["status"], "expired");
    // Another session's request is not visible.
    let (status, _) = c.get(&format!("api/auth/2fa/{late}"), &token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn auto_approve_from_config_and_control() {
    let sb = bankbridge_sandbox::spawn(SandboxConfig {
        keypad: KeypadConfig { auto_approve: true },
        ..small(5)
    })
    .await
    .unwrap();
    let c = Client::new(&sb);
    assert_eq!(c.control_get("config").await["autoApprove"], true);
    let (ct, contract_id) = c.contract(&sb, 0).await;
    let token = s(&ct["accessToken"]).to_owned();
    let acct = c.accounts(&token, &contract_id).await.remove(0);
    let (_, req) = c.post("api/auth/2fa", Some(&token), &json!({})).await;
    let (_, poll) = c
        .get(&format!("api/auth/2fa/{}", s(&req["requestId"])), &token)
        .await;
    assert_eq!(poll["status"], "approved");
    let (status, _) = c.rows(&token, &acct, "0-99").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = c.rows(&token, &acct, "500-599").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Switched off at run time: requests wait again.
    let (status, cfg) = c.control("config", &json!({"autoApprove": false})).await;
    assert_eq!(
        (status, &cfg["autoApprove"]),
        (StatusCode::OK, &json!(false))
    );
    let (ct, _) = c.contract(&sb, 0).await;
    let token = s(&ct["accessToken"]).to_owned();
    let (_, req) = c.post("api/auth/2fa", Some(&token), &json!({})).await;
    let (_, poll) = c
        .get(&format!("api/auth/2fa/{}", s(&req["requestId"])), &token)
        .await;
    assert_eq!(poll["status"], "pending");
    sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn refresh_expiry_and_revocation() {
    let sb = sandbox(6).await;
    let c = Client::new(&sb);
    let (ct, contract_id) = c.contract(&sb, 0).await;

    // Refresh: a new pair; the old refresh token is spent.
    let (status, fresh) = c.refresh(&ct["refreshToken"]).await;
    assert_eq!(status, StatusCode::OK, "{fresh}");
    assert_ne!(fresh["accessToken"], ct["accessToken"]);
    assert!(fresh["expiresAt"].as_i64().unwrap() >= ct["expiresAt"].as_i64().unwrap());
    let (status, body) = c.refresh(&ct["refreshToken"]).await;
    assert_eq!(
        (status, s(&body["code"])),
        (StatusCode::UNAUTHORIZED, "TOKEN_INVALID")
    );
    // An access token is no refresh token, and the other way round.
    let (status, _) = c.refresh(&fresh["accessToken"]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = c
        .get("api/user/documents/documents", s(&fresh["refreshToken"]))
        .await;
    assert_eq!(
        (status, s(&body["code"])),
        (StatusCode::UNAUTHORIZED, "TOKEN_INVALID")
    );
    // The refreshed token is the same contract's.
    assert_eq!(
        c.accounts(s(&fresh["accessToken"]), &contract_id)
            .await
            .len(),
        2
    );

    // 21 days on the bank's clock: still valid after 20, expired after 22.
    c.control("advance", &json!({"days": 20})).await;
    assert_eq!(
        c.accounts(s(&fresh["accessToken"]), &contract_id)
            .await
            .len(),
        2
    );
    let (status, body) = c.control("advance", &json!({"days": 2})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["today"], "2024-07-07");
    let (status, body) = c
        .get("api/user/documents/documents", s(&fresh["accessToken"]))
        .await;
    assert_eq!(
        (status, s(&body["code"])),
        (StatusCode::UNAUTHORIZED, "TOKEN_EXPIRED")
    );
    let (status, body) = c.refresh(&fresh["refreshToken"]).await;
    assert_eq!(
        (status, s(&body["code"])),
        (StatusCode::UNAUTHORIZED, "TOKEN_EXPIRED")
    );

    // Revocation forces a PIN login.
    let (ct, _) = c.contract(&sb, 0).await;
    let (status, body) = c.control("revoke", &json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["revokedTokens"].as_u64().unwrap() >= 2);
    let (status, body) = c
        .get("api/user/documents/documents", s(&ct["accessToken"]))
        .await;
    assert_eq!(
        (status, s(&body["code"])),
        (StatusCode::UNAUTHORIZED, "TOKEN_INVALID")
    );
    let (status, _) = c.refresh(&ct["refreshToken"]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    c.contract(&sb, 0).await;
    sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn advancing_books_new_rows_and_truth_matches_paging() {
    let sb = sandbox(7).await;
    let c = Client::new(&sb);
    c.control("config", &json!({"autoApprove": true})).await;
    c.control("advance", &json!({"days": 3})).await;
    let truth: Value = c.control_get("truth").await;
    assert_eq!(truth.as_array().unwrap().len(), 3);
    for contract in 0..2 {
        let (ct, contract_id) = c.contract(&sb, contract).await;
        let token = s(&ct["accessToken"]).to_owned();
        c.post("api/auth/2fa", Some(&token), &json!({})).await;
        for acct in c.accounts(&token, &contract_id).await {
            let t = truth
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["iban"] == acct["iban"])
                .unwrap();
            let (mut n, mut sum, mut from) = (0u64, 0i64, 0u64);
            loop {
                let (status, page) = c
                    .rows(&token, &acct, &format!("{from}-{}", from + 99))
                    .await;
                assert_eq!(status, StatusCode::OK);
                let rows = page["accountTransactions"].as_array().unwrap();
                n += rows.len() as u64;
                sum += rows
                    .iter()
                    .map(|r| cents(&r["amount"]["value"]))
                    .sum::<i64>();
                if rows.len() < 100 {
                    break;
                }
                from += 100;
            }
            assert_eq!(n, t["count"].as_u64().unwrap());
            assert_eq!(sum, decimal_cents(s(&t["sum"])));
            let (_, newest) = c.rows(&token, &acct, "0-0").await;
            assert!(booking_date(&newest["accountTransactions"][0]) <= sb.keypad().today());
        }
    }
    assert_eq!(
        sb.keypad().today(),
        NaiveDate::from_ymd_opt(2024, 6, 18).unwrap()
    );
    sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn statements_and_documents() {
    let sb = sandbox(8).await;
    let c = Client::new(&sb);
    let (ct, contract_id) = c.contract(&sb, 0).await;
    let token = s(&ct["accessToken"]).to_owned();
    let accounts = c.accounts(&token, &contract_id).await;
    let (status, list) = c
        .get("api/user/documents/accounts_statements", &token)
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let list = list["documents"].as_array().unwrap().clone();
    // Two accounts × the months from June 2022 to May 2024.
    assert_eq!(list.len(), 2 * 24);
    assert!(list.iter().all(|d| d["codsoufamdoc_1"] == "AST"));
    assert_eq!(list[0]["datprddoccli"], "2024-06-01");
    assert!(s(&list[0]["liblg_typdoc"]).contains("mai 2024"));

    let truth = sb.keypad().truth();
    let served: Value = c.control_get("truth").await;
    assert_eq!(serde_json::to_value(&truth).unwrap(), served);
    for doc in &list {
        let token_ = s(&doc["downloadToken"]);
        let t = truth
            .iter()
            .flat_map(|t| &t.statements)
            .find(|st| st.download_token == token_)
            .unwrap_or_else(|| panic!("{doc} not in truth"));
        assert!(&s(&doc["datprddoccli"])[..7] > t.month.as_str(), "{doc}");
    }

    // Download: a real PDF, the same bytes each time, hashed as the truth says.
    let newest = s(&list[0]["downloadToken"]).to_owned();
    let download = |tok: String, bearer: String| {
        let http = c.http.clone();
        let url = c.url(&format!("api/user/documents/download?token={tok}"));
        async move {
            let r = http.get(url).bearer_auth(bearer).send().await.unwrap();
            let status = r.status();
            let ctype = r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, ctype, r.bytes().await.unwrap().to_vec())
        }
    };
    let (status, ctype, pdf) = download(newest.clone(), token.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ctype.as_deref(), Some("application/pdf"));
    assert!(pdf.starts_with(b"%PDF-"));
    assert!(pdf.ends_with(b"%%EOF\n"));
    let (_, _, again) = download(newest.clone(), token.clone()).await;
    assert_eq!(pdf, again);
    let st = truth
        .iter()
        .flat_map(|t| &t.statements)
        .find(|st| st.download_token == newest)
        .unwrap();
    assert_eq!(hex::encode(Sha256::digest(&pdf)), st.sha256);
    assert_eq!(st.month, "2024-05");

    // The month's rows, as the API pages them, are the statement's rows.
    let iban = truth
        .iter()
        .find(|t| t.statements.iter().any(|x| x.download_token == newest))
        .unwrap()
        .iban
        .clone();
    let acct = accounts
        .iter()
        .find(|a| a["iban"] == iban.as_str())
        .unwrap();
    let mut may = Vec::new();
    let may_first = NaiveDate::from_ymd_opt(2024, 5, 1).unwrap();
    for from in (0..).step_by(100) {
        let (status, page) = c.rows(&token, acct, &format!("{from}-{}", from + 99)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let rows = page["accountTransactions"].as_array().unwrap();
        may.extend(
            rows.iter()
                .filter(|r| booking_date(r).format("%Y-%m").to_string() == "2024-05")
                .cloned(),
        );
        if rows.last().is_none_or(|r| booking_date(r) < may_first) {
            break;
        }
    }
    assert!(!may.is_empty());
    check_with_poppler(&pdf, &may);

    // Other documents: fee summaries per complete year and IBAN certificates.
    let (_, others) = c.get("api/user/documents/documents", &token).await;
    let others = others["documents"].as_array().unwrap().clone();
    let codes: Vec<&str> = others.iter().map(|d| s(&d["codsoufamdoc_1"])).collect();
    assert_eq!(
        codes.iter().filter(|c| **c == "RAF").count(),
        2,
        "{codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|c| **c == "RIB").count(),
        2,
        "{codes:?}"
    );
    for d in &others {
        let (status, _, bytes) = download(s(&d["downloadToken"]).to_owned(), token.clone()).await;
        assert_eq!(status, StatusCode::OK);
        assert!(bytes.starts_with(b"%PDF-1.4"));
    }

    // Another contract's document is not this token's.
    let (ct1, _) = c.contract(&sb, 1).await;
    let (status, _, body) = download(newest.clone(), s(&ct1["accessToken"]).to_owned()).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (status, _, _) = download("nope".into(), token.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Documents need a contract token, and there is no 90-day limit on them.
    let login = c.login_ok(&sb).await;
    let (status, _, _) = download(newest, s(&login["accessToken"]).to_owned()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        sb.keypad()
            .document(s(&list.last().unwrap()["downloadToken"]))
            .map(|p| p.starts_with(b"%PDF-")),
        Some(true)
    );
    sb.shutdown().await.unwrap();
}

/// `qpdf --check` and `pdftotext` when installed: the file is sound and
/// lists the month's rows with their dates and amounts.
fn check_with_poppler(pdf: &[u8], rows: &[Value]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("statement.pdf");
    std::fs::write(&path, pdf).unwrap();
    match std::process::Command::new("qpdf")
        .arg("--check")
        .arg(&path)
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "qpdf: {}",
            String::from_utf8_lossy(&out.stdout)
        ),
        Err(_) => eprintln!("qpdf not installed: structure not checked"),
    }
    let out = match std::process::Command::new("pdftotext")
        .args(["-layout", "-enc", "UTF-8"])
        .arg(&path)
        .arg("-")
        .output()
    {
        Ok(out) => out,
        Err(_) => {
            eprintln!("pdftotext not installed: text not checked");
            return;
        }
    };
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Relevé de compte - mai 2024"), "{text}");
    assert!(text.contains("Solde au 01/05/2024"), "{text}");
    assert!(text.contains("Nouveau solde au 31/05/2024"), "{text}");
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.len() > 10 && l.as_bytes()[2] == b'/' && l.as_bytes()[5] == b'/')
        .collect();
    assert_eq!(lines.len(), rows.len(), "{text}");
    // Oldest first on paper, newest first in the API.
    for (line, row) in lines.iter().zip(rows.iter().rev()) {
        let date = booking_date(row).format("%d/%m/%Y").to_string();
        assert!(line.starts_with(&date), "{line} vs {row}");
        assert!(line.contains(s(&row["label"])), "{line} vs {row}");
        let c = cents(&row["amount"]["value"]);
        let amount = format!(
            "{}{},{:02}",
            if c < 0 { "-" } else { "" },
            c.abs() / 100,
            c.abs() % 100
        );
        assert!(line.ends_with(&amount), "{line} vs {amount}");
    }
}

#[tokio::test]
async fn bad_inputs_get_json_400s() {
    let sb = sandbox(9).await;
    let c = Client::new(&sb);
    let (ct, _) = c.contract(&sb, 0).await;
    let token = s(&ct["accessToken"]).to_owned();
    let login = c.login_ok(&sb).await;
    let login_token = s(&login["accessToken"]).to_owned();
    let (_, contract_id) = c.contract(&sb, 0).await;
    let acct = c.accounts(&token, &contract_id).await.remove(0);
    let ext = s(&acct["external_id"]).to_owned();
    let int = s(&acct["internal_id"]).to_owned();
    let root = sb.root_url();
    let base = sb.keypad_base_url();

    let login_body = |f: &dyn Fn(&mut Value)| {
        let mut v = json!({"callingUrl": "/connexion", "clientTimestamp": 1, "encryptedIdentifier": false,
            "identifier": "1", "keypad": "030303939303", "sessionId": "1"});
        f(&mut v);
        v.to_string()
    };
    let cases: Vec<(&str, String, Option<&str>, String)> = vec![
        ("POST", format!("{base}/api/login"), None, "not json".into()),
        ("POST", format!("{base}/api/login"), None, "[1,2]".into()),
        ("POST", format!("{base}/api/login"), None, "{}".into()),
        (
            "POST",
            format!("{base}/api/login"),
            None,
            login_body(&|v| {
                v.as_object_mut().unwrap().remove("keypad");
            }),
        ),
        (
            "POST",
            format!("{base}/api/login"),
            None,
            login_body(&|v| v["clientTimestamp"] = json!("x")),
        ),
        (
            "POST",
            format!("{base}/api/login"),
            None,
            login_body(&|v| v["encryptedIdentifier"] = json!(true)),
        ),
        (
            "POST",
            format!("{base}/api/login"),
            None,
            login_body(&|v| v["sessionId"] = json!("abc")),
        ),
        (
            "POST",
            format!("{base}/api/login"),
            None,
            login_body(&|v| v["keypad"] = json!("zz")),
        ),
        (
            "POST",
            format!("{base}/api/login"),
            None,
            login_body(&|v| v["keypad"] = json!("é")),
        ),
        (
            "POST",
            format!("{base}/api/login/contract"),
            Some(&login_token),
            "{\"clientTimestamp\":1,\"contractId\":\"nope\"}".into(),
        ),
        (
            "POST",
            format!("{base}/api/login/contract"),
            Some(&login_token),
            "{\"contractId\":\"nope\"}".into(),
        ),
        ("POST", format!("{base}/api/login/refresh"), None, "".into()),
        (
            "POST",
            format!("{base}/api/login/refresh"),
            None,
            "{\"refreshToken\":5}".into(),
        ),
        (
            "GET",
            format!("{base}/api/user/accounts?type=current"),
            Some(&token),
            String::new(),
        ),
        (
            "GET",
            format!("{base}/api/user/accounts?contract_id=abc"),
            Some(&token),
            String::new(),
        ),
        (
            "GET",
            format!(
                "{base}/api/user/accounts?contract_id={}&include_aggregate_account=maybe",
                short_id(&contract_id)
            ),
            Some(&token),
            String::new(),
        ),
        (
            "GET",
            format!("{base}/api/user/{ext}/transactions?contract_id={int}&range=5-2"),
            Some(&token),
            String::new(),
        ),
        (
            "GET",
            format!("{base}/api/user/{ext}/transactions?contract_id={int}&range=x"),
            Some(&token),
            String::new(),
        ),
        (
            "GET",
            format!("{base}/api/user/{ext}/transactions?contract_id={int}&range=0-100"),
            Some(&token),
            String::new(),
        ),
        (
            "GET",
            format!("{base}/api/user/{ext}/transactions?contract_id={int}&range=-1-5"),
            Some(&token),
            String::new(),
        ),
        (
            "GET",
            format!(
                "{base}/api/user/{ext}/transactions?contract_id={int}&range=0-99999999999999999999999"
            ),
            Some(&token),
            String::new(),
        ),
        (
            "GET",
            format!("{base}/api/user/{ext}/transactions?contract_id={int}"),
            Some(&token),
            String::new(),
        ),
        (
            "GET",
            format!("{base}/api/user/{ext}/transactions?range=0-9"),
            Some(&token),
            String::new(),
        ),
        (
            "GET",
            format!("{base}/api/user/{ext}/transactions?contract_id=wrong&range=0-9"),
            Some(&token),
            String::new(),
        ),
        (
            "GET",
            format!("{base}/api/user/no-such-account/transactions?contract_id={int}&range=0-9"),
            Some(&token),
            String::new(),
        ),
        (
            "GET",
            format!("{base}/api/user/%FF%FE/transactions?contract_id={int}&range=0-9"),
            Some(&token),
            String::new(),
        ),
        (
            "GET",
            format!("{base}/api/user/documents/download"),
            Some(&token),
            String::new(),
        ),
        (
            "POST",
            format!("{root}/_sandbox/keypad/advance"),
            None,
            "{\"days\":-1}".into(),
        ),
        (
            "POST",
            format!("{root}/_sandbox/keypad/advance"),
            None,
            "{\"days\":\"x\"}".into(),
        ),
        (
            "POST",
            format!("{root}/_sandbox/keypad/advance"),
            None,
            "{\"days\":99999}".into(),
        ),
        (
            "POST",
            format!("{root}/_sandbox/keypad/config"),
            None,
            "{\"autoApprove\":\"yes\"}".into(),
        ),
        (
            "POST",
            format!("{root}/_sandbox/keypad/config"),
            None,
            "{\"colour\":1}".into(),
        ),
        (
            "POST",
            format!("{root}/_sandbox/keypad/approve"),
            None,
            "not json".into(),
        ),
        (
            "POST",
            format!("{root}/_sandbox/keypad/approve"),
            None,
            "{\"requestId\":7}".into(),
        ),
    ];
    for (method, url, bearer, body) in cases {
        let mut req = match method {
            "GET" => c.http.get(&url),
            _ => c.http.post(&url).body(body.clone()),
        };
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{method} {url} {body}: {text}"
        );
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        assert!(v["code"].is_string() && v["message"].is_string(), "{v}");
    }

    // Unknown routes, wrong methods, missing tokens: JSON too.
    let r = c
        .http
        .get(format!("{base}/api/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "NOT_FOUND");
    let r = c
        .http
        .get(format!("{base}/api/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.json::<Value>().await.unwrap()["code"].is_string());
    let r = c
        .http
        .get(format!("{base}/api/user/documents/documents"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "TOKEN_INVALID");
    let (status, body) = c.get("api/auth/2fa/unknown", &token).await;
    assert_eq!(
        (status, s(&body["code"])),
        (StatusCode::NOT_FOUND, "REQUEST_NOT_FOUND")
    );
    let (status, body) = c.control("approve", &json!({"requestId": "unknown"})).await;
    assert_eq!(
        (status, s(&body["code"])),
        (StatusCode::NOT_FOUND, "REQUEST_NOT_FOUND")
    );
    // A contract token cannot open contracts.
    let (status, body) = c
        .post(
            "api/login/contract",
            Some(&token),
            &json!({"clientTimestamp": 1, "contractId": short_id(&contract_id)}),
        )
        .await;
    assert_eq!(
        (status, s(&body["code"])),
        (StatusCode::FORBIDDEN, "LOGIN_TOKEN_REQUIRED")
    );
    sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn credentials_and_fibank_unchanged() {
    let sb = sandbox(10).await;
    let c = Client::new(&sb);
    let creds = c.control_get("credentials").await;
    let mine = sb.keypad().credentials();
    assert_eq!(creds["identifier"], mine.identifier.as_str());
    assert_eq!(creds["pin"], mine.pin.as_str());
    assert_eq!(creds["baseUrl"], sb.keypad_base_url().as_str());
    assert_eq!(mine.base_url, sb.keypad_base_url());
    assert_eq!(mine.identifier.len(), 11);
    assert!(!format!("{mine:?}").contains(&mine.pin));
    // Fibank still answers where it did.
    let r = reqwest::get(format!("{}/_sandbox/fibank/credentials", sb.root_url()))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(sb.truth().len(), 3);
    // Same seed, same bank.
    let twin = sandbox(10).await;
    assert_eq!(twin.keypad().credentials().identifier, mine.identifier);
    assert_eq!(twin.keypad().truth(), sb.keypad().truth());
    assert_eq!(keypad::PREFIX, "/keypad");
    sb.shutdown().await.unwrap();
    twin.shutdown().await.unwrap();
}
