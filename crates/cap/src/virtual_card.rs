//! A configurable EMV CAP card, simulated in-process.
//!
//! [`VirtualCard`] implements [`SmartCard`], so it can sit in a
//! [`crate::transport::VirtualReaders`] slot or be served to a real pcscd
//! through [`crate::vpcd`]. It answers what a CAP host sends — SELECT, GET
//! PROCESSING OPTIONS, READ RECORD, GET DATA 9F17, a plaintext VERIFY and two
//! GENERATE AC — with the rules a real card enforces: a PIN try counter that
//! blocks at zero, no cryptogram without a verified PIN, an application
//! transaction counter (ATC) that only goes up.
//!
//! Five [`Profile`]s cover the host's paths: a Belgian CAP card on T=0 that
//! answers `61xx` / `6Cxx` (so GET RESPONSE and Le retries are exercised), a
//! Bancontact card without an issuer bitmap, a Visa DPA card, a CAP card on
//! T=1 answering in EMV response format 1, and a UK-style CAP-only
//! application whose one record holds no card number.
//!
//! The cryptogram is a retail MAC ([`application_cryptogram`]) under a test
//! key: deterministic, so tests can predict codes, and meaningless to a bank.
//!
//! A [`CardHandle`] watches and steers the card while something else owns it
//! (VERIFY count, PIN tries, ATC, an APDU log with PIN blocks masked, a
//! simulated removal, and [`VerifyFault`]s: a forced answer to VERIFY, or a
//! removal right after the card took a VERIFY).
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};

use des::Des;
use des::cipher::generic_array::GenericArray;
use des::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::tlv;
use crate::transport::{Protocol, SmartCard};

/// Which kind of card to simulate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Profile {
    /// Belgian MasterCard "SecureCode Aut" CAP application (A0000000048002)
    /// on T=0 with an issuer proprietary bitmap; answers `61xx` and `6Cxx`.
    CapBe,
    /// Belgian Bancontact application (D056000666111010) without a bitmap:
    /// the host must use the Belgian formula.
    Bancontact,
    /// Visa "VisaRemAuthen" DPA application (A0000000038002).
    VisaDpa,
    /// A CAP card on T=1 whose OTP data starts with the PSN (IAF 0x40),
    /// answering GET PROCESSING OPTIONS and GENERATE AC in format 1.
    CapT1,
    /// A UK-style MasterCard CAP-only application (A0000000048002) on T=0:
    /// no PDOL, and one record holding only CDOL1, CDOL2, the IPB and the
    /// IAF: no card number (`5A`) and no PSN, so the host must identify the
    /// card by its records. The configured PAN is not on the card.
    CapUk,
}

impl Profile {
    pub const ALL: [Profile; 5] = [
        Profile::CapBe,
        Profile::Bancontact,
        Profile::VisaDpa,
        Profile::CapT1,
        Profile::CapUk,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Profile::CapBe => "cap-be",
            Profile::Bancontact => "bancontact",
            Profile::VisaDpa => "visa-dpa",
            Profile::CapT1 => "cap-t1",
            Profile::CapUk => "cap-uk",
        }
    }

    /// Whether the card's records carry its number (`5A`) and PSN.
    pub fn has_pan(self) -> bool {
        self != Profile::CapUk
    }

    /// The card's answer to reset.
    pub fn atr(self) -> Vec<u8> {
        match self {
            Profile::CapBe | Profile::VisaDpa | Profile::CapUk => h("3B67000000000000009000"),
            // TA1 TB1 TC1, no TD1: T=0.
            Profile::Bancontact => h("3B701100FF"),
            // TD1 = 81 (T=1), TD2 = 31 (T=1, IFSC FE, BWI/CWI 45), then
            // historical bytes and the check byte T=1 requires.
            Profile::CapT1 => h("3B8781 31FE45 8031C073802140 6F"),
        }
    }

    /// The protocol pcscd will pick from [`Profile::atr`].
    pub fn protocol(self) -> Protocol {
        Protocol::from_atr(&self.atr())
    }

    /// The application identifier the card answers SELECT for.
    pub fn aid(self) -> Vec<u8> {
        match self {
            Profile::CapBe | Profile::CapT1 | Profile::CapUk => h("A0000000048002"),
            Profile::Bancontact => h("D056000666111010"),
            Profile::VisaDpa => h("A0000000038002"),
        }
    }

    fn style(self) -> Style {
        match self {
            Profile::CapBe | Profile::CapUk => Style::T0Strict,
            Profile::Bancontact | Profile::VisaDpa => Style::T0Lenient,
            Profile::CapT1 => Style::T1,
        }
    }

    /// A deterministic, Luhn-valid test PAN.
    fn test_pan(self) -> &'static str {
        match self {
            Profile::CapBe => "6703990000000001011",
            Profile::Bancontact => "6703990000000002027",
            Profile::VisaDpa => "4999990000000007",
            Profile::CapT1 => "5299990000000001",
            // Not on the card: the application has no card number.
            Profile::CapUk => "5299990000000019",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = VirtualCardError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| VirtualCardError::UnknownProfile(s.to_owned()))
    }
}

/// A virtual card's configuration is impossible.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VirtualCardError {
    #[error(
        "unknown card profile {0:?}; known profiles: cap-be, bancontact, visa-dpa, cap-t1, cap-uk"
    )]
    UnknownProfile(String),
    #[error("a card PIN is 4 to 12 digits")]
    BadPin,
    #[error("a PAN is 12 to 19 digits, got {0:?}")]
    BadPan(String),
    #[error("a card key is 32 hex digits (a 16-byte 2-key 3DES key)")]
    BadKey,
    #[error("PIN tries: {left} left of at most {max} is impossible (the maximum is 1 to 15)")]
    BadTries { max: u8, left: u8 },
}

/// A 16-byte 2-key triple-DES key (K1 ‖ K2). Never printed; wiped on drop.
#[derive(Clone)]
pub struct CardKey([u8; 16]);

impl CardKey {
    pub fn new(bytes: [u8; 16]) -> Self {
        CardKey(bytes)
    }

    /// 32 hex digits (spaces allowed).
    pub fn from_hex(text: &str) -> Result<Self, VirtualCardError> {
        let clean: Zeroizing<String> =
            Zeroizing::new(text.chars().filter(|c| !c.is_whitespace()).collect());
        let bytes =
            Zeroizing::new(hex::decode(clean.as_str()).map_err(|_| VirtualCardError::BadKey)?);
        let key: [u8; 16] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| VirtualCardError::BadKey)?;
        Ok(CardKey(key))
    }

    /// A key derived from a seed: the first 16 bytes of SHA-256(seed).
    pub fn derive(seed: &str) -> Self {
        let digest = Sha256::digest(seed.as_bytes());
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        CardKey(key)
    }
}

impl fmt::Debug for CardKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CardKey([redacted])")
    }
}

impl Drop for CardKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// What a [`VirtualCard`] is made of.
#[derive(Clone)]
pub struct VirtualCardConfig {
    pub profile: Profile,
    /// 4 to 12 digits.
    pub pin: String,
    /// 12 to 19 digits.
    pub pan: String,
    /// PAN sequence number (tag 5F34).
    pub psn: u8,
    pub key: CardKey,
    /// The last ATC used: the next GENERATE AC answers with `atc + 1`.
    pub atc: u16,
    pub pin_tries_max: u8,
    pub pin_tries_left: u8,
}

impl VirtualCardConfig {
    /// A card of `profile` with a deterministic test PAN and key, 3 of 3
    /// PIN tries left.
    pub fn new(profile: Profile, pin: impl Into<String>) -> Self {
        VirtualCardConfig {
            profile,
            pin: pin.into(),
            pan: profile.test_pan().to_owned(),
            psn: 1,
            key: CardKey::derive(&format!("bankbridge-cap virtual card {profile}")),
            atc: 0x0010,
            pin_tries_max: 3,
            pin_tries_left: 3,
        }
    }

    fn check(&self) -> Result<(), VirtualCardError> {
        if !crate::emv::is_valid_pin(&self.pin) {
            return Err(VirtualCardError::BadPin);
        }
        if !(12..=19).contains(&self.pan.len()) || !self.pan.bytes().all(|b| b.is_ascii_digit()) {
            return Err(VirtualCardError::BadPan(self.pan.clone()));
        }
        if !(1..=15).contains(&self.pin_tries_max) || self.pin_tries_left > self.pin_tries_max {
            return Err(VirtualCardError::BadTries {
                max: self.pin_tries_max,
                left: self.pin_tries_left,
            });
        }
        Ok(())
    }
}

impl fmt::Debug for VirtualCardConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VirtualCardConfig")
            .field("profile", &self.profile)
            .field("pin", &"[redacted]")
            .field("pan", &self.pan)
            .field("psn", &self.psn)
            .field("key", &self.key)
            .field("atc", &self.atc)
            .field("pin_tries_max", &self.pin_tries_max)
            .field("pin_tries_left", &self.pin_tries_left)
            .finish()
    }
}

/// The application cryptogram of the virtual cards: ISO/IEC 9797-1 MAC
/// algorithm 3 (the "retail MAC": single-DES CBC under K1, then the last
/// block decrypted under K2 and encrypted under K1), padding method 2, over
/// `data ‖ ATC` (big-endian).
pub fn application_cryptogram(key: &CardKey, data: &[u8], atc: u16) -> [u8; 8] {
    let mut message = Vec::with_capacity(data.len() + 2);
    message.extend_from_slice(data);
    message.extend_from_slice(&atc.to_be_bytes());
    retail_mac(&key.0, &message)
}

fn retail_mac(key: &[u8; 16], message: &[u8]) -> [u8; 8] {
    let k1 = Des::new(GenericArray::from_slice(&key[..8]));
    let k2 = Des::new(GenericArray::from_slice(&key[8..]));
    // Padding method 2: 0x80, then zeros up to a whole block.
    let mut padded = message.to_vec();
    padded.push(0x80);
    while !padded.len().is_multiple_of(8) {
        padded.push(0);
    }
    let mut chain = [0u8; 8];
    for block in padded.chunks_exact(8) {
        for (c, b) in chain.iter_mut().zip(block) {
            *c ^= b;
        }
        k1.encrypt_block(GenericArray::from_mut_slice(&mut chain));
    }
    k2.decrypt_block(GenericArray::from_mut_slice(&mut chain));
    k1.encrypt_block(GenericArray::from_mut_slice(&mut chain));
    chain
}

/// One logged exchange: (session number, C-APDU hex with any VERIFY PIN
/// block masked, SW1SW2 hex). The session number goes up at every reset.
pub type LoggedApdu = (u64, String, String);

/// How the card frames answers that carry data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Style {
    /// Like a real T=0 card: a command with data gets `61xx` (GET RESPONSE
    /// fetches the answer); a case-2 command whose P3 is not the exact
    /// length gets `6Cxx`.
    T0Strict,
    /// T=0 as the recorded exchanges show: data at once, P3 = 00 accepted.
    T0Lenient,
    /// T=1: data at once; only an Le shorter than the data gets `6Cxx`.
    T1,
}

/// Everything the card answers with, built once from the configuration.
struct CardData {
    atr: Vec<u8>,
    aid: Vec<u8>,
    style: Style,
    fci: Vec<u8>,
    pdol_len: usize,
    gpo: Vec<u8>,
    /// ((SFI, record number), template 70).
    records: Vec<((u8, u8), Vec<u8>)>,
    cdol1_len: usize,
    cdol2_len: usize,
    /// GENERATE AC answers in format 1 (80) instead of 2 (77).
    format1: bool,
    iad_arqc: Vec<u8>,
    iad_aac: Vec<u8>,
}

const CDOL1_BE: &str = "9F02069F03069F1A0295055F2A029A039C019F37049F4C029F3403";
const CDOL2_BE: &str = "8A029F02069F03069F1A0295055F2A029A039C019F37049F4C029F3403910A";
const CDOL1_T1: &str = "9F02069F03069F1A0295055F2A029A039C019F37049F35019F3403";
const CDOL2_T1: &str = "8A0295059F3704";
/// The Belgian CAP bitmap: ATC low byte, 2 bits of AC[5], AC[6], AC[7].
const IPB_BE: &str = "0000FF000000000003FFFF";
/// With the PSN in front (IAF 0x40): its low nibble, ATC low byte, 1 bit
/// of AC[5], AC[6], AC[7].
const IPB_T1: &str = "0F0000FF000000000001FFFF";
/// CID bit, ATC low byte, the last bit of AC[5], AC[6] and AC[7]: the
/// UK reading of the cryptogram.
const IPB_UK: &str = "8000FF000000000001FFFF";

fn h(text: &str) -> Vec<u8> {
    let clean: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(clean).unwrap_or_default()
}

fn e(tag: tlv::Tag, value: &[u8]) -> Vec<u8> {
    tlv::encode(tag, value)
}

fn c(tag: tlv::Tag, children: &[Vec<u8>]) -> Vec<u8> {
    tlv::encode_constructed(tag, children)
}

/// Digits as packed nibbles, padded with F (PAN, track 2).
fn nibbles(digits: &str) -> Vec<u8> {
    let mut text = digits.to_owned();
    if text.len() % 2 == 1 {
        text.push('F');
    }
    h(&text)
}

fn dol_len(dol: &str) -> usize {
    tlv::parse_dol(&h(dol))
        .map(|d| tlv::dol_data_len(&d))
        .unwrap_or(0)
}

impl CardData {
    fn build(config: &VirtualCardConfig) -> CardData {
        let profile = config.profile;
        let aid = profile.aid();
        let pan = nibbles(&config.pan);
        let track2 = nibbles(&format!("{}D3012201000000000", config.pan));
        let cvm_list = h("00000000000000000100"); // plaintext PIN by the card, always
        let card_record = |country: &str| {
            c(
                0x70,
                &[
                    e(0x5A, &pan),
                    e(0x5F34, &[config.psn]),
                    e(0x5F25, &h("200101")),
                    e(0x5F24, &h("301231")),
                    e(0x57, &track2),
                    e(0x5F28, &h(country)),
                ],
            )
        };
        let risk_record = |ipb: Option<&str>, cdol1: &str, cdol2: &str| {
            let mut children = Vec::new();
            if let Some(ipb) = ipb {
                children.push(e(0x9F56, &h(ipb)));
            }
            children.extend([e(0x8E, &cvm_list), e(0x8C, &h(cdol1)), e(0x8D, &h(cdol2))]);
            c(0x70, &children)
        };
        let gpo2 = |aip: &str, afl: &str| c(0x77, &[e(0x82, &h(aip)), e(0x94, &h(afl))]);
        match profile {
            Profile::CapBe => CardData {
                atr: profile.atr(),
                fci: c(
                    0x6F,
                    &[
                        e(0x84, &aid),
                        c(
                            0xA5,
                            &[
                                e(0x9F38, &h("9F3501")),
                                e(0x5F2D, b"fr"),
                                c(
                                    0xBF0C,
                                    &[
                                        e(0x9F55, &[0x00]),
                                        e(0x5F2C, &h("0056")),
                                        e(0xDF07, b"BKS056008"),
                                    ],
                                ),
                            ],
                        ),
                    ],
                ),
                aid,
                style: profile.style(),
                pdol_len: 1,
                gpo: gpo2("1000", "08010100 08040400"),
                records: vec![
                    ((1, 1), card_record("0056")),
                    ((1, 4), risk_record(Some(IPB_BE), CDOL1_BE, CDOL2_BE)),
                ],
                cdol1_len: dol_len(CDOL1_BE),
                cdol2_len: dol_len(CDOL2_BE),
                format1: false,
                iad_arqc: h("06015603A4000007000300000100 02"),
                iad_aac: h("0601560325A00007010300000100 02"),
            },
            Profile::Bancontact => CardData {
                atr: profile.atr(),
                fci: c(
                    0x6F,
                    &[
                        e(0x84, &aid),
                        c(
                            0xA5,
                            &[
                                e(0x50, b"BANCONTACT"),
                                e(0x87, &[0x01]),
                                e(0x9F38, &h("9F3501 DF4001")),
                                e(0x5F2D, b"fr"),
                                c(0xBF0C, &[e(0x5F2C, &h("0056")), e(0xDF07, b"BKS05665")]),
                            ],
                        ),
                    ],
                ),
                aid,
                style: profile.style(),
                pdol_len: 2,
                gpo: gpo2("1000", "08010100 08040400"),
                records: vec![
                    ((1, 1), card_record("0056")),
                    ((1, 4), risk_record(None, CDOL1_BE, CDOL2_BE)),
                ],
                cdol1_len: dol_len(CDOL1_BE),
                cdol2_len: dol_len(CDOL2_BE),
                format1: false,
                iad_arqc: h("06015603A4000007000300000000 00"),
                iad_aac: h("0601560324044007000300000000 00"),
            },
            Profile::VisaDpa => CardData {
                atr: profile.atr(),
                fci: c(
                    0x6F,
                    &[
                        e(0x84, &aid),
                        c(
                            0xA5,
                            &[
                                e(0x9F38, &h("9F3501")),
                                e(0x5F2D, b"fr"),
                                c(
                                    0xBF0C,
                                    &[
                                        e(0x9F55, &[0x00]),
                                        e(0x5F55, b"BE"),
                                        e(0x42, &h("499999")),
                                        e(0x5F2C, &h("0056")),
                                        e(0xDF07, b"BKS056008"),
                                    ],
                                ),
                            ],
                        ),
                    ],
                ),
                aid,
                style: profile.style(),
                pdol_len: 1,
                gpo: gpo2("1000", "08010100 10020200"),
                records: vec![
                    ((1, 1), card_record("0056")),
                    ((2, 2), risk_record(Some(IPB_BE), CDOL1_BE, CDOL2_BE)),
                ],
                cdol1_len: dol_len(CDOL1_BE),
                cdol2_len: dol_len(CDOL2_BE),
                format1: false,
                iad_arqc: h("06025703A4000007000300000100 02"),
                iad_aac: h("0602570325200007010300000100 02"),
            },
            Profile::CapT1 => CardData {
                atr: profile.atr(),
                fci: c(
                    0x6F,
                    &[
                        e(0x84, &aid),
                        c(
                            0xA5,
                            &[e(0x50, b"CAP T=1"), c(0xBF0C, &[e(0x9F55, &[0x40])])],
                        ),
                    ],
                ),
                aid,
                style: profile.style(),
                pdol_len: 0,
                // Format 1: AIP ‖ AFL (SFI 1, records 1 to 2).
                gpo: e(0x80, &h("1000 08010200")),
                records: vec![
                    ((1, 1), card_record("0528")),
                    ((1, 2), risk_record(Some(IPB_T1), CDOL1_T1, CDOL2_T1)),
                ],
                cdol1_len: dol_len(CDOL1_T1),
                cdol2_len: dol_len(CDOL2_T1),
                format1: true,
                iad_arqc: h("06010A03A40000"),
                iad_aac: h("06010A0325A000"),
            },
            Profile::CapUk => CardData {
                atr: profile.atr(),
                fci: c(
                    0x6F,
                    &[e(0x84, &aid), c(0xA5, &[e(0x50, b"SecureCode Aut")])],
                ),
                aid,
                style: profile.style(),
                pdol_len: 0,
                gpo: gpo2("1000", "08010100"),
                records: vec![(
                    (1, 1),
                    c(
                        0x70,
                        &[
                            e(0x8C, &h(CDOL1_BE)),
                            e(0x8D, &h(CDOL2_BE)),
                            e(0x9F56, &h(IPB_UK)),
                            e(0x9F55, &[0x00]),
                        ],
                    ),
                )],
                cdol1_len: dol_len(CDOL1_BE),
                cdol2_len: dol_len(CDOL2_BE),
                format1: false,
                iad_arqc: h("0110A00003220000000000000000000000FF"),
                iad_aac: h("0110250003220000000000000000000000FF"),
            },
        }
    }

    fn generate_ac_answer(&self, cid: u8, atc: u16, ac: &[u8; 8]) -> Vec<u8> {
        let iad = if cid == 0x80 {
            &self.iad_arqc
        } else {
            &self.iad_aac
        };
        if self.format1 {
            let mut value = vec![cid];
            value.extend_from_slice(&atc.to_be_bytes());
            value.extend_from_slice(ac);
            value.extend_from_slice(iad);
            e(0x80, &value)
        } else {
            c(
                0x77,
                &[
                    e(0x9F27, &[cid]),
                    e(0x9F36, &atc.to_be_bytes()),
                    e(0x9F26, ac),
                    e(0x9F10, iad),
                ],
            )
        }
    }
}

/// A command APDU split into its parts (short APDUs only).
struct Command<'a> {
    cla: u8,
    ins: u8,
    p1: u8,
    p2: u8,
    data: &'a [u8],
    /// Ne: `None` without an Le byte; an Le of 00 means 256.
    le: Option<usize>,
}

impl<'a> Command<'a> {
    fn parse(bytes: &'a [u8]) -> Option<Command<'a>> {
        let [cla, ins, p1, p2, rest @ ..] = bytes else {
            return None;
        };
        let ne = |b: u8| if b == 0 { 256 } else { usize::from(b) };
        let (data, le) = match rest {
            [] => (&rest[..0], None),
            [p3] => (&rest[..0], Some(ne(*p3))),
            [lc, body @ ..] => {
                let lc = usize::from(*lc);
                // Lc = 00 starts an extended APDU, which these cards lack.
                if lc == 0 {
                    return None;
                }
                match body.len().checked_sub(lc)? {
                    0 => (body, None),
                    1 => (&body[..lc], Some(ne(body[lc]))),
                    _ => return None,
                }
            }
        };
        Some(Command {
            cla: *cla,
            ins: *ins,
            p1: *p1,
            p2: *p2,
            data,
            le,
        })
    }
}

/// A handler's outcome: data (framed per [`Style`]) or a bare status word.
enum Reply {
    Data(Vec<u8>),
    Sw(u16),
}

const SW_OK: u16 = 0x9000;
const SW_WRONG_LENGTH: u16 = 0x6700;
const SW_BLOCKED: u16 = 0x6983;
const SW_CONDITIONS: u16 = 0x6985;
const SW_WRONG_DATA: u16 = 0x6A80;
const SW_NOT_FOUND: u16 = 0x6A82;
const SW_NO_RECORD: u16 = 0x6A83;
const SW_WRONG_P1P2: u16 = 0x6A86;
const SW_NO_DATA_OBJECT: u16 = 0x6A88;
const SW_BAD_INS: u16 = 0x6D00;
const SW_BAD_CLA: u16 = 0x6E00;

fn sw_bytes(sw: u16) -> Vec<u8> {
    sw.to_be_bytes().to_vec()
}

fn with_sw(mut data: Vec<u8>, sw: u16) -> Vec<u8> {
    data.extend_from_slice(&sw.to_be_bytes());
    data
}

/// A length as SW2 of `61xx` / `6Cxx` (256 is 00).
fn len_byte(n: usize) -> u16 {
    (n & 0xFF) as u16
}

/// The APDU as hex, with a VERIFY's data (the PIN block) masked.
pub(crate) fn masked_hex(capdu: &[u8]) -> String {
    if capdu.len() > 5 && capdu.get(1) == Some(&0x20) {
        format!(
            "{}{}",
            hex::encode_upper(&capdu[..5]),
            "*".repeat(2 * (capdu.len() - 5))
        )
    } else {
        hex::encode_upper(capdu)
    }
}

struct CardState {
    profile: Profile,
    data: CardData,
    pin: Zeroizing<String>,
    key: CardKey,
    atc: u16,
    tries_max: u8,
    tries_left: u8,
    // The session: gone at reset.
    selected: bool,
    pin_verified: bool,
    /// The ATC of a first GENERATE AC (ARQC) awaiting the second one.
    transaction: Option<u16>,
    /// T=0 answer waiting for GET RESPONSE.
    pending: Option<Vec<u8>>,
    // Instrumentation.
    session: u64,
    verify_count: u32,
    log: Vec<LoggedApdu>,
    remove_after: Option<u32>,
    verify_fault: Option<VerifyFault>,
    /// Set by a [`VerifyFault::RemoveAfter`] VERIFY: the answer is lost.
    removed_by_verify: bool,
}

/// Something going wrong at VERIFY, as real cards and readers do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyFault {
    /// VERIFY is answered with this status word whatever the PIN (the
    /// counter is not touched): `6300`, `63C2`, `6983`, …
    Answer(u16),
    /// The card takes the VERIFY (and counts it) but is pulled out before
    /// its answer leaves: the host sees the card removed.
    RemoveAfter,
}

impl CardState {
    fn reset(&mut self) {
        self.selected = false;
        self.pin_verified = false;
        self.transaction = None;
        self.pending = None;
        self.session += 1;
    }

    fn answer(&mut self, capdu: &[u8]) -> Vec<u8> {
        let Some(cmd) = Command::parse(capdu) else {
            self.pending = None;
            return sw_bytes(SW_WRONG_LENGTH);
        };
        if cmd.ins == 0xC0 {
            return self.get_response(&cmd);
        }
        self.pending = None;
        let reply = match (cmd.cla, cmd.ins) {
            (0x00, 0xA4) => self.select(&cmd),
            (0x80, 0xA8) => self.get_processing_options(&cmd),
            (0x00, 0xB2) => self.read_record(&cmd),
            (0x80, 0xCA) => self.get_data(&cmd),
            (0x00, 0x20) => self.verify(&cmd),
            (0x80, 0xAE) => self.generate_ac(&cmd),
            (_, 0xA4 | 0xA8 | 0xB2 | 0xCA | 0x20 | 0xAE) => Reply::Sw(SW_BAD_CLA),
            _ => Reply::Sw(SW_BAD_INS),
        };
        self.frame(&cmd, reply)
    }

    /// Apply the transport conventions of the card's [`Style`].
    fn frame(&mut self, cmd: &Command<'_>, reply: Reply) -> Vec<u8> {
        let data = match reply {
            Reply::Sw(sw) => return sw_bytes(sw),
            Reply::Data(data) if data.is_empty() => return sw_bytes(SW_OK),
            Reply::Data(data) => data,
        };
        let n = data.len();
        let has_data = !cmd.data.is_empty();
        match self.data.style {
            Style::T0Strict if has_data => {
                self.pending = Some(data);
                sw_bytes(0x6100 | len_byte(n))
            }
            Style::T0Strict => match cmd.le {
                Some(ne) if ne == n => with_sw(data, SW_OK),
                _ => sw_bytes(0x6C00 | len_byte(n)),
            },
            Style::T0Lenient => match cmd.le {
                _ if has_data => with_sw(data, SW_OK),
                None | Some(256) => with_sw(data, SW_OK),
                Some(ne) if ne == n => with_sw(data, SW_OK),
                Some(_) => sw_bytes(0x6C00 | len_byte(n)),
            },
            Style::T1 => match cmd.le {
                Some(ne) if ne < n => sw_bytes(0x6C00 | len_byte(n)),
                _ => with_sw(data, SW_OK),
            },
        }
    }

    fn get_response(&mut self, cmd: &Command<'_>) -> Vec<u8> {
        if cmd.cla != 0x00 {
            self.pending = None;
            return sw_bytes(SW_BAD_CLA);
        }
        let Some(pending) = self.pending.take() else {
            return sw_bytes(SW_CONDITIONS);
        };
        if cmd.p1 != 0 || cmd.p2 != 0 || !cmd.data.is_empty() {
            return sw_bytes(SW_WRONG_P1P2);
        }
        let n = pending.len();
        let ne = cmd.le.unwrap_or(256);
        if ne == n {
            with_sw(pending, SW_OK)
        } else if ne < n {
            let rest = pending[ne..].to_vec();
            let rest_len = rest.len();
            self.pending = Some(rest);
            with_sw(pending[..ne].to_vec(), 0x6100 | len_byte(rest_len))
        } else {
            let answer = sw_bytes(0x6C00 | len_byte(n));
            self.pending = Some(pending);
            answer
        }
    }

    fn select(&mut self, cmd: &Command<'_>) -> Reply {
        if cmd.p1 != 0x04 {
            return Reply::Sw(SW_WRONG_P1P2);
        }
        // Only the first occurrence of the exact name: no partial names.
        if cmd.p2 & 0x03 != 0 || cmd.data != self.data.aid.as_slice() {
            return Reply::Sw(SW_NOT_FOUND);
        }
        // Selecting the application starts it afresh, PIN status included.
        self.selected = true;
        self.pin_verified = false;
        self.transaction = None;
        Reply::Data(self.data.fci.clone())
    }

    fn get_processing_options(&mut self, cmd: &Command<'_>) -> Reply {
        if !self.selected {
            return Reply::Sw(SW_CONDITIONS);
        }
        if cmd.p1 != 0 || cmd.p2 != 0 {
            return Reply::Sw(SW_WRONG_P1P2);
        }
        let want = self.data.pdol_len;
        match cmd.data {
            [0x83, len, rest @ ..] if usize::from(*len) == want && rest.len() == want => {}
            _ => return Reply::Sw(SW_WRONG_LENGTH),
        }
        self.transaction = None;
        Reply::Data(self.data.gpo.clone())
    }

    fn read_record(&mut self, cmd: &Command<'_>) -> Reply {
        if !self.selected {
            return Reply::Sw(SW_CONDITIONS);
        }
        let sfi = cmd.p2 >> 3;
        if cmd.p2 & 0x07 != 0x04 || sfi == 0 || cmd.p1 == 0 || !cmd.data.is_empty() {
            return Reply::Sw(SW_WRONG_P1P2);
        }
        if let Some((_, record)) = self
            .data
            .records
            .iter()
            .find(|(at, _)| *at == (sfi, cmd.p1))
        {
            return Reply::Data(record.clone());
        }
        if self.data.records.iter().any(|((s, _), _)| *s == sfi) {
            Reply::Sw(SW_NO_RECORD)
        } else {
            Reply::Sw(SW_NOT_FOUND)
        }
    }

    fn get_data(&mut self, cmd: &Command<'_>) -> Reply {
        if !self.selected {
            return Reply::Sw(SW_CONDITIONS);
        }
        if (cmd.p1, cmd.p2) != (0x9F, 0x17) || !cmd.data.is_empty() {
            return Reply::Sw(SW_NO_DATA_OBJECT);
        }
        Reply::Data(e(0x9F17, &[self.tries_left]))
    }

    fn verify(&mut self, cmd: &Command<'_>) -> Reply {
        self.verify_count = self.verify_count.saturating_add(1);
        match self.verify_fault {
            Some(VerifyFault::Answer(sw)) => {
                self.pin_verified = false;
                return Reply::Sw(sw);
            }
            Some(VerifyFault::RemoveAfter) => self.removed_by_verify = true,
            None => {}
        }
        if !self.selected {
            return Reply::Sw(SW_CONDITIONS);
        }
        // Plaintext offline PIN only.
        if cmd.p1 != 0x00 || cmd.p2 != 0x80 {
            return Reply::Sw(SW_WRONG_P1P2);
        }
        if self.tries_left == 0 {
            return Reply::Sw(SW_BLOCKED);
        }
        // Without data, VERIFY asks how many tries are left.
        if cmd.data.is_empty() {
            return Reply::Sw(0x63C0 | u16::from(self.tries_left));
        }
        if cmd.data.len() != 8 {
            return Reply::Sw(SW_WRONG_LENGTH);
        }
        let Some(entered) = pin_from_block(cmd.data) else {
            return Reply::Sw(SW_WRONG_DATA);
        };
        if entered.as_bytes() == self.pin.as_bytes() {
            self.tries_left = self.tries_max;
            self.pin_verified = true;
            return Reply::Sw(SW_OK);
        }
        self.pin_verified = false;
        self.tries_left = self.tries_left.saturating_sub(1);
        tracing::debug!(tries_left = self.tries_left, "virtual card: wrong PIN");
        if self.tries_left == 0 {
            Reply::Sw(SW_BLOCKED)
        } else {
            Reply::Sw(0x63C0 | u16::from(self.tries_left))
        }
    }

    fn generate_ac(&mut self, cmd: &Command<'_>) -> Reply {
        if !self.selected {
            return Reply::Sw(SW_CONDITIONS);
        }
        if cmd.p2 != 0 {
            return Reply::Sw(SW_WRONG_P1P2);
        }
        match cmd.p1 {
            // First GENERATE AC: an ARQC over the CDOL1 data.
            0x80 => {
                if self.transaction.is_some() || !self.pin_verified {
                    return Reply::Sw(SW_CONDITIONS);
                }
                if cmd.data.len() != self.data.cdol1_len {
                    return Reply::Sw(SW_WRONG_LENGTH);
                }
                // An exhausted ATC ends the card's life, as on a real card.
                let Some(atc) = self.atc.checked_add(1) else {
                    return Reply::Sw(SW_CONDITIONS);
                };
                self.atc = atc;
                self.transaction = Some(atc);
                let ac = application_cryptogram(&self.key, cmd.data, atc);
                Reply::Data(self.data.generate_ac_answer(0x80, atc, &ac))
            }
            // Second GENERATE AC: the AAC closing the transaction (CDOL2).
            0x00 => {
                let Some(atc) = self.transaction else {
                    return Reply::Sw(SW_CONDITIONS);
                };
                if cmd.data.len() != self.data.cdol2_len {
                    return Reply::Sw(SW_WRONG_LENGTH);
                }
                self.transaction = None;
                let ac = application_cryptogram(&self.key, cmd.data, atc);
                Reply::Data(self.data.generate_ac_answer(0x00, atc, &ac))
            }
            _ => Reply::Sw(SW_WRONG_P1P2),
        }
    }
}

/// The digits of an ISO 9564 format 2 PIN block (`2L PP.. FF..`), or
/// `None` when it is malformed.
fn pin_from_block(block: &[u8]) -> Option<Zeroizing<String>> {
    let first = *block.first()?;
    let len = usize::from(first & 0x0F);
    if first >> 4 != 0x2 || !(4..=12).contains(&len) || block.len() != 8 {
        return None;
    }
    let mut digits = Zeroizing::new(String::with_capacity(len));
    for i in 0..14 {
        let byte = block[1 + i / 2];
        let nibble = if i % 2 == 0 { byte >> 4 } else { byte & 0x0F };
        match (i < len, nibble) {
            (true, 0..=9) => digits.push(char::from(b'0' + nibble)),
            (false, 0x0F) => {}
            _ => return None,
        }
    }
    Some(digits)
}

/// An EMV CAP card simulated in this process.
pub struct VirtualCard {
    state: Arc<Mutex<CardState>>,
}

impl VirtualCard {
    pub fn new(config: VirtualCardConfig) -> Result<VirtualCard, VirtualCardError> {
        config.check()?;
        let data = CardData::build(&config);
        let VirtualCardConfig {
            profile,
            pin,
            key,
            atc,
            pin_tries_max,
            pin_tries_left,
            ..
        } = config;
        Ok(VirtualCard {
            state: Arc::new(Mutex::new(CardState {
                profile,
                data,
                pin: Zeroizing::new(pin),
                key,
                atc,
                tries_max: pin_tries_max,
                tries_left: pin_tries_left,
                selected: false,
                pin_verified: false,
                transaction: None,
                pending: None,
                session: 0,
                verify_count: 0,
                log: Vec::new(),
                remove_after: None,
                verify_fault: None,
                removed_by_verify: false,
            })),
        })
    }

    /// A card of `profile` with its test PAN and key (see [`VirtualCardConfig::new`]).
    pub fn with_pin(profile: Profile, pin: &str) -> Result<VirtualCard, VirtualCardError> {
        VirtualCard::new(VirtualCardConfig::new(profile, pin))
    }

    /// A handle to watch and steer this card wherever it ends up.
    pub fn handle(&self) -> CardHandle {
        CardHandle {
            state: Arc::clone(&self.state),
        }
    }

    pub fn profile(&self) -> Profile {
        lock(&self.state).profile
    }
}

fn lock(state: &Mutex<CardState>) -> MutexGuard<'_, CardState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl fmt::Debug for VirtualCard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VirtualCard")
            .field("profile", &self.profile())
            .finish_non_exhaustive()
    }
}

impl SmartCard for VirtualCard {
    fn atr(&self) -> Vec<u8> {
        lock(&self.state).data.atr.clone()
    }

    fn reset(&mut self) {
        lock(&self.state).reset();
    }

    fn process(&mut self, capdu: &[u8]) -> Option<Vec<u8>> {
        let mut state = lock(&self.state);
        match state.remove_after {
            Some(0) => {
                // Pulled out: the card loses power, and with it the session.
                state.remove_after = None;
                state.reset();
                tracing::debug!("virtual card: simulated removal");
                return None;
            }
            Some(n) => state.remove_after = Some(n - 1),
            None => {}
        }
        let answer = state.answer(capdu);
        if std::mem::take(&mut state.removed_by_verify) {
            state.reset();
            tracing::debug!("virtual card: pulled out right after a VERIFY");
            let session = state.session;
            state
                .log
                .push((session, masked_hex(capdu), "(removed)".into()));
            return None;
        }
        let sw = hex::encode_upper(&answer[answer.len().saturating_sub(2)..]);
        let command = masked_hex(capdu);
        tracing::trace!(session = state.session, %command, %sw, "virtual card APDU");
        let session = state.session;
        state.log.push((session, command, sw));
        Some(answer)
    }
}

/// Watches and steers a [`VirtualCard`] owned elsewhere (a reader slot, a
/// vpcd thread).
#[derive(Clone)]
pub struct CardHandle {
    state: Arc<Mutex<CardState>>,
}

impl CardHandle {
    /// VERIFY commands received, whatever their outcome.
    pub fn verify_count(&self) -> u32 {
        lock(&self.state).verify_count
    }

    pub fn pin_tries_left(&self) -> u8 {
        lock(&self.state).tries_left
    }

    /// The PIN try counter is at zero.
    pub fn blocked(&self) -> bool {
        lock(&self.state).tries_left == 0
    }

    /// The last ATC used (persists across resets).
    pub fn atc(&self) -> u16 {
        lock(&self.state).atc
    }

    /// The PIN is verified in the current session.
    pub fn pin_verified(&self) -> bool {
        lock(&self.state).pin_verified
    }

    /// The session number: it goes up at every reset.
    pub fn session(&self) -> u64 {
        lock(&self.state).session
    }

    /// Every APDU answered so far, PIN blocks masked.
    pub fn apdu_log(&self) -> Vec<LoggedApdu> {
        lock(&self.state).log.clone()
    }

    /// After `n` more answered APDUs the card is pulled out: the next
    /// [`SmartCard::process`] returns `None`. `None` cancels.
    pub fn set_remove_after(&self, n: Option<u32>) {
        lock(&self.state).remove_after = n;
    }

    /// Make every VERIFY go wrong this way; `None` makes the card behave.
    pub fn set_verify_fault(&self, fault: Option<VerifyFault>) {
        lock(&self.state).verify_fault = fault;
    }
}

impl fmt::Debug for CardHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("CardHandle")
            .field("profile", &state.profile)
            .field("session", &state.session)
            .field("atc", &state.atc)
            .field("pin_tries_left", &state.tries_left)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use des::TdesEde2;

    fn fresh(profile: Profile) -> (VirtualCard, CardHandle) {
        let mut card = VirtualCard::with_pin(profile, "1234").unwrap();
        card.reset();
        let handle = card.handle();
        (card, handle)
    }

    /// Send a command and follow 61xx / 6Cxx like a host does.
    fn ask(card: &mut VirtualCard, capdu: &str) -> String {
        let mut command = h(capdu);
        let mut out = Vec::new();
        for _ in 0..4 {
            let r = card.process(&command).unwrap();
            let (data, sw) = r.split_at(r.len() - 2);
            out.extend_from_slice(data);
            match sw[0] {
                0x61 => command = vec![0x00, 0xC0, 0x00, 0x00, sw[1]],
                0x6C => {
                    command.truncate(4);
                    command.push(sw[1]);
                }
                _ => {
                    out.extend_from_slice(sw);
                    return hex::encode_upper(out);
                }
            }
        }
        panic!("no final status for {capdu}");
    }

    fn raw(card: &mut VirtualCard, capdu: &str) -> String {
        hex::encode_upper(card.process(&h(capdu)).unwrap())
    }

    fn sw(answer: &str) -> &str {
        &answer[answer.len() - 4..]
    }

    fn select(card: &mut VirtualCard, profile: Profile) -> String {
        let aid = profile.aid();
        let mut capdu = vec![0x00, 0xA4, 0x04, 0x00, aid.len() as u8];
        capdu.extend(aid);
        ask(card, &hex::encode(capdu))
    }

    const VERIFY_1234: &str = "0020008008241234FFFFFFFFFF";
    const VERIFY_9999: &str = "0020008008249999FFFFFFFFFF";

    fn arqc_command(len: usize) -> String {
        format!("80AE8000{:02X}{}", len, "00".repeat(len))
    }

    #[test]
    fn profile_names_roundtrip() {
        for p in Profile::ALL {
            assert_eq!(p.to_string().parse::<Profile>().unwrap(), p);
        }
        assert_eq!("CAP-BE".parse::<Profile>().unwrap(), Profile::CapBe);
        let err = "maestro".parse::<Profile>().unwrap_err();
        assert!(err.to_string().contains("cap-t1"), "{err}");
    }

    #[test]
    fn atrs_announce_the_intended_protocol() {
        assert_eq!(Profile::CapBe.protocol(), Protocol::T0);
        assert_eq!(Profile::Bancontact.protocol(), Protocol::T0);
        assert_eq!(Profile::VisaDpa.protocol(), Protocol::T0);
        assert_eq!(Profile::CapT1.protocol(), Protocol::T1);
        // T=1 requires a check byte: T0..TCK XOR to zero.
        let atr = Profile::CapT1.atr();
        assert_eq!(atr[1..].iter().fold(0, |x, b| x ^ b), 0);
    }

    #[test]
    fn cap_be_fci_matches_the_recorded_card() {
        let (mut card, _) = fresh(Profile::CapBe);
        assert_eq!(
            select(&mut card, Profile::CapBe),
            "6F2E8407A0000000048002A5239F38039F35015F2D026672BF0C159F5501005F2C020056DF0709424B533035363030389000"
        );
    }

    #[test]
    fn retail_mac_equals_cbc_then_triple_des_on_the_last_block() {
        let key = CardKey::from_hex("0123456789ABCDEF FEDCBA9876543210").unwrap();
        let ede = TdesEde2::new(GenericArray::from_slice(&key.0));
        // One block: the retail MAC is a 2-key 3DES encryption of it.
        let mut block = *b"\x12\x34\x80\0\0\0\0\0";
        ede.encrypt_block(GenericArray::from_mut_slice(&mut block));
        assert_eq!(application_cryptogram(&key, &[], 0x1234), block);
        // Several blocks: single DES CBC under K1, the last step in 3DES.
        let data: Vec<u8> = (0u8..21).collect();
        let mut padded = data.clone();
        padded.extend([0xAB, 0xCD, 0x80]);
        let k1 = Des::new(GenericArray::from_slice(&key.0[..8]));
        let mut chain = [0u8; 8];
        for block in padded[..16].chunks(8) {
            chain.iter_mut().zip(block).for_each(|(c, b)| *c ^= b);
            k1.encrypt_block(GenericArray::from_mut_slice(&mut chain));
        }
        chain
            .iter_mut()
            .zip(&padded[16..])
            .for_each(|(c, b)| *c ^= b);
        ede.encrypt_block(GenericArray::from_mut_slice(&mut chain));
        assert_eq!(application_cryptogram(&key, &data, 0xABCD), chain);
    }

    #[test]
    fn retail_mac_known_answer() {
        // Computed independently with OpenSSL's DES (CBC under K1, then
        // ECB decrypt K2, encrypt K1) over "Now is the time for all " ‖ 80 00..
        let key = CardKey::from_hex("0123456789ABCDEFFEDCBA9876543210").unwrap();
        let mac = retail_mac(&key.0, b"Now is the time for all ");
        assert_eq!(hex::encode_upper(mac), RETAIL_MAC_NOW_IS_THE_TIME);
    }
    const RETAIL_MAC_NOW_IS_THE_TIME: &str = "E9086230CA3BE796";

    #[test]
    fn cryptogram_depends_on_every_input() {
        let key = CardKey::derive("seed");
        let data = h("000000001234 000000000000 0056 8000000000 0978 250101 00 12345678");
        let base = application_cryptogram(&key, &data, 7);
        assert_ne!(application_cryptogram(&key, &data, 8), base);
        assert_ne!(
            application_cryptogram(&CardKey::derive("seeD"), &data, 7),
            base
        );
        for i in 0..data.len() {
            for bit in 0..8 {
                let mut changed = data.clone();
                changed[i] ^= 1 << bit;
                assert_ne!(
                    application_cryptogram(&key, &changed, 7),
                    base,
                    "byte {i} bit {bit}"
                );
            }
        }
        let mut longer = data.clone();
        longer.push(0);
        assert_ne!(application_cryptogram(&key, &longer, 7), base);
        // Both key halves matter.
        let mut k = key.0;
        k[15] ^= 0x02; // not a DES parity bit
        assert_ne!(application_cryptogram(&CardKey::new(k), &data, 7), base);
    }

    #[test]
    fn keys_and_pins_stay_out_of_debug() {
        let mut config = VirtualCardConfig::new(Profile::CapBe, "987654");
        config.key = CardKey::from_hex("00112233445566778899AABBCCDDEEFF").unwrap();
        let text = format!("{config:?}");
        assert!(!text.contains("987654"), "{text}");
        assert!(!text.contains("8899"), "{text}");
        assert!(CardKey::from_hex("0011").is_err());
        assert_eq!(CardKey::derive("a").0, CardKey::derive("a").0);
        assert_ne!(CardKey::derive("a").0, CardKey::derive("b").0);
    }

    #[test]
    fn config_is_checked() {
        for pin in ["123", "1234567890123", "12a4", ""] {
            assert_eq!(
                VirtualCard::with_pin(Profile::CapBe, pin).unwrap_err(),
                VirtualCardError::BadPin
            );
        }
        let mut config = VirtualCardConfig::new(Profile::CapBe, "123456789012");
        assert!(VirtualCard::new(config.clone()).is_ok());
        config.pan = "1234".into();
        assert!(matches!(
            VirtualCard::new(config.clone()),
            Err(VirtualCardError::BadPan(_))
        ));
        config = VirtualCardConfig::new(Profile::CapBe, "1234");
        config.pin_tries_left = 4;
        assert!(matches!(
            VirtualCard::new(config),
            Err(VirtualCardError::BadTries { .. })
        ));
    }

    #[test]
    fn select_answers_only_the_application() {
        for p in Profile::ALL {
            let (mut card, _) = fresh(p);
            assert_eq!(
                sw(&ask(&mut card, "00A404000E315041592E5359532E4444463031")),
                "6A82"
            );
            assert_eq!(sw(&ask(&mut card, "00A4040007A0000000041010")), "6A82");
            let fci = select(&mut card, p);
            assert_eq!(sw(&fci), "9000");
            let fci = h(&fci[..fci.len() - 4]);
            assert_eq!(
                tlv::find_path(&fci, &[0x6F, 0x84]).unwrap(),
                Some(&p.aid()[..])
            );
        }
    }

    #[test]
    fn t0_strict_card_uses_get_response_and_6c() {
        let (mut card, _) = fresh(Profile::CapBe);
        // Case 4 without and with a trailing Le: 61xx either way.
        let r = raw(&mut card, "00A4040007A0000000048002");
        assert_eq!(r, "6130");
        assert_eq!(raw(&mut card, "00C0000010").len(), 2 * 16 + 4); // part, 61 20
        assert_eq!(raw(&mut card, "00C0000040"), "6C20"); // too long
        assert_eq!(sw(&raw(&mut card, "00C0000020")), "9000");
        assert_eq!(raw(&mut card, "00C0000030"), "6985"); // nothing left
        assert_eq!(raw(&mut card, "00A4040007A000000004800200"), "6130");
        // Case 2: P3 must be exact.
        assert_eq!(raw(&mut card, "80CA9F1700"), "6C04");
        assert_eq!(raw(&mut card, "80CA9F17"), "6C04");
        assert_eq!(raw(&mut card, "80CA9F1704"), "9F1701039000");
        assert_eq!(raw(&mut card, "80CA9F1702"), "6C04");
        // Any other command drops a pending answer.
        assert_eq!(raw(&mut card, "80A8000003830134"), "6110");
        assert_eq!(raw(&mut card, "80CA9F1704"), "9F1701039000");
        assert_eq!(raw(&mut card, "00C0000010"), "6985");
    }

    #[test]
    fn lenient_and_t1_cards_answer_at_once() {
        let (mut card, _) = fresh(Profile::Bancontact);
        assert_eq!(sw(&raw(&mut card, "00A4040008D056000666111010")), "9000");
        assert_eq!(sw(&raw(&mut card, "00A4040008D05600066611101000")), "9000");
        assert_eq!(raw(&mut card, "80CA9F1700"), "9F1701039000");
        assert_eq!(raw(&mut card, "80CA9F17"), "9F1701039000");
        assert_eq!(raw(&mut card, "80CA9F1702"), "6C04");
        let (mut card, _) = fresh(Profile::CapT1);
        assert_eq!(sw(&raw(&mut card, "00A4040007A000000004800200")), "9000");
        assert_eq!(sw(&raw(&mut card, "00A4040007A0000000048002")), "9000");
        assert_eq!(raw(&mut card, "80CA9F1700"), "9F1701039000");
        assert_eq!(raw(&mut card, "80CA9F1710"), "9F1701039000");
        assert_eq!(raw(&mut card, "80CA9F1702"), "6C04");
        // Format 1 GPO: no PDOL, so 83 00.
        let gpo = raw(&mut card, "80A800000283 0000".replace(' ', "").as_str());
        assert_eq!(gpo, "80061000080102009000");
        assert_eq!(raw(&mut card, "80A8000003830134"), "6700");
    }

    #[test]
    fn gpo_checks_the_pdol_data_length() {
        let (mut card, _) = fresh(Profile::CapBe);
        assert_eq!(raw(&mut card, "80A8000003830134"), "6985"); // nothing selected
        select(&mut card, Profile::CapBe);
        assert_eq!(
            ask(&mut card, "80A8000003830134"),
            "770E82021000940808010100080404009000"
        );
        assert_eq!(raw(&mut card, "80A80000028300"), "6700");
        assert_eq!(raw(&mut card, "80A800000483023700"), "6700");
        assert_eq!(raw(&mut card, "80A8000003840134"), "6700");
        let (mut card, _) = fresh(Profile::Bancontact);
        select(&mut card, Profile::Bancontact);
        assert_eq!(sw(&ask(&mut card, "80A800000483023700")), "9000");
    }

    #[test]
    fn records_follow_the_afl() {
        for p in Profile::ALL {
            let (mut card, _) = fresh(p);
            select(&mut card, p);
            let (sfi_rec, missing) = match p {
                Profile::CapBe | Profile::Bancontact => (vec![(1, 1), (1, 4)], "00B2020C00"),
                Profile::VisaDpa => (vec![(1, 1), (2, 2)], "00B2011400"),
                Profile::CapT1 => (vec![(1, 1), (1, 2)], "00B2030C00"),
                Profile::CapUk => (vec![(1, 1)], "00B2020C00"),
            };
            let mut all = Vec::new();
            for (sfi, rec) in sfi_rec {
                let r = ask(&mut card, &format!("00B2{rec:02X}{:02X}00", (sfi << 3) | 4));
                assert_eq!(sw(&r), "9000", "{p} {sfi}/{rec}");
                all.extend(h(&r[..r.len() - 4]));
            }
            assert_eq!(sw(&ask(&mut card, missing)), "6A83", "{p}");
            assert_eq!(sw(&ask(&mut card, "00B2011C00")), "6A82", "{p}");
            assert_eq!(sw(&ask(&mut card, "00B2010800")), "6A86", "{p}");
            let config = VirtualCardConfig::new(p, "1234");
            if p.has_pan() {
                let pan = tlv::find(&all, 0x5A).unwrap().unwrap();
                assert!(hex::encode_upper(pan).starts_with(&config.pan), "{p}");
                assert_eq!(tlv::find(&all, 0x5F34).unwrap(), Some(&[1u8][..]));
            } else {
                assert_eq!(tlv::find(&all, 0x5A).unwrap(), None, "{p}");
                assert_eq!(tlv::find(&all, 0x5F34).unwrap(), None, "{p}");
                assert_eq!(tlv::find(&all, 0x57).unwrap(), None, "{p}");
            }
            assert!(tlv::find(&all, 0x8C).unwrap().is_some());
            assert!(tlv::find(&all, 0x8D).unwrap().is_some());
            let ipb = tlv::find(&all, 0x9F56).unwrap();
            assert_eq!(ipb.is_none(), p == Profile::Bancontact, "{p}");
        }
    }

    #[test]
    fn get_data_only_knows_the_pin_try_counter() {
        let (mut card, _) = fresh(Profile::VisaDpa);
        select(&mut card, Profile::VisaDpa);
        assert_eq!(ask(&mut card, "80CA9F1700"), "9F1701039000");
        assert_eq!(ask(&mut card, "80CA9F3600"), "6A88");
        assert_eq!(ask(&mut card, "80CA9F1300"), "6A88");
    }

    #[test]
    fn pin_counter_counts_down_blocks_and_resets_on_success() {
        let (mut card, handle) = fresh(Profile::CapBe);
        select(&mut card, Profile::CapBe);
        assert_eq!(ask(&mut card, VERIFY_9999), "63C2");
        assert_eq!(handle.pin_tries_left(), 2);
        assert_eq!(ask(&mut card, "80CA9F1704"), "9F1701029000");
        assert_eq!(ask(&mut card, "00200080"), "63C2"); // how many tries?
        assert_eq!(ask(&mut card, VERIFY_1234), "9000");
        assert_eq!(handle.pin_tries_left(), 3);
        assert!(handle.pin_verified());
        assert_eq!(ask(&mut card, VERIFY_9999), "63C2");
        assert!(
            !handle.pin_verified(),
            "a wrong PIN cancels the verification"
        );
        assert_eq!(ask(&mut card, VERIFY_9999), "63C1");
        assert_eq!(ask(&mut card, VERIFY_9999), "6983");
        assert!(handle.blocked());
        // Blocked: even the right PIN is refused, nothing changes.
        assert_eq!(ask(&mut card, VERIFY_1234), "6983");
        assert_eq!(ask(&mut card, "0020008008FFFFFFFFFFFFFFFF"), "6983");
        assert_eq!(handle.pin_tries_left(), 0);
        assert_eq!(ask(&mut card, "80CA9F1700"), "9F1701009000");
        assert_eq!(handle.verify_count(), 8);
        assert_eq!(ask(&mut card, &arqc_command(0x22)), "6985");
    }

    #[test]
    fn malformed_pin_blocks_are_refused_without_cost() {
        let (mut card, handle) = fresh(Profile::CapBe);
        select(&mut card, Profile::CapBe);
        for block in [
            "0020008008141234FFFFFFFFFF", // format 1
            "0020008008231234FFFFFFFFFF", // 3 digits
            "00200080082D1234FFFFFFFFFF", // 13 digits
            "00200080082412A4FFFFFFFFFF", // not a digit
            "0020008008241234FFFFFFFF0F", // bad filler
            "0020008008251234FFFFFFFFFF", // length says 5, 4 given
        ] {
            assert_eq!(ask(&mut card, block), "6A80", "{block}");
        }
        assert_eq!(ask(&mut card, "0020008007241234FFFFFFFF"), "6700");
        assert_eq!(ask(&mut card, "0020008808241234FFFFFFFFFF"), "6A86");
        assert_eq!(handle.pin_tries_left(), 3);
        // 12 digits use the nibble C.
        let mut config = VirtualCardConfig::new(Profile::CapBe, "123456789012");
        config.profile = Profile::CapBe;
        let mut long = VirtualCard::new(config).unwrap();
        long.reset();
        select(&mut long, Profile::CapBe);
        assert_eq!(ask(&mut long, "00200080082C123456789012FF"), "9000");
    }

    #[test]
    fn generate_ac_needs_the_pin_and_cdol_lengths_and_advances_the_atc() {
        let (mut card, handle) = fresh(Profile::CapBe);
        select(&mut card, Profile::CapBe);
        assert_eq!(sw(&ask(&mut card, "80A8000003830134")), "9000");
        assert_eq!(ask(&mut card, &arqc_command(0x22)), "6985"); // no PIN
        assert_eq!(ask(&mut card, VERIFY_1234), "9000");
        assert_eq!(ask(&mut card, &arqc_command(0x21)), "6700");
        assert_eq!(
            ask(&mut card, &format!("80AE00002E{}", "00".repeat(0x2E))),
            "6985"
        ); // no ARQC yet
        let start = handle.atc();
        let cdol1 = h(&"00".repeat(0x22));
        let r = h(&ask(&mut card, &arqc_command(0x22)));
        let (body, status) = r.split_at(r.len() - 2);
        assert_eq!(status, [0x90, 0x00]);
        assert_eq!(handle.atc(), start + 1);
        assert_eq!(tlv::find(body, 0x9F27).unwrap(), Some(&[0x80u8][..]));
        let atc = (start + 1).to_be_bytes();
        assert_eq!(tlv::find(body, 0x9F36).unwrap(), Some(&atc[..]));
        let key = VirtualCardConfig::new(Profile::CapBe, "1234").key;
        let ac = application_cryptogram(&key, &cdol1, start + 1);
        assert_eq!(tlv::find(body, 0x9F26).unwrap(), Some(&ac[..]));
        assert_eq!(tlv::find(body, 0x9F10).unwrap().map(<[u8]>::len), Some(15));
        // A second ARQC before the AAC is refused.
        assert_eq!(ask(&mut card, &arqc_command(0x22)), "6985");
        // The AAC: wrong length, then right; same ATC, CID 00.
        assert_eq!(
            ask(&mut card, &format!("80AE00002D{}", "00".repeat(0x2D))),
            "6700"
        );
        let cdol2 = h(&format!("5A33{}", "00".repeat(0x2C)));
        let r = h(&ask(
            &mut card,
            &format!("80AE00002E{}", hex::encode(&cdol2)),
        ));
        let body = &r[..r.len() - 2];
        assert_eq!(tlv::find(body, 0x9F27).unwrap(), Some(&[0x00u8][..]));
        assert_eq!(tlv::find(body, 0x9F36).unwrap(), Some(&atc[..]));
        let aac = application_cryptogram(&key, &cdol2, start + 1);
        assert_eq!(tlv::find(body, 0x9F26).unwrap(), Some(&aac[..]));
        assert_eq!(handle.atc(), start + 1);
        assert_eq!(
            ask(&mut card, &format!("80AE00002E{}", hex::encode(&cdol2))),
            "6985"
        );
        // A new transaction in the same session gets the next ATC.
        assert_eq!(sw(&ask(&mut card, &arqc_command(0x22))), "9000");
        assert_eq!(handle.atc(), start + 2);
        assert_eq!(ask(&mut card, "80AE4000"), "6A86");
    }

    #[test]
    fn t1_card_answers_generate_ac_in_format_1() {
        let (mut card, handle) = fresh(Profile::CapT1);
        select(&mut card, Profile::CapT1);
        assert_eq!(
            ask(
                &mut card,
                "00200080082412 34FFFFFFFFFF".replace(' ', "").as_str()
            ),
            "9000"
        );
        let len = dol_len(CDOL1_T1);
        let r = h(&ask(&mut card, &format!("{}00", arqc_command(len))));
        assert_eq!(r[0], 0x80);
        assert_eq!(usize::from(r[1]), 1 + 2 + 8 + 7);
        assert_eq!(r[2], 0x80);
        assert_eq!(u16::from_be_bytes([r[3], r[4]]), handle.atc());
        let r = h(&ask(
            &mut card,
            &format!(
                "80AE0000{:02X}{}00",
                dol_len(CDOL2_T1),
                "00".repeat(dol_len(CDOL2_T1))
            ),
        ));
        assert_eq!((r[0], r[2]), (0x80, 0x00));
    }

    #[test]
    fn reset_forgets_the_session_but_not_the_counters() {
        let (mut card, handle) = fresh(Profile::CapBe);
        select(&mut card, Profile::CapBe);
        assert_eq!(ask(&mut card, VERIFY_9999), "63C2");
        assert_eq!(ask(&mut card, VERIFY_1234), "9000");
        assert_eq!(sw(&ask(&mut card, &arqc_command(0x22))), "9000");
        let atc = handle.atc();
        let session = handle.session();
        card.reset();
        assert_eq!(handle.session(), session + 1);
        assert!(!handle.pin_verified());
        assert_eq!(raw(&mut card, "80CA9F1704"), "6985"); // nothing selected
        select(&mut card, Profile::CapBe);
        assert_eq!(ask(&mut card, &arqc_command(0x22)), "6985");
        assert_eq!(
            ask(&mut card, &format!("80AE00002E{}", "00".repeat(0x2E))),
            "6985"
        );
        assert_eq!(handle.atc(), atc);
        assert_eq!(handle.pin_tries_left(), 3);
    }

    #[test]
    fn reselecting_the_application_drops_the_pin() {
        let (mut card, handle) = fresh(Profile::VisaDpa);
        select(&mut card, Profile::VisaDpa);
        assert_eq!(ask(&mut card, VERIFY_1234), "9000");
        assert_eq!(sw(&ask(&mut card, "00A4040007A0000000041010")), "6A82");
        assert!(
            handle.pin_verified(),
            "a failed SELECT keeps the application"
        );
        select(&mut card, Profile::VisaDpa);
        assert!(!handle.pin_verified());
    }

    #[test]
    fn log_masks_pin_blocks_and_numbers_sessions() {
        let (mut card, handle) = fresh(Profile::CapBe);
        select(&mut card, Profile::CapBe);
        ask(&mut card, VERIFY_1234);
        card.reset();
        ask(&mut card, "80CA9F1700");
        let log = handle.apdu_log();
        let verify = log
            .iter()
            .find(|(_, c, _)| c.starts_with("00200080"))
            .unwrap();
        assert_eq!(verify.1, format!("0020008008{}", "*".repeat(16)));
        assert_eq!(verify.2, "9000");
        assert!(log.iter().all(|(_, c, _)| !c.contains("1234F")));
        assert_eq!(
            log[0],
            (1, "00A4040007A0000000048002".into(), "6130".into())
        );
        assert_eq!(log.last().unwrap().0, 2);
        assert_eq!(log.last().unwrap().2, "6985");
    }

    #[test]
    fn simulated_removal() {
        let (mut card, handle) = fresh(Profile::CapBe);
        handle.set_remove_after(Some(2));
        assert!(card.process(&h("00A4040007A0000000048002")).is_some());
        assert!(card.process(&h("00C0000030")).is_some());
        assert!(card.process(&h("80CA9F1704")).is_none());
        // Back in the reader, it answers again.
        card.reset();
        assert_eq!(raw(&mut card, "00A4040007A0000000048002"), "6130");
        handle.set_remove_after(Some(0));
        assert!(card.process(&h("00C0000030")).is_none());
    }

    #[test]
    fn hostile_apdus_get_status_words() {
        let (mut card, _) = fresh(Profile::CapBe);
        assert_eq!(raw(&mut card, ""), "6700");
        assert_eq!(raw(&mut card, "00A4"), "6700");
        assert_eq!(raw(&mut card, "00A4040000"), "6A82");
        assert_eq!(raw(&mut card, "00A4040008A0000000048002"), "6700");
        assert_eq!(raw(&mut card, "00A40400000007A0000000048002"), "6700"); // extended
        assert_eq!(raw(&mut card, "FFA4040007A0000000048002"), "6E00");
        assert_eq!(raw(&mut card, "0012000000"), "6D00");
        assert_eq!(raw(&mut card, "00A4010007A0000000048002"), "6A86");
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_get_an_answer(
            profile in proptest::sample::select(Profile::ALL.to_vec()),
            commands in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), 1..8),
        ) {
            let (mut card, _) = fresh(profile);
            select(&mut card, profile);
            ask(&mut card, VERIFY_1234);
            for mut capdu in commands {
                // Steer some commands to the card's instructions.
                if capdu.len() >= 2 && capdu[0] % 2 == 0 {
                    capdu[1] = [0xA4, 0xA8, 0xB2, 0xCA, 0x20, 0xAE, 0xC0][usize::from(capdu[0]) % 7];
                    capdu[0] = if capdu[1] == 0xA8 || capdu[1] == 0xCA || capdu[1] == 0xAE { 0x80 } else { 0x00 };
                }
                let r = card.process(&capdu).unwrap();
                proptest::prop_assert!(r.len() >= 2);
            }
        }
    }
}
