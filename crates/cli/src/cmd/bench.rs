//! `bankbridge bench`: speed figures as one printed table (never assertions).
use std::process::ExitCode;

use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Transactions per account (3 accounts).
    #[arg(long, default_value_t = 100_000)]
    pub transactions: usize,
}

pub async fn run(_args: BenchArgs) -> Result<ExitCode> {
    anyhow::bail!("the benchmark is being written")
}
