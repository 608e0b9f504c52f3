//! Category rules files (TOML with regexes and amounts), then applied to a
//! transaction. Invariants: no panic; a refused file's error names it; a
//! parsed file categorises without panicking.
use bankbridge_core::categories::{Rules, Subject};

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Rules::parse(text, "rules.toml") {
        Ok(rules) => {
            let subject = Subject {
                label: "CARD PAYMENT LIDL 1234",
                raw_label: "CARD PAYMENT LIDL 1234 SOFIA",
                counterparty_name: Some("Lidl"),
                counterparty_iban: Some("BG80BNBG96611020345678"),
                amount: rust_decimal::Decimal::new(-1234, 2),
            };
            let _ = rules.categorize(&subject);
        }
        Err(e) => assert!(e.to_string().contains("rules.toml"), "{e}"),
    }
}
