//! Virtual and replayed cards served to a real pcscd through vpcd, reached
//! with the PC/SC transport: the whole path a real USB reader takes.
//!
//! Needs pcscd with vsmartcard-vpcd (`scripts/pcscd.sh start`). Without it
//! these tests skip, unless `BANKBRIDGE_TEST_PCSCD` or `CI` is set, where
//! they fail. The two vpcd slots are machine-wide, so every test holds
//! [`SlotsLock`] (threads and processes take turns) and its vpcd client
//! stops when the test ends, panics included (`VpcdHandle` stops on drop).
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bankbridge_cap::pcsc::{PcscReaders, wait_for_card, wait_for_removal};
use bankbridge_cap::replay::ReplayCard;
use bankbridge_cap::transport::{CardTransport, Protocol, Readers, TransportError};
use bankbridge_cap::virtual_card::{Profile, VirtualCard};
use bankbridge_cap::vpcd::{SlotsLock, VPCD_DEFAULT_PORT, VpcdHandle, serve};

const SLOT0: &str = "Virtual PCD 00 00";
const SLOT1: &str = "Virtual PCD 00 01";
const WAIT: Duration = Duration::from_secs(10);

fn slot_addr(slot: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], VPCD_DEFAULT_PORT + slot))
}

fn pcscd() -> Option<SlotsLock> {
    SlotsLock::for_tests()
}

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).unwrap()
}

fn send(t: &mut dyn CardTransport, capdu: &str) -> String {
    hex::encode_upper(t.transmit(&h(capdu)).unwrap())
}

fn serve_and_wait(slot: u16, card: Box<dyn bankbridge_cap::SmartCard>) -> (VpcdHandle, String) {
    let vpcd = serve(slot_addr(slot), card);
    let started = Instant::now();
    let name =
        wait_for_card(&format!("Virtual PCD 00 0{slot}"), WAIT).expect("pcscd sees the card");
    eprintln!("pcscd saw the card after {:?}", started.elapsed());
    (vpcd, name)
}

#[test]
fn virtual_card_through_pcscd() {
    let Some(_slots) = pcscd() else { return };
    let card = VirtualCard::with_pin(Profile::CapBe, "1234").unwrap();
    let handle = card.handle();
    let (vpcd, name) = serve_and_wait(0, Box::new(card));
    assert_eq!(name, SLOT0);
    assert!(vpcd.is_connected());

    let info = PcscReaders::new().list().unwrap();
    let slot = info.iter().find(|r| r.name == SLOT0).unwrap();
    assert!(slot.card_present);
    assert_eq!(slot.atr.as_deref(), Some("3B67000000000000009000"));

    let readers = PcscReaders::new();
    let mut t = readers.connect(SLOT0).unwrap();
    assert_eq!(t.protocol(), Protocol::T0);
    assert_eq!(t.atr(), h("3B67000000000000009000"));
    assert_eq!(t.reader(), SLOT0);
    // The T=0 card answers 61xx / 6Cxx: pcscd passes them through untouched.
    assert_eq!(send(&mut *t, "00A4040007A0000000048002"), "6130");
    let fci = send(&mut *t, "00C0000030");
    assert!(
        fci.starts_with("6F2E8407A0000000048002") && fci.ends_with("9000"),
        "{fci}"
    );
    assert_eq!(send(&mut *t, "80CA9F1700"), "6C04");
    assert_eq!(send(&mut *t, "80CA9F1704"), "9F1701039000");
    assert_eq!(send(&mut *t, "0020008008249999FFFFFFFFFF"), "63C2");
    assert_eq!(send(&mut *t, "0020008008241234FFFFFFFFFF"), "9000");
    assert_eq!(handle.verify_count(), 2);
    assert_eq!(handle.pin_tries_left(), 3);
    assert!(handle.pin_verified());

    let log = handle.apdu_log();
    let commands: Vec<(&str, &str)> = log
        .iter()
        .map(|(_, c, sw)| (c.as_str(), sw.as_str()))
        .collect();
    let masked = format!("0020008008{}", "*".repeat(16));
    assert_eq!(
        commands,
        [
            ("00A4040007A0000000048002", "6130"),
            ("00C0000030", "9000"),
            ("80CA9F1700", "6C04"),
            ("80CA9F1704", "9000"),
            (masked.as_str(), "63C2"),
            (masked.as_str(), "9000"),
        ]
    );
    assert!(log.iter().all(|(session, _, _)| *session == log[0].0));

    // Ending the session resets the card: the PIN is verified no more.
    drop(t);
    let deadline = Instant::now() + WAIT;
    while handle.pin_verified() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!handle.pin_verified(), "the session's end reset the card");
    let mut t = readers.connect(SLOT0).unwrap();
    assert_eq!(send(&mut *t, "00A4040007A0000000048002"), "6130");
    assert_eq!(
        send(&mut *t, &format!("80AE800022{}", "00".repeat(0x22))),
        "6985"
    );
    assert!(
        handle.apdu_log().last().unwrap().0 > log[0].0,
        "a new session"
    );
}

#[test]
fn exclusive_sessions_and_empty_slots() {
    let Some(_slots) = pcscd() else { return };
    let readers = PcscReaders::new();
    assert_eq!(
        readers.connect(SLOT1).err(),
        Some(TransportError::NoCard {
            reader: SLOT1.into()
        })
    );
    assert!(matches!(
        readers.connect("No Such Reader 99").err(),
        Some(TransportError::ReaderNotFound { available, .. }) if available.iter().any(|n| n == SLOT0)
    ));
    let card = VirtualCard::with_pin(Profile::Bancontact, "1234").unwrap();
    let (_vpcd, _) = serve_and_wait(1, Box::new(card));
    let first = readers.connect(SLOT1).unwrap();
    assert_eq!(
        readers.connect(SLOT1).err(),
        Some(TransportError::Busy {
            reader: SLOT1.into()
        })
    );
    drop(first);
    let mut again = readers.connect(SLOT1).unwrap();
    assert_eq!(send(&mut *again, "80CA9F1700"), "6985"); // nothing selected yet
}

/// The next exchange fails with [`TransportError::CardRemoved`] at once,
/// although pcscd notices a vpcd removal only at its next poll.
fn removed(t: &mut dyn CardTransport) -> TransportError {
    let started = Instant::now();
    let err = t.transmit(&h("80CA9F1700")).unwrap_err();
    eprintln!("removal reported after {:?}", started.elapsed());
    err
}

#[test]
fn ejected_mid_session_then_inserted_again() {
    let Some(_slots) = pcscd() else { return };
    let card = VirtualCard::with_pin(Profile::VisaDpa, "1234").unwrap();
    let handle = card.handle();
    let (vpcd, _) = serve_and_wait(0, Box::new(card));
    let readers = PcscReaders::new();
    let mut t = readers.connect(SLOT0).unwrap();
    assert!(send(&mut *t, "00A4040007A0000000038002").ends_with("9000"));
    assert_eq!(send(&mut *t, "0020008008241234FFFFFFFFFF"), "9000");

    vpcd.eject();
    let err = removed(&mut *t);
    assert_eq!(
        err,
        TransportError::CardRemoved {
            reader: SLOT0.into()
        }
    );
    drop(t);
    wait_for_removal(SLOT0, WAIT).unwrap();
    assert!(!vpcd.is_connected());
    assert!(
        !handle.pin_verified(),
        "out of the reader the card lost its session"
    );
    assert!(matches!(
        readers.connect(SLOT0),
        Err(TransportError::NoCard { .. })
    ));

    vpcd.insert();
    wait_for_card(SLOT0, WAIT).unwrap();
    let mut t = readers.connect(SLOT0).unwrap();
    assert!(send(&mut *t, "00A4040007A0000000038002").ends_with("9000"));
    assert_eq!(send(&mut *t, "80CA9F1700"), "9F1701039000");
}

#[test]
fn card_that_removes_itself() {
    let Some(_slots) = pcscd() else { return };
    let card = VirtualCard::with_pin(Profile::CapBe, "1234").unwrap();
    let handle = card.handle();
    let (vpcd, _) = serve_and_wait(0, Box::new(card));
    let readers = PcscReaders::new();
    let mut t = readers.connect(SLOT0).unwrap();
    handle.set_remove_after(Some(1));
    assert_eq!(send(&mut *t, "00A4040007A0000000048002"), "6130");
    assert_eq!(
        removed(&mut *t),
        TransportError::CardRemoved {
            reader: SLOT0.into()
        }
    );
    assert!(!handle.pin_verified());
    drop(t);
    wait_for_removal(SLOT0, WAIT).unwrap();
    vpcd.insert();
    wait_for_card(SLOT0, WAIT).unwrap();
    let mut t = readers.connect(SLOT0).unwrap();
    assert_eq!(send(&mut *t, "00A4040007A0000000048002"), "6130");
}

#[test]
fn t1_card_through_pcscd() {
    let Some(_slots) = pcscd() else { return };
    let card = VirtualCard::with_pin(Profile::CapT1, "1234").unwrap();
    let handle = card.handle();
    let (_vpcd, _) = serve_and_wait(1, Box::new(card));
    let mut t = PcscReaders::new().connect(SLOT1).unwrap();
    assert_eq!(t.protocol(), Protocol::T1, "pcscd chose T=1 from the ATR");
    assert_eq!(t.atr(), Profile::CapT1.atr());
    let fci = send(&mut *t, "00A4040007A000000004800200");
    assert!(fci.starts_with("6F") && fci.ends_with("9000"), "{fci}");
    assert_eq!(send(&mut *t, "80A800000283 0000"), "80061000080102009000");
    assert_eq!(send(&mut *t, "80CA9F1700"), "9F1701039000");
    assert_eq!(send(&mut *t, "0020008008241234FFFFFFFFFF"), "9000");
    assert_eq!(handle.verify_count(), 1);
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn replayed_card_through_pcscd() {
    let Some(_slots) = pcscd() else { return };
    let card = ReplayCard::from_file(fixture("cap_be.replay")).unwrap();
    let replay = card.handle();
    let (_vpcd, _) = serve_and_wait(1, Box::new(card));
    let mut t = PcscReaders::new().connect(SLOT1).unwrap();
    assert_eq!(t.protocol(), Protocol::T0);
    assert_eq!(
        send(&mut *t, "00A404000E315041592E5359532E4444463031"),
        "6A82"
    );
    assert_eq!(
        send(&mut *t, "00A4040007A0000000048002"),
        "6F2E8407A0000000048002A5239F38039F35015F2D026672BF0C159F5501005F2C020056DF0709424B533035363030389000"
    );
    assert_eq!(
        send(&mut *t, "80A8000003830134"),
        "770E82021000940808010100080404009000"
    );
    assert!(send(&mut *t, "00B2010C00").starts_with("703E5A"));
    assert!(send(&mut *t, "00B2040C00").starts_with("70589F560B"));
    assert_eq!(send(&mut *t, "80CA9F1700"), "9F1701039000");
    assert_eq!(send(&mut *t, "0020008008241234FFFFFFFFFF"), "9000");
    assert_eq!(
        send(
            &mut *t,
            "80AE800022 000000000000 000000000000 0000 8000000000 0000 000000 00 00001234 0000 010002"
        ),
        "77269F2701809F360200599F260894AB83B4EA4FCD879F100F06015603A4000007000300000100029000"
    );
    assert_eq!(replay.played(), 8);
    assert!(replay.unmatched().is_empty(), "{:?}", replay.unmatched());
    assert_eq!(send(&mut *t, "00B2030C00"), "6A82");
    assert_eq!(replay.unmatched(), ["00B2030C00"]);
}
