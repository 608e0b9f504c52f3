//! Alert channels: where a check's failure, degradation, recovery or
//! certificate expiry is told, and how.
//!
//! A project's `channels.toml` lists `[[channel]]` tables ([`parse_channels`]):
//! a JSON webhook, a Slack incoming webhook, e-mail over SMTP, or a PagerDuty
//! Events API v2 integration, each with Checkly's switches for which alerts
//! it wants ([`ChannelConfig::wants`]) and an optional reminder interval.
//! [`Notifier::send`] delivers one [`Alert`] to one channel; deciding *when*
//! to alert (thresholds, reminders due) is the scheduler's job, not this
//! module's.
//!
//! Secrets (header values, the Slack URL, the SMTP password, the routing
//! key) are [`Secret`]s: they print as `[redacted]`, and they are scrubbed
//! from whatever a receiver answers before that text reaches an
//! [`AlertError`].
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

use bankbridge_core::Secret;
use chrono::{DateTime, SecondsFormat, Utc};
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use reqwest::header::{HeaderName, HeaderValue};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};
use url::Url;

/// PagerDuty's Events API v2 endpoint, used when a channel names none.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// How long one delivery may take: a slow receiver must not hold up the
/// scheduler's next runs.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// What happened to a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    Failure,
    Degraded,
    Recovery,
    CertificateExpiry,
}

/// One location's result of the run that raised the alert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocationOutcome {
    pub location: String,
    /// `passed`, `failed`, `degraded`, … as the runner words it.
    pub outcome: String,
}

/// The certificate a [`AlertKind::CertificateExpiry`] alert is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateInfo {
    pub host: String,
    pub expires_at: DateTime<Utc>,
    /// Negative once expired.
    pub days_left: i64,
}

/// One alert, as every channel receives it (the webhook gets it verbatim as
/// JSON). Text fields arrive already redacted: this module sends them as is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub kind: AlertKind,
    /// A repeat while the check is still failing or degraded.
    pub reminder: bool,
    pub check_id: String,
    pub check_name: String,
    /// One line.
    pub summary: String,
    pub failed_step: Option<String>,
    pub error: Option<String>,
    pub locations: Vec<LocationOutcome>,
    pub run_id: Option<i64>,
    pub at: DateTime<Utc>,
    pub certificate: Option<CertificateInfo>,
}

impl Alert {
    /// An alert with no step, error, locations, run or certificate yet.
    pub fn new(
        kind: AlertKind,
        check_id: impl Into<String>,
        check_name: impl Into<String>,
        summary: impl Into<String>,
        at: DateTime<Utc>,
    ) -> Alert {
        Alert {
            kind,
            reminder: false,
            check_id: check_id.into(),
            check_name: check_name.into(),
            summary: summary.into(),
            failed_step: None,
            error: None,
            locations: Vec::new(),
            run_id: None,
            at,
            certificate: None,
        }
    }

    /// The status word alone: `FAILING`, `STILL FAILING`, `DEGRADED`,
    /// `RECOVERED`, `CERTIFICATE EXPIRES in 12 days`, …
    pub fn status(&self) -> String {
        match self.kind {
            AlertKind::Failure if self.reminder => "STILL FAILING".into(),
            AlertKind::Failure => "FAILING".into(),
            AlertKind::Degraded if self.reminder => "STILL DEGRADED".into(),
            AlertKind::Degraded => "DEGRADED".into(),
            AlertKind::Recovery => "RECOVERED".into(),
            AlertKind::CertificateExpiry => match &self.certificate {
                None => "CERTIFICATE EXPIRES".into(),
                Some(c) => match c.days_left {
                    d if d < 0 => "CERTIFICATE EXPIRED".into(),
                    0 => "CERTIFICATE EXPIRES today".into(),
                    1 => "CERTIFICATE EXPIRES in 1 day".into(),
                    d => format!("CERTIFICATE EXPIRES in {d} days"),
                },
            },
        }
    }

    /// One line naming what happened and to what: the e-mail subject (after
    /// `[bankbridge] `), the Slack header, the PagerDuty summary's start.
    pub fn headline(&self) -> String {
        let name = one_line(&self.check_name);
        match (&self.kind, &self.certificate) {
            (AlertKind::CertificateExpiry, Some(c)) => {
                format!("{}: {} ({name})", self.status(), one_line(&c.host))
            }
            _ => format!("{}: {name}", self.status()),
        }
    }
}

/// Whether and how an SMTP connection is encrypted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text: only for a relay on the same host or a test sink.
    None,
    /// STARTTLS, required (port 587 by default).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465 by default).
    Tls,
}

impl SmtpTls {
    fn default_port(self) -> u16 {
        match self {
            SmtpTls::None => 25,
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
        }
    }
}

/// An e-mail channel's SMTP submission settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmailChannel {
    pub smtp_host: String,
    pub smtp_port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<Secret<String>>,
    /// A mailbox, checked when parsed: `bankbridge <checks@example.org>`.
    pub from: String,
    /// At least one mailbox, each checked when parsed.
    pub to: Vec<String>,
}

/// Where a channel delivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelKind {
    /// POST of the alert as JSON.
    Webhook {
        url: Url,
        /// Names checked when parsed; values are secrets (tokens, as a rule).
        headers: Vec<(String, Secret<String>)>,
    },
    /// A Slack (or Slack-compatible) incoming webhook; its URL is the secret.
    Slack {
        webhook_url: Secret<String>,
    },
    Email(EmailChannel),
    PagerDuty {
        routing_key: Secret<String>,
        events_url: Url,
    },
}

impl ChannelKind {
    /// The `type` word of `channels.toml`.
    pub fn type_name(&self) -> &'static str {
        match self {
            ChannelKind::Webhook { .. } => "webhook",
            ChannelKind::Slack { .. } => "slack",
            ChannelKind::Email(_) => "email",
            ChannelKind::PagerDuty { .. } => "pagerduty",
        }
    }

    /// Every secret value, to scrub from text a receiver sends back.
    fn secrets(&self) -> Vec<&str> {
        match self {
            ChannelKind::Webhook { headers, .. } => {
                headers.iter().map(|(_, v)| v.expose().as_str()).collect()
            }
            ChannelKind::Slack { webhook_url } => vec![webhook_url.expose().as_str()],
            ChannelKind::Email(e) => e.password.iter().map(|p| p.expose().as_str()).collect(),
            ChannelKind::PagerDuty { routing_key, .. } => vec![routing_key.expose().as_str()],
        }
    }
}

/// One `[[channel]]` of `channels.toml`, validated, secrets resolved.
/// `Debug` never shows a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelConfig {
    pub name: String,
    pub kind: ChannelKind,
    pub send_failure: bool,
    pub send_recovery: bool,
    pub send_degraded: bool,
    pub ssl_expiry: bool,
    /// A certificate alert is wanted once this few days (or fewer) are left.
    pub ssl_expiry_threshold_days: i64,
    /// Repeat failure/degraded alerts this often while the state lasts.
    pub reminder: Option<Duration>,
}

impl ChannelConfig {
    /// Whether this channel takes `alert`, by Checkly's switches.
    pub fn wants(&self, alert: &Alert) -> bool {
        match alert.kind {
            AlertKind::Failure => self.send_failure,
            AlertKind::Degraded => self.send_degraded,
            AlertKind::Recovery => self.send_recovery,
            AlertKind::CertificateExpiry => {
                self.ssl_expiry
                    && alert
                        .certificate
                        .as_ref()
                        .is_some_and(|c| c.days_left <= self.ssl_expiry_threshold_days)
            }
        }
    }

    /// How often to repeat an alert while a check stays failing or degraded.
    pub fn reminder(&self) -> Option<Duration> {
        self.reminder
    }
}

/// What went wrong reading channels or delivering an alert. Messages name
/// the channel and the failing part, never a secret value.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// Not TOML, or not the shape of a channels file.
    #[error("channels file: {0}")]
    Parse(String),
    /// A channel's settings make no sense.
    #[error("channel {channel:?}: {message}")]
    Invalid { channel: String, message: String },
    /// A `{ env = "NAME" }` secret whose variable is unset.
    #[error("channel {channel:?}: {field} reads environment variable {var}, which is not set")]
    MissingEnv {
        channel: String,
        field: String,
        var: String,
    },
    #[error("channels file: channel name {0:?} is used more than once")]
    DuplicateName(String),
    /// The receiver could not be reached or the message not be handed over.
    #[error("channel {channel:?} ({kind}): delivery failed: {message}")]
    Delivery {
        channel: String,
        kind: &'static str,
        message: String,
    },
    /// The receiver answered with a status that is not a success.
    #[error("channel {channel:?} ({kind}): the receiver answered HTTP {status}{detail}")]
    Status {
        channel: String,
        kind: &'static str,
        status: u16,
        /// `: ` and the start of the answer's body (secrets scrubbed), or empty.
        detail: String,
    },
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelsFile {
    #[serde(default)]
    channel: Vec<RawChannel>,
}

#[derive(Clone, Copy, Deserialize)]
enum RawKind {
    #[serde(rename = "webhook")]
    Webhook,
    #[serde(rename = "slack")]
    Slack,
    #[serde(rename = "email")]
    Email,
    #[serde(rename = "pagerduty")]
    PagerDuty,
}

impl RawKind {
    fn name(self) -> &'static str {
        match self {
            RawKind::Webhook => "webhook",
            RawKind::Slack => "slack",
            RawKind::Email => "email",
            RawKind::PagerDuty => "pagerduty",
        }
    }

    /// The kind-specific fields this kind takes (the rest are refused, so a
    /// misplaced setting is not silently ignored).
    fn fields(self) -> &'static [&'static str] {
        match self {
            RawKind::Webhook => &["url", "headers"],
            RawKind::Slack => &["webhook_url"],
            RawKind::Email => &[
                "smtp_host",
                "smtp_port",
                "tls",
                "username",
                "password",
                "from",
                "to",
            ],
            RawKind::PagerDuty => &["routing_key", "events_url"],
        }
    }
}

/// One flat table: every kind's fields optional, checked per kind after, so
/// errors can say "a slack channel needs `webhook_url`" rather than serde's
/// "data did not match any variant".
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannel {
    name: String,
    #[serde(rename = "type")]
    kind: RawKind,
    send_failure: Option<bool>,
    send_recovery: Option<bool>,
    send_degraded: Option<bool>,
    ssl_expiry: Option<bool>,
    ssl_expiry_threshold_days: Option<i64>,
    reminder: Option<String>,
    url: Option<String>,
    headers: Option<BTreeMap<String, SecretSource>>,
    webhook_url: Option<SecretSource>,
    smtp_host: Option<String>,
    smtp_port: Option<u16>,
    tls: Option<SmtpTls>,
    username: Option<String>,
    password: Option<SecretSource>,
    from: Option<String>,
    to: Option<Vec<String>>,
    routing_key: Option<SecretSource>,
    events_url: Option<String>,
}

impl RawChannel {
    fn present_fields(&self) -> Vec<&'static str> {
        let mut present = Vec::new();
        let mut note = |set: bool, name: &'static str| {
            if set {
                present.push(name);
            }
        };
        note(self.url.is_some(), "url");
        note(self.headers.is_some(), "headers");
        note(self.webhook_url.is_some(), "webhook_url");
        note(self.smtp_host.is_some(), "smtp_host");
        note(self.smtp_port.is_some(), "smtp_port");
        note(self.tls.is_some(), "tls");
        note(self.username.is_some(), "username");
        note(self.password.is_some(), "password");
        note(self.from.is_some(), "from");
        note(self.to.is_some(), "to");
        note(self.routing_key.is_some(), "routing_key");
        note(self.events_url.is_some(), "events_url");
        present
    }
}

/// A secret as written: a literal, or the name of an environment variable
/// so the file itself can be committed.
enum SecretSource {
    Literal(Secret<String>),
    Env(String),
}

impl<'de> Deserialize<'de> for SecretSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SourceVisitor;

        impl<'de> Visitor<'de> for SourceVisitor {
            type Value = SecretSource;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or { env = \"NAME\" }")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<SecretSource, E> {
                Ok(SecretSource::Literal(Secret::from(v)))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<SecretSource, E> {
                Ok(SecretSource::Literal(Secret::new(v)))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretSource, A::Error> {
                let mut var: Option<String> = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "env" {
                        return Err(de::Error::unknown_field(&key, &["env"]));
                    }
                    if var.is_some() {
                        return Err(de::Error::duplicate_field("env"));
                    }
                    var = Some(map.next_value()?);
                }
                match var {
                    Some(v) if !v.trim().is_empty() => Ok(SecretSource::Env(v)),
                    Some(_) => Err(de::Error::custom("env names an empty variable")),
                    None => Err(de::Error::missing_field("env")),
                }
            }
        }

        deserializer.deserialize_any(SourceVisitor)
    }
}

/// Read `channels.toml`; `{ env = "NAME" }` secrets come from the process
/// environment.
pub fn parse_channels(toml_text: &str) -> Result<Vec<ChannelConfig>, AlertError> {
    parse_channels_with_env(toml_text, |name| std::env::var(name).ok())
}

/// [`parse_channels`] with the environment given as a lookup, so tests and
/// callers with their own secret store need not touch the process's.
pub fn parse_channels_with_env(
    toml_text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<ChannelConfig>, AlertError> {
    let file: ChannelsFile = toml::from_str(toml_text).map_err(|e| {
        // Own wording rather than toml's Display, which quotes the source
        // line, and that line may hold a literal secret.
        let place = e
            .span()
            .map(|span| {
                let before = &toml_text[..span.start.min(toml_text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                format!("line {line}, column {column}: ")
            })
            .unwrap_or_default();
        AlertError::Parse(format!("{place}{}", e.message().trim_end()))
    })?;
    let mut seen = HashSet::new();
    let mut channels = Vec::with_capacity(file.channel.len());
    for raw in file.channel {
        if !seen.insert(raw.name.clone()) {
            return Err(AlertError::DuplicateName(raw.name));
        }
        channels.push(build_channel(raw, &env)?);
    }
    Ok(channels)
}

fn build_channel(
    raw: RawChannel,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<ChannelConfig, AlertError> {
    let name = raw.name.clone();
    let invalid = |message: String| AlertError::Invalid {
        channel: name.clone(),
        message,
    };
    if name.trim().is_empty() || name.chars().any(char::is_control) {
        return Err(invalid("a channel needs a one-line, non-empty name".into()));
    }
    let type_name = raw.kind.name();
    let article = if type_name.starts_with('e') {
        "an"
    } else {
        "a"
    };
    if let Some(field) = raw
        .present_fields()
        .into_iter()
        .find(|f| !raw.kind.fields().contains(f))
    {
        return Err(invalid(format!(
            "`{field}` does not apply to {article} {type_name} channel"
        )));
    }
    let required = |field: &str| invalid(format!("{article} {type_name} channel needs `{field}`"));
    let resolve = |field: &str, source: SecretSource| -> Result<Secret<String>, AlertError> {
        match source {
            SecretSource::Literal(s) => Ok(s),
            SecretSource::Env(var) => match env(&var) {
                Some(v) if !v.is_empty() => Ok(Secret::new(v)),
                _ => Err(AlertError::MissingEnv {
                    channel: name.clone(),
                    field: field.to_owned(),
                    var,
                }),
            },
        }
    };

    let kind = match raw.kind {
        RawKind::Webhook => {
            let url = raw.url.ok_or_else(|| required("url"))?;
            let url = http_url(&url).map_err(|m| invalid(format!("url: {m}")))?;
            let mut headers = Vec::new();
            for (header, source) in raw.headers.unwrap_or_default() {
                if HeaderName::from_bytes(header.as_bytes()).is_err() {
                    return Err(invalid(format!("headers: {header:?} is not a header name")));
                }
                let field = format!("headers.{header}");
                let value = resolve(&field, source)?;
                if HeaderValue::from_str(value.expose()).is_err() {
                    return Err(invalid(format!(
                        "{field}: the value is not a valid header value"
                    )));
                }
                headers.push((header, value));
            }
            ChannelKind::Webhook { url, headers }
        }
        RawKind::Slack => {
            let source = raw.webhook_url.ok_or_else(|| required("webhook_url"))?;
            let webhook_url = resolve("webhook_url", source)?;
            // Checked without quoting: the URL is the credential.
            http_url(webhook_url.expose()).map_err(|m| invalid(format!("webhook_url: {m}")))?;
            ChannelKind::Slack { webhook_url }
        }
        RawKind::Email => {
            let smtp_host = raw.smtp_host.ok_or_else(|| required("smtp_host"))?;
            if smtp_host.trim().is_empty() || smtp_host.contains(char::is_whitespace) {
                return Err(invalid("smtp_host: not a host name".into()));
            }
            let tls = raw.tls.unwrap_or_default();
            let smtp_port = match raw.smtp_port {
                Some(0) => return Err(invalid("smtp_port: must not be 0".into())),
                Some(p) => p,
                None => tls.default_port(),
            };
            let password = raw
                .password
                .map(|source| resolve("password", source))
                .transpose()?;
            match (&raw.username, &password) {
                (Some(_), None) => return Err(invalid("`username` needs a `password`".into())),
                (None, Some(_)) => return Err(invalid("`password` needs a `username`".into())),
                _ => {}
            }
            let from = raw.from.ok_or_else(|| required("from"))?;
            from.parse::<Mailbox>()
                .map_err(|e| invalid(format!("from: {from:?} is not a mailbox ({e})")))?;
            let to = raw.to.ok_or_else(|| required("to"))?;
            if to.is_empty() {
                return Err(invalid("to: at least one recipient is needed".into()));
            }
            for address in &to {
                address
                    .parse::<Mailbox>()
                    .map_err(|e| invalid(format!("to: {address:?} is not a mailbox ({e})")))?;
            }
            ChannelKind::Email(EmailChannel {
                smtp_host,
                smtp_port,
                tls,
                username: raw.username,
                password,
                from,
                to,
            })
        }
        RawKind::PagerDuty => {
            let source = raw.routing_key.ok_or_else(|| required("routing_key"))?;
            let routing_key = resolve("routing_key", source)?;
            if routing_key.expose().trim().is_empty() {
                return Err(invalid("routing_key: must not be empty".into()));
            }
            let events_url = raw.events_url.as_deref().unwrap_or(PAGERDUTY_EVENTS_URL);
            let events_url =
                http_url(events_url).map_err(|m| invalid(format!("events_url: {m}")))?;
            ChannelKind::PagerDuty {
                routing_key,
                events_url,
            }
        }
    };

    let ssl_expiry_threshold_days = raw.ssl_expiry_threshold_days.unwrap_or(30);
    if !(1..=365).contains(&ssl_expiry_threshold_days) {
        return Err(invalid(format!(
            "ssl_expiry_threshold_days: must be from 1 to 365, got {ssl_expiry_threshold_days}"
        )));
    }
    let reminder = match raw.reminder.as_deref() {
        None => None,
        Some(text) => {
            let d = humantime::parse_duration(text)
                .map_err(|e| invalid(format!("reminder: {text:?} is not a duration ({e})")))?;
            // Shorter than a minute is an alert storm, not a reminder.
            if d < Duration::from_secs(60) {
                return Err(invalid(format!(
                    "reminder: must be at least 1m, got {text:?}"
                )));
            }
            Some(d)
        }
    };
    Ok(ChannelConfig {
        name: raw.name,
        kind,
        send_failure: raw.send_failure.unwrap_or(true),
        send_recovery: raw.send_recovery.unwrap_or(true),
        send_degraded: raw.send_degraded.unwrap_or(false),
        ssl_expiry: raw.ssl_expiry.unwrap_or(false),
        ssl_expiry_threshold_days,
        reminder,
    })
}

/// An absolute http(s) URL; the message never quotes the input.
fn http_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        "http" | "https" => Err("the URL has no host".into()),
        other => Err(format!("scheme {other:?} is not http or https")),
    }
}

// ---------------------------------------------------------------------------
// Payloads
// ---------------------------------------------------------------------------

/// Control characters (a newline in a name could forge an e-mail header or
/// break a Slack line) become spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// At most `max` characters, with an ellipsis when cut.
fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn timestamp(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn locations_line(alert: &Alert) -> String {
    alert
        .locations
        .iter()
        .map(|l| format!("{}: {}", one_line(&l.location), one_line(&l.outcome)))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Serialize)]
struct WebhookBody<'a> {
    channel: &'a str,
    #[serde(flatten)]
    alert: &'a Alert,
}

/// Slack's mrkdwn gives `&`, `<` and `>` meaning (links, mentions).
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn slack_payload(alert: &Alert) -> Value {
    let emoji = match alert.kind {
        AlertKind::Failure => ":red_circle:",
        AlertKind::Degraded => ":large_yellow_circle:",
        AlertKind::Recovery => ":large_green_circle:",
        AlertKind::CertificateExpiry => ":warning:",
    };
    let headline = alert.headline();
    let summary = one_line(&alert.summary);
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "emoji": true,
            "text": truncate(&format!("{emoji} {headline}"), 150)}}),
        json!({"type": "section", "text": {"type": "mrkdwn",
            "text": truncate(&slack_escape(&summary), 3000)}}),
    ];
    let mut fields = vec![json!({"type": "mrkdwn",
        "text": format!("*Check*\n{} (`{}`)", slack_escape(&one_line(&alert.check_name)),
            slack_escape(&one_line(&alert.check_id)))})];
    if let Some(step) = &alert.failed_step {
        fields.push(json!({"type": "mrkdwn",
            "text": truncate(&format!("*Failed step*\n{}", slack_escape(&one_line(step))), 2000)}));
    }
    if !alert.locations.is_empty() {
        fields.push(json!({"type": "mrkdwn",
            "text": truncate(&format!("*Locations*\n{}", slack_escape(&locations_line(alert))), 2000)}));
    }
    if let Some(run) = alert.run_id {
        fields.push(json!({"type": "mrkdwn", "text": format!("*Run*\n{run}")}));
    }
    if let Some(c) = &alert.certificate {
        fields.push(json!({"type": "mrkdwn", "text": format!(
            "*Certificate*\n{} expires {} ({} days left)",
            slack_escape(&one_line(&c.host)), timestamp(&c.expires_at), c.days_left)}));
    }
    blocks.push(json!({"type": "section", "fields": fields}));
    if let Some(error) = &alert.error {
        let error = truncate(&error.replace("```", "'''"), 2800);
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn",
            "text": format!("*Error*\n```{}```", slack_escape(&error))}}));
    }
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn",
        "text": format!("bankbridge flow checks · {}", timestamp(&alert.at))}]}));
    json!({
        // The fallback for notifications and clients without blocks.
        "text": truncate(&format!("{emoji} {} — {}", slack_escape(&headline), slack_escape(&summary)), 3000),
        "blocks": blocks,
    })
}

/// Failure and degradation of one check share one incident (so the
/// recovery resolves it); a certificate has its own, per host.
fn pagerduty_dedup_key(alert: &Alert) -> String {
    match (&alert.kind, &alert.certificate) {
        (AlertKind::CertificateExpiry, Some(c)) => format!("bankbridge:cert:{}", c.host),
        _ => format!("bankbridge:{}", alert.check_id),
    }
}

fn pagerduty_event(routing_key: &str, alert: &Alert) -> Value {
    let dedup_key = pagerduty_dedup_key(alert);
    if alert.kind == AlertKind::Recovery {
        return json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": dedup_key,
        });
    }
    let severity = match alert.kind {
        AlertKind::Failure => "critical",
        _ => "warning",
    };
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "client": "bankbridge",
        "payload": {
            "summary": truncate(&format!("{} — {}", alert.headline(), one_line(&alert.summary)), 1024),
            "source": "bankbridge",
            "severity": severity,
            "timestamp": timestamp(&alert.at),
            "custom_details": {
                "kind": alert.kind,
                "reminder": alert.reminder,
                "check_id": alert.check_id,
                "check_name": alert.check_name,
                "failed_step": alert.failed_step,
                "error": alert.error,
                "locations": alert.locations,
                "run_id": alert.run_id,
                "certificate": alert.certificate,
            },
        },
    })
}

fn email_body(channel: &str, alert: &Alert) -> String {
    let mut body = format!(
        "{}\n\n{}\n\nCheck:       {} ({})\n",
        alert.headline(),
        one_line(&alert.summary),
        one_line(&alert.check_name),
        one_line(&alert.check_id),
    );
    if let Some(step) = &alert.failed_step {
        body.push_str(&format!("Failed step: {}\n", one_line(step)));
    }
    if let Some(run) = alert.run_id {
        body.push_str(&format!("Run:         {run}\n"));
    }
    body.push_str(&format!("At:          {}\n", timestamp(&alert.at)));
    if let Some(c) = &alert.certificate {
        body.push_str(&format!(
            "Certificate: {} expires {} ({} days left)\n",
            one_line(&c.host),
            timestamp(&c.expires_at),
            c.days_left
        ));
    }
    if !alert.locations.is_empty() {
        body.push_str("Locations:\n");
        for l in &alert.locations {
            body.push_str(&format!(
                "  - {}: {}\n",
                one_line(&l.location),
                one_line(&l.outcome)
            ));
        }
    }
    if let Some(error) = &alert.error {
        body.push_str("\nError:\n");
        for line in error.lines() {
            body.push_str("  ");
            body.push_str(line);
            body.push('\n');
        }
    }
    body.push_str(&format!(
        "\n-- \nSent by bankbridge flow checks to channel \"{}\".\n",
        one_line(channel)
    ));
    body
}

// ---------------------------------------------------------------------------
// Delivery
// ---------------------------------------------------------------------------

/// Replace every secret in `text` with `[redacted]` and keep it short and on
/// one line: receivers echo requests back in error pages.
fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut text = one_line(text);
    for secret in secrets {
        if !secret.is_empty() {
            text = text.replace(secret, "[redacted]");
        }
    }
    truncate(&text, 300)
}

/// A reqwest error with its causes, without the URL (a Slack URL is a
/// credential).
fn describe_http_error(e: reqwest::Error) -> String {
    let e = e.without_url();
    if e.is_timeout() {
        return format!("no answer within {} s", DELIVERY_TIMEOUT.as_secs());
    }
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Delivers alerts. Cheap to clone; one per process is enough.
#[derive(Clone, Debug)]
pub struct Notifier {
    http: reqwest::Client,
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier::new()
    }
}

impl Notifier {
    pub fn new() -> Notifier {
        let http = reqwest::Client::builder()
            .timeout(DELIVERY_TIMEOUT)
            // A redirect would carry the webhook's token headers elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("bankbridge-checks/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Notifier { http }
    }

    /// Deliver `alert` to `channel` (whether it [wants](ChannelConfig::wants)
    /// it is the caller's decision).
    pub async fn send(&self, channel: &ChannelConfig, alert: &Alert) -> Result<(), AlertError> {
        match &channel.kind {
            ChannelKind::Webhook { url, headers } => {
                let mut request = self.http.post(url.clone()).json(&WebhookBody {
                    channel: &channel.name,
                    alert,
                });
                for (name, value) in headers {
                    let mut value =
                        HeaderValue::from_str(value.expose()).map_err(|_| AlertError::Invalid {
                            channel: channel.name.clone(),
                            message: format!("headers.{name}: not a valid header value"),
                        })?;
                    value.set_sensitive(true);
                    request = request.header(name.as_str(), value);
                }
                self.post(channel, request).await
            }
            ChannelKind::Slack { webhook_url } => {
                let url = http_url(webhook_url.expose()).map_err(|m| AlertError::Invalid {
                    channel: channel.name.clone(),
                    message: format!("webhook_url: {m}"),
                })?;
                let request = self.http.post(url).json(&slack_payload(alert));
                self.post(channel, request).await
            }
            ChannelKind::PagerDuty {
                routing_key,
                events_url,
            } => {
                let request = self
                    .http
                    .post(events_url.clone())
                    .json(&pagerduty_event(routing_key.expose(), alert));
                self.post(channel, request).await
            }
            ChannelKind::Email(email) => send_email(channel, email, alert).await,
        }
    }

    async fn post(
        &self,
        channel: &ChannelConfig,
        request: reqwest::RequestBuilder,
    ) -> Result<(), AlertError> {
        let kind = channel.kind.type_name();
        let secrets = channel.kind.secrets();
        let response = request.send().await.map_err(|e| AlertError::Delivery {
            channel: channel.name.clone(),
            kind,
            message: scrub(&describe_http_error(e), &secrets),
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        let body = scrub(&body, &secrets);
        let reason = status.canonical_reason().unwrap_or("");
        let detail = match (reason.is_empty(), body.is_empty()) {
            (true, true) => String::new(),
            (false, true) => format!(" {reason}"),
            (true, false) => format!(": {body}"),
            (false, false) => format!(" {reason}: {body}"),
        };
        Err(AlertError::Status {
            channel: channel.name.clone(),
            kind,
            status: status.as_u16(),
            detail,
        })
    }
}

async fn send_email(
    channel: &ChannelConfig,
    email: &EmailChannel,
    alert: &Alert,
) -> Result<(), AlertError> {
    let secrets = channel.kind.secrets();
    let fail = |message: String| AlertError::Delivery {
        channel: channel.name.clone(),
        kind: "email",
        message: scrub(&message, &secrets),
    };
    let from: Mailbox = email
        .from
        .parse()
        .map_err(|e| fail(format!("from: not a mailbox ({e})")))?;
    let mut builder = Message::builder()
        .from(from)
        .subject(format!("[bankbridge] {}", alert.headline()))
        .header(ContentType::TEXT_PLAIN);
    for to in &email.to {
        let to: Mailbox = to
            .parse()
            .map_err(|e| fail(format!("to: {to:?} is not a mailbox ({e})")))?;
        builder = builder.to(to);
    }
    let message = builder
        .body(email_body(&channel.name, alert))
        .map_err(|e| fail(format!("could not build the message ({e})")))?;
    let transport = match email.tls {
        SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&email.smtp_host),
        SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&email.smtp_host)
            .map_err(|e| fail(format!("TLS setup for {}: {e}", email.smtp_host)))?,
        SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&email.smtp_host)
            .map_err(|e| fail(format!("TLS setup for {}: {e}", email.smtp_host)))?,
    };
    let mut transport = transport
        .port(email.smtp_port)
        .timeout(Some(DELIVERY_TIMEOUT));
    if let (Some(username), Some(password)) = (&email.username, &email.password) {
        transport = transport.credentials(Credentials::new(
            username.clone(),
            password.expose().clone(),
        ));
    }
    transport
        .build()
        .send(message)
        .await
        .map_err(|e| fail(format!("SMTP {}:{}: {e}", email.smtp_host, email.smtp_port)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(text: &str) -> Result<Vec<ChannelConfig>, AlertError> {
        parse_channels_with_env(text, no_env)
    }

    fn cert_alert(days_left: i64) -> Alert {
        let mut a = Alert::new(AlertKind::CertificateExpiry, "c1", "Login", "cert", at());
        a.certificate = Some(CertificateInfo {
            host: "api.bank.example".into(),
            expires_at: at(),
            days_left,
        });
        a
    }

    #[test]
    fn defaults_follow_checkly() {
        let channels = parse(
            r#"
            [[channel]]
            name = "hook"
            type = "webhook"
            url = "http://127.0.0.1:9000/hook"
            "#,
        )
        .unwrap();
        let c = &channels[0];
        assert!(c.send_failure && c.send_recovery && !c.send_degraded && !c.ssl_expiry);
        assert_eq!(c.ssl_expiry_threshold_days, 30);
        assert_eq!(c.reminder(), None);
    }

    #[test]
    fn every_kind_parses() {
        let channels = parse_channels_with_env(
            r#"
            [[channel]]
            name = "ops-webhook"
            type = "webhook"
            url = "http://127.0.0.1:9000/hook"
            headers = { "X-Token" = "tok-123", "Authorization" = { env = "HOOK_AUTH" } }
            reminder = "30m"
            [[channel]]
            name = "chat"
            type = "slack"
            webhook_url = "https://hooks.slack.com/services/T/B/X"
            [[channel]]
            name = "mail"
            type = "email"
            smtp_host = "127.0.0.1"
            smtp_port = 2525
            tls = "none"
            username = "bot"
            password = "pw"
            from = "bankbridge <checks@example.org>"
            to = ["ops@example.org"]
            [[channel]]
            name = "pager"
            type = "pagerduty"
            routing_key = { env = "PD_KEY" }
            "#,
            |name| match name {
                "HOOK_AUTH" => Some("Bearer abc".into()),
                "PD_KEY" => Some("R0UT1NG".into()),
                _ => None,
            },
        )
        .unwrap();
        assert_eq!(channels.len(), 4);
        assert_eq!(channels[0].reminder(), Some(Duration::from_secs(1800)));
        match &channels[0].kind {
            ChannelKind::Webhook { headers, .. } => {
                let auth = headers.iter().find(|(n, _)| n == "Authorization").unwrap();
                assert_eq!(auth.1.expose(), "Bearer abc");
            }
            other => panic!("{other:?}"),
        }
        match &channels[2].kind {
            ChannelKind::Email(e) => {
                assert_eq!((e.smtp_port, e.tls), (2525, SmtpTls::None));
                assert_eq!(e.username.as_deref(), Some("bot"));
            }
            other => panic!("{other:?}"),
        }
        match &channels[3].kind {
            ChannelKind::PagerDuty {
                routing_key,
                events_url,
            } => {
                assert_eq!(routing_key.expose(), "R0UT1NG");
                assert_eq!(events_url.as_str(), PAGERDUTY_EVENTS_URL);
            }
            other => panic!("{other:?}"),
        }
        let printed = format!("{channels:?}");
        for secret in [
            "tok-123",
            "Bearer abc",
            "hooks.slack.com",
            "\"pw\"",
            "R0UT1NG",
        ] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
    }

    #[test]
    fn email_port_follows_tls() {
        let channels = parse(
            r#"
            [[channel]]
            name = "mail"
            type = "email"
            smtp_host = "smtp.example.org"
            from = "checks@example.org"
            to = ["ops@example.org"]
            "#,
        )
        .unwrap();
        match &channels[0].kind {
            ChannelKind::Email(e) => assert_eq!((e.smtp_port, e.tls), (587, SmtpTls::Starttls)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wants_follows_switches() {
        let c = &parse(
            r#"
            [[channel]]
            name = "hook"
            type = "webhook"
            url = "http://127.0.0.1:9000/hook"
            send_failure = false
            send_degraded = true
            ssl_expiry = true
            ssl_expiry_threshold_days = 14
            "#,
        )
        .unwrap()[0];
        let alert = |kind| Alert::new(kind, "c1", "Login", "s", at());
        assert!(!c.wants(&alert(AlertKind::Failure)));
        assert!(c.wants(&alert(AlertKind::Degraded)));
        assert!(c.wants(&alert(AlertKind::Recovery)));
        assert!(c.wants(&cert_alert(14)));
        assert!(c.wants(&cert_alert(-1)));
        assert!(!c.wants(&cert_alert(15)));
        // A certificate alert with no certificate says nothing to act on.
        assert!(!c.wants(&alert(AlertKind::CertificateExpiry)));
    }

    fn parse_err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn clear_parse_errors() {
        let e = parse_err("[[channel]]\nname = \"x\"\ntype = \"sms\"\n");
        assert!(
            e.contains("line 3") && e.contains("unknown variant `sms`"),
            "{e}"
        );
        assert!(e.contains("pagerduty"), "{e}");

        let e = parse_err("[[channel]]\nname = \"x\"\ntype = \"slack\"\n");
        assert_eq!(e, "channel \"x\": a slack channel needs `webhook_url`");

        let e = parse_err("[[channel]]\ntype = \"slack\"\nwebhook_url = \"https://h/x\"\n");
        assert!(e.contains("missing field `name`"), "{e}");

        let e = parse_err(
            "[[channel]]\nname = \"p\"\ntype = \"pagerduty\"\nrouting_key = { env = \"BB_NOPE\" }\n",
        );
        assert_eq!(
            e,
            "channel \"p\": routing_key reads environment variable BB_NOPE, which is not set"
        );

        let hook = "type = \"webhook\"\nurl = \"http://127.0.0.1/\"\n";
        let e = parse_err(&format!(
            "[[channel]]\nname = \"a\"\n{hook}[[channel]]\nname = \"a\"\n{hook}"
        ));
        assert_eq!(
            e,
            "channels file: channel name \"a\" is used more than once"
        );

        let e = parse_err(&format!(
            "[[channel]]\nname = \"a\"\n{hook}smtp_host = \"h\"\n"
        ));
        assert_eq!(
            e,
            "channel \"a\": `smtp_host` does not apply to a webhook channel"
        );

        let e = parse_err(&format!(
            "[[channel]]\nname = \"a\"\n{hook}colour = \"red\"\n"
        ));
        assert!(e.contains("unknown field `colour`"), "{e}");

        let e = parse_err(&format!(
            "[[channel]]\nname = \"a\"\n{hook}reminder = \"soon\"\n"
        ));
        assert!(
            e.starts_with("channel \"a\": reminder: \"soon\" is not a duration"),
            "{e}"
        );

        let e = parse_err(&format!(
            "[[channel]]\nname = \"a\"\n{hook}reminder = \"10s\"\n"
        ));
        assert!(e.contains("at least 1m"), "{e}");

        let e = parse_err("[[channel]]\nname = \"a\"\ntype = \"webhook\"\nurl = \"ftp://h/\"\n");
        assert!(e.contains("scheme \"ftp\""), "{e}");

        let e = parse_err(
            "[[channel]]\nname = \"m\"\ntype = \"email\"\nsmtp_host = \"h\"\nfrom = \"nope\"\nto = [\"a@b.c\"]\n",
        );
        assert!(
            e.starts_with("channel \"m\": from: \"nope\" is not a mailbox"),
            "{e}"
        );
    }

    #[test]
    fn secrets_stay_out_of_parse_errors() {
        // A literal secret beside a type error: toml would quote the line.
        let e = parse_err(
            "[[channel]]\nname = \"h\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1/\"\nheaders = { \"X-Token\" = \"s3cr3t-v4lue\", \"X-Other\" = 5 }\n",
        );
        assert!(!e.contains("s3cr3t-v4lue"), "{e}");
        assert!(e.contains("line 5"), "{e}");
        let e = parse_err(
            "[[channel]]\nname = \"s\"\ntype = \"slack\"\nwebhook_url = \"s3cr3t not a url\"\n",
        );
        assert!(!e.contains("s3cr3t"), "{e}");
        assert!(
            e.starts_with("channel \"s\": webhook_url: not a URL"),
            "{e}"
        );
    }

    #[test]
    fn headlines() {
        let mut a = Alert::new(AlertKind::Failure, "c1", "Login\nflow", "s", at());
        assert_eq!(a.headline(), "FAILING: Login flow");
        a.reminder = true;
        assert_eq!(a.headline(), "STILL FAILING: Login flow");
        a.kind = AlertKind::Recovery;
        assert_eq!(a.headline(), "RECOVERED: Login flow");
        assert_eq!(
            cert_alert(12).headline(),
            "CERTIFICATE EXPIRES in 12 days: api.bank.example (Login)"
        );
        assert_eq!(cert_alert(1).status(), "CERTIFICATE EXPIRES in 1 day");
        assert_eq!(cert_alert(-2).status(), "CERTIFICATE EXPIRED");
    }

    #[test]
    fn pagerduty_events() {
        let failure = Alert::new(AlertKind::Failure, "c1", "Login", "down", at());
        let e = pagerduty_event("key", &failure);
        assert_eq!(e["event_action"], "trigger");
        assert_eq!(e["dedup_key"], "bankbridge:c1");
        assert_eq!(e["payload"]["severity"], "critical");
        assert_eq!(e["payload"]["timestamp"], "2025-03-01T12:00:00.000Z");
        let degraded = Alert::new(AlertKind::Degraded, "c1", "Login", "slow", at());
        assert_eq!(
            pagerduty_event("key", &degraded)["payload"]["severity"],
            "warning"
        );
        let e = pagerduty_event("key", &cert_alert(3));
        assert_eq!(e["dedup_key"], "bankbridge:cert:api.bank.example");
        assert_eq!(e["payload"]["severity"], "warning");
        let recovery = Alert::new(AlertKind::Recovery, "c1", "Login", "up", at());
        let e = pagerduty_event("key", &recovery);
        assert_eq!(e["event_action"], "resolve");
        assert_eq!(e["dedup_key"], "bankbridge:c1");
        assert!(e.get("payload").is_none());
    }

    #[test]
    fn scrub_hides_secrets() {
        assert_eq!(
            scrub("bad key ABC\nin body ABC", &["ABC", ""]),
            "bad key [redacted] in body [redacted]"
        );
    }
}
