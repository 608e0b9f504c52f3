//! The certificate-expiry probe against a real TLS server on loopback.

use std::sync::Arc;
use std::time::Duration;

use bankbridge_checks::tls::{TlsProbeError, certificate_expiry};
use chrono::{DateTime, TimeDelta, Utc};
use rcgen::{CertificateParams, DnType, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

/// Serves TLS on 127.0.0.1 with a fresh self-signed certificate valid until
/// `not_after`; returns the port. Connections are accepted until the test ends.
async fn serve_tls(not_after: DateTime<Utc>) -> u16 {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "bankbridge expiry test");
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let since_epoch = |t: DateTime<Utc>| Duration::from_secs(u64::try_from(t.timestamp()).unwrap());
    params.not_before = epoch + since_epoch(Utc::now() - TimeDelta::days(1));
    params.not_after = epoch + since_epoch(not_after);
    let cert = params.self_signed(&key).unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // The probe hangs up after the handshake; errors are expected.
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn reads_the_leaf_certificates_expiry() {
    let not_after =
        DateTime::from_timestamp((Utc::now() + TimeDelta::days(10)).timestamp(), 0).unwrap();
    let port = serve_tls(not_after).await;

    let expiry = certificate_expiry("127.0.0.1", port, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(expiry.host, "127.0.0.1");
    assert_eq!(expiry.port, port);
    assert_eq!(expiry.not_after, not_after);
    assert!((9..=10).contains(&expiry.days_left), "{}", expiry.days_left);
    assert!(
        expiry.subject.contains("CN=bankbridge expiry test"),
        "{}",
        expiry.subject
    );

    // By name too (SNI = localhost), self-signed and all.
    let expiry = certificate_expiry("localhost", port, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        (expiry.host.as_str(), expiry.not_after),
        ("localhost", not_after)
    );
}

#[tokio::test]
async fn an_expired_certificate_is_still_read() {
    let not_after =
        DateTime::from_timestamp((Utc::now() - TimeDelta::hours(36)).timestamp(), 0).unwrap();
    let port = serve_tls(not_after).await;
    let expiry = certificate_expiry("127.0.0.1", port, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(expiry.not_after, not_after);
    assert_eq!(
        expiry.days_left, -2,
        "36 hours ago is the second day past expiry"
    );
}

#[tokio::test]
async fn a_refused_port_is_a_connect_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let err = certificate_expiry("127.0.0.1", port, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(matches!(err, TlsProbeError::Connect { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("127.0.0.1:{port}: could not connect")),
        "{err}"
    );
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            open.push(tcp); // never answers the ClientHello
        }
    });
    let err = certificate_expiry("127.0.0.1", port, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, TlsProbeError::Timeout { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    hold.abort();
}

#[tokio::test]
async fn a_plain_text_server_fails_the_handshake() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut tcp, _)) = listener.accept().await {
            let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        }
    });
    let err = certificate_expiry("127.0.0.1", port, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(matches!(err, TlsProbeError::Handshake { .. }), "{err:?}");
}
