//! IBAN: validated with the ISO 13616 mod-97 check.
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A validated IBAN in its electronic form (no spaces, upper case).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Iban(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IbanError {
    #[error("IBAN {0:?} has a bad length: an IBAN has 15 to 34 characters")]
    Length(String),
    #[error("IBAN {0:?} has a bad format: two letters, two check digits, then letters and digits")]
    Format(String),
    #[error("IBAN {0:?} fails its check digits (mod 97): a character is mistyped")]
    Checksum(String),
}

impl Iban {
    pub fn parse(input: &str) -> Result<Self, IbanError> {
        let compact: String = input
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_uppercase();
        if !(15..=34).contains(&compact.len()) {
            return Err(IbanError::Length(input.to_owned()));
        }
        let b = compact.as_bytes();
        if !b[0..2].iter().all(u8::is_ascii_uppercase)
            || !b[2..4].iter().all(u8::is_ascii_digit)
            || !b.iter().all(u8::is_ascii_alphanumeric)
        {
            return Err(IbanError::Format(input.to_owned()));
        }
        if mod97(&compact) != 1 {
            return Err(IbanError::Checksum(input.to_owned()));
        }
        Ok(Iban(compact))
    }

    /// Build a valid IBAN from a country code and a BBAN by computing the
    /// check digits (used by simulators and tests).
    pub fn from_parts(country: &str, bban: &str) -> Result<Self, IbanError> {
        let probe = format!(
            "{}00{}",
            country.to_ascii_uppercase(),
            bban.to_ascii_uppercase()
        );
        let check = 98 - mod97(&probe);
        Iban::parse(&format!(
            "{}{:02}{}",
            country.to_ascii_uppercase(),
            check,
            bban
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn country(&self) -> &str {
        &self.0[0..2]
    }
}

/// Rearranged-IBAN remainder mod 97, computed digit by digit so it never overflows.
fn mod97(compact: &str) -> u32 {
    let rearranged = compact[4..].bytes().chain(compact[0..4].bytes());
    let mut rem: u32 = 0;
    for c in rearranged {
        let v = if c.is_ascii_digit() {
            (c - b'0') as u32
        } else {
            (c - b'A') as u32 + 10
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem
}

impl FromStr for Iban {
    type Err = IbanError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Iban::parse(s)
    }
}

impl TryFrom<String> for Iban {
    type Error = IbanError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Iban::parse(&value)
    }
}

impl From<Iban> for String {
    fn from(i: Iban) -> String {
        i.0
    }
}

impl fmt::Display for Iban {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Iban {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Iban({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_ibans_validate() {
        for good in [
            "GB82 WEST 1234 5698 7654 32",
            "BG80BNBG96611020345678",
            "DE89370400440532013000",
            "be68539007547034",
        ] {
            assert!(Iban::parse(good).is_ok(), "{good}");
        }
        assert_eq!(
            Iban::parse("GB82 WEST 1234 5698 7654 32").unwrap().as_str(),
            "GB82WEST12345698765432"
        );
    }

    #[test]
    fn bad_ibans_are_rejected_with_reason() {
        assert!(matches!(
            Iban::parse("GB82WEST12345698765433"),
            Err(IbanError::Checksum(_))
        ));
        assert!(matches!(Iban::parse("GB82"), Err(IbanError::Length(_))));
        assert!(matches!(
            Iban::parse("1282WEST12345698765432"),
            Err(IbanError::Format(_))
        ));
        assert!(matches!(
            Iban::parse("GB82WEST1234569876543-"),
            Err(IbanError::Format(_))
        ));
    }

    proptest! {
        #[test]
        fn from_parts_always_valid(bban in "[A-Z0-9]{11,30}") {
            let iban = Iban::from_parts("BG", &bban).unwrap();
            prop_assert!(Iban::parse(iban.as_str()).is_ok());
        }

        #[test]
        fn single_digit_change_is_detected(bban in "[0-9]{14,20}", pos in 0usize..14, delta in 1u8..10) {
            let iban = Iban::from_parts("BG", &bban).unwrap();
            let mut bytes = iban.as_str().as_bytes().to_vec();
            let i = 4 + pos;
            bytes[i] = b'0' + ((bytes[i] - b'0' + delta) % 10);
            let mutated = String::from_utf8(bytes).unwrap();
            prop_assert!(Iban::parse(&mutated).is_err());
        }

        #[test]
        fn parse_never_panics(s in ".{0,40}") {
            let _ = Iban::parse(&s);
        }
    }
}
