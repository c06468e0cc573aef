//! The payments runtime: async tasks that drive the lane's payment attempts against the
//! gateway. The rules live in `lanepay_checkout::payment` (sans IO); every state is committed
//! by the lane thread ([`crate::lane::Lane::payment_step`]) before anyone hears of it; this
//! module only makes the calls, waits on the injected clock, reads and seals cards, forwards
//! stored cards and queued refunds when the gateway is reachable, and feeds pushed results in.
//!
//! Nothing here blocks the lane: a command that starts a payment returns at once with the
//! attempt's view, and progress comes as `Event::PaymentChanged`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use lanepay_checkout::payment::{AttemptState, Call, Flow, Input, Outcome};
use lanepay_sync::payment::{
    self as wire, CardPaymentRequest, CreateQrRequest, PayCodeRequest, PaymentCallError,
    PaymentRef, PaymentView, TerminalRefundRequest, TerminalRefundView, state,
};
use lanepay_sync::wire::PushMessage;
use tokio::sync::{broadcast, watch};

use crate::api::{CommandError, Event};
use crate::clock::Clock;
use crate::lane::{PaymentContext, PaymentSecret, PaymentStep, SealedCardRead};
use crate::service::LaneHandle;
use crate::store::payments::AttemptRecord;

/// The longest a waiting task sleeps before it looks again, whatever its timer says: the
/// clock is injected (a test's manual clock moves without waking anyone) and a lost wake-up
/// must not stall a payment. Not a synchronisation: every wait is also woken by events.
pub const SAFETY_POLL: Duration = Duration::from_millis(500);
/// A refund the gateway did not answer is sent again after this long (idempotent by
/// refund number).
pub const REFUND_RETRY: Duration = Duration::from_secs(5);

type CallFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, PaymentCallError>> + Send + 'a>>;

/// One request of the terminal payment API.
#[derive(Debug, Clone)]
pub enum GatewayRequest {
    PayCode(PayCodeRequest),
    CreateQr(CreateQrRequest),
    PayCard(CardPaymentRequest),
    Query(PaymentRef),
    Reverse(PaymentRef),
    Close(PaymentRef),
}

/// The gateway's terminal payment API as the runtime uses it (implemented by
/// `GatewayClient`; a trait so the runtime's tests of logic can stand in for it).
pub trait PaymentGateway: Send + Sync + 'static {
    fn call(&self, request: GatewayRequest, now_ms: i64) -> CallFuture<'_, PaymentView>;
    fn refund(
        &self,
        request: TerminalRefundRequest,
        now_ms: i64,
    ) -> CallFuture<'_, TerminalRefundView>;
}

impl PaymentGateway for lanepay_sync::client::GatewayClient {
    fn call(&self, request: GatewayRequest, now_ms: i64) -> CallFuture<'_, PaymentView> {
        Box::pin(async move {
            match request {
                GatewayRequest::PayCode(r) => self.pay_code(&r, now_ms).await,
                GatewayRequest::CreateQr(r) => self.create_qr(&r, now_ms).await,
                GatewayRequest::PayCard(r) => self.pay_card(&r, now_ms).await,
                GatewayRequest::Query(r) => self.query_payment(&r.out_trade_no, now_ms).await,
                GatewayRequest::Reverse(r) => self.reverse_payment(&r.out_trade_no, now_ms).await,
                GatewayRequest::Close(r) => self.close_payment(&r.out_trade_no, now_ms).await,
            }
        })
    }

    fn refund(
        &self,
        request: TerminalRefundRequest,
        now_ms: i64,
    ) -> CallFuture<'_, TerminalRefundView> {
        Box::pin(async move { self.refund_payment(&request, now_ms).await })
    }
}

/// Where payments go and which card reader to use.
#[derive(Debug, Clone, Default)]
pub struct PaymentsSettings {
    /// The gateway's base URL (also the offline QR page's), when enrolled.
    pub gateway_url: Option<String>,
    pub merchant_id: String,
    pub gateway_key: Option<VerifyingKey>,
    /// The libnfc connection string of the card reader (`pn532_uart:/dev/pts/N:115200`).
    pub nfc_connstring: Option<String>,
}

/// The running payments runtime.
#[derive(Debug)]
pub struct PaymentsRuntime {
    wake: watch::Sender<u64>,
    online: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl PaymentsRuntime {
    /// Looks at every attempt again now (tests call this after moving a manual clock).
    pub fn wake(&self) {
        self.wake
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::SeqCst)
    }

    /// Stops the tasks; unresolved attempts stay in the database for the next start.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Starts the runtime: hands the lane its payment context, then drives every unresolved
/// attempt (resumed after a crash first: the sale they belong to is the one in progress, and
/// it takes nothing else until they are resolved), reads cards, forwards stored cards and
/// refunds when online, and feeds `payment` pushes in.
pub async fn start(
    lane: LaneHandle,
    gateway: Option<Arc<dyn PaymentGateway>>,
    clock: Arc<dyn Clock>,
    settings: PaymentsSettings,
    pushes: Option<broadcast::Receiver<PushMessage>>,
) -> Result<PaymentsRuntime, CommandError> {
    let events = lane.subscribe();
    start_subscribed(lane, events, gateway, clock, settings, pushes).await
}

/// [`start`] with the lane's events subscribed to already: the uplink (started just before)
/// publishes that the link is up once, when it connects, and a runtime that subscribed after
/// that would think the lane offline until the link changed again.
async fn start_subscribed(
    lane: LaneHandle,
    events: broadcast::Receiver<Event>,
    gateway: Option<Arc<dyn PaymentGateway>>,
    clock: Arc<dyn Clock>,
    settings: PaymentsSettings,
    pushes: Option<broadcast::Receiver<PushMessage>>,
) -> Result<PaymentsRuntime, CommandError> {
    let (wake, _) = watch::channel(0u64);
    let online = Arc::new(AtomicBool::new(false));
    let context = PaymentContext {
        gateway_url: settings.gateway_url.clone(),
        merchant_id: settings.merchant_id.clone(),
        gateway_key: settings.gateway_key,
        online: online.clone(),
        wake: Some(wake.clone()),
        card_reader: settings.nfc_connstring.is_some(),
    };
    lane.with_lane(move |lane, _, _| lane.set_payment_context(context))
        .await?;
    let (stop, stopped) = watch::channel(false);
    let supervisor = Supervisor {
        lane: lane.clone(),
        gateway,
        clock,
        settings,
        online: online.clone(),
        wake: wake.clone(),
        stopped,
        driving: HashMap::new(),
        card_reading: None,
        refund_retry_at: HashMap::new(),
    };
    let task = tokio::spawn(supervisor.run(events, pushes));
    Ok(PaymentsRuntime {
        wake,
        online,
        stop,
        task,
    })
}

/// Starts the runtime for a lane as its configuration describes it: the gateway it enrolled
/// with (its own signed client), the card reader configured for `nfc`.
pub async fn start_for_config(
    config: &lanepay_config::AgentConfig,
    lane: LaneHandle,
    key: ed25519_dalek::SigningKey,
    clock: Arc<dyn Clock>,
    pushes: Option<broadcast::Receiver<PushMessage>>,
) -> anyhow::Result<PaymentsRuntime> {
    let nfc_connstring = (config.devices.nfc.driver == lanepay_config::NfcDriver::Libnfc)
        .then(|| crate::devices::nfc_connstring(&config.devices));
    start_with_card_reader(config, nfc_connstring, lane, key, clock, pushes).await
}

/// [`start_for_config`] with the card reader given: pass `Devices::nfc_connstring`, which is
/// also the emulated PN532's (a training or demo lane) once `devices::start` made it.
pub async fn start_with_card_reader(
    config: &lanepay_config::AgentConfig,
    nfc_connstring: Option<String>,
    lane: LaneHandle,
    key: ed25519_dalek::SigningKey,
    clock: Arc<dyn Clock>,
    pushes: Option<broadcast::Receiver<PushMessage>>,
) -> anyhow::Result<PaymentsRuntime> {
    let events = lane.subscribe();
    let uplink = crate::uplink_settings(config)?;
    let gateway: Option<Arc<dyn PaymentGateway>> = match &uplink {
        Some(settings) => Some(Arc::new(lanepay_sync::client::GatewayClient::new(
            &settings.base_url,
            &settings.terminal_id,
            key,
            settings.gateway_key,
            settings.tls.clone(),
        )?)),
        None => None,
    };
    let settings = PaymentsSettings {
        gateway_url: uplink.as_ref().map(|u| u.base_url.clone()),
        merchant_id: config.terminal.merchant_id.clone(),
        gateway_key: uplink.as_ref().map(|u| u.gateway_key),
        nfc_connstring,
    };
    start_subscribed(lane, events, gateway, clock, settings, pushes)
        .await
        .map_err(|e| anyhow::anyhow!("cannot start the payments runtime: {}", e.message))
}

struct Supervisor {
    lane: LaneHandle,
    gateway: Option<Arc<dyn PaymentGateway>>,
    clock: Arc<dyn Clock>,
    settings: PaymentsSettings,
    online: Arc<AtomicBool>,
    wake: watch::Sender<u64>,
    stopped: watch::Receiver<bool>,
    driving: HashMap<String, tokio::task::JoinHandle<()>>,
    card_reading: Option<u64>,
    refund_retry_at: HashMap<String, tokio::time::Instant>,
}

impl Supervisor {
    async fn run(
        mut self,
        mut events: broadcast::Receiver<Event>,
        mut pushes: Option<broadcast::Receiver<PushMessage>>,
    ) {
        let mut wake = self.wake.subscribe();
        loop {
            if *self.stopped.borrow() {
                break;
            }
            if let Err(error) = self.round().await {
                tracing::warn!(reason = %error.message, "payments runtime could not look at the lane");
            }
            tokio::select! {
                _ = wake.changed() => {}
                event = events.recv() => {
                    if let Ok(Event::SyncStatus(status)) = event {
                        self.set_online(status.online);
                    }
                }
                push = recv_push(&mut pushes) => {
                    if let Some(push) = push {
                        self.handle_push(push).await;
                    }
                }
                _ = tokio::time::sleep(SAFETY_POLL) => {}
                _ = self.stopped.changed() => break,
            }
        }
        for (_, task) in self.driving.drain() {
            task.abort();
        }
    }

    fn set_online(&self, online: bool) {
        if self.online.swap(online, Ordering::SeqCst) != online {
            tracing::info!(online, "payments see the gateway link change");
            self.wake
                .send_modify(|generation| *generation = generation.wrapping_add(1));
        }
    }

    /// One look at the lane: start a driver for each active attempt, a card read for a
    /// waiting tap, and send the refunds that are due.
    async fn round(&mut self) -> Result<(), CommandError> {
        self.driving.retain(|_, task| !task.is_finished());
        let (active, card, refunds, seal_key) = self
            .lane
            .with_lane(|lane, _, _| {
                (
                    lane.active_payments(),
                    lane.card_request(),
                    lane.pending_gateway_refunds(),
                    lane.card_seal_key(),
                )
            })
            .await?;
        if let Some(gateway) = &self.gateway {
            for record in active.map_err(store_error)? {
                if self.driving.contains_key(&record.attempt.id) {
                    continue;
                }
                let driver = Driver {
                    lane: self.lane.clone(),
                    gateway: gateway.clone(),
                    clock: self.clock.clone(),
                    online: self.online.clone(),
                    wake: self.wake.subscribe(),
                    attempt_id: record.attempt.id.clone(),
                };
                self.driving
                    .insert(record.attempt.id.clone(), tokio::spawn(driver.run()));
            }
        }
        if let Some(request) = card
            && self.card_reading != Some(request.request_no)
        {
            self.card_reading = Some(request.request_no);
            self.spawn_card_read(request, seal_key);
        }
        if self.online.load(Ordering::SeqCst)
            && let Some(gateway) = self.gateway.clone()
        {
            for refund in refunds.map_err(store_error)? {
                let due = self
                    .refund_retry_at
                    .get(&refund.refund_no)
                    .is_none_or(|at| tokio::time::Instant::now() >= *at);
                if due {
                    self.send_refund(gateway.as_ref(), refund).await;
                }
            }
        }
        Ok(())
    }

    async fn send_refund(
        &mut self,
        gateway: &dyn PaymentGateway,
        refund: crate::store::payments::GatewayRefund,
    ) {
        let request = TerminalRefundRequest {
            out_trade_no: refund.out_trade_no.clone(),
            refund_no: refund.refund_no.clone(),
            amount_fen: refund.amount.fen(),
        };
        let answer = gateway.refund(request, self.clock.now_ms()).await;
        let (state, message) = match &answer {
            Ok(view) if view.state == "FAILED" => {
                ("failed", Some("the gateway could not refund".to_string()))
            }
            Ok(view) if view.state == "SUCCESS" => ("done", None),
            // PROCESSING: the gateway retries with the channel; the lane's part is done.
            Ok(_) => (
                "done",
                Some("refund accepted, in progress at the channel".to_string()),
            ),
            Err(PaymentCallError::Refused(error)) if !error.retryable => {
                ("failed", Some(error.message.clone()))
            }
            Err(error) => {
                self.refund_retry_at.insert(
                    refund.refund_no.clone(),
                    tokio::time::Instant::now() + REFUND_RETRY,
                );
                tracing::info!(refund = %refund.refund_no, %error, "refund not confirmed; sending it again later");
                return;
            }
        };
        tracing::info!(refund = %refund.refund_no, state, "refund sent to the gateway");
        let refund_no = refund.refund_no.clone();
        let result = self
            .lane
            .with_lane(move |lane, now_ms, _| {
                lane.set_gateway_refund_state(&refund_no, state, message.as_deref(), now_ms)
            })
            .await;
        if !matches!(result, Ok(Ok(()))) {
            tracing::error!(refund = %refund.refund_no, "could not record the refund's state");
        }
    }

    fn spawn_card_read(&self, request: crate::lane::CardRequest, seal_key: Option<[u8; 32]>) {
        let lane = self.lane.clone();
        let connstring = self.settings.nfc_connstring.clone();
        let clock = self.clock.clone();
        tokio::spawn(async move {
            let request_no = request.request_no;
            let amount_fen = request.amount.fen();
            let now_ms = clock.now_ms();
            let read = tokio::task::spawn_blocking(move || {
                let connstring = connstring.ok_or("no card reader is configured")?;
                let seal_key = seal_key.ok_or("no card sealing key from the gateway")?;
                read_and_seal(&connstring, amount_fen, &seal_key, now_ms)
            })
            .await
            .unwrap_or_else(|_| Err("the card reader task failed".into()));
            let outcome = lane
                .with_lane(move |lane, now_ms, events| match read {
                    Ok(card) => lane
                        .start_card_payment(request_no, card, now_ms, events)
                        .map(|_| ()),
                    Err(message) => {
                        lane.card_read_failed(request_no, message, events);
                        Ok(())
                    }
                })
                .await;
            if let Ok(Err(error)) = outcome {
                tracing::info!(reason = %error.message, "card payment not started");
            }
        });
    }

    async fn handle_push(&self, push: PushMessage) {
        if push.topic != lanepay_sync::wire::topic::PAYMENT {
            return;
        }
        let view: PaymentView = match serde_json::from_value(push.body) {
            Ok(view) => view,
            Err(error) => {
                tracing::warn!(%error, "a payment push that does not parse; ignored");
                return;
            }
        };
        let attempt_id = view.out_trade_no.clone();
        let outcome = outcome_of(&view);
        let _ = self
            .lane
            .with_lane(move |lane, now_ms, events| {
                lane.payment_step(
                    &attempt_id,
                    Input::Answer {
                        call: Call::Query,
                        outcome,
                    },
                    now_ms,
                    events,
                )
            })
            .await;
        self.wake
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }
}

async fn recv_push(pushes: &mut Option<broadcast::Receiver<PushMessage>>) -> Option<PushMessage> {
    match pushes {
        Some(receiver) => loop {
            match receiver.recv().await {
                Ok(push) => return Some(push),
                // Missed pushes are covered by the query polling.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => {
                    *pushes = None;
                    return None;
                }
            }
        },
        None => std::future::pending().await,
    }
}

fn store_error(error: crate::store::StoreError) -> CommandError {
    CommandError::new("storage", error.to_string())
}

/// Drives one attempt until it is final.
struct Driver {
    lane: LaneHandle,
    gateway: Arc<dyn PaymentGateway>,
    clock: Arc<dyn Clock>,
    online: Arc<AtomicBool>,
    wake: watch::Receiver<u64>,
    attempt_id: String,
}

impl Driver {
    async fn step(&self, input: Input) -> Option<PaymentStep> {
        let attempt_id = self.attempt_id.clone();
        match self
            .lane
            .with_lane(move |lane, now_ms, events| {
                lane.payment_step(&attempt_id, input, now_ms, events)
            })
            .await
        {
            Ok(Ok(step)) => Some(step),
            Ok(Err(error)) => {
                tracing::error!(attempt = %self.attempt_id, reason = %error.message, "payment step failed");
                None
            }
            Err(_) => None,
        }
    }

    async fn run(mut self) {
        loop {
            let Some(step) = self.step(Input::Tick).await else {
                // The lane could not record the step: look again shortly.
                self.wait(None).await;
                continue;
            };
            let record = step.record;
            if record.attempt.state.is_final() {
                return;
            }
            if let Some(&call) = step.calls.first() {
                let stored = record.attempt.flow == Flow::CardStored;
                if stored && !self.online.load(Ordering::SeqCst) {
                    // Forwarded when the gateway is back (the supervisor wakes us).
                    self.wait(None).await;
                    continue;
                }
                let (call, request) = self.request_for(call, &record).await;
                let online_card = match (&request, record.attempt.flow) {
                    (GatewayRequest::PayCard(card), Flow::CardOnline) => {
                        serde_json::to_string(&card.card).ok()
                    }
                    _ => None,
                };
                let outcome = match self.gateway.call(request, self.clock.now_ms()).await {
                    Ok(view) => {
                        self.online.store(true, Ordering::SeqCst);
                        outcome_of(&view)
                    }
                    Err(PaymentCallError::NotSent(detail)) if online_card.is_some() => {
                        // The authorisation surely never left: store the card offline instead
                        // of failing the tender (same attempt, so it cannot charge twice).
                        self.store_unreachable_card(online_card.unwrap_or_default(), detail)
                            .await;
                        continue;
                    }
                    Err(error) => outcome_of_error(error),
                };
                tracing::debug!(attempt = %self.attempt_id, ?call, ?outcome, "gateway answered");
                self.step(Input::Answer { call, outcome }).await;
                continue;
            }
            self.wait(record.attempt.wake_at_ms()).await;
        }
    }

    async fn store_unreachable_card(&self, sealed_json: String, detail: String) {
        tracing::warn!(attempt = %self.attempt_id, %detail, "the gateway is unreachable for an online card: storing it offline");
        let attempt_id = self.attempt_id.clone();
        let result = self
            .lane
            .with_lane(move |lane, now_ms, events| {
                lane.store_unreachable_card(&attempt_id, sealed_json, &detail, now_ms, events)
            })
            .await;
        if let Ok(Err(error)) = result {
            tracing::error!(attempt = %self.attempt_id, reason = %error.message, "the unreachable card could not be stored");
        }
    }

    /// Sleeps until `wake_at_ms` on the lane's clock (at most [`SAFETY_POLL`]) or until woken.
    async fn wait(&mut self, wake_at_ms: Option<i64>) {
        let delay = match wake_at_ms {
            Some(at) => Duration::from_millis(
                u64::try_from(at.saturating_sub(self.clock.now_ms())).unwrap_or(0),
            )
            .min(SAFETY_POLL),
            None => SAFETY_POLL,
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = self.wake.changed() => {}
        }
    }

    /// The request for a call. The first request of a code or an online card needs the
    /// customer's code or card, kept in memory only: after a restart it is gone, and the
    /// attempt asks the gateway what became of it instead (a query), which is always safe.
    async fn request_for(&self, call: Call, record: &AttemptRecord) -> (Call, GatewayRequest) {
        let reference = PaymentRef {
            out_trade_no: record.attempt.id.clone(),
        };
        let amount_fen = record.attempt.amount.fen();
        let subject = format!("Lanepay sale {}", record.sale_id);
        match call {
            Call::Query => (call, GatewayRequest::Query(reference)),
            Call::Reverse => (call, GatewayRequest::Reverse(reference)),
            Call::Close => (call, GatewayRequest::Close(reference)),
            Call::Pay => match record.attempt.flow {
                Flow::DynamicQr => (
                    call,
                    GatewayRequest::CreateQr(CreateQrRequest {
                        out_trade_no: record.attempt.id.clone(),
                        amount_fen,
                        subject,
                        pay_type: crate::lane::pay_type(record.method).to_string(),
                    }),
                ),
                Flow::CardStored => match record
                    .sealed_card
                    .as_deref()
                    .and_then(|json| serde_json::from_str(json).ok())
                {
                    Some(card) => (
                        call,
                        GatewayRequest::PayCard(CardPaymentRequest {
                            out_trade_no: record.attempt.id.clone(),
                            amount_fen,
                            card,
                            masked_pan: record.masked_pan.clone().unwrap_or_default(),
                            stored_at_ms: Some(record.attempt.started_at_ms),
                        }),
                    ),
                    None => (Call::Query, GatewayRequest::Query(reference)),
                },
                Flow::WalletCode | Flow::CardOnline => {
                    let attempt_id = record.attempt.id.clone();
                    let secret = self
                        .lane
                        .with_lane(move |lane, _, _| lane.take_payment_secret(&attempt_id))
                        .await
                        .ok()
                        .flatten();
                    match secret {
                        Some(PaymentSecret::WalletCode(auth_code)) => (
                            call,
                            GatewayRequest::PayCode(PayCodeRequest {
                                out_trade_no: record.attempt.id.clone(),
                                amount_fen,
                                auth_code,
                                subject,
                            }),
                        ),
                        Some(PaymentSecret::Card(json)) => match serde_json::from_str(&json) {
                            Ok(card) => (
                                call,
                                GatewayRequest::PayCard(CardPaymentRequest {
                                    out_trade_no: record.attempt.id.clone(),
                                    amount_fen,
                                    card,
                                    masked_pan: record.masked_pan.clone().unwrap_or_default(),
                                    stored_at_ms: None,
                                }),
                            ),
                            Err(_) => (Call::Query, GatewayRequest::Query(reference)),
                        },
                        None => (Call::Query, GatewayRequest::Query(reference)),
                    }
                }
                Flow::OfflineQr => (Call::Query, GatewayRequest::Query(reference)),
            },
        }
    }
}

/// What a gateway order view means for an attempt.
pub fn outcome_of(view: &PaymentView) -> Outcome {
    match view.state.as_str() {
        state::SUCCESS | state::REFUND => Outcome::Paid {
            reference: view.trade_no.clone(),
        },
        state::CREATED | state::WAIT_PAY | state::PAYING => Outcome::Pending {
            reference: Some(view.trade_no.clone()),
            pay_url: view.pay_url.clone(),
        },
        other => Outcome::NotPaid {
            state: other.to_string(),
            reason: view.failure.clone().unwrap_or_else(|| match other {
                state::REVOKED => "the payment was reversed".to_string(),
                state::CLOSED => "the order was closed".to_string(),
                _ => "the payment failed".to_string(),
            }),
        },
    }
}

/// What a failed call means: a refusal the gateway may take back later is treated as no
/// answer (query, then reverse), never as a known failure.
pub fn outcome_of_error(error: PaymentCallError) -> Outcome {
    match error {
        PaymentCallError::Refused(error) if error.retryable => Outcome::Unknown {
            detail: error.message,
        },
        PaymentCallError::Refused(error) => Outcome::Refused {
            reason: error.message,
            retryable: false,
        },
        PaymentCallError::Unknown(detail) => Outcome::Unknown { detail },
        PaymentCallError::NotSent(detail) => Outcome::NotSent { detail },
    }
}

/// Reads the tapped card and seals it to the gateway at once; only the sealed box and the
/// masked PAN leave this function (the PAN is wiped when `secret` and `data` drop).
fn read_and_seal(
    connstring: &str,
    amount_fen: i64,
    seal_key: &[u8; 32],
    now_ms: i64,
) -> Result<SealedCardRead, String> {
    use lanepay_drivers::nfc::{CardReader, Pn532Reader, TransactionContext};
    let mut reader = Pn532Reader::open(connstring)
        .map_err(|e| format!("the card reader is not available ({e})"))?;
    let tap_timeout =
        Duration::from_millis(u64::try_from(crate::lane::CARD_TAP_TIMEOUT_MS).unwrap_or(30_000));
    reader
        .wait_for_card(tap_timeout)
        .map_err(|e| format!("no card was tapped ({e})"))?;
    let mut unpredictable_number = [0u8; 4];
    getrandom::fill(&mut unpredictable_number)
        .map_err(|e| format!("no randomness for the card read ({e})"))?;
    let transaction = TransactionContext {
        amount_fen: u64::try_from(amount_fen).unwrap_or(0),
        date: civil_date(now_ms),
        unpredictable_number,
        ..TransactionContext::default()
    };
    let data = reader
        .read_card(&transaction)
        .map_err(|e| format!("the card could not be read: tap it again ({e})"))?;
    let secret = wire::CardSecret {
        pan: data.pan.expose().to_string(),
        expiry_yymm: format!("{:02}{:02}", data.expiry.year % 100, data.expiry.month),
        pan_sequence: data.pan_sequence_number,
        aid_hex: data.aid_hex(),
    };
    let sealed = wire::seal_card(&secret, seal_key)
        .map_err(|e| format!("the card could not be sealed ({e})"))?;
    drop(secret);
    let masked_pan = data.pan.masked();
    let sealed_json = serde_json::to_string(&sealed)
        .map_err(|e| format!("the sealed card could not be encoded ({e})"))?;
    Ok(SealedCardRead {
        sealed_json,
        masked_pan,
    })
}

/// (year, month, day) in UTC for a Unix time in ms.
fn civil_date(ms: i64) -> (u16, u8, u8) {
    let text = crate::lane::format_utc(ms);
    let year: u16 = text.get(0..4).and_then(|t| t.parse().ok()).unwrap_or(2000);
    let month: u8 = text.get(5..7).and_then(|t| t.parse().ok()).unwrap_or(1);
    let day: u8 = text.get(8..10).and_then(|t| t.parse().ok()).unwrap_or(1);
    (year, month, day)
}

/// Whether an attempt state means the money is on the sale (for reports).
pub fn counts_as_paid(state: AttemptState) -> bool {
    matches!(
        state,
        AttemptState::Paid | AttemptState::Stored | AttemptState::Declined
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_views_map_to_outcomes() {
        let view = |state: &str| PaymentView {
            out_trade_no: "T-1-1".into(),
            trade_no: "G1".into(),
            pay_type: "alipay".into(),
            state: state.into(),
            amount_fen: 100,
            paid_fen: 0,
            pay_url: None,
            paid_at_ms: None,
            failure: None,
        };
        assert_eq!(
            outcome_of(&view("SUCCESS")),
            Outcome::Paid {
                reference: "G1".into()
            }
        );
        assert!(matches!(
            outcome_of(&view("PAYING")),
            Outcome::Pending { .. }
        ));
        assert!(matches!(
            outcome_of(&view("REVOKED")),
            Outcome::NotPaid { .. }
        ));
        let busy = PaymentCallError::Refused(wire::PaymentError {
            code: "busy".into(),
            message: "busy".into(),
            retryable: true,
        });
        assert!(matches!(outcome_of_error(busy), Outcome::Unknown { .. }));
        assert_eq!(civil_date(1_795_000_000_000), (2026, 11, 18));
    }
}
