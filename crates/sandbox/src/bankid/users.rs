//! Simulated BankID users: anyone with a valid personal number, with a name,
//! an issue date and a device id derived from the number, so the same
//! number always gives the same person.
use base64::Engine;
use chrono::NaiveDate;
use sha2::{Digest, Sha256};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub personal_number: String,
    pub name: String,
    pub given_name: String,
    pub surname: String,
    pub issue_date: NaiveDate,
    /// Unique hardware identifier of the user's device.
    pub uhi: String,
}

const GIVEN_FEMALE: &[&str] = &[
    "Anna", "Eva", "Maria", "Karin", "Sara", "Lena", "Emma", "Kerstin", "Ingrid", "Elsa", "Astrid",
    "Linnea", "Maja", "Sofia", "Ebba", "Frida",
];
const GIVEN_MALE: &[&str] = &[
    "Lars", "Anders", "Johan", "Karl", "Erik", "Per", "Nils", "Mikael", "Olof", "Gustav", "Axel",
    "Oskar", "Lukas", "Hugo", "Viktor", "Magnus",
];
const SURNAMES: &[&str] = &[
    "Andersson",
    "Johansson",
    "Karlsson",
    "Nilsson",
    "Eriksson",
    "Larsson",
    "Olsson",
    "Persson",
    "Svensson",
    "Gustafsson",
    "Pettersson",
    "Jonsson",
    "Lindberg",
    "Lindqvist",
    "Bergström",
    "Holm",
];

fn digest(label: &str, pnr: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"bankbridge-bankid-sim/");
    h.update(label.as_bytes());
    h.update(b"/");
    h.update(pnr.as_bytes());
    h.finalize().into()
}

impl User {
    /// The user behind a (valid) personal number.
    pub fn from_personal_number(pnr: &str) -> User {
        let h = digest("user", pnr);
        // The second-to-last digit is odd for men, even for women.
        let male = pnr
            .as_bytes()
            .get(10)
            .is_some_and(|d| (d.wrapping_sub(b'0')) % 2 == 1);
        let given = if male { GIVEN_MALE } else { GIVEN_FEMALE };
        let given_name = given[h[0] as usize % given.len()].to_owned();
        let surname = SURNAMES[h[1] as usize % SURNAMES.len()].to_owned();
        User {
            personal_number: pnr.to_owned(),
            name: format!("{given_name} {surname}"),
            given_name,
            surname,
            issue_date: issue_date(pnr, &h),
            uhi: base64::engine::general_purpose::STANDARD.encode(&digest("uhi", pnr)[..20]),
        }
    }
}

/// Some day in 2019–2024 (not before the 18th birthday, not after today).
fn issue_date(pnr: &str, h: &[u8; 32]) -> NaiveDate {
    let from = NaiveDate::from_ymd_opt(2019, 1, 1).unwrap_or_default();
    let birth = pnr
        .get(..4)
        .and_then(|y| y.parse::<i32>().ok())
        .and_then(|y| NaiveDate::from_ymd_opt(y + 18, 1, 1))
        .unwrap_or(from);
    let start = from.max(birth);
    let days = u16::from_be_bytes([h[2], h[3]]) % (6 * 365);
    let date = start + chrono::Days::new(u64::from(days));
    let today = chrono::Utc::now().date_naive();
    if date > today {
        // A very young user: issued recently.
        today - chrono::Days::new(u64::from(days % 30))
    } else {
        date
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Datelike;

    #[test]
    fn same_number_same_person() {
        let a = User::from_personal_number("199001011239");
        let b = User::from_personal_number("199001011239");
        assert_eq!(a, b);
        assert_eq!(a.name, format!("{} {}", a.given_name, a.surname));
        assert!(a.issue_date <= chrono::Utc::now().date_naive());
        assert!(a.issue_date.year() >= 2019);
        assert_ne!(a.uhi, User::from_personal_number("198504120018").uhi);
    }
}
