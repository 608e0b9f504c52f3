//! ISO 20022 camt.053 (BankToCustomerStatement), versions .001.02 and
//! .001.08: one statement per account for the export's period, with its
//! opening (`OPBD`) and closing (`CLBD`) booked balances and one entry per
//! row. ERPs and Firefly III's importer read it.
//!
//! The balances come before the entries in the schema, so each account is
//! read twice, both times as a stream (constant memory): first all its
//! booked rows, to carry the bank's newest booked balance to the period's
//! end and start; then the rows the query picks, written as entries.
//! - closing = the bank's balance + booked rows after its date up to the
//!   period's end − booked rows after the period's end up to its date;
//! - opening = closing − the period's booked rows.
//!
//! Without a balance from the bank the statement counts from zero before
//! the account's first row, and says so in `AddtlStmtInf`.
//!
//! Amounts are unsigned with `CRDT`/`DBIT` (the schema's rule). A bank id
//! longer than the schema's 35 characters is written as a stable hash in
//! `AcctSvcrRef`, the whole id in `AddtlTxInf`. Pending rows (only with
//! [`ExportOptions::include_pending`]) are `PDNG` entries and count in no
//! balance; void rows are left out unless the query asks for them.
use std::fmt::Write as _;

use bankbridge_core::{Account, Transaction, TxStatus};
use bankbridge_store::{BankData, TxQuery};
use chrono::{NaiveDate, Utc};
use futures::StreamExt;
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

use super::{ExportError, ExportOptions, Out, Sink, Text, xml_escape};

/// Which message version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Version {
    V02,
    V08,
}

impl Version {
    fn namespace(self) -> &'static str {
        match self {
            Version::V02 => "urn:iso:std:iso:20022:tech:xsd:camt.053.001.02",
            Version::V08 => "urn:iso:std:iso:20022:tech:xsd:camt.053.001.08",
        }
    }
}

pub(super) async fn write<S: Sink>(
    version: Version,
    store: &dyn BankData,
    query: &TxQuery,
    options: &ExportOptions,
    out: &mut Out<'_, S>,
) -> Result<(), ExportError> {
    let now = Utc::now();
    let created = now.format("%Y-%m-%dT%H:%M:%S").to_string();
    let _ = write!(
        Text(&mut out.buf),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <Document xmlns=\"{}\">\n<BkToCstmrStmt>\n\
         <GrpHdr><MsgId>bankbridge-{}</MsgId><CreDtTm>{created}</CreDtTm></GrpHdr>\n",
        version.namespace(),
        now.format("%Y%m%d%H%M%S%3f")
    );
    let include_void = query.status == Some(TxStatus::Void);
    let include_pending = options.include_pending || query.status == Some(TxStatus::Pending);
    for account in super::accounts_of(store, query).await? {
        let q = TxQuery {
            account_id: Some(account.id),
            ..query.clone()
        };
        let Some((from, to)) = super::statement_period(store, &q, now.date_naive()).await? else {
            continue;
        };
        let balances = period_balances(store, &account, from, to).await?;
        statement_start(&mut out.buf, &account, from, to, &created, &balances);
        let mut rows = store.stream_transactions(q);
        while let Some(tx) = rows.next().await {
            let tx = tx?;
            match tx.status {
                TxStatus::Void if !include_void => continue,
                TxStatus::Pending if !include_pending => continue,
                _ => {}
            }
            entry(version, &mut out.buf, &tx);
            out.row_done(&tx).await?;
        }
        drop(rows);
        if !balances.from_bank {
            out.buf.extend_from_slice(
                b"<AddtlStmtInf>The bank reported no booked balance: balances count from zero before the account's first row.</AddtlStmtInf>\n",
            );
        }
        out.buf.extend_from_slice(b"</Stmt>\n");
    }
    out.buf
        .extend_from_slice(b"</BkToCstmrStmt>\n</Document>\n");
    Ok(())
}

/// A statement's booked balances.
struct PeriodBalances {
    opening: Decimal,
    closing: Decimal,
    /// Whether they derive from a balance the bank reported.
    from_bank: bool,
}

async fn period_balances(
    store: &dyn BankData,
    account: &Account,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<PeriodBalances, ExportError> {
    let anchor = super::plaintext::asserted_balance(store, account).await?;
    let (mut in_period, mut before, mut anchor_to_end) =
        (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
    let mut rows = store.stream_transactions(TxQuery {
        account_id: Some(account.id),
        status: Some(TxStatus::Booked),
        ..TxQuery::default()
    });
    while let Some(tx) = rows.next().await {
        let tx = tx?;
        if tx.currency != account.currency {
            continue;
        }
        let d = tx.booking_date;
        if d < from {
            before += tx.amount;
        } else if d <= to {
            in_period += tx.amount;
        }
        if let Some((_, anchor_day)) = anchor {
            // Carry the bank's balance from its day to the period's end.
            if anchor_day < d && d <= to {
                anchor_to_end += tx.amount;
            } else if to < d && d <= anchor_day {
                anchor_to_end -= tx.amount;
            }
        }
    }
    Ok(match anchor {
        Some((amount, _)) => {
            let closing = amount + anchor_to_end;
            PeriodBalances {
                opening: closing - in_period,
                closing,
                from_bank: true,
            }
        }
        None => PeriodBalances {
            opening: before,
            closing: before + in_period,
            from_bank: false,
        },
    })
}

fn statement_start(
    buf: &mut Vec<u8>,
    account: &Account,
    from: NaiveDate,
    to: NaiveDate,
    created: &str,
    balances: &PeriodBalances,
) {
    let currency = account.currency.as_str();
    let mut w = Text(buf);
    let _ = writeln!(
        w,
        "<Stmt>\n<Id>{}-{}-{}</Id>\n<CreDtTm>{created}</CreDtTm>\n\
         <FrToDt><FrDtTm>{from}T00:00:00</FrDtTm><ToDtTm>{to}T23:59:59</ToDtTm></FrToDt>",
        account.id,
        from.format("%Y%m%d"),
        to.format("%Y%m%d"),
    );
    let _ = write!(w, "<Acct><Id>");
    match account
        .iban
        .as_ref()
        .map(|i| i.as_str())
        .filter(|i| is_iban(i))
    {
        Some(iban) => {
            let _ = write!(w, "<IBAN>{iban}</IBAN>");
        }
        None => {
            let _ = write!(
                w,
                "<Othr><Id>{}</Id></Othr>",
                xml_escape(&account.provider_id, 34)
            );
        }
    }
    let _ = write!(w, "</Id><Ccy>{currency}</Ccy>");
    let name = xml_escape(&account.display_name(), 70);
    if !name.is_empty() {
        let _ = write!(w, "<Nm>{name}</Nm>");
    }
    let _ = writeln!(w, "</Acct>");
    // A booked opening balance holds at the start of its day, a closing one at the end.
    balance(&mut w, "OPBD", balances.opening, currency, from);
    balance(&mut w, "CLBD", balances.closing, currency, to);
}

fn balance(w: &mut Text<'_>, code: &str, amount: Decimal, currency: &str, day: NaiveDate) {
    let _ = writeln!(
        w,
        "<Bal><Tp><CdOrPrtry><Cd>{code}</Cd></CdOrPrtry></Tp><Amt Ccy=\"{currency}\">{}</Amt>\
         <CdtDbtInd>{}</CdtDbtInd><Dt><Dt>{day}</Dt></Dt></Bal>",
        amount.abs(),
        credit_or_debit(amount)
    );
}

fn credit_or_debit(amount: Decimal) -> &'static str {
    if amount.is_sign_negative() && !amount.is_zero() {
        "DBIT"
    } else {
        "CRDT"
    }
}

/// The schema's IBAN pattern: `[A-Z]{2}[0-9]{2}[a-zA-Z0-9]{1,30}`.
fn is_iban(s: &str) -> bool {
    let b = s.as_bytes();
    (5..=34).contains(&b.len())
        && b[..2].iter().all(u8::is_ascii_uppercase)
        && b[2..4].iter().all(u8::is_ascii_digit)
        && b[4..].iter().all(u8::is_ascii_alphanumeric)
}

/// A reference of at most 35 characters, the same in every export: the id
/// itself when it fits, else a hash of it.
fn reference(id: &str) -> String {
    if id.chars().count() <= 35 && !id.trim().is_empty() && id.trim() == id {
        return xml_escape(id, 35);
    }
    let digest = Sha256::digest(id.as_bytes());
    format!("h-{}", &hex::encode(digest)[..32])
}

fn entry(version: Version, buf: &mut Vec<u8>, tx: &Transaction) {
    let mut w = Text(buf);
    let status = match tx.status {
        TxStatus::Booked => "BOOK",
        TxStatus::Pending => "PDNG",
        // A row the bank dropped unbooked: information only.
        TxStatus::Void => "INFO",
    };
    let reference_id = match tx.status {
        TxStatus::Booked => tx.provider_id.clone(),
        other => format!("{}-{}", other.as_str(), tx.provider_id),
    };
    let reference = reference(&reference_id);
    let _ = write!(
        w,
        "<Ntry><Amt Ccy=\"{}\">{}</Amt><CdtDbtInd>{}</CdtDbtInd>",
        tx.currency.as_str(),
        tx.amount.abs(),
        credit_or_debit(tx.amount)
    );
    let _ = match version {
        Version::V02 => write!(w, "<Sts>{status}</Sts>"),
        Version::V08 => write!(w, "<Sts><Cd>{status}</Cd></Sts>"),
    };
    let _ = write!(w, "<BookgDt><Dt>{}</Dt></BookgDt>", tx.booking_date);
    if let Some(d) = tx.value_date {
        let _ = write!(w, "<ValDt><Dt>{d}</Dt></ValDt>");
    }
    let _ = write!(w, "<AcctSvcrRef>{reference}</AcctSvcrRef>");
    match tx.bank_code.as_deref().map(|c| xml_escape(c, 35)) {
        Some(code) if !code.is_empty() => {
            let _ = write!(w, "<BkTxCd><Prtry><Cd>{code}</Cd></Prtry></BkTxCd>");
        }
        _ => {
            let _ = write!(w, "<BkTxCd/>");
        }
    }
    let details_at = w.0.len();
    if let (Some(amount), Some(currency)) = (tx.original_amount, tx.original_currency)
        && currency != tx.currency
    {
        let _ = write!(
            w,
            "<AmtDtls><InstdAmt><Amt Ccy=\"{}\">{}</Amt></InstdAmt></AmtDtls>",
            currency.as_str(),
            amount.abs()
        );
    }
    let name = tx
        .counterparty_name
        .as_deref()
        .map(|n| xml_escape(n, 140))
        .filter(|n| !n.is_empty());
    let iban = tx
        .counterparty_iban
        .as_deref()
        .map(|i| i.replace(' ', "").to_uppercase())
        .filter(|i| !i.is_empty());
    if name.is_some() || iban.is_some() {
        // Money out went to a creditor; money in came from a debtor.
        let (party, account_tag) = if tx.amount.is_sign_negative() {
            ("Cdtr", "CdtrAcct")
        } else {
            ("Dbtr", "DbtrAcct")
        };
        let _ = write!(w, "<RltdPties>");
        if let Some(name) = &name {
            let _ = match version {
                Version::V02 => write!(w, "<{party}><Nm>{name}</Nm></{party}>"),
                Version::V08 => write!(w, "<{party}><Pty><Nm>{name}</Nm></Pty></{party}>"),
            };
        }
        if let Some(iban) = &iban {
            let _ = if is_iban(iban) {
                write!(
                    w,
                    "<{account_tag}><Id><IBAN>{iban}</IBAN></Id></{account_tag}>"
                )
            } else {
                write!(
                    w,
                    "<{account_tag}><Id><Othr><Id>{}</Id></Othr></Id></{account_tag}>",
                    xml_escape(iban, 34)
                )
            };
        }
        let _ = write!(w, "</RltdPties>");
    }
    let remittance = tx
        .remittance_info
        .as_deref()
        .map(|r| xml_escape(r, 140))
        .filter(|r| !r.is_empty());
    if let Some(r) = remittance {
        let _ = write!(w, "<RmtInf><Ustrd>{r}</Ustrd></RmtInf>");
    }
    if reference.starts_with("h-") {
        let _ = write!(
            w,
            "<AddtlTxInf>{}</AddtlTxInf>",
            xml_escape(&format!("bank id: {reference_id}"), 500)
        );
    }
    // Entry details only when there are some (every part of them is optional).
    if w.0.len() > details_at {
        w.0.splice(
            details_at..details_at,
            b"<NtryDtls><TxDtls>".iter().copied(),
        );
        let _ = write!(w, "</TxDtls></NtryDtls>");
    }
    let label = xml_escape(&tx.label, 500);
    if !label.is_empty() {
        let _ = write!(w, "<AddtlNtryInf>{label}</AddtlNtryInf>");
    }
    let _ = writeln!(w, "</Ntry>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_fit_the_schema_and_stay_stable() {
        assert_eq!(reference("TX-1"), "TX-1");
        let long = "fp:0123456789abcdef0123456789abcdef:2";
        let r = reference(long);
        assert_eq!(r.len(), 34);
        assert_eq!(r, reference(long));
        assert_ne!(r, reference("fp:0123456789abcdef0123456789abcdef:3"));
        assert!(reference("a&b").contains("&amp;"));
    }

    #[test]
    fn ibans_are_checked_against_the_schema_pattern() {
        assert!(is_iban("BG80BNBG96611020345678"));
        assert!(!is_iban("bg80BNBG96611020345678"));
        assert!(!is_iban("BG8XBNBG"));
        assert!(!is_iban("BG80 BNBG"));
    }

    #[test]
    fn signs_travel_as_indicators() {
        assert_eq!(credit_or_debit(Decimal::new(-5, 0)), "DBIT");
        assert_eq!(credit_or_debit(Decimal::ZERO), "CRDT");
        assert_eq!(credit_or_debit(Decimal::new(5, 0)), "CRDT");
    }
}
