//! The API over real loopback HTTP: auth, scopes, errors, limits,
//! connections, sync jobs, OpenAPI.
mod common;

use std::time::Duration;

use bankbridge_server::ServerConfig;
use bankbridge_store::Scope;
use chrono::Utc;
use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn healthz_needs_no_token() {
    let s = TestServer::start().await;
    let res = s.client.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, json!({"status": "ok", "database": "sqlite"}));
    s.shutdown().await;
}

#[tokio::test]
async fn missing_and_wrong_tokens_are_401_json() {
    let s = TestServer::start().await;
    let res = s
        .client
        .get(s.url("/api/v1/accounts"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    expect_error(res, 401, "unauthorized").await;

    let res = s
        .client
        .get(s.url("/api/v1/accounts"))
        .header("authorization", "Basic dTpw")
        .send()
        .await
        .unwrap();
    expect_error(res, 401, "unauthorized").await;

    for bad in [
        "nonsense",
        "bb_0123456789ab_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let res = s.get("/api/v1/accounts", bad).await;
        assert!(
            res.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("invalid_token")
        );
        expect_error(res, 401, "invalid_token").await;
    }
    // A real id with a wrong secret.
    let good = s.token(Scope::Read).await;
    let mut forged = good.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'x' { 'y' } else { 'x' });
    expect_error(
        s.get("/api/v1/accounts", &forged).await,
        401,
        "invalid_token",
    )
    .await;
    assert_eq!(s.get("/api/v1/accounts", &good).await.status(), 200);
    s.shutdown().await;
}

#[tokio::test]
async fn scopes_are_enforced() {
    let s = TestServer::start().await;
    let read = s.token(Scope::Read).await;
    let write = s.token(Scope::Write).await;
    let admin = s.token(Scope::Admin).await;
    let conn = create_connection(&s, &write, "scoped", "fake").await;
    let id = conn["id"].as_i64().unwrap();
    let sync_path = format!("/api/v1/connections/{id}/sync");

    for t in [&read, &write, &admin] {
        for path in [
            "/api/v1/accounts",
            "/api/v1/transactions",
            "/api/v1/connections",
            "/api/v1/openapi.json",
        ] {
            assert_eq!(s.get(path, t).await.status(), 200, "{path}");
        }
    }
    // read cannot POST a sync, create or delete a connection.
    let res = s
        .client
        .post(s.url(&sync_path))
        .bearer_auth(&read)
        .send()
        .await
        .unwrap();
    expect_error(res, 403, "forbidden").await;
    let res = s
        .post_json(
            "/api/v1/connections",
            &read,
            &connection_body("nope", "fake"),
        )
        .await;
    expect_error(res, 403, "forbidden").await;
    let res = s
        .client
        .delete(s.url(&format!("/api/v1/connections/{id}")))
        .bearer_auth(&read)
        .send()
        .await
        .unwrap();
    expect_error(res, 403, "forbidden").await;

    // write and admin can.
    let res = s
        .client
        .post(s.url(&sync_path))
        .bearer_auth(&write)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let job: Value = res.json().await.unwrap();
    wait_job(&s, &read, job["id"].as_i64().unwrap()).await;
    let res = s
        .client
        .post(s.url(&sync_path))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let job: Value = res.json().await.unwrap();
    wait_job(&s, &read, job["id"].as_i64().unwrap()).await;
    s.shutdown().await;
}

#[tokio::test]
async fn revoked_tokens_are_refused() {
    // A short cache so a revocation takes effect quickly.
    let s = TestServer::start_with(ServerConfig {
        token_cache_ttl: Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    let used = s.token(Scope::Read).await;
    let fresh = s.token(Scope::Read).await;
    assert_eq!(s.get("/api/v1/accounts", &used).await.status(), 200);
    let id_of = |t: &str| bankbridge_server::auth::token_id(t).unwrap().to_owned();
    assert!(
        s.store
            .revoke_token(&id_of(&used), Utc::now())
            .await
            .unwrap()
    );
    assert!(
        s.store
            .revoke_token(&id_of(&fresh), Utc::now())
            .await
            .unwrap()
    );
    // Never cached: refused at once.
    let body = expect_error(
        s.get("/api/v1/accounts", &fresh).await,
        401,
        "invalid_token",
    )
    .await;
    assert!(
        body["message"].as_str().unwrap().contains("revoked"),
        "{body}"
    );
    // Cached: refused once the cache entry expires.
    tokio::time::sleep(Duration::from_millis(300)).await;
    expect_error(s.get("/api/v1/accounts", &used).await, 401, "invalid_token").await;
    s.shutdown().await;
}

#[tokio::test]
async fn last_used_is_recorded() {
    let s = TestServer::start().await;
    let t = s.token(Scope::Read).await;
    let id = bankbridge_server::auth::token_id(&t).unwrap().to_owned();
    for _ in 0..5 {
        assert_eq!(s.get("/api/v1/accounts", &t).await.status(), 200);
    }
    let mut used = None;
    for _ in 0..50 {
        used = s.store.find_token(&id).await.unwrap().unwrap().last_used_at;
        if used.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(used.is_some(), "last_used_at was never recorded");
    s.shutdown().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let s = TestServer::start().await;
    let t = s.token(Scope::Admin).await;
    expect_error(s.get("/api/v1/nope", &t).await, 404, "not_found").await;
    expect_error(
        s.client.get(s.url("/nope")).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    expect_error(s.get("/api/v1/accounts/999999", &t).await, 404, "not_found").await;
    expect_error(s.get("/api/v1/syncs/999999", &t).await, 404, "not_found").await;
    let body = expect_error(
        s.get("/api/v1/accounts/abc", &t).await,
        400,
        "invalid_parameter",
    )
    .await;
    assert_eq!(body["parameter"], "id");
    let res = s
        .client
        .put(s.url("/api/v1/accounts"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("allow").is_some());
    expect_error(res, 405, "method_not_allowed").await;
    s.shutdown().await;
}

#[tokio::test]
async fn bodies_are_capped_and_checked() {
    let s = TestServer::start().await;
    let t = s.token(Scope::Write).await;
    // Oversized, with a Content-Length.
    let big = json!({"name": "x".repeat(100 * 1024)});
    expect_error(
        s.post_json("/api/v1/connections", &t, &big).await,
        413,
        "payload_too_large",
    )
    .await;
    // Oversized, chunked (no Content-Length).
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..100).map(|_| Ok(vec![b' '; 1024])).collect();
    let res = s
        .client
        .post(s.url("/api/v1/connections"))
        .bearer_auth(&t)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    expect_error(res, 413, "payload_too_large").await;
    // Malformed JSON.
    let res = s
        .client
        .post(s.url("/api/v1/connections"))
        .bearer_auth(&t)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    expect_error(res, 400, "bad_request").await;
    // Not JSON at all.
    let res = s
        .client
        .post(s.url("/api/v1/connections"))
        .bearer_auth(&t)
        .body("name=x")
        .send()
        .await
        .unwrap();
    expect_error(res, 415, "unsupported_media_type").await;
    // Wrong shape: names the field.
    let mut body = connection_body("shape", "fake");
    body["window_days"] = json!("thirty");
    let err = expect_error(
        s.post_json("/api/v1/connections", &t, &body).await,
        400,
        "invalid_parameter",
    )
    .await;
    assert_eq!(err["parameter"], "window_days");
    // Unknown fields are refused.
    let mut body = connection_body("typo", "fake");
    body["intervall_secs"] = json!(60);
    let err = expect_error(
        s.post_json("/api/v1/connections", &t, &body).await,
        400,
        "invalid_parameter",
    )
    .await;
    assert_eq!(err["parameter"], "intervall_secs");
    // A secret field of the wrong type is not quoted back.
    let mut body = connection_body("secretshape", "fake");
    body["password"] = json!(123456789);
    let err = expect_error(
        s.post_json("/api/v1/connections", &t, &body).await,
        400,
        "invalid_parameter",
    )
    .await;
    assert!(!err.to_string().contains("123456789"), "{err}");
    s.shutdown().await;
}

#[tokio::test]
async fn bad_query_parameters_are_named() {
    let s = TestServer::start().await;
    let t = s.token(Scope::Read).await;
    for (q, param) in [
        ("limit=1001", "limit"),
        ("from=2024-02-30", "from"),
        ("min_amount=ten", "min_amount"),
        ("status=done", "status"),
        ("updated_since=yesterday", "updated_since"),
        ("cursor=%21%21", "cursor"),
        ("acount=1", "acount"),
    ] {
        let res = s.get(&format!("/api/v1/transactions?{q}"), &t).await;
        let body = expect_error(res, 400, "invalid_parameter").await;
        assert_eq!(body["parameter"], param, "{q}");
    }
    let body = expect_error(
        s.get("/api/v1/export?format=xlsx", &t).await,
        400,
        "invalid_parameter",
    )
    .await;
    assert_eq!(body["parameter"], "format");
    s.shutdown().await;
}

fn connection_body(name: &str, connector: &str) -> Value {
    json!({
        "name": name,
        "connector": connector,
        "base_url": "http://127.0.0.1:9/api",
        "username": "alice",
        "password": FAKE_PASSWORD,
        "window_days": 30,
        "since": (Utc::now().date_naive() - chrono::Days::new(20)).to_string(),
    })
}

async fn create_connection(s: &TestServer, token: &str, name: &str, connector: &str) -> Value {
    let res = s
        .post_json(
            "/api/v1/connections",
            token,
            &connection_body(name, connector),
        )
        .await;
    assert_eq!(res.status(), 201);
    res.json().await.unwrap()
}

/// Poll a job until it is no longer queued or running.
async fn wait_job(s: &TestServer, token: &str, id: i64) -> Value {
    for _ in 0..300 {
        let job = s.get_json(&format!("/api/v1/syncs/{id}"), token).await;
        if !matches!(job["status"].as_str(), Some("queued" | "running")) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {id} did not finish");
}

#[tokio::test]
async fn connections_never_echo_credentials() {
    capture_logs();
    let s = TestServer::start().await;
    let t = s.token(Scope::Write).await;
    let mut body = connection_body("main bank", "fake");
    body["interval_secs"] = json!(3600);
    let res = s.post_json("/api/v1/connections", &t, &body).await;
    assert_eq!(res.status(), 201);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let created_text = res.text().await.unwrap();
    let created: Value = serde_json::from_str(&created_text).unwrap();
    assert_eq!(location, format!("/api/v1/connections/{}", created["id"]));
    assert_eq!(created["name"], "main bank");
    assert_eq!(created["connector"], "fake");
    // The bank username shows to admin tokens only.
    assert_eq!(created["settings"]["username"], Value::Null);
    let admin = s.token(Scope::Admin).await;
    let as_admin = s.get_json("/api/v1/connections", &admin).await;
    assert_eq!(as_admin["data"][0]["settings"]["username"], "alice");
    assert_eq!(created["settings"]["interval_secs"], 3600);
    assert_eq!(created["settings"]["window_days"], 30);
    assert_eq!(created["last_sync_status"], "never");

    let list_text = s.get("/api/v1/connections", &t).await.text().await.unwrap();
    let list: Value = serde_json::from_str(&list_text).unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);

    // The same name again: conflict.
    expect_error(
        s.post_json("/api/v1/connections", &t, &body).await,
        409,
        "conflict",
    )
    .await;
    // Validation names the field.
    for (field, value) in [
        ("connector", json!("nobank")),
        ("base_url", json!("ftp://x")),
        ("name", json!("1234")),
        ("interval_secs", json!(5)),
        ("password", json!("")),
    ] {
        let mut b = connection_body("valid-name", "fake");
        b[field] = value;
        let err = expect_error(
            s.post_json("/api/v1/connections", &t, &b).await,
            400,
            "invalid_parameter",
        )
        .await;
        assert_eq!(err["parameter"], field);
    }

    // A sync uses the sealed password (the fake bank refuses any other).
    let id = created["id"].as_i64().unwrap();
    let res = s
        .client
        .post(s.url(&format!("/api/v1/connections/{id}/sync")))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    let job: Value = res.json().await.unwrap();
    let job = wait_job(&s, &t, job["id"].as_i64().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let conns = s.get_json("/api/v1/connections", &t).await;
    assert_eq!(conns["data"][0]["last_sync_status"], "ok");

    for text in [
        &created_text,
        &list_text,
        &job.to_string(),
        &conns.to_string(),
    ] {
        assert!(
            !text.contains(FAKE_PASSWORD),
            "the password leaked into a response: {text}"
        );
        assert!(
            !text.contains("\"credentials\"") && !text.contains("credentials_sealed"),
            "{text}"
        );
    }
    let logs = logs();
    assert!(logs.contains("connection created"), "the capture works");
    assert!(
        !logs.contains(FAKE_PASSWORD),
        "the password leaked into the logs"
    );
    assert!(!logs.contains(&t), "the token leaked into the logs");

    // Delete (an admin's job).
    let res = s
        .client
        .delete(s.url(&format!("/api/v1/connections/{id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = s
        .client
        .delete(s.url(&format!("/api/v1/connections/{id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    expect_error(res, 404, "not_found").await;
    s.shutdown().await;
}

#[tokio::test]
async fn sync_job_lifecycle_and_one_sync_at_a_time() {
    let s = TestServer::start().await;
    let t = s.token(Scope::Write).await;
    let conn = create_connection(&s, &t, "slowbank", "slow").await;
    let id = conn["id"].as_i64().unwrap();
    // An empty page, now in the page cache: the sync's end must drop it.
    let before = s.get_json("/api/v1/transactions", &t).await;
    assert_eq!(before["data"].as_array().unwrap().len(), 0);
    let path = format!("/api/v1/connections/{id}/sync");

    let res = s
        .client
        .post(s.url(&path))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let first: Value = res.json().await.unwrap();
    assert_eq!(location, format!("/api/v1/syncs/{}", first["id"]));
    assert!(
        matches!(first["status"].as_str(), Some("queued" | "running")),
        "{first}"
    );

    // While it runs: the same job comes back, and the connection cannot be deleted.
    let res = s
        .client
        .post(s.url(&path))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let second: Value = res.json().await.unwrap();
    assert_eq!(second["id"], first["id"]);
    let listed = s.get_json("/api/v1/connections", &t).await;
    assert_eq!(listed["data"][0]["running_sync_job"], first["id"]);
    // Deleting needs admin; and not while the sync runs.
    let delete = async |token: &str| {
        s.client
            .delete(s.url(&format!("/api/v1/connections/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    };
    expect_error(delete(&t).await, 403, "forbidden").await;
    let admin = s.token(Scope::Admin).await;
    expect_error(delete(&admin).await, 409, "sync_in_progress").await;

    let done = wait_job(&s, &t, first["id"].as_i64().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(done["started_at"].is_string() && done["finished_at"].is_string());
    assert_eq!(done["summary"]["inserted"], 3, "{done}");
    assert_eq!(done["summary"]["connection"], "slowbank");

    // The synced rows are served.
    let txs = s.get_json("/api/v1/transactions", &t).await;
    assert_eq!(txs["data"].as_array().unwrap().len(), 3);
    let accounts = s.get_json("/api/v1/accounts", &t).await;
    let iban = bankbridge_core::Iban::from_parts("BG", "BNBG96611020345678").unwrap();
    assert_eq!(accounts["data"][0]["iban"], iban.as_str());

    // Once finished, a new request starts a new job.
    let res = s
        .client
        .post(s.url(&path))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    let third: Value = res.json().await.unwrap();
    assert_ne!(third["id"], first["id"]);
    let done = wait_job(&s, &t, third["id"].as_i64().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["summary"]["inserted"], 0, "{done}");
    s.shutdown().await;
}

#[tokio::test]
async fn failed_sync_is_reported_on_the_job() {
    let s = TestServer::start().await;
    let t = s.token(Scope::Write).await;
    let mut body = connection_body("wrongpw", "fake");
    body["password"] = json!("not-the-password");
    let res = s.post_json("/api/v1/connections", &t, &body).await;
    let conn: Value = res.json().await.unwrap();
    let res = s
        .client
        .post(s.url(&format!("/api/v1/connections/{}/sync", conn["id"])))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    let job: Value = res.json().await.unwrap();
    let job = wait_job(&s, &t, job["id"].as_i64().unwrap()).await;
    assert_eq!(job["status"], "failed");
    assert!(
        job["error"].as_str().unwrap().contains("refused the login"),
        "{job}"
    );
    assert!(!job.to_string().contains("not-the-password"));
    s.shutdown().await;
}

#[tokio::test]
async fn refused_credentials_are_not_sent_again_until_they_change() {
    let s = TestServer::start().await;
    let write = s.token(Scope::Write).await;
    let admin = s.token(Scope::Admin).await;
    let mut body = connection_body("lockable", "fake");
    body["password"] = json!("not-the-password");
    let conn: Value = s
        .post_json("/api/v1/connections", &write, &body)
        .await
        .json()
        .await
        .unwrap();
    let id = conn["id"].as_i64().unwrap();
    let sync = async |token: &str, query: &str| {
        s.client
            .post(s.url(&format!("/api/v1/connections/{id}/sync{query}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    };
    let job: Value = sync(&write, "").await.json().await.unwrap();
    let job = wait_job(&s, &write, job["id"].as_i64().unwrap()).await;
    assert_eq!(job["status"], "failed");
    let listed = s.get_json("/api/v1/connections", &write).await;
    assert_eq!(listed["data"][0]["last_sync_status"], "credentials_refused");
    assert_eq!(listed["data"][0]["credentials_refused"], true);

    // Asking again sends nothing to the bank: 409, and no new job.
    for _ in 0..3 {
        let err = expect_error(sync(&write, "").await, 409, "credentials_refused").await;
        assert!(
            err["message"]
                .as_str()
                .unwrap()
                .contains("connection update"),
            "{err}"
        );
    }
    // Forcing is an admin's decision.
    expect_error(sync(&write, "?force=true").await, 403, "forbidden").await;
    let forced: Value = sync(&admin, "?force=true").await.json().await.unwrap();
    let forced = wait_job(&s, &admin, forced["id"].as_i64().unwrap()).await;
    assert_eq!(forced["status"], "failed", "the password is still wrong");

    // New credentials lift the block (admin only; write-only as ever).
    let patch = async |token: &str, body: Value| {
        s.client
            .patch(s.url(&format!("/api/v1/connections/{id}")))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    };
    expect_error(
        patch(&write, json!({"login": {"password": FAKE_PASSWORD}})).await,
        403,
        "forbidden",
    )
    .await;
    // Moving the login elsewhere needs the password with it.
    let err = expect_error(
        patch(
            &admin,
            json!({"login": {"base_url": "https://elsewhere.example"}}),
        )
        .await,
        400,
        "invalid_parameter",
    )
    .await;
    assert!(
        err["message"].as_str().unwrap().contains("password"),
        "{err}"
    );
    let err = expect_error(
        patch(
            &admin,
            json!({"login": {"base_url": "http://bank.example", "password": "x"}}),
        )
        .await,
        400,
        "invalid_parameter",
    )
    .await;
    assert_eq!(err["parameter"], "base_url");
    // Not an object: refused (serde would read a struct from an array).
    expect_error(patch(&admin, json!([null, null])).await, 400, "bad_request").await;
    let res = patch(
        &admin,
        json!({"login": {"password": FAKE_PASSWORD}, "interval_secs": 7200.0}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(!text.contains(FAKE_PASSWORD), "{text}");
    let updated: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(updated["credentials_refused"], false);
    assert_eq!(updated["settings"]["interval_secs"], 7200);
    // Connector options replace the stored ones; a card must be registered.
    expect_error(
        patch(&admin, json!({"sca_card": "card-nope"})).await,
        404,
        "not_found",
    )
    .await;
    let res = patch(&admin, json!({"options": {"timezone": "Europe/Sofia"}})).await;
    let updated: Value = res.json().await.unwrap();
    assert_eq!(
        updated["settings"]["options"],
        json!({"timezone": "Europe/Sofia"})
    );
    assert_eq!(updated["settings"]["sca_card"], Value::Null);
    assert_eq!(
        updated["consent"],
        Value::Null,
        "no open-banking consent here"
    );
    let job: Value = sync(&write, "").await.json().await.unwrap();
    let job = wait_job(&s, &write, job["id"].as_i64().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let listed = s.get_json("/api/v1/connections", &write).await;
    assert_eq!(listed["data"][0]["last_sync_status"], "ok");
    s.shutdown().await;
}

#[tokio::test]
async fn scheduler_syncs_due_connections_once() {
    let s = TestServer::start().await;
    let t = s.token(Scope::Write).await;
    let mut body = connection_body("scheduled", "slow");
    body["interval_secs"] = json!(3600);
    let conn: Value = s
        .post_json("/api/v1/connections", &t, &body)
        .await
        .json()
        .await
        .unwrap();
    create_connection(&s, &t, "manual", "fake").await;

    let started = bankbridge_server::scheduler::run_due(&s.state, Utc::now())
        .await
        .unwrap();
    assert_eq!(started.len(), 1, "only the scheduled connection is due");
    assert_eq!(started[0].connection_id, conn["id"].as_i64().unwrap());
    // A second pass while it runs starts nothing.
    let again = bankbridge_server::scheduler::run_due(&s.state, Utc::now())
        .await
        .unwrap();
    assert!(again.is_empty());
    let done = wait_job(&s, &t, started[0].id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    // Synced just now: not due for an hour.
    let later = bankbridge_server::scheduler::run_due(&s.state, Utc::now())
        .await
        .unwrap();
    assert!(later.is_empty());
    let in_an_hour = Utc::now() + chrono::Duration::seconds(3601);
    let due = bankbridge_server::scheduler::run_due(&s.state, in_an_hour)
        .await
        .unwrap();
    assert_eq!(due.len(), 1);
    wait_job(&s, &t, due[0].id).await;
    s.shutdown().await;
}

/// Two servers on one database (here two states on one store, each its own
/// lease owner) that both find a connection due: one syncs it, the other
/// starts nothing and makes no job, and a stale pass after the sync starts
/// nothing either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_on_one_database_sync_each_slot_once() {
    let s = TestServer::start().await;
    let t = s.token(Scope::Write).await;
    let mut body = connection_body("shared", "slow");
    body["interval_secs"] = json!(3600);
    let conn: Value = s
        .post_json("/api/v1/connections", &t, &body)
        .await
        .json()
        .await
        .unwrap();
    let id = conn["id"].as_i64().unwrap();
    let mut other_syncer = s.state.syncer.clone();
    other_syncer.options.owner = "the other instance".to_owned();
    let other = bankbridge_server::AppState::with_config(
        s.store.clone(),
        other_syncer,
        vec!["slow".to_owned()],
        ServerConfig::default(),
    );

    let (a, b) = tokio::join!(
        bankbridge_server::scheduler::run_due(&s.state, Utc::now()),
        bankbridge_server::scheduler::run_due(&other, Utc::now()),
    );
    let started: Vec<_> = a.unwrap().into_iter().chain(b.unwrap()).collect();
    assert_eq!(started.len(), 1, "one of the two syncs it: {started:?}");
    let job = started[0].id;
    assert_eq!(started[0].connection_id, id);
    assert!(
        s.store.get_sync_job(job + 1).await.unwrap().is_none(),
        "the other made no job"
    );
    // Whichever ran it, the job finishes; its state is in the shared store.
    let mut finished = None;
    for _ in 0..400 {
        let j = s.store.get_sync_job(job).await.unwrap().unwrap();
        if j.finished_at.is_some() {
            finished = Some(j);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let finished = finished.expect("the sync finishes within 20 s");
    assert_eq!(finished.status, "succeeded", "{finished:?}");
    // Both see it synced now; an instance that had listed it before the
    // sync recorded its time claims nothing either (the store's test).
    for state in [&s.state, &other] {
        let again = bankbridge_server::scheduler::run_due(state, Utc::now())
            .await
            .unwrap();
        assert!(again.is_empty());
    }
    let in_an_hour = Utc::now() + chrono::Duration::seconds(3601);
    let (a, b) = tokio::join!(
        bankbridge_server::scheduler::run_due(&s.state, in_an_hour),
        bankbridge_server::scheduler::run_due(&other, in_an_hour),
    );
    let next: Vec<_> = a.unwrap().into_iter().chain(b.unwrap()).collect();
    assert_eq!(next.len(), 1, "the next slot, once: {next:?}");
    assert!(
        s.store
            .get_sync_job(next[0].id + 1)
            .await
            .unwrap()
            .is_none()
    );
    s.shutdown().await;
}

#[tokio::test]
async fn openapi_lists_every_path() {
    let s = TestServer::start().await;
    let t = s.token(Scope::Read).await;
    let res = s.get("/api/v1/openapi.json", &t).await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let doc: Value = res.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/healthz",
        "/api/v1/accounts",
        "/api/v1/accounts/{id}",
        "/api/v1/accounts/{id}/balances",
        "/api/v1/transactions",
        "/api/v1/connections",
        "/api/v1/connections/{id}",
        "/api/v1/connections/{id}/sync",
        "/api/v1/syncs/{id}",
        "/api/v1/export",
        "/api/v1/openapi.json",
        "/api/v1/checks",
        "/api/v1/checks/{id}",
        "/api/v1/checks/{id}/runs",
        "/api/v1/checks/{id}/run",
        "/api/v1/runs/{id}",
        "/api/v1/agent/jobs",
        "/api/v1/agent/results",
        "/metrics",
    ] {
        assert!(paths.contains_key(p), "missing {p}");
    }
    for (path, method) in [
        ("/api/v1/checks/{id}/run", "post"),
        ("/api/v1/agent/results", "post"),
    ] {
        assert!(
            doc["paths"][path][method]["responses"]["202"].is_object(),
            "{method} {path} lacks its 202"
        );
    }
    let run_params: Vec<&str> = doc["paths"]["/api/v1/checks/{id}/runs"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in ["id", "location", "limit", "before"] {
        assert!(
            run_params.contains(&p),
            "check runs lack {p}: {run_params:?}"
        );
    }
    let job = &doc["components"]["schemas"]["AgentJob"]["properties"];
    assert!(job["secrets"].is_object(), "{job}");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let params: Vec<&str> = doc["paths"]["/api/v1/transactions"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in [
        "account",
        "from",
        "to",
        "min_amount",
        "max_amount",
        "text",
        "status",
        "updated_since",
        "limit",
        "cursor",
    ] {
        assert!(params.contains(&p), "transactions lacks {p}: {params:?}");
    }
    let pw = &doc["components"]["schemas"]["CreateConnection"]["properties"]["password"];
    assert_eq!(pw["writeOnly"], true, "{pw}");
    s.shutdown().await;
}

/// A client that sends its headers, or its body, too slowly is cut off: it
/// cannot hold a connection (and a handler) open by dripping bytes.
#[tokio::test]
async fn slow_headers_and_bodies_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start_with(ServerConfig {
        read_timeout: Duration::from_millis(500),
        ..Default::default()
    })
    .await;
    let t = s.token(Scope::Write).await;
    let addr = s.base.trim_start_matches("http://").to_owned();

    // Half the headers, then nothing: the server closes the connection.
    let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
    c.write_all(b"GET /api/v1/accounts HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut buf))
        .await
        .expect("the server closes a connection whose headers stall");
    assert!(read.is_ok());

    // Headers on time, the body dripping: 408 with a JSON error.
    let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/connections HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\n\
         Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"name\":"
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut buf))
        .await
        .expect("an answer once the body's deadline passes")
        .unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"code\":\"request_timeout\""), "{text}");

    // A request on time is served as ever.
    let res = s.get("/api/v1/accounts", &t).await;
    assert_eq!(res.status(), 200);
    s.shutdown().await;
}
