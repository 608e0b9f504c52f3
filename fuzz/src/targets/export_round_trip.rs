//! Exports of a transaction whose texts are arbitrary (label, counterparty,
//! remittance, bank id, account name), stored in a real SQLite store and
//! written in every format, then read back. The first byte picks booked or
//! pending and which texts are given; the rest holds the texts, split at
//! `0x1F`. Invariants: no panic; every format writes; CSV (read by the
//! `csv` crate) and JSON give back every text exactly; OFX and camt.053
//! are well-formed XML 1.0 (legal characters only, tags balanced) and OFX's
//! `NAME`/`MEMO` are the texts cut and cleaned as documented; QIF's fields
//! each hold one line and no record mark; beancount's strings and the
//! journal's description read back to the texts on one line.
use std::sync::{Arc, Mutex, OnceLock};

use bankbridge_core::{
    ConnectionSettings, Credentials, FetchedAccount, MasterKey, Transaction, TxStatus,
};
use bankbridge_server::export::{ExportOptions, Format, export_to_writer};
use bankbridge_store::{
    BankData, BankWrites, Checkpoint, Connections, Lease, LeaseToken, SqliteStore, TxQuery,
    TxWrite, WindowCommit,
};
use chrono::{NaiveDate, Utc};
use quick_xml::events::Event;
use rust_decimal::Decimal;
use serde_json::Value;
use tokio::runtime::Runtime;

/// One store for the whole run, holding one connection, one account and
/// one row, which each input rewrites.
struct Bench {
    runtime: Runtime,
    store: Arc<SqliteStore>,
    lease: LeaseToken,
    account: FetchedAccount,
    row: i64,
    _dir: tempfile::TempDir,
}

fn bench() -> &'static Mutex<Bench> {
    static BENCH: OnceLock<Mutex<Bench>> = OnceLock::new();
    BENCH.get_or_init(|| Mutex::new(Bench::new()))
}

impl Bench {
    fn new() -> Self {
        let (dir, runtime) = crate::store_bench();
        let (store, lease, account, row) = runtime.block_on(async {
            let store = Arc::new(
                SqliteStore::open(&dir.path().join("fuzz.db"))
                    .await
                    .expect("a store"),
            );
            let settings = ConnectionSettings::new("http://127.0.0.1:9", "fuzz");
            let credentials = Credentials::with_password("pw".to_owned().into());
            let connection = bankbridge_sync::add_connection(
                store.as_ref(),
                &MasterKey::generate(),
                "fuzz",
                "fake",
                &settings,
                &credentials,
            )
            .await
            .expect("a connection");
            let now = Utc::now();
            let Lease::Acquired(lease) = store
                .acquire_sync_lease(
                    connection.id,
                    "fuzz",
                    now,
                    now + chrono::Duration::days(3650),
                )
                .await
                .expect("the lease")
            else {
                unreachable!("a new connection's lease is free");
            };
            let account = FetchedAccount {
                provider_id: "ACC-1".into(),
                iban: None,
                currency: "EUR".parse().expect("EUR"),
                name: Some("Checking".into()),
                kind: Some("current".into()),
                raw: Value::Null,
            };
            let account_id = store
                .upsert_account(lease, &account, now)
                .await
                .expect("an account")
                .id;
            let first = row(TxStatus::Booked, ["seed", "", "", "B-1"]);
            commit(store.as_ref(), lease, account_id, vec![first], vec![])
                .await
                .expect("a first row");
            let rows = store
                .query_transactions(&TxQuery::default())
                .await
                .expect("the first row");
            (store, lease, account, rows[0].id)
        });
        Bench {
            runtime,
            store,
            lease,
            account,
            row,
            _dir: dir,
        }
    }
}

fn row(status: TxStatus, [label, counterparty, remittance, bank_id]: [&str; 4]) -> TxWrite {
    let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    TxWrite {
        provider_id: bank_id.to_owned(),
        pending_provider_id: None,
        fingerprint: "fuzz".into(),
        status,
        booking_date: NaiveDate::from_ymd_opt(2026, 11, 30).expect("a date"),
        value_date: None,
        transaction_date: None,
        amount: Decimal::new(-1234, 2),
        currency: "EUR".into(),
        original_amount: None,
        original_currency: None,
        raw_label: label.to_owned(),
        label: label.to_owned(),
        counterparty_name: some(counterparty),
        counterparty_iban: None,
        remittance_info: some(remittance),
        bank_code: None,
        running_balance: None,
        raw: "{}".into(),
    }
}

async fn commit(
    store: &SqliteStore,
    lease: LeaseToken,
    account_id: i64,
    inserts: Vec<TxWrite>,
    updates: Vec<(i64, TxWrite)>,
) -> Result<(), bankbridge_store::StoreError> {
    store
        .commit_window(&WindowCommit {
            lease,
            account_id,
            now: Utc::now(),
            inserts,
            updates,
            voids: vec![],
            touch: vec![],
            balances: vec![],
            checkpoint: Checkpoint::default(),
        })
        .await
        .map(drop)
}

/// Sets the bench up before the first input, so its time (a store, a
/// sandbox) does not count against the first input's time limit.
pub fn init() {
    drop(bench().lock());
}

pub fn run(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.split('\u{1F}');
    let mut next = || parts.next().unwrap_or_default();
    let (label, counterparty, remittance, bank_id, account_name) =
        (next(), next(), next(), next(), next());
    let status = if flags & 1 == 0 {
        TxStatus::Booked
    } else {
        TxStatus::Pending
    };
    let bench = bench().lock().unwrap_or_else(|e| e.into_inner());
    let store = bench.store.as_ref();
    let outputs = bench.runtime.block_on(async {
        let mut account = bench.account.clone();
        account.name = (flags & 2 != 0).then(|| account_name.to_owned());
        let account_id = store
            .upsert_account(bench.lease, &account, Utc::now())
            .await
            .ok()?
            .id;
        let write = row(status, [label, counterparty, remittance, bank_id]);
        // The store may refuse a row (an empty bank id); that is its call.
        commit(
            store,
            bench.lease,
            account_id,
            vec![],
            vec![(bench.row, write)],
        )
        .await
        .ok()?;
        let stored = store
            .query_transactions(&TxQuery::default())
            .await
            .expect("the row reads back");
        let account = store
            .get_account(account_id)
            .await
            .expect("the account reads back")
            .expect("the account");
        let mut outputs = Vec::new();
        for format in Format::ALL {
            let options = ExportOptions {
                include_pending: true,
                ..ExportOptions::default()
            };
            let mut out = Vec::new();
            if let Err(e) =
                export_to_writer(store, &TxQuery::default(), format, options, &mut out).await
            {
                panic!("the {format} export failed: {e}");
            }
            outputs.push((format, out));
        }
        Some((stored, account.display_name(), outputs))
    });
    let Some((stored, account_name, outputs)) = outputs else {
        return;
    };
    assert_eq!(stored.len(), 1, "one row in the store");
    let tx = &stored[0];
    for (format, bytes) in outputs {
        let text = std::str::from_utf8(&bytes)
            .unwrap_or_else(|e| panic!("the {format} export is not UTF-8: {e}"));
        match format {
            Format::Csv => csv_reads_back(text, tx, &account_name),
            Format::Json => json_reads_back(text, tx),
            Format::Ofx => {
                let texts = xml_texts(text, "OFX");
                let (name, memo) = ofx_name_and_memo(tx);
                assert_eq!(texts.get_all("NAME"), non_empty(name), "OFX NAME");
                assert_eq!(texts.get_all("MEMO"), non_empty(memo), "OFX MEMO");
            }
            Format::Camt053 | Format::Camt053V02 => {
                xml_texts(text, "camt.053");
            }
            Format::Qif => qif_reads_back(text),
            Format::Beancount => beancount_reads_back(text, tx),
            Format::Ledger => journal_reads_back(text, tx),
        }
    }
}

fn non_empty(s: String) -> Vec<String> {
    if s.is_empty() { vec![] } else { vec![s] }
}

fn csv_reads_back(text: &str, tx: &Transaction, account_name: &str) {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().expect("a CSV header").clone();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no {name} column"))
    };
    let records: Vec<csv::StringRecord> = reader
        .records()
        .collect::<Result<_, _>>()
        .expect("CSV rows read back");
    assert_eq!(records.len(), 1, "one CSV row: {text:?}");
    let r = &records[0];
    assert_eq!(r.len(), header.len());
    assert_eq!(&r[column("label")], tx.label);
    assert_eq!(
        &r[column("counterparty_name")],
        tx.counterparty_name.as_deref().unwrap_or("")
    );
    assert_eq!(
        &r[column("remittance_info")],
        tx.remittance_info.as_deref().unwrap_or("")
    );
    assert_eq!(&r[column("provider_id")], tx.provider_id);
    assert_eq!(&r[column("account_name")], account_name);
}

fn json_reads_back(text: &str, tx: &Transaction) {
    let rows: Vec<Value> = serde_json::from_str(text).expect("the JSON export reads back");
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row["label"], tx.label.as_str());
    assert_eq!(
        row["counterparty_name"].as_str(),
        tx.counterparty_name.as_deref()
    );
    assert_eq!(
        row["remittance_info"].as_str(),
        tx.remittance_info.as_deref()
    );
    assert_eq!(row["provider_id"], tx.provider_id.as_str());
}

/// XML 1.0's `Char`: tab, line breaks, and the planes without the
/// surrogates, U+FFFE and U+FFFF.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// The text of each element that holds text, by element name.
struct Texts(Vec<(String, String)>);

impl Texts {
    fn get_all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, t)| t.clone())
            .collect()
    }
}

/// Reads `text` as XML to its end: every character legal, every tag
/// closed by its own name, one root.
fn xml_texts(text: &str, what: &str) -> Texts {
    if let Some(bad) = text.chars().find(|c| !is_xml_char(*c)) {
        panic!(
            "{what}: U+{:04X} is not a legal XML character",
            u32::from(bad)
        );
    }
    let mut reader = quick_xml::Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut open: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut texts = Vec::new();
    let mut roots = 0;
    loop {
        match reader.read_event() {
            Err(e) => panic!("{what} is not well-formed XML: {e}"),
            Ok(Event::Eof) => break,
            Ok(Event::Start(e)) => {
                if open.is_empty() {
                    roots += 1;
                }
                open.push(String::from_utf8_lossy(e.name().as_ref()).into_owned());
                current.clear();
            }
            Ok(Event::End(_)) => {
                let name = open.pop().expect("an open element");
                if !current.is_empty() {
                    texts.push((name, std::mem::take(&mut current)));
                }
            }
            Ok(Event::Text(t)) => {
                let raw = t.decode().expect("text decodes");
                if open.is_empty() {
                    assert!(
                        raw.trim().is_empty(),
                        "{what}: text outside the root: {raw:?}"
                    );
                }
                current.push_str(&raw);
            }
            Ok(Event::GeneralRef(r)) => {
                if let Some(c) = r.resolve_char_ref().expect("a character reference") {
                    current.push(c);
                } else {
                    let name = r.decode().expect("a reference decodes");
                    let resolved = quick_xml::escape::resolve_predefined_entity(&name)
                        .unwrap_or_else(|| panic!("{what}: an undefined entity &{name};"));
                    current.push_str(resolved);
                }
            }
            Ok(Event::Empty(_)) => {
                if open.is_empty() {
                    roots += 1;
                }
            }
            Ok(_) => {}
        }
    }
    assert!(open.is_empty(), "{what}: elements left open: {open:?}");
    assert_eq!(roots, 1, "{what}: one root element");
    Texts(texts)
}

/// What OFX's `NAME` (32 characters) and `MEMO` (255) say, as
/// documented: the counterparty (else the label) and the remittance
/// information (else the label), trimmed, cut, control characters and
/// U+FFFE/U+FFFF as spaces.
fn ofx_name_and_memo(tx: &Transaction) -> (String, String) {
    let given = |s: &Option<String>| s.clone().filter(|s| !s.trim().is_empty());
    let name = given(&tx.counterparty_name).unwrap_or_else(|| tx.label.clone());
    let memo = given(&tx.remittance_info).unwrap_or_else(|| tx.label.clone());
    let cut = |s: &str, max: usize| {
        let s: String = s
            .trim()
            .chars()
            .take(max)
            .map(|c| {
                if c.is_control() || matches!(c, '\u{FFFE}' | '\u{FFFF}') {
                    ' '
                } else {
                    c
                }
            })
            .collect();
        s.trim_end().to_owned()
    };
    (cut(&name, 32), cut(&memo, 255))
}

/// A text on one line, as the plain-text formats write it.
fn one_line(text: &str) -> String {
    let s: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    s.trim().to_owned()
}

fn qif_reads_back(text: &str) {
    let mut ends = 0;
    for line in text.lines() {
        let Some(code) = line.chars().next() else {
            panic!("QIF: an empty line in {text:?}");
        };
        match code {
            '^' => {
                assert_eq!(line, "^", "QIF: a record end with more on its line");
                ends += 1;
            }
            '!' => assert!(
                line.starts_with("!Account") || line.starts_with("!Type:"),
                "QIF: {line:?}"
            ),
            'D' | 'T' | 'C' | 'N' | 'P' | 'M' | 'L' => {
                let field = &line[code.len_utf8()..];
                assert!(
                    !field.starts_with(['^', '!']),
                    "QIF: a field that reads as a mark: {line:?}"
                );
            }
            other => panic!("QIF: a line with code {other:?}: {line:?}"),
        }
    }
    // The account's header, then the one row.
    assert_eq!(ends, 2, "QIF: two records in {text:?}");
}

/// The string literals of a beancount line.
fn bean_strings(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut s = String::new();
        loop {
            match chars.next() {
                Some('\\') => s.push(chars.next().expect("an escaped character")),
                Some('"') => break,
                Some(c) => s.push(c),
                None => panic!("beancount: a string left open: {line:?}"),
            }
        }
        out.push(s);
    }
    out
}

/// The one transaction line (date, then `*` or `!`) of a plain-text export.
fn transaction_line<'a>(text: &'a str, tx: &Transaction, what: &str) -> &'a str {
    let date = tx.booking_date.to_string();
    let heads: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&date) && (l.contains(" * ") || l.contains(" ! ")))
        .collect();
    assert_eq!(heads.len(), 1, "{what}: one transaction in {text:?}");
    heads[0]
}

/// The payee and narration the plain-text formats write, as documented:
/// the counterparty when it has a name; the label, else the remittance
/// text. (Restated here, not called: an oracle that ran the writer's own
/// code could not catch its mistakes.)
fn payee_and_narration(tx: &Transaction) -> (Option<&str>, &str) {
    let payee = tx
        .counterparty_name
        .as_deref()
        .filter(|n| !n.trim().is_empty());
    let narration = if tx.label.trim().is_empty() {
        tx.remittance_info.as_deref().unwrap_or_default()
    } else {
        &tx.label
    };
    (payee, narration)
}

fn beancount_reads_back(text: &str, tx: &Transaction) {
    let head = transaction_line(text, tx, "beancount");
    let (payee, narration) = payee_and_narration(tx);
    assert_eq!(
        bean_strings(head),
        [one_line(payee.unwrap_or_default()), one_line(narration)]
    );
    let bank_id: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("  bank_id: "))
        .collect();
    assert_eq!(bank_id.len(), 1);
    assert_eq!(bean_strings(bank_id[0]), [one_line(&tx.provider_id)]);
    for line in text.lines() {
        assert!(
            line.is_empty()
                || line.starts_with(|c: char| c.is_ascii_digit() || c == ';' || c == ' ')
                || line.starts_with("option ")
                || line.starts_with("plugin "),
            "beancount: a line that is no directive, posting or comment: {line:?}"
        );
    }
}

fn journal_reads_back(text: &str, tx: &Transaction) {
    let head = transaction_line(text, tx, "journal");
    let description = &head[tx.booking_date.to_string().len() + 3..];
    assert!(
        !description.contains(';'),
        "journal: a comment in {description:?}"
    );
    let clean = |s: &str| one_line(s).replace([';', '|'], ",");
    let (payee, narration) = payee_and_narration(tx);
    match payee {
        None => assert_eq!(description, clean(narration)),
        Some(p) => assert_eq!(description, format!("{} | {}", clean(p), clean(narration))),
    }
    for line in text.lines() {
        assert!(
            line.is_empty()
                || line.starts_with(|c: char| c.is_ascii_digit() || c == ';' || c == ' ')
                || line.starts_with("account ")
                || line.starts_with("commodity "),
            "journal: a line that is no directive, posting or comment: {line:?}"
        );
    }
}
