//! Requests and responses of the BankID RP API v6.0, with the exact JSON
//! field names, and the checks the API would apply to a request.
//!
//! Request types are permissive on purpose (strings where the API takes
//! strings) so that a simulator can deserialise whatever a client sends and
//! answer `invalidParameters` itself; [`AuthRequest::validate`] and friends
//! catch what the API would refuse, and the client calls them before sending.
//! The constructors (`AuthRequest::new`, `SignRequest::new`, …) build valid
//! requests.
//!
//! Response enums ([`Status`], [`HintCode`], [`ErrorCode`], [`RiskLevel`])
//! keep values they do not know as `Unknown(String)`, so a newer API never
//! breaks a collect.
use std::fmt;
use std::net::IpAddr;
use std::time::Instant;

use bankbridge_core::Secret;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use crate::enums::string_enum;
use crate::qr::QrCode;

// ---------------------------------------------------------------------------
// Validation errors and limits
// ---------------------------------------------------------------------------

/// Longest `userVisibleData`, in characters after base64.
pub const USER_VISIBLE_DATA_MAX: usize = 40_000;
/// Longest `userNonVisibleData`, in characters after base64.
pub const USER_NON_VISIBLE_DATA_MAX: usize = 200_000;
/// Longest `returnUrl`, in characters.
pub const RETURN_URL_MAX: usize = 512;

/// A request the API would refuse with `invalidParameters`: which field, and
/// why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ValidationError {
    /// The JSON path of the field, e.g. `requirement.personalNumber`.
    pub field: &'static str,
    pub reason: String,
}

impl ValidationError {
    fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

// ---------------------------------------------------------------------------
// Personal numbers
// ---------------------------------------------------------------------------

/// Why a string is not a Swedish personal number as BankID takes it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PersonalNumberError {
    #[error("a personal number has 12 digits (YYYYMMDDNNNN), got {0} characters")]
    Length(usize),
    #[error("a personal number has only digits (YYYYMMDDNNNN)")]
    NotDigits,
    #[error("the date part YYYYMMDD is not a date (month {month}, day {day})")]
    Date { month: u32, day: u32 },
    #[error("the check digit is wrong (Luhn over the last 10 digits)")]
    Checksum,
}

/// A Swedish personal number (personnummer, or samordningsnummer with the day
/// plus 60) in the 12-digit form BankID takes: `YYYYMMDDNNNN`, the last digit a
/// Luhn check over the last ten.
///
/// `Display` and `as_str` give the full number; `Debug` hides the last four
/// digits, so a logged struct does not leak it.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct PersonalNumber(String);

impl PersonalNumber {
    /// Parse `YYYYMMDDNNNN`; `YYYYMMDD-NNNN` is accepted too and normalised.
    pub fn parse(s: &str) -> Result<Self, PersonalNumberError> {
        let s = s.trim();
        let owned: String = if s.len() == 13 && s.as_bytes()[8] == b'-' {
            s.chars().filter(|&c| c != '-').collect()
        } else {
            s.to_owned()
        };
        let n = owned.chars().count();
        if n != 12 {
            return Err(PersonalNumberError::Length(n));
        }
        if !owned.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PersonalNumberError::NotDigits);
        }
        let num = |r: std::ops::Range<usize>| -> u32 {
            owned[r].parse().unwrap_or_else(|_| unreachable!("digits"))
        };
        let (month, day) = (num(4..6), num(6..8));
        let day_ok = (1..=31).contains(&day) || (61..=91).contains(&day);
        if !(1..=12).contains(&month) || !day_ok {
            return Err(PersonalNumberError::Date { month, day });
        }
        if !luhn_valid(&owned[2..]) {
            return Err(PersonalNumberError::Checksum);
        }
        Ok(Self(owned))
    }

    /// The 12 digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The number with its last four digits hidden: `YYYYMMDD****`.
    pub fn masked(&self) -> String {
        mask_personal_number(&self.0)
    }
}

impl fmt::Display for PersonalNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PersonalNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PersonalNumber({})", self.masked())
    }
}

impl std::str::FromStr for PersonalNumber {
    type Err = PersonalNumberError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for PersonalNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl From<PersonalNumber> for String {
    fn from(p: PersonalNumber) -> String {
        p.0.clone()
    }
}

/// Luhn check over a string of ASCII digits (the first digit doubled).
fn luhn_valid(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0') * if i % 2 == 0 { 2 } else { 1 };
            d / 10 + d % 10
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Hide all but the first eight characters of what may be a personal number
/// (any string, valid or not), for `Debug` output.
pub(crate) fn mask_personal_number(s: &str) -> String {
    let keep: String = s.chars().take(8).collect();
    let hidden = s.chars().count().saturating_sub(8);
    format!("{keep}{}", "*".repeat(hidden))
}

struct Masked<'a>(&'a str);

impl fmt::Debug for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", mask_personal_number(self.0))
    }
}

fn check_personal_number(field: &'static str, s: &str) -> Result<(), ValidationError> {
    // Exactly 12 digits on the wire: no hyphen, no spaces.
    if s.len() != 12 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValidationError::new(
            field,
            "a personal number is 12 digits YYYYMMDDNNNN, without hyphen or spaces",
        ));
    }
    PersonalNumber::parse(s)
        .map(|_| ())
        .map_err(|e| ValidationError::new(field, e.to_string()))
}

// ---------------------------------------------------------------------------
// Base64 payloads
// ---------------------------------------------------------------------------

/// A base64 field (`userVisibleData`, `userNonVisibleData`): holds the encoded
/// form exactly as it goes on the wire. Build it from plain text with
/// [`Base64Text::from_text`] (the client never asks callers to encode).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Base64Text(String);

impl Base64Text {
    /// Encode UTF-8 text (standard base64 with padding).
    pub fn from_text(text: &str) -> Self {
        Self(BASE64.encode(text.as_bytes()))
    }

    /// Encode arbitrary bytes.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(BASE64.encode(bytes))
    }

    /// Take an already encoded value as is (checked by `validate`).
    pub fn from_base64(encoded: impl Into<String>) -> Self {
        Self(encoded.into())
    }

    /// The encoded value.
    pub fn as_base64(&self) -> &str {
        &self.0
    }

    /// Characters after base64: what the API's size limits count.
    pub fn encoded_len(&self) -> usize {
        self.0.len()
    }

    /// The decoded bytes.
    pub fn decode(&self) -> Result<Vec<u8>, base64::DecodeError> {
        BASE64.decode(self.0.as_bytes())
    }

    /// The decoded text, if it is base64 of UTF-8.
    pub fn decode_text(&self) -> Option<String> {
        String::from_utf8(self.decode().ok()?).ok()
    }
}

fn check_visible_data(
    field: &'static str,
    data: Option<&Base64Text>,
    required: bool,
) -> Result<(), ValidationError> {
    let Some(data) = data else {
        return if required {
            Err(ValidationError::new(
                field,
                "required: the text the user is asked to sign",
            ))
        } else {
            Ok(())
        };
    };
    if data.encoded_len() == 0 {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if data.encoded_len() > USER_VISIBLE_DATA_MAX {
        return Err(ValidationError::new(
            field,
            format!(
                "{} characters after base64, more than the {USER_VISIBLE_DATA_MAX} allowed",
                data.encoded_len()
            ),
        ));
    }
    if data.decode_text().is_none() {
        return Err(ValidationError::new(
            field,
            "must be standard base64 of UTF-8 text",
        ));
    }
    Ok(())
}

fn check_non_visible_data(data: Option<&Base64Text>) -> Result<(), ValidationError> {
    const FIELD: &str = "userNonVisibleData";
    let Some(data) = data else { return Ok(()) };
    if data.encoded_len() == 0 {
        return Err(ValidationError::new(FIELD, "must not be empty"));
    }
    if data.encoded_len() > USER_NON_VISIBLE_DATA_MAX {
        return Err(ValidationError::new(
            FIELD,
            format!(
                "{} characters after base64, more than the {USER_NON_VISIBLE_DATA_MAX} allowed",
                data.encoded_len()
            ),
        ));
    }
    if data.decode().is_err() {
        return Err(ValidationError::new(FIELD, "must be standard base64"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Request enums
// ---------------------------------------------------------------------------

string_enum! {
    /// `requirement.cardReader`.
    closed CardReader {
        /// The PIN may be typed on the computer's keyboard (or better).
        Class1 => "class1",
        /// The PIN must be typed on the card reader's own keypad.
        Class2 => "class2",
    }
}

string_enum! {
    /// `requirement.risk`: the highest acceptable risk of the order; riskier
    /// orders fail with `transactionRiskBlocked`. Sent lowercase; parsed in
    /// any case.
    closed (nocase) Risk {
        Low => "low",
        Moderate => "moderate",
    }
}

string_enum! {
    /// `userVisibleDataFormat`.
    closed UserVisibleDataFormat {
        SimpleMarkdownV1 => "simpleMarkdownV1",
        Plaintext => "plaintext",
    }
}

string_enum! {
    /// `callInitiator` of a phone order: who made the call.
    closed CallInitiator {
        /// The user called the RP.
        User => "user",
        /// The RP called the user.
        Rp => "RP",
    }
}

string_enum! {
    /// `userVisibleTransaction.transactionType` of a payment order.
    closed TransactionType {
        Card => "card",
        /// Non-payment authentication: no `money`.
        Npa => "npa",
    }
}

string_enum! {
    /// `riskFlags[]` of a payment order.
    open RiskFlag {
        NewCard => "newCard",
        NewCustomer => "newCustomer",
        NewRecipient => "newRecipient",
        HighRiskRecipient => "highRiskRecipient",
        LargeAmount => "largeAmount",
        ForeignCurrency => "foreignCurrency",
        CryptoCurrencyPurchase => "cryptoCurrencyPurchase",
        MoneyTransfer => "moneyTransfer",
        OverseasTransaction => "overseasTransaction",
        RecurringPayment => "recurringPayment",
        SuspiciousPaymentPattern => "suspiciousPaymentPattern",
        Other => "other",
    }
}

// ---------------------------------------------------------------------------
// Request parts
// ---------------------------------------------------------------------------

/// `requirement` of auth, sign and payment orders.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Requirement {
    /// Only this person (12 digits) may complete the order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal_number: Option<String>,
    /// Ask for the security code even when biometrics are on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_code: Option<bool>,
    /// The user must verify with a passport or national ID card (NFC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mrtd: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_reader: Option<CardReader>,
    /// Certificate policy OIDs; giving any drops the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_policies: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<Risk>,
}

impl fmt::Debug for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Requirement")
            .field(
                "personal_number",
                &self.personal_number.as_deref().map(Masked),
            )
            .field("pin_code", &self.pin_code)
            .field("mrtd", &self.mrtd)
            .field("card_reader", &self.card_reader)
            .field("certificate_policies", &self.certificate_policies)
            .field("risk", &self.risk)
            .finish()
    }
}

impl Requirement {
    /// A requirement that only `personal_number` may complete the order.
    pub fn personal_number(personal_number: &PersonalNumber) -> Self {
        Self {
            personal_number: Some(personal_number.as_str().to_owned()),
            ..Self::default()
        }
    }

    /// What the API would refuse.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(pnr) = &self.personal_number {
            check_personal_number("requirement.personalNumber", pnr)?;
        }
        check_policies(self.certificate_policies.as_deref())
    }
}

/// `requirement` of phone orders: a subset of [`Requirement`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhoneRequirement {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_code: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_reader: Option<CardReader>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_policies: Option<Vec<String>>,
}

impl PhoneRequirement {
    /// What the API would refuse.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_policies(self.certificate_policies.as_deref())
    }
}

/// Certificate policies are OIDs; one `*` wildcard is allowed from the fifth
/// component on (`1.2.752.78.*`).
fn check_policies(policies: Option<&[String]>) -> Result<(), ValidationError> {
    const FIELD: &str = "requirement.certificatePolicies";
    let Some(policies) = policies else {
        return Ok(());
    };
    if policies.is_empty() {
        return Err(ValidationError::new(
            FIELD,
            "an empty list; leave the field out to get the default policies",
        ));
    }
    for policy in policies {
        let parts: Vec<&str> = policy.split('.').collect();
        let wildcards = parts.iter().filter(|p| **p == "*").count();
        let well_formed = parts.len() >= 2
            && parts
                .iter()
                .all(|p| *p == "*" || (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())));
        let wildcard_ok = wildcards == 0
            || (wildcards == 1 && parts.iter().position(|p| *p == "*").unwrap_or(0) >= 4);
        if !well_formed || !wildcard_ok {
            return Err(ValidationError::new(
                FIELD,
                format!(
                    "{policy:?} is not an OID (digits and dots, one `*` allowed from the fifth part on, e.g. 1.2.752.78.*)"
                ),
            ));
        }
    }
    Ok(())
}

/// `web`: the browser the user started the order from. Give at least one
/// member. Send `web` or `app`, never both.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebData {
    /// The domain of the page that started the order (3–253 characters of
    /// `[0-9a-z.-]`, punycode for international names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referring_domain: Option<String>,
    /// The browser's User-Agent (1–256 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// A stable identifier of the device (1–64 characters; e.g. a hash of a
    /// persistent cookie, never the session cookie).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_identifier: Option<String>,
}

impl WebData {
    /// What the API would refuse.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.referring_domain.is_none()
            && self.user_agent.is_none()
            && self.device_identifier.is_none()
        {
            return Err(ValidationError::new("web", "give at least one member"));
        }
        if let Some(d) = &self.referring_domain
            && (!(3..=253).contains(&d.len())
                || !d.bytes().all(|b| {
                    b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'.' || b == b'-'
                }))
        {
            return Err(ValidationError::new(
                "web.referringDomain",
                "3–253 characters of 0-9, a-z, '.' and '-' (punycode for international names)",
            ));
        }
        check_len("web.userAgent", self.user_agent.as_deref(), 1, 256)?;
        check_len(
            "web.deviceIdentifier",
            self.device_identifier.as_deref(),
            1,
            64,
        )
    }
}

/// `app`: the RP's own app the user started the order from. Give at least one
/// member. Send `web` or `app`, never both.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppData {
    /// Android package name or iOS bundle id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_identifier: Option<String>,
    #[serde(default, rename = "deviceOS", skip_serializing_if = "Option::is_none")]
    pub device_os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_identifier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_model_name: Option<String>,
}

impl AppData {
    /// What the API would refuse.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.app_identifier.is_none()
            && self.device_os.is_none()
            && self.device_identifier.is_none()
            && self.device_model_name.is_none()
        {
            return Err(ValidationError::new("app", "give at least one member"));
        }
        check_len("app.appIdentifier", self.app_identifier.as_deref(), 1, 256)?;
        check_len("app.deviceOS", self.device_os.as_deref(), 1, 256)?;
        check_len(
            "app.deviceIdentifier",
            self.device_identifier.as_deref(),
            1,
            64,
        )?;
        check_len(
            "app.deviceModelName",
            self.device_model_name.as_deref(),
            1,
            256,
        )
    }
}

fn check_len(
    field: &'static str,
    value: Option<&str>,
    min: usize,
    max: usize,
) -> Result<(), ValidationError> {
    match value {
        Some(v) if !(min..=max).contains(&v.chars().count()) => Err(ValidationError::new(
            field,
            format!("{} characters; allowed {min}–{max}", v.chars().count()),
        )),
        _ => Ok(()),
    }
}

fn check_end_user_ip(ip: &str) -> Result<(), ValidationError> {
    if ip.is_empty() {
        return Err(ValidationError::new(
            "endUserIp",
            "required: the end user's IP address as the RP sees it",
        ));
    }
    ip.parse::<IpAddr>().map(|_| ()).map_err(|_| {
        ValidationError::new(
            "endUserIp",
            format!("{ip:?} is not an IPv4 or IPv6 address"),
        )
    })
}

fn check_return_url(url: Option<&str>) -> Result<(), ValidationError> {
    let Some(u) = url else { return Ok(()) };
    let n = u.chars().count();
    if !(1..=RETURN_URL_MAX).contains(&n) {
        return Err(ValidationError::new(
            "returnUrl",
            format!("{n} characters; allowed 1–{RETURN_URL_MAX}"),
        ));
    }
    url::Url::parse(u)
        .map(|_| ())
        .map_err(|e| ValidationError::new("returnUrl", format!("not an absolute URL: {e}")))
}

fn check_web_app(web: Option<&WebData>, app: Option<&AppData>) -> Result<(), ValidationError> {
    match (web, app) {
        (Some(_), Some(_)) => Err(ValidationError::new(
            "web/app",
            "send web (browser) or app (your own app), not both",
        )),
        (Some(w), None) => w.validate(),
        (None, Some(a)) => a.validate(),
        (None, None) => Ok(()),
    }
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

macro_rules! order_request_builders {
    ($ty:ident) => {
        impl $ty {
            /// Set the requirement.
            pub fn with_requirement(mut self, requirement: Requirement) -> Self {
                self.requirement = Some(requirement);
                self
            }

            /// Only this person may complete the order.
            pub fn with_personal_number(mut self, personal_number: &PersonalNumber) -> Self {
                self.requirement
                    .get_or_insert_with(Requirement::default)
                    .personal_number = Some(personal_number.as_str().to_owned());
                self
            }

            /// The text shown to the user (plain text; encoded here).
            pub fn with_user_visible_data(mut self, text: &str) -> Self {
                self.user_visible_data = Some(Base64Text::from_text(text));
                self
            }

            /// The text shown to the user, as simple Markdown (v1).
            pub fn with_markdown(mut self, text: &str) -> Self {
                self.user_visible_data = Some(Base64Text::from_text(text));
                self.user_visible_data_format = Some(UserVisibleDataFormat::SimpleMarkdownV1);
                self
            }

            /// Data signed but not shown (raw bytes; encoded here).
            pub fn with_user_non_visible_data(mut self, data: &[u8]) -> Self {
                self.user_non_visible_data = Some(Base64Text::from_bytes(data));
                self
            }

            /// Where the BankID app returns when started on the same device.
            pub fn with_return_url(mut self, url: impl Into<String>) -> Self {
                self.return_url = Some(url.into());
                self
            }

            /// Ask for `completionData.risk`.
            pub fn with_return_risk(mut self, return_risk: bool) -> Self {
                self.return_risk = Some(return_risk);
                self
            }

            /// The order was started from a browser (clears `app`).
            pub fn with_web(mut self, web: WebData) -> Self {
                self.web = Some(web);
                self.app = None;
                self
            }

            /// The order was started from the RP's own app (clears `web`).
            pub fn with_app(mut self, app: AppData) -> Self {
                self.app = Some(app);
                self.web = None;
                self
            }
        }
    };
}

/// `POST auth`: start an authentication order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthRequest {
    /// The end user's IP address as the RP sees it (required).
    #[serde(default)]
    pub end_user_ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirement: Option<Requirement>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_visible_data: Option<Base64Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_visible_data_format: Option<UserVisibleDataFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_non_visible_data: Option<Base64Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_risk: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<WebData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<AppData>,
}

impl AuthRequest {
    /// An authentication order for the user at `end_user_ip`.
    pub fn new(end_user_ip: impl Into<String>) -> Self {
        Self {
            end_user_ip: end_user_ip.into(),
            ..Self::default()
        }
    }

    /// What the API would refuse with `invalidParameters`.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_end_user_ip(&self.end_user_ip)?;
        if let Some(r) = &self.requirement {
            r.validate()?;
        }
        check_visible_data("userVisibleData", self.user_visible_data.as_ref(), false)?;
        check_non_visible_data(self.user_non_visible_data.as_ref())?;
        check_return_url(self.return_url.as_deref())?;
        check_web_app(self.web.as_ref(), self.app.as_ref())
    }
}
order_request_builders!(AuthRequest);

/// `POST sign`: start a signing order. `userVisibleData` is required.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignRequest {
    #[serde(default)]
    pub end_user_ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirement: Option<Requirement>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_visible_data: Option<Base64Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_visible_data_format: Option<UserVisibleDataFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_non_visible_data: Option<Base64Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_risk: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<WebData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<AppData>,
}

impl SignRequest {
    /// A signing order for the user at `end_user_ip`, showing `text` (plain
    /// text; encoded here).
    pub fn new(end_user_ip: impl Into<String>, text: &str) -> Self {
        Self {
            end_user_ip: end_user_ip.into(),
            user_visible_data: Some(Base64Text::from_text(text)),
            ..Self::default()
        }
    }

    /// What the API would refuse with `invalidParameters`.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_end_user_ip(&self.end_user_ip)?;
        if let Some(r) = &self.requirement {
            r.validate()?;
        }
        check_visible_data("userVisibleData", self.user_visible_data.as_ref(), true)?;
        check_non_visible_data(self.user_non_visible_data.as_ref())?;
        check_return_url(self.return_url.as_deref())?;
        check_web_app(self.web.as_ref(), self.app.as_ref())
    }
}
order_request_builders!(SignRequest);

/// `userVisibleTransaction.recipient`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recipient {
    /// The recipient's name (the merchant's, for a card payment).
    pub name: String,
}

/// `userVisibleTransaction.money`: an amount as the API writes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionMoney {
    /// Digits with one `,` before the decimals: `"1000,00"`.
    pub amount: String,
    /// ISO 4217 code: `"SEK"`.
    pub currency: String,
}

impl TransactionMoney {
    /// An amount in minor units (öre, cent) with two decimals: `100000` and
    /// `"SEK"` give `"1000,00"`.
    pub fn from_minor(minor: u64, currency: impl Into<String>) -> Self {
        Self {
            amount: format!("{},{:02}", minor / 100, minor % 100),
            currency: currency.into(),
        }
    }

    fn validate(&self) -> Result<(), ValidationError> {
        let (whole, frac) = match self.amount.split_once(',') {
            Some((w, f)) => (w, Some(f)),
            None => (self.amount.as_str(), None),
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || frac.is_some_and(|f| !digits(f)) {
            return Err(ValidationError::new(
                "userVisibleTransaction.money.amount",
                format!(
                    "{:?}: digits with one ',' before the decimals, e.g. \"1000,00\"",
                    self.amount
                ),
            ));
        }
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(ValidationError::new(
                "userVisibleTransaction.money.currency",
                format!("{:?}: an ISO 4217 code such as \"SEK\"", self.currency),
            ));
        }
        Ok(())
    }
}

/// `userVisibleTransaction` of a payment order: what the app shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserVisibleTransaction {
    pub transaction_type: TransactionType,
    pub recipient: Recipient,
    /// Not allowed for `npa`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub money: Option<TransactionMoney>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk_warning: Option<String>,
}

impl UserVisibleTransaction {
    /// A card payment of `money` to `merchant`.
    pub fn card(merchant: impl Into<String>, money: TransactionMoney) -> Self {
        Self {
            transaction_type: TransactionType::Card,
            recipient: Recipient {
                name: merchant.into(),
            },
            money: Some(money),
            risk_warning: None,
        }
    }

    /// A non-payment authentication towards `recipient`.
    pub fn npa(recipient: impl Into<String>) -> Self {
        Self {
            transaction_type: TransactionType::Npa,
            recipient: Recipient {
                name: recipient.into(),
            },
            money: None,
            risk_warning: None,
        }
    }

    /// What the API would refuse.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.recipient.name.trim().is_empty() {
            return Err(ValidationError::new(
                "userVisibleTransaction.recipient.name",
                "required: the recipient (merchant) name shown to the user",
            ));
        }
        match (&self.money, self.transaction_type) {
            (Some(_), TransactionType::Npa) => Err(ValidationError::new(
                "userVisibleTransaction.money",
                "not allowed for transactionType npa",
            )),
            (Some(m), TransactionType::Card) => m.validate(),
            (None, _) => Ok(()),
        }?;
        if let Some(w) = &self.risk_warning
            && w.trim().is_empty()
        {
            return Err(ValidationError::new(
                "userVisibleTransaction.riskWarning",
                "leave it out rather than send an empty warning",
            ));
        }
        Ok(())
    }
}

/// `POST payment`: start a payment (transaction approval) order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequest {
    #[serde(default)]
    pub end_user_ip: String,
    pub user_visible_transaction: UserVisibleTransaction,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub risk_flags: Vec<RiskFlag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirement: Option<Requirement>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_visible_data: Option<Base64Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_visible_data_format: Option<UserVisibleDataFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_non_visible_data: Option<Base64Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_risk: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<WebData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<AppData>,
}

impl PaymentRequest {
    /// A payment order for the user at `end_user_ip`.
    pub fn new(end_user_ip: impl Into<String>, transaction: UserVisibleTransaction) -> Self {
        Self {
            end_user_ip: end_user_ip.into(),
            user_visible_transaction: transaction,
            risk_flags: Vec::new(),
            requirement: None,
            user_visible_data: None,
            user_visible_data_format: None,
            user_non_visible_data: None,
            return_url: None,
            return_risk: None,
            web: None,
            app: None,
        }
    }

    /// Add risk flags the RP knows about the payment.
    pub fn with_risk_flags(mut self, flags: impl IntoIterator<Item = RiskFlag>) -> Self {
        self.risk_flags.extend(flags);
        self
    }

    /// What the API would refuse with `invalidParameters`.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_end_user_ip(&self.end_user_ip)?;
        self.user_visible_transaction.validate()?;
        if let Some(r) = &self.requirement {
            r.validate()?;
        }
        check_visible_data("userVisibleData", self.user_visible_data.as_ref(), false)?;
        check_non_visible_data(self.user_non_visible_data.as_ref())?;
        check_return_url(self.return_url.as_deref())?;
        check_web_app(self.web.as_ref(), self.app.as_ref())
    }
}
order_request_builders!(PaymentRequest);

macro_rules! phone_request {
    ($(#[$meta:meta])* $ty:ident, sign: $sign:literal) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct $ty {
            /// The person on the phone (12 digits; required).
            #[serde(default)]
            pub personal_number: String,
            /// Who made the call (required).
            pub call_initiator: CallInitiator,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub requirement: Option<PhoneRequirement>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub user_visible_data: Option<Base64Text>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub user_visible_data_format: Option<UserVisibleDataFormat>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub user_non_visible_data: Option<Base64Text>,
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("personal_number", &Masked(&self.personal_number))
                    .field("call_initiator", &self.call_initiator)
                    .field("requirement", &self.requirement)
                    .field("user_visible_data", &self.user_visible_data)
                    .field("user_visible_data_format", &self.user_visible_data_format)
                    .field("user_non_visible_data", &self.user_non_visible_data)
                    .finish()
            }
        }

        impl $ty {
            /// Set the requirement.
            pub fn with_requirement(mut self, requirement: PhoneRequirement) -> Self {
                self.requirement = Some(requirement);
                self
            }

            /// The text shown to the user (plain text; encoded here).
            pub fn with_user_visible_data(mut self, text: &str) -> Self {
                self.user_visible_data = Some(Base64Text::from_text(text));
                self
            }

            /// The text shown to the user, as simple Markdown (v1).
            pub fn with_markdown(mut self, text: &str) -> Self {
                self.user_visible_data = Some(Base64Text::from_text(text));
                self.user_visible_data_format = Some(UserVisibleDataFormat::SimpleMarkdownV1);
                self
            }

            /// Data signed but not shown (raw bytes; encoded here).
            pub fn with_user_non_visible_data(mut self, data: &[u8]) -> Self {
                self.user_non_visible_data = Some(Base64Text::from_bytes(data));
                self
            }

            /// What the API would refuse with `invalidParameters`.
            pub fn validate(&self) -> Result<(), ValidationError> {
                if self.personal_number.is_empty() {
                    return Err(ValidationError::new(
                        "personalNumber",
                        "required for phone orders: the person on the call",
                    ));
                }
                check_personal_number("personalNumber", &self.personal_number)?;
                if let Some(r) = &self.requirement {
                    r.validate()?;
                }
                check_visible_data("userVisibleData", self.user_visible_data.as_ref(), $sign)?;
                check_non_visible_data(self.user_non_visible_data.as_ref())
            }
        }
    };
}

phone_request!(
    /// `POST phone/auth`: authenticate the person on a phone call with the RP.
    PhoneAuthRequest, sign: false
);
phone_request!(
    /// `POST phone/sign`: have the person on a phone call sign.
    /// `userVisibleData` is required.
    PhoneSignRequest, sign: true
);

impl PhoneAuthRequest {
    /// Authenticate `personal_number`, who is on a call started by
    /// `call_initiator`.
    pub fn new(personal_number: &PersonalNumber, call_initiator: CallInitiator) -> Self {
        Self {
            personal_number: personal_number.as_str().to_owned(),
            call_initiator,
            requirement: None,
            user_visible_data: None,
            user_visible_data_format: None,
            user_non_visible_data: None,
        }
    }
}

impl PhoneSignRequest {
    /// Have `personal_number`, on a call started by `call_initiator`, sign
    /// `text` (plain text; encoded here).
    pub fn new(
        personal_number: &PersonalNumber,
        call_initiator: CallInitiator,
        text: &str,
    ) -> Self {
        Self {
            personal_number: personal_number.as_str().to_owned(),
            call_initiator,
            requirement: None,
            user_visible_data: Some(Base64Text::from_text(text)),
            user_visible_data_format: None,
            user_non_visible_data: None,
        }
    }
}

/// `POST collect` and `POST cancel`: `{"orderRef": …}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderRefRequest {
    pub order_ref: String,
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

/// The answer to auth, sign and payment.
///
/// `Debug` prints `qrStartSecret` as `[redacted]`. `received_at` is not on the
/// wire: it is the moment this value was deserialised (when the response
/// arrived), the origin of the animated QR code's clock.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderResponse {
    pub order_ref: String,
    pub auto_start_token: String,
    pub qr_start_token: String,
    pub qr_start_secret: Secret<String>,
    #[serde(skip, default = "Instant::now")]
    pub received_at: Instant,
}

impl Serialize for OrderResponse {
    /// Serialises with the secret (a simulator sends this to the RP).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("OrderResponse", 4)?;
        st.serialize_field("orderRef", &self.order_ref)?;
        st.serialize_field("autoStartToken", &self.auto_start_token)?;
        st.serialize_field("qrStartToken", &self.qr_start_token)?;
        st.serialize_field("qrStartSecret", self.qr_start_secret.expose())?;
        st.end()
    }
}

impl PartialEq for OrderResponse {
    /// Compares the wire fields only.
    fn eq(&self, other: &Self) -> bool {
        self.order_ref == other.order_ref
            && self.auto_start_token == other.auto_start_token
            && self.qr_start_token == other.qr_start_token
            && self.qr_start_secret == other.qr_start_secret
    }
}

impl OrderResponse {
    /// The order's animated QR code, its clock started when this response
    /// arrived.
    pub fn qr_code(&self) -> QrCode {
        QrCode::started_at(
            self.qr_start_token.clone(),
            self.qr_start_secret.clone(),
            self.received_at,
        )
    }

    /// Start the BankID app on the same computer (desktop, or a browser on
    /// the device): `bankid:///?autostarttoken=…&redirect=null`.
    pub fn autostart_url(&self) -> String {
        format!(
            "bankid:///?autostarttoken={}&redirect=null",
            encode_query(&self.auto_start_token)
        )
    }

    /// Start the BankID app on a phone through its universal/app link. The
    /// app ignores `redirect` when the order was started with a `returnUrl`;
    /// `None` sends `redirect=null` (what Android wants).
    pub fn autostart_url_mobile(&self, redirect: Option<&str>) -> String {
        format!(
            "https://app.bankid.com/?autostarttoken={}&redirect={}",
            encode_query(&self.auto_start_token),
            redirect.map(encode_query).unwrap_or_else(|| "null".into())
        )
    }
}

fn encode_query(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The answer to phone/auth and phone/sign.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhoneOrderResponse {
    pub order_ref: String,
}

string_enum! {
    /// `status` of a collected order.
    open Status {
        Pending => "pending",
        Failed => "failed",
        Complete => "complete",
    }
}

string_enum! {
    /// `hintCode` of a pending or failed order.
    ///
    /// The pending and failed hints of the v6.0 reference, plus a few seen in
    /// newer typings (marked below) so they classify correctly; anything else
    /// is `Unknown`.
    open HintCode {
        // pending
        /// Pending: the app has not received the order yet.
        OutstandingTransaction => "outstandingTransaction",
        /// Pending: no app has received the order yet.
        NoClient => "noClient",
        /// Pending: the app was started but has not found a usable BankID yet.
        Started => "started",
        /// Pending: the app asks the user to read their ID document (mrtd).
        UserMrtd => "userMrtd",
        /// Pending (phone orders): the app asks the user to confirm the call.
        UserCallConfirm => "userCallConfirm",
        /// Pending: the user is asked to confirm in the app.
        UserSign => "userSign",
        /// Pending (newer typings): the order is being processed.
        Processing => "processing",
        /// Pending (newer typings): a step-up is in progress.
        UserStepUp => "userStepUp",
        /// Pending (newer typings): facial recognition is in progress.
        UserFace => "userFace",
        // failed
        /// Failed: the app did not start, the user did not finish, or collect came too late.
        ExpiredTransaction => "expiredTransaction",
        /// Failed: too many wrong security codes, or the BankID is revoked or invalid.
        CertificateErr => "certificateErr",
        /// Failed: the user cancelled.
        UserCancel => "userCancel",
        /// Failed: a new order was started for the same user.
        Cancelled => "cancelled",
        /// Failed: the app did not start in time, or the RP did not use the autostart token.
        StartFailed => "startFailed",
        /// Failed (phone orders): the user said they are not on a call with the RP.
        UserDeclinedCall => "userDeclinedCall",
        /// Failed: the user's app is too old for a requested feature.
        NotSupportedByUserApp => "notSupportedByUserApp",
        /// Failed: the risk was higher than the requirement allows.
        TransactionRiskBlocked => "transactionRiskBlocked",
        /// Failed (newer typings).
        MrtdVerificationFailed => "mrtdVerificationFailed",
        /// Failed (newer typings).
        FacialRecognitionFailed => "facialRecognitionFailed",
        /// Failed (newer typings).
        NfcNotSupportedByDevice => "nfcNotSupportedByDevice",
        /// Failed (newer typings).
        MultipleBankIdsOnDevice => "multipleBankIdsOnDevice",
        /// Failed (newer typings).
        StepUpFailed => "stepUpFailed",
    }
}

impl HintCode {
    /// A hint of a pending order.
    pub fn is_pending(&self) -> bool {
        matches!(
            self,
            Self::OutstandingTransaction
                | Self::NoClient
                | Self::Started
                | Self::UserMrtd
                | Self::UserCallConfirm
                | Self::UserSign
                | Self::Processing
                | Self::UserStepUp
                | Self::UserFace
        )
    }

    /// A hint of a failed order.
    pub fn is_failed(&self) -> bool {
        !self.is_pending() && !matches!(self, Self::Unknown(_))
    }

    /// The app has not picked up the order yet: the QR code is still useful.
    pub fn is_waiting_for_app(&self) -> bool {
        matches!(self, Self::OutstandingTransaction | Self::NoClient)
    }
}

impl Status {
    pub fn is_pending(&self) -> bool {
        *self == Self::Pending
    }
    pub fn is_failed(&self) -> bool {
        *self == Self::Failed
    }
    pub fn is_complete(&self) -> bool {
        *self == Self::Complete
    }
}

string_enum! {
    /// `completionData.risk`: the risk BankID assessed for the order.
    open RiskLevel {
        Low => "low",
        Moderate => "moderate",
        High => "high",
    }
}

/// `completionData.user`. `Debug` hides the last four digits of the personal
/// number.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub personal_number: String,
    pub name: String,
    pub given_name: String,
    pub surname: String,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("personal_number", &Masked(&self.personal_number))
            .field("name", &self.name)
            .field("given_name", &self.given_name)
            .field("surname", &self.surname)
            .finish()
    }
}

/// `completionData.device`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// The IP address of the user's device as BankID saw it.
    pub ip_address: String,
    /// Unique hardware identifier of the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uhi: Option<String>,
}

/// `completionData.stepUp`: present when `requirement.mrtd` was used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepUp {
    /// The user verified with an ID document.
    pub mrtd: bool,
}

/// `completionData`: who completed the order, on which device, and the
/// signature and OCSP response that prove it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompletionData {
    pub user: User,
    pub device: Device,
    /// `YYYY-MM-DD`: when the user's BankID was issued.
    pub bank_id_issue_date: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_up: Option<StepUp>,
    /// Base64 of the XML signature document.
    pub signature: String,
    /// Base64 of the DER OCSP response.
    pub ocsp_response: String,
    /// Present when `returnRisk` or a risk requirement was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<RiskLevel>,
}

impl CompletionData {
    /// `bankIdIssueDate` as a date, if it is one.
    pub fn bank_id_issue_date(&self) -> Option<chrono::NaiveDate> {
        chrono::NaiveDate::parse_from_str(&self.bank_id_issue_date, "%Y-%m-%d").ok()
    }

    /// The decoded signature XML, if it is base64 of UTF-8.
    pub fn signature_xml(&self) -> Option<String> {
        Base64Text::from_base64(self.signature.clone()).decode_text()
    }
}

impl fmt::Debug for CompletionData {
    /// The signature and OCSP blobs are long; print their sizes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompletionData")
            .field("user", &self.user)
            .field("device", &self.device)
            .field("bank_id_issue_date", &self.bank_id_issue_date)
            .field("step_up", &self.step_up)
            .field(
                "signature",
                &format_args!("<{} base64 chars>", self.signature.len()),
            )
            .field(
                "ocsp_response",
                &format_args!("<{} base64 chars>", self.ocsp_response.len()),
            )
            .field("risk", &self.risk)
            .finish()
    }
}

/// The answer to collect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectResponse {
    pub order_ref: String,
    pub status: Status,
    /// Present for pending and failed orders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint_code: Option<HintCode>,
    /// Present for complete orders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_data: Option<CompletionData>,
}

string_enum! {
    /// `errorCode` of an error answer.
    open ErrorCode {
        /// 400: an order for this personal number is already in progress; no order was created.
        AlreadyInProgress => "alreadyInProgress",
        /// 400: a bad request (also: collecting or cancelling an unknown, finished or too old order).
        InvalidParameters => "invalidParameters",
        /// 401/403: the RP has no access (bad or missing client certificate).
        Unauthorized => "unauthorized",
        /// 404: wrong URL path.
        NotFound => "notFound",
        /// 405: wrong HTTP method.
        MethodNotAllowed => "methodNotAllowed",
        /// 408: the request took too long to send.
        RequestTimeout => "requestTimeout",
        /// 415: the Content-Type was not application/json.
        UnsupportedMediaType => "unsupportedMediaType",
        /// 500: an internal error at BankID.
        InternalError => "internalError",
        /// 503: BankID is under maintenance.
        Maintenance => "maintenance",
    }
}

impl ErrorCode {
    /// The recommended user message (RFA number) the RP guidelines give for
    /// this error: RFA4 for `alreadyInProgress`, RFA5 for `requestTimeout`,
    /// `internalError` and `maintenance`.
    pub fn rfa(&self) -> Option<u8> {
        match self {
            Self::AlreadyInProgress => Some(4),
            Self::RequestTimeout | Self::InternalError | Self::Maintenance => Some(5),
            _ => None,
        }
    }

    /// The HTTP status the API answers with this code.
    pub fn http_status(&self) -> Option<u16> {
        Some(match self {
            Self::AlreadyInProgress | Self::InvalidParameters => 400,
            Self::Unauthorized => 401,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::RequestTimeout => 408,
            Self::UnsupportedMediaType => 415,
            Self::InternalError => 500,
            Self::Maintenance => 503,
            Self::Unknown(_) => return None,
        })
    }

    /// The guidelines allow a silent retry (only for `maintenance`).
    pub fn may_retry(&self) -> bool {
        *self == Self::Maintenance
    }
}

/// The body of an error answer: `{"errorCode": …, "details": …}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub error_code: ErrorCode,
    #[serde(default)]
    pub details: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const PNR: &str = "199001011239";

    fn pnr() -> PersonalNumber {
        PersonalNumber::parse(PNR).unwrap()
    }

    #[test]
    fn personal_number_parse() {
        assert_eq!(pnr().as_str(), PNR);
        assert_eq!(pnr().to_string(), PNR);
        assert_eq!(
            PersonalNumber::parse("19900101-1239").unwrap().as_str(),
            PNR
        );
        assert_eq!(
            PersonalNumber::parse(" 200211242383 ").unwrap().as_str(),
            "200211242383"
        );
        // Samordningsnummer: day + 60.
        let coord = (0..10)
            .map(|c| format!("19900161123{c}"))
            .find(|s| PersonalNumber::parse(s).is_ok());
        assert!(coord.is_some());
        assert_eq!(
            PersonalNumber::parse("9001011239"),
            Err(PersonalNumberError::Length(10))
        );
        assert_eq!(
            PersonalNumber::parse("19900101123x"),
            Err(PersonalNumberError::NotDigits)
        );
        assert_eq!(
            PersonalNumber::parse("199013011239"),
            Err(PersonalNumberError::Date { month: 13, day: 1 })
        );
        assert!(matches!(
            PersonalNumber::parse("199001001239"),
            Err(PersonalNumberError::Date { .. })
        ));
        assert_eq!(
            PersonalNumber::parse("199001011238"),
            Err(PersonalNumberError::Checksum)
        );
        assert_eq!(format!("{:?}", pnr()), "PersonalNumber(19900101****)");
        let back: PersonalNumber = serde_json::from_str(&format!("\"{PNR}\"")).unwrap();
        assert_eq!(back, pnr());
        assert!(serde_json::from_str::<PersonalNumber>("\"199001011238\"").is_err());
    }

    #[test]
    fn auth_request_shape() {
        let req = AuthRequest::new("192.0.2.1")
            .with_requirement(Requirement {
                personal_number: Some(PNR.into()),
                pin_code: Some(true),
                mrtd: Some(false),
                card_reader: Some(CardReader::Class2),
                certificate_policies: Some(vec!["1.2.752.78.*".into()]),
                risk: Some(Risk::Moderate),
            })
            .with_user_visible_data("Logga in på Banken")
            .with_user_non_visible_data(b"\x00\x01ref")
            .with_return_url("https://rp.example/return#nonce=abc")
            .with_return_risk(true)
            .with_web(WebData {
                referring_domain: Some("rp.example".into()),
                user_agent: Some("Mozilla/5.0".into()),
                device_identifier: Some("f1e2d3".into()),
            });
        req.validate().unwrap();
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(
            v,
            json!({
                "endUserIp": "192.0.2.1",
                "requirement": {
                    "personalNumber": PNR,
                    "pinCode": true,
                    "mrtd": false,
                    "cardReader": "class2",
                    "certificatePolicies": ["1.2.752.78.*"],
                    "risk": "moderate"
                },
                "userVisibleData": BASE64.encode("Logga in på Banken"),
                "userNonVisibleData": BASE64.encode(b"\x00\x01ref"),
                "returnUrl": "https://rp.example/return#nonce=abc",
                "returnRisk": true,
                "web": {
                    "referringDomain": "rp.example",
                    "userAgent": "Mozilla/5.0",
                    "deviceIdentifier": "f1e2d3"
                }
            })
        );
        let back: AuthRequest = serde_json::from_value(v).unwrap();
        assert_eq!(back, req);
        // Minimal auth: only endUserIp.
        assert_eq!(
            serde_json::to_value(AuthRequest::new("::1")).unwrap(),
            json!({"endUserIp": "::1"})
        );
    }

    #[test]
    fn risk_is_lowercase_out_and_any_case_in() {
        assert_eq!(serde_json::to_value(Risk::Low).unwrap(), json!("low"));
        assert_eq!(
            serde_json::from_value::<Risk>(json!("LOW")).unwrap(),
            Risk::Low
        );
        assert_eq!(
            serde_json::from_value::<Risk>(json!("Moderate")).unwrap(),
            Risk::Moderate
        );
        assert!(serde_json::from_value::<Risk>(json!("high")).is_err());
        // Other closed enums are exact.
        assert!(serde_json::from_value::<CardReader>(json!("CLASS1")).is_err());
        assert_eq!(
            serde_json::to_value(CallInitiator::Rp).unwrap(),
            json!("RP")
        );
        assert_eq!(
            serde_json::to_value(CallInitiator::User).unwrap(),
            json!("user")
        );
    }

    #[test]
    fn app_data_uses_device_os_in_capitals() {
        let req = SignRequest::new("192.0.2.1", "Jag godkänner").with_app(AppData {
            app_identifier: Some("com.example.rp".into()),
            device_os: Some("iOS 17".into()),
            device_identifier: Some("abc".into()),
            device_model_name: Some("iPhone15,2".into()),
        });
        req.validate().unwrap();
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(
            v["app"],
            json!({"appIdentifier": "com.example.rp", "deviceOS": "iOS 17",
                   "deviceIdentifier": "abc", "deviceModelName": "iPhone15,2"})
        );
        assert_eq!(v["userVisibleData"], json!(BASE64.encode("Jag godkänner")));
        assert!(v.get("web").is_none());
    }

    #[test]
    fn markdown_sets_the_format() {
        let v = serde_json::to_value(SignRequest::new("192.0.2.1", "x").with_markdown("# Avtal"))
            .unwrap();
        assert_eq!(v["userVisibleDataFormat"], json!("simpleMarkdownV1"));
        assert_eq!(v["userVisibleData"], json!(BASE64.encode("# Avtal")));
    }

    #[test]
    fn phone_request_shapes() {
        let auth = PhoneAuthRequest::new(&pnr(), CallInitiator::User);
        auth.validate().unwrap();
        assert_eq!(
            serde_json::to_value(&auth).unwrap(),
            json!({"personalNumber": PNR, "callInitiator": "user"})
        );
        let sign = PhoneSignRequest::new(&pnr(), CallInitiator::Rp, "Godkänn").with_requirement(
            PhoneRequirement {
                pin_code: Some(true),
                card_reader: None,
                certificate_policies: None,
            },
        );
        sign.validate().unwrap();
        let v = serde_json::to_value(&sign).unwrap();
        assert_eq!(
            v,
            json!({"personalNumber": PNR, "callInitiator": "RP",
                   "requirement": {"pinCode": true},
                   "userVisibleData": BASE64.encode("Godkänn")})
        );
        assert!(v.get("endUserIp").is_none());
        let back: PhoneSignRequest = serde_json::from_value(v).unwrap();
        assert_eq!(back, sign);
        assert!(
            serde_json::from_value::<PhoneAuthRequest>(
                json!({"personalNumber": PNR, "callInitiator": "someone"})
            )
            .is_err()
        );
        // Debug hides the number.
        let printed = format!("{auth:?} {sign:?}");
        assert!(!printed.contains(PNR), "{printed}");
        assert!(printed.contains("19900101****"));
    }

    #[test]
    fn payment_request_shape() {
        let req = PaymentRequest::new(
            "192.0.2.1",
            UserVisibleTransaction {
                risk_warning: Some("Ny mottagare".into()),
                ..UserVisibleTransaction::card(
                    "Kaffebaren",
                    TransactionMoney::from_minor(100000, "SEK"),
                )
            },
        )
        .with_risk_flags([RiskFlag::NewRecipient, RiskFlag::LargeAmount]);
        req.validate().unwrap();
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(
            v,
            json!({
                "endUserIp": "192.0.2.1",
                "userVisibleTransaction": {
                    "transactionType": "card",
                    "recipient": {"name": "Kaffebaren"},
                    "money": {"amount": "1000,00", "currency": "SEK"},
                    "riskWarning": "Ny mottagare"
                },
                "riskFlags": ["newRecipient", "largeAmount"]
            })
        );
        assert_eq!(serde_json::from_value::<PaymentRequest>(v).unwrap(), req);
        assert_eq!(TransactionMoney::from_minor(5, "EUR").amount, "0,05");
    }

    fn err_field(r: Result<(), ValidationError>) -> &'static str {
        r.expect_err("should be refused").field
    }

    #[test]
    fn validation_refuses_what_the_api_would() {
        // endUserIp
        assert_eq!(err_field(AuthRequest::new("").validate()), "endUserIp");
        assert_eq!(
            err_field(AuthRequest::new("300.1.1.1").validate()),
            "endUserIp"
        );
        assert_eq!(
            err_field(AuthRequest::new("localhost").validate()),
            "endUserIp"
        );
        AuthRequest::new("2001:db8::1").validate().unwrap();
        // personal number
        for bad in [
            "19900101-1239",
            "199001011238",
            "9001011239",
            "1990010112390",
        ] {
            let req = AuthRequest::new("192.0.2.1").with_requirement(Requirement {
                personal_number: Some(bad.into()),
                ..Requirement::default()
            });
            assert_eq!(
                err_field(req.validate()),
                "requirement.personalNumber",
                "{bad}"
            );
        }
        AuthRequest::new("192.0.2.1")
            .with_personal_number(&pnr())
            .validate()
            .unwrap();
        // sign without userVisibleData
        let mut sign = SignRequest::new("192.0.2.1", "text");
        sign.user_visible_data = None;
        assert_eq!(err_field(sign.validate()), "userVisibleData");
        sign.user_visible_data = Some(Base64Text::from_base64(""));
        assert_eq!(err_field(sign.validate()), "userVisibleData");
        sign.user_visible_data = Some(Base64Text::from_base64("not base64!"));
        assert_eq!(err_field(sign.validate()), "userVisibleData");
        // size limits, counted after base64
        let at_limit = "a".repeat(USER_VISIBLE_DATA_MAX / 4 * 3); // encodes to exactly 40,000
        SignRequest::new("192.0.2.1", &at_limit).validate().unwrap();
        let over = "a".repeat(USER_VISIBLE_DATA_MAX / 4 * 3 + 1);
        assert_eq!(
            err_field(SignRequest::new("192.0.2.1", &over).validate()),
            "userVisibleData"
        );
        let nv_ok = vec![7u8; USER_NON_VISIBLE_DATA_MAX / 4 * 3];
        AuthRequest::new("192.0.2.1")
            .with_user_non_visible_data(&nv_ok)
            .validate()
            .unwrap();
        let nv_over = vec![7u8; USER_NON_VISIBLE_DATA_MAX / 4 * 3 + 1];
        assert_eq!(
            err_field(
                AuthRequest::new("192.0.2.1")
                    .with_user_non_visible_data(&nv_over)
                    .validate()
            ),
            "userNonVisibleData"
        );
        // returnUrl 1–512
        assert_eq!(
            err_field(AuthRequest::new("192.0.2.1").with_return_url("").validate()),
            "returnUrl"
        );
        let long = format!("https://rp.example/{}", "x".repeat(RETURN_URL_MAX));
        assert_eq!(
            err_field(
                AuthRequest::new("192.0.2.1")
                    .with_return_url(long)
                    .validate()
            ),
            "returnUrl"
        );
        assert_eq!(
            err_field(
                AuthRequest::new("192.0.2.1")
                    .with_return_url("/relative")
                    .validate()
            ),
            "returnUrl"
        );
        AuthRequest::new("192.0.2.1")
            .with_return_url("myapp://done?n=1")
            .validate()
            .unwrap();
        // web + app together
        let mut both = AuthRequest::new("192.0.2.1").with_web(WebData {
            user_agent: Some("ua".into()),
            ..WebData::default()
        });
        both.app = Some(AppData {
            app_identifier: Some("a.b".into()),
            ..AppData::default()
        });
        assert_eq!(err_field(both.validate()), "web/app");
        // empty web, bad domain, long device id
        assert_eq!(
            err_field(
                AuthRequest::new("192.0.2.1")
                    .with_web(WebData::default())
                    .validate()
            ),
            "web"
        );
        let bad_domain = WebData {
            referring_domain: Some("Rp.Example".into()),
            ..WebData::default()
        };
        assert_eq!(err_field(bad_domain.validate()), "web.referringDomain");
        let long_id = WebData {
            device_identifier: Some("x".repeat(65)),
            ..WebData::default()
        };
        assert_eq!(err_field(long_id.validate()), "web.deviceIdentifier");
        assert_eq!(err_field(AppData::default().validate()), "app");
        // certificate policies
        for bad in ["", "1", "1.2.*", "1.2.752.*", "1.2.752.78.*.*", "1.2.x.4"] {
            let r = Requirement {
                certificate_policies: Some(vec![bad.into()]),
                ..Requirement::default()
            };
            assert_eq!(
                err_field(r.validate()),
                "requirement.certificatePolicies",
                "{bad:?}"
            );
        }
        let r = Requirement {
            certificate_policies: Some(vec![]),
            ..Requirement::default()
        };
        assert_eq!(err_field(r.validate()), "requirement.certificatePolicies");
        // phone
        let mut phone = PhoneAuthRequest::new(&pnr(), CallInitiator::User);
        phone.personal_number.clear();
        assert_eq!(err_field(phone.validate()), "personalNumber");
        let mut psign = PhoneSignRequest::new(&pnr(), CallInitiator::User, "x");
        psign.user_visible_data = None;
        assert_eq!(err_field(psign.validate()), "userVisibleData");
        // payment
        let npa_with_money = UserVisibleTransaction {
            money: Some(TransactionMoney::from_minor(1, "SEK")),
            ..UserVisibleTransaction::npa("Butiken")
        };
        assert_eq!(
            err_field(PaymentRequest::new("192.0.2.1", npa_with_money).validate()),
            "userVisibleTransaction.money"
        );
        PaymentRequest::new("192.0.2.1", UserVisibleTransaction::npa("Butiken"))
            .validate()
            .unwrap();
        for (amount, currency, field) in [
            ("1000.00", "SEK", "userVisibleTransaction.money.amount"),
            ("1,000,00", "SEK", "userVisibleTransaction.money.amount"),
            ("", "SEK", "userVisibleTransaction.money.amount"),
            ("10,", "SEK", "userVisibleTransaction.money.amount"),
            ("10,00", "sek", "userVisibleTransaction.money.currency"),
        ] {
            let t = UserVisibleTransaction::card(
                "M",
                TransactionMoney {
                    amount: amount.into(),
                    currency: currency.into(),
                },
            );
            assert_eq!(err_field(t.validate()), field, "{amount} {currency}");
        }
        assert_eq!(
            err_field(UserVisibleTransaction::npa(" ").validate()),
            "userVisibleTransaction.recipient.name"
        );
        // A validation error reads well.
        let e = AuthRequest::new("nope").validate().unwrap_err();
        assert_eq!(
            e.to_string(),
            "endUserIp: \"nope\" is not an IPv4 or IPv6 address"
        );
    }

    const SECRET: &str = "d28db9a7-4cde-429e-a983-359be676944c";

    #[test]
    fn order_response_round_trip_and_redaction() {
        let body = json!({
            "orderRef": "131daac9-16c6-4618-beb0-365768f37288",
            "autoStartToken": "7c40b5c9-fa74-49cf-b98c-bfe651f9a7c6",
            "qrStartToken": "67df3917-fa0d-44e5-b327-edcc928297f8",
            "qrStartSecret": SECRET
        });
        let resp: OrderResponse = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(resp.qr_start_secret.expose(), SECRET);
        let printed = format!("{resp:?}");
        assert!(!printed.contains(SECRET), "{printed}");
        assert!(printed.contains("67df3917"));
        assert_eq!(serde_json::to_value(&resp).unwrap(), body);
        assert_eq!(
            resp.qr_code().data_at(0),
            "bankid.67df3917-fa0d-44e5-b327-edcc928297f8.0.dc69358e712458a66a7525beef148ae8526b1c71610eff2c16cdffb4cdac9bf8"
        );
        assert_eq!(
            resp.autostart_url(),
            "bankid:///?autostarttoken=7c40b5c9-fa74-49cf-b98c-bfe651f9a7c6&redirect=null"
        );
        assert_eq!(
            resp.autostart_url_mobile(Some("https://rp.example/r?a=1&b=2")),
            "https://app.bankid.com/?autostarttoken=7c40b5c9-fa74-49cf-b98c-bfe651f9a7c6&redirect=https%3A%2F%2Frp.example%2Fr%3Fa%3D1%26b%3D2"
        );
        // A start response missing a field does not decode.
        assert!(serde_json::from_value::<OrderResponse>(json!({"orderRef": "x"})).is_err());
        let phone: PhoneOrderResponse =
            serde_json::from_value(json!({"orderRef": "131daac9-16c6-4618-beb0-365768f37288"}))
                .unwrap();
        assert_eq!(phone.order_ref, "131daac9-16c6-4618-beb0-365768f37288");
    }

    fn complete_body() -> Value {
        json!({
            "orderRef": "131daac9-16c6-4618-beb0-365768f37288",
            "status": "complete",
            "completionData": {
                "user": {
                    "personalNumber": "190000000000",
                    "name": "Karl Karlsson",
                    "givenName": "Karl",
                    "surname": "Karlsson"
                },
                "device": {"ipAddress": "192.168.0.1", "uhi": "OZvYM9VvyiAmG7NA5jU5zRGcf3Ji"},
                "bankIdIssueDate": "2020-02-01",
                "stepUp": {"mrtd": true},
                "signature": "PD94bWwgdmVyc2lvbj0iMS4wIj8+PFNpZ25hdHVyZS8+",
                "ocspResponse": "MIIHegoBAKCCB3MwggdvBgkrBgEFBQcwAQEEggdgMIIHXDCB",
                "risk": "low"
            }
        })
    }

    #[test]
    fn collect_complete_round_trip() {
        let body = complete_body();
        let resp: CollectResponse = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(resp.status, Status::Complete);
        assert!(resp.hint_code.is_none());
        let data = resp.completion_data.as_ref().unwrap();
        assert_eq!(data.user.given_name, "Karl");
        assert_eq!(
            data.device.uhi.as_deref(),
            Some("OZvYM9VvyiAmG7NA5jU5zRGcf3Ji")
        );
        assert_eq!(data.step_up, Some(StepUp { mrtd: true }));
        assert_eq!(data.risk, Some(RiskLevel::Low));
        assert_eq!(
            data.bank_id_issue_date(),
            chrono::NaiveDate::from_ymd_opt(2020, 2, 1)
        );
        assert_eq!(
            data.signature_xml().unwrap(),
            "<?xml version=\"1.0\"?><Signature/>"
        );
        assert_eq!(serde_json::to_value(&resp).unwrap(), body);
        let printed = format!("{resp:?}");
        assert!(!printed.contains("190000000000"), "{printed}");
        assert!(!printed.contains("PD94bWwg"), "{printed}");
        // Without the optional parts.
        let mut minimal = complete_body();
        let cd = minimal["completionData"].as_object_mut().unwrap();
        cd.remove("stepUp");
        cd.remove("risk");
        cd["device"].as_object_mut().unwrap().remove("uhi");
        let resp: CollectResponse = serde_json::from_value(minimal.clone()).unwrap();
        let data = resp.completion_data.as_ref().unwrap();
        assert!(data.step_up.is_none() && data.risk.is_none() && data.device.uhi.is_none());
        assert_eq!(serde_json::to_value(&resp).unwrap(), minimal);
    }

    #[test]
    fn collect_pending_and_failed() {
        let pending: CollectResponse = serde_json::from_value(json!({
            "orderRef": "a9b791c3-459f-492b-bf61-23027876140b",
            "status": "pending",
            "hintCode": "outstandingTransaction"
        }))
        .unwrap();
        assert!(pending.status.is_pending());
        assert_eq!(pending.hint_code, Some(HintCode::OutstandingTransaction));
        assert!(pending.hint_code.as_ref().unwrap().is_waiting_for_app());
        let failed: CollectResponse = serde_json::from_value(json!({
            "orderRef": "a9b791c3-459f-492b-bf61-23027876140b",
            "status": "failed",
            "hintCode": "userCancel"
        }))
        .unwrap();
        assert!(failed.status.is_failed());
        assert!(failed.hint_code.as_ref().unwrap().is_failed());
        assert_eq!(
            serde_json::to_value(&failed).unwrap(),
            json!({"orderRef": "a9b791c3-459f-492b-bf61-23027876140b", "status": "failed", "hintCode": "userCancel"})
        );
    }

    #[test]
    fn hint_codes_classify_and_unknowns_survive() {
        let pending = [
            "outstandingTransaction",
            "noClient",
            "started",
            "userMrtd",
            "userCallConfirm",
            "userSign",
        ];
        let failed = [
            "expiredTransaction",
            "certificateErr",
            "userCancel",
            "cancelled",
            "startFailed",
            "userDeclinedCall",
            "notSupportedByUserApp",
            "transactionRiskBlocked",
        ];
        for s in pending {
            let h: HintCode = serde_json::from_value(json!(s)).unwrap();
            assert!(
                h.is_pending() && !h.is_failed() && !matches!(h, HintCode::Unknown(_)),
                "{s}"
            );
            assert_eq!(serde_json::to_value(&h).unwrap(), json!(s));
        }
        for s in failed {
            let h: HintCode = serde_json::from_value(json!(s)).unwrap();
            assert!(
                h.is_failed() && !h.is_pending() && !matches!(h, HintCode::Unknown(_)),
                "{s}"
            );
            assert_eq!(serde_json::to_value(&h).unwrap(), json!(s));
        }
        // Every known variant round-trips through its string.
        for h in HintCode::KNOWN {
            assert_eq!(HintCode::parse(h.as_str()), *h);
        }
        let h: HintCode = serde_json::from_value(json!("userTeleported")).unwrap();
        assert_eq!(h, HintCode::Unknown("userTeleported".into()));
        assert!(!h.is_pending() && !h.is_failed());
        assert_eq!(serde_json::to_value(&h).unwrap(), json!("userTeleported"));
        // The bankid-rs spelling is not ours.
        assert_eq!(
            HintCode::parse("userMRTD"),
            HintCode::Unknown("userMRTD".into())
        );
        let s: Status = serde_json::from_value(json!("archived")).unwrap();
        assert_eq!(s, Status::Unknown("archived".into()));
        assert!(!s.is_pending() && !s.is_failed() && !s.is_complete());
        let r: RiskLevel = serde_json::from_value(json!("extreme")).unwrap();
        assert_eq!(r, RiskLevel::Unknown("extreme".into()));
    }

    #[test]
    fn error_bodies() {
        let cases = [
            ("alreadyInProgress", 400, Some(4)),
            ("invalidParameters", 400, None),
            ("unauthorized", 401, None),
            ("notFound", 404, None),
            ("methodNotAllowed", 405, None),
            ("requestTimeout", 408, Some(5)),
            ("unsupportedMediaType", 415, None),
            ("internalError", 500, Some(5)),
            ("maintenance", 503, Some(5)),
        ];
        for (code, status, rfa) in cases {
            let body: ErrorBody =
                serde_json::from_value(json!({"errorCode": code, "details": "d"})).unwrap();
            assert!(!matches!(body.error_code, ErrorCode::Unknown(_)), "{code}");
            assert_eq!(body.error_code.http_status(), Some(status), "{code}");
            assert_eq!(body.error_code.rfa(), rfa, "{code}");
            assert_eq!(
                serde_json::to_value(&body).unwrap(),
                json!({"errorCode": code, "details": "d"})
            );
        }
        let unknown: ErrorBody =
            serde_json::from_value(json!({"errorCode": "tooManyCats"})).unwrap();
        assert_eq!(unknown.error_code, ErrorCode::Unknown("tooManyCats".into()));
        assert_eq!(unknown.details, "");
        assert_eq!(unknown.error_code.http_status(), None);
        assert!(ErrorCode::Maintenance.may_retry() && !ErrorCode::InternalError.may_retry());
    }

    #[test]
    fn debug_of_requirement_hides_the_number() {
        let r = Requirement::personal_number(&pnr());
        let printed = format!("{r:?}");
        assert!(
            !printed.contains(PNR) && printed.contains("19900101****"),
            "{printed}"
        );
    }
}
