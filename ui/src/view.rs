//! What the windows show: the cashier screen (every screen plus the status bar that is always
//! there), the customer display and the demo's device panel. Pure functions of the state.

use iced::widget::{Id, button, column, container, image, row, scrollable, text, text_input};
use iced::{Alignment, Color, Element, Length};

use crate::app::{
    CashMessage, Cashier, Key, Message, PayKind, PaymentMessage, PaymentScreen, RefundMessage,
    SaleMessage, Screen, ShiftMessage, SignInMessage, ZERO_YUAN,
};
use crate::demo::{CustomerAction, WalletOutcome};
use crate::i18n::Text;
use crate::typing::FieldKind;

/// The id of the one input field of each screen; it always has focus.
pub const SCAN_FIELD: &str = "scan-field";
/// The PIN field of the sign-in screen.
pub const PIN_FIELD: &str = "pin-field";
/// Pixel sizes: the total must read from a step back.
pub const TOTAL_SIZE: u32 = 56;
pub const BODY_SIZE: u32 = 20;
pub const SMALL_SIZE: u32 = 15;

const ERROR_RED: Color = Color::from_rgb(0.75, 0.1, 0.1);
const OK_GREEN: Color = Color::from_rgb(0.05, 0.5, 0.2);
const MUTED: Color = Color::from_rgb(0.4, 0.4, 0.4);

pub fn scan_field_id() -> Id {
    Id::new(SCAN_FIELD)
}

/// The screen's field. While the screen is changing it takes no typing: the keys reach the
/// screen as stray keys and are kept for the screen that follows.
fn field<'a>(
    state: &Cashier,
    kind: FieldKind,
    placeholder: &str,
    value: &str,
) -> iced::widget::TextInput<'a, Message> {
    typing(
        state,
        kind,
        text_input(placeholder, value).id(scan_field_id()),
    )
}

/// A field's size, and what its edits and Enter send (nothing while the screen changes).
fn typing<'a>(
    state: &Cashier,
    kind: FieldKind,
    input: iced::widget::TextInput<'a, Message>,
) -> iced::widget::TextInput<'a, Message> {
    let input = input.size(BODY_SIZE + 6).padding(10);
    if state.changing_screen.is_some() {
        input
    } else {
        input
            .on_input(move |t| kind.edit(t))
            .on_submit(kind.submit())
    }
}

fn key_button(label: &str, message: Message) -> Element<'_, Message> {
    button(text(label).size(SMALL_SIZE))
        .on_press(message)
        .padding([6, 8])
        .into()
}

/// The cashier window.
pub fn cashier(state: &Cashier) -> Element<'_, Message> {
    // The widgets built here show the state as it is now; none is stale any more.
    state.drawn();
    let body: Element<'_, Message> = match &state.screen {
        Screen::SignIn {
            cashier_id, pin, ..
        } => sign_in(state, cashier_id, pin),
        Screen::OpenShift { float } => open_shift(state, float),
        Screen::Sale => sale(state),
        Screen::Cash { given } => cash(state, given),
        Screen::Refund(form) => refund(state, form),
        Screen::CloseShift { counted } => close_shift(state, counted),
        Screen::Report(report) => report_screen(state, report),
        Screen::Payment(screen) => payment(state, screen),
    };
    let notice: Element<'_, Message> = match &state.notice {
        Some(notice) => text(&notice.text)
            .size(BODY_SIZE)
            .color(if notice.is_error { ERROR_RED } else { OK_GREEN })
            .into(),
        None if state.pending > 0 => text(state.t(Text::Working))
            .size(BODY_SIZE)
            .color(MUTED)
            .into(),
        None => text("").size(BODY_SIZE).into(),
    };
    column![
        container(body).height(Length::Fill).padding(12),
        container(notice).padding([4, 12]),
        status_bar(state),
    ]
    .into()
}

fn sign_in<'a>(state: &'a Cashier, cashier_id: &'a str, pin: &'a str) -> Element<'a, Message> {
    let id_field = field(
        state,
        FieldKind::CashierId,
        state.t(Text::CashierId),
        cashier_id,
    );
    let pin_field = typing(
        state,
        FieldKind::Pin,
        text_input(state.t(Text::Pin), pin)
            .id(Id::new(PIN_FIELD))
            .secure(true),
    );
    column![
        text(state.t(Text::SignInTitle)).size(TOTAL_SIZE / 2),
        text(state.t(Text::CashierId)).size(BODY_SIZE),
        id_field,
        text(state.t(Text::Pin)).size(BODY_SIZE),
        pin_field,
        row![
            key_button(
                state.t(Text::SignInButton),
                Message::SignIn(SignInMessage::Submit)
            ),
            key_button(state.t(Text::KeyLanguage), Message::ToggleLocale),
        ]
        .spacing(8),
    ]
    .spacing(10)
    .max_width(520)
    .into()
}

fn open_shift<'a>(state: &'a Cashier, float: &'a str) -> Element<'a, Message> {
    column![
        text(state.t(Text::OpenShiftTitle)).size(TOTAL_SIZE / 2),
        text(state.t(Text::OpeningFloat)).size(BODY_SIZE),
        field(state, FieldKind::Float, state.t(Text::OpeningFloat), float,),
        row![
            key_button(
                state.t(Text::OpenShiftButton),
                Message::Shift(ShiftMessage::Open)
            ),
            key_button(state.t(Text::KeyLanguage), Message::ToggleLocale),
        ]
        .spacing(8),
    ]
    .spacing(10)
    .max_width(520)
    .into()
}

fn cart_table(state: &Cashier) -> Element<'_, Message> {
    let header = row![
        text(state.t(Text::Item)).width(Length::FillPortion(5)),
        text(state.t(Text::Qty)).width(Length::FillPortion(1)),
        text(state.t(Text::Price)).width(Length::FillPortion(2)),
        text(state.t(Text::Discount)).width(Length::FillPortion(2)),
        text(state.t(Text::LineTotal)).width(Length::FillPortion(2)),
    ]
    .spacing(8);
    let selected = state
        .selected_line
        .or_else(|| state.cart.lines.last().map(|l| l.line));
    let mut lines = column![header].spacing(4);
    for line in &state.cart.lines {
        let name = match state.locale {
            crate::i18n::Locale::ZhCn => &line.name_zh,
            crate::i18n::Locale::En => &line.name_en,
        };
        let marker = if Some(line.line) == selected {
            "▶ "
        } else {
            ""
        };
        let unit = if line.per_kg { "/kg" } else { "" };
        let content = row![
            text(format!("{marker}{}. {name}", line.line)).width(Length::FillPortion(5)),
            text(&line.quantity).width(Length::FillPortion(1)),
            text(format!("{}{unit}", state.money(&line.unit_price))).width(Length::FillPortion(2)),
            text(if line.discount == ZERO_YUAN {
                String::new()
            } else {
                format!("-{}", state.money(&line.discount))
            })
            .width(Length::FillPortion(2)),
            text(state.money(&line.total)).width(Length::FillPortion(2)),
        ]
        .spacing(8);
        lines = lines.push(
            button(content)
                .on_press(Message::Sale(SaleMessage::SelectLine(line.line)))
                .style(if Some(line.line) == selected {
                    button::secondary
                } else {
                    button::text
                })
                .width(Length::Fill),
        );
    }
    if state.cart.lines.is_empty() {
        let idle: String = match &state.last_sale {
            // A sale paid exactly (wallet, card, exact cash) has no change to mention.
            Some(sale) if sale.change == ZERO_YUAN => {
                format!("{} {}", state.t(Text::SaleDone), sale.receipt_no)
            }
            Some(sale) => format!(
                "{} {} — {} {}",
                state.t(Text::SaleDone),
                sale.receipt_no,
                state.t(Text::ChangeDue),
                state.money(&sale.change)
            ),
            None => state.t(Text::EmptyCart).to_string(),
        };
        lines = lines.push(text(idle).size(BODY_SIZE + 4));
    }
    scrollable(lines).height(Length::Fill).into()
}

fn function_keys(state: &Cashier) -> Element<'_, Message> {
    let key =
        |label: Text, key: Key| key_button(state.t(label), Message::Sale(SaleMessage::Key(key)));
    column![
        row![
            key(Text::KeyHelp, Key::F(1)),
            key(Text::KeyQty, Key::F(2)),
            key(Text::KeyDiscount, Key::F(3)),
            key(Text::KeyVoidLine, Key::F(4)),
            key(Text::KeyCash, Key::F(5)),
            key(Text::KeyWallet, Key::F(6)),
            key(Text::KeyDynamicQr, Key::F(7)),
        ]
        .spacing(6),
        row![
            key(Text::KeyCard, Key::F(8)),
            key(Text::KeyOfflineQr, Key::F(9)),
            key(Text::KeyRefund, Key::F(10)),
            key_button(state.t(Text::KeyLanguage), Message::ToggleLocale),
            key(Text::KeyVoidSale, Key::F(12)),
            key_button(state.t(Text::KeyEnter), Message::Sale(SaleMessage::Submit)),
            key(Text::KeyEsc, Key::Escape),
        ]
        .spacing(6),
        row![
            key_button(
                state.t(Text::XReport),
                Message::Shift(ShiftMessage::XReport)
            ),
            key_button(
                state.t(Text::CloseShiftButton),
                Message::Shift(ShiftMessage::ShowCloseForm)
            ),
            key_button(
                state.t(Text::SignOutButton),
                Message::Shift(ShiftMessage::SignOut)
            ),
        ]
        .spacing(6),
    ]
    .spacing(6)
    .into()
}

fn totals(state: &Cashier) -> Element<'_, Message> {
    let mut totals = column![
        text(state.t(Text::Total)).size(BODY_SIZE),
        text(state.money(&state.cart.total)).size(TOTAL_SIZE),
    ]
    .spacing(4)
    .align_x(Alignment::End);
    if state.cart.paid != ZERO_YUAN {
        totals = totals
            .push(
                text(format!(
                    "{} {}",
                    state.t(Text::Paid),
                    state.money(&state.cart.paid)
                ))
                .size(BODY_SIZE),
            )
            .push(
                text(format!(
                    "{} {}",
                    state.t(Text::Remaining),
                    state.money(&state.cart.remaining)
                ))
                .size(BODY_SIZE + 8),
            );
    }
    if state.cart.discount != ZERO_YUAN {
        totals = totals.push(
            text(format!(
                "{} -{}",
                state.t(Text::Discount),
                state.money(&state.cart.discount)
            ))
            .size(BODY_SIZE),
        );
    }
    totals.into()
}

fn sale(state: &Cashier) -> Element<'_, Message> {
    let mut left = column![
        field(
            state,
            FieldKind::SaleCode,
            state.t(Text::ScanHint),
            &state.input,
        ),
        cart_table(state),
    ]
    .spacing(10)
    .width(Length::FillPortion(3));
    if state.help_open {
        left = left.push(text(state.t(Text::HelpText)).size(SMALL_SIZE));
    }
    column![
        row![left, container(totals(state)).width(Length::FillPortion(1))].spacing(16),
        function_keys(state),
    ]
    .spacing(10)
    .into()
}

fn cash<'a>(state: &'a Cashier, given: &'a str) -> Element<'a, Message> {
    let change: Element<'a, Message> = match state.cash_change(given) {
        Some(Ok(change)) => text(format!(
            "{} {}",
            state.t(Text::ChangeDue),
            state.money(&change.to_string())
        ))
        .size(TOTAL_SIZE)
        .color(OK_GREEN)
        .into(),
        Some(Err(short)) => text(format!(
            "{} {}",
            state.t(Text::NotEnough),
            state.money(&short.to_string())
        ))
        .size(BODY_SIZE + 8)
        .color(ERROR_RED)
        .into(),
        None => text("").into(),
    };
    column![
        text(state.t(Text::CashTitle)).size(TOTAL_SIZE / 2),
        text(format!(
            "{} {}",
            state.t(Text::Remaining),
            state.money(&state.cart.remaining)
        ))
        .size(TOTAL_SIZE),
        text(state.t(Text::CashGiven)).size(BODY_SIZE),
        field(state, FieldKind::CashGiven, state.t(Text::CashGiven), given,),
        change,
        row![
            key_button(
                state.t(Text::TakeCashButton),
                Message::Cash(CashMessage::Submit)
            ),
            key_button(state.t(Text::BackButton), Message::Key(Key::Escape)),
        ]
        .spacing(8),
    ]
    .spacing(12)
    .max_width(720)
    .into()
}

fn payment<'a>(state: &'a Cashier, screen: &'a PaymentScreen) -> Element<'a, Message> {
    let title = match screen.kind {
        PayKind::WalletCode => Text::WalletCodeTitle,
        PayKind::DynamicQr => Text::DynamicQrTitle,
        PayKind::Card => Text::CardTitle,
        PayKind::OfflineQr => Text::OfflineQrTitle,
    };
    let mut page = column![
        text(state.t(title)).size(TOTAL_SIZE / 2),
        text(format!(
            "{} {}",
            state.t(Text::Remaining),
            state.money(&state.cart.remaining)
        ))
        .size(TOTAL_SIZE),
    ]
    .spacing(12);
    if let Some(attempt) = &screen.attempt {
        // The lane's words for what is happening ("waiting for customer to confirm", ...).
        page = page.push(text(state.locale.lane_words(&attempt.step)).size(BODY_SIZE + 10));
        if let Some(pan) = &attempt.masked_pan {
            page = page.push(text(pan.as_str()).size(BODY_SIZE));
        }
        if let Some(message) = &attempt.message {
            page = page.push(
                text(state.locale.lane_words(message))
                    .size(BODY_SIZE)
                    .color(ERROR_RED),
            );
        }
        if let Some(seconds) = state.payment_seconds_left() {
            page = page.push(
                text(format!("{} {seconds} s", state.t(Text::SecondsLeft))).size(BODY_SIZE + 6),
            );
        }
    }
    if let Some((_, handle)) = &state.qr {
        page = page.push(image(handle.clone()).width(360).height(360));
    }
    match screen.kind {
        PayKind::WalletCode => {
            page = page.push(text(state.t(Text::WalletCodeHint)).size(BODY_SIZE));
            page = page.push(field(
                state,
                FieldKind::PaymentCode,
                state.t(Text::WalletCodeHint),
                &screen.input,
            ));
        }
        PayKind::OfflineQr => {
            page = page.push(text(state.t(Text::OfflineQrHint)).size(BODY_SIZE));
            page = page.push(field(
                state,
                FieldKind::PaymentCode,
                state.t(Text::OfflineQrHint),
                &screen.input,
            ));
        }
        PayKind::DynamicQr if screen.attempt.is_none() => {
            page = page.push(text(state.t(Text::ChooseWallet)).size(BODY_SIZE));
            page = page.push(
                row![
                    key_button(
                        state.t(Text::Alipay),
                        Message::Payment(PaymentMessage::Wallet("alipay"))
                    ),
                    key_button(
                        state.t(Text::Wechat),
                        Message::Payment(PaymentMessage::Wallet("wechat"))
                    ),
                    key_button(
                        state.t(Text::Unionpay),
                        Message::Payment(PaymentMessage::Wallet("unionpay"))
                    ),
                ]
                .spacing(8),
            );
            // The field keeps the keyboard (Enter picks Alipay).
            page = page.push(field(state, FieldKind::PaymentCode, "", &screen.input));
        }
        PayKind::Card => {
            page = page.push(text(state.card_reader_line()).size(BODY_SIZE));
            if let Some(room) = state.offline_room_line() {
                page = page.push(text(room).size(BODY_SIZE).color(ERROR_RED));
            }
        }
        PayKind::DynamicQr => {}
    }
    page = page.push(key_button(
        state.t(Text::CancelButton),
        Message::Payment(PaymentMessage::Cancel),
    ));
    scrollable(page.max_width(820)).into()
}

fn refund<'a>(state: &'a Cashier, form: &'a crate::app::RefundForm) -> Element<'a, Message> {
    let mut page = column![
        text(state.t(Text::RefundTitle)).size(TOTAL_SIZE / 2),
        text(state.t(Text::ReceiptNo)).size(BODY_SIZE),
    ]
    .spacing(10);
    match &form.sale {
        None => {
            page = page.push(field(
                state,
                FieldKind::ReceiptNo,
                state.t(Text::ReceiptNo),
                &form.receipt_no,
            ));
            page = page.push(
                row![
                    key_button(
                        state.t(Text::FindButton),
                        Message::Refund(RefundMessage::Find)
                    ),
                    key_button(state.t(Text::BackButton), Message::Key(Key::Escape)),
                ]
                .spacing(8),
            );
        }
        Some(sale) => {
            page = page.push(
                text(format!(
                    "{}  {} {}  {} {}",
                    sale.receipt_no,
                    state.t(Text::Total),
                    state.money(&sale.cart.total),
                    state.t(Text::Refundable),
                    state.money(&sale.refundable)
                ))
                .size(BODY_SIZE),
            );
            for line in &sale.cart.lines {
                let name = match state.locale {
                    crate::i18n::Locale::ZhCn => &line.name_zh,
                    crate::i18n::Locale::En => &line.name_en,
                };
                let mark = if form.selected.contains(&line.line) {
                    "☑"
                } else {
                    "☐"
                };
                page = page.push(
                    button(text(format!(
                        "{mark} {}. {name} × {}  {}",
                        line.line,
                        line.quantity,
                        state.money(&line.total)
                    )))
                    .on_press(Message::Refund(RefundMessage::ToggleLine(line.line)))
                    .style(button::secondary)
                    .width(Length::Fill),
                );
            }
            page = page.push(text(state.t(Text::RefundAmount)).size(BODY_SIZE));
            page = page.push(field(
                state,
                FieldKind::RefundAmount,
                state.t(Text::RefundAmount),
                &form.amount,
            ));
            page = page.push(
                row![
                    key_button(
                        state.t(Text::RefundButton),
                        Message::Refund(RefundMessage::Submit)
                    ),
                    key_button(state.t(Text::BackButton), Message::Key(Key::Escape)),
                ]
                .spacing(8),
            );
        }
    }
    scrollable(page.max_width(820)).into()
}

fn close_shift<'a>(state: &'a Cashier, counted: &'a str) -> Element<'a, Message> {
    column![
        text(state.t(Text::CloseShiftTitle)).size(TOTAL_SIZE / 2),
        text(format!(
            "{} {}",
            state.t(Text::Expected),
            state.money(&state.shift.expected)
        ))
        .size(BODY_SIZE + 8),
        text(state.t(Text::CountedCash)).size(BODY_SIZE),
        field(
            state,
            FieldKind::Counted,
            state.t(Text::CountedCash),
            counted,
        ),
        row![
            key_button(
                state.t(Text::CloseButton),
                Message::Shift(ShiftMessage::Close)
            ),
            key_button(state.t(Text::BackButton), Message::Key(Key::Escape)),
        ]
        .spacing(8),
    ]
    .spacing(10)
    .max_width(620)
    .into()
}

fn report_screen<'a>(
    state: &'a Cashier,
    report: &'a lanepay_agent::api::ShiftView,
) -> Element<'a, Message> {
    let title = if report.closed_at_ms.is_some() {
        Text::ZReportTitle
    } else {
        Text::XReportTitle
    };
    let mut lines = column![text(state.t(title)).size(TOTAL_SIZE / 2)].spacing(4);
    for (label, value) in state.report_rows(report) {
        lines = lines.push(
            row![
                text(label).size(BODY_SIZE).width(220),
                text(value).size(BODY_SIZE + 2),
            ]
            .spacing(12),
        );
    }
    let back = row![
        key_button(
            state.t(Text::PrintButton),
            Message::Shift(ShiftMessage::Print)
        ),
        key_button(state.t(Text::BackButton), Message::Key(Key::Escape)),
    ];
    column![scrollable(lines).height(Length::Fill), back.spacing(8)]
        .spacing(10)
        .into()
}

fn age_words(state: &Cashier, at_ms: Option<i64>) -> String {
    match at_ms {
        None => state.t(Text::Never).to_string(),
        Some(at) => {
            let seconds = (state.now_ms - at).max(0) / 1_000;
            if seconds < 120 {
                format!("{seconds} s")
            } else {
                format!("{} min", seconds / 60)
            }
        }
    }
}

fn status_bar(state: &Cashier) -> Element<'_, Message> {
    let sync = &state.sync;
    let mut bar = row![
        text(if sync.online {
            state.t(Text::Online)
        } else {
            state.t(Text::Offline)
        })
        .color(if sync.online { OK_GREEN } else { ERROR_RED }),
        text(format!("{} {}", state.t(Text::Backlog), sync.backlog)),
        text(format!(
            "{} {}",
            state.t(Text::LastSync),
            age_words(state, sync.last_sync_ms)
        )),
    ]
    .spacing(14);
    let exposure = if sync.offline_exposure.is_empty() {
        ZERO_YUAN
    } else {
        sync.offline_exposure.as_str()
    };
    bar = bar.push(
        text(format!(
            "{} {} ({} {})",
            state.t(Text::Exposure),
            state.money(exposure),
            sync.stored_count,
            state.t(Text::StoredCards)
        ))
        .color(if sync.stored_count > 0 {
            ERROR_RED
        } else {
            MUTED
        }),
    );
    if let Some(skew) = state.skew_warning_ms() {
        bar = bar.push(
            text(format!("⚠ {} {} s", state.t(Text::ClockSkew), skew / 1_000)).color(ERROR_RED),
        );
    }
    if let Some(words) = state.sync_problem_line() {
        bar = bar.push(text(words).color(MUTED));
    }
    bar = bar
        .push(text(format!(
            "{} {}",
            state.t(Text::Terminal),
            state.terminal_id
        )))
        .push(text(format!(
            "{} {}",
            state.t(Text::Cashier),
            state
                .shift
                .cashier_name
                .as_deref()
                .unwrap_or(state.t(Text::NobodySignedIn))
        )));
    for device in state.devices.values() {
        let color = match device.state.as_str() {
            "ready" => OK_GREEN,
            "warning" | "unavailable" => ERROR_RED,
            _ => MUTED,
        };
        bar = bar.push(
            text(format!(
                "{} {}",
                state.locale.device_word(&device.device),
                state.locale.device_word(&device.state)
            ))
            .color(color),
        );
    }
    // The bar wraps onto a second line rather than push a device's state off the screen.
    container(
        row![
            container(bar.wrap().vertical_spacing(4)).width(Length::Fill),
            button(text(state.t(Text::KeyLanguage)).size(SMALL_SIZE))
                .on_press(Message::ToggleLocale),
        ]
        .align_y(Alignment::Center)
        .spacing(14),
    )
    .padding([6, 12])
    .style(container::bordered_box)
    .width(Length::Fill)
    .into()
}

/// The customer-facing window: the cart as it grows, the total, a QR when one is shown, and
/// "thank you" with the change once paid.
pub fn customer(state: &Cashier) -> Element<'static, Message> {
    let qr = state.qr.as_ref().map(|(_, handle)| handle);
    let mut lines = column![].spacing(6);
    for line in state.cart.lines.iter().rev().take(12).rev() {
        let name = match state.locale {
            crate::i18n::Locale::ZhCn => line.name_zh.clone(),
            crate::i18n::Locale::En => line.name_en.clone(),
        };
        lines = lines.push(
            row![
                text(name).size(BODY_SIZE + 6).width(Length::FillPortion(4)),
                text(format!("× {}", line.quantity))
                    .size(BODY_SIZE + 6)
                    .width(Length::FillPortion(1)),
                text(state.money(&line.total))
                    .size(BODY_SIZE + 6)
                    .width(Length::FillPortion(2)),
            ]
            .spacing(10),
        );
    }
    let mut page = column![].spacing(16).padding(20);
    if state.cart.lines.is_empty() {
        match &state.last_sale {
            Some(sale) if sale.change == ZERO_YUAN => {
                page = page.push(text(state.t(Text::ThankYou)).size(TOTAL_SIZE));
            }
            Some(sale) => {
                page = page
                    .push(text(state.t(Text::ThankYou)).size(TOTAL_SIZE))
                    .push(
                        text(format!(
                            "{} {}",
                            state.t(Text::ChangeDue),
                            state.money(&sale.change)
                        ))
                        .size(TOTAL_SIZE),
                    );
            }
            None => page = page.push(text(state.t(Text::AppTitle)).size(TOTAL_SIZE)),
        }
    } else {
        page = page.push(lines).push(
            text(format!(
                "{} {}",
                state.t(Text::Total),
                state.money(&state.cart.total)
            ))
            .size(TOTAL_SIZE),
        );
    }
    if let Some(handle) = qr {
        page = page.push(image(handle.clone()).width(320).height(320));
    }
    container(page)
        .width(Length::Fill)
        .height(Length::Fill)
        .into()
}

/// The demo's device panel: products to scan on the emulated scanner.
pub fn device_panel(state: &Cashier) -> Element<'static, Message> {
    let mut panel = column![text(state.t(Text::DevicePanelHint)).size(BODY_SIZE)]
        .spacing(8)
        .padding(16);
    for (code, en, zh) in DEMO_PRODUCTS {
        let name = match state.locale {
            crate::i18n::Locale::ZhCn => zh,
            crate::i18n::Locale::En => en,
        };
        panel = panel.push(
            button(text(format!("{name}  {code}")))
                .on_press(Message::PanelScan((*code).to_string()))
                .width(Length::Fill),
        );
    }
    if !state.has_customer {
        return panel.into();
    }
    panel = panel.push(text(state.t(Text::CustomerPanelHint)).size(BODY_SIZE));
    let actions = [
        (
            Text::WalletPaid,
            CustomerAction::WalletCode(WalletOutcome::Paid),
        ),
        (
            Text::WalletLate,
            CustomerAction::WalletCode(WalletOutcome::ConfirmsLate),
        ),
        (
            Text::WalletDeclined,
            CustomerAction::WalletCode(WalletOutcome::Declined),
        ),
        (Text::TapCard, CustomerAction::TapCard),
    ];
    for (label, action) in actions {
        panel = panel.push(
            button(text(state.t(label)))
                .on_press(Message::Customer(action))
                .width(Length::Fill),
        );
    }
    let pay_qr = button(text(state.t(Text::PayQrOnPhone))).width(Length::Fill);
    panel = panel.push(match state.open_dynamic_qr() {
        Some(url) => pay_qr.on_press(Message::Customer(CustomerAction::PayDynamicQr(
            url.to_string(),
        ))),
        None => pay_qr,
    });
    panel = panel.push(text(state.t(Text::NetworkHint)).size(BODY_SIZE));
    panel = panel.push(
        row![
            button(text(state.t(Text::NetworkDown)))
                .on_press(Message::Customer(CustomerAction::Network(false))),
            button(text(state.t(Text::NetworkUp)))
                .on_press(Message::Customer(CustomerAction::Network(true))),
        ]
        .spacing(8),
    );
    if let Some((ok, line)) = &state.panel_status {
        let color = if *ok {
            Color::from_rgb8(0x1b, 0x5e, 0x20)
        } else {
            Color::from_rgb8(0xb7, 0x1c, 0x1c)
        };
        panel = panel.push(text(line.clone()).size(BODY_SIZE).color(color));
    }
    scrollable(panel).into()
}

/// The demo catalog's products the device panel offers (code, English, Chinese).
pub const DEMO_PRODUCTS: &[(&str, &str, &str)] = &[
    ("6901234567892", "Cola 330ml", "可乐 330ml"),
    ("6920000000012", "Mineral water 550ml", "矿泉水 550ml"),
    ("6930000000011", "Wholemeal bread 400g", "全麦面包 400g"),
    ("6940000000010", "Whole milk 1L", "纯牛奶 1L"),
    ("96385074", "Chewing gum", "口香糖"),
];
