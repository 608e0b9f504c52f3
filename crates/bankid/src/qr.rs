//! The animated QR code of a BankID order (RP API v6.0).
//!
//! The QR code shown to the user changes every second:
//!
//! ```text
//! qrTime     = whole seconds since the auth/sign/payment response was received ("0", "1", …)
//! qrAuthCode = lowercase hex(HMAC-SHA256(key = ASCII of qrStartSecret, msg = ASCII of qrTime))
//! qrData     = "bankid." + qrStartToken + "." + qrTime + "." + qrAuthCode
//! ```
//!
//! The key is the secret *string* as the API returns it (the UUID text), not
//! decoded bytes. [`QrCode`] keeps the token, the secret and the moment the
//! start response arrived; [`render_terminal`] and [`render_svg`] turn the data
//! into something a phone can scan.
use std::fmt::Write as _;
use std::time::Instant;

use bankbridge_core::Secret;
use hmac::{Hmac, Mac};
use qrcode::{Color, EcLevel};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Length of a `qrAuthCode`: hex of a SHA-256 HMAC.
pub const AUTH_CODE_LEN: usize = 64;

fn mac_for(qr_start_secret: &str, qr_time: u64) -> HmacSha256 {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = HmacSha256::new_from_slice(qr_start_secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(qr_time.to_string().as_bytes());
    mac
}

/// `qrAuthCode`: lowercase hex HMAC-SHA256 of the decimal `qr_time`, keyed with
/// the ASCII bytes of `qr_start_secret`.
pub fn qr_auth_code(qr_start_secret: &str, qr_time: u64) -> String {
    hex::encode(mac_for(qr_start_secret, qr_time).finalize().into_bytes())
}

/// The text to put in the QR code at `qr_time` seconds after the start
/// response: `bankid.{token}.{time}.{code}`.
pub fn qr_data(qr_start_token: &str, qr_start_secret: &str, qr_time: u64) -> String {
    format!(
        "bankid.{qr_start_token}.{qr_time}.{}",
        qr_auth_code(qr_start_secret, qr_time)
    )
}

/// Split QR data into `(qrStartToken, qrTime, qrAuthCode)`.
///
/// Strict: the prefix must be `bankid.`, the token non-empty and free of
/// dots, the time a decimal number without sign or leading zeros, and the
/// code 64 lowercase hex digits. Anything else is `None`.
pub fn parse_qr_data(s: &str) -> Option<(&str, u64, &str)> {
    let rest = s.strip_prefix("bankid.")?;
    let mut parts = rest.split('.');
    let token = parts.next()?;
    let time = parts.next()?;
    let code = parts.next()?;
    if parts.next().is_some() || token.is_empty() {
        return None;
    }
    if time.is_empty()
        || !time.bytes().all(|b| b.is_ascii_digit())
        || (time.len() > 1 && time.starts_with('0'))
    {
        return None;
    }
    let time: u64 = time.parse().ok()?;
    if code.len() != AUTH_CODE_LEN
        || !code
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    Some((token, time, code))
}

/// Check scanned QR data against an order's token and secret. Returns the
/// `qrTime` it carries when the token matches and the code is right (compared
/// in constant time), `None` otherwise. The caller decides whether that time
/// is recent enough.
pub fn verify_qr_data(s: &str, qr_start_token: &str, qr_start_secret: &str) -> Option<u64> {
    let (token, time, code) = parse_qr_data(s)?;
    if token != qr_start_token {
        return None;
    }
    let code = hex::decode(code).ok()?;
    mac_for(qr_start_secret, time).verify_slice(&code).ok()?;
    Some(time)
}

/// An order's animated QR code: the `qrStartToken`, the `qrStartSecret` and the
/// moment the start response was received.
#[derive(Clone, Debug)]
pub struct QrCode {
    pub token: String,
    pub secret: Secret<String>,
    pub started: Instant,
}

impl QrCode {
    /// A QR code whose clock starts now: call it as soon as the start
    /// response arrives.
    pub fn new(token: impl Into<String>, secret: impl Into<Secret<String>>) -> Self {
        Self::started_at(token, secret, Instant::now())
    }

    /// A QR code whose clock started at `started`.
    pub fn started_at(
        token: impl Into<String>,
        secret: impl Into<Secret<String>>,
        started: Instant,
    ) -> Self {
        Self {
            token: token.into(),
            secret: secret.into(),
            started,
        }
    }

    /// Whole seconds since the start response.
    pub fn elapsed_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// The QR data to show now.
    pub fn data_now(&self) -> String {
        self.data_at(self.elapsed_secs())
    }

    /// The QR data for `secs` whole seconds after the start response.
    pub fn data_at(&self, secs: u64) -> String {
        qr_data(&self.token, self.secret.expose(), secs)
    }
}

/// The background a terminal QR code will be printed on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TerminalBackground {
    /// Light text on a dark background (most terminals): light modules are
    /// drawn with block characters, dark modules are left blank.
    #[default]
    Dark,
    /// Dark text on a light background: dark modules are drawn.
    Light,
}

/// Modules of quiet zone around a terminal code. The standard asks for 4;
/// terminals add their own margin, and 2 keeps the code small while phones
/// still find it.
const TERMINAL_QUIET_ZONE: usize = 2;

fn encode(data: &str) -> Result<qrcode::QrCode, qrcode::types::QrError> {
    qrcode::QrCode::with_error_correction_level(data.as_bytes(), EcLevel::M)
}

fn too_long(data: &str) -> String {
    format!(
        "[cannot draw a QR code: {} bytes exceed its capacity]",
        data.len()
    )
}

/// Draw `data` as a QR code in Unicode half blocks (two module rows per text
/// line), with a quiet zone, for a terminal with a dark background. See
/// [`render_terminal_for`] for light backgrounds.
///
/// BankID data (about 112 bytes) always fits; data beyond a QR code's capacity
/// (2,953 bytes) gives a one-line message instead of a code.
pub fn render_terminal(data: &str) -> String {
    render_terminal_for(data, TerminalBackground::Dark)
}

/// Draw `data` as a QR code in Unicode half blocks for the given background.
pub fn render_terminal_for(data: &str, background: TerminalBackground) -> String {
    let Ok(code) = encode(data) else {
        return too_long(data);
    };
    let width = code.width();
    let colors = code.to_colors();
    let size = width + 2 * TERMINAL_QUIET_ZONE;
    // `drawn(x, y)`: is this cell drawn with ink (a block) in the terminal?
    let drawn = |x: usize, y: usize| -> bool {
        let dark = x >= TERMINAL_QUIET_ZONE
            && y >= TERMINAL_QUIET_ZONE
            && x < TERMINAL_QUIET_ZONE + width
            && y < TERMINAL_QUIET_ZONE + width
            && colors[(y - TERMINAL_QUIET_ZONE) * width + (x - TERMINAL_QUIET_ZONE)] == Color::Dark;
        match background {
            TerminalBackground::Dark => !dark,
            TerminalBackground::Light => dark,
        }
    };
    let mut out = String::with_capacity((size + 1) * size.div_ceil(2) * 3);
    for y in (0..size).step_by(2) {
        for x in 0..size {
            let top = drawn(x, y);
            // An odd last row: the half below the code is quiet zone too.
            let bottom = if y + 1 < size {
                drawn(x, y + 1)
            } else {
                background == TerminalBackground::Dark
            };
            out.push(match (top, bottom) {
                (true, true) => '\u{2588}',
                (true, false) => '\u{2580}',
                (false, true) => '\u{2584}',
                (false, false) => ' ',
            });
        }
        out.push('\n');
    }
    out
}

/// `data` as a standalone SVG document (black on white, 4-module quiet zone,
/// at least 256×256 px, scalable).
pub fn render_svg(data: &str) -> String {
    let code = match encode(data) {
        Ok(code) => code,
        Err(_) => {
            let mut svg = String::new();
            let _ = write!(
                svg,
                r#"<?xml version="1.0" standalone="yes"?><svg xmlns="http://www.w3.org/2000/svg" width="256" height="32"><text x="4" y="20">{}</text></svg>"#,
                too_long(data)
            );
            return svg;
        }
    };
    code.render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(256, 256)
        .dark_color(qrcode::render::svg::Color("#000000"))
        .light_color(qrcode::render::svg::Color("#ffffff"))
        .quiet_zone(true)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const TOKEN: &str = "67df3917-fa0d-44e5-b327-edcc928297f8";
    const SECRET: &str = "d28db9a7-4cde-429e-a983-359be676944c";
    const VECTORS: [(u64, &str); 3] = [
        (
            0,
            "dc69358e712458a66a7525beef148ae8526b1c71610eff2c16cdffb4cdac9bf8",
        ),
        (
            1,
            "949d559bf23403952a94d103e67743126381eda00f0b3cbddbf7c96b1adcbce2",
        ),
        (
            2,
            "a9e5ec59cb4eee4ef4117150abc58fad7a85439a6a96ccbecc3668b41795b3f3",
        ),
    ];

    #[test]
    fn official_vectors() {
        for (t, code) in VECTORS {
            assert_eq!(qr_auth_code(SECRET, t), code, "t={t}");
            assert_eq!(
                qr_data(TOKEN, SECRET, t),
                format!("bankid.{TOKEN}.{t}.{code}")
            );
        }
    }

    #[test]
    fn qr_code_struct_uses_elapsed_seconds() {
        let qr = QrCode::started_at(TOKEN, SECRET, Instant::now() - Duration::from_millis(2500));
        assert_eq!(qr.elapsed_secs(), 2);
        assert_eq!(qr.data_now(), format!("bankid.{TOKEN}.2.{}", VECTORS[2].1));
        assert_eq!(qr.data_at(1), format!("bankid.{TOKEN}.1.{}", VECTORS[1].1));
        let fresh = QrCode::new(TOKEN, SECRET);
        assert_eq!(fresh.data_now(), qr_data(TOKEN, SECRET, 0));
    }

    #[test]
    fn debug_does_not_print_the_secret() {
        let qr = QrCode::new(TOKEN, SECRET);
        let printed = format!("{qr:?}");
        assert!(!printed.contains(SECRET), "{printed}");
        assert!(printed.contains(TOKEN));
    }

    #[test]
    fn parse_round_trips_and_rejects_malformed() {
        let data = qr_data(TOKEN, SECRET, 17);
        assert_eq!(
            parse_qr_data(&data),
            Some((TOKEN, 17, qr_auth_code(SECRET, 17).as_str()))
        );
        let code = VECTORS[0].1;
        for bad in [
            String::new(),
            format!("bankid.{TOKEN}.0"),
            format!("BANKID.{TOKEN}.0.{code}"),
            format!("bankid..0.{code}"),
            format!("bankid.{TOKEN}.00.{code}"),
            format!("bankid.{TOKEN}.-1.{code}"),
            format!("bankid.{TOKEN}.+1.{code}"),
            format!("bankid.{TOKEN}..{code}"),
            format!("bankid.{TOKEN}.0.{}", code.to_uppercase()),
            format!("bankid.{TOKEN}.0.{}", &code[1..]),
            format!("bankid.{TOKEN}.0.{code}.x"),
            format!("bankid.{TOKEN}.99999999999999999999999.{code}"),
        ] {
            assert_eq!(parse_qr_data(&bad), None, "{bad}");
        }
    }

    #[test]
    fn verify_checks_token_and_code() {
        let data = qr_data(TOKEN, SECRET, 5);
        assert_eq!(verify_qr_data(&data, TOKEN, SECRET), Some(5));
        assert_eq!(verify_qr_data(&data, TOKEN, "another-secret"), None);
        assert_eq!(verify_qr_data(&data, "another-token", SECRET), None);
        let forged = format!("bankid.{TOKEN}.6.{}", qr_auth_code(SECRET, 5));
        assert_eq!(verify_qr_data(&forged, TOKEN, SECRET), None);
    }

    #[test]
    fn terminal_rendering_is_a_square_of_half_blocks() {
        let data = qr_data(TOKEN, SECRET, 0);
        let text = render_terminal(&data);
        let lines: Vec<&str> = text.lines().collect();
        let width = lines[0].chars().count();
        assert!(width > 21 + 2 * TERMINAL_QUIET_ZONE, "{width}");
        assert!(lines.iter().all(|l| l.chars().count() == width));
        assert_eq!(lines.len(), width.div_ceil(2));
        assert!(
            text.chars()
                .all(|c| matches!(c, ' ' | '\n' | '\u{2580}' | '\u{2584}' | '\u{2588}'))
        );
        // Dark background: the quiet zone is drawn (light), so the first line is full blocks.
        assert!(lines[0].chars().all(|c| c == '\u{2588}'), "{}", lines[0]);
        // Light background: the quiet zone is blank.
        let light = render_terminal_for(&data, TerminalBackground::Light);
        assert!(light.lines().next().unwrap().chars().all(|c| c == ' '));
        assert_ne!(text, render_terminal(&qr_data(TOKEN, SECRET, 1)));
    }

    /// Read a terminal rendering back as pixels (as a camera would) and
    /// decode it: the code must carry the data.
    fn decode_terminal(text: &str, background: TerminalBackground) -> String {
        const SCALE: usize = 4;
        let rows: Vec<Vec<char>> = text.lines().map(|l| l.chars().collect()).collect();
        let width = rows[0].len();
        let height = rows.len() * 2;
        // A drawn cell is light on a dark terminal and dark on a light one.
        let ink_is_dark = background == TerminalBackground::Light;
        let module_dark = |x: usize, y: usize| -> bool {
            let c = rows[y / 2][x];
            let drawn = matches!(
                (c, y % 2),
                ('\u{2588}', _) | ('\u{2580}', 0) | ('\u{2584}', 1)
            );
            drawn == ink_is_dark
        };
        let mut img =
            rqrr::PreparedImage::prepare_from_greyscale(width * SCALE, height * SCALE, |x, y| {
                if module_dark(x / SCALE, y / SCALE) {
                    0
                } else {
                    255
                }
            });
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1, "one QR code expected");
        grids[0].decode().expect("decodable").1
    }

    #[test]
    fn terminal_rendering_decodes_back_to_the_data() {
        let data = qr_data(TOKEN, SECRET, 42);
        for bg in [TerminalBackground::Dark, TerminalBackground::Light] {
            // On a light background the quiet zone is the terminal's own
            // light colour; the decoder sees the blank cells as light.
            assert_eq!(decode_terminal(&render_terminal_for(&data, bg), bg), data);
        }
    }

    #[test]
    fn svg_rendering_is_an_svg_document() {
        let svg = render_svg(&qr_data(TOKEN, SECRET, 0));
        assert!(svg.contains("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
        assert!(svg.contains("#000000"));
    }

    #[test]
    fn data_beyond_capacity_gives_a_message() {
        let long = "x".repeat(5000);
        assert!(render_terminal(&long).contains("cannot draw"));
        assert!(render_svg(&long).contains("</svg>"));
    }
}
