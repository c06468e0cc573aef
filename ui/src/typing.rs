//! What the cashier types, wherever it lands: keys no field took (typed before the focus
//! reached the screen's field), keys typed while a command that changes the screen is on its
//! way (kept and given to the screen that follows), and keys a field's widget took after its
//! text changed behind its back, before the screen was drawn again. A scanner in keyboard mode
//! types faster than screens change; not one of its keys may be lost or land in a wrong field.

use crate::app::{
    CashMessage, Cashier, Effect, Message, PaymentMessage, RefundForm, RefundMessage, SaleMessage,
    Screen, ShiftMessage, SignInMessage,
};

/// Keys typed ahead of a screen change that are kept at most; a cashier does not type more
/// before a screen appears, a stuck key would.
pub const MAX_TYPEAHEAD_KEYS: usize = 256;

/// Typed text or Enter that no field took. Keys typed (or sent by a scanner in keyboard mode)
/// between a screen change and the focus reaching the new screen's field land nowhere;
/// they belong to the field the screen is waiting on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrayKey {
    Text(String),
    Backspace,
    Enter,
}

/// The cashier screen's input fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    CashierId,
    Pin,
    Float,
    Counted,
    SaleCode,
    CashGiven,
    ReceiptNo,
    RefundAmount,
    PaymentCode,
}

/// What a message does to a field: its new text, or Enter (or the button doing the same).
pub(crate) enum FieldAction {
    Edit(String),
    Submit,
}

pub(crate) fn field_message(message: &Message) -> Option<(FieldKind, FieldAction)> {
    use FieldAction::{Edit, Submit};
    let edit = |kind, text: &String| Some((kind, Edit(text.clone())));
    match message {
        Message::SignIn(SignInMessage::CashierId(text)) => edit(FieldKind::CashierId, text),
        Message::SignIn(SignInMessage::NextField) => Some((FieldKind::CashierId, Submit)),
        Message::SignIn(SignInMessage::Pin(text)) => edit(FieldKind::Pin, text),
        Message::SignIn(SignInMessage::Submit) => Some((FieldKind::Pin, Submit)),
        Message::Shift(ShiftMessage::Float(text)) => edit(FieldKind::Float, text),
        Message::Shift(ShiftMessage::Open) => Some((FieldKind::Float, Submit)),
        Message::Shift(ShiftMessage::Counted(text)) => edit(FieldKind::Counted, text),
        Message::Shift(ShiftMessage::Close) => Some((FieldKind::Counted, Submit)),
        Message::Sale(SaleMessage::Input(text)) => edit(FieldKind::SaleCode, text),
        Message::Sale(SaleMessage::Submit) => Some((FieldKind::SaleCode, Submit)),
        Message::Cash(CashMessage::Given(text)) => edit(FieldKind::CashGiven, text),
        Message::Cash(CashMessage::Submit) => Some((FieldKind::CashGiven, Submit)),
        Message::Refund(RefundMessage::ReceiptNo(text)) => edit(FieldKind::ReceiptNo, text),
        Message::Refund(RefundMessage::Find) => Some((FieldKind::ReceiptNo, Submit)),
        Message::Refund(RefundMessage::Amount(text)) => edit(FieldKind::RefundAmount, text),
        Message::Refund(RefundMessage::Submit) => Some((FieldKind::RefundAmount, Submit)),
        Message::Payment(PaymentMessage::Input(text)) => edit(FieldKind::PaymentCode, text),
        Message::Payment(PaymentMessage::Submit) => Some((FieldKind::PaymentCode, Submit)),
        _ => None,
    }
}

/// A field's widget whose text changed behind its back (its Enter cleared it, stray keys were
/// added) before the screen was drawn again: keys in the same batch of events still reach it,
/// and it adds them to the text it shows.
#[derive(Debug, Clone)]
pub(crate) struct StaleField {
    kind: FieldKind,
    shown: String,
    /// The screen's draw count when its text changed.
    draw: u64,
    /// It passed keys on: an Enter from it ends them.
    took_keys: bool,
}

/// The field a screen is waiting on, and its text.
pub(crate) struct ActiveField {
    pub(crate) kind: FieldKind,
    pub(crate) value: String,
}

impl FieldKind {
    /// The message an edit of this field sends.
    pub(crate) fn edit(self, text: String) -> Message {
        match self {
            FieldKind::CashierId => Message::SignIn(SignInMessage::CashierId(text)),
            FieldKind::Pin => Message::SignIn(SignInMessage::Pin(text)),
            FieldKind::Float => Message::Shift(ShiftMessage::Float(text)),
            FieldKind::Counted => Message::Shift(ShiftMessage::Counted(text)),
            FieldKind::SaleCode => Message::Sale(SaleMessage::Input(text)),
            FieldKind::CashGiven => Message::Cash(CashMessage::Given(text)),
            FieldKind::ReceiptNo => Message::Refund(RefundMessage::ReceiptNo(text)),
            FieldKind::RefundAmount => Message::Refund(RefundMessage::Amount(text)),
            FieldKind::PaymentCode => Message::Payment(PaymentMessage::Input(text)),
        }
    }

    /// The message Enter in this field sends.
    pub(crate) fn submit(self) -> Message {
        match self {
            FieldKind::CashierId => Message::SignIn(SignInMessage::NextField),
            FieldKind::Pin => Message::SignIn(SignInMessage::Submit),
            FieldKind::Float => Message::Shift(ShiftMessage::Open),
            FieldKind::Counted => Message::Shift(ShiftMessage::Close),
            FieldKind::SaleCode => Message::Sale(SaleMessage::Submit),
            FieldKind::CashGiven => Message::Cash(CashMessage::Submit),
            FieldKind::ReceiptNo => Message::Refund(RefundMessage::Find),
            FieldKind::RefundAmount => Message::Refund(RefundMessage::Submit),
            FieldKind::PaymentCode => Message::Payment(PaymentMessage::Submit),
        }
    }

    pub(crate) fn focus(self) -> Effect {
        match self {
            FieldKind::Pin => Effect::Focus(crate::view::PIN_FIELD),
            _ => Effect::FocusScan,
        }
    }
}

impl Cashier {
    /// Gives a stray key to the field the screen is waiting on, and focuses that field; while
    /// the screen is changing, keeps it for the next screen.
    pub(crate) fn stray_key(&mut self, key: StrayKey) -> Vec<Effect> {
        if self.changing_screen.is_some() {
            self.keep_typeahead(key);
            return Vec::new();
        }
        if self.typeahead_dropped_at == Some(self.draws.get()) {
            // Typed before the refusal was on screen: still meant for the screen that did not
            // come.
            return Vec::new();
        }
        let Some(field) = self.active_field() else {
            return Vec::new();
        };
        // Focus first: what the key does may move the focus on (Enter on the cashier id).
        let mut effects = vec![field.kind.focus()];
        let typed = match key {
            StrayKey::Enter => {
                effects.extend(self.submit_field(field.kind.submit()));
                return effects;
            }
            StrayKey::Text(text) => format!("{}{text}", field.value),
            StrayKey::Backspace => {
                let mut typed = field.value.clone();
                typed.pop();
                typed
            }
        };
        // Straight to the screen: this is already what the stale widget added or removed.
        self.mark_stale(field.kind, field.value);
        effects.extend(self.dispatch(field.kind.edit(typed)));
        effects
    }

    /// Forgets the keys typed ahead, and the stray keys still arriving before the next draw.
    pub(crate) fn drop_typeahead(&mut self) {
        self.typeahead.clear();
        self.typeahead_dropped_at = Some(self.draws.get());
    }

    fn keep_typeahead(&mut self, key: StrayKey) {
        if self.typeahead.len() < MAX_TYPEAHEAD_KEYS {
            self.typeahead.push_back(key);
        }
    }

    /// The screen was drawn (the widgets now show the state): no widget is stale any more.
    pub fn drawn(&self) {
        self.draws.set(self.draws.get().wrapping_add(1));
    }

    /// The widget of this field, if it is stale: the screen was not drawn since the field's
    /// text changed other than by that widget's own edit.
    fn stale_widget(&mut self, kind: FieldKind) -> Option<&mut StaleField> {
        let draw = self.draws.get();
        self.stale_fields.retain(|stale| stale.draw == draw);
        self.stale_fields
            .iter_mut()
            .find(|stale| stale.kind == kind)
    }

    /// Remembers what the field's widget shows before its text changes behind its back,
    /// unless it is stale already (then what it shows did not change).
    fn mark_stale(&mut self, kind: FieldKind, shown: String) {
        if self.stale_widget(kind).is_none() {
            let draw = self.draws.get();
            self.stale_fields.push(StaleField {
                kind,
                shown,
                draw,
                took_keys: false,
            });
        }
    }

    /// An edit of a field. Keys that a stale widget adds (after its Enter, or before it was
    /// drawn with the keys given to it as stray keys) are typing for the field the screen
    /// now waits on; while the screen changes they are kept for the next one.
    pub(crate) fn field_edited(
        &mut self,
        kind: FieldKind,
        text: String,
        message: Message,
    ) -> Vec<Effect> {
        if let Some(stale) = self.stale_widget(kind) {
            if let Some(added) = text.strip_prefix(stale.shown.as_str())
                && !added.is_empty()
            {
                let added = added.to_string();
                stale.shown = text;
                stale.took_keys = true;
                return self.stray_key(StrayKey::Text(added));
            }
            // Backspace in the stale widget: one character fewer than it showed.
            if stale.shown.starts_with(text.as_str())
                && stale.shown.chars().count() == text.chars().count() + 1
            {
                stale.shown = text;
                stale.took_keys = true;
                return self.stray_key(StrayKey::Backspace);
            }
        }
        if self.changing_screen.is_some() {
            // The old screen's field: nothing typed there matters any more.
            return Vec::new();
        }
        self.dispatch(message)
    }

    /// Enter in a field, or its button. While the screen changes it is kept. From a stale
    /// widget that passed keys on, it ends them: the field the screen waits on is submitted.
    pub(crate) fn field_submitted(&mut self, kind: FieldKind, message: Message) -> Vec<Effect> {
        let ends_passed_keys = self.stale_widget(kind).is_some_and(|stale| stale.took_keys);
        if ends_passed_keys || self.changing_screen.is_some() {
            return self.stray_key(StrayKey::Enter);
        }
        self.submit_field(message)
    }

    /// Submits the field the screen waits on; its widget shows the text until the next draw.
    fn submit_field(&mut self, submit: Message) -> Vec<Effect> {
        if let Some(field) = self.active_field() {
            self.mark_stale(field.kind, field.value);
        }
        self.dispatch(submit)
    }

    /// Types the kept keys into the screen that came, until one of them changes the screen
    /// again (Enter on the opening float), which keeps the rest for the screen after.
    pub(crate) fn replay_typeahead(&mut self) -> Vec<Effect> {
        let mut effects = Vec::new();
        while self.changing_screen.is_none() {
            let Some(key) = self.typeahead.pop_front() else {
                break;
            };
            // An Enter with nothing typed before it is a key pressed twice, not a request:
            // on the cash screen it would tender the exact amount.
            let nothing_typed = self
                .active_field()
                .is_none_or(|field| field.value.is_empty());
            if key == StrayKey::Enter && nothing_typed {
                continue;
            }
            effects.extend(self.stray_key(key));
        }
        effects
    }

    /// The field the screen waits on, and its text.
    pub(crate) fn active_field(&self) -> Option<ActiveField> {
        let (kind, value) = match &self.screen {
            Screen::SignIn {
                pin_active: false,
                cashier_id,
                ..
            } => (FieldKind::CashierId, cashier_id),
            Screen::SignIn { pin, .. } => (FieldKind::Pin, pin),
            Screen::OpenShift { float } => (FieldKind::Float, float),
            Screen::Sale => (FieldKind::SaleCode, &self.input),
            Screen::Cash { given } => (FieldKind::CashGiven, given),
            Screen::Refund(RefundForm {
                sale: None,
                receipt_no,
                ..
            }) => (FieldKind::ReceiptNo, receipt_no),
            Screen::Refund(form) => (FieldKind::RefundAmount, &form.amount),
            Screen::CloseShift { counted } => (FieldKind::Counted, counted),
            Screen::Payment(payment) if payment.has_field() => {
                (FieldKind::PaymentCode, &payment.input)
            }
            Screen::Payment(_) | Screen::Report(_) => return None,
        };
        Some(ActiveField {
            kind,
            value: value.clone(),
        })
    }
}
