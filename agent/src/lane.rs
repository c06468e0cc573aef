//! The lane: the checkout core plus its durable state. Commands come in with `now`; each
//! change that matters is written with its journal entry in one SQLite transaction before
//! the lane answers, so what a caller is told is on disk.

use std::str::FromStr;

use ed25519_dalek::SigningKey;
use lanepay_checkout::barcode::{self, WeightedBarcodeFormat};
use lanepay_checkout::receipt::{self, ReceiptHeader};
use lanepay_checkout::refund::refundable;
use lanepay_checkout::{
    Discount, LineId, Money, RefundRequest, Sale, SaleError, SaleId, SaleState, ScannedCode,
    TaxMode, TenderId, TenderMethod,
};
use lanepay_sync::journal::SignedEntry;
use lanepay_sync::payload::kind;
use rusqlite::{Connection, TransactionBehavior};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::api::{
    CartLineView, CartView, Command, CommandError, DiscountSpec, EntryView, Event, RefundView,
    Reply, SaleView, StatusView, TenderView,
};
use crate::convert;
use crate::store::{self, StoreError, catalog, journal, sales};

mod payments;
pub use payments::{
    CARD_TAP_TIMEOUT_MS, CardRequest, PaymentContext, PaymentSecret, PaymentStep, SealedCardRead,
    attempt_view, pay_type,
};

/// Journal entries verified synchronously at start; the rest is checked in the background
/// so a lane with a million entries still opens in well under two seconds.
pub const START_VERIFY_TAIL_ENTRIES: u64 = 1_000;
/// The most journal entries one `JournalTail` command returns.
pub const MAX_TAIL_ENTRIES: u32 = 100;
/// Longest refund reason kept.
pub const MAX_REASON_CHARS: usize = 200;

/// What the lane needs to know about itself.
#[derive(Debug, Clone)]
pub struct LaneSettings {
    pub terminal_id: String,
    pub store_id: String,
    pub store_name: String,
    pub currency: String,
    pub tax_mode: TaxMode,
    pub weighted_barcode: WeightedBarcodeFormat,
}

impl LaneSettings {
    pub fn from_config(config: &lanepay_config::AgentConfig) -> LaneSettings {
        let weighted = &config.sale.weighted_barcode;
        LaneSettings {
            terminal_id: config.terminal.id.clone(),
            store_id: config.terminal.store_id.clone(),
            store_name: config
                .terminal
                .name
                .clone()
                .unwrap_or_else(|| format!("Store {}", config.terminal.store_id)),
            currency: config.sale.currency.clone(),
            tax_mode: match config.sale.tax_mode {
                lanepay_config::TaxMode::Included => TaxMode::Included,
                lanepay_config::TaxMode::Excluded => TaxMode::Excluded,
            },
            weighted_barcode: WeightedBarcodeFormat {
                prefixes: weighted.prefixes.clone(),
                item_digits: usize::from(weighted.item_digits),
                value: match weighted.value {
                    lanepay_config::WeightedValue::WeightGrams => {
                        barcode::WeightedValue::WeightGrams
                    }
                    lanepay_config::WeightedValue::PriceFen => barcode::WeightedValue::PriceFen,
                },
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the journal in this database belongs to terminal {stored}, but the configuration says {configured}; \
         use the lane's own data directory"
    )]
    WrongTerminal { stored: String, configured: String },
    #[error(
        "the journal was signed with another key than {key_file}; restore the lane's own key file"
    )]
    WrongKey { key_file: String },
    #[error(
        "the journal is damaged at entry {seq}: {reason}. Stop selling on this lane and call support"
    )]
    JournalBroken { seq: u64, reason: String },
}

/// The sale being built or paid, with the numbers it will be stored under.
#[derive(Debug, Clone)]
struct CurrentSale {
    sale: Sale,
    sale_no: u64,
    receipt_no: String,
}

/// One lane: its database, key and the sale in progress.
#[derive(Debug)]
pub struct Lane {
    conn: Connection,
    key: SigningKey,
    settings: LaneSettings,
    current: Option<CurrentSale>,
    next_sale_no: u64,
    /// How payments reach the gateway and the runtime (set by the runtime when it starts).
    payment_context: PaymentContext,
    /// The customer's code or sealed card for an attempt's first request, in memory only.
    payment_secrets: std::collections::HashMap<String, PaymentSecret>,
    /// A card payment waiting for the tap.
    card_request: Option<CardRequest>,
    /// Numbers card requests, so a cancelled tap's late read is told from a new one.
    card_requests_made: u64,
}

impl Lane {
    /// Opens the lane on a migrated database: records (or checks) which terminal and key own
    /// the journal, verifies the journal's tail, and resumes a sale that was being paid.
    pub fn open(
        conn: Connection,
        key: SigningKey,
        settings: LaneSettings,
    ) -> Result<Lane, OpenError> {
        let public_hex = hex::encode(key.verifying_key().to_bytes());
        match store::meta(&conn, "terminal_id")? {
            Some(stored) if stored != settings.terminal_id && journal::head(&conn)?.0 > 0 => {
                return Err(OpenError::WrongTerminal {
                    stored,
                    configured: settings.terminal_id.clone(),
                });
            }
            _ => store::set_meta(&conn, "terminal_id", &settings.terminal_id)?,
        }
        match store::meta(&conn, "public_key")? {
            Some(stored) if stored != public_hex && journal::head(&conn)?.0 > 0 => {
                return Err(OpenError::WrongKey {
                    key_file: crate::key::KEY_FILE_NAME.into(),
                });
            }
            _ => store::set_meta(&conn, "public_key", &public_hex)?,
        }
        let (last, _) = journal::head(&conn)?;
        let from = last.saturating_sub(START_VERIFY_TAIL_ENTRIES) + 1;
        if let journal::Verification::Broken { seq, reason } =
            journal::verify(&conn, &settings.terminal_id, key.verifying_key(), from)?
        {
            return Err(OpenError::JournalBroken { seq, reason });
        }
        let current = sales::load_unfinished(&conn)?.map(|stored| CurrentSale {
            sale: stored.sale,
            sale_no: stored.sale_no,
            receipt_no: stored.receipt_no,
        });
        let next_sale_no = sales::last_sale_no(&conn)? + 1;
        Ok(Lane {
            conn,
            key,
            settings,
            current,
            next_sale_no,
            payment_context: PaymentContext::default(),
            payment_secrets: std::collections::HashMap::new(),
            card_request: None,
            card_requests_made: 0,
        })
    }

    pub fn settings(&self) -> &LaneSettings {
        &self.settings
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Runs one command. Events describe what changed, for every subscriber; they are
    /// produced only after the change is durable.
    pub fn execute(
        &mut self,
        command: Command,
        now_ms: i64,
    ) -> (Result<Reply, CommandError>, Vec<Event>) {
        let mut events = Vec::new();
        let result = self.dispatch(command, now_ms, &mut events);
        (result, events)
    }

    fn dispatch(
        &mut self,
        command: Command,
        now_ms: i64,
        events: &mut Vec<Event>,
    ) -> Result<Reply, CommandError> {
        if command_needs_no_payment_in_progress(&command) {
            self.refuse_during_payment()?;
        }
        match command {
            Command::Scan { code } => self.scan(&code, now_ms, events),
            Command::PayWalletCode { code } => self.pay_wallet_code(&code, now_ms, events),
            Command::StartDynamicQr { wallet } => self.start_dynamic_qr(&wallet, now_ms, events),
            Command::PayCard => self.pay_card(now_ms, events),
            Command::StartOfflineQr => self.start_offline_qr(now_ms, events),
            Command::ScanOfflineConfirmation { text } => {
                self.scan_offline_confirmation(&text, now_ms, events)
            }
            Command::CancelPayment => self.cancel_payment(now_ms, events),
            Command::ForwardStoredCards => self.forward_stored_cards(now_ms),
            Command::Payments { sale_id } => self.payments_view(sale_id),
            Command::SetQuantity { line, quantity } => {
                let quantity = parse_decimal(&quantity, "quantity")?;
                self.edit_cart(events, |sale| sale.set_quantity(LineId(line), quantity))
            }
            Command::RemoveLine { line } => {
                self.edit_cart(events, |sale| sale.remove_line(LineId(line)))
            }
            Command::LineDiscount { line, discount } => {
                let discount = discount.map(parse_discount).transpose()?;
                self.edit_cart(events, |sale| {
                    sale.set_line_discount(LineId(line), discount)
                })
            }
            Command::OrderDiscount { discount } => {
                let discount = discount.map(parse_discount).transpose()?;
                self.edit_cart(events, |sale| sale.set_order_discount(discount))
            }
            Command::TenderCash { amount } => {
                let amount = parse_money(&amount, "amount")?;
                self.tender(TenderMethod::Cash, amount, None, now_ms, events)
            }
            Command::VoidSale => self.void(now_ms, events),
            Command::Refund {
                receipt_no,
                lines,
                amount,
                reason,
            } => {
                let request = if let Some(amount) = amount {
                    RefundRequest::Amount(parse_money(&amount, "amount")?)
                } else if lines.is_empty() {
                    RefundRequest::Full
                } else {
                    RefundRequest::Lines(
                        lines
                            .iter()
                            .map(|l| Ok((LineId(l.line), parse_decimal(&l.quantity, "quantity")?)))
                            .collect::<Result<_, CommandError>>()?,
                    )
                };
                self.refund(&receipt_no, &request, reason, now_ms, events)
            }
            Command::GetCart => Ok(Reply::Cart(self.cart_view())),
            Command::FindSale { receipt_no } => {
                let stored = self.find_sale(&receipt_no)?;
                Ok(Reply::Sale(SaleView {
                    receipt_no: stored.receipt_no.clone(),
                    refunded: stored
                        .sale
                        .refunds()
                        .iter()
                        .map(|r| r.total)
                        .sum::<Money>()
                        .to_string(),
                    refundable: refundable(&stored.sale).to_string(),
                    cart: cart_view(&stored.sale),
                }))
            }
            Command::Receipt { receipt_no } => {
                let stored = self.find_sale(&receipt_no)?;
                Ok(Reply::Receipt {
                    lines: self.receipt_lines(&stored.sale, &stored.receipt_no),
                })
            }
            Command::JournalTail { count } => {
                let entries = journal::tail(&self.conn, u64::from(count.min(MAX_TAIL_ENTRIES)))
                    .map_err(storage_error)?;
                Ok(Reply::Journal {
                    entries: entries.iter().map(entry_view).collect(),
                })
            }
            Command::Status => Ok(Reply::Status(self.status().map_err(storage_error)?)),
            Command::SignIn { cashier_id, pin } => {
                crate::shift::sign_in(&self.conn, &cashier_id, &pin, now_ms).map(Reply::Shift)
            }
            Command::SignOut => {
                crate::shift::sign_out(&self.conn, self.current.is_some()).map(Reply::Shift)
            }
            Command::OpenShift { float } => {
                let context = crate::shift::ShiftContext {
                    key: &self.key,
                    terminal_id: &self.settings.terminal_id,
                    sale_in_progress: self.current.is_some(),
                };
                crate::shift::open(&mut self.conn, &context, &float, now_ms, events)
                    .map(Reply::Shift)
            }
            Command::CloseShift { counted } => {
                let context = crate::shift::ShiftContext {
                    key: &self.key,
                    terminal_id: &self.settings.terminal_id,
                    sale_in_progress: self.current.is_some(),
                };
                crate::shift::close(&mut self.conn, &context, &counted, now_ms, events)
                    .map(Reply::Shift)
            }
            Command::ShiftReport => crate::shift::report(&self.conn, now_ms).map(Reply::Shift),
            Command::PrintShiftReport => {
                let shown = crate::shift::report_to_print(&self.conn, now_ms)?;
                events.push(Event::ShiftReportToPrint {
                    lines: shown.report_lines.clone(),
                });
                Ok(Reply::Shift(shown))
            }
            Command::AddCashier {
                cashier_id,
                name,
                pin,
            } => crate::shift::add_cashier(&self.conn, &cashier_id, &name, &pin).map(Reply::Shift),
        }
    }

    /// Refuses changes to the sale while one of its payments is unresolved (the outcome at
    /// the gateway decides what the sale owes).
    fn refuse_during_payment(&self) -> Result<(), CommandError> {
        if self.payment_in_progress().map_err(storage_error)? {
            return Err(CommandError::new(
                "not_allowed",
                "a payment is in progress on this sale: wait for its result or cancel it",
            ));
        }
        Ok(())
    }

    pub fn status(&self) -> Result<StatusView, StoreError> {
        Ok(StatusView {
            terminal_id: self.settings.terminal_id.clone(),
            journal_last_seq: journal::head(&self.conn)?.0,
            outbox_len: journal::outbox_len(&self.conn)?,
            acknowledged_seq: journal::acknowledged(&self.conn)?,
        })
    }

    /// The receipt text of a stored sale.
    pub fn receipt_lines(&self, sale: &Sale, receipt_no: &str) -> Vec<String> {
        let at = sale
            .completed_at_ms()
            .or(sale.voided_at_ms())
            .unwrap_or(sale.opened_at_ms);
        let header = ReceiptHeader {
            store_name: self.settings.store_name.clone(),
            terminal_id: self.settings.terminal_id.clone(),
            receipt_no: receipt_no.to_string(),
            printed_at: format_utc(at),
            currency: self.settings.currency.clone(),
        };
        receipt::render(sale, &header)
    }

    fn find_sale(&self, receipt_no: &str) -> Result<sales::StoredSale, CommandError> {
        sales::find_by_receipt(&self.conn, receipt_no)
            .map_err(storage_error)?
            .ok_or_else(|| {
                CommandError::new(
                    "not_found",
                    format!("no sale with receipt number {receipt_no} on this lane"),
                )
            })
    }

    fn open_sale(&mut self, now_ms: i64) -> &mut CurrentSale {
        let sale_no = self.next_sale_no;
        self.current.get_or_insert_with(|| {
            let receipt_no = format!("{}-{sale_no:06}", self.settings.terminal_id);
            CurrentSale {
                sale: Sale::new(SaleId(receipt_no.clone()), self.settings.tax_mode, now_ms),
                sale_no,
                receipt_no,
            }
        })
    }

    fn cart_view(&self) -> CartView {
        match &self.current {
            Some(current) => cart_view(&current.sale),
            None => empty_cart(),
        }
    }

    fn scan(
        &mut self,
        code: &str,
        now_ms: i64,
        events: &mut Vec<Event>,
    ) -> Result<Reply, CommandError> {
        if code
            .trim()
            .starts_with(lanepay_sync::payment::CONFIRMATION_PREFIX)
        {
            return self.scan_offline_confirmation(code.trim(), now_ms, events);
        }
        if self.current.is_some() && barcode::payment_wallet(code.trim()).is_some() {
            return self.pay_wallet_code(code.trim(), now_ms, events);
        }
        let shown = shown_code(code);
        let reject = |events: &mut Vec<Event>, error: CommandError| {
            events.push(Event::ScanRejected {
                code: shown.clone(),
                reason: error.message.clone(),
            });
            Err(error)
        };
        let scanned = match barcode::classify(code, &self.settings.weighted_barcode) {
            Ok(scanned) => scanned,
            Err(error) => return reject(events, CommandError::new("misread", format!("{error}"))),
        };
        let Some(key) = scanned.product_key() else {
            return reject(
                events,
                CommandError::new(
                    "not_allowed",
                    "that is a customer's payment code: take it on the payment screen",
                ),
            );
        };
        let product = match catalog::find(&self.conn, &key).map_err(storage_error)? {
            Some(product) => product,
            None => {
                return reject(
                    events,
                    CommandError::new(
                        "unknown_product",
                        format!(
                            "{shown} is not in the catalog: key the price in or set the item aside"
                        ),
                    ),
                );
            }
        };
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.sale.state() != SaleState::Open)
        {
            return reject(
                events,
                CommandError::new(
                    "not_allowed",
                    "this sale is being paid: finish or void it before scanning",
                ),
            );
        }
        let current = self.open_sale(now_ms);
        let added = match scanned {
            ScannedCode::WeightedLabel { weight_kg, .. } => {
                current.sale.add_weighed_item(product, weight_kg)
            }
            ScannedCode::PricedLabel { price, .. } => current.sale.add_priced_label(product, price),
            _ => current.sale.add_item(product, Decimal::ONE),
        };
        if let Err(error) = added {
            if current.sale.lines().is_empty() {
                self.current = None;
            }
            return reject(events, sale_error(error));
        }
        self.next_sale_no = self
            .next_sale_no
            .max(self.current.as_ref().map(|c| c.sale_no + 1).unwrap_or(0));
        let view = self.cart_view();
        events.push(Event::CartChanged(view.clone()));
        Ok(Reply::Cart(view))
    }

    fn edit_cart(
        &mut self,
        events: &mut Vec<Event>,
        edit: impl FnOnce(&mut Sale) -> Result<(), SaleError>,
    ) -> Result<Reply, CommandError> {
        let current = self.current.as_mut().ok_or_else(no_sale)?;
        edit(&mut current.sale).map_err(sale_error)?;
        let view = self.cart_view();
        events.push(Event::CartChanged(view.clone()));
        Ok(Reply::Cart(view))
    }

    /// Records a settled tender. The sale row, its lines, the tender and the journal entry
    /// commit together; only then does the in-memory sale move on.
    pub fn tender(
        &mut self,
        method: TenderMethod,
        amount: Money,
        reference: Option<String>,
        now_ms: i64,
        events: &mut Vec<Event>,
    ) -> Result<Reply, CommandError> {
        let planned = self.plan_tender(method, amount, reference, now_ms)?;
        let entry = self
            .commit(now_ms, |conn, lane| planned.write(conn, lane, now_ms))
            .map_err(storage_error)?;
        Ok(Reply::Tender(self.finish_tender(planned, &entry, events)))
    }

    /// Applies a tender to a copy of the current sale (nothing is written yet).
    fn plan_tender(
        &self,
        method: TenderMethod,
        amount: Money,
        reference: Option<String>,
        now_ms: i64,
    ) -> Result<PlannedTender, CommandError> {
        let current = self.current.as_ref().ok_or_else(no_sale)?;
        let mut next = current.clone();
        let tender_id = TenderId(format!(
            "{}-T{}",
            next.sale.id.0,
            next.sale.tenders().len() + 1
        ));
        let outcome = next
            .sale
            .add_tender(tender_id, method, amount, reference, now_ms)
            .map_err(sale_error)?;
        let position = next.sale.tenders().len() - 1;
        let tender = next.sale.tenders()[position].clone();
        Ok(PlannedTender {
            next,
            tender,
            position,
            outcome,
            method,
        })
    }

    /// After the commit: the sale moves on, and the events say so.
    fn finish_tender(
        &mut self,
        planned: PlannedTender,
        entry: &SignedEntry,
        events: &mut Vec<Event>,
    ) -> TenderView {
        let PlannedTender {
            next,
            outcome,
            method,
            ..
        } = planned;
        let view = TenderView {
            sale_id: next.sale.id.0.clone(),
            receipt_no: next.receipt_no.clone(),
            method: method.code().to_string(),
            applied: outcome.applied.to_string(),
            change: outcome.change.to_string(),
            remaining: outcome.remaining.to_string(),
            completed: outcome.completed,
            journal_seq: entry.seq,
        };
        self.current = (!outcome.completed).then_some(next);
        events.push(Event::JournalAppended {
            seq: entry.seq,
            kind: entry.kind.clone(),
        });
        events.push(if outcome.completed {
            Event::SaleCompleted(view.clone())
        } else {
            Event::TenderRecorded(view.clone())
        });
        events.push(Event::CartChanged(self.cart_view()));
        view
    }

    fn void(&mut self, now_ms: i64, events: &mut Vec<Event>) -> Result<Reply, CommandError> {
        let current = self.current.as_ref().ok_or_else(no_sale)?;
        let mut next = current.clone();
        next.sale.void(now_ms).map_err(sale_error)?;
        let entry = self
            .commit(now_ms, |conn, lane| {
                sales::save_sale(conn, &next.sale, next.sale_no, &next.receipt_no)?;
                lane.append(
                    conn,
                    kind::SALE_VOIDED,
                    &convert::sale_voided(&next.sale),
                    now_ms,
                )
            })
            .map_err(storage_error)?;
        self.current = None;
        let sale_id = next.sale.id.0;
        events.push(Event::JournalAppended {
            seq: entry.seq,
            kind: entry.kind,
        });
        events.push(Event::SaleVoided {
            sale_id: sale_id.clone(),
        });
        events.push(Event::CartChanged(self.cart_view()));
        Ok(Reply::Voided { sale_id })
    }

    fn refund(
        &mut self,
        receipt_no: &str,
        request: &RefundRequest,
        reason: String,
        now_ms: i64,
        events: &mut Vec<Event>,
    ) -> Result<Reply, CommandError> {
        let mut stored = self.find_sale(receipt_no)?;
        let reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
        let refund_id = format!("{}-R{}", stored.sale.id.0, stored.sale.refunds().len() + 1);
        let refund = stored
            .sale
            .refund(refund_id, request, reason, now_ms)
            .map_err(sale_error)?;
        let position = stored.sale.refunds().len() - 1;
        let entry = self
            .commit(now_ms, |conn, lane| {
                sales::insert_refund(conn, &stored.sale.id, position, &refund)?;
                payments::queue_gateway_refunds(conn, &refund, now_ms)?;
                lane.append(
                    conn,
                    kind::REFUND_COMPLETED,
                    &convert::refund_completed(&stored.sale, &stored.receipt_no, &refund),
                    now_ms,
                )
            })
            .map_err(storage_error)?;
        let view = RefundView {
            refund_id: refund.id.clone(),
            receipt_no: stored.receipt_no.clone(),
            total: refund.total.to_string(),
            tenders: refund
                .tenders
                .iter()
                .map(|t| (t.method.code().to_string(), t.amount.to_string()))
                .collect(),
            journal_seq: entry.seq,
        };
        events.push(Event::JournalAppended {
            seq: entry.seq,
            kind: entry.kind,
        });
        self.payment_context.wake_runtime();
        events.push(Event::RefundCompleted(view.clone()));
        Ok(Reply::Refund(view))
    }

    /// Runs `write` in one IMMEDIATE transaction and commits it (fsync with
    /// `synchronous=FULL`); nothing is visible to callers until this returns.
    fn commit(
        &mut self,
        _now_ms: i64,
        write: impl FnOnce(&Connection, &Appender<'_>) -> Result<SignedEntry, StoreError>,
    ) -> Result<SignedEntry, StoreError> {
        self.commit_with(write)
    }

    /// [`Lane::commit`] for writes that return anything (several journal entries).
    fn commit_with<T>(
        &mut self,
        write: impl FnOnce(&Connection, &Appender<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let appender = Appender {
            key: &self.key,
            terminal_id: &self.settings.terminal_id,
            store_id: &self.settings.store_id,
            currency: &self.settings.currency,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let entry = write(&tx, &appender)?;
        tx.commit()?;
        Ok(entry)
    }
}

/// A tender applied to a copy of the current sale, waiting for its commit.
struct PlannedTender {
    next: CurrentSale,
    tender: lanepay_checkout::Tender,
    position: usize,
    outcome: lanepay_checkout::TenderOutcome,
    method: TenderMethod,
}

impl PlannedTender {
    /// Writes the sale, the tender and its journal entry (`sale_completed` when it completes
    /// the sale, else `tender_recorded`) inside the caller's transaction.
    fn write(
        &self,
        conn: &Connection,
        lane: &Appender<'_>,
        now_ms: i64,
    ) -> Result<SignedEntry, StoreError> {
        let next = &self.next;
        sales::save_sale(conn, &next.sale, next.sale_no, &next.receipt_no)?;
        sales::insert_tender(conn, &next.sale.id, self.position, &self.tender)?;
        if self.outcome.completed {
            let payload =
                convert::sale_completed(&next.sale, &next.receipt_no, lane.store_id, lane.currency);
            lane.append(conn, kind::SALE_COMPLETED, &payload, now_ms)
        } else {
            lane.append(
                conn,
                kind::TENDER_RECORDED,
                &convert::tender_recorded(&next.sale, &self.tender),
                now_ms,
            )
        }
    }
}

/// Commands that change the sale in progress, refused while one of its payments is
/// unresolved.
fn command_needs_no_payment_in_progress(command: &Command) -> bool {
    matches!(
        command,
        Command::SetQuantity { .. }
            | Command::RemoveLine { .. }
            | Command::LineDiscount { .. }
            | Command::OrderDiscount { .. }
            | Command::TenderCash { .. }
            | Command::VoidSale
            | Command::PayWalletCode { .. }
            | Command::StartDynamicQr { .. }
            | Command::PayCard
            | Command::StartOfflineQr
    )
}

/// What a write inside [`Lane::commit`] needs to append journal entries.
struct Appender<'a> {
    key: &'a SigningKey,
    terminal_id: &'a str,
    store_id: &'a str,
    currency: &'a str,
}

impl Appender<'_> {
    fn append<T: Serialize>(
        &self,
        conn: &Connection,
        kind: &str,
        payload: &T,
        now_ms: i64,
    ) -> Result<SignedEntry, StoreError> {
        let bytes = lanepay_sync::canonical::to_vec(payload)?;
        journal::append(conn, self.key, self.terminal_id, kind, bytes, now_ms)
    }
}

fn no_sale() -> CommandError {
    CommandError::new(
        "not_allowed",
        "there is no sale in progress: scan an item first",
    )
}

fn storage_error(error: StoreError) -> CommandError {
    tracing::error!(%error, "lane database write failed");
    CommandError::new(
        "storage",
        "the lane could not save this to its database, so nothing changed; try again, and call support if it repeats",
    )
}

fn sale_error(error: SaleError) -> CommandError {
    let code = match error {
        SaleError::NoSuchLine(_) => "not_found",
        SaleError::InvalidTransition { .. }
        | SaleError::VoidNeedsReversal(_)
        | SaleError::EmptyCart => "not_allowed",
        _ => "bad_request",
    };
    CommandError::new(code, error.to_string())
}

fn parse_money(text: &str, field: &str) -> Result<Money, CommandError> {
    Money::parse_yuan(text).map_err(|e| CommandError::new("bad_request", format!("{field}: {e}")))
}

fn parse_decimal(text: &str, field: &str) -> Result<Decimal, CommandError> {
    Decimal::from_str(text.trim()).map_err(|_| {
        CommandError::new(
            "bad_request",
            format!("{field}: `{}` is not a number", shown_code(text)),
        )
    })
}

fn parse_discount(spec: DiscountSpec) -> Result<Discount, CommandError> {
    match spec {
        DiscountSpec::Amount { value } => Ok(Discount::Amount(parse_money(&value, "discount")?)),
        DiscountSpec::Percent { value } => {
            Ok(Discount::Percent(parse_decimal(&value, "discount")?))
        }
    }
}

/// A code as it may be shown and logged: payment codes are bearer tokens for the customer's
/// wallet, so only their first and last four digits are shown.
pub fn shown_code(code: &str) -> String {
    let code: String = code
        .chars()
        .filter(|c| !c.is_control())
        .take(barcode::MAX_CODE_LEN)
        .collect();
    if barcode::payment_wallet(&code).is_some() {
        let chars: Vec<char> = code.chars().collect();
        let head: String = chars[..4].iter().collect();
        let tail: String = chars[chars.len() - 4..].iter().collect();
        return format!("{head}…{tail}");
    }
    code
}

fn empty_cart() -> CartView {
    let zero = Money::ZERO.to_string();
    CartView {
        sale_id: String::new(),
        state: "none".into(),
        lines: Vec::new(),
        gross: zero.clone(),
        discount: zero.clone(),
        tax: zero.clone(),
        total: zero.clone(),
        paid: zero.clone(),
        remaining: zero,
    }
}

pub fn cart_view(sale: &Sale) -> CartView {
    let totals = sale.totals();
    CartView {
        sale_id: sale.id.0.clone(),
        state: sale.state().code().into(),
        lines: sale
            .lines()
            .iter()
            .map(|line| {
                let t = totals.line(line.id);
                let money = |f: fn(&lanepay_checkout::LineTotals) -> Money| {
                    t.map(f).unwrap_or(Money::ZERO).to_string()
                };
                CartLineView {
                    line: line.id.0,
                    sku: line.product.sku.clone(),
                    name_zh: line.product.name_zh.clone(),
                    name_en: line.product.name_en.clone(),
                    quantity: line.quantity.normalize().to_string(),
                    unit_price: line
                        .label_price
                        .unwrap_or(line.product.unit_price)
                        .to_string(),
                    per_kg: line.product.pricing == lanepay_checkout::Pricing::PerKg,
                    gross: money(|l| l.gross),
                    discount: money(|l| l.line_discount.saturating_add(l.order_discount)),
                    total: money(|l| l.total),
                }
            })
            .collect(),
        gross: totals.gross.to_string(),
        discount: totals.discount.to_string(),
        tax: totals.tax.to_string(),
        total: totals.total.to_string(),
        paid: sale.paid().to_string(),
        remaining: sale.remaining().to_string(),
    }
}

pub fn entry_view(entry: &SignedEntry) -> EntryView {
    EntryView {
        seq: entry.seq,
        kind: entry.kind.clone(),
        created_at_ms: entry.created_at_ms,
        hash: hex::encode(entry.hash),
        payload: serde_json::from_slice(&entry.payload).unwrap_or(serde_json::Value::Null),
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` for a Unix time in ms (civil-from-days, no time zone database).
pub fn format_utc(ms: i64) -> String {
    let seconds = ms.div_euclid(1000);
    let (days, secs_of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs_of_day / 3600,
        secs_of_day % 3600 / 60,
        secs_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(1_795_000_000_000), "2026-11-18 11:06:40 UTC");
    }

    #[test]
    fn payment_codes_are_masked_when_shown() {
        assert_eq!(shown_code("134567890123456789"), "1345…6789");
        assert_eq!(shown_code("6901234567892"), "6901234567892");
    }
}
