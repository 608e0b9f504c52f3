//! Writes the seed corpus of each fuzz target into `fuzz/seeds/` (or the
//! folder given): the answers of our virtual cards to real CAP runs, our
//! example flow files, templates, rules and BankID answers. Seeds are
//! small; the fuzzer grows its own corpus from them.
use std::path::{Path, PathBuf};

use bankbridge_cap::transport::VirtualReaders;
use bankbridge_cap::virtual_card::{Profile, VirtualCard};
use bankbridge_cap::{
    CapRequest, CardTransport, PinPolicy, Protocol, Readers, TransportError, emv,
};
use bankbridge_core::Secret;
use bankbridge_fuzz::frame;

/// A card session that keeps every answer.
struct Recorder {
    inner: Box<dyn CardTransport>,
    commands: Vec<Vec<u8>>,
    answers: Vec<Vec<u8>>,
}

impl CardTransport for Recorder {
    fn reader(&self) -> &str {
        self.inner.reader()
    }
    fn protocol(&self) -> Protocol {
        self.inner.protocol()
    }
    fn atr(&self) -> &[u8] {
        self.inner.atr()
    }
    fn transmit(&mut self, capdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        self.commands.push(capdu.to_vec());
        let answer = self.inner.transmit(capdu)?;
        self.answers.push(answer.clone());
        Ok(answer)
    }
}

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let folder = dir.join(target);
    std::fs::create_dir_all(&folder).expect("making the seed folder");
    std::fs::write(folder.join(name), bytes).expect("writing a seed");
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds"));
    let requests: [(u8, Option<CapRequest>); 4] = [
        (0, None),
        (1, Some(CapRequest::Login { challenge: None })),
        (
            2,
            Some(CapRequest::Login {
                challenge: Some("12345678".into()),
            }),
        ),
        (
            3,
            Some(CapRequest::Sign {
                numbers: vec!["1234".into(), "99".into()],
            }),
        ),
    ];
    for (index, profile) in Profile::ALL.into_iter().enumerate() {
        for (selector, request) in &requests {
            let readers = VirtualReaders::new();
            let card = VirtualCard::with_pin(profile, "1234").expect("a virtual card");
            readers.insert("seed", Box::new(card));
            let mut card = Recorder {
                inner: readers.connect("seed").expect("the virtual reader"),
                commands: Vec::new(),
                answers: Vec::new(),
            };
            let t1 = card.protocol() == Protocol::T1;
            match request {
                None => {
                    emv::identify(&mut card).expect("the virtual card identifies");
                }
                Some(request) => {
                    let pin = Secret::new("1234".to_owned());
                    emv::run(&mut card, request, &pin, None, PinPolicy { min_tries: 1 })
                        .expect("the virtual card computes a code");
                }
            }
            let mut bytes = vec![selector | if t1 { 0x80 } else { 0 }];
            bytes.extend(frame(&card.answers));
            let name = format!("{}-{selector}", profile.name());
            write(&dir, "cap_card", &name, &bytes);
            // What vpcd would send for the same run: power on, the ATR
            // request, then the commands.
            let mut frames = vec![vec![0x01], vec![0x04]];
            frames.extend(card.commands.iter().cloned());
            let mut stream = vec![u8::try_from(index).unwrap_or(0)];
            stream.extend(frame(&frames));
            write(&dir, "vpcd_stream", &name, &stream);
            // Each answer's data (without its status word) is BER-TLV.
            for (i, answer) in card.answers.iter().enumerate() {
                if answer.len() > 2 && *selector == 1 {
                    write(
                        &dir,
                        "tlv",
                        &format!("{name}-{i}"),
                        &answer[..answer.len() - 2],
                    );
                }
            }
        }
    }
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for (sub, target) in [("flows", "flow_file"), ("broken", "flow_file")] {
        for entry in std::fs::read_dir(examples.join(sub)).expect("the examples folder") {
            let path = entry.expect("an example").path();
            let text = std::fs::read(&path).expect("an example file");
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("example");
            write(&dir, target, name, &text);
            if sub == "flows" {
                write(&dir, "template", &format!("{name}.toml"), &text);
            }
        }
    }
    for (name, text) in [
        ("plain", "https://bank.example/accounts"),
        ("vars", "{{ base }}/consents/{{ consent_id }}?x={{ n }}"),
        (
            "json",
            r#"{"access": {"allPsd2": "{{ scope }}"}, "n": [1, "{{ n }}"]}"#,
        ),
        ("unclosed", "{{ base "),
    ] {
        write(&dir, "template", name, text.as_bytes());
    }
    for (name, text) in [
        (
            "rules",
            "[[rule]]\ncategory = \"groceries\"\nlabel = \"(?i)lidl|kaufland\"\nmax_amount = \"0\"\n\n\
             [[rule]]\ncategory = \"salary\"\ncounterparty = \"^ACME\"\nmin_amount = \"1000.00\"\n",
        ),
        ("bad-regex", "[[rule]]\ncategory = \"x\"\nlabel = \"(\"\n"),
        (
            "iban",
            "[[rule]]\ncategory = \"rent\"\ncounterparty_iban = \"BG80BNBG96611020345678\"\n",
        ),
    ] {
        write(&dir, "category_rules", name, text.as_bytes());
    }
    for (name, text) in [
        (
            "order",
            r#"{"orderRef":"131daac9-16c6-4618-beb0-365768f37288","autoStartToken":"7c40b5c9-fa74-49cf-b98c-bfe651f9a7c6","qrStartToken":"67df3917-fa0d-44e5-b327-edcc928297f8","qrStartSecret":"d28db9a7-4cde-429e-a983-359be676944c"}"#,
        ),
        (
            "pending",
            r#"{"orderRef":"131daac9-16c6-4618-beb0-365768f37288","status":"pending","hintCode":"outstandingTransaction"}"#,
        ),
        (
            "failed",
            r#"{"orderRef":"131daac9-16c6-4618-beb0-365768f37288","status":"failed","hintCode":"userCancel"}"#,
        ),
        (
            "complete",
            r#"{"orderRef":"131daac9-16c6-4618-beb0-365768f37288","status":"complete","completionData":{"user":{"personalNumber":"199001011239","name":"Test Person","givenName":"Test","surname":"Person"},"device":{"ipAddress":"192.0.2.1","uhi":"OZvYM9VvyiAmG7NA5jU5zRGcHXt0YeXkcoc7xKTnb"},"bankIdIssueDate":"2024-01-31","stepUp":{"mrtd":false},"signature":"PD94bWwgdmVyc2lvbj0iMS4wIj8+","ocspResponse":"MIIHfgoBAKCCB3cwggdzBgkr"}}"#,
        ),
        (
            "error",
            r#"{"errorCode":"alreadyInProgress","details":"An order for this user is already in progress."}"#,
        ),
        (
            "cut",
            r#"{"orderRef":"131daac9","qrStartSecret":"d28db9a7-4cde-429e"#,
        ),
    ] {
        write(&dir, "bankid_answer", name, text.as_bytes());
    }
    // Form keys: JWTs whose payload carries a modulus and exponent in hex.
    // The moduli are odd numbers of our own, not anyone's key.
    use base64::Engine;
    let b64 = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
    let modulus = format!("C{}1", "3A5F9E17".repeat(31));
    for (name, payload) in [
        (
            "key-1024",
            format!(r#"{{"modulus":"{modulus}","exponent":"10001"}}"#),
        ),
        ("key-small", r#"{"modulus":"E3","exponent":"3"}"#.to_owned()),
        ("no-exponent", format!(r#"{{"modulus":"{modulus}"}}"#)),
    ] {
        let jwt = format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"HS256","typ":"JWT"}"#),
            b64(&payload)
        );
        write(&dir, "form_envelope", name, jwt.as_bytes());
    }
    write(&dir, "form_envelope", "not-a-jwt", b"abc.def");
    // Bank answers: the first byte picks the mapper (see bank_answers.rs).
    for (which, name, body) in [
        (
            0u8,
            "keypad-page",
            r#"{"transactions":[{"id":"a1","label":"CB LIDL 05/11","booking_date_time":"2026-11-05T10:00:00+01:00","is_accounted":true,"amount":{"value":"-12.50","currency":"EUR"},"nature":"card"}]}"#,
        ),
        (
            1,
            "fibank-accounts",
            r#"{"acc":[{"ibanAcNo":"BG80BNBG96611020345678","ccy":"BGN","acType":"1","acTypeDesc":"Current","acDesc":"Main"}]}"#,
        ),
        (
            2,
            "fibank-statement",
            r#"{"acc":[{"ibanAcNo":"BG80BNBG96611020345678","stmt":[{"acEntrySrNo":"17","dateTime":"2026-11-05T10:00:00","valueDt":"2026-11-05","trname":"Card payment","contragent":"ACME","trnType":"D","amount":"12.50","ccy":"BGN"}]}]}"#,
        ),
        (
            3,
            "fibank-holds",
            r#"{"blockedAmounts":[{"blockId":"7","amount":"5.00","ccy":"EUR","dateTime":"2026-12-01T08:00:00","trname":"Hold"}]}"#,
        ),
        (
            4,
            "xs2a-row",
            r#"{"transactionId":"t1","bookingDate":"2026-11-05","valueDate":"2026-11-05","transactionAmount":{"amount":"-12.50","currency":"EUR"},"creditorName":"ACME","creditorAccount":{"iban":"DE89370400440532013000"},"remittanceInformationUnstructured":"Invoice 7"}"#,
        ),
        (
            5,
            "enablebanking-row",
            r#"{"entry_reference":"e1","status":"BOOK","booking_date":"2026-11-05","transaction_amount":{"amount":"12.50","currency":"EUR"},"credit_debit_indicator":"DBIT","creditor":{"name":"ACME"},"remittance_information":["Invoice 7"]}"#,
        ),
        (6, "keypad-field", "0123456789|a1b2c3d4e5f6"),
    ] {
        let mut bytes = vec![which];
        bytes.extend_from_slice(body.as_bytes());
        write(&dir, "bank_answers", name, &bytes);
    }
    // APDU exchanges: protocol and VERIFY bits, the command's data length,
    // then the card's answers (see apdu.rs).
    for (name, selector, len, answers) in [
        (
            "t0-get-response",
            0x00u8,
            0u8,
            vec![vec![0x61, 0x04], vec![0x70, 0x02, 0x5A, 0x00, 0x90, 0x00]],
        ),
        (
            "t0-wrong-le",
            0x00,
            3,
            vec![vec![0x6C, 0x08], vec![0x01, 0x02, 0x90, 0x00]],
        ),
        ("t1-plain", 0x80, 5, vec![vec![0x77, 0x00, 0x90, 0x00]]),
        ("verify", 0x40, 8, vec![vec![0x63, 0xC2]]),
        ("short", 0x00, 0, vec![vec![0x90]]),
        (
            "chain",
            0x80,
            0,
            vec![
                vec![0x61, 0x01],
                vec![0xAA, 0x6C, 0x01],
                vec![0xBB, 0x90, 0x00],
            ],
        ),
    ] {
        let mut bytes = vec![selector, len];
        bytes.extend(frame(&answers));
        write(&dir, "apdu", name, &bytes);
    }
    // RP requests to the BankID simulator: the first byte picks the
    // endpoint (auth, sign, payment, phone/auth, phone/sign, collect, cancel).
    for (which, name, body) in [
        (
            0u8,
            "auth",
            r#"{"endUserIp":"192.0.2.10","requirement":{"pinCode":true,"certificatePolicies":["1.2.752.78.1.5"]},"returnRisk":true,"web":{"referringDomain":"shop.example","userAgent":"Mozilla/5.0"}}"#,
        ),
        (
            1,
            "sign",
            r#"{"endUserIp":"2001:db8::1","userVisibleData":"U2lnbiB0aGlzIQ==","userVisibleDataFormat":"plaintext","requirement":{"personalNumber":"199001011239","risk":"low"}}"#,
        ),
        (
            2,
            "payment",
            r#"{"endUserIp":"192.0.2.10","userVisibleTransaction":{"transactionType":"card","recipient":{"name":"Shop"},"money":{"amount":"100,00","currency":"SEK"}},"riskFlags":["newCard"]}"#,
        ),
        (
            3,
            "phone-auth",
            r#"{"personalNumber":"199001011239","callInitiator":"RP","requirement":{"cardReader":"class1"}}"#,
        ),
        (
            4,
            "phone-sign",
            r#"{"personalNumber":"199001011239","callInitiator":"user","userVisibleData":"SGVq","userNonVisibleData":"AAEC"}"#,
        ),
        (
            5,
            "collect",
            r#"{"orderRef":"131daac9-16c6-4618-beb0-365768f37288"}"#,
        ),
        (
            6,
            "cancel-unknown-field",
            r#"{"orderRef":"131daac9-16c6-4618-beb0-365768f37288","extra":1}"#,
        ),
        (0, "auth-bad-ip", r#"{"endUserIp":"999.1.1.1"}"#),
    ] {
        let mut bytes = vec![which];
        bytes.extend_from_slice(body.as_bytes());
        write(&dir, "bankid_request", name, &bytes);
    }
    // Exports: booked/pending and account-name bits, then label,
    // counterparty, remittance, bank id and account name split at 0x1F.
    for (name, flags, texts) in [
        (
            "plain",
            0u8,
            ["CARD PAYMENT LIDL 1234", "Lidl", "", "B-77", ""],
        ),
        (
            "marks",
            2,
            [
                "a;b|c \"q\" & <x>",
                "^Caret, Ltd",
                "line one\nline two",
                "id,with,commas",
                "Main; account",
            ],
        ),
        ("pending", 1, ["  spaced  ", "", "!bang", "P-1", ""]),
        (
            "unicode",
            2,
            ["Über Straße ✓", "Ünïcode", "ÄÖÜ\u{7f}", "Ü-1", "Сметка"],
        ),
    ] {
        let mut bytes = vec![flags];
        bytes.extend_from_slice(texts.join("\u{1f}").as_bytes());
        write(&dir, "export_round_trip", name, &bytes);
    }
    // API requests: the first byte picks an operation of the OpenAPI
    // document; then the path parameter, the query and the body, each
    // ending at a newline (see api_request.rs).
    for (pick, name, param, query, body) in [
        (0u8, "first", "1", "", ""),
        (
            9,
            "transactions",
            "1",
            "account=1&from=2026-01-01&to=2026-12-31&limit=5&status=booked",
            "",
        ),
        (
            17,
            "export",
            "1",
            "format=ofx&include_pending=true&text=lidl",
            "",
        ),
        (
            25,
            "create",
            "",
            "",
            r#"{"name":"fuzz","connector":"fibank","base_url":"http://127.0.0.1:9/fibank","username":"u","password":"p"}"#,
        ),
        (
            33,
            "patch",
            "1",
            "",
            r#"{"name":"renamed","sync_interval":"6h"}"#,
        ),
        (
            41,
            "cursor",
            "1",
            "after=eyJkIjoiMjAyNi0wMS0wMSIsImkiOjF9&limit=1000",
            "",
        ),
        (49, "odd-param", "%2e%2e", "x=%ZZ&&=", "[1,2"),
        (0x80 | 9, "token", "bb_0123456789ab_AAAA", "", ""),
    ] {
        let mut bytes = vec![pick];
        bytes.extend_from_slice(format!("{param}\n{query}\n{body}").as_bytes());
        write(&dir, "api_request", name, &bytes);
    }
    // Aggregator syncs: the first byte picks the service (and, with its top
    // bit, a new link); then one instruction per request (0: as recorded;
    // see aggregator_answers.rs for the others).
    for (service, name) in [
        (0u8, "gocardless"),
        (1, "enablebanking"),
        (2, "klarna"),
        (3, "xs2a"),
    ] {
        write(
            &dir,
            "aggregator_answers",
            &format!("{name}-as-recorded"),
            &[service],
        );
        write(
            &dir,
            "aggregator_answers",
            &format!("{name}-new-link"),
            &[service | 0x80],
        );
        // The second answer's body cut in half, the fourth's status 429.
        write(
            &dir,
            "aggregator_answers",
            &format!("{name}-cut-and-limited"),
            &[service, 0, 2, 128, 0, 4, 9],
        );
    }
    println!("seeds written to {}", dir.display());
}
