//! The simulated Fibank over loopback HTTP, driven by hand with reqwest.
use std::collections::{BTreeMap, HashSet};

use bankbridge_sandbox::{FaultConfig, FaultKind, SandboxConfig, SandboxHandle, SandboxState};
use chrono::NaiveDate;
use reqwest::StatusCode;
use reqwest::header::{LOCATION, SET_COOKIE};
use serde_json::{Value, json};

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 6, 15).unwrap()
}

fn small(seed: u64) -> SandboxConfig {
    SandboxConfig {
        seed,
        accounts: 3,
        transactions: 200,
        years: 1,
        today: Some(today()),
        ..SandboxConfig::default()
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn meta(html: &str, name: &str) -> String {
    let line = html
        .lines()
        .find(|l| l.contains(&format!("\"{name}\"")))
        .unwrap_or_else(|| panic!("no {name} line in {html}"));
    line.trim()
        .strip_prefix(&format!("<meta name=\"{name}\" content=\""))
        .and_then(|l| l.strip_suffix("\" />"))
        .unwrap_or_else(|| panic!("the {name} line is not a bare meta tag: {line}"))
        .to_owned()
}

const AUTHORIZE: &str = "/oauth2-server/oauth/authorize?response_type=token&client_id=E_BANK&redirect_uri=/EBank/&scope=E_BANK&state=s-1";

/// The login dance by hand; returns the client (with its session) and the access token.
async fn dance(sb: &SandboxHandle) -> (reqwest::Client, String) {
    let base = sb.base_url();
    let creds = sb.credentials();
    let c = client();
    let r = c
        .get(format!("{base}/oauth2-server/login?client_id=E_BANK"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = r.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with("JSESSIONID=") && cookie.contains("Path=/"),
        "{cookie}"
    );
    let r = c.get(format!("{base}{AUTHORIZE}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let csrf = meta(&r.text().await.unwrap(), "_csrf");
    let r = c
        .get(format!(
            "{base}/oauth2-server/api/v1/sywscertificate/fnGetCertsForLogin?client_id=E_BANK&userName={}",
            creds.username
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap(), json!([]));
    let r = c
        .post(format!("{base}/oauth2-server/login"))
        .form(&[
            ("username", creds.username.as_str()),
            ("password", creds.password.as_str()),
            ("system", ""),
            ("client_id", "E_BANK"),
            ("lang", "bg"),
            ("time", "2024-06-15T10:00:00+0300"),
            ("_csrf", csrf.as_str()),
            ("sig", ""),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let first = r.headers()[LOCATION].to_str().unwrap().to_owned();
    assert_eq!(
        first,
        format!("/fibank{AUTHORIZE}"),
        "back to the saved authorize request"
    );
    let r = c
        .get(format!("{}{first}", sb.root_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let second = r.headers()[LOCATION].to_str().unwrap().to_owned();
    let (path, fragment) = second.split_once('#').expect("a fragment");
    assert_eq!(path, "/fibank/EBank/");
    let params: BTreeMap<_, _> = fragment
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    assert_eq!(params["token_type"], "bearer");
    assert_eq!(params["state"], "s-1");
    assert!(params["expires_in"].parse::<u64>().is_ok());
    let r = c
        .get(format!("{}{path}", sb.root_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(!meta(&r.text().await.unwrap(), "EBank_publicToken").is_empty());
    (c, params["access_token"].to_owned())
}

async fn api(
    c: &reqwest::Client,
    sb: &SandboxHandle,
    token: &str,
    path: &str,
) -> reqwest::Response {
    c.get(format!("{}/EBank/api/v1/{path}", sb.base_url()))
        .bearer_auth(token)
        .header("EBank-Cust-Id", sb.fibank().customer_id().to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_login_dance_and_the_api() {
    let sb = bankbridge_sandbox::spawn(small(1)).await.unwrap();
    let (c, token) = dance(&sb).await;

    let q: Value = api(&c, &sb, &token, "sywsquery/sywsquery/getCustQuery")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        q["customer"][0]["ibCustomerId"].as_u64(),
        Some(sb.fibank().customer_id())
    );

    let accounts: Value = api(
        &c,
        &sb,
        &token,
        "sywspicklist/sywspicklist/getFilteredAccounts",
    )
    .await
    .json()
    .await
    .unwrap();
    let ccys: Vec<_> = accounts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["ccy"].as_str().unwrap())
        .collect();
    assert_eq!(ccys, ["BGN", "EUR", "USD"]);
    for a in accounts.as_array().unwrap() {
        let iban = a["ibanAcNo"].as_str().unwrap();
        assert!(
            iban.starts_with("BG") && &iban[4..12] == "FINV9150",
            "{iban}"
        );
        bankbridge_core::Iban::parse(iban).unwrap();
    }

    // The customer id header is required.
    let r = c
        .get(format!(
            "{}/EBank/api/v1/sywspicklist/sywspicklist/getFilteredAccounts",
            sb.base_url()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.json::<Value>().await.unwrap()["errorCode"].is_string());

    // No token, or a made-up one: 401 JSON.
    for auth in [None, Some("nope")] {
        let mut req = c.get(format!(
            "{}/EBank/api/v1/sywsquery/sywsquery/getCustQuery",
            sb.base_url()
        ));
        if let Some(t) = auth {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.json::<Value>().await.is_ok());
    }
    sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn wrong_password_or_csrf_lands_on_the_login_error_page() {
    let sb = bankbridge_sandbox::spawn(small(2)).await.unwrap();
    let base = sb.base_url();
    let creds = sb.credentials();
    for (password, csrf_ok) in [("wrong", true), (creds.password.as_str(), false)] {
        let c = client();
        c.get(format!("{base}/oauth2-server/login?client_id=E_BANK"))
            .send()
            .await
            .unwrap();
        let html = c
            .get(format!("{base}{AUTHORIZE}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let csrf = if csrf_ok {
            meta(&html, "_csrf")
        } else {
            "forged".to_owned()
        };
        let r = c
            .post(format!("{base}/oauth2-server/login"))
            .form(&[
                ("username", creds.username.as_str()),
                ("password", password),
                ("_csrf", csrf.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FOUND);
        let loc = r.headers()[LOCATION].to_str().unwrap().to_owned();
        assert_eq!(loc, "/fibank/oauth2-server/login?error");
        let page = c
            .get(format!("{}{loc}", sb.root_url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            page.contains("Грешно потребителско име или парола"),
            "{page}"
        );
        assert!(!page.contains("access_token"));
    }
    // Posting with no session at all.
    let r = client()
        .post(format!("{base}/oauth2-server/login"))
        .form(&[
            ("username", creds.username.as_str()),
            ("password", creds.password.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()[LOCATION], "/fibank/oauth2-server/login?error");
}

/// One booked statement line as a client with one typed column per field
/// the reference lists stores it: every field present, none null.
#[derive(Debug, serde::Deserialize)]
#[allow(non_snake_case, dead_code)] // field names as the bank spells them
struct StrictLine {
    acEntrySrNo: u64,
    reference: String,
    acBal: serde_json::Number,
    amount: serde_json::Number,
    dtkt: String,
    dateTime: String,
    valueDt: String,
    contragent: String,
    benOrderParty: String,
    trname: String,
    trnAccount: String,
    trnType: String,
    trnCode: String,
    isEbankOper: String,
    isPayment: String,
    loadAsNew: String,
    remI: String,
    remIi: String,
    remIii: String,
}

/// Parse `body` strictly; `Err` names the first line and field that break it.
fn parse_strictly(body: &Value) -> Result<Vec<StrictLine>, String> {
    let mut rows = Vec::new();
    for (i, line) in stmt_lines(body).iter().enumerate() {
        if ["OP", "CL", "DT", "CT"].contains(&line["trnType"].as_str().unwrap_or("")) {
            continue;
        }
        let row: StrictLine =
            serde_json::from_value(line.clone()).map_err(|e| format!("stmt[{i}]: {e}"))?;
        for (field, stamp) in [("dateTime", &row.dateTime), ("valueDt", &row.valueDt)] {
            chrono::DateTime::parse_from_str(stamp, "%Y-%m-%dT%H:%M:%S%z")
                .map_err(|e| format!("stmt[{i}].{field} {stamp:?}: {e}"))?;
        }
        for (field, n) in [("acBal", &row.acBal), ("amount", &row.amount)] {
            let text = n.to_string();
            let decimals = text.split_once('.').map_or(0, |(_, f)| f.len());
            if decimals > 2 || n.as_f64().is_none_or(|f| f.abs() >= 1e9) {
                return Err(format!(
                    "stmt[{i}].{field} {text} does not fit DECIMAL(11,2)"
                ));
            }
        }
        if !["D", "K"].contains(&row.dtkt.as_str()) {
            return Err(format!("stmt[{i}].dtkt is {:?}", row.dtkt));
        }
        rows.push(row);
    }
    Ok(rows)
}

#[tokio::test]
async fn every_booked_line_parses_strictly_while_holds_are_open() {
    let sb = bankbridge_sandbox::spawn(small(11)).await.unwrap();
    let (c, token) = dance(&sb).await;
    let mut ids = HashSet::new();
    let mut holds = 0;
    for t in sb.truth() {
        holds += t.pending_count;
        let from = "1993-02-27T00:00:00%2B0200";
        let body: Value = api(
            &c,
            &sb,
            &token,
            &format!(
                "sywsquery/sywsquery/GetCustBal?FromDate={from}&ToDate=2024-06-15T23:59:59%2B0300&Iban={}&StmtType=T&isAccountFromPSD2=false",
                t.iban
            ),
        )
        .await
        .json()
        .await
        .unwrap();
        let rows = parse_strictly(&body).unwrap_or_else(|e| panic!("{}: {e}", t.iban));
        assert_eq!(rows.len() as u64, t.booked_count, "{}", t.iban);
        for r in rows {
            assert!(
                ids.insert(r.acEntrySrNo),
                "acEntrySrNo {} twice",
                r.acEntrySrNo
            );
        }
    }
    assert!(holds > 0, "the sandbox day has open card holds");
    sb.shutdown().await.unwrap();
}

#[test]
fn the_strict_parse_refuses_what_would_crash_a_typed_client() {
    let good = json!({"acEntrySrNo": 1, "reference": "FT1", "acBal": 1.5, "amount": 2.25, "dtkt": "D",
        "dateTime": "2024-01-02T10:00:00+0200", "valueDt": "2024-01-02T00:00:00+0200", "contragent": "",
        "benOrderParty": "", "trname": "x", "trnAccount": "", "trnType": "PO", "trnCode": "205",
        "isEbankOper": "N", "isPayment": "N", "loadAsNew": "N", "remI": "", "remIi": "", "remIii": ""});
    let wrap = |l: Value| json!({"acc": [{"stmt": [l]}]});
    assert!(parse_strictly(&wrap(good.clone())).is_ok());
    for (field, value) in [
        ("acBal", Value::Null),
        ("amount", json!("2.25")),
        ("dateTime", json!("2024-01-02")),
        ("valueDt", json!("2024-01-02 00:00:00+0200")),
        ("trnAccount", Value::Null),
        ("acEntrySrNo", json!("1")),
        ("dtkt", json!("X")),
        ("amount", json!(1.234)),
    ] {
        let mut bad = good.clone();
        bad[field] = value.clone();
        assert!(parse_strictly(&wrap(bad)).is_err(), "{field} = {value}");
    }
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("loadAsNew");
    assert!(parse_strictly(&wrap(missing)).is_err());
}

fn stmt_lines(body: &Value) -> &Vec<Value> {
    let acc = body["acc"].as_array().unwrap();
    assert_eq!(acc.len(), 1);
    acc[0]["stmt"].as_array().unwrap()
}

#[tokio::test]
async fn dates_in_all_three_spellings_and_the_refusal_knob() {
    let sb = bankbridge_sandbox::spawn(small(3)).await.unwrap();
    let (c, token) = dance(&sb).await;
    let iban = sb.fibank().ibans().remove(0);
    let url = format!(
        "{}/EBank/api/v1/sywsquery/sywsquery/GetCustBal",
        sb.base_url()
    );
    let mut bodies = Vec::new();
    // Proper encoding, an unencoded `+` (a space once decoded), a double-encoded `%2B`.
    for (from, to) in [
        ("2024-05-01T00:00:00%2B0300", "2024-05-31T23:59:59%2B0300"),
        ("2024-05-01T00:00:00+0300", "2024-05-31T23:59:59+0300"),
        ("2024-05-01T00:00:00%252B0300", "2024-05-31T23:59:59%2B0300"),
    ] {
        let r = c
            .get(format!(
                "{url}?FromDate={from}&ToDate={to}&Iban={iban}&StmtType=T&isAccountFromPSD2=false"
            ))
            .bearer_auth(&token)
            .header("EBank-Cust-Id", sb.fibank().customer_id().to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{from}");
        bodies.push(r.text().await.unwrap());
    }
    assert!(bodies.iter().all(|b| b == &bodies[0]));
    let body: Value = serde_json::from_str(&bodies[0]).unwrap();
    let lines = stmt_lines(&body);
    let types: Vec<_> = lines
        .iter()
        .map(|l| l["trnType"].as_str().unwrap())
        .collect();
    assert_eq!(types.first(), Some(&"OP"));
    assert_eq!(&types[types.len() - 3..], ["DT", "CT", "CL"]);
    assert!(lines.len() > 4);
    // Amounts are JSON numbers with two decimals.
    assert!(bodies[0].contains("\"amount\":") && !bodies[0].contains("\"amount\":\""));
    for l in &lines[1..lines.len() - 3] {
        let dt = l["dateTime"].as_str().unwrap();
        assert!(dt.starts_with("2024-05") && dt.ends_with("+0300"), "{dt}");
        assert!(["D", "K"].contains(&l["dtkt"].as_str().unwrap()));
        assert!(l["acEntrySrNo"].as_u64().is_some() && l["reference"].is_string());
    }

    // The knob: 30 days pass at 30, not at 29; over HTTP control route.
    let set = |v: Value| {
        let c = reqwest::Client::new();
        let u = format!("{}/_sandbox/fibank/config", sb.root_url());
        async move { c.post(u).json(&v).send().await.unwrap() }
    };
    assert_eq!(
        set(json!({"max_range_days": 30})).await.status(),
        StatusCode::OK
    );
    let get = |from: &str, to: &str| {
        c.get(format!(
            "{url}?FromDate={from}&ToDate={to}&Iban={iban}&StmtType=T&isAccountFromPSD2=false"
        ))
        .bearer_auth(&token)
        .header("EBank-Cust-Id", sb.fibank().customer_id().to_string())
        .send()
    };
    assert_eq!(
        get("2024-05-01T00:00:00%2B0300", "2024-05-30T23:59:59%2B0300")
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let r = get("2024-05-01T00:00:00%2B0300", "2024-05-31T23:59:59%2B0300")
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["errorCode"], "PERIOD_TOO_LONG");
    assert_eq!(e["message"], "Периодът не може да надвишава 30 дни");
    assert_eq!(
        set(json!({"max_range_days": null})).await.status(),
        StatusCode::OK
    );
    assert_eq!(sb.fibank().max_range_days(), None);
    assert_eq!(
        set(json!({"bogus": 1})).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        set(json!({"fault_rate": 2.0})).await.status(),
        StatusCode::BAD_REQUEST
    );
    let r =
        set(json!({"fault": {"fault_rate": 0.25, "kinds": ["truncated"]}, "latency_ms": 1})).await;
    let cfg: Value = r.json().await.unwrap();
    assert_eq!(cfg["fault"]["fault_rate"], 0.25);
    assert_eq!(cfg["fault"]["kinds"], json!(["truncated"]));
    assert_eq!(cfg["fault"]["latency_ms"], 1);
    assert_eq!(sb.fibank().fault().kinds, [FaultKind::Truncated]);

    // Bad dates and reversed ranges are JSON 400s, never panics.
    for (from, to) in [
        ("yesterday", "2024-05-31"),
        ("2024-05-31", "2024-05-01"),
        ("", ""),
    ] {
        assert_eq!(
            get(from, to).await.unwrap().status(),
            StatusCode::BAD_REQUEST
        );
    }
}

#[tokio::test]
async fn control_routes_tell_the_truth() {
    let sb = bankbridge_sandbox::spawn(small(4)).await.unwrap();
    let c = reqwest::Client::new();
    let root = sb.root_url();
    let truth: Vec<bankbridge_sandbox::AccountTruth> = c
        .get(format!("{root}/_sandbox/fibank/truth"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(truth, sb.truth());
    let creds: Value = c
        .get(format!("{root}/_sandbox/fibank/credentials"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(creds["base_url"], sb.base_url());
    assert_eq!(creds["username"], sb.credentials().username);

    // Truth = the data: the whole history in one statement.
    for t in &truth {
        let body = sb
            .fibank()
            .statement_json(
                &t.iban,
                NaiveDate::from_ymd_opt(1993, 2, 27).unwrap(),
                today(),
            )
            .unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        let cents_of = |l: &Value| {
            let raw = l["amount"].to_string();
            let (units, frac) = raw.split_once('.').unwrap_or((&raw, "0"));
            let abs =
                units.parse::<i64>().unwrap() * 100 + format!("{frac:0<2}").parse::<i64>().unwrap();
            if l["dtkt"] == "D" { -abs } else { abs }
        };
        let (mut n, mut cents) = (0u64, 0i64);
        for l in stmt_lines(&v) {
            let ty = l["trnType"].as_str().unwrap();
            if ["OP", "CL", "DT", "CT"].contains(&ty) {
                continue;
            }
            n += 1;
            cents += cents_of(l);
        }
        // Holds not booked yet are never statement lines: they are the
        // blocked amounts, a query of their own.
        let blocked: Value =
            serde_json::from_str(&sb.fibank().blocked_json(&t.iban).unwrap()).unwrap();
        let holds = blocked["blockedAmounts"].as_array().unwrap();
        let (pn, pcents) = (holds.len() as u64, holds.iter().map(cents_of).sum::<i64>());
        let money = |c: i64| {
            format!(
                "{}{}.{:02}",
                if c < 0 { "-" } else { "" },
                c.abs() / 100,
                c.abs() % 100
            )
        };
        assert_eq!(
            (n, money(cents)),
            (t.booked_count, t.booked_sum.clone()),
            "{}",
            t.iban
        );
        assert_eq!(
            (pn, money(pcents)),
            (t.pending_count, t.pending_sum.clone()),
            "{}",
            t.iban
        );
    }

    // The clock: advancing changes the truth and the day.
    let r: Value = c
        .post(format!("{root}/_sandbox/fibank/advance"))
        .json(&json!({"days": 3}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["today"], "2024-06-18");
    assert_ne!(sb.truth(), truth);
    let bad = c
        .post(format!("{root}/_sandbox/fibank/advance"))
        .json(&json!({"days": -1}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn faults_hit_the_api_only() {
    let mut config = small(5);
    config.fault = FaultConfig::always(FaultKind::ServerError);
    let sb = bankbridge_sandbox::spawn(config).await.unwrap();
    let (c, token) = dance(&sb).await; // login pages are never faulted
    let r = api(&c, &sb, &token, "sywsquery/sywsquery/getCustQuery").await;
    assert!([500, 502, 503].contains(&r.status().as_u16()));
    let truth = reqwest::get(format!("{}/_sandbox/fibank/truth", sb.root_url()))
        .await
        .unwrap();
    assert_eq!(truth.status(), StatusCode::OK);

    sb.fibank()
        .set_fault(FaultConfig::always(FaultKind::RateLimited))
        .unwrap();
    let r = api(&c, &sb, &token, "sywsquery/sywsquery/getCustQuery").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "1");

    sb.fibank()
        .set_fault(FaultConfig::always(FaultKind::Truncated))
        .unwrap();
    let r = api(
        &c,
        &sb,
        &token,
        "sywspicklist/sywspicklist/getFilteredAccounts",
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&body).unwrap_err().is_eof());

    sb.fibank()
        .set_fault(FaultConfig {
            session_ttl_requests: Some(1),
            ..FaultConfig::default()
        })
        .unwrap();
    // The token above is used up already; a fresh one serves one request.
    assert_eq!(
        api(&c, &sb, &token, "sywsquery/sywsquery/getCustQuery")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let (c, token) = dance(&sb).await;
    assert_eq!(
        api(&c, &sb, &token, "sywsquery/sywsquery/getCustQuery")
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        api(&c, &sb, &token, "sywsquery/sywsquery/getCustQuery")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

#[test]
fn the_same_seed_gives_the_same_bank() {
    let a = SandboxState::new(small(9)).unwrap();
    let b = SandboxState::new(small(9)).unwrap();
    let other = SandboxState::new(small(10)).unwrap();
    assert_eq!(a.fibank().truth(), b.fibank().truth());
    assert_ne!(a.fibank().truth(), other.fibank().truth());
    let from = NaiveDate::from_ymd_opt(2023, 1, 1).unwrap();
    for iban in a.fibank().ibans() {
        assert_eq!(
            a.fibank().statement_json(&iban, from, today()),
            b.fibank().statement_json(&iban, from, today())
        );
    }
    a.fibank().advance(5);
    b.fibank().advance(2);
    b.fibank().advance(3);
    assert_eq!(a.fibank().truth(), b.fibank().truth());
}

#[test]
fn a_big_bank_has_twins_and_roughly_the_asked_volume() {
    let state = SandboxState::new(SandboxConfig {
        seed: 11,
        accounts: 2,
        transactions: 20_000,
        years: 5,
        today: Some(today()),
        ..SandboxConfig::default()
    })
    .unwrap();
    let bank = state.fibank();
    for t in bank.truth() {
        assert!((18_000..=22_000).contains(&t.booked_count), "{t:?}");
    }
    let iban = bank.ibans().remove(0);
    let body = bank
        .statement_json(&iban, today() - chrono::Days::new(365), today())
        .unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    let mut seen = BTreeMap::<(String, String, String), u32>::new();
    let mut ids = HashSet::new();
    for l in stmt_lines(&v) {
        if l["trnType"] == "OP"
            || l["trnType"] == "CL"
            || l["trnType"] == "DT"
            || l["trnType"] == "CT"
        {
            continue;
        }
        assert!(ids.insert(l["acEntrySrNo"].as_u64().unwrap()));
        assert!(ids.len() == 1 || l["reference"].as_str().is_some_and(|r| !r.is_empty()));
        let key = (
            l["dateTime"].as_str().unwrap()[..10].to_owned(),
            l["amount"].to_string(),
            l["trname"].to_string(),
        );
        *seen.entry(key).or_default() += 1;
    }
    assert!(
        seen.values().any(|n| *n >= 2),
        "identical same-day twins exist"
    );
}
