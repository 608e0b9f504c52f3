//! `bankbridge check run|validate|agent`: flow checks from the command line.
//!
//! `run` executes flow files now and prints a per-step table (exit 1 when a
//! flow fails); `validate` only parses them, and a folder's `channels.toml`
//! with them (exit 2 on an error; every error of every file is printed, each
//! naming the file, line and field); `agent` runs the flows a server assigns
//! to a location and reports the results back.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use bankbridge_checks::env::EnvPolicy;
use bankbridge_checks::flow::{self, Flow, SecretSource};
use bankbridge_checks::report::{self, Format};
use bankbridge_checks::runner::{RunOptions, RunReport, Runner};
use bankbridge_checks::schedule::Outcome;
use bankbridge_server::check_secrets::CheckSecrets;
use clap::Subcommand;

use crate::config::Config;

#[derive(Subcommand, Debug)]
pub enum CheckCommand {
    /// Run flow files (or folders of them) now and print each step.
    #[command(
        after_help = "Example: BANKBRIDGE_CHECK_XS2A_API_TOKEN=... BANKBRIDGE_CHECK_XS2A_PASSWORD=123456 \\\n  \
        bankbridge check run examples/flows/klarna-xs2a.toml --var base_url=http://127.0.0.1:8080/xs2a-playground --report junit results.xml\n\n\
        A flow's { env = \"NAME\" } reads only BANKBRIDGE_CHECK_* variables and those given with --allow-env.\n\
        Exit status: 0 when every flow passed (or was only degraded), 1 when one failed, 2 when a file is invalid."
    )]
    Run(RunArgs),
    /// Parse flow files (or folders, with their channels.toml) and report every error with its file, line and field.
    #[command(after_help = "Example: bankbridge check validate examples/flows/\n\n\
        A folder's channels.toml is checked too (or name a channels.toml itself); an unset { env = .. } variable there is a warning.\n\
        Exit status: 0 when everything is valid, 2 when something is not.")]
    Validate(ValidateArgs),
    /// Run the flows a server assigns to this location and report the results to it.
    #[command(
        after_help = "Example: bankbridge check agent --location eu-west --server http://checks.internal:8080 --token bb_..."
    )]
    Agent(super::check_agent::AgentArgs),
    /// Store, list or delete the secrets flows name with `{ secret = "name" }`.
    #[command(subcommand)]
    Secret(super::check_secret::SecretCommand),
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Flow files, or folders whose *.toml files are flows.
    #[arg(required = true)]
    pub flows: Vec<PathBuf>,
    /// Set a variable (or a secret, which stays masked): NAME=VALUE. Repeatable.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// Also write a report: `--report junit FILE` or `--report json FILE`.
    #[arg(long, num_args = 2, value_names = ["FORMAT", "FILE"])]
    pub report: Vec<String>,
    /// The location name recorded in the results.
    #[arg(long, default_value = "local")]
    pub location: String,
    /// Retry failed runs as each flow's [retry] table says.
    #[arg(long)]
    pub retries: bool,
    /// Print the results as JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Let flows read this environment variable with `{ env = .. }`, beside
    /// the BANKBRIDGE_CHECK_* ones. Repeatable.
    #[arg(long = "allow-env", value_name = "NAME")]
    pub allow_env: Vec<String>,
}

/// The environment flows may read: `BANKBRIDGE_CHECK_*` and `names`.
pub fn env_policy(names: &[String]) -> Result<std::sync::Arc<EnvPolicy>> {
    Ok(std::sync::Arc::new(
        EnvPolicy::with_allowed(names.iter().cloned())
            .map_err(|e| anyhow::anyhow!("--allow-env: {e}"))?,
    ))
}

#[derive(clap::Args, Debug)]
pub struct ValidateArgs {
    /// Flow files, folders of them (with their channels.toml), or a channels.toml.
    #[arg(required = true)]
    pub flows: Vec<PathBuf>,
}

pub async fn run(config: &Config, command: CheckCommand) -> Result<ExitCode> {
    match command {
        CheckCommand::Run(args) => run_flows(config, args).await,
        CheckCommand::Validate(args) => validate(args),
        CheckCommand::Agent(args) => super::check_agent::run(args).await,
        CheckCommand::Secret(c) => super::check_secret::run(config, c).await,
    }
}

/// Loads every flow the paths name; errors are printed (every one of each
/// file), not fatal, so one bad file doesn't hide the others' problems.
fn load_all(paths: &[PathBuf]) -> (Vec<Flow>, usize) {
    let mut flows = Vec::new();
    let mut errors = 0;
    for path in paths {
        let (loaded, errs) = if path.is_dir() {
            flow::load_dir(path)
        } else {
            match flow::load_all_errors(path) {
                Ok(f) => (vec![f], vec![]),
                Err(e) => (vec![], e),
            }
        };
        for e in &errs {
            eprintln!("error: {e}");
        }
        errors += errs.len();
        flows.extend(loaded);
    }
    (flows, errors)
}

/// What `validate` found so far.
#[derive(Default)]
struct Findings {
    errors: usize,
    bad_files: BTreeSet<String>,
    flows: usize,
    channel_files: usize,
}

impl Findings {
    fn error(&mut self, file: &str, text: impl std::fmt::Display) {
        eprintln!("error: {text}");
        self.errors += 1;
        self.bad_files.insert(file.to_owned());
    }
}

fn validate(args: ValidateArgs) -> Result<ExitCode> {
    let mut found = Findings::default();
    for path in &args.flows {
        if path.file_name().is_some_and(|n| n == flow::CHANNELS_FILE) && path.is_file() {
            validate_channels(path, &mut found);
            continue;
        }
        let (flows, errors) = if path.is_dir() {
            flow::load_dir(path)
        } else {
            match flow::load_all_errors(path) {
                Ok(f) => (vec![f], vec![]),
                Err(e) => (vec![], e),
            }
        };
        for e in &errors {
            found.error(&e.file, e);
        }
        for f in &flows {
            println!("ok: {} ({:?}, {} steps)", f.file, f.name, f.steps.len());
        }
        found.flows += flows.len();
        if !path.is_dir() {
            continue;
        }
        // A folder is a project: its channels, and the flows' use of them.
        let channels_path = path.join(flow::CHANNELS_FILE);
        let names = if channels_path.is_file() {
            validate_channels(&channels_path, &mut found)
        } else {
            Vec::new()
        };
        for f in &flows {
            for name in f.alerts.iter().filter(|n| !names.contains(n)) {
                let line = f
                    .source
                    .lines()
                    .position(|l| {
                        l.trim_start()
                            .strip_prefix("alerts")
                            .is_some_and(|rest| rest.trim_start().starts_with('='))
                    })
                    .map_or(String::new(), |i| format!(":{}", i + 1));
                found.error(
                    &f.file,
                    format!(
                        "{}{line}: alerts: no channel named {name:?} in {}",
                        f.file,
                        channels_path.display()
                    ),
                );
            }
        }
    }
    if found.errors > 0 {
        eprintln!(
            "{} error(s) in {} file(s)",
            found.errors,
            found.bad_files.len()
        );
        return Ok(ExitCode::from(2));
    }
    if found.flows == 0 && found.channel_files == 0 {
        bail!("no flow files found in {:?}", args.flows);
    }
    Ok(ExitCode::SUCCESS)
}

/// Checks a `channels.toml`, printing every problem with its line; returns
/// the names of its channels (for the flows' `alerts`). An unset
/// `{ env = .. }` variable is only a warning here: the machine that runs the
/// checks has it, the one validating them need not.
fn validate_channels(path: &Path, found: &mut Findings) -> Vec<String> {
    found.channel_files += 1;
    let file = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            found.error(&file, format!("{file}: cannot read the file: {e}"));
            return Vec::new();
        }
    };
    let names = channel_names(&text);
    match bankbridge_checks::alerts::read_channels(&text) {
        Ok(channels) => {
            println!("ok: {file} ({} channels)", channels.len());
        }
        Err(problems) => {
            let mut errors = 0;
            for p in &problems {
                let place = match p.line {
                    0 => file.clone(),
                    line => format!("{file}:{line}:{}", p.column),
                };
                if p.is_missing_env() {
                    eprintln!("warning: {place}: {}", p.message());
                } else {
                    found.error(&file, format!("{place}: {}", p.message()));
                    errors += 1;
                }
            }
            if errors == 0 {
                println!(
                    "ok: {file} ({} channels; set the variables above before serving)",
                    names.len()
                );
            }
        }
    }
    names
}

/// The `name` of every `[[channel]]`, read loosely (the full check is
/// `read_channels`'): a flow naming one of them is not reported too.
fn channel_names(text: &str) -> Vec<String> {
    let Ok(table) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    table
        .get("channel")
        .and_then(|c| c.as_array())
        .map(|list| {
            list.iter()
                .filter_map(|c| c.get("name")?.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The `{ secret = .. }` values the flows need (and `--var` doesn't give),
/// from this data directory's database. Without one, the run names each
/// missing secret.
async fn stored_secrets(
    config: &Config,
    flows: &[Flow],
    overrides: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let needed = flows.iter().any(|f| {
        f.secrets
            .iter()
            .any(|(name, s)| matches!(s, SecretSource::Store(_)) && !overrides.contains_key(name))
    });
    if !needed {
        return BTreeMap::new();
    }
    let opened = async {
        let (key, store) = config.keyed_store().await?;
        anyhow::Ok(CheckSecrets::new(store, key))
    }
    .await;
    match opened {
        Ok(secrets) => {
            let mut out = BTreeMap::new();
            for flow in flows {
                out.extend(secrets.for_flow(flow).await);
            }
            out
        }
        Err(e) => {
            eprintln!("warning: stored secrets are unavailable: {e:#}");
            BTreeMap::new()
        }
    }
}

pub fn parse_vars(vars: &[String]) -> Result<BTreeMap<String, String>> {
    vars.iter()
        .map(|v| {
            let (k, val) = v
                .split_once('=')
                .with_context(|| format!("--var {v:?}: expected NAME=VALUE"))?;
            Ok((k.trim().to_string(), val.to_string()))
        })
        .collect()
}

async fn run_flows(config: &Config, args: RunArgs) -> Result<ExitCode> {
    let reports: Vec<(Format, PathBuf)> = args
        .report
        .chunks(2)
        .map(|pair| {
            let format: Format = pair[0].parse().map_err(anyhow::Error::msg)?;
            Ok((format, PathBuf::from(&pair[1])))
        })
        .collect::<Result<_>>()?;
    let overrides = parse_vars(&args.vars)?;
    let (flows, errors) = load_all(&args.flows);
    if errors > 0 {
        return Ok(ExitCode::from(2));
    }
    if flows.is_empty() {
        bail!("no flow files found in {:?}", args.flows);
    }
    let runner = Runner::new();
    let opts = RunOptions {
        location: args.location.clone(),
        secrets: bankbridge_checks::runner::stored_secrets(
            stored_secrets(config, &flows, &overrides).await,
        ),
        overrides,
        env_policy: env_policy(&args.allow_env)?,
        ..RunOptions::default()
    };
    let mut results: Vec<RunReport> = Vec::new();
    for flow in &flows {
        let report = if args.retries {
            runner.run_with_retries(flow, &opts).await
        } else {
            runner.run(flow, &opts).await
        };
        if !args.json {
            println!("{}", report::table(&report));
        }
        results.push(report);
    }
    if args.json {
        println!("{}", report::json(&results));
    }
    for (format, path) in reports {
        write_report(format, &path, &results)?;
    }
    let failed = results
        .iter()
        .filter(|r| r.outcome == Outcome::Failed)
        .count();
    if failed > 0 {
        if !args.json {
            eprintln!("{failed} of {} flow(s) failed", results.len());
        }
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn write_report(format: Format, path: &Path, runs: &[RunReport]) -> Result<()> {
    let text = match format {
        Format::Json => report::json(runs),
        Format::Junit => report::junit(runs),
    };
    // Write beside the target and rename, so a reader never sees half a report.
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write the report in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())
        .with_context(|| format!("cannot write the report {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("cannot write the report {}", path.display()))?;
    Ok(())
}
