//! What to tell the person in front of the screen, in English and Swedish.
//!
//! BankID's relying-party guidelines number the messages an RP should show
//! for each hint and failure (RFA1, RFA9, …). [`for_hint`] and
//! [`for_error`] map each state to its RFA number and a message with the
//! same meaning, in our own wording: a web app or the CLI shows these
//! instead of raw codes such as `userSign`.
use serde::Serialize;

use crate::types::{ErrorCode, HintCode};

/// One message in both languages, with the guideline's RFA number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct UserMessage {
    pub rfa: u8,
    pub en: &'static str,
    pub sv: &'static str,
}

/// A language for [`UserMessage::text`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    En,
    Sv,
}

impl Lang {
    /// Swedish when the locale (`LC_ALL`, `LC_MESSAGES`, `LANG`) says so.
    pub fn from_env() -> Lang {
        ["LC_ALL", "LC_MESSAGES", "LANG"]
            .iter()
            .filter_map(|v| std::env::var(v).ok())
            .find(|v| !v.is_empty())
            .filter(|v| v.starts_with("sv"))
            .map_or(Lang::En, |_| Lang::Sv)
    }
}

impl UserMessage {
    pub fn text(&self, lang: Lang) -> &'static str {
        match lang {
            Lang::En => self.en,
            Lang::Sv => self.sv,
        }
    }
}

const fn m(rfa: u8, en: &'static str, sv: &'static str) -> UserMessage {
    UserMessage { rfa, en, sv }
}

const OPEN_APP: UserMessage = m(
    1,
    "Open the BankID app (scan the QR code, or it opens by itself on this device).",
    "Öppna BankID-appen (skanna QR-koden, eller så öppnas den av sig själv på den här enheten).",
);
const TRY_AGAIN: UserMessage = m(
    3,
    "The identification was stopped. Please try again.",
    "Legitimeringen avbröts. Försök igen.",
);
const IN_PROGRESS_ELSEWHERE: UserMessage = m(
    4,
    "An identification or signing for you is already under way. Please try again.",
    "En legitimering eller underskrift för dig pågår redan. Försök igen.",
);
const BANKID_TROUBLE: UserMessage = m(
    5,
    "Something went wrong at BankID. Please try again.",
    "Något gick fel hos BankID. Försök igen.",
);
const YOU_CANCELLED: UserMessage = m(6, "You cancelled.", "Du avbröt.");
const NO_ANSWER: UserMessage = m(
    8,
    "The BankID app did not answer in time. Please try again.",
    "BankID-appen svarade inte i tid. Försök igen.",
);
const ENTER_CODE: UserMessage = m(
    9,
    "Enter your security code in the BankID app and confirm.",
    "Skriv in din säkerhetskod i BankID-appen och bekräfta.",
);
const SEARCHING: UserMessage = m(
    15,
    "Looking for a BankID on this device; this can take a moment.",
    "Letar efter ett BankID på enheten. Det kan ta en liten stund.",
);
const BLOCKED: UserMessage = m(
    16,
    "This BankID is blocked or too old. Use another one, or get a new one from your bank.",
    "Det här BankID:t är spärrat eller för gammalt. Använd ett annat, eller skaffa ett nytt hos din bank.",
);
const NOT_STARTED: UserMessage = m(
    17,
    "The BankID app could not be started or found. Install it from your bank if you have none, then try again.",
    "BankID-appen kunde inte startas eller hittas. Installera den via din bank om du inte har den, och försök sedan igen.",
);
const UNDER_WAY: UserMessage = m(
    21,
    "Identification or signing is under way.",
    "Legitimering eller underskrift pågår.",
);
const UNKNOWN_FAILURE: UserMessage = m(
    22,
    "Something went wrong. Please try again.",
    "Något gick fel. Försök igen.",
);
const READ_DOCUMENT: UserMessage = m(
    23,
    "Follow the app's instructions to read your passport or ID card.",
    "Följ anvisningarna i appen för att läsa av ditt pass eller id-kort.",
);
const CONFIRM_CALL: UserMessage = m(
    21,
    "Confirm in the BankID app that you are on a call with us.",
    "Bekräfta i BankID-appen att du pratar i telefon med oss.",
);
const DECLINED_CALL: UserMessage = m(
    3,
    "You said in the app that you are not on a call with us, so nothing was done.",
    "Du angav i appen att du inte pratar i telefon med oss, så inget genomfördes.",
);
const APP_TOO_OLD: UserMessage = m(
    3,
    "Your BankID app is too old for this. Update it and try again.",
    "Din BankID-app är för gammal för det här. Uppdatera den och försök igen.",
);

/// Every message above, so one read back from storage (its number and
/// English text) is found again: see [`find`].
const ALL: [UserMessage; 16] = [
    OPEN_APP,
    TRY_AGAIN,
    IN_PROGRESS_ELSEWHERE,
    BANKID_TROUBLE,
    YOU_CANCELLED,
    NO_ANSWER,
    ENTER_CODE,
    SEARCHING,
    BLOCKED,
    NOT_STARTED,
    UNDER_WAY,
    UNKNOWN_FAILURE,
    READ_DOCUMENT,
    CONFIRM_CALL,
    DECLINED_CALL,
    APP_TOO_OLD,
];

/// The message with guideline number `rfa` and English text `en`, if it
/// is one of ours (a message stored by another process, read back).
pub fn find(rfa: u8, en: &str) -> Option<UserMessage> {
    ALL.iter().copied().find(|m| m.rfa == rfa && m.en == en)
}

/// The message for a pending or failed order's hint.
pub fn for_hint(hint: &HintCode) -> UserMessage {
    use HintCode::*;
    match hint {
        OutstandingTransaction | NoClient => OPEN_APP,
        Started => SEARCHING,
        UserSign => ENTER_CODE,
        UserMrtd => READ_DOCUMENT,
        UserCallConfirm => CONFIRM_CALL,
        Processing | UserStepUp | UserFace => UNDER_WAY,
        ExpiredTransaction => NO_ANSWER,
        CertificateErr => BLOCKED,
        UserCancel => YOU_CANCELLED,
        Cancelled => TRY_AGAIN,
        StartFailed => NOT_STARTED,
        UserDeclinedCall => DECLINED_CALL,
        NotSupportedByUserApp => APP_TOO_OLD,
        TransactionRiskBlocked
        | MrtdVerificationFailed
        | FacialRecognitionFailed
        | NfcNotSupportedByDevice
        | MultipleBankIdsOnDevice
        | StepUpFailed => UNKNOWN_FAILURE,
        // An unknown pending hint: the order goes on (see [`for_failure`]).
        Unknown(_) => UNDER_WAY,
    }
}

/// The message for a failed order's hint (an unknown one: try again).
pub fn for_failure(hint: &HintCode) -> UserMessage {
    match hint {
        HintCode::Unknown(_) => UNKNOWN_FAILURE,
        other => for_hint(other),
    }
}

/// The message for an order the RP (this service) cancelled.
pub fn for_cancelled() -> UserMessage {
    TRY_AGAIN
}

/// The message for an error BankID answered, when the guidelines give one.
pub fn for_error(code: &ErrorCode) -> Option<UserMessage> {
    match code {
        ErrorCode::AlreadyInProgress => Some(IN_PROGRESS_ELSEWHERE),
        ErrorCode::InternalError | ErrorCode::Maintenance | ErrorCode::RequestTimeout => {
            Some(BANKID_TROUBLE)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_is_found_again_by_its_number_and_text() {
        for m in ALL {
            assert_eq!(find(m.rfa, m.en), Some(m));
        }
        // RFA 21 has two texts: each finds its own.
        assert_eq!(find(21, CONFIRM_CALL.en), Some(CONFIRM_CALL));
        assert_eq!(find(21, "not ours"), None);
    }

    #[test]
    fn every_hint_has_a_message_in_both_languages() {
        let hints = [
            "outstandingTransaction",
            "noClient",
            "started",
            "userMrtd",
            "userCallConfirm",
            "userSign",
            "processing",
            "expiredTransaction",
            "certificateErr",
            "userCancel",
            "cancelled",
            "startFailed",
            "userDeclinedCall",
            "notSupportedByUserApp",
            "transactionRiskBlocked",
            "somethingNew",
        ];
        for h in hints {
            let hint = HintCode::parse(h);
            let msg = for_hint(&hint);
            assert!(msg.rfa >= 1 && msg.rfa <= 23, "{h}");
            assert!(!msg.en.is_empty() && !msg.sv.is_empty(), "{h}");
            assert_ne!(msg.en, msg.sv, "{h}");
            assert!(!msg.en.contains(h), "{h}: a raw code in the message");
        }
        assert_eq!(for_hint(&HintCode::parse("userSign")).rfa, 9);
        assert_eq!(for_hint(&HintCode::parse("startFailed")).rfa, 17);
        assert_eq!(
            for_hint(&HintCode::parse("userCancel")).text(Lang::Sv),
            "Du avbröt."
        );
        assert_eq!(for_failure(&HintCode::parse("somethingNew")).rfa, 22);
    }

    #[test]
    fn errors_map_to_their_messages() {
        assert_eq!(for_error(&ErrorCode::AlreadyInProgress).unwrap().rfa, 4);
        assert_eq!(for_error(&ErrorCode::Maintenance).unwrap().rfa, 5);
        assert_eq!(for_error(&ErrorCode::InvalidParameters), None);
    }
}
