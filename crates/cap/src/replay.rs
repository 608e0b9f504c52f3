//! A recorded card exchange played back as a [`SmartCard`], for test
//! vectors: a host run against a recording must send exactly the recorded
//! commands to get the recorded answers, and so the recorded code.
//!
//! # Transcript format
//!
//! Plain text, one item per line:
//!
//! ```text
//! # A comment; also allowed after an item.
//! ATR 3B67000000000000009000
//! 00A4040007A0000000048002 -> 6F2E8407A0000000048002A523 ... 9000
//! 80CA9F1700 -> 9F17 01 03 90 00
//! ```
//!
//! - `ATR <hex>`: the answer to reset, exactly once.
//! - `<C-APDU hex> -> <R-APDU hex>`: a command and the card's answer,
//!   which ends with SW1 SW2. Spaces inside hex are allowed.
//! - Blank lines and `#` comments are ignored.
//!
//! # Matching
//!
//! A command gets the answer recorded for the same bytes; failing that, for
//! the same command with or without a trailing Le = 00 (a T=1 host appends
//! one, a T=0 host does not). When a command was recorded several times the
//! answers are given in order, the last one repeating. A command not in the
//! recording gets `6A82` (not found), and is listed in
//! [`ReplayHandle::unmatched`].
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::transport::SmartCard;
use crate::virtual_card::masked_hex;

/// A transcript could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("transcript line {line}: {message}")]
    Syntax { line: usize, message: String },
    #[error("the transcript has no `ATR <hex>` line")]
    NoAtr,
    #[error("cannot read transcript {}: {message}", .path.display())]
    Io { path: PathBuf, message: String },
}

struct Entry {
    command: Vec<u8>,
    response: Vec<u8>,
}

#[derive(Default)]
struct Progress {
    /// Per entry: answered at least once.
    used: Vec<bool>,
    played: usize,
    unmatched: Vec<String>,
}

/// A recorded card: answers recorded commands with their recorded answers.
pub struct ReplayCard {
    atr: Vec<u8>,
    entries: Arc<Vec<Entry>>,
    progress: Arc<Mutex<Progress>>,
}

fn parse_hex(text: &str, what: &str, line: usize) -> Result<Vec<u8>, ReplayError> {
    let clean: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(&clean).map_err(|_| ReplayError::Syntax {
        line,
        message: format!("{what} {clean:?} is not an even number of hex digits"),
    })
}

/// The command without a trailing Le = 00, so that T=0 and T=1 forms match.
fn without_le(capdu: &[u8]) -> &[u8] {
    match capdu {
        // Case 2: CLA INS P1 P2 Le.
        [_, _, _, _, 0x00] => &capdu[..4],
        // Case 4: CLA INS P1 P2 Lc data Le.
        [_, _, _, _, lc, rest @ ..]
            if *lc != 0 && rest.len() == usize::from(*lc) + 1 && rest.last() == Some(&0x00) =>
        {
            &capdu[..capdu.len() - 1]
        }
        _ => capdu,
    }
}

impl ReplayCard {
    /// Read a transcript (see the module documentation for the format).
    pub fn parse(text: &str) -> Result<ReplayCard, ReplayError> {
        let mut atr = None;
        let mut entries = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let head = content.get(..3).unwrap_or("");
            let after_head = content.get(3..).unwrap_or("");
            if head.eq_ignore_ascii_case("ATR") && after_head.starts_with(char::is_whitespace) {
                if atr.is_some() {
                    return Err(ReplayError::Syntax {
                        line,
                        message: "a second ATR line; a transcript records one card".into(),
                    });
                }
                let bytes = parse_hex(after_head, "ATR", line)?;
                if !(2..=33).contains(&bytes.len()) {
                    return Err(ReplayError::Syntax {
                        line,
                        message: format!("an ATR has 2 to 33 bytes, this one {}", bytes.len()),
                    });
                }
                atr = Some(bytes);
                continue;
            }
            let Some((command, response)) = content.split_once("->") else {
                return Err(ReplayError::Syntax {
                    line,
                    message: format!(
                        "expected `ATR <hex>` or `<command hex> -> <response hex>`, got {content:?}"
                    ),
                });
            };
            let command = parse_hex(command, "command", line)?;
            let response = parse_hex(response, "response", line)?;
            if command.len() < 4 {
                return Err(ReplayError::Syntax {
                    line,
                    message: "a command has at least 4 bytes (CLA INS P1 P2)".into(),
                });
            }
            if response.len() < 2 {
                return Err(ReplayError::Syntax {
                    line,
                    message: "a response ends with the 2 status bytes SW1 SW2".into(),
                });
            }
            entries.push(Entry { command, response });
        }
        let atr = atr.ok_or(ReplayError::NoAtr)?;
        let progress = Progress {
            used: vec![false; entries.len()],
            ..Progress::default()
        };
        Ok(ReplayCard {
            atr,
            entries: Arc::new(entries),
            progress: Arc::new(Mutex::new(progress)),
        })
    }

    pub fn from_file(path: impl AsRef<Path>) -> Result<ReplayCard, ReplayError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ReplayError::Io {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        ReplayCard::parse(&text)
    }

    /// Recorded exchanges in the transcript.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Follows what the card played wherever it ends up (a reader slot, a
    /// vpcd thread).
    pub fn handle(&self) -> ReplayHandle {
        ReplayHandle {
            progress: Arc::clone(&self.progress),
        }
    }

    /// Commands answered from the recording.
    pub fn played(&self) -> usize {
        self.handle().played()
    }

    /// Commands not in the recording (answered `6A82`), as hex.
    pub fn unmatched(&self) -> Vec<String> {
        self.handle().unmatched()
    }

    /// The entry answering `capdu`: the first not yet used, else the last.
    fn find(&self, capdu: &[u8], progress: &Progress) -> Option<usize> {
        let pick = |same: &dyn Fn(&Entry) -> bool| {
            let matching: Vec<usize> = (0..self.entries.len())
                .filter(|&i| same(&self.entries[i]))
                .collect();
            matching
                .iter()
                .copied()
                .find(|&i| !progress.used.get(i).copied().unwrap_or(true))
                .or_else(|| matching.last().copied())
        };
        pick(&|e: &Entry| e.command == capdu)
            .or_else(|| pick(&|e: &Entry| without_le(&e.command) == without_le(capdu)))
    }
}

impl fmt::Debug for ReplayCard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayCard")
            .field("atr", &hex::encode_upper(&self.atr))
            .field("exchanges", &self.entries.len())
            .finish()
    }
}

fn lock(progress: &Mutex<Progress>) -> MutexGuard<'_, Progress> {
    progress.lock().unwrap_or_else(|p| p.into_inner())
}

impl SmartCard for ReplayCard {
    fn atr(&self) -> Vec<u8> {
        self.atr.clone()
    }

    /// A recording has no session state to forget.
    fn reset(&mut self) {}

    fn process(&mut self, capdu: &[u8]) -> Option<Vec<u8>> {
        let mut progress = lock(&self.progress);
        match self.find(capdu, &progress) {
            Some(i) => {
                if let Some(used) = progress.used.get_mut(i) {
                    *used = true;
                }
                progress.played += 1;
                Some(self.entries[i].response.clone())
            }
            None => {
                let shown = masked_hex(capdu);
                tracing::debug!(command = %shown, "replayed card: command not in the recording");
                progress.unmatched.push(shown);
                Some(vec![0x6A, 0x82])
            }
        }
    }
}

/// Follows a [`ReplayCard`] owned elsewhere.
#[derive(Clone)]
pub struct ReplayHandle {
    progress: Arc<Mutex<Progress>>,
}

impl ReplayHandle {
    /// Commands answered from the recording.
    pub fn played(&self) -> usize {
        lock(&self.progress).played
    }

    /// Commands not in the recording (answered `6A82`), as upper-case hex
    /// with any VERIFY PIN block masked.
    pub fn unmatched(&self) -> Vec<String> {
        lock(&self.progress).unmatched.clone()
    }
}

impl fmt::Debug for ReplayHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let progress = lock(&self.progress);
        f.debug_struct("ReplayHandle")
            .field("played", &progress.played)
            .field("unmatched", &progress.unmatched.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    fn ask(card: &mut ReplayCard, capdu: &str) -> String {
        hex::encode_upper(card.process(&h(capdu)).unwrap())
    }

    const CAP_BE: &str = include_str!("../tests/fixtures/cap_be.replay");
    const BANCONTACT_BE: &str = include_str!("../tests/fixtures/bancontact_be.replay");

    #[test]
    fn fixtures_parse() {
        let cap = ReplayCard::parse(CAP_BE).unwrap();
        assert_eq!(cap.atr(), h("3B67000000000000009000"));
        assert_eq!(cap.len(), 12);
        let bancontact = ReplayCard::parse(BANCONTACT_BE).unwrap();
        assert_eq!(bancontact.atr(), h("3B701100FF"));
        assert_eq!(bancontact.len(), 9);
    }

    #[test]
    fn answers_recorded_commands_with_or_without_le() {
        let mut card = ReplayCard::parse(CAP_BE).unwrap();
        let handle = card.handle();
        assert_eq!(ask(&mut card, "80CA9F1700"), "9F1701039000");
        // Without the recorded Le = 00 (the 4-byte form)...
        assert_eq!(ask(&mut card, "80CA9F17"), "9F1701039000");
        // ...and T=1 hosts append Le = 00 to a case-4 command.
        assert!(ask(&mut card, "00A4040007A000000004800200").starts_with("6F2E84"));
        assert!(ask(&mut card, "00A4040007A0000000048002").ends_with("9000"));
        assert_eq!(ask(&mut card, "0020008008241234FFFFFFFFFF"), "9000");
        assert_eq!(handle.played(), 5);
        assert!(handle.unmatched().is_empty());
        // Not recorded: 6A82, listed with the PIN block masked.
        assert_eq!(ask(&mut card, "0020008008249999FFFFFFFFFF"), "6A82");
        assert_eq!(ask(&mut card, "00A4040007A0000000031010"), "6A82");
        assert_eq!(
            handle.unmatched(),
            vec![
                format!("0020008008{}", "*".repeat(16)),
                "00A4040007A0000000031010".to_owned()
            ]
        );
        assert_eq!(card.played(), 5);
        // A recorded Le other than 00 is not dropped.
        assert_eq!(ask(&mut card, "80CA9F1704"), "6A82");
    }

    #[test]
    fn repeated_commands_play_in_order_then_repeat_the_last() {
        let mut card = ReplayCard::parse(
            "ATR 3B00\n80CA9F1700 -> 9F1701039000\n80CA9F1700 -> 9F1701029000 # after a wrong PIN\n",
        )
        .unwrap();
        assert_eq!(ask(&mut card, "80CA9F1700"), "9F1701039000");
        assert_eq!(ask(&mut card, "80CA9F17"), "9F1701029000");
        assert_eq!(ask(&mut card, "80CA9F1700"), "9F1701029000");
        // A reset changes nothing: a recording has no state.
        card.reset();
        assert_eq!(ask(&mut card, "80CA9F1700"), "9F1701029000");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let cases = [
            ("ATR 3B00\n\n00A4 0400 -> 90", 3, "2 status bytes"),
            ("ATR 3B00\n00A4 -> 9000", 2, "at least 4 bytes"),
            ("# c\nATR 3B0\n", 2, "hex digits"),
            ("ATR 3B00\nATR 3B00", 2, "second ATR"),
            ("ATR 3B00\n00A40400 9000", 2, "expected `ATR"),
            ("ATR 3B00\n00A40400 -> 90ZZ", 2, "response"),
            ("ATR 3B\n", 1, "2 to 33 bytes"),
        ];
        for (text, line, needle) in cases {
            let err = ReplayCard::parse(text).unwrap_err();
            match &err {
                ReplayError::Syntax { line: l, message } => {
                    assert_eq!(*l, line, "{text:?}: {err}");
                    assert!(err.to_string().contains(needle), "{text:?}: {message}");
                }
                other => panic!("{text:?}: {other}"),
            }
        }
        assert!(matches!(
            ReplayCard::parse("# nothing\n00A40400 -> 9000"),
            Err(ReplayError::NoAtr)
        ));
        let err = ReplayCard::from_file("/nonexistent/x.replay").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x.replay"), "{err}");
    }

    #[test]
    fn spaces_and_lowercase_hex_are_fine() {
        let mut card =
            ReplayCard::parse("atr 3b 67 00\n 00a4 0400 07 a0000000048002 ->  6f00 9000  \n")
                .unwrap();
        assert_eq!(card.atr(), h("3B6700"));
        assert_eq!(ask(&mut card, "00A4040007A0000000048002"), "6F009000");
    }
}
