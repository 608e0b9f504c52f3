//! The CAP algorithm against cards in this process: the published test
//! vectors replayed from recorded exchanges, every virtual card profile, and
//! the PIN safety rules a shared bank card needs.
use bankbridge_cap::emv::{self, CapError, CapRequest, ExpectedCard, PinPolicy};
use bankbridge_cap::otp;
use bankbridge_cap::replay::ReplayCard;
use bankbridge_cap::transport::{Readers, TransportError, VirtualReaders};
use bankbridge_cap::verify;
use bankbridge_cap::virtual_card::{
    CardHandle, Profile, VirtualCard, VirtualCardConfig, application_cryptogram,
};
use bankbridge_core::Secret;

fn pin(p: &str) -> Secret<String> {
    Secret::new(p.to_owned())
}

fn m1(challenge: Option<&str>) -> CapRequest {
    CapRequest::Login {
        challenge: challenge.map(str::to_owned),
    }
}

fn m2(numbers: &[&str]) -> CapRequest {
    CapRequest::Sign {
        numbers: numbers.iter().map(|s| s.to_string()).collect(),
    }
}

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Run `request` on a fresh replay of `recording` with PIN 1234.
fn replay(recording: &str, request: &CapRequest) -> Result<emv::CapResponse, CapError> {
    let readers = VirtualReaders::new();
    readers.insert(
        "replay",
        Box::new(ReplayCard::parse(&fixture(recording)).expect("fixture parses")),
    );
    let mut session = readers.connect("replay")?;
    emv::run(
        session.as_mut(),
        request,
        &pin("1234"),
        None,
        PinPolicy::default(),
    )
}

#[test]
fn recorded_belgian_cap_card_vectors() {
    let cases = [
        (m1(None), "23790240"),
        (m1(Some("1234")), "23580039"),
        (m2(&["1234"]), "23719593"),
    ];
    for (request, code) in cases {
        let r = replay("cap_be.replay", &request).unwrap();
        assert_eq!(r.response, code, "{request:?}");
        assert_eq!(r.card.application, "SecureCode Aut");
    }
}

#[test]
fn recorded_bancontact_card_vector() {
    let r = replay("bancontact_be.replay", &m1(None)).unwrap();
    assert_eq!(r.response, "53780079");
    assert_eq!(r.atc, 0x1234);
    assert_eq!(r.card.application, "BANCONTACT");
}

/// A virtual card in an in-process reader, and its handle.
fn virtual_card(config: VirtualCardConfig) -> (VirtualReaders, CardHandle) {
    let card = VirtualCard::new(config).unwrap();
    let handle = card.handle();
    let readers = VirtualReaders::new();
    readers.insert("v", Box::new(card));
    (readers, handle)
}

fn run_on(
    readers: &VirtualReaders,
    request: &CapRequest,
    pin_text: &str,
    expected: Option<&ExpectedCard>,
) -> Result<emv::CapResponse, CapError> {
    let mut session = readers.connect("v")?;
    emv::run(
        session.as_mut(),
        request,
        &pin(pin_text),
        expected,
        PinPolicy::default(),
    )
}

/// The CDOL1 data a CAP reader sends for a login over `challenge` (8 hex
/// digits): 9F02 amount, 9F03, 9F1A, 95 TVR, 5F2A, 9A date, 9C, 9F37 the
/// challenge, 9F4C, 9F34 CVM results, as the recorded card's reader sent them.
fn cdol1_data(challenge: &str) -> Vec<u8> {
    hex::decode(
        [
            "000000000000",
            "000000000000",
            "0000",
            "8000000000",
            "0000",
            "000000",
            "00",
            challenge,
            "0000",
            "010002",
        ]
        .concat(),
    )
    .unwrap()
}

#[test]
fn virtual_cap_card_code_matches_the_issuer_computation() {
    // Recompute by hand what the issuer would: the MAC over the CDOL1 data a
    // CAP reader sends (challenge 1234) and the ATC, reduced by the IPB.
    let config = VirtualCardConfig::new(Profile::CapBe, "1234");
    let (readers, handle) = virtual_card(config.clone());
    let r = run_on(&readers, &m1(Some("1234")), "1234", None).unwrap();
    assert_eq!(r.atc, config.atc + 1);
    assert_eq!(handle.atc(), r.atc);
    let cdol1 = cdol1_data("00001234");
    let ac = application_cryptogram(&config.key, &cdol1, r.atc);
    let mut data = vec![0x80];
    data.extend_from_slice(&r.atc.to_be_bytes());
    data.extend_from_slice(&ac);
    let ipb = hex::decode("0000FF000000000003FFFF").unwrap();
    assert_eq!(
        r.response,
        otp::ipb_filter(&data, &ipb).unwrap().to_string()
    );
    // Each code uses a new ATC, so the next login differs.
    let again = run_on(&readers, &m1(Some("1234")), "1234", None).unwrap();
    assert_eq!(again.atc, r.atc + 1);
    assert_ne!(again.response, r.response);
}

#[test]
fn every_profile_gives_codes_the_issuer_accepts() {
    for profile in Profile::ALL {
        let config = VirtualCardConfig::new(profile, "4321");
        let (readers, handle) = virtual_card(config.clone());
        for request in [m1(None), m1(Some("98765432")), m2(&["1000", "123456"])] {
            let r = run_on(&readers, &request, "4321", None)
                .unwrap_or_else(|e| panic!("{profile} {request:?}: {e}"));
            assert_eq!(
                verify::verify_code(&config, &request, &r.response, r.atc - 1, 1),
                Some(r.atc),
                "{profile} {request:?}"
            );
            // A code for other input, or at another ATC, is refused.
            let other = match &request {
                CapRequest::Login { .. } => m1(Some("11111111")),
                CapRequest::Sign { .. } => m2(&["1001", "123456"]),
            };
            assert_eq!(
                verify::verify_code(&config, &other, &r.response, r.atc - 1, 1),
                None,
                "{profile} {request:?}"
            );
        }
        assert_eq!(handle.pin_tries_left(), 3, "{profile}");
        assert_eq!(
            handle.verify_count(),
            3,
            "{profile}: one VERIFY per operation"
        );
    }
}

#[test]
fn wrong_pin_is_sent_once_and_never_retried() {
    let (readers, handle) = virtual_card(VirtualCardConfig::new(Profile::CapBe, "1234"));
    let err = run_on(&readers, &m1(None), "9999", None).unwrap_err();
    assert!(
        matches!(
            err,
            CapError::WrongPin {
                tries_left: Some(2)
            }
        ),
        "{err}"
    );
    assert_eq!(handle.verify_count(), 1);
    assert_eq!(handle.pin_tries_left(), 2);
    // With 2 tries left, the default policy (3) refuses before any VERIFY,
    // even with the right PIN.
    let err = run_on(&readers, &m1(None), "1234", None).unwrap_err();
    assert!(
        matches!(err, CapError::TooFewTries { left: 2, min: 3 }),
        "{err}"
    );
    assert_eq!(handle.verify_count(), 1);
    assert_eq!(handle.pin_tries_left(), 2);
}

#[test]
fn a_swapped_card_never_receives_the_pin() {
    let (readers, handle) = virtual_card(VirtualCardConfig::new(Profile::CapBe, "1234"));
    let expected = ExpectedCard {
        pan_last4: Some("9999".into()),
        psn: Some("01".into()),
        records_digest: None,
    };
    let err = run_on(&readers, &m1(None), "1234", Some(&expected)).unwrap_err();
    assert!(matches!(err, CapError::WrongCard { .. }), "{err}");
    assert_eq!(handle.verify_count(), 0);
    // The right identity passes.
    let config = VirtualCardConfig::new(Profile::CapBe, "1234");
    let right = ExpectedCard {
        pan_last4: Some(config.pan[config.pan.len() - 4..].to_owned()),
        psn: Some(format!("{:02X}", config.psn)),
        records_digest: None,
    };
    run_on(&readers, &m1(None), "1234", Some(&right)).unwrap();
    assert_eq!(handle.verify_count(), 1);
}

#[test]
fn a_cap_only_card_without_a_card_number_computes_codes() {
    // A UK-style CAP application: one record with CDOL1, CDOL2, the IPB and
    // the IAF, no 5A and no 5F34.
    let config = VirtualCardConfig::new(Profile::CapUk, "1234");
    let (readers, handle) = virtual_card(config.clone());
    let r = run_on(&readers, &m1(Some("12345678")), "1234", None).unwrap();
    assert_eq!(r.card.pan_last4, None);
    assert_eq!(r.card.psn, None);
    assert_eq!(r.card.records_digest.len(), 64);
    assert_eq!(r.card.application, "SecureCode Aut");
    // The code by hand: the UK bitmap keeps the CID bit, the ATC's low byte,
    // the last bit of AC[5], AC[6] and AC[7].
    let cdol1 = cdol1_data("12345678");
    let ac = application_cryptogram(&config.key, &cdol1, r.atc);
    let value = (1u64 << 25)
        | (u64::from(r.atc as u8) << 17)
        | (u64::from(ac[5] & 1) << 16)
        | (u64::from(ac[6]) << 8)
        | u64::from(ac[7]);
    assert_eq!(r.response, value.to_string());
    let sign = m2(&["1000", "123456"]);
    let signed = run_on(&readers, &sign, "1234", None).unwrap();
    assert_eq!(
        verify::verify_code(&config, &sign, &signed.response, signed.atc - 1, 1),
        Some(signed.atc)
    );
    assert_eq!(handle.verify_count(), 2);
}

#[test]
fn a_card_without_a_number_is_recognised_by_its_records() {
    let (uk, uk_handle) = virtual_card(VirtualCardConfig::new(Profile::CapUk, "1234"));
    let identity = {
        let mut session = uk.connect("v").unwrap();
        emv::identify(session.as_mut()).unwrap()
    };
    assert_eq!(identity.pan_last4, None);
    let expected = ExpectedCard {
        pan_last4: None,
        psn: None,
        records_digest: Some(identity.records_digest.clone()),
    };
    run_on(&uk, &m1(None), "1234", Some(&expected)).unwrap();
    assert_eq!(uk_handle.verify_count(), 1);

    // Any other card in that reader is refused before the PIN: one with a
    // card number, or a CAP-only one whose records differ.
    let (be, be_handle) = virtual_card(VirtualCardConfig::new(Profile::CapBe, "1234"));
    let err = run_on(&be, &m1(None), "1234", Some(&expected)).unwrap_err();
    assert!(matches!(err, CapError::WrongCard { .. }), "{err}");
    assert_eq!(be_handle.verify_count(), 0);
    let (t1, t1_handle) = virtual_card(VirtualCardConfig::new(Profile::CapT1, "1234"));
    let mut digest_only = expected.clone();
    digest_only.records_digest = Some("00".repeat(32));
    let err = run_on(&t1, &m1(None), "1234", Some(&digest_only)).unwrap_err();
    assert!(matches!(err, CapError::WrongCard { .. }), "{err}");
    assert_eq!(t1_handle.verify_count(), 0);
    // An expectation naming nothing matches nothing.
    let empty = ExpectedCard {
        pan_last4: None,
        psn: None,
        records_digest: None,
    };
    let err = run_on(&uk, &m1(None), "1234", Some(&empty)).unwrap_err();
    assert!(matches!(err, CapError::WrongCard { .. }), "{err}");
    assert_eq!(uk_handle.verify_count(), 1);
}

#[test]
fn the_records_digest_is_stable_and_leaves_the_card_number_out() {
    let identify = |config: VirtualCardConfig| {
        let (readers, _) = virtual_card(config);
        let mut session = readers.connect("v").unwrap();
        emv::identify(session.as_mut()).unwrap()
    };
    let a = identify(VirtualCardConfig::new(Profile::CapBe, "1234"));
    let b = identify(VirtualCardConfig::new(Profile::CapBe, "9876"));
    // Same card data, another PIN: the same digest, read twice.
    assert_eq!(a.records_digest, b.records_digest);
    // Another card number only (5A and track 2): the digest does not move,
    // so a stored digest says nothing about the number; the PAN check
    // tells the cards apart.
    let mut other = VirtualCardConfig::new(Profile::CapBe, "1234");
    other.pan = "6703990000000009999".into();
    let c = identify(other);
    assert_eq!(c.records_digest, a.records_digest);
    assert_ne!(c.pan_last4, a.pan_last4);
    // Another PSN is in the digest.
    let mut other = VirtualCardConfig::new(Profile::CapBe, "1234");
    other.psn = 2;
    assert_ne!(identify(other).records_digest, a.records_digest);
}

#[test]
fn blocked_card_is_reported_without_verify() {
    let mut config = VirtualCardConfig::new(Profile::CapBe, "1234");
    config.pin_tries_left = 0;
    let (readers, handle) = virtual_card(config);
    let err = run_on(&readers, &m1(None), "1234", None).unwrap_err();
    assert!(matches!(err, CapError::Blocked), "{err}");
    assert_eq!(handle.verify_count(), 0);
}

#[test]
fn removed_card_is_a_clear_error() {
    let (readers, handle) = virtual_card(VirtualCardConfig::new(Profile::CapBe, "1234"));
    handle.set_remove_after(Some(4));
    let err = run_on(&readers, &m1(None), "1234", None).unwrap_err();
    assert!(
        matches!(err, CapError::Transport(TransportError::CardRemoved { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("removed"), "{err}");
    // The reader is empty now.
    let err = readers.connect("v").err().unwrap();
    assert!(matches!(err, TransportError::NoCard { .. }), "{err}");
}

#[test]
fn session_end_resets_the_card() {
    let (readers, handle) = virtual_card(VirtualCardConfig::new(Profile::CapBe, "1234"));
    run_on(&readers, &m1(None), "1234", None).unwrap();
    // The session was dropped: the verified PIN is gone.
    assert!(!handle.pin_verified());
}

#[test]
fn bad_input_is_refused_before_the_card() {
    let (readers, handle) = virtual_card(VirtualCardConfig::new(Profile::CapBe, "1234"));
    for (request, pin_text) in [
        (m1(Some("12ab")), "1234"),
        (m2(&[]), "1234"),
        (m1(None), "12"),
    ] {
        assert!(run_on(&readers, &request, pin_text, None).is_err());
    }
    // A challenge longer than the card's unpredictable number (4 bytes).
    let err = run_on(&readers, &m1(Some("123456789")), "1234", None).unwrap_err();
    assert!(err.to_string().contains("at most 8 digits"), "{err}");
    assert_eq!(handle.verify_count(), 0, "no bad request reached VERIFY");
}
