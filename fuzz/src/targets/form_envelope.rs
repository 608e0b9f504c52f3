//! The XS2A form key (a JWT carrying an RSA public key, from the bank) and
//! the envelope sealed with it. Invariants: no panic on any key; a refused
//! key is a typed error; a sealed envelope has a 16-byte IV in hex, a
//! ciphertext of whole AES blocks, and an encrypted key as long as the
//! RSA modulus.
use bankbridge_core::envelope::{public_key_from_jwt, seal};

fn base64_len(text: &str) -> usize {
    let padding = text.bytes().rev().take_while(|b| *b == b'=').count();
    text.len() / 4 * 3 - padding
}

pub fn run(data: &[u8]) {
    let Ok(jwt) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(key) = public_key_from_jwt(jwt) else {
        assert!(seal(jwt, b"{}").is_err());
        return;
    };
    if let Ok(envelope) = seal(jwt, br#"{"otp":"123456"}"#) {
        use rsa::traits::PublicKeyParts;
        assert_eq!(envelope.iv.len(), 32);
        assert!(envelope.iv.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(base64_len(&envelope.ct) % 16, 0);
        assert_eq!(base64_len(&envelope.ek), key.size());
    }
}
