//! The lane's side of payments that are not cash: starting attempts, committing each state of
//! an attempt with its `payment_attempt` journal entry (and, when it pays, the tender on the
//! sale) in one transaction, offline card limits, the offline QR and its confirmation, and the
//! refunds owed through the gateway. The network side is `crate::payments` (the runtime),
//! which calls [`Lane::payment_step`] with each answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ed25519_dalek::VerifyingKey;
use lanepay_checkout::barcode;
use lanepay_checkout::payment::{
    AttemptState, Call, Confirmation, Effect, Flow, Input, OfflineCardLimits, PaymentAttempt,
    Timings, decide_offline_card,
};
use lanepay_checkout::refund::Refund;
use lanepay_checkout::{Money, PaymentWallet, TenderMethod};
use lanepay_sync::payload::{self, kind};
use lanepay_sync::payment::{self as wire, OfflineOrder};
use rusqlite::Connection;

use super::{Lane, PlannedTender, no_sale, storage_error};
use crate::api::{
    CommandError, Event, OfflineExposureView, PaymentAttemptView, PaymentsView, Reply,
};
use crate::remote_config;
use crate::store::StoreError;
use crate::store::payments::{self as rows, AttemptRecord, GatewayRefund};

/// How long the lane waits for a card to be tapped before giving up on the read.
pub const CARD_TAP_TIMEOUT_MS: i64 = 30_000;

/// What the payments runtime shares with the lane.
#[derive(Clone, Debug, Default)]
pub struct PaymentContext {
    /// The gateway's base URL (offline QR orders point at its page), when enrolled.
    pub gateway_url: Option<String>,
    pub merchant_id: String,
    /// The gateway's signing key (offline QR confirmations), when enrolled.
    pub gateway_key: Option<VerifyingKey>,
    /// Whether the gateway answered lately (the uplink and the runtime's own calls say).
    pub online: Arc<AtomicBool>,
    /// Bumped whenever the runtime has new work (an attempt, a cancel, a card to read).
    pub wake: Option<tokio::sync::watch::Sender<u64>>,
    /// A card reader is configured.
    pub card_reader: bool,
}

impl PaymentContext {
    pub fn wake_runtime(&self) {
        if let Some(wake) = &self.wake {
            wake.send_modify(|generation| *generation = generation.wrapping_add(1));
        }
    }

    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::SeqCst)
    }
}

/// What an attempt's first request needs and the lane never writes down.
#[derive(Clone)]
pub enum PaymentSecret {
    /// The customer's single-use wallet code (a bearer credential).
    WalletCode(String),
    /// The card sealed to the gateway's key (JSON of `SealedCard`).
    Card(String),
}

impl std::fmt::Debug for PaymentSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PaymentSecret::WalletCode(code) => write!(f, "WalletCode({})", super::shown_code(code)),
            PaymentSecret::Card(_) => f.write_str("Card(sealed)"),
        }
    }
}

/// A card payment waiting for the tap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardRequest {
    /// Tells one request from the next (a cancelled tap's late read is ignored).
    pub request_no: u64,
    pub sale_id: String,
    pub amount: Money,
    pub requested_at_ms: i64,
}

/// A card as the runtime read and sealed it: nothing else of the card leaves the reader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedCardRead {
    /// JSON of `SealedCard`.
    pub sealed_json: String,
    pub masked_pan: String,
}

/// The result of one step: the attempt as committed and the calls the runtime makes now.
#[derive(Clone, Debug)]
pub struct PaymentStep {
    pub record: AttemptRecord,
    pub calls: Vec<Call>,
}

impl Lane {
    pub fn set_payment_context(&mut self, context: PaymentContext) {
        self.payment_context = context;
    }

    pub fn payment_context(&self) -> &PaymentContext {
        &self.payment_context
    }

    /// The timings in force (the signed configuration, or the defaults before there is one).
    pub fn payment_timings(&self) -> Timings {
        match remote_config::current(&self.conn) {
            Ok(Some(config)) => Timings {
                poll_interval_ms: config.wallet_code.poll_interval_ms,
                poll_for_ms: config.wallet_code.poll_for_ms,
                reverse_not_before_ms: config.wallet_code.reverse_not_before_ms,
                reverse_retry_ms: config.wallet_code.reverse_retry_ms,
                dynamic_qr_timeout_ms: config.dynamic_qr_timeout_ms,
            },
            _ => Timings::default(),
        }
    }

    /// The offline card limits in force.
    pub fn offline_card_limits(&self) -> OfflineCardLimits {
        remote_config::offline_card_limits(&self.conn)
    }

    fn offline_qr_validity_ms(&self) -> i64 {
        match remote_config::current(&self.conn) {
            Ok(Some(config)) => config.offline_qr_validity_ms,
            _ => lanepay_sync::config::DEFAULT_OFFLINE_QR_VALIDITY_MS,
        }
    }

    /// The gateway's X25519 key cards are sealed to, from the signed configuration.
    pub fn card_seal_key(&self) -> Option<[u8; 32]> {
        remote_config::current(&self.conn)
            .ok()
            .flatten()
            .and_then(|config| config.card_seal_public())
    }

    /// Whether the sale in progress has a payment whose outcome is not known yet.
    pub(super) fn payment_in_progress(&self) -> Result<bool, StoreError> {
        let Some(current) = &self.current else {
            return Ok(false);
        };
        if self
            .card_request
            .as_ref()
            .is_some_and(|r| r.sale_id == current.sale.id.0)
        {
            return Ok(true);
        }
        Ok(rows::for_sale(&self.conn, &current.sale.id.0)?
            .iter()
            .any(|r| r.attempt.state.is_unresolved()))
    }

    /// Card payments stored offline, for the status bar and HQ.
    pub fn offline_exposure(&self, now_ms: i64) -> Result<OfflineExposureView, StoreError> {
        let stored = rows::stored_cards(&self.conn)?;
        Ok(OfflineExposureView {
            offline_exposure: stored.total.to_string(),
            stored_count: stored.count,
            oldest_stored_age_ms: stored.oldest_stored_at_ms.map(|t| now_ms.saturating_sub(t)),
        })
    }

    /// Attempts the runtime has work for (unresolved, or stored and not forwarded).
    pub fn active_payments(&self) -> Result<Vec<AttemptRecord>, StoreError> {
        rows::active(&self.conn)
    }

    pub fn take_payment_secret(&mut self, attempt_id: &str) -> Option<PaymentSecret> {
        self.payment_secrets.remove(attempt_id)
    }

    /// The card payment waiting for a tap, if any.
    pub fn card_request(&self) -> Option<CardRequest> {
        self.card_request.clone()
    }

    pub fn pending_gateway_refunds(&self) -> Result<Vec<GatewayRefund>, StoreError> {
        rows::pending_gateway_refunds(&self.conn)
    }

    pub fn set_gateway_refund_state(
        &self,
        refund_no: &str,
        state: &str,
        message: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        rows::set_gateway_refund_state(&self.conn, refund_no, state, message, now_ms)
    }

    fn require_gateway(&self, what: &str) -> Result<(), CommandError> {
        if self.payment_context.gateway_url.is_none() {
            return Err(CommandError::new(
                "not_allowed",
                format!(
                    "this lane is not enrolled with a gateway, so it cannot take {what}: take cash"
                ),
            ));
        }
        if !self.payment_context.is_online() {
            return Err(CommandError::new(
                "offline",
                format!(
                    "the lane is offline, and {what} needs the gateway: take cash, a card (stored offline) or show the offline QR"
                ),
            ));
        }
        Ok(())
    }

    /// What is still owed on the sale in progress, which must be able to take a payment.
    fn amount_owed(&self) -> Result<Money, CommandError> {
        let current = self.current.as_ref().ok_or_else(no_sale)?;
        if self.payment_in_progress().map_err(storage_error)? {
            return Err(CommandError::new(
                "not_allowed",
                "a payment is already in progress on this sale: wait for its result or cancel it",
            ));
        }
        let mut probe = current.sale.clone();
        probe.begin_tendering().map_err(super::sale_error)?;
        let owed = current.sale.remaining();
        if owed.fen() <= 0 {
            return Err(CommandError::new(
                "not_allowed",
                "nothing is owed on this sale",
            ));
        }
        Ok(owed)
    }

    pub(super) fn pay_wallet_code(
        &mut self,
        code: &str,
        now_ms: i64,
        events: &mut Vec<Event>,
    ) -> Result<Reply, CommandError> {
        let Some(wallet) = barcode::payment_wallet(code) else {
            return Err(CommandError::new(
                "misread",
                "that is not a wallet payment code: scan the customer's code again",
            ));
        };
        self.amount_owed()?;
        self.require_gateway("a wallet payment code")?;
        let record = self.begin_attempt(
            Flow::WalletCode,
            TenderMethod::Wallet(wallet),
            |id, amount, timings| {
                let (attempt, effects) =
                    PaymentAttempt::start(id, Flow::WalletCode, amount, timings, now_ms);
                Ok((attempt, effects, None, None))
            },
            Some(PaymentSecret::WalletCode(code.to_string())),
            None,
            now_ms,
            events,
        )?;
        Ok(Reply::Payment(attempt_view(&record)))
    }

    pub(super) fn start_dynamic_qr(
        &mut self,
        wallet: &str,
        now_ms: i64,
        events: &mut Vec<Event>,
    ) -> Result<Reply, CommandError> {
        let method = match TenderMethod::from_code(wallet.trim()) {
            Some(method @ TenderMethod::Wallet(_)) => method,
            _ => {
                return Err(CommandError::new(
                    "bad_request",
                    format!("`{wallet}` is not a wallet: say alipay, wechat or unionpay"),
                ));
            }
        };
        self.amount_owed()?;
        self.require_gateway("a dynamic QR")?;
        let record = self.begin_attempt(
            Flow::DynamicQr,
            method,
            |id, amount, timings| {
                let (attempt, effects) =
                    PaymentAttempt::start(id, Flow::DynamicQr, amount, timings, now_ms);
                Ok((attempt, effects, None, None))
            },
            None,
            None,
            now_ms,
            events,
        )?;
        Ok(Reply::Payment(attempt_view(&record)))
    }

    pub(super) fn pay_card(
        &mut self,
        now_ms: i64,
        events: &mut Vec<Event>,
    ) -> Result<Reply, CommandError> {
        let amount = self.amount_owed()?;
        if !self.payment_context.card_reader {
            return Err(CommandError::new(
                "not_allowed",
                "no card reader is configured on this lane: take another payment method",
            ));
        }
        if self.card_seal_key().is_none() {
            return Err(CommandError::new(
                "not_allowed",
                "this lane has no card sealing key from the gateway yet (enroll it, or let it sync once): take another payment method",
            ));
        }
        let current = self.current.as_ref().ok_or_else(no_sale)?;
        self.card_requests_made += 1;
        let request_no = self.card_requests_made;
        let request = CardRequest {
            request_no,
            sale_id: current.sale.id.0.clone(),
            amount,
            requested_at_ms: now_ms,
        };
        self.card_request = Some(request.clone());
        self.payment_context.wake_runtime();
        let view = card_request_view(&request, "waiting_for_card", "tap card", None);
        events.push(Event::PaymentChanged(view.clone()));
        Ok(Reply::Payment(view))
    }

    /// The runtime read and sealed the card for `request_no`: pay online, or store it within
    /// the offline limits when the gateway is unreachable.
    pub fn start_card_payment(
        &mut self,
        request_no: u64,
        card: SealedCardRead,
        now_ms: i64,
        events: &mut Vec<Event>,
    ) -> Result<PaymentAttemptView, CommandError> {
        let Some(request) = self
            .card_request
            .take_if(|request| request.request_no == request_no)
        else {
            return Err(CommandError::new(
                "not_allowed",
                "that card payment was cancelled",
            ));
        };
        let result = if self.payment_context.is_online() {
            self.begin_attempt(
                Flow::CardOnline,
                TenderMethod::Card,
                |id, amount, timings| {
                    let (attempt, effects) =
                        PaymentAttempt::start(id, Flow::CardOnline, amount, timings, now_ms);
                    Ok((attempt, effects, None, None))
                },
                Some(PaymentSecret::Card(card.sealed_json.clone())),
                Some(card.masked_pan.clone()),
                now_ms,
                events,
            )
        } else {
            let limits = self.offline_card_limits();
            let stored = rows::stored_cards(&self.conn).map_err(storage_error)?;
            match decide_offline_card(&limits, &stored, request.amount, now_ms) {
                Ok(()) => self.begin_attempt(
                    Flow::CardStored,
                    TenderMethod::Card,
                    |id, amount, _| {
                        let (attempt, effects) = PaymentAttempt::store_card(id, amount, now_ms);
                        Ok((attempt, effects, Some(card.sealed_json.clone()), None))
                    },
                    None,
                    Some(card.masked_pan.clone()),
                    now_ms,
                    events,
                ),
                Err(refusal) => Err(CommandError::new(
                    "offline_limit",
                    format!(
                        "the lane is offline and cannot store this card payment: {refusal}. Take cash or show the offline QR"
                    ),
                )),
            }
        };
        match result {
            Ok(record) => Ok(attempt_view(&record)),
            Err(error) => {
                events.push(Event::PaymentChanged(card_request_view(
                    &request,
                    "failed",
                    "failed",
                    Some(error.message.clone()),
                )));
                Err(error)
            }
        }
    }

    /// An online card payment whose authorisation surely never reached the gateway (the
    /// connection was refused although the lane thought it was online): the same attempt (same
    /// out_trade_no, so nothing can be charged twice) becomes a stored card within the offline
    /// limits instead of failing the tender, or fails with the limit's reason.
    pub fn store_unreachable_card(
        &mut self,
        attempt_id: &str,
        sealed_json: String,
        detail: &str,
        now_ms: i64,
        events: &mut Vec<Event>,
    ) -> Result<PaymentStep, CommandError> {
        let mut record = rows::load(&self.conn, attempt_id)
            .map_err(storage_error)?
            .ok_or_else(|| {
                CommandError::new("not_found", format!("no payment attempt {attempt_id}"))
            })?;
        if record.attempt.flow != Flow::CardOnline || record.attempt.state != AttemptState::Sending
        {
            return Err(CommandError::new(
                "not_allowed",
                format!("payment {attempt_id} is not an online card waiting for its first answer"),
            ));
        }
        let limits = self.offline_card_limits();
        let stored = rows::stored_cards(&self.conn).map_err(storage_error)?;
        if let Err(refusal) = decide_offline_card(&limits, &stored, record.attempt.amount, now_ms) {
            let timings = self.payment_timings();
            let effects = record.attempt.step(
                Input::Answer {
                    call: Call::Pay,
                    outcome: lanepay_checkout::payment::Outcome::NotSent {
                        detail: detail.to_string(),
                    },
                },
                &timings,
                now_ms,
            );
            record.attempt.message = Some(format!(
                "the gateway could not be reached ({detail}) and the card cannot be stored offline: {refusal}. Nothing was charged; take cash or show the offline QR"
            ));
            self.commit_attempt(&mut record, &effects, false, now_ms, events)?;
            return Ok(PaymentStep {
                record,
                calls: Vec::new(),
            });
        }
        let (mut attempt, effects) =
            PaymentAttempt::store_card(record.attempt.id.clone(), record.attempt.amount, now_ms);
        attempt.message = Some(format!(
            "the gateway could not be reached ({detail}): stored offline, forwarded when it is back"
        ));
        record.attempt = attempt;
        record.sealed_card = Some(sealed_json);
        self.commit_attempt(&mut record, &effects, false, now_ms, events)?;
        Ok(PaymentStep {
            record,
            calls: Vec::new(),
        })
    }

    /// The card read for `request_no` failed (no tap in time, a card that would not read).
    pub fn card_read_failed(&mut self, request_no: u64, message: String, events: &mut Vec<Event>) {
        if let Some(request) = self
            .card_request
            .take_if(|request| request.request_no == request_no)
        {
            events.push(Event::PaymentChanged(card_request_view(
                &request,
                "failed",
                "failed",
                Some(message),
            )));
        }
    }

    pub(super) fn start_offline_qr(
        &mut self,
        now_ms: i64,
        events: &mut Vec<Event>,
    ) -> Result<Reply, CommandError> {
        self.amount_owed()?;
        let Some(base_url) = self.payment_context.gateway_url.clone() else {
            return Err(CommandError::new(
                "not_allowed",
                "this lane is not enrolled with a gateway, so there is no payment page for an offline QR: take cash",
            ));
        };
        if self.payment_context.is_online() {
            return Err(CommandError::new(
                "not_allowed",
                "the lane is online: show the dynamic QR instead",
            ));
        }
        let expires_at_ms = now_ms.saturating_add(self.offline_qr_validity_ms());
        let merchant_id = self.payment_context.merchant_id.clone();
        let store_id = self.settings.store_id.clone();
        let terminal_id = self.settings.terminal_id.clone();
        let currency = self.settings.currency.clone();
        let sale_no = self.current.as_ref().map_or(0, |c| c.sale_no);
        let key = self.key.clone();
        let record = self.begin_attempt(
            Flow::OfflineQr,
            TenderMethod::OfflineQr,
            move |id, amount, _| {
                let order = OfflineOrder {
                    merchant_id,
                    store_id,
                    terminal_id,
                    out_trade_no: id.clone(),
                    seq: sale_no,
                    amount_fen: amount.fen(),
                    currency,
                    expires_at_ms,
                };
                let url = wire::offline_order_url(&base_url, &order, &key);
                let (attempt, effects) =
                    PaymentAttempt::open_offline_qr(id, amount, expires_at_ms, now_ms);
                Ok((attempt, effects, None, Some(url)))
            },
            None,
            None,
            now_ms,
            events,
        )?;
        Ok(Reply::Payment(attempt_view(&record)))
    }

    fn gateway_key(&self) -> Option<VerifyingKey> {
        if let Some(key) = self.payment_context.gateway_key {
            return Some(key);
        }
        let keys = crate::store::meta(&self.conn, "gateway_keys")
            .ok()
            .flatten()?;
        lanepay_sync::auth::parse_public_key(keys.split(',').next()?)
    }

    pub(super) fn scan_offline_confirmation(
        &mut self,
        text: &str,
        now_ms: i64,
        events: &mut Vec<Event>,
    ) -> Result<Reply, CommandError> {
        let refuse = |events: &mut Vec<Event>, error: CommandError| {
            events.push(Event::ScanRejected {
                code: text.chars().take(12).collect::<String>() + "…",
                reason: error.message.clone(),
            });
            Err(error)
        };
        let Some(gateway_key) = self.gateway_key() else {
            return refuse(
                events,
                CommandError::new(
                    "not_allowed",
                    "this lane is not enrolled, so it cannot check a payment confirmation",
                ),
            );
        };
        let confirmation = match wire::verify_confirmation(text, &gateway_key) {
            Ok(confirmation) => confirmation,
            Err(error) => {
                return refuse(
                    events,
                    CommandError::new(
                        "bad_request",
                        format!("this is not a valid payment confirmation ({error}): refused"),
                    ),
                );
            }
        };
        let waiting = match &self.current {
            Some(current) => rows::for_sale(&self.conn, &current.sale.id.0)
                .map_err(storage_error)?
                .into_iter()
                .find(|r| {
                    r.attempt.flow == Flow::OfflineQr && r.attempt.state == AttemptState::Waiting
                }),
            None => None,
        };
        let Some(mut record) = waiting else {
            return refuse(
                events,
                CommandError::new(
                    "not_allowed",
                    "no offline QR is waiting for a confirmation: this confirmation was refused",
                ),
            );
        };
        let used_before =
            rows::reference_used(&self.conn, &confirmation.trade_no, &record.attempt.id)
                .map_err(storage_error)?;
        let checked = Confirmation {
            out_trade_no: confirmation.out_trade_no.clone(),
            terminal_id: confirmation.terminal_id.clone(),
            amount: Money::from_fen(confirmation.amount_fen),
            trade_no: confirmation.trade_no.clone(),
        };
        let effects =
            match record
                .attempt
                .confirm(&checked, &self.settings.terminal_id, used_before, now_ms)
            {
                Ok(effects) => effects,
                Err(error) => {
                    return refuse(events, CommandError::new("not_allowed", error.to_string()));
                }
            };
        self.commit_attempt(&mut record, &effects, false, now_ms, events)?;
        Ok(Reply::Payment(attempt_view(&record)))
    }

    pub(super) fn cancel_payment(
        &mut self,
        now_ms: i64,
        events: &mut Vec<Event>,
    ) -> Result<Reply, CommandError> {
        let current = self.current.as_ref().ok_or_else(no_sale)?;
        let sale_id = current.sale.id.0.clone();
        if let Some(request) = self
            .card_request
            .take_if(|request| request.sale_id == sale_id)
        {
            let view = card_request_view(
                &request,
                "cancelled",
                "cancelled",
                Some("cancelled by the cashier before the card was read".into()),
            );
            events.push(Event::PaymentChanged(view.clone()));
            return Ok(Reply::Payment(view));
        }
        let Some(mut record) = rows::for_sale(&self.conn, &sale_id)
            .map_err(storage_error)?
            .into_iter()
            .find(|r| r.attempt.state.is_unresolved())
        else {
            return Err(CommandError::new(
                "not_allowed",
                "no payment is in progress on this sale",
            ));
        };
        let timings = self.payment_timings();
        let effects = record
            .attempt
            .cancel(&timings, now_ms)
            .map_err(|e| CommandError::new("not_allowed", e.to_string()))?;
        self.commit_attempt(&mut record, &effects, false, now_ms, events)?;
        self.payment_context.wake_runtime();
        Ok(Reply::Payment(attempt_view(&record)))
    }

    pub(super) fn forward_stored_cards(&mut self, now_ms: i64) -> Result<Reply, CommandError> {
        self.payment_context.wake_runtime();
        Ok(Reply::StoredCards(
            self.offline_exposure(now_ms).map_err(storage_error)?,
        ))
    }

    pub(super) fn payments_view(&self, sale_id: Option<String>) -> Result<Reply, CommandError> {
        let sale_id = match sale_id {
            Some(id) => id,
            None => match &self.current {
                Some(current) => current.sale.id.0.clone(),
                None => {
                    return Ok(Reply::Payments(PaymentsView {
                        attempts: Vec::new(),
                    }));
                }
            },
        };
        let mut attempts: Vec<PaymentAttemptView> = rows::for_sale(&self.conn, &sale_id)
            .map_err(storage_error)?
            .iter()
            .map(attempt_view)
            .collect();
        if let Some(request) = self.card_request.as_ref().filter(|r| r.sale_id == sale_id) {
            attempts.push(card_request_view(
                request,
                "waiting_for_card",
                "tap card",
                None,
            ));
        }
        Ok(Reply::Payments(PaymentsView { attempts }))
    }

    /// Pushes one input into an attempt and commits what it decided. The runtime calls this
    /// with ticks and with the answers to the calls it made.
    pub fn payment_step(
        &mut self,
        attempt_id: &str,
        input: Input,
        now_ms: i64,
        events: &mut Vec<Event>,
    ) -> Result<PaymentStep, CommandError> {
        let mut record = rows::load(&self.conn, attempt_id)
            .map_err(storage_error)?
            .ok_or_else(|| {
                CommandError::new("not_found", format!("no payment attempt {attempt_id}"))
            })?;
        let timings = self.payment_timings();
        let effects = record.attempt.step(input, &timings, now_ms);
        let calls = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Call(call) => Some(*call),
                _ => None,
            })
            .collect();
        if effects.iter().any(|e| !matches!(e, Effect::Call(_))) {
            self.commit_attempt(&mut record, &effects, false, now_ms, events)?;
        }
        Ok(PaymentStep { record, calls })
    }

    /// Creates an attempt on the sale in progress: the sale is frozen for payment and saved,
    /// and the attempt and its journal entry commit together.
    // Each argument is one part of the new attempt; a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    fn begin_attempt(
        &mut self,
        flow: Flow,
        method: TenderMethod,
        make: impl FnOnce(
            String,
            Money,
            &Timings,
        ) -> Result<
            (PaymentAttempt, Vec<Effect>, Option<String>, Option<String>),
            CommandError,
        >,
        secret: Option<PaymentSecret>,
        masked_pan: Option<String>,
        now_ms: i64,
        events: &mut Vec<Event>,
    ) -> Result<AttemptRecord, CommandError> {
        let amount = self.amount_owed()?;
        let current = self.current.as_mut().ok_or_else(no_sale)?;
        current.sale.begin_tendering().map_err(super::sale_error)?;
        let sale_id = current.sale.id.0.clone();
        let sale_no = current.sale_no;
        let attempt_no = rows::next_attempt_no(&self.conn, &sale_id).map_err(storage_error)?;
        let id = format!("{}-{sale_no}-{attempt_no}", self.settings.terminal_id);
        wire::validate_trade_no(&id).map_err(|reason| {
            CommandError::new(
                "not_allowed",
                format!("this lane's terminal id makes an invalid payment number ({reason})"),
            )
        })?;
        let timings = self.payment_timings();
        let (attempt, effects, sealed_card, qr_text) = make(id.clone(), amount, &timings)?;
        debug_assert_eq!(attempt.flow, flow);
        let mut record = AttemptRecord {
            attempt,
            sale_id,
            attempt_no,
            method,
            masked_pan,
            sealed_card,
            qr_text,
            tender_id: None,
        };
        if let Some(secret) = secret {
            self.payment_secrets.insert(id.clone(), secret);
        }
        if let Err(error) = self.commit_attempt(&mut record, &effects, true, now_ms, events) {
            self.payment_secrets.remove(&id);
            return Err(error);
        }
        self.payment_context.wake_runtime();
        Ok(record)
    }

    /// Commits an attempt's effects in one transaction: its row and `payment_attempt` entry,
    /// the tender on the sale when it paid, `card_forwarded` when a stored card was forwarded.
    fn commit_attempt(
        &mut self,
        record: &mut AttemptRecord,
        effects: &[Effect],
        save_sale: bool,
        now_ms: i64,
        events: &mut Vec<Event>,
    ) -> Result<(), CommandError> {
        let mut planned: Option<PlannedTender> = None;
        if effects.contains(&Effect::ApplyTender) {
            let on_current = self
                .current
                .as_ref()
                .is_some_and(|c| c.sale.id.0 == record.sale_id);
            let plan = if on_current {
                self.plan_tender(
                    record.method,
                    record.attempt.amount,
                    record.attempt.reference.clone(),
                    now_ms,
                )
            } else {
                Err(CommandError::new(
                    "not_allowed",
                    "the sale is no longer open",
                ))
            };
            match plan {
                Ok(plan) => {
                    record.tender_id = Some(plan.tender.id.0.clone());
                    planned = Some(plan);
                }
                Err(error) => {
                    tracing::error!(attempt = %record.attempt.id, reason = %error.message,
                        "a payment succeeded but its sale could not take it");
                    record.attempt.message = Some(format!(
                        "paid at the gateway, but the sale could not take it ({}): refund this payment",
                        error.message
                    ));
                }
            }
        }
        let forwarded = effects.iter().find_map(|e| match e {
            Effect::Forwarded { approved } => Some(*approved),
            _ => None,
        });
        let sale_to_save = save_sale.then(|| self.current.clone()).flatten();
        let entries = self
            .commit_with(|conn, lane| {
                let mut entries = Vec::new();
                if let Some(current) = &sale_to_save {
                    crate::store::sales::save_sale(
                        conn,
                        &current.sale,
                        current.sale_no,
                        &current.receipt_no,
                    )?;
                }
                rows::save(conn, record, now_ms)?;
                entries.push(lane.append(
                    conn,
                    kind::PAYMENT_ATTEMPT,
                    &attempt_payload(record, now_ms),
                    now_ms,
                )?);
                if let Some(approved) = forwarded {
                    entries.push(
                        lane.append(
                            conn,
                            kind::CARD_FORWARDED,
                            &payload::CardForwarded {
                                out_trade_no: record.attempt.id.clone(),
                                approved,
                                trade_no: record.attempt.reference.clone(),
                                reason: (!approved)
                                    .then(|| record.attempt.message.clone())
                                    .flatten(),
                                at_ms: now_ms,
                            },
                            now_ms,
                        )?,
                    );
                }
                let tender_entry = match &planned {
                    Some(plan) => Some(plan.write(conn, lane, now_ms)?),
                    None => None,
                };
                Ok((entries, tender_entry))
            })
            .map_err(storage_error)?;
        let (entries, tender_entry) = entries;
        for entry in &entries {
            events.push(Event::JournalAppended {
                seq: entry.seq,
                kind: entry.kind.clone(),
            });
        }
        events.push(Event::PaymentChanged(attempt_view(record)));
        if forwarded == Some(false) {
            events.push(Event::StoredCardDeclined {
                attempt_id: record.attempt.id.clone(),
                sale_id: record.sale_id.clone(),
                amount: record.attempt.amount.to_string(),
                masked_pan: record.masked_pan.clone(),
                reason: record.attempt.message.clone().unwrap_or_default(),
            });
        }
        if let (Some(plan), Some(entry)) = (planned, tender_entry) {
            self.finish_tender(plan, &entry, events);
        }
        Ok(())
    }
}

/// Queues the parts of a refund that go back through the gateway (wallet, card, offline QR)
/// in the refund's transaction; the runtime sends them when the lane is online.
pub(super) fn queue_gateway_refunds(
    conn: &Connection,
    refund: &Refund,
    now_ms: i64,
) -> Result<(), StoreError> {
    for (index, part) in refund.tenders.iter().enumerate() {
        if part.method == TenderMethod::Cash {
            continue;
        }
        let Some(attempt) = rows::for_tender(conn, &part.tender.0)? else {
            tracing::warn!(tender = %part.tender.0, "a refunded tender has no payment attempt");
            continue;
        };
        rows::insert_gateway_refund(
            conn,
            &GatewayRefund {
                refund_no: format!("{}-{}", refund.id, index + 1),
                refund_id: refund.id.clone(),
                out_trade_no: attempt.attempt.id,
                amount: part.amount,
                state: "pending".into(),
                message: None,
            },
            now_ms,
        )?;
    }
    Ok(())
}

fn attempt_payload(record: &AttemptRecord, now_ms: i64) -> payload::PaymentAttempt {
    payload::PaymentAttempt {
        out_trade_no: record.attempt.id.clone(),
        sale_id: record.sale_id.clone(),
        method: record.method.code().to_string(),
        flow: record.attempt.flow.code().to_string(),
        amount_fen: record.attempt.amount.fen(),
        state: record.attempt.state.code().to_string(),
        reference: record.attempt.reference.clone(),
        masked_pan: record.masked_pan.clone(),
        at_ms: now_ms,
    }
}

/// An attempt as the cashier screen shows it.
pub fn attempt_view(record: &AttemptRecord) -> PaymentAttemptView {
    let attempt = &record.attempt;
    let deadline_ms = match attempt.state {
        AttemptState::Waiting | AttemptState::Sending => Some(attempt.deadline_ms),
        _ => None,
    };
    PaymentAttemptView {
        attempt_id: attempt.id.clone(),
        sale_id: record.sale_id.clone(),
        method: record.method.code().to_string(),
        amount: attempt.amount.to_string(),
        state: attempt.state.code().to_string(),
        step: attempt.step_words().to_string(),
        qr_text: record.qr_text.clone().or_else(|| attempt.pay_url.clone()),
        deadline_ms,
        masked_pan: record.masked_pan.clone(),
        message: attempt.message.clone(),
    }
}

fn card_request_view(
    request: &CardRequest,
    state: &str,
    step: &str,
    message: Option<String>,
) -> PaymentAttemptView {
    PaymentAttemptView {
        attempt_id: String::new(),
        sale_id: request.sale_id.clone(),
        method: TenderMethod::Card.code().to_string(),
        amount: request.amount.to_string(),
        state: state.to_string(),
        step: step.to_string(),
        qr_text: None,
        deadline_ms: Some(request.requested_at_ms.saturating_add(CARD_TAP_TIMEOUT_MS)),
        masked_pan: None,
        message,
    }
}

/// The wallet a method code names (for the gateway's `pay_type`).
pub fn pay_type(method: TenderMethod) -> &'static str {
    match method {
        TenderMethod::Wallet(PaymentWallet::Alipay) => "alipay",
        TenderMethod::Wallet(PaymentWallet::WechatPay) => "wechat",
        TenderMethod::Wallet(PaymentWallet::UnionPay) => "unionpay",
        TenderMethod::Card => "card",
        TenderMethod::OfflineQr | TenderMethod::Cash => "",
    }
}
