//! One test-suite for both store backends.
//!
//! Each test body is written once, as an async fn taking the store, and runs
//! against (a) a SQLite file in a temporary folder and (b) PostgreSQL at
//! `BANKBRIDGE_TEST_PG_URL` (an admin URL: each test creates its own fresh
//! database there, so tests run in parallel, and drops it at the end).
//!
//! Without `BANKBRIDGE_TEST_PG_URL` the PostgreSQL tests print that they were
//! skipped, except when `CI` is set: then they fail. Start a server with
//! `export BANKBRIDGE_TEST_PG_URL="$(scripts/pg-throwaway.sh start)"`.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;

use bankbridge_core::{Balance, BalanceKind, FetchedAccount, Iban, Transaction, TxStatus};
use bankbridge_store::testing::hold_lease;
use bankbridge_store::{
    Card, CardAuditEntry, CardAuditQuery, CardStatus, CardUpdate, CheckRun, CheckRunQuery,
    CheckStep, Checkpoint, ConnectionUpdate, DocumentQuery, Lease, NewCard, NewCheckRun,
    NewCheckStep, NewConnection, NewDocument, NewInstitution, PgStore, Scope, SqliteStore, Store,
    StoreError, SyncJob, SyncOutcome, TokenRecord, TxQuery, TxWrite, WindowCommit, sha256_hex,
};
use bankbridge_store::{CheckJobReport, LapsedRound, OutboxAlert, QueuedCheckJob};
use bankbridge_store::{Connections, LeaseToken};
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use futures::StreamExt;
use rust_decimal::Decimal;
use sqlx::Connection as _;
use sqlx::Executor as _;

type BoxFut = Pin<Box<dyn Future<Output = ()> + Send>>;

// ---------------------------------------------------------------- harness

async fn run_sqlite(body: impl FnOnce(Arc<dyn Store>) -> BoxFut) {
    let dir = tempfile::tempdir().expect("temp dir");
    // A nested path: the store creates missing parent folders.
    let path = dir.path().join("nested").join("bankbridge.db");
    let store = SqliteStore::open(&path).await.expect("open SQLite store");
    body(Arc::new(store)).await;
}

async fn run_sqlite_location(body: impl FnOnce(String) -> BoxFut) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bankbridge.db");
    body(path.display().to_string()).await;
}

use bankbridge_store::testing::{
    create_pg_database, drop_pg_database, pg_admin_url, with_database,
};

/// Run the body in its own task so that a failing assertion still lets the
/// database be dropped, then re-raise the failure.
async fn finish(res: Result<(), tokio::task::JoinError>) {
    if let Err(e) = res {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("test task failed: {e}");
    }
}

async fn run_pg(body: impl FnOnce(Arc<dyn Store>) -> BoxFut) {
    let Some(admin) = pg_admin_url() else { return };
    let (conn, db, url) = create_pg_database(&admin).await;
    let fut = match PgStore::connect(&url).await {
        Ok(store) => {
            let store = Arc::new(store);
            let fut = body(store.clone());
            let res = tokio::spawn(fut).await;
            store.close().await;
            res
        }
        Err(e) => {
            drop_pg_database(conn, &db).await;
            panic!("open PostgreSQL store: {e}");
        }
    };
    drop_pg_database(conn, &db).await;
    finish(fut).await;
}

async fn run_pg_location(body: impl FnOnce(String) -> BoxFut) {
    let Some(admin) = pg_admin_url() else { return };
    let (conn, db, url) = create_pg_database(&admin).await;
    let res = tokio::spawn(body(url)).await;
    drop_pg_database(conn, &db).await;
    finish(res).await;
}

macro_rules! store_tests {
    (store: [$($name:ident),* $(,)?], location: [$($lname:ident),* $(,)?] $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::run_sqlite(|s| Box::pin(crate::$name(s))).await
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $lname() {
                    crate::run_sqlite_location(|l| Box::pin(crate::$lname(l))).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::run_pg(|s| Box::pin(crate::$name(s))).await
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $lname() {
                    crate::run_pg_location(|l| Box::pin(crate::$lname(l))).await
                }
            )*
        }
    };
}

store_tests! {
    store: [
        simplefin_tokens_are_claimed_once,
        export_marks_round_trip,
        a_consent_is_recorded_and_warned_about_once,
        connection_crud_and_cascade_delete,
        a_refused_login_holds_until_the_credentials_change,
        the_database_remembers_facts_once,
        lease_is_exclusive_and_expires,
        concurrent_lease_has_one_winner,
        a_scheduled_sync_is_claimed_once_per_slot,
        an_instance_name_is_held_while_its_instance_beats,
        a_bankid_order_is_written_only_by_its_driver,
        a_sync_that_lost_its_lease_writes_nothing,
        account_upsert_is_idempotent,
        commit_window_insert_update_void_touch,
        commit_window_balances_written_only_on_change,
        commit_window_is_atomic,
        commit_window_upserts_a_row_that_moved_out_of_the_window,
        large_window_round_trips_every_field,
        amounts_are_exact,
        query_filters_match_a_reference_filter,
        keyset_pagination_sees_every_row_once,
        text_search_is_case_insensitive_and_literal,
        categories_are_set_compared_and_filtered,
        flows_sum_booked_money_per_month_and_category,
        stream_equals_query,
        json_rows_are_the_bytes_a_transaction_serialises_to,
        token_lifecycle,
        sync_jobs,
        institution_crud,
        card_crud,
        one_card_per_reader,
        institution_with_cards_is_not_deleted,
        update_card_changes_only_given_fields,
        set_card_status_is_compare_and_set,
        a_card_that_may_have_refused_its_pin_needs_a_new_one,
        card_audit_newest_first_with_keyset_paging,
        card_debug_hides_the_sealed_pin,
        documents_are_stored_once_per_key_and_bytes_once_per_hash,
        documents_list_filters_and_order,
        documents_refuse_bad_input,
        check_run_round_trips_every_field,
        check_run_with_a_bad_step_leaves_nothing,
        check_runs_filter_and_page_newest_first,
        check_runs_pruned_except_the_latest_of_each_check,
        check_state_is_upserted_per_check,
        a_check_state_swaps_only_from_what_was_read,
        a_check_slot_is_claimed_once_and_pruned,
        a_round_claim_lapses_and_is_taken_over_once,
        agent_jobs_are_taken_once_and_reported_to_their_round_server,
        alerts_are_queued_with_their_change_and_delivered_once,
        check_secrets_keep_sealed_bytes_and_list_only_names,
    ],
    location: [
        migrations_are_idempotent,
        a_newer_database_is_refused,
        upgrade_from_0001_keeps_data,
        document_bytes_go_with_their_last_connection,
        check_run_failing_in_the_database_midway_leaves_nothing,
        pruned_check_runs_take_their_steps,
    ],
}

// ---------------------------------------------------------------- fixtures

fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap()
        + Duration::microseconds(123_456)
        + Duration::seconds(secs)
}

fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).unwrap()
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn new_connection(name: &str) -> NewConnection {
    NewConnection {
        name: name.to_owned(),
        connector: "fibank".to_owned(),
        settings: serde_json::json!({"base_url": "http://127.0.0.1:1", "username": "u", "window_days": 30}),
        credentials_sealed: vec![1, 2, 3, 0, 255],
    }
}

fn fetched_account(provider_id: &str) -> FetchedAccount {
    FetchedAccount {
        provider_id: provider_id.to_owned(),
        iban: Some(Iban::from_parts("BG", "BNBG96611020345678").unwrap()),
        currency: "BGN".parse().unwrap(),
        name: Some("Current".to_owned()),
        kind: Some("current".to_owned()),
        raw: serde_json::json!({"id": provider_id, "z": 1, "a": [1, 2]}),
    }
}

/// A connection with one account, its sync lease held: (the lease, account id).
async fn setup(s: &Arc<dyn Store>, name: &str) -> (LeaseToken, i64) {
    let c = s.create_connection(&new_connection(name)).await.unwrap();
    let lease = hold_lease(s.as_ref(), c.id).await;
    let a = s
        .upsert_account(lease, &fetched_account(&format!("{name}-acc")), t(0))
        .await
        .unwrap();
    (lease, a.id)
}

fn tw(provider_id: &str, booking: NaiveDate, amount: &str) -> TxWrite {
    TxWrite {
        provider_id: provider_id.to_owned(),
        pending_provider_id: None,
        fingerprint: format!("fp-{provider_id}"),
        status: TxStatus::Booked,
        booking_date: booking,
        value_date: Some(booking),
        transaction_date: None,
        amount: dec(amount),
        currency: "BGN".to_owned(),
        original_amount: None,
        original_currency: None,
        raw_label: format!("POS  PAYMENT {provider_id}"),
        label: format!("POS PAYMENT {provider_id}"),
        counterparty_name: Some("Shop Ltd".to_owned()),
        counterparty_iban: None,
        remittance_info: None,
        bank_code: Some("POS/01".to_owned()),
        running_balance: None,
        raw: format!(r#"{{"id":"{provider_id}","amount":"{amount}"}}"#),
    }
}

fn window(lease: LeaseToken, acc: i64, now: DateTime<Utc>) -> WindowCommit {
    WindowCommit {
        lease,
        account_id: acc,
        now,
        inserts: Vec::new(),
        updates: Vec::new(),
        voids: Vec::new(),
        touch: Vec::new(),
        balances: Vec::new(),
        checkpoint: Checkpoint::default(),
    }
}

fn balance(kind: BalanceKind, amount: &str, date: NaiveDate) -> Balance {
    Balance {
        kind,
        amount: dec(amount),
        currency: "BGN".parse().unwrap(),
        reference_date: date,
    }
}

async fn all_rows(s: &Arc<dyn Store>, acc: i64) -> Vec<Transaction> {
    s.query_transactions(&TxQuery {
        account_id: Some(acc),
        ..Default::default()
    })
    .await
    .unwrap()
}

fn by_provider<'a>(rows: &'a [Transaction], p: &str) -> &'a Transaction {
    rows.iter()
        .find(|r| r.provider_id == p)
        .unwrap_or_else(|| panic!("row {p} missing"))
}

// ---------------------------------------------------------------- tests

async fn migrations_are_idempotent(location: String) {
    let first = bankbridge_store::open(&location).await.expect("first open");
    let c = first
        .create_connection(&new_connection("kept"))
        .await
        .unwrap();
    // A second store on the same database while the first is open, then a third after.
    let second = bankbridge_store::open(&location)
        .await
        .expect("second open runs no migration twice");
    assert_eq!(
        second.get_connection(c.id).await.unwrap().unwrap().name,
        "kept"
    );
    first
        .create_institution(&new_institution("fi_kept", "Kept Bank"))
        .await
        .unwrap();
    first
        .create_card(&new_card("card_kept", "fi_kept", "Reader 0", "Kept"))
        .await
        .unwrap();
    assert_eq!(
        second.get_card("card_kept").await.unwrap().unwrap().reader,
        "Reader 0"
    );
    drop(first);
    drop(second);
    let third = bankbridge_store::open(&location).await.expect("reopen");
    assert_eq!(third.list_connections().await.unwrap().len(), 1);
    assert_eq!(third.list_institutions().await.unwrap().len(), 1);
    assert_eq!(
        third
            .get_card("card_kept")
            .await
            .unwrap()
            .unwrap()
            .pin_sealed,
        PIN.to_vec()
    );
}

async fn a_newer_database_is_refused(location: String) {
    let store = bankbridge_store::open(&location).await.expect("first open");
    drop(store);
    let sql = "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
               VALUES (9999, 'from the future', TRUE, ";
    if location.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(&location).await.unwrap();
        c.execute(format!("{sql} '\\x00'::bytea, 0)").as_str())
            .await
            .unwrap();
        c.close().await.unwrap();
    } else {
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(&location);
        let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
        c.execute(format!("{sql} x'00', 0)").as_str())
            .await
            .unwrap();
        c.close().await.unwrap();
    }
    match bankbridge_store::open(&location).await {
        Err(StoreError::Migrate(m)) => assert!(m.contains("newer bankbridge"), "{m}"),
        Err(e) => panic!("expected StoreError::Migrate, got {e}"),
        Ok(_) => panic!("expected StoreError::Migrate, got a store"),
    }
}

async fn a_refused_login_holds_until_the_credentials_change(s: Arc<dyn Store>) {
    let c = s.create_connection(&new_connection("bank")).await.unwrap();
    let lease = hold_lease(s.as_ref(), c.id).await;
    s.save_session(lease, Some(&[7])).await.unwrap();
    s.record_sync_result(
        lease,
        t(1),
        SyncOutcome::CredentialsRefused,
        Some("wrong PIN"),
        c.credentials_version,
    )
    .await
    .unwrap();
    let refused = s.get_connection(c.id).await.unwrap().unwrap();
    assert!(refused.credentials_refused());

    // Settings alone change nothing about the refusal, nor the session.
    let mut settings = refused.settings.clone();
    settings["interval_secs"] = serde_json::json!(3600);
    let moved = s
        .update_connection(
            c.id,
            &ConnectionUpdate {
                settings: Some(settings.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(moved.settings, settings);
    assert!(moved.credentials_refused());
    assert_eq!(moved.session_sealed.as_deref(), Some(&[7u8][..]));
    assert_eq!(moved.credentials_version, 1);

    // New credentials: a new version, the session forgotten, the block lifted.
    let renewed = s
        .update_connection(
            c.id,
            &ConnectionUpdate {
                credentials_sealed: Some(vec![4, 4]),
                clear_session: true,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renewed.credentials_sealed, vec![4, 4]);
    assert_eq!(renewed.credentials_version, 2);
    assert_eq!(renewed.session_sealed, None);
    assert_eq!(renewed.last_sync_status, SyncOutcome::CredentialsRefused);
    assert!(!renewed.credentials_refused());
    assert_eq!(renewed.settings, settings);

    // A refusal recorded by a sync that used the old credentials does not
    // block the new ones.
    s.record_sync_result(lease, t(2), SyncOutcome::CredentialsRefused, None, 1)
        .await
        .unwrap();
    assert!(
        !s.get_connection(c.id)
            .await
            .unwrap()
            .unwrap()
            .credentials_refused()
    );
    assert_eq!(
        s.update_connection(9_999, &ConnectionUpdate::default())
            .await
            .unwrap(),
        None
    );
    // Every outcome reads back as itself.
    for outcome in SyncOutcome::ALL {
        s.record_sync_result(lease, t(3), outcome, None, 2)
            .await
            .unwrap();
        assert_eq!(
            s.get_connection(c.id)
                .await
                .unwrap()
                .unwrap()
                .last_sync_status,
            outcome
        );
    }
}

async fn a_consent_is_recorded_and_warned_about_once(s: Arc<dyn Store>) {
    let c = s.create_connection(&new_connection("psd2")).await.unwrap();
    assert_eq!(c.consent, None);
    let lease = hold_lease(s.as_ref(), c.id).await;
    let until = NaiveDate::from_ymd_opt(2026, 9, 1).unwrap();
    s.record_consent(lease, "valid", Some(until)).await.unwrap();
    let got = s
        .get_connection(c.id)
        .await
        .unwrap()
        .unwrap()
        .consent
        .unwrap();
    assert_eq!(
        (got.status.as_str(), got.valid_until, got.warned_for),
        ("valid", Some(until), None)
    );
    // One warning per expiry, whoever asks twice.
    assert!(s.mark_consent_warned(c.id, until).await.unwrap());
    assert!(!s.mark_consent_warned(c.id, until).await.unwrap());
    let got = s
        .get_connection(c.id)
        .await
        .unwrap()
        .unwrap()
        .consent
        .unwrap();
    assert_eq!(got.warned_for, Some(until));
    // A renewed consent gets its own warning.
    let later = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
    s.record_consent(lease, "valid", Some(later)).await.unwrap();
    assert!(s.mark_consent_warned(c.id, later).await.unwrap());
    // Fenced: a sync without the lease writes nothing.
    s.release_sync_lease(lease).await.unwrap();
    assert!(s.record_consent(lease, "expired", None).await.is_err());
    assert_eq!(
        s.get_connection(c.id)
            .await
            .unwrap()
            .unwrap()
            .consent
            .unwrap()
            .status,
        "valid"
    );
}

async fn the_database_remembers_facts_once(s: Arc<dyn Store>) {
    assert_eq!(s.meta("master_key_check").await.unwrap(), None);
    assert_eq!(s.init_meta("master_key_check", "aa").await.unwrap(), "aa");
    // The first value stays.
    assert_eq!(s.init_meta("master_key_check", "bb").await.unwrap(), "aa");
    assert_eq!(
        s.meta("master_key_check").await.unwrap().as_deref(),
        Some("aa")
    );
}

async fn connection_crud_and_cascade_delete(s: Arc<dyn Store>) {
    let a = s.create_connection(&new_connection("main")).await.unwrap();
    assert_eq!(a.name, "main");
    assert_eq!(a.connector, "fibank");
    assert_eq!(a.last_sync_status, SyncOutcome::Never);
    assert_eq!(a.credentials_version, 1);
    assert!(!a.credentials_refused());
    assert_eq!(a.credentials_sealed, vec![1, 2, 3, 0, 255]);
    assert_eq!(a.settings["window_days"], 30);
    assert!(a.session_sealed.is_none() && a.last_sync_at.is_none());
    let debug = format!("{a:?}");
    assert!(
        debug.contains("[sealed]") && !debug.contains("255"),
        "{debug}"
    );

    match s.create_connection(&new_connection("main")).await {
        Err(StoreError::Conflict(m)) => assert!(m.contains("main"), "{m}"),
        other => panic!("duplicate name: {other:?}"),
    }
    let b = s.create_connection(&new_connection("other")).await.unwrap();
    assert_ne!(a.id, b.id);

    assert_eq!(s.get_connection(a.id).await.unwrap().unwrap(), a);
    assert_eq!(s.find_connection("main").await.unwrap().unwrap().id, a.id);
    assert_eq!(
        s.find_connection(&a.id.to_string())
            .await
            .unwrap()
            .unwrap()
            .id,
        a.id
    );
    assert!(s.find_connection("nope").await.unwrap().is_none());
    assert!(s.get_connection(9_999).await.unwrap().is_none());
    let names: Vec<String> = s
        .list_connections()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, vec!["main", "other"]);

    let lease_a = hold_lease(s.as_ref(), a.id).await;
    let lease_b = hold_lease(s.as_ref(), b.id).await;
    s.save_session(lease_a, Some(&[9, 9])).await.unwrap();
    s.record_sync_result(lease_a, t(5), SyncOutcome::Failed, Some("bank said no"), 1)
        .await
        .unwrap();
    let got = s.get_connection(a.id).await.unwrap().unwrap();
    assert_eq!(got.session_sealed.as_deref(), Some(&[9u8, 9][..]));
    assert_eq!(got.last_sync_at, Some(t(5)));
    assert_eq!(got.last_sync_status, SyncOutcome::Failed);
    assert_eq!(got.last_sync_error.as_deref(), Some("bank said no"));
    assert_eq!(got.last_sync_credentials_version, Some(1));
    s.save_session(lease_a, None).await.unwrap();
    assert!(
        s.get_connection(a.id)
            .await
            .unwrap()
            .unwrap()
            .session_sealed
            .is_none()
    );
    // A token for no lease held (here: no such connection) writes nothing.
    let stray = LeaseToken {
        connection_id: 9_999,
        generation: 1,
    };
    assert!(matches!(
        s.save_session(stray, None).await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert!(matches!(
        s.record_sync_result(stray, t(0), SyncOutcome::Ok, None, 1)
            .await,
        Err(StoreError::LeaseLost { .. })
    ));

    // Give `main` everything that hangs off a connection, and `other` one row.
    let acc = s
        .upsert_account(lease_a, &fetched_account("acc-1"), t(0))
        .await
        .unwrap();
    let other_acc = s
        .upsert_account(lease_b, &fetched_account("acc-1"), t(0))
        .await
        .unwrap();
    let mut w = window(lease_a, acc.id, t(1));
    w.inserts = vec![
        tw("t1", d(2024, 4, 1), "-1.00"),
        tw("t2", d(2024, 4, 2), "2.00"),
    ];
    w.balances = vec![balance(BalanceKind::ClosingBooked, "100.00", d(2024, 4, 2))];
    w.checkpoint = Checkpoint {
        oldest_covered: Some(d(2024, 4, 1)),
        ..Default::default()
    };
    s.commit_window(&w).await.unwrap();
    let mut w2 = window(lease_b, other_acc.id, t(1));
    w2.inserts = vec![tw("t1", d(2024, 4, 1), "-1.00")];
    s.commit_window(&w2).await.unwrap();
    let job = s.create_sync_job(a.id, t(2)).await.unwrap();

    // What a removal would take, counted first (and only this connection's).
    let footprint = |accounts, transactions| bankbridge_store::ConnectionFootprint {
        accounts,
        transactions,
        documents: 0,
    };
    assert_eq!(
        s.connection_footprint(a.id).await.unwrap(),
        Some(footprint(1, 2))
    );
    assert_eq!(
        s.connection_footprint(b.id).await.unwrap(),
        Some(footprint(1, 1))
    );
    assert!(s.delete_connection(a.id).await.unwrap());
    assert!(!s.delete_connection(a.id).await.unwrap());
    assert_eq!(s.connection_footprint(a.id).await.unwrap(), None);
    assert!(s.get_connection(a.id).await.unwrap().is_none());
    assert!(s.get_account(acc.id).await.unwrap().is_none());
    assert!(s.list_accounts(Some(a.id)).await.unwrap().is_empty());
    assert!(all_rows(&s, acc.id).await.is_empty());
    assert!(s.list_balances(acc.id).await.unwrap().is_empty());
    assert_eq!(s.checkpoint(acc.id).await.unwrap(), Checkpoint::default());
    assert!(s.get_sync_job(job.id).await.unwrap().is_none());
    // The other connection is untouched.
    assert_eq!(all_rows(&s, other_acc.id).await.len(), 1);
    assert_eq!(s.list_accounts(None).await.unwrap().len(), 1);
}

fn acquired(lease: Lease) -> LeaseToken {
    match lease {
        Lease::Acquired(token) => token,
        held => panic!("expected the lease, got {held:?}"),
    }
}

async fn lease_is_exclusive_and_expires(s: Arc<dyn Store>) {
    let c = s
        .create_connection(&new_connection("leased"))
        .await
        .unwrap();
    let alpha = acquired(
        s.acquire_sync_lease(c.id, "alpha", t(0), t(60))
            .await
            .unwrap(),
    );
    assert_eq!(alpha.connection_id, c.id);
    let held_by_alpha = |until| Lease::Held {
        owner: "alpha".into(),
        until,
    };
    assert_eq!(
        s.acquire_sync_lease(c.id, "beta", t(10), t(70))
            .await
            .unwrap(),
        held_by_alpha(t(60))
    );
    // Held means held, for its own owner too: two syncs of one process
    // stay apart.
    assert_eq!(
        s.acquire_sync_lease(c.id, "alpha", t(10), t(70))
            .await
            .unwrap(),
        held_by_alpha(t(60))
    );
    // The holder renews with its token.
    s.renew_sync_lease(alpha, t(120)).await.unwrap();
    assert_eq!(
        s.acquire_sync_lease(c.id, "beta", t(100), t(160))
            .await
            .unwrap(),
        held_by_alpha(t(120))
    );
    // The holder's release frees it; the next acquisition gets a higher
    // generation, and the old token is worth nothing.
    s.release_sync_lease(alpha).await.unwrap();
    let beta = acquired(
        s.acquire_sync_lease(c.id, "beta", t(40), t(100))
            .await
            .unwrap(),
    );
    assert!(beta.generation > alpha.generation);
    assert!(matches!(
        s.renew_sync_lease(alpha, t(500)).await,
        Err(StoreError::LeaseLost { .. })
    ));
    // A stale release does nothing.
    s.release_sync_lease(alpha).await.unwrap();
    assert!(matches!(
        s.acquire_sync_lease(c.id, "alpha", t(99), t(200))
            .await
            .unwrap(),
        Lease::Held { .. }
    ));
    // Expiry: after `until` another owner takes over, and the lapsed holder
    // can neither renew nor write.
    let alpha2 = acquired(
        s.acquire_sync_lease(c.id, "alpha", t(101), t(200))
            .await
            .unwrap(),
    );
    assert!(alpha2.generation > beta.generation);
    assert!(matches!(
        s.renew_sync_lease(beta, t(300)).await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert!(matches!(
        s.save_session(beta, Some(&[1])).await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert_eq!(
        s.acquire_sync_lease(c.id, "beta", t(150), t(300))
            .await
            .unwrap(),
        held_by_alpha(t(200))
    );
    // A lapsed lease nobody took is still its holder's to renew.
    s.renew_sync_lease(alpha2, t(400)).await.unwrap();
    assert!(matches!(
        s.acquire_sync_lease(9_999, "alpha", t(0), t(1)).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn concurrent_lease_has_one_winner(s: Arc<dyn Store>) {
    let c = s
        .create_connection(&new_connection("contended"))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.acquire_sync_lease(c.id, &format!("owner-{i}"), t(0), t(60))
                .await
                .unwrap()
        }));
    }
    let mut winners = 0;
    for task in tasks {
        if matches!(task.await.unwrap(), Lease::Acquired(_)) {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

/// Instances sharing the database all find a connection due: of their
/// claims on that slot one wins, and after its sync recorded the new
/// `last_sync_at` a claim made on the stale view fails too, even with the
/// lease free.
async fn a_scheduled_sync_is_claimed_once_per_slot(s: Arc<dyn Store>) {
    let c = s
        .create_connection(&new_connection("scheduled"))
        .await
        .unwrap();
    assert_eq!(c.last_sync_at, None);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.claim_scheduled_sync(c.id, &format!("instance-{i}"), None, t(0), t(60))
                .await
                .unwrap()
        }));
    }
    let mut won = Vec::new();
    for task in tasks {
        won.extend(task.await.unwrap());
    }
    assert_eq!(won.len(), 1, "one instance syncs the slot");
    let lease = won[0];
    s.record_sync_result(lease, t(5), SyncOutcome::Ok, None, 1)
        .await
        .unwrap();
    s.release_sync_lease(lease).await.unwrap();

    // A late instance still sees the connection as never synced: no claim.
    assert_eq!(
        s.claim_scheduled_sync(c.id, "late", None, t(6), t(66))
            .await
            .unwrap(),
        None
    );
    // The next slot, seen fresh, is claimed; the lease is a new generation.
    let synced = s.get_connection(c.id).await.unwrap().unwrap();
    let next = s
        .claim_scheduled_sync(c.id, "next", synced.last_sync_at, t(70), t(130))
        .await
        .unwrap()
        .expect("the next slot");
    assert!(next.generation > lease.generation);
    // While it runs, neither a claim nor a plain acquisition gets in.
    assert_eq!(
        s.claim_scheduled_sync(c.id, "other", synced.last_sync_at, t(71), t(131))
            .await
            .unwrap(),
        None
    );
    assert!(matches!(
        s.acquire_sync_lease(c.id, "api", t(71), t(131))
            .await
            .unwrap(),
        Lease::Held { .. }
    ));
}

/// A BankID order is readable by every process, written by its driver
/// until it finishes, and forgotten once nobody wrote it for a while.
async fn a_bankid_order_is_written_only_by_its_driver(s: Arc<dyn Store>) {
    let order = bankbridge_store::StoredBankIdOrder {
        id: "o1".into(),
        order_ref: "ref-1".into(),
        events_key_hash: vec![7; 32],
        qr_start_token: Some("qr-token".into()),
        started_at: t(0),
        status: "pending".into(),
        sealed: vec![1, 2, 3],
        driver: "pid 1".into(),
        updated_at: t(0),
        finished_at: None,
    };
    s.insert_bankid_order(&order).await.unwrap();
    assert!(matches!(
        s.insert_bankid_order(&order).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.bankid_order("o1").await.unwrap().as_ref(), Some(&order));
    assert_eq!(s.bankid_order("o2").await.unwrap(), None);
    assert!(
        !s.update_bankid_order("o1", "pid 2", "complete", &[9], t(1), true)
            .await
            .unwrap(),
        "another process does not write an order it does not drive"
    );
    assert!(
        s.update_bankid_order("o1", "pid 1", "pending", &[4], t(2), false)
            .await
            .unwrap()
    );
    assert!(
        s.update_bankid_order("o1", "pid 1", "cancelled", &[5], t(3), true)
            .await
            .unwrap()
    );
    assert!(
        !s.update_bankid_order("o1", "pid 1", "complete", &[6], t(4), true)
            .await
            .unwrap(),
        "a finished order keeps its outcome"
    );
    let read = s.bankid_order("o1").await.unwrap().unwrap();
    assert_eq!(
        (read.status.as_str(), read.sealed.as_slice()),
        ("cancelled", &[5u8][..])
    );
    assert_eq!((read.updated_at, read.finished_at), (t(3), Some(t(3))));
    assert_eq!(s.prune_bankid_orders(t(3)).await.unwrap(), 0);
    assert_eq!(s.prune_bankid_orders(t(4)).await.unwrap(), 1);
    assert_eq!(s.bankid_order("o1").await.unwrap(), None);
}

/// Two live processes never share a name; a stopped or silent one gives it up.
async fn an_instance_name_is_held_while_its_instance_beats(s: Arc<dyn Store>) {
    let instance = |owner: &str, at: i64| bankbridge_store::Instance {
        name: "i1".into(),
        owner: owner.into(),
        version: "0.1.0".into(),
        listen: "127.0.0.1:8080".into(),
        started_at: t(at),
        heartbeat_at: t(at),
        expires_at: t(at + 10),
        stopped_at: None,
    };
    assert!(s.register_instance(&instance("pid 1", 0)).await.unwrap());
    assert!(
        !s.register_instance(&instance("pid 2", 5)).await.unwrap(),
        "taken by a live instance"
    );
    assert!(s.beat_instance("i1", "pid 1", t(8), t(18)).await.unwrap());
    assert!(!s.register_instance(&instance("pid 2", 15)).await.unwrap());
    // Silent past its expiry: the name is free; the old owner's beat fails.
    assert!(s.register_instance(&instance("pid 2", 19)).await.unwrap());
    assert!(!s.beat_instance("i1", "pid 1", t(20), t(30)).await.unwrap());
    let listed = s.list_instances().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].owner, "pid 2");
    assert!(listed[0].alive(t(20)) && !listed[0].alive(t(40)));
    // A clean stop frees it at once.
    s.stop_instance("i1", "pid 2", t(21)).await.unwrap();
    assert!(!s.list_instances().await.unwrap()[0].alive(t(21)));
    assert!(s.register_instance(&instance("pid 3", 22)).await.unwrap());
    let m = conflict_message(
        s.register_instance(&bankbridge_store::Instance {
            name: " ".into(),
            ..instance("pid 4", 22)
        })
        .await,
    );
    assert!(m.contains("instance name"), "{m}");
}

/// The fencing token: once another sync took the lease over, every write
/// of the old holder is refused whole, and nothing of it lands.
async fn a_sync_that_lost_its_lease_writes_nothing(s: Arc<dyn Store>) {
    let (old, acc) = setup(&s, "fenced").await;
    let mut w = window(old, acc, t(1));
    w.inserts = vec![tw("f1", d(2024, 4, 1), "-1.00")];
    s.commit_window(&w).await.unwrap();
    // The old holder stalls past its lease; a new sync takes over.
    let far = Utc::now() + Duration::days(2);
    let new = acquired(
        s.acquire_sync_lease(old.connection_id, "new", far, far + Duration::hours(1))
            .await
            .unwrap(),
    );
    assert!(new.generation > old.generation);

    let mut late = window(old, acc, t(2));
    late.inserts = vec![tw("f2", d(2024, 4, 2), "-2.00")];
    late.balances = vec![balance(BalanceKind::ClosingBooked, "9.00", d(2024, 4, 2))];
    late.checkpoint.newest_covered = Some(d(2024, 4, 2));
    let refused = |r: Result<_, StoreError>| {
        assert!(matches!(r, Err(StoreError::LeaseLost { .. })));
    };
    refused(s.commit_window(&late).await.map(|_| ()));
    refused(
        s.upsert_account(old, &fetched_account("fenced-new-acc"), t(2))
            .await
            .map(|_| ()),
    );
    refused(s.save_session(old, Some(&[1, 2])).await);
    refused(
        s.record_sync_result(old, t(2), SyncOutcome::Ok, None, 1)
            .await,
    );
    let doc = NewDocument {
        connection_id: old.connection_id,
        account_id: None,
        provider_id: "st-1".into(),
        kind: "statement".into(),
        category: None,
        title: "Statement".into(),
        date: None,
        content_type: "application/pdf".into(),
        now: t(2),
    };
    refused(s.save_document(old, &doc, b"%PDF").await.map(|_| ()));

    let rows = all_rows(&s, acc).await;
    assert_eq!(
        rows.iter()
            .map(|r| r.provider_id.as_str())
            .collect::<Vec<_>>(),
        vec!["f1"]
    );
    assert!(s.list_balances(acc).await.unwrap().is_empty());
    assert_eq!(s.checkpoint(acc).await.unwrap(), Checkpoint::default());
    assert_eq!(
        s.list_accounts(Some(old.connection_id))
            .await
            .unwrap()
            .len(),
        1
    );
    let c = s.get_connection(old.connection_id).await.unwrap().unwrap();
    assert_eq!(
        (c.session_sealed, c.last_sync_status),
        (None, SyncOutcome::Never)
    );
    assert!(s.document_keys(old.connection_id).await.unwrap().is_empty());
    // The new holder writes.
    let mut w = window(new, acc, t(3));
    w.inserts = vec![tw("f3", d(2024, 4, 3), "-3.00")];
    s.commit_window(&w).await.unwrap();
    assert_eq!(all_rows(&s, acc).await.len(), 2);
}

async fn account_upsert_is_idempotent(s: Arc<dyn Store>) {
    let c = s.create_connection(&new_connection("acc")).await.unwrap();
    let lease = hold_lease(s.as_ref(), c.id).await;
    let first = s
        .upsert_account(lease, &fetched_account("A1"), t(0))
        .await
        .unwrap();
    assert_eq!(first.first_seen, t(0));
    assert_eq!(first.last_seen, t(0));
    assert_eq!(first.iban.as_ref().unwrap().country(), "BG");
    assert_eq!(first.currency.as_str(), "BGN");
    let again = s
        .upsert_account(lease, &fetched_account("A1"), t(100))
        .await
        .unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(again.first_seen, t(0));
    assert_eq!(again.last_seen, t(100));
    let mut renamed = fetched_account("A1");
    renamed.name = Some("Renamed".into());
    renamed.iban = None;
    let r = s.upsert_account(lease, &renamed, t(200)).await.unwrap();
    assert_eq!(
        (r.id, r.name.as_deref(), r.iban.is_none()),
        (first.id, Some("Renamed"), true)
    );
    let second = s
        .upsert_account(lease, &fetched_account("A2"), t(0))
        .await
        .unwrap();
    assert_ne!(second.id, first.id);
    let listed = s.list_accounts(Some(c.id)).await.unwrap();
    assert_eq!(
        listed.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![first.id, second.id]
    );
    assert_eq!(s.get_account(first.id).await.unwrap().unwrap(), r);
    assert!(s.get_account(9_999).await.unwrap().is_none());
    let stray = LeaseToken {
        connection_id: 9_999,
        generation: 1,
    };
    assert!(matches!(
        s.upsert_account(stray, &fetched_account("A1"), t(0)).await,
        Err(StoreError::LeaseLost { .. })
    ));
}

async fn commit_window_insert_update_void_touch(s: Arc<dyn Store>) {
    let (conn, acc) = setup(&s, "w").await;
    let mut pending = tw("p1", d(2024, 4, 3), "-7.50");
    pending.status = TxStatus::Pending;
    let mut fancy = tw("t3", d(2024, 4, 3), "-12.34");
    fancy.original_amount = Some(dec("-6.31"));
    fancy.original_currency = Some("EUR".into());
    fancy.counterparty_iban = Some("BG80BNBG96611020345678".into());
    fancy.remittance_info = Some("invoice 42".into());
    fancy.transaction_date = Some(d(2024, 4, 2));
    fancy.running_balance = Some(dec("987.66"));
    fancy.pending_provider_id = Some("p0".into());
    let mut w = window(conn, acc, t(10));
    w.inserts = vec![
        tw("t2", d(2024, 4, 2), "1.00"),
        tw("t1", d(2024, 4, 1), "-2.00"),
        pending,
        fancy.clone(),
    ];
    w.checkpoint = Checkpoint {
        oldest_covered: Some(d(2024, 4, 1)),
        newest_covered: Some(d(2024, 4, 30)),
        backfill_done: false,
        empty_streak: 2,
    };
    s.commit_window(&w).await.unwrap();
    assert_eq!(s.checkpoint(acc).await.unwrap(), w.checkpoint);

    let rows = s
        .load_window(acc, d(2024, 4, 1), d(2024, 4, 30))
        .await
        .unwrap();
    let keys: Vec<(NaiveDate, i64)> = rows.iter().map(|r| (r.booking_date, r.id)).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "ordered by (booking_date, id)");
    assert_eq!(rows.len(), 4);
    for r in &rows {
        assert_eq!(
            (r.first_seen, r.last_seen, r.updated_at),
            (t(10), t(10), t(10))
        );
        assert_eq!((r.connection_id, r.account_id), (conn.connection_id, acc));
    }
    let f = by_provider(&rows, "t3");
    assert_eq!(f.original_amount, Some(dec("-6.31")));
    assert_eq!(
        f.original_currency.map(|c| c.to_string()).as_deref(),
        Some("EUR")
    );
    assert_eq!(
        f.counterparty_iban.as_deref(),
        Some("BG80BNBG96611020345678")
    );
    assert_eq!(f.remittance_info.as_deref(), Some("invoice 42"));
    assert_eq!(f.transaction_date, Some(d(2024, 4, 2)));
    assert_eq!(f.value_date, Some(d(2024, 4, 3)));
    assert_eq!(f.running_balance, Some(dec("987.66")));
    assert_eq!(f.pending_provider_id.as_deref(), Some("p0"));
    assert_eq!(f.bank_code.as_deref(), Some("POS/01"));
    assert_eq!(f.fingerprint, "fp-t3");
    assert_eq!(f.raw_label, "POS  PAYMENT t3");
    assert_eq!(
        f.raw.to_value(),
        serde_json::json!({"id": "t3", "amount": "-12.34"})
    );
    assert_eq!(by_provider(&rows, "p1").status, TxStatus::Pending);
    // Narrower windows.
    assert_eq!(
        s.load_window(acc, d(2024, 4, 2), d(2024, 4, 2))
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        s.load_window(acc, d(2024, 5, 1), d(2024, 5, 31))
            .await
            .unwrap()
            .is_empty()
    );

    // Update t2, void p1, touch t1.
    let (t1, t2, p1) = (
        by_provider(&rows, "t1").clone(),
        by_provider(&rows, "t2").clone(),
        by_provider(&rows, "p1").id,
    );
    let mut changed = tw("t2", d(2024, 4, 2), "1.50");
    changed.label = "CHANGED".into();
    changed.status = TxStatus::Booked;
    let mut w = window(conn, acc, t(20));
    w.updates = vec![(t2.id, changed)];
    w.voids = vec![p1];
    w.touch = vec![t1.id, t1.id];
    s.commit_window(&w).await.unwrap();
    let rows = all_rows(&s, acc).await;
    let u = by_provider(&rows, "t2");
    assert_eq!(
        (u.id, u.label.as_str(), u.amount),
        (t2.id, "CHANGED", dec("1.50"))
    );
    assert_eq!(
        (u.first_seen, u.last_seen, u.updated_at),
        (t(10), t(20), t(20))
    );
    let v = by_provider(&rows, "p1");
    assert_eq!(
        (v.status, v.updated_at, v.last_seen),
        (TxStatus::Void, t(20), t(10))
    );
    let touched = by_provider(&rows, "t1");
    assert_eq!((touched.last_seen, touched.updated_at), (t(20), t(10)));
    assert_eq!(touched.label, t1.label);
    let untouched = by_provider(&rows, "t3");
    assert_eq!((untouched.last_seen, untouched.updated_at), (t(10), t(10)));

    // Updates, voids and touches of rows that are not this account's fail.
    let (conn2, acc2) = setup(&s, "w2").await;
    let mut w = window(conn2, acc2, t(30));
    w.touch = vec![t1.id];
    assert!(matches!(
        s.commit_window(&w).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn commit_window_balances_written_only_on_change(s: Arc<dyn Store>) {
    let (conn, acc) = setup(&s, "bal").await;
    let day = d(2024, 4, 30);
    let mut w = window(conn, acc, t(0));
    w.balances = vec![
        balance(BalanceKind::ClosingBooked, "100.00", day),
        balance(BalanceKind::Available, "150.00", day),
    ];
    assert_eq!(s.commit_window(&w).await.unwrap().balances_written, 2);
    // Same values (even written with another scale): nothing written.
    w.now = t(10);
    w.balances = vec![
        balance(BalanceKind::ClosingBooked, "100.0", day),
        balance(BalanceKind::Available, "150.00", day),
    ];
    assert_eq!(s.commit_window(&w).await.unwrap().balances_written, 0);
    // One changed, one new date.
    w.now = t(20);
    w.balances = vec![
        balance(BalanceKind::ClosingBooked, "99.99", day),
        balance(BalanceKind::ClosingBooked, "99.99", d(2024, 5, 1)),
    ];
    assert_eq!(s.commit_window(&w).await.unwrap().balances_written, 2);
    let stored = s.list_balances(acc).await.unwrap();
    assert_eq!(stored.len(), 3, "history: one row per (kind, date)");
    let closing: Vec<_> = stored
        .iter()
        .filter(|b| b.balance.kind == BalanceKind::ClosingBooked && b.balance.reference_date == day)
        .collect();
    assert_eq!(closing.len(), 1);
    assert_eq!(closing[0].balance.amount, dec("99.99"));
    assert_eq!(closing[0].fetched_at, t(20));
    let avail = stored
        .iter()
        .find(|b| b.balance.kind == BalanceKind::Available)
        .unwrap();
    assert_eq!(
        (avail.balance.amount.to_string().as_str(), avail.fetched_at),
        ("150.00", t(0))
    );
    assert!(stored.iter().all(|b| b.account_id == acc));
}

async fn commit_window_is_atomic(s: Arc<dyn Store>) {
    let (conn, acc) = setup(&s, "atomic").await;
    let mut w = window(conn, acc, t(0));
    w.inserts = vec![
        tw("keep", d(2024, 4, 1), "1.00"),
        tw("other", d(2024, 4, 2), "2.00"),
    ];
    w.checkpoint = Checkpoint {
        oldest_covered: Some(d(2024, 4, 1)),
        ..Default::default()
    };
    s.commit_window(&w).await.unwrap();
    let before = all_rows(&s, acc).await;
    let cp_before = s.checkpoint(acc).await.unwrap();
    let other_id = by_provider(&before, "other").id;

    let failing = |mut w: WindowCommit| {
        w.now = t(50);
        w.inserts = vec![
            tw("new-1", d(2024, 4, 5), "5.00"),
            tw("new-2", d(2024, 4, 6), "6.00"),
        ];
        w.balances = vec![balance(BalanceKind::ClosingBooked, "1.00", d(2024, 4, 6))];
        w.checkpoint = Checkpoint {
            oldest_covered: Some(d(2000, 1, 1)),
            backfill_done: true,
            ..Default::default()
        };
        w
    };
    let assert_unchanged = |label: &'static str| {
        let s = s.clone();
        let before = before.clone();
        let cp_before = cp_before.clone();
        async move {
            assert_eq!(all_rows(&s, acc).await, before, "{label}: rows changed");
            assert_eq!(
                s.checkpoint(acc).await.unwrap(),
                cp_before,
                "{label}: checkpoint changed"
            );
            assert!(
                s.list_balances(acc).await.unwrap().is_empty(),
                "{label}: balance written"
            );
        }
    };

    // An update of a row that does not exist, after the inserts ran.
    let mut w = failing(window(conn, acc, t(0)));
    w.updates = vec![(9_999_999, tw("ghost", d(2024, 4, 1), "1.00"))];
    assert!(matches!(
        s.commit_window(&w).await,
        Err(StoreError::NotFound(_))
    ));
    assert_unchanged("missing update").await;

    // A void of a row that does not exist.
    let mut w = failing(window(conn, acc, t(0)));
    w.voids = vec![9_999_999];
    assert!(matches!(
        s.commit_window(&w).await,
        Err(StoreError::NotFound(_))
    ));
    assert_unchanged("missing void").await;

    // The database itself refuses a statement midway: the update gives `other`
    // the provider id of `keep` (unique per account) after the inserts ran.
    let mut w = failing(window(conn, acc, t(0)));
    w.updates = vec![(other_id, tw("keep", d(2024, 4, 2), "2.00"))];
    assert!(s.commit_window(&w).await.is_err());
    assert_unchanged("unique violation").await;

    // A provider id twice in one window's inserts.
    let mut w = failing(window(conn, acc, t(0)));
    w.inserts.push(tw("new-1", d(2024, 4, 7), "7.00"));
    assert!(matches!(
        s.commit_window(&w).await,
        Err(StoreError::Conflict(_))
    ));
    assert_unchanged("duplicate insert").await;

    // Bad input: a currency that is no currency, raw that is no JSON.
    let mut w = failing(window(conn, acc, t(0)));
    w.inserts[1].currency = "EURO".into();
    assert!(s.commit_window(&w).await.is_err());
    let mut w = failing(window(conn, acc, t(0)));
    w.inserts[1].raw = "{not json".into();
    assert!(s.commit_window(&w).await.is_err());
    assert_unchanged("bad input").await;

    // An account that does not exist, or is another connection's.
    let w = failing(window(conn, 9_999_999, t(0)));
    assert!(matches!(
        s.commit_window(&w).await,
        Err(StoreError::NotFound(_))
    ));
    let (_, other_acc) = setup(&s, "atomic-2").await;
    let w = failing(window(conn, other_acc, t(0)));
    assert!(matches!(
        s.commit_window(&w).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(all_rows(&s, other_acc).await.is_empty());
    assert_unchanged("wrong account").await;
}

async fn commit_window_upserts_a_row_that_moved_out_of_the_window(s: Arc<dyn Store>) {
    let (conn, acc) = setup(&s, "moved").await;
    let mut w = window(conn, acc, t(0));
    w.inserts = vec![tw("m1", d(2024, 3, 31), "3.00")];
    s.commit_window(&w).await.unwrap();
    let id = all_rows(&s, acc).await[0].id;
    // The bank now books it on 1 April; the engine loaded only April and inserts it again.
    let mut w = window(conn, acc, t(10));
    w.inserts = vec![tw("m1", d(2024, 4, 1), "3.00")];
    s.commit_window(&w).await.unwrap();
    let rows = all_rows(&s, acc).await;
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].id, rows[0].booking_date), (id, d(2024, 4, 1)));
    assert_eq!(
        (rows[0].first_seen, rows[0].updated_at, rows[0].last_seen),
        (t(0), t(10), t(10))
    );
}

async fn large_window_round_trips_every_field(s: Arc<dyn Store>) {
    // More rows than one insert batch, with a ragged tail, every field varying.
    let (conn, acc) = setup(&s, "large").await;
    let n = 2_500;
    let inserts: Vec<TxWrite> = (0..n)
        .map(|i| {
            let day = d(2023, 1, 1) + Duration::days(i as i64 % 365);
            let mut x = tw(
                &format!("L{i}"),
                day,
                &format!("{}.{:02}", i as i64 - 1_000, i % 100),
            );
            x.pending_provider_id = (i % 5 == 0).then(|| format!("P{i}"));
            x.status = if i % 7 == 0 {
                TxStatus::Pending
            } else {
                TxStatus::Booked
            };
            x.value_date = (i % 2 == 0).then(|| day + Duration::days(1));
            x.transaction_date = (i % 3 == 0).then(|| day - Duration::days(1));
            x.original_amount = (i % 4 == 0).then(|| Decimal::new(i as i64, 3));
            x.original_currency = (i % 4 == 0).then(|| "EUR".to_owned());
            x.raw_label = format!("RAW  {i}");
            x.label = format!("label {i}");
            x.counterparty_name = (i % 6 == 0).then(|| format!("cp {i}"));
            x.counterparty_iban = (i % 8 == 0).then(|| format!("IBAN{i}"));
            x.remittance_info = (i % 9 == 0).then(|| format!("rem {i}"));
            x.bank_code = (i % 10 != 0).then(|| format!("code/{i}"));
            x.running_balance = (i % 11 == 0).then(|| Decimal::new(i as i64 * 3, 2));
            x.raw = format!(r#"{{"n":{i}}}"#);
            x
        })
        .collect();
    let mut w = window(conn, acc, t(0));
    w.inserts = inserts.clone();
    s.commit_window(&w).await.unwrap();
    let rows = s
        .load_window(acc, d(2000, 1, 1), d(2100, 1, 1))
        .await
        .unwrap();
    assert_eq!(rows.len(), n);
    for x in &inserts {
        let r = by_provider(&rows, &x.provider_id);
        let back = TxWrite {
            provider_id: r.provider_id.clone(),
            pending_provider_id: r.pending_provider_id.clone(),
            fingerprint: r.fingerprint.clone(),
            status: r.status,
            booking_date: r.booking_date,
            value_date: r.value_date,
            transaction_date: r.transaction_date,
            amount: r.amount,
            currency: r.currency.to_string(),
            original_amount: r.original_amount,
            original_currency: r.original_currency.map(|c| c.to_string()),
            raw_label: r.raw_label.clone(),
            label: r.label.clone(),
            counterparty_name: r.counterparty_name.clone(),
            counterparty_iban: r.counterparty_iban.clone(),
            remittance_info: r.remittance_info.clone(),
            bank_code: r.bank_code.clone(),
            running_balance: r.running_balance,
            raw: r.raw.as_str().to_owned(),
        };
        assert_eq!(&back, x);
    }
    // Ids follow the order of the inserts.
    let mut by_id: Vec<&Transaction> = rows.iter().collect();
    by_id.sort_by_key(|r| r.id);
    let order: Vec<&str> = by_id.iter().map(|r| r.provider_id.as_str()).collect();
    let expected: Vec<&str> = inserts.iter().map(|x| x.provider_id.as_str()).collect();
    assert_eq!(order, expected);
}

async fn amounts_are_exact(s: Arc<dyn Store>) {
    let (conn, acc) = setup(&s, "exact").await;
    let empty = s.account_totals(acc).await.unwrap();
    assert_eq!((empty.booked_count, empty.booked_sum), (0, Decimal::ZERO));
    let mut pending = tw("p", d(2024, 4, 1), "-1000.01");
    pending.status = TxStatus::Pending;
    let mut big = tw("big", d(2024, 4, 2), "12345678901.23");
    big.running_balance = Some(dec("-98765432109.87"));
    big.original_amount = Some(dec("0.001"));
    big.original_currency = Some("KWD".into());
    let mut w = window(conn, acc, t(0));
    w.inserts = vec![
        tw("a", d(2024, 4, 1), "0.10"),
        tw("b", d(2024, 4, 1), "0.20"),
        pending,
        tw("c", d(2024, 4, 3), "5.00"),
        tw("neg", d(2024, 4, 3), "-0.01"),
    ];
    s.commit_window(&w).await.unwrap();
    let totals = s.account_totals(acc).await.unwrap();
    assert_eq!(totals.booked_count, 4);
    assert_eq!(totals.booked_sum.to_string(), "5.29");

    let mut w = window(conn, acc, t(1));
    w.inserts = vec![big];
    s.commit_window(&w).await.unwrap();
    let rows = all_rows(&s, acc).await;
    let b = by_provider(&rows, "big");
    assert_eq!(b.amount.to_string(), "12345678901.23");
    assert_eq!(b.running_balance.unwrap().to_string(), "-98765432109.87");
    assert_eq!(b.original_amount.unwrap().to_string(), "0.001");
    // Scale is kept as written.
    assert_eq!(by_provider(&rows, "c").amount.to_string(), "5.00");
    assert_eq!(by_provider(&rows, "a").amount.to_string(), "0.10");
    let totals = s.account_totals(acc).await.unwrap();
    assert_eq!(totals.booked_count, 5);
    assert_eq!(totals.booked_sum, dec("12345678906.52"));

    // 0.10 + 0.20 is 0.30, not 0.30000000000000004.
    let (conn2, acc2) = setup(&s, "exact-2").await;
    let mut w = window(conn2, acc2, t(0));
    w.inserts = vec![
        tw("x", d(2024, 4, 1), "0.10"),
        tw("y", d(2024, 4, 1), "0.20"),
    ];
    s.commit_window(&w).await.unwrap();
    assert_eq!(
        s.account_totals(acc2).await.unwrap().booked_sum.to_string(),
        "0.30"
    );
}

/// A data set of 3 accounts over 2 connections, with varied dates, amounts,
/// labels (ASCII, Cyrillic, LIKE wildcards), statuses and update times.
async fn query_fixture(s: &Arc<dyn Store>) -> (Vec<(i64, i64)>, Vec<Transaction>) {
    let c1 = s.create_connection(&new_connection("q1")).await.unwrap();
    let c2 = s.create_connection(&new_connection("q2")).await.unwrap();
    let (l1, l2) = (
        hold_lease(s.as_ref(), c1.id).await,
        hold_lease(s.as_ref(), c2.id).await,
    );
    let mut accounts = Vec::new();
    for (lease, p) in [(l1, "A"), (l1, "B"), (l2, "C")] {
        let a = s
            .upsert_account(lease, &fetched_account(p), t(0))
            .await
            .unwrap();
        accounts.push((lease, a.id));
    }
    let leases: Vec<LeaseToken> = accounts.iter().map(|&(l, _)| l).collect();
    let accounts: Vec<(i64, i64)> = accounts
        .into_iter()
        .map(|(l, a)| (l.connection_id, a))
        .collect();
    let labels = [
        ("Coffee Shop", Some("Barista Ltd"), None),
        ("ПЛАЩАНЕ С КАРТА", Some("Магазин Фантастико"), None),
        ("Rent 50% off", None, Some("flat_rent april")),
        ("under_score", None, None),
        ("Salary ACME", Some("ACME Corp"), Some("SALARY 04/2024")),
    ];
    let amounts = [
        "-2.50",
        "-0.10",
        "0.10",
        "1500.00",
        "-650.00",
        "12.34",
        "-12.34",
        "0.00",
        "99.99",
        "-1000000.01",
    ];
    let mut seed: u64 = 42;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    for (k, (&(_, acc), &lease)) in accounts.iter().zip(&leases).enumerate() {
        // Three windows committed at different times, for `updated_since`.
        for win in 0..3i64 {
            let mut w = window(lease, acc, t(1000 * (win + 1)));
            for i in 0..40 {
                let day = d(2024, 1, 1) + Duration::days(next(60) as i64);
                let mut x = tw(
                    &format!("{k}-{win}-{i}"),
                    day,
                    amounts[next(amounts.len() as u64) as usize],
                );
                let (label, cp, rem) = labels[next(labels.len() as u64) as usize];
                x.label = label.to_owned();
                x.raw_label = label.to_uppercase();
                x.counterparty_name = cp.map(str::to_owned);
                x.remittance_info = rem.map(str::to_owned);
                x.status = match next(10) {
                    0 => TxStatus::Pending,
                    1 => TxStatus::Void,
                    _ => TxStatus::Booked,
                };
                w.inserts.push(x);
            }
            s.commit_window(&w).await.unwrap();
        }
    }
    let all = s.query_transactions(&TxQuery::default()).await.unwrap();
    assert_eq!(all.len(), 3 * 3 * 40);
    (accounts, all)
}

/// The reference semantics of a TxQuery, in plain Rust.
fn reference(all: &[Transaction], q: &TxQuery) -> Vec<i64> {
    let text = q.text.as_ref().map(|t| t.to_lowercase());
    let mut rows: Vec<&Transaction> = all
        .iter()
        .filter(|r| q.account_id.is_none_or(|a| r.account_id == a))
        .filter(|r| q.connection_id.is_none_or(|c| r.connection_id == c))
        .filter(|r| q.from.is_none_or(|f| r.booking_date >= f))
        .filter(|r| q.to.is_none_or(|f| r.booking_date <= f))
        .filter(|r| q.min_amount.is_none_or(|m| r.amount >= m))
        .filter(|r| q.max_amount.is_none_or(|m| r.amount <= m))
        .filter(|r| q.status.is_none_or(|st| r.status == st))
        .filter(|r| q.updated_since.is_none_or(|u| r.updated_at >= u))
        .filter(|r| q.after.is_none_or(|a| (r.booking_date, r.id) > a))
        .filter(|r| {
            text.as_ref().is_none_or(|t| {
                [
                    Some(&r.label),
                    Some(&r.raw_label),
                    r.counterparty_name.as_ref(),
                    r.remittance_info.as_ref(),
                ]
                .into_iter()
                .flatten()
                .any(|f| f.to_lowercase().contains(t.as_str()))
            })
        })
        .collect();
    rows.sort_by_key(|r| (r.booking_date, r.id));
    let mut ids: Vec<i64> = rows.into_iter().map(|r| r.id).collect();
    if let Some(l) = q.limit {
        ids.truncate(l as usize);
    }
    ids
}

async fn query_filters_match_a_reference_filter(s: Arc<dyn Store>) {
    let (accounts, all) = query_fixture(&s).await;
    let keys: Vec<(NaiveDate, i64)> = all.iter().map(|r| (r.booking_date, r.id)).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(
        keys, sorted,
        "unfiltered query ordered by (booking_date, id)"
    );

    let mid = all[all.len() / 2].clone();
    let mut queries = vec![
        TxQuery {
            account_id: Some(accounts[1].1),
            ..Default::default()
        },
        TxQuery {
            connection_id: Some(accounts[0].0),
            ..Default::default()
        },
        TxQuery {
            connection_id: Some(accounts[2].0),
            ..Default::default()
        },
        TxQuery {
            from: Some(d(2024, 1, 15)),
            to: Some(d(2024, 1, 31)),
            ..Default::default()
        },
        TxQuery {
            from: Some(d(2024, 2, 1)),
            ..Default::default()
        },
        TxQuery {
            to: Some(d(2024, 1, 1)),
            ..Default::default()
        },
        TxQuery {
            min_amount: Some(dec("0.10")),
            ..Default::default()
        },
        TxQuery {
            max_amount: Some(dec("-0.10")),
            ..Default::default()
        },
        TxQuery {
            min_amount: Some(dec("-12.34")),
            max_amount: Some(dec("12.34")),
            ..Default::default()
        },
        TxQuery {
            min_amount: Some(dec("0.1")),
            max_amount: Some(dec("0.1")),
            ..Default::default()
        },
        TxQuery {
            status: Some(TxStatus::Pending),
            ..Default::default()
        },
        TxQuery {
            status: Some(TxStatus::Void),
            account_id: Some(accounts[0].1),
            ..Default::default()
        },
        TxQuery {
            updated_since: Some(t(2000)),
            ..Default::default()
        },
        TxQuery {
            updated_since: Some(t(3001)),
            ..Default::default()
        },
        TxQuery {
            after: Some((mid.booking_date, mid.id)),
            ..Default::default()
        },
        TxQuery {
            limit: Some(10),
            ..Default::default()
        },
        TxQuery {
            limit: Some(0),
            ..Default::default()
        },
        TxQuery {
            text: Some("coffee".into()),
            ..Default::default()
        },
        TxQuery {
            text: Some("acme".into()),
            status: Some(TxStatus::Booked),
            ..Default::default()
        },
        TxQuery {
            account_id: Some(9_999),
            ..Default::default()
        },
    ];
    // Random combinations.
    let mut seed: u64 = 7;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    let texts = [
        "shop",
        "ПЛАЩАНЕ",
        "картa",
        "50%",
        "_",
        "rent",
        "barista ltd",
        "фантастико",
    ];
    for _ in 0..60 {
        let pick = |next: &mut dyn FnMut(u64) -> u64| next(3) == 0;
        let mut q = TxQuery::default();
        if pick(&mut next) {
            q.account_id = Some(accounts[next(3) as usize].1);
        }
        if pick(&mut next) {
            q.connection_id = Some(accounts[next(3) as usize].0);
        }
        if pick(&mut next) {
            q.from = Some(d(2024, 1, 1) + Duration::days(next(60) as i64));
        }
        if pick(&mut next) {
            q.to = Some(d(2024, 1, 1) + Duration::days(next(60) as i64));
        }
        if pick(&mut next) {
            q.min_amount = Some(dec(["-100", "-0.10", "0", "12.34"][next(4) as usize]));
        }
        if pick(&mut next) {
            q.max_amount = Some(dec(["-2.5", "0", "99.99", "2000"][next(4) as usize]));
        }
        if pick(&mut next) {
            q.text = Some(texts[next(texts.len() as u64) as usize].to_owned());
        }
        if pick(&mut next) {
            q.status =
                Some([TxStatus::Pending, TxStatus::Booked, TxStatus::Void][next(3) as usize]);
        }
        if pick(&mut next) {
            q.updated_since = Some(t(1000 * next(4) as i64));
        }
        if pick(&mut next) {
            let r = &all[next(all.len() as u64) as usize];
            q.after = Some((r.booking_date, r.id));
        }
        if pick(&mut next) {
            q.limit = Some(next(50) as u32);
        }
        queries.push(q);
    }
    let mut non_empty = 0;
    for q in &queries {
        let got: Vec<i64> = s
            .query_transactions(q)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(got, reference(&all, q), "query {q:?}");
        if !got.is_empty() {
            non_empty += 1;
        }
    }
    assert!(
        non_empty > queries.len() / 2,
        "the fixture should make most queries match something"
    );
}

async fn keyset_pagination_sees_every_row_once(s: Arc<dyn Store>) {
    let (accounts, all) = query_fixture(&s).await;
    for base in [
        TxQuery::default(),
        TxQuery {
            account_id: Some(accounts[0].1),
            ..Default::default()
        },
        TxQuery {
            status: Some(TxStatus::Booked),
            min_amount: Some(dec("0")),
            ..Default::default()
        },
    ] {
        let expected = reference(&all, &base);
        let mut seen = Vec::new();
        let mut after = None;
        let mut pages = 0;
        loop {
            let page = s
                .query_transactions(&TxQuery {
                    after,
                    limit: Some(7),
                    ..base.clone()
                })
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 7);
            pages += 1;
            let last = page.last().unwrap();
            after = Some((last.booking_date, last.id));
            seen.extend(page.into_iter().map(|r| r.id));
        }
        let unique: HashSet<i64> = seen.iter().copied().collect();
        assert_eq!(unique.len(), seen.len(), "a row came twice");
        assert_eq!(seen, expected, "pages differ from one query");
        assert_eq!(pages, expected.len().div_ceil(7));
    }
}

async fn categories_are_set_compared_and_filtered(s: Arc<dyn Store>) {
    let (conn, acc) = setup(&s, "cats").await;
    let mut w = window(conn, acc, t(0));
    for p in ["c1", "c2", "c3"] {
        w.inserts.push(tw(p, d(2024, 5, 1), "-3.00"));
    }
    s.commit_window(&w).await.unwrap();
    let rows = all_rows(&s, acc).await;
    assert!(rows.iter().all(|r| r.category.is_none()));
    let id = |p: &str| by_provider(&rows, p).id;
    let changes = vec![
        (id("c1"), Some("food".to_owned())),
        (id("c2"), Some("food".to_owned())),
        (id("c3"), None),
    ];
    // c3 is already uncategorised: only two rows change, once.
    assert_eq!(s.set_categories(&changes, t(10)).await.unwrap(), 2);
    assert_eq!(s.set_categories(&changes, t(20)).await.unwrap(), 0);
    let food = s
        .query_transactions(&TxQuery {
            category: Some("food".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(food.len(), 2);
    assert!(
        food.iter().all(|r| r.updated_at == t(10)
            && r.raw_label == by_provider(&rows, &r.provider_id).raw_label)
    );
    // A changed category is visible to incremental pulls.
    let since = s
        .query_transactions(&TxQuery {
            updated_since: Some(t(5)),
            account_id: Some(acc),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(since.len(), 2);

    // A person's own category: rules never overwrite it, raw fields stay.
    assert!(
        s.set_manual_category(id("c1"), Some("gifts"), t(30))
            .await
            .unwrap()
    );
    assert!(
        !s.set_manual_category(i64::MAX, Some("x"), t(30))
            .await
            .unwrap()
    );
    let rules = vec![
        (id("c1"), Some("food".to_owned())),
        (id("c3"), Some("food".to_owned())),
    ];
    assert_eq!(s.set_categories(&rules, t(40)).await.unwrap(), 1, "c3 only");
    let now = all_rows(&s, acc).await;
    let c1 = by_provider(&now, "c1");
    assert_eq!(c1.category.as_deref(), Some("gifts"));
    assert_eq!(c1.raw_label, by_provider(&rows, "c1").raw_label);
    assert_eq!(c1.updated_at, t(30));
    // Cleared by hand, the row is the rules' again.
    assert!(s.set_manual_category(id("c1"), None, t(50)).await.unwrap());
    assert_eq!(s.set_categories(&rules, t(60)).await.unwrap(), 1);
    assert_eq!(
        by_provider(&all_rows(&s, acc).await, "c1")
            .category
            .as_deref(),
        Some("food")
    );
}

async fn flows_sum_booked_money_per_month_and_category(s: Arc<dyn Store>) {
    use bankbridge_store::FlowGrouping;
    assert_eq!(s.transactions_changed_at().await.unwrap(), None);
    let (conn, acc) = setup(&s, "flows").await;
    let mut w = window(conn, acc, t(0));
    for (p, day, amount) in [
        ("f1", d(2024, 4, 30), "-0.10"),
        ("f2", d(2024, 5, 1), "-0.20"),
        ("f3", d(2024, 5, 2), "1500.05"),
        ("f4", d(2024, 5, 31), "-12345678.9999"),
        ("f5", d(2024, 6, 1), "7.00"),
        ("f6", d(2024, 5, 15), "-99.00"),
    ] {
        w.inserts.push(tw(p, day, amount));
    }
    w.inserts.last_mut().unwrap().status = bankbridge_core::TxStatus::Pending;
    s.commit_window(&w).await.unwrap();
    let rows = all_rows(&s, acc).await;
    s.set_categories(&[(by_provider(&rows, "f2").id, Some("food".into()))], t(1))
        .await
        .unwrap();

    let stamp = s.transactions_changed_at().await.unwrap();
    assert_eq!(stamp, Some(t(1)), "the category change is the newest");
    assert_eq!(
        s.months_changed_since(t(0)).await.unwrap(),
        vec!["2024-05".to_owned()],
        "f2's category"
    );
    assert!(s.months_changed_since(t(1)).await.unwrap().is_empty());
    assert_eq!(
        s.months_changed_since(t(0) - Duration::seconds(1))
            .await
            .unwrap()
            .len(),
        3
    );
    let months = s
        .flows(d(2024, 5, 1), d(2024, 6, 30), FlowGrouping::AccountMonth)
        .await
        .unwrap();
    /// (month, account, debit, credit, count)
    type MonthView<'a> = (Option<&'a str>, Option<i64>, String, String, u64);
    let view: Vec<MonthView> = months
        .iter()
        .map(|f| {
            (
                f.key.as_deref(),
                f.account_id,
                f.debit.to_string(),
                f.credit.to_string(),
                f.count,
            )
        })
        .collect();
    // April is outside; the pending row is not booked money; sums are exact.
    assert_eq!(
        view,
        vec![
            (
                Some("2024-05"),
                Some(acc),
                "-12345679.1999".into(),
                "1500.05".into(),
                3
            ),
            (Some("2024-06"), Some(acc), "0".into(), "7".into(), 1),
        ]
    );
    assert!(months.iter().all(|f| f.currency.as_str() == "BGN"));
    let cats = s
        .flows(d(2024, 1, 1), d(2024, 12, 31), FlowGrouping::Category)
        .await
        .unwrap();
    let view: Vec<(Option<&str>, String, u64)> = cats
        .iter()
        .map(|f| (f.key.as_deref(), f.debit.to_string(), f.count))
        .collect();
    assert_eq!(
        view,
        vec![
            (None, "-12345679.0999".into(), 4),
            (Some("food"), "-0.2".into(), 1)
        ],
        "uncategorised first"
    );
}

async fn text_search_is_case_insensitive_and_literal(s: Arc<dyn Store>) {
    let (conn, acc) = setup(&s, "text").await;
    let mut w = window(conn, acc, t(0));
    let specs = [
        ("t-cyr", "ПЛАЩАНЕ С КАРТА", None, None),
        ("t-pct", "Discount 50% today", None, None),
        ("t-50", "Discount 500 today", None, None),
        ("t-us", "a_b", None, None),
        ("t-ab", "axb", None, None),
        ("t-cp", "transfer", Some("Élodie Müller"), None),
        ("t-rem", "transfer", None, Some("Invoice NO. 7")),
    ];
    for (p, label, cp, rem) in specs {
        let mut x = tw(p, d(2024, 4, 1), "1.00");
        x.label = label.to_owned();
        x.raw_label = label.to_owned();
        x.counterparty_name = cp.map(str::to_owned);
        x.remittance_info = rem.map(str::to_owned);
        w.inserts.push(x);
    }
    s.commit_window(&w).await.unwrap();
    let find = |text: &str| {
        let s = s.clone();
        let q = TxQuery {
            text: Some(text.to_owned()),
            account_id: Some(acc),
            ..Default::default()
        };
        async move {
            let mut v: Vec<String> = s
                .query_transactions(&q)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.provider_id)
                .collect();
            v.sort();
            v
        }
    };
    assert_eq!(find("плащане").await, vec!["t-cyr"]);
    assert_eq!(find("с карта").await, vec!["t-cyr"]);
    assert_eq!(find("50%").await, vec!["t-pct"]);
    assert_eq!(find("a_b").await, vec!["t-us"]);
    assert_eq!(find("ÉLODIE").await, vec!["t-cp"]);
    assert_eq!(find("invoice no").await, vec!["t-rem"]);
    assert_eq!(find("DISCOUNT").await, vec!["t-50", "t-pct"]);
    assert!(find("%%").await.is_empty());
    assert!(find("zzz").await.is_empty());
}

async fn stream_equals_query(s: Arc<dyn Store>) {
    let (accounts, all) = query_fixture(&s).await;
    for q in [
        TxQuery::default(),
        TxQuery {
            account_id: Some(accounts[2].1),
            text: Some("acme".into()),
            ..Default::default()
        },
        TxQuery {
            from: Some(d(2024, 2, 1)),
            limit: Some(5),
            ..Default::default()
        },
        TxQuery {
            account_id: Some(9_999),
            ..Default::default()
        },
    ] {
        let listed = s.query_transactions(&q).await.unwrap();
        let streamed: Vec<Transaction> = s
            .stream_transactions(q.clone())
            .map(|r| r.unwrap())
            .collect::<Vec<_>>()
            .await;
        assert_eq!(streamed, listed, "query {q:?}");
    }
    // Dropping a stream early is fine, and the store still works after.
    let first3: Vec<_> = s
        .stream_transactions(TxQuery::default())
        .take(3)
        .collect::<Vec<_>>()
        .await;
    assert_eq!(first3.len(), 3);
    drop(first3);
    assert_eq!(
        s.query_transactions(&TxQuery::default())
            .await
            .unwrap()
            .len(),
        all.len()
    );
}

/// Rows whose every field takes the shapes that are hard to write as JSON:
/// amounts off their currency's scale, escapes, non-ASCII, nulls, instants
/// with 0, 3 and 6 fractional digits, and enough of them for several chunks.
async fn json_fixture(s: &Arc<dyn Store>) -> i64 {
    let (conn, acc) = setup(s, "json").await;
    let amounts = [
        ("-8", "EUR"),
        ("-208.3", "BGN"),
        ("8.125", "EUR"),
        ("1500.00", "JPY"),
        ("-0.00", "EUR"),
        ("12.3", "KWD"),
        ("12345678901.23", "BGN"),
    ];
    let texts = [
        "plain",
        "quote \" and backslash \\ and slash /",
        "control \u{1f}\u{7}\t\n\r end",
        "Кирилица и emoji 🧾, accents é",
        "<tag>&amp;</tag>",
    ];
    let nows = [
        Utc.with_ymd_and_hms(2024, 6, 1, 8, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(2024, 6, 1, 8, 0, 1).unwrap() + Duration::milliseconds(120),
        t(7),
    ];
    let mut ids = 0;
    for (n, now) in nows.iter().enumerate() {
        let mut w = window(conn, acc, *now);
        for i in 0..60 {
            let k = n * 60 + i;
            let (amount, currency) = amounts[k % amounts.len()];
            let text = texts[k % texts.len()];
            let mut x = tw(
                &format!("J{k}"),
                d(2024, 1, 1) + Duration::days((k % 40) as i64),
                amount,
            );
            x.currency = currency.to_owned();
            x.status = [TxStatus::Booked, TxStatus::Pending, TxStatus::Void][k % 3];
            x.pending_provider_id = (k % 4 == 0).then(|| format!("P{k}"));
            x.value_date = (k % 2 == 0).then(|| x.booking_date + Duration::days(2));
            x.transaction_date = (k % 3 == 0).then(|| x.booking_date - Duration::days(1));
            x.original_amount = (k % 5 < 2).then(|| dec(["-7.5", "1000"][k % 2]));
            x.original_currency = (k % 5 == 0).then(|| "JPY".to_owned());
            x.running_balance = (k % 6 != 0).then(|| dec(["100", "-3.1", "0.005"][k % 3]));
            x.raw_label = format!("{text} {k}");
            x.label = text.to_owned();
            x.counterparty_name = (k % 2 == 1).then(|| text.to_owned());
            x.counterparty_iban = (k % 7 == 0).then(|| "BG80BNBG96611020345678".to_owned());
            x.remittance_info = Some(format!("{text} ").repeat(20));
            x.bank_code = (k % 3 != 1).then(|| format!("code/{k}"));
            x.raw = serde_json::to_string(&serde_json::json!({
                "k": k, "text": text, "big": 12345678901234567890u64, "f": 3628.33,
                "neg": -0.5, "nested": {"a": [1, null, true, "x\u{1}"]},
            }))
            .unwrap();
            w.inserts.push(x);
        }
        s.commit_window(&w).await.unwrap();
        ids += 60;
    }
    let rows = all_rows(s, acc).await;
    let changes: Vec<(i64, Option<String>)> = rows
        .iter()
        .step_by(3)
        .map(|r| (r.id, Some(format!("cat \"{}\" é", r.id % 4))))
        .collect();
    s.set_categories(&changes, t(9)).await.unwrap();
    assert_eq!(rows.len(), ids);
    acc
}

async fn json_rows_are_the_bytes_a_transaction_serialises_to(s: Arc<dyn Store>) {
    let acc = json_fixture(&s).await;
    let joined = |rows: &[Transaction], sep: &str| -> String {
        rows.iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect::<Vec<_>>()
            .join(sep)
    };
    for q in [
        TxQuery::default(),
        TxQuery {
            account_id: Some(acc),
            newest_first: true,
            ..Default::default()
        },
        TxQuery {
            text: Some("кирилица".into()),
            status: Some(TxStatus::Booked),
            ..Default::default()
        },
        TxQuery {
            account_id: Some(9_999),
            ..Default::default()
        },
    ] {
        let typed = s.query_transactions(&q).await.unwrap();
        // The stream: chunks of whole rows, joined as the export joins them.
        let chunks: Vec<_> = s
            .stream_transactions_json(q.clone())
            .map(|c| c.unwrap())
            .collect()
            .await;
        if q.account_id == Some(acc) {
            assert!(chunks.len() > 1, "the fixture spans several chunks");
        }
        assert!(chunks.iter().all(|c| c.rows > 0));
        let streamed = chunks
            .iter()
            .map(|c| String::from_utf8(c.bytes.clone()).unwrap())
            .collect::<Vec<_>>()
            .join(",\n");
        assert_eq!(streamed, joined(&typed, ",\n"), "stream of {q:?}");
        assert_eq!(
            chunks.iter().map(|c| c.rows).sum::<u64>(),
            typed.len() as u64
        );
        // Pages of 7 walked with their cursor give every row once, in order.
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let mut out = Vec::new();
            let page = s
                .transactions_page_json(
                    &TxQuery {
                        limit: Some(7),
                        after,
                        ..q.clone()
                    },
                    &mut out,
                )
                .await
                .unwrap();
            let rows: Vec<serde_json::Value> =
                serde_json::from_slice(&[b"[", &out[..], b"]"].concat()).unwrap();
            assert_eq!(rows.len(), page.rows);
            let start = seen.len();
            seen.extend_from_slice(&typed[start..(start + page.rows).min(typed.len())]);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                joined(&seen[start..], ","),
                "page of {q:?} after {after:?}"
            );
            match page.more_after {
                Some(key) => {
                    assert_eq!(page.rows, 7);
                    let last = seen.last().unwrap();
                    assert_eq!(key, (last.booking_date, last.id));
                    after = Some(key);
                }
                None => break,
            }
        }
        assert_eq!(seen.len(), typed.len(), "pages of {q:?}");
    }
    // An exact multiple of the page size says no more on its last page.
    let all = s.query_transactions(&TxQuery::default()).await.unwrap();
    let mut out = Vec::new();
    let page = s
        .transactions_page_json(
            &TxQuery {
                limit: Some(all.len() as u32),
                ..Default::default()
            },
            &mut out,
        )
        .await
        .unwrap();
    assert_eq!((page.rows, page.more_after), (all.len(), None));
}

async fn token_lifecycle(s: Arc<dyn Store>) {
    let rec = TokenRecord {
        id: "abc123".into(),
        name: "airtable".into(),
        scope: Scope::Read,
        hash: vec![0xAA; 32],
        created_at: t(0),
        last_used_at: None,
        revoked_at: None,
        location: None,
        expires_at: None,
    };
    s.create_token(&rec).await.unwrap();
    assert!(matches!(
        s.create_token(&rec).await,
        Err(StoreError::Conflict(_))
    ));
    let admin = TokenRecord {
        id: "def456".into(),
        name: "ops".into(),
        scope: Scope::Admin,
        created_at: t(1),
        // The expiry is kept to the microsecond, like every time.
        expires_at: Some(t(90 * 86_400)),
        ..rec.clone()
    };
    s.create_token(&admin).await.unwrap();
    assert_eq!(s.find_token("abc123").await.unwrap().unwrap(), rec);
    assert!(s.find_token("nope").await.unwrap().is_none());
    assert_eq!(
        s.list_tokens().await.unwrap(),
        vec![rec.clone(), admin.clone()]
    );

    s.touch_token("abc123", t(5)).await.unwrap();
    assert_eq!(
        s.find_token("abc123").await.unwrap().unwrap().last_used_at,
        Some(t(5))
    );
    s.touch_token("nope", t(5)).await.unwrap();

    assert!(s.revoke_token("airtable", t(10)).await.unwrap());
    assert_eq!(
        s.find_token("abc123").await.unwrap().unwrap().revoked_at,
        Some(t(10))
    );
    // Revoking again keeps the first revocation time.
    assert!(s.revoke_token("abc123", t(20)).await.unwrap());
    assert_eq!(
        s.find_token("abc123").await.unwrap().unwrap().revoked_at,
        Some(t(10))
    );
    assert!(!s.revoke_token("nobody", t(20)).await.unwrap());

    // A one-time sign-in link: once, before it expires, for a token that exists.
    s.create_login_link(&[1; 32], "def456", t(0), t(900))
        .await
        .unwrap();
    s.create_login_link(&[2; 32], "def456", t(0), t(900))
        .await
        .unwrap();
    assert!(matches!(
        s.create_login_link(&[3; 32], "nope", t(0), t(900)).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.use_login_link(&[9; 32], t(1)).await.unwrap(), None);
    assert_eq!(
        s.use_login_link(&[1; 32], t(1)).await.unwrap().as_deref(),
        Some("def456")
    );
    assert_eq!(
        s.use_login_link(&[1; 32], t(2)).await.unwrap(),
        None,
        "once"
    );
    assert_eq!(
        s.use_login_link(&[2; 32], t(900)).await.unwrap(),
        None,
        "expired"
    );
    assert!(
        s.find_token("def456")
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_none()
    );
    assert!(s.revoke_token("def456", t(30)).await.unwrap());
    assert_eq!(
        s.find_token("def456").await.unwrap().unwrap().revoked_at,
        Some(t(30))
    );
}

async fn simplefin_tokens_are_claimed_once(s: Arc<dyn Store>) {
    use bankbridge_store::SimplefinToken;
    let token = SimplefinToken {
        id: "sf1".into(),
        name: "actual".into(),
        accounts: vec![3, 5],
        base_url: "https://127.0.0.1:8443/simplefin".into(),
        created_at: t(0),
        claimed_at: None,
        last_used_at: None,
        revoked_at: None,
    };
    s.create_simplefin_token(&token, &[1; 32]).await.unwrap();
    assert!(matches!(
        s.create_simplefin_token(
            &SimplefinToken {
                id: "sf2".into(),
                ..token.clone()
            },
            &[2; 32]
        )
        .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        s.list_simplefin_tokens().await.unwrap(),
        vec![token.clone()]
    );
    assert!(
        s.simplefin_access("sf1").await.unwrap().is_none(),
        "not claimed yet"
    );
    assert!(
        s.claim_simplefin_token(&[9; 32], &[7; 32], t(1))
            .await
            .unwrap()
            .is_none()
    );
    let claimed = s
        .claim_simplefin_token(&[1; 32], &[7; 32], t(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.claimed_at, Some(t(1)));
    assert_eq!(claimed.accounts, vec![3, 5]);
    assert!(
        s.claim_simplefin_token(&[1; 32], &[8; 32], t(2))
            .await
            .unwrap()
            .is_none(),
        "a second claim loses"
    );
    let (found, hash) = s.simplefin_access("sf1").await.unwrap().unwrap();
    assert_eq!(hash, vec![7; 32]);
    assert_eq!(found.revoked_at, None);
    s.touch_simplefin_token("sf1", t(3)).await.unwrap();
    assert!(s.revoke_simplefin_token("actual", t(4)).await.unwrap());
    assert!(!s.revoke_simplefin_token("nope", t(4)).await.unwrap());
    let (found, _) = s.simplefin_access("sf1").await.unwrap().unwrap();
    assert_eq!(found.revoked_at, Some(t(4)));
    assert_eq!(found.last_used_at, Some(t(3)));
    // An unclaimed token that is revoked can no longer be claimed.
    let other = SimplefinToken {
        id: "sf3".into(),
        name: "sure".into(),
        ..token
    };
    s.create_simplefin_token(&other, &[3; 32]).await.unwrap();
    assert!(s.revoke_simplefin_token("sf3", t(5)).await.unwrap());
    assert!(
        s.claim_simplefin_token(&[3; 32], &[4; 32], t(6))
            .await
            .unwrap()
            .is_none()
    );
}

async fn export_marks_round_trip(s: Arc<dyn Store>) {
    use bankbridge_store::ExportMark;
    assert_eq!(s.export_mark("books").await.unwrap(), None);
    let mut mark = ExportMark {
        name: "books".into(),
        format: "ledger".into(),
        mark: t(10),
        opened: vec!["Assets:Bank:X".into(), "Expenses:Кафе".into()],
        exports: 1,
        updated_at: t(11),
    };
    s.save_export_mark(&mark).await.unwrap();
    assert_eq!(s.export_mark("books").await.unwrap().as_ref(), Some(&mark));
    mark.mark = t(20);
    mark.exports = 2;
    mark.opened.push("Income:Salary".into());
    s.save_export_mark(&mark).await.unwrap();
    assert_eq!(s.export_mark("books").await.unwrap(), Some(mark));
}

async fn sync_jobs(s: Arc<dyn Store>) {
    let c = s.create_connection(&new_connection("jobs")).await.unwrap();
    let job = s.create_sync_job(c.id, t(0)).await.unwrap();
    assert_eq!(
        job,
        SyncJob {
            id: job.id,
            connection_id: c.id,
            status: "queued".into(),
            created_at: t(0),
            started_at: None,
            finished_at: None,
            summary: None,
            error: None,
        }
    );
    let done = SyncJob {
        status: "succeeded".into(),
        started_at: Some(t(1)),
        finished_at: Some(t(9)),
        summary: Some(serde_json::json!({"inserted": 12, "updated": 1, "windows": 3})),
        ..job.clone()
    };
    s.update_sync_job(&done).await.unwrap();
    assert_eq!(s.get_sync_job(job.id).await.unwrap().unwrap(), done);
    let failed = SyncJob {
        status: "failed".into(),
        error: Some("bank timeout".into()),
        summary: None,
        ..done
    };
    s.update_sync_job(&failed).await.unwrap();
    assert_eq!(s.get_sync_job(job.id).await.unwrap().unwrap(), failed);
    let second = s.create_sync_job(c.id, t(20)).await.unwrap();
    assert_ne!(second.id, job.id);
    assert!(s.get_sync_job(9_999).await.unwrap().is_none());
    assert!(matches!(
        s.update_sync_job(&SyncJob {
            id: 9_999,
            ..failed
        })
        .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.create_sync_job(9_999, t(0)).await,
        Err(StoreError::NotFound(_))
    ));
}

// ---------------------------------------------------------------- card service

const PIN: [u8; 6] = [0xDE, 0xAD, 0xBE, 0xEF, 0x2A, 0x2B];

fn new_institution(id: &str, name: &str) -> NewInstitution {
    NewInstitution {
        id: id.to_owned(),
        name: name.to_owned(),
        country: Some("BG".to_owned()),
    }
}

fn new_card(id: &str, institution_id: &str, reader: &str, label: &str) -> NewCard {
    NewCard {
        id: id.to_owned(),
        institution_id: institution_id.to_owned(),
        label: label.to_owned(),
        account_reference: "BG80BNBG96611020345678".to_owned(),
        host: None,
        reader: reader.to_owned(),
        pan_last4: Some("1234".to_owned()),
        psn: Some("01".to_owned()),
        records_digest: Some("ab".repeat(32)),
        application: Some("CAP".to_owned()),
        pin_sealed: PIN.to_vec(),
        min_pin_tries: 2,
        created_at: t(0),
    }
}

fn conflict_message<T: std::fmt::Debug>(r: Result<T, StoreError>) -> String {
    match r {
        Err(StoreError::Conflict(m)) => m,
        other => panic!("expected StoreError::Conflict, got {other:?}"),
    }
}

async fn upgrade_from_0001_keeps_data(location: String) {
    // A database as the previous release left it: migration 1 only.
    let folder = if location.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(folder);
    let mut old = sqlx::migrate::Migrator::new(path).await.unwrap();
    old.migrations = old
        .migrations
        .iter()
        .filter(|m| m.version == 1)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    assert_eq!(old.migrations.len(), 1);
    if location.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(&location).await.unwrap();
        old.run_direct(&mut c).await.unwrap();
        c.execute(
            "INSERT INTO connections (name, connector, settings, credentials_sealed, created_at) \
                   VALUES ('old', 'fibank', '{}', '\\x01'::bytea, now())",
        )
        .await
        .unwrap();
        c.close().await.unwrap();
    } else {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&location)
            .create_if_missing(true);
        let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
        old.run_direct(&mut c).await.unwrap();
        c.execute(
            "INSERT INTO connections (name, connector, settings, credentials_sealed, created_at) \
                   VALUES ('old', 'fibank', '{}', x'01', '2024-05-01T10:00:00+00:00')",
        )
        .await
        .unwrap();
        c.close().await.unwrap();
    }
    let s = bankbridge_store::open(&location)
        .await
        .expect("open upgrades");
    let conns = s.list_connections().await.unwrap();
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].name, "old");
    s.create_institution(&new_institution("fi_1", "First Bank"))
        .await
        .unwrap();
    s.create_card(&new_card("card_1", "fi_1", "reader 0", "Ops"))
        .await
        .unwrap();
    assert_eq!(s.list_cards(None).await.unwrap().len(), 1);
}

async fn institution_crud(s: Arc<dyn Store>) {
    let b = s
        .create_institution(&new_institution("fi_b", "Bravo Bank"))
        .await
        .unwrap();
    assert_eq!(b.id, "fi_b");
    assert_eq!(b.name, "Bravo Bank");
    assert_eq!(b.country.as_deref(), Some("BG"));
    let a = s
        .create_institution(&NewInstitution {
            id: "fi_a".into(),
            name: "Alpha Bank".into(),
            country: None,
        })
        .await
        .unwrap();
    assert_eq!(a.country, None);
    // By name, not by id or creation.
    assert_eq!(
        s.list_institutions().await.unwrap(),
        vec![a.clone(), b.clone()]
    );
    assert_eq!(s.get_institution("fi_b").await.unwrap(), Some(b.clone()));
    assert_eq!(s.get_institution("fi_none").await.unwrap(), None);

    let m = conflict_message(
        s.create_institution(&new_institution("fi_c", "Bravo Bank"))
            .await,
    );
    assert!(m.contains("named \"Bravo Bank\""), "{m}");
    let m = conflict_message(
        s.create_institution(&new_institution("fi_b", "Charlie Bank"))
            .await,
    );
    assert!(m.contains("id \"fi_b\""), "{m}");
    let m = conflict_message(
        s.create_institution(&NewInstitution {
            country: Some("bg".into()),
            ..new_institution("fi_c", "Charlie Bank")
        })
        .await,
    );
    assert!(m.contains("ISO 3166"), "{m}");
    conflict_message(s.create_institution(&new_institution("fi_c", " ")).await);
    conflict_message(s.create_institution(&new_institution("", "Charlie")).await);
    assert_eq!(s.list_institutions().await.unwrap().len(), 2);

    assert!(s.delete_institution("fi_a").await.unwrap());
    assert!(!s.delete_institution("fi_a").await.unwrap());
    assert_eq!(s.list_institutions().await.unwrap(), vec![b]);
}

async fn card_crud(s: Arc<dyn Store>) {
    s.create_institution(&new_institution("fi_1", "First"))
        .await
        .unwrap();
    s.create_institution(&new_institution("fi_2", "Second"))
        .await
        .unwrap();
    let new = new_card("card_b", "fi_1", "Reader A 00 00", "Payroll");
    let card = s.create_card(&new).await.unwrap();
    assert_eq!(
        card,
        Card {
            id: "card_b".into(),
            institution_id: "fi_1".into(),
            label: "Payroll".into(),
            account_reference: "BG80BNBG96611020345678".into(),
            host: None,
            reader: "Reader A 00 00".into(),
            pan_last4: Some("1234".into()),
            psn: Some("01".into()),
            records_digest: Some("ab".repeat(32)),
            application: Some("CAP".into()),
            status: CardStatus::Active,
            status_reason: None,
            pin_refused: false,
            pin_sealed: PIN.to_vec(),
            min_pin_tries: 2,
            last_used_at: None,
            created_at: t(0),
            updated_at: t(0),
            pin_tries_left: None,
        }
    );
    let other = s
        .create_card(&NewCard {
            psn: None,
            application: None,
            min_pin_tries: 0,
            ..new_card("card_a", "fi_2", "Reader B", "Payroll")
        })
        .await
        .unwrap();
    assert_eq!((other.psn.as_deref(), other.min_pin_tries), (None, 0));
    // A CAP-only card: no card number, its records digest is its identity.
    let numberless = s
        .create_card(&NewCard {
            pan_last4: None,
            psn: None,
            ..new_card("card_n", "fi_2", "Reader N", "UK")
        })
        .await
        .unwrap();
    assert_eq!(numberless.pan_last4, None);
    assert_eq!(numberless.records_digest, Some("ab".repeat(32)));
    assert!(s.delete_card("card_n").await.unwrap());
    let third = s
        .create_card(&new_card("card_c", "fi_1", "Reader C", "Expenses"))
        .await
        .unwrap();

    assert_eq!(s.get_card("card_b").await.unwrap(), Some(card.clone()));
    assert_eq!(s.get_card("card_none").await.unwrap(), None);
    assert_eq!(
        s.find_card_by_reader(None, "Reader A 00 00").await.unwrap(),
        Some(card.clone())
    );
    assert_eq!(s.find_card_by_reader(None, "Reader Z").await.unwrap(), None);
    // A card host's reader may share its name with the server's (or another
    // host's): one card per reader of a host.
    let remote = s
        .create_card(&NewCard {
            host: Some("office-pi".into()),
            ..new_card("card_r", "fi_2", "Reader A 00 00", "Remote")
        })
        .await
        .unwrap();
    assert_eq!(remote.host.as_deref(), Some("office-pi"));
    assert_eq!(
        s.find_card_by_reader(Some("office-pi"), "Reader A 00 00")
            .await
            .unwrap(),
        Some(remote.clone())
    );
    assert_eq!(
        s.find_card_by_reader(None, "Reader A 00 00").await.unwrap(),
        Some(card.clone())
    );
    match s
        .create_card(&NewCard {
            host: Some("office-pi".into()),
            ..new_card("card_r2", "fi_2", "Reader A 00 00", "Remote 2")
        })
        .await
    {
        Err(StoreError::Conflict(m)) => {
            assert!(m.contains("office-pi") && m.contains("card_r"), "{m}")
        }
        other => panic!("a second card in a host's reader: {other:?}"),
    }
    assert!(s.delete_card("card_r").await.unwrap());
    // By label, then id.
    assert_eq!(
        s.list_cards(None).await.unwrap(),
        vec![third.clone(), other.clone(), card.clone()]
    );
    assert_eq!(
        s.list_cards(Some("fi_1")).await.unwrap(),
        vec![third.clone(), card.clone()]
    );
    assert!(s.list_cards(Some("fi_none")).await.unwrap().is_empty());

    // Unknown institution, malformed fields: refused, nothing written.
    match s
        .create_card(&new_card("card_x", "fi_none", "Reader X", "X"))
        .await
    {
        Err(StoreError::NotFound(m)) => assert!(m.contains("institution \"fi_none\""), "{m}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    let m = conflict_message(
        s.create_card(&NewCard {
            pan_last4: Some("12a4".into()),
            ..new_card("card_x", "fi_1", "Reader X", "X")
        })
        .await,
    );
    assert!(m.contains("pan_last4"), "{m}");
    let m = conflict_message(
        s.create_card(&NewCard {
            records_digest: Some("not hex".into()),
            ..new_card("card_x", "fi_1", "Reader X", "X")
        })
        .await,
    );
    assert!(m.contains("records_digest"), "{m}");
    let m = conflict_message(
        s.create_card(&NewCard {
            pan_last4: None,
            records_digest: None,
            ..new_card("card_x", "fi_1", "Reader X", "X")
        })
        .await,
    );
    assert!(m.contains("identifies"), "{m}");
    let m = conflict_message(
        s.create_card(&NewCard {
            psn: Some("1".into()),
            ..new_card("card_x", "fi_1", "Reader X", "X")
        })
        .await,
    );
    assert!(m.contains("PAN sequence number"), "{m}");
    let m = conflict_message(
        s.create_card(&NewCard {
            pin_sealed: Vec::new(),
            ..new_card("card_x", "fi_1", "Reader X", "X")
        })
        .await,
    );
    assert!(m.contains("sealed PIN"), "{m}");
    conflict_message(s.create_card(&new_card("card_x", "fi_1", "", "X")).await);
    conflict_message(
        s.create_card(&new_card("card_x", "fi_1", "Reader X", ""))
            .await,
    );
    assert_eq!(s.list_cards(None).await.unwrap().len(), 3);
    assert_eq!(s.find_card_by_reader(None, "Reader X").await.unwrap(), None);

    assert!(s.delete_card("card_b").await.unwrap());
    assert!(!s.delete_card("card_b").await.unwrap());
    assert_eq!(s.get_card("card_b").await.unwrap(), None);
    assert_eq!(
        s.find_card_by_reader(None, "Reader A 00 00").await.unwrap(),
        None
    );
    assert_eq!(s.list_cards(None).await.unwrap(), vec![third, other]);
}

async fn one_card_per_reader(s: Arc<dyn Store>) {
    s.create_institution(&new_institution("fi_1", "First"))
        .await
        .unwrap();
    let first = s
        .create_card(&new_card("card_1", "fi_1", "Gemalto USB 0", "Main"))
        .await
        .unwrap();
    let m = conflict_message(
        s.create_card(&new_card("card_2", "fi_1", "Gemalto USB 0", "Second"))
            .await,
    );
    assert!(m.contains("reader \"Gemalto USB 0\""), "{m}");
    assert!(m.contains("card_1"), "{m}");
    // The same id in another reader.
    let m = conflict_message(
        s.create_card(&new_card("card_1", "fi_1", "Gemalto USB 1", "Other"))
            .await,
    );
    assert!(m.contains("card_1"), "{m}");
    assert_eq!(s.list_cards(None).await.unwrap(), vec![first]);
    assert_eq!(
        s.find_card_by_reader(None, "Gemalto USB 1").await.unwrap(),
        None
    );

    // Freed by deleting the card.
    assert!(s.delete_card("card_1").await.unwrap());
    s.create_card(&new_card("card_2", "fi_1", "Gemalto USB 0", "Second"))
        .await
        .unwrap();

    // Racing registrations of one reader: exactly one wins.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.create_card(&new_card(&format!("race_{i}"), "fi_1", "Race reader", "R"))
                .await
        }));
    }
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::Conflict(m)) => assert!(m.contains("Race reader"), "{m}"),
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(won, 1);
}

async fn institution_with_cards_is_not_deleted(s: Arc<dyn Store>) {
    s.create_institution(&new_institution("fi_1", "First"))
        .await
        .unwrap();
    s.create_card(&new_card("card_1", "fi_1", "R1", "One"))
        .await
        .unwrap();
    s.create_card(&new_card("card_2", "fi_1", "R2", "Two"))
        .await
        .unwrap();
    let m = conflict_message(s.delete_institution("fi_1").await);
    assert!(m.contains("institution \"fi_1\""), "{m}");
    assert!(m.contains("2 cards"), "{m}");
    assert!(m.contains("card_1") && m.contains("card_2"), "{m}");
    assert!(s.get_institution("fi_1").await.unwrap().is_some());
    assert_eq!(s.list_cards(Some("fi_1")).await.unwrap().len(), 2);

    assert!(s.delete_card("card_1").await.unwrap());
    assert!(s.delete_card("card_2").await.unwrap());
    assert!(s.delete_institution("fi_1").await.unwrap());
    assert!(s.get_institution("fi_1").await.unwrap().is_none());
}

async fn update_card_changes_only_given_fields(s: Arc<dyn Store>) {
    s.create_institution(&new_institution("fi_1", "First"))
        .await
        .unwrap();
    let card = s
        .create_card(&new_card("card_1", "fi_1", "R1", "One"))
        .await
        .unwrap();

    let after = s
        .update_card(
            "card_1",
            &CardUpdate {
                label: Some("Renamed".into()),
                ..Default::default()
            },
            t(10),
        )
        .await
        .unwrap()
        .unwrap();
    let expected = Card {
        label: "Renamed".into(),
        updated_at: t(10),
        ..card.clone()
    };
    assert_eq!(after, expected);
    assert_eq!(s.get_card("card_1").await.unwrap(), Some(expected.clone()));

    let after = s
        .update_card(
            "card_1",
            &CardUpdate {
                account_reference: Some("BG18RZBB91550123456789".into()),
                pin_sealed: Some(vec![9, 8, 7]),
                min_pin_tries: Some(3),
                status: Some((CardStatus::Disabled, Some("lost".into()))),
                ..Default::default()
            },
            t(20),
        )
        .await
        .unwrap()
        .unwrap();
    let expected = Card {
        account_reference: "BG18RZBB91550123456789".into(),
        pin_sealed: vec![9, 8, 7],
        min_pin_tries: 3,
        status: CardStatus::Disabled,
        status_reason: Some("lost".into()),
        updated_at: t(20),
        ..expected
    };
    assert_eq!(after, expected);

    // Re-activating clears the reason when none is given.
    let after = s
        .update_card(
            "card_1",
            &CardUpdate {
                status: Some((CardStatus::Active, None)),
                ..Default::default()
            },
            t(30),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (after.status, after.status_reason),
        (CardStatus::Active, None)
    );
    assert_eq!(after.label, "Renamed");
    assert_eq!(after.pin_sealed, vec![9, 8, 7]);

    // An empty update only moves updated_at.
    let after = s
        .update_card("card_1", &CardUpdate::default(), t(40))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.updated_at, t(40));
    assert_eq!(after.created_at, t(0));

    assert_eq!(
        s.update_card("card_none", &CardUpdate::default(), t(50))
            .await
            .unwrap(),
        None
    );
    conflict_message(
        s.update_card(
            "card_1",
            &CardUpdate {
                label: Some(String::new()),
                min_pin_tries: Some(9),
                ..Default::default()
            },
            t(50),
        )
        .await,
    );
    conflict_message(
        s.update_card(
            "card_1",
            &CardUpdate {
                pin_sealed: Some(Vec::new()),
                ..Default::default()
            },
            t(50),
        )
        .await,
    );
    let now = s.get_card("card_1").await.unwrap().unwrap();
    assert_eq!((now.min_pin_tries, now.updated_at), (3, t(40)));
}

async fn set_card_status_is_compare_and_set(s: Arc<dyn Store>) {
    s.create_institution(&new_institution("fi_1", "First"))
        .await
        .unwrap();
    s.create_card(&new_card("card_1", "fi_1", "R1", "One"))
        .await
        .unwrap();
    assert!(
        s.set_card_status("card_1", CardStatus::Disabled, Some("wrong PIN"), t(5))
            .await
            .unwrap()
    );
    let c = s.get_card("card_1").await.unwrap().unwrap();
    assert_eq!(
        (c.status, c.status_reason.as_deref(), c.updated_at),
        (CardStatus::Disabled, Some("wrong PIN"), t(5))
    );
    // No longer active: nothing changes, the first reason stays.
    assert!(
        !s.set_card_status("card_1", CardStatus::Blocked, Some("later"), t(6))
            .await
            .unwrap()
    );
    assert_eq!(s.get_card("card_1").await.unwrap().unwrap(), c);
    assert!(
        !s.set_card_status("card_none", CardStatus::Disabled, None, t(6))
            .await
            .unwrap()
    );
    let m = conflict_message(
        s.set_card_status("card_1", CardStatus::Active, None, t(6))
            .await,
    );
    assert!(m.contains("update_card"), "{m}");

    // Racing wrong-PIN reports: exactly one disables the card.
    s.create_card(&new_card("card_2", "fi_1", "R2", "Two"))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.set_card_status(
                "card_2",
                CardStatus::Blocked,
                Some(&format!("request {i}")),
                t(100 + i),
            )
            .await
            .unwrap()
        }));
    }
    let mut winners = 0;
    for task in tasks {
        if task.await.unwrap() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
    assert_eq!(
        s.get_card("card_2").await.unwrap().unwrap().status,
        CardStatus::Blocked
    );

    // touch_card: last_used_at and the tries left, never backwards.
    let before = s.get_card("card_2").await.unwrap().unwrap();
    assert_eq!(before.pin_tries_left, None);
    s.touch_card("card_2", t(500), Some(3)).await.unwrap();
    s.touch_card("card_2", t(400), Some(1)).await.unwrap();
    let after = s.get_card("card_2").await.unwrap().unwrap();
    assert_eq!(
        after,
        Card {
            last_used_at: Some(t(500)),
            pin_tries_left: Some(3),
            ..before
        }
    );
    s.touch_card("card_none", t(1), None).await.unwrap();
    assert!(s.get_card("card_none").await.unwrap().is_none());
}

async fn a_card_that_may_have_refused_its_pin_needs_a_new_one(s: Arc<dyn Store>) {
    s.create_institution(&new_institution("fi_1", "First"))
        .await
        .unwrap();
    for (id, reader) in [("card_1", "R1"), ("card_2", "R2")] {
        s.create_card(&new_card(id, "fi_1", reader, id))
            .await
            .unwrap();
    }
    // Whatever the status was (an operator disabled it meanwhile), and twice
    // (the service retries): out of use, pin_refused.
    s.set_card_status("card_1", CardStatus::Disabled, Some("operator"), t(1))
        .await
        .unwrap();
    for at in [2, 3] {
        assert!(
            s.mark_card_pin_refused("card_1", "63C2 at VERIFY", false, t(at))
                .await
                .unwrap()
        );
    }
    let c = s.get_card("card_1").await.unwrap().unwrap();
    assert_eq!(
        (c.status, c.pin_refused, c.status_reason.as_deref()),
        (CardStatus::Disabled, true, Some("63C2 at VERIFY"))
    );
    assert!(
        !s.mark_card_pin_refused("card_none", "x", false, t(3))
            .await
            .unwrap()
    );
    // A blocked answer leaves the card blocked.
    s.mark_card_pin_refused("card_2", "6983 at VERIFY", true, t(4))
        .await
        .unwrap();
    let c2 = s.get_card("card_2").await.unwrap().unwrap();
    assert_eq!((c2.status, c2.pin_refused), (CardStatus::Blocked, true));

    // Enabling without a new PIN is refused and changes nothing.
    let m = conflict_message(
        s.update_card(
            "card_1",
            &CardUpdate {
                status: Some((CardStatus::Active, None)),
                label: Some("renamed".into()),
                ..Default::default()
            },
            t(5),
        )
        .await,
    );
    assert!(m.contains("new PIN") || m.contains("PIN"), "{m}");
    assert_eq!(s.get_card("card_1").await.unwrap().unwrap(), c);
    // Other changes pass and keep the flag.
    let renamed = s
        .update_card(
            "card_1",
            &CardUpdate {
                label: Some("renamed".into()),
                ..Default::default()
            },
            t(6),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(renamed.pin_refused);
    // A new PIN clears it and may enable the card.
    let back = s
        .update_card(
            "card_1",
            &CardUpdate {
                pin_sealed: Some(vec![4, 5, 6]),
                status: Some((CardStatus::Active, None)),
                ..Default::default()
            },
            t(7),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (back.status, back.pin_refused, back.pin_sealed),
        (CardStatus::Active, false, vec![4, 5, 6])
    );
}

fn audit(card: &str, i: i64) -> CardAuditEntry {
    CardAuditEntry {
        id: 0,
        at: t(i),
        token_name: format!("token-{}", i % 2),
        card_id: card.to_owned(),
        institution_id: "fi_1".to_owned(),
        mode: if i % 3 == 0 { "m1" } else { "m2" }.to_owned(),
        outcome: if i == 4 { "wrong_pin" } else { "ok" }.to_owned(),
        detail: (i == 4).then(|| "PIN tries left: 2".to_owned()),
        atc: (i != 4).then_some(if i == 5 { u32::MAX } else { 100 + i as u32 }),
        duration_ms: 1_000 + i as u64,
    }
}

async fn card_audit_newest_first_with_keyset_paging(s: Arc<dyn Store>) {
    s.create_institution(&new_institution("fi_1", "First"))
        .await
        .unwrap();
    s.create_card(&new_card("card_a", "fi_1", "R1", "A"))
        .await
        .unwrap();
    let mut recorded = Vec::new();
    for i in 0..10 {
        let card = if i % 3 == 2 { "card_b" } else { "card_a" };
        let mut e = audit(card, i);
        e.id = 12_345; // ignored
        let id = s.record_card_audit(&e).await.unwrap();
        recorded.push(CardAuditEntry { id, ..e });
    }
    let ids: Vec<i64> = recorded.iter().map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    let all = s
        .list_card_audit(&CardAuditQuery {
            card_id: None,
            limit: 100,
            before_id: None,
        })
        .await
        .unwrap();
    let newest_first: Vec<CardAuditEntry> = recorded.iter().rev().cloned().collect();
    assert_eq!(all, newest_first);

    // Pages of 3, each after the last id of the one before.
    let mut seen = Vec::new();
    let mut before_id = None;
    loop {
        let page = s
            .list_card_audit(&CardAuditQuery {
                card_id: None,
                limit: 3,
                before_id,
            })
            .await
            .unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        before_id = Some(last.id);
        seen.extend(page);
    }
    assert_eq!(seen, newest_first);

    // One card's entries, paged.
    let a: Vec<CardAuditEntry> = newest_first
        .iter()
        .filter(|e| e.card_id == "card_a")
        .cloned()
        .collect();
    assert_eq!(a.len(), 7);
    let page = s
        .list_card_audit(&CardAuditQuery {
            card_id: Some("card_a".into()),
            limit: 4,
            before_id: None,
        })
        .await
        .unwrap();
    assert_eq!(page, a[..4]);
    let page = s
        .list_card_audit(&CardAuditQuery {
            card_id: Some("card_a".into()),
            limit: 4,
            before_id: Some(page[3].id),
        })
        .await
        .unwrap();
    assert_eq!(page, a[4..]);
    assert!(
        s.list_card_audit(&CardAuditQuery {
            card_id: Some("card_none".into()),
            limit: 10,
            before_id: None,
        })
        .await
        .unwrap()
        .is_empty()
    );
    assert!(
        s.list_card_audit(&CardAuditQuery {
            card_id: None,
            limit: 0,
            before_id: None,
        })
        .await
        .unwrap()
        .is_empty()
    );

    // The audit outlives the card.
    assert!(s.delete_card("card_a").await.unwrap());
    assert_eq!(
        s.list_card_audit(&CardAuditQuery {
            card_id: Some("card_a".into()),
            limit: 100,
            before_id: None,
        })
        .await
        .unwrap(),
        a
    );

    let m = conflict_message(
        s.record_card_audit(&CardAuditEntry {
            duration_ms: u64::MAX,
            ..audit("card_a", 1)
        })
        .await,
    );
    assert!(m.contains("duration_ms"), "{m}");
}

async fn card_debug_hides_the_sealed_pin(s: Arc<dyn Store>) {
    s.create_institution(&new_institution("fi_1", "First"))
        .await
        .unwrap();
    let new = new_card("card_1", "fi_1", "R1", "One");
    let card = s.create_card(&new).await.unwrap();
    let update = CardUpdate {
        pin_sealed: Some(PIN.to_vec()),
        ..Default::default()
    };
    let pin_dec = format!("{:?}", PIN.to_vec());
    let pin_hex = format!("{:x?}", PIN.to_vec());
    for text in [
        format!("{card:?}"),
        format!("{card:#?}"),
        format!("{:?}", Some(card.clone())),
        format!("{new:?}"),
        format!("{update:?}"),
    ] {
        assert!(text.contains("[sealed]"), "{text}");
        assert!(!text.contains(&pin_dec[1..10]), "{text}");
        assert!(!text.contains(&pin_hex[1..10]), "{text}");
        assert!(!text.contains("222"), "{text}");
    }
    assert!(format!("{card:?}").contains("card_1"));
}

// ---------------------------------------------------------------- backend-specific

#[tokio::test]
async fn sqlite_refuses_a_file_that_is_not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "these are my notes, not a database\n".repeat(200)).unwrap();
    match SqliteStore::open(&path).await {
        Err(StoreError::Open { location, detail }) => {
            assert!(location.contains("notes.txt"), "{location}");
            assert!(
                detail.contains("is not a bankbridge SQLite database: file is not a database"),
                "{detail}"
            );
        }
        other => panic!("expected StoreError::Open, got {other:?}"),
    }
    // The file is left as it was.
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .starts_with("these are my notes")
    );

    let short = dir.path().join("short.db");
    std::fs::write(&short, "x").unwrap();
    assert!(matches!(
        SqliteStore::open(&short).await,
        Err(StoreError::Open { .. })
    ));

    // A folder, and a path whose parent is a file.
    assert!(matches!(
        SqliteStore::open(dir.path()).await,
        Err(StoreError::Open { .. })
    ));
    assert!(matches!(
        SqliteStore::open(&path.join("x.db")).await,
        Err(StoreError::Open { .. })
    ));
}

#[tokio::test]
async fn sqlite_refuses_another_programs_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
        conn.execute("CREATE TABLE notes (body TEXT)")
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
    match SqliteStore::open(&path).await {
        Err(StoreError::Open { detail, .. }) => {
            assert!(detail.contains("another program"), "{detail}")
        }
        other => panic!("expected StoreError::Open, got {other:?}"),
    }
}

#[tokio::test]
async fn sqlite_stores_money_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bb.db");
    let s: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let (conn, acc) = setup(&s, "typeof").await;
    let mut w = window(conn, acc, t(0));
    w.inserts = vec![
        tw("a", d(2024, 4, 1), "100"),
        tw("b", d(2024, 4, 1), "0.30"),
    ];
    s.commit_window(&w).await.unwrap();
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(&path);
    let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
    let types: Vec<(String, String)> =
        sqlx::query_as("SELECT typeof(amount), amount FROM transactions ORDER BY id")
            .fetch_all(&mut c)
            .await
            .unwrap();
    assert_eq!(
        types,
        vec![
            ("text".into(), "100".into()),
            ("text".into(), "0.30".into())
        ]
    );
}

/// A row edited outside bankbridge so that its text is no longer UTF-8 is
/// refused by the JSON read path with a clear error, never written out.
#[tokio::test]
async fn sqlite_json_refuses_a_row_that_is_not_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bb.db");
    let s: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let (conn, acc) = setup(&s, "utf8").await;
    let mut w = window(conn, acc, t(0));
    w.inserts = vec![
        tw("a", d(2024, 4, 1), "1.00"),
        tw("b", d(2024, 4, 2), "2.00"),
    ];
    s.commit_window(&w).await.unwrap();
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(&path);
    let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
    sqlx::query("UPDATE transactions SET label = CAST(X'41FF42' AS TEXT) WHERE provider_id = 'b'")
        .execute(&mut c)
        .await
        .unwrap();
    let mut out = b"[".to_vec();
    let err = s
        .transactions_page_json(
            &TxQuery {
                limit: Some(10),
                ..Default::default()
            },
            &mut out,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt(m) if m.contains("not UTF-8")),
        "{err}"
    );
    let streamed: Vec<_> = s
        .stream_transactions_json(TxQuery::default())
        .collect()
        .await;
    assert!(matches!(streamed.last(), Some(Err(StoreError::Corrupt(_)))));
    // The good row alone still reads.
    out.clear();
    let page = s
        .transactions_page_json(
            &TxQuery {
                limit: Some(1),
                ..Default::default()
            },
            &mut out,
        )
        .await
        .unwrap();
    assert_eq!(page.rows, 1);
    assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok());
}

#[tokio::test]
async fn postgres_connect_failure_is_an_open_error() {
    let Some(admin) = pg_admin_url() else { return };
    let url = with_database(&admin, "bb_test_this_database_does_not_exist");
    match PgStore::connect(&url).await {
        Err(StoreError::Open { location, detail }) => {
            assert!(
                location.contains("bb_test_this_database_does_not_exist"),
                "{location}"
            );
            assert!(!detail.is_empty());
        }
        other => panic!("expected StoreError::Open, got {other:?}"),
    }
}

#[test]
fn with_database_keeps_the_rest_of_the_url() {
    assert_eq!(
        with_database("postgres://u@h:1/postgres", "x"),
        "postgres://u@h:1/x"
    );
    assert_eq!(
        with_database("postgres://u@h:1/postgres?sslmode=disable", "x"),
        "postgres://u@h:1/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://u@h:1", "x"), "postgres://u@h:1/x");
}

// ---------------------------------------------------------------- documents

fn new_document(lease: LeaseToken, key: &str, date: Option<NaiveDate>) -> NewDocument {
    NewDocument {
        connection_id: lease.connection_id,
        account_id: None,
        provider_id: key.to_owned(),
        kind: "statement".to_owned(),
        category: Some("AST".to_owned()),
        title: format!("Relevé de compte {key}"),
        date,
        content_type: "application/pdf".to_owned(),
        now: t(0),
    }
}

async fn documents_are_stored_once_per_key_and_bytes_once_per_hash(s: Arc<dyn Store>) {
    let (conn, acc) = setup(&s, "docs").await;
    let pdf = b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n%%EOF\n".to_vec();
    let a = s
        .save_document(
            conn,
            &NewDocument {
                account_id: Some(acc),
                ..new_document(conn, "k-a", Some(d(2024, 1, 31)))
            },
            &pdf,
        )
        .await
        .unwrap();
    assert!(a.inserted && a.blob_inserted);
    assert_eq!(a.document.sha256, sha256_hex(&pdf));
    assert_eq!(a.document.size, pdf.len() as u64);
    assert_eq!(a.document.account_id, Some(acc));
    assert_eq!(a.document.title, "Relevé de compte k-a");
    assert_eq!(a.document.date, Some(d(2024, 1, 31)));
    assert_eq!(a.document.first_seen, t(0));

    // The same key again (a re-sync): nothing new, even with other bytes or a later time.
    let again = s
        .save_document(
            conn,
            &NewDocument {
                now: t(60),
                ..new_document(conn, "k-a", Some(d(2024, 1, 31)))
            },
            b"other bytes",
        )
        .await
        .unwrap();
    assert!(!again.inserted && !again.blob_inserted);
    assert_eq!(again.document, a.document);

    // Another document with the same bytes shares them.
    let b = s
        .save_document(conn, &new_document(conn, "k-b", None), &pdf)
        .await
        .unwrap();
    assert!(b.inserted && !b.blob_inserted);
    assert_eq!(b.document.sha256, a.document.sha256);
    assert_ne!(b.document.id, a.document.id);

    let keys = s.document_keys(conn.connection_id).await.unwrap();
    assert_eq!(keys, HashSet::from(["k-a".to_owned(), "k-b".to_owned()]));
    let (doc, bytes) = s.document_content(b.document.id).await.unwrap().unwrap();
    assert_eq!(doc, b.document);
    assert_eq!(bytes, pdf);
    assert_eq!(
        s.get_document(a.document.id).await.unwrap(),
        Some(a.document.clone())
    );
    assert_eq!(s.get_document(999_999).await.unwrap(), None);
    assert!(s.document_content(999_999).await.unwrap().is_none());

    // Empty bytes are a document too.
    let empty = s
        .save_document(conn, &new_document(conn, "k-empty", None), b"")
        .await
        .unwrap();
    assert_eq!(empty.document.size, 0);
    let (_, bytes) = s
        .document_content(empty.document.id)
        .await
        .unwrap()
        .unwrap();
    assert!(bytes.is_empty());

    // Deleting the connection takes its documents along.
    assert!(s.delete_connection(conn.connection_id).await.unwrap());
    assert!(s.get_document(a.document.id).await.unwrap().is_none());
    assert!(
        s.document_keys(conn.connection_id)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn documents_list_filters_and_order(s: Arc<dyn Store>) {
    let (c1, acc1) = setup(&s, "docs-1").await;
    let (c2, _) = setup(&s, "docs-2").await;
    let save = |doc: NewDocument, bytes: &'static [u8]| {
        let s = s.clone();
        let lease = [c1, c2]
            .into_iter()
            .find(|l| l.connection_id == doc.connection_id)
            .unwrap();
        async move { s.save_document(lease, &doc, bytes).await.unwrap().document }
    };
    let undated = save(new_document(c1, "u", None), b"u").await;
    let march = save(
        NewDocument {
            account_id: Some(acc1),
            ..new_document(c1, "m", Some(d(2024, 3, 31)))
        },
        b"m",
    )
    .await;
    let jan = save(new_document(c1, "j", Some(d(2024, 1, 31))), b"j").await;
    let other = save(new_document(c2, "j", Some(d(2024, 2, 29))), b"j").await;

    let ids =
        |docs: Vec<bankbridge_core::Document>| docs.into_iter().map(|d| d.id).collect::<Vec<_>>();
    let all = s.list_documents(&DocumentQuery::default()).await.unwrap();
    assert_eq!(
        ids(all),
        vec![jan.id, other.id, march.id, undated.id],
        "by date, undated last"
    );
    let q = |f: fn(&mut DocumentQuery)| {
        let mut q = DocumentQuery::default();
        f(&mut q);
        q
    };
    assert_eq!(
        ids(s
            .list_documents(&DocumentQuery {
                connection_id: Some(c1.connection_id),
                ..Default::default()
            })
            .await
            .unwrap()),
        vec![jan.id, march.id, undated.id]
    );
    assert_eq!(
        ids(s
            .list_documents(&DocumentQuery {
                account_id: Some(acc1),
                ..Default::default()
            })
            .await
            .unwrap()),
        vec![march.id]
    );
    assert_eq!(
        ids(s
            .list_documents(&q(
                |q| q.from = Some(NaiveDate::from_ymd_opt(2024, 2, 1).unwrap())
            ))
            .await
            .unwrap()),
        vec![other.id, march.id]
    );
    assert_eq!(
        ids(s
            .list_documents(&q(|q| {
                q.from = Some(NaiveDate::from_ymd_opt(2024, 1, 31).unwrap());
                q.to = Some(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap());
            }))
            .await
            .unwrap()),
        vec![jan.id, other.id]
    );
    assert_eq!(
        ids(s.list_documents(&q(|q| q.limit = Some(1))).await.unwrap()),
        vec![jan.id]
    );
    // Pages of one, each after the last one seen: the whole list, dated
    // ones first, then the undated one, nothing twice.
    let all = s.list_documents(&q(|_| {})).await.unwrap();
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .list_documents(&DocumentQuery {
                limit: Some(1),
                after,
                ..Default::default()
            })
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some((last.date, last.id));
        paged.extend(page);
        assert!(paged.len() <= all.len(), "paging never ends");
    }
    assert_eq!(ids(paged), ids(all));
    // Keys are per connection: "j" is in both.
    assert!(
        s.document_keys(c2.connection_id)
            .await
            .unwrap()
            .contains("j")
    );
}

async fn documents_refuse_bad_input(s: Arc<dyn Store>) {
    let (conn, _) = setup(&s, "docs-bad").await;
    let (_, other_acc) = setup(&s, "docs-other").await;
    for bad in [
        NewDocument {
            provider_id: " ".into(),
            ..new_document(conn, "x", None)
        },
        NewDocument {
            title: String::new(),
            ..new_document(conn, "x", None)
        },
        NewDocument {
            kind: String::new(),
            ..new_document(conn, "x", None)
        },
        NewDocument {
            content_type: "text/html\r\nX-Evil: 1".into(),
            ..new_document(conn, "x", None)
        },
    ] {
        conflict_message(s.save_document(conn, &bad, b"x").await);
    }
    match s
        .save_document(
            conn,
            &NewDocument {
                account_id: Some(other_acc),
                ..new_document(conn, "x", None)
            },
            b"x",
        )
        .await
    {
        Err(StoreError::NotFound(m)) => assert!(m.contains("account"), "{m}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    let stray = LeaseToken {
        connection_id: 987_654,
        generation: 1,
    };
    match s
        .save_document(stray, &new_document(stray, "x", None), b"x")
        .await
    {
        Err(StoreError::LeaseLost { connection_id, .. }) => assert_eq!(connection_id, 987_654),
        other => panic!("expected LeaseLost, got {other:?}"),
    }
    // Nothing of the refused attempts was kept.
    assert!(
        s.document_keys(conn.connection_id)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn blob_count(location: &str) -> i64 {
    let sql = "SELECT COUNT(*) FROM document_blobs";
    if location.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(location).await.unwrap();
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap();
        c.close().await.unwrap();
        n
    } else {
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(location);
        let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap();
        c.close().await.unwrap();
        n
    }
}

async fn document_bytes_go_with_their_last_connection(location: String) {
    let s = bankbridge_store::open(&location).await.unwrap();
    let c1 = s
        .create_connection(&new_connection("one"))
        .await
        .unwrap()
        .id;
    let c2 = s
        .create_connection(&new_connection("two"))
        .await
        .unwrap()
        .id;
    let (c1, c2) = (
        hold_lease(s.as_ref(), c1).await,
        hold_lease(s.as_ref(), c2).await,
    );
    s.save_document(c1, &new_document(c1, "a", None), b"shared")
        .await
        .unwrap();
    s.save_document(c1, &new_document(c1, "b", None), b"only one")
        .await
        .unwrap();
    s.save_document(c2, &new_document(c2, "a", None), b"shared")
        .await
        .unwrap();
    assert_eq!(
        blob_count(&location).await,
        2,
        "the shared bytes are kept once"
    );
    s.delete_connection(c1.connection_id).await.unwrap();
    assert_eq!(
        blob_count(&location).await,
        1,
        "bytes only the deleted connection used are gone"
    );
    let (_, bytes) = s
        .document_content(s.list_documents(&DocumentQuery::default()).await.unwrap()[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bytes, b"shared");
    s.delete_connection(c2.connection_id).await.unwrap();
    assert_eq!(blob_count(&location).await, 0);
}

// ---------------------------------------------------------------- flow checks

fn new_step(index: i32, outcome: &str, detail: &str) -> NewCheckStep {
    NewCheckStep {
        index,
        name: format!("step {index}"),
        kind: ["http", "encrypted_form", "wait_until"][index as usize % 3].to_owned(),
        outcome: outcome.to_owned(),
        duration_ms: 10 * i64::from(index) + 7,
        detail: detail.to_owned(),
    }
}

fn new_run(check: &str, location: &str, round: &str, started: DateTime<Utc>) -> NewCheckRun {
    NewCheckRun {
        check_id: check.to_owned(),
        check_name: format!("Flow {check}"),
        location: location.to_owned(),
        round_id: round.to_owned(),
        trigger: "schedule".to_owned(),
        started_at: started,
        finished_at: started + Duration::milliseconds(1_500),
        duration_ms: 1_500,
        outcome: "passed".to_owned(),
        attempts: 1,
        failed_step: None,
        error: None,
        steps: vec![new_step(0, "passed", "{}"), new_step(1, "passed", "[]")],
    }
}

/// What a stored run must read back as.
fn stored(id: i64, n: &NewCheckRun) -> CheckRun {
    CheckRun {
        id,
        check_id: n.check_id.clone(),
        check_name: n.check_name.clone(),
        location: n.location.clone(),
        round_id: n.round_id.clone(),
        trigger: n.trigger.clone(),
        started_at: n.started_at,
        finished_at: n.finished_at,
        duration_ms: n.duration_ms,
        outcome: n.outcome.clone(),
        attempts: n.attempts,
        failed_step: n.failed_step.clone(),
        error: n.error.clone(),
    }
}

fn all_runs() -> CheckRunQuery {
    CheckRunQuery {
        limit: 1_000,
        ..CheckRunQuery::default()
    }
}

async fn check_run_round_trips_every_field(s: Arc<dyn Store>) {
    // Details kept byte for byte: spacing, key order, escapes, non-ASCII.
    let detail_0 = r#"{"request": {"method": "POST", "url": "https://bank.test/login"},  "z": 1, "a": "[REDACTED]"}"#;
    let detail_1 =
        "{\"asserts\":[{\"ok\":false,\"msg\":\"status 502 \\u2260 200\"}],\"body\":\"Грешка\"}";
    let detail_2 = "null";
    let run = NewCheckRun {
        check_id: "klarna-xs2a".into(),
        check_name: "Klarna XS2A — playground".into(),
        location: "eu-west".into(),
        round_id: "round-2024-05-01T10:00".into(),
        trigger: "manual".into(),
        started_at: t(0),
        finished_at: t(3) + Duration::microseconds(7),
        duration_ms: 3_000,
        outcome: "failed".into(),
        attempts: 3,
        failed_step: Some("step 1".into()),
        error: Some("step 1: expected status 200, got 502".into()),
        // Given out of order: read back by index.
        steps: vec![
            new_step(2, "skipped", detail_2),
            new_step(0, "passed", detail_0),
            new_step(1, "failed", detail_1),
        ],
    };
    let saved = s.save_check_run(&run).await.unwrap();
    assert_eq!(saved, stored(saved.id, &run));
    let (got, steps) = s.get_check_run(saved.id).await.unwrap().expect("the run");
    assert_eq!(got, saved);
    let want: Vec<CheckStep> = [1, 2, 0]
        .map(|i| {
            let n = &run.steps[i];
            CheckStep {
                run_id: saved.id,
                index: n.index,
                name: n.name.clone(),
                kind: n.kind.clone(),
                outcome: n.outcome.clone(),
                duration_ms: n.duration_ms,
                detail: n.detail.clone(),
            }
        })
        .to_vec();
    assert_eq!(steps, want);
    assert_eq!(steps[0].detail, detail_0);
    assert_eq!(steps[1].detail, detail_1);

    // A run without steps (it failed before the first one), and a degraded one.
    let bare = NewCheckRun {
        steps: Vec::new(),
        outcome: "degraded".into(),
        ..new_run("other", "local", "r2", t(10))
    };
    let bare_saved = s.save_check_run(&bare).await.unwrap();
    assert!(bare_saved.id > saved.id, "ids grow");
    assert_eq!(
        s.get_check_run(bare_saved.id).await.unwrap(),
        Some((stored(bare_saved.id, &bare), Vec::new()))
    );
    assert_eq!(s.get_check_run(bare_saved.id + 100).await.unwrap(), None);
    assert_eq!(
        s.list_check_runs(&all_runs()).await.unwrap(),
        vec![bare_saved, saved]
    );
}

async fn check_run_with_a_bad_step_leaves_nothing(s: Arc<dyn Store>) {
    let good = new_run("flow", "local", "r1", t(0));
    let with_step = |i: usize, f: &dyn Fn(&mut NewCheckStep)| {
        let mut r = good.clone();
        r.steps.push(new_step(2, "passed", "{}"));
        f(&mut r.steps[i]);
        r
    };
    let cases: Vec<(NewCheckRun, &str)> = vec![
        (
            with_step(2, &|st| st.detail = "{\"truncated\": \"abc".into()),
            "not valid JSON",
        ),
        (
            with_step(2, &|st| st.detail = String::new()),
            "not valid JSON",
        ),
        (with_step(1, &|st| st.outcome = "ok".into()), "\"ok\""),
        (with_step(2, &|st| st.index = 0), "same index"),
        (with_step(2, &|st| st.index = -1), "negative"),
        (with_step(0, &|st| st.kind = " ".into()), "kind"),
        (with_step(2, &|st| st.duration_ms = -5), "duration_ms"),
        (
            NewCheckRun {
                check_id: "".into(),
                ..good.clone()
            },
            "check id",
        ),
        (
            NewCheckRun {
                location: " ".into(),
                ..good.clone()
            },
            "location",
        ),
        (
            NewCheckRun {
                round_id: "".into(),
                ..good.clone()
            },
            "round id",
        ),
        (
            NewCheckRun {
                outcome: "skipped".into(),
                ..good.clone()
            },
            "\"skipped\"",
        ),
        (
            NewCheckRun {
                trigger: "cron".into(),
                ..good.clone()
            },
            "\"cron\"",
        ),
        (
            NewCheckRun {
                attempts: 0,
                ..good.clone()
            },
            "attempts",
        ),
        (
            NewCheckRun {
                duration_ms: -1,
                ..good.clone()
            },
            "duration_ms",
        ),
    ];
    for (bad, needle) in cases {
        let m = conflict_message(s.save_check_run(&bad).await);
        assert!(m.contains(needle), "{needle:?} not in {m:?}");
    }
    assert!(s.list_check_runs(&all_runs()).await.unwrap().is_empty());
    // The good one still goes in, whole.
    let saved = s.save_check_run(&good).await.unwrap();
    assert_eq!(s.get_check_run(saved.id).await.unwrap().unwrap().1.len(), 2);
}

async fn check_runs_filter_and_page_newest_first(s: Arc<dyn Store>) {
    let mut all = Vec::new();
    for i in 0..12_i64 {
        let check = ["alpha", "beta", "gamma"][(i % 3) as usize];
        let location = if i % 2 == 0 { "local" } else { "eu" };
        let round = format!("r{}", i / 4);
        let run = new_run(check, location, &round, t(i * 60));
        let saved = s.save_check_run(&run).await.unwrap();
        all.push(saved);
    }
    all.reverse(); // newest first
    let opts = |v: &[&str]| -> Vec<Option<String>> {
        std::iter::once(None)
            .chain(v.iter().map(|s| Some((*s).to_owned())))
            .collect()
    };
    for check_id in opts(&["alpha", "gamma", "nope"]) {
        for location in opts(&["local", "eu"]) {
            for round_id in opts(&["r0", "r2"]) {
                let q = CheckRunQuery {
                    check_id: check_id.clone(),
                    location: location.clone(),
                    round_id: round_id.clone(),
                    ..all_runs()
                };
                let want: Vec<CheckRun> = all
                    .iter()
                    .filter(|r| check_id.as_ref().is_none_or(|c| &r.check_id == c))
                    .filter(|r| location.as_ref().is_none_or(|l| &r.location == l))
                    .filter(|r| round_id.as_ref().is_none_or(|x| &r.round_id == x))
                    .cloned()
                    .collect();
                assert_eq!(s.list_check_runs(&q).await.unwrap(), want, "{q:?}");
            }
        }
    }
    // Every location's run of one round.
    let round: Vec<i64> = s
        .list_check_runs(&CheckRunQuery {
            round_id: Some("r1".into()),
            ..CheckRunQuery::default()
        })
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(round.len(), 4);

    // Pages of 5 backwards, each before the last id of the one before.
    let mut seen = Vec::new();
    let mut before_id = None;
    loop {
        let page = s
            .list_check_runs(&CheckRunQuery {
                before_id,
                limit: 5,
                ..CheckRunQuery::default()
            })
            .await
            .unwrap();
        assert!(page.len() <= 5);
        let Some(last) = page.last() else { break };
        before_id = Some(last.id);
        seen.extend(page);
    }
    assert_eq!(seen, all);
    // Paging within a filter.
    let alpha: Vec<CheckRun> = all
        .iter()
        .filter(|r| r.check_id == "alpha")
        .cloned()
        .collect();
    let page = s
        .list_check_runs(&CheckRunQuery {
            check_id: Some("alpha".into()),
            before_id: Some(alpha[1].id),
            limit: 2,
            ..CheckRunQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page, alpha[2..4]);
    assert!(
        s.list_check_runs(&CheckRunQuery {
            limit: 0,
            ..CheckRunQuery::default()
        })
        .await
        .unwrap()
        .is_empty()
    );
    assert_eq!(CheckRunQuery::default().limit, 50);
}

async fn check_runs_pruned_except_the_latest_of_each_check(s: Arc<dyn Store>) {
    let mut ids: std::collections::HashMap<&str, Vec<i64>> = Default::default();
    // alpha: 5 old runs; beta: 2 old runs; gamma: 1 old run then 2 new ones.
    for (check, started) in [
        ("alpha", t(0)),
        ("beta", t(1)),
        ("alpha", t(2)),
        ("gamma", t(3)),
        ("alpha", t(4)),
        ("alpha", t(5)),
        ("beta", t(6)),
        ("alpha", t(7)),
        ("gamma", t(500)),
        ("gamma", t(600)),
    ] {
        let id = s
            .save_check_run(&new_run(check, "local", "r", started))
            .await
            .unwrap()
            .id;
        ids.entry(check).or_default().push(id);
    }
    let remaining = |s: Arc<dyn Store>| async move {
        let mut v: Vec<i64> = s
            .list_check_runs(&all_runs())
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        v.sort_unstable();
        v
    };
    let cutoff = t(100);
    // Keep the latest 2 of each check: alpha loses its 3 oldest; beta keeps
    // both; gamma's old run is not among its latest 2, so it goes.
    assert_eq!(s.prune_check_runs(cutoff, 2).await.unwrap(), 4);
    let mut want: Vec<i64> = [&ids["alpha"][3..], &ids["beta"][..], &ids["gamma"][1..]].concat();
    want.sort_unstable();
    assert_eq!(remaining(s.clone()).await, want);
    assert_eq!(s.get_check_run(ids["alpha"][0]).await.unwrap(), None);
    assert_eq!(
        s.get_check_run(ids["alpha"][4])
            .await
            .unwrap()
            .unwrap()
            .1
            .len(),
        2,
        "a kept run keeps its steps"
    );
    // Again: nothing more to do.
    assert_eq!(s.prune_check_runs(cutoff, 2).await.unwrap(), 0);
    // Runs that started at the cutoff are not older than it.
    assert_eq!(s.prune_check_runs(t(500), 0).await.unwrap(), 4);
    assert_eq!(remaining(s.clone()).await, ids["gamma"][1..].to_vec());
    assert_eq!(s.prune_check_runs(t(10_000), 1).await.unwrap(), 1);
    assert_eq!(remaining(s.clone()).await, vec![ids["gamma"][2]]);
}

async fn check_state_is_upserted_per_check(s: Arc<dyn Store>) {
    assert!(s.check_states().await.unwrap().is_empty());
    let a1 = r#"{"health": "up",  "streak": 3, "last_alert": null}"#;
    let a2 = r#"{"health":"down","streak":1,"last_alert":"2024-05-01T10:00:00Z"}"#;
    let b = r#"{"health": "degraded"}"#;
    s.put_check_state("beta", b, t(0)).await.unwrap();
    s.put_check_state("alpha", a1, t(1)).await.unwrap();
    assert_eq!(
        s.check_states().await.unwrap(),
        vec![("alpha".into(), a1.into()), ("beta".into(), b.into())]
    );
    s.put_check_state("alpha", a2, t(2)).await.unwrap();
    let m = conflict_message(s.put_check_state("alpha", "{\"health\":", t(3)).await);
    assert!(m.contains("not valid JSON") && m.contains("alpha"), "{m}");
    let m = conflict_message(s.put_check_state(" ", "{}", t(3)).await);
    assert!(m.contains("check id"), "{m}");
    assert_eq!(
        s.check_states().await.unwrap(),
        vec![("alpha".into(), a2.into()), ("beta".into(), b.into())]
    );
}

/// Two servers close rounds of one check: each swaps from the state it
/// read, so the slower one finds the state moved and reads again.
async fn a_check_state_swaps_only_from_what_was_read(s: Arc<dyn Store>) {
    assert_eq!(s.check_state("gamma").await.unwrap(), None);
    let first = r#"{"health":"passing","streak":1}"#;
    assert!(
        s.swap_check_state("gamma", None, first, t(0))
            .await
            .unwrap()
    );
    // A second "first state" loses: the row is there.
    assert!(!s.swap_check_state("gamma", None, "{}", t(0)).await.unwrap());
    let read = s.check_state("gamma").await.unwrap().unwrap();
    assert_eq!(read, first, "the text as written");
    let a = r#"{"health":"failing","streak":1}"#;
    let b = r#"{"health":"passing","streak":2}"#;
    assert!(
        s.swap_check_state("gamma", Some(&read), a, t(1))
            .await
            .unwrap()
    );
    assert!(
        !s.swap_check_state("gamma", Some(&read), b, t(1))
            .await
            .unwrap(),
        "stale: the state moved since it was read"
    );
    assert_eq!(s.check_state("gamma").await.unwrap().unwrap(), a);
    let m = conflict_message(s.swap_check_state("gamma", Some(a), "{", t(2)).await);
    assert!(m.contains("not valid JSON"), "{m}");
    // Concurrent swaps from one read: one wins.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let new = format!(r#"{{"health":"passing","streak":{i}}}"#);
            s.swap_check_state("gamma", Some(a), &new, t(3))
                .await
                .unwrap()
        }));
    }
    let mut wins = 0;
    for task in tasks {
        wins += usize::from(task.await.unwrap());
    }
    assert_eq!(wins, 1);
}

/// A slot's work is claimed by one server whatever the race; old claims
/// are pruned.
/// A change of a check's state and its alerts are stored together (a lost
/// swap queues nothing); each alert is claimed by one server, handed to
/// another once that claim lapses, and done once.
async fn alerts_are_queued_with_their_change_and_delivered_once(s: Arc<dyn Store>) {
    let alert = |id: &str, at: i64| OutboxAlert {
        id: id.into(),
        channel: "ops".into(),
        alert: format!("{{\"n\":\"{id}\"}}"),
        created_at: t(at),
    };
    let state = |n: i64| format!("{{\"n\":{n}}}");
    assert!(
        s.swap_check_state_with_alerts("alpha", None, &state(1), t(0), &[alert("a1", 0)])
            .await
            .unwrap()
    );
    assert!(
        !s.swap_check_state_with_alerts("alpha", None, &state(2), t(1), &[alert("lost", 1)])
            .await
            .unwrap(),
        "a stale swap queues nothing"
    );
    assert!(
        s.swap_check_state_with_alerts(
            "alpha",
            Some(&state(1)),
            &state(3),
            t(2),
            &[alert("a2", 2), alert("a3", 2)]
        )
        .await
        .unwrap()
    );
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.claim_alerts(&format!("server-{i}"), t(3), t(63), 10)
                .await
                .unwrap()
        }));
    }
    let mut claimed = Vec::new();
    for task in tasks {
        claimed.extend(task.await.unwrap());
    }
    claimed.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(
        claimed,
        vec![alert("a1", 0), alert("a2", 2), alert("a3", 2)]
    );
    // "server-x" died holding them; once the claims lapse, another takes
    // what is not done.
    let owner_of = async |id: &str| {
        for i in 0..8 {
            if s.alert_done(id, &format!("server-{i}"), t(10), None)
                .await
                .unwrap()
            {
                return;
            }
        }
        panic!("nobody held {id}");
    };
    owner_of("a1").await;
    assert!(
        s.claim_alerts("late", t(30), t(90), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let retaken = s.claim_alerts("late", t(64), t(124), 10).await.unwrap();
    assert_eq!(retaken, vec![alert("a2", 2), alert("a3", 2)]);
    assert!(
        s.alert_done("a2", "late", t(65), Some("HTTP 500"))
            .await
            .unwrap()
    );
    assert!(
        !s.alert_done("a2", "late", t(66), None).await.unwrap(),
        "done once"
    );
    assert!(s.alert_done("a3", "late", t(65), None).await.unwrap());
    assert!(
        s.claim_alerts("later", t(200), t(260), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.prune_alerts(t(1)).await.unwrap(), 1);
}

/// A round claim is a lease: closed in time it stays closed; past its
/// `until` it is taken over by one of many servers, once.
async fn a_round_claim_lapses_and_is_taken_over_once(s: Arc<dyn Store>) {
    let slot = 1_700_000_000_000;
    assert!(
        s.claim_check_round("alpha", slot, "dead", t(0), t(30))
            .await
            .unwrap()
    );
    assert!(
        !s.claim_check_round("alpha", slot, "other", t(1), t(31))
            .await
            .unwrap()
    );
    assert!(
        s.claim_check_round("beta", slot, "live", t(0), t(30))
            .await
            .unwrap()
    );
    s.finish_check_round("beta", slot, t(20)).await.unwrap();
    // A certificate claim has no `until`: never taken over.
    assert!(
        s.claim_check_slot("gamma", slot, "dead", t(0))
            .await
            .unwrap()
    );
    assert!(
        s.lapsed_check_rounds(t(29), t(-600))
            .await
            .unwrap()
            .is_empty()
    );
    let lapsed = s.lapsed_check_rounds(t(31), t(-600)).await.unwrap();
    assert_eq!(
        lapsed,
        vec![LapsedRound {
            check_id: "alpha".into(),
            slot_ms: slot,
            claimed_by: "dead".into(),
            until: t(30),
        }]
    );
    // Too old to run late.
    assert!(
        s.lapsed_check_rounds(t(31), t(30))
            .await
            .unwrap()
            .is_empty()
    );
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (s, l) = (s.clone(), lapsed[0].clone());
        tasks.push(tokio::spawn(async move {
            s.take_over_check_round(&l, &format!("server-{i}"), t(31), t(61))
                .await
                .unwrap()
        }));
    }
    let mut wins = 0;
    for task in tasks {
        wins += usize::from(task.await.unwrap());
    }
    assert_eq!(wins, 1);
    assert!(
        s.lapsed_check_rounds(t(60), t(-600))
            .await
            .unwrap()
            .is_empty()
    );
    s.finish_check_round("alpha", slot, t(40)).await.unwrap();
    assert!(
        s.lapsed_check_rounds(t(62), t(-600))
            .await
            .unwrap()
            .is_empty()
    );
}

/// The agents' queue: a job goes to one taker, its report to its round's
/// server once, and late or unknown reports are refused.
async fn agent_jobs_are_taken_once_and_reported_to_their_round_server(s: Arc<dyn Store>) {
    let job = |id: &str, location: &str, at: i64| QueuedCheckJob {
        job_id: id.into(),
        round_id: format!("round-{id}"),
        check_id: "alpha".into(),
        location: location.into(),
        file: "alpha.toml".into(),
        source: "name = \"alpha\"".into(),
        created_by: "server-a".into(),
        created_at: t(at),
        deadline: t(at + 30),
    };
    for (id, location, at) in [
        ("j1", "oslo", 0),
        ("j2", "oslo", 1),
        ("j3", "lima", 2),
        ("j4", "oslo", -40),
    ] {
        s.queue_check_job(&job(id, location, at)).await.unwrap();
    }
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.take_check_jobs("oslo", &format!("server-{i}"), t(5), 10)
                .await
                .unwrap()
        }));
    }
    let mut taken = Vec::new();
    for task in tasks {
        taken.extend(task.await.unwrap());
    }
    taken.sort_by(|a, b| a.job_id.cmp(&b.job_id));
    // Each waiting job once; j4's deadline passed, so nobody gets it.
    assert_eq!(taken, vec![job("j1", "oslo", 0), job("j2", "oslo", 1)]);
    assert!(
        s.take_check_jobs("oslo", "x", t(6), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Not taken, not answerable.
    assert_eq!(s.report_check_job("j3", "{}", t(6)).await.unwrap(), None);
    assert_eq!(
        s.report_check_job("j1", "{\"ok\":1}", t(7)).await.unwrap(),
        Some(("round-j1".into(), "oslo".into(), "server-a".into()))
    );
    assert_eq!(
        s.report_check_job("j1", "{}", t(8)).await.unwrap(),
        None,
        "answered once"
    );
    assert_eq!(s.report_check_job("nope", "{}", t(8)).await.unwrap(), None);
    assert_eq!(
        s.report_check_job("j2", "{}", t(31)).await.unwrap(),
        None,
        "its round closed at the deadline"
    );
    assert!(
        s.collect_check_reports("server-b", t(9))
            .await
            .unwrap()
            .is_empty()
    );
    let reports = s.collect_check_reports("server-a", t(9)).await.unwrap();
    assert_eq!(
        reports,
        vec![CheckJobReport {
            job_id: "j1".into(),
            round_id: "round-j1".into(),
            location: "oslo".into(),
            report: "{\"ok\":1}".into(),
        }]
    );
    assert!(
        s.collect_check_reports("server-a", t(10))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.prune_check_jobs(t(1)).await.unwrap(), 2);
}

async fn a_check_slot_is_claimed_once_and_pruned(s: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.claim_check_slot("delta", 1_700_000_000_000, &format!("server-{i}"), t(0))
                .await
                .unwrap()
        }));
    }
    let mut wins = 0;
    for task in tasks {
        wins += usize::from(task.await.unwrap());
    }
    assert_eq!(wins, 1);
    // Another slot, and another check on the same slot, are theirs to claim.
    assert!(
        s.claim_check_slot("delta", 1_700_000_005_000, "a", t(5))
            .await
            .unwrap()
    );
    assert!(
        s.claim_check_slot("epsilon", 1_700_000_000_000, "a", t(5))
            .await
            .unwrap()
    );
    assert!(conflict_message(s.claim_check_slot("", 1, "a", t(5)).await).contains("check id"));
    // Pruned: the old claim can be made again (nobody does: its slot is
    // long past), the new ones still hold.
    assert_eq!(s.prune_check_claims(t(3)).await.unwrap(), 1);
    assert!(
        s.claim_check_slot("delta", 1_700_000_000_000, "b", t(6))
            .await
            .unwrap()
    );
    assert!(
        !s.claim_check_slot("delta", 1_700_000_005_000, "b", t(6))
            .await
            .unwrap()
    );
}

async fn check_secrets_keep_sealed_bytes_and_list_only_names(s: Arc<dyn Store>) {
    assert!(s.list_check_secrets().await.unwrap().is_empty());
    let sealed: Vec<u8> = (0..=255u8).collect();
    assert!(
        s.put_check_secret("xs2a.api-token_1", &sealed, t(0))
            .await
            .unwrap()
    );
    assert!(s.put_check_secret("b", b"\x00\x01", t(1)).await.unwrap());
    assert_eq!(
        s.get_check_secret("xs2a.api-token_1")
            .await
            .unwrap()
            .as_deref(),
        Some(&sealed[..])
    );
    // Replacing answers "not new" and keeps one row.
    assert!(!s.put_check_secret("b", b"\x02", t(2)).await.unwrap());
    assert_eq!(
        s.get_check_secret("b").await.unwrap().as_deref(),
        Some(&b"\x02"[..])
    );
    let listed = s.list_check_secrets().await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|i| (i.name.as_str(), i.updated_at))
            .collect::<Vec<_>>(),
        vec![("b", t(2)), ("xs2a.api-token_1", t(0))]
    );
    for bad in ["", "with space", "ä", &"x".repeat(101)] {
        let m = conflict_message(s.put_check_secret(bad, b"v", t(3)).await);
        assert!(m.contains("secret name"), "{bad:?}: {m}");
    }
    assert!(s.delete_check_secret("b").await.unwrap());
    assert!(!s.delete_check_secret("b").await.unwrap());
    assert_eq!(s.get_check_secret("b").await.unwrap(), None);
    assert_eq!(s.list_check_secrets().await.unwrap().len(), 1);
}

/// Runs `sql` on a connection of its own, beside the store's.
async fn raw_execute(location: &str, sql: &str) {
    if location.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(location).await.unwrap();
        c.execute(sql).await.unwrap();
        c.close().await.unwrap();
    } else {
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(location);
        let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
        c.execute(sql).await.unwrap();
        c.close().await.unwrap();
    }
}

async fn raw_count(location: &str, sql: &str) -> i64 {
    if location.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(location).await.unwrap();
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap();
        c.close().await.unwrap();
        n
    } else {
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(location);
        let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap();
        c.close().await.unwrap();
        n
    }
}

async fn check_run_failing_in_the_database_midway_leaves_nothing(location: String) {
    let s = bankbridge_store::open(&location).await.unwrap();
    // A step the checks before the transaction accept but the database
    // refuses, after the run row and the first step went in.
    if location.starts_with("postgres") {
        raw_execute(
            &location,
            "ALTER TABLE check_steps ADD CONSTRAINT test_no_boom CHECK (name <> 'boom')",
        )
        .await;
    } else {
        raw_execute(
            &location,
            "CREATE TRIGGER test_no_boom BEFORE INSERT ON check_steps WHEN NEW.name = 'boom' \
             BEGIN SELECT RAISE(ABORT, 'boom refused'); END",
        )
        .await;
    }
    let mut run = new_run("flow", "local", "r1", t(0));
    run.steps.push(NewCheckStep {
        name: "boom".into(),
        ..new_step(2, "failed", "{}")
    });
    assert!(matches!(
        s.save_check_run(&run).await,
        Err(StoreError::Database(_))
    ));
    assert_eq!(
        raw_count(&location, "SELECT COUNT(*) FROM check_runs").await,
        0
    );
    assert_eq!(
        raw_count(&location, "SELECT COUNT(*) FROM check_steps").await,
        0
    );
    assert!(s.list_check_runs(&all_runs()).await.unwrap().is_empty());
}

async fn pruned_check_runs_take_their_steps(location: String) {
    let s = bankbridge_store::open(&location).await.unwrap();
    for i in 0..3 {
        s.save_check_run(&new_run("flow", "local", "r", t(i)))
            .await
            .unwrap();
    }
    assert_eq!(
        raw_count(&location, "SELECT COUNT(*) FROM check_steps").await,
        6
    );
    assert_eq!(s.prune_check_runs(t(100), 1).await.unwrap(), 2);
    assert_eq!(
        raw_count(&location, "SELECT COUNT(*) FROM check_steps").await,
        2
    );
}

// ---------------------------------------------------------------- TLS

/// The throwaway server's CA (`scripts/pg-throwaway.sh ca`), which test.sh
/// exports as `BANKBRIDGE_TEST_PG_CA`.
fn pg_ca() -> Option<String> {
    match std::env::var("BANKBRIDGE_TEST_PG_CA") {
        Ok(path) if !path.trim().is_empty() => Some(path),
        _ => {
            assert!(
                std::env::var_os("CI").is_none_or(|v| v.is_empty()),
                "BANKBRIDGE_TEST_PG_CA is not set, and CI is: export it with \
                 BANKBRIDGE_TEST_PG_CA=\"$(scripts/pg-throwaway.sh ca)\""
            );
            eprintln!("skipped: set BANKBRIDGE_TEST_PG_CA to test PostgreSQL over TLS");
            None
        }
    }
}

/// `url` with host `host` and `params` added to its query.
fn tls_url(url: &str, host: &str, params: &str) -> String {
    let url = url.replacen("@127.0.0.1:", &format!("@{host}:"), 1);
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

/// Whether the store's own connection runs over TLS, as the server sees it.
async fn server_sees_tls(url: &str) -> bool {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    ssl
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_in_every_sslmode() {
    let (Some(admin), Some(ca)) = (pg_admin_url(), pg_ca()) else {
        return;
    };
    let (conn, db, url) = create_pg_database(&admin).await;
    let outcome = tokio::spawn({
        let url = url.clone();
        async move {
            // require: encrypted, the certificate not checked; verify-ca: a
            // certificate of our CA; verify-full: and the host's name on it.
            for (i, (host, params)) in [
                ("127.0.0.1", "sslmode=require".to_owned()),
                ("127.0.0.1", format!("sslmode=verify-ca&sslrootcert={ca}")),
                ("localhost", format!("sslmode=verify-full&sslrootcert={ca}")),
                ("127.0.0.1", format!("sslmode=verify-full&sslrootcert={ca}")),
            ]
            .into_iter()
            .enumerate()
            {
                let tls = tls_url(&url, host, &params);
                let store = PgStore::connect(&tls)
                    .await
                    .unwrap_or_else(|e| panic!("{params}: {e}"));
                let c = store
                    .create_connection(&new_connection(&format!("over tls {i}")))
                    .await
                    .unwrap();
                assert!(store.get_connection(c.id).await.unwrap().is_some());
                store.close().await;
                assert!(server_sees_tls(&tls).await, "{params}: not encrypted");
            }
            // Another CA's certificate is refused, with the reason.
            let dir = tempfile::tempdir().unwrap();
            let other = dir.path().join("other-ca.crt");
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            std::fs::write(&other, params.self_signed(&key).unwrap().pem()).unwrap();
            let wrong = tls_url(
                &url,
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={}", other.display()),
            );
            match PgStore::connect(&wrong).await {
                Err(StoreError::Open { detail, .. }) => {
                    assert!(detail.to_lowercase().contains("certificate"), "{detail}")
                }
                Err(e) => panic!("expected an open error, got {e}"),
                Ok(_) => panic!("a certificate of another CA was accepted"),
            }
        }
    })
    .await;
    drop_pg_database(conn, &db).await;
    finish(outcome).await;
}
