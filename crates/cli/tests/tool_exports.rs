//! QIF, camt.053 (.02 and .08) and OFX exports read by independent readers
//! from PyPI (see `export_check.py`): quiffen parses the QIF; the camt.053
//! files are checked against the ISO 20022 schema's bindings (pyiso20022)
//! and read by pycamt; ofxtools parses and converts the OFX. The sandbox's
//! three accounts are in three currencies, with pending rows, twins (the
//! same payment twice on a day) and Cyrillic labels; every reader's counts,
//! sums and balances must be the sandbox bank's own.
//!
//! `BANKBRIDGE_EXPORT_TEST_ROWS` sets the rows per account (default 1500;
//! the check used 20000).
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use common::*;
use rust_decimal::Decimal;
use serde_json::Value;

fn python() -> Option<String> {
    let python = std::env::var("BANKBRIDGE_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let ok = Command::new(&python)
        .args(["-c", "import quiffen, pycamt, pyiso20022, xsdata, ofxtools"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(python)
}

/// What the independent reader found in `file`.
fn check(python: &str, kind: &str, file: &Path, extra: &[&str]) -> BTreeMap<String, Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/export_check.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(kind)
        .arg(file)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{kind} check of {} failed:\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn dec(v: &Value) -> Decimal {
    Decimal::from_str(v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn qif_camt_and_ofx_are_read_by_independent_parsers_and_agree_with_the_bank() {
    let Some(python) = python() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "quiffen, pycamt, pyiso20022, xsdata and ofxtools are required in CI (scripts/test.sh installs them)"
        );
        eprintln!("SKIPPED: pip install quiffen pycamt pyiso20022 xsdata ofxtools");
        return;
    };
    let (sb, env) = synced_fibank(23, export_test_rows()).await;
    let truth = fibank_truth(&sb).await;
    assert_eq!(truth.len(), 3);
    let currencies: std::collections::BTreeSet<&str> = truth
        .iter()
        .map(|a| a["currency"].as_str().unwrap())
        .collect();
    assert_eq!(currencies.len(), 3, "three currencies: {currencies:?}");
    assert!(truth.iter().any(|a| a["pending_count"].as_u64() > Some(0)));
    // Twins: the same payment twice on a day (same amount, label and
    // counterparty), each its own row.
    let store = env.store().await;
    let mut seen_rows: BTreeMap<(i64, String, String, String), u32> = BTreeMap::new();
    let rows = store
        .query_transactions(&bankbridge_store::TxQuery {
            status: Some(bankbridge_core::TxStatus::Booked),
            limit: Some(u32::MAX),
            ..Default::default()
        })
        .await
        .unwrap();
    for tx in &rows {
        *seen_rows
            .entry((
                tx.account_id,
                tx.booking_date.to_string(),
                tx.amount.to_string(),
                format!("{}|{:?}", tx.label, tx.counterparty_name),
            ))
            .or_default() += 1;
    }
    let twins = seen_rows.values().filter(|n| **n > 1).count();
    assert!(twins > 0, "the sandbox has twins");
    eprintln!(
        "{} booked rows, {twins} twin groups, {} pending",
        rows.len(),
        truth
            .iter()
            .map(|a| a["pending_count"].as_u64().unwrap())
            .sum::<u64>()
    );
    let by_iban: BTreeMap<&str, &Value> = truth
        .iter()
        .map(|a| (a["iban"].as_str().unwrap(), a))
        .collect();
    let dir = env.home.path();
    let export = |format: &str, name: &str, extra: &[&str]| -> PathBuf {
        let path = dir.join(name);
        let mut args = vec!["export", "--format", format, "-o", path.to_str().unwrap()];
        args.extend_from_slice(extra);
        env.run_ok(&args);
        path
    };

    // QIF: one `!Account` block per account; every booked row, twins
    // included, each with its own bank id in N.
    let qif_file = export("qif", "books.qif", &[]);
    let text = std::fs::read_to_string(&qif_file).unwrap();
    assert_eq!(text.matches("!Account\n").count(), 3);
    assert!(
        text.contains("Плащане") || text.contains("Превод"),
        "labels kept"
    );
    let found = check(&python, "qif", &qif_file, &["us"]);
    assert_eq!(found.len(), 3, "{found:?}");
    for (name, a) in &found {
        eprintln!("quiffen {name}: {} rows, sum {}", a["count"], a["sum"]);
    }
    let mut seen: Vec<(u64, Decimal)> = found
        .values()
        .map(|a| (a["count"].as_u64().unwrap(), dec(&a["sum"])))
        .collect();
    let mut want: Vec<(u64, Decimal)> = truth
        .iter()
        .map(|a| (a["booked_count"].as_u64().unwrap(), dec(&a["booked_sum"])))
        .collect();
    seen.sort();
    want.sort();
    assert_eq!(seen, want, "quiffen's counts and sums are the bank's");
    for account in found.values() {
        assert_eq!(account["ids"], account["count"], "one bank id per row");
        assert_eq!(account["cleared"], account["count"], "booked rows cleared");
        assert!(
            account["payees"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| !p.as_str().unwrap().is_ascii()),
            "non-ASCII payees kept: {account}"
        );
    }
    // The other date styles read back to the same days.
    for style in ["eu", "iso"] {
        let path = export(
            "qif",
            &format!("books-{style}.qif"),
            &["--qif-dates", style],
        );
        let again = check(&python, "qif", &path, &[style]);
        for (name, account) in &found {
            assert_eq!(again[name]["first_date"], account["first_date"], "{style}");
            assert_eq!(again[name]["sum"], account["sum"], "{style}");
        }
    }
    // Pending rows, asked for: uncleared and marked.
    let qif_pending = export("qif", "pending.qif", &["--include-pending"]);
    let found = check(&python, "qif", &qif_pending, &["us"]);
    let pending_total: u64 = truth
        .iter()
        .map(|a| a["pending_count"].as_u64().unwrap())
        .sum();
    let uncleared: u64 = found
        .values()
        .map(|a| a["count"].as_u64().unwrap() - a["cleared"].as_u64().unwrap())
        .sum();
    assert_eq!(uncleared, pending_total);
    assert_eq!(
        std::fs::read_to_string(&qif_pending)
            .unwrap()
            .matches("\nMPENDING: ")
            .count() as u64,
        pending_total
    );

    // camt.053, both versions: schema-valid; opening + entries = closing =
    // the bank's balance.
    for (format, version) in [("camt053", "08"), ("camt053-02", "02")] {
        let path = export(format, &format!("statement-{version}.xml"), &[]);
        let found = check(&python, "camt", &path, &[]);
        assert_eq!(found.len(), 3, "{format}: {found:?}");
        for (iban, account) in &found {
            let bank = by_iban[iban.as_str()];
            eprintln!(
                "{format} {iban}: opening {} + {} booked entries {} = closing {} (bank: balance {}, {} booked, sum {})",
                account["opening"],
                account["booked"],
                account["booked_sum"],
                account["closing"],
                bank["balance"],
                bank["booked_count"],
                bank["booked_sum"]
            );
            assert_eq!(account["version"], version);
            assert_eq!(account["currency"], bank["currency"]);
            assert_eq!(
                dec(&account["closing"]),
                dec(&bank["balance"]),
                "{format} {iban}"
            );
            assert_eq!(
                dec(&account["booked_sum"]),
                dec(&bank["booked_sum"]),
                "{format} {iban}"
            );
            assert_eq!(account["booked"], bank["booked_count"], "{format} {iban}");
            assert_eq!(
                account["unique_refs"], bank["booked_count"],
                "{format} {iban}"
            );
            assert_eq!(
                dec(&account["opening"]) + dec(&account["booked_sum"]),
                dec(&account["closing"]),
                "{format} {iban}"
            );
            assert_eq!(account["pending"], 0);
        }
        let with_pending = export(
            format,
            &format!("statement-{version}-pending.xml"),
            &["--include-pending"],
        );
        let found = check(&python, "camt", &with_pending, &[]);
        for (iban, account) in &found {
            let bank = by_iban[iban.as_str()];
            assert_eq!(account["pending"], bank["pending_count"], "{format} {iban}");
            assert_eq!(
                dec(&account["closing"]),
                dec(&bank["balance"]),
                "pending rows move no balance"
            );
        }
    }
    // The schema check is strict: a reference over 35 characters, an
    // element out of order or one the schema does not know each fail it.
    let valid = std::fs::read_to_string(dir.join("statement-08.xml")).unwrap();
    let start = valid.find("<AcctSvcrRef>").unwrap() + "<AcctSvcrRef>".len();
    let end = start + valid[start..].find('<').unwrap();
    let broken = [
        format!("{}{}{}", &valid[..start], "R".repeat(36), &valid[end..]),
        valid.replacen(
            "<CdtDbtInd>DBIT</CdtDbtInd><Sts>",
            "<Sts><Cd>BOOK</Cd></Sts><CdtDbtInd>DBIT</CdtDbtInd><Sts>",
            1,
        ),
        valid.replacen("<BkTxCd", "<Memo>x</Memo><BkTxCd", 1),
    ];
    for (i, text) in broken.iter().enumerate() {
        assert_ne!(text, &valid);
        let path = dir.join(format!("broken-{i}.xml"));
        std::fs::write(&path, text).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/export_check.py");
        let out = Command::new(&python)
            .arg(&script)
            .arg("camt")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "broken file {i} passed the schema check"
        );
    }

    // A period: the statement's balances are the bank's at its ends.
    let period = export(
        "camt053",
        "statement-period.xml",
        &["--from", "2000-01-01", "--to", "2000-01-31"],
    );
    assert!(
        !std::fs::read_to_string(&period).unwrap().contains("<Stmt>"),
        "no rows in the period, no statement"
    );

    // OFX with pending rows: ofxtools converts it; the booked rows, the
    // ledger balance and the currency of each account are the bank's, and
    // the pending rows sit in BANKTRANLISTP with no FITID.
    let ofx = export("ofx", "books.ofx", &["--include-pending"]);
    let text = std::fs::read_to_string(&ofx).unwrap();
    if pending_total > 0 {
        assert_eq!(text.matches("<STMTTRNP>").count() as u64, pending_total);
    }
    let found = check(&python, "ofx", &ofx, &[]);
    assert_eq!(found.len(), 3);
    for (acctid, a) in &found {
        eprintln!(
            "ofxtools {acctid}: {} {} rows, sum {}, LEDGERBAL {}",
            a["currency"], a["count"], a["sum"], a["ledger"]
        );
    }
    for (acctid, account) in &found {
        let bank = by_iban[acctid.as_str()];
        assert_eq!(account["currency"], bank["currency"]);
        assert_eq!(account["count"], bank["booked_count"], "{acctid}");
        assert_eq!(account["unique_fitids"], bank["booked_count"], "{acctid}");
        assert_eq!(dec(&account["sum"]), dec(&bank["booked_sum"]), "{acctid}");
        assert_eq!(dec(&account["ledger"]), dec(&bank["balance"]), "{acctid}");
    }
}
