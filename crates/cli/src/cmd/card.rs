//! `bankbridge card readers|m1|m2|virtual`: CAP codes from a bank card in a
//! reader, and a virtual card for readers without one.
use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use bankbridge_cap::emv::{self, CapRequest, CapResponse, PinPolicy};
use bankbridge_cap::pcsc::PcscReaders;
use bankbridge_cap::replay::ReplayCard;
use bankbridge_cap::transport::{Readers, SmartCard, resolve_reader};
use bankbridge_cap::virtual_card::{CardKey, Profile, VirtualCard, VirtualCardConfig};
use bankbridge_cap::vpcd;
use bankbridge_core::Secret;
use bankbridge_server::cards::CardService;

use crate::config::Config;

#[derive(clap::Subcommand, Debug)]
pub enum CardCommand {
    /// List the card readers pcscd sees, and whether a card is in each.
    #[command(after_help = "Example: bankbridge card readers --json")]
    Readers {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// M1: a login code, optionally over the bank's challenge.
    #[command(after_help = "Example: bankbridge card m1 123456 --reader 0 --pin-stdin <<< 1234")]
    M1 {
        /// The challenge the bank shows (digits); none for a plain login code.
        challenge: Option<String>,
        #[command(flatten)]
        card: CardArgs,
    },
    /// M2: a sign code over the numbers the bank asks for, in order.
    #[command(
        after_help = "Example: bankbridge card m2 1000 123456 --reader \"Virtual PCD 00 00\" --json"
    )]
    M2 {
        /// The numbers the bank shows (amount, account digits, …), in its order.
        #[arg(required = true)]
        numbers: Vec<String>,
        #[command(flatten)]
        card: CardArgs,
    },
    /// Run a virtual EMV card in pcscd's virtual reader (vsmartcard's vpcd),
    /// until Ctrl-C.
    #[command(
        after_help = "Example: bankbridge card virtual --profile cap-be --pin 1234 --vpcd 127.0.0.1:35963"
    )]
    Virtual(VirtualArgs),
    /// Serve this machine's readers to a bankbridge server as a card host:
    /// long-poll it for card jobs and run them here, until Ctrl-C.
    #[command(
        after_help = "Example: BANKBRIDGE_TOKEN=bb_… bankbridge card agent --server https://bankbridge.example.org --reader \"Gemalto\""
    )]
    Agent(super::card_agent::CardAgentArgs),
}

#[derive(clap::Args, Debug)]
pub struct CardArgs {
    /// Reader: an index from `card readers`, or a unique part of its name.
    #[arg(long, short)]
    reader: String,
    /// Read the PIN from standard input (one line). Without it, a card
    /// registered in this reader uses its stored PIN, or the PIN is asked for.
    #[arg(long)]
    pin_stdin: bool,
    /// Refuse to send the PIN when the card has fewer tries left than this.
    #[arg(long, default_value_t = 3)]
    min_tries: u8,
    /// Print `{"response": "...", "atc": N}`.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct VirtualArgs {
    /// Card profile: cap-be, bancontact, visa-dpa, cap-t1 or cap-uk (a
    /// CAP-only application with no card number on it).
    #[arg(long, default_value = "cap-be")]
    profile: Profile,
    /// vpcd's address (pcscd's virtual reader slot 0 listens on port 35963).
    #[arg(long, default_value = "127.0.0.1:35963")]
    vpcd: SocketAddr,
    /// The card's PIN.
    #[arg(long, default_value = "1234")]
    pin: String,
    /// Seed of the card's secret key (a simulated bank with the same seed
    /// verifies its codes).
    #[arg(long)]
    key_seed: Option<String>,
    /// The card number (default: the profile's test number).
    #[arg(long)]
    pan: Option<String>,
    /// PIN tries left at start.
    #[arg(long, default_value_t = 3)]
    pin_tries: u8,
    /// Play a recorded exchange instead of simulating (see crates/cap/tests/fixtures).
    #[arg(long, conflicts_with_all = ["profile", "pin", "key_seed", "pan"])]
    replay: Option<std::path::PathBuf>,
    /// Append every APDU the card answers to this file, one JSON line each
    /// (`session`, `command` with PIN blocks masked, `sw`): what a test reads
    /// to see that sessions never interleave.
    #[arg(long, conflicts_with = "replay")]
    apdu_log: Option<std::path::PathBuf>,
    /// Answer each APDU this many milliseconds late, as a slow chip does
    /// (a real card's GENERATE AC takes tens to hundreds of milliseconds).
    #[arg(long, default_value_t = 0)]
    apdu_delay_ms: u64,
}

pub async fn run(config: &Config, command: CardCommand) -> Result<ExitCode> {
    match command {
        CardCommand::Readers { json } => readers(json).await,
        CardCommand::M1 { challenge, card } => {
            compute(config, CapRequest::Login { challenge }, card).await
        }
        CardCommand::M2 { numbers, card } => {
            compute(config, CapRequest::Sign { numbers }, card).await
        }
        CardCommand::Virtual(args) => virtual_card(args).await,
        CardCommand::Agent(args) => super::card_agent::run(config, args).await,
    }
}

async fn readers(json: bool) -> Result<ExitCode> {
    let list = tokio::task::spawn_blocking(|| PcscReaders::new().list()).await??;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        eprintln!("no card reader is connected");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .enumerate()
        .map(|(i, r)| {
            vec![
                i.to_string(),
                r.name.clone(),
                if r.card_present { "card" } else { "empty" }.to_owned(),
                r.atr.clone().unwrap_or_default(),
            ]
        })
        .collect();
    super::print_table(&["#", "READER", "STATE", "ATR"], &rows);
    Ok(ExitCode::SUCCESS)
}

async fn compute(config: &Config, request: CapRequest, args: CardArgs) -> Result<ExitCode> {
    request.validate()?;
    let readers: Arc<dyn Readers> = Arc::new(PcscReaders::new());
    let list = {
        let readers = readers.clone();
        tokio::task::spawn_blocking(move || readers.list()).await??
    };
    let reader = resolve_reader(&list, &args.reader)?;
    let response = if args.pin_stdin {
        run_with_pin(readers, &reader, request, read_pin_stdin()?, args.min_tries).await?
    } else if let Some((service, card)) = registered_card(config, readers.clone(), &reader).await? {
        // The registered card's stored PIN, with its status, identity check
        // and audit, exactly as the API would use it.
        let who = format!(
            "cli:{}",
            std::env::var("USER").unwrap_or_else(|_| "unknown".into())
        );
        service
            .compute(&card.institution_id, &card.id, request, &who)
            .await?
    } else if std::io::stdin().is_terminal() {
        let pin = rpassword::prompt_password(format!("PIN for the card in {reader}: "))
            .context("reading the PIN")?;
        run_with_pin(readers, &reader, request, Secret::new(pin), args.min_tries).await?
    } else {
        bail!(
            "no PIN: pass --pin-stdin, run in a terminal to be asked, or register the card in {reader:?}"
        );
    };
    print_code(&response, args.json)?;
    Ok(ExitCode::SUCCESS)
}

async fn run_with_pin(
    readers: Arc<dyn Readers>,
    reader: &str,
    request: CapRequest,
    pin: Secret<String>,
    min_tries: u8,
) -> Result<CapResponse> {
    let reader = reader.to_owned();
    let response = tokio::task::spawn_blocking(move || {
        let mut session = readers.connect(&reader)?;
        emv::run(
            session.as_mut(),
            &request,
            &pin,
            None,
            PinPolicy {
                min_tries: min_tries.max(1),
            },
        )
    })
    .await??;
    Ok(response)
}

/// The card registered in `reader`, when this data directory has one.
async fn registered_card(
    config: &Config,
    readers: Arc<dyn Readers>,
    reader: &str,
) -> Result<Option<(CardService, bankbridge_store::Card)>> {
    if !config.key_file().exists() && std::env::var_os("BANKBRIDGE_MASTER_KEY").is_none() {
        return Ok(None);
    }
    let (key, store) = config.keyed_store().await?;
    let Some(card) = store.find_card_by_reader(None, reader).await? else {
        return Ok(None);
    };
    let service = CardService::new(store, key, readers, std::time::Duration::from_secs(60));
    Ok(Some((service, card)))
}

fn read_pin_stdin() -> Result<Secret<String>> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the PIN from standard input")?;
    let pin = Secret::new(line.trim().to_owned());
    line.clear();
    Ok(pin)
}

fn print_code(r: &CapResponse, json: bool) -> Result<()> {
    if json {
        println!(
            "{}",
            serde_json::json!({ "response": r.response, "atc": r.atc })
        );
    } else {
        println!("Response: {}", r.response);
        if r.response_padded != r.response {
            println!("Response (8 digits): {}", r.response_padded);
        }
    }
    Ok(())
}

async fn virtual_card(args: VirtualArgs) -> Result<ExitCode> {
    let mut watch = None;
    let (card, description): (Box<dyn SmartCard>, String) = match &args.replay {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let card = ReplayCard::parse(&text)
                .with_context(|| format!("reading the recording {}", path.display()))?;
            (Box::new(card), format!("replay of {}", path.display()))
        }
        None => {
            let mut config = VirtualCardConfig::new(args.profile, args.pin.clone());
            if let Some(seed) = &args.key_seed {
                config.key = CardKey::derive(seed);
            }
            if let Some(pan) = &args.pan {
                config.pan = pan.clone();
            }
            config.pin_tries_left = args.pin_tries;
            let number = if args.profile.has_pan() {
                format!("…{}", &config.pan[config.pan.len().saturating_sub(4)..])
            } else {
                "without a card number".to_owned()
            };
            let card = VirtualCard::new(config).context("building the virtual card")?;
            watch = Some(card.handle());
            (
                Box::new(card),
                format!("virtual {} card {number}", args.profile),
            )
        }
    };
    let log = match (&args.apdu_log, watch) {
        (Some(path), Some(card)) => {
            let mut log = ApduLog::open(path)?;
            log.add(None, card);
            Some(log)
        }
        _ => None,
    };
    let card: Box<dyn SmartCard> = match args.apdu_delay_ms {
        0 => card,
        ms => Box::new(SlowCard {
            inner: card,
            delay: std::time::Duration::from_millis(ms),
        }),
    };
    let mut handle = vpcd::serve(args.vpcd, card);
    eprintln!(
        "{description} inserted into the vpcd reader at {}; Ctrl-C to remove it",
        args.vpcd
    );
    match log {
        Some(log) => log.follow(super::serve::shutdown_signal()).await?,
        None => super::serve::shutdown_signal().await,
    }
    handle.stop();
    eprintln!("card removed");
    Ok(ExitCode::SUCCESS)
}

/// A card that answers each APDU late.
struct SlowCard {
    inner: Box<dyn SmartCard>,
    delay: std::time::Duration,
}

impl SmartCard for SlowCard {
    fn atr(&self) -> Vec<u8> {
        self.inner.atr()
    }

    fn reset(&mut self) {
        self.inner.reset()
    }

    fn process(&mut self, capdu: &[u8]) -> Option<Vec<u8>> {
        std::thread::sleep(self.delay);
        self.inner.process(capdu)
    }
}

/// Virtual cards' APDU logs, appended to a file as they grow: one JSON
/// line per APDU (`reader` when several cards share the file).
pub(super) struct ApduLog {
    file: std::fs::File,
    cards: Vec<(
        Option<String>,
        bankbridge_cap::virtual_card::CardHandle,
        usize,
    )>,
}

impl ApduLog {
    pub(super) fn open(path: &std::path::Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening the APDU log {}", path.display()))?;
        Ok(Self {
            file,
            cards: Vec::new(),
        })
    }

    /// Log `card`'s APDUs, under `reader` when given.
    pub(super) fn add(
        &mut self,
        reader: Option<String>,
        card: bankbridge_cap::virtual_card::CardHandle,
    ) {
        self.cards.push((reader, card, 0));
    }

    pub(super) fn write_new(&mut self) -> Result<()> {
        let mut out = String::new();
        for (reader, card, written) in &mut self.cards {
            let log = card.apdu_log();
            for (session, command, sw) in log.iter().skip(*written) {
                let mut line =
                    serde_json::json!({ "session": session, "command": command, "sw": sw });
                if let Some(reader) = reader {
                    line["reader"] = serde_json::Value::from(reader.as_str());
                }
                out.push_str(&line.to_string());
                out.push('\n');
            }
            *written = log.len();
        }
        if !out.is_empty() {
            std::io::Write::write_all(&mut self.file, out.as_bytes())
                .context("writing the APDU log")?;
        }
        Ok(())
    }

    /// Write what is new every 50 ms until `stop` ends.
    pub(super) async fn follow(
        mut self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<()> {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(50));
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tick.tick() => self.write_new()?,
            }
        }
        self.write_new()
    }
}
