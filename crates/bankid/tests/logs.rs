//! Secrets and personal numbers never reach the logs. A binary of its own:
//! a thread-local subscriber is reliable only when no other test races it
//! for tracing's callsite cache.
mod common;

use std::io;
use std::sync::{Arc, Mutex};

use bankbridge_bankid::{AuthRequest, DriveOptions, Outcome, drive};
use common::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Secrets and personal numbers never reach the logs, even at TRACE.
#[tokio::test]
async fn logs_carry_no_secret_and_no_personal_number() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let pki = Pki::new();
    let server = start(
        &pki,
        responder(|call| (call.endpoint == "collect").then(|| (200, complete_body()))),
    )
    .await;
    let client = client(&pki, &server);
    let order = client
        .auth(&AuthRequest::new("192.0.2.10").with_personal_number(&pnr()))
        .await
        .unwrap();
    let outcome = drive(&client, order.into(), DriveOptions::default(), |_| {})
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Complete(_)));
    client.cancel(ORDER).await.unwrap();

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("BankID call"), "{logs}");
    assert!(logs.contains("complete"), "{logs}");
    assert!(!logs.contains(SECRET), "{logs}");
    assert!(!logs.contains(PNR), "{logs}");
}
