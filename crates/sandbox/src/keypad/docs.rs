//! The keypad bank's documents: a monthly statement per account for every
//! month of history before the bank's current month, a yearly fee summary
//! per contract for every complete year, and an IBAN certificate (RIB) per
//! account. Documents only cover the past, so a listed document never
//! changes: its bytes (and download token) are the same every time.
use chrono::{Datelike, Months, NaiveDate};
use sha2::{Digest, Sha256};

use super::data::{FEES, What, World};
use super::pdf::{self, Font, Page};

pub const BANK_NAME: &str = "BANQUE AU CLAVIER";
pub const BIC: &str = "BQCLFRPPXXX";

const MONTHS: [&str; 12] = [
    "janvier",
    "février",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Account index, first day of the month.
    Statement { account: usize, month: NaiveDate },
    /// Contract index, year.
    FeeSummary { contract: usize, year: i32 },
    /// Account index.
    Rib { account: usize },
}

/// One entry of a documents list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Doc {
    pub kind: Kind,
    pub contract: usize,
    pub token: String,
    /// `datprddoccli`: the day the bank produced it.
    pub produced: NaiveDate,
    /// `codsoufamdoc_1`
    pub code: &'static str,
    /// `libsoufamdoc_1`
    pub category: &'static str,
    /// `liblg_typdoc`
    pub title: String,
}

impl Doc {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "codsoufamdoc_1": self.code,
            "datprddoccli": self.produced.format("%Y-%m-%d").to_string(),
            "downloadToken": self.token,
            "liblg_typdoc": self.title,
            "libsoufamdoc_1": self.category,
        })
    }

    /// `2020-11` for a statement.
    pub fn month(&self) -> Option<String> {
        match self.kind {
            Kind::Statement { month, .. } => Some(month.format("%Y-%m").to_string()),
            _ => None,
        }
    }
}

fn first_of_month(d: NaiveDate) -> NaiveDate {
    d.with_day(1).unwrap_or(d)
}

fn next_month(d: NaiveDate) -> NaiveDate {
    d.checked_add_months(Months::new(1)).unwrap_or(d)
}

/// A stable token naming a document of this bank (no secret: the routes
/// check the contract token anyway).
fn token(world: &World, key: &str) -> String {
    let digest = Sha256::digest(format!("keypad-doc|{}|{key}", world.params.seed));
    hex::encode(&digest[..16])
}

fn spaced_iban(iban: &str) -> String {
    iban.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Monthly statements of the contract's accounts, newest first.
pub fn statements(world: &World, contract: usize) -> Vec<Doc> {
    let current = first_of_month(world.day);
    let mut docs = Vec::new();
    for (a, acct) in world.accounts.iter().enumerate() {
        if acct.contract != contract {
            continue;
        }
        let mut month = first_of_month(world.start);
        while month < current {
            let iban = acct.iban.as_str();
            docs.push(Doc {
                kind: Kind::Statement { account: a, month },
                contract,
                token: token(world, &format!("AST|{iban}|{}", month.format("%Y-%m"))),
                produced: next_month(month),
                code: "AST",
                category: "Relevés de comptes",
                title: format!(
                    "Relevé de compte courant {iban} - {} {}",
                    MONTHS[month.month0() as usize],
                    month.year()
                ),
            });
            month = next_month(month);
        }
    }
    docs.sort_by_key(|d| std::cmp::Reverse(d.produced));
    docs
}

/// Fee summaries and IBAN certificates of the contract, newest first.
pub fn other_documents(world: &World, contract: usize) -> Vec<Doc> {
    let c = &world.contracts[contract];
    let mut docs = Vec::new();
    for year in world.start.year()..world.day.year() {
        let produced = NaiveDate::from_ymd_opt(year + 1, 1, 31).unwrap_or(world.day);
        if produced > world.day {
            continue;
        }
        docs.push(Doc {
            kind: Kind::FeeSummary { contract, year },
            contract,
            token: token(world, &format!("RAF|{}|{year}", c.id)),
            produced,
            code: "RAF",
            category: "Récapitulatifs annuels des frais",
            title: format!("Récapitulatif annuel des frais {year}"),
        });
    }
    for (a, acct) in world.accounts.iter().enumerate() {
        if acct.contract != contract {
            continue;
        }
        docs.push(Doc {
            kind: Kind::Rib { account: a },
            contract,
            token: token(world, &format!("RIB|{}", acct.iban)),
            produced: world.start,
            code: "RIB",
            category: "Relevés d'identité bancaire",
            title: format!("Relevé d'identité bancaire {}", acct.iban),
        });
    }
    docs.sort_by_key(|d| std::cmp::Reverse(d.produced));
    docs
}

/// Every document of the bank, for looking one up by token.
pub fn all(world: &World) -> impl Iterator<Item = Doc> + '_ {
    (0..world.contracts.len()).flat_map(|c| {
        statements(world, c)
            .into_iter()
            .chain(other_documents(world, c))
    })
}

/// `-1234,56` (French decimal comma, no thousands separator).
pub fn amount(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{},{:02}", abs / 100, abs % 100)
}

const BODY_LINES: usize = 52;
const LINE: i32 = 13;
const LEFT: i32 = 50;
const RIGHT: i32 = 545;

/// A line of a statement's body.
enum Line {
    Row {
        date: NaiveDate,
        label: String,
        cents: i64,
    },
    Total {
        label: String,
        cents: i64,
    },
    Text(String),
}

/// Column titles of a statement's table.
const ROW_COLUMNS: &[(i32, &str)] = &[
    (LEFT, "Date"),
    (LEFT + 65, "Libellé"),
    (RIGHT - 60, "Montant (EUR)"),
];

/// Lay out `header` and the `columns` titles on every page and `body`
/// lines below them, paginated.
fn paginate(title: &str, header: &[String], columns: &[(i32, &str)], body: &[Line]) -> Vec<u8> {
    let chunks: Vec<&[Line]> = if body.is_empty() {
        vec![&[]]
    } else {
        body.chunks(BODY_LINES).collect()
    };
    let total = chunks.len();
    let pages: Vec<Page> = chunks
        .iter()
        .enumerate()
        .map(|(i, lines)| {
            let mut p = Page::default();
            let mut y = pdf::PAGE_HEIGHT - 50;
            p.text(LEFT, y, 14, Font::Bold, BANK_NAME);
            p.text_right(RIGHT, y, 9, format!("Page {}/{total}", i + 1));
            y -= 22;
            p.text(LEFT, y, 12, Font::Bold, title);
            for h in header {
                y -= LINE;
                p.text(LEFT, y, 9, Font::Regular, h.as_str());
            }
            y -= 20;
            if !columns.is_empty() {
                for (x, name) in columns {
                    p.text(*x, y, 9, Font::Bold, *name);
                }
                y -= 5;
                p.rule(LEFT, RIGHT, y);
                y -= LINE;
            }
            for line in *lines {
                match line {
                    Line::Row { date, label, cents } => {
                        p.text(
                            LEFT,
                            y,
                            9,
                            Font::Regular,
                            date.format("%d/%m/%Y").to_string(),
                        );
                        p.text(LEFT + 65, y, 9, Font::Regular, label.as_str());
                        p.text_right(RIGHT, y, 9, amount(*cents));
                    }
                    Line::Total { label, cents } => {
                        p.text(LEFT, y, 9, Font::Bold, label.as_str());
                        p.text_right(RIGHT, y, 9, amount(*cents));
                    }
                    Line::Text(t) => p.text(LEFT, y, 9, Font::Regular, t.as_str()),
                }
                y -= LINE;
            }
            p
        })
        .collect();
    pdf::write(title, &pages)
}

/// The PDF of a document.
pub fn render(world: &World, doc: &Doc) -> Vec<u8> {
    match doc.kind {
        Kind::Statement { account, month } => statement(world, account, month),
        Kind::FeeSummary { contract, year } => fee_summary(world, contract, year),
        Kind::Rib { account } => rib(world, account),
    }
}

fn statement(world: &World, account: usize, month: NaiveDate) -> Vec<u8> {
    let acct = &world.accounts[account];
    let from = month.max(world.start);
    let to = next_month(month).pred_opt().unwrap_or(month);
    let range = acct.range(from, to);
    let opening = acct.balance_before(range.start);
    let rows = &acct.rows[range];
    let closing = rows.last().map_or(opening, |r| r.balance);
    let debits: i64 = rows.iter().map(|r| r.cents.min(0)).sum();
    let credits: i64 = rows.iter().map(|r| r.cents.max(0)).sum();

    let mut body = Vec::with_capacity(rows.len() + 4);
    body.push(Line::Total {
        label: format!("Solde au {}", from.format("%d/%m/%Y")),
        cents: opening,
    });
    body.extend(rows.iter().map(|r| Line::Row {
        date: r.date,
        label: r.label(),
        cents: r.cents,
    }));
    body.push(Line::Total {
        label: format!("Total des débits ({} opérations)", rows.len()),
        cents: debits,
    });
    body.push(Line::Total {
        label: "Total des crédits".into(),
        cents: credits,
    });
    body.push(Line::Total {
        label: format!("Nouveau solde au {}", to.format("%d/%m/%Y")),
        cents: closing,
    });
    let header = [
        world.user_name.clone(),
        format!("Compte courant - IBAN {}", spaced_iban(acct.iban.as_str())),
        format!(
            "Période du {} au {}",
            from.format("%d/%m/%Y"),
            to.format("%d/%m/%Y")
        ),
    ];
    paginate(
        &format!(
            "Relevé de compte - {} {}",
            MONTHS[month.month0() as usize],
            month.year()
        ),
        &header,
        ROW_COLUMNS,
        &body,
    )
}

fn fee_summary(world: &World, contract: usize, year: i32) -> Vec<u8> {
    let (Some(from), Some(to)) = (
        NaiveDate::from_ymd_opt(year, 1, 1),
        NaiveDate::from_ymd_opt(year, 12, 31),
    ) else {
        return pdf::write("", &[Page::default()]);
    };
    let mut body = Vec::new();
    let mut grand = 0;
    for acct in world.accounts.iter().filter(|a| a.contract == contract) {
        body.push(Line::Text(format!(
            "Compte {}",
            spaced_iban(acct.iban.as_str())
        )));
        let mut per_fee = [(0usize, 0i64); FEES.len()];
        for r in &acct.rows[acct.range(from, to)] {
            if let What::Fee { fee } = r.what {
                let slot = &mut per_fee[usize::from(fee)];
                slot.0 += 1;
                slot.1 += r.cents;
            }
        }
        for ((label, _), (n, cents)) in FEES.iter().zip(per_fee) {
            body.push(Line::Total {
                label: format!("    {label} ({n})"),
                cents,
            });
            grand += cents;
        }
    }
    body.push(Line::Total {
        label: format!("Total des frais {year}"),
        cents: grand,
    });
    let header = [
        world.user_name.clone(),
        world.contracts[contract].label.clone(),
        format!("Année {year}"),
    ];
    paginate(
        &format!("Récapitulatif annuel des frais {year}"),
        &header,
        &[(LEFT, "Frais"), (RIGHT - 60, "Montant (EUR)")],
        &body,
    )
}

fn rib(world: &World, account: usize) -> Vec<u8> {
    let acct = &world.accounts[account];
    let iban = acct.iban.as_str();
    // A French IBAN: FRkk, bank (5), branch (5), account (11), RIB key (2).
    let part = |r: std::ops::Range<usize>| iban.get(r).unwrap_or("").to_owned();
    let body = [
        format!("Titulaire : {}", world.user_name),
        format!("IBAN : {}", spaced_iban(iban)),
        format!("BIC : {BIC}"),
        format!(
            "Banque {}   Guichet {}   Compte {}   Clé {}",
            part(4..9),
            part(9..14),
            part(14..25),
            part(25..27)
        ),
        format!("Domiciliation : {BANK_NAME} PARIS"),
    ]
    .map(Line::Text);
    paginate("Relevé d'identité bancaire", &[], &[], &body)
}
