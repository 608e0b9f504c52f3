//! Banks' answers through the connectors' own mapping: Fibank's accounts,
//! statements and holds; the keypad bank's transaction pages and keypad
//! field; XS2A (Berlin Group) and Enable Banking transactions. The first
//! byte picks the mapper, the rest is the answer. Invariants: no panic; a
//! refused answer is a typed `ConnectorError`; a mapped row's bank id, when
//! it has one, is not empty.
use bankbridge_connectors::{enablebanking, fibank, keypad, xs2a};
use bankbridge_core::connector::DateWindow;
use bankbridge_core::{Currency, FetchedAccount, FetchedTransaction, TxStatus};
use chrono::NaiveDate;
use serde_json::Value;

fn sane(rows: &[FetchedTransaction]) {
    for row in rows {
        // An empty id would make every such row the same row.
        assert!(
            row.provider_id.as_deref() != Some(""),
            "a row with an empty id: {row:?}"
        );
    }
}

pub fn run(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let today = NaiveDate::from_ymd_opt(2026, 12, 7).expect("a date");
    let eur: Currency = "EUR".parse().expect("EUR");
    let json = || serde_json::from_slice::<Value>(body).ok();
    match which % 7 {
        0 => {
            if let Ok(rows) = keypad::map_transaction_page(body, eur) {
                sane(&rows);
            }
        }
        1 => {
            if let Some(v) = json() {
                let _ = fibank::map_accounts(&v);
            }
        }
        2 => {
            if let Some(v) = json() {
                let account = FetchedAccount {
                    provider_id: "1000123456".into(),
                    iban: None,
                    currency: "BGN".parse().expect("BGN"),
                    name: None,
                    kind: None,
                    raw: Value::Null,
                };
                let window =
                    DateWindow::new(NaiveDate::from_ymd_opt(2026, 11, 1).expect("a date"), today);
                if let Ok(page) = fibank::map_statement(&account, window, &v) {
                    sane(&page.transactions);
                }
            }
        }
        3 => {
            if let Some(v) = json()
                && let Ok(rows) = fibank::map_blocked(&v, eur)
            {
                sane(&rows);
            }
        }
        4 => {
            if let Some(v) = json()
                && let Ok(row) = xs2a::map_transaction(&v, TxStatus::Booked, today)
            {
                sane(&[row]);
            }
        }
        5 => {
            if let Some(v) = json()
                && let Ok(Some(row)) = enablebanking::map_transaction(&v, today)
            {
                sane(&[row]);
            }
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(body) {
                let _ = keypad::decode_keypad(text);
            }
        }
    }
}
