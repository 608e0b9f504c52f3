//! The HTTPS server: rustls with optional client certificates in front of
//! the RP router, HTTP/1.1 and HTTP/2. The verified client certificate's
//! subject travels to the handlers as a request extension ([`api::Peer`]).
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

use super::api::{self, Peer};
use super::{BankIdSim, der};

/// A client has this long to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often old orders are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Serve until `shutdown` turns true (or its sender is dropped).
pub async fn serve(
    listener: TcpListener,
    sim: Arc<BankIdSim>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(sim.server_config());
    let app = api::router(sim.clone());
    let sweeper = {
        let sim = sim.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => { sim.sweep(); }
                    _ = stop.changed() => break,
                }
            }
        })
    };
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        let (tcp, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off a little.
                tracing::debug!(error = %e, "BankID simulator: accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "BankID simulator: TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let peer = Peer {
                client_subject: tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|cert| {
                        der::cert_fields(cert)
                            .and_then(|f| der::name_to_string(f.subject))
                            .unwrap_or_default()
                    }),
            };
            let service = hyper::service::service_fn(move |req| {
                app.clone().oneshot(api::with_peer(req, peer.clone()))
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            tokio::select! {
                r = conn => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "BankID simulator: connection ended with an error");
                    }
                }
                _ = stop.changed() => {}
            }
        });
    }
    sweeper.abort();
}
