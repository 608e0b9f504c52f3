//! What a sync job shows while it runs, and the person who answers its
//! strong customer authentication from the dashboard.
//!
//! Every job started in this process has a [`LiveJob`]: the sync's events
//! update it, the dashboard's job page reads it (a snapshot a second while
//! the page is open). A sync started from the dashboard gets a [`PageSolver`]
//! instead of the unattended one: a challenge that needs the person (a
//! one-time code, a card-reader code, a redirect) waits on the job page for
//! their answer, at most [`ANSWER_WAIT`]; a decoupled approval needs no
//! answer, the page says what to approve while the engine polls the bank.
//! Nobody answering in time stops the sync in `needs_user`, as unattended.
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bankbridge_core::{ScaAnswer, ScaChallenge, ScaSolver, ScaSolverError};
use bankbridge_sync::SyncEvent;
use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

/// How long a question waits for the person on the job page.
pub const ANSWER_WAIT: Duration = Duration::from_secs(10 * 60);

/// Events kept for the page (the newest).
const RECENT: usize = 8;

/// A running job's progress and its open question.
#[derive(Default)]
pub struct LiveJob {
    state: Mutex<LiveState>,
    answer: Mutex<Option<(u64, oneshot::Sender<ScaAnswer>)>>,
}

/// A snapshot of a running job for the page.
#[derive(Clone, Debug, Default)]
pub struct LiveState {
    pub accounts: Option<usize>,
    pub windows_planned: usize,
    pub windows_done: usize,
    pub inserted: u64,
    pub updated: u64,
    /// What happened lately, oldest first, in words.
    pub recent: Vec<String>,
    /// A decoupled approval the bank waits for (the engine polls it).
    pub approval: Option<Approval>,
    /// A question only the person can answer, with its number.
    pub question: Option<(u64, ScaChallenge)>,
}

/// A decoupled approval being waited for.
#[derive(Clone, Debug)]
pub struct Approval {
    pub message: String,
    pub expires_at: Option<DateTime<Utc>>,
    /// A BankID order the bank started: its animated QR code and the
    /// autostart token for the BankID app on this device.
    pub bankid: Option<BankIdStart>,
}

/// What the page shows of a BankID order a bank started.
#[derive(Clone, Debug)]
pub struct BankIdStart {
    pub auto_start_token: String,
    pub qr: Option<bankbridge_bankid::qr::QrCode>,
}

impl LiveJob {
    fn state(&self) -> std::sync::MutexGuard<'_, LiveState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn snapshot(&self) -> LiveState {
        self.state().clone()
    }

    /// Fold one sync event into the progress.
    pub fn record(&self, event: &SyncEvent) {
        let mut s = self.state();
        let said = match event {
            SyncEvent::LoggedIn => Some("Logged in to the bank.".to_owned()),
            SyncEvent::Accounts { count } => {
                s.accounts = Some(*count);
                Some(format!("{count} account(s) found."))
            }
            SyncEvent::Planned { account, windows } => {
                s.windows_planned += windows;
                Some(format!("{account}: {windows} date window(s) to read."))
            }
            SyncEvent::WindowDone { stats, .. } => {
                s.windows_done += 1;
                s.inserted += stats.inserted;
                s.updated += stats.updated;
                None
            }
            SyncEvent::Retrying {
                what,
                attempt,
                delay,
                ..
            } => Some(format!(
                "Retrying {what} (attempt {attempt}) in {} s.",
                delay.as_secs()
            )),
            SyncEvent::Relogin => Some("Logging in again.".to_owned()),
            // A redirect's address may carry the bank's state: not in the list.
            SyncEvent::ScaRequired {
                challenge: ScaChallenge::Redirect { .. },
            } => Some("The bank asks for a visit to its page.".to_owned()),
            SyncEvent::ScaRequired { challenge } => Some(format!("The bank asks for {challenge}.")),
            SyncEvent::ScaDone => {
                s.approval = None;
                Some("Authentication accepted; going on.".to_owned())
            }
            SyncEvent::ScaStopped { account, .. } => {
                s.approval = None;
                Some(format!("{account}: stopped, the bank waits for you."))
            }
            SyncEvent::Deferred { account, reason } => Some(format!("{account}: waits: {reason}")),
            _ => None,
        };
        if let Some(said) = said {
            if s.recent.len() == RECENT {
                s.recent.remove(0);
            }
            s.recent.push(said);
        }
    }

    /// The browser came back from the bank's redirect page: the open
    /// redirect question, if any, is answered with the query it came back
    /// with ("approved" without one; the engine then asks the bank, which
    /// has the last word). False when none was open.
    pub fn redirect_returned(&self, query: Option<String>) -> bool {
        let number = match &self.state().question {
            Some((n, ScaChallenge::Redirect { .. })) => *n,
            _ => return false,
        };
        self.answer(
            number,
            query.map_or(ScaAnswer::Approved, |q| ScaAnswer::Returned(q.into())),
        )
    }

    /// Give the answer to question `number`; false when it is not the open one.
    pub fn answer(&self, number: u64, answer: ScaAnswer) -> bool {
        let mut slot = self.answer.lock().unwrap_or_else(|p| p.into_inner());
        match slot.take() {
            Some((n, tx)) if n == number => {
                self.state().question = None;
                tx.send(answer).is_ok()
            }
            other => {
                *slot = other;
                false
            }
        }
    }
}

/// The solver of a sync started from the dashboard.
pub struct PageSolver {
    pub live: std::sync::Arc<LiveJob>,
    pub wait: Duration,
    /// Where a bank's redirect SCA sends the browser back (this server's
    /// callback route for the job), when the server knows its address.
    pub redirect_uri: Option<String>,
}

#[async_trait]
impl ScaSolver for PageSolver {
    async fn solve(&self, challenge: &ScaChallenge) -> Result<ScaAnswer, ScaSolverError> {
        match challenge {
            ScaChallenge::Decoupled {
                message,
                expires_at,
                ..
            } => {
                self.live.state().approval = Some(Approval {
                    message: message.clone(),
                    expires_at: *expires_at,
                    bankid: None,
                });
                Ok(ScaAnswer::Approved)
            }
            // The bank started the order: the page shows its QR code while
            // the engine polls the bank.
            ScaChallenge::BankId {
                auto_start_token,
                qr_start_token,
                qr_start_secret,
            } => {
                let qr = match (qr_start_token, qr_start_secret) {
                    (Some(token), Some(secret)) => Some(bankbridge_bankid::qr::QrCode::new(
                        token.clone(),
                        secret.clone(),
                    )),
                    _ => None,
                };
                self.live.state().approval = Some(Approval {
                    message: "Identify yourself with BankID: scan the QR code with the BankID app, or open BankID on this device.".to_owned(),
                    expires_at: None,
                    bankid: Some(BankIdStart {
                        auto_start_token: auto_start_token.clone(),
                        qr,
                    }),
                });
                Ok(ScaAnswer::Approved)
            }
            _ => {
                let (tx, rx) = oneshot::channel();
                let number = rand::random::<u32>() as u64;
                *self.live.answer.lock().unwrap_or_else(|p| p.into_inner()) = Some((number, tx));
                self.live.state().question = Some((number, challenge.clone()));
                let answer = tokio::time::timeout(self.wait, rx).await;
                // This question's, not another's (the engine asks one at a time).
                {
                    let mut state = self.live.state();
                    if state.question.as_ref().is_some_and(|(n, _)| *n == number) {
                        state.question = None;
                    }
                }
                let mut slot = self.live.answer.lock().unwrap_or_else(|p| p.into_inner());
                if slot.as_ref().is_some_and(|(n, _)| *n == number) {
                    *slot = None;
                }
                drop(slot);
                Ok(match answer {
                    Ok(Ok(a)) => a,
                    // Nobody answered in time, or the page went away.
                    _ => ScaAnswer::NotNow,
                })
            }
        }
    }

    fn attendance(&self) -> bankbridge_core::Attendance {
        bankbridge_core::Attendance {
            psu_present: true,
            redirect_uri: self.redirect_uri.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_question_waits_for_its_own_answer() {
        let live = Arc::new(LiveJob::default());
        let solver = PageSolver {
            live: live.clone(),
            wait: Duration::from_secs(5),
            redirect_uri: None,
        };
        let asking = tokio::spawn(async move {
            solver
                .solve(&ScaChallenge::Otp {
                    prompt: "SMS".into(),
                })
                .await
        });
        let number = loop {
            if let Some((n, _)) = live.snapshot().question {
                break n;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert!(
            !live.answer(number + 1, ScaAnswer::Declined),
            "another question's answer"
        );
        assert!(live.answer(
            number,
            ScaAnswer::Code(bankbridge_core::Secret::from("123456"))
        ));
        assert_eq!(
            asking.await.unwrap().unwrap(),
            ScaAnswer::Code(bankbridge_core::Secret::from("123456"))
        );
        assert!(live.snapshot().question.is_none());
        assert!(!live.answer(number, ScaAnswer::Declined), "answered once");
    }

    #[tokio::test]
    async fn nobody_answering_stops_like_an_unattended_run() {
        let live = Arc::new(LiveJob::default());
        let solver = PageSolver {
            live: live.clone(),
            wait: Duration::from_millis(20),
            redirect_uri: None,
        };
        let answer = solver
            .solve(&ScaChallenge::Redirect {
                url: "https://bank.example/sca".into(),
            })
            .await
            .unwrap();
        assert_eq!(answer, ScaAnswer::NotNow);
        assert!(live.snapshot().question.is_none());
    }

    #[tokio::test]
    async fn a_decoupled_approval_is_shown_until_the_bank_accepts() {
        let live = Arc::new(LiveJob::default());
        let solver = PageSolver {
            live: live.clone(),
            wait: Duration::from_secs(1),
            redirect_uri: None,
        };
        let c = ScaChallenge::Decoupled {
            message: "approve in your app".into(),
            poll_after_secs: 1,
            reference: None,
            expires_at: None,
        };
        assert_eq!(solver.solve(&c).await.unwrap(), ScaAnswer::Approved);
        assert_eq!(
            live.snapshot().approval.map(|a| a.message).as_deref(),
            Some("approve in your app")
        );
        live.record(&SyncEvent::ScaDone);
        assert!(live.snapshot().approval.is_none());
    }
}
