//! Flow-check secrets over real loopback HTTP and a real SQLite file: admin
//! only, write-only (no answer, log or database page holds the value), bound
//! to their name, and opened for the flows that name them.
mod common;

use bankbridge_checks::flow;
use bankbridge_store::Scope;
use common::*;
use serde_json::{Value, json};

/// Long and odd enough that no id or timestamp contains it by chance.
const VALUE: &str = "xs2a-Tok3n-7f1c9e02b8d4";

async fn put(s: &TestServer, token: &str, name: &str, body: &Value) -> reqwest::Response {
    s.client
        .put(s.url(&format!("/api/v1/check-secrets/{name}")))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_admin_only_write_only_and_open_for_their_flows() {
    capture_logs();
    let s = TestServer::start().await;
    let admin = s.token(Scope::Admin).await;
    let write = s.token(Scope::Write).await;
    let read = s.token(Scope::Read).await;
    let body = json!({ "value": VALUE });
    let mut answers = String::new();

    // Only admin may set or list them.
    for token in [&write, &read] {
        let res = put(&s, token, "xs2a-token", &body).await;
        expect_error(res, 403, "forbidden").await;
        expect_error(
            s.get("/api/v1/check-secrets", token).await,
            403,
            "forbidden",
        )
        .await;
    }

    let res = put(&s, &admin, "xs2a-token", &body).await;
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    assert_eq!(created["name"], "xs2a-token");
    answers.push_str(&created.to_string());
    let res = put(&s, &admin, "xs2a-token", &body).await;
    assert_eq!(res.status(), 200, "replacing answers 200");
    answers.push_str(&res.text().await.unwrap());

    // Bad names and values are refused, nothing stored.
    expect_error(
        put(&s, &admin, "a%20b", &body).await,
        400,
        "invalid_parameter",
    )
    .await;
    expect_error(
        put(&s, &admin, "empty", &json!({ "value": "" })).await,
        400,
        "invalid_parameter",
    )
    .await;
    expect_error(
        put(
            &s,
            &admin,
            "huge",
            &json!({ "value": "x".repeat(17 * 1024) }),
        )
        .await,
        400,
        "invalid_parameter",
    )
    .await;
    let res = put(
        &s,
        &admin,
        "extra",
        &json!({ "value": VALUE, "show": true }),
    )
    .await;
    assert_eq!(res.status(), 400);

    let list = s.get_json("/api/v1/check-secrets", &admin).await;
    answers.push_str(&list.to_string());
    let names: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["xs2a-token"]);
    assert_eq!(
        list["data"][0].as_object().unwrap().len(),
        2,
        "name and updated_at only: {list}"
    );

    // The flow that names it gets the value; a missing one is left out.
    let f = flow::parse(
        "f",
        "f.toml",
        r#"
name = "f"
[schedule]
every = "1m"
[secrets]
token = { secret = "xs2a-token" }
other = { secret = "not-stored" }
[[steps]]
name = "one"
url = "http://127.0.0.1:9/{{ token }}{{ other }}"
"#,
    )
    .unwrap();
    let values = s.state.check_secrets.for_flow(&f).await;
    assert_eq!(values.len(), 1);
    assert_eq!(values["xs2a-token"], VALUE);

    // Sealed to its name: the same bytes under another name do not open.
    let sealed = s
        .store
        .get_check_secret("xs2a-token")
        .await
        .unwrap()
        .unwrap();
    assert!(!sealed.windows(VALUE.len()).any(|w| w == VALUE.as_bytes()));
    s.store
        .put_check_secret("not-stored", &sealed, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(s.state.check_secrets.for_flow(&f).await.len(), 1);

    let del = |name: &'static str| {
        s.client
            .delete(s.url(&format!("/api/v1/check-secrets/{name}")))
            .bearer_auth(&admin)
            .send()
    };
    assert_eq!(del("xs2a-token").await.unwrap().status(), 204);
    expect_error(del("xs2a-token").await.unwrap(), 404, "not_found").await;
    let left = s.state.check_secrets.for_flow(&f).await;
    assert!(!left.contains_key("xs2a-token"));

    // No answer, log line or database page ever held the value.
    assert!(!answers.contains(VALUE), "{answers}");
    assert!(!logs().contains(VALUE), "the logs hold the secret");
    let db_path = s.db_path.clone();
    s.shutdown().await;
    for suffix in ["", "-wal"] {
        let mut path = db_path.clone().into_os_string();
        path.push(suffix);
        if let Ok(bytes) = std::fs::read(&path) {
            assert!(
                !bytes.windows(VALUE.len()).any(|w| w == VALUE.as_bytes()),
                "{path:?} holds the secret in clear"
            );
        }
    }
}
