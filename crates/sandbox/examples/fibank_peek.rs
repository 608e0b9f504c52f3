//! Print a few days of the simulated Fibank's statement: `cargo run -p bankbridge-sandbox --example fibank_peek`.
use bankbridge_sandbox::{SandboxConfig, SandboxState};
use chrono::Days;

fn main() {
    let config = SandboxConfig {
        seed: 1,
        transactions: 600,
        ..SandboxConfig::default()
    };
    let Ok(state) = SandboxState::new(config) else {
        return;
    };
    let bank = state.fibank();
    let today = bank.today();
    let iban = bank.ibans().remove(0);
    let from = today.checked_sub_days(Days::new(3)).unwrap_or(today);
    println!(
        "{}",
        bank.statement_json(&iban, from, today).unwrap_or_default()
    );
    println!(
        "{}",
        serde_json::to_string_pretty(&bank.truth()).unwrap_or_default()
    );
}
