//! The JSON read path alone, without HTTP: pages of 100 rows and a full
//! export stream over an existing database, timed. Prints a small table.
//!
//! `cargo run --release -p bankbridge-store --example read_path -- path/to.db`
use std::time::Instant;

use bankbridge_store::{BankData, SqliteStore, TxQuery};
use futures::StreamExt;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: read_path DB")?;
    let store = SqliteStore::open(std::path::Path::new(&path)).await?;
    let pages = 5_000;
    let mut out = Vec::with_capacity(256 * 1024);
    let started = Instant::now();
    let mut rows = 0;
    for _ in 0..pages {
        out.clear();
        let q = TxQuery {
            limit: Some(100),
            ..Default::default()
        };
        rows += store.transactions_page_json(&q, &mut out).await?.rows;
    }
    let took = started.elapsed();
    println!(
        "pages of 100, one at a time  {pages} pages  {:.1} µs/page  {:.2} µs/row",
        took.as_secs_f64() * 1e6 / pages as f64,
        took.as_secs_f64() * 1e6 / rows as f64
    );
    let started = Instant::now();
    let mut rows = 0u64;
    let mut bytes = 0usize;
    let mut chunks = store.stream_transactions_json(TxQuery::default());
    while let Some(c) = chunks.next().await {
        let c = c?;
        rows += c.rows;
        bytes += c.bytes.len();
    }
    let took = started.elapsed();
    println!(
        "export stream                {rows} rows  {:.2} µs/row  {:.0} MB",
        took.as_secs_f64() * 1e6 / rows as f64,
        bytes as f64 / 1e6
    );
    Ok(())
}
