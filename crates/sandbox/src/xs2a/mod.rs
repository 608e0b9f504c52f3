//! Simulated Berlin Group NextGenPSD2 (1.3.x) banks, account information
//! only: consents, their authorisation sub-resources, accounts, balances and
//! transactions, with the three ways a bank asks for strong customer
//! authentication.
//!
//! | bank | style | SCA |
//! |---|---|---|
//! | `be` | Belgian | embedded: password, then `CHIP_OTP` (an EMV-CAP login code over the bank's challenge, checked against the virtual card's key with `cap::verify`) or `SMS_OTP` |
//! | `se` | Swedish | decoupled: the bank starts a BankID order on the sandbox's BankID simulator and hands out its tokens |
//! | `redirect` | German | redirect: a login page at the bank, then back to `TPP-Redirect-URI` |
//!
//! Each answers under `/xs2a/{bank}/v1/...` and has control routes under
//! `/_sandbox/xs2a/{bank}/...` (truth, clock, fault injection, budget use,
//! the SMS code, the card's key seed).
//!
//! **Observed in the specification** (1.3.12 YAML and its 1.3.4/1.3.9
//! history, see `docs/xs2a.md`): the paths, the consent body and its five
//! required fields, `consentStatus` and `scaStatus` values, the embedded
//! steps (authenticate with `psuData`, select a method, authorise with
//! `scaAuthenticationData`), `challengeData` with `data`, `otpMaxLength`,
//! `otpFormat` and `additionalInformation`, `bookingStatus`,
//! `_links.next` paging, `tppMessages` error bodies and their codes
//! (`FORMAT_ERROR`, `PERIOD_INVALID`, `CONSENT_INVALID`, `CONSENT_EXPIRED`,
//! `CONSENT_UNKNOWN`, `PSU_CREDENTIALS_INVALID`, `ACCESS_EXCEEDED`, …),
//! `PSU-IP-Address` present only when the PSU asks, and `frequencyPerDay`
//! limiting the other calls. Swedish banks put the BankID autostart token
//! in `challengeData.data` and keep returning it while SCA runs.
//!
//! **Our modelling** (the specification leaves it open; chosen so a client
//! written against a real bank works here too):
//! - `frequencyPerDay` is counted per consent, day, endpoint and account,
//!   like adorsys' reference implementation: `/accounts`, and each account's
//!   `/balances` and `/transactions`; the pages after the first of one query
//!   are part of that access and not counted. More than 4 asked is cut to 4;
//!   `validUntil` past 180 days is cut to 180 days (the GET shows both).
//! - Every consent sees its own `resourceId`s: a renewed consent's account
//!   ids differ from the old one's, the IBANs stay.
//! - A card payment is pending for two days under one `transactionId`,
//!   then booked under another.
//! - `CHIP_OTP` challenges are 8 digits in `challengeData.data[0]` (an
//!   EMV-CAP mode 1 login code over them is the answer). The Swedish bank
//!   adds the order's `qrStartToken` and `qrStartSecret` as `data[1]` and
//!   `data[2]`, so a client can draw the animated QR code; a client that
//!   reads only `data[0]` still works.
//! - Faults (`fault_rate`) hit only the account-information GETs; a faulted
//!   call does not count toward the budget.
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use bankbridge_cap::emv::CapRequest;
use bankbridge_cap::virtual_card::{CardKey, Profile as CardProfile, VirtualCardConfig};
use chrono::{DateTime, Days, NaiveDate, Utc};
use chrono_tz::Tz;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::bankid::BankIdSim;
use crate::fault::FaultConfig;
use crate::fibank::AccountTruth;
use crate::fibank::render::money_string;
use crate::util::{lock, read, write};
use crate::{ConfigError, SandboxConfig};

pub mod data;
mod http;

pub use http::routes;

/// Every bank answers under `/xs2a/{bank}`.
pub const PREFIX: &str = "/xs2a";
/// Control routes: `/_sandbox/xs2a/{bank}/...`.
pub const CONTROL_PREFIX: &str = "/_sandbox/xs2a";
/// Counters after the last one the bank saw that a CAP code may use.
const ATC_WINDOW: u16 = 20;
/// Longest a consent may last; a later `validUntil` is cut to this.
pub const MAX_CONSENT_DAYS: u64 = 180;
/// Largest `frequencyPerDay` granted (RTS art. 36(5)).
pub const MAX_FREQUENCY_PER_DAY: u32 = 4;
/// Farthest the clock may be advanced in one call.
pub const MAX_ADVANCE_DAYS: u32 = data::HORIZON_DAYS;

/// How a bank asks for strong customer authentication.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Approach {
    Embedded,
    Decoupled,
    Redirect,
}

impl Approach {
    pub fn as_str(self) -> &'static str {
        match self {
            Approach::Embedded => "EMBEDDED",
            Approach::Decoupled => "DECOUPLED",
            Approach::Redirect => "REDIRECT",
        }
    }
}

/// One simulated bank's fixed traits.
#[derive(Debug)]
pub struct Profile {
    /// In paths: `/xs2a/{name}`.
    pub name: &'static str,
    pub title: &'static str,
    pub country: &'static str,
    pub currency: &'static str,
    bank_code: &'static str,
    pub zone: Tz,
    pub approach: Approach,
    /// `POST /v1/consents` needs `PSU-ID`.
    pub psu_id_required: bool,
    /// Transactions per page.
    pub page_size: usize,
    /// The PSU's login.
    pub psu_id: &'static str,
    psu_password: &'static str,
}

/// The three banks.
pub const PROFILES: [Profile; 3] = [
    Profile {
        name: "be",
        title: "Banque Exemple (Belgian-style, embedded SCA with a card reader)",
        country: "BE",
        currency: "EUR",
        bank_code: "068",
        zone: chrono_tz::Europe::Brussels,
        approach: Approach::Embedded,
        psu_id_required: true,
        page_size: 100,
        psu_id: "psu-be-1",
        psu_password: "bruxelles-2026",
    },
    Profile {
        name: "se",
        title: "Exempelbanken (Swedish-style, decoupled SCA with BankID)",
        country: "SE",
        currency: "SEK",
        bank_code: "5000",
        zone: chrono_tz::Europe::Stockholm,
        approach: Approach::Decoupled,
        psu_id_required: true,
        page_size: 100,
        // A valid Swedish personal number (Luhn), also the BankID user.
        psu_id: "199001012385",
        psu_password: "",
    },
    Profile {
        name: "redirect",
        title: "Beispielbank (German-style, redirect SCA)",
        country: "DE",
        currency: "EUR",
        bank_code: "50010517",
        zone: chrono_tz::Europe::Berlin,
        approach: Approach::Redirect,
        psu_id_required: false,
        page_size: 100,
        psu_id: "max.muster",
        psu_password: "passwort-2026",
    },
];

/// A refusal in NextGenPSD2's shape: `{"tppMessages":[{category, code, text}]}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub text: String,
}

impl Refusal {
    pub fn new(status: u16, code: &'static str, text: impl Into<String>) -> Self {
        Refusal {
            status,
            code,
            text: text.into(),
        }
    }

    pub fn body(&self) -> Value {
        json!({"tppMessages": [{"category": "ERROR", "code": self.code, "text": self.text}]})
    }
}

type Answer = Result<Value, Refusal>;

/// What a consent covers.
#[derive(Clone, Debug, PartialEq)]
enum Scope {
    /// `availableAccounts`: the list only.
    AccountList,
    /// Every account, or the ones named by IBAN.
    Accounts(Option<Vec<String>>),
}

#[derive(Clone, Debug)]
struct Consent {
    status: &'static str,
    valid_until: NaiveDate,
    frequency: u32,
    recurring: bool,
    scope: Scope,
    psu_id: Option<String>,
    last_action: NaiveDate,
    /// This consent's `resourceId` of each account, by account index.
    account_ids: Vec<String>,
    access: Value,
    authorisations: Vec<String>,
    redirect_uri: Option<String>,
    nok_redirect_uri: Option<String>,
}

#[derive(Clone, Debug)]
struct Authorisation {
    consent: String,
    status: &'static str,
    method: Option<&'static str>,
    /// The 8 digits a card reader signs (CHIP_OTP).
    challenge: Option<String>,
    /// The code sent by SMS (SMS_OTP).
    sms_code: Option<String>,
    /// The BankID order and its tokens (decoupled).
    order: Option<(Uuid, Value)>,
    /// The login page's token (redirect).
    redirect_token: Option<String>,
}

/// Budget use of one consent on one day and endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Calls without `PSU-IP-Address` answered.
    pub unattended: u32,
    /// Calls with `PSU-IP-Address` answered (not counted against the budget).
    pub attended: u32,
    /// Calls refused with `ACCESS_EXCEEDED`.
    pub refused: u32,
}

#[derive(Default)]
struct BankState {
    consents: HashMap<String, Consent>,
    authorisations: HashMap<String, Authorisation>,
    /// Login page token → authorisation id.
    redirects: HashMap<String, String>,
    /// (day, consent, endpoint) → use.
    usage: BTreeMap<(NaiveDate, String, String), Usage>,
    /// Consents made so far: each gets its own account ids.
    serial: u64,
    /// The last CAP counter the bank accepted.
    last_atc: u16,
    codes_refused: u32,
}

/// One simulated bank.
pub struct Xs2aBank {
    pub profile: &'static Profile,
    seed: u64,
    /// Generated on first use: most sandboxes talk to few of their banks.
    accounts: data::LazyBooks,
    today: RwLock<NaiveDate>,
    state: Mutex<BankState>,
    fault: RwLock<FaultConfig>,
    bankid: Option<Arc<BankIdSim>>,
    root_url: RwLock<String>,
    card: VirtualCardConfig,
    card_key_seed: String,
}

impl std::fmt::Debug for Xs2aBank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xs2aBank")
            .field("name", &self.profile.name)
            .field("accounts", &self.accounts.len())
            .finish_non_exhaustive()
    }
}

/// The login of a bank's simulated customer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Xs2aCredentials {
    pub bank: String,
    pub psu_id: String,
    pub password: String,
    /// `http://127.0.0.1:PORT/xs2a/{bank}` once served.
    pub base_url: String,
}

/// Every NextGenPSD2 bank of a sandbox.
#[derive(Debug)]
pub struct Xs2aBanks(Vec<Arc<Xs2aBank>>);

impl Xs2aBanks {
    pub fn new(config: &SandboxConfig, bankid: Option<Arc<BankIdSim>>) -> Xs2aBanks {
        Xs2aBanks(
            PROFILES
                .iter()
                .map(|p| Arc::new(Xs2aBank::new(p, config, bankid.clone())))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Xs2aBank>> {
        self.0.iter().find(|b| b.profile.name == name)
    }

    pub fn all(&self) -> &[Arc<Xs2aBank>] {
        &self.0
    }
}

fn new_id() -> String {
    Uuid::new_v4().simple().to_string()
}

impl Xs2aBank {
    fn new(
        profile: &'static Profile,
        config: &SandboxConfig,
        bankid: Option<Arc<BankIdSim>>,
    ) -> Self {
        let seed = config.seed
            ^ crate::fibank::data::mix(
                0x5852,
                profile.name.len() as u64,
                u64::from(profile.bank_code.as_bytes()[0]),
            );
        let accounts = data::LazyBooks::new(data::Params {
            seed,
            country: profile.country,
            currency: profile.currency,
            bank_code: profile.bank_code,
            accounts: config.accounts,
            transactions: config.transactions,
            years: config.years,
            today: config.day_in(profile.zone),
        });
        let mut card = VirtualCardConfig::new(CardProfile::CapBe, "1234");
        let key_seed = card_key_seed(config.seed);
        card.key = CardKey::derive(&key_seed);
        Xs2aBank {
            profile,
            seed,
            accounts,
            today: RwLock::new(config.day_in(profile.zone)),
            state: Mutex::new(BankState {
                last_atc: card.atc,
                ..BankState::default()
            }),
            fault: RwLock::new(config.fault.clone()),
            bankid,
            root_url: RwLock::new(String::new()),
            card,
            card_key_seed: key_seed,
        }
    }

    pub fn today(&self) -> NaiveDate {
        *read(&self.today)
    }

    /// The bank's clock: the sandbox day at the wall-clock time of day.
    pub fn now(&self) -> DateTime<Utc> {
        crate::util::wall_clock_on(self.today(), self.profile.zone, Utc::now())
    }

    /// Move the clock on (at most [`MAX_ADVANCE_DAYS`] past the start).
    pub fn advance(&self, days: u32) -> Result<NaiveDate, String> {
        let mut today = write(&self.today);
        let next = *today + Days::new(u64::from(days));
        let horizon = self.accounts.last_day();
        if horizon.is_some_and(|h| next > h) {
            return Err(format!(
                "the books are written {} days ahead of the start; the clock cannot pass that",
                data::HORIZON_DAYS
            ));
        }
        *today = next;
        Ok(next)
    }

    pub fn fault(&self) -> FaultConfig {
        read(&self.fault).clone()
    }

    pub fn set_fault(&self, fault: FaultConfig) -> Result<(), ConfigError> {
        fault.validate()?;
        *write(&self.fault) = fault;
        Ok(())
    }

    pub(crate) fn set_root_url(&self, root: &str) {
        *write(&self.root_url) = root.trim_end_matches('/').to_owned();
    }

    /// `http://127.0.0.1:PORT/xs2a/{bank}` (empty root before serving).
    pub fn base_url(&self) -> String {
        format!("{}{PREFIX}/{}", read(&self.root_url), self.profile.name)
    }

    pub fn credentials(&self) -> Xs2aCredentials {
        Xs2aCredentials {
            bank: self.profile.name.to_owned(),
            psu_id: self.profile.psu_id.to_owned(),
            password: self.profile.psu_password.to_owned(),
            base_url: self.base_url(),
        }
    }

    /// The card the `be` bank checks `CHIP_OTP` codes against (a virtual
    /// card with this key answers them; its PIN is `1234`).
    pub fn card(&self) -> &VirtualCardConfig {
        &self.card
    }

    /// What `bankbridge card virtual --key-seed` takes to make that card.
    pub fn card_key_seed(&self) -> &str {
        &self.card_key_seed
    }

    /// Booked and pending totals per IBAN at the sandbox day.
    pub fn truth(&self) -> Vec<AccountTruth> {
        let today = self.today();
        self.accounts.get().iter().map(|a| a.truth(today)).collect()
    }

    /// Budget use, by day, consent and endpoint.
    pub fn usage(&self) -> Vec<Value> {
        lock(&self.state)
            .usage
            .iter()
            .map(|((day, consent, endpoint), u)| {
                json!({"day": day.to_string(), "consent": consent, "endpoint": endpoint,
                       "unattended": u.unattended, "attended": u.attended, "refused": u.refused})
            })
            .collect()
    }

    /// The most unattended calls any consent made to one endpoint on one day.
    pub fn max_unattended_per_day(&self) -> u32 {
        lock(&self.state)
            .usage
            .values()
            .map(|u| u.unattended)
            .max()
            .unwrap_or(0)
    }

    /// The SMS code of the newest authorisation that sent one.
    pub fn sms_code(&self) -> Option<String> {
        let state = lock(&self.state);
        state
            .authorisations
            .values()
            .filter(|a| a.status == "scaMethodSelected")
            .find_map(|a| a.sms_code.clone())
    }

    /// CAP codes the bank refused so far.
    pub fn codes_refused(&self) -> u32 {
        lock(&self.state).codes_refused
    }

    /// Consents by id with their status and validity.
    pub fn consents(&self) -> Vec<Value> {
        let today = self.today();
        let mut state = lock(&self.state);
        state
            .consents
            .iter_mut()
            .map(|(id, c)| {
                expire(c, today);
                json!({"consentId": id, "consentStatus": c.status, "validUntil": c.valid_until.to_string(),
                       "frequencyPerDay": c.frequency})
            })
            .collect()
    }

    /// The PSU revokes every consent (as in their bank's app).
    pub fn revoke_all(&self) -> usize {
        let mut state = lock(&self.state);
        let mut n = 0;
        for c in state.consents.values_mut() {
            if c.status == "valid" {
                c.status = "revokedByPsu";
                n += 1;
            }
        }
        n
    }

    fn consent_ids(&self, serial: u64) -> Vec<String> {
        (0..self.accounts.len())
            .map(|i| {
                format!(
                    "{:016x}",
                    crate::fibank::data::mix(self.seed, serial, i as u64)
                )
            })
            .collect()
    }

    fn link(&self, path: &str) -> Value {
        json!({"href": format!("{PREFIX}/{}{path}", self.profile.name)})
    }

    // ---- consents ----

    /// `POST /v1/consents`.
    pub fn create_consent(&self, h: &Headers, body: &Value) -> Result<(Value, String), Refusal> {
        let today = self.today();
        h.require_psu_ip()?;
        let psu_id = h.psu_id.clone();
        if self.profile.psu_id_required && psu_id.is_none() {
            return Err(Refusal::new(
                400,
                "FORMAT_ERROR",
                "PSU-ID is required by this bank",
            ));
        }
        if psu_id.as_deref().is_some_and(|p| p != self.profile.psu_id) {
            return Err(Refusal::new(
                401,
                "PSU_CREDENTIALS_INVALID",
                "unknown PSU-ID",
            ));
        }
        let obj = body
            .as_object()
            .ok_or_else(|| format_error("the body must be a JSON object"))?;
        for field in [
            "access",
            "recurringIndicator",
            "validUntil",
            "frequencyPerDay",
            "combinedServiceIndicator",
        ] {
            if !obj.contains_key(field) {
                return Err(format_error(format!("{field} is required")));
            }
        }
        let recurring = obj["recurringIndicator"]
            .as_bool()
            .ok_or_else(|| format_error("recurringIndicator must be a boolean"))?;
        obj["combinedServiceIndicator"]
            .as_bool()
            .ok_or_else(|| format_error("combinedServiceIndicator must be a boolean"))?;
        let valid_until = obj["validUntil"]
            .as_str()
            .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
            .ok_or_else(|| format_error("validUntil must be a date YYYY-MM-DD"))?;
        if valid_until < today {
            return Err(Refusal::new(
                400,
                "PERIOD_INVALID",
                "validUntil is in the past",
            ));
        }
        let valid_until = valid_until.min(today + Days::new(MAX_CONSENT_DAYS));
        let frequency = obj["frequencyPerDay"]
            .as_u64()
            .filter(|f| *f >= 1)
            .ok_or_else(|| format_error("frequencyPerDay must be an integer of at least 1"))?;
        let frequency = if recurring {
            (frequency as u32).min(MAX_FREQUENCY_PER_DAY)
        } else {
            1
        };
        let scope = self.scope(&obj["access"])?;
        if self.profile.approach == Approach::Redirect && h.redirect_uri.is_none() {
            return Err(format_error(
                "TPP-Redirect-URI is required for the redirect approach",
            ));
        }
        let id = new_id();
        let mut state = lock(&self.state);
        state.serial += 1;
        let account_ids = self.consent_ids(state.serial);
        let consent = Consent {
            status: "received",
            valid_until,
            frequency,
            recurring,
            scope,
            psu_id,
            last_action: today,
            account_ids,
            access: obj["access"].clone(),
            authorisations: Vec::new(),
            redirect_uri: h.redirect_uri.clone(),
            nok_redirect_uri: h.nok_redirect_uri.clone(),
        };
        let base = format!("/v1/consents/{id}");
        let mut links = serde_json::Map::new();
        links.insert("self".into(), self.link(&base));
        links.insert("status".into(), self.link(&format!("{base}/status")));
        let mut answer = json!({"consentStatus": "received", "consentId": id});
        match self.profile.approach {
            Approach::Embedded => {
                links.insert(
                    "startAuthorisationWithPsuAuthentication".into(),
                    self.link(&format!("{base}/authorisations")),
                );
            }
            Approach::Decoupled => {
                links.insert(
                    "startAuthorisationWithPsuIdentification".into(),
                    self.link(&format!("{base}/authorisations")),
                );
            }
            Approach::Redirect => {
                // The implicit start: the authorisation exists at once.
                let auth_id = new_id();
                let token = new_id();
                links.insert(
                    "scaRedirect".into(),
                    json!({"href": format!("{}/sca/{token}", self.base_url())}),
                );
                links.insert(
                    "scaStatus".into(),
                    self.link(&format!("{base}/authorisations/{auth_id}")),
                );
                state.redirects.insert(token.clone(), auth_id.clone());
                state.authorisations.insert(
                    auth_id.clone(),
                    Authorisation {
                        consent: id.clone(),
                        status: "received",
                        method: None,
                        challenge: None,
                        sms_code: None,
                        order: None,
                        redirect_token: Some(token),
                    },
                );
                answer["scaStatus"] = json!("received");
                let mut c = consent.clone();
                c.authorisations.push(auth_id);
                state.consents.insert(id.clone(), c);
                answer["_links"] = Value::Object(links);
                return Ok((answer, id));
            }
        }
        state.consents.insert(id.clone(), consent);
        answer["_links"] = Value::Object(links);
        Ok((answer, id))
    }

    fn scope(&self, access: &Value) -> Result<Scope, Refusal> {
        let obj = access
            .as_object()
            .ok_or_else(|| format_error("access must be an object"))?;
        for key in [
            "availableAccounts",
            "availableAccountsWithBalance",
            "allPsd2",
        ] {
            if let Some(v) = obj.get(key) {
                if !matches!(v.as_str(), Some("allAccounts" | "allAccountsWithOwnerName")) {
                    return Err(format_error(format!("access.{key} must be allAccounts")));
                }
                return Ok(if key == "allPsd2" {
                    Scope::Accounts(None)
                } else {
                    Scope::AccountList
                });
            }
        }
        let ibans_of = |key: &str| -> Result<Option<Vec<String>>, Refusal> {
            match obj.get(key) {
                None => Ok(None),
                Some(Value::Array(refs)) => refs
                    .iter()
                    .map(|r| {
                        r.get("iban")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                            .ok_or_else(|| {
                                format_error("this bank takes account references by iban")
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some),
                Some(_) => Err(format_error(format!("access.{key} must be an array"))),
            }
        };
        let (accounts, balances, transactions) = (
            ibans_of("accounts")?,
            ibans_of("balances")?,
            ibans_of("transactions")?,
        );
        match (balances, transactions, accounts) {
            (Some(b), Some(t), _) if b.is_empty() && t.is_empty() => Ok(Scope::Accounts(None)),
            (Some(b), Some(t), _) => {
                let mut all: Vec<String> = b.into_iter().chain(t).collect();
                all.sort();
                all.dedup();
                if let Some(unknown) = all.iter().find(|i| {
                    !self
                        .accounts
                        .get()
                        .iter()
                        .any(|a| a.iban.as_str() == i.as_str())
                }) {
                    return Err(Refusal::new(
                        400,
                        "FORMAT_ERROR",
                        format!("no account of this PSU has the IBAN {unknown}"),
                    ));
                }
                Ok(Scope::Accounts(Some(all)))
            }
            (None, None, Some(_)) => Ok(Scope::AccountList),
            _ => Err(format_error(
                "access needs balances and transactions (empty arrays for every account), or availableAccounts",
            )),
        }
    }

    /// `GET /v1/consents/{id}`.
    pub fn consent(&self, id: &str) -> Answer {
        let today = self.today();
        let mut state = lock(&self.state);
        let c = state.consents.get_mut(id).ok_or_else(consent_unknown)?;
        expire(c, today);
        Ok(json!({
            "access": c.access,
            "recurringIndicator": c.recurring,
            "validUntil": c.valid_until.to_string(),
            "frequencyPerDay": c.frequency,
            "lastActionDate": c.last_action.to_string(),
            "consentStatus": c.status,
            "_links": {"status": self.link(&format!("/v1/consents/{id}/status"))},
        }))
    }

    /// `GET /v1/consents/{id}/status`.
    pub fn consent_status(&self, id: &str) -> Answer {
        let today = self.today();
        let mut state = lock(&self.state);
        let c = state.consents.get_mut(id).ok_or_else(consent_unknown)?;
        expire(c, today);
        Ok(json!({"consentStatus": c.status}))
    }

    /// `DELETE /v1/consents/{id}`.
    pub fn delete_consent(&self, id: &str) -> Result<(), Refusal> {
        let mut state = lock(&self.state);
        let c = state.consents.get_mut(id).ok_or_else(consent_unknown)?;
        c.status = "terminatedByTpp";
        Ok(())
    }

    // ---- authorisations ----

    /// `POST /v1/consents/{id}/authorisations`.
    pub fn start_authorisation(&self, id: &str, h: &Headers, body: &Value) -> Answer {
        let today = self.today();
        let mut state = lock(&self.state);
        let c = state.consents.get_mut(id).ok_or_else(consent_unknown)?;
        expire(c, today);
        if c.status != "received" {
            return Err(Refusal::new(
                409,
                "STATUS_INVALID",
                format!(
                    "the consent is {}; only a received consent is authorised",
                    c.status
                ),
            ));
        }
        let auth_id = new_id();
        let base = format!("/v1/consents/{id}/authorisations/{auth_id}");
        let mut auth = Authorisation {
            consent: id.to_owned(),
            status: "received",
            method: None,
            challenge: None,
            sms_code: None,
            order: None,
            redirect_token: None,
        };
        let answer = match self.profile.approach {
            Approach::Embedded => {
                self.check_psu(c, h)?;
                let password = body
                    .pointer("/psuData/password")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format_error("psuData.password is required"))?;
                if password != self.profile.psu_password {
                    return Err(Refusal::new(
                        401,
                        "PSU_CREDENTIALS_INVALID",
                        "the PSU-ID or password is wrong",
                    ));
                }
                auth.status = "psuAuthenticated";
                json!({
                    "scaStatus": "psuAuthenticated",
                    "authorisationId": auth_id,
                    "scaMethods": [
                        {"authenticationType": "CHIP_OTP", "authenticationMethodId": "card-reader",
                         "name": "Card reader", "explanation": "A code from your bank card in a card reader"},
                        {"authenticationType": "SMS_OTP", "authenticationMethodId": "sms",
                         "name": "SMS to +32 47x xx xx 12"},
                    ],
                    "_links": {
                        "selectAuthenticationMethod": self.link(&base),
                        "scaStatus": self.link(&base),
                    },
                })
            }
            Approach::Decoupled => {
                self.check_psu(c, h)?;
                let Some(sim) = &self.bankid else {
                    return Err(Refusal::new(
                        503,
                        "SERVICE_BLOCKED",
                        "this sandbox runs no BankID simulator: start it with a BankID section",
                    ));
                };
                let ip = h.psu_ip.clone().unwrap_or_else(|| "127.0.0.1".to_owned());
                let started = sim
                    .start_for_bank(self.profile.psu_id, &ip, self.profile.title)
                    .map_err(|e| Refusal::new(500, "INTERNAL_SERVER_ERROR", e))?;
                let order_ref = started["orderRef"]
                    .as_str()
                    .and_then(|s| s.parse::<Uuid>().ok())
                    .ok_or_else(|| Refusal::new(500, "INTERNAL_SERVER_ERROR", "no orderRef"))?;
                auth.status = "started";
                auth.order = Some((order_ref, started));
                let mut answer = json!({
                    "scaStatus": "started",
                    "authorisationId": auth_id,
                    "psuMessage": "Open the BankID app to approve.",
                    "_links": {"scaStatus": self.link(&base)},
                });
                answer["challengeData"] = bankid_challenge(&auth);
                answer
            }
            Approach::Redirect => {
                let token = new_id();
                auth.redirect_token = Some(token.clone());
                state.redirects.insert(token.clone(), auth_id.clone());
                json!({
                    "scaStatus": "received",
                    "authorisationId": auth_id,
                    "_links": {
                        "scaRedirect": {"href": format!("{}/sca/{token}", self.base_url())},
                        "scaStatus": self.link(&base),
                    },
                })
            }
        };
        let c = state.consents.get_mut(id).ok_or_else(consent_unknown)?;
        c.authorisations.push(auth_id.clone());
        state.authorisations.insert(auth_id, auth);
        Ok(answer)
    }

    fn check_psu(&self, c: &Consent, h: &Headers) -> Result<(), Refusal> {
        let psu = h.psu_id.as_deref().or(c.psu_id.as_deref());
        if psu != Some(self.profile.psu_id) {
            return Err(Refusal::new(
                401,
                "PSU_CREDENTIALS_INVALID",
                "the PSU-ID is missing or unknown",
            ));
        }
        Ok(())
    }

    /// `GET /v1/consents/{id}/authorisations/{auth}`: the decoupled status
    /// follows the BankID order.
    pub fn authorisation(&self, id: &str, auth_id: &str) -> Answer {
        let mut state = lock(&self.state);
        let auth = state
            .authorisations
            .get_mut(auth_id)
            .filter(|a| a.consent == id)
            .ok_or_else(|| Refusal::new(403, "RESOURCE_UNKNOWN", "no such authorisation"))?;
        let mut finalised = false;
        if let (Some((order_ref, _)), Some(sim)) = (&auth.order, &self.bankid)
            && auth.status == "started"
        {
            match sim.order(*order_ref).map(|o| o.status) {
                Some("complete") => {
                    auth.status = "finalised";
                    finalised = true;
                }
                Some("failed" | "cancelled") | None => auth.status = "failed",
                _ => {}
            }
        }
        let mut answer = json!({"scaStatus": auth.status});
        if auth.status == "started" && auth.order.is_some() {
            answer["challengeData"] = bankid_challenge(auth);
            answer["psuMessage"] = json!("Open the BankID app to approve.");
        }
        if finalised {
            let consent = auth.consent.clone();
            if let Some(c) = state.consents.get_mut(&consent) {
                c.status = "valid";
            }
        }
        Ok(answer)
    }

    /// `PUT /v1/consents/{id}/authorisations/{auth}`: select a method, or
    /// authorise with the code.
    pub fn update_authorisation(&self, id: &str, auth_id: &str, body: &Value) -> Answer {
        let mut state = lock(&self.state);
        let last_atc = state.last_atc;
        let auth = state
            .authorisations
            .get_mut(auth_id)
            .filter(|a| a.consent == id)
            .ok_or_else(|| Refusal::new(403, "RESOURCE_UNKNOWN", "no such authorisation"))?;
        let base = format!("/v1/consents/{id}/authorisations/{auth_id}");
        if let Some(method) = body.get("authenticationMethodId") {
            if auth.status != "psuAuthenticated" {
                return Err(status_invalid(auth.status));
            }
            let mut rng = rand::rng();
            let (method, challenge) = match method.as_str() {
                Some("card-reader") => {
                    let challenge = format!("{:08}", rng.random_range(0..100_000_000u32));
                    auth.challenge = Some(challenge.clone());
                    (
                        "card-reader",
                        json!({
                            "data": [challenge],
                            "otpMaxLength": 8,
                            "otpFormat": "integer",
                            "additionalInformation": "Insert your card in the reader, press M1 (identify), enter your PIN and the 8 digits shown, and type the code the reader shows.",
                        }),
                    )
                }
                Some("sms") => {
                    let code = format!("{:06}", rng.random_range(0..1_000_000u32));
                    auth.sms_code = Some(code);
                    (
                        "sms",
                        json!({"otpMaxLength": 6, "otpFormat": "integer",
                               "additionalInformation": "Type the 6-digit code we sent by SMS."}),
                    )
                }
                _ => {
                    return Err(Refusal::new(
                        400,
                        "SCA_METHOD_UNKNOWN",
                        "no such SCA method",
                    ));
                }
            };
            auth.method = Some(method);
            auth.status = "scaMethodSelected";
            let chosen = if method == "sms" {
                json!({"authenticationType": "SMS_OTP", "authenticationMethodId": "sms"})
            } else {
                json!({"authenticationType": "CHIP_OTP", "authenticationMethodId": "card-reader"})
            };
            return Ok(json!({
                "scaStatus": "scaMethodSelected",
                "chosenScaMethod": chosen,
                "challengeData": challenge,
                "_links": {"authoriseTransaction": self.link(&base), "scaStatus": self.link(&base)},
            }));
        }
        if let Some(code) = body.get("scaAuthenticationData") {
            if auth.status != "scaMethodSelected" {
                return Err(status_invalid(auth.status));
            }
            let code = code
                .as_str()
                .ok_or_else(|| format_error("scaAuthenticationData must be a string"))?;
            // The card's counter the code was made at, when it is right.
            let verified: Option<Option<u16>> = match auth.method {
                Some("sms") => (auth.sms_code.as_deref() == Some(code.trim())).then_some(None),
                _ => auth.challenge.as_ref().and_then(|challenge| {
                    bankbridge_cap::verify::verify_code(
                        &self.card,
                        &CapRequest::Login {
                            challenge: Some(challenge.clone()),
                        },
                        code.trim(),
                        last_atc,
                        ATC_WINDOW,
                    )
                    .map(Some)
                }),
            };
            let Some(atc) = verified else {
                auth.status = "failed";
                state.codes_refused += 1;
                return Err(Refusal::new(
                    401,
                    "PSU_CREDENTIALS_INVALID",
                    "the code is wrong; start a new authorisation",
                ));
            };
            auth.status = "finalised";
            if let Some(atc) = atc {
                state.last_atc = atc;
            }
            if let Some(c) = state.consents.get_mut(id) {
                c.status = "valid";
            }
            return Ok(
                json!({"scaStatus": "finalised", "_links": {"scaStatus": self.link(&base)}}),
            );
        }
        Err(format_error(
            "expected authenticationMethodId or scaAuthenticationData",
        ))
    }

    /// The redirect login page's authorisation, if the token is live.
    pub(crate) fn redirect_target(&self, token: &str) -> Option<(String, &'static str)> {
        let state = lock(&self.state);
        let auth_id = state.redirects.get(token)?;
        let auth = state.authorisations.get(auth_id)?;
        Some((auth.consent.clone(), auth.status))
    }

    /// The PSU logs in on the redirect page (or cancels): the authorisation
    /// ends, and the answer is where the browser goes next.
    pub(crate) fn redirect_login(
        &self,
        token: &str,
        login: Option<(&str, &str)>,
    ) -> Result<Option<String>, &'static str> {
        let mut state = lock(&self.state);
        let auth_id = state.redirects.get(token).cloned().ok_or("unknown")?;
        let auth = state.authorisations.get_mut(&auth_id).ok_or("unknown")?;
        if auth.status != "received" {
            return Err("done");
        }
        let ok = match login {
            None => false,
            Some((user, password)) => {
                if user != self.profile.psu_id || password != self.profile.psu_password {
                    return Err("wrong");
                }
                true
            }
        };
        auth.status = if ok { "finalised" } else { "failed" };
        let consent = auth.consent.clone();
        state.redirects.remove(token);
        let c = state.consents.get_mut(&consent).ok_or("unknown")?;
        if ok {
            c.status = "valid";
        } else {
            c.status = "rejected";
        }
        Ok(if ok {
            c.redirect_uri.clone()
        } else {
            c.nok_redirect_uri.clone().or(c.redirect_uri.clone())
        })
    }

    // ---- account information ----

    /// The consent of an AIS call, checked: valid, not expired, covering
    /// `account` (an index) for `what`; the call counted against the budget.
    fn admit(
        &self,
        h: &Headers,
        endpoint: &str,
        account: Option<usize>,
    ) -> Result<Consent, Refusal> {
        let today = self.today();
        let consent_id = h
            .consent_id
            .as_deref()
            .ok_or_else(|| format_error("Consent-ID is required"))?;
        let mut state = lock(&self.state);
        let c = state
            .consents
            .get_mut(consent_id)
            .ok_or_else(|| Refusal::new(401, "CONSENT_UNKNOWN", "the Consent-ID is not known"))?;
        expire(c, today);
        match c.status {
            "valid" => {}
            "expired" => {
                return Err(Refusal::new(
                    401,
                    "CONSENT_EXPIRED",
                    format!("the consent expired after {}", c.valid_until),
                ));
            }
            other => {
                return Err(Refusal::new(
                    401,
                    "CONSENT_INVALID",
                    format!("the consent is {other}"),
                ));
            }
        }
        if let Some(i) = account {
            let covered = match &c.scope {
                Scope::AccountList => false,
                Scope::Accounts(None) => true,
                Scope::Accounts(Some(ibans)) => ibans
                    .iter()
                    .any(|x| x.as_str() == self.accounts.get()[i].iban.as_str()),
            };
            if !covered {
                return Err(Refusal::new(
                    401,
                    "CONSENT_INVALID",
                    format!("the consent does not cover {endpoint} of this account"),
                ));
            }
        }
        c.last_action = today;
        let consent = c.clone();
        if !h.paging {
            let key = match account {
                Some(i) => format!("{endpoint}:{}", self.accounts.get()[i].iban),
                None => endpoint.to_owned(),
            };
            let use_ = state
                .usage
                .entry((today, consent_id.to_owned(), key))
                .or_default();
            if h.psu_ip.is_some() {
                use_.attended += 1;
            } else if use_.unattended >= consent.frequency {
                use_.refused += 1;
                return Err(Refusal::new(
                    429,
                    "ACCESS_EXCEEDED",
                    format!(
                        "the consent's {} unattended accesses of today are used",
                        consent.frequency
                    ),
                ));
            } else {
                use_.unattended += 1;
            }
        }
        Ok(consent)
    }

    fn account_index(&self, consent: &Consent, resource_id: &str) -> Result<usize, Refusal> {
        consent
            .account_ids
            .iter()
            .position(|id| id == resource_id)
            .ok_or_else(|| {
                Refusal::new(404, "RESOURCE_UNKNOWN", "no such account for this consent")
            })
    }

    fn account_json(&self, consent: &Consent, i: usize) -> Value {
        let a = &self.accounts.get()[i];
        let id = &consent.account_ids[i];
        json!({
            "resourceId": id,
            "iban": a.iban.as_str(),
            "currency": a.currency,
            "name": a.name,
            "product": a.product,
            "cashAccountType": "CACC",
            "status": "enabled",
            "ownerName": "Alex Example",
            "_links": {
                "balances": self.link(&format!("/v1/accounts/{id}/balances")),
                "transactions": self.link(&format!("/v1/accounts/{id}/transactions")),
            },
        })
    }

    /// `GET /v1/accounts`.
    pub fn accounts(&self, h: &Headers) -> Answer {
        let consent = self.admit(h, "accounts", None)?;
        let listed: Vec<Value> = (0..self.accounts.len())
            .filter(|&i| match &consent.scope {
                Scope::Accounts(Some(ibans)) => ibans
                    .iter()
                    .any(|x| x.as_str() == self.accounts.get()[i].iban.as_str()),
                _ => true,
            })
            .map(|i| self.account_json(&consent, i))
            .collect();
        Ok(json!({"accounts": listed}))
    }

    /// `GET /v1/accounts/{id}/balances`.
    pub fn balances(&self, h: &Headers, resource_id: &str) -> Answer {
        let consent = self.lookup_consent(h)?;
        let i = self.account_index(&consent, resource_id)?;
        let consent = self.admit(h, "balances", Some(i))?;
        let a = &self.accounts.get()[i];
        let today = self.today();
        let booked = a.balance_at(today);
        let pending: i64 = a.pending(today).map(|r| r.minor).sum();
        Ok(json!({
            "account": {"iban": a.iban.as_str(), "currency": a.currency},
            "balances": [
                {"balanceType": "closingBooked", "balanceAmount": amount(booked, a.currency),
                 "referenceDate": today.to_string()},
                {"balanceType": "expected", "balanceAmount": amount(booked + pending, a.currency),
                 "referenceDate": today.to_string()},
                {"balanceType": "interimAvailable", "balanceAmount": amount(booked + pending, a.currency),
                 "lastChangeDateTime": self.now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)},
            ],
            "_links": {"account": self.link(&format!("/v1/accounts/{}", consent.account_ids[i]))},
        }))
    }

    /// The consent an AIS call names, without counting the call.
    fn lookup_consent(&self, h: &Headers) -> Result<Consent, Refusal> {
        let consent_id = h
            .consent_id
            .as_deref()
            .ok_or_else(|| format_error("Consent-ID is required"))?;
        lock(&self.state)
            .consents
            .get(consent_id)
            .cloned()
            .ok_or_else(|| Refusal::new(401, "CONSENT_UNKNOWN", "the Consent-ID is not known"))
    }

    /// `GET /v1/accounts/{id}/transactions`.
    pub fn transactions(&self, h: &Headers, resource_id: &str, q: &TxQuery) -> Answer {
        let consent = self.lookup_consent(h)?;
        let i = self.account_index(&consent, resource_id)?;
        let today = self.today();
        let status = q
            .booking_status
            .as_deref()
            .ok_or_else(|| format_error("bookingStatus is required"))?;
        let (want_booked, want_pending) = match status {
            "booked" => (true, false),
            "pending" => (false, true),
            "both" => (true, true),
            other => {
                return Err(Refusal::new(
                    400,
                    "PARAMETER_NOT_SUPPORTED",
                    format!("bookingStatus {other} is not supported; use booked, pending or both"),
                ));
            }
        };
        let from = q
            .date_from
            .as_deref()
            .ok_or_else(|| format_error("dateFrom is required"))?;
        let from = NaiveDate::parse_from_str(from, "%Y-%m-%d")
            .map_err(|_| format_error("dateFrom must be YYYY-MM-DD"))?;
        let to = match q.date_to.as_deref() {
            None => today,
            Some(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map_err(|_| format_error("dateTo must be YYYY-MM-DD"))?,
        };
        if from > to {
            return Err(Refusal::new(
                400,
                "PERIOD_INVALID",
                "dateFrom is after dateTo",
            ));
        }
        let page: usize = match q.page.as_deref() {
            None => 0,
            Some(p) => p
                .parse()
                .map_err(|_| format_error("page must be a number"))?,
        };
        let h = Headers {
            paging: page > 0,
            ..h.clone()
        };
        let consent = self.admit(&h, "transactions", Some(i))?;
        let a = &self.accounts.get()[i];
        let to = to.min(today);
        let mut rows: Vec<(bool, &data::Row)> = Vec::new();
        if want_pending {
            rows.extend(
                a.pending(today)
                    .filter(|r| from <= r.value && r.value <= to)
                    .map(|r| (false, r)),
            );
        }
        if want_booked {
            let booked = a.booked(today);
            let start = booked.partition_point(|r| r.booking < from);
            let end = booked.partition_point(|r| r.booking <= to);
            // Newest first, as banks list them.
            rows.extend(booked[start..end].iter().rev().map(|r| (true, r)));
        }
        let size = self.profile.page_size;
        let pages = rows.len().div_ceil(size).max(1);
        if page >= pages {
            return Err(format_error(format!("page {page} is past the last page")));
        }
        let mut booked = Vec::new();
        let mut pending = Vec::new();
        for (is_booked, r) in rows.iter().skip(page * size).take(size) {
            let tx = self.transaction_json(a, r, *is_booked);
            if *is_booked {
                booked.push(tx);
            } else {
                pending.push(tx);
            }
        }
        let id = &consent.account_ids[i];
        let mut links = json!({"account": self.link(&format!("/v1/accounts/{id}"))});
        if page + 1 < pages {
            let mut next = format!(
                "/v1/accounts/{id}/transactions?bookingStatus={status}&dateFrom={from}&dateTo={to}&page={}",
                page + 1
            );
            if let Some(extra) = &q.with_balance {
                next.push_str(&format!("&withBalance={extra}"));
            }
            links["next"] = self.link(&next);
        }
        let mut transactions = json!({"booked": booked, "_links": links});
        if want_pending {
            transactions["pending"] = json!(pending);
        }
        if !want_booked {
            transactions.as_object_mut().map(|o| o.remove("booked"));
        }
        Ok(json!({
            "account": {"iban": a.iban.as_str(), "currency": a.currency},
            "transactions": transactions,
        }))
    }

    fn transaction_json(&self, a: &data::Account, r: &data::Row, booked: bool) -> Value {
        let prefix = if booked { "B" } else { "P" };
        let mut tx = json!({
            "transactionId": format!("{prefix}{}-{:07}", a.index, r.seq),
            "transactionAmount": amount(r.minor, a.currency),
            "valueDate": r.value.to_string(),
            "remittanceInformationUnstructured": r.remittance,
            "bankTransactionCode": r.kind.bank_transaction_code(),
        });
        if booked {
            tx["bookingDate"] = json!(r.booking.to_string());
            tx["entryReference"] = json!(format!("{}{:09}", a.index, r.seq));
        }
        let (name_key, account_key) = if r.minor < 0 {
            ("creditorName", "creditorAccount")
        } else {
            ("debtorName", "debtorAccount")
        };
        tx[name_key] = json!(r.party);
        if let Some(iban) = &r.party_iban {
            tx[account_key] = json!({"iban": iban});
        }
        tx
    }
}

/// A date-bound consent that passed its `validUntil` is expired.
fn expire(c: &mut Consent, today: NaiveDate) {
    if today > c.valid_until && matches!(c.status, "valid" | "received") {
        c.status = "expired";
    }
}

fn bankid_challenge(auth: &Authorisation) -> Value {
    let Some((_, tokens)) = &auth.order else {
        return Value::Null;
    };
    json!({
        "data": [tokens["autoStartToken"], tokens["qrStartToken"], tokens["qrStartSecret"]],
        "additionalInformation": "Open BankID on this device with the autostart token, or scan the QR code with the BankID app.",
    })
}

fn format_error(text: impl Into<String>) -> Refusal {
    Refusal::new(400, "FORMAT_ERROR", text)
}

fn consent_unknown() -> Refusal {
    Refusal::new(403, "CONSENT_UNKNOWN", "no such consent")
}

fn status_invalid(status: &str) -> Refusal {
    Refusal::new(
        409,
        "STATUS_INVALID",
        format!("the authorisation is {status}"),
    )
}

fn amount(minor: i64, currency: &str) -> Value {
    json!({"currency": currency, "amount": money_string(minor)})
}

/// The key seed of the `be` bank's card for a sandbox seed: `bankbridge
/// card virtual --key-seed` with it makes a card the bank accepts.
pub fn card_key_seed(seed: u64) -> String {
    format!("xs2a-be-{seed}")
}

/// The request headers the banks look at.
#[derive(Clone, Debug, Default)]
pub struct Headers {
    pub psu_ip: Option<String>,
    pub psu_id: Option<String>,
    pub consent_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub nok_redirect_uri: Option<String>,
    /// A page after the first of one query (not counted).
    pub paging: bool,
}

impl Headers {
    fn require_psu_ip(&self) -> Result<(), Refusal> {
        if self.psu_ip.is_none() {
            return Err(format_error("PSU-IP-Address is required"));
        }
        Ok(())
    }
}

/// The transaction query parameters.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TxQuery {
    pub booking_status: Option<String>,
    pub date_from: Option<String>,
    pub date_to: Option<String>,
    pub with_balance: Option<String>,
    pub page: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bank(name: &str) -> Arc<Xs2aBank> {
        let config = SandboxConfig {
            accounts: 2,
            transactions: 300,
            years: 1,
            today: NaiveDate::from_ymd_opt(2026, 6, 10),
            ..SandboxConfig::default()
        };
        Xs2aBanks::new(&config, None).get(name).unwrap().clone()
    }

    fn present() -> Headers {
        Headers {
            psu_ip: Some("192.0.2.1".into()),
            psu_id: Some("psu-be-1".into()),
            ..Headers::default()
        }
    }

    fn consent_body(frequency: u32) -> Value {
        json!({"access": {"balances": [], "transactions": []}, "recurringIndicator": true,
               "validUntil": "2026-09-01", "frequencyPerDay": frequency, "combinedServiceIndicator": false})
    }

    /// A valid consent of the `be` bank, authorised by SMS.
    fn valid_consent(b: &Xs2aBank) -> String {
        let (_, id) = b.create_consent(&present(), &consent_body(4)).unwrap();
        let auth = b
            .start_authorisation(
                &id,
                &present(),
                &json!({"psuData": {"password": "bruxelles-2026"}}),
            )
            .unwrap();
        let auth_id = auth["authorisationId"].as_str().unwrap().to_owned();
        b.update_authorisation(&id, &auth_id, &json!({"authenticationMethodId": "sms"}))
            .unwrap();
        let code = b.sms_code().unwrap();
        let done = b
            .update_authorisation(&id, &auth_id, &json!({"scaAuthenticationData": code}))
            .unwrap();
        assert_eq!(done["scaStatus"], "finalised");
        id
    }

    #[test]
    fn a_consent_needs_its_five_fields_and_is_capped() {
        let b = bank("be");
        let mut body = consent_body(10);
        body.as_object_mut()
            .unwrap()
            .remove("combinedServiceIndicator");
        let e = b.create_consent(&present(), &body).unwrap_err();
        assert_eq!((e.status, e.code), (400, "FORMAT_ERROR"));
        let (answer, id) = b.create_consent(&present(), &consent_body(10)).unwrap();
        assert_eq!(answer["consentStatus"], "received");
        assert!(answer["_links"]["startAuthorisationWithPsuAuthentication"]["href"].is_string());
        assert_eq!(b.consent(&id).unwrap()["frequencyPerDay"], 4);
        // Without PSU-IP-Address the consent is refused.
        let absent = Headers {
            psu_ip: None,
            ..present()
        };
        assert_eq!(
            b.create_consent(&absent, &consent_body(1))
                .unwrap_err()
                .code,
            "FORMAT_ERROR"
        );
    }

    #[test]
    fn unattended_calls_stop_at_the_daily_budget_and_attended_ones_do_not() {
        let b = bank("be");
        let id = valid_consent(&b);
        let unattended = Headers {
            consent_id: Some(id.clone()),
            ..Headers::default()
        };
        for _ in 0..4 {
            b.accounts(&unattended).unwrap();
        }
        let e = b.accounts(&unattended).unwrap_err();
        assert_eq!((e.status, e.code), (429, "ACCESS_EXCEEDED"));
        let attended = Headers {
            psu_ip: Some("192.0.2.1".into()),
            ..unattended.clone()
        };
        b.accounts(&attended).unwrap();
        assert_eq!(b.max_unattended_per_day(), 4);
        // A new day, a new budget.
        b.advance(1).unwrap();
        b.accounts(&unattended).unwrap();
    }

    #[test]
    fn a_consent_expires_after_valid_until() {
        let b = bank("be");
        let id = valid_consent(&b);
        let h = Headers {
            consent_id: Some(id.clone()),
            psu_ip: Some("192.0.2.1".into()),
            ..Headers::default()
        };
        b.accounts(&h).unwrap();
        b.advance(60).unwrap();
        b.accounts(&h).unwrap();
        let mut state = lock(&b.state);
        state.consents.get_mut(&id).unwrap().valid_until = b.today() - Days::new(1);
        drop(state);
        let e = b.accounts(&h).unwrap_err();
        assert_eq!((e.status, e.code), (401, "CONSENT_EXPIRED"));
        assert_eq!(b.consent_status(&id).unwrap()["consentStatus"], "expired");
    }

    #[test]
    fn a_wrong_card_code_fails_the_authorisation() {
        let b = bank("be");
        let (_, id) = b.create_consent(&present(), &consent_body(4)).unwrap();
        let auth = b
            .start_authorisation(
                &id,
                &present(),
                &json!({"psuData": {"password": "bruxelles-2026"}}),
            )
            .unwrap();
        let auth_id = auth["authorisationId"].as_str().unwrap().to_owned();
        let chosen = b
            .update_authorisation(
                &id,
                &auth_id,
                &json!({"authenticationMethodId": "card-reader"}),
            )
            .unwrap();
        let challenge = chosen["challengeData"]["data"][0]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(challenge.len(), 8);
        let e = b
            .update_authorisation(&id, &auth_id, &json!({"scaAuthenticationData": "12345678"}))
            .unwrap_err();
        assert_eq!(e.code, "PSU_CREDENTIALS_INVALID");
        assert_eq!(
            b.authorisation(&id, &auth_id).unwrap()["scaStatus"],
            "failed"
        );
        // The right code, from the card the bank knows, on a new authorisation.
        let auth = b
            .start_authorisation(
                &id,
                &present(),
                &json!({"psuData": {"password": "bruxelles-2026"}}),
            )
            .unwrap();
        let auth_id = auth["authorisationId"].as_str().unwrap().to_owned();
        let chosen = b
            .update_authorisation(
                &id,
                &auth_id,
                &json!({"authenticationMethodId": "card-reader"}),
            )
            .unwrap();
        let challenge = chosen["challengeData"]["data"][0]
            .as_str()
            .unwrap()
            .to_owned();
        let code = bankbridge_cap::verify::expected_code(
            b.card(),
            &CapRequest::Login {
                challenge: Some(challenge),
            },
            b.card().atc + 1,
        )
        .unwrap();
        let done = b
            .update_authorisation(
                &id,
                &auth_id,
                &json!({"scaAuthenticationData": code.response}),
            )
            .unwrap();
        assert_eq!(done["scaStatus"], "finalised");
        assert_eq!(b.consent_status(&id).unwrap()["consentStatus"], "valid");
    }

    #[test]
    fn transactions_page_with_next_links_and_pending_rows_book_under_another_id() {
        let b = bank("be");
        let id = valid_consent(&b);
        let h = Headers {
            consent_id: Some(id.clone()),
            psu_ip: Some("192.0.2.1".into()),
            ..Headers::default()
        };
        let accounts = b.accounts(&h).unwrap();
        let rid = accounts["accounts"][0]["resourceId"]
            .as_str()
            .unwrap()
            .to_owned();
        let q = TxQuery {
            booking_status: Some("both".into()),
            date_from: Some("2025-01-01".into()),
            ..TxQuery::default()
        };
        let mut page = b.transactions(&h, &rid, &q).unwrap();
        let mut booked = 0;
        let mut pending_ids = Vec::new();
        loop {
            booked += page["transactions"]["booked"].as_array().unwrap().len();
            for p in page["transactions"]["pending"].as_array().unwrap() {
                pending_ids.push(p["transactionId"].as_str().unwrap().to_owned());
            }
            let Some(next) = page["transactions"]["_links"]["next"]["href"].as_str() else {
                break;
            };
            let n = next.rsplit("page=").next().unwrap().to_owned();
            page = b
                .transactions(
                    &h,
                    &rid,
                    &TxQuery {
                        page: Some(n),
                        ..q.clone()
                    },
                )
                .unwrap();
        }
        let truth = &b.truth()[0];
        assert_eq!(booked as u64, truth.booked_count);
        assert_eq!(pending_ids.len() as u64, truth.pending_count);
        assert!(pending_ids.iter().all(|p| p.starts_with('P')));
        let e = b
            .transactions(
                &h,
                &rid,
                &TxQuery {
                    booking_status: Some("information".into()),
                    ..q.clone()
                },
            )
            .unwrap_err();
        assert_eq!(e.code, "PARAMETER_NOT_SUPPORTED");
    }

    #[test]
    fn every_consent_has_its_own_account_ids() {
        let b = bank("be");
        let h = |id: &str| Headers {
            consent_id: Some(id.to_owned()),
            psu_ip: Some("192.0.2.1".into()),
            ..Headers::default()
        };
        let first = valid_consent(&b);
        let second = valid_consent(&b);
        let a = b.accounts(&h(&first)).unwrap();
        let c = b.accounts(&h(&second)).unwrap();
        assert_ne!(
            a["accounts"][0]["resourceId"],
            c["accounts"][0]["resourceId"]
        );
        assert_eq!(a["accounts"][0]["iban"], c["accounts"][0]["iban"]);
    }
}
