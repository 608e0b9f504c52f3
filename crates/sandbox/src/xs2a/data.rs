//! The books of one simulated NextGenPSD2 bank: current accounts with
//! booked transactions from the start of the history to a horizon past the
//! sandbox day, so advancing the clock books what was pending.
//!
//! Every (account, day) draws from its own random stream of the seed, like
//! the other banks: the same seed gives the same books, whatever the day.
//! Money is integer minor units.
use bankbridge_core::Iban;
use chrono::{Days, NaiveDate};
use rand::Rng;

use crate::fibank::data::rng_for;

/// Days past the sandbox day the books are written ahead, so advancing the
/// clock (at most this far) books rows that were pending before; longer than
/// the longest consent, so a test can watch one expire.
pub const HORIZON_DAYS: u32 = 200;

/// Days between a card payment and its booking: it is pending meanwhile.
pub const CARD_BOOKING_DELAY: u32 = 2;

/// What a row is, with its ISO 20022 bank transaction code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Card,
    Atm,
    TransferOut,
    TransferIn,
    DirectDebit,
    Salary,
    Fee,
}

impl Kind {
    /// `Domain-Family-SubFamily` as NextGenPSD2 carries it.
    pub fn bank_transaction_code(self) -> &'static str {
        match self {
            Kind::Card => "PMNT-CCRD-POSD",
            Kind::Atm => "PMNT-CCRD-CWDL",
            Kind::TransferOut => "PMNT-ICDT-ESCT",
            Kind::TransferIn | Kind::Salary => "PMNT-RCDT-ESCT",
            Kind::DirectDebit => "PMNT-IDDT-ESDD",
            Kind::Fee => "ACMT-MDOP-FEES",
        }
    }
}

/// One row of an account.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Position in the account's history: ids derive from it.
    pub seq: u64,
    pub kind: Kind,
    /// The day the bank books it.
    pub booking: NaiveDate,
    /// The day the money moved (a card payment: the day it was paid).
    pub value: NaiveDate,
    /// Signed minor units (debits negative).
    pub minor: i64,
    pub party: &'static str,
    pub party_iban: Option<String>,
    pub remittance: String,
}

impl Row {
    /// Pending on `today`: a card payment made and not booked yet.
    pub fn pending_on(&self, today: NaiveDate) -> bool {
        self.kind == Kind::Card && self.value <= today && today < self.booking
    }
}

/// One account and its whole history (past the sandbox day included).
#[derive(Clone, Debug)]
pub struct Account {
    /// The bank's id in paths (`resourceId`). Stable for a consent; a new
    /// consent may see other ids (see [`super::Xs2aBank::renew_ids`]).
    pub index: usize,
    pub iban: Iban,
    pub currency: &'static str,
    pub name: String,
    pub product: &'static str,
    /// Booked balance before the first row.
    pub opening: i64,
    /// Every row, by booking day then sequence.
    pub rows: Vec<Row>,
}

impl Account {
    /// Rows booked on or before `today`.
    pub fn booked(&self, today: NaiveDate) -> &[Row] {
        let end = self.rows.partition_point(|r| r.booking <= today);
        &self.rows[..end]
    }

    /// Booked balance at the end of `day`.
    pub fn balance_at(&self, day: NaiveDate) -> i64 {
        self.opening + self.booked(day).iter().map(|r| r.minor).sum::<i64>()
    }

    /// Booked and pending totals at the end of `today`, for `/truth`.
    pub fn truth(&self, today: NaiveDate) -> crate::fibank::AccountTruth {
        use crate::fibank::render::money_string;
        let booked = self.booked(today);
        let pending: Vec<&Row> = self.pending(today).collect();
        crate::fibank::AccountTruth {
            iban: self.iban.to_string(),
            currency: self.currency.to_owned(),
            booked_count: booked.len() as u64,
            booked_sum: money_string(booked.iter().map(|r| r.minor).sum()),
            pending_count: pending.len() as u64,
            pending_sum: money_string(pending.iter().map(|r| r.minor).sum()),
            balance: money_string(self.balance_at(today)),
        }
    }

    /// Card payments pending on `today`.
    pub fn pending(&self, today: NaiveDate) -> impl Iterator<Item = &Row> {
        let start = self.rows.partition_point(|r| r.booking <= today);
        self.rows[start..]
            .iter()
            .filter(move |r| r.pending_on(today))
    }
}

/// Books generated on first use: a sandbox serves many simulated banks and
/// a test or a benchmark usually talks to one.
#[derive(Debug)]
pub struct LazyBooks {
    params: Params,
    books: std::sync::OnceLock<Vec<Account>>,
}

impl LazyBooks {
    pub fn new(params: Params) -> LazyBooks {
        LazyBooks {
            params,
            books: std::sync::OnceLock::new(),
        }
    }

    pub fn get(&self) -> &[Account] {
        self.books.get_or_init(|| generate(&self.params))
    }

    /// The last day written in the books (the clock may not pass it).
    pub fn last_day(&self) -> Option<NaiveDate> {
        self.get()
            .first()
            .and_then(|a| a.rows.last())
            .map(|r| r.booking)
    }

    /// How many accounts there are (without generating them).
    pub fn len(&self) -> usize {
        self.params.accounts
    }

    pub fn is_empty(&self) -> bool {
        self.params.accounts == 0
    }
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct Params {
    pub seed: u64,
    /// Two letters: the IBANs' country.
    pub country: &'static str,
    pub currency: &'static str,
    /// Digits of the bank's code in the BBAN.
    pub bank_code: &'static str,
    pub accounts: usize,
    /// About this many booked rows per account over `years`.
    pub transactions: usize,
    pub years: u32,
    pub today: NaiveDate,
}

const MERCHANTS: &[(&str, i64, i64)] = &[
    ("Delhaize", 500, 12_000),
    ("Colruyt", 800, 15_000),
    ("ICA Maxi", 1_000, 20_000),
    ("Coop", 500, 9_000),
    ("IKEA", 1_500, 60_000),
    ("SNCB/NMBS", 300, 4_500),
    ("SL Biljett", 400, 9_000),
    ("Apotek", 300, 5_000),
    ("Systembolaget", 1_000, 8_000),
    ("Spotify", 999, 1_699),
    ("Zalando", 2_000, 15_000),
    ("Shell", 2_000, 9_000),
    ("Fnac", 1_000, 40_000),
    ("Espresso House", 350, 1_200),
    ("Bol.com", 800, 20_000),
];

const PARTIES: &[&str] = &[
    "Jan Peeters",
    "Marie Dubois",
    "Lars Nilsson",
    "Anna Johansson",
    "Syndic Residence Parc",
    "Ethias",
    "Vattenfall",
    "Proximus",
    "Telia",
    "Belastingdienst",
];

const EMPLOYER: &str = "Acme Logistics";

/// The IBAN of a party, from its name: the same party always has the same.
fn party_iban(country: &str, name: &str) -> String {
    let n = name
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let bban = match country {
        "SE" => format!("5000{:016}", n % 10_000_000_000_000_000),
        "BE" => format!("{:012}", n % 1_000_000_000_000),
        _ => format!("{:018}", n % 1_000_000_000_000_000_000),
    };
    Iban::from_parts(country, &bban)
        .map(|i| i.to_string())
        .unwrap_or_default()
}

fn account_bban(country: &str, bank_code: &str, seed: u64, i: usize) -> String {
    let n = crate::fibank::data::mix(seed, 0xACC0, i as u64);
    match country {
        // 3 bank digits, 7 account digits, 2 check digits (mod 97).
        "BE" => {
            let body = format!("{bank_code:0>3}{:07}", n % 10_000_000);
            let v: u64 = body.parse().unwrap_or(0);
            let check = match v % 97 {
                0 => 97,
                c => c,
            };
            format!("{body}{check:02}")
        }
        "SE" => format!("{bank_code:0>4}{:016}", n % 10_000_000_000_000_000),
        _ => format!("{bank_code:0>8}{:010}", n % 10_000_000_000),
    }
}

/// Generate the books.
pub fn generate(p: &Params) -> Vec<Account> {
    // `years` × 365 days of history, today included: what the bank serves.
    let start = p.today - Days::new((u64::from(p.years) * 365).saturating_sub(1));
    let end = p.today + Days::new(u64::from(HORIZON_DAYS));
    let days = (end - start).num_days().max(1) as u64;
    let history_days = (u64::from(p.years) * 365).max(1);
    let per_day = p.transactions as f64 / history_days as f64;
    (0..p.accounts)
        .map(|i| {
            let iban =
                Iban::from_parts(p.country, &account_bban(p.country, p.bank_code, p.seed, i))
                    .expect("generated BBANs are valid");
            let mut rows = Vec::new();
            let mut seq = 0u64;
            for d in 0..=days {
                let day = start + Days::new(d);
                let mut rng = rng_for(p.seed ^ 0x5852_5332, i as u64, d);
                // Poisson-ish: the whole part, plus one more by chance.
                let whole = per_day.floor() as u32;
                let n = whole + u32::from(rng.random::<f64>() < per_day - f64::from(whole));
                for _ in 0..n {
                    rows.push(row(&mut rng, p, day, &mut seq));
                }
                // Salary on the 25th, rent on the 1st.
                if day.format("%d").to_string() == "25" {
                    rows.push(Row {
                        seq: next(&mut seq),
                        kind: Kind::Salary,
                        booking: day,
                        value: day,
                        minor: 320_000 + rng.random_range(0..40_000),
                        party: EMPLOYER,
                        party_iban: Some(party_iban(p.country, EMPLOYER)),
                        remittance: format!("Salary {}", day.format("%Y-%m")),
                    });
                }
            }
            rows.sort_by_key(|r| (r.booking, r.seq));
            let name = if i == 0 {
                "Current account".to_owned()
            } else {
                format!("Current account {}", i + 1)
            };
            Account {
                index: i,
                iban,
                currency: p.currency,
                name,
                product: "Current account",
                opening: 150_000 + (i as i64) * 10_000,
                rows,
            }
        })
        .collect()
}

fn next(seq: &mut u64) -> u64 {
    *seq += 1;
    *seq
}

fn row(rng: &mut impl Rng, p: &Params, day: NaiveDate, seq: &mut u64) -> Row {
    let roll = rng.random_range(0..100);
    let seq = next(seq);
    let (kind, minor, party, remittance) = match roll {
        0..55 => {
            let (name, lo, hi) = MERCHANTS[rng.random_range(0..MERCHANTS.len())];
            (
                Kind::Card,
                -rng.random_range(lo..=hi),
                name,
                format!("Card payment {name}"),
            )
        }
        55..62 => (
            Kind::Atm,
            -rng.random_range(2..=20) * 1_000,
            "ATM",
            "Cash withdrawal".to_owned(),
        ),
        62..78 => {
            let party = PARTIES[rng.random_range(0..PARTIES.len())];
            (
                Kind::TransferOut,
                -rng.random_range(1_000..=90_000),
                party,
                format!("Invoice {}", rng.random_range(1000..9999)),
            )
        }
        78..90 => {
            let party = PARTIES[rng.random_range(0..PARTIES.len())];
            (
                Kind::TransferIn,
                rng.random_range(1_000..=60_000),
                party,
                "Refund".to_owned(),
            )
        }
        90..97 => {
            let party = PARTIES[rng.random_range(4..PARTIES.len())];
            (
                Kind::DirectDebit,
                -rng.random_range(2_000..=15_000),
                party,
                format!("Direct debit {party}"),
            )
        }
        _ => (
            Kind::Fee,
            -rng.random_range(100..=600),
            "Bank",
            "Account fee".to_owned(),
        ),
    };
    let booking = if kind == Kind::Card {
        day + Days::new(u64::from(CARD_BOOKING_DELAY))
    } else {
        day
    };
    let party_iban = matches!(
        kind,
        Kind::TransferOut | Kind::TransferIn | Kind::DirectDebit
    )
    .then(|| party_iban(p.country, party));
    Row {
        seq,
        kind,
        booking,
        value: day,
        minor,
        party,
        party_iban,
        remittance,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params {
        Params {
            seed: 7,
            country: "BE",
            currency: "EUR",
            bank_code: "001",
            accounts: 2,
            transactions: 500,
            years: 1,
            today: NaiveDate::from_ymd_opt(2026, 3, 10).unwrap(),
        }
    }

    #[test]
    fn books_are_deterministic_and_ibans_valid() {
        let a = generate(&params());
        let b = generate(&params());
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].rows, b[0].rows);
        assert_ne!(a[0].iban, a[1].iban);
        for acc in &a {
            assert!(Iban::parse(acc.iban.as_str()).is_ok());
            let booked = acc.booked(params().today).len();
            assert!((400..700).contains(&booked), "{booked}");
        }
    }

    #[test]
    fn a_card_payment_is_pending_until_it_books() {
        let accounts = generate(&params());
        let acc = &accounts[0];
        // A day with card payments pending (most days have some).
        let (today, pending) = (0..30)
            .map(|d| params().today + Days::new(d))
            .map(|day| (day, acc.pending(day).collect::<Vec<&Row>>()))
            .find(|(_, p)| !p.is_empty())
            .expect("a month without card payments");
        for r in &pending {
            assert!(r.booking > today && r.value <= today);
        }
        // Two days on, yesterday's pending rows are booked.
        let later = today + Days::new(u64::from(CARD_BOOKING_DELAY));
        for r in pending {
            assert!(acc.booked(later).contains(r));
        }
    }
}
