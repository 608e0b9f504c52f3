//! Encryption at rest: a 256-bit master key and XChaCha20-Poly1305 sealing.
//!
//! Credentials and bank session tokens are sealed before they reach the
//! store. The associated data binds a sealed blob to its purpose, so a blob
//! copied into another column or row fails to open instead of decrypting.
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::Secret;

/// Environment variable holding the master key (base64 or hex of 32 bytes).
pub const MASTER_KEY_ENV: &str = "BANKBRIDGE_MASTER_KEY";
const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("no master key: set {MASTER_KEY_ENV} or run `bankbridge init` to create {0}")]
    Missing(PathBuf),
    #[error("the master key in {0} is not 32 bytes of base64 or hex")]
    BadKey(String),
    #[error("cannot read or write the master key file {path}: {detail}")]
    Io { path: PathBuf, detail: String },
    #[error(
        "a sealed secret does not open with this master key (wrong key, or the data was altered)"
    )]
    Open,
}

/// The master key. Never printed, wiped on drop.
pub struct MasterKey(Secret<Vec<u8>>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    pub fn generate() -> Self {
        let mut k = vec![0u8; 32];
        rand::rng().fill_bytes(&mut k);
        MasterKey(Secret::new(k))
    }

    pub fn from_text(text: &str, origin: &str) -> Result<Self, CryptoError> {
        let t = text.trim();
        let bytes = B64
            .decode(t)
            .ok()
            .filter(|b| b.len() == 32)
            .or_else(|| hex::decode(t).ok().filter(|b| b.len() == 32))
            .ok_or_else(|| CryptoError::BadKey(origin.to_owned()))?;
        Ok(MasterKey(Secret::new(bytes)))
    }

    /// The key from `BANKBRIDGE_MASTER_KEY`, else from `key_file`.
    pub fn load(key_file: &Path) -> Result<Self, CryptoError> {
        if let Ok(v) = std::env::var(MASTER_KEY_ENV) {
            return Self::from_text(&v, MASTER_KEY_ENV);
        }
        match std::fs::read_to_string(key_file) {
            Ok(text) => Self::from_text(&text, &key_file.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(CryptoError::Missing(key_file.to_owned()))
            }
            Err(e) => Err(CryptoError::Io {
                path: key_file.to_owned(),
                detail: e.to_string(),
            }),
        }
    }

    /// Create `key_file` with a new key, readable by its owner only (mode 0600).
    /// Refuses to overwrite an existing file: that would orphan every sealed secret.
    pub fn create_file(key_file: &Path) -> Result<Self, CryptoError> {
        let io = |e: std::io::Error| CryptoError::Io {
            path: key_file.to_owned(),
            detail: e.to_string(),
        };
        if let Some(dir) = key_file.parent().filter(|d| !d.as_os_str().is_empty()) {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt;
                builder.mode(0o700);
            }
            builder.create(dir).map_err(io)?;
        }
        let key = Self::generate();
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(key_file).map_err(io)?;
        let encoded = Zeroizing::new(B64.encode(key.0.expose()));
        f.write_all(encoded.as_bytes()).map_err(io)?;
        f.write_all(b"\n").map_err(io)?;
        f.sync_all().map_err(io)?;
        Ok(key)
    }

    /// A short public fingerprint of the key (16 hex digits): stored beside
    /// the data it seals, so that starting with another key fails at once
    /// instead of sealing new secrets under it. A one-way hash: it tells
    /// nothing about the key.
    pub fn check_value(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"bankbridge master key check value v1\0");
        h.update(self.0.expose());
        hex::encode(&h.finalize()[..8])
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new_from_slice(self.0.expose()).expect("32-byte key")
    }

    /// Encrypt `plaintext`; `purpose` must be given again to open it.
    pub fn seal(&self, plaintext: &[u8], purpose: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ct = self
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: purpose.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    pub fn open(&self, sealed: &[u8], purpose: &str) -> Result<Secret<Vec<u8>>, CryptoError> {
        if sealed.len() < 1 + NONCE_LEN + 16 || sealed[0] != VERSION {
            return Err(CryptoError::Open);
        }
        let (nonce, ct) = sealed[1..].split_at(NONCE_LEN);
        self.cipher()
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: purpose.as_bytes(),
                },
            )
            .map(Secret::new)
            .map_err(|_| CryptoError::Open)
    }

    pub fn seal_str(&self, plaintext: &Secret<String>, purpose: &str) -> Vec<u8> {
        self.seal(plaintext.expose().as_bytes(), purpose)
    }

    pub fn open_str(&self, sealed: &[u8], purpose: &str) -> Result<Secret<String>, CryptoError> {
        let bytes = self.open(sealed, purpose)?;
        String::from_utf8(bytes.expose().clone())
            .map(Secret::new)
            .map_err(|_| CryptoError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_values_tell_keys_apart_and_stay_put() {
        let a = MasterKey::from_text(&"11".repeat(32), "test").unwrap();
        let b = MasterKey::from_text(&"12".repeat(32), "test").unwrap();
        assert_eq!(a.check_value(), a.check_value());
        assert_eq!(a.check_value().len(), 16);
        assert_ne!(a.check_value(), b.check_value());
        assert!(!a.check_value().contains(&"11".repeat(4)));
    }

    #[test]
    fn seal_open_roundtrip_and_purpose_binding() {
        let k = MasterKey::generate();
        let sealed = k.seal(b"hunter2", "connection:1:credentials");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(
            k.open(&sealed, "connection:1:credentials")
                .unwrap()
                .expose(),
            b"hunter2"
        );
        assert!(k.open(&sealed, "connection:2:credentials").is_err());
        let other = MasterKey::generate();
        assert!(other.open(&sealed, "connection:1:credentials").is_err());
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(k.open(&tampered, "connection:1:credentials").is_err());
        assert!(k.open(&[], "x").is_err());
    }

    #[test]
    fn key_file_is_private_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/master.key");
        let k = MasterKey::create_file(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let reloaded = MasterKey::from_text(&text, "file").unwrap();
        let sealed = k.seal(b"x", "p");
        assert_eq!(reloaded.open(&sealed, "p").unwrap().expose(), b"x");
        assert!(
            MasterKey::create_file(&path).is_err(),
            "must not overwrite a key"
        );
        assert!(matches!(
            MasterKey::from_text("short", "t"),
            Err(CryptoError::BadKey(_))
        ));
    }
}
