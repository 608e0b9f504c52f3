//! A Belgian-style bank's web login and payment pages under `/cardbank`:
//! plain HTML forms that ask for card-reader codes, for the card team's
//! story (a browser extension that reads the page, has a card compute the
//! code and fills it in).
//!
//! **Modelled on what such banks' sites show** (none publishes a spec):
//! - The login asks for the card number, then shows an 8-digit challenge to
//!   enter in the card reader (EMV-CAP mode 1, "LOGIN") and a response field.
//! - A payment shows the numbers to sign (mode 2, "SIGN"): the amount in
//!   cents and the last 8 digits of the beneficiary's account.
//! - Codes are checked against the virtual card's key with
//!   [`bankbridge_cap::verify`]: the card of the `be` NextGenPSD2 bank (the
//!   same bank's website), so one virtual card (`bankbridge card virtual
//!   --profile cap-be --key-seed <xs2a::card_key_seed(seed)>`) serves both.
//! - Every wrong code counts; after [`MAX_WRONG_CODES`] in a row the card is
//!   locked for online banking until the bank unlocks it (the control route
//!   `POST /_sandbox/cardbank/unlock`). A wrong code gets a new challenge.
//!
//! Element ids the extension's site adapter reads: `card-number`,
//! `challenge`, `sign-numbers` (an ordered list), `response`, and the
//! form's submit button `submit`. Control routes under `/_sandbox/cardbank`:
//! `info` (the card's number, PIN, key seed and profile) and `stats`.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bankbridge_cap::emv::CapRequest;
use bankbridge_cap::virtual_card::{CardKey, Profile as CardProfile, VirtualCardConfig};
use rand::Rng;
use serde_json::json;

use crate::SandboxConfig;
use crate::util::{json_response, lock};

/// Where the pages are served.
pub const PREFIX: &str = "/cardbank";
pub const CONTROL_PREFIX: &str = "/_sandbox/cardbank";
/// Wrong codes in a row that lock the card for online banking.
pub const MAX_WRONG_CODES: u32 = 3;
/// How far past the last code's counter a card's code may be.
const ATC_WINDOW: u16 = 20;
const COOKIE: &str = "cardbank_session";

#[derive(Clone, Debug)]
enum Asked {
    Login {
        challenge: String,
    },
    Sign {
        numbers: Vec<String>,
        amount: String,
        to: String,
    },
}

#[derive(Debug, Default)]
struct Desk {
    /// Open questions (a challenge shown) by id.
    asked: HashMap<String, Asked>,
    /// Signed-in sessions (cookie values).
    sessions: std::collections::HashSet<String>,
    last_atc: u16,
    wrong_in_a_row: u32,
    locked: bool,
    logins: u64,
    payments: u64,
    wrong_codes: u64,
}

/// The simulated web bank.
pub struct CardBank {
    card: VirtualCardConfig,
    key_seed: String,
    state: Mutex<Desk>,
}

impl std::fmt::Debug for CardBank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardBank").finish_non_exhaustive()
    }
}

fn random_digits(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

fn random_id() -> String {
    let mut b = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut b);
    hex::encode(b)
}

/// The page around `body`, in the bank's plain style.
fn page(title: &str, body: &str) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        format!(
            "<!doctype html><html lang=en><meta charset=utf-8><title>{title} · Cardbank</title>\
             <style>body{{font-family:sans-serif;max-width:40em;margin:2em auto}}label,input,button{{display:block;margin:.4em 0}}\
             .error{{color:#a00}}#challenge,#sign-numbers{{font-size:1.4em;font-family:monospace}}</style>\
             <h1>Cardbank</h1>{body}</html>"
        ),
    )
        .into_response()
}

fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response()
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// "12.5" or "12,50" as cents (1 to 99,999,999); `None` for anything else.
fn cents_of(amount: &str) -> Option<u64> {
    let a = amount.trim().replace(',', ".");
    let (whole, fraction) = a.split_once('.').unwrap_or((&a, ""));
    let ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || whole.len() > 6 || fraction.len() > 2 || !ok(whole) || !ok(fraction) {
        return None;
    }
    let cents = whole.parse::<u64>().ok()? * 100 + format!("{fraction:0<2}").parse::<u64>().ok()?;
    (cents > 0).then_some(cents)
}

fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

impl CardBank {
    pub fn new(config: &SandboxConfig) -> CardBank {
        let mut card = VirtualCardConfig::new(CardProfile::CapBe, "1234");
        let key_seed = crate::xs2a::card_key_seed(config.seed);
        card.key = CardKey::derive(&key_seed);
        CardBank {
            state: Mutex::new(Desk {
                last_atc: card.atc,
                ..Desk::default()
            }),
            card,
            key_seed,
        }
    }

    /// The card the bank issued (its number, PIN, key and counter).
    pub fn card(&self) -> &VirtualCardConfig {
        &self.card
    }

    pub fn key_seed(&self) -> &str {
        &self.key_seed
    }

    /// (logins, payments, wrong codes, locked)
    pub fn stats(&self) -> (u64, u64, u64, bool) {
        let s = lock(&self.state);
        (s.logins, s.payments, s.wrong_codes, s.locked)
    }

    pub fn unlock(&self) {
        let mut s = lock(&self.state);
        s.locked = false;
        s.wrong_in_a_row = 0;
    }

    fn signed_in(&self, headers: &HeaderMap) -> bool {
        let Some(cookies) = headers.get(header::COOKIE).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let s = lock(&self.state);
        cookies.split(';').any(|c| {
            c.trim()
                .strip_prefix(COOKIE)
                .and_then(|v| v.strip_prefix('='))
                .is_some_and(|v| s.sessions.contains(v))
        })
    }

    /// Check `code` for `request`; counts a wrong one and locks after
    /// [`MAX_WRONG_CODES`]. `Err` says what to show.
    fn check(&self, request: &CapRequest, code: &str) -> Result<(), String> {
        let last = {
            let s = lock(&self.state);
            if s.locked {
                return Err(LOCKED.into());
            }
            s.last_atc
        };
        // Off the lock: checking runs the card's cryptography per counter.
        let found =
            bankbridge_cap::verify::verify_code(&self.card, request, code, last, ATC_WINDOW);
        let mut s = lock(&self.state);
        match found {
            Some(atc) => {
                s.last_atc = s.last_atc.max(atc);
                s.wrong_in_a_row = 0;
                Ok(())
            }
            None => {
                s.wrong_codes += 1;
                s.wrong_in_a_row += 1;
                if s.wrong_in_a_row >= MAX_WRONG_CODES {
                    s.locked = true;
                    return Err(LOCKED.into());
                }
                Err(format!(
                    "The code is wrong. {} attempt(s) left.",
                    MAX_WRONG_CODES - s.wrong_in_a_row
                ))
            }
        }
    }
}

const LOCKED: &str = "Your card is locked for online banking after too many wrong codes. Call the bank to unlock it.";

type Bank = State<Arc<CardBank>>;

pub fn routes(bank: Arc<CardBank>) -> Router {
    let pages = Router::new()
        .route("/", get(login_page))
        .route("/login", get(login_page).post(login_start))
        .route("/login/{id}", get(challenge_page).post(login_answer))
        .route("/account", get(account_page))
        .route("/payment", get(payment_page).post(payment_start))
        .route("/payment/{id}", get(sign_page).post(payment_answer));
    let control = Router::new()
        .route("/info", get(control_info))
        .route("/stats", get(control_stats))
        .route("/unlock", post(control_unlock));
    Router::new()
        .nest(PREFIX, pages)
        .nest(CONTROL_PREFIX, control)
        .with_state(bank)
}

async fn login_page() -> Response {
    page(
        "Log in",
        &format!(
            "<h2>Log in with your card reader</h2><form method=post action={PREFIX}/login>\
             <label for=card-number>Card number</label>\
             <input id=card-number name=card_number inputmode=numeric autocomplete=off required>\
             <button id=submit type=submit>Next</button></form>"
        ),
    )
}

async fn login_start(State(bank): Bank, body: Bytes) -> Response {
    let card_number = digits(form(&body).get("card_number").map_or("", String::as_str));
    if card_number != bank.card.pan {
        return page(
            "Log in",
            &format!(
                "<p class=error role=alert>This card is not known to Cardbank.</p><p><a href={PREFIX}/login>Try again</a></p>"
            ),
        );
    }
    let id = random_id();
    lock(&bank.state).asked.insert(
        id.clone(),
        Asked::Login {
            challenge: random_digits(8),
        },
    );
    see_other(&format!("{PREFIX}/login/{id}"))
}

fn challenge_form(bank: &CardBank, id: &str, challenge: &str, error: Option<&str>) -> Response {
    let error = error
        .map(|e| format!("<p class=error role=alert>{e}</p>"))
        .unwrap_or_default();
    let pan = &bank.card.pan;
    page(
        "Log in",
        &format!(
            "<h2>Log in with your card reader</h2>{error}\
             <p>Card number <span id=card-number>{pan}</span></p>\
             <p>Put your card in the reader, press LOGIN, type your PIN, then this challenge:</p>\
             <p id=challenge>{challenge}</p>\
             <form method=post action={PREFIX}/login/{id}>\
             <label for=response>The code your reader shows</label>\
             <input id=response name=response inputmode=numeric autocomplete=off required>\
             <button id=submit type=submit>Log in</button></form>"
        ),
    )
}

async fn challenge_page(State(bank): Bank, Path(id): Path<String>) -> Response {
    let asked = lock(&bank.state).asked.get(&id).cloned();
    match asked {
        Some(Asked::Login { challenge }) => challenge_form(&bank, &id, &challenge, None),
        _ => see_other(&format!("{PREFIX}/login")),
    }
}

async fn login_answer(State(bank): Bank, Path(id): Path<String>, body: Bytes) -> Response {
    let Some(Asked::Login { challenge }) = lock(&bank.state).asked.get(&id).cloned() else {
        return see_other(&format!("{PREFIX}/login"));
    };
    let code = digits(form(&body).get("response").map_or("", String::as_str));
    let request = CapRequest::Login {
        challenge: Some(challenge),
    };
    match bank.check(&request, &code) {
        Ok(()) => {
            let session = random_id();
            {
                let mut s = lock(&bank.state);
                s.asked.remove(&id);
                s.sessions.insert(session.clone());
                s.logins += 1;
            }
            (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, format!("{PREFIX}/account")),
                    (
                        header::SET_COOKIE,
                        format!("{COOKIE}={session}; Path={PREFIX}; HttpOnly; SameSite=Lax"),
                    ),
                ],
            )
                .into_response()
        }
        Err(e) if e == LOCKED => {
            lock(&bank.state).asked.remove(&id);
            page(
                "Locked",
                &format!("<p class=error role=alert id=locked>{e}</p>"),
            )
        }
        Err(e) => {
            // A new challenge for the next try, as banks do.
            let challenge = random_digits(8);
            lock(&bank.state).asked.insert(
                id.clone(),
                Asked::Login {
                    challenge: challenge.clone(),
                },
            );
            challenge_form(&bank, &id, &challenge, Some(&e))
        }
    }
}

async fn account_page(State(bank): Bank, headers: HeaderMap) -> Response {
    if !bank.signed_in(&headers) {
        return see_other(&format!("{PREFIX}/login"));
    }
    page(
        "Your accounts",
        &format!(
            "<h2 id=welcome>You are logged in</h2><p>Current account BE68 5390 0754 7034</p>\
             <p><a href={PREFIX}/payment>Make a payment</a></p>"
        ),
    )
}

async fn payment_page(State(bank): Bank, headers: HeaderMap) -> Response {
    if !bank.signed_in(&headers) {
        return see_other(&format!("{PREFIX}/login"));
    }
    page(
        "Payment",
        &format!(
            "<h2>New payment</h2><form method=post action={PREFIX}/payment>\
             <label for=to>Beneficiary account (IBAN)</label><input id=to name=to required>\
             <label for=amount>Amount (EUR)</label><input id=amount name=amount inputmode=decimal required>\
             <button id=submit type=submit>Continue</button></form>"
        ),
    )
}

async fn payment_start(State(bank): Bank, headers: HeaderMap, body: Bytes) -> Response {
    if !bank.signed_in(&headers) {
        return see_other(&format!("{PREFIX}/login"));
    }
    let f = form(&body);
    let to: String = f
        .get("to")
        .map(|t| t.chars().filter(char::is_ascii_alphanumeric).collect())
        .unwrap_or_default();
    let cents = f.get("amount").and_then(|a| cents_of(a));
    let account_digits = digits(&to);
    let (Some(cents), true) = (cents, account_digits.len() >= 8) else {
        return page(
            "Payment",
            &format!(
                "<p class=error role=alert>Give an IBAN and an amount in euros.</p><p><a href={PREFIX}/payment>Back</a></p>"
            ),
        );
    };
    let numbers = vec![
        cents.to_string(),
        account_digits[account_digits.len() - 8..].to_owned(),
    ];
    let id = random_id();
    lock(&bank.state).asked.insert(
        id.clone(),
        Asked::Sign {
            numbers,
            amount: format!("{}.{:02}", cents / 100, cents % 100),
            to,
        },
    );
    see_other(&format!("{PREFIX}/payment/{id}"))
}

fn sign_form(
    bank: &CardBank,
    id: &str,
    numbers: &[String],
    amount: &str,
    to: &str,
    error: Option<&str>,
) -> Response {
    let error = error
        .map(|e| format!("<p class=error role=alert>{e}</p>"))
        .unwrap_or_default();
    let items: String = numbers.iter().map(|n| format!("<li>{n}</li>")).collect();
    let pan = &bank.card.pan;
    page(
        "Sign the payment",
        &format!(
            "<h2>Sign the payment of EUR {amount} to {to}</h2>{error}\
             <p>Card number <span id=card-number>{pan}</span></p>\
             <p>Put your card in the reader, press SIGN, type your PIN, then these numbers, each followed by OK:</p>\
             <ol id=sign-numbers>{items}</ol>\
             <form method=post action={PREFIX}/payment/{id}>\
             <label for=response>The code your reader shows</label>\
             <input id=response name=response inputmode=numeric autocomplete=off required>\
             <button id=submit type=submit>Sign</button></form>"
        ),
    )
}

async fn sign_page(State(bank): Bank, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if !bank.signed_in(&headers) {
        return see_other(&format!("{PREFIX}/login"));
    }
    match lock(&bank.state).asked.get(&id).cloned() {
        Some(Asked::Sign {
            numbers,
            amount,
            to,
        }) => sign_form(&bank, &id, &numbers, &amount, &to, None),
        _ => see_other(&format!("{PREFIX}/account")),
    }
}

async fn payment_answer(
    State(bank): Bank,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if !bank.signed_in(&headers) {
        return see_other(&format!("{PREFIX}/login"));
    }
    let Some(Asked::Sign {
        numbers,
        amount,
        to,
    }) = lock(&bank.state).asked.get(&id).cloned()
    else {
        return see_other(&format!("{PREFIX}/account"));
    };
    let code = digits(form(&body).get("response").map_or("", String::as_str));
    let request = CapRequest::Sign {
        numbers: numbers.clone(),
    };
    match bank.check(&request, &code) {
        Ok(()) => {
            {
                let mut s = lock(&bank.state);
                s.asked.remove(&id);
                s.payments += 1;
            }
            page(
                "Payment sent",
                &format!(
                    "<h2 id=paid>Payment sent</h2><p>EUR {amount} to {to}.</p><p><a href={PREFIX}/account>Back to your accounts</a></p>"
                ),
            )
        }
        Err(e) if e == LOCKED => {
            lock(&bank.state).asked.remove(&id);
            page(
                "Locked",
                &format!("<p class=error role=alert id=locked>{e}</p>"),
            )
        }
        // The same numbers: a payment's are fixed by what is paid.
        Err(e) => sign_form(&bank, &id, &numbers, &amount, &to, Some(&e)),
    }
}

async fn control_info(State(bank): Bank) -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "card_number": bank.card.pan,
            "pin": bank.card.pin,
            "profile": "cap-be",
            "key_seed": bank.key_seed,
            "login_url": PREFIX.to_owned() + "/login",
        }),
    )
}

async fn control_stats(State(bank): Bank) -> Response {
    let (logins, payments, wrong, locked) = bank.stats();
    json_response(
        StatusCode::OK,
        &json!({"logins": logins, "payments": payments, "wrong_codes": wrong, "locked": locked}),
    )
}

async fn control_unlock(State(bank): Bank) -> Response {
    bank.unlock();
    json_response(StatusCode::OK, &json!({"locked": false}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_wrong_codes_lock_the_card_and_a_right_one_resets_the_count() {
        let bank = CardBank::new(&SandboxConfig::default());
        let login = CapRequest::Login {
            challenge: Some("12345678".into()),
        };
        let next = bank.card.atc + 1;
        let right = bankbridge_cap::verify::expected_code(&bank.card, &login, next)
            .unwrap()
            .response;
        assert!(
            bank.check(&login, "00000000")
                .unwrap_err()
                .contains("2 attempt")
        );
        assert!(bank.check(&login, &right).is_ok());
        // The same code again is a replay: its counter is spent.
        assert!(bank.check(&login, &right).is_err());
        assert!(bank.check(&login, "1").is_err());
        assert_eq!(bank.check(&login, "2").unwrap_err(), LOCKED);
        assert!(bank.stats().3);
        bank.unlock();
        assert!(!bank.stats().3);
    }
}
