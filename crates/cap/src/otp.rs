//! From the card's cryptogram to the digits a CAP reader shows.
//!
//! - [`ipb_filter`]: the issuer's bitmap (IPB) picks bits of
//!   `[PSN] ‖ CID ‖ ATC ‖ AC ‖ IAD`; the picked bits, read as one binary
//!   number, are the code.
//! - [`belgian`]: the formula Belgian readers apply to Bancontact cards and to
//!   Belgian cards without an IPB.
//! - [`mix_sign_data`]: M2 ("sign") mixes the numbers the user typed into the
//!   cryptogram off-card, with single DES.
use des::Des;
use des::cipher::{BlockEncrypt, KeyInit, generic_array::GenericArray};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OtpError {
    #[error("the issuer bitmap selects {0} bits; at most 128 fit a code")]
    TooManyBits(u32),
    #[error("the issuer bitmap selects no bit")]
    NoBits,
}

/// The bits of `data` where `ipb` has a 1, most significant first, as a
/// number. `data` shorter than the IPB counts as zeros.
pub fn ipb_filter(data: &[u8], ipb: &[u8]) -> Result<u128, OtpError> {
    let selected: u32 = ipb.iter().map(|b| b.count_ones()).sum();
    if selected > 128 {
        return Err(OtpError::TooManyBits(selected));
    }
    if selected == 0 {
        return Err(OtpError::NoBits);
    }
    let mut value: u128 = 0;
    for (i, mask) in ipb.iter().enumerate() {
        let byte = data.get(i).copied().unwrap_or(0);
        for bit in (0..8).rev() {
            if mask >> bit & 1 == 1 {
                value = (value << 1) | u128::from(byte >> bit & 1);
            }
        }
    }
    Ok(value)
}

/// The Belgian code: 10 bits of AC[5..7], the ATC's low byte and AC[7],
/// with the last digit copied to the front, kept to 8 digits.
pub fn belgian(ac: &[u8; 8], atc: u16) -> u32 {
    let high = (u32::from(u16::from_be_bytes([ac[5], ac[6]])) & 0x3FF) << 16;
    let mut v = high | (u32::from(atc & 0xFF) << 8) | u32::from(ac[7]);
    v += (v % 10) * 10_000_000;
    v % 100_000_000
}

/// Mix M2 sign data into the cryptogram: the numbers joined by `F` (and one
/// more `F` if that leaves an odd count of digits), then `80` and zero
/// padding to whole DES blocks, encrypted DES-CBC (IV zero) under the AC;
/// the last block is the new AC. The numbers must be decimal digits.
pub fn mix_sign_data(ac: &[u8; 8], numbers: &[String]) -> [u8; 8] {
    let mut nibbles: Vec<u8> = Vec::new();
    for (i, n) in numbers.iter().enumerate() {
        if i > 0 {
            nibbles.push(0xF);
        }
        nibbles.extend(n.bytes().map(|b| b.wrapping_sub(b'0') & 0x0F));
    }
    if nibbles.len() % 2 == 1 {
        nibbles.push(0xF);
    }
    let mut bytes: Vec<u8> = nibbles.chunks(2).map(|p| (p[0] << 4) | p[1]).collect();
    bytes.push(0x80);
    while !bytes.len().is_multiple_of(8) {
        bytes.push(0);
    }
    let cipher = Des::new(GenericArray::from_slice(ac));
    let mut chain = [0u8; 8];
    for block in bytes.chunks(8) {
        for (c, b) in chain.iter_mut().zip(block) {
            *c ^= b;
        }
        let mut ga = GenericArray::clone_from_slice(&chain);
        cipher.encrypt_block(&mut ga);
        chain.copy_from_slice(&ga);
    }
    chain
}

/// How the reader shows a code: the number in decimal, and the 8-digit
/// zero-padded form some banks want when it is shorter.
pub fn printed(value: u128) -> (String, String) {
    (value.to_string(), format!("{value:08}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    fn ac(s: &str) -> [u8; 8] {
        h(s).try_into().unwrap()
    }

    #[test]
    fn recorded_belgian_cap_card() {
        // CID 80, ATC 005A, AC 513C1201B7DB02A0 under IPB 0000FF000000000003FFFF.
        let data = h("80005A513C1201B7DB02A0");
        let ipb = h("0000FF000000000003FFFF");
        assert_eq!(ipb_filter(&data, &ipb).unwrap(), 23790240);
        // M1 with challenge 1234: ATC 0059, AC 94AB83B4EA4FCD87.
        assert_eq!(
            ipb_filter(&h("80005994AB83B4EA4FCD87"), &ipb).unwrap(),
            23580039
        );
        // M2 1234 mixes into the no-challenge AC.
        let mixed = mix_sign_data(&ac("513C1201B7DB02A0"), &["1234".to_owned()]);
        let mut data = h("80005A");
        data.extend_from_slice(&mixed);
        assert_eq!(ipb_filter(&data, &ipb).unwrap(), 23719593);
    }

    #[test]
    fn belgian_formula() {
        // The recorded Bancontact card: ATC 1234, AC 1234567890ABCDEF.
        assert_eq!(belgian(&ac("1234567890ABCDEF"), 0x1234), 53780079);
    }

    #[test]
    fn sign_data_layout() {
        // 1000 and 123456 → 1000F123456F80…: two numbers give the same
        // first block as the literal layout encrypted alone.
        let key = ac("0123456789ABCDEF");
        let a = mix_sign_data(&key, &["1000".to_owned(), "123456".to_owned()]);
        let cipher = Des::new(GenericArray::from_slice(&key));
        let mut block = GenericArray::clone_from_slice(&h("1000F123456F8000"));
        cipher.encrypt_block(&mut block);
        assert_eq!(a.as_slice(), block.as_slice());
    }

    #[test]
    fn bitmap_limits() {
        assert_eq!(ipb_filter(&[0xFF], &[0x00]), Err(OtpError::NoBits));
        assert_eq!(
            ipb_filter(&[0; 17], &[0xFF; 17]),
            Err(OtpError::TooManyBits(136))
        );
        // Data shorter than the bitmap reads as zeros.
        assert_eq!(ipb_filter(&[0x01], &[0xFF, 0xFF]).unwrap(), 0x0100);
    }

    #[test]
    fn printed_forms() {
        assert_eq!(printed(7986951), ("7986951".into(), "07986951".into()));
        assert_eq!(printed(23790240).1, "23790240");
    }
}
