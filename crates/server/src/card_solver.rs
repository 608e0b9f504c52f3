//! The bank card that answers a connection's card-reader challenges by
//! itself: a sync whose connection has a card bound (`sca_card`) gets its
//! EMV-CAP codes from the card service, unattended. The PIN stays sealed
//! in the service; every use is audited there, under the sync's name.
use async_trait::async_trait;
use bankbridge_cap::emv::CapRequest;
use bankbridge_core::{Attendance, ScaAnswer, ScaChallenge, ScaSolver, ScaSolverError, Secret};

use crate::cards::CardService;

/// Card-reader challenges to the bound card; every other kind to `inner`.
pub struct CardSolver<'a> {
    cards: CardService,
    card_id: String,
    /// Who the card's audit names: `sync:<connection>`.
    who: String,
    inner: &'a dyn ScaSolver,
}

impl<'a> CardSolver<'a> {
    pub fn new(
        cards: CardService,
        card_id: impl Into<String>,
        connection: &str,
        inner: &'a dyn ScaSolver,
    ) -> Self {
        CardSolver {
            cards,
            card_id: card_id.into(),
            who: format!("sync:{connection}"),
            inner,
        }
    }
}

#[async_trait]
impl ScaSolver for CardSolver<'_> {
    async fn solve(&self, challenge: &ScaChallenge) -> Result<ScaAnswer, ScaSolverError> {
        let request = match challenge {
            ScaChallenge::CardReaderLogin { challenge } => CapRequest::Login {
                challenge: challenge.clone(),
            },
            ScaChallenge::CardReaderSign { numbers } => CapRequest::Sign {
                numbers: numbers.clone(),
            },
            _ => return self.inner.solve(challenge).await,
        };
        match self
            .cards
            .compute_with_card(&self.card_id, request, &self.who)
            .await
        {
            Ok(code) => Ok(ScaAnswer::Code(Secret::new(code.response))),
            // A refused PIN disables the card in the service: not tried again.
            Err(e) => Ok(ScaAnswer::Unavailable(format!(
                "card {} could not make the code: {e}",
                self.card_id
            ))),
        }
    }

    fn attendance(&self) -> Attendance {
        self.inner.attendance()
    }
}
