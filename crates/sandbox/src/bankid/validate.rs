//! Validation of RP requests from raw JSON, independent of any client's
//! types: what a request may hold and the `details` text of each refusal.
//!
//! `null` counts as absent (many JSON encoders write `"field": null` for an
//! unset option); a value of the wrong type, an unknown field (when
//! `reject_unknown_fields` is on) or a value out of range is refused with a
//! `details` text naming the field.
use std::net::IpAddr;

use base64::Engine;
use serde_json::{Map, Value};

use super::api::ApiError;

/// userVisibleData: at most this many characters of base64.
pub const MAX_USER_VISIBLE_DATA: usize = 40_000;
/// userNonVisibleData: at most this many characters of base64.
pub const MAX_USER_NON_VISIBLE_DATA: usize = 200_000;

/// The start endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrderKind {
    Auth,
    Sign,
    Payment,
    PhoneAuth,
    PhoneSign,
}

impl OrderKind {
    pub fn path(self) -> &'static str {
        match self {
            OrderKind::Auth => "auth",
            OrderKind::Sign => "sign",
            OrderKind::Payment => "payment",
            OrderKind::PhoneAuth => "phone/auth",
            OrderKind::PhoneSign => "phone/sign",
        }
    }

    pub fn is_phone(self) -> bool {
        matches!(self, OrderKind::PhoneAuth | OrderKind::PhoneSign)
    }

    /// Signing orders put `Signing` in the signature's `funcId`; a payment
    /// approval is a signature too (our choice: the reference shows only
    /// `Identification` and `Signing`).
    pub fn func_id(self) -> &'static str {
        match self {
            OrderKind::Auth | OrderKind::PhoneAuth => "Identification",
            OrderKind::Sign | OrderKind::PhoneSign | OrderKind::Payment => "Signing",
        }
    }
}

/// Acceptable risk, ordered from lowest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Risk {
    Low,
    Moderate,
    High,
}

impl Risk {
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "low",
            Risk::Moderate => "moderate",
            Risk::High => "high",
        }
    }

    /// Either case is accepted (clients differ); the API emits lowercase.
    pub fn parse(s: &str) -> Option<Risk> {
        match s.to_ascii_lowercase().as_str() {
            "low" => Some(Risk::Low),
            "moderate" => Some(Risk::Moderate),
            "high" => Some(Risk::High),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requirement {
    pub personal_number: Option<String>,
    pub pin_code: bool,
    pub mrtd: bool,
    pub card_reader: Option<String>,
    pub certificate_policies: Vec<String>,
    pub risk: Option<Risk>,
}

/// A valid start request, whatever the endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartRequest {
    pub kind: OrderKind,
    /// auth/sign/payment only.
    pub end_user_ip: Option<IpAddr>,
    /// requirement.personalNumber, or the phone request's personalNumber: the
    /// only person who may complete the order.
    pub personal_number: Option<String>,
    pub requirement: Requirement,
    pub user_visible_data: Option<String>,
    pub user_non_visible_data: Option<String>,
    pub user_visible_data_format: Option<String>,
    pub return_url: Option<String>,
    pub return_risk: bool,
    pub call_initiator: Option<String>,
    /// payment: `userVisibleTransaction.transactionType`.
    pub transaction_type: Option<String>,
}

fn invalid(details: impl Into<String>) -> ApiError {
    ApiError::invalid_parameters(details)
}

/// Field access on one JSON object, naming fields by their path in errors.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: &'a str,
}

impl<'a> Obj<'a> {
    fn name(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn string(&self, key: &str) -> Result<Option<&'a str>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(invalid(format!("{} must be a string", self.name(key)))),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(invalid(format!("{} must be true or false", self.name(key)))),
        }
    }

    fn object(&self, key: &str) -> Result<Option<&'a Map<String, Value>>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(_) => Err(invalid(format!("{} must be an object", self.name(key)))),
        }
    }

    fn only(&self, allowed: &[&str], strict: bool) -> Result<(), ApiError> {
        if !strict {
            return Ok(());
        }
        // Report the first unknown field in a stable (sorted) order.
        let mut unknown: Vec<&String> = self
            .map
            .keys()
            .filter(|k| !allowed.contains(&k.as_str()))
            .collect();
        unknown.sort();
        match unknown.first() {
            None => Ok(()),
            Some(k) => Err(invalid(format!(
                "{} is not a parameter of this request (allowed here: {})",
                truncate(&self.name(k), 64),
                allowed.join(", ")
            ))),
        }
    }

    fn string_len(&self, key: &str, min: usize, max: usize) -> Result<Option<&'a str>, ApiError> {
        let Some(s) = self.string(key)? else {
            return Ok(None);
        };
        let n = s.chars().count();
        if n < min || n > max {
            return Err(invalid(format!(
                "{} must be {min} to {max} characters long, got {n}",
                self.name(key)
            )));
        }
        Ok(Some(s))
    }
}

/// Whether `pnr` is a Swedish personal (or coordination) number in the
/// 12-digit form the API takes: YYYYMMDDNNNN, a plausible date (day + 60 for
/// coordination numbers), and a Luhn check digit over the last ten.
pub fn check_personal_number(pnr: &str) -> Result<(), &'static str> {
    if pnr.len() != 12 || !pnr.bytes().all(|b| b.is_ascii_digit()) {
        return Err("must be 12 digits (YYYYMMDDNNNN)");
    }
    let num = |r: std::ops::Range<usize>| pnr[r].parse::<u32>().unwrap_or(0);
    let (year, month, mut day) = (num(0..4), num(4..6), num(6..8));
    if day > 60 {
        day -= 60;
    }
    if !(1800..=2100).contains(&year)
        || chrono::NaiveDate::from_ymd_opt(year as i32, month, day).is_none()
    {
        return Err("does not start with a valid date (YYYYMMDD)");
    }
    if !luhn_ok(&pnr[2..]) {
        return Err("has a wrong check digit (Luhn over the last 10 digits)");
    }
    Ok(())
}

fn luhn_ok(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn personal_number(obj: &Obj<'_>, key: &str) -> Result<Option<String>, ApiError> {
    let Some(p) = obj.string(key)? else {
        return Ok(None);
    };
    check_personal_number(p).map_err(|why| invalid(format!("{} {why}", obj.name(key))))?;
    Ok(Some(p.to_owned()))
}

/// Standard base64 with padding, decoding to UTF-8 text when `text`.
fn base64_field(
    obj: &Obj<'_>,
    key: &str,
    max: usize,
    text: bool,
) -> Result<Option<String>, ApiError> {
    let Some(s) = obj.string(key)? else {
        return Ok(None);
    };
    let name = obj.name(key);
    if s.is_empty() {
        return Err(invalid(format!("{name} must not be empty")));
    }
    if s.len() > max {
        return Err(invalid(format!(
            "{name} is {} characters long; at most {max} are allowed",
            s.len()
        )));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| invalid(format!("{name} is not valid base64")))?;
    if text && std::str::from_utf8(&bytes).is_err() {
        return Err(invalid(format!("{name} is not base64 of UTF-8 text")));
    }
    Ok(Some(s.to_owned()))
}

/// An OID, with one `*` wildcard allowed as a whole arc from the fifth on.
fn check_policy(p: &str) -> bool {
    let arcs: Vec<&str> = p.split('.').collect();
    if arcs.len() < 2 {
        return false;
    }
    arcs.iter().enumerate().all(|(i, a)| {
        (*a == "*" && i >= 4 && i == arcs.len() - 1)
            || (!a.is_empty() && a.len() <= 10 && a.bytes().all(|b| b.is_ascii_digit()))
    })
}

fn requirement(obj: &Obj<'_>, phone: bool, strict: bool) -> Result<Requirement, ApiError> {
    let Some(map) = obj.object("requirement")? else {
        return Ok(Requirement::default());
    };
    let r = Obj {
        map,
        path: "requirement",
    };
    // Phone orders: the person is the request's own personalNumber, and
    // there is no document check or risk assessment.
    let allowed: &[&str] = if phone {
        &["pinCode", "cardReader", "certificatePolicies"]
    } else {
        &[
            "personalNumber",
            "pinCode",
            "mrtd",
            "cardReader",
            "certificatePolicies",
            "risk",
        ]
    };
    r.only(allowed, strict)?;
    let card_reader = match r.string("cardReader")? {
        None => None,
        Some(c @ ("class1" | "class2")) => Some(c.to_owned()),
        Some(other) => {
            return Err(invalid(format!(
                "requirement.cardReader must be \"class1\" or \"class2\", got {:?}",
                truncate(other, 64)
            )));
        }
    };
    let certificate_policies = match r.get("certificatePolicies") {
        None => Vec::new(),
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(p) if check_policy(p) => out.push(p.to_owned()),
                    _ => {
                        return Err(invalid(format!(
                            "requirement.certificatePolicies[{i}] is not an OID (digits and dots; one `*` allowed as the last arc from the fifth on)"
                        )));
                    }
                }
            }
            out
        }
        Some(_) => {
            return Err(invalid(
                "requirement.certificatePolicies must be an array of OID strings",
            ));
        }
    };
    let risk = match r.string("risk")? {
        None => None,
        Some(s) => match Risk::parse(s) {
            Some(risk @ (Risk::Low | Risk::Moderate)) => Some(risk),
            _ => {
                return Err(invalid(format!(
                    "requirement.risk must be \"low\" or \"moderate\", got {:?}",
                    truncate(s, 64)
                )));
            }
        },
    };
    Ok(Requirement {
        personal_number: personal_number(&r, "personalNumber")?,
        pin_code: r.bool("pinCode")?.unwrap_or(false),
        mrtd: r.bool("mrtd")?.unwrap_or(false),
        card_reader,
        certificate_policies,
        risk,
    })
}

fn web_or_app(obj: &Obj<'_>, strict: bool) -> Result<(), ApiError> {
    let web = obj.object("web")?;
    let app = obj.object("app")?;
    if web.is_some() && app.is_some() {
        return Err(invalid(
            "web and app must not both be given: send the one that matches where the order was started",
        ));
    }
    if let Some(map) = web {
        let w = Obj { map, path: "web" };
        w.only(
            &["referringDomain", "userAgent", "deviceIdentifier"],
            strict,
        )?;
        if let Some(d) = w.string_len("referringDomain", 3, 253)?
            && !d
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        {
            return Err(invalid(
                "web.referringDomain must be a domain name in lowercase punycode ([0-9a-z.-])",
            ));
        }
        w.string_len("userAgent", 1, 256)?;
        w.string_len("deviceIdentifier", 1, 64)?;
        if map.values().all(Value::is_null) {
            return Err(invalid(
                "web must hold at least one of referringDomain, userAgent, deviceIdentifier",
            ));
        }
    }
    if let Some(map) = app {
        let a = Obj { map, path: "app" };
        a.only(
            &[
                "appIdentifier",
                "deviceOS",
                "deviceIdentifier",
                "deviceModelName",
            ],
            strict,
        )?;
        a.string_len("appIdentifier", 3, 255)?;
        a.string_len("deviceOS", 1, 64)?;
        a.string_len("deviceIdentifier", 1, 64)?;
        a.string_len("deviceModelName", 1, 256)?;
        if map.values().all(Value::is_null) {
            return Err(invalid(
                "app must hold at least one of appIdentifier, deviceOS, deviceIdentifier, deviceModelName",
            ));
        }
    }
    Ok(())
}

const RISK_FLAGS: &[&str] = &[
    "newCard",
    "newCustomer",
    "newRecipient",
    "highRiskRecipient",
    "largeAmount",
    "foreignCurrency",
    "cryptoCurrencyPurchase",
    "moneyTransfer",
    "overseasTransaction",
    "recurringPayment",
    "suspiciousPaymentPattern",
    "other",
];

/// `userVisibleTransaction` of a payment; returns its transactionType.
fn user_visible_transaction(obj: &Obj<'_>, strict: bool) -> Result<String, ApiError> {
    let Some(map) = obj.object("userVisibleTransaction")? else {
        return Err(invalid(
            "userVisibleTransaction is missing (required for payment)",
        ));
    };
    let t = Obj {
        map,
        path: "userVisibleTransaction",
    };
    t.only(
        &["transactionType", "recipient", "money", "riskWarning"],
        strict,
    )?;
    let kind = match t.string("transactionType")? {
        None => {
            return Err(invalid(
                "userVisibleTransaction.transactionType is missing (\"card\" or \"npa\")",
            ));
        }
        Some(k @ ("card" | "npa")) => k.to_owned(),
        Some(other) => {
            return Err(invalid(format!(
                "userVisibleTransaction.transactionType must be \"card\" or \"npa\", got {:?}",
                truncate(other, 64)
            )));
        }
    };
    let Some(recipient) = t.object("recipient")? else {
        return Err(invalid("userVisibleTransaction.recipient is missing"));
    };
    let r = Obj {
        map: recipient,
        path: "userVisibleTransaction.recipient",
    };
    r.only(&["name"], strict)?;
    if r.string_len("name", 1, 256)?.is_none() {
        return Err(invalid("userVisibleTransaction.recipient.name is missing"));
    }
    if let Some(money) = t.object("money")? {
        if kind == "npa" {
            return Err(invalid(
                "userVisibleTransaction.money is not allowed for transactionType \"npa\"",
            ));
        }
        let m = Obj {
            map: money,
            path: "userVisibleTransaction.money",
        };
        m.only(&["amount", "currency"], strict)?;
        let amount = m
            .string("amount")?
            .ok_or_else(|| invalid("userVisibleTransaction.money.amount is missing"))?;
        let ok_amount = {
            let (int, frac) = amount.split_once(',').unwrap_or((amount, ""));
            !int.is_empty()
                && int.len() <= 15
                && int.bytes().all(|b| b.is_ascii_digit())
                && frac.len() <= 2
                && frac.bytes().all(|b| b.is_ascii_digit())
                && (frac.is_empty() != amount.contains(','))
        };
        if !ok_amount {
            return Err(invalid(format!(
                "userVisibleTransaction.money.amount must be digits with an optional \",\" and up to two decimals (e.g. \"1000,00\"), got {:?}",
                truncate(amount, 64)
            )));
        }
        let currency = m
            .string("currency")?
            .ok_or_else(|| invalid("userVisibleTransaction.money.currency is missing"))?;
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(invalid(format!(
                "userVisibleTransaction.money.currency must be an ISO 4217 code such as \"SEK\", got {:?}",
                truncate(currency, 64)
            )));
        }
    } else if kind == "card" {
        return Err(invalid(
            "userVisibleTransaction.money is missing (required for transactionType \"card\")",
        ));
    }
    t.string_len("riskWarning", 1, 256)?;
    Ok(kind)
}

/// Validate a start request of `kind` from its JSON body.
pub fn start_request(
    kind: OrderKind,
    body: &Value,
    strict: bool,
) -> Result<StartRequest, ApiError> {
    let Value::Object(map) = body else {
        return Err(invalid("the request body must be a JSON object"));
    };
    let obj = Obj { map, path: "" };
    let phone = kind.is_phone();
    let allowed: &[&str] = match kind {
        OrderKind::Auth | OrderKind::Sign => &[
            "endUserIp",
            "requirement",
            "userVisibleData",
            "userNonVisibleData",
            "userVisibleDataFormat",
            "returnUrl",
            "returnRisk",
            "web",
            "app",
        ],
        OrderKind::Payment => &[
            "endUserIp",
            "requirement",
            "userVisibleData",
            "userNonVisibleData",
            "userVisibleDataFormat",
            "returnUrl",
            "returnRisk",
            "web",
            "app",
            "userVisibleTransaction",
            "riskFlags",
        ],
        OrderKind::PhoneAuth | OrderKind::PhoneSign => &[
            "personalNumber",
            "callInitiator",
            "requirement",
            "userVisibleData",
            "userNonVisibleData",
            "userVisibleDataFormat",
        ],
    };
    obj.only(allowed, strict)?;

    let end_user_ip = if phone {
        None
    } else {
        let ip = obj.string("endUserIp")?.ok_or_else(|| {
            invalid("endUserIp is missing: give the end user's IP address as the RP sees it")
        })?;
        Some(ip.parse::<IpAddr>().map_err(|_| {
            invalid(format!(
                "endUserIp is not a valid IPv4 or IPv6 address: {:?}",
                truncate(ip, 64)
            ))
        })?)
    };

    let requirement = requirement(&obj, phone, strict)?;

    let (personal_number, call_initiator) = if phone {
        let pnr = personal_number(&obj, "personalNumber")?.ok_or_else(|| {
            invalid(format!(
                "personalNumber is missing (required for {})",
                kind.path()
            ))
        })?;
        let ci = match obj.string("callInitiator")? {
            None => {
                return Err(invalid(
                    "callInitiator is missing: \"user\" (the user called the RP) or \"RP\" (the RP called the user)",
                ));
            }
            Some(c @ ("user" | "RP")) => c.to_owned(),
            Some(other) => {
                return Err(invalid(format!(
                    "callInitiator must be \"user\" or \"RP\", got {:?}",
                    truncate(other, 64)
                )));
            }
        };
        (Some(pnr), Some(ci))
    } else {
        (requirement.personal_number.clone(), None)
    };

    let user_visible_data = base64_field(&obj, "userVisibleData", MAX_USER_VISIBLE_DATA, true)?;
    if user_visible_data.is_none() && matches!(kind, OrderKind::Sign | OrderKind::PhoneSign) {
        return Err(invalid(format!(
            "userVisibleData is missing (required for {}): base64 of the UTF-8 text the user signs",
            kind.path()
        )));
    }
    let user_non_visible_data =
        base64_field(&obj, "userNonVisibleData", MAX_USER_NON_VISIBLE_DATA, false)?;
    let user_visible_data_format = match obj.string("userVisibleDataFormat")? {
        None => None,
        Some(f @ ("simpleMarkdownV1" | "plaintext")) => Some(f.to_owned()),
        Some(other) => {
            return Err(invalid(format!(
                "userVisibleDataFormat must be \"simpleMarkdownV1\" or \"plaintext\", got {:?}",
                truncate(other, 64)
            )));
        }
    };

    let (mut return_url, mut return_risk, mut transaction_type) = (None, false, None);
    if !phone {
        return_url = obj.string_len("returnUrl", 1, 512)?.map(str::to_owned);
        return_risk = obj.bool("returnRisk")?.unwrap_or(false);
        web_or_app(&obj, strict)?;
    }
    if kind == OrderKind::Payment {
        transaction_type = Some(user_visible_transaction(&obj, strict)?);
        match obj.get("riskFlags") {
            None => {}
            Some(Value::Array(flags)) => {
                for (i, f) in flags.iter().enumerate() {
                    if !f.as_str().is_some_and(|f| RISK_FLAGS.contains(&f)) {
                        return Err(invalid(format!(
                            "riskFlags[{i}] is not a known risk flag (one of {})",
                            RISK_FLAGS.join(", ")
                        )));
                    }
                }
            }
            Some(_) => return Err(invalid("riskFlags must be an array of strings")),
        }
    }

    Ok(StartRequest {
        kind,
        end_user_ip,
        personal_number,
        requirement,
        user_visible_data,
        user_non_visible_data,
        user_visible_data_format,
        return_url,
        return_risk,
        call_initiator,
        transaction_type,
    })
}

/// `orderRef` of a collect or cancel body.
pub fn order_ref(body: &Value, strict: bool) -> Result<uuid::Uuid, ApiError> {
    let Value::Object(map) = body else {
        return Err(invalid("the request body must be a JSON object"));
    };
    let obj = Obj { map, path: "" };
    obj.only(&["orderRef"], strict)?;
    let s = obj
        .string("orderRef")?
        .ok_or_else(|| invalid("orderRef is missing"))?;
    // The API hands out lowercase hyphenated UUIDs; accept only that form.
    match uuid::Uuid::parse_str(s) {
        Ok(u) if s.len() == 36 && u.hyphenated().to_string() == s.to_ascii_lowercase() => Ok(u),
        _ => Err(invalid(format!(
            "orderRef is not a valid order reference (a UUID): {:?}",
            truncate(s, 64)
        ))),
    }
}

/// At most `max` characters of `s`, for echoing input in `details`.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn details(kind: OrderKind, body: Value) -> String {
        start_request(kind, &body, true).unwrap_err().details
    }

    /// Found by the `bankid_request` fuzz target: five refusals echoed the
    /// refused value whole, so a request could make its answer as long as
    /// the body limit.
    #[test]
    fn refused_values_are_echoed_cut() {
        let long = "x".repeat(5_000);
        let ip = json!("192.0.2.1");
        let bodies = [
            (
                OrderKind::Auth,
                json!({"endUserIp": ip, "requirement": {"cardReader": long}}),
            ),
            (
                OrderKind::Auth,
                json!({"endUserIp": ip, "requirement": {"risk": long}}),
            ),
            (
                OrderKind::Payment,
                json!({"endUserIp": ip, "userVisibleTransaction": {"transactionType": long}}),
            ),
            (
                OrderKind::Payment,
                json!({"endUserIp": ip, "userVisibleTransaction": {"transactionType": "card",
                    "recipient": {"name": "Shop"}, "money": {"amount": long, "currency": "SEK"}}}),
            ),
            (
                OrderKind::Payment,
                json!({"endUserIp": ip, "userVisibleTransaction": {"transactionType": "card",
                    "recipient": {"name": "Shop"}, "money": {"amount": "1,00", "currency": long}}}),
            ),
        ];
        // And an unknown field's name (found in the full run).
        let mut unknown = serde_json::Map::new();
        unknown.insert("endUserIp".into(), ip.clone());
        unknown.insert(long.clone(), json!(1));
        let bodies = bodies
            .into_iter()
            .chain([(OrderKind::Auth, Value::Object(unknown))]);
        for (kind, body) in bodies {
            let text = details(kind, body);
            assert!(text.contains("xxxx…"), "{text}");
            assert!(
                text.chars().count() < 300,
                "{} characters: {text}",
                text.len()
            );
        }
    }

    #[test]
    fn personal_numbers() {
        assert!(check_personal_number("199001011239").is_ok());
        assert!(check_personal_number("200211242383").is_ok());
        // coordination number: day + 60
        assert!(check_personal_number("199001611236").is_ok());
        assert!(check_personal_number("199001011238").is_err());
        assert!(check_personal_number("9001011239").is_err());
        assert!(check_personal_number("19900101123x").is_err());
        assert!(check_personal_number("199013011230").is_err());
    }

    #[test]
    fn auth_needs_a_valid_end_user_ip() {
        assert!(details(OrderKind::Auth, json!({})).contains("endUserIp is missing"));
        assert!(details(OrderKind::Auth, json!({"endUserIp": "1.2.3"})).contains("endUserIp"));
        assert!(
            details(OrderKind::Auth, json!({"endUserIp": 5}))
                .contains("endUserIp must be a string")
        );
        let ok = start_request(OrderKind::Auth, &json!({"endUserIp": "::1"}), true).unwrap();
        assert_eq!(ok.end_user_ip, Some("::1".parse().unwrap()));
    }

    #[test]
    fn sign_needs_user_visible_data_and_limits_hold() {
        let d = details(OrderKind::Sign, json!({"endUserIp": "1.2.3.4"}));
        assert!(d.contains("userVisibleData is missing"), "{d}");
        let d = details(
            OrderKind::Sign,
            json!({"endUserIp": "1.2.3.4", "userVisibleData": "not base64!"}),
        );
        assert!(d.contains("userVisibleData is not valid base64"), "{d}");
        let big = "A".repeat(40_004);
        let d = details(
            OrderKind::Sign,
            json!({"endUserIp": "1.2.3.4", "userVisibleData": big}),
        );
        assert!(d.contains("at most 40000"), "{d}");
        let big = "A".repeat(200_004);
        let d = details(
            OrderKind::Auth,
            json!({"endUserIp": "1.2.3.4", "userNonVisibleData": big}),
        );
        assert!(d.contains("userNonVisibleData"), "{d}");
    }

    #[test]
    fn requirement_values_are_checked() {
        for (req, field) in [
            (
                json!({"personalNumber": "123"}),
                "requirement.personalNumber",
            ),
            (json!({"cardReader": "class3"}), "requirement.cardReader"),
            (json!({"risk": "high"}), "requirement.risk"),
            (json!({"pinCode": "yes"}), "requirement.pinCode"),
            (
                json!({"certificatePolicies": ["1.2.*.4"]}),
                "requirement.certificatePolicies[0]",
            ),
            (json!({"colour": "red"}), "requirement.colour"),
        ] {
            let d = details(
                OrderKind::Auth,
                json!({"endUserIp": "1.2.3.4", "requirement": req}),
            );
            assert!(d.contains(field), "{d}");
        }
        let ok = start_request(
            OrderKind::Auth,
            &json!({"endUserIp": "1.2.3.4", "requirement": {"risk": "MODERATE", "certificatePolicies": ["1.2.752.78.*"]}}),
            true,
        )
        .unwrap();
        assert_eq!(ok.requirement.risk, Some(Risk::Moderate));
    }

    #[test]
    fn phone_requests() {
        let d = details(OrderKind::PhoneAuth, json!({"callInitiator": "user"}));
        assert!(d.contains("personalNumber is missing"), "{d}");
        let d = details(
            OrderKind::PhoneAuth,
            json!({"personalNumber": "199001011239", "callInitiator": "bank"}),
        );
        assert!(d.contains("callInitiator"), "{d}");
        let d = details(
            OrderKind::PhoneAuth,
            json!({"personalNumber": "199001011239", "callInitiator": "RP", "endUserIp": "1.2.3.4"}),
        );
        assert!(d.contains("endUserIp is not a parameter"), "{d}");
        let d = details(
            OrderKind::PhoneAuth,
            json!({"personalNumber": "199001011239", "callInitiator": "RP", "requirement": {"mrtd": true}}),
        );
        assert!(d.contains("requirement.mrtd"), "{d}");
    }

    #[test]
    fn web_and_app_together_are_refused() {
        let d = details(
            OrderKind::Auth,
            json!({"endUserIp": "1.2.3.4", "web": {"userAgent": "x"}, "app": {"deviceOS": "iOS"}}),
        );
        assert!(d.contains("web and app"), "{d}");
    }

    #[test]
    fn payments() {
        let base = json!({"endUserIp": "1.2.3.4"});
        assert!(details(OrderKind::Payment, base).contains("userVisibleTransaction is missing"));
        let d = details(
            OrderKind::Payment,
            json!({"endUserIp": "1.2.3.4", "userVisibleTransaction": {"transactionType": "npa", "recipient": {"name": "Shop"}, "money": {"amount": "10,00", "currency": "SEK"}}}),
        );
        assert!(d.contains("not allowed"), "{d}");
        let d = details(
            OrderKind::Payment,
            json!({"endUserIp": "1.2.3.4", "userVisibleTransaction": {"transactionType": "card", "recipient": {"name": "Shop"}, "money": {"amount": "10.00", "currency": "SEK"}}}),
        );
        assert!(d.contains("money.amount"), "{d}");
        let ok = start_request(
            OrderKind::Payment,
            &json!({"endUserIp": "1.2.3.4", "userVisibleTransaction": {"transactionType": "card", "recipient": {"name": "Shop"}, "money": {"amount": "1000,00", "currency": "SEK"}}, "riskFlags": ["newCard"]}),
            true,
        )
        .unwrap();
        assert_eq!(ok.transaction_type.as_deref(), Some("card"));
    }

    fn arb_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[ -~]{0,20}".prop_map(Value::String),
            // Values that pass the first checks, to reach deeper ones.
            Just(json!("192.0.2.1")),
            Just(json!("199001011239")),
            Just(json!("SGVq")),
            Just(json!("user")),
            Just(json!("card")),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            let keys = prop_oneof![
                Just("endUserIp".to_owned()),
                Just("requirement".to_owned()),
                Just("personalNumber".to_owned()),
                Just("callInitiator".to_owned()),
                Just("userVisibleData".to_owned()),
                Just("userVisibleTransaction".to_owned()),
                Just("recipient".to_owned()),
                Just("money".to_owned()),
                Just("web".to_owned()),
                Just("app".to_owned()),
                Just("certificatePolicies".to_owned()),
                Just("riskFlags".to_owned()),
                Just("orderRef".to_owned()),
                "[a-zA-Z]{1,8}",
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(keys, inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Any JSON gives a request or an invalidParameters, never a panic.
        #[test]
        fn any_json_is_answered(body in arb_json(), strict in proptest::bool::ANY) {
            for kind in [OrderKind::Auth, OrderKind::Sign, OrderKind::Payment, OrderKind::PhoneAuth, OrderKind::PhoneSign] {
                if let Err(e) = start_request(kind, &body, strict) {
                    proptest::prop_assert_eq!(e.code, "invalidParameters");
                    proptest::prop_assert!(!e.details.is_empty());
                }
            }
            let _ = order_ref(&body, strict);
        }

        #[test]
        fn any_personal_number_is_answered(s in "[0-9]{0,14}|\\PC{0,14}") {
            let _ = check_personal_number(&s);
        }
    }

    #[test]
    fn order_refs() {
        let u = uuid::Uuid::new_v4();
        assert_eq!(
            order_ref(&json!({"orderRef": u.to_string()}), true).unwrap(),
            u
        );
        assert!(order_ref(&json!({"orderRef": "invalid-uuid"}), true).is_err());
        assert!(order_ref(&json!({"orderRef": u.simple().to_string()}), true).is_err());
        assert!(
            order_ref(&json!({}), true)
                .unwrap_err()
                .details
                .contains("missing")
        );
        assert!(order_ref(&json!([1]), true).is_err());
    }
}
