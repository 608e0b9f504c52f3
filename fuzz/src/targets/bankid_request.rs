//! RP requests as our BankID simulator reads them (`validate`): the five
//! start endpoints, collect and cancel, with unknown fields refused or
//! not. The first byte picks the endpoint, the rest is the body.
//! Invariants: no panic; a refusal is `400 invalidParameters` whose
//! `details` is not empty and stays short (input is echoed cut); what the
//! strict reading accepts, the lenient one accepts the same; an accepted
//! start request written back as JSON reads back the same.
use bankbridge_sandbox::bankid::api::ApiError;
use bankbridge_sandbox::bankid::validate::{self, OrderKind, StartRequest};
use serde_json::{Map, Value, json};

const KINDS: [OrderKind; 5] = [
    OrderKind::Auth,
    OrderKind::Sign,
    OrderKind::Payment,
    OrderKind::PhoneAuth,
    OrderKind::PhoneSign,
];

/// Longest `details` text: the longest of ours is about 250 characters,
/// plus an echoed value cut to 64.
const MAX_DETAILS: usize = 600;

fn refused(e: &ApiError) {
    assert_eq!(e.status, 400);
    assert_eq!(e.code, "invalidParameters");
    let n = e.details.chars().count();
    assert!(
        n > 0 && n <= MAX_DETAILS,
        "details of {n} characters: {}",
        e.details
    );
}

/// The request as an RP would send it, from what the simulator kept.
fn written_back(start: &StartRequest) -> Value {
    let mut body = Map::new();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(v) = value {
            body.insert(key.to_owned(), v);
        }
    };
    let r = &start.requirement;
    let mut requirement = json!({
        "pinCode": r.pin_code,
        "cardReader": r.card_reader,
        "certificatePolicies": r.certificate_policies,
    });
    if !start.kind.is_phone() {
        requirement["mrtd"] = json!(r.mrtd);
        requirement["personalNumber"] = json!(r.personal_number);
        requirement["risk"] = json!(r.risk.map(|risk| risk.as_str()));
        put(
            "endUserIp",
            start.end_user_ip.map(|ip| json!(ip.to_string())),
        );
        put("returnUrl", start.return_url.clone().map(Value::from));
        put("returnRisk", Some(json!(start.return_risk)));
    } else {
        put(
            "personalNumber",
            start.personal_number.clone().map(Value::from),
        );
        put(
            "callInitiator",
            start.call_initiator.clone().map(Value::from),
        );
    }
    put("requirement", Some(requirement));
    put(
        "userVisibleData",
        start.user_visible_data.clone().map(Value::from),
    );
    put(
        "userNonVisibleData",
        start.user_non_visible_data.clone().map(Value::from),
    );
    put(
        "userVisibleDataFormat",
        start.user_visible_data_format.clone().map(Value::from),
    );
    if let Some(kind) = &start.transaction_type {
        let mut transaction = json!({"transactionType": kind, "recipient": {"name": "Shop"}});
        if kind == "card" {
            transaction["money"] = json!({"amount": "10,00", "currency": "SEK"});
        }
        put("userVisibleTransaction", Some(transaction));
    }
    Value::Object(body)
}

pub fn run(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    // The simulator refuses a body that is no JSON before reading it.
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let Some(&kind) = KINDS.get(usize::from(which % 7)) else {
        let strict = validate::order_ref(&body, true);
        let lenient = validate::order_ref(&body, false);
        match &strict {
            Ok(order) => {
                assert_eq!(lenient.as_ref().ok(), Some(order));
                assert_eq!(
                    validate::order_ref(&json!({"orderRef": order.to_string()}), true).ok(),
                    Some(*order)
                );
            }
            Err(e) => refused(e),
        }
        if let Err(e) = &lenient {
            refused(e);
        }
        return;
    };
    let strict = validate::start_request(kind, &body, true);
    let lenient = validate::start_request(kind, &body, false);
    if let Err(e) = &lenient {
        refused(e);
        assert!(
            strict.is_err(),
            "the strict reading accepts what the lenient refuses"
        );
    }
    match strict {
        Err(e) => refused(&e),
        Ok(start) => {
            assert_eq!(lenient.as_ref().ok(), Some(&start));
            assert_eq!(start.kind, kind);
            assert_eq!(start.end_user_ip.is_some(), !kind.is_phone());
            if let Some(pnr) = &start.personal_number {
                assert_eq!(validate::check_personal_number(pnr), Ok(()));
            }
            let again = written_back(&start);
            match validate::start_request(kind, &again, true) {
                Ok(back) => assert_eq!(back, start, "read back from {again}"),
                Err(e) => panic!(
                    "{} refused the request written back ({again}): {}",
                    kind.path(),
                    e.details
                ),
            }
        }
    }
}
