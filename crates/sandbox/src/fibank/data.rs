//! The simulated Fibank's books: a deterministic generator of accounts,
//! booked transactions and pending card authorisations.
//!
//! The state at sandbox day `D` is a pure function of `(seed, config, D)`:
//! days are generated one after the other from the start of the history, each
//! day and account with its own random stream derived from the seed, and the
//! bank-wide id counters advance in that fixed order. Moving the clock forward
//! ([`World::advance`]) generates the next days exactly as a fresh world built
//! with a later `today` would have.
//!
//! Money is kept in integer cents (minor units); never a float.
use bankbridge_core::Iban;
use chrono::{Datelike, Days, Months, NaiveDate, Weekday};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// First booked entry serial number (`acEntrySrNo`); counted bank-wide.
pub const FIRST_BOOKED_ID: u64 = 310_000_001;
/// First pending authorisation id: a separate id space, far above booked ids.
pub const FIRST_PENDING_ID: u64 = 900_000_000_001;

/// Currencies of the accounts in order (the first account is the BGN current
/// account), with the factor (numerator, denominator) applied to BGN amounts.
const CURRENCIES: &[(&str, i64, i64)] = &[
    ("BGN", 1, 1),
    ("EUR", 1, 2),
    ("USD", 11, 20),
    ("GBP", 9, 20),
    ("CHF", 1, 2),
    ("RON", 5, 2),
];

/// Card merchants: name, city, typical amount range in BGN cents.
pub const MERCHANTS: &[(&str, &str, i64, i64)] = &[
    ("KAUFLAND BULGARIA", "SOFIA", 800, 18_000),
    ("LIDL BULGARIA EOOD", "SOFIA", 500, 15_000),
    ("BILLA BULGARIA", "PLOVDIV", 300, 9_000),
    ("FANTASTICO GROUP", "SOFIA", 200, 6_000),
    ("T MARKET", "VARNA", 200, 5_000),
    ("SHELL BULGARIA", "SOFIA", 2_000, 12_000),
    ("OMV BULGARIA", "BURGAS", 2_000, 11_000),
    ("LUKOIL BULGARIA", "RUSE", 2_000, 10_000),
    ("DM BULGARIA", "SOFIA", 300, 6_000),
    ("SOPHARMACY", "SOFIA", 250, 8_000),
    ("DR.MAX", "PLOVDIV", 250, 6_000),
    ("EMAG.BG", "SOFIA", 1_500, 60_000),
    ("GLOVO BG", "SOFIA", 900, 4_500),
    ("BOLT.EU", "TALLINN", 500, 3_000),
    ("TAKEAWAY.COM", "AMSTERDAM", 1_200, 5_000),
    ("SPOTIFY", "STOCKHOLM", 999, 1_299),
    ("NETFLIX.COM", "AMSTERDAM", 1_599, 2_599),
    ("A1 BULGARIA", "SOFIA", 2_000, 6_000),
    ("VIVACOM", "SOFIA", 1_800, 5_500),
    ("SOFIYSKA VODA", "SOFIA", 1_500, 6_000),
    ("TOPLOFIKATSIA SOFIA", "SOFIA", 3_000, 25_000),
    ("ELECTROHOLD", "SOFIA", 3_000, 20_000),
    ("STARBUCKS", "SOFIA", 350, 1_200),
    ("COSTA COFFEE", "SOFIA", 300, 1_100),
    ("IKEA SOFIA", "SOFIA", 1_000, 80_000),
    ("TECHNOPOLIS", "SOFIA", 2_000, 150_000),
    ("DECATHLON", "SOFIA", 1_500, 30_000),
    ("H&M", "SOFIA", 1_000, 20_000),
    ("MR.BRICOLAGE", "VARNA", 500, 40_000),
    ("CINEMA CITY", "SOFIA", 1_200, 5_000),
    ("AMAZON EU SARL", "LUXEMBOURG", 1_000, 30_000),
    ("BOOKING.COM", "AMSTERDAM", 8_000, 90_000),
    ("WIZZ AIR", "BUDAPEST", 5_000, 60_000),
    ("MCDONALDS", "SOFIA", 600, 3_000),
    ("HAPPY BAR AND GRILL", "SOFIA", 2_000, 12_000),
    ("ALPHA TAXI", "PLOVDIV", 500, 3_000),
];

/// Cash machines for withdrawals.
pub const ATMS: &[&str] = &[
    "FIBANK ATM SOFIA TSARIGRADSKO SHOSE 111",
    "FIBANK ATM SOFIA VITOSHA 42",
    "FIBANK ATM PLOVDIV GLAVNA 18",
    "FIBANK ATM VARNA KNYAZ BORIS I 57",
    "FIBANK ATM BURGAS ALEKSANDROVSKA 20",
];

/// Counterparties of credit transfers.
const PARTY_NAMES: &[&str] = &[
    "ИВАН ПЕТРОВ ГЕОРГИЕВ",
    "МАРИЯ ДИМИТРОВА ИВАНОВА",
    "ГЕОРГИ НИКОЛОВ СТОЯНОВ",
    "ЕЛЕНА ТОДОРОВА ПАВЛОВА",
    "ДИМИТЪР АТАНАСОВ КОЛЕВ",
    "ТЕХНО СОФТ ЕООД",
    "БИЛД ИНВЕСТ ООД",
    "ЕТАЖНА СОБСТВЕНОСТ ЛОЗЕНЕЦ",
    "НАП ТД СОФИЯ",
    "СТОЛИЧНА ОБЩИНА",
    "ЗАСТРАХОВАТЕЛНО ДРУЖЕСТВО ЕВРОИНС",
    "КЛУБ ПО ПЛУВАНЕ ДЕЛФИН",
    "ЧАСТНО ДЕТСКО ГРАДИНА СЛЪНЦЕ",
    "АДВОКАТСКО ДРУЖЕСТВО ПЕНЕВ",
    "ДИДЖИТАЛ СЪРВИСИЗ АД",
    "НИКОЛАЙ ХРИСТОВ ВЪЛЧЕВ",
];

/// Bank codes and branches of other Bulgarian banks, for counterparty IBANs.
const OTHER_BANKS: &[&str] = &[
    "UNCR7000", "BPBI7940", "STSA9300", "RZBB9155", "UBBS8002", "FINV9150",
];

/// Employers paying salaries into the first account.
const EMPLOYERS: &[&str] = &["ТЕХНО СОФТ ЕООД", "ДИДЖИТАЛ СЪРВИСИЗ АД", "БИЛД ИНВЕСТ ООД"];

/// Fees: label and amount in BGN cents.
pub const FEES: &[(&str, i64)] = &[
    ("Такса обслужване на сметка", 250),
    ("Такса превод БИСЕРА", 150),
    ("Такса SMS известяване", 100),
    ("Такса поддръжка дебитна карта", 200),
];

/// What a transaction is, compact: the strings are rendered on demand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum What {
    Card {
        merchant: u16,
        card: u16,
        auth_code: u32,
    },
    Atm {
        atm: u16,
        card: u16,
    },
    TransferOut {
        party: u16,
        purpose: u8,
        doc: u32,
    },
    TransferIn {
        party: u16,
        purpose: u8,
        doc: u32,
    },
    Salary {
        employer: u16,
    },
    Fee {
        fee: u8,
    },
    /// Cash paid in at a branch; the generator adds one before a debit that
    /// would overdraw the account, so booked balances never go negative.
    TopUp,
}

/// A booked entry of an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Booked {
    /// `acEntrySrNo`: unique across the whole bank.
    pub id: u64,
    pub date: NaiveDate,
    /// Seconds after local midnight of `date`.
    pub secs: u32,
    pub value_date: NaiveDate,
    /// Signed: debits negative.
    pub cents: i64,
    /// Running booked balance after this entry (`acBal`).
    pub balance: i64,
    pub what: What,
}

/// A card authorisation not yet booked (or released).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Auth {
    /// Pending id, from its own id space.
    pub id: u64,
    pub account: usize,
    pub date: NaiveDate,
    pub secs: u32,
    /// Signed (a card payment: negative).
    pub cents: i64,
    pub what: What,
    /// The day it books (`books`) or is released and vanishes.
    pub resolves: NaiveDate,
    pub books: bool,
}

#[derive(Clone, Debug)]
pub struct Party {
    pub name: &'static str,
    pub iban: String,
}

#[derive(Clone, Debug)]
pub struct AccountData {
    pub iban: Iban,
    pub currency: &'static str,
    pub name: String,
    pub ac_no: String,
    /// Balance before the first generated entry.
    pub opening: i64,
    /// Booked entries in booking order (by date, then id).
    pub booked: Vec<Booked>,
    pub balance: i64,
    pub booked_sum: i64,
    factor: (i64, i64),
    /// Fractional transactions owed by the daily rate, carried over.
    owed: f64,
}

impl AccountData {
    /// Index range of booked entries with `from <= date <= to`.
    pub fn range(&self, from: NaiveDate, to: NaiveDate) -> std::ops::Range<usize> {
        let lo = self.booked.partition_point(|b| b.date < from);
        let hi = self.booked.partition_point(|b| b.date <= to).max(lo);
        lo..hi
    }

    /// Booked balance before the entry at `index`.
    pub fn balance_before(&self, index: usize) -> i64 {
        match index.checked_sub(1) {
            Some(i) => self.booked[i].balance,
            None => self.opening,
        }
    }

    fn scale(&self, bgn_cents: i64) -> i64 {
        (bgn_cents * self.factor.0 / self.factor.1).max(1)
    }
}

/// Parameters of a world, from the sandbox configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    pub seed: u64,
    pub accounts: usize,
    pub transactions: usize,
    pub years: u32,
    pub today: NaiveDate,
}

/// The whole simulated bank at one sandbox day.
#[derive(Clone, Debug)]
pub struct World {
    pub params: Params,
    pub customer_id: u64,
    pub customer_name: String,
    pub accounts: Vec<AccountData>,
    pub parties: Vec<Party>,
    /// First day of the history.
    pub start: NaiveDate,
    /// The sandbox day `D`: the last generated day.
    pub day: NaiveDate,
    /// Unresolved authorisations (dated on or before `day`), in id order.
    pub pending: Vec<Auth>,
    /// Average booked transactions per account and day.
    rate: f64,
    next_booked: u64,
    next_pending: u64,
}

/// One stream of the seed: SplitMix64 over the seed and two coordinates.
pub(crate) fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut z = seed
        ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F).rotate_left(29);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(crate) fn rng_for(seed: u64, a: u64, b: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(seed, a, b))
}

fn bban(rng: &mut ChaCha8Rng, bank: &str) -> String {
    format!("{bank}10{:08}", rng.random_range(0..100_000_000u32))
}

impl World {
    /// Generate the bank from the start of the history up to `params.today`.
    pub fn new(params: Params) -> World {
        let today = params.today;
        let start = today
            .checked_sub_months(Months::new(params.years.saturating_mul(12)))
            .unwrap_or(NaiveDate::MIN)
            .max(NaiveDate::from_ymd_opt(1995, 1, 1).unwrap_or(NaiveDate::MIN))
            .min(today);
        let span = ((today - start).num_days() + 1).max(1) as f64;
        let rate = params.transactions as f64 / span;

        let mut meta = rng_for(params.seed, u64::MAX, 0);
        let customer_id = meta.random_range(1_000_000..10_000_000u64);
        let first = ["ИВАН", "МАРИЯ", "ГЕОРГИ", "ЕЛЕНА", "ПЕТЪР", "НИКОЛЕТА"];
        let last = ["ПЕТРОВ(А)", "ИВАНОВ(А)", "ДИМИТРОВ(А)", "ГЕОРГИЕВ(А)"];
        let customer_name = format!(
            "{} {}",
            first[meta.random_range(0..first.len())],
            last[meta.random_range(0..last.len())]
        );
        let parties = PARTY_NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let bank = OTHER_BANKS[i % OTHER_BANKS.len()];
                let iban = Iban::from_parts("BG", &bban(&mut meta, bank))
                    .map(String::from)
                    .unwrap_or_default();
                Party { name, iban }
            })
            .collect();

        let mut used = std::collections::HashSet::new();
        let accounts = (0..params.accounts)
            .map(|i| {
                let mut r = rng_for(params.seed, u64::MAX - 1, i as u64);
                let (ccy, num, den) = CURRENCIES[i % CURRENCIES.len()];
                let kind = if i == 0 { "10" } else { "14" };
                // An all-digit BBAN always yields a valid IBAN; loop until a
                // fresh account number does.
                let (number, iban) = loop {
                    let number = r.random_range(0..100_000_000u32);
                    if !used.insert(number) {
                        continue;
                    }
                    if let Ok(iban) = Iban::from_parts("BG", &format!("FINV9150{kind}{number:08}"))
                    {
                        break (number, iban);
                    }
                };
                let name = if i == 0 {
                    "Разплащателна сметка".to_owned()
                } else {
                    format!("Спестовна сметка {ccy}")
                };
                let opening = (r.random_range(50_000..500_000i64) * num / den).max(0);
                AccountData {
                    iban,
                    currency: ccy,
                    name,
                    ac_no: format!("{}{number:08}", 1000 + i),
                    opening,
                    booked: Vec::with_capacity(params.transactions + params.transactions / 10 + 16),
                    balance: opening,
                    booked_sum: 0,
                    factor: (num, den),
                    owed: 0.0,
                }
            })
            .collect();

        let mut world = World {
            params,
            customer_id,
            customer_name,
            accounts,
            parties,
            start,
            day: start,
            pending: Vec::new(),
            rate,
            next_booked: FIRST_BOOKED_ID,
            next_pending: FIRST_PENDING_ID,
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

    /// Move the sandbox clock `days` forward: pending items book or vanish,
    /// new transactions appear.
    pub fn advance(&mut self, days: u32) {
        for _ in 0..days {
            let Some(next) = self.day.checked_add_days(Days::new(1)) else {
                return;
            };
            self.generate_day(next);
            self.day = next;
        }
    }

    fn day_index(&self, d: NaiveDate) -> u64 {
        (d - self.start).num_days().max(0) as u64
    }

    fn generate_day(&mut self, d: NaiveDate) {
        let index = self.day_index(d);
        for a in 0..self.accounts.len() {
            let mut rng = rng_for(self.params.seed, a as u64, index);
            let mut booked: Vec<Draft> = Vec::new();
            // 1. Authorisations due today book (under a new id) or vanish.
            let mut kept = Vec::with_capacity(self.pending.len());
            for auth in self.pending.drain(..) {
                if auth.account == a && auth.resolves <= d {
                    if auth.books {
                        booked.push(Draft {
                            secs: auth.secs,
                            cents: auth.cents,
                            what: auth.what,
                            value_date: auth.date,
                        });
                    }
                } else {
                    kept.push(auth);
                }
            }
            self.pending = kept;

            // 2. Today's new activity.
            let mut cards: Vec<(Draft, u64, bool)> = Vec::new();
            let acct = &mut self.accounts[a];
            acct.owed += self.rate * rng.random_range(0.3..1.7);
            let n = acct.owed.floor().max(0.0);
            acct.owed -= n;
            let n = n as usize;
            let salary_permille = ((self.rate * 1000.0 / 3.0) as i64).clamp(50, 1000);
            if a == 0 && is_salary_day(d) {
                let employer = (mix(self.params.seed, 7, 0) % EMPLOYERS.len() as u64) as u16;
                booked.push(Draft {
                    secs: rng.random_range(9 * 3600..11 * 3600),
                    // A sparse account gets a smaller salary so its balance
                    // stays plausible (per mille of a full salary).
                    cents: acct.scale(rng.random_range(250_000..420_000) * salary_permille / 1000),
                    what: What::Salary { employer },
                    value_date: d,
                });
            }
            // The previous event of the day, for twins: (draft, card outcome).
            let mut last: Option<(Draft, Option<Outcome>)> = None;
            for _ in 0..n {
                // Identical twins: the same thing twice the same day (two
                // coffees), under distinct ids as a real bank books them.
                if let Some((draft, outcome)) = last
                    && rng.random_bool(0.04)
                {
                    match outcome {
                        Some((delay, books)) => cards.push((draft, delay, books)),
                        None => booked.push(draft),
                    }
                    continue;
                }
                let secs = rng.random_range(7 * 3600..22 * 3600);
                let roll: u32 = rng.random_range(0..100);
                let is_main = a == 0;
                let card_share = if is_main { 62 } else { 40 };
                let (draft, is_card) = if roll < card_share {
                    let merchant = rng.random_range(0..MERCHANTS.len());
                    let (_, _, lo, hi) = MERCHANTS[merchant];
                    let what = What::Card {
                        merchant: merchant as u16,
                        card: rng.random_range(1000..10_000),
                        auth_code: rng.random_range(100_000..1_000_000),
                    };
                    (
                        Draft {
                            secs,
                            cents: -acct.scale(rng.random_range(lo..=hi)),
                            what,
                            value_date: d,
                        },
                        true,
                    )
                } else if roll < card_share + 6 {
                    let what = What::Atm {
                        atm: rng.random_range(0..ATMS.len()) as u16,
                        card: rng.random_range(1000..10_000),
                    };
                    let cents = -acct.scale(rng.random_range(2..=40) * 1_000);
                    (
                        Draft {
                            secs,
                            cents,
                            what,
                            value_date: d,
                        },
                        false,
                    )
                } else if roll < card_share + 18 {
                    let what = What::TransferOut {
                        party: rng.random_range(0..PARTY_NAMES.len()) as u16,
                        purpose: rng.random_range(0..PURPOSES_OUT.len()) as u8,
                        doc: rng.random_range(1..100_000),
                    };
                    let cents = -acct.scale(rng.random_range(1_000..120_000));
                    (
                        Draft {
                            secs,
                            cents,
                            what,
                            value_date: d,
                        },
                        false,
                    )
                } else if roll < card_share + 30 {
                    let what = What::TransferIn {
                        party: rng.random_range(0..PARTY_NAMES.len()) as u16,
                        purpose: rng.random_range(0..PURPOSES_IN.len()) as u8,
                        doc: rng.random_range(1..100_000),
                    };
                    let cents = acct.scale(rng.random_range(2_000..150_000));
                    (
                        Draft {
                            secs,
                            cents,
                            what,
                            value_date: d,
                        },
                        false,
                    )
                } else {
                    let fee = rng.random_range(0..FEES.len());
                    let cents = -acct.scale(FEES[fee].1);
                    (
                        Draft {
                            secs,
                            cents,
                            what: What::Fee { fee: fee as u8 },
                            value_date: d,
                        },
                        false,
                    )
                };
                if is_card {
                    // Card payments are authorised first and book 1 to 3 days
                    // later; about one in twenty is released and never books.
                    let books = !rng.random_bool(0.05);
                    let delay = if books {
                        rng.random_range(1..=3)
                    } else {
                        rng.random_range(2..=5)
                    };
                    cards.push((draft, delay, books));
                    last = Some((draft, Some((delay, books))));
                } else {
                    booked.push(draft);
                    last = Some((draft, None));
                }
            }

            // 3. Book today's entries in time order, assigning bank-wide ids.
            booked.sort_by_key(|b| b.secs);
            for draft in booked {
                if draft.cents < 0 && acct.balance + draft.cents < 0 {
                    let top_up = acct.scale(rng.random_range(5..=30) * 10_000) - draft.cents;
                    push_booked(
                        acct,
                        &mut self.next_booked,
                        d,
                        draft.secs,
                        d,
                        top_up,
                        What::TopUp,
                    );
                }
                push_booked(
                    acct,
                    &mut self.next_booked,
                    d,
                    draft.secs,
                    draft.value_date,
                    draft.cents,
                    draft.what,
                );
            }

            // 4. Record today's authorisations as pending.
            cards.sort_by_key(|(draft, _, _)| draft.secs);
            for (draft, delay, books) in cards {
                let resolves = d.checked_add_days(Days::new(delay)).unwrap_or(d);
                self.pending.push(Auth {
                    id: self.next_pending,
                    account: a,
                    date: d,
                    secs: draft.secs,
                    cents: draft.cents,
                    what: draft.what,
                    resolves,
                    books,
                });
                self.next_pending += 1;
            }
        }
    }

    pub fn account_by_iban(&self, iban: &str) -> Option<usize> {
        let wanted: String = iban
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_uppercase();
        self.accounts.iter().position(|a| a.iban.as_str() == wanted)
    }
}

/// A card authorisation's fate: days until it resolves, and whether it books.
type Outcome = (u64, bool);

#[derive(Clone, Copy, Debug)]
struct Draft {
    secs: u32,
    cents: i64,
    what: What,
    value_date: NaiveDate,
}

fn push_booked(
    acct: &mut AccountData,
    next_id: &mut u64,
    date: NaiveDate,
    secs: u32,
    value_date: NaiveDate,
    cents: i64,
    what: What,
) {
    acct.balance += cents;
    acct.booked_sum += cents;
    acct.booked.push(Booked {
        id: *next_id,
        date,
        secs,
        value_date,
        cents,
        balance: acct.balance,
        what,
    });
    *next_id += 1;
}

/// Salaries come on the 25th, or the Friday before when it is a weekend.
fn is_salary_day(d: NaiveDate) -> bool {
    match d.weekday() {
        Weekday::Sat | Weekday::Sun => false,
        Weekday::Fri => (25..=27).contains(&d.day()),
        _ => d.day() == 25,
    }
}

pub const PURPOSES_OUT: &[&str] = &[
    "Наем за месец",
    "Плащане по фактура",
    "Вноска по кредит",
    "Такса детска градина",
    "Членски внос",
    "Данък МПС",
    "Застраховка",
    "Поддръжка вход",
];

pub const PURPOSES_IN: &[&str] = &[
    "Връщане на заем",
    "Подарък",
    "Продажба",
    "Възстановена сума",
    "Хонорар",
];

pub fn employer(i: u16) -> &'static str {
    EMPLOYERS.get(i as usize).copied().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(seed: u64, today: NaiveDate) -> Params {
        Params {
            seed,
            accounts: 3,
            transactions: 400,
            years: 2,
            today,
        }
    }

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn balances_are_consistent_and_never_negative() {
        let w = World::new(params(1, d(2024, 6, 30)));
        for a in &w.accounts {
            let mut bal = a.opening;
            for b in &a.booked {
                bal += b.cents;
                assert_eq!(bal, b.balance);
                assert!(b.balance >= 0);
            }
            assert_eq!(a.balance, bal);
            assert!(
                a.booked
                    .windows(2)
                    .all(|p| p[0].date <= p[1].date && p[0].id < p[1].id)
            );
        }
    }

    #[test]
    fn advancing_equals_generating_later() {
        let mut w = World::new(params(9, d(2024, 3, 1)));
        w.advance(10);
        assert_eq!(w.day, d(2024, 3, 11));
        let mut w2 = World::new(params(9, d(2024, 3, 1)));
        w2.advance(4);
        w2.advance(6);
        for (x, y) in w.accounts.iter().zip(&w2.accounts) {
            assert_eq!(x.booked, y.booked);
        }
        assert_eq!(w.pending, w2.pending);
    }

    #[test]
    fn ids_unique_bank_wide_and_pending_distinct() {
        let w = World::new(params(3, d(2024, 6, 30)));
        let mut ids = std::collections::HashSet::new();
        for a in &w.accounts {
            for b in &a.booked {
                assert!(ids.insert(b.id));
                assert!(b.id < FIRST_PENDING_ID);
            }
        }
        assert!(!w.pending.is_empty());
        for p in &w.pending {
            assert!(p.id >= FIRST_PENDING_ID);
            assert!(p.date <= w.day && p.resolves > w.day);
        }
    }
}
