//! Data routes over real loopback HTTP and a real SQLite file: pagination,
//! filters, balances, exports.
mod common;

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;

use bankbridge_server::export::{self, Format};
use bankbridge_store::{Scope, TxQuery};
use common::*;
use rust_decimal::Decimal;
use serde_json::Value;

const N: usize = 350;

/// Every page of `/api/v1/transactions?{query}`, concatenated.
async fn all_pages(s: &TestServer, token: &str, query: &str, limit: u32) -> (Vec<Value>, usize) {
    let mut rows = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/transactions?limit={limit}");
        if !query.is_empty() {
            path.push('&');
            path.push_str(query);
        }
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = s.get_json(&path, token).await;
        pages += 1;
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= limit as usize);
        rows.extend(data.iter().cloned());
        match page["next"].as_str() {
            Some(n) => {
                assert_eq!(data.len(), limit as usize, "only full pages have a next");
                cursor = Some(n.to_owned());
            }
            None => break,
        }
        assert!(pages < 10_000);
    }
    (rows, pages)
}

fn key(row: &Value) -> (String, i64) {
    (
        row["booking_date"].as_str().unwrap().to_owned(),
        row["id"].as_i64().unwrap(),
    )
}

#[tokio::test]
async fn pagination_yields_every_row_once_in_order() {
    let s = TestServer::start().await;
    let t = s.token(Scope::Read).await;
    seed(s.store.as_ref(), N).await;

    for limit in [1000, 100, 37, 7] {
        let (rows, pages) = all_pages(&s, &t, "", limit).await;
        assert_eq!(rows.len(), N, "limit {limit}");
        assert_eq!(pages, N.div_ceil(limit as usize).max(1), "limit {limit}");
        let ids: HashSet<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
        assert_eq!(ids.len(), N, "no duplicates with limit {limit}");
        assert!(
            rows.windows(2).all(|w| key(&w[0]) < key(&w[1])),
            "ordered by (booking_date, id)"
        );
    }
    // Exactly divisible: the last full page has next = null.
    let (rows, pages) = all_pages(&s, &t, "", 50).await;
    assert_eq!((rows.len(), pages), (N, 7));

    // Default limit is 100.
    let page = s.get_json("/api/v1/transactions", &t).await;
    assert_eq!(page["data"].as_array().unwrap().len(), 100);
    // Rows carry amounts as strings and the raw JSON.
    let row = &page["data"][0];
    assert!(row["amount"].is_string(), "{row}");
    assert!(row["raw"].is_object(), "{row}");
    assert!(row["status"].is_string());
    s.shutdown().await;
}

#[tokio::test]
async fn filters_select_the_right_rows() {
    let s = TestServer::start().await;
    let t = s.token(Scope::Read).await;
    let (_conn, accounts) = seed(s.store.as_ref(), N).await;
    let (all, _) = all_pages(&s, &t, "", 1000).await;
    let count = |f: &dyn Fn(&Value) -> bool| all.iter().filter(|r| f(r)).count();
    let amount = |r: &Value| Decimal::from_str(r["amount"].as_str().unwrap()).unwrap();

    let cases: Vec<(String, usize)> = vec![
        (
            format!("account={}", accounts[1]),
            count(&|r| r["account_id"] == accounts[1]),
        ),
        (
            "from=2024-02-01&to=2024-02-29".into(),
            count(&|r| {
                let d = r["booking_date"].as_str().unwrap();
                ("2024-02-01"..="2024-02-29").contains(&d)
            }),
        ),
        (
            "min_amount=-10.5&max_amount=20".into(),
            count(&|r| {
                let a = amount(r);
                a >= Decimal::from_str("-10.5").unwrap() && a <= Decimal::from(20)
            }),
        ),
        (
            "text=coffee".into(),
            count(&|r| r["label"].as_str().unwrap().contains("COFFEE")),
        ),
        (
            "status=pending".into(),
            count(&|r| r["status"] == "pending"),
        ),
        ("status=void".into(), count(&|r| r["status"] == "void")),
        ("updated_since=2000-01-01T00:00:00Z".into(), N),
        ("updated_since=2999-01-01T00:00:00%2B02:00".into(), 0),
        (
            format!("account={}&status=booked&text=row", accounts[0]),
            count(&|r| {
                r["account_id"] == accounts[0]
                    && r["status"] == "booked"
                    && r["label"].as_str().unwrap().starts_with("row")
            }),
        ),
    ];
    for (query, expected) in cases {
        assert!(
            expected > 0 || query.contains("2999"),
            "a filter that selects nothing proves little: {query}"
        );
        let (rows, _) = all_pages(&s, &t, &query, 40).await;
        assert_eq!(rows.len(), expected, "{query}");
    }
    s.shutdown().await;
}

#[tokio::test]
async fn accounts_and_balances() {
    let s = TestServer::start().await;
    let t = s.token(Scope::Read).await;
    let (conn, accounts) = seed(s.store.as_ref(), 10).await;
    let list = s.get_json("/api/v1/accounts", &t).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    let filtered = s
        .get_json(&format!("/api/v1/accounts?connection={conn}"), &t)
        .await;
    assert_eq!(filtered["data"].as_array().unwrap().len(), 2);
    let none = s
        .get_json(&format!("/api/v1/accounts?connection={}", conn + 1000), &t)
        .await;
    assert_eq!(none["data"].as_array().unwrap().len(), 0);
    let one = s
        .get_json(&format!("/api/v1/accounts/{}", accounts[0]), &t)
        .await;
    assert_eq!(one["provider_id"], "ACC-0");
    assert_eq!(one["currency"], "EUR");
    // The balance now comes with the account, in the list too.
    assert_eq!(one["balance"]["amount"], "1234.56", "{one}");
    assert_eq!(one["balance"]["kind"], "closing_booked");
    let listed = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == accounts[0])
        .unwrap();
    assert_eq!(listed["balance"], one["balance"]);
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a.get("balance").is_some())
    );
    let balances = s
        .get_json(&format!("/api/v1/accounts/{}/balances", accounts[0]), &t)
        .await;
    let b = &balances["data"][0];
    assert_eq!(b["amount"], "1234.56");
    assert_eq!(b["kind"], "closing_booked");
    assert_eq!(b["account_id"], accounts[0]);
    expect_error(
        s.get("/api/v1/accounts/424242/balances", &t).await,
        404,
        "not_found",
    )
    .await;
    s.shutdown().await;
}

async fn download(s: &TestServer, token: &str, query: &str) -> (String, String, String) {
    let res = s.get(&format!("/api/v1/export?{query}"), token).await;
    assert_eq!(res.status(), 200, "{query}");
    let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
    let cd = res.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    (ct, cd, res.text().await.unwrap())
}

#[tokio::test]
async fn exports_parse_back() {
    let s = TestServer::start().await;
    let t = s.token(Scope::Read).await;
    seed(s.store.as_ref(), N).await;
    let (all, _) = all_pages(&s, &t, "", 1000).await;

    // CSV
    let (ct, cd, text) = download(&s, &t, "format=csv").await;
    assert!(ct.starts_with("text/csv"));
    assert!(
        cd.starts_with("attachment; filename=\"bankbridge-transactions-") && cd.ends_with(".csv\""),
        "{cd}"
    );
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().unwrap().clone();
    assert_eq!(
        headers.iter().collect::<Vec<_>>(),
        export::CSV_COLUMNS.to_vec()
    );
    let records: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(records.len(), N);
    for (rec, row) in records.iter().zip(&all) {
        let get = |name: &str| {
            rec.get(headers.iter().position(|h| h == name).unwrap())
                .unwrap()
        };
        assert_eq!(get("id"), row["id"].to_string());
        assert_eq!(get("amount"), row["amount"].as_str().unwrap());
        assert_eq!(get("provider_id"), row["provider_id"].as_str().unwrap());
        assert_eq!(
            get("counterparty_name"),
            row["counterparty_name"].as_str().unwrap_or("")
        );
        assert_eq!(
            get("remittance_info"),
            row["remittance_info"].as_str().unwrap_or("")
        );
        assert_eq!(get("status"), row["status"].as_str().unwrap());
        assert_eq!(get("category"), row["category"].as_str().unwrap_or(""));
        assert!(!get("account_name").is_empty());
    }

    // JSON: the same rows as the API.
    let (ct, cd, text) = download(&s, &t, "format=json").await;
    assert_eq!(ct, "application/json");
    assert!(cd.ends_with(".json\""));
    let parsed: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(parsed, all);

    // JSON, filtered, and empty.
    let (_, _, text) = download(&s, &t, "format=json&status=pending").await;
    let parsed: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(
        parsed.len(),
        all.iter().filter(|r| r["status"] == "pending").count()
    );
    let (_, _, text) = download(&s, &t, "format=json&from=2030-01-01").await;
    assert_eq!(
        serde_json::from_str::<Vec<Value>>(&text).unwrap(),
        Vec::<Value>::new()
    );

    // OFX: what booked, one statement per account, escaped text. Pending
    // rows are left out by default: an accounting tool would import them
    // again under their booked FITID.
    let (ct, cd, text) = download(&s, &t, "format=ofx").await;
    assert_eq!(ct, "application/x-ofx");
    assert!(cd.ends_with(".ofx\""));
    assert!(text.starts_with("<?xml version=\"1.0\""));
    assert!(text.contains("<?OFX OFXHEADER=\"200\" VERSION=\"220\""));
    assert_eq!(text.matches("<STMTTRNRS>").count(), 2);
    let booked = all.iter().filter(|r| r["status"] == "booked").count();
    assert!(booked > 0 && booked < all.len());
    assert_eq!(text.matches("<STMTTRN>").count(), booked);
    for row in &all {
        let fitid = format!("<FITID>{}</FITID>", row["provider_id"].as_str().unwrap());
        assert_eq!(text.contains(&fitid), row["status"] == "booked", "{fitid}");
    }
    assert!(!text.contains("PENDING:"));
    // Asked for, pending rows come in the statement's list of pending rows
    // (BANKTRANLISTP), with no FITID: the booked row will bring its own.
    let (_, _, with_pending) = download(&s, &t, "format=ofx&include_pending=true").await;
    for row in &all {
        let id = row["provider_id"].as_str().unwrap();
        let fitid = format!("<FITID>{id}</FITID>");
        assert_eq!(
            with_pending.contains(&fitid),
            row["status"] == "booked",
            "{fitid}"
        );
    }
    let pending = all.iter().filter(|r| r["status"] == "pending").count();
    assert!(pending > 0);
    assert_eq!(with_pending.matches("<STMTTRNP>").count(), pending);
    assert_eq!(with_pending.matches("<STMTTRN>").count(), booked);
    assert!(!with_pending.contains("pending-"));
    let res = s
        .get("/api/v1/export?format=ofx&include_pending=yes", &t)
        .await;
    assert_eq!(res.status(), 400);
    assert!(text.contains("&amp;") && text.contains("&lt;Co&gt;"));
    assert!(!text.contains("<Co>"));
    assert!(
        text.contains("<TRNTYPE>DEBIT</TRNTYPE>") && text.contains("<TRNTYPE>CREDIT</TRNTYPE>")
    );
    assert!(text.contains("<LEDGERBAL><BALAMT>1234.56</BALAMT>"));
    for name in text
        .lines()
        .filter_map(|l| l.strip_prefix("<NAME>"))
        .map(|l| l.trim_end_matches("</NAME>"))
    {
        let unescaped = name
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"");
        assert!(unescaped.chars().count() <= 32, "{name}");
    }
    check_xml_balanced(&text);
    s.shutdown().await;
}

/// Every element opened is closed, in order (a well-formedness check without an XML crate).
fn check_xml_balanced(text: &str) {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        let end = rest[start..].find('>').unwrap() + start;
        let tag = &rest[start + 1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('?') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop().as_deref(), Some(name), "closing {name}");
        } else {
            stack.push(tag.to_owned());
        }
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
}

#[tokio::test]
async fn export_to_writer_matches_the_http_export() {
    let s = TestServer::start().await;
    let t = s.token(Scope::Read).await;
    seed(s.store.as_ref(), 120).await;
    for format in Format::ALL {
        let mut buf: Vec<u8> = Vec::new();
        let stats = export::export_to_writer(
            s.store.as_ref(),
            &TxQuery::default(),
            format,
            export::ExportOptions::default(),
            &mut buf,
        )
        .await
        .unwrap();
        assert_eq!(stats.bytes as usize, buf.len());
        // Tracking changes (`--since-last`) writes the same bytes and knows
        // the newest change it wrote.
        let mut tracked: Vec<u8> = Vec::new();
        let tracked_stats = export::export_to_writer(
            s.store.as_ref(),
            &TxQuery::default(),
            format,
            export::ExportOptions {
                track_changes: true,
                ..Default::default()
            },
            &mut tracked,
        )
        .await
        .unwrap();
        assert!(tracked_stats.newest_update.is_some(), "{format}");
        let (_, _, http) = download(&s, &t, &format!("format={format}")).await;
        let strip = |t: &str| {
            t.lines()
                .filter(|l| {
                    !["<DTSERVER>", "<DTASOF>", "<GrpHdr>", "<CreDtTm>"]
                        .iter()
                        .any(|stamp| l.starts_with(stamp))
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(
            strip(&String::from_utf8(tracked).unwrap()),
            strip(&http),
            "{format}, tracked"
        );
        assert_eq!(
            strip(&String::from_utf8(buf).unwrap()),
            strip(&http),
            "{format}"
        );
    }
    s.shutdown().await;
}

#[tokio::test]
async fn large_export_streams_in_chunks() {
    let s = TestServer::start().await;
    let t = s.token(Scope::Read).await;
    seed(s.store.as_ref(), 3000).await;
    let mut res = s.get("/api/v1/export?format=csv", &t).await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers().get("content-length").is_none(),
        "streamed, not buffered"
    );
    let mut chunks = 0;
    let mut lines = 0;
    let mut per_status: BTreeMap<String, usize> = BTreeMap::new();
    let mut text = String::new();
    while let Some(chunk) = res.chunk().await.unwrap() {
        chunks += 1;
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    for rec in csv::Reader::from_reader(text.as_bytes()).records() {
        let rec = rec.unwrap();
        lines += 1;
        *per_status.entry(rec[2].to_owned()).or_default() += 1;
    }
    assert_eq!(lines, 3000);
    assert!(chunks > 1, "{chunks} chunk(s)");
    assert_eq!(per_status.values().sum::<usize>(), 3000);
    s.shutdown().await;
}
