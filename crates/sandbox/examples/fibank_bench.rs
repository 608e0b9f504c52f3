//! Generation and window-serving speed of the simulated Fibank.
//!
//! `cargo run --release -p bankbridge-sandbox --example fibank_bench [transactions]`
//! prints a table; nothing here asserts a timing.
use std::time::Instant;

use bankbridge_sandbox::{SandboxConfig, SandboxState};
use chrono::Days;

fn main() {
    let transactions = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let config = SandboxConfig {
        seed: 42,
        accounts: 3,
        transactions,
        ..SandboxConfig::default()
    };
    let today = config.day_in(chrono_tz::Europe::Sofia);
    let t = Instant::now();
    let state = match SandboxState::new(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bad config: {e}");
            std::process::exit(2);
        }
    };
    let generation = t.elapsed();
    let bank = state.fibank();
    let booked: u64 = bank.truth().iter().map(|a| a.booked_count).sum();
    println!("{:<36} {:>12} {:>12}", "step", "ms", "bytes");
    println!(
        "{:<36} {:>12.1} {:>12}",
        format!("generate 3 x {transactions} ({booked} booked)"),
        generation.as_secs_f64() * 1e3,
        "-"
    );
    let iban = bank.ibans().into_iter().next().unwrap_or_default();
    for days in [1u64, 30, 365, 5 * 366] {
        let from = today.checked_sub_days(Days::new(days - 1)).unwrap_or(today);
        let t = Instant::now();
        let mut bytes = 0;
        let rounds = if days > 400 { 3 } else { 50 };
        for _ in 0..rounds {
            bytes = bank
                .statement_json(&iban, from, today)
                .map(|s| s.len())
                .unwrap_or(0);
        }
        let ms = t.elapsed().as_secs_f64() * 1e3 / rounds as f64;
        println!(
            "{:<36} {:>12.2} {:>12}",
            format!("render a {days}-day window"),
            ms,
            bytes
        );
    }
    let t = Instant::now();
    bank.advance(30);
    println!(
        "{:<36} {:>12.1} {:>12}",
        "advance 30 days",
        t.elapsed().as_secs_f64() * 1e3,
        "-"
    );
}
