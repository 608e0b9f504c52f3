//! The keypad's obfuscation, as pure functions (see `docs/keypad-bank-api.md`).
//!
//! Both the field the bank sends and the token the client answers are
//! `reverse(hex(seed ‖ tail))`: every character as two lower-case hex digits
//! of its ASCII code, the whole string then reversed. The field's tail is the
//! 10 keys in display order; the token's is the mangled PIN (for each PIN
//! digit, its index among the keys).
use rand::Rng;
use rand::seq::SliceRandom;

/// Digits of the seeds the simulator issues.
pub const SEED_LEN: usize = 16;
/// Digits of a PIN (and so of a mangled PIN).
pub const PIN_LEN: usize = 6;

/// The 10 keys of a keypad in display order: a permutation of `b'0'..=b'9'`.
pub type Keys = [u8; 10];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("not an even number of hex digits")]
    NotHex,
    #[error("a decoded character is not a digit")]
    NotDigits,
    #[error("too short: {0} characters decoded")]
    TooShort(usize),
    #[error("the keys are not a permutation of the digits 0-9")]
    BadKeys,
    #[error("the PIN must be {PIN_LEN} digits")]
    BadPin,
}

/// `reverse(hex(chars))` of ASCII bytes.
fn obfuscate(chars: impl Iterator<Item = u8>) -> String {
    let hex: Vec<u8> = chars
        .flat_map(|c| {
            let h = format!("{c:02x}");
            h.into_bytes()
        })
        .collect();
    hex.iter().rev().map(|&b| b as char).collect()
}

/// The inverse of [`obfuscate`]; every decoded character must be a digit.
fn deobfuscate(s: &str) -> Result<Vec<u8>, CodecError> {
    let rev: Vec<u8> = s.bytes().rev().collect();
    if !rev.len().is_multiple_of(2) || !rev.iter().all(u8::is_ascii_hexdigit) {
        return Err(CodecError::NotHex);
    }
    rev.chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).map_err(|_| CodecError::NotHex)?;
            let c = u8::from_str_radix(text, 16).map_err(|_| CodecError::NotHex)?;
            if c.is_ascii_digit() {
                Ok(c)
            } else {
                Err(CodecError::NotDigits)
            }
        })
        .collect()
}

/// The `keypad` field sent by `GET api/login/keypad`.
pub fn encode_field(seed: &str, keys: &Keys) -> String {
    obfuscate(seed.bytes().chain(keys.iter().copied()))
}

/// A field back into (seed, keys): the last 10 characters are the keys.
pub fn decode_field(field: &str) -> Result<(String, Keys), CodecError> {
    let chars = deobfuscate(field)?;
    if chars.len() <= 10 {
        return Err(CodecError::TooShort(chars.len()));
    }
    let (seed, keys) = chars.split_at(chars.len() - 10);
    let keys: Keys = keys.try_into().map_err(|_| CodecError::BadKeys)?;
    let mut seen = [false; 10];
    for k in keys {
        seen[usize::from(k - b'0')] = true;
    }
    if !seen.iter().all(|s| *s) {
        return Err(CodecError::BadKeys);
    }
    Ok((String::from_utf8_lossy(seed).into_owned(), keys))
}

/// The client's step: each PIN digit replaced by its index among the keys.
pub fn mangle(pin: &str, keys: &Keys) -> Result<String, CodecError> {
    if pin.len() != PIN_LEN {
        return Err(CodecError::BadPin);
    }
    pin.bytes()
        .map(|d| {
            keys.iter()
                .position(|k| *k == d)
                .map(|i| char::from(b'0' + i as u8))
                .ok_or(CodecError::BadPin)
        })
        .collect()
}

/// The server's step: the inverse of [`mangle`].
pub fn unmangle(mangled: &str, keys: &Keys) -> Result<String, CodecError> {
    mangled
        .bytes()
        .map(|i| match i {
            b'0'..=b'9' => Ok(char::from(keys[usize::from(i - b'0')])),
            _ => Err(CodecError::NotDigits),
        })
        .collect()
}

/// The `keypad` value of `POST api/login`.
pub fn encode_token(seed: &str, mangled: &str) -> String {
    obfuscate(seed.bytes().chain(mangled.bytes()))
}

/// A login token back into (seed, mangled PIN): the last [`PIN_LEN`]
/// characters are the mangled PIN, the others the seed.
pub fn decode_token(token: &str) -> Result<(String, String), CodecError> {
    let chars = deobfuscate(token)?;
    if chars.len() <= PIN_LEN {
        return Err(CodecError::TooShort(chars.len()));
    }
    let (seed, mangled) = chars.split_at(chars.len() - PIN_LEN);
    Ok((
        String::from_utf8_lossy(seed).into_owned(),
        String::from_utf8_lossy(mangled).into_owned(),
    ))
}

/// A fresh keypad as the simulator issues them: a [`SEED_LEN`]-digit seed
/// and the 10 keys shuffled.
pub fn new_keypad(rng: &mut impl Rng) -> (String, Keys) {
    let seed = (0..SEED_LEN)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect();
    let mut keys: Keys = *b"0123456789";
    keys.shuffle(rng);
    (seed, keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARTICLE_KEYS: &Keys = b"0348957621";

    #[test]
    fn article_field_and_token() {
        let seed = "1234567890123456";
        let field = encode_field(seed, ARTICLE_KEYS);
        assert!(field.starts_with("13236373539383433303"), "{field}");
        assert_eq!(
            decode_field(&field).unwrap(),
            (seed.to_owned(), *ARTICLE_KEYS)
        );

        let mangled = mangle("011000", ARTICLE_KEYS).unwrap();
        assert_eq!(mangled, "099000");
        let token = encode_token(seed, &mangled);
        assert!(token.starts_with("030303939303"), "{token}");
        assert_eq!(
            decode_token(&token).unwrap(),
            (seed.to_owned(), mangled.clone())
        );
        assert_eq!(unmangle(&mangled, ARTICLE_KEYS).unwrap(), "011000");
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(decode_token("abc"), Err(CodecError::NotHex));
        assert_eq!(decode_token("zz"), Err(CodecError::NotHex));
        // "A" (0x41) is not a digit.
        assert_eq!(decode_token("14"), Err(CodecError::NotDigits));
        assert_eq!(
            decode_token(&encode_token("", "12345")),
            Err(CodecError::TooShort(5))
        );
        assert_eq!(
            decode_field(&encode_field("12", b"0123456788")),
            Err(CodecError::BadKeys)
        );
        assert_eq!(mangle("12345", ARTICLE_KEYS), Err(CodecError::BadPin));
        assert_eq!(mangle("12345a", ARTICLE_KEYS), Err(CodecError::BadPin));
        assert_eq!(unmangle("12x", ARTICLE_KEYS), Err(CodecError::NotDigits));
        // Multi-byte input is not hex and must not panic.
        assert_eq!(decode_token("ééé"), Err(CodecError::NotHex));
    }

    #[test]
    fn issued_keypads_are_permutations() {
        let mut rng = rand::rng();
        for _ in 0..100 {
            let (seed, keys) = new_keypad(&mut rng);
            assert_eq!(seed.len(), SEED_LEN);
            assert!(seed.bytes().all(|b| b.is_ascii_digit()));
            let mut sorted = keys;
            sorted.sort();
            assert_eq!(&sorted, b"0123456789");
        }
    }
}
