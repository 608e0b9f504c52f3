//! Money: an exact decimal amount with its ISO 4217 currency. Never a float.
use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// An ISO 4217 alphabetic currency code (three ASCII upper-case letters).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid currency code {0:?}: expected three letters such as EUR or BGN (ISO 4217)")]
pub struct CurrencyError(pub String);

impl Currency {
    pub fn as_str(&self) -> &str {
        // Constructed only from ASCII upper-case letters.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// Decimal places of the currency's minor unit (ISO 4217's list of
    /// currencies that do not use two).
    pub fn minor_units(&self) -> u32 {
        match self.as_str() {
            "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF"
            | "UGX" | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
            "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
            "CLF" | "UYW" => 4,
            _ => 2,
        }
    }

    /// `amount` written with this currency's minor units: `-8` becomes
    /// `-8.00` in EUR, `1500.00` becomes `1500` in JPY. Never rounds: an
    /// amount with more places than the currency has keeps them.
    pub fn money(&self, amount: Decimal) -> Decimal {
        let mut a = amount.normalize();
        let places = self.minor_units();
        if a.scale() < places {
            a.rescale(places);
        }
        a
    }
}

impl FromStr for Currency {
    type Err = CurrencyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let b = t.as_bytes();
        if b.len() == 3 && b.iter().all(u8::is_ascii_alphabetic) {
            let up = u8::to_ascii_uppercase;
            Ok(Currency([up(&b[0]), up(&b[1]), up(&b[2])]))
        } else {
            Err(CurrencyError(s.to_owned()))
        }
    }
}

impl TryFrom<String> for Currency {
    type Error = CurrencyError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.as_str().to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.as_str())
    }
}

/// An amount of money. The sign is kept: debits are negative.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Money {
    /// Serialised as a string so no JSON consumer turns it into a float.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    pub currency: Currency,
}

impl Money {
    pub fn new(amount: Decimal, currency: Currency) -> Self {
        Self { amount, currency }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

/// Parse a decimal the way banks send it: a JSON number or a string, with
/// either `.` or `,` as the decimal separator. Exact: no float on the way.
pub fn parse_decimal(text: &str) -> Option<Decimal> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    let normalised;
    let t = if t.contains(',') && !t.contains('.') {
        normalised = t.replace(',', ".");
        normalised.as_str()
    } else {
        t
    };
    Decimal::from_str(t)
        .or_else(|_| Decimal::from_scientific(t))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_parses_and_rejects() {
        assert_eq!("eur".parse::<Currency>().unwrap().as_str(), "EUR");
        assert!("EURO".parse::<Currency>().is_err());
        assert!("E1R".parse::<Currency>().is_err());
        assert_eq!("JPY".parse::<Currency>().unwrap().minor_units(), 0);
        let eur: Currency = "EUR".parse().unwrap();
        let jpy: Currency = "JPY".parse().unwrap();
        let kwd: Currency = "KWD".parse().unwrap();
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(eur.money(d("-8")).to_string(), "-8.00");
        assert_eq!(eur.money(d("-1.0")).to_string(), "-1.00");
        assert_eq!(eur.money(d("12.5000")).to_string(), "12.50");
        assert_eq!(eur.money(d("0.125")).to_string(), "0.125", "never rounded");
        assert_eq!(jpy.money(d("1500.00")).to_string(), "1500");
        assert_eq!(kwd.money(d("2.5")).to_string(), "2.500");
        assert_eq!(eur.money(d("0")).to_string(), "0.00");
    }

    #[test]
    fn money_serialises_amount_as_string() {
        let m = Money::new(Decimal::from_str("-12.30").unwrap(), "BGN".parse().unwrap());
        let j = serde_json::to_string(&m).unwrap();
        assert_eq!(j, r#"{"amount":"-12.30","currency":"BGN"}"#);
        let back: Money = serde_json::from_str(&j).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn parse_decimal_is_exact() {
        assert_eq!(parse_decimal("0.1").unwrap().to_string(), "0.1");
        assert_eq!(parse_decimal("1234,56").unwrap().to_string(), "1234.56");
        assert_eq!(parse_decimal("1e2").unwrap(), Decimal::from(100));
        assert!(parse_decimal("abc").is_none());
        assert!(parse_decimal("").is_none());
    }
}
