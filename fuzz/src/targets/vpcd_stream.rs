//! The vpcd wire protocol as pcscd's driver speaks it (u16 length, then a
//! control byte or a command APDU), served by our virtual card. Invariants:
//! no panic (in the framing or in the virtual card's command parsing);
//! every frame written back holds 1 to 65,535 bytes and says its length
//! right; at most one answer per frame read; the stream ends in an error
//! only when the input ran out or was cut inside a frame.
use std::io::{Cursor, ErrorKind};

use crate::answers;
use bankbridge_cap::virtual_card::{Profile, VirtualCard};
use bankbridge_cap::vpcd::serve_stream;

pub fn run(data: &[u8]) {
    let Some((&which, stream)) = data.split_first() else {
        return;
    };
    let profile = Profile::ALL[usize::from(which) % Profile::ALL.len()];
    let mut card = VirtualCard::with_pin(profile, "1234").expect("a virtual card");
    let mut input = Cursor::new(stream);
    let mut output = Vec::new();
    match serve_stream(&mut input, &mut output, &mut card) {
        Ok(()) => {}
        Err(e) => assert_eq!(e.kind(), ErrorKind::UnexpectedEof, "{e}"),
    }
    let frames_in = answers(stream).len();
    let mut rest = output.as_slice();
    let mut frames_out = 0;
    while !rest.is_empty() {
        assert!(rest.len() >= 2, "a frame cut short: {output:02X?}");
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        assert!(
            len >= 1 && rest.len() >= 2 + len,
            "a frame of {len} bytes: {output:02X?}"
        );
        rest = &rest[2 + len..];
        frames_out += 1;
    }
    assert!(
        frames_out <= frames_in,
        "{frames_out} answers to {frames_in} frames"
    );
}
