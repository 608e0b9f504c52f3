//! The aggregator connectors (`gocardless`, `enablebanking`, `klarna`) against the
//! sandbox's simulators of their services over loopback HTTP, driven by the
//! real sync engine on SQLite (and PostgreSQL when `BANKBRIDGE_TEST_PG_URL`
//! is set). For each: linked on the bank's page and synced to the truth, a
//! re-sync that writes nothing, a week of hourly unattended syncs within 4
//! calls a day per account and scope (with service faults), an expired
//! agreement or session that stops in `needs_user`, a cancelled link, a
//! re-link with new account ids that continues the same accounts' history,
//! and a refused secret.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bankbridge_core::{
    Attendance, ConnectionSettings, Credentials, MasterKey, ScaAnswer, ScaChallenge, ScaSolver,
    ScaSolverError, Secret, TxStatus,
};
use bankbridge_sandbox::fibank::AccountTruth;
use bankbridge_sandbox::{FaultConfig, SandboxConfig, SandboxHandle};
use bankbridge_store::testing::{create_pg_database, drop_pg_database, pg_admin_url};
use bankbridge_store::{SqliteStore, Store, SyncOutcome, TxQuery};
use bankbridge_sync::{ConnectorFactory, SyncError, SyncSummary, Syncer};
use chrono::NaiveDate;
use rust_decimal::Decimal;

const NAME: &str = "agg";
const CALLBACK: &str = "http://127.0.0.1:9/callback";

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 5, 20).unwrap()
}

/// The two services, with what differs between their simulators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Service {
    GoCardless,
    EnableBanking,
    Klarna,
}

use Service::{EnableBanking, GoCardless, Klarna};

const ALL: [Service; 3] = [GoCardless, EnableBanking, Klarna];

impl Service {
    fn connector(self) -> &'static str {
        match self {
            GoCardless => "gocardless",
            EnableBanking => "enablebanking",
            Klarna => "klarna",
        }
    }

    /// A connection's settings and secret for the simulator.
    fn connection(self, sb: &SandboxHandle) -> (ConnectionSettings, Credentials) {
        let (mut settings, secret) = match self {
            GoCardless => {
                let c = sb.gocardless().credentials();
                let mut s = ConnectionSettings::new(c.base_url, c.secret_id);
                s.options
                    .insert("institution_id".into(), "SANDBOXFINANCE_SFIN0000".into());
                s.options.insert("history_days".into(), "730".into());
                (s, c.secret_key)
            }
            EnableBanking => {
                let c = sb.enablebanking().credentials();
                let mut s = ConnectionSettings::new(c.base_url, c.application_id);
                s.options
                    .insert("aspsp_name".into(), "Sandbox Pankki".into());
                s.options.insert("aspsp_country".into(), "FI".into());
                (s, c.private_key_pem)
            }
            Klarna => {
                let c = sb.klarna().credentials();
                // The username is the login at the test bank; its PIN is asked.
                let mut s = ConnectionSettings::new(
                    format!(
                        "{}{}",
                        sb.root_url(),
                        bankbridge_sandbox::xs2a_playground::PREFIX
                    ),
                    c.username,
                );
                s.options.insert("bank_code".into(), c.bank_code);
                s.options.insert("country_code".into(), c.country_code);
                (s, c.api_token)
            }
        };
        settings.window_days = 366;
        (settings, Credentials::with_password(Secret::new(secret)))
    }

    /// The option that sets how long a link lasts, in days.
    fn access_option(self) -> &'static str {
        match self {
            GoCardless => "access_days",
            EnableBanking | Klarna => "consent_days",
        }
    }

    fn truth(self, sb: &SandboxHandle) -> Vec<AccountTruth> {
        match self {
            GoCardless => sb.gocardless().truth(),
            EnableBanking => sb.enablebanking().truth(),
            Klarna => sb.klarna().truth(),
        }
    }

    fn advance(self, sb: &SandboxHandle, days: u32) {
        match self {
            GoCardless => sb.gocardless().advance(days),
            EnableBanking => sb.enablebanking().advance(days),
            Klarna => sb.klarna().advance(days),
        }
        .unwrap();
    }

    fn advance_hours(self, sb: &SandboxHandle, hours: u32) {
        match self {
            GoCardless => sb.gocardless().advance_hours(hours),
            EnableBanking => sb.enablebanking().advance_hours(hours),
            Klarna => sb.klarna().advance_hours(hours),
        }
        .unwrap();
    }

    /// The most counted calls of one account and scope on one day, and the
    /// calls refused with 429.
    fn usage(self, sb: &SandboxHandle) -> (u32, u32) {
        match self {
            GoCardless => sb.gocardless().usage(),
            EnableBanking => sb.enablebanking().usage(),
            Klarna => sb.klarna().usage(),
        }
    }
}

struct Env {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    syncer: Syncer,
    sb: SandboxHandle,
    service: Service,
}

async fn env(
    service: Service,
    store: Option<Arc<dyn Store>>,
    fault_rate: f64,
    options: &[(&str, &str)],
) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let sb = bankbridge_sandbox::spawn(SandboxConfig {
        seed: 31,
        accounts: 2,
        transactions: 500,
        years: 1,
        today: Some(today()),
        fault: FaultConfig {
            fault_rate,
            ..FaultConfig::default()
        },
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox starts");
    let store = match store {
        Some(s) => s,
        None => Arc::new(SqliteStore::open(&dir.path().join("x.db")).await.unwrap()),
    };
    let factory: ConnectorFactory = Arc::new(|c, settings, credentials| {
        bankbridge_connectors::build(&c.connector, settings, credentials)
    });
    let mut syncer = Syncer::new(store.clone(), Arc::new(MasterKey::generate()), factory);
    syncer.options.backoff_base = Duration::from_millis(5);
    syncer.options.max_retry_after = Duration::from_millis(50);
    let (mut settings, credentials) = service.connection(&sb);
    for (k, v) in options {
        settings.options.insert((*k).into(), (*v).into());
    }
    bankbridge_sync::add_connection(
        store.as_ref(),
        &syncer.key,
        NAME,
        service.connector(),
        &settings,
        &credentials,
    )
    .await
    .unwrap();
    Env {
        _dir: dir,
        store,
        syncer,
        sb,
        service,
    }
}

/// The user at a browser: follows the link to the bank's page and agrees
/// (or cancels), as the page's form does; the answer is what the CLI's
/// loopback port or `serve`'s callback route hands over: the query the
/// browser came back with. Asked for the PIN at the bank (Klarna's form),
/// types the test bank's.
struct Browser {
    approve: bool,
    links: Mutex<Vec<String>>,
    secrets: Mutex<Vec<String>>,
}

impl Browser {
    fn new(approve: bool) -> Browser {
        Browser {
            approve,
            links: Mutex::new(Vec::new()),
            secrets: Mutex::new(Vec::new()),
        }
    }
}

#[async_trait]
impl ScaSolver for Browser {
    async fn solve(&self, challenge: &ScaChallenge) -> Result<ScaAnswer, ScaSolverError> {
        if let ScaChallenge::Secret { prompt } = challenge {
            self.secrets.lock().unwrap().push(prompt.clone());
            return Ok(ScaAnswer::Code(Secret::new(
                bankbridge_sandbox::xs2a_playground::PASSWORD.to_owned(),
            )));
        }
        let ScaChallenge::Redirect { url } = challenge else {
            return Ok(ScaAnswer::NotNow);
        };
        self.links.lock().unwrap().push(url.clone());
        let action = if self.approve { "approve" } else { "cancel" };
        let res = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .post(url)
            .form(&[("user", "alex"), ("code", "1234"), ("action", action)])
            .send()
            .await
            .map_err(|e| ScaSolverError(e.to_string()))?;
        let back = res
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(back.starts_with(CALLBACK), "back to us: {back}");
        let query = back.split_once('?').map(|(_, q)| q).unwrap_or_default();
        Ok(ScaAnswer::Returned(Secret::new(query.to_owned())))
    }

    fn attendance(&self) -> Attendance {
        Attendance {
            psu_present: true,
            redirect_uri: Some(CALLBACK.to_owned()),
        }
    }
}

type Totals = HashMap<String, ((u64, Decimal), u64)>;

impl Env {
    async fn sync(&self, solver: &dyn ScaSolver) -> Result<SyncSummary, SyncError> {
        let c = self.store.find_connection(NAME).await.unwrap().unwrap();
        self.syncer.sync_with_solver(&c, &|_| {}, solver).await
    }

    async fn unattended(&self) -> Result<SyncSummary, SyncError> {
        self.sync(&bankbridge_core::Unattended).await
    }

    /// Per IBAN: booked (count, sum) and pending count, as stored.
    async fn stored(&self) -> Totals {
        let mut out = HashMap::new();
        for a in self.store.list_accounts(None).await.unwrap() {
            let rows = self
                .store
                .query_transactions(&TxQuery {
                    account_id: Some(a.id),
                    ..Default::default()
                })
                .await
                .unwrap();
            let booked: Vec<_> = rows
                .iter()
                .filter(|t| t.status == TxStatus::Booked)
                .collect();
            let pending = rows
                .iter()
                .filter(|t| t.status == TxStatus::Pending)
                .count();
            out.insert(
                a.iban.unwrap().to_string(),
                (
                    (booked.len() as u64, booked.iter().map(|t| t.amount).sum()),
                    pending as u64,
                ),
            );
        }
        out
    }

    fn truth(&self) -> Totals {
        self.service
            .truth(&self.sb)
            .into_iter()
            .map(|t| {
                (
                    t.iban,
                    (
                        (t.booked_count, t.booked_sum.parse().unwrap()),
                        t.pending_count,
                    ),
                )
            })
            .collect()
    }

    async fn assert_matches_truth(&self, when: &str) {
        assert_eq!(
            self.stored().await,
            self.truth(),
            "{:?}, {when}: stored differs from the bank's truth",
            self.service
        );
    }

    async fn connection(&self) -> bankbridge_store::Connection {
        self.store.find_connection(NAME).await.unwrap().unwrap()
    }
}

async fn linked_to_truth(service: Service, store: Option<Arc<dyn Store>>) {
    let e = env(service, store, 0.0, &[]).await;
    let browser = Browser::new(true);
    let first = e.sync(&browser).await.unwrap();
    assert_eq!(first.accounts, 2);
    assert_eq!(browser.links.lock().unwrap().len(), 1, "one link");
    if service == Klarna {
        let asked = browser.secrets.lock().unwrap().clone();
        assert_eq!(asked.len(), 1, "the PIN is asked once: {asked:?}");
        assert!(asked[0].contains("PIN at the bank"), "{asked:?}");
    }
    e.assert_matches_truth("first sync").await;
    // A second run writes nothing and needs no new link.
    let again = e.sync(&browser).await.unwrap();
    assert_eq!((again.inserted, again.updated, again.voided), (0, 0, 0));
    assert_eq!(browser.links.lock().unwrap().len(), 1);
    let consent = e.connection().await.consent.expect("the link is recorded");
    assert_eq!(consent.status, "valid");
    // 90 days of access from the link, the last whole day one before.
    assert_eq!(
        consent.valid_until,
        Some(today() + chrono::Days::new(89)),
        "{consent:?}"
    );
    // Balances were read: the newest booked balance matches the bank's.
    let accounts = e.store.list_accounts(None).await.unwrap();
    for t in service.truth(&e.sb) {
        let a = accounts
            .iter()
            .find(|a| a.iban.as_ref().map(|i| i.to_string()) == Some(t.iban.clone()))
            .unwrap();
        let all = e.store.list_balances(a.id).await.unwrap();
        let b = bankbridge_store::current_balance(&all).expect("a closing balance");
        assert_eq!(b.balance.kind, bankbridge_core::BalanceKind::ClosingBooked);
        assert_eq!(
            b.balance.amount,
            t.balance.parse::<Decimal>().unwrap(),
            "{}",
            t.iban
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_and_synced_to_the_truth_on_sqlite() {
    for service in ALL {
        linked_to_truth(service, None).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_and_synced_to_the_truth_on_postgres() {
    let Some(admin) = pg_admin_url() else { return };
    for service in ALL {
        let (conn, db, url) = create_pg_database(&admin).await;
        linked_to_truth(service, Some(bankbridge_store::open(&url).await.unwrap())).await;
        drop_pg_database(conn, &db).await;
    }
}

async fn a_week_of_hourly_syncs(service: Service) {
    // Service faults on top (5xx, throttles, cut bodies): retried.
    let e = env(service, None, 0.05, &[]).await;
    e.sync(&Browser::new(true)).await.unwrap();
    let mut deferred = 0;
    let mut reasons = Vec::new();
    for _ in 0..(7 * 24) {
        service.advance_hours(&e.sb, 1);
        let s = e.unattended().await.unwrap();
        if s.deferred > 0 {
            deferred += 1;
            reasons.push(s.deferred_reason.unwrap());
        }
    }
    let (max_per_day, refused) = service.usage(&e.sb);
    eprintln!(
        "{service:?}: {deferred} of 168 hourly runs waited for the budget; at most {max_per_day} calls a day per account and scope; {refused} refused with 429"
    );
    assert_eq!(
        max_per_day, 4,
        "{service:?}: at most 4 a day per account and scope, and the budget is used"
    );
    assert_eq!(
        refused, 0,
        "{service:?}: no call the budget could not afford"
    );
    assert!(deferred > 100, "{service:?}: most hours wait: {deferred}");
    assert!(
        reasons.iter().all(|r| r.contains("next call from")),
        "a wait says until when: {:?}",
        reasons.first()
    );
    assert!(
        reasons.iter().any(|r| r.contains("paced")),
        "unattended calls are spread over the day, not spent at once"
    );
    assert_eq!(
        e.connection().await.last_sync_status,
        SyncOutcome::Ok,
        "waiting is no failure"
    );
    // Runs in the next parts of the day read the rest. A fault that cost
    // a counted call may leave an account waiting for the next part (the
    // pace allows one call in each), so it gets a few.
    for _ in 0..3 {
        service.advance_hours(&e.sb, 6);
        if e.unattended().await.unwrap().deferred == 0 {
            break;
        }
    }
    e.assert_matches_truth("after a week of hourly syncs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gocardless_a_week_of_hourly_syncs_keeps_to_four_calls_a_day_and_converges() {
    a_week_of_hourly_syncs(GoCardless).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enablebanking_a_week_of_hourly_syncs_keeps_to_four_calls_a_day_and_converges() {
    a_week_of_hourly_syncs(EnableBanking).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn klarna_a_week_of_hourly_syncs_keeps_to_four_calls_a_day_and_converges() {
    a_week_of_hourly_syncs(Klarna).await;
}

async fn expiry_and_relink(service: Service) {
    let e = env(service, None, 0.0, &[(service.access_option(), "10")]).await;
    e.sync(&Browser::new(true)).await.unwrap();
    let before = e.store.list_accounts(None).await.unwrap();
    // Past the ten days: the scheduled run stops for the user.
    service.advance(&e.sb, 11);
    let err = e.unattended().await.unwrap_err();
    assert!(err.needs_user(), "{err}");
    let text = err.to_string();
    let ended = match service {
        GoCardless => "end-user agreement",
        EnableBanking => "session ended",
        Klarna => "consent ended",
    };
    assert!(text.contains(ended), "{text}");
    assert!(text.contains("link the bank again"), "{text}");
    let c = e.connection().await;
    assert_eq!(c.last_sync_status, SyncOutcome::NeedsUser);
    assert_eq!(c.consent.unwrap().status, "expired");

    // A link the user cancels: the sync waits for the user and says why;
    // nothing is wasted (GoCardless: the agreement is reused next time).
    let cancelled = e.sync(&Browser::new(false)).await.unwrap_err();
    assert!(cancelled.needs_user(), "{cancelled}");
    let agreements = e.sb.gocardless().agreement_count();
    if service == EnableBanking {
        assert!(
            cancelled.to_string().contains("access_denied"),
            "{cancelled}"
        );
        assert_eq!(e.sb.enablebanking().session_count(), 1);
    }
    if service == Klarna {
        assert!(
            cancelled.to_string().contains("did not authorise"),
            "{cancelled}"
        );
        // The bank renumbers its accounts meanwhile: the IBANs stay.
        e.sb.klarna().renew_ids();
    }

    // The user links again: new account ids, the same accounts.
    let s = e.sync(&Browser::new(true)).await.unwrap();
    assert_eq!(s.accounts, 2);
    match service {
        GoCardless => assert_eq!(e.sb.gocardless().agreement_count(), agreements, "reused"),
        EnableBanking => assert_eq!(e.sb.enablebanking().session_count(), 2),
        Klarna => {}
    }
    let after = e.store.list_accounts(None).await.unwrap();
    assert_eq!(
        after.iter().map(|a| a.id).collect::<Vec<_>>(),
        before.iter().map(|a| a.id).collect::<Vec<_>>(),
        "no new accounts: the new ids map to the stored ones"
    );
    e.assert_matches_truth("after the re-link").await;
    assert_eq!(e.connection().await.consent.unwrap().status, "valid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gocardless_an_expired_agreement_needs_a_new_link_and_the_history_continues() {
    expiry_and_relink(GoCardless).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enablebanking_an_expired_session_needs_a_new_link_and_the_history_continues() {
    expiry_and_relink(EnableBanking).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn klarna_an_expired_consent_needs_a_new_link_and_the_history_continues() {
    expiry_and_relink(Klarna).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn klarna_renumbered_accounts_are_read_again_and_the_sync_goes_on() {
    let e = env(Klarna, None, 0.0, &[]).await;
    let browser = Browser::new(true);
    e.sync(&browser).await.unwrap();
    let before = e.store.list_accounts(None).await.unwrap();
    // The bank gives its accounts new ids within the consent.
    e.sb.klarna().renew_ids();
    let refused = e.sb.klarna().stats()["refused"].as_u64().unwrap();
    let s = e.sync(&browser).await.unwrap();
    // The same day: the kept ids were tried, refused, and read again.
    assert!(
        e.sb.klarna().stats()["refused"].as_u64().unwrap() > refused,
        "the old id was refused once"
    );
    assert_eq!((s.inserted, s.updated, s.voided), (0, 0, 0), "{s:?}");
    assert_eq!(
        browser.links.lock().unwrap().len(),
        1,
        "no new link was needed"
    );
    let after = e.store.list_accounts(None).await.unwrap();
    assert_eq!(
        after.iter().map(|a| a.id).collect::<Vec<_>>(),
        before.iter().map(|a| a.id).collect::<Vec<_>>()
    );
    e.assert_matches_truth("after the bank renumbered its accounts")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_the_service_does_not_know_is_refused_credentials() {
    for service in ALL {
        let e = env(service, None, 0.0, &[]).await;
        let wrong = match service {
            GoCardless => format!("{}x", e.sb.gocardless().credentials().secret_key),
            Klarna => format!("{}x", e.sb.klarna().credentials().api_token),
            EnableBanking => {
                let other = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
                rsa::pkcs8::EncodePrivateKey::to_pkcs8_pem(&other, rsa::pkcs8::LineEnding::LF)
                    .unwrap()
                    .to_string()
            }
        };
        bankbridge_sync::update_connection(
            e.store.as_ref(),
            &e.syncer.key,
            &e.connection().await,
            &bankbridge_sync::ConnectionChange {
                password: Some(Secret::new(wrong)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let err = e.sync(&Browser::new(true)).await.unwrap_err();
        assert!(err.credentials_refused(), "{service:?}: {err}");
        let said = match service {
            GoCardless => "secret id and key",
            EnableBanking => "private key",
            Klarna => "API token",
        };
        assert!(err.to_string().contains(said), "{err}");
    }
}
