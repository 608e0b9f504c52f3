//! Alert channels: where a check's failure, degradation, recovery or
//! certificate expiry is told, and how.
//!
//! A project's `channels.toml` lists `[[channel]]` tables ([`read_channels`]
//! reports every problem with its line, [`parse_channels`] the first): a
//! JSON `webhook`, a `slack` incoming webhook, `email` over SMTP, a
//! `pagerduty` Events API v2 integration, a Microsoft `teams` webhook (an
//! Adaptive Card), a `discord` webhook, a `telegram` bot, an `ntfy` topic,
//! a `gotify` application or `opsgenie` (an alert per check, closed on
//! recovery). Each has Checkly's switches for which alerts it wants
//! ([`ChannelConfig::wants`]) and an optional reminder interval.
//! [`Notifier::send`] delivers one [`Alert`] to one channel; deciding *when*
//! to alert (thresholds, reminders due) is the scheduler's job, not this
//! module's.
//!
//! Secrets (header values, webhook URLs, bot and app tokens, API and
//! routing keys, the ntfy topic, the SMTP password), written literally or
//! as `{ env = "NAME" }`, are [`Secret`]s: they print as `[redacted]`, and
//! they are scrubbed from whatever a receiver answers before that text
//! reaches an [`AlertError`].
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

use bankbridge_core::Secret;
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use url::Url;

/// PagerDuty's Events API v2 endpoint, used when a channel names none.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// Telegram's Bot API, used when a channel names no `api_url`.
pub const TELEGRAM_API_URL: &str = "https://api.telegram.org";

/// Opsgenie's API, used when a channel names no `api_url`.
pub const OPSGENIE_API_URL: &str = "https://api.opsgenie.com";

/// Opsgenie's API for accounts in its EU region (give it as `api_url`).
pub const OPSGENIE_EU_API_URL: &str = "https://api.eu.opsgenie.com";

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
    /// An open-banking connection's consent runs out soon: the user gives a
    /// new one (a sync where they can authenticate) before it does.
    ConsentExpiry,
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

/// The consent a [`AlertKind::ConsentExpiry`] alert is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentInfo {
    /// The connection's name.
    pub connection: String,
    /// The last day the bank honours the consent.
    pub valid_until: chrono::NaiveDate,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<ConsentInfo>,
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
            consent: None,
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
            AlertKind::ConsentExpiry => match &self.consent {
                None => "CONSENT EXPIRES".into(),
                Some(c) => match c.days_left {
                    d if d < 0 => "CONSENT EXPIRED".into(),
                    0 => "CONSENT EXPIRES today".into(),
                    1 => "CONSENT EXPIRES in 1 day".into(),
                    d => format!("CONSENT EXPIRES in {d} days"),
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
    /// A Microsoft Teams incoming webhook or Workflows URL (the secret),
    /// sent an Adaptive Card.
    Teams {
        webhook_url: Secret<String>,
    },
    /// A Discord webhook URL (the secret), sent `content` and an embed.
    Discord {
        webhook_url: Secret<String>,
    },
    /// A Telegram bot's `sendMessage` to one chat.
    Telegram {
        bot_token: Secret<String>,
        /// A chat number, or `@channelname`.
        chat_id: String,
        api_url: Url,
    },
    /// A topic of an ntfy server; the topic is a secret too, since on a
    /// public server knowing it is all it takes to post.
    Ntfy {
        server_url: Url,
        topic: Secret<String>,
        /// An access token, sent as `Authorization: Bearer`.
        token: Option<Secret<String>>,
    },
    /// A Gotify server's `/message`, with an application token.
    Gotify {
        server_url: Url,
        app_token: Secret<String>,
    },
    /// Opsgenie's Alert API: an alert per check (alias), closed on recovery.
    Opsgenie {
        api_key: Secret<String>,
        api_url: Url,
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
            ChannelKind::Teams { .. } => "teams",
            ChannelKind::Discord { .. } => "discord",
            ChannelKind::Telegram { .. } => "telegram",
            ChannelKind::Ntfy { .. } => "ntfy",
            ChannelKind::Gotify { .. } => "gotify",
            ChannelKind::Opsgenie { .. } => "opsgenie",
        }
    }

    /// Every secret value, to scrub from text a receiver sends back.
    fn secrets(&self) -> Vec<&str> {
        match self {
            ChannelKind::Webhook { headers, .. } => {
                headers.iter().map(|(_, v)| v.expose().as_str()).collect()
            }
            ChannelKind::Slack { webhook_url }
            | ChannelKind::Teams { webhook_url }
            | ChannelKind::Discord { webhook_url } => url_secrets(webhook_url.expose()),
            ChannelKind::Email(e) => e.password.iter().map(|p| p.expose().as_str()).collect(),
            ChannelKind::PagerDuty { routing_key, .. } => vec![routing_key.expose().as_str()],
            // `123456:secret`: the part after the colon alone is the secret too.
            ChannelKind::Telegram { bot_token, .. } => {
                let token = bot_token.expose().as_str();
                std::iter::once(token)
                    .chain(token.split_once(':').map(|(_, key)| key))
                    .collect()
            }
            ChannelKind::Ntfy { topic, token, .. } => std::iter::once(topic)
                .chain(token)
                .map(|s| s.expose().as_str())
                .collect(),
            ChannelKind::Gotify { app_token, .. } => vec![app_token.expose().as_str()],
            ChannelKind::Opsgenie { api_key, .. } => vec![api_key.expose().as_str()],
        }
    }
}

/// A webhook URL and its long path segments: a receiver may echo back only
/// the token part of the path.
fn url_secrets(url: &str) -> Vec<&str> {
    let mut out = vec![url];
    let path = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map_or("", |(_, path)| path);
    out.extend(
        path.split(['/', '?', '&', '='])
            .filter(|segment| segment.len() >= 16),
    );
    out
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
    /// Warn when an open-banking connection's consent runs out.
    pub consent_expiry: bool,
    /// A consent warning goes out once this few days (or fewer) are left.
    pub consent_expiry_threshold_days: i64,
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
            AlertKind::ConsentExpiry => {
                self.consent_expiry
                    && alert
                        .consent
                        .as_ref()
                        .is_some_and(|c| c.days_left <= self.consent_expiry_threshold_days)
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

/// One problem of a `channels.toml`, placed in the file.
#[derive(Debug)]
pub struct ChannelProblem {
    /// 1-based; 0 when the place is unknown.
    pub line: usize,
    pub column: usize,
    pub error: AlertError,
}

impl ChannelProblem {
    fn at(text: &str, offset: usize, error: AlertError) -> ChannelProblem {
        let (line, column) = line_col(text, offset);
        ChannelProblem {
            line,
            column,
            error,
        }
    }

    /// An `{ env = "NAME" }` whose variable is unset: a fact about this
    /// machine rather than the file, so `check validate` only warns of it.
    pub fn is_missing_env(&self) -> bool {
        matches!(self.error, AlertError::MissingEnv { .. })
    }

    /// The message without the place (and without the `channels file:`
    /// prefix, which a caller naming the file does not need).
    pub fn message(&self) -> String {
        match &self.error {
            AlertError::Parse(m) => m.clone(),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for ChannelProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}, column {}: ", self.line, self.column)?;
        }
        f.write_str(&self.message())
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RawKind {
    Webhook,
    Slack,
    Email,
    PagerDuty,
    Teams,
    Discord,
    Telegram,
    Ntfy,
    Gotify,
    Opsgenie,
}

const KINDS: [RawKind; 10] = [
    RawKind::Webhook,
    RawKind::Slack,
    RawKind::Email,
    RawKind::PagerDuty,
    RawKind::Teams,
    RawKind::Discord,
    RawKind::Telegram,
    RawKind::Ntfy,
    RawKind::Gotify,
    RawKind::Opsgenie,
];

impl RawKind {
    fn name(self) -> &'static str {
        match self {
            RawKind::Webhook => "webhook",
            RawKind::Slack => "slack",
            RawKind::Email => "email",
            RawKind::PagerDuty => "pagerduty",
            RawKind::Teams => "teams",
            RawKind::Discord => "discord",
            RawKind::Telegram => "telegram",
            RawKind::Ntfy => "ntfy",
            RawKind::Gotify => "gotify",
            RawKind::Opsgenie => "opsgenie",
        }
    }

    /// "an email channel", "an ntfy channel" (said en-tee-eff-why).
    fn article(self) -> &'static str {
        match self {
            RawKind::Email | RawKind::Opsgenie | RawKind::Ntfy => "an",
            _ => "a",
        }
    }

    fn from_name(name: &str) -> Option<RawKind> {
        KINDS.into_iter().find(|k| k.name() == name)
    }

    /// The kind-specific fields this kind takes (the rest are refused, so a
    /// misplaced setting is not silently ignored).
    fn fields(self) -> &'static [&'static str] {
        match self {
            RawKind::Webhook => &["url", "headers"],
            RawKind::Slack | RawKind::Teams | RawKind::Discord => &["webhook_url"],
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
            RawKind::Telegram => &["bot_token", "chat_id", "api_url"],
            RawKind::Ntfy => &["server_url", "topic", "token"],
            RawKind::Gotify => &["server_url", "app_token"],
            RawKind::Opsgenie => &["api_key", "api_url"],
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
    /// Checked by hand: the error can then list every type there is.
    #[serde(rename = "type")]
    kind: String,
    send_failure: Option<bool>,
    send_recovery: Option<bool>,
    send_degraded: Option<bool>,
    ssl_expiry: Option<bool>,
    ssl_expiry_threshold_days: Option<i64>,
    consent_expiry: Option<bool>,
    consent_expiry_threshold_days: Option<i64>,
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
    bot_token: Option<SecretSource>,
    /// A number (`-1001234`) or a string (`"@channel"`).
    chat_id: Option<toml::Value>,
    api_url: Option<String>,
    server_url: Option<String>,
    topic: Option<SecretSource>,
    token: Option<SecretSource>,
    app_token: Option<SecretSource>,
    api_key: Option<SecretSource>,
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
        note(self.bot_token.is_some(), "bot_token");
        note(self.chat_id.is_some(), "chat_id");
        note(self.api_url.is_some(), "api_url");
        note(self.server_url.is_some(), "server_url");
        note(self.topic.is_some(), "topic");
        note(self.token.is_some(), "token");
        note(self.app_token.is_some(), "app_token");
        note(self.api_key.is_some(), "api_key");
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
/// environment. The first problem only: [`read_channels`] gives them all.
pub fn parse_channels(toml_text: &str) -> Result<Vec<ChannelConfig>, AlertError> {
    parse_channels_with_env(toml_text, |name| std::env::var(name).ok())
}

/// [`parse_channels`] with the environment given as a lookup, so tests and
/// callers with their own secret store need not touch the process's.
pub fn parse_channels_with_env(
    toml_text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<ChannelConfig>, AlertError> {
    read_channels_with_env(toml_text, env).map_err(|problems| {
        let Some(first) = problems.into_iter().next() else {
            return AlertError::Parse("invalid".into());
        };
        match first.error {
            AlertError::Parse(m) if first.line > 0 => {
                AlertError::Parse(format!("line {}, column {}: {m}", first.line, first.column))
            }
            other => other,
        }
    })
}

/// Read `channels.toml` and report every problem of it (each channel's,
/// not only the first bad channel's), in file order, each with its line.
pub fn read_channels(toml_text: &str) -> Result<Vec<ChannelConfig>, Vec<ChannelProblem>> {
    read_channels_with_env(toml_text, |name| std::env::var(name).ok())
}

/// [`read_channels`] with the environment given as a lookup.
pub fn read_channels_with_env(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<ChannelConfig>, Vec<ChannelProblem>> {
    let (root, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        return Err(syntax.iter().map(|e| toml_problem(text, e, 0)).collect());
    }
    let mut problems = Vec::new();
    let mut items: Vec<&Spanned<DeValue>> = Vec::new();
    for (key, value) in root.get_ref().iter() {
        let name: &str = key.get_ref();
        if name != "channel" {
            problems.push(ChannelProblem::at(
                text,
                key.span().start,
                AlertError::Parse(format!(
                    "unknown key `{name}`: a channels file holds only [[channel]] tables"
                )),
            ));
            continue;
        }
        match value.get_ref() {
            DeValue::Array(list) => items.extend(list.iter()),
            _ => problems.push(ChannelProblem::at(
                text,
                value.span().start,
                AlertError::Parse("`channel` must be [[channel]] tables".into()),
            )),
        }
    }
    let mut seen = HashSet::new();
    let mut channels = Vec::new();
    for item in items {
        let start = item.span().start;
        let raw = match RawChannel::deserialize(ValueDeserializer::from(item.clone())) {
            Ok(raw) => raw,
            Err(e) => {
                problems.push(toml_problem(text, &e, start));
                continue;
            }
        };
        // A field's problem points at its key; the rest at the table.
        let offset = |field: Option<&str>| {
            field
                .and_then(|f| {
                    item.get_ref().as_table()?.iter().find_map(|(k, _)| {
                        let key: &str = k.get_ref();
                        (key == f).then(|| k.span().start)
                    })
                })
                .unwrap_or(start)
        };
        if !seen.insert(raw.name.clone()) {
            problems.push(ChannelProblem::at(
                text,
                offset(Some("name")),
                AlertError::DuplicateName(raw.name.clone()),
            ));
        }
        let mut checker = Checker {
            channel: raw.name.clone(),
            env: &env,
            found: Vec::new(),
        };
        let built = build_channel(raw, &mut checker);
        for (field, error) in checker.found {
            problems.push(ChannelProblem::at(text, offset(field), error));
        }
        if let Some(channel) = built {
            channels.push(channel);
        }
    }
    if problems.is_empty() {
        return Ok(channels);
    }
    // Stable: problems of one place keep the order they were found in.
    problems.sort_by_key(|p| (p.line == 0, p.line, p.column));
    Err(problems)
}

/// Own wording rather than toml's Display, which quotes the source line,
/// and that line may hold a literal secret.
fn toml_problem(text: &str, e: &toml::de::Error, fallback: usize) -> ChannelProblem {
    let offset = e.span().map_or(fallback, |s| s.start);
    ChannelProblem::at(
        text,
        offset,
        AlertError::Parse(e.message().trim_end().to_owned()),
    )
}

/// Collects one channel's problems, each with the field it is about.
struct Checker<'a, E> {
    channel: String,
    env: &'a E,
    found: Vec<(Option<&'static str>, AlertError)>,
}

impl<E: Fn(&str) -> Option<String>> Checker<'_, E> {
    fn invalid(&mut self, field: Option<&'static str>, message: String) {
        self.found.push((
            field,
            AlertError::Invalid {
                channel: self.channel.clone(),
                message,
            },
        ));
    }

    /// `value` when given, else a problem naming the missing field.
    fn required<T>(&mut self, value: Option<T>, kind: RawKind, field: &str) -> Option<T> {
        if value.is_none() {
            let article = kind.article();
            self.invalid(
                None,
                format!("{article} {} channel needs `{field}`", kind.name()),
            );
        }
        value
    }

    /// A secret's value; `label` names it in messages (`headers.X-Token`).
    fn secret(
        &mut self,
        field: &'static str,
        label: &str,
        source: SecretSource,
    ) -> Option<Secret<String>> {
        match source {
            SecretSource::Literal(s) => Some(s),
            SecretSource::Env(var) => match (self.env)(&var) {
                Some(v) if !v.is_empty() => Some(Secret::new(v)),
                _ => {
                    self.found.push((
                        Some(field),
                        AlertError::MissingEnv {
                            channel: self.channel.clone(),
                            field: label.to_owned(),
                            var,
                        },
                    ));
                    None
                }
            },
        }
    }

    /// A required secret that must not be blank.
    fn required_secret(
        &mut self,
        source: Option<SecretSource>,
        kind: RawKind,
        field: &'static str,
    ) -> Option<Secret<String>> {
        let source = self.required(source, kind, field)?;
        let value = self.secret(field, field, source)?;
        if value.expose().trim().is_empty() {
            self.invalid(Some(field), format!("{field}: must not be empty"));
            return None;
        }
        Some(value)
    }

    fn url(&mut self, field: &'static str, text: &str) -> Option<Url> {
        match http_url(text) {
            Ok(url) => Some(url),
            Err(m) => {
                self.invalid(Some(field), format!("{field}: {m}"));
                None
            }
        }
    }

    /// A secret that is a whole URL (a webhook's): checked without quoting.
    fn secret_url(
        &mut self,
        source: Option<SecretSource>,
        kind: RawKind,
        field: &'static str,
    ) -> Option<Secret<String>> {
        let source = self.required(source, kind, field)?;
        let value = self.secret(field, field, source)?;
        self.url(field, value.expose())?;
        Some(value)
    }

    /// A secret sent in a header: it must be a valid header value.
    fn header_secret(
        &mut self,
        source: Option<SecretSource>,
        kind: RawKind,
        field: &'static str,
    ) -> Option<Secret<String>> {
        let value = self.required_secret(source, kind, field)?;
        if HeaderValue::from_str(value.expose()).is_err() {
            self.invalid(
                Some(field),
                format!("{field}: the value is not a valid header value"),
            );
            return None;
        }
        Some(value)
    }
}

fn build_channel<E: Fn(&str) -> Option<String>>(
    mut raw: RawChannel,
    c: &mut Checker<'_, E>,
) -> Option<ChannelConfig> {
    if raw.name.trim().is_empty() || raw.name.chars().any(char::is_control) {
        c.invalid(
            Some("name"),
            "a channel needs a one-line, non-empty name".into(),
        );
    }
    // The settings every kind has, checked whatever the type says.
    let ssl_expiry_threshold_days = raw.ssl_expiry_threshold_days.unwrap_or(30);
    if !(1..=365).contains(&ssl_expiry_threshold_days) {
        c.invalid(
            Some("ssl_expiry_threshold_days"),
            format!(
                "ssl_expiry_threshold_days: must be from 1 to 365, got {ssl_expiry_threshold_days}"
            ),
        );
    }
    let consent_expiry_threshold_days = raw.consent_expiry_threshold_days.unwrap_or(7);
    if !(1..=90).contains(&consent_expiry_threshold_days) {
        c.invalid(
            Some("consent_expiry_threshold_days"),
            format!(
                "consent_expiry_threshold_days: must be from 1 to 90, got {consent_expiry_threshold_days}"
            ),
        );
    }
    let reminder = match raw.reminder.as_deref() {
        None => None,
        Some(text) => match humantime::parse_duration(text) {
            Err(e) => {
                c.invalid(
                    Some("reminder"),
                    format!("reminder: {text:?} is not a duration ({e})"),
                );
                None
            }
            // Shorter than a minute is an alert storm, not a reminder.
            Ok(d) if d < Duration::from_secs(60) => {
                c.invalid(
                    Some("reminder"),
                    format!("reminder: must be at least 1m, got {text:?}"),
                );
                None
            }
            Ok(d) => Some(d),
        },
    };
    let Some(kind) = RawKind::from_name(&raw.kind) else {
        let known: Vec<&str> = KINDS.iter().map(|k| k.name()).collect();
        c.invalid(
            Some("type"),
            format!(
                "unknown channel type {:?}; expected one of {}",
                raw.kind,
                known.join(", ")
            ),
        );
        return None;
    };
    let type_name = kind.name();
    let article = kind.article();
    for field in raw.present_fields() {
        if !kind.fields().contains(&field) {
            c.invalid(
                Some(field),
                format!("`{field}` does not apply to {article} {type_name} channel"),
            );
        }
    }

    let built = build_kind(kind, &mut raw, c);

    if !c.found.is_empty() {
        return None;
    }
    Some(ChannelConfig {
        name: raw.name,
        kind: built?,
        send_failure: raw.send_failure.unwrap_or(true),
        send_recovery: raw.send_recovery.unwrap_or(true),
        send_degraded: raw.send_degraded.unwrap_or(false),
        ssl_expiry: raw.ssl_expiry.unwrap_or(false),
        ssl_expiry_threshold_days,
        consent_expiry: raw.consent_expiry.unwrap_or(false),
        consent_expiry_threshold_days,
        reminder,
    })
}

/// The kind-specific part of a channel; None when it has a problem (noted
/// in `c`). Its own function so that `?` leaves only it, not the checks of
/// the fields every channel has.
fn build_kind<E: Fn(&str) -> Option<String>>(
    kind: RawKind,
    raw: &mut RawChannel,
    c: &mut Checker<'_, E>,
) -> Option<ChannelKind> {
    match kind {
        RawKind::Webhook => {
            let url = c.required(raw.url.take(), kind, "url");
            let url = url.and_then(|u| c.url("url", &u));
            let mut headers = Vec::new();
            for (header, source) in raw.headers.take().unwrap_or_default() {
                if HeaderName::from_bytes(header.as_bytes()).is_err() {
                    c.invalid(
                        Some("headers"),
                        format!("headers: {header:?} is not a header name"),
                    );
                    continue;
                }
                let label = format!("headers.{header}");
                let Some(value) = c.secret("headers", &label, source) else {
                    continue;
                };
                if HeaderValue::from_str(value.expose()).is_err() {
                    c.invalid(
                        Some("headers"),
                        format!("{label}: the value is not a valid header value"),
                    );
                    continue;
                }
                headers.push((header, value));
            }
            url.map(|url| ChannelKind::Webhook { url, headers })
        }
        RawKind::Slack => c
            .secret_url(raw.webhook_url.take(), kind, "webhook_url")
            .map(|webhook_url| ChannelKind::Slack { webhook_url }),
        RawKind::Teams => c
            .secret_url(raw.webhook_url.take(), kind, "webhook_url")
            .map(|webhook_url| ChannelKind::Teams { webhook_url }),
        RawKind::Discord => c
            .secret_url(raw.webhook_url.take(), kind, "webhook_url")
            .map(|webhook_url| ChannelKind::Discord { webhook_url }),
        RawKind::Email => build_email(raw, c).map(ChannelKind::Email),
        RawKind::PagerDuty => {
            let routing_key = c.required_secret(raw.routing_key.take(), kind, "routing_key");
            let events_url = raw.events_url.as_deref().unwrap_or(PAGERDUTY_EVENTS_URL);
            let events_url = c.url("events_url", events_url);
            Some(ChannelKind::PagerDuty {
                routing_key: routing_key?,
                events_url: events_url?,
            })
        }
        RawKind::Telegram => {
            let bot_token = c.required_secret(raw.bot_token.take(), kind, "bot_token");
            // The token goes into the URL's path: no character may change it.
            let bot_token = bot_token.filter(|t| {
                let ok = t
                    .expose()
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, ':' | '_' | '-'));
                if !ok {
                    c.invalid(
                        Some("bot_token"),
                        "bot_token: not a bot token (letters, digits, `:`, `_`, `-`)".into(),
                    );
                }
                ok
            });
            let chat_id = match c.required(raw.chat_id.take(), kind, "chat_id") {
                Some(toml::Value::Integer(n)) => Some(n.to_string()),
                Some(toml::Value::String(s))
                    if !s.trim().is_empty() && !s.chars().any(char::is_control) =>
                {
                    Some(s)
                }
                Some(_) => {
                    c.invalid(
                        Some("chat_id"),
                        "chat_id: a chat number (-1001234567890) or \"@channelname\"".into(),
                    );
                    None
                }
                None => None,
            };
            let api_url = c.url(
                "api_url",
                raw.api_url.as_deref().unwrap_or(TELEGRAM_API_URL),
            );
            Some(ChannelKind::Telegram {
                bot_token: bot_token?,
                chat_id: chat_id?,
                api_url: api_url?,
            })
        }
        RawKind::Ntfy => {
            let server_url = c.required(raw.server_url.take(), kind, "server_url");
            let server_url = server_url.and_then(|u| c.url("server_url", &u));
            // ntfy's own rule for topic names; on a public server the name
            // is the password, so it is never quoted.
            let topic = c
                .required_secret(raw.topic.take(), kind, "topic")
                .filter(|t| {
                    let t = t.expose();
                    let ok = t.len() <= 64
                        && t.chars()
                            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-'));
                    if !ok {
                        c.invalid(
                            Some("topic"),
                            "topic: at most 64 letters, digits, `_` or `-`".into(),
                        );
                    }
                    ok
                });
            let token = match raw.token.take() {
                None => Some(None),
                Some(source) => c.header_secret(Some(source), kind, "token").map(Some),
            };
            Some(ChannelKind::Ntfy {
                server_url: server_url?,
                topic: topic?,
                token: token?,
            })
        }
        RawKind::Gotify => {
            let server_url = c.required(raw.server_url.take(), kind, "server_url");
            let server_url = server_url.and_then(|u| c.url("server_url", &u));
            let app_token = c.header_secret(raw.app_token.take(), kind, "app_token");
            Some(ChannelKind::Gotify {
                server_url: server_url?,
                app_token: app_token?,
            })
        }
        RawKind::Opsgenie => {
            let api_key = c.header_secret(raw.api_key.take(), kind, "api_key");
            let api_url = c.url(
                "api_url",
                raw.api_url.as_deref().unwrap_or(OPSGENIE_API_URL),
            );
            Some(ChannelKind::Opsgenie {
                api_key: api_key?,
                api_url: api_url?,
            })
        }
    }
}

fn build_email<E: Fn(&str) -> Option<String>>(
    raw: &RawChannel,
    c: &mut Checker<'_, E>,
) -> Option<EmailChannel> {
    let kind = RawKind::Email;
    let smtp_host = c.required(raw.smtp_host.clone(), kind, "smtp_host");
    let smtp_host = smtp_host.filter(|h| {
        let ok = !h.trim().is_empty() && !h.contains(char::is_whitespace);
        if !ok {
            c.invalid(Some("smtp_host"), "smtp_host: not a host name".into());
        }
        ok
    });
    let tls = raw.tls.unwrap_or_default();
    let smtp_port = match raw.smtp_port {
        Some(0) => {
            c.invalid(Some("smtp_port"), "smtp_port: must not be 0".into());
            None
        }
        Some(p) => Some(p),
        None => Some(tls.default_port()),
    };
    let password = match &raw.password {
        None => Some(None),
        Some(SecretSource::Literal(s)) => Some(Some(s.clone())),
        Some(SecretSource::Env(var)) => c
            .secret("password", "password", SecretSource::Env(var.clone()))
            .map(Some),
    };
    match (&raw.username, &raw.password) {
        (Some(_), None) => c.invalid(Some("username"), "`username` needs a `password`".into()),
        (None, Some(_)) => c.invalid(Some("password"), "`password` needs a `username`".into()),
        _ => {}
    }
    let from = c.required(raw.from.clone(), kind, "from");
    let from = from.filter(|from| match from.parse::<Mailbox>() {
        Ok(_) => true,
        Err(e) => {
            c.invalid(
                Some("from"),
                format!("from: {from:?} is not a mailbox ({e})"),
            );
            false
        }
    });
    let to = c.required(raw.to.clone(), kind, "to");
    let to = to.filter(|to| {
        if to.is_empty() {
            c.invalid(Some("to"), "to: at least one recipient is needed".into());
            return false;
        }
        let mut ok = true;
        for address in to {
            if let Err(e) = address.parse::<Mailbox>() {
                c.invalid(
                    Some("to"),
                    format!("to: {address:?} is not a mailbox ({e})"),
                );
                ok = false;
            }
        }
        ok
    });
    Some(EmailChannel {
        smtp_host: smtp_host?,
        smtp_port: smtp_port?,
        tls,
        username: raw.username.clone(),
        password: password?,
        from: from?,
        to: to?,
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
        AlertKind::CertificateExpiry | AlertKind::ConsentExpiry => ":warning:",
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
fn dedup_key(alert: &Alert) -> String {
    match (&alert.kind, &alert.certificate) {
        (AlertKind::CertificateExpiry, Some(c)) => format!("bankbridge:cert:{}", c.host),
        (AlertKind::ConsentExpiry, _) => format!("bankbridge:consent:{}", alert.check_id),
        _ => format!("bankbridge:{}", alert.check_id),
    }
}

fn pagerduty_event(routing_key: &str, alert: &Alert) -> Value {
    let dedup_key = dedup_key(alert);
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

/// The alert's facts as label/value pairs, for the channels that lay them
/// out themselves (Teams, Discord, the plain-text ones).
fn facts(alert: &Alert) -> Vec<(&'static str, String)> {
    let mut out = vec![(
        "Check",
        format!(
            "{} ({})",
            one_line(&alert.check_name),
            one_line(&alert.check_id)
        ),
    )];
    if let Some(step) = &alert.failed_step {
        out.push(("Failed step", one_line(step)));
    }
    if !alert.locations.is_empty() {
        out.push(("Locations", locations_line(alert)));
    }
    if let Some(run) = alert.run_id {
        out.push(("Run", run.to_string()));
    }
    if let Some(c) = &alert.certificate {
        out.push((
            "Certificate",
            format!(
                "{} expires {} ({} days left)",
                one_line(&c.host),
                timestamp(&c.expires_at),
                c.days_left
            ),
        ));
    }
    if let Some(c) = &alert.consent {
        out.push((
            "Consent",
            format!(
                "of connection {} valid until {} ({} days left); give a new one with a sync where you can authenticate",
                one_line(&c.connection),
                c.valid_until,
                c.days_left
            ),
        ));
    }
    out.push(("At", timestamp(&alert.at)));
    out
}

/// The summary, the facts and the error as plain text: the body of the
/// Telegram, ntfy and Gotify messages and the Opsgenie description.
fn plain_text(alert: &Alert) -> String {
    let mut text = one_line(&alert.summary);
    text.push_str("\n\n");
    for (label, value) in facts(alert) {
        text.push_str(&format!("{label}: {value}\n"));
    }
    if let Some(error) = &alert.error {
        text.push_str("\nError:\n");
        text.push_str(error.trim_end());
        text.push('\n');
    }
    text
}

/// At most `max` bytes, cut at a character boundary, with an ellipsis when
/// cut (ntfy counts bytes).
fn truncate_bytes(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn teams_payload(alert: &Alert) -> Value {
    let colour = match alert.kind {
        AlertKind::Failure => "Attention",
        AlertKind::Recovery => "Good",
        AlertKind::Degraded | AlertKind::CertificateExpiry | AlertKind::ConsentExpiry => "Warning",
    };
    let facts: Vec<Value> = facts(alert)
        .into_iter()
        .map(|(title, value)| json!({"title": title, "value": truncate(&value, 1000)}))
        .collect();
    let mut body = vec![
        json!({"type": "TextBlock", "text": truncate(&alert.headline(), 300), "weight": "Bolder",
            "size": "Medium", "color": colour, "wrap": true}),
        json!({"type": "TextBlock", "text": truncate(&one_line(&alert.summary), 2000), "wrap": true}),
        json!({"type": "FactSet", "facts": facts}),
    ];
    if let Some(error) = &alert.error {
        body.push(
            json!({"type": "TextBlock", "text": truncate(error, 3000), "wrap": true,
            "fontType": "Monospace", "isSubtle": true}),
        );
    }
    // The envelope both Workflows and the older connector webhooks take.
    json!({
        "type": "message",
        "summary": truncate(&alert.headline(), 150),
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
            },
        }],
    })
}

/// Discord's markdown gives `*`, `_`, `~`, `` ` ``, `|`, `>` and `#` meaning.
fn discord_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '*' | '_' | '~' | '`' | '|' | '>' | '#') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn discord_payload(alert: &Alert) -> Value {
    let colour = match alert.kind {
        AlertKind::Failure => 0xD9_30_25,
        AlertKind::Recovery => 0x1E_8E_3E,
        AlertKind::Degraded | AlertKind::CertificateExpiry | AlertKind::ConsentExpiry => 0xF2_99_00,
    };
    let mut fields: Vec<Value> = facts(alert)
        .into_iter()
        .filter(|(label, _)| *label != "At")
        .map(|(name, value)| {
            json!({"name": name, "value": truncate(&discord_escape(&value), 1024),
                "inline": name != "Locations" && name != "Certificate"})
        })
        .collect();
    if let Some(error) = &alert.error {
        let error = truncate(&error.replace("```", "'''"), 1000);
        fields
            .push(json!({"name": "Error", "value": format!("```\n{error}\n```"), "inline": false}));
    }
    json!({
        "username": "bankbridge",
        "content": truncate(&discord_escape(&alert.headline()), 2000),
        "embeds": [{
            "title": truncate(&alert.headline(), 256),
            "description": truncate(&discord_escape(&one_line(&alert.summary)), 4096),
            "color": colour,
            "fields": fields,
            "timestamp": timestamp(&alert.at),
            "footer": {"text": "bankbridge flow checks"},
        }],
        // A check named "@everyone" must not ping a whole server.
        "allowed_mentions": {"parse": []},
    })
}

fn telegram_payload(chat_id: &str, alert: &Alert) -> Value {
    let emoji = match alert.kind {
        AlertKind::Failure => "🔴",
        AlertKind::Degraded => "🟡",
        AlertKind::Recovery => "🟢",
        AlertKind::CertificateExpiry | AlertKind::ConsentExpiry => "⚠️",
    };
    // A chat number goes as a number, `@channel` as a string.
    let chat_id = chat_id
        .parse::<i64>()
        .map_or_else(|_| json!(chat_id), |n| json!(n));
    json!({
        "chat_id": chat_id,
        // Plain text (no parse_mode): nothing in a check's name or error
        // can break the message's markup.
        "text": truncate(&format!("{emoji} {}\n\n{}", alert.headline(), plain_text(alert)), 4096),
        "disable_web_page_preview": true,
    })
}

/// ntfy's priority (1-5) and tags (emoji short codes) for an alert.
fn ntfy_priority_and_tags(alert: &Alert) -> (&'static str, &'static str) {
    let expired = alert.certificate.as_ref().is_some_and(|c| c.days_left < 0);
    match alert.kind {
        AlertKind::Failure => ("4", "rotating_light,bankbridge"),
        AlertKind::Degraded => ("3", "warning,bankbridge"),
        AlertKind::Recovery => ("3", "white_check_mark,bankbridge"),
        AlertKind::CertificateExpiry if expired => ("4", "lock,bankbridge"),
        AlertKind::CertificateExpiry => ("3", "lock,bankbridge"),
        AlertKind::ConsentExpiry => ("3", "hourglass,bankbridge"),
    }
}

/// A header value that may hold any text: ASCII as is, anything else as an
/// RFC 2047 encoded word (which ntfy decodes).
fn header_text(text: &str) -> HeaderValue {
    let text = truncate(&one_line(text), 250);
    if text.chars().all(|c| c.is_ascii() && !c.is_ascii_control())
        && let Ok(v) = HeaderValue::from_str(&text)
    {
        return v;
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
    HeaderValue::from_str(&format!("=?UTF-8?B?{encoded}?="))
        .unwrap_or(HeaderValue::from_static("bankbridge"))
}

fn gotify_payload(alert: &Alert) -> Value {
    let expired = alert.certificate.as_ref().is_some_and(|c| c.days_left < 0);
    // Gotify's apps: 8 and up interrupt, 4-7 ring, below that stay quiet.
    let priority = match alert.kind {
        AlertKind::Failure => 8,
        AlertKind::CertificateExpiry if expired => 8,
        AlertKind::Degraded | AlertKind::CertificateExpiry | AlertKind::ConsentExpiry => 5,
        AlertKind::Recovery => 4,
    };
    json!({
        "title": truncate(&alert.headline(), 250),
        "message": truncate(&plain_text(alert), 10_000),
        "priority": priority,
        "extras": {"client::display": {"contentType": "text/plain"}},
    })
}

fn opsgenie_alert(alert: &Alert) -> Value {
    let expired = alert.certificate.as_ref().is_some_and(|c| c.days_left < 0);
    let priority = match alert.kind {
        AlertKind::Failure => "P1",
        AlertKind::CertificateExpiry if expired => "P2",
        _ => "P3",
    };
    let kind = match alert.kind {
        AlertKind::Failure => "failure",
        AlertKind::Degraded => "degraded",
        AlertKind::Recovery => "recovery",
        AlertKind::CertificateExpiry => "certificate_expiry",
        AlertKind::ConsentExpiry => "consent_expiry",
    };
    // Opsgenie's details are a map of strings.
    let mut details = serde_json::Map::new();
    for (label, value) in facts(alert) {
        details.insert(
            label.to_lowercase().replace(' ', "_"),
            json!(truncate(&value, 8000)),
        );
    }
    json!({
        "message": truncate(&alert.headline(), 130),
        "alias": truncate(&dedup_key(alert), 512),
        "description": truncate(&plain_text(alert), 15_000),
        "priority": priority,
        "source": "bankbridge",
        "entity": truncate(&one_line(&alert.check_id), 512),
        "tags": ["bankbridge", kind],
        "details": details,
    })
}

/// `base` with `segments` appended as path segments (each percent-encoded),
/// so a server under a sub-path keeps it.
fn join_path(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

// ---------------------------------------------------------------------------
// Delivery
// ---------------------------------------------------------------------------

/// Replace every secret in `text` with `[redacted]` and keep it short and on
/// one line: receivers echo requests back in error pages. A secret shorter
/// than 4 characters is replaced only where it stands as a whole word (see
/// [`crate::redact::mask_secret`]).
fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut text = one_line(text);
    for secret in secrets {
        text = crate::redact::mask_secret(&text, secret, "[redacted]");
    }
    truncate(&text, 300)
}

/// A header value marked sensitive, so reqwest and hyper never log it.
fn sensitive(value: &str) -> Result<HeaderValue, reqwest::header::InvalidHeaderValue> {
    let mut value = HeaderValue::from_str(value)?;
    value.set_sensitive(true);
    Ok(value)
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
        let invalid = |field: &str, message: String| AlertError::Invalid {
            channel: channel.name.clone(),
            message: format!("{field}: {message}"),
        };
        let request = match &channel.kind {
            ChannelKind::Webhook { url, headers } => {
                let mut request = self.http.post(url.clone()).json(&WebhookBody {
                    channel: &channel.name,
                    alert,
                });
                for (name, value) in headers {
                    let value = sensitive(value.expose()).map_err(|_| {
                        invalid(
                            &format!("headers.{name}"),
                            "not a valid header value".into(),
                        )
                    })?;
                    request = request.header(name.as_str(), value);
                }
                request
            }
            ChannelKind::Slack { webhook_url } => {
                let url = http_url(webhook_url.expose()).map_err(|m| invalid("webhook_url", m))?;
                self.http.post(url).json(&slack_payload(alert))
            }
            ChannelKind::Teams { webhook_url } => {
                let url = http_url(webhook_url.expose()).map_err(|m| invalid("webhook_url", m))?;
                self.http.post(url).json(&teams_payload(alert))
            }
            ChannelKind::Discord { webhook_url } => {
                let url = http_url(webhook_url.expose()).map_err(|m| invalid("webhook_url", m))?;
                self.http.post(url).json(&discord_payload(alert))
            }
            ChannelKind::PagerDuty {
                routing_key,
                events_url,
            } => self
                .http
                .post(events_url.clone())
                .json(&pagerduty_event(routing_key.expose(), alert)),
            ChannelKind::Telegram {
                bot_token,
                chat_id,
                api_url,
            } => {
                let bot = format!("bot{}", bot_token.expose());
                let url = join_path(api_url, &[&bot, "sendMessage"]);
                self.http.post(url).json(&telegram_payload(chat_id, alert))
            }
            ChannelKind::Ntfy {
                server_url,
                topic,
                token,
            } => {
                let (priority, tags) = ntfy_priority_and_tags(alert);
                let mut request = self
                    .http
                    .post(join_path(server_url, &[topic.expose()]))
                    .header(CONTENT_TYPE, "text/plain; charset=utf-8")
                    .header("Title", header_text(&alert.headline()))
                    .header("Priority", priority)
                    .header("Tags", tags)
                    // ntfy keeps a message up to 4096 bytes as text.
                    .body(truncate_bytes(&plain_text(alert), 4000));
                if let Some(token) = token {
                    let value = sensitive(&format!("Bearer {}", token.expose()))
                        .map_err(|_| invalid("token", "not a valid header value".into()))?;
                    request = request.header(AUTHORIZATION, value);
                }
                request
            }
            ChannelKind::Gotify {
                server_url,
                app_token,
            } => {
                let key = sensitive(app_token.expose())
                    .map_err(|_| invalid("app_token", "not a valid header value".into()))?;
                self.http
                    .post(join_path(server_url, &["message"]))
                    .header("X-Gotify-Key", key)
                    .json(&gotify_payload(alert))
            }
            ChannelKind::Opsgenie { api_key, api_url } => {
                let key = sensitive(&format!("GenieKey {}", api_key.expose()))
                    .map_err(|_| invalid("api_key", "not a valid header value".into()))?;
                let request = if alert.kind == AlertKind::Recovery {
                    // A recovery closes the alert its failure opened.
                    let alias = dedup_key(alert);
                    let mut url = join_path(api_url, &["v2", "alerts", &alias, "close"]);
                    url.query_pairs_mut().append_pair("identifierType", "alias");
                    self.http.post(url).json(&json!({
                        "source": "bankbridge",
                        "note": truncate(&one_line(&alert.summary), 25_000),
                    }))
                } else {
                    self.http
                        .post(join_path(api_url, &["v2", "alerts"]))
                        .json(&opsgenie_alert(alert))
                };
                request.header(AUTHORIZATION, key)
            }
            ChannelKind::Email(email) => return send_email(channel, email, alert).await,
        };
        self.post(channel, request).await
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
        assert!(e.contains("unknown channel type \"sms\""), "{e}");
        assert!(e.contains("pagerduty") && e.contains("opsgenie"), "{e}");
        // An unknown type hides none of the settings every channel has.
        let found = problems("[[channel]]\nname = \"x\"\ntype = \"sms\"\nreminder = \"1s\"\n");
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[1].starts_with("line 4, column 1: channel \"x\": reminder: must be at least 1m"),
            "{found:?}"
        );

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

    fn problems(text: &str) -> Vec<String> {
        read_channels_with_env(text, no_env)
            .unwrap_err()
            .iter()
            .map(ChannelProblem::to_string)
            .collect()
    }

    #[test]
    fn every_problem_of_every_channel_is_reported_at_its_line() {
        let text = "\
[[channel]]
name = \"a\"
type = \"sms\"

[[channel]]
name = \"b\"
type = \"webhook\"
url = \"ftp://h/\"
reminder = \"soon\"

[[channel]]
name = \"ok\"
type = \"slack\"
webhook_url = \"https://h/x\"

[[channel]]
name = \"c\"
type = \"telegram\"
colour = \"red\"

[[channel]]
name = \"b\"
type = \"gotify\"
";
        let found = problems(text);
        assert_eq!(found.len(), 7, "{found:#?}");
        assert!(
            found[0].starts_with("line 3, column 1: channel \"a\": unknown channel type \"sms\""),
            "{found:#?}"
        );
        assert!(
            found[1].starts_with("line 8, column 1: channel \"b\": url: scheme \"ftp\""),
            "{found:#?}"
        );
        assert!(
            found[2].starts_with("line 9, column 1: channel \"b\": reminder: \"soon\""),
            "{found:#?}"
        );
        // serde stops at a table's first unknown field; the table still counts.
        assert!(
            found[3].starts_with("line 19, column 1: unknown field `colour`"),
            "{found:#?}"
        );
        assert_eq!(
            found[4],
            "line 21, column 1: channel \"b\": a gotify channel needs `server_url`"
        );
        assert_eq!(
            found[5],
            "line 21, column 1: channel \"b\": a gotify channel needs `app_token`"
        );
        assert_eq!(
            found[6],
            "line 22, column 1: channels file: channel name \"b\" is used more than once"
        );
    }

    #[test]
    fn syntax_errors_and_stray_keys_have_lines() {
        let found = problems("[[channel]\nname = 1\n");
        assert!(found[0].starts_with("line 1, "), "{found:?}");
        let found = problems(
            "colour = 1\n[[channel]]\nname = \"a\"\ntype = \"discord\"\nwebhook_url = \"https://h/x\"\n",
        );
        assert_eq!(
            found,
            [
                "line 1, column 1: unknown key `colour`: a channels file holds only [[channel]] tables"
            ]
        );
        let found = problems("channel = 5\n");
        assert_eq!(
            found,
            ["line 1, column 11: `channel` must be [[channel]] tables"]
        );
    }

    #[test]
    fn a_missing_variable_is_its_own_kind_of_problem() {
        let problems = read_channels_with_env(
            "[[channel]]\nname = \"o\"\ntype = \"opsgenie\"\napi_key = { env = \"OG_KEY\" }\napi_url = \"nope\"\nreminder = \"5s\"\n",
            no_env,
        )
        .unwrap_err();
        // The unset variable hides none of the channel's other problems.
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[2].line == 6 && problems[2].message().contains("at least 1m"),
            "{problems:?}"
        );
        assert!(
            problems[0].is_missing_env() && problems[0].line == 4,
            "{problems:?}"
        );
        assert!(
            !problems[1].is_missing_env() && problems[1].line == 5,
            "{problems:?}"
        );
    }

    #[test]
    fn new_kinds_parse_with_their_defaults() {
        let channels = parse_channels_with_env(
            r#"
            [[channel]]
            name = "teams"
            type = "teams"
            webhook_url = { env = "TEAMS_URL" }
            [[channel]]
            name = "discord"
            type = "discord"
            webhook_url = "https://discord.com/api/webhooks/1/t0ken"
            [[channel]]
            name = "tg"
            type = "telegram"
            bot_token = "123456:ABC-def_1"
            chat_id = -1001234567890
            [[channel]]
            name = "tg-channel"
            type = "telegram"
            bot_token = "123456:ABC"
            chat_id = "@ops"
            api_url = "http://127.0.0.1:9/"
            [[channel]]
            name = "push"
            type = "ntfy"
            server_url = "https://ntfy.example.org/sub"
            topic = "bank-checks_1"
            token = { env = "NTFY_TOKEN" }
            [[channel]]
            name = "gotify"
            type = "gotify"
            server_url = "https://gotify.example.org"
            app_token = "AbCdEf"
            send_degraded = true
            reminder = "1h"
            [[channel]]
            name = "genie"
            type = "opsgenie"
            api_key = "0g-key"
            "#,
            |name| match name {
                "TEAMS_URL" => Some("https://example.webhook.office.com/webhookb2/x".into()),
                "NTFY_TOKEN" => Some("tk_abc".into()),
                _ => None,
            },
        )
        .unwrap();
        let kinds: Vec<&str> = channels.iter().map(|c| c.kind.type_name()).collect();
        assert_eq!(
            kinds,
            [
                "teams", "discord", "telegram", "telegram", "ntfy", "gotify", "opsgenie"
            ]
        );
        match &channels[2].kind {
            ChannelKind::Telegram {
                chat_id, api_url, ..
            } => {
                assert_eq!(chat_id, "-1001234567890");
                assert_eq!(api_url.as_str(), "https://api.telegram.org/");
            }
            other => panic!("{other:?}"),
        }
        match &channels[3].kind {
            ChannelKind::Telegram { chat_id, .. } => assert_eq!(chat_id, "@ops"),
            other => panic!("{other:?}"),
        }
        match &channels[4].kind {
            ChannelKind::Ntfy { token, .. } => {
                assert_eq!(token.as_ref().unwrap().expose(), "tk_abc")
            }
            other => panic!("{other:?}"),
        }
        assert!(channels[5].send_degraded);
        assert_eq!(channels[5].reminder(), Some(Duration::from_secs(3600)));
        match &channels[6].kind {
            ChannelKind::Opsgenie { api_url, .. } => {
                assert_eq!(api_url.as_str(), "https://api.opsgenie.com/")
            }
            other => panic!("{other:?}"),
        }
        let printed = format!("{channels:?}");
        for secret in [
            "webhook.office.com",
            "t0ken",
            "ABC-def_1",
            "bank-checks_1",
            "tk_abc",
            "AbCdEf",
            "0g-key",
        ] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
    }

    #[test]
    fn new_kinds_check_their_fields_without_quoting_secrets() {
        let one = |body: &str| parse_err(&format!("[[channel]]\nname = \"c\"\n{body}"));
        assert_eq!(
            one("type = \"telegram\"\nchat_id = 1\n"),
            "channel \"c\": a telegram channel needs `bot_token`"
        );
        assert_eq!(
            one("type = \"telegram\"\nbot_token = \"1:a\"\n"),
            "channel \"c\": a telegram channel needs `chat_id`"
        );
        let e = one("type = \"telegram\"\nbot_token = \"s3cr3t/../x\"\nchat_id = 1\n");
        assert!(
            e.starts_with("channel \"c\": bot_token: not a bot token"),
            "{e}"
        );
        assert!(!e.contains("s3cr3t"), "{e}");
        let e = one("type = \"telegram\"\nbot_token = \"1:a\"\nchat_id = 1.5\n");
        assert!(e.starts_with("channel \"c\": chat_id:"), "{e}");
        assert_eq!(
            one("type = \"ntfy\"\ntopic = \"t\"\n"),
            "channel \"c\": an ntfy channel needs `server_url`"
        );
        assert_eq!(
            one("type = \"ntfy\"\nserver_url = \"https://n/\"\n"),
            "channel \"c\": an ntfy channel needs `topic`"
        );
        let e = one("type = \"ntfy\"\nserver_url = \"https://n/\"\ntopic = \"s3cr3t topic\"\n");
        assert!(e.starts_with("channel \"c\": topic: at most 64"), "{e}");
        assert!(!e.contains("s3cr3t"), "{e}");
        assert_eq!(
            one("type = \"gotify\"\nserver_url = \"https://g/\"\n"),
            "channel \"c\": a gotify channel needs `app_token`"
        );
        let e = one("type = \"gotify\"\nserver_url = \"https://g/\"\napp_token = \"s3cr3t\\n\"\n");
        assert_eq!(
            e,
            "channel \"c\": app_token: the value is not a valid header value"
        );
        assert_eq!(
            one("type = \"opsgenie\"\n"),
            "channel \"c\": an opsgenie channel needs `api_key`"
        );
        assert_eq!(
            one("type = \"teams\"\n"),
            "channel \"c\": a teams channel needs `webhook_url`"
        );
        let e = one("type = \"discord\"\nwebhook_url = \"s3cr3t\"\n");
        assert!(
            e.starts_with("channel \"c\": webhook_url: not a URL"),
            "{e}"
        );
        assert!(!e.contains("s3cr3t"), "{e}");
        assert_eq!(
            one("type = \"discord\"\nwebhook_url = \"https://d/x\"\ntopic = \"t\"\n"),
            "channel \"c\": `topic` does not apply to a discord channel"
        );
        let e = one("type = \"opsgenie\"\napi_key = \"k\"\nregion = \"eu\"\n");
        assert!(e.contains("unknown field `region`"), "{e}");
    }

    #[test]
    fn urls_are_joined_under_a_sub_path() {
        let base = Url::parse("https://h.example/ntfy/").unwrap();
        assert_eq!(
            join_path(&base, &["a b", "c/d"]).as_str(),
            "https://h.example/ntfy/a%20b/c%2Fd"
        );
        let base = Url::parse("https://api.opsgenie.com").unwrap();
        assert_eq!(
            join_path(&base, &["v2", "alerts", "bankbridge:c1", "close"]).as_str(),
            "https://api.opsgenie.com/v2/alerts/bankbridge:c1/close"
        );
    }

    #[test]
    fn header_text_encodes_what_is_not_ascii() {
        assert_eq!(header_text("FAILING: Login"), "FAILING: Login");
        assert_eq!(header_text("Вход"), "=?UTF-8?B?0JLRhdC+0LQ=?=");
        assert_eq!(truncate_bytes("ääää", 6), "ä…");
        assert_eq!(truncate_bytes("abc", 3), "abc");
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
            scrub("bad key ABCD\nin body ABCD", &["ABCD", ""]),
            "bad key [redacted] in body [redacted]"
        );
        // Short secrets: whole words only.
        assert_eq!(
            scrub("table ab cab (ab) ABC", &["ab", "ABC"]),
            "table [redacted] cab ([redacted]) [redacted]"
        );
        // Four characters and more: anywhere.
        assert_eq!(scrub("xkeyzx", &["keyz"]), "x[redacted]x");
    }

    #[test]
    fn webhook_urls_scrub_their_token_part_too() {
        let secrets = url_secrets("https://discord.com/api/webhooks/123/AbCdEfGhIjKlMnOpQr");
        assert!(secrets.contains(&"AbCdEfGhIjKlMnOpQr"), "{secrets:?}");
        assert!(!secrets.contains(&"webhooks"), "{secrets:?}");
        assert_eq!(
            scrub("Unknown token AbCdEfGhIjKlMnOpQr", &secrets),
            "Unknown token [redacted]"
        );
    }
}
