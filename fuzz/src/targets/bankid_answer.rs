//! BankID's answers as the client reads them: the start, phone-start and
//! collect answers, and error bodies. Invariants: no panic; a refused
//! answer is a typed error; no error message shows the value of a secret
//! field of the body (`qrStartSecret`, `autoStartToken`, `personalNumber`,
//! `signature`, `ocspResponse`), whether or not the body is valid JSON
//! (BankID's own `details` text in an error body is shown as it came).
use bankbridge_bankid::client::{decode_answer, refusal};
use bankbridge_bankid::error::BankIdError;
use bankbridge_bankid::types::{CollectResponse, OrderResponse, PhoneOrderResponse};

const SECRET_KEYS: [&str; 5] = [
    "qrStartSecret",
    "autoStartToken",
    "personalNumber",
    "signature",
    "ocspResponse",
];

/// The string values that follow a secret key in `text` (`"key": "value"`),
/// long enough not to turn up in a message by chance.
fn secret_values(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for key in SECRET_KEYS {
        let quoted = format!("\"{key}\"");
        let mut rest = text;
        while let Some(at) = rest.find(&quoted) {
            rest = &rest[at + quoted.len()..];
            let after = rest.trim_start();
            let Some(after) = after.strip_prefix(':') else {
                continue;
            };
            let Some(value) = after.trim_start().strip_prefix('"') else {
                continue;
            };
            let value: String = value
                .chars()
                .take_while(|c| *c != '"' && *c != '\\')
                .collect();
            // A value that is (part of) a secret field's own name shows up
            // when a message names that field ("duplicate field
            // `qrStartSecret`"): that is no leak.
            if value.chars().count() >= 8 && !SECRET_KEYS.iter().any(|k| k.contains(&value)) {
                out.push(value);
            }
        }
    }
    out
}

fn check(message: String, secrets: &[String]) {
    for secret in secrets {
        assert!(
            !message.contains(secret.as_str()),
            "a secret value in an error message: {message}"
        );
    }
}

/// Every string of a JSON value outside the secret fields (keys too).
fn open_strings(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|v| open_strings(v, out)),
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                out.push(k.clone());
                if !SECRET_KEYS.contains(&k.as_str()) {
                    open_strings(v, out);
                }
            }
        }
        _ => {}
    }
}

pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut secrets = secret_values(&text);
    // In a JSON body, a secret's value that also stands in an open field
    // is not the secret field's to hide.
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let mut open = Vec::new();
        open_strings(&value, &mut open);
        secrets.retain(|secret| !open.iter().any(|o| o.contains(secret.as_str())));
    }
    if let Err(e) = decode_answer::<OrderResponse>("auth", 200, data) {
        check(e.to_string(), &secrets);
    }
    if let Err(e) = decode_answer::<PhoneOrderResponse>("phone/auth", 200, data) {
        check(e.to_string(), &secrets);
    }
    if let Err(e) = decode_answer::<CollectResponse>("collect", 200, data) {
        check(e.to_string(), &secrets);
    }
    // BankID's own `details` text of an error body is shown as BankID
    // wrote it; a body that is no error body is shown as an excerpt.
    for (endpoint, status) in [("collect", 400), ("auth", 503)] {
        let e = refusal(endpoint, status, data);
        if matches!(e, BankIdError::Decode { .. }) {
            check(e.to_string(), &secrets);
        }
    }
}
