//! Card hosts, without HTTP: readers on other machines, each served by a
//! card agent (`bankbridge card agent`) that long-polls this server for the
//! jobs of its readers and answers them.
//!
//! Rules it keeps:
//! - a host is online while one of its polls is open, or for
//!   [`CardHosts::grace`] after the last one ended (an agent opens its next
//!   poll at once); a job for a host that is not online is refused at once
//!   ([`HostError::Offline`]) and reaches no card;
//! - a job waits in its host's queue until a poll takes it; whoever submits
//!   it watches the host meanwhile: a host that goes away fails its queued
//!   jobs as [`HostError::Offline`] (never delivered: no PIN went out) and
//!   its delivered ones as [`HostError::Lost`] (the PIN may have reached the
//!   card, so the card service takes the card out of use);
//! - a delivered job with no answer within [`CardHosts::deadline`] is lost
//!   the same way;
//! - the per-reader order is the card service's: it sends one job per
//!   reader at a time and waits for its end.
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bankbridge_cap::ReaderInfo;
use bankbridge_cap::remote::{CardJob, JobOutcome, JobWork};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{Notify, oneshot};

/// Why a card host did not answer a job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error(
        "card host {host:?} is offline (no card agent has polled for jobs lately); start `bankbridge card agent` on it"
    )]
    Offline { host: String },
    #[error("card host {host:?} went away during the job ({why})")]
    Lost { host: String, why: String },
}

/// What an admin sees of a host.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HostView {
    pub name: String,
    pub online: bool,
    /// When its agent last polled (or ended a poll).
    pub last_seen: DateTime<Utc>,
    /// The readers it reported at its last poll.
    pub readers: Vec<HostReader>,
    /// Jobs waiting for the agent, and jobs it has and not yet answered.
    pub queued: usize,
    pub in_progress: usize,
}

/// A reader of a host, as its agent reported it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HostReader {
    pub name: String,
    pub card_present: bool,
}

type Reply = oneshot::Sender<Result<JobOutcome, HostError>>;

struct Host {
    public_key: String,
    readers: Vec<ReaderInfo>,
    open_polls: usize,
    last_seen: Instant,
    last_seen_at: DateTime<Utc>,
    queue: VecDeque<(CardJob, Reply)>,
    in_flight: HashMap<String, (Instant, Reply)>,
    notify: Arc<Notify>,
}

impl Host {
    fn online(&self, grace: Duration, now: Instant) -> bool {
        self.open_polls > 0 || now.saturating_duration_since(self.last_seen) <= grace
    }
}

/// The card hosts a server knows, shared by its requests. Cheap to clone.
#[derive(Clone)]
pub struct CardHosts(Arc<Inner>);

struct Inner {
    hosts: Mutex<HashMap<String, Host>>,
    grace: Duration,
    deadline: Duration,
}

/// How often a submitter looks whether its host is still there.
const WATCH_EVERY: Duration = Duration::from_millis(200);

impl Default for CardHosts {
    fn default() -> Self {
        Self::new(Duration::from_secs(5), Duration::from_secs(120))
    }
}

impl CardHosts {
    /// `grace`: how long a host stays online without an open poll;
    /// `deadline`: how long a delivered job may go unanswered.
    pub fn new(grace: Duration, deadline: Duration) -> Self {
        Self(Arc::new(Inner {
            hosts: Mutex::new(HashMap::new()),
            grace,
            deadline,
        }))
    }

    pub fn grace(&self) -> Duration {
        self.0.grace
    }

    pub fn deadline(&self) -> Duration {
        self.0.deadline
    }

    fn hosts(&self) -> std::sync::MutexGuard<'_, HashMap<String, Host>> {
        self.0.hosts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The readers `host` reported, and its public key, if it is online.
    pub fn online_host(&self, host: &str) -> Result<(Vec<ReaderInfo>, String), HostError> {
        let hosts = self.hosts();
        match hosts.get(host) {
            Some(h) if h.online(self.0.grace, Instant::now()) => {
                Ok((h.readers.clone(), h.public_key.clone()))
            }
            _ => Err(HostError::Offline {
                host: host.to_owned(),
            }),
        }
    }

    /// Every host seen since the server started, by name.
    pub fn list(&self) -> Vec<HostView> {
        let now = Instant::now();
        let hosts = self.hosts();
        let mut list: Vec<HostView> = hosts
            .iter()
            .map(|(name, h)| HostView {
                name: name.clone(),
                online: h.online(self.0.grace, now),
                last_seen: h.last_seen_at,
                readers: h
                    .readers
                    .iter()
                    .map(|r| HostReader {
                        name: r.name.clone(),
                        card_present: r.card_present,
                    })
                    .collect(),
                queued: h.queue.len(),
                in_progress: h.in_flight.len(),
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// Run `work` on `reader` of `host` and wait for the answer.
    pub async fn run(
        &self,
        host: &str,
        reader: &str,
        work: JobWork,
    ) -> Result<JobOutcome, HostError> {
        let id = crate::cards::new_id("job");
        let (reply, mut answer) = oneshot::channel();
        {
            let mut hosts = self.hosts();
            let h = match hosts.get_mut(host) {
                Some(h) if h.online(self.0.grace, Instant::now()) => h,
                _ => {
                    return Err(HostError::Offline {
                        host: host.to_owned(),
                    });
                }
            };
            let job = CardJob {
                id: id.clone(),
                reader: reader.to_owned(),
                work,
            };
            h.queue.push_back((job, reply));
            h.notify.notify_one();
        }
        loop {
            match tokio::time::timeout(WATCH_EVERY, &mut answer).await {
                Ok(Ok(result)) => return result,
                // The sender is dropped only with its host entry: gone.
                Ok(Err(_)) => {
                    return Err(HostError::Lost {
                        host: host.to_owned(),
                        why: "the server forgot the host".into(),
                    });
                }
                Err(_) => {
                    if let Some(e) = self.watch(host, &id) {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Whether job `id` of `host` must be given up: the host went away, or
    /// the job was delivered and outlived the deadline. Takes it out of
    /// the host's books when so.
    fn watch(&self, host: &str, id: &str) -> Option<HostError> {
        let now = Instant::now();
        let mut hosts = self.hosts();
        let Some(h) = hosts.get_mut(host) else {
            return Some(HostError::Offline {
                host: host.to_owned(),
            });
        };
        let online = h.online(self.0.grace, now);
        if let Some(at) = h.queue.iter().position(|(job, _)| job.id == id) {
            if online {
                return None;
            }
            h.queue.remove(at);
            return Some(HostError::Offline {
                host: host.to_owned(),
            });
        }
        let since = h.in_flight.get(id).map(|(since, _)| *since)?;
        let why = if !online {
            "its card agent stopped polling".to_owned()
        } else if now.saturating_duration_since(since) > self.0.deadline {
            format!("no answer within {:?}", self.0.deadline)
        } else {
            return None;
        };
        h.in_flight.remove(id);
        Some(HostError::Lost {
            host: host.to_owned(),
            why,
        })
    }

    /// A poll of `host`'s agent: records its key and readers, then hands
    /// out the queued jobs, waiting up to `wait` for one.
    pub async fn poll(
        &self,
        host: &str,
        public_key: String,
        readers: Vec<ReaderInfo>,
        wait: Duration,
    ) -> Vec<CardJob> {
        let notify = {
            let mut hosts = self.hosts();
            let now = Instant::now();
            let h = hosts.entry(host.to_owned()).or_insert_with(|| Host {
                public_key: String::new(),
                readers: Vec::new(),
                open_polls: 0,
                last_seen: now,
                last_seen_at: Utc::now(),
                queue: VecDeque::new(),
                in_flight: HashMap::new(),
                notify: Arc::new(Notify::new()),
            });
            h.public_key = public_key;
            h.readers = readers;
            h.open_polls += 1;
            h.last_seen = now;
            h.last_seen_at = Utc::now();
            h.notify.clone()
        };
        // Counts the poll open until it ends, however it ends (a client
        // that hangs up drops this future).
        let _open = OpenPoll {
            hosts: self.clone(),
            host: host.to_owned(),
        };
        let until = tokio::time::Instant::now() + wait;
        loop {
            let jobs = self.take(host);
            if !jobs.is_empty() {
                return jobs;
            }
            if tokio::time::timeout_at(until, notify.notified())
                .await
                .is_err()
            {
                return Vec::new();
            }
        }
    }

    fn take(&self, host: &str) -> Vec<CardJob> {
        let mut hosts = self.hosts();
        let Some(h) = hosts.get_mut(host) else {
            return Vec::new();
        };
        let now = Instant::now();
        let mut jobs = Vec::with_capacity(h.queue.len());
        while let Some((job, reply)) = h.queue.pop_front() {
            h.in_flight.insert(job.id.clone(), (now, reply));
            jobs.push(job);
        }
        jobs
    }

    /// The host that took job `id`, while the job waits for its answer.
    pub fn host_of_job(&self, id: &str) -> Option<String> {
        self.hosts()
            .iter()
            .find(|(_, h)| h.in_flight.contains_key(id))
            .map(|(name, _)| name.clone())
    }

    /// `host`'s answer to job `id`; false when no such job waits for one
    /// (answered already, given up, or another host's).
    pub fn answer(&self, host: &str, id: &str, outcome: JobOutcome) -> bool {
        let reply = {
            let mut hosts = self.hosts();
            let Some(h) = hosts.get_mut(host) else {
                return false;
            };
            h.last_seen = Instant::now();
            h.last_seen_at = Utc::now();
            match h.in_flight.remove(id) {
                Some((_, reply)) => reply,
                None => return false,
            }
        };
        reply.send(Ok(outcome)).is_ok()
    }
}

struct OpenPoll {
    hosts: CardHosts,
    host: String,
}

impl Drop for OpenPoll {
    fn drop(&mut self) {
        let mut hosts = self.hosts.hosts();
        if let Some(h) = hosts.get_mut(&self.host) {
            h.open_polls = h.open_polls.saturating_sub(1);
            h.last_seen = Instant::now();
            h.last_seen_at = Utc::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bankbridge_cap::remote::JobError;

    fn reader(name: &str) -> ReaderInfo {
        ReaderInfo {
            name: name.into(),
            card_present: true,
            atr: None,
        }
    }

    fn failed() -> JobOutcome {
        JobOutcome::Failed {
            error: JobError::NoCard,
        }
    }

    #[tokio::test]
    async fn a_job_goes_to_the_polling_host_and_its_answer_comes_back() {
        let hosts = CardHosts::new(Duration::from_millis(300), Duration::from_secs(5));
        assert!(matches!(
            hosts.run("pi", "R0", JobWork::Identify).await,
            Err(HostError::Offline { .. })
        ));
        // The agent's first poll makes the host known and online.
        assert!(
            hosts
                .poll("pi", "key".into(), vec![reader("R0")], Duration::ZERO)
                .await
                .is_empty()
        );
        let agent = {
            let hosts = hosts.clone();
            tokio::spawn(async move {
                let jobs = hosts
                    .poll(
                        "pi",
                        "key".into(),
                        vec![reader("R0")],
                        Duration::from_secs(5),
                    )
                    .await;
                assert_eq!(jobs.len(), 1);
                assert_eq!(jobs[0].reader, "R0");
                assert!(hosts.answer("pi", &jobs[0].id, failed()));
                assert!(!hosts.answer("pi", &jobs[0].id, failed()), "answered once");
            })
        };
        let outcome = hosts.run("pi", "R0", JobWork::Identify).await.unwrap();
        assert!(matches!(outcome, JobOutcome::Failed { .. }));
        agent.await.unwrap();
        let view = hosts.list();
        assert_eq!(view[0].name, "pi");
        assert!(view[0].online);
        assert_eq!(view[0].readers[0].name, "R0");
    }

    #[tokio::test]
    async fn a_host_that_stops_polling_loses_its_delivered_job_and_goes_offline() {
        let hosts = CardHosts::new(Duration::from_millis(300), Duration::from_secs(60));
        let agent = {
            let hosts = hosts.clone();
            tokio::spawn(async move {
                // Takes the job, then "dies": no answer, no further poll.
                hosts
                    .poll(
                        "pi",
                        "key".into(),
                        vec![reader("R0")],
                        Duration::from_secs(5),
                    )
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        let result = hosts.run("pi", "R0", JobWork::Identify).await;
        assert_eq!(agent.await.unwrap().len(), 1);
        assert!(matches!(result, Err(HostError::Lost { .. })), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(matches!(
            hosts.run("pi", "R0", JobWork::Identify).await,
            Err(HostError::Offline { .. })
        ));
        assert!(!hosts.list()[0].online);
    }

    #[tokio::test]
    async fn a_queued_job_of_a_host_that_went_away_never_reaches_it() {
        let hosts = CardHosts::new(Duration::from_millis(200), Duration::from_secs(60));
        hosts
            .poll("pi", "key".into(), vec![reader("R0")], Duration::ZERO)
            .await;
        let result = hosts.run("pi", "R0", JobWork::Identify).await;
        assert!(
            matches!(result, Err(HostError::Offline { .. })),
            "{result:?}"
        );
        assert_eq!(hosts.list()[0].queued, 0);
        // A late poll finds nothing to do.
        assert!(
            hosts
                .poll("pi", "key".into(), vec![reader("R0")], Duration::ZERO)
                .await
                .is_empty()
        );
    }
}
