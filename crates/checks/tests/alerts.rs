//! Alert channels delivering to real local receivers (an HTTP server and an
//! SMTP sink from the sandbox crate, and a recorder of any request for the
//! channels whose method, path and headers matter), and the receivers' own
//! robustness.
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bankbridge_checks::alerts::{
    Alert, AlertError, AlertKind, CertificateInfo, ChannelConfig, LocationOutcome, Notifier,
    parse_channels, parse_channels_with_env, read_channels, read_channels_with_env,
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
    let e = error("[[channel]]\nname = \"x\"\ntype = \"sms\"\n");
    assert!(
        e.starts_with("channel \"x\": unknown channel type \"sms\"; expected one of webhook, slack, email, pagerduty, teams, discord, telegram, ntfy, gotify, opsgenie"),
        "{e}"
    );
    let e = error("[[channel]]\nname = \"x\"\ntype = 5\n");
    assert!(
        e.starts_with("channels file: line 3, column 8: invalid type: integer `5`"),
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
// Teams, Discord, Telegram, ntfy, Gotify and Opsgenie, each against a local
// receiver that records what a real one would need: method, path, headers
// and body.
// ---------------------------------------------------------------------------

/// One request a [`Recorder`] took.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    /// Path and query.
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

#[derive(Default)]
struct RecorderState {
    seen: Mutex<Vec<Seen>>,
    status: AtomicU16,
    answer: Mutex<String>,
}

/// An HTTP server on 127.0.0.1 that records every request (any method, any
/// path) and answers with the status and body the test sets.
struct Recorder {
    url: String,
    state: Arc<RecorderState>,
    count: tokio::sync::watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    async fn start(status: u16) -> Recorder {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(RecorderState::default());
        state.status.store(status, Ordering::SeqCst);
        let (tx, count) = tokio::sync::watch::channel(0usize);
        let tx = Arc::new(tx);
        let handler_state = state.clone();
        let app = axum::Router::new().fallback(
            move |method: axum::http::Method,
                  uri: axum::http::Uri,
                  headers: axum::http::HeaderMap,
                  body: axum::body::Bytes| {
                let state = handler_state.clone();
                let tx = tx.clone();
                async move {
                    let seen = Seen {
                        method: method.to_string(),
                        path: uri.path_and_query().map_or("", |p| p.as_str()).to_owned(),
                        headers: headers
                            .iter()
                            .map(|(n, v)| {
                                (
                                    n.as_str().to_owned(),
                                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                )
                            })
                            .collect(),
                        body: String::from_utf8_lossy(&body).into_owned(),
                    };
                    let n = {
                        let mut all = state.seen.lock().unwrap();
                        all.push(seen);
                        all.len()
                    };
                    tx.send_replace(n);
                    let status =
                        axum::http::StatusCode::from_u16(state.status.load(Ordering::SeqCst))
                            .unwrap();
                    (status, state.answer.lock().unwrap().clone())
                }
            },
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Recorder {
            url,
            state,
            count,
            task,
        }
    }

    fn answer(&self, status: u16, body: &str) {
        self.state.status.store(status, Ordering::SeqCst);
        *self.state.answer.lock().unwrap() = body.to_owned();
    }

    async fn wait_for(&self, n: usize) -> Vec<Seen> {
        let mut count = self.count.clone();
        tokio::time::timeout(WAIT, count.wait_for(|c| *c >= n))
            .await
            .unwrap_or_else(|_| panic!("{n} request(s) expected"))
            .unwrap();
        self.state.seen.lock().unwrap().clone()
    }
}

fn recovery() -> Alert {
    let mut alert = failure();
    alert.kind = AlertKind::Recovery;
    alert.summary = "Fibank login passes again".into();
    alert.failed_step = None;
    alert.error = None;
    alert
}

fn with_env(toml: &str, vars: &[(&str, &str)]) -> ChannelConfig {
    let mut channels = parse_channels_with_env(toml, |name| {
        vars.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| (*v).to_owned())
    })
    .unwrap();
    assert_eq!(channels.len(), 1);
    channels.remove(0)
}

fn is_json(seen: &Seen) -> bool {
    seen.header("content-type")
        .is_some_and(|t| t.starts_with("application/json"))
}

#[tokio::test]
async fn teams_gets_an_adaptive_card() {
    let receiver = Recorder::start(202).await;
    let channel = with_env(
        r#"
        [[channel]]
        name = "teams"
        type = "teams"
        webhook_url = { env = "TEAMS_URL" }
        "#,
        &[(
            "TEAMS_URL",
            &format!(
                "{}/workflows/abc/triggers/manual/paths/invoke?sig=s1gnature",
                receiver.url
            ),
        )],
    );
    let notifier = Notifier::new();
    notifier.send(&channel, &failure()).await.unwrap();
    notifier.send(&channel, &recovery()).await.unwrap();
    let seen = receiver.wait_for(2).await;
    assert_eq!(seen[0].method, "POST");
    assert_eq!(
        seen[0].path,
        "/workflows/abc/triggers/manual/paths/invoke?sig=s1gnature"
    );
    assert!(is_json(&seen[0]));
    let body = seen[0].json();
    assert_eq!(body["type"], "message");
    let attachment = &body["attachments"][0];
    assert_eq!(
        attachment["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let card = &attachment["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert!(card["version"].is_string());
    let blocks = card["body"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "TextBlock");
    assert_eq!(blocks[0]["text"], "FAILING: Fibank login");
    assert_eq!(blocks[0]["color"], "Attention");
    let facts = blocks.iter().find(|b| b["type"] == "FactSet").unwrap()["facts"]
        .as_array()
        .unwrap();
    let fact = |title: &str| {
        facts
            .iter()
            .find(|f| f["title"] == title)
            .map(|f| f["value"].as_str().unwrap().to_owned())
    };
    assert_eq!(
        fact("Check").as_deref(),
        Some("Fibank login (fibank-login)")
    );
    assert_eq!(fact("Failed step").as_deref(), Some("token"));
    assert_eq!(fact("Run").as_deref(), Some("42"));
    let all = serde_json::to_string(&body).unwrap();
    assert!(all.contains("status 503 <html>busy & down</html>"), "{all}");

    let card = &seen[1].json()["attachments"][0]["content"];
    assert_eq!(card["body"][0]["text"], "RECOVERED: Fibank login");
    assert_eq!(card["body"][0]["color"], "Good");
}

#[tokio::test]
async fn discord_gets_content_and_an_embed() {
    let receiver = Recorder::start(204).await;
    let channel = one(&format!(
        r#"
        [[channel]]
        name = "discord"
        type = "discord"
        webhook_url = "{}/api/webhooks/1234/d1sc0rd-t0ken-value"
        "#,
        receiver.url
    ));
    let mut alert = failure();
    alert.check_name = "@everyone *Fibank* login".into();
    Notifier::new().send(&channel, &alert).await.unwrap();
    let seen = receiver.wait_for(1).await;
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/api/webhooks/1234/d1sc0rd-t0ken-value");
    assert!(is_json(&seen[0]));
    let body = seen[0].json();
    assert_eq!(
        body["content"], "FAILING: @everyone \\*Fibank\\* login",
        "markdown is escaped"
    );
    // Mentions never ping.
    assert_eq!(body["allowed_mentions"]["parse"], serde_json::json!([]));
    let embed = &body["embeds"][0];
    assert_eq!(embed["title"], "FAILING: @everyone *Fibank* login");
    assert_eq!(embed["color"], 0xD9_30_25);
    assert_eq!(embed["timestamp"], "2025-03-01T12:00:00.000Z");
    assert!(
        embed["description"]
            .as_str()
            .unwrap()
            .starts_with("step \\`token\\` failed")
    );
    let fields = embed["fields"].as_array().unwrap();
    let field = |name: &str| {
        fields
            .iter()
            .find(|f| f["name"] == name)
            .map(|f| f["value"].as_str().unwrap().to_owned())
    };
    assert_eq!(field("Failed step").as_deref(), Some("token"));
    assert_eq!(
        field("Locations").as_deref(),
        Some("sofia: failed, frankfurt: passed")
    );
    assert!(field("Error").unwrap().contains("status 503"));
}

#[tokio::test]
async fn telegram_posts_send_message_with_the_bot_token_in_the_path() {
    let receiver = Recorder::start(200).await;
    receiver.answer(200, r#"{"ok":true,"result":{}}"#);
    let channel = with_env(
        &format!(
            r#"
            [[channel]]
            name = "tg"
            type = "telegram"
            bot_token = {{ env = "TG_TOKEN" }}
            chat_id = -1001234567890
            api_url = "{}"
            send_degraded = true
            "#,
            receiver.url
        ),
        &[("TG_TOKEN", "123456:AAE-tg_t0ken")],
    );
    let notifier = Notifier::new();
    notifier.send(&channel, &failure()).await.unwrap();
    notifier.send(&channel, &recovery()).await.unwrap();
    let seen = receiver.wait_for(2).await;
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/bot123456:AAE-tg_t0ken/sendMessage");
    assert!(is_json(&seen[0]));
    let body = seen[0].json();
    assert_eq!(body["chat_id"], -1001234567890i64);
    let text = body["text"].as_str().unwrap();
    assert!(
        text.starts_with("🔴 FAILING: Fibank login\n\nstep `token` failed"),
        "{text}"
    );
    for part in [
        "Check: Fibank login (fibank-login)",
        "Failed step: token",
        "Locations: sofia: failed, frankfurt: passed",
        "Run: 42",
        "status 503 <html>busy & down</html>",
    ] {
        assert!(text.contains(part), "{part:?} not in {text}");
    }
    // Plain text: nothing for Telegram to parse as markup.
    assert!(body.get("parse_mode").is_none());
    let text = seen[1].json()["text"].as_str().unwrap().to_owned();
    assert!(text.starts_with("🟢 RECOVERED: Fibank login"), "{text}");

    // A channel name as chat_id goes as a string.
    let channel = one(&format!(
        "[[channel]]\nname = \"tg\"\ntype = \"telegram\"\nbot_token = \"1:x\"\nchat_id = \"@ops\"\napi_url = \"{}/tg/\"\n",
        receiver.url
    ));
    notifier.send(&channel, &failure()).await.unwrap();
    let seen = receiver.wait_for(3).await;
    assert_eq!(seen[2].path, "/tg/bot1:x/sendMessage");
    assert_eq!(seen[2].json()["chat_id"], "@ops");
}

#[tokio::test]
async fn ntfy_posts_text_with_title_priority_and_tags() {
    let receiver = Recorder::start(200).await;
    let channel = with_env(
        &format!(
            r#"
            [[channel]]
            name = "push"
            type = "ntfy"
            server_url = "{}/ntfy"
            topic = "bank-checks"
            token = {{ env = "NTFY_TOKEN" }}
            "#,
            receiver.url
        ),
        &[("NTFY_TOKEN", "tk_ntfy-access")],
    );
    let notifier = Notifier::new();
    notifier.send(&channel, &failure()).await.unwrap();
    let mut cyrillic = recovery();
    cyrillic.check_name = "Вход".into();
    notifier.send(&channel, &cyrillic).await.unwrap();
    let seen = receiver.wait_for(2).await;
    let first = &seen[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, "/ntfy/bank-checks");
    assert_eq!(first.header("authorization"), Some("Bearer tk_ntfy-access"));
    assert_eq!(first.header("title"), Some("FAILING: Fibank login"));
    assert_eq!(first.header("priority"), Some("4"));
    assert!(
        first.header("tags").unwrap().contains("rotating_light"),
        "{first:?}"
    );
    assert!(
        first
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(
        first.body.starts_with("step `token` failed"),
        "{}",
        first.body
    );
    assert!(first.body.contains("Failed step: token"), "{}", first.body);
    // A title that is not ASCII travels RFC 2047-encoded.
    let second = &seen[1];
    assert_eq!(second.header("priority"), Some("3"));
    assert!(second.header("tags").unwrap().contains("white_check_mark"));
    let title = second.header("title").unwrap();
    let encoded = title
        .strip_prefix("=?UTF-8?B?")
        .and_then(|t| t.strip_suffix("?="))
        .unwrap();
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    assert_eq!(String::from_utf8(decoded).unwrap(), "RECOVERED: Вход");

    // No token, no Authorization header.
    let channel = one(&format!(
        "[[channel]]\nname = \"p\"\ntype = \"ntfy\"\nserver_url = \"{}\"\ntopic = \"t\"\n",
        receiver.url
    ));
    notifier.send(&channel, &failure()).await.unwrap();
    let seen = receiver.wait_for(3).await;
    assert_eq!(seen[2].path, "/t");
    assert_eq!(seen[2].header("authorization"), None);
}

#[tokio::test]
async fn gotify_posts_a_message_with_the_app_token_header() {
    let receiver = Recorder::start(200).await;
    let channel = with_env(
        &format!(
            r#"
            [[channel]]
            name = "gotify"
            type = "gotify"
            server_url = "{}/"
            app_token = {{ env = "GOTIFY_TOKEN" }}
            "#,
            receiver.url
        ),
        &[("GOTIFY_TOKEN", "AgT0kenValue")],
    );
    let notifier = Notifier::new();
    notifier.send(&channel, &failure()).await.unwrap();
    notifier.send(&channel, &recovery()).await.unwrap();
    let seen = receiver.wait_for(2).await;
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/message");
    assert_eq!(seen[0].header("x-gotify-key"), Some("AgT0kenValue"));
    assert!(is_json(&seen[0]));
    let body = seen[0].json();
    assert_eq!(body["title"], "FAILING: Fibank login");
    assert_eq!(body["priority"], 8);
    let message = body["message"].as_str().unwrap();
    assert!(message.starts_with("step `token` failed"), "{message}");
    assert!(message.contains("Failed step: token"), "{message}");
    let body = seen[1].json();
    assert_eq!(body["title"], "RECOVERED: Fibank login");
    assert!(body["priority"].as_i64().unwrap() < 8);
}

#[tokio::test]
async fn opsgenie_opens_an_alert_and_a_recovery_closes_it() {
    let receiver = Recorder::start(202).await;
    receiver.answer(
        202,
        r#"{"result":"Request will be processed","took":0.01,"requestId":"r1"}"#,
    );
    let channel = with_env(
        &format!(
            r#"
            [[channel]]
            name = "genie"
            type = "opsgenie"
            api_key = {{ env = "OPSGENIE_KEY" }}
            api_url = "{}"
            "#,
            receiver.url
        ),
        &[("OPSGENIE_KEY", "0g-api-key-1234")],
    );
    let notifier = Notifier::new();
    notifier.send(&channel, &failure()).await.unwrap();
    notifier.send(&channel, &recovery()).await.unwrap();
    let seen = receiver.wait_for(2).await;
    let (open, close) = (&seen[0], &seen[1]);
    assert_eq!(open.method, "POST");
    assert_eq!(open.path, "/v2/alerts");
    assert_eq!(
        open.header("authorization"),
        Some("GenieKey 0g-api-key-1234")
    );
    assert!(is_json(open));
    let body = open.json();
    assert_eq!(body["alias"], "bankbridge:fibank-login");
    assert_eq!(body["message"], "FAILING: Fibank login");
    assert_eq!(body["priority"], "P1");
    assert_eq!(body["source"], "bankbridge");
    assert!(
        body["description"]
            .as_str()
            .unwrap()
            .contains("Failed step: token")
    );
    assert_eq!(body["details"]["failed_step"], "token");
    assert_eq!(body["details"]["run"], "42");

    assert_eq!(close.method, "POST");
    assert_eq!(
        close.path,
        "/v2/alerts/bankbridge:fibank-login/close?identifierType=alias"
    );
    assert_eq!(
        close.header("authorization"),
        Some("GenieKey 0g-api-key-1234")
    );
    assert_eq!(close.json()["source"], "bankbridge");

    // Degraded is a lower priority of the same alert.
    let mut degraded = failure();
    degraded.kind = AlertKind::Degraded;
    notifier.send(&channel, &degraded).await.unwrap();
    let seen = receiver.wait_for(3).await;
    assert_eq!(seen[2].path, "/v2/alerts");
    assert_eq!(seen[2].json()["priority"], "P3");
    assert_eq!(seen[2].json()["alias"], "bankbridge:fibank-login");
}

#[tokio::test]
async fn new_channels_keep_their_secrets_out_of_errors() {
    let receiver = Recorder::start(401).await;
    let toml = format!(
        r#"
        [[channel]]
        name = "tg"
        type = "telegram"
        bot_token = "999:tg-s3cret-token"
        chat_id = 1
        api_url = "{url}"
        [[channel]]
        name = "genie"
        type = "opsgenie"
        api_key = "og-s3cret-key"
        api_url = "{url}"
        [[channel]]
        name = "push"
        type = "ntfy"
        server_url = "{url}"
        topic = "s3cret-topic"
        token = "ntfy-s3cret-token"
        [[channel]]
        name = "gotify"
        type = "gotify"
        server_url = "{url}"
        app_token = "gotify-s3cret"
        [[channel]]
        name = "discord"
        type = "discord"
        webhook_url = "{url}/api/webhooks/1/discord-s3cret-token"
        [[channel]]
        name = "teams"
        type = "teams"
        webhook_url = "{url}/teams-s3cret-path-token"
        "#,
        url = receiver.url
    );
    let channels = parse_channels(&toml).unwrap();
    let secrets = [
        "tg-s3cret-token",
        "og-s3cret-key",
        "s3cret-topic",
        "ntfy-s3cret-token",
        "gotify-s3cret",
        "discord-s3cret-token",
        "teams-s3cret-path-token",
    ];
    // The receiver echoes every secret back, as error pages do.
    receiver.answer(401, &format!("bad credentials: {}", secrets.join(" ")));
    let notifier = Notifier::new();
    for channel in &channels {
        let error = notifier.send(channel, &failure()).await.unwrap_err();
        assert!(
            matches!(error, AlertError::Status { status: 401, .. }),
            "{error:?}"
        );
        let shown = error.to_string();
        assert!(
            shown.starts_with(&format!(
                "channel \"{}\" ({}): the receiver answered HTTP 401",
                channel.name,
                channel.kind.type_name()
            )),
            "{shown}"
        );
        assert!(shown.contains("[redacted]"), "{shown}");
        for text in [&shown, &format!("{error:?}")] {
            for secret in channel_secrets(channel.kind.type_name(), &secrets) {
                assert!(!text.contains(secret), "{secret} in {text}");
            }
        }
    }
    let printed = format!("{channels:?}");
    for secret in secrets {
        assert!(!printed.contains(secret), "{secret} in {printed}");
    }
}

/// The secrets of `secrets` that belong to a channel of type `kind`.
fn channel_secrets<'a>(kind: &str, secrets: &[&'a str]) -> Vec<&'a str> {
    let prefix = match kind {
        "telegram" => "tg-",
        "opsgenie" => "og-",
        "ntfy" => "s3cret-topic",
        "gotify" => "gotify-",
        "discord" => "discord-",
        _ => "teams-",
    };
    let mut mine: Vec<&str> = secrets
        .iter()
        .copied()
        .filter(|s| s.starts_with(prefix))
        .collect();
    if kind == "ntfy" {
        mine.push("ntfy-s3cret-token");
    }
    mine
}

#[test]
fn new_channels_take_the_same_switches() {
    let common = "send_failure = false\nsend_recovery = false\nsend_degraded = true\nssl_expiry = true\nssl_expiry_threshold_days = 7\nreminder = \"2h\"\n";
    let kinds = [
        "type = \"teams\"\nwebhook_url = \"http://127.0.0.1:9/t\"",
        "type = \"discord\"\nwebhook_url = \"http://127.0.0.1:9/d\"",
        "type = \"telegram\"\nbot_token = \"1:a\"\nchat_id = 5",
        "type = \"ntfy\"\nserver_url = \"http://127.0.0.1:9\"\ntopic = \"t\"",
        "type = \"gotify\"\nserver_url = \"http://127.0.0.1:9\"\napp_token = \"a\"",
        "type = \"opsgenie\"\napi_key = \"k\"",
    ];
    let mut degraded = failure();
    degraded.kind = AlertKind::Degraded;
    for (i, kind) in kinds.iter().enumerate() {
        let defaults = one(&format!("[[channel]]\nname = \"d{i}\"\n{kind}\n"));
        assert!(defaults.wants(&failure()) && defaults.wants(&recovery()));
        assert!(!defaults.wants(&degraded) && !defaults.wants(&cert_alert(1)));
        assert_eq!(defaults.reminder(), None);
        let set = one(&format!("[[channel]]\nname = \"s{i}\"\n{kind}\n{common}"));
        assert!(!set.wants(&failure()) && !set.wants(&recovery()), "{kind}");
        assert!(set.wants(&degraded) && set.wants(&cert_alert(7)), "{kind}");
        assert!(!set.wants(&cert_alert(8)), "{kind}");
        assert_eq!(set.reminder(), Some(Duration::from_secs(7200)), "{kind}");
    }
}

#[test]
fn new_channels_name_what_is_missing_or_unknown() {
    let error = |body: &str| {
        parse_channels(&format!("[[channel]]\nname = \"c\"\n{body}\n"))
            .unwrap_err()
            .to_string()
    };
    for (body, message) in [
        ("type = \"teams\"", "a teams channel needs `webhook_url`"),
        (
            "type = \"discord\"",
            "a discord channel needs `webhook_url`",
        ),
        (
            "type = \"telegram\"\nchat_id = 1",
            "a telegram channel needs `bot_token`",
        ),
        (
            "type = \"telegram\"\nbot_token = \"1:a\"",
            "a telegram channel needs `chat_id`",
        ),
        (
            "type = \"ntfy\"\ntopic = \"t\"",
            "an ntfy channel needs `server_url`",
        ),
        (
            "type = \"ntfy\"\nserver_url = \"http://127.0.0.1:9\"",
            "an ntfy channel needs `topic`",
        ),
        (
            "type = \"gotify\"\napp_token = \"a\"",
            "a gotify channel needs `server_url`",
        ),
        (
            "type = \"gotify\"\nserver_url = \"http://127.0.0.1:9\"",
            "a gotify channel needs `app_token`",
        ),
        ("type = \"opsgenie\"", "an opsgenie channel needs `api_key`"),
        (
            "type = \"gotify\"\nserver_url = \"http://127.0.0.1:9\"\napp_token = \"a\"\napi_key = \"k\"",
            "`api_key` does not apply to a gotify channel",
        ),
    ] {
        assert_eq!(error(body), format!("channel \"c\": {message}"), "{body}");
    }
    let e = error("type = \"opsgenie\"\napi_key = \"k\"\nregion = \"eu\"");
    assert!(
        e.starts_with("channels file: line 5, column 1: unknown field `region`"),
        "{e}"
    );
    let e = error(
        "type = \"telegram\"\nbot_token = { env = \"BANKBRIDGE_TEST_SURELY_UNSET_7C1D\" }\nchat_id = 1",
    );
    assert_eq!(
        e,
        "channel \"c\": bot_token reads environment variable BANKBRIDGE_TEST_SURELY_UNSET_7C1D, which is not set"
    );
}

#[test]
fn read_channels_reports_every_bad_channel_with_its_line() {
    let text = "\
[[channel]]
name = \"one\"
type = \"pager\"

[[channel]]
name = \"two\"
type = \"discord\"

[[channel]]
name = \"three\"
type = \"ntfy\"
server_url = \"http://127.0.0.1:9\"
topic = \"no spaces allowed\"
";
    let problems = read_channels(text).unwrap_err();
    let shown: Vec<(usize, String)> = problems.iter().map(|p| (p.line, p.message())).collect();
    assert_eq!(shown.len(), 3, "{shown:#?}");
    assert_eq!(shown[0].0, 3);
    assert!(
        shown[0].1.contains("unknown channel type \"pager\""),
        "{shown:#?}"
    );
    assert_eq!(
        shown[1],
        (
            5,
            "channel \"two\": a discord channel needs `webhook_url`".into()
        )
    );
    assert_eq!(shown[2].0, 13);
    assert!(shown[2].1.contains("topic: at most 64"), "{shown:#?}");
    // A good file reads the same as with parse_channels.
    assert_eq!(read_channels("").unwrap(), Vec::new());
}

#[test]
fn the_example_channels_file_is_valid() {
    let text = include_str!("../../../examples/channels/channels.toml");
    let channels = read_channels_with_env(text, |name| {
        let value = if name.ends_with("_URL") {
            "https://127.0.0.1/placeholder"
        } else {
            "placeholder-value1"
        };
        name.starts_with("BANKBRIDGE_ALERT_")
            .then(|| value.to_owned())
    })
    .unwrap_or_else(|problems| panic!("{problems:#?}"));
    let mut kinds: Vec<&str> = channels.iter().map(|c| c.kind.type_name()).collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "discord",
            "email",
            "gotify",
            "ntfy",
            "opsgenie",
            "pagerduty",
            "slack",
            "teams",
            "telegram",
            "webhook"
        ]
    );
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
