//! The simulated Fibank's JSON, written by hand so money goes out as JSON
//! numbers with exactly two decimals (`12.30`) straight from integer cents,
//! with no float on the way.
use chrono::{Datelike, NaiveDate, NaiveTime, Offset, TimeZone};
use chrono_tz::Europe::Sofia;

use super::data::{
    ATMS, AccountData, Auth, Booked, FEES, MERCHANTS, PURPOSES_IN, PURPOSES_OUT, What, World,
    employer,
};

/// Fibank's own name, the counterparty of fees.
const BANK_NAME: &str = "ПЪРВА ИНВЕСТИЦИОННА БАНКА АД";

/// Append `s` as a JSON string literal.
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Append integer cents as a decimal with two places: `-1234` → `-12.34`.
pub fn push_money(out: &mut String, cents: i64) {
    use std::fmt::Write;
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    let _ = write!(out, "{sign}{}.{:02}", abs / 100, abs % 100);
}

/// Cents as a decimal string (`"-12.34"`), for the control API.
pub fn money_string(cents: i64) -> String {
    let mut s = String::new();
    push_money(&mut s, cents);
    s
}

/// A JSON object being written.
pub struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Obj<'a> {
    pub fn new(out: &'a mut String) -> Self {
        out.push('{');
        Obj { out, first: true }
    }

    fn key(&mut self, k: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        push_str(self.out, k);
        self.out.push(':');
    }

    pub fn str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        push_str(self.out, v);
        self
    }

    pub fn money(&mut self, k: &str, cents: i64) -> &mut Self {
        self.key(k);
        push_money(self.out, cents);
        self
    }

    pub fn int(&mut self, k: &str, v: u64) -> &mut Self {
        self.key(k);
        self.out.push_str(&v.to_string());
        self
    }

    pub fn null(&mut self, k: &str) -> &mut Self {
        self.key(k);
        self.out.push_str("null");
        self
    }

    /// Start a nested value under `k` and return the buffer to write it to.
    pub fn raw(&mut self, k: &str) -> &mut String {
        self.key(k);
        self.out
    }

    pub fn end(self) {
        self.out.push('}');
    }
}

/// `2024-05-03T14:22:10+0300`: a local Sofia time with that day's offset.
pub fn sofia_stamp(date: NaiveDate, secs: u32) -> String {
    let time = NaiveTime::from_num_seconds_from_midnight_opt(secs.min(86_399), 0)
        .unwrap_or(NaiveTime::MIN);
    let local = date.and_time(time);
    let offset = Sofia
        .offset_from_local_datetime(&local)
        .earliest()
        .map(|o| o.fix().local_minus_utc())
        // A time inside the spring-forward gap: use the summer offset.
        .unwrap_or(3 * 3600);
    let sign = if offset < 0 { '-' } else { '+' };
    let off = offset.unsigned_abs();
    format!(
        "{:04}-{:02}-{:02}T{}{sign}{:02}{:02}",
        date.year(),
        date.month(),
        date.day(),
        time.format("%H:%M:%S"),
        off / 3600,
        (off % 3600) / 60
    )
}

fn reference(prefix: &str, date: NaiveDate, id: u64) -> String {
    format!("{prefix}{:02}{:03}{id}", date.year() % 100, date.ordinal())
}

/// The human side of a transaction.
struct Texts {
    trn_type: &'static str,
    trn_code: String,
    trname: String,
    contragent: String,
    ben_order_party: String,
    trn_account: String,
    rem: [String; 3],
    ebank: bool,
    payment: bool,
}

fn texts(world: &World, date: NaiveDate, what: What) -> Texts {
    let month = format!("{:02}.{}", date.month(), date.year());
    let party = |i: u16| {
        world
            .parties
            .get(i as usize)
            .map(|p| (p.name, p.iban.clone()))
            .unwrap_or_default()
    };
    match what {
        What::Card {
            merchant,
            card,
            auth_code,
        } => {
            let (name, city, _, _) = MERCHANTS
                .get(merchant as usize)
                .copied()
                .unwrap_or(("", "", 0, 0));
            Texts {
                trn_type: "PO",
                trn_code: "205".into(),
                trname: format!("Плащане ПОС {name}"),
                contragent: name.into(),
                ben_order_party: String::new(),
                trn_account: String::new(),
                rem: [
                    format!("{name} {city}"),
                    format!("Карта 4***{card}"),
                    format!("Авт.код {auth_code}"),
                ],
                ebank: false,
                payment: false,
            }
        }
        What::Atm { atm, card } => {
            let place = ATMS.get(atm as usize).copied().unwrap_or("");
            Texts {
                trn_type: "AT",
                trn_code: "210".into(),
                trname: "Теглене от АТМ".into(),
                contragent: String::new(),
                ben_order_party: String::new(),
                trn_account: String::new(),
                rem: [place.into(), format!("Карта 4***{card}"), String::new()],
                ebank: false,
                payment: false,
            }
        }
        What::TransferOut {
            party: p,
            purpose,
            doc,
        } => {
            let (name, iban) = party(p);
            let why = PURPOSES_OUT.get(purpose as usize).copied().unwrap_or("");
            Texts {
                trn_type: "TR",
                trn_code: "601".into(),
                trname: format!("Изходящ превод {name}"),
                contragent: name.into(),
                ben_order_party: name.into(),
                trn_account: iban,
                rem: [
                    format!("{why} {month}"),
                    format!("Док. {doc}"),
                    String::new(),
                ],
                ebank: true,
                payment: true,
            }
        }
        What::TransferIn {
            party: p,
            purpose,
            doc,
        } => {
            let (name, iban) = party(p);
            let why = PURPOSES_IN.get(purpose as usize).copied().unwrap_or("");
            Texts {
                trn_type: "TR",
                trn_code: "602".into(),
                trname: format!("Входящ превод {name}"),
                contragent: name.into(),
                ben_order_party: name.into(),
                trn_account: iban,
                rem: [why.into(), format!("Реф. {doc}"), String::new()],
                ebank: false,
                payment: true,
            }
        }
        What::Salary { employer: e } => {
            let name = employer(e);
            let iban = world
                .parties
                .iter()
                .find(|p| p.name == name)
                .map(|p| p.iban.clone())
                .unwrap_or_default();
            Texts {
                trn_type: "TR",
                trn_code: "603".into(),
                trname: format!("Заплата {name}"),
                contragent: name.into(),
                ben_order_party: name.into(),
                trn_account: iban,
                rem: [
                    format!("Заплата за м.{month}"),
                    String::new(),
                    String::new(),
                ],
                ebank: false,
                payment: true,
            }
        }
        What::Fee { fee } => {
            let label = FEES.get(fee as usize).map(|f| f.0).unwrap_or("Такса");
            Texts {
                trn_type: "FE",
                trn_code: format!("80{fee}"),
                trname: label.into(),
                contragent: BANK_NAME.into(),
                ben_order_party: String::new(),
                trn_account: String::new(),
                rem: [format!("{label} {month}"), String::new(), String::new()],
                ebank: false,
                payment: false,
            }
        }
        What::TopUp => Texts {
            trn_type: "CA",
            trn_code: "100".into(),
            trname: "Вноска на каса".into(),
            contragent: world.customer_name.clone(),
            ben_order_party: world.customer_name.clone(),
            trn_account: String::new(),
            rem: ["Вноска от титуляра".into(), String::new(), String::new()],
            ebank: false,
            payment: false,
        },
    }
}

fn yn(b: bool) -> &'static str {
    if b { "Y" } else { "N" }
}

fn dtkt(cents: i64) -> &'static str {
    if cents < 0 { "D" } else { "K" }
}

fn write_texts(o: &mut Obj<'_>, t: &Texts) {
    o.str("trname", &t.trname)
        .str("contragent", &t.contragent)
        .str("benOrderParty", &t.ben_order_party)
        .str("trnAccount", &t.trn_account)
        .str("trnCode", &t.trn_code)
        .str("remI", &t.rem[0])
        .str("remIi", &t.rem[1])
        .str("remIii", &t.rem[2])
        .str("isEbankOper", yn(t.ebank))
        .str("isPayment", yn(t.payment));
}

/// One booked `stmt` line.
pub fn booked_line(out: &mut String, world: &World, acct: &AccountData, b: &Booked) {
    let t = texts(world, b.date, b.what);
    let mut o = Obj::new(out);
    o.int("acEntrySrNo", b.id)
        .str("reference", &reference("FT", b.date, b.id))
        .str("dateTime", &sofia_stamp(b.date, b.secs))
        .str("valueDt", &sofia_stamp(b.value_date, 0))
        .money("amount", b.cents.abs())
        .str("dtkt", dtkt(b.cents))
        .money("acBal", b.balance)
        .str("ccy", acct.currency)
        .str("trnType", t.trn_type);
    write_texts(&mut o, &t);
    o.str("loadAsNew", "N");
    o.end();
}

/// One blocked amount: a card authorisation the bank holds against the
/// account but has not booked.
///
/// Our modelling (the reference shows no such answer): Fibank's site lists
/// held card payments apart from the statement, under "blocked amounts", so
/// the sandbox serves them from their own query and never mixes them into
/// `GetCustBal`'s `stmt`. A hold has its own id space (`blockId`), the
/// authorisation's time, amount with a `dtkt` flag, the merchant's texts and
/// the day the hold lapses. The booked line that follows later has a new
/// `acEntrySrNo` and reference.
pub fn blocked_line(out: &mut String, world: &World, acct: &AccountData, p: &Auth) {
    let t = texts(world, p.date, p.what);
    let mut o = Obj::new(out);
    o.int("blockId", p.id)
        .str("reference", &reference("BL", p.date, p.id))
        .str("dateTime", &sofia_stamp(p.date, p.secs))
        .str(
            "expiryDt",
            &sofia_stamp(p.date + chrono::Days::new(BLOCK_LAPSES_DAYS), 0),
        )
        .money("amount", p.cents.abs())
        .str("dtkt", dtkt(p.cents))
        .str("ccy", acct.currency)
        .str("trnType", t.trn_type);
    write_texts(&mut o, &t);
    o.end();
}

/// Days after which a hold the merchant never claimed lapses, as printed in
/// `expiryDt` (our modelling; card schemes commonly use about a month).
pub const BLOCK_LAPSES_DAYS: u64 = 30;

/// The blocked-amounts answer for one account: every hold still open at the
/// sandbox day, oldest first.
pub fn blocked_amounts(world: &World, a: usize) -> String {
    let acct = &world.accounts[a];
    let mut out = String::with_capacity(64 + world.pending.len() * 400);
    out.push_str("{\"iban\":");
    push_str(&mut out, acct.iban.as_str());
    out.push_str(",\"ccy\":");
    push_str(&mut out, acct.currency);
    out.push_str(",\"blockedAmounts\":[");
    let mut first = true;
    for p in world.pending.iter().filter(|p| p.account == a) {
        if !first {
            out.push(',');
        }
        first = false;
        blocked_line(&mut out, world, acct, p);
    }
    out.push_str("]}");
    out
}

/// A summary line: `OP`/`CL` (balance), `DT`/`CT` (turnover).
fn summary_line(
    out: &mut String,
    acct: &AccountData,
    kind: &str,
    date: NaiveDate,
    secs: u32,
    cents: i64,
    balance: Option<i64>,
) {
    let name = match kind {
        "OP" => "Начално салдо",
        "CL" => "Крайно салдо",
        "DT" => "Дебитен оборот",
        _ => "Кредитен оборот",
    };
    let flag = match kind {
        "DT" => "D",
        "CT" => "K",
        _ => dtkt(cents),
    };
    let mut o = Obj::new(out);
    o.int("acEntrySrNo", 0)
        .str("reference", "")
        .str("dateTime", &sofia_stamp(date, secs))
        .str("valueDt", &sofia_stamp(date, 0))
        .money("amount", cents.abs())
        .str("dtkt", flag);
    match balance {
        Some(b) => o.money("acBal", b),
        None => o.null("acBal"),
    };
    o.str("ccy", acct.currency)
        .str("trnType", kind)
        .str("trnCode", "")
        .str("trname", name);
    o.end();
}

/// The `GetCustBal` answer for one account and an inclusive day range.
pub fn cust_bal(world: &World, a: usize, from: NaiveDate, to: NaiveDate) -> String {
    let acct = &world.accounts[a];
    let range = acct.range(from, to);
    let entries = &acct.booked[range.clone()];
    let opening = acct.balance_before(range.start);
    let closing = acct.balance_before(range.end);
    let (mut debit, mut credit) = (0i64, 0i64);
    for b in entries {
        if b.cents < 0 {
            debit -= b.cents;
        } else {
            credit += b.cents;
        }
    }
    let mut out = String::with_capacity(256 + entries.len() * 640);
    out.push_str("{\"acc\":[");
    {
        let mut o = Obj::new(&mut out);
        o.str("iban", acct.iban.as_str())
            .str("ibanAcNo", acct.iban.as_str())
            .str("acNo", &acct.ac_no)
            .str("ccy", acct.currency)
            .str("acDesc", &acct.name)
            .str("fromDate", &sofia_stamp(from, 0))
            .str("toDate", &sofia_stamp(to, 86_399))
            .money("openBal", opening)
            .money("closeBal", closing);
        let buf = o.raw("stmt");
        buf.push('[');
        summary_line(buf, acct, "OP", from, 0, opening, Some(opening));
        for b in entries {
            buf.push(',');
            booked_line(buf, world, acct, b);
        }
        buf.push(',');
        summary_line(buf, acct, "DT", to, 86_399, debit, None);
        buf.push(',');
        summary_line(buf, acct, "CT", to, 86_399, credit, None);
        buf.push(',');
        summary_line(buf, acct, "CL", to, 86_399, closing, Some(closing));
        buf.push(']');
        o.end();
    }
    out.push_str("]}");
    out
}

/// Available balance: booked minus pending debits.
pub fn available(world: &World, a: usize) -> i64 {
    let acct = &world.accounts[a];
    acct.balance
        + world
            .pending
            .iter()
            .filter(|p| p.account == a)
            .map(|p| p.cents)
            .sum::<i64>()
}

/// The `getFilteredAccounts` answer.
pub fn accounts(world: &World, break_iban: bool) -> String {
    let mut out = String::from("[");
    for (i, acct) in world.accounts.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let iban = if break_iban && i == 0 {
            // The `bad_iban` fault: two check digits swapped.
            let s = acct.iban.as_str();
            let b = s.as_bytes();
            let mut t = String::with_capacity(s.len());
            t.push_str(&s[..2]);
            t.push(b[3] as char);
            t.push(b[2] as char);
            t.push_str(&s[4..]);
            if t == s {
                format!("{}X", &s[..s.len() - 1])
            } else {
                t
            }
        } else {
            acct.iban.as_str().to_owned()
        };
        let mut o = Obj::new(&mut out);
        o.str("ibanAcNo", &iban)
            .str("acNo", &acct.ac_no)
            .str("ccy", acct.currency)
            .str("acDesc", &acct.name)
            .str("acType", if i == 0 { "CURRENT" } else { "SAVINGS" })
            .money("avlBal", available(world, i))
            .money("curBal", acct.balance)
            .int("custId", world.customer_id);
        o.end();
    }
    out.push(']');
    out
}

/// The `getCustQuery` answer.
pub fn cust_query(world: &World) -> String {
    let mut out = String::from("{\"customer\":[");
    let mut o = Obj::new(&mut out);
    o.int("ibCustomerId", world.customer_id)
        .str("custName", &world.customer_name)
        .str("custType", "I")
        .str("lang", "bg");
    o.end();
    out.push_str("]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_has_two_decimals() {
        assert_eq!(money_string(1230), "12.30");
        assert_eq!(money_string(-5), "-0.05");
        assert_eq!(money_string(0), "0.00");
    }

    #[test]
    fn stamps_carry_the_sofia_offset_of_the_day() {
        let d = |m, day| NaiveDate::from_ymd_opt(2024, m, day).unwrap();
        assert_eq!(sofia_stamp(d(1, 31), 0), "2024-01-31T00:00:00+0200");
        assert_eq!(
            sofia_stamp(d(5, 3), 14 * 3600 + 22 * 60 + 10),
            "2024-05-03T14:22:10+0300"
        );
        // 03:30 on the spring-forward day does not exist in Sofia.
        assert_eq!(
            sofia_stamp(d(3, 31), 3 * 3600 + 1800),
            "2024-03-31T03:30:00+0300"
        );
    }

    #[test]
    fn strings_are_escaped() {
        let mut s = String::new();
        push_str(&mut s, "a\"b\\c\n\u{1}");
        assert_eq!(s, r#""a\"b\\c\n\u0001""#);
    }
}
