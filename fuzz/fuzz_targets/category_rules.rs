//! Category rules files (TOML with regexes and amounts), then applied to a
//! transaction. Invariants: no panic; a refused file's error names it; a
//! parsed file categorises without panicking.
#![no_main]
use bankbridge_core::categories::{Rules, Subject};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
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
});
