//! The answers of the aggregators (GoCardless, Enable Banking, Klarna's
//! XS2A API) and of a Berlin Group (XS2A) bank whose SCA is a card code,
//! as their connectors read them: tokens, links, consents and sessions,
//! SCA status, account lists and details, transaction pages, balances.
//!
//! Once per process, each connector links and syncs against our sandbox's
//! simulator of its service through a recording proxy on loopback; the
//! answers it got, and its session after the link, are kept. Each input
//! then runs the connector again (the kept session restored, or a new link
//! started) against the proxy, which now replays the kept answers, each
//! changed as the input says: passed on, its body replaced by the input's
//! bytes, cut, a byte overwritten, its status changed, or emptied. The
//! first byte picks the service and the path; the rest is that script.
//!
//! Invariants: no panic; the answers as recorded, replayed unchanged,
//! sync again (the harness's own check); at most `MAX_REQUESTS` requests per sync (a
//! connector that loops on an answer, following the same page again,
//! breaks it); every account has a non-empty id, once; every row of a
//! window lies in that window and its bank id, when it has one, is not
//! empty.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bankbridge_cap::emv::{self, CapRequest, PinPolicy};
use bankbridge_cap::transport::{Readers, VirtualReaders};
use bankbridge_cap::virtual_card::VirtualCard;
use bankbridge_core::{
    Attendance, ConnectionSettings, Connector, ConnectorError, Credentials, DateWindow, ScaAnswer,
    ScaChallenge, ScaProgress, Secret,
};
use bankbridge_sandbox::{SandboxConfig, SandboxHandle};
use chrono::{Days, Utc};
use tokio::runtime::Runtime;

/// Requests one sync may make. A real one makes about 15 (a token, the
/// link, two accounts' details, transactions and balances, a page or two).
const MAX_REQUESTS: usize = 64;

const CALLBACK: &str = "http://127.0.0.1:9/callback";

#[derive(Clone)]
struct Recorded {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

#[derive(Default)]
struct Proxy {
    /// Where requests go while recording: the service's scheme, host and port.
    upstream: Option<String>,
    /// The proxy's own root, which replaces the service's in what it sends.
    root: String,
    recorded: HashMap<(Method, String), Vec<Recorded>>,
    /// What this input's sync asked so far, per method and path.
    served: HashMap<(Method, String), usize>,
    script: Vec<u8>,
    at: usize,
    requests: usize,
}

impl Proxy {
    fn next(&mut self) -> u8 {
        let b = self.script.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    /// The kept answer to this request, changed as the script says.
    fn replay(&mut self, key: (Method, String)) -> Recorded {
        self.requests += 1;
        if self.requests > MAX_REQUESTS {
            // Whatever the connector does with it, it should stop asking.
            return Recorded {
                status: StatusCode::SERVICE_UNAVAILABLE,
                headers: vec![],
                body: Bytes::new(),
            };
        }
        let nth = self.served.entry(key.clone()).or_default();
        let kept = self
            .recorded
            .get(&key)
            .and_then(|all| all.get((*nth).min(all.len() - 1)));
        *nth += 1;
        let mut answer = kept.cloned().unwrap_or_else(|| Recorded {
            status: StatusCode::NOT_FOUND,
            headers: vec![(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body: Bytes::from_static(br#"{"detail":"Not found."}"#),
        });
        match self.next() % 8 {
            1 => {
                let len = usize::from(self.next()) * 4;
                let from = self.at.min(self.script.len());
                let to = (from + len).min(self.script.len());
                answer.body = Bytes::copy_from_slice(&self.script[from..to]);
                self.at = to;
            }
            2 => {
                let keep = answer.body.len() * usize::from(self.next()) / 256;
                answer.body.truncate(keep);
            }
            3 => {
                let at = usize::from(u16::from_be_bytes([self.next(), self.next()]));
                let byte = self.next();
                if !answer.body.is_empty() {
                    let mut body = answer.body.to_vec();
                    let at = at % body.len();
                    body[at] = byte;
                    answer.body = body.into();
                }
            }
            4 => {
                const STATUSES: [u16; 12] =
                    [200, 201, 204, 302, 400, 401, 403, 404, 409, 429, 500, 503];
                let status = STATUSES[usize::from(self.next()) % STATUSES.len()];
                answer.status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            }
            5 => answer.body = Bytes::new(),
            _ => {}
        }
        answer
    }
}

type Shared = Arc<Mutex<Proxy>>;

fn lock(proxy: &Shared) -> std::sync::MutexGuard<'_, Proxy> {
    proxy.lock().unwrap_or_else(|e| e.into_inner())
}

async fn handle(
    State(proxy): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = (method.clone(), uri.path().to_owned());
    let upstream = lock(&proxy).upstream.clone();
    let answer = match upstream {
        None => lock(&proxy).replay(key),
        Some(upstream) => {
            let root = lock(&proxy).root.clone();
            let mut answer = forward(&upstream, method, &uri, headers, body).await;
            // Addresses the service hands out point at the proxy, as they
            // would at the service: connectors send nothing elsewhere.
            let body = String::from_utf8_lossy(&answer.body).replace(&upstream, &root);
            answer.body = Bytes::from(body.into_bytes());
            for (_, value) in &mut answer.headers {
                if let Ok(text) = value.to_str()
                    && let Ok(changed) = HeaderValue::from_str(&text.replace(&upstream, &root))
                {
                    *value = changed;
                }
            }
            lock(&proxy)
                .recorded
                .entry(key)
                .or_default()
                .push(answer.clone());
            answer
        }
    };
    let mut response = (answer.status, answer.body).into_response();
    for (name, value) in answer.headers {
        response.headers_mut().insert(name, value);
    }
    response
}

async fn forward(
    upstream: &str,
    method: Method,
    uri: &Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Recorded {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client");
    let url = format!(
        "{upstream}{}",
        uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut request = client.request(method, url).body(body);
    for (name, value) in &headers {
        if name != header::HOST && name != header::CONTENT_LENGTH {
            request = request.header(name, value);
        }
    }
    let response = request.send().await.expect("the simulator answers");
    let status = response.status();
    let headers = response
        .headers()
        .iter()
        .filter(|(name, _)| {
            *name != header::CONTENT_LENGTH
                && *name != header::TRANSFER_ENCODING
                && *name != header::CONNECTION
        })
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    let body = response.bytes().await.expect("the simulator's body");
    Recorded {
        status,
        headers,
        body,
    }
}

/// One service: how to reach it through the proxy, and what the
/// recording kept.
struct Service {
    connector: &'static str,
    settings: ConnectionSettings,
    secret: String,
    /// The recorded answers, and the session after the link.
    recorded: HashMap<(Method, String), Vec<Recorded>>,
    session: Option<Secret<String>>,
    /// The link's answer (for a new link's `resume_sca`).
    answer: Option<ScaAnswer>,
}

struct Bench {
    runtime: Runtime,
    proxy: Shared,
    services: Vec<Service>,
    _sandbox: SandboxHandle,
}

fn bench() -> &'static Mutex<Bench> {
    static BENCH: OnceLock<Mutex<Bench>> = OnceLock::new();
    BENCH.get_or_init(|| Mutex::new(Bench::new()))
}

fn attendance() -> Attendance {
    Attendance {
        psu_present: true,
        redirect_uri: Some(CALLBACK.to_owned()),
    }
}

/// The user at the bank's page: agrees, as the page's form does; types
/// the test bank's PIN when asked for it; or puts the bank's card (a
/// virtual one) in the reader for a code.
async fn solve(challenge: &ScaChallenge, card: Option<&VirtualReaders>) -> ScaAnswer {
    let request = match challenge {
        ScaChallenge::CardReaderLogin { challenge } => Some(CapRequest::Login {
            challenge: challenge.clone(),
        }),
        ScaChallenge::CardReaderSign { numbers } => Some(CapRequest::Sign {
            numbers: numbers.clone(),
        }),
        _ => None,
    };
    if let (Some(request), Some(readers)) = (request, card) {
        let mut session = readers.connect("reader").expect("the virtual reader");
        let pin = Secret::from("1234");
        let code = emv::run(
            session.as_mut(),
            &request,
            &pin,
            None,
            PinPolicy { min_tries: 1 },
        )
        .expect("the card computes a code");
        return ScaAnswer::Code(Secret::new(code.response));
    }
    match challenge {
        ScaChallenge::Secret { .. } => ScaAnswer::Code(Secret::new(
            bankbridge_sandbox::xs2a_playground::PASSWORD.to_owned(),
        )),
        ScaChallenge::Redirect { url } => {
            let back = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("an HTTP client")
                .post(url)
                .form(&[("user", "alex"), ("code", "1234"), ("action", "approve")])
                .send()
                .await
                .expect("the bank's page answers");
            let location = back
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let query = location.split_once('?').map(|(_, q)| q).unwrap_or_default();
            ScaAnswer::Returned(Secret::new(query.to_owned()))
        }
        other => panic!("a challenge the recording cannot answer: {other}"),
    }
}

/// The connection's secret; a bank that needs none gets none.
fn credentials(secret: &str) -> Credentials {
    if secret.is_empty() {
        Credentials::default()
    } else {
        Credentials::with_password(Secret::new(secret.to_owned()))
    }
}

fn window() -> DateWindow {
    let today = Utc::now().date_naive();
    DateWindow::new(today - Days::new(60), today)
}

impl Bench {
    fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let proxy: Shared = Arc::default();
        let (sandbox, proxy_root) = runtime.block_on(async {
            let sandbox = bankbridge_sandbox::spawn(SandboxConfig {
                seed: 7,
                accounts: 2,
                transactions: 40,
                years: 1,
                ..SandboxConfig::default()
            })
            .await
            .expect("the sandbox starts");
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("a loopback port");
            let root = format!("http://{}", listener.local_addr().expect("its address"));
            let app = Router::new().fallback(handle).with_state(proxy.clone());
            tokio::spawn(async move { axum::serve(listener, app).await });
            lock(&proxy).root = root.clone();
            (sandbox, root)
        });
        let mut services = Vec::new();
        let gc = sandbox.gocardless().credentials();
        let mut s = ConnectionSettings::new(gc.base_url, gc.secret_id);
        s.options
            .insert("institution_id".into(), "SANDBOXFINANCE_SFIN0000".into());
        s.options.insert("daily_limit".into(), "1000".into());
        services.push(("gocardless", s, gc.secret_key));
        let eb = sandbox.enablebanking().credentials();
        let mut s = ConnectionSettings::new(eb.base_url, eb.application_id);
        s.options
            .insert("aspsp_name".into(), "Sandbox Pankki".into());
        s.options.insert("aspsp_country".into(), "FI".into());
        s.options.insert("daily_limit".into(), "1000".into());
        services.push(("enablebanking", s, eb.private_key_pem));
        let kl = sandbox.klarna().credentials();
        let mut s = ConnectionSettings::new(
            format!(
                "{}{}",
                sandbox.root_url(),
                bankbridge_sandbox::xs2a_playground::PREFIX
            ),
            kl.username,
        );
        s.options.insert("bank_code".into(), kl.bank_code);
        s.options.insert("country_code".into(), kl.country_code);
        services.push(("klarna", s, kl.api_token));
        // A Berlin Group bank whose SCA is a code from the customer's card.
        let be = sandbox.xs2a("be").expect("the card bank");
        let creds = be.credentials();
        let mut s = ConnectionSettings::new(creds.base_url.clone(), creds.psu_id.clone());
        s.options.insert("bank".into(), "sandbox-be".into());
        services.push(("xs2a", s, creds.password.clone()));
        let card = VirtualReaders::new();
        card.insert(
            "reader",
            Box::new(VirtualCard::new(be.card().clone()).expect("the bank's card")),
        );
        let services = services
            .into_iter()
            .map(|(connector, settings, secret)| {
                runtime.block_on(record(
                    &proxy,
                    &proxy_root,
                    connector,
                    settings,
                    secret,
                    &card,
                ))
            })
            .collect();
        lock(&proxy).upstream = None;
        Bench {
            runtime,
            proxy,
            services,
            _sandbox: sandbox,
        }
    }
}

/// Links and syncs `connector` against its simulator through the proxy,
/// keeping every answer.
async fn record(
    proxy: &Shared,
    proxy_root: &str,
    connector: &'static str,
    mut settings: ConnectionSettings,
    secret: String,
    card: &VirtualReaders,
) -> Service {
    let url = url::Url::parse(&settings.base_url).expect("the simulator's address");
    let upstream = format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str().unwrap_or("127.0.0.1"),
        url.port_or_known_default().unwrap_or(80)
    );
    settings.base_url = format!("{proxy_root}{}", url.path());
    {
        let mut p = lock(proxy);
        p.upstream = Some(upstream);
        p.recorded.clear();
    }
    let mut c = bankbridge_connectors::build(connector, &settings, credentials(&secret))
        .unwrap_or_else(|e| panic!("{connector}: {e}"));
    c.attend(&attendance());
    let mut answer = None;
    for _ in 0..4 {
        match c.login().await {
            Ok(()) => break,
            Err(ConnectorError::ScaRequired(challenge)) => {
                let given = solve(&challenge, Some(card)).await;
                for _ in 0..20 {
                    match c.resume_sca(&given).await {
                        Ok(ScaProgress::Done) => break,
                        Ok(ScaProgress::Pending { .. }) => {
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                        Err(e) => panic!("{connector}: the recorded link failed: {e}"),
                    }
                }
                answer = Some(given);
            }
            Err(e) => panic!("{connector}: the recorded login failed: {e}"),
        }
    }
    let session = c.session_state();
    let accounts = c
        .accounts()
        .await
        .unwrap_or_else(|e| panic!("{connector}: {e}"));
    assert!(
        !accounts.is_empty(),
        "{connector}: the recording found no account"
    );
    for account in &accounts {
        c.window(account, window())
            .await
            .unwrap_or_else(|e| panic!("{connector}: {e}"));
    }
    let recorded = std::mem::take(&mut lock(proxy).recorded);
    Service {
        connector,
        settings,
        secret,
        recorded,
        session,
        answer,
    }
}

/// One sync of `c`: login (restored, or a new link answered once), the
/// accounts, then each account's window.
async fn sync(c: &mut dyn Connector, answer: Option<&ScaAnswer>) -> Result<usize, ConnectorError> {
    match c.login().await {
        Ok(()) => {}
        Err(ConnectorError::ScaRequired(_)) => {
            if let Some(answer) = answer {
                c.resume_sca(answer).await?;
            }
            return Ok(0);
        }
        Err(e) => return Err(e),
    }
    let accounts = c.accounts().await?;
    let mut ids = std::collections::HashSet::new();
    for account in &accounts {
        assert!(!account.provider_id.is_empty(), "an account without an id");
        assert!(
            ids.insert(account.provider_id.clone()),
            "account {} twice",
            account.provider_id
        );
    }
    let window = window();
    let mut rows = 0;
    for account in accounts.iter().take(3) {
        let page = c.window(account, window).await?;
        for row in &page.transactions {
            assert!(
                window.contains(row.booking_date),
                "a row of {} outside the window {window:?}",
                row.booking_date
            );
            assert!(
                row.provider_id.as_deref() != Some(""),
                "a row with an empty id"
            );
        }
        rows += page.transactions.len();
    }
    Ok(rows)
}

/// Sets the bench up before the first input, so its time (a store, a
/// sandbox) does not count against the first input's time limit.
pub fn init() {
    drop(bench().lock());
}

pub fn run(data: &[u8]) {
    let Some((&pick, script)) = data.split_first() else {
        return;
    };
    let bench = bench().lock().unwrap_or_else(|e| e.into_inner());
    let service = &bench.services[usize::from(pick & 0x7F) % bench.services.len()];
    let fresh = pick & 0x80 != 0;
    {
        let mut p = lock(&bench.proxy);
        p.recorded = service.recorded.clone();
        p.served.clear();
        p.script = script.to_vec();
        p.at = 0;
        p.requests = 0;
    }
    let mut c = bankbridge_connectors::build(
        service.connector,
        &service.settings,
        credentials(&service.secret),
    )
    .expect("the connector builds");
    c.attend(&attendance());
    if !fresh && let Some(session) = &service.session {
        c.restore_session(session.clone());
    }
    let result = bench
        .runtime
        .block_on(sync(c.as_mut(), service.answer.as_ref()));
    // The harness's own check: the answers as recorded sync again.
    if !fresh && script.iter().all(|b| *b == 0) {
        match result {
            Ok(rows) => assert!(
                rows > 0,
                "{}: the recorded sync found no rows",
                service.connector
            ),
            Err(e) => panic!(
                "{}: the recorded sync failed on replay: {e}",
                service.connector
            ),
        }
    }
    let requests = lock(&bench.proxy).requests;
    assert!(
        requests <= MAX_REQUESTS,
        "{}: {requests} requests in one sync: it loops on these answers",
        service.connector
    );
}
