//! The cashier screen's state and its `update`: messages in, state changed, effects out.
//!
//! `update` does no IO. What it wants done (a lane command, focusing the scan field) comes
//! back as [`Effect`]s; [`crate::run`] turns them into iced `Task`s that call the lane off the
//! UI thread, and tests execute them directly. Each screen has its own message enum, wrapped
//! by the root [`Message`] (halloy's layout).

use std::collections::{BTreeMap, BTreeSet};

use lanepay_agent::api::{
    CartView, Command, CommandError, DeviceStatusView, DiscountSpec, Event, PaymentAttemptView,
    RefundLineSpec, Reply, SaleView, ShiftView, SyncStatusView, TenderView,
};
use lanepay_checkout::Money;

use crate::i18n::{Locale, Text};
use crate::typing::{FieldAction, StaleField, field_message};
pub use crate::typing::{FieldKind, MAX_TYPEAHEAD_KEYS, StrayKey};

/// The clock skew past which the status bar warns (receipts and the journal carry lane time).
pub const CLOCK_SKEW_WARN_MS: i64 = 60_000;
/// The longest text kept in an input field: a scan code, an amount, a receipt number.
pub const MAX_INPUT_CHARS: usize = 64;
/// The prefix of the QR printed on receipts.
pub const RECEIPT_QR_PREFIX: &str = "LANEPAY-RECEIPT:";
/// The lane's way of writing no money at all (its amounts are yuan strings).
pub const ZERO_YUAN: &str = "0.00";
/// The reason recorded for refunds started from this screen.
pub const REFUND_REASON: &str = "refund at the lane";

/// Which screen the cashier sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screen {
    SignIn {
        cashier_id: String,
        pin: String,
        /// Enter in the cashier id field moved on to the PIN field.
        pin_active: bool,
    },
    OpenShift {
        float: String,
    },
    Sale,
    Cash {
        given: String,
    },
    Refund(RefundForm),
    CloseShift {
        counted: String,
    },
    Report(ShiftView),
    Payment(PaymentScreen),
}

/// Which non-cash tender the payment screen takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayKind {
    WalletCode,
    DynamicQr,
    Card,
    OfflineQr,
}

/// A payment in progress: what the lane says about it, and the field (the customer's payment
/// code, or the scanned offline confirmation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentScreen {
    pub kind: PayKind,
    pub attempt: Option<PaymentAttemptView>,
    pub input: String,
}

impl Cashier {
    /// The card reader's state for the card screen: "Card reader: ready", or why it is not.
    pub fn card_reader_line(&self) -> String {
        let label = self.t(Text::CardReader);
        match self.devices.get("nfc") {
            None => format!("{label}: -"),
            Some(reader) => {
                let state = self.locale.device_word(&reader.state);
                match &reader.detail {
                    Some(detail) => format!("{label}: {state} ({detail})"),
                    None => format!("{label}: {state}"),
                }
            }
        }
    }

    /// What the offline card limits still allow, while the lane is offline (a card is then
    /// stored, not authorised); None online or before the lane has said.
    pub fn offline_room_line(&self) -> Option<String> {
        if self.sync.online || self.sync.offline_card_room.is_empty() {
            return None;
        }
        if self.sync.offline_payments_left == 0 {
            return Some(self.t(Text::OfflineFull).to_string());
        }
        Some(format!(
            "{}: {} {}, {} {}",
            self.t(Text::OfflineRoom),
            self.t(Text::PerPaymentUpTo),
            self.money(&self.sync.offline_card_room),
            self.sync.offline_payments_left,
            self.t(Text::PaymentsLeft)
        ))
    }

    /// What the link's trouble means for the cashier. The uplink's own words (an IO error, a
    /// refused batch) are for the log and HQ, not for the lane's screen.
    pub fn sync_problem_line(&self) -> Option<&'static str> {
        self.sync.problem.as_ref()?;
        match self.sync.problem_kind.as_str() {
            // Only the network: sales go on and are sent when it is back.
            "unreachable" | "" => Some(self.t(Text::SellingOffline)),
            // The gateway refuses, or the journal and the gateway disagree: support's work.
            _ => Some(self.t(Text::SyncTrouble)),
        }
    }

    /// The dynamic QR's text (the wallet page's address) while one waits to be paid.
    pub fn open_dynamic_qr(&self) -> Option<&str> {
        match &self.screen {
            Screen::Payment(payment) if payment.kind == PayKind::DynamicQr && payment.is_open() => {
                payment.attempt.as_ref()?.qr_text.as_deref()
            }
            _ => None,
        }
    }
}

/// Attempt states after which nothing more happens to it.
pub const FINAL_PAYMENT_STATES: &[&str] =
    &["paid", "stored", "failed", "reversed", "closed", "declined"];

impl PaymentScreen {
    /// The wallet code and offline QR screens take a scan; the dynamic QR screen keeps a field
    /// for Enter until the order is made; the card screen has none.
    pub fn has_field(&self) -> bool {
        match self.kind {
            PayKind::WalletCode | PayKind::OfflineQr => true,
            PayKind::DynamicQr => self.attempt.is_none(),
            PayKind::Card => false,
        }
    }

    fn is_open(&self) -> bool {
        self.attempt
            .as_ref()
            .is_some_and(|a| !FINAL_PAYMENT_STATES.contains(&a.state.as_str()))
    }
}

impl Screen {
    /// The sign-in screen, empty, the cashier id field first.
    pub fn sign_in() -> Screen {
        Screen::SignIn {
            cashier_id: String::new(),
            pin: String::new(),
            pin_active: false,
        }
    }

    /// A short stable name (state file, tests).
    pub fn name(&self) -> &'static str {
        match self {
            Screen::SignIn { .. } => "sign_in",
            Screen::OpenShift { .. } => "open_shift",
            Screen::Sale => "sale",
            Screen::Cash { .. } => "cash",
            Screen::Refund(_) => "refund",
            Screen::CloseShift { .. } => "close_shift",
            Screen::Report(_) => "report",
            Screen::Payment(_) => "payment",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefundForm {
    pub receipt_no: String,
    pub sale: Option<SaleView>,
    pub selected: BTreeSet<u32>,
    pub amount: String,
}

/// A line for the cashier: what happened or what went wrong, and what to do. Kept as parts,
/// so that it is said again in the other language when the cashier switches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The parts as the current language writes them.
    pub text: String,
    pub is_error: bool,
    parts: Vec<Part>,
}

/// A piece of a notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Words of the screen's catalog.
    Text(Text),
    /// The lane's words for a payment step (translated when known).
    Step(String),
    /// An amount in yuan, written the locale's way.
    Money(String),
    /// Text shown as it is (receipt numbers, codes, the lane's messages).
    Plain(String),
}

impl Part {
    fn write(&self, locale: Locale) -> String {
        match self {
            Part::Text(text) => locale.t(*text).to_string(),
            Part::Step(words) => locale.lane_words(words),
            Part::Money(yuan) => locale.money(yuan),
            Part::Plain(text) => text.clone(),
        }
    }
}

fn plain(text: impl Into<String>) -> Part {
    Part::Plain(text.into())
}

/// Which command a lane reply answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    SignIn,
    SignOut,
    OpenShift,
    CloseShift,
    ShiftReport,
    PrintReport,
    Scan,
    EditCart,
    TenderCash,
    VoidSale,
    FindSale,
    Refund,
    AddCashier,
    Payment,
    CancelPayment,
}

impl Request {
    /// Commands whose answer moves the cashier to another screen (or form). Until it comes,
    /// what the cashier types is kept for the screen that follows.
    pub fn changes_screen(self) -> bool {
        matches!(
            self,
            Request::SignIn
                | Request::SignOut
                | Request::OpenShift
                | Request::CloseShift
                | Request::TenderCash
                | Request::FindSale
                | Request::Refund
        )
    }

    /// The field of the screen this command leads to when all goes as usual; the keys typed
    /// ahead are meant for it and for nothing else.
    pub fn leads_to(self) -> Option<FieldKind> {
        match self {
            Request::SignIn => Some(FieldKind::Float),
            Request::SignOut => Some(FieldKind::CashierId),
            Request::OpenShift | Request::TenderCash | Request::Refund => Some(FieldKind::SaleCode),
            Request::FindSale => Some(FieldKind::RefundAmount),
            _ => None,
        }
    }
}

/// A key the screen reacts to wherever focus is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    F(u8),
    Escape,
}

#[derive(Debug, Clone)]
pub enum SignInMessage {
    CashierId(String),
    /// Enter in the cashier id field: on to the PIN.
    NextField,
    Pin(String),
    Submit,
}

#[derive(Debug, Clone)]
pub enum ShiftMessage {
    Float(String),
    Open,
    Counted(String),
    Close,
    ShowCloseForm,
    XReport,
    SignOut,
    Print,
}

#[derive(Debug, Clone)]
pub enum SaleMessage {
    Input(String),
    Submit,
    SelectLine(u32),
    Key(Key),
}

#[derive(Debug, Clone)]
pub enum CashMessage {
    Given(String),
    Submit,
}

#[derive(Debug, Clone)]
pub enum PaymentMessage {
    Input(String),
    Submit,
    /// The wallet for a dynamic QR: alipay, wechat, unionpay.
    Wallet(&'static str),
    Cancel,
}

#[derive(Debug, Clone)]
pub enum RefundMessage {
    ReceiptNo(String),
    Find,
    ToggleLine(u32),
    Amount(String),
    Submit,
}

/// Everything that can happen to the cashier screen.
#[derive(Debug, Clone)]
pub enum Message {
    SignIn(SignInMessage),
    Shift(ShiftMessage),
    Sale(SaleMessage),
    Cash(CashMessage),
    Refund(RefundMessage),
    Payment(PaymentMessage),
    /// A key pressed anywhere (F-keys, Esc).
    Key(Key),
    /// Typed text or Enter in the cashier window that no field took.
    Stray(StrayKey),
    /// The language button.
    ToggleLocale,
    /// An event the lane pushed.
    Lane(Event),
    /// The lane's answer to a command this screen sent.
    Replied(Request, Result<Reply, CommandError>),
    /// The wall clock, once a second (countdowns, sync age).
    Tick(i64),
    /// The demo's device panel scanned a product.
    PanelScan(String),
    /// The demo's customer acts at the device panel (wallet code, card, phone).
    Customer(crate::demo::CustomerAction),
    /// What the customer's action came to, for the device panel.
    CustomerDone(Result<String, String>),
    /// Nothing to do (a focus task finished).
    Noop,
}

/// What `update` asks the outside world to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Lane(Request, Command),
    FocusScan,
    /// Focus another field by its id (the PIN after the cashier id).
    Focus(&'static str),
    /// The demo's emulated scanner sends this code.
    EmulatorScan(String),
    /// The demo's customer does this (the shell runs it off the UI thread).
    Customer(crate::demo::CustomerAction),
}

/// The cashier screen's whole state.
#[derive(Debug, Clone)]
pub struct Cashier {
    pub locale: Locale,
    pub screen: Screen,
    pub terminal_id: String,
    pub cart: CartView,
    pub shift: ShiftView,
    pub sync: SyncStatusView,
    pub devices: BTreeMap<String, DeviceStatusView>,
    pub notice: Option<Notice>,
    /// The sale field: scan codes, and numbers for F2/F3.
    pub input: String,
    pub selected_line: Option<u32>,
    /// Commands sent and not answered yet.
    pub pending: u32,
    /// The command whose answer changes the screen, while it is on its way. The fields take
    /// no typing meanwhile; keys go to `typeahead` and then to the screen that follows.
    pub changing_screen: Option<Request>,
    /// Keys typed while the screen was changing, in order.
    pub typeahead: std::collections::VecDeque<StrayKey>,
    /// Field widgets that show an older text, until the screen is drawn again.
    pub(crate) stale_fields: Vec<StaleField>,
    /// The draw during which typed-ahead keys were dropped (stray keys of that frame go too).
    pub(crate) typeahead_dropped_at: Option<u64>,
    /// How often the cashier window was drawn (see [`Cashier::drawn`]).
    pub(crate) draws: std::cell::Cell<u64>,
    /// The last completed sale's tender (change and "thank you" on both screens).
    pub last_sale: Option<TenderView>,
    pub help_open: bool,
    pub now_ms: i64,
    /// The demo has emulated devices (the device panel drives them).
    pub has_emulated_scanner: bool,
    /// The demo plays the customer (wallet codes, card, phone) at the device panel.
    pub has_customer: bool,
    /// What the device panel's last customer action came to (ok, line).
    pub panel_status: Option<(bool, String)>,
    /// The QR on screen (dynamic or offline QR), drawn once per text.
    pub qr: Option<(String, iced::widget::image::Handle)>,
}

fn empty_cart() -> CartView {
    CartView {
        sale_id: String::new(),
        state: "empty".into(),
        lines: Vec::new(),
        gross: ZERO_YUAN.into(),
        discount: ZERO_YUAN.into(),
        tax: ZERO_YUAN.into(),
        total: ZERO_YUAN.into(),
        paid: ZERO_YUAN.into(),
        remaining: ZERO_YUAN.into(),
    }
}

fn trimmed_input(text: String) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(MAX_INPUT_CHARS)
        .collect()
}

impl Cashier {
    pub fn new(terminal_id: &str, locale: Locale, now_ms: i64) -> Cashier {
        Cashier {
            locale,
            screen: Screen::sign_in(),
            terminal_id: terminal_id.to_string(),
            cart: empty_cart(),
            shift: ShiftView {
                state: "signed_out".into(),
                ..ShiftView::default()
            },
            sync: SyncStatusView::default(),
            devices: BTreeMap::new(),
            notice: None,
            input: String::new(),
            selected_line: None,
            pending: 0,
            last_sale: None,
            help_open: false,
            now_ms,
            has_emulated_scanner: false,
            has_customer: false,
            panel_status: None,
            qr: None,
            changing_screen: None,
            typeahead: std::collections::VecDeque::new(),
            stale_fields: Vec::new(),
            typeahead_dropped_at: None,
            draws: std::cell::Cell::new(0),
        }
    }

    /// What to ask the lane at start: where the cashier and shift stand, and the cart.
    pub fn boot_effects() -> Vec<Effect> {
        vec![
            Effect::Lane(Request::ShiftReport, Command::ShiftReport),
            Effect::Lane(Request::EditCart, Command::GetCart),
        ]
    }

    pub fn t(&self, text: Text) -> &'static str {
        self.locale.t(text)
    }

    pub fn money(&self, yuan: &str) -> String {
        self.locale.money(yuan)
    }

    fn lane(&mut self, request: Request, command: Command) -> Effect {
        self.pending += 1;
        if request.changes_screen() {
            self.changing_screen = Some(request);
        }
        Effect::Lane(request, command)
    }

    fn say(&mut self, is_error: bool, parts: Vec<Part>) {
        self.notice = Some(Notice {
            text: parts.iter().map(|part| part.write(self.locale)).collect(),
            is_error,
            parts,
        });
    }

    fn info(&mut self, parts: Vec<Part>) {
        self.say(false, parts);
    }

    fn error(&mut self, parts: Vec<Part>) {
        self.say(true, parts);
    }

    /// Switches the language; the notice on screen is said again in it.
    fn toggle_locale(&mut self) {
        self.locale = self.locale.toggled();
        if let Some(notice) = self.notice.take() {
            self.say(notice.is_error, notice.parts);
        }
    }

    /// Change due now for the cash typed so far: `Ok(change)` or `Err(still to pay)`.
    pub fn cash_change(&self, given: &str) -> Option<Result<Money, Money>> {
        let given = Money::parse_yuan(given).ok()?;
        let remaining = Money::parse_yuan(&self.cart.remaining).ok()?;
        Some(if given >= remaining {
            Ok(given.saturating_sub(remaining))
        } else {
            Err(remaining.saturating_sub(given))
        })
    }

    /// Applies one message. Effects run outside; their answers come back as messages.
    pub fn update(&mut self, message: Message) -> Vec<Effect> {
        match field_message(&message) {
            Some((kind, FieldAction::Edit(text))) => self.field_edited(kind, text, message),
            Some((kind, FieldAction::Submit)) => self.field_submitted(kind, message),
            None => self.dispatch(message),
        }
    }

    pub(crate) fn dispatch(&mut self, message: Message) -> Vec<Effect> {
        match message {
            Message::SignIn(message) => self.sign_in(message),
            Message::Shift(message) => self.shift_message(message),
            Message::Sale(message) => self.sale(message),
            Message::Cash(message) => self.cash(message),
            Message::Refund(message) => self.refund(message),
            Message::Payment(message) => self.payment(message),
            Message::Key(key) => self.key(key),
            Message::Stray(key) => self.stray_key(key),
            Message::ToggleLocale => {
                self.toggle_locale();
                vec![Effect::FocusScan]
            }
            Message::Lane(event) => {
                self.lane_event(event);
                Vec::new()
            }
            Message::Replied(request, result) => {
                self.pending = self.pending.saturating_sub(1);
                if self.changing_screen != Some(request) {
                    return self.replied(request, result);
                }
                self.changing_screen = None;
                let refused = result.is_err();
                let mut effects = self.replied(request, result);
                let came = self.active_field().map(|field| field.kind);
                if refused || came != request.leads_to() {
                    // What was typed was meant for a screen that did not come: after a refusal
                    // the cashier reads why first (a float typed on would be another PIN try);
                    // after a part payment the cash screen is back, where a code typed for
                    // the next sale would be taken as cash.
                    self.drop_typeahead();
                }
                effects.extend(self.replay_typeahead());
                effects
            }
            Message::Tick(now_ms) => {
                self.now_ms = now_ms;
                Vec::new()
            }
            Message::PanelScan(code) => {
                if self.has_emulated_scanner {
                    vec![Effect::EmulatorScan(code)]
                } else {
                    vec![self.lane(Request::Scan, Command::Scan { code })]
                }
            }
            Message::Customer(action) => {
                self.panel_status = None;
                vec![Effect::Customer(action)]
            }
            Message::CustomerDone(result) => {
                self.panel_status = Some(match result {
                    Ok(line) => (true, line),
                    Err(line) => (false, line),
                });
                Vec::new()
            }
            Message::Noop => Vec::new(),
        }
    }

    fn sign_in(&mut self, message: SignInMessage) -> Vec<Effect> {
        let Screen::SignIn {
            cashier_id,
            pin,
            pin_active,
        } = &mut self.screen
        else {
            return Vec::new();
        };
        match message {
            SignInMessage::CashierId(text) => {
                *pin_active = false;
                *cashier_id = trimmed_input(text);
            }
            SignInMessage::NextField => {
                *pin_active = true;
                return vec![Effect::Focus(crate::view::PIN_FIELD)];
            }
            SignInMessage::Pin(text) => {
                *pin_active = true;
                *pin = trimmed_input(text)
                    .chars()
                    .filter(char::is_ascii_digit)
                    .collect()
            }
            SignInMessage::Submit => {
                let command = Command::SignIn {
                    cashier_id: cashier_id.trim().to_string(),
                    pin: std::mem::take(pin),
                };
                return vec![self.lane(Request::SignIn, command)];
            }
        }
        Vec::new()
    }

    fn shift_message(&mut self, message: ShiftMessage) -> Vec<Effect> {
        match (message, &mut self.screen) {
            (ShiftMessage::Float(text), Screen::OpenShift { float }) => {
                *float = trimmed_input(text);
                Vec::new()
            }
            (ShiftMessage::Open, Screen::OpenShift { float }) => {
                let command = Command::OpenShift {
                    float: float.trim().to_string(),
                };
                vec![self.lane(Request::OpenShift, command)]
            }
            (ShiftMessage::Counted(text), Screen::CloseShift { counted }) => {
                *counted = trimmed_input(text);
                Vec::new()
            }
            (ShiftMessage::Close, Screen::CloseShift { counted }) => {
                let command = Command::CloseShift {
                    counted: counted.trim().to_string(),
                };
                vec![self.lane(Request::CloseShift, command)]
            }
            (ShiftMessage::ShowCloseForm, Screen::Sale) => {
                if !self.cart.lines.is_empty() {
                    self.error(vec![Part::Text(Text::FinishSaleFirst)]);
                    return Vec::new();
                }
                self.screen = Screen::CloseShift {
                    counted: String::new(),
                };
                vec![self.lane(Request::ShiftReport, Command::ShiftReport)]
            }
            (ShiftMessage::XReport, Screen::Sale) => {
                self.screen = Screen::Report(self.shift.clone());
                vec![self.lane(Request::ShiftReport, Command::ShiftReport)]
            }
            (ShiftMessage::SignOut, Screen::Sale) => {
                vec![self.lane(Request::SignOut, Command::SignOut)]
            }
            (ShiftMessage::Print, Screen::Report(_)) => {
                vec![self.lane(Request::PrintReport, Command::PrintShiftReport)]
            }
            _ => Vec::new(),
        }
    }

    fn sale(&mut self, message: SaleMessage) -> Vec<Effect> {
        if self.screen != Screen::Sale {
            return Vec::new();
        }
        match message {
            SaleMessage::Input(text) => {
                self.input = trimmed_input(text);
                Vec::new()
            }
            SaleMessage::Submit => {
                let code = std::mem::take(&mut self.input);
                let code = code.trim();
                if code.is_empty() {
                    return vec![Effect::FocusScan];
                }
                if let Some(receipt_no) = code.strip_prefix(RECEIPT_QR_PREFIX) {
                    // A receipt scanned at the sale screen means "refund this".
                    return self.open_refund(receipt_no);
                }
                self.last_sale = None;
                vec![
                    self.lane(
                        Request::Scan,
                        Command::Scan {
                            code: code.to_string(),
                        },
                    ),
                    Effect::FocusScan,
                ]
            }
            SaleMessage::SelectLine(line) => {
                self.selected_line = Some(line);
                vec![Effect::FocusScan]
            }
            SaleMessage::Key(key) => self.sale_key(key),
        }
    }

    fn target_line(&self) -> Option<u32> {
        self.selected_line
            .filter(|line| self.cart.lines.iter().any(|l| l.line == *line))
            .or_else(|| self.cart.lines.last().map(|l| l.line))
    }

    fn sale_key(&mut self, key: Key) -> Vec<Effect> {
        let mut effects = vec![Effect::FocusScan];
        match key {
            Key::F(1) => self.help_open = !self.help_open,
            Key::F(2) | Key::F(3) | Key::F(4) => {
                let Some(line) = self.target_line() else {
                    self.error(vec![Part::Text(Text::NoSale)]);
                    return effects;
                };
                let value = std::mem::take(&mut self.input).trim().to_string();
                let command = match key {
                    Key::F(2) if value.is_empty() => {
                        self.error(vec![Part::Text(Text::QuantityFirst)]);
                        return effects;
                    }
                    Key::F(2) => Command::SetQuantity {
                        line,
                        quantity: value,
                    },
                    Key::F(3) => Command::LineDiscount {
                        line,
                        discount: if value.is_empty() {
                            None
                        } else if let Some(percent) = value.strip_suffix('%') {
                            Some(DiscountSpec::Percent {
                                value: percent.trim().to_string(),
                            })
                        } else {
                            Some(DiscountSpec::Amount { value })
                        },
                    },
                    _ => Command::RemoveLine { line },
                };
                effects.push(self.lane(Request::EditCart, command));
            }
            Key::F(5) => {
                if self.cart.lines.is_empty() {
                    self.error(vec![Part::Text(Text::NoSale)]);
                } else {
                    self.screen = Screen::Cash {
                        given: String::new(),
                    };
                }
            }
            Key::F(number @ 6..=9) => {
                if self.cart.lines.is_empty() {
                    self.error(vec![Part::Text(Text::NoSale)]);
                    return effects;
                }
                let kind = match number {
                    6 => PayKind::WalletCode,
                    7 => PayKind::DynamicQr,
                    8 => PayKind::Card,
                    _ => PayKind::OfflineQr,
                };
                self.notice = None;
                self.screen = Screen::Payment(PaymentScreen {
                    kind,
                    attempt: None,
                    input: String::new(),
                });
                match kind {
                    PayKind::Card => effects.push(self.lane(Request::Payment, Command::PayCard)),
                    PayKind::OfflineQr => {
                        effects.push(self.lane(Request::Payment, Command::StartOfflineQr))
                    }
                    // The wallet is chosen on the screen; a code is scanned there.
                    PayKind::DynamicQr | PayKind::WalletCode => {}
                }
            }
            Key::F(10) => {
                let typed = std::mem::take(&mut self.input);
                return self.open_refund(typed.trim());
            }
            Key::F(12) => {
                if self.cart.lines.is_empty() {
                    self.error(vec![Part::Text(Text::NoSale)]);
                } else {
                    effects.push(self.lane(Request::VoidSale, Command::VoidSale));
                }
            }
            Key::Escape => {
                self.input.clear();
                self.help_open = false;
                self.notice = None;
            }
            Key::F(_) => {}
        }
        effects
    }

    fn open_refund(&mut self, receipt_no: &str) -> Vec<Effect> {
        let receipt_no = receipt_no
            .strip_prefix(RECEIPT_QR_PREFIX)
            .unwrap_or(receipt_no)
            .trim()
            .to_string();
        let find = !receipt_no.is_empty();
        self.screen = Screen::Refund(RefundForm {
            receipt_no: receipt_no.clone(),
            ..RefundForm::default()
        });
        let mut effects = vec![Effect::FocusScan];
        if find {
            effects.push(self.lane(Request::FindSale, Command::FindSale { receipt_no }));
        }
        effects
    }

    fn key(&mut self, key: Key) -> Vec<Effect> {
        if key == Key::F(11) {
            self.toggle_locale();
            return vec![Effect::FocusScan];
        }
        match (&self.screen, key) {
            (Screen::Sale, key) => self.sale_key(key),
            (Screen::Report(_), Key::F(9)) => self.shift_message(ShiftMessage::Print),
            (Screen::Report(report), Key::Escape) if report.closed_at_ms.is_some() => {
                // After the Z report there is no shift: the next one starts here.
                self.screen = Screen::OpenShift {
                    float: String::new(),
                };
                vec![Effect::FocusScan]
            }
            (Screen::Cash { .. } | Screen::Refund(_) | Screen::Report(_), Key::Escape)
            | (Screen::CloseShift { .. }, Key::Escape) => {
                self.screen = Screen::Sale;
                self.notice = None;
                vec![Effect::FocusScan]
            }
            (Screen::Payment(_), Key::Escape) => self.payment(PaymentMessage::Cancel),
            (Screen::SignIn { .. } | Screen::OpenShift { .. }, Key::Escape) => {
                vec![Effect::FocusScan]
            }
            _ => Vec::new(),
        }
    }

    fn cash(&mut self, message: CashMessage) -> Vec<Effect> {
        let Screen::Cash { given } = &mut self.screen else {
            return Vec::new();
        };
        match message {
            CashMessage::Given(text) => {
                *given = trimmed_input(text);
                Vec::new()
            }
            CashMessage::Submit => {
                let amount = if given.trim().is_empty() {
                    // Enter on an empty field: the exact amount.
                    self.cart.remaining.clone()
                } else {
                    given.trim().to_string()
                };
                vec![self.lane(Request::TenderCash, Command::TenderCash { amount })]
            }
        }
    }

    fn payment(&mut self, message: PaymentMessage) -> Vec<Effect> {
        let Screen::Payment(screen) = &mut self.screen else {
            return Vec::new();
        };
        match message {
            PaymentMessage::Input(text) => {
                screen.input = trimmed_input(text);
                Vec::new()
            }
            PaymentMessage::Submit => {
                let text = std::mem::take(&mut screen.input).trim().to_string();
                let command = match screen.kind {
                    PayKind::WalletCode if !text.is_empty() => {
                        Command::PayWalletCode { code: text }
                    }
                    PayKind::OfflineQr if !text.is_empty() => {
                        Command::ScanOfflineConfirmation { text }
                    }
                    PayKind::DynamicQr if screen.attempt.is_none() => Command::StartDynamicQr {
                        wallet: "alipay".into(),
                    },
                    _ => return vec![Effect::FocusScan],
                };
                vec![self.lane(Request::Payment, command), Effect::FocusScan]
            }
            PaymentMessage::Wallet(wallet) => {
                if screen.is_open() {
                    return vec![Effect::FocusScan];
                }
                let command = Command::StartDynamicQr {
                    wallet: wallet.to_string(),
                };
                vec![self.lane(Request::Payment, command), Effect::FocusScan]
            }
            PaymentMessage::Cancel => {
                if screen.is_open() {
                    // The lane reverses or closes; the screen follows its events.
                    vec![self.lane(Request::CancelPayment, Command::CancelPayment)]
                } else {
                    self.screen = Screen::Sale;
                    self.qr = None;
                    vec![Effect::FocusScan]
                }
            }
        }
    }

    /// A payment attempt changed (reply or event): show it, and leave the screen once paid.
    fn payment_changed(&mut self, attempt: PaymentAttemptView) {
        if let Some(qr_text) = &attempt.qr_text
            && self.qr.as_ref().is_none_or(|(text, _)| text != qr_text)
        {
            self.qr = crate::qr::qr_handle(qr_text).map(|handle| (qr_text.clone(), handle));
        }
        let kind = match attempt.method.as_str() {
            "card" => PayKind::Card,
            "offline_qr" => PayKind::OfflineQr,
            _ if attempt.qr_text.is_some() => PayKind::DynamicQr,
            _ => PayKind::WalletCode,
        };
        match attempt.state.as_str() {
            "paid" | "stored" => {
                self.qr = None;
                self.info(vec![
                    plain(format!("{} ", attempt.method)),
                    Part::Money(attempt.amount.clone()),
                    plain(" — "),
                    Part::Step(attempt.step.clone()),
                ]);
                if matches!(self.screen, Screen::Payment(_)) {
                    self.screen = Screen::Sale;
                }
            }
            state => {
                if FINAL_PAYMENT_STATES.contains(&state) {
                    self.qr = None;
                    let words = attempt
                        .message
                        .clone()
                        .unwrap_or_else(|| attempt.step.clone());
                    self.error(vec![Part::Step(words), plain(" — Esc")]);
                }
                match &mut self.screen {
                    Screen::Payment(screen) => screen.attempt = Some(attempt),
                    Screen::Sale | Screen::Cash { .. } => {
                        // A payment code scanned at the sale screen went straight to the lane.
                        self.screen = Screen::Payment(PaymentScreen {
                            kind,
                            attempt: Some(attempt),
                            input: String::new(),
                        });
                    }
                    _ => {}
                }
            }
        }
    }

    /// Seconds left on the payment on screen, from its deadline.
    pub fn payment_seconds_left(&self) -> Option<i64> {
        let Screen::Payment(screen) = &self.screen else {
            return None;
        };
        let deadline = screen.attempt.as_ref()?.deadline_ms?;
        Some(((deadline - self.now_ms).max(0) + 999) / 1_000)
    }

    fn refund(&mut self, message: RefundMessage) -> Vec<Effect> {
        let Screen::Refund(form) = &mut self.screen else {
            return Vec::new();
        };
        match message {
            RefundMessage::ReceiptNo(text) => {
                form.receipt_no = trimmed_input(text);
                Vec::new()
            }
            RefundMessage::Find => {
                let receipt_no = form
                    .receipt_no
                    .trim()
                    .strip_prefix(RECEIPT_QR_PREFIX)
                    .unwrap_or(form.receipt_no.trim())
                    .to_string();
                form.receipt_no = receipt_no.clone();
                vec![self.lane(Request::FindSale, Command::FindSale { receipt_no })]
            }
            RefundMessage::ToggleLine(line) => {
                if !form.selected.remove(&line) {
                    form.selected.insert(line);
                }
                vec![Effect::FocusScan]
            }
            RefundMessage::Amount(text) => {
                form.amount = trimmed_input(text);
                Vec::new()
            }
            RefundMessage::Submit => {
                let Some(sale) = &form.sale else {
                    // Enter before a sale was found: find it first.
                    return self.refund(RefundMessage::Find);
                };
                let amount = Some(form.amount.trim().to_string()).filter(|a| !a.is_empty());
                let lines = if amount.is_some() {
                    Vec::new()
                } else {
                    sale.cart
                        .lines
                        .iter()
                        .filter(|l| form.selected.contains(&l.line))
                        .map(|l| RefundLineSpec {
                            line: l.line,
                            quantity: l.quantity.clone(),
                        })
                        .collect()
                };
                if amount.is_none() && lines.is_empty() {
                    self.error(vec![Part::Text(Text::ChooseRefundLines)]);
                    return Vec::new();
                }
                let command = Command::Refund {
                    receipt_no: sale.receipt_no.clone(),
                    lines,
                    amount,
                    reason: REFUND_REASON.into(),
                };
                vec![self.lane(Request::Refund, command)]
            }
        }
    }

    fn lane_event(&mut self, event: Event) {
        match event {
            Event::CartChanged(cart) => {
                if self
                    .selected_line
                    .is_some_and(|l| !cart.lines.iter().any(|c| c.line == l))
                {
                    self.selected_line = None;
                }
                if !cart.lines.is_empty() {
                    // A new sale: the last one's "done" line no longer applies (errors stay
                    // until the cashier has read them).
                    if self.cart.lines.is_empty()
                        && self.notice.as_ref().is_some_and(|n| !n.is_error)
                    {
                        self.notice = None;
                    }
                    self.last_sale = None;
                }
                self.cart = cart;
            }
            Event::ScanRejected { code, reason } => {
                self.error(vec![
                    Part::Text(Text::ScanRejected),
                    plain(format!(" {code}: ")),
                    Part::Step(reason),
                ]);
            }
            Event::SaleCompleted(tender) => {
                self.cart = empty_cart();
                self.selected_line = None;
                self.last_sale = Some(tender);
            }
            Event::SaleVoided { .. } => {
                self.cart = empty_cart();
                self.selected_line = None;
            }
            Event::DeviceStatus(device) => {
                self.devices.insert(device.device.clone(), device);
            }
            Event::SyncStatus(sync) => self.sync = sync,
            Event::PaymentChanged(attempt) => self.payment_changed(attempt),
            Event::StoredCardDeclined {
                amount,
                masked_pan,
                reason,
                sale_id,
                ..
            } => {
                let card = masked_pan.map(|pan| format!(" {pan}")).unwrap_or_default();
                self.error(vec![
                    Part::Text(Text::StoredCardDeclined),
                    plain(format!("{card} ")),
                    Part::Money(amount),
                    plain(format!(", {sale_id} ({reason}) — ")),
                    Part::Text(Text::TellSupervisor),
                ]);
            }
            Event::JournalChecked {
                intact: false,
                detail,
                ..
            } => {
                self.error(vec![
                    Part::Text(Text::JournalDamaged),
                    plain(format!(" ({detail})")),
                ]);
            }
            // Tenders, refunds and journal entries are shown from the command's reply; kinds
            // added to the lane later are ignored until the screen knows them.
            _ => {}
        }
    }

    fn replied(&mut self, request: Request, result: Result<Reply, CommandError>) -> Vec<Effect> {
        let reply = match result {
            Ok(reply) => reply,
            Err(error) => {
                // The lane's words are written for the cashier; the code is for programs. A
                // refused scan was already shown with its code (the ScanRejected event).
                let said = self.locale.lane_words(&error.message);
                let shown = self
                    .notice
                    .as_ref()
                    .is_some_and(|n| n.is_error && n.text.ends_with(&said));
                if !shown {
                    self.error(vec![Part::Step(error.message)]);
                }
                // Back to the field the screen waits on (the PIN after a wrong PIN).
                return vec![
                    self.active_field()
                        .map_or(Effect::FocusScan, |field| field.kind.focus()),
                ];
            }
        };
        match (request, reply) {
            (_, Reply::Shift(shift)) => self.shift_replied(request, shift),
            (_, Reply::Cart(cart)) => {
                self.cart = cart;
                self.notice = None;
            }
            (Request::TenderCash, Reply::Tender(tender)) => {
                if tender.completed {
                    let mut parts = vec![Part::Text(Text::SaleDone)];
                    if tender.change != ZERO_YUAN {
                        parts.extend([
                            plain(" — "),
                            Part::Text(Text::ChangeDue),
                            plain(" "),
                            Part::Money(tender.change.clone()),
                        ]);
                    }
                    self.info(parts);
                    self.cart = empty_cart();
                    self.last_sale = Some(tender);
                    self.screen = Screen::Sale;
                } else {
                    self.cart.remaining = tender.remaining.clone();
                    self.screen = Screen::Cash {
                        given: String::new(),
                    };
                }
            }
            (_, Reply::Payment(attempt)) => self.payment_changed(attempt),
            (Request::VoidSale, Reply::Voided { .. }) => {
                self.cart = empty_cart();
                self.info(vec![Part::Text(Text::Voided)]);
            }
            (Request::FindSale, Reply::Sale(sale)) => {
                if let Screen::Refund(form) = &mut self.screen {
                    form.receipt_no = sale.receipt_no.clone();
                    form.selected.clear();
                    form.sale = Some(sale);
                }
                self.notice = None;
            }
            (Request::Refund, Reply::Refund(refund)) => {
                let mut parts = vec![
                    Part::Text(Text::RefundDone),
                    plain(" "),
                    Part::Money(refund.total.clone()),
                    plain(" ("),
                ];
                for (index, (method, amount)) in refund.tenders.iter().enumerate() {
                    let separator = if index == 0 { "" } else { ", " };
                    parts.push(plain(format!("{separator}{method} ")));
                    parts.push(Part::Money(amount.clone()));
                }
                parts.push(plain(format!(") — {}", refund.receipt_no)));
                self.info(parts);
                self.screen = Screen::Sale;
            }
            _ => {}
        }
        vec![Effect::FocusScan]
    }

    fn shift_replied(&mut self, request: Request, shift: ShiftView) {
        self.shift = shift.clone();
        match (request, shift.state.as_str()) {
            (Request::PrintReport, _) => {
                self.info(vec![Part::Text(Text::ReportPrinted)]);
                self.screen = Screen::Report(shift);
            }
            (Request::ShiftReport, _) if matches!(self.screen, Screen::Report(_)) => {
                self.screen = Screen::Report(shift);
            }
            (Request::ShiftReport, _) if matches!(self.screen, Screen::CloseShift { .. }) => {}
            (Request::CloseShift, "closed") => {
                self.info(vec![
                    Part::Text(Text::Difference),
                    plain(": "),
                    Part::Money(shift.difference.clone().unwrap_or_else(|| ZERO_YUAN.into())),
                    plain(format!(" {}", shift.shift_id.clone().unwrap_or_default())),
                ]);
                self.screen = Screen::Report(shift);
            }
            (_, "signed_out") => {
                self.screen = Screen::sign_in();
            }
            (_, "signed_in") => {
                self.notice = None;
                self.screen = Screen::OpenShift {
                    float: String::new(),
                };
            }
            (_, "open") => {
                if !matches!(self.screen, Screen::Report(_)) {
                    self.screen = Screen::Sale;
                }
                if matches!(request, Request::SignIn | Request::OpenShift) {
                    self.notice = None;
                }
            }
            _ => {}
        }
    }

    /// The clock skew to warn about, if any.
    pub fn skew_warning_ms(&self) -> Option<i64> {
        self.sync
            .clock_skew_ms
            .filter(|skew| skew.abs() > CLOCK_SKEW_WARN_MS)
    }

    /// The X or Z report as (label, value) rows in the screen's language; the lane's
    /// `report_lines` are what the printer prints.
    pub fn report_rows(&self, report: &ShiftView) -> Vec<(String, String)> {
        let t = |text| self.t(text).to_string();
        let time = |ms: Option<i64>| ms.map(lanepay_agent::lane::format_utc).unwrap_or_default();
        let mut rows = vec![
            (
                t(Text::ShiftNo),
                report.shift_id.clone().unwrap_or_default(),
            ),
            (
                t(Text::Cashier),
                report.shift_cashier_id.clone().unwrap_or_default(),
            ),
            (t(Text::OpenedAt), time(report.opened_at_ms)),
        ];
        if report.closed_at_ms.is_some() {
            rows.push((t(Text::ClosedAt), time(report.closed_at_ms)));
        }
        rows.push((t(Text::SalesCount), report.sales_count.to_string()));
        rows.push((t(Text::RefundsCount), report.refunds_count.to_string()));
        for (method, amount) in &report.by_method {
            rows.push((self.locale.lane_words(method), self.money(amount)));
        }
        rows.extend([
            (t(Text::Float), self.money(&report.opening_float)),
            (t(Text::CashIn), self.money(&report.cash_sales)),
            (t(Text::CashOut), self.money(&report.cash_refunds)),
            (t(Text::Expected), self.money(&report.expected)),
        ]);
        if let (Some(counted), Some(difference)) = (&report.counted, &report.difference) {
            rows.push((t(Text::Counted), self.money(counted)));
            rows.push((t(Text::Difference), self.money(difference)));
        }
        rows
    }

    /// A plain-text account of what the screen shows (the `--state-file` debug output and
    /// the end-to-end test read it back).
    pub fn state_text(&self) -> String {
        let mut text = format!(
            "screen={}\nlocale={:?}\ncashier={}\nshift={}\nlines={}\ntotal={}\nremaining={}\nonline={}\n",
            self.screen.name(),
            self.locale,
            self.shift.cashier_id.clone().unwrap_or_default(),
            self.shift.state,
            self.cart.lines.len(),
            self.cart.total,
            self.cart.remaining,
            self.sync.online,
        );
        if let Some(sale) = &self.last_sale {
            text.push_str(&format!(
                "last_receipt={}\nlast_change={}\n",
                sale.receipt_no, sale.change
            ));
        }
        if let Some(notice) = &self.notice {
            text.push_str(&format!("notice={}\n", notice.text));
        }
        text
    }
}
