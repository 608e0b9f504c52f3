//! The keypad bank's books: one customer, 1–2 contracts, EUR current
//! accounts with French-looking booked transactions.
//!
//! Like Fibank's generator, the state at bank day `D` is a pure function of
//! `(seed, config, D)`: days are generated in order, each (account, day) with
//! its own random stream, so advancing the clock appends exactly the rows a
//! fresh world built with a later `today` would hold. Money is integer cents.
use bankbridge_core::Iban;
use chrono::{Datelike, Days, Months, NaiveDate, Weekday};
use rand::{Rng, RngCore};

use crate::fibank::data::{mix, rng_for};

/// Card merchants: name, city, amount range in cents.
pub const MERCHANTS: &[(&str, &str, i64, i64)] = &[
    ("CARREFOUR", "PARIS", 500, 15_000),
    ("CARREFOUR CITY", "PARIS", 200, 4_000),
    ("MONOPRIX", "PARIS", 300, 9_000),
    ("FRANPRIX", "PARIS", 200, 4_500),
    ("E.LECLERC", "NANTES", 1_000, 18_000),
    ("AUCHAN", "LILLE", 800, 16_000),
    ("LIDL", "LYON", 500, 9_000),
    ("PICARD SURGELES", "PARIS", 600, 6_000),
    ("BOULANGERIE PAUL", "PARIS", 150, 1_800),
    ("TOTALENERGIES", "LYON", 2_000, 9_000),
    ("PHARMACIE DU CENTRE", "BORDEAUX", 300, 6_000),
    ("FNAC", "PARIS", 1_000, 40_000),
    ("DARTY", "MARSEILLE", 2_000, 80_000),
    ("DECATHLON", "LILLE", 1_000, 25_000),
    ("IKEA", "PARIS", 1_500, 60_000),
    ("LEROY MERLIN", "TOULOUSE", 800, 30_000),
    ("SNCF", "PARIS", 1_500, 15_000),
    ("RATP", "PARIS", 190, 8_640),
    ("UBER EATS", "PARIS", 1_200, 4_500),
    ("DELIVEROO", "PARIS", 1_200, 4_000),
    ("AMAZON PAYMENTS", "LUXEMBOURG", 800, 20_000),
    ("SPOTIFY", "STOCKHOLM", 1_099, 1_799),
    ("NETFLIX.COM", "AMSTERDAM", 899, 1_999),
    ("APPLE.COM/BILL", "CORK", 99, 1_499),
    ("CINEMA UGC", "PARIS", 1_000, 3_000),
    ("STARBUCKS", "PARIS", 400, 1_200),
    ("MCDONALDS", "LYON", 600, 2_500),
    ("H ET M", "PARIS", 1_000, 12_000),
    ("ZARA", "PARIS", 1_500, 15_000),
    ("BRICO DEPOT", "NANTES", 500, 20_000),
];

const ATM_CITIES: &[&str] = &["PARIS 11", "PARIS 15", "LYON 3", "NANTES", "BORDEAUX"];

/// Counterparties of SEPA transfers.
const PARTIES: &[&str] = &[
    "M. PIERRE MARTIN",
    "MME SOPHIE BERNARD",
    "M. LUCAS PETIT",
    "MME CAMILLE DUBOIS",
    "M. THOMAS ROBERT",
    "SCI LES TILLEULS",
    "SYNDIC FONCIA PARIS",
    "MUTUELLE GENERALE",
    "CAF DE PARIS",
    "CPAM PARIS",
    "DGFIP IMPOTS",
    "ASSOCIATION SPORTIVE",
];

const PURPOSES_OUT: &[&str] = &[
    "LOYER",
    "REMBOURSEMENT",
    "CADEAU",
    "CHARGES COPRO",
    "COTISATION",
    "PARTAGE RESTAURANT",
];
const PURPOSES_IN: &[&str] = &[
    "REMBOURSEMENT",
    "REMBT SOINS",
    "PRESTATIONS",
    "REMBT IMPOT",
    "VENTE",
];

/// Creditors of SEPA direct debits: name, creditor id (ICS), amount range.
const CREDITORS: &[(&str, &str, i64, i64)] = &[
    ("EDF CLIENTS PARTICULIERS", "FR19ZZZ004802", 3_000, 15_000),
    ("ENGIE", "FR53ZZZ001258", 2_500, 12_000),
    ("FREE MOBILE", "FR83ZZZ477209", 199, 1_999),
    ("ORANGE SA", "FR64ZZZ018463", 2_000, 6_000),
    ("BOUYGUES TELECOM", "FR43ZZZ418271", 1_500, 5_000),
    ("MAIF", "FR95ZZZ116024", 2_500, 9_000),
    ("AXA FRANCE IARD", "FR12ZZZ001217", 3_000, 11_000),
    ("VEOLIA EAU", "FR46ZZZ005212", 1_500, 6_000),
    ("COMUTITRES NAVIGO", "FR27ZZZ433002", 8_640, 8_640),
    ("CANAL PLUS", "FR33ZZZ434422", 1_999, 4_499),
];

const EMPLOYERS: &[&str] = &[
    "SOFTEO SAS",
    "LOGISTIQUE DU RHONE SA",
    "CABINET DURAND ET ASSOCIES",
];

/// Bank fees: label and amount in cents.
pub const FEES: &[(&str, i64)] = &[
    ("COTISATION CARTE VISA", 1_200),
    ("FRAIS TENUE DE COMPTE", 300),
    ("COMMISSION D'INTERVENTION", 800),
    ("FRAIS ALERTES SMS", 150),
];

/// Title and first name.
const FIRST_NAMES: &[(&str, &str)] = &[
    ("M.", "JEAN"),
    ("MME", "MARIE"),
    ("M.", "NICOLAS"),
    ("MME", "CLAIRE"),
    ("M.", "JULIEN"),
    ("MME", "ELODIE"),
];
const LAST_NAMES: &[&str] = &["DUPONT", "MOREAU", "LEFEBVRE", "GIRARD", "FONTAINE"];

/// A bank code of our own invention (French IBANs: bank, branch, account, RIB key).
const BANK_CODE: &str = "16958";

/// What a row is, compact: labels are rendered on demand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum What {
    /// `bought` is the card use, 0–2 days before the booking.
    Card {
        merchant: u8,
        bought: NaiveDate,
        card: u16,
    },
    Atm {
        city: u8,
        bought: NaiveDate,
        card: u16,
    },
    TransferIn {
        party: u8,
        purpose: u8,
        reference: u32,
    },
    TransferOut {
        party: u8,
        purpose: u8,
        reference: u32,
    },
    DirectDebit {
        creditor: u8,
        mandate: u32,
    },
    Salary {
        employer: u8,
    },
    Fee {
        fee: u8,
    },
    /// Money moved in from the customer's savings so the account never goes
    /// below zero (added before a debit that would overdraw it).
    TopUp,
}

/// A booked row. Rows of a day have no time and no id: identical twins on
/// the same day are indistinguishable, as in the real API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row {
    pub date: NaiveDate,
    /// Signed: debits negative.
    pub cents: i64,
    /// Balance after this row.
    pub balance: i64,
    pub what: What,
    /// `movement_code_type`, absent on some rows.
    pub code: Option<u16>,
}

impl Row {
    pub fn label(&self) -> String {
        match self.what {
            What::Card {
                merchant, bought, ..
            } => format!(
                "CB {} {}",
                MERCHANTS[usize::from(merchant)].0,
                bought.format("%d/%m")
            ),
            What::Atm { city, bought, .. } => format!(
                "RETRAIT DAB {} {}",
                bought.format("%d/%m"),
                ATM_CITIES[usize::from(city)]
            ),
            What::TransferIn { party, .. } | What::TransferOut { party, .. } => {
                format!("VIR SEPA {}", PARTIES[usize::from(party)])
            }
            What::DirectDebit { creditor, .. } => {
                format!("PRLV SEPA {}", CREDITORS[usize::from(creditor)].0)
            }
            What::Salary { employer } => format!("VIR SEPA {}", EMPLOYERS[usize::from(employer)]),
            What::Fee { fee } => FEES[usize::from(fee)].0.to_owned(),
            What::TopUp => "VIR INTERNE DEPUIS LIVRET A".to_owned(),
        }
    }

    /// The free-text `nature` (SEPA details, card details).
    pub fn nature(&self) -> String {
        match self.what {
            What::Card {
                merchant,
                bought,
                card,
            } => {
                let (name, city, _, _) = MERCHANTS[usize::from(merchant)];
                format!(
                    "FACTURE CARTE DU {} {name} {city} CARTE 4974XXXXXXXX{card:04}",
                    bought.format("%d%m%y")
                )
            }
            What::Atm { city, bought, card } => format!(
                "RETRAIT DAB DU {} {} CARTE 4974XXXXXXXX{card:04}",
                bought.format("%d%m%y"),
                ATM_CITIES[usize::from(city)]
            ),
            What::TransferIn {
                party,
                purpose,
                reference,
            } => format!(
                "VIR SEPA RECU /DE {} /MOTIF {} /REF {reference:08}",
                PARTIES[usize::from(party)],
                PURPOSES_IN[usize::from(purpose)]
            ),
            What::TransferOut {
                party,
                purpose,
                reference,
            } => format!(
                "VIR SEPA EMIS /MOTIF {} /BEN {} /REFDBT {reference:08}",
                PURPOSES_OUT[usize::from(purpose)],
                PARTIES[usize::from(party)]
            ),
            What::DirectDebit { creditor, mandate } => {
                let (name, ics, _, _) = CREDITORS[usize::from(creditor)];
                format!(
                    "PRLV SEPA {name} /ICS {ics} /RUM {mandate:010} /MOTIF ECHEANCE {}",
                    self.date.format("%m/%Y")
                )
            }
            What::Salary { employer } => format!(
                "VIR SEPA RECU /DE {} /MOTIF SALAIRE {}",
                EMPLOYERS[usize::from(employer)],
                self.date.format("%m %Y")
            ),
            What::Fee { .. } => "FRAIS BANCAIRES ET COTISATIONS".to_owned(),
            What::TopUp => "VIREMENT INTERNE DEPUIS LIVRET A".to_owned(),
        }
    }

    pub fn is_fee(&self) -> bool {
        matches!(self.what, What::Fee { .. })
    }
}

#[derive(Clone, Debug)]
pub struct Contract {
    /// 10 digits, so its base64 ends in `==` (the 2 characters clients drop).
    pub id: String,
    pub label: String,
}

#[derive(Clone, Debug)]
pub struct Account {
    pub iban: Iban,
    pub internal_id: String,
    pub external_id: String,
    /// Index into [`World::contracts`].
    pub contract: usize,
    pub opening: i64,
    /// Oldest first; API index `i` (0 = newest) is `rows[len - 1 - i]`.
    pub rows: Vec<Row>,
    pub balance: i64,
    pub sum: i64,
    owed: f64,
}

impl Account {
    /// Index range of rows with `from <= date <= to`.
    pub fn range(&self, from: NaiveDate, to: NaiveDate) -> std::ops::Range<usize> {
        let lo = self.rows.partition_point(|r| r.date < from);
        let hi = self.rows.partition_point(|r| r.date <= to).max(lo);
        lo..hi
    }

    /// Balance before the row at storage index `i`.
    pub fn balance_before(&self, i: usize) -> i64 {
        match i.checked_sub(1) {
            Some(j) => self.rows[j].balance,
            None => self.opening,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    pub seed: u64,
    pub accounts: usize,
    pub transactions: usize,
    pub years: u32,
    pub today: NaiveDate,
}

#[derive(Clone, Debug)]
pub struct World {
    pub params: Params,
    /// The customer number (11 digits).
    pub identifier: String,
    pub pin: String,
    pub user_name: String,
    pub birthdate: NaiveDate,
    pub contracts: Vec<Contract>,
    pub accounts: Vec<Account>,
    pub start: NaiveDate,
    /// The bank's today: the last generated day.
    pub day: NaiveDate,
    rate: f64,
    /// The seed mixed with this bank's salt, so its data differs from Fibank's.
    salted: u64,
}

fn digits(rng: &mut impl Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

/// The French RIB key of an all-digit bank, branch and account number.
fn rib_key(bank: &str, branch: &str, account: &str) -> u64 {
    let n = |s: &str| s.parse::<u64>().unwrap_or(0);
    97 - (89 * n(bank) + 15 * n(branch) + 3 * n(account)) % 97
}

impl World {
    pub fn new(params: Params) -> World {
        let salted = mix(params.seed, 0x4B45_5950_4144, 1);
        let today = params.today;
        let start = today
            .checked_sub_months(Months::new(params.years.saturating_mul(12)))
            .unwrap_or(NaiveDate::MIN)
            .max(NaiveDate::from_ymd_opt(1995, 1, 1).unwrap_or(NaiveDate::MIN))
            .min(today);
        let span = ((today - start).num_days() + 1).max(1) as f64;
        let rate = params.transactions as f64 / span;

        let mut meta = rng_for(salted, u64::MAX, 0);
        // No leading zero, so the identifier survives being read as a number.
        let identifier = format!("{}{}", meta.random_range(1..10u8), digits(&mut meta, 10));
        let pin = digits(&mut meta, 6);
        let (title, first) = FIRST_NAMES[meta.random_range(0..FIRST_NAMES.len())];
        let last = LAST_NAMES[meta.random_range(0..LAST_NAMES.len())];
        let user_name = format!("{title} {first} {last}");
        let birthdate = NaiveDate::from_ymd_opt(
            meta.random_range(1955..2003),
            meta.random_range(1..=12),
            meta.random_range(1..=28),
        )
        .unwrap_or(NaiveDate::MIN);
        let n_contracts = params.accounts.clamp(1, 2);
        let contracts: Vec<Contract> = (0..n_contracts)
            .map(|i| Contract {
                id: format!("{}{}", 4 + i, digits(&mut meta, 9)),
                label: if i == 0 {
                    format!("CONVENTION COMPTE - {first} {last}")
                } else {
                    format!("COMPTE JOINT - M. OU MME {last}")
                },
            })
            .collect();
        let branch = digits(&mut meta, 5);
        let mut used = std::collections::HashSet::new();
        let accounts = (0..params.accounts)
            .map(|i| {
                let mut r = rng_for(salted, u64::MAX - 1, i as u64);
                let number = loop {
                    let n = digits(&mut r, 11);
                    if used.insert(n.clone()) {
                        break n;
                    }
                };
                let key = rib_key(BANK_CODE, &branch, &number);
                // All digits: from_parts always yields a valid IBAN.
                let iban = Iban::from_parts("FR", &format!("{BANK_CODE}{branch}{number}{key:02}"))
                    .unwrap_or_else(|_| Iban::parse("FR7630006000011234567890189").expect("valid"));
                let mut uuid = [0u8; 16];
                r.fill_bytes(&mut uuid);
                let external_id = uuid::Builder::from_random_bytes(uuid)
                    .into_uuid()
                    .to_string();
                let opening = r.random_range(50_000..400_000i64);
                Account {
                    iban,
                    internal_id: format!("{:016X}", r.random::<u64>()),
                    external_id,
                    contract: i % n_contracts,
                    opening,
                    rows: Vec::with_capacity(params.transactions + params.transactions / 8 + 16),
                    balance: opening,
                    sum: 0,
                    owed: 0.0,
                }
            })
            .collect();

        let mut world = World {
            params,
            identifier,
            pin,
            user_name,
            birthdate,
            contracts,
            accounts,
            start,
            day: start,
            rate,
            salted,
        };
        let mut d = start;
        loop {
            world.generate_day(d);
            world.day = d;
            match d.succ_opt() {
                Some(next) if next <= today => d = next,
                _ => break,
            }
        }
        world
    }

    /// Move the bank's day `days` forward, booking each new day's rows.
    pub fn advance(&mut self, days: u32) {
        for _ in 0..days {
            let Some(next) = self.day.checked_add_days(Days::new(1)) else {
                return;
            };
            self.generate_day(next);
            self.day = next;
        }
    }

    fn generate_day(&mut self, d: NaiveDate) {
        let index = (d - self.start).num_days().max(0) as u64;
        let salary_permille = ((self.rate * 1000.0 / 3.0) as i64).clamp(50, 1000);
        for (a, acct) in self.accounts.iter_mut().enumerate() {
            let mut rng = rng_for(self.salted, a as u64, index);
            let mut drafts: Vec<(u32, Draft)> = Vec::new();
            acct.owed += self.rate * rng.random_range(0.3..1.7);
            let n = acct.owed.floor().max(0.0);
            acct.owed -= n;
            if a == 0 && is_salary_day(d) {
                let employer = (mix(self.salted, 7, 0) % EMPLOYERS.len() as u64) as u8;
                drafts.push((
                    0,
                    Draft {
                        cents: rng.random_range(220_000..380_000) * salary_permille / 1000,
                        what: What::Salary { employer },
                        code: Some(158),
                    },
                ));
            }
            let mut last: Option<(u32, Draft)> = None;
            for _ in 0..n as usize {
                // Identical twins: the same thing twice the same day (two
                // coffees); nothing in this API tells them apart.
                if let Some(prev) = last
                    && rng.random_bool(0.05)
                {
                    drafts.push(prev);
                    continue;
                }
                let order = rng.random_range(1..1_000_000u32);
                let draft = draft(&mut rng, d);
                drafts.push((order, draft));
                last = Some((order, draft));
            }
            // The order of the day's rows; twins share their key and stay adjacent.
            drafts.sort_by_key(|(order, _)| *order);
            for (_, draft) in drafts {
                if draft.cents < 0 && acct.balance + draft.cents < 0 {
                    let top_up = rng.random_range(5..=30) * 10_000 - draft.cents;
                    push(acct, d, top_up, What::TopUp, Some(140));
                }
                push(acct, d, draft.cents, draft.what, draft.code);
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Draft {
    cents: i64,
    what: What,
    code: Option<u16>,
}

fn draft<R: Rng>(rng: &mut R, d: NaiveDate) -> Draft {
    let before = |rng: &mut R| {
        d.checked_sub_days(Days::new(rng.random_range(0..=2)))
            .unwrap_or(d)
    };
    let roll: u32 = rng.random_range(0..100);
    let (cents, what, code) = if roll < 60 {
        let merchant = rng.random_range(0..MERCHANTS.len());
        let (_, _, lo, hi) = MERCHANTS[merchant];
        let what = What::Card {
            merchant: merchant as u8,
            bought: before(rng),
            card: rng.random_range(0..10_000),
        };
        (-rng.random_range(lo..=hi), what, 948)
    } else if roll < 65 {
        let what = What::Atm {
            city: rng.random_range(0..ATM_CITIES.len()) as u8,
            bought: before(rng),
            card: rng.random_range(0..10_000),
        };
        (-rng.random_range(2..=30) * 1_000, what, 932)
    } else if roll < 78 {
        let creditor = rng.random_range(0..CREDITORS.len());
        let (_, _, lo, hi) = CREDITORS[creditor];
        let what = What::DirectDebit {
            creditor: creditor as u8,
            mandate: rng.random_range(0..1_000_000_000),
        };
        (-rng.random_range(lo..=hi), what, 178)
    } else if roll < 86 {
        let what = What::TransferOut {
            party: rng.random_range(0..PARTIES.len()) as u8,
            purpose: rng.random_range(0..PURPOSES_OUT.len()) as u8,
            reference: rng.random_range(0..100_000_000),
        };
        (-rng.random_range(1_000..90_000), what, 117)
    } else if roll < 96 {
        let what = What::TransferIn {
            party: rng.random_range(0..PARTIES.len()) as u8,
            purpose: rng.random_range(0..PURPOSES_IN.len()) as u8,
            reference: rng.random_range(0..100_000_000),
        };
        (rng.random_range(1_000..120_000), what, 158)
    } else {
        let fee = rng.random_range(0..FEES.len());
        (-FEES[fee].1, What::Fee { fee: fee as u8 }, 602)
    };
    // About a quarter of the rows come without a movement code.
    let code = (!rng.random_bool(0.25)).then_some(code);
    Draft { cents, what, code }
}

fn push(acct: &mut Account, date: NaiveDate, cents: i64, what: What, code: Option<u16>) {
    acct.balance += cents;
    acct.sum += cents;
    acct.rows.push(Row {
        date,
        cents,
        balance: acct.balance,
        what,
        code,
    });
}

/// Salaries come on the 28th, or the Friday before when it is a weekend.
fn is_salary_day(d: NaiveDate) -> bool {
    match d.weekday() {
        Weekday::Sat | Weekday::Sun => false,
        Weekday::Fri => (26..=28).contains(&d.day()),
        _ => d.day() == 28,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(seed: u64) -> Params {
        Params {
            seed,
            accounts: 3,
            transactions: 500,
            years: 2,
            today: NaiveDate::from_ymd_opt(2024, 6, 30).unwrap(),
        }
    }

    #[test]
    fn consistent_books() {
        let w = World::new(params(1));
        assert_eq!(w.contracts.len(), 2);
        assert_eq!(w.identifier.len(), 11);
        assert_eq!(w.pin.len(), 6);
        for c in &w.contracts {
            use base64::Engine;
            let b = base64::engine::general_purpose::STANDARD.encode(&c.id);
            assert!(b.ends_with("=="), "{b}");
        }
        let mut twins = 0;
        for a in &w.accounts {
            assert_eq!(Iban::parse(a.iban.as_str()).unwrap(), a.iban);
            assert!(a.iban.as_str().starts_with("FR"));
            let mut bal = a.opening;
            for r in &a.rows {
                bal += r.cents;
                assert_eq!(bal, r.balance);
                assert!(r.balance >= 0);
            }
            assert_eq!(bal, a.balance);
            assert_eq!(a.sum, a.balance - a.opening);
            assert!(a.rows.windows(2).all(|p| p[0].date <= p[1].date));
            // Twins differ only by their running balance.
            twins += a
                .rows
                .windows(2)
                .filter(|p| {
                    (p[0].date, p[0].cents, p[0].what, p[0].code)
                        == (p[1].date, p[1].cents, p[1].what, p[1].code)
                })
                .count();
            let n = a.rows.len();
            assert!((400..700).contains(&n), "{n} rows");
            assert!(a.rows.iter().any(|r| r.code.is_none()));
            assert!(a.rows.iter().any(|r| r.label().starts_with("CB ")));
        }
        assert!(twins > 0);
    }

    #[test]
    fn deterministic_and_advance_in_steps() {
        let a = World::new(params(5));
        let b = World::new(params(5));
        assert_eq!(a.identifier, b.identifier);
        assert_eq!(a.pin, b.pin);
        assert_eq!(a.accounts[1].rows, b.accounts[1].rows);
        let mut c = World::new(params(5));
        c.advance(10);
        let mut d = World::new(params(5));
        d.advance(3);
        d.advance(7);
        assert_eq!(c.day, d.day);
        for (x, y) in c.accounts.iter().zip(&d.accounts) {
            assert_eq!(x.rows, y.rows);
            assert!(x.rows.len() > a.accounts[0].rows.len() / 100);
        }
        let other = World::new(params(6));
        assert_ne!(other.identifier, a.identifier);
    }
}
