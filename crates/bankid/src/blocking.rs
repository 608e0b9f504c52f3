//! A blocking client for programs without an async runtime: the async client
//! on its own current-thread Tokio runtime.
//!
//! Do not call it from inside an async runtime (Tokio refuses to block a
//! runtime thread); use [`BankIdClient`] there.
use crate::client::{BankIdClient, BankIdClientBuilder};
use crate::driver::{self, DriveOptions, OrderEvent, Outcome, StartedOrder};
use crate::error::BankIdError;
use crate::types::{
    AuthRequest, CollectResponse, OrderResponse, PaymentRequest, PhoneAuthRequest,
    PhoneOrderResponse, PhoneSignRequest, SignRequest,
};

/// The blocking BankID client. Same methods as [`BankIdClient`].
#[derive(Debug)]
pub struct BlockingBankIdClient {
    inner: BankIdClient,
    runtime: tokio::runtime::Runtime,
}

impl BlockingBankIdClient {
    /// Wrap an async client.
    pub fn new(inner: BankIdClient) -> Result<Self, BankIdError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| BankIdError::Config(format!("cannot start a Tokio runtime: {e}")))?;
        Ok(Self { inner, runtime })
    }

    /// Build from a [`BankIdClientBuilder`].
    pub fn from_builder(builder: BankIdClientBuilder) -> Result<Self, BankIdError> {
        Self::new(builder.build()?)
    }

    /// The async client inside.
    pub fn inner(&self) -> &BankIdClient {
        &self.inner
    }

    pub fn auth(&self, request: &AuthRequest) -> Result<OrderResponse, BankIdError> {
        self.runtime.block_on(self.inner.auth(request))
    }

    pub fn sign(&self, request: &SignRequest) -> Result<OrderResponse, BankIdError> {
        self.runtime.block_on(self.inner.sign(request))
    }

    pub fn payment(&self, request: &PaymentRequest) -> Result<OrderResponse, BankIdError> {
        self.runtime.block_on(self.inner.payment(request))
    }

    pub fn phone_auth(
        &self,
        request: &PhoneAuthRequest,
    ) -> Result<PhoneOrderResponse, BankIdError> {
        self.runtime.block_on(self.inner.phone_auth(request))
    }

    pub fn phone_sign(
        &self,
        request: &PhoneSignRequest,
    ) -> Result<PhoneOrderResponse, BankIdError> {
        self.runtime.block_on(self.inner.phone_sign(request))
    }

    pub fn collect(&self, order_ref: &str) -> Result<CollectResponse, BankIdError> {
        self.runtime.block_on(self.inner.collect(order_ref))
    }

    pub fn cancel(&self, order_ref: &str) -> Result<(), BankIdError> {
        self.runtime.block_on(self.inner.cancel(order_ref))
    }

    pub fn check_connection(&self) -> Result<(), BankIdError> {
        self.runtime.block_on(self.inner.check_connection())
    }

    /// Drive an order to its end, calling `events` on this thread (see
    /// [`driver::drive`]).
    pub fn drive(
        &self,
        order: StartedOrder,
        options: DriveOptions,
        events: impl FnMut(OrderEvent),
    ) -> Result<Outcome, BankIdError> {
        self.runtime
            .block_on(driver::drive(&self.inner, order, options, events))
    }
}
