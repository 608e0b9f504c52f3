//! The XS2A playground as a sync source reads it, over loopback HTTP: the
//! transactions flow its documentation describes (a range, pages through
//! `…/flows/{id}/list`), the bank's redirect page sending the browser back to
//! the session's return address, and the consent's transactions with their
//! pages, rotating tokens, the daily limit of unattended calls, the
//! consent's lifetime on the playground's clock and the end of a session.
use bankbridge_sandbox::xs2a_playground::{
    BANK_CODE, COUNTRY_CODE, INTERFACE, PASSWORD, PASSWORD_KEY, PREFIX, USERNAME, USERNAME_KEY,
};
use bankbridge_sandbox::{SandboxConfig, SandboxHandle};
use chrono::NaiveDate;
use reqwest::StatusCode;
use serde_json::{Value, json};

const RETURN: &str = "http://127.0.0.1:9/back";

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 5, 20).unwrap()
}

async fn sandbox() -> SandboxHandle {
    bankbridge_sandbox::spawn(SandboxConfig {
        seed: 5,
        accounts: 2,
        transactions: 400,
        years: 1,
        today: Some(today()),
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox starts")
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(sb: &SandboxHandle) -> Client {
        Client {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: format!("{}{PREFIX}", sb.root_url()),
            token: sb.klarna().credentials().api_token,
        }
    }

    fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http") {
            path_or_url.to_owned()
        } else {
            format!("{}{path_or_url}", self.base)
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, self.url(url))
            .header("Authorization", format!("Token {}", self.token));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `data` of a success, or a panic naming the refusal.
    async fn ok(&self, method: reqwest::Method, url: &str, body: Option<&Value>) -> Value {
        let (status, v) = self.send(method, url, body).await;
        assert!(status.is_success(), "{url}: {status} {v}");
        v["data"].clone()
    }

    async fn post(&self, url: &str, body: &Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, url, Some(body)).await
    }

    /// Seal a form answer as the XS2A App does and post it to `next`.
    async fn answer(&self, state: &Value, data: Value) -> Value {
        let key = state["result"]["key"].as_str().expect("a form key");
        let plain = json!({
            "form_identifier": state["result"]["form"]["form_identifier"],
            "data": data,
        });
        let sealed = bankbridge_core::envelope::seal(key, plain.to_string().as_bytes()).unwrap();
        let next = state["next"].as_str().expect("a next URL");
        self.ok(
            reqwest::Method::POST,
            next,
            Some(&serde_json::to_value(sealed).unwrap()),
        )
        .await
    }
}

/// A session and a finished flow of `kind` with `body`; the session's id
/// and the finished flow's answer.
async fn finished_flow(c: &Client, kind: &str, body: Value) -> (String, Value) {
    let session = c
        .ok(
            reqwest::Method::PUT,
            "/xs2a/v1/sessions",
            Some(&json!({
                "consent_scope": {"accounts": {}, "balances": {}, "transactions": {}, "lifetime": 30},
                "redirect_return_url": RETURN,
                "psu": {"ip_address": "127.0.0.1", "user_agent": "test"},
            })),
        )
        .await;
    let sid = session["session_id"].as_str().unwrap().to_owned();
    assert!(
        session["consent"]
            .as_str()
            .unwrap()
            .ends_with("/consent/get")
    );
    let flow_url = session["flows"][kind].as_str().expect("the flow's URL");
    let flow = c.ok(reqwest::Method::PUT, flow_url, Some(&body)).await;
    assert_eq!(flow["state"], "CONSUMER_INPUT_NEEDED");
    assert!(!flow["client_token"].as_str().unwrap().is_empty());
    let flow_id = flow["flow_id"].as_str().unwrap().to_owned();
    let wizard = format!("/branded/xs2a/v1/wizard/{flow_id}");
    let transport = c
        .ok(
            reqwest::Method::POST,
            &wizard,
            Some(&json!({"bank_code": BANK_CODE, "country_code": COUNTRY_CODE})),
        )
        .await;
    let login = c
        .answer(
            &transport,
            json!([{"key": "interface", "value": INTERFACE}]),
        )
        .await;
    let redirect = c
        .answer(
            &login,
            json!([{"key": USERNAME_KEY, "value": USERNAME}, {"key": PASSWORD_KEY, "value": PASSWORD}]),
        )
        .await;
    // The person at the bank's page: it offers to agree, and sends the
    // browser back to the session's address with the result.
    let page_url = redirect["result"]["redirect"]["url"].as_str().unwrap();
    let page = c.http.get(page_url).send().await.unwrap();
    assert!(page.text().await.unwrap().contains("Agree"));
    let back = c
        .http
        .post(page_url)
        .form(&[("action", "approve")])
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), StatusCode::SEE_OTHER);
    let location = back.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(RETURN) && location.contains("result=success"),
        "{location}"
    );
    let done = c
        .ok(
            reqwest::Method::POST,
            &wizard,
            Some(&json!({"redirect_id": redirect["result"]["redirect"]["id"], "return_url": location})),
        )
        .await;
    assert_eq!(done["state"], "FINISHED", "{done}");
    (sid, done)
}

fn signed(t: &Value) -> i64 {
    let a = t["amount"]["amount"].as_i64().expect("minor units");
    assert!(a >= 0, "amounts are unsigned: {t}");
    match t["type"].as_str() {
        Some("DEBIT") => -a,
        Some("CREDIT") => a,
        other => panic!("type {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transactions_flow_reads_a_range_in_pages() {
    let sb = sandbox().await;
    let c = Client::new(&sb);
    let account = sb.klarna().accounts()[1].clone();
    let from = today() - chrono::Days::new(400);
    let (sid, done) = finished_flow(
        &c,
        "transactions",
        json!({"account_id": account.id, "from_date": from.to_string(),
               "to_date": today().to_string(), "preferred_pagination_size": 40}),
    )
    .await;
    let result = &done["result"];
    assert_eq!(result["type"], "transactions");
    assert_eq!(result["account"]["iban"], account.iban);
    assert_eq!(result["from_date"], from.to_string());
    let flow_id = done["flow_id"].as_str().unwrap();
    let mut all: Vec<Value> = result["transactions"].as_array().unwrap().clone();
    assert_eq!(all.len(), 40, "a page holds the size asked for");
    let mut next = result["pagination"]["next"]["offset"].clone();
    while let Some(offset) = next.as_str().map(str::to_owned) {
        let page = c
            .ok(
                reqwest::Method::POST,
                &format!("/xs2a/v1/sessions/{sid}/flows/{flow_id}/list"),
                Some(&json!({"offset": offset})),
            )
            .await;
        all.extend(page["result"]["transactions"].as_array().unwrap().clone());
        next = page["result"]["pagination"]["next"]["offset"].clone();
    }
    let truth = sb
        .klarna()
        .truth()
        .into_iter()
        .find(|t| t.iban == account.iban)
        .unwrap();
    let booked: Vec<&Value> = all.iter().filter(|t| t["state"] == "PROCESSED").collect();
    assert_eq!(booked.len() as u64, truth.booked_count);
    assert_eq!(
        all.iter().filter(|t| t["state"] == "PENDING").count() as u64,
        truth.pending_count
    );
    let sum: i64 = booked.iter().map(|t| signed(t)).sum();
    // The truth writes money with two decimals.
    assert_eq!(
        sum,
        truth.booked_sum.replace('.', "").parse::<i64>().unwrap()
    );
    // Newest first; ids unique.
    let days: Vec<&str> = all.iter().map(|t| t["date"].as_str().unwrap()).collect();
    assert!(days.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let mut ids: Vec<&str> = all
        .iter()
        .map(|t| t["transaction_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), all.len());
    // The flow reads back; the session closes.
    let flow = c
        .ok(
            reqwest::Method::GET,
            &format!("/xs2a/v1/sessions/{sid}/flows/{flow_id}"),
            None,
        )
        .await;
    assert_eq!(flow["state"], "FINISHED");
    let (status, _) = c
        .send(
            reqwest::Method::DELETE,
            &format!("/xs2a/v1/sessions/{sid}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = c
        .send(
            reqwest::Method::GET,
            &format!("/xs2a/v1/sessions/{sid}/flows/{flow_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_transactions_page_rotate_tokens_count_unattended_calls_and_expire() {
    let sb = sandbox().await;
    let c = Client::new(&sb);
    // The default range of a transactions flow: the last 30 days.
    let (sid, done) = finished_flow(&c, "accounts", json!({})).await;
    let accounts = done["result"]["accounts"].as_array().unwrap();
    assert_eq!(
        accounts.len(),
        2,
        "an accounts flow consents to every account"
    );
    let consent = c
        .ok(
            reqwest::Method::POST,
            &format!("/xs2a/v1/sessions/{sid}/consent/get"),
            Some(&json!({})),
        )
        .await;
    let urls = &consent["consents"];
    let tx_url = urls["transactions"].as_str().unwrap();
    assert!(tx_url.ends_with("/transactions/get"), "{tx_url}");
    let mut token = consent["consent_token"].as_str().unwrap().to_owned();
    // The session may end: the consent lives on.
    c.send(
        reqwest::Method::DELETE,
        &format!("/xs2a/v1/sessions/{sid}"),
        None,
    )
    .await;

    let account = &accounts[0];
    let (status, first) = c
        .post(
            tx_url,
            &json!({"consent_token": token, "account_id": account["id"], "from_date": "2025-01-01",
                    "to_date": today().to_string(), "preferred_pagination_size": 100}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let used = token.clone();
    token = first["data"]["consent_token"].as_str().unwrap().to_owned();
    assert_ne!(token, used, "every answer carries a new token");
    let mut rows = first["data"]["result"]["transactions"]
        .as_array()
        .unwrap()
        .len();
    let mut page = first["data"]["result"].clone();
    while let Some(offset) = page["pagination"]["next"]["offset"]
        .as_str()
        .map(str::to_owned)
    {
        let list_url = page["pagination"]["url"].as_str().unwrap().to_owned();
        assert!(list_url.ends_with("/transactions/list"));
        let v = c
            .ok(
                reqwest::Method::POST,
                &list_url,
                Some(&json!({"offset": offset, "consent_token": token})),
            )
            .await;
        token = v["consent_token"].as_str().unwrap().to_owned();
        rows += v["result"]["transactions"].as_array().unwrap().len();
        page = v["result"].clone();
    }
    let truth = sb
        .klarna()
        .truth()
        .into_iter()
        .find(|t| Some(t.iban.as_str()) == account["iban"].as_str())
        .unwrap();
    assert_eq!(rows as u64, truth.booked_count + truth.pending_count);
    // A spent token is refused.
    let (status, body) = c
        .post(
            urls["balances"].as_str().unwrap(),
            &json!({"consent_token": used, "account_id": account["id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "CONSENT_TOKEN_USED");

    // Four unattended balance reads a day, then the limit (the token stays good).
    let balances = urls["balances"].as_str().unwrap();
    for _ in 0..4 {
        let v = c
            .ok(
                reqwest::Method::POST,
                balances,
                Some(&json!({"consent_token": token, "account_id": account["id"]})),
            )
            .await;
        assert_eq!(v["result"]["balance"]["currency"], "EUR");
        assert!(v["result"]["available"]["amount"].as_i64().unwrap() >= 0);
        token = v["consent_token"].as_str().unwrap().to_owned();
    }
    let (status, body) = c
        .post(
            balances,
            &json!({"consent_token": token, "account_id": account["id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "CONSENT.LIMIT_EXCEEDED");
    assert_eq!(
        body["consent_token"],
        token.as_str(),
        "the token may be used again"
    );
    // With the person there (psu), the call does not count.
    let v = c
        .ok(
            reqwest::Method::POST,
            balances,
            Some(&json!({"consent_token": token, "account_id": account["id"],
                         "psu": {"ip_address": "127.0.0.1", "user_agent": "test"}})),
        )
        .await;
    token = v["consent_token"].as_str().unwrap().to_owned();
    assert_eq!(sb.klarna().usage(), (4, 1));
    // The next day the count starts again; past its 30 days the consent is gone.
    sb.klarna().advance(1).unwrap();
    let v = c
        .ok(
            reqwest::Method::POST,
            balances,
            Some(&json!({"consent_token": token, "account_id": account["id"]})),
        )
        .await;
    token = v["consent_token"].as_str().unwrap().to_owned();
    sb.klarna().advance(30).unwrap();
    let (status, body) = c
        .post(
            balances,
            &json!({"consent_token": token, "account_id": account["id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "CONSENT.EXPIRED");
    assert!(
        body.get("consent_token").is_none(),
        "an expired consent's token is no use"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_universe_lists_the_test_bank_in_its_own_shape() {
    let sb = sandbox().await;
    let c = Client::new(&sb);
    let (status, v) = c
        .send(reqwest::Method::GET, "/v1/banks?country_code=DE", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["banks"][0]["bank_name"], "Testbank");
    assert_eq!(v["banks"][0]["bank_codes"][0], BANK_CODE);
    assert_eq!(v["banks"][0]["flows"]["transactions"]["supported"], true);
    assert_eq!(v["pagination"]["total"], 1);
    let (status, v) = c
        .send(reqwest::Method::GET, "/v1/banks?country_code=SE", None)
        .await;
    assert_eq!(
        (status, v["banks"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0))
    );
    let (status, v) = c.send(reqwest::Method::GET, "/v1/banks", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["error_code"], "BAD_REQUEST");
    assert!(
        v["error_messages"][0]
            .as_str()
            .unwrap()
            .contains("country_code")
    );
    assert!(v["correlation_id"].is_string());
}
