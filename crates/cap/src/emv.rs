//! The CAP algorithm: what a pocket CAP reader does with a bank card.
//!
//! 1. Select the payment application: the PSE directory, then a fixed list
//!    of AIDs in order; the first one a CAP reader can use wins.
//! 2. GET PROCESSING OPTIONS (PDOL filled), READ RECORD over the AFL: PAN
//!    and PSN when the application has them (CAP-only applications often do
//!    not), the issuer's bitmap (IPB) and flags (IAF), CDOL1 and CDOL2.
//! 3. Check the card is the one expected ([`CardIdentity::matches`]), read
//!    the PIN try counter, refuse below the policy's minimum, VERIFY the PIN
//!    once. VERIFY is sent exactly once and never followed up or repeated:
//!    an answer other than `9000`, or none, is reported as a PIN that may
//!    have been refused ([`CapError::pin_possibly_refused`]).
//! 4. GENERATE AC twice: an ARQC over CDOL1 (the M1 challenge goes into the
//!    unpredictable number), then an AAC over CDOL2 that closes the
//!    transaction.
//! 5. M2 mixes the sign numbers into the cryptogram; the IPB (or the Belgian
//!    formula) turns it into the code.
//!
//! Everything runs on one [`CardTransport`] session: the caller opens it
//! exclusive and drops it afterwards, which resets the card.
use bankbridge_core::Secret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::apdu::{self, ApduError, Response, sw};
use crate::otp::{self, OtpError};
use crate::tlv::{self, DolEntry, Tag, TlvError};
use crate::transport::{CardTransport, TransportError};

/// Which CAP flavour an application follows; it decides how the terminal
/// data is filled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapMode {
    /// Visa's Dynamic Passcode Authentication.
    Dpa,
    /// MasterCard's "SecureCode Aut" CAP application.
    Cap,
    Bancontact,
    Visa,
    Mastercard,
    Maestro,
}

/// An application a CAP reader looks for, in its order of preference.
struct KnownAid {
    aid: &'static str,
    name: &'static str,
    /// `None`: recognised, but a CAP reader cannot use it.
    mode: Option<CapMode>,
}

const KNOWN_AIDS: &[KnownAid] = &[
    KnownAid {
        aid: "A0000000038002",
        name: "VisaRemAuthen",
        mode: Some(CapMode::Dpa),
    },
    KnownAid {
        aid: "A0000000048002",
        name: "SecureCode Aut",
        mode: Some(CapMode::Cap),
    },
    KnownAid {
        aid: "D056000666111010",
        name: "BANCONTACT",
        mode: Some(CapMode::Bancontact),
    },
    KnownAid {
        aid: "A0000000032010",
        name: "VISA Electron",
        mode: Some(CapMode::Visa),
    },
    KnownAid {
        aid: "A0000000031010",
        name: "VISA credit",
        mode: Some(CapMode::Visa),
    },
    KnownAid {
        aid: "A0000000041010",
        name: "MasterCard",
        mode: Some(CapMode::Mastercard),
    },
    KnownAid {
        aid: "A0000000043060",
        name: "Maestro",
        mode: Some(CapMode::Maestro),
    },
    KnownAid {
        aid: "A0000000032020",
        name: "V PAY",
        mode: None,
    },
    KnownAid {
        aid: "A0000000033010",
        name: "Interlink",
        mode: None,
    },
    KnownAid {
        aid: "A0000000038010",
        name: "Visa Plus",
        mode: None,
    },
    KnownAid {
        aid: "A0000000046000",
        name: "Cirrus",
        mode: None,
    },
    KnownAid {
        aid: "A00000002501",
        name: "American Express",
        mode: None,
    },
    KnownAid {
        aid: "A0000000291010",
        name: "LINK",
        mode: None,
    },
    KnownAid {
        aid: "A0000002771010",
        name: "Interac",
        mode: None,
    },
    KnownAid {
        aid: "A0000000421010",
        name: "CB",
        mode: None,
    },
];

/// The IPB Visa cards without one are read with.
const VISA_DEFAULT_IPB: &str = "0000FFFFFF0000000000000000000020B938";
const PSE: &[u8] = b"1PAY.SYS.DDF01";
/// Most sign numbers a CAP reader accepts, and their longest length.
const MAX_SIGN_NUMBERS: usize = 10;
const MAX_SIGN_DIGITS: usize = 10;

/// What to compute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum CapRequest {
    /// M1 ("identify" / "respond"): a login code, with an optional numeric challenge.
    Login { challenge: Option<String> },
    /// M2 ("sign"): the numbers the bank asks to type, in order.
    Sign { numbers: Vec<String> },
}

impl CapRequest {
    pub fn mode_name(&self) -> &'static str {
        match self {
            CapRequest::Login { .. } => "m1",
            CapRequest::Sign { .. } => "m2",
        }
    }

    /// Refuse what a CAP reader's keypad would not let through.
    pub fn validate(&self) -> Result<(), CapError> {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        match self {
            CapRequest::Login { challenge: None } => Ok(()),
            CapRequest::Login { challenge: Some(c) } => {
                if digits(c) && c.len() <= 16 {
                    Ok(())
                } else {
                    Err(CapError::BadInput(format!(
                        "the challenge must be 1 to 16 decimal digits, got {} character(s)",
                        c.len()
                    )))
                }
            }
            CapRequest::Sign { numbers } => {
                if numbers.is_empty() || numbers.len() > MAX_SIGN_NUMBERS {
                    return Err(CapError::BadInput(format!(
                        "sign (M2) takes 1 to {MAX_SIGN_NUMBERS} numbers, got {}",
                        numbers.len()
                    )));
                }
                match numbers
                    .iter()
                    .position(|n| !digits(n) || n.len() > MAX_SIGN_DIGITS)
                {
                    Some(i) => Err(CapError::BadInput(format!(
                        "sign number {} must be 1 to {MAX_SIGN_DIGITS} decimal digits",
                        i + 1
                    ))),
                    None => Ok(()),
                }
            }
        }
    }
}

/// The PIN rules: the try counter is shared with ATMs and shops, and a card
/// blocks at zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinPolicy {
    /// Refuse to send VERIFY when fewer tries than this are left.
    pub min_tries: u8,
}

impl Default for PinPolicy {
    fn default() -> Self {
        Self { min_tries: 3 }
    }
}

/// Who a card is, as read from it (no PIN needed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardIdentity {
    /// Application identifier, upper-case hex.
    pub aid: String,
    pub application: String,
    pub mode: CapMode,
    /// The last four digits of the card number, when the application's
    /// records carry one (`5A`); CAP-only applications often do not.
    pub pan_last4: Option<String>,
    /// PAN sequence number, two hex digits, when the card has one.
    pub psn: Option<String>,
    /// SHA-256 (hex) over the AID and the static records the application
    /// lists, without the data elements that carry the card number or the
    /// holder's name ([`CARD_NUMBER_TAGS`]): stable for a card, safe to store.
    pub records_digest: String,
    /// PIN tries left, when the card tells.
    pub pin_tries_left: Option<u8>,
}

/// Data elements left out of [`CardIdentity::records_digest`], so that a
/// stored digest says nothing about the card number: PAN, track 1 and 2
/// data (and their discretionary parts), the holder's name.
pub const CARD_NUMBER_TAGS: &[Tag] = &[0x5A, 0x56, 0x57, 0x5F20, 0x9F0B, 0x9F1F, 0x9F20, 0x9F6B];

impl CardIdentity {
    /// Whether this is the card registered as `expected`: everything the
    /// registration recorded must be found again (PAN last 4 and PSN where
    /// the card had them, the records digest where one was stored), and a
    /// card number may neither appear nor vanish. An expectation with no PAN
    /// and no digest matches nothing.
    pub fn matches(&self, expected: &ExpectedCard) -> bool {
        if expected.pan_last4.is_none() && expected.records_digest.is_none() {
            return false;
        }
        self.pan_last4 == expected.pan_last4
            && self.psn == expected.psn
            && expected
                .records_digest
                .as_ref()
                .is_none_or(|d| d.eq_ignore_ascii_case(&self.records_digest))
    }

    /// How an operator tells this card apart: `…1234` (with `/01` for a
    /// PSN), or the first digits of the records digest for a card without
    /// a number.
    pub fn describe(&self) -> String {
        describe_card(
            self.pan_last4.as_deref(),
            self.psn.as_deref(),
            Some(&self.records_digest),
        )
    }
}

/// `…1234/01`, or `records ab12cd34` for a card without a number.
pub fn describe_card(pan_last4: Option<&str>, psn: Option<&str>, digest: Option<&str>) -> String {
    let psn = psn.map(|p| format!("/{p}")).unwrap_or_default();
    match (pan_last4, digest) {
        (Some(last4), _) => format!("…{last4}{psn}"),
        (None, Some(d)) => format!("records {}{psn}", &d[..d.len().min(8)]),
        (None, None) => format!("unknown card{psn}"),
    }
}

/// The card a reader must hold before it may receive a PIN.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedCard {
    pub pan_last4: Option<String>,
    pub psn: Option<String>,
    /// `None` for cards registered before digests were kept: then the PAN
    /// and PSN alone decide, as they did.
    pub records_digest: Option<String>,
}

/// A computed code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapResponse {
    /// The code as a CAP reader prints it.
    pub response: String,
    /// The same, zero-padded to at least 8 digits.
    pub response_padded: String,
    /// The card's application transaction counter for this code.
    pub atc: u16,
    pub card: CardIdentity,
}

#[derive(Debug, thiserror::Error)]
pub enum CapError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("the card answered {step} with status {sw:04X}")]
    Card { step: &'static str, sw: u16 },
    #[error("the card's answer to {step} is malformed: {detail}")]
    Malformed { step: &'static str, detail: String },
    #[error("no application a CAP reader can use is on this card{}", found_list(.found))]
    NoApplication { found: Vec<String> },
    #[error("the card asks for terminal data {0:X} that a CAP reader does not provide")]
    UnsupportedDolTag(Tag),
    #[error("the card has no issuer bitmap (IPB) and is not of a kind with a known default")]
    NoBitmap,
    #[error("the card in the reader is not the registered one (found {found}); no PIN was sent")]
    WrongCard { found: String },
    #[error("the card does not tell its PIN try counter; refusing to risk a PIN without it")]
    TryCounterUnavailable,
    #[error(
        "only {left} PIN tr{} left (the minimum is {min}); no PIN was sent — reset the counter at an ATM or the bank",
        if *.left == 1 { "y" } else { "ies" }
    )]
    TooFewTries { left: u8, min: u8 },
    #[error("the card refused the PIN{}", match .tries_left { Some(n) => format!(" ({n} tr{} left)", if *n == 1 { "y" } else { "ies" }), None => String::new() })]
    WrongPin { tries_left: Option<u8> },
    /// The try counter read before VERIFY was zero: no PIN was sent.
    #[error("the card's PIN is blocked")]
    Blocked,
    /// VERIFY was answered "blocked": the PIN sent may have used the last try.
    #[error("the card answered VERIFY with status {sw:04X}: its PIN is blocked now")]
    VerifyBlocked { sw: u16 },
    #[error(
        "the card answered VERIFY with status {sw:04X}; the PIN may have been refused and was not retried"
    )]
    PinRefused { sw: u16 },
    #[error(
        "the PIN was sent but the card's answer was lost ({cause}); it may have been refused and was not retried"
    )]
    PinOutcomeUnknown { cause: TransportError },
    #[error("the PIN must be 4 to 12 digits")]
    BadPin,
    #[error("{0}")]
    BadInput(String),
    #[error(transparent)]
    Otp(#[from] OtpError),
    /// A card host's failure that has no closer kind here (its own words).
    #[error("the card host reported: {0}")]
    Host(String),
}

impl CapError {
    /// Whether the card may have counted a wrong PIN: VERIFY went out and no
    /// `9000` came back. Such a PIN must not reach the card again until a
    /// person sets it anew.
    pub fn pin_possibly_refused(&self) -> bool {
        matches!(
            self,
            CapError::WrongPin { .. }
                | CapError::VerifyBlocked { .. }
                | CapError::PinRefused { .. }
                | CapError::PinOutcomeUnknown { .. }
        )
    }
}

fn found_list(found: &[String]) -> String {
    if found.is_empty() {
        String::new()
    } else {
        format!(" (found: {})", found.join(", "))
    }
}

impl From<ApduError> for CapError {
    fn from(e: ApduError) -> Self {
        match e {
            ApduError::Transport(t) => CapError::Transport(t),
            other => CapError::Malformed {
                step: "a command",
                detail: other.to_string(),
            },
        }
    }
}

fn malformed(step: &'static str) -> impl Fn(TlvError) -> CapError {
    move |e| CapError::Malformed {
        step,
        detail: e.to_string(),
    }
}

fn expect_ok(step: &'static str, r: Response) -> Result<Response, CapError> {
    if r.is_ok() {
        Ok(r)
    } else {
        Err(CapError::Card { step, sw: r.sw })
    }
}

/// Everything read from the card before the PIN.
struct CardData {
    aid: Vec<u8>,
    application: String,
    mode: CapMode,
    belgian: bool,
    pan: Option<String>,
    psn: Option<u8>,
    /// Running digest of the AID and the records (see [`CardIdentity::records_digest`]).
    digest: Sha256,
    iaf: u8,
    ipb: Option<Vec<u8>>,
    cdol1: Vec<DolEntry>,
    cdol2: Vec<DolEntry>,
}

impl CardData {
    fn identity(&self, pin_tries_left: Option<u8>) -> CardIdentity {
        CardIdentity {
            aid: hex::encode_upper(&self.aid),
            application: self.application.clone(),
            mode: self.mode,
            pan_last4: self
                .pan
                .as_deref()
                .map(|pan| pan[pan.len().saturating_sub(4)..].to_owned()),
            psn: self.psn.map(|p| format!("{p:02X}")),
            records_digest: hex::encode(self.digest.clone().finalize()),
            pin_tries_left,
        }
    }

    /// Whether the Belgian fills (ARC "Z1", TVR with bit 4 of byte 4) apply.
    fn belgian_debit(&self) -> bool {
        self.belgian
            && matches!(
                self.mode,
                CapMode::Maestro | CapMode::Bancontact | CapMode::Visa
            )
    }
}

/// Read the card's identity without a PIN (for registering it).
pub fn identify(card: &mut dyn CardTransport) -> Result<CardIdentity, CapError> {
    let data = read_card(card)?;
    let tries = read_try_counter(card)?;
    Ok(data.identity(tries))
}

/// Compute a code. `expected`, when given, must match the card before any
/// PIN is sent.
pub fn run(
    card: &mut dyn CardTransport,
    request: &CapRequest,
    pin: &Secret<String>,
    expected: Option<&ExpectedCard>,
    policy: PinPolicy,
) -> Result<CapResponse, CapError> {
    request.validate()?;
    let pin_block = pin_block(pin)?;
    let data = read_card(card)?;
    let identity = data.identity(None);
    if let Some(expected) = expected
        && !identity.matches(expected)
    {
        return Err(CapError::WrongCard {
            found: identity.describe(),
        });
    }
    // Fill the terminal data now: a challenge the card cannot take is
    // refused before the PIN goes anywhere.
    let challenge = match request {
        CapRequest::Login { challenge } => challenge.as_deref(),
        CapRequest::Sign { .. } => None,
    };
    let cdol1 = fill_dol(&data.cdol1, &data, challenge)?;
    let cdol2 = fill_dol(&data.cdol2, &data, challenge)?;
    let tries = read_try_counter(card)?.ok_or(CapError::TryCounterUnavailable)?;
    if tries < policy.min_tries {
        return Err(if tries == 0 {
            CapError::Blocked
        } else {
            CapError::TooFewTries {
                left: tries,
                min: policy.min_tries,
            }
        });
    }
    verify_pin(card, pin_block.expose())?;

    let arqc = generate_ac(card, 0x80, &cdol1)?;
    // The AAC only closes the transaction; the code comes from the ARQC.
    match generate_ac(card, 0x00, &cdol2) {
        Ok(_) => {}
        Err(e @ CapError::Transport(_)) => return Err(e),
        Err(e) => tracing::warn!(error = %e, "the card did not close the CAP transaction"),
    }

    let ac = match request {
        CapRequest::Sign { numbers } => otp::mix_sign_data(&arqc.ac, numbers),
        CapRequest::Login { .. } => arqc.ac,
    };
    let value = if data.mode == CapMode::Bancontact && data.belgian {
        u128::from(otp::belgian(&ac, arqc.atc))
    } else if let Some(ipb) = &data.ipb {
        let mut bits = Vec::new();
        if data.iaf & 0x40 != 0 {
            bits.push(data.psn.unwrap_or(0));
        }
        bits.push(arqc.cid);
        bits.extend_from_slice(&arqc.atc.to_be_bytes());
        bits.extend_from_slice(&ac);
        bits.extend_from_slice(&arqc.iad);
        otp::ipb_filter(&bits, ipb)?
    } else {
        u128::from(otp::belgian(&ac, arqc.atc))
    };
    let (response, response_padded) = otp::printed(value);
    Ok(CapResponse {
        response,
        response_padded,
        atc: arqc.atc,
        card: data.identity(Some(tries)),
    })
}

/// Steps 1 and 2: application selection, GPO, records.
fn read_card(card: &mut dyn CardTransport) -> Result<CardData, CapError> {
    let (aid, known, fci) = select_application(card)?;
    let mode = known.mode.ok_or_else(|| CapError::NoApplication {
        found: vec![known.name.to_owned()],
    })?;
    tlv::find_path(&fci, &[0x6F, 0x84])
        .map_err(malformed("SELECT"))?
        .ok_or_else(|| CapError::Malformed {
            step: "SELECT",
            detail: "the FCI has no DF name (84)".into(),
        })?;
    let pdol = tlv::find_path(&fci, &[0x6F, 0xA5, 0x9F38])
        .map_err(malformed("SELECT"))?
        .map(tlv::parse_dol)
        .transpose()
        .map_err(malformed("SELECT"))?
        .unwrap_or_default();
    let fci_iaf =
        tlv::find_path(&fci, &[0x6F, 0xA5, 0xBF0C, 0x9F55]).map_err(malformed("SELECT"))?;
    let nationality =
        tlv::find_path(&fci, &[0x6F, 0xA5, 0xBF0C, 0x5F2C]).map_err(malformed("SELECT"))?;
    let banksys =
        tlv::find_path(&fci, &[0x6F, 0xA5, 0xBF0C, 0xDF07]).map_err(malformed("SELECT"))?;
    let belgian = nationality == Some(&[0x00, 0x56][..])
        && banksys.is_some_and(|id| id.starts_with(b"BKS056"));

    let mut digest = Sha256::new();
    digest.update(b"bankbridge card records v1\0");
    digest.update([aid.len() as u8]);
    digest.update(&aid);
    let mut data = CardData {
        aid,
        application: known.name.to_owned(),
        mode,
        belgian,
        pan: None,
        psn: None,
        digest,
        iaf: fci_iaf.and_then(|v| v.first().copied()).unwrap_or(0),
        ipb: None,
        cdol1: Vec::new(),
        cdol2: Vec::new(),
    };

    // GET PROCESSING OPTIONS.
    let pdol_data = fill_dol(&pdol, &data, None)?;
    let gpo_data = tlv::encode(0x83, &pdol_data);
    let gpo = expect_ok(
        "GET PROCESSING OPTIONS",
        apdu::exchange(card, &apdu::command(0x80, 0xA8, 0, 0, &gpo_data)?)?,
    )?;
    let afl = parse_gpo(&gpo.data)?;

    // READ RECORD over the AFL.
    for entry in afl.chunks_exact(4) {
        let sfi = entry[0] >> 3;
        for record in entry[1]..=entry[2] {
            let r = apdu::exchange(
                card,
                &apdu::command(0x00, 0xB2, record, (sfi << 3) | 4, &[])?,
            )?;
            let r = expect_ok("READ RECORD", r)?;
            let template = tlv::find_path(&r.data, &[0x70])
                .map_err(malformed("READ RECORD"))?
                .ok_or_else(|| CapError::Malformed {
                    step: "READ RECORD",
                    detail: "no record template (70)".into(),
                })?;
            data.digest.update([sfi, record]);
            for obj in tlv::parse(template).map_err(malformed("READ RECORD"))? {
                if !CARD_NUMBER_TAGS.contains(&obj.tag) {
                    data.digest.update(obj.tag.to_be_bytes());
                    data.digest.update((obj.value.len() as u32).to_be_bytes());
                    data.digest.update(obj.value);
                }
                match obj.tag {
                    0x5A => data.pan = Some(bcd_digits(obj.value)),
                    0x5F34 => data.psn = obj.value.first().copied(),
                    0x9F55 => data.iaf = obj.value.first().copied().unwrap_or(0),
                    0x9F56 => data.ipb = Some(obj.value.to_vec()),
                    0x8C => {
                        data.cdol1 = tlv::parse_dol(obj.value).map_err(malformed("READ RECORD"))?
                    }
                    0x8D => {
                        data.cdol2 = tlv::parse_dol(obj.value).map_err(malformed("READ RECORD"))?
                    }
                    _ => {}
                }
            }
        }
    }
    if data.cdol1.is_empty() || data.cdol2.is_empty() {
        return Err(CapError::Malformed {
            step: "READ RECORD",
            detail: "the card lists no CDOL1 (8C) or CDOL2 (8D)".into(),
        });
    }
    if data.ipb.is_none() && !data.belgian {
        if data.mode == CapMode::Visa {
            data.ipb = Some(hex::decode(VISA_DEFAULT_IPB).unwrap_or_default());
        } else {
            return Err(CapError::NoBitmap);
        }
    }
    Ok(data)
}

/// The first usable application: candidates from the PSE directory are
/// considered after the known list, in the same first-usable-wins order.
fn select_application(
    card: &mut dyn CardTransport,
) -> Result<(Vec<u8>, &'static KnownAid, Vec<u8>), CapError> {
    let mut found = Vec::new();
    let pse = apdu::exchange(card, &apdu::command(0x00, 0xA4, 0x04, 0x00, PSE)?)?;
    if pse.is_ok() {
        // The directory only adds names to error messages: a CAP reader
        // selects from its own list.
        for aid in pse_aids(card, &pse.data)? {
            found.push(
                KNOWN_AIDS
                    .iter()
                    .find(|k| hex::decode(k.aid).ok().as_deref() == Some(&aid[..]))
                    .map(|k| k.name.to_owned())
                    .unwrap_or_else(|| hex::encode_upper(&aid)),
            );
        }
    }
    for known in KNOWN_AIDS.iter().filter(|k| k.mode.is_some()) {
        let aid = hex::decode(known.aid).unwrap_or_default();
        let r = apdu::exchange(card, &apdu::command(0x00, 0xA4, 0x04, 0x00, &aid)?)?;
        if r.is_ok() && !r.data.is_empty() {
            return Ok((aid, known, r.data));
        }
    }
    for known in KNOWN_AIDS.iter().filter(|k| k.mode.is_none()) {
        if !found.iter().any(|f| f == known.name) {
            let aid = hex::decode(known.aid).unwrap_or_default();
            let r = apdu::exchange(card, &apdu::command(0x00, 0xA4, 0x04, 0x00, &aid)?)?;
            if r.is_ok() {
                found.push(known.name.to_owned());
            }
        }
    }
    Err(CapError::NoApplication { found })
}

/// AIDs listed in the PSE directory's first record.
fn pse_aids(card: &mut dyn CardTransport, fci: &[u8]) -> Result<Vec<Vec<u8>>, CapError> {
    let Some(sfi) = tlv::find_path(fci, &[0x6F, 0xA5, 0x88])
        .map_err(malformed("SELECT PSE"))?
        .and_then(|v| v.first().copied())
    else {
        return Ok(Vec::new());
    };
    let r = apdu::exchange(card, &apdu::command(0x00, 0xB2, 1, (sfi << 3) | 4, &[])?)?;
    if !r.is_ok() {
        return Ok(Vec::new());
    }
    let mut aids = Vec::new();
    if let Some(template) = tlv::find_path(&r.data, &[0x70]).map_err(malformed("READ RECORD"))? {
        for entry in tlv::parse(template).map_err(malformed("READ RECORD"))? {
            if entry.tag == 0x61
                && let Some(aid) = tlv::find(entry.value, 0x4F).map_err(malformed("READ RECORD"))?
            {
                aids.push(aid.to_vec());
            }
        }
    }
    Ok(aids)
}

/// The AFL from a GPO answer in format 1 (`80 AIP AFL`) or 2 (`77{82 94}`).
fn parse_gpo(data: &[u8]) -> Result<Vec<u8>, CapError> {
    let objects = tlv::parse(data).map_err(malformed("GET PROCESSING OPTIONS"))?;
    let afl = match objects.first() {
        Some(t) if t.tag == 0x80 && t.value.len() >= 2 => t.value[2..].to_vec(),
        Some(t) if t.tag == 0x77 => tlv::find(t.value, 0x94)
            .map_err(malformed("GET PROCESSING OPTIONS"))?
            .map(<[u8]>::to_vec)
            .unwrap_or_default(),
        _ => {
            return Err(CapError::Malformed {
                step: "GET PROCESSING OPTIONS",
                detail: "neither format 1 (80) nor format 2 (77)".into(),
            });
        }
    };
    if afl.len() % 4 != 0 {
        return Err(CapError::Malformed {
            step: "GET PROCESSING OPTIONS",
            detail: format!("the AFL is {} bytes, not a multiple of 4", afl.len()),
        });
    }
    Ok(afl)
}

fn read_try_counter(card: &mut dyn CardTransport) -> Result<Option<u8>, CapError> {
    let r = apdu::exchange(card, &apdu::command(0x80, 0xCA, 0x9F, 0x17, &[])?)?;
    if !r.is_ok() {
        return Ok(None);
    }
    Ok(match tlv::find(&r.data, 0x9F17) {
        Ok(Some(v)) => v.first().copied(),
        // Some cards answer the bare value.
        _ => (r.data.len() == 1).then(|| r.data[0]),
    })
}

/// ISO 9564 format 2 plaintext PIN block: `2L` then the digits, `F` padded to 8 bytes.
/// Whether `pin` has the shape a card accepts: 4 to 12 decimal digits.
pub fn is_valid_pin(pin: &str) -> bool {
    (4..=12).contains(&pin.len()) && pin.bytes().all(|b| b.is_ascii_digit())
}

fn pin_block(pin: &Secret<String>) -> Result<Secret<Vec<u8>>, CapError> {
    if !is_valid_pin(pin.expose()) {
        return Err(CapError::BadPin);
    }
    let digits = pin.expose().as_bytes();
    let mut nibbles = vec![0x2, digits.len() as u8];
    nibbles.extend(digits.iter().map(|d| d - b'0'));
    nibbles.resize(16, 0xF);
    let block: Vec<u8> = nibbles.chunks(2).map(|p| (p[0] << 4) | p[1]).collect();
    nibbles.fill(0);
    Ok(Secret::new(block))
}

/// Send VERIFY once. No follow-up command of any kind goes out after it:
/// an answer other than `9000`, or a lost one, is an error the caller must
/// treat as a possibly refused PIN.
fn verify_pin(card: &mut dyn CardTransport, block: &[u8]) -> Result<(), CapError> {
    let mut cmd = apdu::command(0x00, 0x20, 0x00, 0x80, block)?;
    let r = apdu::transmit_once(card, &cmd);
    cmd.fill(0);
    let r = match r {
        Ok(r) => r,
        Err(ApduError::Transport(cause)) => return Err(CapError::PinOutcomeUnknown { cause }),
        // The card answered something unparseable: it did get the PIN.
        Err(_) => return Err(CapError::PinRefused { sw: 0 }),
    };
    match r.sw {
        sw::OK => Ok(()),
        sw::PIN_BLOCKED | sw::REFERENCE_DATA_INVALIDATED => {
            Err(CapError::VerifyBlocked { sw: r.sw })
        }
        // "Verification failed" without a counter.
        0x6300 => Err(CapError::WrongPin { tries_left: None }),
        s if s & 0xFFF0 == 0x63C0 => {
            let left = (s & 0x0F) as u8;
            if left == 0 {
                Err(CapError::VerifyBlocked { sw: s })
            } else {
                Err(CapError::WrongPin {
                    tries_left: Some(left),
                })
            }
        }
        s => Err(CapError::PinRefused { sw: s }),
    }
}

/// The terminal data a CAP reader puts in a DOL.
fn fill_dol(
    dol: &[DolEntry],
    card: &CardData,
    challenge: Option<&str>,
) -> Result<Vec<u8>, CapError> {
    let mut out = Vec::with_capacity(tlv::dol_data_len(dol));
    let cap_like = matches!(card.mode, CapMode::Cap | CapMode::Dpa);
    for entry in dol {
        let value: Vec<u8> = match entry.tag {
            0x8A => {
                if card.belgian_debit() {
                    b"Z1".to_vec()
                } else {
                    b"Z3".to_vec()
                }
            }
            0x95 => hex_bytes(if card.belgian_debit() {
                "8000000800"
            } else {
                "8000000000"
            }),
            0x9A if card.mode == CapMode::Dpa || (card.mode == CapMode::Visa && !card.belgian) => {
                hex_bytes("010101")
            }
            0x9F33 => hex_bytes("208000"),
            0x9F34 if cap_like => hex_bytes("010002"),
            0x9F35 => vec![
                if cap_like || (card.mode == CapMode::Maestro && !card.belgian) {
                    0x34
                } else {
                    0x37
                },
            ],
            0x9F37 => match challenge {
                Some(c) => bcd_number(c, entry.len).ok_or_else(|| {
                    CapError::BadInput(format!(
                        "this card takes challenges of at most {} digits",
                        entry.len * 2
                    ))
                })?,
                None => Vec::new(),
            },
            0x9A | 0x9F34 | 0x9F02 | 0x9F03 | 0x9F1A | 0x5F2A | 0x9C | 0x9F4C | 0x9F45 | 0x91
            | 0x9F40 | 0x9F15 | 0xDF40 => Vec::new(),
            other => return Err(CapError::UnsupportedDolTag(other)),
        };
        // Zero-fill (or cut) to the length the card asks for.
        let mut field = value;
        field.resize(entry.len, 0);
        out.extend_from_slice(&field);
    }
    Ok(out)
}

fn hex_bytes(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_default()
}

/// Decimal digits as BCD, right-aligned in `len` bytes.
fn bcd_number(digits: &str, len: usize) -> Option<Vec<u8>> {
    if digits.len() > len * 2 {
        return None;
    }
    let padded = format!("{digits:0>width$}", width = len * 2);
    hex::decode(padded).ok()
}

/// A BCD number with `F` padding (a PAN) as its digits.
fn bcd_digits(bytes: &[u8]) -> String {
    hex::encode_upper(bytes).trim_end_matches('F').to_owned()
}

struct Cryptogram {
    cid: u8,
    atc: u16,
    ac: [u8; 8],
    iad: Vec<u8>,
}

fn generate_ac(card: &mut dyn CardTransport, p1: u8, data: &[u8]) -> Result<Cryptogram, CapError> {
    const STEP: &str = "GENERATE AC";
    let r = expect_ok(
        STEP,
        apdu::exchange(card, &apdu::command(0x80, 0xAE, p1, 0x00, data)?)?,
    )?;
    let objects = tlv::parse(&r.data).map_err(malformed(STEP))?;
    let bad = |detail: &str| CapError::Malformed {
        step: STEP,
        detail: detail.to_owned(),
    };
    match objects.first() {
        // Format 1: CID(1) ATC(2) AC(8) IAD(rest).
        Some(t) if t.tag == 0x80 => {
            let v = t.value;
            if v.len() < 11 {
                return Err(bad("format 1 answer shorter than CID, ATC and AC"));
            }
            Ok(Cryptogram {
                cid: v[0],
                atc: u16::from_be_bytes([v[1], v[2]]),
                ac: v[3..11].try_into().map_err(|_| bad("AC"))?,
                iad: v[11..].to_vec(),
            })
        }
        Some(t) if t.tag == 0x77 => {
            let get = |tag: Tag| -> Result<&[u8], CapError> {
                tlv::find(t.value, tag)
                    .map_err(malformed(STEP))?
                    .ok_or_else(|| bad(&format!("format 2 answer without {tag:X}")))
            };
            let cid = get(0x9F27)?;
            let atc = get(0x9F36)?;
            let ac = get(0x9F26)?;
            let iad = get(0x9F10)?;
            Ok(Cryptogram {
                cid: *cid.first().ok_or_else(|| bad("empty CID"))?,
                atc: u16::from_be_bytes(atc.try_into().map_err(|_| bad("ATC is not 2 bytes"))?),
                ac: ac.try_into().map_err(|_| bad("AC is not 8 bytes"))?,
                iad: iad.to_vec(),
            })
        }
        _ => Err(bad("neither format 1 (80) nor format 2 (77)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_blocks() {
        let b = pin_block(&Secret::new("1234".into())).unwrap();
        assert_eq!(hex::encode_upper(b.expose()), "241234FFFFFFFFFF");
        // 10+ digits: the length nibble is hex (EMV-CAP's '2%i' gets this wrong).
        let b = pin_block(&Secret::new("123456789012".into())).unwrap();
        assert_eq!(hex::encode_upper(b.expose()), "2C123456789012FF");
        for bad in ["123", "1234567890123", "12a4", ""] {
            assert!(
                matches!(pin_block(&Secret::new(bad.into())), Err(CapError::BadPin)),
                "{bad}"
            );
        }
    }

    #[test]
    fn challenge_as_bcd() {
        assert_eq!(bcd_number("1234", 4).unwrap(), hex_bytes("00001234"));
        assert_eq!(bcd_number("12345678", 4).unwrap(), hex_bytes("12345678"));
        assert_eq!(bcd_number("123456789", 4), None);
    }

    #[test]
    fn requests_are_validated() {
        let login = |c: &str| CapRequest::Login {
            challenge: Some(c.into()),
        };
        assert!(login("123456").validate().is_ok());
        assert!(login("12a").validate().is_err());
        assert!(login("").validate().is_err());
        let sign = |n: &[&str]| CapRequest::Sign {
            numbers: n.iter().map(|s| s.to_string()).collect(),
        };
        assert!(sign(&["1000", "123456"]).validate().is_ok());
        assert!(sign(&[]).validate().is_err());
        assert!(sign(&["12345678901"]).validate().is_err());
        assert!(sign(&["1"; 11]).validate().is_err());
    }
}
