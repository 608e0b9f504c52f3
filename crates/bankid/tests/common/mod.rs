//! Shared by the HTTPS tests: a CA, server and client certificates made with
//! rcgen, and a tiny scripted mTLS server on 127.0.0.1 (not a simulator: each
//! test says what the server answers).
#![allow(dead_code)]
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::any;
use axum::serve::IncomingStream;
use bankbridge_bankid::{BankIdClient, BankIdError, Environment, PersonalNumber};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

pub const TOKEN: &str = "67df3917-fa0d-44e5-b327-edcc928297f8";
pub const SECRET: &str = "d28db9a7-4cde-429e-a983-359be676944c";
pub const AUTOSTART: &str = "7c40b5c9-fa74-49cf-b98c-bfe651f9a7c6";
pub const ORDER: &str = "131daac9-16c6-4618-beb0-365768f37288";
pub const PNR: &str = "199001011239";

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

pub struct Ca {
    pub issuer: CertifiedIssuer<'static, KeyPair>,
}

pub struct Leaf {
    pub cert_pem: String,
    pub cert_der: CertificateDer<'static>,
    pub key_pem: String,
    pub key_der: Vec<u8>,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    pub fn leaf(&self, cn: &str, sans: &[&str], eku: ExtendedKeyUsagePurpose) -> Leaf {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![eku];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }
}

/// A CA, the server's certificate for 127.0.0.1 and an RP client certificate.
pub struct Pki {
    pub ca: Ca,
    pub server: Leaf,
    pub client: Leaf,
}

impl Pki {
    pub fn new() -> Self {
        let ca = Ca::new("Test BankID CA");
        let server = ca.leaf(
            "127.0.0.1",
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = ca.leaf("Test RP", &[], ExtendedKeyUsagePurpose::ClientAuth);
        Self { ca, server, client }
    }
}

// ---------------------------------------------------------------------------
// The scripted server
// ---------------------------------------------------------------------------

/// One request the server received.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: Method,
    pub endpoint: String,
    pub content_type: Option<String>,
    pub body: Value,
    /// How many calls to this endpoint came before (0 for the first).
    pub nth: usize,
    pub client_cert: Option<Vec<u8>>,
}

pub type Responder = Arc<dyn Fn(&Call) -> (u16, String) + Send + Sync>;

/// What a BankID server answers when a test does not say otherwise.
pub fn default_answer(call: &Call) -> (u16, String) {
    if call.method != Method::POST {
        return (
            405,
            json!({"errorCode": "methodNotAllowed", "details": "Use POST"}).to_string(),
        );
    }
    match call.endpoint.as_str() {
        "auth" | "sign" | "payment" => (
            200,
            json!({"orderRef": ORDER, "autoStartToken": AUTOSTART,
                   "qrStartToken": TOKEN, "qrStartSecret": SECRET})
            .to_string(),
        ),
        "phone/auth" | "phone/sign" => (200, json!({"orderRef": ORDER}).to_string()),
        "collect" => (
            200,
            json!({"orderRef": ORDER, "status": "pending", "hintCode": "outstandingTransaction"})
                .to_string(),
        ),
        "cancel" => (200, "{}".into()),
        _ => (
            404,
            json!({"errorCode": "notFound", "details": "No such endpoint"}).to_string(),
        ),
    }
}

#[derive(Clone)]
pub struct ServerState {
    pub calls: Arc<Mutex<Vec<Call>>>,
    pub responder: Responder,
}

/// The client certificate the TLS handshake saw.
#[derive(Clone, Debug)]
pub struct Peer(pub Option<Vec<u8>>);

pub struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(conn) => conn,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(Peer(None))
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

pub struct Server {
    pub base: url::Url,
    pub calls: Arc<Mutex<Vec<Call>>>,
    pub handshake_failures: Arc<AtomicUsize>,
}

impl Server {
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    pub fn count(&self, endpoint: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.endpoint == endpoint)
            .count()
    }
}

pub async fn handle(
    State(state): State<ServerState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    method: Method,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let call = {
        let mut calls = state.calls.lock().unwrap();
        let nth = calls.iter().filter(|c| c.endpoint == endpoint).count();
        let call = Call {
            method,
            endpoint,
            content_type: headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            nth,
            client_cert: peer.0,
        };
        calls.push(call.clone());
        call
    };
    let (status, body) = (state.responder)(&call);
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        body,
    )
}

/// Start the server on 127.0.0.1 with the PKI's server certificate, asking
/// for client certificates from the PKI's CA.
pub async fn start(pki: &Pki, responder: Responder) -> Server {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![pki.server.cert_der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server.key_der.clone())),
        )
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));

    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel(64);
    let handshake_failures = Arc::new(AtomicUsize::new(0));
    let failures = handshake_failures.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = tcp.accept().await else {
                return;
            };
            let (acceptor, tx, failures) = (acceptor.clone(), tx.clone(), failures.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(5), acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let cert = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(|c| c.as_ref().to_vec());
                        let _ = tx.send((tls, Peer(cert))).await;
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });

    let calls = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route("/rp/v6.0/{*endpoint}", any(handle))
        .with_state(ServerState {
            calls: calls.clone(),
            responder,
        });
    let listener = TlsListener { accepted: rx };
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
            .await
            .unwrap();
    });
    Server {
        base: url::Url::parse(&format!("https://127.0.0.1:{port}/rp/v6.0/")).unwrap(),
        calls,
        handshake_failures,
    }
}

pub fn responder(f: impl Fn(&Call) -> Option<(u16, String)> + Send + Sync + 'static) -> Responder {
    Arc::new(move |call| f(call).unwrap_or_else(|| default_answer(call)))
}

pub fn defaults() -> Responder {
    responder(|_| None)
}

pub fn client(pki: &Pki, server: &Server) -> BankIdClient {
    BankIdClient::builder()
        .environment(Environment::Custom(server.base.clone()))
        .identity_pem(&pki.client.cert_pem, &pki.client.key_pem)
        .server_ca_pem(pki.ca.pem())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

pub fn pnr() -> PersonalNumber {
    PersonalNumber::parse(PNR).unwrap()
}

pub fn complete_body() -> String {
    json!({
        "orderRef": ORDER,
        "status": "complete",
        "completionData": {
            "user": {"personalNumber": PNR, "name": "Karl Karlsson",
                     "givenName": "Karl", "surname": "Karlsson"},
            "device": {"ipAddress": "192.0.2.10", "uhi": "OZvYM9VvyiAmG7NA5jU5zRGcf3Ji"},
            "bankIdIssueDate": "2020-02-01",
            "signature": "PD94bWwgdmVyc2lvbj0iMS4wIj8+PFNpZ25hdHVyZS8+",
            "ocspResponse": "MIIHegoBAKCCB3MwggdvBgkrBgEFBQcwAQEEggdgMIIHXDCB"
        }
    })
    .to_string()
}

pub fn is_transport(e: &BankIdError) -> bool {
    matches!(e, BankIdError::Transport { .. })
}
