//! The simulator's PKI, made with rcgen on first run and reused after:
//!
//! * `ca.pem` / `ca-key.pem`: a root CA. It signs the server certificate, the
//!   RP client certificate and, each run, an in-memory "customer CA" that
//!   issues the simulated users' BankID certificates;
//! * `server-cert.pem` / `server-key.pem`: the TLS server (SAN IP 127.0.0.1,
//!   DNS localhost);
//! * `rp-cert.pem` / `rp-key.pem`: the relying party's client certificate, the
//!   pair an RP (pybankid, our client) presents.
//!
//! Key files are written with mode 0600. A directory with some files missing
//! is regenerated whole, so the set always belongs together.
use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{Datelike, NaiveDate};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;

use super::users::User;

/// Where the PEM files of a simulator live.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertPaths {
    pub dir: PathBuf,
    /// The root CA: trust it to reach the simulator (it signed the server cert).
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// The RP client certificate and its key (PEM), for mutual TLS.
    pub rp_cert: PathBuf,
    pub rp_key: PathBuf,
}

impl CertPaths {
    pub fn in_dir(dir: &Path) -> Self {
        CertPaths {
            dir: dir.to_path_buf(),
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca-key.pem"),
            server_cert: dir.join("server-cert.pem"),
            server_key: dir.join("server-key.pem"),
            rp_cert: dir.join("rp-cert.pem"),
            rp_key: dir.join("rp-key.pem"),
        }
    }

    fn all(&self) -> [&PathBuf; 6] {
        [
            &self.ca_cert,
            &self.ca_key,
            &self.server_cert,
            &self.server_key,
            &self.rp_cert,
            &self.rp_key,
        ]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("BankID simulator certificates in {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "BankID simulator certificates in {dir} cannot be used ({what}); delete the directory to make new ones"
    )]
    Unusable { dir: PathBuf, what: String },
    #[error("generating BankID simulator certificates: {0}")]
    Generate(#[from] rcgen::Error),
}

const ORG: &str = "bankbridge sandbox";

fn dn(entries: &[(DnType, &str)]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for (t, v) in entries {
        dn.push(t.clone(), DnValue::Utf8String((*v).to_owned()));
    }
    dn
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

fn validity(params: &mut CertificateParams, from: NaiveDate, years: i32) {
    let to = NaiveDate::from_ymd_opt(from.year() + years, from.month(), 1).unwrap_or(from);
    validity_between(params, from, to);
}

fn validity_between(params: &mut CertificateParams, from: NaiveDate, to: NaiveDate) {
    params.not_before = rcgen::date_time_ymd(from.year(), from.month() as u8, from.day() as u8);
    params.not_after = rcgen::date_time_ymd(to.year(), to.month() as u8, to.day() as u8);
}

fn yesterday() -> NaiveDate {
    chrono::Utc::now()
        .date_naive()
        .pred_opt()
        .unwrap_or_default()
}

/// The root's parameters. Rebuilt the same way on every run, so a stored
/// root key can sign again (the issuer name and key identifier match).
fn root_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(&[
        (DnType::CountryName, "SE"),
        (DnType::OrganizationName, ORG),
        (DnType::CommonName, "bankbridge BankID Simulator Root CA"),
    ]);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut p, yesterday(), 20);
    p
}

struct Generated {
    files: Vec<(PathBuf, String, bool)>,
}

fn generate(paths: &CertPaths) -> Result<Generated, rcgen::Error> {
    let root_key = KeyPair::generate()?;
    let root = CertifiedIssuer::self_signed(root_params(), root_key)?;

    let server_key = KeyPair::generate()?;
    let mut sp = CertificateParams::default();
    sp.distinguished_name = dn(&[
        (DnType::OrganizationName, ORG),
        (DnType::CommonName, "bankbridge BankID simulator"),
    ]);
    sp.subject_alt_names = vec![
        SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
        SanType::DnsName("localhost".try_into()?),
    ];
    sp.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    sp.serial_number = Some(random_serial());
    sp.use_authority_key_identifier_extension = true;
    validity(&mut sp, yesterday(), 10);
    let server = sp.signed_by(&server_key, &*root)?;

    // Shaped like the public test RP certificate ("FP Testcert"): the name
    // attribute is what the app shows as the RP.
    let rp_key = KeyPair::generate()?;
    let mut rp = CertificateParams::default();
    rp.distinguished_name = dn(&[
        (DnType::CountryName, "SE"),
        (DnType::OrganizationName, "bankbridge sandbox RP"),
        (DnType::CustomDnType(vec![2, 5, 4, 5]), "5566778899"),
        (
            DnType::CustomDnType(vec![2, 5, 4, 41]),
            "bankbridge sandbox RP",
        ),
        (DnType::CommonName, "FP Testcert bankbridge"),
    ]);
    rp.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    rp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    rp.serial_number = Some(random_serial());
    rp.use_authority_key_identifier_extension = true;
    validity(&mut rp, yesterday(), 10);
    let rp_cert = rp.signed_by(&rp_key, &*root)?;

    Ok(Generated {
        files: vec![
            (paths.ca_cert.clone(), root.pem(), false),
            (paths.ca_key.clone(), root.key().serialize_pem(), true),
            (paths.server_cert.clone(), server.pem(), false),
            (paths.server_key.clone(), server_key.serialize_pem(), true),
            (paths.rp_cert.clone(), rp_cert.pem(), false),
            (paths.rp_key.clone(), rp_key.serialize_pem(), true),
        ],
    })
}

/// Write through a temporary file and a rename, so a reader never sees half
/// a file; keys are created 0600 before a byte is written.
fn write_file(path: &Path, text: &str, secret: bool) -> io::Result<()> {
    let tmp = path.with_extension("pem.tmp");
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut f = opts.open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)
}

/// `.generating` in the directory, held while one process makes the set.
struct GenerationLock(PathBuf);

impl GenerationLock {
    /// Wait for another maker to finish (a lock older than 30 s is taken to
    /// be left over from a crash).
    fn take(dir: &Path) -> io::Result<GenerationLock> {
        let path = dir.join(".generating");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(_) => return Ok(GenerationLock(path)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if std::time::Instant::now() > deadline {
                        let _ = fs::remove_file(&path);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for GenerationLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// The loaded PKI of a running simulator.
pub struct Pki {
    pub paths: CertPaths,
    pub ca_pem: String,
    pub ca_der: CertificateDer<'static>,
    pub server_config: Arc<rustls::ServerConfig>,
    /// Issues users' certificates and signs OCSP answers about them.
    customer_ca: CertifiedIssuer<'static, KeyPair>,
    users: Mutex<HashMap<String, Arc<UserIdentity>>>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print keys.
        f.debug_struct("Pki")
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

/// Remembered users' keys stop at this many; past it the cache starts over
/// (a user then gets a new key and certificate, as after a re-issue).
const MAX_CACHED_USERS: usize = 50_000;

impl Pki {
    /// Load the PEM files in `dir`, making them first if any is missing.
    pub fn load_or_create(dir: &Path) -> Result<Pki, PkiError> {
        let paths = CertPaths::in_dir(dir);
        let io_err = |source| PkiError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        let missing = |paths: &CertPaths| paths.all().into_iter().filter(|p| !p.exists()).count();
        if missing(&paths) > 0 {
            fs::create_dir_all(dir).map_err(io_err)?;
            // Two simulators starting on one empty directory (parallel
            // tests, two sandboxes) must not interleave two sets: one makes
            // them, the other waits.
            let _guard = GenerationLock::take(dir).map_err(io_err)?;
            let n = missing(&paths);
            if n > 0 {
                if n < paths.all().len() {
                    tracing::warn!(
                        dir = %dir.display(),
                        "BankID simulator: some certificate files are missing; making a new set"
                    );
                }
                for (path, text, secret) in generate(&paths)?.files {
                    write_file(&path, &text, secret).map_err(io_err)?;
                }
                tracing::info!(dir = %dir.display(), "BankID simulator: made a CA, a server and an RP certificate");
            }
        }
        let read = |p: &Path| fs::read_to_string(p).map_err(io_err);
        let unusable = |what: String| PkiError::Unusable {
            dir: dir.to_path_buf(),
            what,
        };
        let ca_pem = read(&paths.ca_cert)?;
        let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
            .map_err(|e| unusable(format!("ca.pem: {e}")))?;
        let root_key = KeyPair::from_pem(&read(&paths.ca_key)?)
            .map_err(|e| unusable(format!("ca-key.pem: {e}")))?;
        let server_der = CertificateDer::from_pem_slice(read(&paths.server_cert)?.as_bytes())
            .map_err(|e| unusable(format!("server-cert.pem: {e}")))?;
        let server_key = PrivateKeyDer::from_pem_slice(read(&paths.server_key)?.as_bytes())
            .map_err(|e| unusable(format!("server-key.pem: {e}")))?;
        let rp_der = CertificateDer::from_pem_slice(read(&paths.rp_cert)?.as_bytes())
            .map_err(|e| unusable(format!("rp-cert.pem: {e}")))?;
        // A set mixed from two generations would fail every handshake with
        // an obscure error: check each signature against the CA here.
        let ca_key = super::der::cert_fields(&ca_der)
            .map(|f| f.public_key.to_vec())
            .ok_or_else(|| unusable("ca.pem: unreadable certificate".into()))?;
        let ca_key = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_ASN1,
            ca_key,
        );
        for (name, der) in [("server-cert.pem", &server_der), ("rp-cert.pem", &rp_der)] {
            let signed_by_ca = super::der::cert_signed_parts(der)
                .is_some_and(|(tbs, sig)| ca_key.verify(tbs, sig).is_ok());
            if !signed_by_ca {
                return Err(unusable(format!("{name} was not issued by ca.pem")));
            }
        }
        let server_config = server_config(ca_der.clone(), server_der, server_key)
            .map_err(|e| unusable(format!("TLS set-up: {e}")))?;

        // A fresh customer CA each run, under the stored root.
        let root = Issuer::new(root_params(), root_key);
        let mut cp = CertificateParams::default();
        cp.distinguished_name = dn(&[
            (DnType::CountryName, "SE"),
            (DnType::OrganizationName, ORG),
            (
                DnType::CommonName,
                "bankbridge BankID Simulator Customer CA",
            ),
        ]);
        cp.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        cp.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        cp.serial_number = Some(random_serial());
        cp.use_authority_key_identifier_extension = true;
        validity(&mut cp, yesterday(), 10);
        let customer_ca = CertifiedIssuer::signed_by(cp, KeyPair::generate()?, &root)?;

        Ok(Pki {
            paths,
            ca_pem,
            ca_der,
            server_config,
            customer_ca,
            users: Mutex::new(HashMap::new()),
        })
    }

    pub fn customer_ca_der(&self) -> &[u8] {
        self.customer_ca.der()
    }

    /// Sign `msg` with the customer CA's key (ECDSA P-256, ASN.1 signature).
    pub fn customer_ca_sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        use rcgen::SigningKey;
        self.customer_ca.key().sign(msg)
    }

    /// The user's BankID: a key and a certificate from the customer CA,
    /// made on first use and remembered.
    pub fn identity(&self, user: &User) -> Result<Arc<UserIdentity>, rcgen::Error> {
        if let Some(id) = self.lock_users().get(&user.personal_number) {
            return Ok(id.clone());
        }
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::default();
        p.distinguished_name = dn(&[
            (DnType::CountryName, "SE"),
            (DnType::CustomDnType(vec![2, 5, 4, 4]), &user.surname),
            (DnType::CustomDnType(vec![2, 5, 4, 42]), &user.given_name),
            (
                DnType::CustomDnType(vec![2, 5, 4, 5]),
                &user.personal_number,
            ),
            (DnType::CustomDnType(vec![2, 5, 4, 41]), &user.name),
            (DnType::CommonName, &user.name),
        ]);
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::ContentCommitment,
        ];
        let serial = random_serial();
        p.serial_number = Some(serial.clone());
        p.use_authority_key_identifier_extension = true;
        // From the BankID's issue date; still valid today (an expired
        // certificate would fail every verifier), whatever the issue date.
        let to = NaiveDate::from_ymd_opt(user.issue_date.year() + 4, user.issue_date.month(), 1)
            .unwrap_or(user.issue_date)
            .max(yesterday() + chrono::Days::new(2 * 365));
        validity_between(&mut p, user.issue_date, to);
        let cert = p.signed_by(&key, &*self.customer_ca)?;
        let signer = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            key.serialized_der(),
            &SystemRandom::new(),
        )
        .map_err(|e| rcgen::Error::RingKeyRejected(e.to_string()))?;
        let id = Arc::new(UserIdentity {
            cert_der: cert.der().to_vec(),
            signer,
        });
        let mut users = self.lock_users();
        if users.len() >= MAX_CACHED_USERS {
            users.clear();
        }
        Ok(users
            .entry(user.personal_number.clone())
            .or_insert(id)
            .clone())
    }

    fn lock_users(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<UserIdentity>>> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A simulated user's certificate and signing key.
pub struct UserIdentity {
    pub cert_der: Vec<u8>,
    signer: EcdsaKeyPair,
}

impl UserIdentity {
    /// ECDSA P-256 over SHA-256, as r‖s (the XML-DSig encoding).
    pub fn sign_fixed(&self, msg: &[u8]) -> Option<Vec<u8>> {
        self.signer
            .sign(&SystemRandom::new(), msg)
            .ok()
            .map(|s| s.as_ref().to_vec())
    }
}

/// TLS 1.2/1.3 with client certificates optional at the handshake, so a
/// request without one reaches the simulator and gets a JSON 401; a
/// certificate from another CA fails the handshake.
fn server_config(
    ca: CertificateDer<'static>,
    server: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).map_err(|e| e.to_string())?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| e.to_string())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server, ca], key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
