//! `bankbridge card agent`: a card host. It runs on the machine whose USB
//! readers hold the cards, long-polls `serve` for its readers' card jobs,
//! runs each on the reader (PC/SC), and posts the answer back.
//!
//! What it keeps: the host's key pair in the data directory
//! (`card-host.key`, 0600); the server seals each job's PIN to its public
//! half, so the PIN is in the clear only here, for the card session, and is
//! zeroised when the job ends. Nothing else is stored. A poll is always open
//! while the agent runs (jobs run beside it), which is how the server knows
//! the host is there. Stopped (Ctrl-C, SIGTERM), it takes no new job and
//! lets the running ones finish first: a job cut short counts on the server
//! as a PIN that may have been refused, and disables its card.
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bankbridge_cap::ReaderInfo;
use bankbridge_cap::pcsc::PcscReaders;
use bankbridge_cap::remote::{self, CardJob, HostKey, JobOutcome};
use bankbridge_cap::transport::{
    CardTransport, ChainedReaders, Readers, TransportError, VirtualReaders,
};
use bankbridge_cap::virtual_card::{CardKey, Profile, VirtualCard, VirtualCardConfig};
use serde::Deserialize;

use crate::config::Config;

#[derive(clap::Args, Debug)]
pub struct CardAgentArgs {
    /// The bankbridge server: https, or http to this machine
    /// (e.g. http://127.0.0.1:8080).
    #[arg(long, env = "BANKBRIDGE_SERVER", hide_env_values = true)]
    pub server: String,
    /// A token of scope card-agent (`bankbridge token create --scope
    /// card-agent --host NAME`): it names this card host and may do nothing
    /// but take and answer its jobs.
    #[arg(long, env = "BANKBRIDGE_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Serve only the readers whose name contains this text (repeatable;
    /// default: every reader pcscd sees).
    #[arg(long = "reader", value_name = "TEXT")]
    pub readers: Vec<String>,
    /// A virtual card in an in-process reader of this host ("Virtual card
    /// N"), for trying a card host without a card or pcscd:
    /// `seed=TEXT[,pan=DIGITS][,pin=DIGITS][,profile=cap-be]` (the seed
    /// derives the card's key, as `card virtual --key-seed`). Repeatable.
    #[arg(long = "virtual-card", value_name = "SPEC", value_parser = parse_virtual_card)]
    pub virtual_cards: Vec<VirtualCardSpec>,
    /// Append the virtual cards' APDUs to this file (JSON lines with the
    /// reader, the session and the command, PIN blocks masked).
    #[arg(long, requires = "virtual_cards")]
    pub apdu_log: Option<std::path::PathBuf>,
    /// How long one poll waits for a job on the server, in seconds (1 to 30).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=30))]
    pub poll_seconds: u64,
}

#[derive(Deserialize)]
struct Jobs {
    data: Vec<CardJob>,
}

pub async fn run(config: &Config, args: CardAgentArgs) -> Result<ExitCode> {
    let server =
        bankbridge_core::net::secure_url(&args.server, "--server").map_err(anyhow::Error::msg)?;
    let base = server.as_str().trim_end_matches('/').to_string();
    config.create_home()?;
    let key = Arc::new(HostKey::load_or_create(&config.home)?);
    let virtual_readers = VirtualReaders::new();
    let mut apdu_log = match &args.apdu_log {
        Some(path) => Some(super::card::ApduLog::open(path)?),
        None => None,
    };
    for (n, spec) in args.virtual_cards.iter().enumerate() {
        let card =
            VirtualCard::new(spec.config()).with_context(|| format!("--virtual-card {}", n + 1))?;
        let reader = format!("Virtual card {}", n + 1);
        if let Some(log) = apdu_log.as_mut() {
            log.add(Some(reader.clone()), card.handle());
        }
        virtual_readers.insert(&reader, Box::new(card));
    }
    if let Some(log) = apdu_log {
        tokio::spawn(log.follow(std::future::pending()));
    }
    let readers: Arc<dyn Readers> = Arc::new(ChosenReaders {
        // In-process readers first: pcscd does not know their names.
        inner: ChainedReaders(vec![
            Box::new(virtual_readers),
            Box::new(PcscReaders::new()),
        ]),
        only: args.readers.clone(),
    });
    let http = reqwest::Client::builder()
        // A poll waits up to poll_seconds on the server.
        .timeout(Duration::from_secs(args.poll_seconds + 30))
        .build()
        .context("building the HTTP client")?;
    let agent = Agent {
        http,
        base,
        auth: format!("Bearer {}", args.token),
        key,
        readers,
        turns: Arc::new(Mutex::new(HashMap::new())),
        running: Arc::new(tokio::sync::Semaphore::new(MAX_JOBS)),
    };
    eprintln!(
        "card agent: server {}, host key {}; serving {}",
        agent.base,
        agent.key.public(),
        if args.readers.is_empty() {
            "every reader".to_owned()
        } else {
            format!("readers matching {:?}", args.readers)
        }
    );
    let wait_ms = (args.poll_seconds * 1000).to_string();
    let mut backoff = Duration::from_secs(1);
    let mut announced = false;
    let stop = super::serve::shutdown_signal();
    tokio::pin!(stop);
    loop {
        let listed = {
            let readers = agent.readers.clone();
            tokio::task::spawn_blocking(move || readers.list()).await?
        };
        let list = match listed {
            Ok(list) => list,
            Err(e) => {
                // Still poll: the server then knows the host is up, and its
                // jobs fail with the reader error rather than "offline".
                tracing::warn!(error = %e, "card agent: cannot list the readers");
                Vec::new()
            }
        };
        let poll = agent
            .http
            .post(format!("{}/api/v1/card-agent/jobs", agent.base))
            .query(&[("wait_ms", wait_ms.as_str())])
            .header(reqwest::header::AUTHORIZATION, &agent.auth)
            .json(&serde_json::json!({ "public_key": agent.key.public(), "readers": list }))
            .send();
        let answer = tokio::select! {
            answer = poll => answer,
            _ = &mut stop => break,
        };
        let jobs = match answer {
            Ok(r) if r.status().is_success() => match r.json::<Jobs>().await {
                Ok(j) => Some(j.data),
                Err(e) => {
                    tracing::warn!(error = %e, "card agent: the server's answer is not a job list");
                    None
                }
            },
            Ok(r)
                if r.status() == reqwest::StatusCode::UNAUTHORIZED
                    || r.status() == reqwest::StatusCode::FORBIDDEN =>
            {
                let text = r.text().await.unwrap_or_default();
                bail!(
                    "the server refused the token: {}. A card agent needs a token of scope card-agent \
                     (`bankbridge token create --scope card-agent --host NAME`)",
                    server_message(&text)
                );
            }
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                tracing::warn!(%status, error = %server_message(&text), "card agent: the server refused the poll; retrying");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "card agent: cannot reach the server; retrying");
                None
            }
        };
        let Some(jobs) = jobs else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
            continue;
        };
        if !announced {
            eprintln!(
                "card agent: connected; {} reader(s): {}",
                list.len(),
                list.iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            announced = true;
        }
        backoff = Duration::from_secs(1);
        for job in jobs {
            let agent = agent.clone();
            // Taken before the task starts, so that stopping waits for it.
            let running = agent.running.clone().acquire_owned().await?;
            tokio::spawn(async move {
                agent.run(job).await;
                drop(running);
            });
        }
    }
    // Let the running jobs end (the server waits a few seconds for a host
    // whose poll closed before it gives their cards up).
    eprintln!("card agent: stopping; letting running jobs finish");
    let all = u32::try_from(MAX_JOBS).unwrap_or(u32::MAX);
    if tokio::time::timeout(Duration::from_secs(4), agent.running.acquire_many(all))
        .await
        .is_err()
    {
        eprintln!("card agent: a card job did not finish in time; its card will be disabled");
    }
    Ok(ExitCode::SUCCESS)
}

/// Jobs one agent runs at once (a host rarely has more readers).
const MAX_JOBS: usize = 64;

#[derive(Clone)]
struct Agent {
    http: reqwest::Client,
    base: String,
    auth: String,
    key: Arc<HostKey>,
    readers: Arc<dyn Readers>,
    /// One job per reader at a time here too (the server already sends
    /// them so): two sessions never share a card.
    turns: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// A permit per running job: stopping waits for them all.
    running: Arc<tokio::sync::Semaphore>,
}

impl Agent {
    async fn run(&self, job: CardJob) {
        let turn = self
            .turns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(job.reader.clone())
            .or_default()
            .clone();
        let _turn = turn.lock_owned().await;
        let started = std::time::Instant::now();
        let (readers, key) = (self.readers.clone(), self.key.clone());
        let id = job.id.clone();
        let described = format!("{job:?}");
        // The job (with its sealed PIN) is moved into the blocking task and
        // dropped there when it ends; the opened PIN never leaves run_job.
        let outcome = tokio::task::spawn_blocking(move || remote::run_job(&*readers, &key, &job))
            .await
            .unwrap_or_else(|e| JobOutcome::Failed {
                error: remote::JobError::Other {
                    message: format!("the card agent's job task failed: {e}"),
                },
            });
        let result = match &outcome {
            JobOutcome::Failed { error } => format!("failed: {error:?}"),
            _ => "done".to_owned(),
        };
        tracing::info!(job = %described, ms = started.elapsed().as_millis() as u64, %result, "card agent: job finished");
        let body = serde_json::json!({ "job_id": id, "outcome": outcome });
        // The server waits for this answer: retry a little.
        for attempt in 0..4 {
            match self
                .http
                .post(format!("{}/api/v1/card-agent/results", self.base))
                .header(reqwest::header::AUTHORIZATION, &self.auth)
                .json(&body)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() || r.status() == reqwest::StatusCode::CONFLICT => {
                    return;
                }
                Ok(r) => {
                    tracing::warn!(status = %r.status(), "card agent: the server refused an answer")
                }
                Err(e) => tracing::warn!(error = %e, "card agent: could not send an answer"),
            }
            tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
        }
    }
}

/// What `--virtual-card` asks for.
#[derive(Clone, Debug)]
pub struct VirtualCardSpec {
    seed: String,
    pan: Option<String>,
    pin: String,
    profile: Profile,
}

impl VirtualCardSpec {
    fn config(&self) -> VirtualCardConfig {
        let mut config = VirtualCardConfig::new(self.profile, self.pin.clone());
        config.key = CardKey::derive(&self.seed);
        if let Some(pan) = &self.pan {
            config.pan = pan.clone();
        }
        config
    }
}

fn parse_virtual_card(text: &str) -> Result<VirtualCardSpec, String> {
    let mut spec = VirtualCardSpec {
        seed: String::new(),
        pan: None,
        pin: "1234".into(),
        profile: Profile::CapBe,
    };
    for part in text.split(',') {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: give key=value (seed, pan, pin, profile)"))?;
        match key.trim() {
            "seed" => spec.seed = value.to_owned(),
            "pan" => spec.pan = Some(value.to_owned()),
            "pin" => spec.pin = value.to_owned(),
            "profile" => spec.profile = value.parse().map_err(|e| format!("profile: {e}"))?,
            other => return Err(format!("unknown {other:?} (seed, pan, pin, profile)")),
        }
    }
    if spec.seed.is_empty() {
        return Err("seed=… is required (it derives the card's key)".into());
    }
    Ok(spec)
}

/// The readers this host serves: all, or those whose name contains one of
/// the `--reader` texts.
struct ChosenReaders {
    inner: ChainedReaders,
    only: Vec<String>,
}

impl ChosenReaders {
    fn chosen(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| name.contains(o.as_str()))
    }
}

impl Readers for ChosenReaders {
    fn list(&self) -> Result<Vec<ReaderInfo>, TransportError> {
        let mut list = self.inner.list()?;
        list.retain(|r| self.chosen(&r.name));
        Ok(list)
    }

    fn connect(&self, reader: &str) -> Result<Box<dyn CardTransport>, TransportError> {
        if !self.chosen(reader) {
            return Err(TransportError::ReaderNotFound {
                spec: reader.to_owned(),
                available: Vec::new(),
            });
        }
        self.inner.connect(reader)
    }
}

/// The message of the server's JSON error (`{"code", "message"}`), else the text.
fn server_message(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| text.chars().take(200).collect())
}
