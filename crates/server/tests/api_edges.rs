//! The API's rough edges, smoothed: an index at `/api/v1/`, documents paged
//! like transactions, transactions newest first with working cursors, a 401
//! that says what to send, token expiry, and 409 while another process syncs.
mod common;

use bankbridge_store::{Lease, NewDocument, Scope};
use chrono::{Duration, NaiveDate, Utc};
use common::*;
use serde_json::Value;

#[tokio::test]
async fn the_index_lists_the_resources_with_absolute_links() {
    let s = TestServer::start().await;
    let t = s.token(Scope::Read).await;
    for path in ["/api/v1/", "/api/v1"] {
        let index = s.get_json(path, &t).await;
        assert_eq!(index["name"], "bankbridge");
        let resources = index["resources"].as_array().unwrap();
        assert!(resources.len() >= 6, "{index}");
        for r in resources {
            let href = r["href"].as_str().unwrap();
            assert!(href.starts_with(&s.base), "{href}");
        }
        let openapi = index["openapi"].as_str().unwrap();
        assert_eq!(openapi, s.url("/api/v1/openapi.json"));
        // Every read link answers a read token.
        for r in resources.iter().filter(|r| r["scope"] == "read") {
            let res = s
                .client
                .get(r["href"].as_str().unwrap())
                .bearer_auth(&t)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "{r}");
        }
    }
    expect_error(
        s.client.get(s.url("/api/v1/")).send().await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    s.shutdown().await;
}

#[tokio::test]
async fn transactions_newest_first_page_with_cursors() {
    let s = TestServer::start().await;
    let t = s.token(Scope::Read).await;
    seed(s.store.as_ref(), 300).await;
    let pages = |order: &'static str| {
        let s = &s;
        let t = &t;
        async move {
            let mut ids = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut path = format!("/api/v1/transactions?limit=37&order={order}");
                if let Some(c) = &cursor {
                    path.push_str(&format!("&cursor={c}"));
                }
                let page = s.get_json(&path, t).await;
                ids.extend(page["data"].as_array().unwrap().iter().map(|r| {
                    (
                        r["booking_date"].as_str().unwrap().to_owned(),
                        r["id"].as_i64().unwrap(),
                    )
                }));
                match page["next"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => break,
                }
                assert!(ids.len() <= 300, "paging never ends");
            }
            ids
        }
    };
    let oldest_first = pages("asc").await;
    let mut newest_first = pages("desc").await;
    assert_eq!(oldest_first.len(), 300);
    assert!(
        newest_first.windows(2).all(|w| w[0] > w[1]),
        "not newest first"
    );
    newest_first.reverse();
    assert_eq!(newest_first, oldest_first);
    expect_error(
        s.get("/api/v1/transactions?order=newest", &t).await,
        400,
        "invalid_parameter",
    )
    .await;
    s.shutdown().await;
}

#[tokio::test]
async fn documents_are_paged_like_transactions() {
    let s = TestServer::start().await;
    let t = s.token(Scope::Read).await;
    let (conn, _) = seed(s.store.as_ref(), 1).await;
    let lease = bankbridge_store::testing::hold_lease(s.store.as_ref(), conn).await;
    for i in 0..9u32 {
        // Every third one undated: they come last.
        let date = (i % 3 != 0).then(|| NaiveDate::from_ymd_opt(2024, 1 + i % 12, 28).unwrap());
        s.store
            .save_document(
                lease,
                &NewDocument {
                    connection_id: conn,
                    account_id: None,
                    provider_id: format!("doc-{i}"),
                    kind: "statement".into(),
                    category: None,
                    title: format!("Statement {i}"),
                    date,
                    content_type: "application/pdf".into(),
                    now: Utc::now(),
                },
                format!("%PDF-1.4 {i}").as_bytes(),
            )
            .await
            .unwrap();
    }
    let all = s.get_json("/api/v1/documents?limit=1000", &t).await;
    assert!(all["next"].is_null());
    let all: Vec<i64> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_i64().unwrap())
        .collect();
    assert_eq!(all.len(), 9);
    let mut paged = Vec::new();
    let mut path = "/api/v1/documents?limit=2".to_owned();
    loop {
        let page: Value = s.get_json(&path, &t).await;
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        paged.extend(data.iter().map(|d| d["id"].as_i64().unwrap()));
        match page["next"].as_str() {
            Some(c) => path = format!("/api/v1/documents?limit=2&cursor={c}"),
            None => break,
        }
        assert!(paged.len() <= 9, "paging never ends");
    }
    assert_eq!(paged, all);
    expect_error(
        s.get("/api/v1/documents?limit=0", &t).await,
        400,
        "invalid_parameter",
    )
    .await;
    s.shutdown().await;
}

#[tokio::test]
async fn a_401_says_what_to_send_and_expired_tokens_stop_working() {
    let s = TestServer::start().await;
    let t = s.token(Scope::Read).await;
    // The token without its scheme: the answer says to add `Bearer `.
    let res = s
        .client
        .get(s.url("/api/v1/accounts"))
        .header("authorization", &t)
        .send()
        .await
        .unwrap();
    let body = expect_error(res, 401, "unauthorized").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer <token>"),
        "{body}"
    );

    // A token past its expiry is refused, naming when it expired.
    let (plain, mut record) = bankbridge_server::auth::new_token("old", Scope::Read);
    record.expires_at = Some(Utc::now() - Duration::minutes(1));
    s.store.create_token(&record).await.unwrap();
    let body = expect_error(
        s.get("/api/v1/accounts", plain.expose()).await,
        401,
        "invalid_token",
    )
    .await;
    assert!(
        body["message"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    // One that expires later works until then.
    let (plain, mut record) = bankbridge_server::auth::new_token("fresh", Scope::Read);
    record.expires_at = Some(Utc::now() + Duration::days(90));
    s.store.create_token(&record).await.unwrap();
    assert_eq!(
        s.get("/api/v1/accounts", plain.expose()).await.status(),
        200
    );
    s.shutdown().await;
}

#[tokio::test]
async fn a_sync_held_by_another_process_answers_409_at_once() {
    let s = TestServer::start().await;
    let t = s.token(Scope::Write).await;
    let (conn, _) = seed(s.store.as_ref(), 1).await;
    // Another machine's sync holds the lease for the next minute.
    let now = Utc::now();
    let Lease::Acquired(lease) = s
        .store
        .acquire_sync_lease(
            conn,
            "pid 4242 on another-host",
            now,
            now + Duration::minutes(1),
        )
        .await
        .unwrap()
    else {
        panic!("the seeded connection is free");
    };
    let res = s
        .post_json(
            &format!("/api/v1/connections/{conn}/sync"),
            &t,
            &serde_json::json!({}),
        )
        .await;
    let body = expect_error(res, 409, "sync_in_progress").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("pid 4242 on another-host"),
        "{body}"
    );
    // Let go: the sync starts.
    s.store.release_sync_lease(lease).await.unwrap();
    let res = s
        .post_json(
            &format!("/api/v1/connections/{conn}/sync"),
            &t,
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(res.status(), 202);
    s.shutdown().await;
}
