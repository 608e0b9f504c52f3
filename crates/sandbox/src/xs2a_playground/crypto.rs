//! The server side of the playground's form encryption: the RSA key whose
//! modulus and exponent travel (hex) in each form's JWT `key`, and the
//! opening of the `{ct, iv, ek}` envelopes clients post back.
//!
//! The scheme is the one the browser client (JSBN RSA + CryptoJS AES)
//! implements: `ek` is RSAES-PKCS#1 v1.5 over the 64 ASCII hex characters of
//! an AES-256 key, `iv` is 32 hex characters, `ct` is AES-256-CBC/PKCS#7 of
//! the UTF-8 JSON form, both binary fields in standard base64. JSBN does not
//! pad its ciphertext to the modulus length, so a short `ek` is left-padded
//! with zeros before decrypting.
use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::Pkcs7};
use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Encrypt, RsaPrivateKey};
use serde_json::{Value, json};

/// Bits of the per-instance RSA key.
pub const RSA_BITS: usize = 2048;

/// Standard alphabet, padding optional: CryptoJS pads, hand-written clients
/// sometimes do not, and neither is ambiguous.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why an envelope could not be opened. Each message names the field and
/// the likely client mistake, since that is what a developer needs to see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the body must be a JSON object {{\"ct\", \"iv\", \"ek\"}}")]
    NotObject,
    #[error("missing field {0} (the envelope is {{\"ct\", \"iv\", \"ek\"}})")]
    Missing(&'static str),
    #[error("{0} must be a string")]
    NotString(&'static str),
    #[error("{field} is not base64: {detail}")]
    Base64 { field: &'static str, detail: String },
    #[error("iv must be 32 hex characters (16 bytes), got {0}")]
    Iv(String),
    #[error(
        "ek is {got} bytes but the RSA modulus is {modulus} bytes: was it encrypted with the key of this sandbox's latest form?"
    )]
    EkSize { got: usize, modulus: usize },
    #[error(
        "ek does not decrypt under this sandbox's RSA key (RSAES-PKCS#1 v1.5): use the modulus and exponent from the form's key"
    )]
    EkDecrypt,
    #[error(
        "ek decrypts to {0} bytes; expected the 64 ASCII hex characters of the AES-256 key (encrypt the hex string, not the raw key)"
    )]
    AesKey(usize),
    #[error("ct is {0} bytes, not a positive multiple of the 16-byte AES block")]
    CtSize(usize),
    #[error("ct does not decrypt with that key and iv (bad PKCS#7 padding): wrong AES key or iv?")]
    Padding,
    #[error("the decrypted form is not UTF-8")]
    Utf8,
    #[error("the decrypted form is not JSON: {0}")]
    Json(String),
}

/// The sandbox instance's RSA key and the hex strings its JWTs carry.
pub struct ServerKey {
    private: RsaPrivateKey,
    modulus_hex: String,
    exponent_hex: String,
    size: usize,
}

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerKey")
            .field("bits", &(self.size * 8))
            .finish_non_exhaustive()
    }
}

impl ServerKey {
    /// A fresh RSA-2048 key. CPU-bound (a fraction of a second): call it off
    /// the async runtime.
    pub fn generate() -> Result<ServerKey, rsa::Error> {
        let private = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, RSA_BITS)?;
        Ok(ServerKey::from_key(private))
    }

    pub fn from_key(private: RsaPrivateKey) -> ServerKey {
        // `to_str_radix(16)` is lowercase without leading zeros: what JSBN's
        // `parseBigInt(N, 16)` and `parseInt(E, 16)` read.
        let modulus_hex = private.n().to_str_radix(16);
        let exponent_hex = private.e().to_str_radix(16);
        let size = private.size();
        ServerKey {
            private,
            modulus_hex,
            exponent_hex,
            size,
        }
    }

    pub fn modulus_hex(&self) -> &str {
        &self.modulus_hex
    }

    pub fn exponent_hex(&self) -> &str {
        &self.exponent_hex
    }

    /// The modulus length in bytes (256).
    pub fn size(&self) -> usize {
        self.size
    }

    /// A form's `key`: an HS256 JWT (clients do not verify it) whose payload
    /// carries the hex modulus and exponent plus what the form belongs to.
    pub fn form_jwt(&self, secret: &[u8], claims: &Value) -> String {
        let mut payload = claims.clone();
        if let Value::Object(m) = &mut payload {
            m.insert("modulus".into(), json!(self.modulus_hex));
            m.insert("exponent".into(), json!(self.exponent_hex));
        }
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(payload.to_string());
        let signing_input = format!("{header}.{body}");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        let tag = ring::hmac::sign(&key, signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// Open an envelope (the posted JSON) and parse the form inside it.
    /// CPU-bound (one RSA private-key operation).
    pub fn open(&self, envelope: &Value) -> Result<Value, EnvelopeError> {
        let Value::Object(obj) = envelope else {
            return Err(EnvelopeError::NotObject);
        };
        let field = |name: &'static str| match obj.get(name) {
            Some(Value::String(s)) => Ok(s.as_str()),
            Some(_) => Err(EnvelopeError::NotString(name)),
            None => Err(EnvelopeError::Missing(name)),
        };
        let (ct, iv, ek) = (field("ct")?, field("iv")?, field("ek")?);
        let iv = decode_iv(iv)?;
        let ct = b64("ct", ct)?;
        if ct.is_empty() || !ct.len().is_multiple_of(16) {
            return Err(EnvelopeError::CtSize(ct.len()));
        }
        let key = self.unwrap_key(&b64("ek", ek)?)?;
        let plain = cbc::Decryptor::<aes::Aes256>::new(&key.into(), &iv.into())
            .decrypt_padded_vec_mut::<Pkcs7>(&ct)
            .map_err(|_| EnvelopeError::Padding)?;
        let text = String::from_utf8(plain).map_err(|_| EnvelopeError::Utf8)?;
        serde_json::from_str(&text).map_err(|e| EnvelopeError::Json(e.to_string()))
    }

    /// RSA-decrypt `ek` (left-padded to the modulus length, the JSBN quirk)
    /// and read the 64 hex characters inside as the AES-256 key.
    fn unwrap_key(&self, ek: &[u8]) -> Result<[u8; 32], EnvelopeError> {
        if ek.is_empty() || ek.len() > self.size {
            return Err(EnvelopeError::EkSize {
                got: ek.len(),
                modulus: self.size,
            });
        }
        let mut padded = vec![0u8; self.size - ek.len()];
        padded.extend_from_slice(ek);
        let hex_key = self
            .private
            .decrypt(Pkcs1v15Encrypt, &padded)
            .map_err(|_| EnvelopeError::EkDecrypt)?;
        let mut key = [0u8; 32];
        if hex_key.len() != 64 || hex::decode_to_slice(&hex_key, &mut key).is_err() {
            return Err(EnvelopeError::AesKey(hex_key.len()));
        }
        Ok(key)
    }
}

fn b64(field: &'static str, s: &str) -> Result<Vec<u8>, EnvelopeError> {
    LENIENT.decode(s.trim()).map_err(|e| EnvelopeError::Base64 {
        field,
        detail: e.to_string(),
    })
}

fn decode_iv(iv: &str) -> Result<[u8; 16], EnvelopeError> {
    let mut out = [0u8; 16];
    if iv.len() != 32 {
        return Err(EnvelopeError::Iv(format!("{} characters", iv.len())));
    }
    hex::decode_to_slice(iv, &mut out)
        .map_err(|_| EnvelopeError::Iv("characters that are not hex".into()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::BlockEncryptMut;
    use base64::engine::general_purpose;
    use rsa::RsaPublicKey;
    use std::sync::OnceLock;

    fn key() -> &'static ServerKey {
        static KEY: OnceLock<ServerKey> = OnceLock::new();
        KEY.get_or_init(|| ServerKey::generate().expect("keygen"))
    }

    fn seal(k: &ServerKey, aes_key_hex: &[u8], iv: [u8; 16], plain: &[u8]) -> Value {
        let public = RsaPublicKey::from(&k.private);
        let ek = public
            .encrypt(&mut rsa::rand_core::OsRng, Pkcs1v15Encrypt, aes_key_hex)
            .expect("encrypt");
        let mut key = [0u8; 32];
        hex::decode_to_slice(aes_key_hex, &mut key).expect("hex key");
        let ct = cbc::Encryptor::<aes::Aes256>::new(&key.into(), &iv.into())
            .encrypt_padded_vec_mut::<Pkcs7>(plain);
        json!({
            "ct": general_purpose::STANDARD.encode(ct),
            "iv": hex::encode(iv),
            "ek": general_purpose::STANDARD.encode(ek),
        })
    }

    fn jwt_part(part: &str) -> Option<Vec<u8>> {
        URL_SAFE_NO_PAD.decode(part).ok()
    }

    const KEY_HEX: &[u8] = b"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn opens_a_well_formed_envelope() {
        let env = seal(
            key(),
            KEY_HEX,
            [7; 16],
            br#"{"form_identifier":"f","data":[]}"#,
        );
        assert_eq!(
            key().open(&env).unwrap(),
            json!({"form_identifier": "f", "data": []})
        );
    }

    #[test]
    fn names_each_problem() {
        let k = key();
        let good = seal(k, KEY_HEX, [1; 16], b"{}");
        let with = |field: &str, v: Value| {
            let mut e = good.clone();
            e[field] = v;
            k.open(&e).unwrap_err()
        };
        assert_eq!(
            with("iv", json!("abcd")),
            EnvelopeError::Iv("4 characters".into())
        );
        assert!(matches!(
            with("ct", json!("!!!")),
            EnvelopeError::Base64 { field: "ct", .. }
        ));
        assert_eq!(with("ct", json!("AAAA")), EnvelopeError::CtSize(3));
        assert_eq!(
            with("ek", json!(general_purpose::STANDARD.encode([1u8; 300]))),
            EnvelopeError::EkSize {
                got: 300,
                modulus: 256
            }
        );
        assert_eq!(with("iv", json!(3)), EnvelopeError::NotString("iv"));
        assert_eq!(k.open(&json!([1])).unwrap_err(), EnvelopeError::NotObject);
        // The raw 32 key bytes instead of their hex: the classic mistake.
        let raw = seal(k, KEY_HEX, [1; 16], b"{}");
        let public = RsaPublicKey::from(&k.private);
        let ek = public
            .encrypt(&mut rsa::rand_core::OsRng, Pkcs1v15Encrypt, &[9u8; 32])
            .unwrap();
        let mut bad = raw.clone();
        bad["ek"] = json!(general_purpose::STANDARD.encode(ek));
        assert_eq!(k.open(&bad).unwrap_err(), EnvelopeError::AesKey(32));
        // Right RSA, wrong AES key: the padding check catches it (almost always).
        let other = seal(
            k,
            b"ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            [1; 16],
            b"{}",
        );
        let mut mixed = good.clone();
        mixed["ek"] = other["ek"].clone();
        mixed["ct"] = json!(general_purpose::STANDARD.encode([0u8; 16]));
        assert!(matches!(
            k.open(&mixed).unwrap_err(),
            EnvelopeError::Padding | EnvelopeError::Utf8 | EnvelopeError::Json(_)
        ));
    }

    #[test]
    fn accepts_a_short_ek_jsbn_style() {
        let k = key();
        // Find a ciphertext with a leading zero byte and drop it, as JSBN's
        // `toString(16)` does.
        let public = RsaPublicKey::from(&k.private);
        let short = (0..20_000)
            .map(|_| {
                public
                    .encrypt(&mut rsa::rand_core::OsRng, Pkcs1v15Encrypt, KEY_HEX)
                    .unwrap()
            })
            .find(|c| c[0] == 0)
            .expect("a leading zero within 20,000 tries");
        let mut env = seal(k, KEY_HEX, [3; 16], br#"[1,2]"#);
        env["ek"] = json!(general_purpose::STANDARD.encode(&short[1..]));
        assert_eq!(k.open(&env).unwrap(), json!([1, 2]));
    }

    #[test]
    fn jwt_carries_the_hex_key() {
        let k = key();
        let jwt = k.form_jwt(b"secret", &json!({"form_identifier": "x"}));
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let payload: Value = serde_json::from_slice(&jwt_part(parts[1]).unwrap()).unwrap();
        assert_eq!(payload["exponent"], "10001");
        assert_eq!(payload["form_identifier"], "x");
        let n = payload["modulus"].as_str().unwrap();
        assert_eq!(n.len(), 512);
        assert_eq!(
            rsa::BigUint::parse_bytes(n.as_bytes(), 16).as_ref(),
            Some(k.private.n())
        );
    }
}
