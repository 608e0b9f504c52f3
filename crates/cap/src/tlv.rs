//! BER-TLV as EMV uses it: multi-byte tags, definite lengths up to three
//! bytes, constructed objects (tag bit 0x20) holding more TLVs, and data
//! object lists (DOLs: tag + length, no value) that tell the terminal what
//! to send.
//!
//! Parsing borrows from the input and never panics on hostile bytes.

/// An EMV tag, its bytes read big-endian (`9F37` → `0x9F37`).
pub type Tag = u32;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlvError {
    #[error("TLV data ends inside a tag at byte {0}")]
    TruncatedTag(usize),
    #[error("TLV data ends inside a length at byte {0}")]
    TruncatedLength(usize),
    #[error("tag {tag:X} at byte {at} claims {len} bytes but only {left} remain")]
    TruncatedValue {
        tag: Tag,
        at: usize,
        len: usize,
        left: usize,
    },
    #[error("unsupported TLV length form 0x{form:02X} at byte {at}")]
    BadLength { form: u8, at: usize },
    #[error("tag longer than 4 bytes at byte {0}")]
    LongTag(usize),
}

/// One data object, borrowing its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tlv<'a> {
    pub tag: Tag,
    pub value: &'a [u8],
}

impl<'a> Tlv<'a> {
    /// Whether the value holds further TLVs.
    pub fn is_constructed(&self) -> bool {
        first_tag_byte(self.tag) & 0x20 != 0
    }

    /// The TLVs inside a constructed object.
    pub fn children(&self) -> Result<Vec<Tlv<'a>>, TlvError> {
        parse(self.value)
    }
}

fn first_tag_byte(tag: Tag) -> u8 {
    let bytes = tag.to_be_bytes();
    bytes.iter().copied().find(|b| *b != 0).unwrap_or(0)
}

/// Read a tag at `bytes[at..]`; returns (tag, bytes used).
fn read_tag(bytes: &[u8], at: usize) -> Result<(Tag, usize), TlvError> {
    let first = *bytes.get(at).ok_or(TlvError::TruncatedTag(at))?;
    let mut tag = Tag::from(first);
    let mut used = 1;
    if first & 0x1F == 0x1F {
        loop {
            let b = *bytes.get(at + used).ok_or(TlvError::TruncatedTag(at))?;
            used += 1;
            if used > 4 {
                return Err(TlvError::LongTag(at));
            }
            tag = (tag << 8) | Tag::from(b);
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    Ok((tag, used))
}

/// Read a length at `bytes[at..]`; returns (length, bytes used).
fn read_length(bytes: &[u8], at: usize) -> Result<(usize, usize), TlvError> {
    let first = *bytes.get(at).ok_or(TlvError::TruncatedLength(at))?;
    if first < 0x80 {
        return Ok((usize::from(first), 1));
    }
    let n = usize::from(first & 0x7F);
    if n == 0 || n > 3 {
        return Err(TlvError::BadLength { form: first, at });
    }
    let raw = bytes
        .get(at + 1..at + 1 + n)
        .ok_or(TlvError::TruncatedLength(at))?;
    Ok((
        raw.iter().fold(0, |acc, b| (acc << 8) | usize::from(*b)),
        1 + n,
    ))
}

/// Every top-level object in `bytes`. Padding bytes `00` / `FF` between
/// objects are skipped, as EMV allows.
pub fn parse(bytes: &[u8]) -> Result<Vec<Tlv<'_>>, TlvError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == 0x00 || bytes[at] == 0xFF {
            at += 1;
            continue;
        }
        let (tag, tag_len) = read_tag(bytes, at)?;
        let (len, len_len) = read_length(bytes, at + tag_len)?;
        let start = at + tag_len + len_len;
        let left = bytes.len().saturating_sub(start);
        if len > left {
            return Err(TlvError::TruncatedValue { tag, at, len, left });
        }
        out.push(Tlv {
            tag,
            value: &bytes[start..start + len],
        });
        at = start + len;
    }
    Ok(out)
}

/// The value at `path` (each step a tag, descending into constructed
/// objects), e.g. `[0x6F, 0xA5, 0x9F38]` for the PDOL in an FCI.
pub fn find_path<'a>(bytes: &'a [u8], path: &[Tag]) -> Result<Option<&'a [u8]>, TlvError> {
    let Some((first, rest)) = path.split_first() else {
        return Ok(None);
    };
    for tlv in parse(bytes)? {
        if tlv.tag == *first {
            if rest.is_empty() {
                return Ok(Some(tlv.value));
            }
            if tlv.is_constructed()
                && let Some(found) = find_path(tlv.value, rest)?
            {
                return Ok(Some(found));
            }
        }
    }
    Ok(None)
}

/// The first value with `tag` anywhere in `bytes`, depth first.
pub fn find(bytes: &[u8], tag: Tag) -> Result<Option<&[u8]>, TlvError> {
    for tlv in parse(bytes)? {
        if tlv.tag == tag {
            return Ok(Some(tlv.value));
        }
        if tlv.is_constructed()
            && let Some(found) = find(tlv.value, tag)?
        {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// The bytes of a tag (`0x9F37` → `[0x9F, 0x37]`).
pub fn tag_bytes(tag: Tag) -> Vec<u8> {
    let bytes = tag.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(3);
    bytes[skip..].to_vec()
}

/// Encode one object.
pub fn encode(tag: Tag, value: &[u8]) -> Vec<u8> {
    let mut out = tag_bytes(tag);
    let len = value.len();
    match len {
        0..=0x7F => out.push(len as u8),
        0x80..=0xFF => out.extend([0x81, len as u8]),
        0x100..=0xFFFF => out.extend([0x82, (len >> 8) as u8, len as u8]),
        _ => out.extend([0x83, (len >> 16) as u8, (len >> 8) as u8, len as u8]),
    }
    out.extend_from_slice(value);
    out
}

/// Encode a constructed object from already encoded children.
pub fn encode_constructed(tag: Tag, children: &[Vec<u8>]) -> Vec<u8> {
    encode(tag, &children.concat())
}

/// One entry of a data object list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DolEntry {
    pub tag: Tag,
    pub len: usize,
}

/// Parse a data object list (tags and lengths, no values).
pub fn parse_dol(bytes: &[u8]) -> Result<Vec<DolEntry>, TlvError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let (tag, tag_len) = read_tag(bytes, at)?;
        // One byte, not a BER length (EMV Book 3, 5.4): `81` asks for 129
        // bytes. Read as BER, a card could ask for megabytes.
        let len = *bytes
            .get(at + tag_len)
            .ok_or(TlvError::TruncatedLength(at + tag_len))?;
        out.push(DolEntry {
            tag,
            len: usize::from(len),
        });
        at += tag_len + 1;
    }
    Ok(out)
}

/// Total length of the data a DOL asks for.
pub fn dol_data_len(dol: &[DolEntry]) -> usize {
    dol.iter().map(|e| e.len).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    #[test]
    fn fci_paths() {
        // The recorded Belgian CAP card's FCI.
        let fci = h(
            "6F2E8407A0000000048002A5239F38039F35015F2D026672BF0C159F5501005F2C020056DF0709424B53303536303038",
        );
        assert_eq!(
            find_path(&fci, &[0x6F, 0x84]).unwrap(),
            Some(&h("A0000000048002")[..])
        );
        assert_eq!(
            find_path(&fci, &[0x6F, 0xA5, 0x9F38]).unwrap(),
            Some(&h("9F3501")[..])
        );
        assert_eq!(
            find_path(&fci, &[0x6F, 0xA5, 0xBF0C, 0xDF07]).unwrap(),
            Some(&b"BKS056008"[..])
        );
        assert_eq!(find(&fci, 0x5F2C).unwrap(), Some(&h("0056")[..]));
        assert_eq!(find(&fci, 0x9F56).unwrap(), None);
    }

    #[test]
    fn dol_parsing() {
        let cdol1 = h("9F02069F03069F1A0295055F2A029A039C019F37049F4C029F3403");
        let dol = parse_dol(&cdol1).unwrap();
        assert_eq!(dol.len(), 10);
        assert_eq!(
            dol[0],
            DolEntry {
                tag: 0x9F02,
                len: 6
            }
        );
        assert_eq!(dol[3], DolEntry { tag: 0x95, len: 5 });
        assert_eq!(dol_data_len(&dol), 0x22);
        // A length is one byte, whatever its value. Read as BER, `81 9A`
        // was one length of 154 and a card could ask for megabytes (the
        // `cap_card` fuzz target found a challenge field too wide to format).
        assert_eq!(
            parse_dol(&h("9F37819A03")).unwrap(),
            [
                DolEntry {
                    tag: 0x9F37,
                    len: 0x81
                },
                DolEntry { tag: 0x9A, len: 3 }
            ]
        );
        assert_eq!(dol_data_len(&parse_dol(&h("9F3783")).unwrap()), 0x83);
    }

    #[test]
    fn lengths_and_errors() {
        let long = vec![0xAB; 300];
        let enc = encode(0x70, &long);
        assert_eq!(&enc[..4], &[0x70, 0x82, 0x01, 0x2C]);
        assert_eq!(parse(&enc).unwrap()[0].value.len(), 300);
        assert!(matches!(
            parse(&h("9F3605AA")),
            Err(TlvError::TruncatedValue { tag: 0x9F36, .. })
        ));
        assert!(matches!(parse(&h("9F")), Err(TlvError::TruncatedTag(0))));
        assert!(matches!(parse(&h("5A84")), Err(TlvError::BadLength { .. })));
        assert!(matches!(
            parse(&h("DFFFFFFF0100")),
            Err(TlvError::LongTag(0))
        ));
        // Padding between objects.
        assert_eq!(parse(&h("00 5A0112 FF")).unwrap().len(), 1);
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse(&bytes);
            let _ = parse_dol(&bytes);
            let _ = find(&bytes, 0x9F36);
        }

        #[test]
        fn encode_parse_roundtrip(
            tag in prop_oneof![Just(0x5Au32), Just(0x9F36), Just(0xDF07), Just(0x9F26), Just(0xBF0C)],
            value in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let enc = encode(tag, &value);
            let parsed = parse(&enc).unwrap();
            prop_assert_eq!(parsed.len(), 1);
            prop_assert_eq!(parsed[0].tag, tag);
            prop_assert_eq!(parsed[0].value, &value[..]);
        }
    }
}
