//! The Klarna-like XS2A playground over loopback HTTP, driven the way the
//! story's Playwright spec drives the real one (same 11 requests, bodies and
//! headers, hosts swapped for the sandbox's prefix), with the browser
//! client's encryption (JSBN RSA, CryptoJS AES) written here from the
//! description of the scheme, independently of the server's code.
use aes::cipher::{BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
use bankbridge_sandbox::{SandboxConfig, SandboxHandle};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use reqwest::StatusCode;
use rsa::BigUint;
use serde_json::{Value, json};

const PSU_UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/80.0.3987.122 Safari/537.36";
const PSU_IP: &str = "10.20.30.40";

async fn sandbox() -> SandboxHandle {
    bankbridge_sandbox::spawn(SandboxConfig {
        accounts: 1,
        transactions: 20,
        years: 1,
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox starts")
}

// --- The browser client (functions.js + jsbn.js), re-implemented. ---

/// `findModAndExp`: split the JWT, base64url → base64, pad, JSON-parse the
/// payload; take the hex `modulus` and `exponent`. No signature check.
fn mod_and_exp(jwt: &str) -> (String, String) {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "the form key is a JWT");
    let mut b64 = parts[1].replace('-', "+").replace('_', "/");
    while !b64.len().is_multiple_of(4) {
        b64.push('=');
    }
    let payload: Value = serde_json::from_slice(&STANDARD.decode(b64).unwrap()).unwrap();
    (
        payload["modulus"].as_str().expect("modulus").to_owned(),
        payload["exponent"].as_str().expect("exponent").to_owned(),
    )
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// JSBN `RSAKey.encrypt`: `pkcs1pad2` (`00 02 <nonzero random> 00 <text>`),
/// `m^e mod n`, then `toString(16)` made even-length, not padded to the
/// modulus length (so about 1 in 256 results is a byte short).
fn jsbn_encrypt(n_hex: &str, e_hex: &str, text: &str) -> String {
    let n = BigUint::parse_bytes(n_hex.as_bytes(), 16).expect("hex modulus");
    let e = BigUint::from(u64::from_str_radix(e_hex, 16).expect("hex exponent"));
    let k = n.bits().div_ceil(8);
    let msg = text.as_bytes();
    assert!(msg.len() + 11 <= k, "message too long for RSA");
    let mut block = vec![0u8; k];
    block[1] = 2;
    let ps = k - 3 - msg.len();
    let mut rng = rand::rng();
    for b in &mut block[2..2 + ps] {
        while *b == 0 {
            *b = (rng.next_u32() & 0xff) as u8;
        }
    }
    block[3 + ps..].copy_from_slice(msg);
    let c = BigUint::from_bytes_be(&block).modpow(&e, &n);
    let h = c.to_str_radix(16);
    if h.len().is_multiple_of(2) {
        h
    } else {
        format!("0{h}")
    }
}

/// How `ek` is made.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ek {
    /// Whatever JSBN gives (usually full length).
    Jsbn,
    /// Retry until JSBN gives a ciphertext one byte short of the modulus.
    Short,
}

/// `encrypt(publicKey, plainText)`: CryptoJS AES-256-CBC/PKCS#7 with a
/// random hex key and iv (standard base64, no salt), the key's 64 hex
/// characters RSA-encrypted and turned hex → base64.
fn encrypt(jwt: &str, plain: &str, ek: Ek) -> Value {
    let (n, e) = mod_and_exp(jwt);
    let iv = random_hex(16);
    let key_hex = random_hex(32);
    let key: [u8; 32] = hex::decode(&key_hex).unwrap().try_into().unwrap();
    let ivb: [u8; 16] = hex::decode(&iv).unwrap().try_into().unwrap();
    let ct = cbc::Encryptor::<aes::Aes256>::new(&key.into(), &ivb.into())
        .encrypt_padded_vec_mut::<Pkcs7>(plain.as_bytes());
    let full = n.len().div_ceil(2) * 2;
    let mut rsa_hex = jsbn_encrypt(&n, &e, &key_hex);
    if ek == Ek::Short {
        // About 1 in 256 ciphertexts is a byte short, and 1 in 65,536 two
        // bytes: wait for exactly one byte short (the case JSBN clients hit).
        let mut tries = 0;
        while rsa_hex.len() != full - 2 {
            tries += 1;
            assert!(tries < 50_000, "no short ciphertext in 50,000 tries");
            rsa_hex = jsbn_encrypt(&n, &e, &key_hex);
        }
    }
    json!({
        "ct": STANDARD.encode(ct),
        "iv": iv,
        "ek": STANDARD.encode(hex::decode(rsa_hex).unwrap()),
    })
}

// --- HTTP, as the spec sends it. ---

struct Client {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT` (both playground hosts map here).
    root: String,
    /// `…/xs2a-playground`: AUTH and API of the spec.
    base: String,
    token: String,
}

async fn json_of(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    let ct = r
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = r.text().await.unwrap();
    assert!(
        ct.starts_with("application/json"),
        "{status}: not JSON: {text}"
    );
    (status, serde_json::from_str(&text).expect("JSON body"))
}

impl Client {
    async fn new(sb: &SandboxHandle) -> Client {
        let http = reqwest::Client::new();
        let root = sb.root_url();
        let creds: Value = http
            .get(format!("{root}/_sandbox/xs2a-playground/credentials"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Client {
            http,
            base: format!("{root}/xs2a-playground"),
            root,
            token: creds["api_token"].as_str().unwrap().to_owned(),
        }
    }

    fn auth(&self) -> String {
        format!("Token {}", self.token)
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
        auth: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, url)
            .header("Content-Type", "application/json");
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        json_of(req.send().await.unwrap()).await
    }

    async fn put(&self, url: &str, body: &Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::PUT, url, Some(body), Some(&self.auth()))
            .await
    }

    async fn post(&self, url: &str, body: &Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, url, Some(body), Some(&self.auth()))
            .await
    }

    async fn get(&self, url: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, url, None, Some(&self.auth()))
            .await
    }

    /// `sendEncryptedResponse`: axios POST of the JSON-stringified envelope
    /// to `last.next`, with `Token <auth_token>` (`Token undefined` in #8).
    async fn send_encrypted(
        &self,
        last: &Value,
        form: &str,
        auth: &str,
        ek: Ek,
    ) -> (StatusCode, Value) {
        let envelope = encrypt(
            last["result"]["key"].as_str().expect("result.key"),
            form,
            ek,
        );
        let next = last["next"].as_str().expect("next URL");
        self.send(reqwest::Method::POST, next, Some(&envelope), Some(auth))
            .await
    }
}

fn start_session_body() -> Value {
    json!({
        "language": "en",
        "_selected_bank": {"bank_code": "000000", "country_code": "GB"},
        "psu": {"ip_address": PSU_IP, "user_agent": PSU_UA},
        "consent_scope": {
            "accounts": {},
            "account_details": {},
            "balances": {},
            "transactions": {},
            "transfer": {},
            "_insights_refresh": {},
            "lifetime": 30,
        },
        "_aspsp_access": "prefer_psd2",
        "_redirect_return_url": "http://test/auth",
        "keys": {"hsm": "--- xxx ---", "aspsp_data": "--- xxx ---"},
    })
}

fn transport_form(form_identifier: &Value) -> String {
    json!({
        "form_identifier": form_identifier,
        "data": [{"key": "interface", "value": "de_testbank_bias"}],
    })
    .to_string()
}

fn credentials_form(form_identifier: &Value, user: &str, password: &str) -> String {
    json!({
        "form_identifier": form_identifier,
        "data": [
            {"key": "bias.apis.forms.elements.UsernameElement", "value": user},
            {"key": "bias.apis.forms.elements.PasswordElement", "value": password},
        ],
    })
    .to_string()
}

fn account_form(form_identifier: &Value, account: &Value) -> String {
    json!({
        "form_identifier": form_identifier,
        "data": [{"key": "account_id", "value": account}],
    })
    .to_string()
}

fn consent_body(token: &Value, account: &Value) -> Value {
    json!({
        "consent_token": token,
        "account_id": account,
        "psu": {"ip_address": PSU_IP, "user_agent": PSU_UA},
        "keys": {"hsm": "", "aspsp_data": ""},
    })
}

/// Where a run stopped: the request number and its answer.
#[derive(Debug)]
struct Stop {
    request: u8,
    status: StatusCode,
    body: Value,
}

/// What a finished run read.
#[derive(Debug)]
struct Outcome {
    /// consent_token of #9, #10 and #11.
    tokens: [Value; 3],
    account_details_url: String,
    balances_url: String,
    account_id: Value,
    amount: f64,
}

/// The whole flow (8 steps, 11 requests) as the spec runs it; `short`
/// lists the encrypted requests (5, 6, 8) that must send a short `ek`.
async fn run(c: &Client, short: &[u8]) -> Result<Outcome, Stop> {
    let ek = |n: u8| {
        if short.contains(&n) {
            Ek::Short
        } else {
            Ek::Jsbn
        }
    };
    let ok = |request: u8, (status, body): (StatusCode, Value)| {
        if status == StatusCode::OK {
            assert!(body["data"].is_object(), "#{request}: {body}");
            Ok(body["data"].clone())
        } else {
            Err(Stop {
                request,
                status,
                body,
            })
        }
    };
    let absolute = |url: &Value| {
        let u = url.as_str().expect("a URL");
        assert!(u.starts_with(&c.base), "{u} is not under {}", c.base);
        u.to_owned()
    };
    let base = &c.base;

    // 1 Start Session
    let d = ok(
        1,
        c.put(&format!("{base}/xs2a/v1/sessions"), &start_session_body())
            .await,
    )?;
    let session_id = d["session_id"].as_str().expect("session_id").to_owned();
    assert!(!session_id.is_empty());

    // 2 Start Account Details Flow
    let d = ok(
        2,
        c.put(
            &format!("{base}/xs2a/v1/sessions/{session_id}/flows/account-details"),
            &json!({"account_id": "", "iban": "", "keys": {"hsm": "", "aspsp_data": ""}}),
        )
        .await,
    )?;
    let flow_id = d["flow_id"].as_str().expect("flow_id").to_owned();
    assert_eq!(d["client_token"], "", "client_token is empty");

    // 3 Select Test Bank (Germany)
    let wizard = format!("{base}/branded/xs2a/v1/wizard/{flow_id}");
    ok(
        3,
        c.post(
            &wizard,
            &json!({"bank_code": "00000", "country_code": "DE", "keys": {"hsm": "", "aspsp_data": ""}}),
        )
        .await,
    )?;

    // 4 Get Flow Configuration
    let config = ok(4, c.get(&wizard).await)?;
    let fid = &config["result"]["form"]["form_identifier"];
    assert!(fid.is_string(), "{config}");
    absolute(&config["next"]);

    // 5 (encrypted) transport
    let transport = ok(
        5,
        c.send_encrypted(&config, &transport_form(fid), &c.auth(), ek(5))
            .await,
    )?;
    absolute(&transport["next"]);

    // 6 (encrypted) credentials
    let fid = &transport["result"]["form"]["form_identifier"];
    let login = ok(
        6,
        c.send_encrypted(
            &transport,
            &credentials_form(fid, "redirect", "123456"),
            &c.auth(),
            ek(6),
        )
        .await,
    )?;
    assert_eq!(login["result"]["context"], "authentication", "{login}");
    let redirect_url = format!(
        "{}&result=success",
        login["result"]["redirect"]["url"].as_str().unwrap()
    );
    let redirect_id = login["result"]["redirect"]["id"].clone();

    // 7 Complete Flow
    let complete = ok(
        7,
        c.post(
            &wizard,
            &json!({"redirect_id": redirect_id, "return_url": redirect_url, "keys": {"hsm": "", "aspsp_data": ""}}),
        )
        .await,
    )?;
    let accounts = complete["result"]["form"]["elements"][0]["options"]
        .as_array()
        .expect("account options")
        .clone();
    assert!(!accounts.is_empty());
    let first = &accounts[0];
    assert!(first["label"].is_string());

    // 8 (encrypted) select account, with `Token undefined`
    let fid = &complete["result"]["form"]["form_identifier"];
    let selected = ok(
        8,
        c.send_encrypted(
            &complete,
            &account_form(fid, &first["value"]),
            "Token undefined",
            ek(8),
        )
        .await,
    )?;
    assert_eq!(selected["state"], "FINISHED");

    // 9 Get Consent
    let consent = ok(
        9,
        c.post(
            &format!("{base}/xs2a/v1/sessions/{session_id}/consent/get"),
            &json!({"keys": {"hsm": "--- xxx ---", "aspsp_data": "--- xxx ---"}}),
        )
        .await,
    )?;
    let balances_url = absolute(&consent["consents"]["balances"]);
    let account_details_url = absolute(&consent["consents"]["account_details"]);
    let t9 = consent["consent_token"].clone();
    assert!(t9.is_string());

    // 10 Get Account Details
    let details = ok(
        10,
        c.post(&account_details_url, &consent_body(&t9, &first["value"]))
            .await,
    )?;
    let t10 = details["consent_token"].clone();
    assert!(t10.is_string());
    assert_ne!(t10, t9, "the consent token rotates");
    let account_id = details["result"]["account"]["id"].clone();
    assert_eq!(account_id, first["value"]);

    // 11 Get Account Balance
    let balance = ok(
        11,
        c.post(&balances_url, &consent_body(&t10, &account_id))
            .await,
    )?;
    let t11 = balance["consent_token"].clone();
    assert!(t11.is_string());
    assert_ne!(t11, t10);
    let amount = balance["result"]["available"]["amount"]
        .as_f64()
        .expect("a number");
    assert!(amount >= 0.0);
    assert_eq!(balance["result"]["available"]["currency"], "EUR");
    Ok(Outcome {
        tokens: [t9, t10, t11],
        account_details_url,
        balances_url,
        account_id,
        amount,
    })
}

async fn set_fail(c: &Client, body: Value) -> (StatusCode, Value) {
    c.send(
        reqwest::Method::POST,
        &format!("{}/_sandbox/xs2a-playground/fail", c.root),
        Some(&body),
        None,
    )
    .await
}

/// A run up to the wizard's first form (requests 1–4): (session, flow, #4 data).
async fn up_to_form(c: &Client) -> (String, String, Value) {
    let (s, d) = c
        .put(
            &format!("{}/xs2a/v1/sessions", c.base),
            &start_session_body(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    let sid = d["data"]["session_id"].as_str().unwrap().to_owned();
    let (s, d) = c
        .put(
            &format!("{}/xs2a/v1/sessions/{sid}/flows/account-details", c.base),
            &json!({"account_id": "", "iban": "", "keys": {"hsm": "", "aspsp_data": ""}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    let flow = d["data"]["flow_id"].as_str().unwrap().to_owned();
    let wizard = format!("{}/branded/xs2a/v1/wizard/{flow}", c.base);
    let (s, d) = c
        .post(
            &wizard,
            &json!({"bank_code": "00000", "country_code": "DE"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    let (s, d) = c.get(&wizard).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    (sid, flow, d["data"].clone())
}

/// Requests 1–5: up to the credentials form.
async fn up_to_credentials(c: &Client) -> (String, String, Value) {
    let (sid, flow, config) = up_to_form(c).await;
    let fid = &config["result"]["form"]["form_identifier"];
    let (s, d) = c
        .send_encrypted(&config, &transport_form(fid), &c.auth(), Ek::Jsbn)
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    (sid, flow, d["data"].clone())
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn the_story_flow_passes_and_the_consent_token_rotates() {
    let sb = sandbox().await;
    let c = Client::new(&sb).await;
    let (s, creds) = c
        .send(
            reqwest::Method::GET,
            &format!("{}/_sandbox/xs2a-playground/credentials", c.root),
            None,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(creds["username"], "redirect");
    assert_eq!(creds["password"], "123456");
    assert_eq!(creds["base_url"], c.base.as_str());
    assert_eq!(
        creds["api_token"].as_str(),
        Some(
            sb.state()
                .xs2a_playground()
                .credentials()
                .api_token
                .as_str()
        )
    );

    let out = run(&c, &[]).await.expect("the story's run passes");
    let first = &sb.state().xs2a_playground().accounts()[0];
    assert_eq!(out.account_id, first.id.as_str());
    assert_eq!(out.amount, first.available as f64);
    let [t9, t10, t11] = &out.tokens;

    // A used token is refused, on either consent URL; nothing rotates then.
    for used in [t9, t10] {
        for url in [&out.balances_url, &out.account_details_url] {
            let (s, b) = c.post(url, &consent_body(used, &out.account_id)).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
            assert_eq!(code(&b), "CONSENT_TOKEN_USED");
        }
    }
    let (s, b) = c
        .post(
            &out.balances_url,
            &consent_body(&json!("made-up"), &out.account_id),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(code(&b), "CONSENT_TOKEN_INVALID");
    // The newest one works once more and rotates again.
    let (s, b) = c
        .post(&out.balances_url, &consent_body(t11, &out.account_id))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let t12 = b["data"]["consent_token"].clone();
    assert_ne!(&t12, t11);
    let (s, b) = c
        .post(
            &out.account_details_url,
            &consent_body(t11, &out.account_id),
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::FORBIDDEN, "CONSENT_TOKEN_USED"));

    // A second run on the same sandbox is independent.
    let again = run(&c, &[]).await.expect("a second run passes");
    assert_ne!(again.tokens[0], out.tokens[0]);

    let (s, stats) = c
        .send(
            reqwest::Method::GET,
            &format!("{}/_sandbox/xs2a-playground/stats", c.root),
            None,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(stats["sessions_created"], 2);
    assert_eq!(stats["flows_finished"], 2);
    assert_eq!(stats["consents_issued"], 2);
    assert_eq!(stats["requests"]["1"], 2);
    assert_eq!(stats["requests"]["8"], 2);
    // Two runs, plus the extra balance calls: 2 used tokens, 1 made-up, 1 good.
    assert_eq!(stats["requests"]["11"], 2 + 2 + 1 + 1);
    assert_eq!(stats["requests"]["10"], 2 + 2 + 1);
}

#[tokio::test]
async fn a_short_ek_is_accepted_on_every_encrypted_request() {
    let sb = sandbox().await;
    let c = Client::new(&sb).await;
    run(&c, &[5, 6, 8])
        .await
        .expect("short (JSBN) ek values are left-padded by the server");
}

#[tokio::test]
async fn the_api_token_is_required_except_on_next_urls() {
    let sb = sandbox().await;
    let c = Client::new(&sb).await;
    let sessions = format!("{}/xs2a/v1/sessions", c.base);
    let body = start_session_body();
    let wrong = format!("Token {}x", c.token);
    let bearer = format!("Bearer {}", c.token);
    for auth in [
        None,
        Some("Token undefined"),
        Some(wrong.as_str()),
        Some(bearer.as_str()),
    ] {
        let (s, b) = c
            .send(reqwest::Method::PUT, &sessions, Some(&body), auth)
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{auth:?}: {b}");
        assert_eq!(code(&b), "UNAUTHORIZED");
    }

    let (sid, flow, config) = up_to_form(&c).await;
    let wizard = format!("{}/branded/xs2a/v1/wizard/{flow}", c.base);
    let no_auth = [
        (
            reqwest::Method::PUT,
            format!("{sessions}/{sid}/flows/account-details"),
            Some(json!({})),
        ),
        (
            reqwest::Method::POST,
            wizard.clone(),
            Some(json!({"bank_code": "00000", "country_code": "DE"})),
        ),
        (reqwest::Method::GET, wizard.clone(), None),
        (
            reqwest::Method::POST,
            wizard.clone(),
            Some(json!({"redirect_id": "x", "return_url": "http://x/?result=success"})),
        ),
        (
            reqwest::Method::POST,
            format!("{sessions}/{sid}/consent/get"),
            Some(json!({"keys": {}})),
        ),
    ];
    for (method, url, body) in no_auth {
        let (s, b) = c.send(method.clone(), &url, body.as_ref(), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {url}: {b}");
    }

    // The encrypted `next` post takes no token at all.
    let fid = &config["result"]["form"]["form_identifier"];
    let envelope = encrypt(
        config["result"]["key"].as_str().unwrap(),
        &transport_form(fid),
        Ek::Jsbn,
    );
    let (s, b) = c
        .send(
            reqwest::Method::POST,
            config["next"].as_str().unwrap(),
            Some(&envelope),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");

    // Consent calls need it too, and a refused call does not burn the token.
    let out = run(&c, &[]).await.expect("run");
    let body = consent_body(&out.tokens[2], &out.account_id);
    let (s, _) = c
        .send(reqwest::Method::POST, &out.balances_url, Some(&body), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, b) = c
        .send(
            reqwest::Method::POST,
            &out.account_details_url,
            Some(&body),
            Some("Token nope"),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    let (s, b) = c.post(&out.balances_url, &body).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

#[tokio::test]
async fn an_injected_failure_hits_exactly_that_request_of_the_next_run() {
    let sb = sandbox().await;
    let c = Client::new(&sb).await;
    for n in 1..=11u8 {
        let (s, b) = set_fail(&c, json!({"request": n})).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["plan"]["request"], n);
        let stop = run(&c, &[]).await.expect_err("the run fails");
        assert_eq!(stop.request, n, "{stop:?}");
        assert_eq!(stop.status, StatusCode::SERVICE_UNAVAILABLE, "{stop:?}");
        assert_eq!(code(&stop.body), "SANDBOX_INJECTED_FAILURE");
        assert_eq!(stop.body["error"]["injected"], true);
        assert_eq!(stop.body["error"]["request"], n);
        assert!(message(&stop.body).contains("injected"), "{stop:?}");
        // Consumed by that run: the next one passes.
        let (_, plan) = c
            .send(
                reqwest::Method::GET,
                &format!("{}/_sandbox/xs2a-playground/fail", c.root),
                None,
                None,
            )
            .await;
        assert_eq!(plan["plan"], Value::Null);
        run(&c, &[])
            .await
            .unwrap_or_else(|e| panic!("the run after the injected {n} passes: {e:?}"));
    }
}

#[tokio::test]
async fn failure_plans_last_k_runs_or_until_cleared() {
    let sb = sandbox().await;
    let c = Client::new(&sb).await;
    for bad in [
        json!({"request": 12}),
        json!({"request": -1}),
        json!({"request": "3"}),
        json!({"request": 3, "runs": 0}),
        json!({"request": 3, "persist": "yes"}),
        json!({}),
    ] {
        let (s, b) = set_fail(&c, bad.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {b}");
    }

    set_fail(&c, json!({"request": 4, "runs": 2})).await;
    for _ in 0..2 {
        let stop = run(&c, &[]).await.expect_err("fails");
        assert_eq!(
            (stop.request, stop.status),
            (4, StatusCode::SERVICE_UNAVAILABLE)
        );
    }
    run(&c, &[]).await.expect("third run passes");

    set_fail(&c, json!({"request": 9, "persist": true})).await;
    for _ in 0..3 {
        let stop = run(&c, &[]).await.expect_err("fails");
        assert_eq!(
            (stop.request, stop.status),
            (9, StatusCode::SERVICE_UNAVAILABLE)
        );
    }
    let (s, b) = set_fail(&c, json!({"request": 0})).await;
    assert_eq!((s, &b["plan"]), (StatusCode::OK, &Value::Null));
    run(&c, &[]).await.expect("cleared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_runs_keep_their_own_injected_failures() {
    let sb = sandbox().await;
    let c = std::sync::Arc::new(Client::new(&sb).await);
    set_fail(&c, json!({"request": 6, "runs": 3})).await;
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { run(&c, &[]).await })
        })
        .collect();
    let mut failed = Vec::new();
    let mut passed = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => passed += 1,
            Err(stop) => failed.push(stop),
        }
    }
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert_eq!(passed, 29);
    for stop in failed {
        assert_eq!(
            (stop.request, stop.status),
            (6, StatusCode::SERVICE_UNAVAILABLE)
        );
    }
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_three_abort_the_flow() {
    let sb = sandbox().await;
    let c = Client::new(&sb).await;
    let (_, flow, form) = up_to_credentials(&c).await;
    let fid = form["result"]["form"]["form_identifier"].clone();
    let (s, b) = c
        .send_encrypted(
            &form,
            &credentials_form(&fid, "redirect", "654321"),
            &c.auth(),
            Ek::Jsbn,
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_eq!(code(&b), "INVALID_CREDENTIALS");
    assert_eq!(b["error"]["attempts_left"], 2);
    assert_ne!(b["data"]["result"]["context"], "authentication");
    // The form comes back and can be answered again, rightly this time.
    let again = b["data"].clone();
    assert_eq!(again["result"]["form"]["form_identifier"], fid);
    let (s, b) = c
        .send_encrypted(
            &again,
            &credentials_form(&fid, "redirect", "123456"),
            &c.auth(),
            Ek::Jsbn,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["data"]["result"]["context"], "authentication");
    assert!(
        b["data"]["result"]["redirect"]["url"]
            .as_str()
            .unwrap()
            .contains('?')
    );

    // Three wrong logins in a row abort the flow.
    let (_, flow2, form) = up_to_credentials(&c).await;
    assert_ne!(flow, flow2);
    let fid = form["result"]["form"]["form_identifier"].clone();
    for (user, left) in [("redirect", 2), ("someone", 1)] {
        let (s, b) = c
            .send_encrypted(
                &form,
                &credentials_form(&fid, user, "000000"),
                &c.auth(),
                Ek::Jsbn,
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
        assert_eq!(b["error"]["attempts_left"], left);
    }
    let (s, b) = c
        .send_encrypted(
            &form,
            &credentials_form(&fid, "redirect", "1"),
            &c.auth(),
            Ek::Jsbn,
        )
        .await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::FORBIDDEN, "LOGIN_LOCKED"),
        "{b}"
    );
    let (s, b) = c
        .send_encrypted(
            &form,
            &credentials_form(&fid, "redirect", "123456"),
            &c.auth(),
            Ek::Jsbn,
        )
        .await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::CONFLICT, "NO_FORM_PENDING"),
        "{b}"
    );
    let (s, b) = c
        .get(&format!("{}/branded/xs2a/v1/wizard/{flow2}", c.base))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["data"]["state"], "ABORTED");
}

#[tokio::test]
async fn bad_envelopes_get_400_naming_the_problem() {
    let sb = sandbox().await;
    let c = Client::new(&sb).await;
    let (_, _, config) = up_to_form(&c).await;
    let jwt = config["result"]["key"].as_str().unwrap();
    let next = config["next"].as_str().unwrap();
    let fid = config["result"]["form"]["form_identifier"].clone();
    let good = encrypt(jwt, &transport_form(&fid), Ek::Jsbn);
    let (n, e) = mod_and_exp(jwt);

    let with = |field: &str, v: Value| {
        let mut env = good.clone();
        env[field] = v;
        env
    };
    let without = |field: &str| {
        let mut env = good.clone();
        env.as_object_mut().unwrap().remove(field);
        env
    };
    // ek carrying the raw 32 key bytes instead of their 64 hex characters.
    let raw_key = {
        let hex_key = hex::decode(jsbn_encrypt(&n, &e, &"\u{7f}".repeat(32))).unwrap();
        STANDARD.encode(hex_key)
    };
    // A well-formed envelope around a form for another form_identifier.
    let other_form = encrypt(jwt, &transport_form(&json!("not-this-form")), Ek::Jsbn);
    let not_json = encrypt(jwt, "interface=de_testbank_bias", Ek::Jsbn);
    // ct from one envelope, ek from another: the AES key is wrong.
    let mut wrong_key = good.clone();
    wrong_key["ek"] = encrypt(jwt, "{}", Ek::Jsbn)["ek"].clone();

    let cases: Vec<(Value, &str, &str)> = vec![
        (json!("just a string"), "INVALID_ENVELOPE", "JSON object"),
        (without("ek"), "INVALID_ENVELOPE", "ek"),
        (
            with("iv", json!("00ff")),
            "INVALID_ENVELOPE",
            "iv must be 32 hex",
        ),
        (
            with("iv", json!("zz".repeat(16))),
            "INVALID_ENVELOPE",
            "iv must be 32 hex",
        ),
        (
            with("ct", json!("%%%not base64")),
            "INVALID_ENVELOPE",
            "ct is not base64",
        ),
        (
            with("ct", json!(STANDARD.encode([1u8; 15]))),
            "INVALID_ENVELOPE",
            "16-byte",
        ),
        (
            with("ek", json!("???")),
            "INVALID_ENVELOPE",
            "ek is not base64",
        ),
        (
            with("ek", json!(STANDARD.encode([1u8; 300]))),
            "INVALID_ENVELOPE",
            "modulus",
        ),
        (
            with("ek", json!(STANDARD.encode([1u8; 256]))),
            "INVALID_ENVELOPE",
            "does not decrypt",
        ),
        (
            with("ek", json!(raw_key)),
            "INVALID_ENVELOPE",
            "64 ASCII hex",
        ),
        (wrong_key, "INVALID_ENVELOPE", ""),
        (not_json, "INVALID_ENVELOPE", "not JSON"),
        (other_form, "FORM_MISMATCH", "not-this-form"),
    ];
    for (body, want_code, want_text) in cases {
        let (s, b) = c
            .send(
                reqwest::Method::POST,
                next,
                Some(&body),
                Some("Token undefined"),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {b}");
        assert_eq!(code(&b), want_code, "{b}");
        assert!(message(&b).contains(want_text), "{want_text:?} not in {b}");
    }
    // A body that is not JSON at all.
    let r = c
        .http
        .post(next)
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (s, b) = json_of(r).await;
    assert_eq!((s, code(&b)), (StatusCode::BAD_REQUEST, "INVALID_ENVELOPE"));

    // None of that moved the flow: the right envelope still works.
    let (s, b) = c
        .send(
            reqwest::Method::POST,
            next,
            Some(&good),
            Some("Token undefined"),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        b["data"]["result"]["form"]["elements"][0]["key"],
        "bias.apis.forms.elements.UsernameElement"
    );
}

#[tokio::test]
async fn out_of_order_calls_get_json_errors() {
    let sb = sandbox().await;
    let c = Client::new(&sb).await;
    let base = c.base.clone();
    let (s, b) = c
        .put(&format!("{base}/xs2a/v1/sessions"), &start_session_body())
        .await;
    assert_eq!(s, StatusCode::OK);
    let sid = b["data"]["session_id"].as_str().unwrap().to_owned();
    let consent_get = format!("{base}/xs2a/v1/sessions/{sid}/consent/get");
    let keys = json!({"keys": {"hsm": "", "aspsp_data": ""}});

    let (s, b) = c.post(&consent_get, &keys).await;
    assert_eq!((s, code(&b)), (StatusCode::CONFLICT, "NO_FLOW"), "{b}");
    let flows = format!("{base}/xs2a/v1/sessions/{sid}/flows/account-details");
    let (s, b) = c.put(&flows, &json!({"account_id": "", "iban": ""})).await;
    assert_eq!(s, StatusCode::OK);
    let flow = b["data"]["flow_id"].as_str().unwrap().to_owned();
    let (s, b) = c.put(&flows, &json!({"account_id": "", "iban": ""})).await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::CONFLICT, "FLOW_ALREADY_STARTED")
    );

    let wizard = format!("{base}/branded/xs2a/v1/wizard/{flow}");
    let (s, b) = c.get(&wizard).await;
    assert_eq!((s, code(&b)), (StatusCode::CONFLICT, "NO_BANK_SELECTED"));
    let (s, b) = c
        .post(
            &wizard,
            &json!({"redirect_id": "r", "return_url": "http://x/?a=1&result=success"}),
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::CONFLICT, "NO_REDIRECT_PENDING"));
    let (s, b) = c
        .post(
            &wizard,
            &json!({"bank_code": "12345", "country_code": "DE"}),
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::NOT_FOUND, "BANK_NOT_FOUND"));
    let (s, b) = c.post(&wizard, &json!({"country_code": "DE"})).await;
    assert_eq!((s, code(&b)), (StatusCode::BAD_REQUEST, "BAD_REQUEST"));
    assert!(message(&b).contains("bank_code"));
    let (s, b) = c
        .post(
            &wizard,
            &json!({"bank_code": "00000", "country_code": "DE"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let first_form = b["data"].clone();
    let (s, b) = c
        .post(
            &wizard,
            &json!({"bank_code": "00000", "country_code": "DE"}),
        )
        .await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::CONFLICT, "BANK_ALREADY_SELECTED")
    );
    let (s, b) = c.post(&consent_get, &keys).await;
    assert_eq!((s, code(&b)), (StatusCode::CONFLICT, "FLOW_NOT_FINISHED"));

    // Answer the transport form, then post it again to its (now stale) URL.
    let fid = &first_form["result"]["form"]["form_identifier"];
    let (s, creds_form) = c
        .send_encrypted(&first_form, &transport_form(fid), &c.auth(), Ek::Jsbn)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = c
        .send_encrypted(&first_form, &transport_form(fid), &c.auth(), Ek::Jsbn)
        .await;
    assert_eq!((s, code(&b)), (StatusCode::CONFLICT, "STALE_FORM"), "{b}");

    // Log in, then come back from the bank with result=failure.
    let creds_form = creds_form["data"].clone();
    let fid = &creds_form["result"]["form"]["form_identifier"];
    let (s, login) = c
        .send_encrypted(
            &creds_form,
            &credentials_form(fid, "redirect", "123456"),
            &c.auth(),
            Ek::Jsbn,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let redirect = &login["data"]["result"]["redirect"];
    let (s, b) = c
        .post(&wizard, &json!({"redirect_id": "not-it", "return_url": format!("{}&result=success", redirect["url"].as_str().unwrap())}))
        .await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::BAD_REQUEST, "REDIRECT_MISMATCH")
    );
    let (s, b) = c
        .post(
            &wizard,
            &json!({"redirect_id": redirect["id"], "return_url": redirect["url"]}),
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::BAD_REQUEST, "BAD_REQUEST"));
    assert!(message(&b).contains("result"));
    let (s, b) = c
        .post(&wizard, &json!({"redirect_id": redirect["id"], "return_url": format!("{}&result=failure", redirect["url"].as_str().unwrap())}))
        .await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::FORBIDDEN, "AUTHENTICATION_FAILED")
    );
    let (s, b) = c.post(&consent_get, &keys).await;
    assert_eq!((s, code(&b)), (StatusCode::CONFLICT, "FLOW_NOT_FINISHED"));
    assert!(message(&b).contains("aborted"));

    // Unknown ids, routes, bodies.
    for (method, url, body) in [
        (
            reqwest::Method::PUT,
            format!("{base}/xs2a/v1/sessions/nope/flows/account-details"),
            Some(json!({})),
        ),
        (
            reqwest::Method::GET,
            format!("{base}/branded/xs2a/v1/wizard/nope"),
            None,
        ),
        (
            reqwest::Method::POST,
            format!("{base}/xs2a/v1/consents/nope/balances/get"),
            Some(consent_body(&json!("t"), &json!("a"))),
        ),
        (
            reqwest::Method::POST,
            format!("{base}/branded/xs2a/v1/wizard/nope/forms/x"),
            Some(json!({})),
        ),
        (reqwest::Method::GET, format!("{base}/no/such/route"), None),
    ] {
        let (s, b) = c.send(method, &url, body.as_ref(), Some(&c.auth())).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{url}: {b}");
        assert!(b["error"]["code"].is_string());
    }
    let (s, b) = c
        .send(
            reqwest::Method::DELETE,
            &format!("{base}/xs2a/v1/sessions"),
            None,
            Some(&c.auth()),
        )
        .await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED")
    );
    let r = c
        .http
        .put(format!("{base}/xs2a/v1/sessions"))
        .header("Authorization", c.auth())
        .body("[1, 2")
        .send()
        .await
        .unwrap();
    let (s, b) = json_of(r).await;
    assert_eq!((s, code(&b)), (StatusCode::BAD_REQUEST, "BAD_REQUEST"));
    let (s, b) = c
        .put(
            &format!("{base}/xs2a/v1/sessions"),
            &json!({"language": "en"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(message(&b).contains("consent_scope"));

    // A finished run: the consent is handed out once, and only covers the
    // account selected in the flow.
    let out = run(&c, &[]).await.expect("run");
    let other = &sb.state().xs2a_playground().accounts()[1];
    let (s, b) = c
        .post(
            &out.balances_url,
            &consent_body(&out.tokens[2], &json!(other.id)),
        )
        .await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::FORBIDDEN, "ACCOUNT_NOT_IN_CONSENT")
    );
    let (s, b) = c
        .post(
            &out.balances_url,
            &consent_body(&out.tokens[2], &json!("nope")),
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::NOT_FOUND, "ACCOUNT_NOT_FOUND"));
    let (s, b) = c
        .post(
            &out.balances_url,
            &consent_body(&out.tokens[2], &out.account_id),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::OK,
        "a refused call does not burn the token: {b}"
    );
}

#[tokio::test]
async fn absolute_urls_follow_the_host_header() {
    let sb = sandbox().await;
    let c = Client::new(&sb).await;
    let r = c
        .http
        .put(format!("{}/xs2a/v1/sessions", c.base))
        .header("Host", "authapi.example.test:8443")
        .header("Authorization", c.auth())
        .json(&start_session_body())
        .send()
        .await
        .unwrap();
    let (s, b) = json_of(r).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let sid = b["data"]["session_id"].as_str().unwrap();
    assert_eq!(
        b["data"]["self_url"],
        format!("http://authapi.example.test:8443/xs2a-playground/xs2a/v1/sessions/{sid}")
    );
    let r = c
        .http
        .put(format!("{}/xs2a/v1/sessions", c.base))
        .header("Host", "evil.test/<script>")
        .header("Authorization", c.auth())
        .json(&start_session_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}
