use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use bankbridge_core::{ConnectionSettings, Credentials, Secret};
use chrono::NaiveDate;
use clap::Subcommand;

use crate::config::Config;

#[derive(Subcommand, Debug)]
pub enum ConnectionCommand {
    /// Add a bank connection (the password or PIN is encrypted at rest).
    #[command(
        after_help = "Examples:\n  echo \"$PASS\" | bankbridge connection add --name my-fibank --connector fibank \\\n    --base-url https://my.fibank.bg --username jdoe --password-stdin --interval 12h\n  echo \"$PIN\" | bankbridge connection add --name my-bank --connector keypad \\\n    --base-url http://127.0.0.1:9000/keypad --username 12345678901 --password-stdin\n  bankbridge connection add --name my-revolut --connector gocardless --username \"$SECRET_ID\" \\\n    --country LV --institution Revolut --interval 6h   # asks for the secret key, then opens the bank's page\n\nkeypad: the username is the customer number, the password the 6-digit PIN.\ngocardless: the username is the secret id of a GoCardless Bank Account Data user secret, the password its\nsecret key; --country and --institution pick the bank, and the bank is linked at once in a terminal\n(or with --link): its page opens, the browser comes back to a loopback port, and the first sync runs.\nenablebanking: the username is the application id, --private-key the application's key (PEM); the rest\nas for gocardless (whitelist http://127.0.0.1:PORT/callback for the application and pass --redirect-port PORT).\nklarna: the password is the API token of Klarna's Open Banking portal, the username your login at the bank;\n--country and --institution (the bank's name or code) pick the bank; Klarna's form asks for your bank password\nwhen the bank is linked (typed then, never kept)."
    )]
    Add(Box<AddArgs>),
    /// List connections (never shows credentials).
    List {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Change a connection's password or PIN, base URL, username or sync
    /// settings. New credentials let a connection whose login the bank
    /// refused sync again.
    #[command(
        after_help = "Examples:\n  echo \"$NEW_PIN\" | bankbridge connection update my-bank --password-stdin\n  bankbridge connection update my-fibank --interval 6h --overlap-days 10\n  bankbridge connection update my-fibank --no-interval\n\nA new --base-url or --username needs the password too (--password-stdin, or a prompt)."
    )]
    Update(UpdateArgs),
    /// Remove a connection with all its accounts, transactions and documents.
    #[command(
        after_help = "Examples:\n  bankbridge connection remove my-fibank        # asks first\n  bankbridge connection remove my-fibank --yes  # scripts\n\nIt says how many rows go before it asks; without a terminal it needs --yes."
    )]
    Remove {
        /// Name or id.
        connection: String,
        /// Do not ask: remove at once (for scripts).
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

#[derive(clap::Args, Debug)]
pub struct AddArgs {
    /// A name to refer to it by (letters, digits, `-`, `_`, `.`).
    #[arg(long)]
    pub name: String,
    /// Which bank API: fibank, keypad, xs2a, gocardless, enablebanking, klarna.
    #[arg(long)]
    pub connector: String,
    /// The bank's base URL (e.g. https://my.fibank.bg, or a sandbox URL;
    /// for a sandbox bank given with --bank, the sandbox's root is enough,
    /// and none means `bankbridge sandbox`'s default http://127.0.0.1:9000).
    /// For gocardless, enablebanking and klarna the default is the service's own address.
    #[arg(long)]
    pub base_url: Option<String>,
    /// Your login at the bank (for keypad: the customer number; for xs2a:
    /// the PSU-ID, `-` for a bank that needs none; for gocardless: the
    /// user secret's secret id; for enablebanking: the application id; for
    /// klarna: the login at the bank that Klarna's form asks for).
    #[arg(long, aliases = ["secret-id", "application-id"], default_value = "-")]
    pub username: String,
    /// Read the password from standard input (first line) instead of a prompt.
    #[arg(long)]
    pub password_stdin: bool,
    /// Days per request (capped by the bank's own limit; default 30, and
    /// 366 for xs2a, whose pages follow `_links.next`).
    #[arg(long)]
    pub window_days: Option<u32>,
    /// Days each incremental sync re-reads before the last synced day.
    #[arg(long, default_value_t = 7)]
    pub overlap_days: u32,
    /// Oldest day to fetch (YYYY-MM-DD); default: as far back as the bank has data.
    #[arg(long)]
    pub since: Option<NaiveDate>,
    /// Sync automatically in `serve` this often: 90s, 30m, 12h, 1d.
    #[arg(long, value_parser = parse_interval)]
    pub interval: Option<u64>,
    /// Store the connection without logging in to the bank first.
    #[arg(long)]
    pub no_check: bool,
    /// Add it even if another connection logs in with the same URL and username.
    #[arg(long)]
    pub allow_duplicate: bool,
    /// xs2a: a bank bankbridge knows (`sandbox-be`, `sandbox-se`,
    /// `sandbox-redirect`): its SCA approach, PSU-ID rule and time zone.
    #[arg(long)]
    pub bank: Option<String>,
    /// xs2a: the SCA approach to ask for: embedded, decoupled or redirect.
    #[arg(long)]
    pub sca_approach: Option<String>,
    /// xs2a: more settings, KEY=VALUE (psu_id=true|false, timezone,
    /// history_days, frequency_per_day, consent_days, psu_ip_address,
    /// redirect_uri, server_ca=FILE). Repeatable.
    #[arg(long = "option", value_name = "KEY=VALUE")]
    pub options: Vec<String>,
    /// The registered bank card (its id, see the dashboard's Cards page or
    /// `GET /api/v1/institutions/{id}/cards`) that answers this connection's
    /// card-reader challenges, also in unattended syncs.
    #[arg(long)]
    pub card: Option<String>,
    /// enablebanking: the application's private key (a PEM file); it signs
    /// the JWT of every call and is kept encrypted like a password.
    #[arg(long)]
    pub private_key: Option<std::path::PathBuf>,
    /// gocardless, enablebanking, klarna: the bank's country (two letters, e.g. LV, SE, DE).
    #[arg(long)]
    pub country: Option<String>,
    /// gocardless, enablebanking: the bank, by its name (or part of it; for
    /// gocardless also its id); without it the banks of --country are
    /// listed. klarna: the bank's name or code, as Klarna's Bank Universe lists them.
    #[arg(long, requires = "country")]
    pub institution: Option<String>,
    /// gocardless, enablebanking, klarna: link the bank now even without a terminal (print its page's
    /// address and wait up to 10 minutes for the browser to come back; a secret Klarna's
    /// form asks for is read from standard input).
    #[arg(long, conflicts_with = "no_link")]
    pub link: bool,
    /// gocardless, enablebanking, klarna: store the connection only; link it later with `bankbridge sync`.
    #[arg(long)]
    pub no_link: bool,
    /// gocardless, enablebanking, klarna: the loopback port the bank sends the browser back to
    /// (`http://127.0.0.1:PORT/callback`); default: a free port.
    #[arg(long)]
    pub redirect_port: Option<u16>,
    /// xs2a: the TPP's client certificate chain (PEM) for mutual TLS, with --tpp-key.
    #[arg(long, requires = "tpp_key", conflicts_with = "tpp_p12")]
    pub tpp_cert: Option<std::path::PathBuf>,
    /// xs2a: the TPP certificate's private key (PEM).
    #[arg(long, requires = "tpp_cert")]
    pub tpp_key: Option<std::path::PathBuf>,
    /// xs2a: the TPP certificate and key as PKCS#12 (.p12/.pfx); its password
    /// from BANKBRIDGE_TPP_P12_PASSWORD or a prompt.
    #[arg(long)]
    pub tpp_p12: Option<std::path::PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct UpdateArgs {
    /// Name or id.
    pub connection: String,
    /// The bank's new base URL (needs the password too).
    #[arg(long)]
    pub base_url: Option<String>,
    /// The new login at the bank (needs the password too).
    #[arg(long)]
    pub username: Option<String>,
    /// Read the new password or PIN from standard input (first line).
    #[arg(long)]
    pub password_stdin: bool,
    /// Ask for the new password or PIN at the terminal.
    #[arg(long, conflicts_with = "password_stdin")]
    pub password: bool,
    /// Days per request (capped by the bank's own limit).
    #[arg(long)]
    pub window_days: Option<u32>,
    /// Days each incremental sync re-reads before the last synced day.
    #[arg(long)]
    pub overlap_days: Option<u32>,
    /// Oldest day to fetch (YYYY-MM-DD).
    #[arg(long, conflicts_with = "no_since")]
    pub since: Option<NaiveDate>,
    /// Fetch as far back as the bank has data.
    #[arg(long)]
    pub no_since: bool,
    /// Sync automatically in `serve` this often: 90s, 30m, 12h, 1d.
    #[arg(long, value_parser = parse_interval, conflicts_with = "no_interval")]
    pub interval: Option<u64>,
    /// Sync only when asked.
    #[arg(long)]
    pub no_interval: bool,
    /// xs2a: change a setting, KEY=VALUE (KEY= removes it). Repeatable.
    #[arg(long = "option", value_name = "KEY=VALUE")]
    pub options: Vec<String>,
    /// Bind this registered card: it answers the bank's card-reader challenges.
    #[arg(long, conflicts_with = "no_card")]
    pub card: Option<String>,
    /// Unbind the card.
    #[arg(long)]
    pub no_card: bool,
}

/// `90s`, `30m`, `12h`, `1d`, or plain seconds.
pub fn parse_interval(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 30m, 12h or 1d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("unknown unit {unit:?} in {s:?}: use s, m, h or d")),
    };
    if n == 0 {
        return Err("the interval must be more than zero".into());
    }
    Ok(n * mult)
}

pub async fn run(config: &Config, command: ConnectionCommand) -> Result<ExitCode> {
    match command {
        ConnectionCommand::Add(args) => add(config, *args).await,
        ConnectionCommand::List { json } => list(config, json).await,
        ConnectionCommand::Update(args) => update(config, args).await,
        ConnectionCommand::Remove { connection, yes } => remove(config, &connection, yes).await,
    }
}

/// Like cargo and apt: ask in a terminal, refuse to guess without one.
async fn remove(config: &Config, connection: &str, yes: bool) -> Result<ExitCode> {
    let store = config.parts().await?.connections;
    let Some(c) = store.find_connection(connection).await? else {
        bail!("no connection named {connection:?}; see `bankbridge connection list`");
    };
    let Some(footprint) = store.connection_footprint(c.id).await? else {
        bail!("connection {:?} was removed meanwhile", c.name);
    };
    let what = format!(
        "{} account(s), {} transaction(s) and {} document(s)",
        footprint.accounts, footprint.transactions, footprint.documents
    );
    if !yes {
        if !std::io::stdin().is_terminal() {
            bail!(
                "removing connection {} deletes {what}: pass --yes to confirm (standard input is not a terminal)",
                c.name
            );
        }
        eprint!(
            "Remove connection {} (id {}) and delete {what}? [y/N] ",
            c.name, c.id
        );
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .context("reading the answer")?;
        if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            eprintln!("nothing removed");
            return Ok(ExitCode::FAILURE);
        }
    }
    if !store.delete_connection(c.id).await? {
        bail!("connection {:?} was removed meanwhile", c.name);
    }
    println!(
        "removed connection {} (id {}): deleted {what}",
        c.name, c.id
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn read_password(from_stdin: bool, prompt: &str) -> Result<Secret<String>> {
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading standard input")?;
        let pw = line.trim_end_matches(['\n', '\r']).to_owned();
        if pw.is_empty() {
            bail!("nothing on standard input (one line expected)");
        }
        return Ok(Secret::new(pw));
    }
    Ok(Secret::new(
        rpassword::prompt_password(prompt).context("reading from the terminal")?,
    ))
}

async fn add(config: &Config, args: AddArgs) -> Result<ExitCode> {
    if !bankbridge_connectors::KNOWN.contains(&args.connector.as_str()) {
        bail!(
            "unknown connector {:?}; known: {}",
            args.connector,
            bankbridge_connectors::KNOWN.join(", ")
        );
    }
    bankbridge_sync::check_name(&args.name).map_err(flag_error)?;
    let xs2a = args.connector == "xs2a";
    let gocardless = args.connector == "gocardless";
    let enablebanking = args.connector == "enablebanking";
    let klarna = args.connector == "klarna";
    // Aggregators: the bank is picked by country and name and linked on its page.
    let aggregator = bankbridge_connectors::is_aggregator(&args.connector);
    if !aggregator
        && (args.country.is_some() || args.institution.is_some() || args.link || args.no_link)
    {
        bail!(
            "--country, --institution, --link and --no-link are settings of the gocardless, enablebanking and klarna connectors"
        );
    }
    if args.private_key.is_some() != enablebanking {
        bail!(
            "--private-key: the enablebanking connector needs its application's private key (PEM file), and only it"
        );
    }
    if gocardless && args.username == "-" {
        bail!("--username: the secret id of your GoCardless Bank Account Data user secret");
    }
    if enablebanking && args.username == "-" {
        bail!("--username: the id of your Enable Banking application");
    }
    let mut options = connector_options(&args)?;
    let sandbox_path = options
        .get("bank")
        .and_then(|b| bankbridge_connectors::xs2a::bank(b))
        .and_then(|b| b.sandbox_path);
    let base_url = match (sandbox_path, args.base_url.as_deref()) {
        // `--bank sandbox-be --base-url http://127.0.0.1:8080`: the sandbox's root.
        (Some(path), Some(root)) if url::Url::parse(root).is_ok_and(|u| u.path() == "/") => {
            format!("{}{path}", root.trim_end_matches('/'))
        }
        (Some(path), None) => format!("http://127.0.0.1:9000{path}"),
        (None, None) if gocardless => {
            bankbridge_connectors::gocardless::DEFAULT_BASE_URL.to_owned()
        }
        (None, None) if enablebanking => {
            bankbridge_connectors::enablebanking::DEFAULT_BASE_URL.to_owned()
        }
        (None, None) if klarna => bankbridge_connectors::klarna::DEFAULT_BASE_URL.to_owned(),
        (None, None) => bail!(
            "--base-url: the bank's address is needed (or --bank with a bank bankbridge knows)"
        ),
        (_, Some(url)) => url.trim_end_matches('/').to_owned(),
    };
    let settings = ConnectionSettings {
        // xs2a and Enable Banking page, and GoCardless answers any range in
        // one call (which it counts against 4 a day): long windows.
        window_days: args
            .window_days
            .unwrap_or(if xs2a || aggregator { 366 } else { 30 }),
        overlap_days: args.overlap_days,
        since: args.since,
        interval_secs: args.interval,
        options: options.clone(),
        sca_card: args.card.clone(),
        ..ConnectionSettings::new(base_url, &args.username)
    };
    bankbridge_sync::check_settings(&settings).map_err(flag_error)?;
    let prompt = match args.connector.as_str() {
        "keypad" => "bank PIN: ",
        "gocardless" => "GoCardless secret key: ",
        "klarna" => "Klarna Open Banking API token: ",
        _ => "bank password: ",
    };
    let (store, syncer) = super::open(config).await?;
    if let Some(card) = &args.card {
        let parts = config.parts().await?;
        let Some(found) = parts.cards.get_card(card).await? else {
            bail!(
                "--card: no registered card {card:?}; register it first (the dashboard's Cards page, or the API)"
            );
        };
        eprintln!(
            "card {} ({}) answers this connection's card-reader challenges",
            found.id, found.label
        );
    }
    if !args.allow_duplicate {
        let existing = store.list_connections().await?;
        if let Some(twin) = bankbridge_sync::same_login(&existing, &args.connector, &settings) {
            bail!(
                "connection {} (id {}) already logs in to {} as {}: two would double the bank's requests \
                 (and its failed logins). Update it with `bankbridge connection update {}`, or pass --allow-duplicate",
                twin.name,
                twin.id,
                settings.base_url,
                settings.username,
                twin.name
            );
        }
    }
    let credentials = credentials_for(&args, &settings, prompt)?;
    let mut settings = settings;
    if gocardless {
        pick_institution(&args, &settings, &credentials, &mut options).await?;
        settings.options = options;
    } else if enablebanking {
        pick_aspsp(&args, &settings, &credentials, &mut options).await?;
        settings.options = options;
    } else if klarna {
        klarna_bank(&args, &settings, &credentials, &mut options).await?;
        settings.options = options;
    }
    // The connector checks what it can without the bank (URL, PIN shape).
    let mut connector =
        match bankbridge_connectors::build(&args.connector, &settings, credentials.clone()) {
            Ok(c) => c,
            Err(e) => bail!("{e}"),
        };
    // An aggregator's login is the link itself: it comes after the connection is stored.
    if !args.no_check && !aggregator {
        check_login(connector.as_mut(), &settings).await?;
    }
    drop(connector);
    let c = bankbridge_sync::add_connection(
        store.as_ref(),
        &syncer.key,
        &args.name,
        &args.connector,
        &settings,
        &credentials,
    )
    .await?;
    if aggregator {
        return link_now(&syncer, &c, &args).await;
    }
    println!(
        "added connection {} (id {}); sync it with: bankbridge sync --connection {}",
        c.name, c.id, c.name
    );
    Ok(ExitCode::SUCCESS)
}

/// An aggregator's bank, as `connection add` picks it from the service's
/// list of `--country` by `--institution`.
trait ListedBank {
    /// One line of a listing.
    fn line(&self) -> String;
}

impl ListedBank for bankbridge_connectors::gocardless::Institution {
    fn line(&self) -> String {
        format!("  {}  {}", self.id, self.name)
    }
}

impl ListedBank for bankbridge_connectors::klarna::Bank {
    fn line(&self) -> String {
        format!("  {}  {}", self.bank_codes.join(", "), self.bank_name)
    }
}

impl ListedBank for bankbridge_connectors::enablebanking::Aspsp {
    fn line(&self) -> String {
        format!("  {} ({})", self.name, self.country)
    }
}

/// The `--country` given, or why one is needed.
fn country_of(args: &AddArgs) -> Result<&str> {
    args.country.as_deref().ok_or_else(|| {
        anyhow::anyhow!(
            "--country: the bank's country (two letters), with --institution to pick the bank"
        )
    })
}

/// The connection's secret, for listing the banks before anything is stored.
fn secret_of(credentials: &Credentials) -> Result<Secret<String>> {
    credentials
        .get("password")
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the secret is needed to list the banks"))
}

/// A failure to list the banks, in words.
fn listing_failed(country: &str, e: bankbridge_core::ConnectorError) -> anyhow::Error {
    match e {
        bankbridge_core::ConnectorError::InvalidCredentials(why) => {
            anyhow::anyhow!("{why}. Nothing was stored")
        }
        other => anyhow::anyhow!("cannot list the banks of {country}: {other}. Nothing was stored"),
    }
}

/// The one bank of `all` that `--institution` names (by `find`), or an
/// error that lists the candidates.
fn pick_bank<'a, T: ListedBank>(
    args: &AddArgs,
    all: &'a [T],
    service: &str,
    find: impl Fn(&'a [T], &str) -> Vec<&'a T>,
) -> Result<&'a T> {
    let country = args.country.as_deref().unwrap_or_default();
    let listing = |list: &[&T]| {
        list.iter()
            .take(30)
            .map(|b| b.line())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let every: Vec<&T> = all.iter().collect();
    let Some(wanted) = &args.institution else {
        bail!(
            "--institution: pick the bank; {service} reaches {} in {country}:\n{}",
            every.len(),
            listing(&every)
        );
    };
    match find(all, wanted).as_slice() {
        [one] => Ok(*one),
        [] => bail!(
            "--institution: no bank of {country} is called {wanted:?}; {service} reaches these:\n{}",
            listing(&every)
        ),
        many => bail!(
            "--institution: {} banks match {wanted:?}; give it more exactly:\n{}",
            many.len(),
            listing(many)
        ),
    }
}

/// GoCardless: the bank from `--country` and `--institution` (unless the
/// `institution_id` option names it), with the longest history and access
/// it gives unless the options ask for less.
async fn pick_institution(
    args: &AddArgs,
    settings: &ConnectionSettings,
    credentials: &Credentials,
    options: &mut std::collections::BTreeMap<String, String>,
) -> Result<()> {
    use bankbridge_connectors::gocardless::{self, option};
    if !options.contains_key(option::INSTITUTION_ID) {
        let country = country_of(args)?;
        let all = gocardless::institutions(
            &settings.base_url,
            &settings.username,
            &secret_of(credentials)?,
            country,
        )
        .await
        .map_err(|e| listing_failed(country, e))?;
        let bank = pick_bank(args, &all, "GoCardless", gocardless::pick_institution)?;
        eprintln!("bank: {} ({})", bank.name, bank.id);
        options.insert(option::INSTITUTION_ID.to_owned(), bank.id.clone());
        if let Some(days) = bank.transaction_total_days {
            options
                .entry(option::HISTORY_DAYS.to_owned())
                .or_insert_with(|| days.clamp(1, 730).to_string());
        }
        if let Some(days) = bank.max_access_valid_for_days {
            options
                .entry(option::ACCESS_DAYS.to_owned())
                .or_insert_with(|| days.clamp(1, 180).to_string());
        }
    }
    gocardless::Settings::from_options(options).map_err(|e| anyhow::anyhow!("--option: {e}"))?;
    Ok(())
}

/// Enable Banking: the bank from `--country` and `--institution` (unless the
/// options name it), with the longest access it gives unless they ask for less.
async fn pick_aspsp(
    args: &AddArgs,
    settings: &ConnectionSettings,
    credentials: &Credentials,
    options: &mut std::collections::BTreeMap<String, String>,
) -> Result<()> {
    use bankbridge_connectors::enablebanking::{self, option};
    if !options.contains_key(option::ASPSP_NAME) {
        let country = country_of(args)?;
        let all = enablebanking::aspsps(
            &settings.base_url,
            &settings.username,
            &secret_of(credentials)?,
            country,
        )
        .await
        .map_err(|e| listing_failed(country, e))?;
        let bank = pick_bank(args, &all, "Enable Banking", enablebanking::pick_aspsp)?;
        eprintln!("bank: {} ({})", bank.name, bank.country);
        options.insert(option::ASPSP_NAME.to_owned(), bank.name.clone());
        options.insert(option::ASPSP_COUNTRY.to_owned(), bank.country.clone());
        if let Some(secs) = bank.maximum_consent_validity {
            options
                .entry(option::CONSENT_DAYS.to_owned())
                .or_insert_with(|| (secs / 86_400).clamp(1, 730).to_string());
        }
    }
    enablebanking::Settings::from_options(options).map_err(|e| anyhow::anyhow!("--option: {e}"))?;
    Ok(())
}

/// Klarna: the bank from `--country` and `--institution` (its name or
/// code, as Klarna's Bank Universe lists them), unless the options name it.
async fn klarna_bank(
    args: &AddArgs,
    settings: &ConnectionSettings,
    credentials: &Credentials,
    options: &mut std::collections::BTreeMap<String, String>,
) -> Result<()> {
    use bankbridge_connectors::klarna::{self, option};
    if !options.contains_key(option::BANK_CODE) {
        let country = country_of(args)?;
        let all = klarna::banks(&settings.base_url, &secret_of(credentials)?, country)
            .await
            .map_err(|e| listing_failed(country, e))?;
        let bank = pick_bank(args, &all, "Klarna", klarna::pick_bank)?;
        let Some(code) = bank.bank_codes.first() else {
            bail!(
                "--institution: Klarna lists {} without a bank code",
                bank.bank_name
            );
        };
        eprintln!("bank: {} ({code}, {})", bank.bank_name, bank.country_code);
        options.insert(option::BANK_CODE.to_owned(), code.clone());
        options.insert(option::COUNTRY_CODE.to_owned(), bank.country_code.clone());
    }
    klarna::Settings::from_options(options).map_err(|e| anyhow::anyhow!("--option: {e}"))?;
    Ok(())
}

/// GoCardless, Enable Banking and Klarna: the person links the bank now (in a terminal, or with
/// `--link`), and the first sync runs; otherwise how to do it later.
async fn link_now(
    syncer: &bankbridge_sync::Syncer,
    c: &bankbridge_store::Connection,
    args: &AddArgs,
) -> Result<ExitCode> {
    let terminal = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    println!("added connection {} (id {})", c.name, c.id);
    if args.no_link || !(args.link || terminal) {
        println!(
            "link the bank where you can open its page: bankbridge sync --connection {} (in a terminal), or Sync now on the dashboard",
            c.name
        );
        return Ok(ExitCode::SUCCESS);
    }
    let solve = super::sync::SolveOptions {
        interactive: true,
        can_prompt: terminal,
        redirect_port: args.redirect_port,
        cards: None,
    };
    let hidden = !std::io::stderr().is_terminal();
    match super::sync::sync_one_with(syncer, c, hidden, &solve).await {
        Ok(summary) => {
            println!("linked; first sync: {}", super::sync::counts(&summary));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!(
                "{}: not linked: {e}\nthe connection is stored: link it with `bankbridge sync --connection {}`",
                c.name, c.name
            );
            Ok(if e.needs_user() {
                ExitCode::from(super::sync::EXIT_NEEDS_USER)
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// The stored options with `--option KEY=VALUE` applied (`KEY=` removes),
/// checked by the connector's own reading; `None` when none is given.
fn updated_options(
    connection: &bankbridge_store::Connection,
    changes: &[String],
) -> Result<Option<std::collections::BTreeMap<String, String>>> {
    if changes.is_empty() {
        return Ok(None);
    }
    let mut options = bankbridge_sync::Syncer::settings(connection)?.options;
    for o in changes {
        let Some((k, v)) = o.split_once('=') else {
            bail!("--option {o:?}: expected KEY=VALUE");
        };
        match v.trim() {
            "" => options.remove(k.trim()),
            v => options.insert(k.trim().to_owned(), v.to_owned()),
        };
    }
    bankbridge_connectors::check_options(&connection.connector, &options)
        .map_err(|e| anyhow::anyhow!("--option: {e}"))?;
    Ok(Some(options))
}

/// The connector's options from `--bank`, `--sca-approach` and `--option`
/// (xs2a only), checked by the connector's own reading of them.
fn connector_options(args: &AddArgs) -> Result<std::collections::BTreeMap<String, String>> {
    let mut options = std::collections::BTreeMap::new();
    if let Some(bank) = &args.bank {
        options.insert("bank".to_owned(), bank.clone());
    }
    if let Some(a) = &args.sca_approach {
        options.insert("sca_approach".to_owned(), a.clone());
    }
    for o in &args.options {
        let Some((k, v)) = o.split_once('=') else {
            bail!("--option {o:?}: expected KEY=VALUE");
        };
        options.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    let tpp = args.tpp_cert.is_some() || args.tpp_p12.is_some();
    if bankbridge_connectors::is_aggregator(&args.connector) {
        if args.bank.is_some() || args.sca_approach.is_some() || tpp {
            bail!(
                "--bank, --sca-approach and the TPP certificate are settings of the xs2a connector"
            );
        }
        // Checked once the bank is picked (its id is an option too).
        return Ok(options);
    }
    if args.connector != "xs2a" {
        if !options.is_empty() || tpp {
            bail!(
                "--bank, --sca-approach, --option and the TPP certificate are settings of the xs2a connector"
            );
        }
        return Ok(options);
    }
    bankbridge_connectors::xs2a::BankSettings::from_options(&options)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(options)
}

/// The secrets of a new connection: the password (not for an xs2a bank
/// whose SCA needs none) and the TPP certificate.
fn credentials_for(
    args: &AddArgs,
    settings: &ConnectionSettings,
    prompt: &str,
) -> Result<Credentials> {
    use bankbridge_connectors::xs2a::{Approach, BankSettings, credential};
    let needs_password = args.connector != "xs2a"
        || args.password_stdin
        || BankSettings::from_options(&settings.options)
            .map(|b| b.approach.is_none_or(|a| a == Approach::Embedded))
            .unwrap_or(true);
    let mut credentials = if let Some(path) = &args.private_key {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("--private-key: reading {}", path.display()))?;
        Credentials::with_password(Secret::new(pem))
    } else if needs_password {
        Credentials::with_password(read_password(args.password_stdin, prompt)?)
    } else {
        Credentials::default()
    };
    let read =
        |p: &std::path::Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let identity = match (&args.tpp_cert, &args.tpp_key, &args.tpp_p12) {
        (Some(cert), Some(key), None) => {
            Some(bankbridge_core::tls::pem_bundle(&read(cert)?, &read(key)?))
        }
        (None, None, Some(p12)) => {
            let password = match std::env::var("BANKBRIDGE_TPP_P12_PASSWORD") {
                Ok(p) => Secret::new(p),
                Err(_) => Secret::new(
                    rpassword::prompt_password("PKCS#12 password: ")
                        .context("reading the PKCS#12 password")?,
                ),
            };
            Some(
                bankbridge_core::tls::pkcs12_to_pem(&read(p12)?, password.expose())
                    .map_err(|e| anyhow::anyhow!("--tpp-p12: {e}"))?,
            )
        }
        _ => None,
    };
    if let Some(pem) = identity {
        let text = String::from_utf8(pem.expose().clone())
            .map_err(|_| anyhow::anyhow!("the TPP certificate and key must be PEM text"))?;
        credentials
            .fields
            .insert(credential::TPP_IDENTITY_PEM.to_owned(), Secret::new(text));
    }
    Ok(credentials)
}

/// Log in once before anything is stored: a typo in the URL or the
/// password shows now, not at the first sync. A login that goes on to ask
/// for the user's approval counts as a working one (the sync asks again).
async fn check_login(
    connector: &mut dyn bankbridge_core::Connector,
    settings: &ConnectionSettings,
) -> Result<()> {
    use bankbridge_core::ConnectorError;
    eprintln!("logging in to {} to check the login…", settings.base_url);
    match connector.login().await {
        Ok(()) | Err(ConnectorError::ScaRequired(_)) => {
            eprintln!("login ok");
            Ok(())
        }
        Err(e @ ConnectorError::Transient { .. }) => bail!(
            "cannot reach the bank: {e}. Is --base-url right? Nothing was stored (--no-check stores it anyway)"
        ),
        Err(e @ ConnectorError::InvalidCredentials(_)) => {
            bail!("{e}. Nothing was stored")
        }
        Err(e) => {
            bail!("the test login failed: {e}. Nothing was stored (--no-check stores it anyway)")
        }
    }
}

/// A refused setting, named as its command-line flag.
fn flag_error(e: bankbridge_sync::SyncError) -> anyhow::Error {
    match e {
        bankbridge_sync::SyncError::InvalidField { field, message } => {
            anyhow::anyhow!(
                "--{}: {message}",
                field.replace('_', "-").replace("-secs", "")
            )
        }
        other => other.into(),
    }
}

async fn update(config: &Config, args: UpdateArgs) -> Result<ExitCode> {
    let (store, syncer) = super::open(config).await?;
    let Some(connection) = store.find_connection(&args.connection).await? else {
        bail!(
            "no connection named {:?}; see `bankbridge connection list`",
            args.connection
        );
    };
    let password = if args.password_stdin || args.password {
        let prompt = match connection.connector.as_str() {
            "keypad" => "new bank PIN: ",
            _ => "new bank password: ",
        };
        Some(read_password(args.password_stdin, prompt)?)
    } else {
        None
    };
    let change = bankbridge_sync::ConnectionChange {
        base_url: args.base_url,
        username: args.username,
        password,
        window_days: args.window_days,
        overlap_days: args.overlap_days,
        since: if args.no_since {
            Some(None)
        } else {
            args.since.map(Some)
        },
        interval_secs: if args.no_interval {
            Some(None)
        } else {
            args.interval.map(Some)
        },
        options: updated_options(&connection, &args.options)?,
        sca_card: if args.no_card {
            Some(None)
        } else {
            args.card.clone().map(Some)
        },
    };
    if let Some(Some(card)) = &change.sca_card
        && config.parts().await?.cards.get_card(card).await?.is_none()
    {
        bail!("--card: no registered card {card:?}");
    }
    let settings = bankbridge_sync::Syncer::settings(&connection)?;
    // The connector checks what it can without the bank (URL, PIN shape).
    if change.password.is_some() {
        let mut next = settings.clone();
        if let Some(url) = &change.base_url {
            next.base_url = url.trim_end_matches('/').to_owned();
        }
        if let Some(user) = &change.username {
            next.username = user.clone();
        }
        if let Err(e) = bankbridge_connectors::build(
            &connection.connector,
            &next,
            Credentials::with_password(change.password.clone().expect("checked")),
        ) {
            bail!("{e}");
        }
    }
    let Some(updated) =
        bankbridge_sync::update_connection(store.as_ref(), &syncer.key, &connection, &change)
            .await
            .map_err(flag_error)?
    else {
        bail!("connection {:?} was removed meanwhile", connection.name);
    };
    let mut what = Vec::new();
    if change.password.is_some() {
        what.push("credentials");
    }
    if updated.settings != connection.settings {
        what.push("settings");
    }
    if what.is_empty() {
        println!("connection {}: nothing to change", updated.name);
    } else {
        println!(
            "updated the {} of connection {}",
            what.join(" and "),
            updated.name
        );
        if connection.credentials_refused() && change.password.is_some() {
            println!(
                "its refused login no longer blocks it: sync it with `bankbridge sync --connection {}`",
                updated.name
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `valid to 2026-09-01 (87 d)`, `expired`, or `-` without a consent.
fn consent_cell(consent: Option<&bankbridge_store::ConsentRecord>, today: NaiveDate) -> String {
    match consent {
        None => "-".into(),
        Some(k) => match (k.status.as_str(), k.valid_until) {
            ("valid", Some(until)) => {
                format!("valid to {until} ({} d)", (until - today).num_days())
            }
            (status, _) => status.to_owned(),
        },
    }
}

async fn list(config: &Config, json: bool) -> Result<ExitCode> {
    let store = config.parts().await?.connections;
    let conns = store.list_connections().await?;
    let now = chrono::Utc::now();
    let activity =
        |c: &bankbridge_store::Connection| match bankbridge_sync::SyncActivity::of(c, now) {
            bankbridge_sync::SyncActivity::Idle => None,
            bankbridge_sync::SyncActivity::Running => Some("running"),
            bankbridge_sync::SyncActivity::Interrupted => Some("interrupted"),
        };
    if json {
        let items: Vec<_> = conns
            .iter()
            .map(|c| {
                serde_json::json!({
                    "id": c.id, "name": c.name, "connector": c.connector, "settings": c.settings,
                    "last_sync_at": c.last_sync_at, "last_sync_status": c.last_sync_status,
                    "last_sync_error": c.last_sync_error, "credentials_refused": c.credentials_refused(),
                    "activity": activity(c).unwrap_or("idle"),
                    "consent": c.consent,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = conns
        .iter()
        .map(|c| {
            vec![
                c.id.to_string(),
                c.name.clone(),
                c.connector.clone(),
                c.settings
                    .get("base_url")
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_owned(),
                c.last_sync_at
                    .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_else(|| "-".into()),
                // A killed sync is what the user needs to know first: the
                // outcome stored before it is stale.
                activity(c)
                    .map(str::to_owned)
                    .unwrap_or_else(|| c.last_sync_status.to_string()),
                match activity(c) {
                    Some("interrupted") => {
                        "stopped before it ended: run sync again to resume".into()
                    }
                    _ => super::truncate(c.last_sync_error.as_deref().unwrap_or(""), 70),
                },
                consent_cell(c.consent.as_ref(), now.date_naive()),
            ]
        })
        .collect();
    super::print_table(
        &[
            "ID",
            "NAME",
            "CONNECTOR",
            "BASE URL",
            "LAST SYNC",
            "STATUS",
            "WHY",
            "CONSENT",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_interval;

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("90s"), Ok(90));
        assert_eq!(parse_interval("12h"), Ok(43200));
        assert_eq!(parse_interval("1d"), Ok(86400));
        assert_eq!(parse_interval("300"), Ok(300));
        assert!(parse_interval("0m").is_err());
        assert!(parse_interval("5w").is_err());
        assert!(parse_interval("abc").is_err());
    }
}
