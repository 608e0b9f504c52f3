//! Just enough DER to build an OCSP response and to read the few fields of
//! our own certificates it needs (issuer name, public key, serial number).
//! Not a general ASN.1 library: the reader only walks well-formed,
//! definite-length TLVs and says `None` on anything else.

pub const SEQUENCE: u8 = 0x30;
pub const INTEGER: u8 = 0x02;
pub const BIT_STRING: u8 = 0x03;
pub const OCTET_STRING: u8 = 0x04;
pub const NULL: u8 = 0x05;
pub const OID: u8 = 0x06;
pub const ENUMERATED: u8 = 0x0a;
pub const GENERALIZED_TIME: u8 = 0x18;

/// Context-specific, constructed tag `[n]` (EXPLICIT tagging).
pub const fn explicit(n: u8) -> u8 {
    0xa0 | n
}

/// Context-specific, primitive tag `[n]` (IMPLICIT tagging of a primitive).
pub const fn implicit(n: u8) -> u8 {
    0x80 | n
}

/// One TLV with a definite length.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

pub fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(SEQUENCE, &parts.concat())
}

/// An OBJECT IDENTIFIER from its dotted arcs.
pub fn oid(arcs: &[u64]) -> Vec<u8> {
    let mut body = Vec::new();
    if arcs.len() >= 2 {
        push_base128(&mut body, arcs[0] * 40 + arcs[1]);
        for &arc in &arcs[2..] {
            push_base128(&mut body, arc);
        }
    }
    tlv(OID, &body)
}

fn push_base128(out: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 10];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            break;
        }
    }
    let last = tmp.len() - 1;
    for (j, b) in tmp.iter().enumerate().skip(i) {
        out.push(if j == last { *b } else { b | 0x80 });
    }
}

/// A non-negative INTEGER from big-endian magnitude bytes.
pub fn unsigned_integer(magnitude: &[u8]) -> Vec<u8> {
    let trimmed: &[u8] = {
        let skip = magnitude
            .iter()
            .take_while(|b| **b == 0)
            .count()
            .min(magnitude.len().saturating_sub(1));
        &magnitude[skip..]
    };
    if trimmed.is_empty() {
        return tlv(INTEGER, &[0]);
    }
    if trimmed[0] & 0x80 != 0 {
        let mut v = vec![0];
        v.extend_from_slice(trimmed);
        tlv(INTEGER, &v)
    } else {
        tlv(INTEGER, trimmed)
    }
}

/// A BIT STRING with no unused bits.
pub fn bit_string(bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(bytes.len() + 1);
    v.push(0);
    v.extend_from_slice(bytes);
    tlv(BIT_STRING, &v)
}

/// GeneralizedTime `YYYYMMDDHHMMSSZ`.
pub fn generalized_time(t: chrono::DateTime<chrono::Utc>) -> Vec<u8> {
    tlv(
        GENERALIZED_TIME,
        t.format("%Y%m%d%H%M%SZ").to_string().as_bytes(),
    )
}

/// A parsed TLV: its tag, its content, and the whole encoding.
#[derive(Clone, Copy, Debug)]
pub struct Tlv<'a> {
    pub tag: u8,
    pub content: &'a [u8],
    pub raw: &'a [u8],
}

/// Read one TLV from the front of `input`; returns it and the rest.
pub fn read(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    // Multi-byte tags never occur in what we read.
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | b as usize;
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    let header = input.len() - rest.len();
    let tlv = Tlv {
        tag,
        content: &rest[..len],
        raw: &input[..header + len],
    };
    Some((tlv, &rest[len..]))
}

/// All TLVs inside a constructed value's content.
pub fn children(content: &[u8]) -> Option<Vec<Tlv<'_>>> {
    let mut out = Vec::new();
    let mut rest = content;
    while !rest.is_empty() {
        let (t, r) = read(rest)?;
        out.push(t);
        rest = r;
    }
    Some(out)
}

/// The fields of an X.509 certificate an OCSP response refers to.
pub struct CertFields<'a> {
    pub serial: &'a [u8],
    pub issuer: &'a [u8],
    pub subject: &'a [u8],
    /// The subjectPublicKey BIT STRING's bytes, without the unused-bits byte.
    pub public_key: &'a [u8],
}

/// Pick serial, issuer, subject and public key out of a certificate's DER.
pub fn cert_fields(cert: &[u8]) -> Option<CertFields<'_>> {
    let (outer, _) = read(cert)?;
    let parts = children(outer.content)?;
    let tbs = children(parts.first()?.content)?;
    // tbsCertificate: [0] version (optional), serial, signature, issuer,
    // validity, subject, subjectPublicKeyInfo, …
    let off = usize::from(tbs.first()?.tag == explicit(0));
    let serial = tbs.get(off)?;
    let issuer = tbs.get(off + 2)?;
    let subject = tbs.get(off + 4)?;
    let spki = children(tbs.get(off + 5)?.content)?;
    let key = spki.get(1)?;
    if serial.tag != INTEGER || key.tag != BIT_STRING || key.content.is_empty() {
        return None;
    }
    Some(CertFields {
        serial: serial.content,
        issuer: issuer.raw,
        subject: subject.raw,
        public_key: &key.content[1..],
    })
}

/// A certificate's signed part (tbsCertificate, whole TLV) and its
/// signature's bytes (the BIT STRING without its unused-bits byte).
pub fn cert_signed_parts(cert: &[u8]) -> Option<(&[u8], &[u8])> {
    let (outer, _) = read(cert)?;
    let parts = children(outer.content)?;
    let (tbs, sig) = (parts.first()?, parts.get(2)?);
    if sig.tag != BIT_STRING || sig.content.is_empty() {
        return None;
    }
    Some((tbs.raw, &sig.content[1..]))
}

/// `CN=…, O=…` from a DER Name, for the attributes a BankID RP certificate
/// carries; others are skipped.
pub fn name_to_string(name: &[u8]) -> Option<String> {
    let (outer, _) = read(name)?;
    let mut parts = Vec::new();
    for rdn in children(outer.content)? {
        for atv in children(rdn.content)? {
            let f = children(atv.content)?;
            let (oid_tlv, value) = (f.first()?, f.get(1)?);
            let label = match oid_tlv.content {
                [0x55, 0x04, 0x03] => "CN",
                [0x55, 0x04, 0x05] => "serialNumber",
                [0x55, 0x04, 0x06] => "C",
                [0x55, 0x04, 0x0a] => "O",
                [0x55, 0x04, 0x0b] => "OU",
                [0x55, 0x04, 0x29] => "name",
                _ => continue,
            };
            parts.push(format!(
                "{label}={}",
                String::from_utf8_lossy(value.content)
            ));
        }
    }
    Some(parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_and_oids_encode_as_der() {
        assert_eq!(tlv(OCTET_STRING, &[1, 2]), vec![4, 2, 1, 2]);
        let long = tlv(OCTET_STRING, &[0u8; 300]);
        assert_eq!(&long[..4], &[4, 0x82, 1, 44]);
        // id-pkix-ocsp-basic
        assert_eq!(
            oid(&[1, 3, 6, 1, 5, 5, 7, 48, 1, 1]),
            vec![6, 9, 0x2b, 6, 1, 5, 5, 7, 0x30, 1, 1]
        );
        // sha256: 2.16.840.1.101.3.4.2.1
        assert_eq!(
            oid(&[2, 16, 840, 1, 101, 3, 4, 2, 1]),
            vec![6, 9, 0x60, 0x86, 0x48, 1, 0x65, 3, 4, 2, 1]
        );
        assert_eq!(unsigned_integer(&[0x80]), vec![2, 2, 0, 0x80]);
        assert_eq!(unsigned_integer(&[0, 0, 5]), vec![2, 1, 5]);
        assert_eq!(unsigned_integer(&[]), vec![2, 1, 0]);
    }

    proptest::proptest! {
        /// Arbitrary bytes never make the reader panic.
        #[test]
        fn any_bytes_are_read_or_refused(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = read(&bytes);
            let _ = children(&bytes);
            let _ = cert_fields(&bytes);
            let _ = name_to_string(&bytes);
        }
    }

    #[test]
    fn reader_round_trips_and_refuses_truncation() {
        let v = seq(&[&tlv(INTEGER, &[7]), &tlv(OCTET_STRING, &[0u8; 200])]);
        let (t, rest) = read(&v).unwrap();
        assert!(rest.is_empty());
        assert_eq!(t.tag, SEQUENCE);
        let kids = children(t.content).unwrap();
        assert_eq!(kids.len(), 2);
        assert_eq!(kids[1].content.len(), 200);
        assert!(read(&v[..v.len() - 1]).is_none());
        assert!(read(&[]).is_none());
        assert!(read(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_none());
    }
}
