//! The bankbridge HTTP server: the JSON data API (`/api/v1/...`), API-token
//! authentication, streamed exports, sync jobs and the sync scheduler.
//!
//! Layout: [`auth`] (tokens, no HTTP), [`export`] (format writers, no HTTP),
//! [`params`] (query parsing), [`jobs`] and [`scheduler`] (sync lifecycle),
//! and `api::*`, one module per area with thin handlers. Later areas (card
//! service, BankID gateway, checks) add a module under `api` and merge their
//! routes and OpenAPI document in `api::routes` / `api::openapi`.
//!
//! ```no_run
//! # async fn demo(state: bankbridge_server::AppState) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let scheduler = bankbridge_server::spawn_scheduler(state.clone());
//! bankbridge_server::serve(listener, state, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! scheduler.abort();
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bankbridge_store::{Store, StoreParts};
use bankbridge_sync::Syncer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

mod api;
pub mod auth;
pub mod bankid_gateway;
mod cache;
pub mod card_hosts;
pub mod card_solver;
pub mod cards;
pub mod check_secrets;
pub mod checks;
pub mod consents;
pub mod error;
pub mod export;
mod guard;
pub mod instances;
pub mod jobs;
pub mod live;
pub mod metrics;
pub mod params;
pub mod scheduler;
pub mod simplefin;
mod web;

pub use api::openapi;
pub use error::{ApiError, ErrorBody};
pub use guard::Principal;
pub use jobs::{SyncStart, Trigger};
pub use scheduler::spawn_scheduler;

/// Tunables of the server; the defaults suit production.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Largest request body accepted (bytes); larger ones get 413 `payload_too_large`.
    pub body_limit: usize,
    /// How long a verified token is trusted without asking the store again
    /// (also the longest a revoked token may keep working). Zero disables the cache.
    pub token_cache_ttl: Duration,
    /// How often the scheduler looks for connections due a sync.
    pub scheduler_tick: Duration,
    /// How long a serialised page of `/api/v1/transactions` may be served
    /// again to an identical request. Changes made by this process drop the
    /// cache at once; changes by another process show within this delay.
    /// Zero disables the cache.
    pub page_cache_ttl: Duration,
    /// How long a card request waits for its reader before `reader_busy`.
    pub reader_wait: Duration,
    /// Proxies whose `X-Forwarded-For` names the end user (BankID needs the
    /// end user's IP address).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// A client must send a request's headers within this time, and its
    /// body within it again, or the connection is closed (408 for a body).
    pub read_timeout: Duration,
    /// Server-sent event streams open at once (BankID order events); more
    /// get 503 `too_many_streams`.
    pub max_event_streams: usize,
    /// Mark the dashboard's session cookie `Secure` (serve behind TLS, or
    /// behind a proxy that terminates it).
    pub secure_cookies: bool,
    /// The address people reach this server at (`https://bankbridge.example`):
    /// a bank's redirect SCA comes back to `<public_url>/sca/callback/<job>`.
    /// Without it the person says "I have finished" on the job's page.
    pub public_url: Option<String>,
    /// How often the scheduler looks for consents about to run out.
    pub consent_check_every: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            body_limit: 64 * 1024,
            token_cache_ttl: Duration::from_secs(5),
            scheduler_tick: Duration::from_secs(30),
            page_cache_ttl: Duration::from_secs(1),
            reader_wait: Duration::from_secs(30),
            trusted_proxies: Vec::new(),
            read_timeout: Duration::from_secs(15),
            max_event_streams: 1_000,
            secure_cookies: false,
            public_url: None,
            consent_check_every: Duration::from_secs(3600),
        }
    }
}

/// Everything the handlers share. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

pub struct AppInner {
    /// The store by domain, without bank writes: handlers read bank data;
    /// only `syncer` writes it.
    pub store: StoreParts,
    pub syncer: Syncer,
    /// Connector names a connection may use (`POST /api/v1/connections` checks it).
    pub connectors: Vec<String>,
    /// The dashboard's add-a-connection form of each connector, once set
    /// with [`AppState::set_connector_forms`] (else a generic form).
    pub connector_forms: std::sync::OnceLock<Vec<bankbridge_core::ConnectorForm>>,
    pub config: ServerConfig,
    /// Bank cards in readers (EMV-CAP logins and signs).
    pub cards: cards::CardService,
    /// The BankID gateway, once configured with [`AppState::set_bankid`].
    pub bankid: std::sync::OnceLock<bankid_gateway::BankIdGateway>,
    /// The flow-check scheduler, once configured with [`AppState::set_checks`].
    pub checks: std::sync::OnceLock<checks::ChecksService>,
    /// This process's instance name, once registered ([`instances::register`]).
    pub instance: std::sync::OnceLock<String>,
    /// Secrets that flows name with `{ secret = .. }` (write-only via the API).
    pub check_secrets: check_secrets::CheckSecrets,
    /// Prometheus metrics (`/metrics`).
    pub metrics: Arc<metrics::Metrics>,
    pub(crate) auth: guard::TokenAuth,
    pub(crate) syncs: jobs::SyncRegistry,
    pub(crate) pages: cache::PageCache,
    pub(crate) openapi_json: Bytes,
    /// Permits for open server-sent event streams.
    pub(crate) event_streams: Arc<tokio::sync::Semaphore>,
    /// The dashboard's sessions.
    pub(crate) web: web::Web,
}

impl Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl AppState {
    /// Tell the server that bank data changed behind its back (e.g. after a
    /// sync run by this process outside [`AppState::start_sync`]): cached
    /// pages are dropped.
    pub fn data_changed(&self) {
        self.pages.invalidate();
    }

    /// The dashboard's forms for adding connections. Only once: false if set.
    pub fn set_connector_forms(&self, forms: &[bankbridge_core::ConnectorForm]) -> bool {
        self.connector_forms.set(forms.to_vec()).is_ok()
    }

    /// Serve the BankID gateway with `gateway`, its orders shared through
    /// the store with the other instances on the database. Only once:
    /// false if it was set.
    pub fn set_bankid(&self, gateway: bankid_gateway::BankIdGateway) -> bool {
        let gateway = gateway.with_store(
            self.store.bankid_orders.clone(),
            self.syncer.key.clone(),
            bankbridge_sync::process_owner(),
        );
        self.bankid.set(gateway).is_ok()
    }

    /// Run flow checks from `config.dir`: starts the scheduler (aborted
    /// when the returned handle is). Only once: None if it was set.
    pub fn set_checks(&self, config: checks::ChecksConfig) -> Option<tokio::task::JoinHandle<()>> {
        let service = checks::ChecksService::new(
            config,
            self.store.checks.clone(),
            self.store.check_work.clone(),
            self.metrics.clone(),
            self.check_secrets.clone(),
        );
        let handle = service.spawn();
        match self.checks.set(service) {
            Ok(()) => Some(handle),
            Err(_) => {
                handle.abort();
                None
            }
        }
    }

    pub fn new(store: Arc<dyn Store>, syncer: Syncer, connectors: Vec<String>) -> Self {
        Self::with_config(store, syncer, connectors, ServerConfig::default())
    }

    /// With this machine's PC/SC card readers.
    pub fn with_config(
        store: Arc<dyn Store>,
        syncer: Syncer,
        connectors: Vec<String>,
        config: ServerConfig,
    ) -> Self {
        Self::with_readers(
            store,
            syncer,
            connectors,
            config,
            Arc::new(bankbridge_cap::pcsc::PcscReaders::new()),
        )
    }

    /// With the card readers `readers` (PC/SC, in-process virtual cards, or both).
    pub fn with_readers(
        store: Arc<dyn Store>,
        syncer: Syncer,
        connectors: Vec<String>,
        config: ServerConfig,
        readers: Arc<dyn bankbridge_cap::Readers>,
    ) -> Self {
        let openapi_json = Bytes::from(api::document_for(&connectors));
        let store = StoreParts::of(&store);
        let cards = cards::CardService::new(
            store.cards.clone(),
            syncer.key.clone(),
            readers,
            config.reader_wait,
        );
        AppState(Arc::new(AppInner {
            bankid: std::sync::OnceLock::new(),
            checks: std::sync::OnceLock::new(),
            instance: std::sync::OnceLock::new(),
            check_secrets: check_secrets::CheckSecrets::new(
                store.checks.clone(),
                syncer.key.clone(),
            ),
            metrics: Arc::new(metrics::Metrics::new()),
            cards,
            store,
            syncer,
            connectors,
            connector_forms: std::sync::OnceLock::new(),
            auth: guard::TokenAuth::new(config.token_cache_ttl),
            pages: cache::PageCache::new(config.page_cache_ttl),
            event_streams: Arc::new(tokio::sync::Semaphore::new(config.max_event_streams)),
            config,
            syncs: jobs::SyncRegistry::default(),
            openapi_json,
            web: web::Web::default(),
        }))
    }
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    let limit = state.config.body_limit;
    let read_timeout = state.config.read_timeout;
    with_layers(
        api::routes(&state)
            .merge(web::routes())
            .fallback(api::not_found),
        limit,
        read_timeout,
    )
    .with_state(state)
}

/// The layers around every route: body cap and deadline, panic catcher,
/// JSON errors, tracing.
fn with_layers<S: Clone + Send + Sync + 'static>(
    routes: Router<S>,
    body_limit: usize,
    read_timeout: Duration,
) -> Router<S> {
    routes
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(move |req, next| {
            read_body_within(read_timeout, req, next)
        }))
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::map_response(finish_response))
        .layer(TraceLayer::new_for_http().make_span_with(
            |req: &axum::http::Request<axum::body::Body>| {
                tracing::debug_span!("request", method = %req.method(), path = %loggable_path(req.uri().path()))
            },
        ))
}

/// A request's path as logs may show it: never the query (a bank's
/// redirect comes back with its authorisation code there), and a one-time
/// sign-in link without its secret.
fn loggable_path(path: &str) -> &str {
    if path.starts_with("/login/link/") {
        "/login/link/…"
    } else if path.starts_with("/simplefin/claim/") {
        "/simplefin/claim/…"
    } else {
        path
    }
}

/// Read the whole request body (already capped in size) within `deadline`,
/// or answer 408: a client dripping its body cannot hold a connection and a
/// handler's memory for long. Requests without a body pass untouched.
async fn read_body_within(
    deadline: Duration,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::http::StatusCode;
    use http_body::Body as _;
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let bytes = match tokio::time::timeout(deadline, axum::body::to_bytes(body, usize::MAX)).await {
        Ok(Ok(bytes)) => bytes,
        // Past the size cap (the limit layer's error) or a broken stream.
        Ok(Err(e)) => {
            let too_long =
                std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
                    e.source()
                })
                .any(|e| e.is::<http_body_util::LengthLimitError>());
            let status = if too_long {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            return ApiError::for_status(status).into_response();
        }
        Err(_) => {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {} s",
                    deadline.as_secs()
                ),
            )
            .into_response();
        }
    };
    next.run(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(bytes),
    ))
    .await
}

/// Serve `router(state)` on `listener` until `shutdown` completes, then finish
/// the requests in flight. Sync jobs running in the background are not waited for
/// (their database lease expires; the next sync resumes from the checkpoint).
///
/// A client must send its request headers within `read_timeout` (HTTP/1;
/// the connection is closed otherwise), so idle half-open requests cannot
/// pile up; the body has its own deadline (see [`ServerConfig::read_timeout`]).
pub async fn serve<F>(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto;
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt as _;

    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, database = state.store.connections.backend(), "bankbridge API listening");
    }
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.read_timeout);
    let app = router(state);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        // The peer address reaches handlers that need the end user's IP (BankID).
        let service =
            app.clone()
                .map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    req.map(axum::body::Body::new)
                });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(tcp), TowerToHyperService::new(service))
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::trace!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    // The panic message may quote request data: it is not logged verbatim.
    tracing::error!("a request handler panicked");
    ApiError::for_status(axum::http::StatusCode::INTERNAL_SERVER_ERROR).into_response()
}

/// Every answer leaves as JSON when it is an error (a layer's bare 413, the
/// router's 405...), and never lands in a shared cache.
async fn finish_response(mut res: Response) -> Response {
    res.headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    // JSON errors, and the dashboard's own HTML error pages, pass as they are.
    let is_json_or_page = res.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes().starts_with(b"application/json") || v.as_bytes().starts_with(b"text/html")
    });
    if is_json_or_page {
        return res;
    }
    let (mut parts, _) = res.into_parts();
    let replacement = ApiError::for_status(status).into_response();
    let (new_parts, body) = replacement.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in new_parts.headers.iter() {
        if !parts.headers.contains_key(name) || name == header::CONTENT_TYPE {
            parts.headers.insert(name.clone(), value.clone());
        }
    }
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    #[test]
    fn logs_never_see_a_sign_in_secret() {
        assert_eq!(loggable_path("/login/link/s3cr3t"), "/login/link/…");
        assert_eq!(loggable_path("/sca/callback/7"), "/sca/callback/7");
    }

    async fn call(app: Router, uri: &str) -> (StatusCode, serde_json::Value) {
        let res = app
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    async fn boom() -> StatusCode {
        panic!("secret detail")
    }

    #[tokio::test]
    async fn panics_and_bare_errors_become_json() {
        let app = with_layers(
            Router::new()
                .route("/boom", get(boom))
                .route("/teapot", get(|| async { StatusCode::IM_A_TEAPOT })),
            1024,
            Duration::from_secs(15),
        );
        let (status, body) = call(app.clone(), "/boom").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["code"], "internal");
        assert!(!body.to_string().contains("secret detail"));
        let (status, body) = call(app, "/teapot").await;
        assert_eq!(status, StatusCode::IM_A_TEAPOT);
        assert_eq!(body["code"], "bad_request");
    }
}
