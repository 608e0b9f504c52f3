//! How long a host's TLS certificate has left.
//!
//! A flow check's hosts are probed so an expiring certificate alerts weeks
//! before the flow breaks on it. The probe does a TLS handshake, reads the
//! leaf certificate's dates and hangs up; it sends no request.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

/// The leaf certificate's expiry, as read from `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateExpiry {
    pub host: String,
    pub port: u16,
    pub not_after: DateTime<Utc>,
    /// Whole days from the probe to `not_after`, rounded down: 0 on the last
    /// day, negative once expired.
    pub days_left: i64,
    /// The leaf's subject, as in `CN=bank.example, O=Example Bank`.
    pub subject: String,
}

/// Why a certificate could not be read. Every message names `host:port`.
#[derive(Debug, thiserror::Error)]
pub enum TlsProbeError {
    #[error("{host}:{port}: not a host name or IP address usable for TLS")]
    InvalidHost { host: String, port: u16 },
    #[error("{host}:{port}: could not connect: {source}")]
    Connect {
        host: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("{host}:{port}: no TLS handshake within {}", humantime::format_duration(*.timeout))]
    Timeout {
        host: String,
        port: u16,
        timeout: Duration,
    },
    #[error("{host}:{port}: TLS handshake failed (is this a TLS port?): {source}")]
    Handshake {
        host: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("{host}:{port}: the server sent no certificate")]
    NoCertificate { host: String, port: u16 },
    #[error("{host}:{port}: the server's certificate could not be parsed: {reason}")]
    Unparsable {
        host: String,
        port: u16,
        reason: String,
    },
}

/// Connects to `host:port`, completes a TLS handshake (SNI = `host`; an IP
/// address is allowed and sends no SNI) and reads the leaf certificate's
/// expiry. `timeout` bounds connecting and the handshake together.
///
/// The certificate is *not* verified: the point is to report its dates, and
/// an expired, self-signed or privately issued certificate (a bank's test
/// system, an internal gateway) is exactly what must still be read rather
/// than fail the probe. Nothing is sent over the connection, so trusting it
/// costs nothing; whether the certificate is valid for real clients is the
/// flow's own HTTPS requests' concern.
pub async fn certificate_expiry(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<CertificateExpiry, TlsProbeError> {
    let leaf = tokio::time::timeout(timeout, leaf_certificate(host, port))
        .await
        .map_err(|_| TlsProbeError::Timeout {
            host: host.to_owned(),
            port,
            timeout,
        })??;
    CertificateExpiry::from_der(host, port, &leaf, Utc::now())
}

impl CertificateExpiry {
    /// Reads a DER leaf certificate as if probed from `host:port` at `now`.
    pub fn from_der(
        host: &str,
        port: u16,
        der: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Self, TlsProbeError> {
        let unparsable = |reason: String| TlsProbeError::Unparsable {
            host: host.to_owned(),
            port,
            reason,
        };
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| unparsable(e.to_string()))?;
        let seconds = cert.validity().not_after.timestamp();
        let not_after = DateTime::from_timestamp(seconds, 0).ok_or_else(|| {
            unparsable(format!("notAfter is out of range ({seconds} s since 1970)"))
        })?;
        Ok(Self {
            host: host.to_owned(),
            port,
            not_after,
            days_left: (not_after - now).num_seconds().div_euclid(86_400),
            subject: cert.subject().to_string(),
        })
    }
}

async fn leaf_certificate(host: &str, port: u16) -> Result<Vec<u8>, TlsProbeError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let server_name =
        ServerName::try_from(bare.to_owned()).map_err(|_| TlsProbeError::InvalidHost {
            host: host.to_owned(),
            port,
        })?;
    let tcp = TcpStream::connect((bare, port))
        .await
        .map_err(|source| TlsProbeError::Connect {
            host: host.to_owned(),
            port,
            source,
        })?;
    let handshake = |source| TlsProbeError::Handshake {
        host: host.to_owned(),
        port,
        source,
    };
    let connector = tokio_rustls::TlsConnector::from(client_config().map_err(handshake)?);
    let tls = connector
        .connect(server_name, tcp)
        .await
        .map_err(handshake)?;
    let (_, connection) = tls.get_ref();
    connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| leaf.as_ref().to_vec())
        .ok_or_else(|| TlsProbeError::NoCertificate {
            host: host.to_owned(),
            port,
        })
}

fn client_config() -> Result<Arc<rustls::ClientConfig>, std::io::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate { provider }))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Accepts whatever the server presents; see [`certificate_expiry`] for why.
/// Handshake signatures are not checked either: with any certificate
/// accepted they would prove nothing.
#[derive(Debug)]
struct AcceptAnyCertificate {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The distinct `https` hosts among `urls`, with their ports (443 unless
/// given), in first-seen order: what to probe for a flow. Other schemes and
/// URLs that do not parse (templates not yet rendered) are skipped. IPv6
/// addresses come without brackets.
pub fn hosts_of<'a>(urls: impl IntoIterator<Item = &'a str>) -> Vec<(String, u16)> {
    let mut hosts: Vec<(String, u16)> = Vec::new();
    for text in urls {
        let Ok(url) = url::Url::parse(text.trim()) else {
            continue;
        };
        if url.scheme() != "https" {
            continue;
        }
        let host = match url.host() {
            Some(url::Host::Domain(name)) => name.trim_end_matches('.').to_ascii_lowercase(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => continue,
        };
        if host.is_empty() {
            continue;
        }
        let entry = (host, url.port_or_known_default().unwrap_or(443));
        if !hosts.contains(&entry) {
            hosts.push(entry);
        }
    }
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_keeps_distinct_https_hosts_in_order() {
        let hosts = hosts_of([
            "https://api.bank.example/v1/login",
            "https://API.bank.example/v1/accounts?x=1",
            "http://plain.example/",
            "https://auth.bank.example:8443/token",
            "https://api.bank.example:443/again",
            "https://api.bank.example:444/other-port",
            "https://127.0.0.1:9443/",
            "https://[::1]/",
            "{{ base_url }}/login",
            "not a url",
            "wss://socket.example/",
        ]);
        assert_eq!(
            hosts,
            vec![
                ("api.bank.example".to_owned(), 443),
                ("auth.bank.example".to_owned(), 8443),
                ("api.bank.example".to_owned(), 444),
                ("127.0.0.1".to_owned(), 9443),
                ("::1".to_owned(), 443),
            ]
        );
        assert!(hosts_of(Vec::<&str>::new()).is_empty());
    }

    #[test]
    fn garbage_is_unparsable_and_names_the_host() {
        let err =
            CertificateExpiry::from_der("bank.example", 443, b"not a certificate", Utc::now())
                .unwrap_err();
        assert!(matches!(err, TlsProbeError::Unparsable { .. }));
        assert!(err.to_string().starts_with("bank.example:443: "), "{err}");
    }

    #[tokio::test]
    async fn an_invalid_host_is_refused_before_connecting() {
        let err = certificate_expiry("bad host name", 443, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, TlsProbeError::InvalidHost { .. }), "{err}");
        assert!(err.to_string().starts_with("bad host name:443: "), "{err}");
    }
}
