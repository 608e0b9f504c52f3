//! `bankbridge check run|validate|agent`: flow checks from the command line.
//!
//! `run` executes flow files now and prints a per-step table (exit 1 when a
//! flow fails); `validate` only parses them (exit 2 on an error, which names
//! the file, line and field); `agent` runs the flows a server assigns to a
//! location and reports the results back.
use std::collections::BTreeMap;
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
    /// Parse flow files (or folders) and report every error with its file, line and field.
    #[command(after_help = "Example: bankbridge check validate examples/flows/")]
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

/// Loads every flow the paths name; errors are printed, not fatal, so one
/// bad file doesn't hide the others' problems.
fn load_all(paths: &[PathBuf]) -> (Vec<Flow>, usize) {
    let mut flows = Vec::new();
    let mut errors = 0;
    for path in paths {
        let (loaded, errs) = if path.is_dir() {
            flow::load_dir(path)
        } else {
            match flow::load(path) {
                Ok(f) => (vec![f], vec![]),
                Err(e) => (vec![], vec![e]),
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

fn validate(args: ValidateArgs) -> Result<ExitCode> {
    let (flows, errors) = load_all(&args.flows);
    for f in &flows {
        println!("ok: {} ({:?}, {} steps)", f.file, f.name, f.steps.len());
    }
    if errors > 0 {
        eprintln!("{errors} invalid flow file(s)");
        return Ok(ExitCode::from(2));
    }
    if flows.is_empty() {
        bail!("no flow files found in {:?}", args.flows);
    }
    Ok(ExitCode::SUCCESS)
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
