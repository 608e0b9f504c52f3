//! The card service, without HTTP: bank cards kept in readers compute CAP
//! codes for callers who never see the PIN.
//!
//! Rules it keeps:
//! - one operation per reader at a time, in arrival order (a fair queue per
//!   reader); a caller waits at most `wait`, then gets [`CardUseError::Busy`];
//!   different readers work in parallel;
//! - each operation runs in its own task to the end, whoever still waits for
//!   it: a caller who hangs up can neither let a second operation start on a
//!   card mid-operation nor skip the status change and audit that follow;
//!   the reader's turn is released only after the card's status is written;
//! - the card's status is read again once the reader is ours: a request that
//!   queued behind a wrong-PIN failure does not try the PIN again;
//! - a PIN the card may have refused (any answer to VERIFY but `9000`, or a
//!   failure once VERIFY went out: transport error, card removed, timeout)
//!   takes the card out of use before the reader's turn is released, and
//!   only a new PIN brings it back; if the store cannot record that, the
//!   card is held out of use in memory and the turn is kept until the write
//!   lands; a blocked card is marked blocked; `bankbridge_cap::emv` checks
//!   the card's identity and try counter before any VERIFY;
//! - every use is audited; neither the PIN nor a code is ever logged;
//! - a card in a reader of a card host (another machine, see
//!   [`crate::card_hosts`]) is used through that host's card agent under the
//!   same rules: one job per reader at a time, the PIN sealed to the host's
//!   key, a host that is gone refused at once ([`CardUseError::ReaderOffline`]),
//!   and a host that went away holding a job leaves the card out of use (the
//!   PIN may have reached the card).
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bankbridge_cap::emv::{
    self, CapError, CapRequest, CapResponse, CardIdentity, ExpectedCard, PinPolicy,
};
use bankbridge_cap::remote::{self as card_jobs, JobOutcome, JobWork};
use bankbridge_cap::transport::{Readers, TransportError, resolve_reader};
use bankbridge_core::Secret;
use bankbridge_core::crypto::MasterKey;
use bankbridge_store::{
    Card, CardAuditEntry, CardRecords, CardStatus, Institution, NewCard, StoreError,
};

use crate::card_hosts::{CardHosts, HostError};
use chrono::Utc;
use rand::RngCore;

/// The sealing purpose of a card's PIN (binds the blob to its card).
pub fn pin_purpose(card_id: &str) -> String {
    format!("card-pin:{card_id}")
}

/// Why a card could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CardUseError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("card {card} is disabled: {reason}")]
    Disabled { card: String, reason: String },
    #[error("card {card} is blocked: {reason}")]
    Blocked { card: String, reason: String },
    #[error("reader {reader:?} stayed busy for {waited:?}; try again later")]
    Busy { reader: String, waited: Duration },
    #[error(transparent)]
    ReaderOffline(HostError),
    #[error(transparent)]
    Cap(#[from] CapError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl CardUseError {
    /// The audit outcome of this failure.
    pub fn outcome(&self) -> &'static str {
        match self {
            CardUseError::NotFound(_) => "not_found",
            CardUseError::Disabled { .. } => "disabled",
            CardUseError::Blocked { .. } => "blocked",
            CardUseError::Busy { .. } => "busy",
            CardUseError::ReaderOffline(_) => "reader_offline",
            CardUseError::Cap(e) => match e {
                CapError::WrongPin { .. } | CapError::PinRefused { .. } => "wrong_pin",
                CapError::PinOutcomeUnknown { .. } => "pin_unknown",
                CapError::Blocked | CapError::VerifyBlocked { .. } => "blocked",
                CapError::TooFewTries { .. } => "pin_tries_low",
                CapError::WrongCard { .. } => "wrong_card",
                CapError::Transport(TransportError::CardRemoved { .. }) => "card_removed",
                CapError::Transport(TransportError::NoCard { .. }) => "no_card",
                CapError::Transport(_) => "reader_error",
                CapError::BadInput(_) | CapError::BadPin => "bad_input",
                _ => "card_error",
            },
            CardUseError::Invalid(_) => "bad_input",
            CardUseError::Store(_) | CardUseError::Internal(_) => "error",
        }
    }
}

/// What an admin gives to register a card; the rest is read from the card.
pub struct CardRegistration {
    /// The card host whose reader holds the card; `None`: this server's.
    pub host: Option<String>,
    /// A reader name, index or unique part of a name.
    pub reader: String,
    pub label: String,
    pub account_reference: String,
    pub pin: Secret<String>,
    pub min_pin_tries: Option<u8>,
}

/// Cards in readers, shared by every request of a server. Cheap to clone.
#[derive(Clone)]
pub struct CardService(Arc<Inner>);

struct Inner {
    store: Arc<dyn CardRecords>,
    key: Arc<MasterKey>,
    readers: Arc<dyn Readers>,
    hosts: CardHosts,
    wait: Duration,
    /// One queue per reader, keyed by [`reader_key`].
    queues: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Cards that may have refused their PIN and whose store record does not
    /// say so yet: never used, whatever the store reads.
    refused: Mutex<HashSet<String>>,
}

impl CardService {
    pub fn new(
        store: Arc<dyn CardRecords>,
        key: Arc<MasterKey>,
        readers: Arc<dyn Readers>,
        wait: Duration,
    ) -> Self {
        Self(Arc::new(Inner {
            store,
            key,
            readers,
            hosts: CardHosts::default(),
            wait,
            queues: Mutex::new(HashMap::new()),
            refused: Mutex::new(HashSet::new()),
        }))
    }

    pub fn readers(&self) -> &Arc<dyn Readers> {
        &self.0.readers
    }

    /// The card hosts whose agents serve readers on other machines.
    pub fn hosts(&self) -> &CardHosts {
        &self.0.hosts
    }

    /// The readers this server sees.
    pub async fn list_readers(&self) -> Result<Vec<bankbridge_cap::ReaderInfo>, CardUseError> {
        self.0.list_readers().await
    }

    /// Register the card that sits in `reg.reader` under `institution`: its
    /// identity (card number last 4 and PSN where it has them, the digest of
    /// its records) is read from the card, without a PIN.
    pub async fn register(
        &self,
        institution: &Institution,
        reg: CardRegistration,
        who: &str,
    ) -> Result<Card, CardUseError> {
        let (this, institution, who) = (self.0.clone(), institution.clone(), who.to_owned());
        tokio::spawn(async move { this.register(&institution, reg, &who).await })
            .await
            .map_err(|e| CardUseError::Internal(e.to_string()))?
    }

    /// Compute a code with card `card_id` of `institution_id` for the
    /// caller `who` (a token name). Audited whatever the outcome.
    pub async fn compute(
        &self,
        institution_id: &str,
        card_id: &str,
        request: CapRequest,
        who: &str,
    ) -> Result<CapResponse, CardUseError> {
        let this = self.0.clone();
        let (institution_id, card_id, who) = (
            institution_id.to_owned(),
            card_id.to_owned(),
            who.to_owned(),
        );
        tokio::spawn(async move { this.compute(&institution_id, &card_id, request, &who).await })
            .await
            .map_err(|e| CardUseError::Internal(e.to_string()))?
    }
}

impl CardService {
    /// [`CardService::compute`] with card `card_id`, whatever its institution
    /// (a sync knows the card bound to its connection, not more).
    pub async fn compute_with_card(
        &self,
        card_id: &str,
        request: CapRequest,
        who: &str,
    ) -> Result<CapResponse, CardUseError> {
        let card = self
            .0
            .store
            .get_card(card_id)
            .await?
            .ok_or_else(|| CardUseError::NotFound(format!("card {card_id}")))?;
        self.compute(&card.institution_id, card_id, request, who)
            .await
    }
}

impl Inner {
    /// The readers this server sees (blocking PC/SC work off the runtime).
    async fn list_readers(&self) -> Result<Vec<bankbridge_cap::ReaderInfo>, CardUseError> {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || readers.list())
            .await
            .map_err(|e| CardUseError::Internal(e.to_string()))?
            .map_err(|e| CardUseError::Cap(CapError::Transport(e)))
    }

    /// Wait for the turn of `reader` (of card host `host`), at most `self.wait`.
    async fn take_turn(
        &self,
        host: Option<&str>,
        reader: &str,
    ) -> Result<tokio::sync::OwnedMutexGuard<()>, CardUseError> {
        let queue = self
            .queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reader_key(host, reader))
            .or_default()
            .clone();
        tokio::time::timeout(self.wait, queue.lock_owned())
            .await
            .map_err(|_| CardUseError::Busy {
                reader: reader.to_owned(),
                waited: self.wait,
            })
    }

    async fn register(
        &self,
        institution: &Institution,
        reg: CardRegistration,
        who: &str,
    ) -> Result<Card, CardUseError> {
        let CardRegistration {
            host,
            reader,
            label,
            account_reference,
            pin,
            min_pin_tries,
        } = reg;
        if !emv::is_valid_pin(pin.expose()) {
            return Err(CardUseError::Invalid(
                "the PIN must be 4 to 12 digits".into(),
            ));
        }
        let min_pin_tries = min_pin_tries.unwrap_or(PinPolicy::default().min_tries);
        if !(1..=15).contains(&min_pin_tries) {
            return Err(CardUseError::Invalid(
                "min_pin_tries must be between 1 and 15".into(),
            ));
        }
        let host = host.as_deref();
        let list = match host {
            None => self.list_readers().await?,
            Some(host) => {
                self.hosts
                    .online_host(host)
                    .map_err(CardUseError::ReaderOffline)?
                    .0
            }
        };
        let reader = resolve_reader(&list, &reader).map_err(|e| CardUseError::Cap(e.into()))?;
        if let Some(existing) = self.store.find_card_by_reader(host, &reader).await? {
            return Err(CardUseError::Store(StoreError::Conflict(format!(
                "reader {reader:?} already holds registered card {}; delete it first",
                existing.id
            ))));
        }
        let started = Instant::now();
        let _turn = self.take_turn(host, &reader).await?;
        let identity = self.identify(host, &reader).await?;
        let id = new_id("card");
        let audit = |outcome: &str, detail: Option<String>| CardAuditEntry {
            id: 0,
            at: Utc::now(),
            token_name: who.to_owned(),
            card_id: id.clone(),
            institution_id: institution.id.clone(),
            mode: "register".into(),
            outcome: outcome.to_owned(),
            detail,
            atc: None,
            duration_ms: started.elapsed().as_millis() as u64,
        };
        let identity = match identity {
            Ok(identity) => identity,
            Err(e) => {
                let e = CardUseError::Cap(e);
                self.store
                    .record_card_audit(&audit(e.outcome(), Some(e.to_string())))
                    .await?;
                return Err(e);
            }
        };
        let now = Utc::now();
        let card = self
            .store
            .create_card(&NewCard {
                id: id.clone(),
                institution_id: institution.id.clone(),
                label,
                account_reference,
                host: host.map(str::to_owned),
                reader,
                pan_last4: identity.pan_last4.clone(),
                psn: identity.psn.clone(),
                records_digest: Some(identity.records_digest.clone()),
                application: Some(identity.application.clone()),
                pin_sealed: self.key.seal_str(&pin, &pin_purpose(&id)),
                min_pin_tries,
                created_at: now,
            })
            .await?;
        self.store
            .record_card_audit(&audit(
                "ok",
                Some(format!(
                    "{} card {}, {} PIN tries left",
                    identity.application,
                    identity.describe(),
                    identity
                        .pin_tries_left
                        .map_or_else(|| "unknown".to_owned(), |n| n.to_string())
                )),
            ))
            .await?;
        Ok(card)
    }

    async fn compute(
        &self,
        institution_id: &str,
        card_id: &str,
        request: CapRequest,
        who: &str,
    ) -> Result<CapResponse, CardUseError> {
        let started = Instant::now();
        let card = self
            .store
            .get_card(card_id)
            .await?
            .filter(|c| c.institution_id == institution_id)
            .ok_or_else(|| {
                CardUseError::NotFound(format!("card {card_id} of institution {institution_id}"))
            })?;
        let result = self.compute_with(&card, &request).await;
        let (outcome, detail, atc) = match &result {
            Ok(r) => ("ok", None, Some(u32::from(r.atc))),
            Err(e) => (e.outcome(), Some(e.to_string()), None),
        };
        let audit = CardAuditEntry {
            id: 0,
            at: Utc::now(),
            token_name: who.to_owned(),
            card_id: card.id.clone(),
            institution_id: card.institution_id.clone(),
            mode: request.mode_name().to_owned(),
            outcome: outcome.to_owned(),
            detail,
            atc,
            duration_ms: started.elapsed().as_millis() as u64,
        };
        if let Err(e) = self.store.record_card_audit(&audit).await {
            // The code was computed; losing the audit line must not hide it,
            // but it must be loud.
            tracing::error!(card = %card.id, error = %e, "cannot write the card audit entry");
        }
        tracing::info!(card = %card.id, mode = request.mode_name(), outcome, who, "card used");
        result
    }

    async fn compute_with(
        &self,
        card: &Card,
        request: &CapRequest,
    ) -> Result<CapResponse, CardUseError> {
        request.validate()?;
        self.usable(card)?;
        let turn = self.take_turn(card.host.as_deref(), &card.reader).await?;
        // Another request may have disabled the card while this one queued.
        let card = self
            .store
            .get_card(&card.id)
            .await?
            .ok_or_else(|| CardUseError::NotFound(format!("card {}", card.id)))?;
        self.usable(&card)?;
        let pin = self
            .key
            .open_str(&card.pin_sealed, &pin_purpose(&card.id))
            .map_err(|e| {
                CardUseError::Internal(format!("cannot open card {}'s PIN: {e}", card.id))
            })?;
        let expected = ExpectedCard {
            pan_last4: card.pan_last4.clone(),
            psn: card.psn.clone(),
            records_digest: card.records_digest.clone(),
        };
        let policy = PinPolicy {
            min_tries: card.min_pin_tries,
        };
        let result = self
            .run_on_card(&card, request, pin, expected, policy)
            .await;
        let now = Utc::now();
        let outcome = match result {
            Ok(response) => {
                self.store
                    .touch_card(&card.id, now, response.card.pin_tries_left)
                    .await?;
                Ok(response)
            }
            Err(CardUseError::Cap(e)) if e.pin_possibly_refused() => {
                let blocked = matches!(e, CapError::VerifyBlocked { .. });
                self.hold_out_of_use(&card.id, &e, blocked).await;
                Err(e.into())
            }
            Err(e) => {
                if let CardUseError::Cap(CapError::Blocked) = e {
                    self.store
                        .set_card_status(
                            &card.id,
                            CardStatus::Blocked,
                            Some("the card's PIN is blocked; unblock it at the bank or an ATM"),
                            now,
                        )
                        .await?;
                }
                Err(e)
            }
        };
        // The next request in this reader's queue reads the status written above.
        drop(turn);
        outcome
    }

    /// Read who the card in `reader` is: here, or through its card host.
    async fn identify(
        &self,
        host: Option<&str>,
        reader: &str,
    ) -> Result<Result<CardIdentity, CapError>, CardUseError> {
        let Some(host) = host else {
            let readers = self.readers.clone();
            let name = reader.to_owned();
            return tokio::task::spawn_blocking(move || {
                let mut session = readers.connect(&name)?;
                emv::identify(session.as_mut())
            })
            .await
            .map_err(|e| CardUseError::Internal(e.to_string()));
        };
        match self.hosts.run(host, reader, JobWork::Identify).await {
            Ok(JobOutcome::Identified { card }) => Ok(Ok(card)),
            Ok(JobOutcome::Failed { error }) => Ok(Err(error.into_cap(reader))),
            Ok(JobOutcome::Computed { .. }) => Err(unexpected_answer(host)),
            // Identifying sends no PIN: a lost job harms no card.
            Err(e) => Err(CardUseError::ReaderOffline(e)),
        }
    }

    /// Run `request` on `card`: in this server's reader, or as a job for the
    /// card's host with the PIN sealed to that host.
    async fn run_on_card(
        &self,
        card: &Card,
        request: &CapRequest,
        pin: bankbridge_core::Secret<String>,
        expected: ExpectedCard,
        policy: PinPolicy,
    ) -> Result<CapResponse, CardUseError> {
        let Some(host) = card.host.as_deref() else {
            let readers = self.readers.clone();
            let reader = card.reader.clone();
            let request = request.clone();
            return tokio::task::spawn_blocking(move || {
                let mut session = readers.connect(&reader)?;
                emv::run(session.as_mut(), &request, &pin, Some(&expected), policy)
            })
            .await
            .map_err(|e| CardUseError::Internal(e.to_string()))?
            .map_err(CardUseError::Cap);
        };
        let (_, public_key) = self
            .hosts
            .online_host(host)
            .map_err(CardUseError::ReaderOffline)?;
        let pin_sealed = card_jobs::seal_pin(&public_key, &pin).map_err(|e| {
            CardUseError::Internal(format!("cannot seal the PIN to card host {host:?}: {e}"))
        })?;
        drop(pin);
        let work = JobWork::Compute {
            request: request.clone(),
            pin_sealed,
            expected,
            min_pin_tries: policy.min_tries,
        };
        match self.hosts.run(host, &card.reader, work).await {
            Ok(JobOutcome::Computed { response }) => Ok(response),
            Ok(JobOutcome::Failed { error }) => {
                Err(CardUseError::Cap(error.into_cap(&card.reader)))
            }
            Ok(JobOutcome::Identified { .. }) => Err(unexpected_answer(host)),
            Err(e @ HostError::Offline { .. }) => Err(CardUseError::ReaderOffline(e)),
            // The agent had the job: VERIFY may have gone out.
            Err(e @ HostError::Lost { .. }) => {
                Err(CardUseError::Cap(CapError::PinOutcomeUnknown {
                    cause: TransportError::Reader(e.to_string()),
                }))
            }
        }
    }

    /// A card that may have counted a wrong PIN: out of use in memory at
    /// once, then in the store, retried until the write lands (the caller
    /// keeps the reader's turn meanwhile, so nothing else reaches the card).
    async fn hold_out_of_use(&self, card_id: &str, cause: &CapError, blocked: bool) {
        self.refused_cards().insert(card_id.to_owned());
        let reason = format!(
            "{cause}. The card may have counted a wrong PIN, so the stored PIN is not sent again: \
             set the right PIN to enable the card"
        );
        let mut pause = Duration::from_millis(50);
        loop {
            match self
                .store
                .mark_card_pin_refused(card_id, &reason, blocked, Utc::now())
                .await
            {
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(card = %card_id, error = %e,
                        "cannot record that the card may have refused its PIN; holding its reader and retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
        self.refused_cards().remove(card_id);
    }

    fn refused_cards(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.refused.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `card` may be used: active in the store, and not held out of
    /// use in memory.
    fn usable(&self, card: &Card) -> Result<(), CardUseError> {
        if self.refused_cards().contains(&card.id) {
            return Err(CardUseError::Disabled {
                card: card.id.clone(),
                reason: "the card may have refused its PIN (not yet recorded in the store)".into(),
            });
        }
        usable(card)
    }
}

fn usable(card: &Card) -> Result<(), CardUseError> {
    let reason = || card.status_reason.clone().unwrap_or_default();
    match card.status {
        CardStatus::Active => Ok(()),
        CardStatus::Disabled => Err(CardUseError::Disabled {
            card: card.id.clone(),
            reason: reason(),
        }),
        CardStatus::Blocked => Err(CardUseError::Blocked {
            card: card.id.clone(),
            reason: reason(),
        }),
    }
}

/// The queue key of a reader: readers of different hosts may share a name.
fn reader_key(host: Option<&str>, reader: &str) -> String {
    match host {
        None => reader.to_owned(),
        Some(host) => format!("{host}\u{0}{reader}"),
    }
}

fn unexpected_answer(host: &str) -> CardUseError {
    CardUseError::Internal(format!(
        "card host {host:?} answered a job with the answer of another kind of job"
    ))
}

/// A new public id: `prefix_` and 8 random hex digits.
pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 4];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}_{}", hex::encode(bytes))
}
