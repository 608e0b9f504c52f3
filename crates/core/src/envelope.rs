//! The XS2A encrypted-form envelope, as the Klarna playground's web client
//! builds it (reference/monitoring.md, "Encryption scheme").
//!
//! The server hands out its RSA public key inside a JWT (`payload.modulus`
//! and `payload.exponent`, both hex; the signature is not checked, as the
//! bank's own client does not check it). The form answer (JSON) is encrypted
//! with AES-256-CBC and PKCS#7 under a random key and IV; the key travels as
//! RSA PKCS#1 v1.5 over the 64 ASCII hex characters of the key, not over the
//! raw bytes. The body is `{"ct": base64, "iv": hex, "ek": base64}`.
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use cbc::cipher::{BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
use rand::RngCore;
use rsa::{BigUint, Pkcs1v15Encrypt, RsaPublicKey};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("the form key is not a JWT (expected three dot-separated parts)")]
    NotAJwt,
    #[error("the form key's payload is not base64url JSON: {0}")]
    BadPayload(String),
    #[error("the form key's payload has no hex `{0}`")]
    MissingField(&'static str),
    #[error("the form key's RSA public key is unusable: {0}")]
    BadKey(String),
    #[error("RSA encryption of the form key failed: {0}")]
    Rsa(String),
}

/// The body posted to the form's `next` URL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub ct: String,
    pub iv: String,
    pub ek: String,
}

/// The RSA public key a JWT form key carries.
pub fn public_key_from_jwt(jwt: &str) -> Result<RsaPublicKey, EnvelopeError> {
    let mut parts = jwt.trim().split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(EnvelopeError::NotAJwt);
    };
    // Tolerate padded and standard-alphabet base64 as the JS client does.
    let normalised: String = payload
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    let bytes = URL_SAFE_NO_PAD
        .decode(normalised)
        .map_err(|e| EnvelopeError::BadPayload(e.to_string()))?;
    let claims: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| EnvelopeError::BadPayload(e.to_string()))?;
    let hex_field = |name: &'static str| -> Result<BigUint, EnvelopeError> {
        let text = claims
            .get(name)
            .and_then(|v| v.as_str())
            .ok_or(EnvelopeError::MissingField(name))?;
        BigUint::parse_bytes(text.trim().as_bytes(), 16)
            .ok_or_else(|| EnvelopeError::BadKey(format!("`{name}` is not hex")))
    };
    let n = hex_field("modulus")?;
    let e = hex_field("exponent")?;
    RsaPublicKey::new(n, e).map_err(|e| EnvelopeError::BadKey(e.to_string()))
}

/// Encrypts a form answer for the server whose key the JWT carries.
pub fn seal(jwt: &str, plaintext: &[u8]) -> Result<Envelope, EnvelopeError> {
    let public = public_key_from_jwt(jwt)?;
    let mut key = [0u8; 32];
    let mut iv = [0u8; 16];
    let mut rng = rand::rng();
    rng.fill_bytes(&mut key);
    rng.fill_bytes(&mut iv);
    let ct = cbc::Encryptor::<aes::Aes256>::new(&key.into(), &iv.into())
        .encrypt_padded_vec_mut::<Pkcs7>(plaintext);
    let key_hex = hex::encode(key);
    let ek = public
        .encrypt(
            &mut rsa::rand_core::OsRng,
            Pkcs1v15Encrypt,
            key_hex.as_bytes(),
        )
        .map_err(|e| EnvelopeError::Rsa(e.to_string()))?;
    Ok(Envelope {
        ct: STANDARD.encode(ct),
        iv: hex::encode(iv),
        ek: STANDARD.encode(ek),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cbc::cipher::{BlockDecryptMut, block_padding::Pkcs7};
    use rsa::RsaPrivateKey;
    use rsa::traits::PublicKeyParts;

    fn jwt_for(key: &RsaPublicKey) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(
            serde_json::json!({
                "modulus": key.n().to_str_radix(16),
                "exponent": key.e().to_str_radix(16),
            })
            .to_string(),
        );
        format!("{header}.{payload}.c2ln")
    }

    #[test]
    fn a_sealed_form_opens_with_the_private_key() {
        let private = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
        let jwt = jwt_for(&private.to_public_key());
        let form =
            br#"{"form_identifier":"f1","data":[{"key":"interface","value":"de_testbank_bias"}]}"#;
        let env = seal(&jwt, form).unwrap();
        assert_eq!(env.iv.len(), 32);

        let ek = STANDARD.decode(&env.ek).unwrap();
        let key_hex = private.decrypt(Pkcs1v15Encrypt, &ek).unwrap();
        assert_eq!(key_hex.len(), 64, "RSA covers the hex text of the key");
        let key: [u8; 32] = hex::decode(&key_hex).unwrap().try_into().unwrap();
        let iv: [u8; 16] = hex::decode(&env.iv).unwrap().try_into().unwrap();
        let plain = cbc::Decryptor::<aes::Aes256>::new(&key.into(), &iv.into())
            .decrypt_padded_vec_mut::<Pkcs7>(&STANDARD.decode(&env.ct).unwrap())
            .unwrap();
        assert_eq!(plain, form);
    }

    #[test]
    fn bad_keys_are_named() {
        assert_eq!(seal("abc", b"{}"), Err(EnvelopeError::NotAJwt));
        assert!(matches!(
            seal("a.!!.c", b"{}"),
            Err(EnvelopeError::BadPayload(_))
        ));
        let no_mod = format!("a.{}.c", URL_SAFE_NO_PAD.encode(br#"{"exponent":"10001"}"#));
        assert_eq!(
            seal(&no_mod, b"{}"),
            Err(EnvelopeError::MissingField("modulus"))
        );
        let not_hex = format!(
            "a.{}.c",
            URL_SAFE_NO_PAD.encode(br#"{"modulus":"xyz","exponent":"10001"}"#)
        );
        assert!(matches!(
            seal(&not_hex, b"{}"),
            Err(EnvelopeError::BadKey(_))
        ));
    }
}
