//! `bankbridge bankid …`: a BankID relying party on the command line (auth,
//! sign, phone orders, collect, cancel, with the animated QR drawn in the
//! terminal), and the simulated BankID user of the sandbox.
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bankbridge_bankid::client::{BankIdClient, Environment};
use bankbridge_bankid::driver::{self, DriveOptions, OrderEvent, Outcome, StartedOrder};
use bankbridge_bankid::types::{
    AuthRequest, CallInitiator, PersonalNumber, PhoneAuthRequest, PhoneSignRequest, SignRequest,
};
use bankbridge_bankid::{messages, qr};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Where the RP API is and who we are to it.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Connection {
    /// Use the simulated BankID of a running `bankbridge sandbox` (its base
    /// URL, e.g. http://127.0.0.1:9000): the RP API address and certificates
    /// are read from its `/_sandbox/bankid/info`.
    #[arg(long, env = "BANKBRIDGE_SANDBOX_URL", hide_env_values = true)]
    pub(crate) sandbox: Option<String>,
    /// RP API base URL (ends with /rp/v6.0/); or --test / --production.
    #[arg(long, env = "BANKBRIDGE_BANKID_URL", hide_env_values = true, conflicts_with_all = ["test", "production"])]
    pub(crate) url: Option<url::Url>,
    /// BankID's test service (appapi2.test.bankid.com).
    #[arg(long, conflicts_with = "production")]
    pub(crate) test: bool,
    /// BankID's production service (appapi2.bankid.com).
    #[arg(long)]
    pub(crate) production: bool,
    /// RP certificate (PEM, with its chain).
    #[arg(
        long,
        env = "BANKBRIDGE_BANKID_CERT",
        hide_env_values = true,
        requires = "key"
    )]
    pub(crate) cert: Option<PathBuf>,
    /// RP private key (PEM).
    #[arg(long, env = "BANKBRIDGE_BANKID_KEY", hide_env_values = true)]
    pub(crate) key: Option<PathBuf>,
    /// RP certificate and key as PKCS#12; its password from
    /// BANKBRIDGE_BANKID_P12_PASSWORD.
    #[arg(
        long,
        env = "BANKBRIDGE_BANKID_P12",
        hide_env_values = true,
        conflicts_with = "cert"
    )]
    pub(crate) p12: Option<PathBuf>,
    /// The server CA to pin (PEM).
    #[arg(long, env = "BANKBRIDGE_BANKID_CA", hide_env_values = true)]
    pub(crate) ca: Option<PathBuf>,
}

/// Settings of the simulated BankID, as its control API reports them.
struct SandboxInfo {
    base_url: String,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

async fn sandbox_info(sandbox: &str) -> Result<SandboxInfo> {
    let url = format!("{}/_sandbox/bankid/info", sandbox.trim_end_matches('/'));
    let info: Value = reqwest::get(&url)
        .await
        .with_context(|| format!("asking the sandbox at {url}"))?
        .error_for_status()
        .with_context(|| format!("{url}: is `bankbridge sandbox` running with BankID?"))?
        .json()
        .await?;
    let field = |name: &str| -> Result<String> {
        info.pointer(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .with_context(|| format!("{url} has no {name}: {info}"))
    };
    Ok(SandboxInfo {
        base_url: field("/baseUrl")?,
        ca: field("/caCertPath")?.into(),
        cert: field("/rpCertPath")?.into(),
        key: field("/rpKeyPath")?.into(),
    })
}

fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
}

/// A client of the BankID RP API at `base_url`, with the RP certificate and
/// key and the pinned server CA read from PEM files.
pub(crate) fn client_from_pem_files(
    base_url: &str,
    cert: &std::path::Path,
    key: &std::path::Path,
    ca: &std::path::Path,
) -> Result<BankIdClient> {
    Ok(BankIdClient::builder()
        .environment(Environment::Custom(base_url.parse()?))
        .identity_pem(read(cert, "RP certificate")?, read(key, "RP key")?)
        .server_ca_pem(read(ca, "server CA")?)
        .build()?)
}

/// A client of the simulated BankID of the sandbox at `sandbox` (its root URL).
pub async fn sandbox_client(sandbox: &str) -> Result<BankIdClient> {
    let info = sandbox_info(sandbox).await?;
    client_from_pem_files(&info.base_url, &info.cert, &info.key, &info.ca)
}

impl Connection {
    /// Whether any way to reach BankID was given.
    pub(crate) fn is_set(&self) -> bool {
        self.sandbox.is_some() || self.url.is_some() || self.test || self.production
    }

    pub(crate) async fn client(&self) -> Result<BankIdClient> {
        let mut builder = BankIdClient::builder();
        let (mut cert, mut key, mut ca) = (self.cert.clone(), self.key.clone(), self.ca.clone());
        if let Some(sandbox) = &self.sandbox {
            let info = sandbox_info(sandbox).await?;
            builder = builder.environment(Environment::Custom(info.base_url.parse()?));
            cert = cert.or(Some(info.cert));
            key = key.or(Some(info.key));
            ca = ca.or(Some(info.ca));
        } else if let Some(url) = &self.url {
            builder = builder.environment(Environment::Custom(url.clone()));
        } else if self.production {
            builder = builder.environment(Environment::Production);
        } else if self.test {
            builder = builder.environment(Environment::Test);
        } else {
            bail!("say which BankID to use: --sandbox URL, --url URL, --test or --production");
        }
        builder = match (&cert, &key, &self.p12) {
            (Some(cert), Some(key), None) => {
                builder.identity_pem(read(cert, "RP certificate")?, read(key, "RP key")?)
            }
            (None, None, Some(p12)) => {
                let password = std::env::var("BANKBRIDGE_BANKID_P12_PASSWORD").unwrap_or_default();
                builder.identity_pkcs12(read(p12, "PKCS#12 file")?, &password)
            }
            _ => bail!("give the RP certificate: --cert and --key (PEM), or --p12"),
        };
        let ca = ca.context("give the BankID server CA to pin: --ca FILE (PEM)")?;
        builder = builder.server_ca_pem(read(&ca, "server CA")?);
        Ok(builder.build()?)
    }
}

#[derive(clap::Args, Debug)]
pub struct OrderArgs {
    #[command(flatten)]
    conn: Connection,
    /// The end user's IP address as your service sees it.
    #[arg(long, default_value = "127.0.0.1")]
    end_user_ip: String,
    /// Only this person may complete the order (12 digits, YYYYMMDDNNNN).
    #[arg(long)]
    personal_number: Option<String>,
    /// Give up (and cancel the order) after this many seconds.
    #[arg(long)]
    deadline: Option<u64>,
    /// Seconds between collects (at least 1).
    #[arg(long, default_value_t = 2)]
    poll: u64,
    /// Print only the QR data lines, not the drawn QR code.
    #[arg(long)]
    no_qr: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum BankIdCommand {
    /// Start an authentication order and follow it to the end. What the user
    /// should do is said in words (Swedish when LANG=sv_…), with BankID's code.
    #[command(after_help = "Example: bankbridge bankid auth --sandbox http://127.0.0.1:9000")]
    Auth(OrderArgs),
    /// Start a signing order over TEXT and follow it to the end.
    #[command(
        after_help = "Example: bankbridge bankid sign --text 'Pay 100 SEK to Alice' --sandbox http://127.0.0.1:9000"
    )]
    Sign {
        #[command(flatten)]
        order: OrderArgs,
        /// What the user sees and signs.
        #[arg(long)]
        text: String,
    },
    /// Authenticate someone you are on the phone with.
    #[command(
        after_help = "Example: bankbridge bankid phone-auth --personal-number 199001011239 --call-initiator user --sandbox http://127.0.0.1:9000"
    )]
    PhoneAuth(PhoneArgs),
    /// Have someone you are on the phone with sign TEXT.
    #[command(
        after_help = "Example: bankbridge bankid phone-sign --personal-number 199001011239 --call-initiator RP --text 'I agree' --sandbox http://127.0.0.1:9000"
    )]
    PhoneSign {
        #[command(flatten)]
        phone: PhoneArgs,
        /// What the user sees and signs.
        #[arg(long)]
        text: String,
    },
    /// Collect an order once and print the answer.
    #[command(
        after_help = "Example: bankbridge bankid collect 131daac9-16c6-4618-beb0-365768f37288 --sandbox http://127.0.0.1:9000"
    )]
    Collect {
        /// The order's orderRef, as its start printed it.
        order_ref: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Cancel an order.
    #[command(
        after_help = "Example: bankbridge bankid cancel 131daac9-16c6-4618-beb0-365768f37288 --sandbox http://127.0.0.1:9000"
    )]
    Cancel {
        /// The order's orderRef, as its start printed it.
        order_ref: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Act as the user of the sandbox's simulated BankID app.
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(clap::Args, Debug)]
pub struct PhoneArgs {
    #[command(flatten)]
    conn: Connection,
    /// The person on the phone (12 digits, YYYYMMDDNNNN).
    #[arg(long)]
    personal_number: String,
    /// Who called: `user` (they called you) or `RP` (you called them).
    #[arg(long)]
    call_initiator: String,
    /// Give up (and cancel the order) after this many seconds.
    #[arg(long)]
    deadline: Option<u64>,
    /// Seconds between collects (at least 1).
    #[arg(long, default_value_t = 2)]
    poll: u64,
}

#[derive(clap::Subcommand, Debug)]
pub enum UserCommand {
    /// Scan a QR code's data, as the app's camera would.
    #[command(
        after_help = "Example: bankbridge bankid user scan 'bankid.67df…' --sandbox http://127.0.0.1:9000"
    )]
    Scan {
        /// The QR code's text (`bankid.…`), as `bankid auth` prints it.
        qr_data: String,
        /// The running sandbox's base URL.
        #[arg(long, env = "BANKBRIDGE_SANDBOX_URL", hide_env_values = true)]
        sandbox: String,
    },
    /// Approve an order as this person.
    #[command(
        after_help = "Example: bankbridge bankid user approve ORDER_REF --personal-number 199001011239 --sandbox http://127.0.0.1:9000"
    )]
    Approve {
        /// The order's orderRef.
        order_ref: String,
        /// Who approves (12 digits, YYYYMMDDNNNN).
        #[arg(long)]
        personal_number: String,
        /// The running sandbox's base URL.
        #[arg(long, env = "BANKBRIDGE_SANDBOX_URL", hide_env_values = true)]
        sandbox: String,
    },
    /// Decline an order (the user presses Cancel).
    #[command(
        after_help = "Example: bankbridge bankid user decline ORDER_REF --sandbox http://127.0.0.1:9000"
    )]
    Decline {
        /// The order's orderRef.
        order_ref: String,
        /// The running sandbox's base URL.
        #[arg(long, env = "BANKBRIDGE_SANDBOX_URL", hide_env_values = true)]
        sandbox: String,
    },
}

pub async fn run(command: BankIdCommand) -> Result<ExitCode> {
    match command {
        BankIdCommand::Auth(args) => {
            let client = args.conn.client().await?;
            let mut request = AuthRequest::new(&args.end_user_ip);
            if let Some(pn) = &args.personal_number {
                request = request.with_personal_number(&personal_number(pn)?);
            }
            let order = client.auth(&request).await?;
            eprintln!("order {} started", order.order_ref);
            follow(&client, order.into(), args.deadline, args.poll, !args.no_qr).await
        }
        BankIdCommand::Sign { order: args, text } => {
            let client = args.conn.client().await?;
            let mut request = SignRequest::new(&args.end_user_ip, &text);
            if let Some(pn) = &args.personal_number {
                request = request.with_personal_number(&personal_number(pn)?);
            }
            let order = client.sign(&request).await?;
            eprintln!("order {} started", order.order_ref);
            follow(&client, order.into(), args.deadline, args.poll, !args.no_qr).await
        }
        BankIdCommand::PhoneAuth(args) => {
            let client = args.conn.client().await?;
            let request = PhoneAuthRequest::new(
                &personal_number(&args.personal_number)?,
                call_initiator(&args.call_initiator)?,
            );
            let order = client.phone_auth(&request).await?;
            eprintln!("order {} started", order.order_ref);
            follow(&client, order.into(), args.deadline, args.poll, false).await
        }
        BankIdCommand::PhoneSign { phone: args, text } => {
            let client = args.conn.client().await?;
            let request = PhoneSignRequest::new(
                &personal_number(&args.personal_number)?,
                call_initiator(&args.call_initiator)?,
                &text,
            );
            let order = client.phone_sign(&request).await?;
            eprintln!("order {} started", order.order_ref);
            follow(&client, order.into(), args.deadline, args.poll, false).await
        }
        BankIdCommand::Collect { order_ref, conn } => {
            let answer = conn.client().await?.collect(&order_ref).await?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
            Ok(ExitCode::SUCCESS)
        }
        BankIdCommand::Cancel { order_ref, conn } => {
            conn.client().await?.cancel(&order_ref).await?;
            eprintln!("order {order_ref} cancelled");
            Ok(ExitCode::SUCCESS)
        }
        BankIdCommand::User(user) => simulated_user(user).await,
    }
}

fn personal_number(s: &str) -> Result<PersonalNumber> {
    PersonalNumber::parse(s).map_err(|e| anyhow::anyhow!("--personal-number {s:?}: {e}"))
}

fn call_initiator(s: &str) -> Result<CallInitiator> {
    match s {
        "user" => Ok(CallInitiator::User),
        "RP" | "rp" => Ok(CallInitiator::Rp),
        other => bail!("--call-initiator must be `user` or `RP`, not {other:?}"),
    }
}

/// Drive the order to its end: the QR drawn (and redrawn each second) on a
/// terminal, hints on stderr, completionData as JSON on stdout.
async fn follow(
    client: &BankIdClient,
    order: StartedOrder,
    deadline: Option<u64>,
    poll: u64,
    draw: bool,
) -> Result<ExitCode> {
    let cancel = CancellationToken::new();
    let ctrl_c = cancel.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        ctrl_c.cancel();
    });
    let mut options = DriveOptions::default()
        .with_poll_interval(Duration::from_secs(poll.max(1)))
        .with_cancel(cancel);
    if let Some(d) = deadline {
        options = options.with_deadline(Duration::from_secs(d));
    }
    let terminal = draw && std::io::stderr().is_terminal();
    // The guidelines' message for each state, in the user's language.
    let lang = messages::Lang::from_env();
    let mut drawn_lines = 0usize;
    let outcome = driver::drive(client, order, options, |event| match event {
        OrderEvent::Qr(data) if terminal => {
            let picture = qr::render_terminal(&data);
            let mut err = std::io::stderr().lock();
            // Redraw in place: up over the previous picture, then clear below.
            if drawn_lines > 0 {
                let _ = write!(err, "\x1b[{drawn_lines}A\x1b[J");
            }
            let _ = writeln!(err, "{picture}{data}");
            drawn_lines = picture.lines().count() + 1;
        }
        OrderEvent::Qr(data) => eprintln!("qr: {data}"),
        OrderEvent::Hint(hint) => {
            drawn_lines = 0;
            eprintln!("{} ({hint})", messages::for_hint(&hint).text(lang));
        }
        OrderEvent::Error(e) => eprintln!("warning: {e}"),
        OrderEvent::Complete(_) | OrderEvent::Failed(_) => {}
        OrderEvent::Cancelled | OrderEvent::DeadlineExceeded => {}
    })
    .await?;
    match outcome {
        Outcome::Complete(data) => {
            println!("{}", serde_json::to_string_pretty(&data)?);
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Failed(hint) => {
            eprintln!(
                "the order failed: {} ({hint})",
                messages::for_failure(&hint).text(lang)
            );
            Ok(ExitCode::FAILURE)
        }
        Outcome::Cancelled => {
            eprintln!("cancelled: {}", messages::for_cancelled().text(lang));
            Ok(ExitCode::FAILURE)
        }
        Outcome::DeadlineExceeded => {
            eprintln!("deadline passed; the order was cancelled");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn simulated_user(command: UserCommand) -> Result<ExitCode> {
    let (sandbox, path, body) = match &command {
        UserCommand::Scan { qr_data, sandbox } => {
            (sandbox, "scan".to_owned(), json!({"qrData": qr_data}))
        }
        UserCommand::Approve {
            order_ref,
            personal_number,
            sandbox,
        } => (
            sandbox,
            format!("orders/{order_ref}/approve"),
            json!({"personalNumber": personal_number}),
        ),
        UserCommand::Decline { order_ref, sandbox } => {
            (sandbox, format!("orders/{order_ref}/decline"), json!({}))
        }
    };
    let url = format!("{}/_sandbox/bankid/{path}", sandbox.trim_end_matches('/'));
    let res = reqwest::Client::new()
        .post(&url)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("reaching the sandbox at {url}"))?;
    let status = res.status();
    let text = res.text().await?;
    if !status.is_success() {
        bail!("the simulated app refused ({status}): {text}");
    }
    if !text.trim().is_empty() {
        println!("{text}");
    }
    Ok(ExitCode::SUCCESS)
}
