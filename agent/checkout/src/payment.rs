//! Payment attempts for the tenders that are not cash, as sans-IO state machines: the shell
//! pushes in what happened (a gateway answer, the cashier cancelling, time passing) with `now`,
//! and pulls out what to do (call the gateway, record the new state, apply the tender).
//!
//! One [`PaymentAttempt`] per try at taking money; its id is the gateway's `out_trade_no`, so
//! every retry of a call is idempotent at the gateway. The rules are DESIGN.md's "Payment
//! methods and their rules":
//! - customer-presented wallet code and online card: pay; on PAYING or an unknown result query
//!   every `poll_interval` for up to `poll_for`, then reverse (never earlier than
//!   `reverse_not_before` after the pay request), repeating an unanswered reverse every
//!   `reverse_retry`; the cashier cancelling also reverses;
//! - merchant-presented dynamic QR: create, then wait for a push or query; timeout or cancel
//!   closes, and a payment that wins the race against the close counts;
//! - offline card: stored within the signed limits ([`decide_offline_card`]), counted as paid
//!   at once, forwarded when online; a decline after forwarding is reported;
//! - signed offline QR: paid when a confirmation for exactly this order arrives.
//!
//! The state persisted by the shell is the whole struct, so an attempt resumes after a crash
//! from its last recorded state ([`PaymentAttempt::step`] with [`Input::Tick`]).

use std::fmt;

use crate::money::Money;

/// How an attempt takes the money.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flow {
    /// The customer's wallet payment code, scanned at the lane.
    WalletCode,
    /// The gateway's QR shown to the customer.
    DynamicQr,
    /// A contactless card authorised online.
    CardOnline,
    /// A contactless card stored offline, forwarded later.
    CardStored,
    /// The terminal-signed offline QR, confirmed by the gateway's signed confirmation.
    OfflineQr,
}

impl Flow {
    pub fn code(self) -> &'static str {
        match self {
            Flow::WalletCode => "wallet_code",
            Flow::DynamicQr => "dynamic_qr",
            Flow::CardOnline => "card_online",
            Flow::CardStored => "card_stored",
            Flow::OfflineQr => "offline_qr",
        }
    }

    pub fn from_code(code: &str) -> Option<Flow> {
        Some(match code {
            "wallet_code" => Flow::WalletCode,
            "dynamic_qr" => Flow::DynamicQr,
            "card_online" => Flow::CardOnline,
            "card_stored" => Flow::CardStored,
            "offline_qr" => Flow::OfflineQr,
            _ => return None,
        })
    }

    /// Whether an unknown or pending result is resolved by query then reverse (code rails).
    fn reverses(self) -> bool {
        matches!(self, Flow::WalletCode | Flow::CardOnline)
    }
}

/// Where an attempt stands. `Sending`, `Waiting`, `Reversing` and `Closing` are unresolved;
/// `Stored` is paid on the lane but not yet at the gateway; the rest are final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttemptState {
    /// The first request (pay, create, authorise) is being sent, or must be sent again.
    Sending,
    /// The outcome is not known yet: the customer is confirming, the answer was lost, or the
    /// QR is shown.
    Waiting,
    /// Being reversed (unknown too long, or cancelled).
    Reversing,
    /// A dynamic QR order being closed (timeout or cancel).
    Closing,
    /// An offline card payment stored for forwarding; counts as paid on the lane.
    Stored,
    Paid,
    /// The gateway or channel refused: nothing was taken.
    Failed,
    /// Reversed: nothing was taken (or what was taken went back).
    Reversed,
    /// A QR order closed unpaid.
    Closed,
    /// A stored card payment the issuer declined when forwarded.
    Declined,
}

impl AttemptState {
    pub fn code(self) -> &'static str {
        match self {
            AttemptState::Sending => "sending",
            AttemptState::Waiting => "waiting",
            AttemptState::Reversing => "reversing",
            AttemptState::Closing => "closing",
            AttemptState::Stored => "stored",
            AttemptState::Paid => "paid",
            AttemptState::Failed => "failed",
            AttemptState::Reversed => "reversed",
            AttemptState::Closed => "closed",
            AttemptState::Declined => "declined",
        }
    }

    pub fn from_code(code: &str) -> Option<AttemptState> {
        Some(match code {
            "sending" => AttemptState::Sending,
            "waiting" => AttemptState::Waiting,
            "reversing" => AttemptState::Reversing,
            "closing" => AttemptState::Closing,
            "stored" => AttemptState::Stored,
            "paid" => AttemptState::Paid,
            "failed" => AttemptState::Failed,
            "reversed" => AttemptState::Reversed,
            "closed" => AttemptState::Closed,
            "declined" => AttemptState::Declined,
            _ => return None,
        })
    }

    /// The outcome is not known yet: the tender may not take another payment meanwhile.
    pub fn is_unresolved(self) -> bool {
        matches!(
            self,
            AttemptState::Sending
                | AttemptState::Waiting
                | AttemptState::Reversing
                | AttemptState::Closing
        )
    }

    /// Nothing more will happen to the attempt.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            AttemptState::Paid
                | AttemptState::Failed
                | AttemptState::Reversed
                | AttemptState::Closed
                | AttemptState::Declined
        )
    }
}

/// The timings of the rails, from the signed terminal configuration (defaults: DESIGN.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    pub poll_interval_ms: i64,
    pub poll_for_ms: i64,
    pub reverse_not_before_ms: i64,
    pub reverse_retry_ms: i64,
    pub dynamic_qr_timeout_ms: i64,
}

impl Default for Timings {
    fn default() -> Timings {
        Timings {
            poll_interval_ms: 5_000,
            poll_for_ms: 60_000,
            reverse_not_before_ms: 15_000,
            reverse_retry_ms: 5_000,
            dynamic_qr_timeout_ms: 120_000,
        }
    }
}

/// A call to the gateway the shell makes for the attempt. `Pay` is the first request of the
/// flow: pay with the code, create the QR order, authorise the card, or forward a stored card.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Call {
    Pay,
    Query,
    Reverse,
    Close,
}

/// What came back from a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// SUCCESS: the money is taken; `reference` is the gateway's trade number.
    Paid { reference: String },
    /// CREATED, WAIT_PAY or PAYING: not decided yet.
    Pending {
        reference: Option<String>,
        pay_url: Option<String>,
    },
    /// FAILED, CLOSED or REVOKED: known not paid (or given back), with words for the cashier.
    NotPaid { state: String, reason: String },
    /// The gateway answered with an error: the request itself was refused.
    Refused { reason: String, retryable: bool },
    /// No answer, or the connection was lost after sending: may or may not have happened.
    Unknown { detail: String },
    /// Surely never reached the gateway.
    NotSent { detail: String },
}

/// What the shell tells the attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Time passed (also how a resumed attempt is restarted).
    Tick,
    /// The answer to a call the attempt asked for, or a result pushed by the gateway.
    Answer { call: Call, outcome: Outcome },
    /// The cashier cancels.
    Cancel,
}

/// What the shell must do after a step, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Persist the attempt and journal its new state (one transaction).
    Record,
    /// Add the tender to the sale in that same transaction: the money is taken (or, for a
    /// stored card, accepted under the offline limits).
    ApplyTender,
    /// A stored card was forwarded: journal `card_forwarded`; a decline is told to the cashier
    /// and to HQ.
    Forwarded { approved: bool },
    /// Make this call now and feed its answer back.
    Call(Call),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    #[error("this payment is {0}: there is nothing to cancel")]
    NotCancellable(&'static str),
    #[error("no offline QR is waiting for a confirmation")]
    NotAwaitingConfirmation,
    #[error("the confirmation is for {0}, not for this order: it was refused")]
    ConfirmationMismatch(String),
}

/// The gateway's signed confirmation of an offline QR order, already verified by the shell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confirmation {
    pub out_trade_no: String,
    pub terminal_id: String,
    pub amount: Money,
    pub trade_no: String,
}

/// One try at taking money with one method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentAttempt {
    /// The gateway's `out_trade_no`: `{terminal}-{sale_no}-{n}`.
    pub id: String,
    pub flow: Flow,
    pub amount: Money,
    pub state: AttemptState,
    /// When the first request was made (reverse is not allowed earlier than 15 s after it).
    pub started_at_ms: i64,
    /// When the next timed call (query, resend, reverse, close, forward) is due.
    pub next_at_ms: i64,
    /// Code and card: query until then, then reverse. QR: close then. Offline QR: expiry.
    pub deadline_ms: i64,
    /// The gateway's trade number, once known.
    pub reference: Option<String>,
    /// Dynamic QR: the URL the customer scans.
    pub pay_url: Option<String>,
    /// The latest words for the cashier.
    pub message: Option<String>,
    pub cancel_requested: bool,
    /// The tender is on the sale (set by the step that emits [`Effect::ApplyTender`]).
    pub tender_applied: bool,
}

impl PaymentAttempt {
    /// Starts an online attempt (code, dynamic QR, online card): the first request goes now.
    pub fn start(
        id: String,
        flow: Flow,
        amount: Money,
        timings: &Timings,
        now_ms: i64,
    ) -> (PaymentAttempt, Vec<Effect>) {
        let deadline_ms = match flow {
            Flow::DynamicQr => now_ms.saturating_add(timings.dynamic_qr_timeout_ms),
            _ => now_ms.saturating_add(timings.poll_for_ms),
        };
        let attempt = PaymentAttempt {
            id,
            flow,
            amount,
            state: AttemptState::Sending,
            started_at_ms: now_ms,
            next_at_ms: now_ms,
            deadline_ms,
            reference: None,
            pay_url: None,
            message: None,
            cancel_requested: false,
            tender_applied: false,
        };
        (attempt, vec![Effect::Record, Effect::Call(Call::Pay)])
    }

    /// Stores an offline card payment the limits allowed: paid on the lane now, forwarded later.
    pub fn store_card(id: String, amount: Money, now_ms: i64) -> (PaymentAttempt, Vec<Effect>) {
        let attempt = PaymentAttempt {
            id,
            flow: Flow::CardStored,
            amount,
            state: AttemptState::Stored,
            started_at_ms: now_ms,
            next_at_ms: now_ms,
            deadline_ms: now_ms,
            reference: None,
            pay_url: None,
            message: Some("stored offline: forwarded when the gateway is back".into()),
            cancel_requested: false,
            tender_applied: true,
        };
        (attempt, vec![Effect::Record, Effect::ApplyTender])
    }

    /// Opens a signed offline QR order valid until `expires_at_ms`.
    pub fn open_offline_qr(
        id: String,
        amount: Money,
        expires_at_ms: i64,
        now_ms: i64,
    ) -> (PaymentAttempt, Vec<Effect>) {
        let attempt = PaymentAttempt {
            id,
            flow: Flow::OfflineQr,
            amount,
            state: AttemptState::Waiting,
            started_at_ms: now_ms,
            next_at_ms: expires_at_ms,
            deadline_ms: expires_at_ms,
            reference: None,
            pay_url: None,
            message: Some("customer pays on the phone, then show the confirmation".into()),
            cancel_requested: false,
            tender_applied: false,
        };
        (attempt, vec![Effect::Record])
    }

    /// Words for the cashier about what is happening now.
    pub fn step_words(&self) -> &'static str {
        match (self.state, self.flow) {
            (AttemptState::Sending, Flow::DynamicQr) => "creating the QR",
            (AttemptState::Sending, Flow::CardOnline) => "authorising the card",
            (AttemptState::Sending, _) => "sending the payment",
            (AttemptState::Waiting, Flow::DynamicQr) => "waiting for the customer to scan and pay",
            (AttemptState::Waiting, Flow::OfflineQr) => {
                "waiting for the customer to pay and show the confirmation"
            }
            (AttemptState::Waiting, _) if self.reference.is_some() => {
                "waiting for customer to confirm"
            }
            (AttemptState::Waiting, _) => "checking result",
            (AttemptState::Reversing, _) => "reversing",
            (AttemptState::Closing, _) => "closing the QR order",
            (AttemptState::Stored, _) => "stored offline, to forward",
            (AttemptState::Paid, _) => "paid",
            (AttemptState::Failed, _) => "failed",
            (AttemptState::Reversed, _) => "reversed, nothing charged",
            (AttemptState::Closed, _) => "closed, nothing charged",
            (AttemptState::Declined, _) => "declined after forwarding",
        }
    }

    /// When the shell should next [`Input::Tick`] this attempt (None: only an outside event
    /// moves it).
    pub fn wake_at_ms(&self) -> Option<i64> {
        match self.state {
            AttemptState::Sending
            | AttemptState::Reversing
            | AttemptState::Closing
            | AttemptState::Stored => Some(self.next_at_ms),
            AttemptState::Waiting if self.flow == Flow::OfflineQr => Some(self.deadline_ms),
            AttemptState::Waiting => Some(self.next_at_ms.min(self.deadline_ms)),
            _ => None,
        }
    }

    /// Pushes one input in and returns what to do. Inputs that do not apply in the current
    /// state (a late answer after a cancel, a tick on a final attempt) change nothing.
    pub fn step(&mut self, input: Input, timings: &Timings, now_ms: i64) -> Vec<Effect> {
        match input {
            Input::Tick => self.tick(timings, now_ms),
            Input::Answer { call, outcome } => self.answer(call, outcome, timings, now_ms),
            // A cancel that does not apply is refused by `cancel`; here it is a no-op.
            Input::Cancel => self.cancel(timings, now_ms).unwrap_or_default(),
        }
    }

    /// The cashier cancels: codes and cards are reversed, QR orders closed, an offline QR
    /// abandoned. A stored or final attempt cannot be cancelled (refund it instead).
    pub fn cancel(&mut self, timings: &Timings, now_ms: i64) -> Result<Vec<Effect>, PaymentError> {
        match (self.state, self.flow) {
            (AttemptState::Reversing | AttemptState::Closing, _) => Ok(Vec::new()),
            (AttemptState::Sending | AttemptState::Waiting, flow) if flow.reverses() => {
                self.cancel_requested = true;
                self.begin_reverse(timings, now_ms);
                self.message = Some("cancelled by the cashier: reversing".into());
                let mut effects = vec![Effect::Record];
                effects.extend(self.due_call(now_ms));
                Ok(effects)
            }
            (AttemptState::Sending | AttemptState::Waiting, Flow::DynamicQr) => {
                self.cancel_requested = true;
                self.state = AttemptState::Closing;
                self.next_at_ms = now_ms;
                self.message = Some("cancelled by the cashier: closing the order".into());
                Ok(vec![Effect::Record, Effect::Call(Call::Close)])
            }
            (AttemptState::Waiting, Flow::OfflineQr) => {
                self.cancel_requested = true;
                self.state = AttemptState::Closed;
                self.message = Some("cancelled by the cashier".into());
                Ok(vec![Effect::Record])
            }
            (state, _) => Err(PaymentError::NotCancellable(state.code())),
        }
    }

    /// An offline QR confirmation (its signature already verified by the shell). The amount,
    /// terminal and order must be exactly this attempt's; that the gateway's trade number was
    /// not used by another sale is the shell's check (`used_before`).
    pub fn confirm(
        &mut self,
        confirmation: &Confirmation,
        terminal_id: &str,
        used_before: bool,
        now_ms: i64,
    ) -> Result<Vec<Effect>, PaymentError> {
        if self.flow != Flow::OfflineQr || self.state != AttemptState::Waiting {
            return Err(PaymentError::NotAwaitingConfirmation);
        }
        if now_ms > self.deadline_ms {
            return Err(PaymentError::NotAwaitingConfirmation);
        }
        if confirmation.out_trade_no != self.id {
            return Err(PaymentError::ConfirmationMismatch(format!(
                "order {}",
                confirmation.out_trade_no
            )));
        }
        if confirmation.terminal_id != terminal_id {
            return Err(PaymentError::ConfirmationMismatch(format!(
                "terminal {}",
                confirmation.terminal_id
            )));
        }
        if confirmation.amount != self.amount {
            return Err(PaymentError::ConfirmationMismatch(format!(
                "an amount of {}",
                confirmation.amount
            )));
        }
        if used_before {
            return Err(PaymentError::ConfirmationMismatch(format!(
                "payment {} that was already used",
                confirmation.trade_no
            )));
        }
        self.reference = Some(confirmation.trade_no.clone());
        Ok(self.settle_paid(now_ms))
    }

    fn tick(&mut self, timings: &Timings, now_ms: i64) -> Vec<Effect> {
        match self.state {
            AttemptState::Sending if self.flow.reverses() && now_ms >= self.deadline_ms => {
                self.begin_reverse(timings, now_ms);
                let mut effects = vec![Effect::Record];
                effects.extend(self.due_call(now_ms));
                effects
            }
            AttemptState::Sending if self.flow == Flow::DynamicQr && now_ms >= self.deadline_ms => {
                self.begin_close(now_ms, "the QR timed out: closing the order")
            }
            AttemptState::Waiting if self.flow == Flow::OfflineQr => {
                if now_ms >= self.deadline_ms {
                    self.state = AttemptState::Closed;
                    self.message = Some("the offline QR expired".into());
                    vec![Effect::Record]
                } else {
                    Vec::new()
                }
            }
            AttemptState::Waiting if now_ms >= self.deadline_ms => {
                if self.flow == Flow::DynamicQr {
                    self.begin_close(now_ms, "the QR timed out: closing the order")
                } else {
                    self.message = Some("no result within the time allowed: reversing".into());
                    self.begin_reverse(timings, now_ms);
                    let mut effects = vec![Effect::Record];
                    effects.extend(self.due_call(now_ms));
                    effects
                }
            }
            _ => self.due_call(now_ms).into_iter().collect(),
        }
    }

    /// The call due now in the current state, if any.
    fn due_call(&self, now_ms: i64) -> Option<Effect> {
        if now_ms < self.next_at_ms {
            return None;
        }
        let call = match self.state {
            AttemptState::Sending | AttemptState::Stored => Call::Pay,
            AttemptState::Waiting if self.flow != Flow::OfflineQr => Call::Query,
            AttemptState::Reversing => Call::Reverse,
            AttemptState::Closing => Call::Close,
            _ => return None,
        };
        Some(Effect::Call(call))
    }

    fn begin_reverse(&mut self, timings: &Timings, now_ms: i64) {
        self.state = AttemptState::Reversing;
        self.next_at_ms = now_ms.max(
            self.started_at_ms
                .saturating_add(timings.reverse_not_before_ms),
        );
    }

    fn begin_close(&mut self, now_ms: i64, words: &str) -> Vec<Effect> {
        self.state = AttemptState::Closing;
        self.next_at_ms = now_ms;
        self.message = Some(words.into());
        vec![Effect::Record, Effect::Call(Call::Close)]
    }

    fn settle_paid(&mut self, _now_ms: i64) -> Vec<Effect> {
        self.state = AttemptState::Paid;
        self.message = None;
        if self.tender_applied {
            vec![Effect::Record]
        } else {
            self.tender_applied = true;
            vec![Effect::Record, Effect::ApplyTender]
        }
    }

    fn answer(
        &mut self,
        call: Call,
        outcome: Outcome,
        timings: &Timings,
        now_ms: i64,
    ) -> Vec<Effect> {
        if let Outcome::Paid { reference }
        | Outcome::Pending {
            reference: Some(reference),
            ..
        } = &outcome
            && !self.state.is_final()
        {
            self.reference = Some(reference.clone());
        }
        match self.state {
            AttemptState::Sending | AttemptState::Waiting
                if matches!(call, Call::Pay | Call::Query) && self.flow != Flow::OfflineQr =>
            {
                self.answer_while_open(outcome, timings, now_ms)
            }
            AttemptState::Reversing if call == Call::Reverse => match outcome {
                Outcome::NotPaid { reason, .. } => {
                    self.state = AttemptState::Reversed;
                    self.message = Some(if self.cancel_requested {
                        "cancelled and reversed: nothing was charged".into()
                    } else {
                        format!("reversed ({reason}): nothing was charged")
                    });
                    vec![Effect::Record]
                }
                // The rail would not reverse a finished payment: the money is taken, so the
                // sale has it (the cashier can refund it).
                Outcome::Paid { .. } => self.settle_paid(now_ms),
                Outcome::Pending { .. }
                | Outcome::Refused { .. }
                | Outcome::Unknown { .. }
                | Outcome::NotSent { .. } => {
                    self.next_at_ms = now_ms.saturating_add(timings.reverse_retry_ms);
                    self.message = Some("the reverse was not confirmed: sending it again".into());
                    vec![Effect::Record]
                }
            },
            // A payment that wins the race against the close counts.
            AttemptState::Closing => match (call, outcome) {
                (_, Outcome::Paid { .. }) => self.settle_paid(now_ms),
                (Call::Close, Outcome::NotPaid { .. }) => {
                    self.state = AttemptState::Closed;
                    self.message = Some(if self.cancel_requested {
                        "cancelled: the QR order is closed".into()
                    } else {
                        "the QR timed out: the order is closed".into()
                    });
                    vec![Effect::Record]
                }
                (Call::Close, _) => {
                    self.next_at_ms = now_ms.saturating_add(timings.reverse_retry_ms);
                    vec![Effect::Record]
                }
                _ => Vec::new(),
            },
            AttemptState::Stored if call == Call::Pay => match outcome {
                Outcome::Paid { .. } => {
                    self.state = AttemptState::Paid;
                    self.message = Some("forwarded and approved".into());
                    vec![Effect::Record, Effect::Forwarded { approved: true }]
                }
                Outcome::NotPaid { reason, .. }
                | Outcome::Refused {
                    reason,
                    retryable: false,
                } => {
                    self.state = AttemptState::Declined;
                    self.message = Some(format!("declined after forwarding: {reason}"));
                    vec![Effect::Record, Effect::Forwarded { approved: false }]
                }
                Outcome::Pending { .. }
                | Outcome::Refused { .. }
                | Outcome::Unknown { .. }
                | Outcome::NotSent { .. } => {
                    // Forwarding again is idempotent (same out_trade_no, same request).
                    self.next_at_ms = now_ms.saturating_add(timings.reverse_retry_ms);
                    Vec::new()
                }
            },
            _ => Vec::new(),
        }
    }

    /// An answer to pay or query while the outcome is open.
    fn answer_while_open(
        &mut self,
        outcome: Outcome,
        timings: &Timings,
        now_ms: i64,
    ) -> Vec<Effect> {
        let was_sending = self.state == AttemptState::Sending;
        match outcome {
            Outcome::Paid { .. } => self.settle_paid(now_ms),
            Outcome::Pending { pay_url, .. } => {
                if pay_url.is_some() {
                    self.pay_url = pay_url;
                }
                self.state = AttemptState::Waiting;
                self.next_at_ms = now_ms.saturating_add(timings.poll_interval_ms);
                self.message = None;
                vec![Effect::Record]
            }
            Outcome::NotPaid { reason, .. } => {
                self.state = if self.flow == Flow::DynamicQr {
                    AttemptState::Closed
                } else {
                    AttemptState::Failed
                };
                self.message = Some(reason);
                vec![Effect::Record]
            }
            Outcome::Refused { reason, .. } if was_sending => {
                self.state = AttemptState::Failed;
                self.message = Some(reason);
                vec![Effect::Record]
            }
            Outcome::NotSent { detail } if was_sending => {
                self.state = AttemptState::Failed;
                self.message = Some(format!(
                    "the gateway could not be reached ({detail}): nothing was charged; take another payment method"
                ));
                vec![Effect::Record]
            }
            // A dynamic QR whose create went unanswered: create again (idempotent).
            Outcome::Unknown { .. } if was_sending && self.flow == Flow::DynamicQr => {
                self.next_at_ms = now_ms.saturating_add(timings.poll_interval_ms);
                vec![Effect::Record]
            }
            Outcome::Unknown { .. } | Outcome::Refused { .. } | Outcome::NotSent { .. } => {
                self.state = AttemptState::Waiting;
                self.next_at_ms = now_ms.saturating_add(timings.poll_interval_ms);
                self.message = Some("no answer yet: checking the result".into());
                vec![Effect::Record]
            }
        }
    }
}

/// The signed offline card limits (defaults: 500.00 per payment, 5,000.00 stored, 200
/// payments, 72 h for the oldest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OfflineCardLimits {
    pub per_payment: Money,
    pub total: Money,
    pub count: u32,
    pub max_age_ms: i64,
}

impl Default for OfflineCardLimits {
    fn default() -> OfflineCardLimits {
        OfflineCardLimits {
            per_payment: Money::from_fen(50_000),
            total: Money::from_fen(500_000),
            count: 200,
            max_age_ms: 72 * 3_600_000,
        }
    }
}

impl OfflineCardLimits {
    /// What these limits still allow with `stored` on the lane at `now_ms`: the cashier sees it
    /// before asking a customer to tap while offline.
    pub fn room(&self, stored: &StoredCards, now_ms: i64) -> OfflineCardRoom {
        let too_old = stored
            .oldest_stored_at_ms
            .is_some_and(|oldest| now_ms.saturating_sub(oldest) > self.max_age_ms);
        let payments_left = self.count.saturating_sub(stored.count);
        if too_old || payments_left == 0 {
            return OfflineCardRoom::default();
        }
        let total_left = self.total.saturating_sub(stored.total).max(Money::ZERO);
        let largest_payment = self.per_payment.min(total_left);
        if largest_payment <= Money::ZERO {
            // Payments are left but no money: none can be stored.
            return OfflineCardRoom::default();
        }
        OfflineCardRoom {
            largest_payment,
            payments_left,
        }
    }
}

/// What the offline card limits still allow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OfflineCardRoom {
    /// The largest card payment that could be stored offline now.
    pub largest_payment: Money,
    /// How many more card payments could be stored.
    pub payments_left: u32,
}

/// The card payments stored and not forwarded yet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoredCards {
    pub total: Money,
    pub count: u32,
    pub oldest_stored_at_ms: Option<i64>,
}

/// Why an offline card payment is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OfflineRefusal {
    #[error("{amount} is over the offline limit of {limit} per card payment")]
    OverPerPayment { amount: Money, limit: Money },
    #[error("the offline card payments stored would reach {would_be}, over the limit of {limit}")]
    OverTotal { would_be: Money, limit: Money },
    #[error("{stored} card payments are already stored offline, the limit")]
    OverCount { stored: u32 },
    #[error(
        "the oldest stored card payment is {age_hours} h old, past the limit of {limit_hours} h"
    )]
    TooOld { age_hours: i64, limit_hours: i64 },
}

/// Decides whether a card payment of `amount` may be stored offline now.
pub fn decide_offline_card(
    limits: &OfflineCardLimits,
    stored: &StoredCards,
    amount: Money,
    now_ms: i64,
) -> Result<(), OfflineRefusal> {
    if amount > limits.per_payment {
        return Err(OfflineRefusal::OverPerPayment {
            amount,
            limit: limits.per_payment,
        });
    }
    let would_be = stored.total.saturating_add(amount);
    if would_be > limits.total {
        return Err(OfflineRefusal::OverTotal {
            would_be,
            limit: limits.total,
        });
    }
    if stored.count >= limits.count {
        return Err(OfflineRefusal::OverCount {
            stored: stored.count,
        });
    }
    if let Some(oldest) = stored.oldest_stored_at_ms {
        let age_ms = now_ms.saturating_sub(oldest);
        if age_ms > limits.max_age_ms {
            return Err(OfflineRefusal::TooOld {
                age_hours: age_ms / 3_600_000,
                limit_hours: limits.max_age_ms / 3_600_000,
            });
        }
    }
    Ok(())
}

impl fmt::Display for PaymentAttempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            self.id,
            self.flow.code(),
            self.amount,
            self.state.code()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_000_000;

    fn timings() -> Timings {
        Timings::default()
    }

    fn paid(reference: &str) -> Outcome {
        Outcome::Paid {
            reference: reference.into(),
        }
    }

    fn paying() -> Outcome {
        Outcome::Pending {
            reference: Some("TN1".into()),
            pay_url: None,
        }
    }

    fn unknown() -> Outcome {
        Outcome::Unknown {
            detail: "timeout".into(),
        }
    }

    fn revoked() -> Outcome {
        Outcome::NotPaid {
            state: "REVOKED".into(),
            reason: "revoked".into(),
        }
    }

    fn answer(call: Call, outcome: Outcome) -> Input {
        Input::Answer { call, outcome }
    }

    fn code_attempt() -> PaymentAttempt {
        let (attempt, effects) = PaymentAttempt::start(
            "T1-1-1".into(),
            Flow::WalletCode,
            Money::from_fen(1_234),
            &timings(),
            T0,
        );
        assert_eq!(effects, vec![Effect::Record, Effect::Call(Call::Pay)]);
        attempt
    }

    #[test]
    fn code_paid_at_once_applies_the_tender_once() {
        let mut a = code_attempt();
        let effects = a.step(answer(Call::Pay, paid("TN1")), &timings(), T0 + 100);
        assert_eq!(effects, vec![Effect::Record, Effect::ApplyTender]);
        assert_eq!(a.state, AttemptState::Paid);
        assert_eq!(a.reference.as_deref(), Some("TN1"));
        // A duplicate answer (a push after the reply) changes nothing.
        assert!(
            a.step(answer(Call::Query, paid("TN1")), &timings(), T0 + 200)
                .is_empty()
        );
    }

    #[test]
    fn code_user_confirms_late_is_queried_every_5_s() {
        let mut a = code_attempt();
        a.step(answer(Call::Pay, paying()), &timings(), T0 + 100);
        assert_eq!(a.state, AttemptState::Waiting);
        assert_eq!(a.step_words(), "waiting for customer to confirm");
        assert!(a.step(Input::Tick, &timings(), T0 + 5_000).is_empty());
        assert_eq!(
            a.step(Input::Tick, &timings(), T0 + 5_100),
            vec![Effect::Call(Call::Query)]
        );
        a.step(answer(Call::Query, paying()), &timings(), T0 + 5_150);
        assert_eq!(a.next_at_ms, T0 + 10_150);
        let effects = a.step(answer(Call::Query, paid("TN1")), &timings(), T0 + 10_200);
        assert_eq!(effects, vec![Effect::Record, Effect::ApplyTender]);
    }

    #[test]
    fn code_never_confirmed_is_reversed_after_60_s_and_the_reverse_repeats() {
        let t = timings();
        let mut a = code_attempt();
        a.step(answer(Call::Pay, unknown()), &t, T0 + 10);
        let mut now = T0 + 10;
        let mut queries = 0;
        loop {
            now += 1_000;
            let effects = a.step(Input::Tick, &t, now);
            if effects.contains(&Effect::Call(Call::Query)) {
                queries += 1;
                a.step(answer(Call::Query, paying()), &t, now);
            }
            if a.state == AttemptState::Reversing {
                break;
            }
        }
        assert_eq!(now, T0 + 60_010);
        assert_eq!(queries, 11);
        // The reverse went at once (60 s is past the 15 s floor) and is unanswered.
        a.step(answer(Call::Reverse, unknown()), &t, now);
        assert_eq!(a.state, AttemptState::Reversing);
        assert!(a.step(Input::Tick, &t, now + 4_999).is_empty());
        assert_eq!(
            a.step(Input::Tick, &t, now + 5_000),
            vec![Effect::Call(Call::Reverse)]
        );
        assert_eq!(
            a.step(answer(Call::Reverse, revoked()), &t, now + 5_010),
            vec![Effect::Record]
        );
        assert_eq!(a.state, AttemptState::Reversed);
        assert!(!a.tender_applied);
    }

    #[test]
    fn cancel_reverses_but_not_before_15_s_after_pay() {
        let t = timings();
        let mut a = code_attempt();
        a.step(answer(Call::Pay, paying()), &t, T0 + 100);
        let effects = a.cancel(&t, T0 + 2_000).unwrap();
        assert_eq!(effects, vec![Effect::Record]);
        assert_eq!(a.state, AttemptState::Reversing);
        assert_eq!(a.next_at_ms, T0 + 15_000);
        assert!(a.step(Input::Tick, &t, T0 + 14_999).is_empty());
        assert_eq!(
            a.step(Input::Tick, &t, T0 + 15_000),
            vec![Effect::Call(Call::Reverse)]
        );
        // A late query answer after the cancel does not pay the sale.
        assert!(
            a.step(answer(Call::Query, paid("TN1")), &t, T0 + 15_001)
                .is_empty()
        );
        a.step(answer(Call::Reverse, revoked()), &t, T0 + 15_002);
        assert_eq!(a.state, AttemptState::Reversed);
        assert_eq!(
            a.message.as_deref(),
            Some("cancelled and reversed: nothing was charged")
        );
    }

    #[test]
    fn known_refusal_fails_with_words_and_not_sent_fails_too() {
        let t = timings();
        let mut a = code_attempt();
        a.step(
            answer(
                Call::Pay,
                Outcome::NotPaid {
                    state: "FAILED".into(),
                    reason: "insufficient balance".into(),
                },
            ),
            &t,
            T0 + 1,
        );
        assert_eq!(a.state, AttemptState::Failed);
        assert_eq!(a.message.as_deref(), Some("insufficient balance"));
        assert!(matches!(
            a.cancel(&t, T0 + 2),
            Err(PaymentError::NotCancellable("failed"))
        ));
        let mut b = code_attempt();
        b.step(
            answer(
                Call::Pay,
                Outcome::NotSent {
                    detail: "connection refused".into(),
                },
            ),
            &t,
            T0 + 1,
        );
        assert_eq!(b.state, AttemptState::Failed);
    }

    #[test]
    fn resumed_sending_attempt_queries_then_reverses_after_the_deadline() {
        let t = timings();
        let mut a = code_attempt();
        // The lane crashed while the pay request was out; it comes back 2 minutes later.
        let effects = a.step(Input::Tick, &t, T0 + 120_000);
        assert_eq!(effects, vec![Effect::Record, Effect::Call(Call::Reverse)]);
        // Back within the window it asks again (idempotent pay).
        let mut b = code_attempt();
        assert_eq!(
            b.step(Input::Tick, &t, T0 + 3_000),
            vec![Effect::Call(Call::Pay)]
        );
    }

    #[test]
    fn dynamic_qr_paid_by_push_or_closed_on_timeout_and_payment_wins_the_race() {
        let t = timings();
        let (mut a, _) =
            PaymentAttempt::start("Q-1".into(), Flow::DynamicQr, Money::from_fen(500), &t, T0);
        a.step(
            answer(
                Call::Pay,
                Outcome::Pending {
                    reference: Some("TQ".into()),
                    pay_url: Some("http://gw/pay/TQ".into()),
                },
            ),
            &t,
            T0 + 50,
        );
        assert_eq!(a.pay_url.as_deref(), Some("http://gw/pay/TQ"));
        assert_eq!(a.deadline_ms, T0 + 120_000);
        let effects = a.step(answer(Call::Query, paid("TQ")), &t, T0 + 1_000);
        assert_eq!(effects, vec![Effect::Record, Effect::ApplyTender]);

        let (mut b, _) =
            PaymentAttempt::start("Q-2".into(), Flow::DynamicQr, Money::from_fen(500), &t, T0);
        b.step(answer(Call::Pay, paying()), &t, T0 + 50);
        let effects = b.step(Input::Tick, &t, T0 + 120_000);
        assert_eq!(effects, vec![Effect::Record, Effect::Call(Call::Close)]);
        // The customer paid just before the close reached the gateway.
        let effects = b.step(answer(Call::Close, paid("TQ2")), &t, T0 + 120_010);
        assert_eq!(effects, vec![Effect::Record, Effect::ApplyTender]);

        let (mut c, _) =
            PaymentAttempt::start("Q-3".into(), Flow::DynamicQr, Money::from_fen(500), &t, T0);
        c.step(answer(Call::Pay, paying()), &t, T0 + 50);
        assert_eq!(
            c.cancel(&t, T0 + 60).unwrap(),
            vec![Effect::Record, Effect::Call(Call::Close)]
        );
        c.step(
            answer(
                Call::Close,
                Outcome::NotPaid {
                    state: "CLOSED".into(),
                    reason: "closed".into(),
                },
            ),
            &t,
            T0 + 70,
        );
        assert_eq!(c.state, AttemptState::Closed);
    }

    #[test]
    fn stored_card_is_paid_at_once_and_forward_reports_decline() {
        let t = timings();
        let (mut a, effects) = PaymentAttempt::store_card("C-1".into(), Money::from_fen(100), T0);
        assert_eq!(effects, vec![Effect::Record, Effect::ApplyTender]);
        assert_eq!(
            a.step(Input::Tick, &t, T0 + 1),
            vec![Effect::Call(Call::Pay)]
        );
        assert!(a.step(answer(Call::Pay, unknown()), &t, T0 + 2).is_empty());
        assert_eq!(a.state, AttemptState::Stored);
        let effects = a.step(
            answer(
                Call::Pay,
                Outcome::NotPaid {
                    state: "FAILED".into(),
                    reason: "card reported lost".into(),
                },
            ),
            &t,
            T0 + 10_000,
        );
        assert_eq!(
            effects,
            vec![Effect::Record, Effect::Forwarded { approved: false }]
        );
        assert_eq!(a.state, AttemptState::Declined);
        let (mut b, _) = PaymentAttempt::store_card("C-2".into(), Money::from_fen(100), T0);
        assert_eq!(
            b.step(answer(Call::Pay, paid("TC")), &t, T0 + 5),
            vec![Effect::Record, Effect::Forwarded { approved: true }]
        );
        assert!(matches!(
            b.cancel(&t, T0 + 6),
            Err(PaymentError::NotCancellable(_))
        ));
    }

    #[test]
    fn offline_qr_accepts_only_its_own_confirmation_once() {
        let (mut a, _) = PaymentAttempt::open_offline_qr(
            "T1-5-1".into(),
            Money::from_fen(888),
            T0 + 600_000,
            T0,
        );
        let good = Confirmation {
            out_trade_no: "T1-5-1".into(),
            terminal_id: "T1".into(),
            amount: Money::from_fen(888),
            trade_no: "G1".into(),
        };
        let other_order = Confirmation {
            out_trade_no: "T1-4-1".into(),
            ..good.clone()
        };
        assert!(matches!(
            a.confirm(&other_order, "T1", false, T0 + 1),
            Err(PaymentError::ConfirmationMismatch(_))
        ));
        let other_amount = Confirmation {
            amount: Money::from_fen(887),
            ..good.clone()
        };
        assert!(a.confirm(&other_amount, "T1", false, T0 + 1).is_err());
        assert!(a.confirm(&good, "T2", false, T0 + 1).is_err());
        assert!(a.confirm(&good, "T1", true, T0 + 1).is_err());
        assert_eq!(
            a.confirm(&good, "T1", false, T0 + 1).unwrap(),
            vec![Effect::Record, Effect::ApplyTender]
        );
        assert!(matches!(
            a.confirm(&good, "T1", false, T0 + 2),
            Err(PaymentError::NotAwaitingConfirmation)
        ));
        // An order past its expiry closes on the next tick.
        let (mut b, _) =
            PaymentAttempt::open_offline_qr("T1-6-1".into(), Money::from_fen(1), T0 + 10, T0);
        assert_eq!(
            b.step(Input::Tick, &timings(), T0 + 10),
            vec![Effect::Record]
        );
        assert_eq!(b.state, AttemptState::Closed);
    }

    #[test]
    fn offline_limits_refuse_with_the_reason() {
        let limits = OfflineCardLimits::default();
        let none = StoredCards::default();
        assert!(decide_offline_card(&limits, &none, Money::from_fen(50_000), T0).is_ok());
        let refusal = decide_offline_card(&limits, &none, Money::from_fen(50_001), T0).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "500.01 is over the offline limit of 500.00 per card payment"
        );
        let nearly_full = StoredCards {
            total: Money::from_fen(480_000),
            count: 10,
            oldest_stored_at_ms: Some(T0),
        };
        assert!(matches!(
            decide_offline_card(&limits, &nearly_full, Money::from_fen(20_001), T0),
            Err(OfflineRefusal::OverTotal { .. })
        ));
        let many = StoredCards {
            total: Money::from_fen(1_000),
            count: 200,
            oldest_stored_at_ms: Some(T0),
        };
        assert!(matches!(
            decide_offline_card(&limits, &many, Money::from_fen(1), T0),
            Err(OfflineRefusal::OverCount { stored: 200 })
        ));
        let old = StoredCards {
            total: Money::from_fen(1_000),
            count: 1,
            oldest_stored_at_ms: Some(T0),
        };
        assert!(
            decide_offline_card(&limits, &old, Money::from_fen(1), T0 + 72 * 3_600_000).is_ok()
        );
        assert!(matches!(
            decide_offline_card(&limits, &old, Money::from_fen(1), T0 + 72 * 3_600_000 + 1),
            Err(OfflineRefusal::TooOld { .. })
        ));
    }

    #[test]
    fn the_room_left_is_exactly_what_decide_offline_card_accepts() {
        let limits = OfflineCardLimits::default();
        let cases = [
            (StoredCards::default(), 50_000, 200),
            (
                StoredCards {
                    total: Money::from_fen(480_000),
                    count: 10,
                    oldest_stored_at_ms: Some(T0),
                },
                20_000,
                190,
            ),
            (
                StoredCards {
                    total: Money::from_fen(1_000),
                    count: 200,
                    oldest_stored_at_ms: Some(T0),
                },
                0,
                0,
            ),
        ];
        for (stored, largest_fen, left) in cases {
            let room = limits.room(&stored, T0);
            assert_eq!(room.largest_payment, Money::from_fen(largest_fen));
            assert_eq!(room.payments_left, left);
            if largest_fen > 0 {
                assert!(decide_offline_card(&limits, &stored, room.largest_payment, T0).is_ok());
            }
            let one_more = room.largest_payment.saturating_add(Money::from_fen(1));
            assert!(decide_offline_card(&limits, &stored, one_more, T0).is_err());
        }
        let old = StoredCards {
            total: Money::from_fen(1_000),
            count: 1,
            oldest_stored_at_ms: Some(T0),
        };
        // Exactly at the age limit still allows; a millisecond past it does not.
        assert_eq!(
            limits.room(&old, T0 + 72 * 3_600_000).largest_payment,
            Money::from_fen(50_000)
        );
        assert_eq!(
            limits.room(&old, T0 + 72 * 3_600_000 + 1),
            OfflineCardRoom::default()
        );
        // The total used up exactly, or over a limit lowered since: no room at all.
        for stored_fen in [500_000, 600_000] {
            let full = StoredCards {
                total: Money::from_fen(stored_fen),
                count: 3,
                oldest_stored_at_ms: Some(T0),
            };
            assert_eq!(limits.room(&full, T0), OfflineCardRoom::default());
            assert!(decide_offline_card(&limits, &full, Money::from_fen(1), T0).is_err());
        }
    }

    #[test]
    fn codes_round_trip() {
        for state in [
            AttemptState::Sending,
            AttemptState::Waiting,
            AttemptState::Reversing,
            AttemptState::Closing,
            AttemptState::Stored,
            AttemptState::Paid,
            AttemptState::Failed,
            AttemptState::Reversed,
            AttemptState::Closed,
            AttemptState::Declined,
        ] {
            assert_eq!(AttemptState::from_code(state.code()), Some(state));
        }
        for flow in [
            Flow::WalletCode,
            Flow::DynamicQr,
            Flow::CardOnline,
            Flow::CardStored,
            Flow::OfflineQr,
        ] {
            assert_eq!(Flow::from_code(flow.code()), Some(flow));
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn any_outcome() -> impl Strategy<Value = Outcome> {
            prop_oneof![
                Just(Outcome::Paid {
                    reference: "TN".into()
                }),
                Just(Outcome::Pending {
                    reference: Some("TN".into()),
                    pay_url: None
                }),
                Just(Outcome::NotPaid {
                    state: "REVOKED".into(),
                    reason: "revoked".into()
                }),
                any::<bool>().prop_map(|retryable| Outcome::Refused {
                    reason: "refused".into(),
                    retryable
                }),
                Just(Outcome::Unknown {
                    detail: "timeout".into()
                }),
                Just(Outcome::NotSent {
                    detail: "refused".into()
                }),
            ]
        }

        fn any_input() -> impl Strategy<Value = Input> {
            prop_oneof![
                4 => Just(Input::Tick),
                1 => Just(Input::Cancel),
                4 => (
                    prop_oneof![Just(Call::Pay), Just(Call::Query), Just(Call::Reverse), Just(Call::Close)],
                    any_outcome()
                )
                    .prop_map(|(call, outcome)| Input::Answer { call, outcome }),
            ]
        }

        fn any_flow() -> impl Strategy<Value = Flow> {
            prop_oneof![
                Just(Flow::WalletCode),
                Just(Flow::DynamicQr),
                Just(Flow::CardOnline),
                Just(Flow::CardStored),
            ]
        }

        proptest! {
            /// Whatever happens, in any order: the tender is applied at most once, a reverse is
            /// never asked for earlier than 15 s after the pay request, a final attempt never
            /// changes again, and a code or card is paid only on a SUCCESS answer.
            #[test]
            fn attempts_keep_their_rules(
                flow in any_flow(),
                inputs in proptest::collection::vec((any_input(), 0i64..20_000), 0..60),
            ) {
                let t = Timings::default();
                let (mut attempt, effects) = if flow == Flow::CardStored {
                    PaymentAttempt::store_card("A".into(), Money::from_fen(100), T0)
                } else {
                    PaymentAttempt::start("A".into(), flow, Money::from_fen(100), &t, T0)
                };
                let mut applied = effects.iter().filter(|e| **e == Effect::ApplyTender).count();
                let mut now = T0;
                let mut final_state: Option<PaymentAttempt> = None;
                for (input, advance_ms) in inputs {
                    now += advance_ms;
                    let was_paid_answer = matches!(
                        &input,
                        Input::Answer { outcome: Outcome::Paid { .. }, .. }
                    );
                    let before = attempt.clone();
                    let effects = attempt.step(input, &t, now);
                    applied += effects.iter().filter(|e| **e == Effect::ApplyTender).count();
                    if effects.contains(&Effect::Call(Call::Reverse)) {
                        prop_assert!(now >= T0 + t.reverse_not_before_ms);
                    }
                    if let Some(done) = &final_state {
                        prop_assert_eq!(done, &attempt);
                        prop_assert!(effects.is_empty());
                    }
                    if attempt.state == AttemptState::Paid && before.state != AttemptState::Paid {
                        prop_assert!(was_paid_answer);
                    }
                    if attempt.state.is_final() && final_state.is_none() {
                        final_state = Some(attempt.clone());
                    }
                }
                prop_assert!(applied <= 1);
                prop_assert_eq!(applied == 1, attempt.tender_applied);
            }
        }
    }
}
