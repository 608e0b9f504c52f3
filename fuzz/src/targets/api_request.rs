//! The JSON API as a client reaches it: the whole router (guards, body
//! limits, extractors, the hand-written query parsing, the handlers'
//! validation) over a real SQLite store holding one connection, account
//! and row, with an admin token. The first byte picks one of the
//! operations the OpenAPI document lists (its top bit: send the fuzzed
//! text as the token instead); the rest is the path parameter, the query
//! string and the JSON body, split at the first two newlines.
//!
//! Invariants: no panic and never a `500` (an unhandled case: the
//! database is healthy); every error is the documented JSON body
//! with a code of lowercase words; a successful JSON answer is JSON.
//!
//! Left out: the long polls (card and check agents' `jobs`) and event
//! streams, which wait by design, and deleting the seeded connection.
//! Connections the fuzzer creates are deleted again, and none is synced:
//! the connector factory refuses, so no bank is ever called.
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, header};
use bankbridge_core::{ConnectionSettings, Credentials, MasterKey};
use bankbridge_server::error::ErrorBody;
use bankbridge_server::{AppState, ServerConfig, auth};
use bankbridge_store::{Scope, SqliteStore, Store};
use bankbridge_sync::{ConnectorFactory, Syncer};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;
use tokio::runtime::Runtime;
use tower::ServiceExt;

struct Bench {
    runtime: Runtime,
    router: Router,
    token: String,
    /// (method, path template) of every operation fuzzed.
    operations: Vec<(Method, String)>,
    seeded_connection: String,
    _dir: tempfile::TempDir,
}

fn bench() -> &'static Mutex<Bench> {
    static BENCH: OnceLock<Mutex<Bench>> = OnceLock::new();
    BENCH.get_or_init(|| Mutex::new(Bench::new()))
}

/// What a query string may hold as it is; the rest is percent-encoded, so
/// the fuzzer's `%xx` still reach the decoder.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'=')
    .remove(b'&')
    .remove(b'%')
    .remove(b'+')
    .remove(b',')
    .remove(b':');

impl Bench {
    fn new() -> Self {
        let (dir, runtime) = crate::store_bench();
        let (router, token, seeded_connection) = runtime.block_on(async {
            let store: Arc<dyn Store> = Arc::new(
                SqliteStore::open(&dir.path().join("fuzz.db"))
                    .await
                    .expect("a store"),
            );
            let key = Arc::new(MasterKey::generate());
            let connection = bankbridge_sync::add_connection(
                store.as_ref(),
                &key,
                "seeded",
                "fibank",
                &ConnectionSettings::new("http://127.0.0.1:9", "fuzz"),
                &Credentials::with_password("pw".to_owned().into()),
            )
            .await
            .expect("a connection");
            // No connection is ever synced: fuzzed settings must not make
            // this process call anything but loopback.
            let refuse: ConnectorFactory =
                Arc::new(|_, _, _| Err("fuzzing: no bank is called".to_owned()));
            let syncer = Syncer::new(store.clone(), key, refuse);
            let connectors = bankbridge_connectors::KNOWN
                .iter()
                .map(|c| (*c).to_owned())
                .collect();
            let state = AppState::with_readers(
                store.clone(),
                syncer,
                connectors,
                ServerConfig::default(),
                Arc::new(bankbridge_cap::transport::VirtualReaders::new()),
            );
            state.set_connector_forms(bankbridge_connectors::FORMS);
            let (plain, record) = auth::new_token("fuzz", Scope::Admin);
            store.create_token(&record).await.expect("a token");
            (
                bankbridge_server::router(state),
                plain.expose().clone(),
                connection.id.to_string(),
            )
        });
        let mut bench = Bench {
            runtime,
            router,
            token,
            operations: Vec::new(),
            seeded_connection,
            _dir: dir,
        };
        let document = bench.send(Method::GET, "/api/v1/openapi.json", None, Vec::new());
        let document: Value = serde_json::from_slice(&document.2).expect("the OpenAPI document");
        let paths = document["paths"].as_object().expect("paths");
        for (path, item) in paths {
            // Long polls and event streams wait by design.
            if path.ends_with("/jobs") || path.ends_with("/events") {
                continue;
            }
            for method in ["get", "post", "put", "patch", "delete"] {
                if item.get(method).is_some() {
                    let method = Method::from_bytes(method.to_uppercase().as_bytes())
                        .expect("an HTTP method");
                    bench.operations.push((method, path.clone()));
                }
            }
        }
        assert!(bench.operations.len() > 20, "the document lists the API");
        bench
    }

    /// One request through the router: (status, content type, body).
    fn send(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, String, Vec<u8>) {
        let token = token.unwrap_or(&self.token);
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        if !body.is_empty() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let Ok(request) = request.body(Body::from(body)) else {
            // A token the HTTP header rules refuse never reaches us.
            return (0, String::new(), Vec::new());
        };
        self.runtime.block_on(async {
            let response =
                tokio::time::timeout(Duration::from_secs(5), self.router.clone().oneshot(request))
                    .await
                    .unwrap_or_else(|_| panic!("no answer within 5 s: {uri}"))
                    .expect("the router answers");
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = tokio::time::timeout(
                Duration::from_secs(5),
                axum::body::to_bytes(response.into_body(), 64 << 20),
            )
            .await
            .unwrap_or_else(|_| panic!("the body did not end within 5 s: {uri}"))
            .expect("the body reads");
            (status, content_type, body.to_vec())
        })
    }
}

fn is_code(code: &str) -> bool {
    !code.is_empty()
        && code
            .split('_')
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
}

/// Sets the bench up before the first input, so its time (a store, a
/// sandbox) does not count against the first input's time limit.
pub fn init() {
    drop(bench().lock());
}

pub fn run(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.splitn(3, |b| *b == b'\n');
    let (param, query, body) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let bench = bench().lock().unwrap_or_else(|e| e.into_inner());
    let (method, template) = &bench.operations[usize::from(pick & 0x7F) % bench.operations.len()];
    let raw_param = param;
    let param = if param.is_empty() {
        bench.seeded_connection.clone()
    } else {
        utf8_percent_encode(&String::from_utf8_lossy(param), NON_ALPHANUMERIC).to_string()
    };
    if *method == Method::DELETE && param == bench.seeded_connection {
        return;
    }
    let mut path = String::new();
    let mut rest = template.as_str();
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').map_or(rest.len(), |c| open + c + 1);
        path.push_str(&rest[..open]);
        path.push_str(&param);
        rest = &rest[close..];
    }
    path.push_str(rest);
    let query = String::from_utf8_lossy(query);
    let uri = if query.is_empty() {
        path.clone()
    } else {
        format!(
            "{path}?{}",
            percent_encoding::percent_encode(query.as_bytes(), QUERY)
        )
    };
    let token = (pick & 0x80 != 0).then(|| String::from_utf8_lossy(raw_param).into_owned());
    let body = if matches!(*method, Method::GET | Method::DELETE) {
        Vec::new()
    } else {
        body.to_vec()
    };
    let (status, content_type, answer) = bench.send(method.clone(), &uri, token.as_deref(), body);
    if status == 0 {
        return;
    }
    let shown = || String::from_utf8_lossy(&answer[..answer.len().min(500)]).into_owned();
    // A store error answers 500 too: with a healthy SQLite, a 500 is a
    // case nobody handled. (503s are the features left off here: flow
    // checks, BankID, card readers.)
    assert!(status != 500, "{method} {uri}: {status} {}", shown());
    if status >= 400 {
        assert!(
            content_type.starts_with("application/json"),
            "{method} {uri}: {status} as {content_type:?}"
        );
        let error: ErrorBody = serde_json::from_slice(&answer)
            .unwrap_or_else(|e| panic!("{method} {uri}: {status} {}: {e}", shown()));
        assert!(
            is_code(&error.code),
            "{method} {uri}: code {:?}",
            error.code
        );
        assert!(!error.message.is_empty(), "{method} {uri}: no message");
    } else if content_type.starts_with("application/json") && !answer.is_empty() {
        let value: Value = serde_json::from_slice(&answer)
            .unwrap_or_else(|e| panic!("{method} {uri}: {status} {}: {e}", shown()));
        // What the fuzzer created goes again, so the store stays small.
        if *method == Method::POST
            && status == 201
            && let Some(id) = value.get("id").and_then(Value::as_i64)
        {
            let (gone, _, _) =
                bench.send(Method::DELETE, &format!("{path}/{id}"), None, Vec::new());
            assert!(gone < 500, "deleting {path}/{id}: {gone}");
        }
    }
}
