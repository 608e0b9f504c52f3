//! Open-banking consents running out: a bank's consent lasts up to 180 days
//! (or what the connection asked for), and once it lapses the connection
//! syncs nothing until the user gives a new one. `serve` warns ahead: once
//! a day it looks at every connection's recorded consent, and when one is
//! within a channel's `consent_expiry_threshold_days` it sends a
//! `consent_expiry` alert through the channels of `channels.toml` that ask
//! for it (`consent_expiry = true`), once per consent (the store remembers
//! the expiry it warned about). The API and the dashboard show the same
//! days left.
use bankbridge_checks::alerts::{Alert, AlertKind, ChannelConfig, ConsentInfo};
use bankbridge_store::Connection;
use chrono::{NaiveDate, Utc};

use crate::AppState;

/// The warnings due for one connection: its id, the expiry warned about,
/// and each channel with its alert.
pub type Due = (i64, NaiveDate, Vec<(ChannelConfig, Alert)>);

/// Days left before a warning, when no channel says (the API's `expires_soon`).
pub const DEFAULT_WARNING_DAYS: i64 = 7;

/// A consent that still counts: the bank last said `valid`.
pub fn live_consent(c: &Connection) -> Option<(NaiveDate, Option<NaiveDate>)> {
    let consent = c.consent.as_ref()?;
    (consent.status == "valid")
        .then_some(consent.valid_until)
        .flatten()
        .map(|until| (until, consent.warned_for))
}

/// Days from `today` to the consent's last day (0: it ends today).
pub fn days_left(valid_until: NaiveDate, today: NaiveDate) -> i64 {
    (valid_until - today).num_days()
}

/// The alerts due at `today`: per connection whose valid consent ends
/// within a channel's threshold and was not warned about, one alert per
/// channel that wants it. Pure: the caller sends and marks.
pub fn due(connections: &[Connection], channels: &[ChannelConfig], today: NaiveDate) -> Vec<Due> {
    let mut out = Vec::new();
    for c in connections {
        let Some((until, warned_for)) = live_consent(c) else {
            continue;
        };
        if warned_for == Some(until) {
            continue;
        }
        let left = days_left(until, today);
        let mut alert = Alert::new(
            AlertKind::ConsentExpiry,
            format!("connection:{}", c.id),
            format!("connection {}", c.name),
            format!(
                "the bank's consent for connection {} ends on {until} ({left} days left): sync it where you can authenticate to give a new one",
                c.name
            ),
            Utc::now(),
        );
        alert.consent = Some(ConsentInfo {
            connection: c.name.clone(),
            valid_until: until,
            days_left: left,
        });
        let wanted: Vec<(ChannelConfig, Alert)> = channels
            .iter()
            .filter(|ch| ch.wants(&alert))
            .map(|ch| (ch.clone(), alert.clone()))
            .collect();
        if !wanted.is_empty() {
            out.push((c.id, until, wanted));
        }
    }
    out
}

/// One pass: send the warnings due now and mark them sent.
pub async fn warn(state: &AppState) {
    let Some(checks) = state.checks.get() else {
        return;
    };
    let connections = match state.store.connections.list_connections().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "consents: cannot list connections");
            return;
        }
    };
    let today = Utc::now().date_naive();
    for (id, until, alerts) in due(&connections, &checks.channels(), today) {
        // Marked first: two servers on one database send it once.
        match state.store.connections.mark_consent_warned(id, until).await {
            Ok(true) => {
                tracing::info!(connection = id, %until, channels = alerts.len(), "consents: warning of an expiry");
                checks.send(alerts);
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(connection = id, error = %e, "consents: cannot mark the warning")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bankbridge_store::{ConsentRecord, SyncOutcome};

    fn connection(
        id: i64,
        status: &str,
        until: NaiveDate,
        warned: Option<NaiveDate>,
    ) -> Connection {
        Connection {
            id,
            name: format!("bank-{id}"),
            connector: "xs2a".into(),
            settings: serde_json::json!({}),
            credentials_sealed: vec![],
            session_sealed: None,
            created_at: Utc::now(),
            last_sync_at: None,
            last_sync_status: SyncOutcome::Ok,
            last_sync_error: None,
            credentials_version: 1,
            last_sync_credentials_version: None,
            lease_owner: None,
            lease_until: None,
            consent: Some(ConsentRecord {
                status: status.into(),
                valid_until: Some(until),
                warned_for: warned,
            }),
        }
    }

    fn channel(threshold: i64, on: bool) -> ChannelConfig {
        let toml = format!(
            "[[channel]]\nname = \"ops\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\n\
             consent_expiry = {on}\nconsent_expiry_threshold_days = {threshold}\n"
        );
        bankbridge_checks::alerts::parse_channels(&toml)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn a_consent_is_warned_about_once_within_the_threshold() {
        let today = NaiveDate::from_ymd_opt(2026, 6, 1).unwrap();
        let soon = today + chrono::Days::new(5);
        let later = today + chrono::Days::new(30);
        let list = vec![
            connection(1, "valid", soon, None),
            connection(2, "valid", later, None),
            connection(3, "valid", soon, Some(soon)),
            connection(4, "expired", soon, None),
        ];
        let due = due(&list, &[channel(7, true)], today);
        assert_eq!(
            due.len(),
            1,
            "only the valid consent within 7 days, not yet warned"
        );
        let (id, until, alerts) = &due[0];
        assert_eq!((*id, *until), (1, soon));
        assert_eq!(alerts[0].1.status(), "CONSENT EXPIRES in 5 days");
        assert_eq!(
            alerts[0].1.headline(),
            "CONSENT EXPIRES in 5 days: connection bank-1"
        );
        // A channel that did not ask for consent warnings gets none.
        assert!(super::due(&list, &[channel(7, false)], today).is_empty());
        // A narrower threshold waits.
        assert!(super::due(&list, &[channel(3, true)], today).is_empty());
    }
}
