//! Alert channels delivering to real local receivers (an HTTP server and an
//! SMTP sink from the sandbox crate), and the receivers' own robustness.
use std::net::Ipv4Addr;
use std::time::Duration;

use bankbridge_checks::alerts::{
    Alert, AlertError, AlertKind, CertificateInfo, ChannelConfig, LocationOutcome, Notifier,
    parse_channels, parse_channels_with_env,
};
use bankbridge_sandbox::receivers::{HttpReceiver, SmtpAuth, SmtpSink};
use chrono::{TimeZone, Utc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

fn failure() -> Alert {
    let mut alert = Alert::new(
        AlertKind::Failure,
        "fibank-login",
        "Fibank login",
        "step `token` failed: expected status 200, got 503",
        Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap(),
    );
    alert.failed_step = Some("token".into());
    alert.error = Some("status 503 <html>busy & down</html>".into());
    alert.locations = vec![
        LocationOutcome {
            location: "sofia".into(),
            outcome: "failed".into(),
        },
        LocationOutcome {
            location: "frankfurt".into(),
            outcome: "passed".into(),
        },
    ];
    alert.run_id = Some(42);
    alert
}

fn cert_alert(days_left: i64) -> Alert {
    let mut alert = Alert::new(
        AlertKind::CertificateExpiry,
        "fibank-login",
        "Fibank login",
        "certificate of api.fibank.example expires soon",
        Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap(),
    );
    alert.certificate = Some(CertificateInfo {
        host: "api.fibank.example".into(),
        expires_at: Utc.with_ymd_and_hms(2025, 3, 13, 0, 0, 0).unwrap(),
        days_left,
    });
    alert
}

fn one(toml: &str) -> ChannelConfig {
    let mut channels = parse_channels(toml).unwrap();
    assert_eq!(channels.len(), 1);
    channels.remove(0)
}

#[tokio::test]
async fn webhook_posts_the_alert_as_json_with_headers() {
    let receiver = HttpReceiver::start().await.unwrap();
    let channel = one(&format!(
        r#"
        [[channel]]
        name = "ops-webhook"
        type = "webhook"
        url = "{}/hook"
        headers = {{ "X-Token" = "t0ken-value" }}
        "#,
        receiver.url()
    ));
    Notifier::new().send(&channel, &failure()).await.unwrap();
    let requests = receiver.wait_for(1, WAIT).await.unwrap();
    let request = &requests[0];
    assert_eq!(request.path, "/hook");
    assert_eq!(request.header("x-token"), Some("t0ken-value"));
    assert!(
        request
            .header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let body = &request.body;
    assert_eq!(body["channel"], "ops-webhook");
    assert_eq!(body["kind"], "failure");
    assert_eq!(body["reminder"], false);
    assert_eq!(body["check_id"], "fibank-login");
    assert_eq!(body["check_name"], "Fibank login");
    assert_eq!(body["failed_step"], "token");
    assert_eq!(body["run_id"], 42);
    assert_eq!(body["at"], "2025-03-01T12:00:00Z");
    assert_eq!(body["locations"][0]["location"], "sofia");
    assert_eq!(body["locations"][0]["outcome"], "failed");
    assert!(body["certificate"].is_null());
    // The payload is the Alert itself: a receiver in Rust can read it back.
    let mut back = body.clone();
    back.as_object_mut().unwrap().remove("channel");
    let back: Alert = serde_json::from_value(back).unwrap();
    assert_eq!(back, failure());
}

#[tokio::test]
async fn slack_gets_an_incoming_webhook_payload() {
    let receiver = HttpReceiver::start().await.unwrap();
    let channel = one(&format!(
        r#"
        [[channel]]
        name = "chat"
        type = "slack"
        webhook_url = "{}/services/T000/B000/XXXX"
        "#,
        receiver.url()
    ));
    Notifier::new().send(&channel, &failure()).await.unwrap();
    let requests = receiver.wait_for(1, WAIT).await.unwrap();
    assert_eq!(requests[0].path, "/services/T000/B000/XXXX");
    let body = &requests[0].body;
    let text = body["text"].as_str().unwrap();
    assert!(
        text.starts_with(":red_circle: FAILING: Fibank login"),
        "{text}"
    );
    let blocks = body["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["type"], "plain_text");
    assert_eq!(
        blocks[0]["text"]["text"],
        ":red_circle: FAILING: Fibank login"
    );
    for block in blocks {
        let kind = block["type"].as_str().unwrap();
        assert!(["header", "section", "context"].contains(&kind), "{kind}");
    }
    let all = serde_json::to_string(body).unwrap();
    assert!(all.contains("*Failed step*\\ntoken"), "{all}");
    assert!(all.contains("sofia: failed, frankfurt: passed"), "{all}");
    // mrkdwn control characters are escaped.
    assert!(all.contains("&lt;html&gt;busy &amp; down"), "{all}");

    let mut recovery = failure();
    recovery.kind = AlertKind::Recovery;
    Notifier::new().send(&channel, &recovery).await.unwrap();
    let requests = receiver.wait_for(2, WAIT).await.unwrap();
    let text = requests[1].body["text"].as_str().unwrap();
    assert!(
        text.starts_with(":large_green_circle: RECOVERED: Fibank login"),
        "{text}"
    );
}

#[tokio::test]
async fn email_arrives_at_the_smtp_sink() {
    let sink = SmtpSink::start().await.unwrap();
    let channel = one(&format!(
        r#"
        [[channel]]
        name = "mail"
        type = "email"
        smtp_host = "127.0.0.1"
        smtp_port = {}
        tls = "none"
        username = "checks"
        password = "smtp-pa55"
        from = "bankbridge <checks@example.org>"
        to = ["ops@example.org", "Oncall <oncall@example.org>"]
        "#,
        sink.port()
    ));
    let notifier = Notifier::new();
    notifier.send(&channel, &failure()).await.unwrap();
    let mails = sink.wait_for(1, WAIT).await.unwrap();
    let mail = &mails[0];
    assert_eq!(mail.from, "checks@example.org");
    assert_eq!(mail.to, ["ops@example.org", "oncall@example.org"]);
    assert_eq!(
        mail.auth,
        Some(SmtpAuth {
            username: "checks".into(),
            password: "smtp-pa55".into()
        })
    );
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("[bankbridge] FAILING: Fibank login")
    );
    assert!(mail.header("To").unwrap().contains("ops@example.org"));
    let body = mail.body();
    for part in [
        "step `token` failed: expected status 200, got 503",
        "Failed step: token",
        "Run:         42",
        "  - sofia: failed",
        "status 503 <html>busy & down</html>",
        "channel \"mail\"",
    ] {
        assert!(body.contains(part), "{part:?} not in {body}");
    }

    let mut recovery = failure();
    recovery.kind = AlertKind::Recovery;
    notifier.send(&channel, &recovery).await.unwrap();
    notifier.send(&channel, &cert_alert(12)).await.unwrap();
    let mails = sink.wait_for(3, WAIT).await.unwrap();
    assert_eq!(
        mails[1].header("subject").as_deref(),
        Some("[bankbridge] RECOVERED: Fibank login")
    );
    assert_eq!(
        mails[2].header("subject").as_deref(),
        Some("[bankbridge] CERTIFICATE EXPIRES in 12 days: api.fibank.example (Fibank login)")
    );
}

#[tokio::test]
async fn pagerduty_triggers_then_resolves_one_incident() {
    let receiver = HttpReceiver::start_with_status(202).await.unwrap();
    receiver.set_response_body(r#"{"status":"success","message":"Event processed"}"#);
    let channel = parse_channels_with_env(
        &format!(
            r#"
            [[channel]]
            name = "pager"
            type = "pagerduty"
            routing_key = {{ env = "PD_ROUTING_KEY" }}
            events_url = "{}/v2/enqueue"
            "#,
            receiver.url()
        ),
        |name| (name == "PD_ROUTING_KEY").then(|| "R0UTING-KEY-123".to_owned()),
    )
    .unwrap()
    .remove(0);
    let notifier = Notifier::new();
    notifier.send(&channel, &failure()).await.unwrap();
    let mut recovery = failure();
    recovery.kind = AlertKind::Recovery;
    notifier.send(&channel, &recovery).await.unwrap();
    let requests = receiver.wait_for(2, WAIT).await.unwrap();
    let (trigger, resolve) = (&requests[0].body, &requests[1].body);
    assert_eq!(requests[0].path, "/v2/enqueue");
    assert_eq!(trigger["routing_key"], "R0UTING-KEY-123");
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["dedup_key"], "bankbridge:fibank-login");
    let payload = &trigger["payload"];
    assert_eq!(payload["source"], "bankbridge");
    assert_eq!(payload["severity"], "critical");
    assert_eq!(payload["timestamp"], "2025-03-01T12:00:00.000Z");
    assert!(
        payload["summary"]
            .as_str()
            .unwrap()
            .starts_with("FAILING: Fibank login — step `token` failed")
    );
    assert_eq!(payload["custom_details"]["failed_step"], "token");
    assert_eq!(payload["custom_details"]["run_id"], 42);
    assert_eq!(resolve["event_action"], "resolve");
    assert_eq!(resolve["routing_key"], "R0UTING-KEY-123");
    assert_eq!(resolve["dedup_key"], trigger["dedup_key"]);

    notifier.send(&channel, &cert_alert(5)).await.unwrap();
    let requests = receiver.wait_for(3, WAIT).await.unwrap();
    assert_eq!(
        requests[2].body["dedup_key"],
        "bankbridge:cert:api.fibank.example"
    );
    assert_eq!(requests[2].body["payload"]["severity"], "warning");
}

#[tokio::test]
async fn a_failing_receiver_is_an_error_without_secrets() {
    let receiver = HttpReceiver::start_with_status(500).await.unwrap();
    // Receivers echo requests back; the key must still not surface.
    receiver.set_response_body("bad routing key R0UTING-KEY-123");
    let toml = format!(
        r#"
        [[channel]]
        name = "pager"
        type = "pagerduty"
        routing_key = "R0UTING-KEY-123"
        events_url = "{url}/v2/enqueue"
        [[channel]]
        name = "hook"
        type = "webhook"
        url = "{url}/hook"
        headers = {{ "Authorization" = "Bearer hdr-s3cret" }}
        "#,
        url = receiver.url()
    );
    let channels = parse_channels(&toml).unwrap();
    let notifier = Notifier::new();

    let error = notifier.send(&channels[0], &failure()).await.unwrap_err();
    assert!(
        matches!(error, AlertError::Status { status: 500, .. }),
        "{error:?}"
    );
    let shown = error.to_string();
    assert!(
        shown.starts_with("channel \"pager\" (pagerduty): the receiver answered HTTP 500"),
        "{shown}"
    );
    assert!(shown.contains("bad routing key [redacted]"), "{shown}");
    for text in [shown, format!("{error:?}"), format!("{channels:?}")] {
        assert!(!text.contains("R0UTING-KEY-123"), "{text}");
        assert!(!text.contains("hdr-s3cret"), "{text}");
    }

    receiver.set_status(404);
    receiver.set_response_body("");
    let error = notifier.send(&channels[1], &failure()).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "channel \"hook\" (webhook): the receiver answered HTTP 404 Not Found"
    );
}

#[tokio::test]
async fn an_unreachable_receiver_is_an_error_naming_the_channel() {
    // A port that was free a moment ago: nothing listens there now.
    let port = {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.local_addr().unwrap().port()
    };
    let channels = parse_channels(&format!(
        r#"
        [[channel]]
        name = "chat"
        type = "slack"
        webhook_url = "http://127.0.0.1:{port}/services/T/B/sl4ck-secret"
        [[channel]]
        name = "mail"
        type = "email"
        smtp_host = "127.0.0.1"
        smtp_port = {port}
        tls = "none"
        from = "checks@example.org"
        to = ["ops@example.org"]
        "#
    ))
    .unwrap();
    let notifier = Notifier::new();
    let error = notifier.send(&channels[0], &failure()).await.unwrap_err();
    let shown = error.to_string();
    assert!(
        shown.starts_with("channel \"chat\" (slack): delivery failed"),
        "{shown}"
    );
    assert!(!shown.contains("sl4ck-secret") && !format!("{error:?}").contains("sl4ck-secret"));
    let error = notifier.send(&channels[1], &failure()).await.unwrap_err();
    let shown = error.to_string();
    assert!(
        shown.starts_with(&format!(
            "channel \"mail\" (email): delivery failed: SMTP 127.0.0.1:{port}"
        )),
        "{shown}"
    );
}

#[test]
fn wants_switches_per_kind() {
    let channels = parse_channels(
        r#"
        [[channel]]
        name = "defaults"
        type = "webhook"
        url = "http://127.0.0.1:9/"
        [[channel]]
        name = "everything"
        type = "webhook"
        url = "http://127.0.0.1:9/"
        send_failure = true
        send_recovery = false
        send_degraded = true
        ssl_expiry = true
        ssl_expiry_threshold_days = 7
        reminder = "30m"
        "#,
    )
    .unwrap();
    let (defaults, everything) = (&channels[0], &channels[1]);
    let mut degraded = failure();
    degraded.kind = AlertKind::Degraded;
    let mut recovery = failure();
    recovery.kind = AlertKind::Recovery;

    assert!(defaults.wants(&failure()));
    assert!(!defaults.wants(&degraded));
    assert!(defaults.wants(&recovery));
    assert!(!defaults.wants(&cert_alert(1)));
    assert_eq!(defaults.reminder(), None);

    assert!(everything.wants(&failure()));
    assert!(everything.wants(&degraded));
    assert!(!everything.wants(&recovery));
    assert!(everything.wants(&cert_alert(7)));
    assert!(everything.wants(&cert_alert(0)));
    assert!(!everything.wants(&cert_alert(8)));
    assert_eq!(everything.reminder(), Some(Duration::from_secs(30 * 60)));
}

#[test]
fn parse_errors_are_clear() {
    let error = |toml: &str| parse_channels(toml).unwrap_err().to_string();
    let e = error("[[channel]]\nname = \"x\"\ntype = \"telegram\"\n");
    assert!(
        e.starts_with("channels file: line 3, column 8: unknown variant `telegram`"),
        "{e}"
    );
    let e = error("[[channel]]\nname = \"x\"\ntype = \"webhook\"\n");
    assert_eq!(e, "channel \"x\": a webhook channel needs `url`");
    let e =
        error("[[channel]]\nname = \"m\"\ntype = \"email\"\nsmtp_host = \"h\"\nfrom = \"a@b.c\"\n");
    assert_eq!(e, "channel \"m\": an email channel needs `to`");
    let e = error(
        "[[channel]]\nname = \"p\"\ntype = \"pagerduty\"\nrouting_key = { env = \"BANKBRIDGE_TEST_SURELY_UNSET_9F3A\" }\n",
    );
    assert_eq!(
        e,
        "channel \"p\": routing_key reads environment variable BANKBRIDGE_TEST_SURELY_UNSET_9F3A, which is not set"
    );
    let e = error(
        "[[channel]]\nname = \"p\"\ntype = \"pagerduty\"\nrouting_key = { environment = \"X\" }\n",
    );
    assert!(
        e.contains("unknown field `environment`, expected `env`"),
        "{e}"
    );
    let e = error(
        "[[channel]]\nname = \"a\"\ntype = \"slack\"\nwebhook_url = \"https://h/1\"\n\
         [[channel]]\nname = \"a\"\ntype = \"slack\"\nwebhook_url = \"https://h/2\"\n",
    );
    assert_eq!(
        e,
        "channels file: channel name \"a\" is used more than once"
    );
    assert!(error("not toml at all").starts_with("channels file: line 1"));
    // An empty file is no channels, not an error.
    assert!(parse_channels("").unwrap().is_empty());
}

#[test]
fn env_secrets_come_from_the_process_environment() {
    // PATH is set wherever tests run; the value is never printed.
    let channels = parse_channels(
        "[[channel]]\nname = \"p\"\ntype = \"pagerduty\"\nrouting_key = { env = \"PATH\" }\n",
    )
    .unwrap();
    assert!(!format!("{channels:?}").contains(&std::env::var("PATH").unwrap()));
}

// ---------------------------------------------------------------------------
// The receivers themselves
// ---------------------------------------------------------------------------

async fn converse(port: u16, script: &[u8]) -> String {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .unwrap();
    stream.write_all(script).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn smtp_sink_speaks_smtp() {
    let sink = SmtpSink::start().await.unwrap();
    let script = "EHLO me\r\nAUTH LOGIN\r\nYm90\r\ncHc=\r\nMAIL FROM:<a@example.org> BODY=8BITMIME\r\n\
                  RCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n\
                  Subject: hi\r\n there\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
                  ..dot caf=C3=A9 =\r\nend\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n";
    let out = converse(sink.port(), script.as_bytes()).await;
    assert!(out.starts_with("220 "), "{out}");
    for code in [
        "250-AUTH PLAIN LOGIN",
        "334 ",
        "235 ",
        "354 ",
        "250 2.0.0 OK queued",
    ] {
        assert!(out.contains(code), "{code} not in {out}");
    }
    assert!(out.ends_with("221 2.0.0 bye\r\n"), "{out}");
    assert!(!out.contains("STARTTLS"), "{out}");
    let mail = &sink.wait_for(1, WAIT).await.unwrap()[0];
    assert_eq!(mail.from, "a@example.org");
    assert_eq!(mail.to, ["b@example.org", "c@example.org"]);
    assert_eq!(mail.header("subject").as_deref(), Some("hi there"));
    assert!(
        mail.data.ends_with("\r\n.dot caf=C3=A9 =\r\nend\r\n"),
        "{:?}",
        mail.data
    );
    assert_eq!(mail.body(), ".dot café end\r\n");
    assert_eq!(
        mail.auth,
        Some(SmtpAuth {
            username: "bot".into(),
            password: "pw".into()
        })
    );
}

#[tokio::test]
async fn smtp_sink_survives_bad_input() {
    let sink = SmtpSink::start().await.unwrap();
    let mut script = b"HELO x\r\nDATA\r\nRCPT TO:<x@y>\r\nMAIL nonsense\r\nAUTH PLAIN !!!\r\nAUTH CRAM-MD5\r\n\xff\xfe\r\n".to_vec();
    script.extend(vec![b'a'; 20_000]);
    script.extend_from_slice(b"\r\nQUIT\r\n");
    let out = converse(sink.port(), &script).await;
    for code in [
        "503 ",
        "501 ",
        "504 ",
        "500 5.5.2 command",
        "500 5.5.2 line too long",
        "221 ",
    ] {
        assert!(out.contains(code), "{code} not in {out}");
    }
    assert!(sink.messages().is_empty());
    // A client that vanishes mid-DATA leaves the sink serving.
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, sink.port()))
        .await
        .unwrap();
    stream
        .write_all(b"HELO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nhalf")
        .await
        .unwrap();
    drop(stream);
    let out = converse(sink.port(), b"QUIT\r\n").await;
    assert!(out.ends_with("221 2.0.0 bye\r\n"), "{out}");
    assert!(sink.messages().is_empty());
    let error = sink
        .wait_for(1, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
}

#[tokio::test]
async fn http_receiver_records_any_post() {
    let receiver = HttpReceiver::start().await.unwrap();
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{}/a/b?x=1", receiver.url()))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = client.get(receiver.url()).send().await.unwrap();
    assert_eq!(response.status(), 405);
    let requests = receiver.wait_for(1, WAIT).await.unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/a/b?x=1");
    assert_eq!(
        requests[0].body,
        serde_json::Value::String("not json".into())
    );
    assert_eq!(requests[0].text, "not json");
}
