//! `update` per screen: messages in, state out, against a real lane on disk (effects run by
//! [`lanepay_ui::testing::Harness`]), with the lane's clock injected.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use lanepay_agent::api::{Command, Event};
use lanepay_agent::clock::ManualClock;
use lanepay_ui::app::{
    CashMessage, Effect, Key, Message, PayKind, PaymentMessage, RefundMessage, Request,
    SaleMessage, Screen, ShiftMessage, SignInMessage, StrayKey,
};
use lanepay_ui::demo::{CustomerAction, WalletOutcome};
use lanepay_ui::i18n::Locale;
use lanepay_ui::testing::Harness;

const START_MS: i64 = 1_795_000_000_000;

fn harness(dir: &std::path::Path) -> Harness {
    Harness::new(dir, Arc::new(ManualClock::new(START_MS))).unwrap()
}

fn sign_in(h: &mut Harness, pin: &str) {
    h.send(Message::SignIn(SignInMessage::CashierId("1001".into())));
    h.send(Message::SignIn(SignInMessage::Pin(pin.into())));
    h.send(Message::SignIn(SignInMessage::Submit));
}

fn selling(h: &mut Harness) {
    sign_in(h, "1234");
    h.send(Message::Shift(ShiftMessage::Float("200".into())));
    h.send(Message::Shift(ShiftMessage::Open));
    assert_eq!(h.cashier.screen, Screen::Sale);
}

fn scan(h: &mut Harness, code: &str) {
    h.send(Message::Sale(SaleMessage::Input(code.into())));
    h.send(Message::Sale(SaleMessage::Submit));
}

#[test]
fn sign_in_screen_takes_id_and_pin_and_says_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path());
    assert_eq!(h.cashier.screen.name(), "sign_in");
    // Enter in the id field moves on to the PIN.
    h.send(Message::SignIn(SignInMessage::CashierId("1001".into())));
    h.send(Message::SignIn(SignInMessage::NextField));
    assert_eq!(
        h.other_effects.last(),
        Some(&Effect::Focus(lanepay_ui::view::PIN_FIELD))
    );
    // Letters typed into the PIN field are dropped.
    h.send(Message::SignIn(SignInMessage::Pin("12ab".into())));
    match &h.cashier.screen {
        Screen::SignIn { pin, .. } => assert_eq!(pin, "12"),
        other => panic!("{other:?}"),
    }
    sign_in(&mut h, "9999");
    assert_eq!(h.cashier.screen.name(), "sign_in");
    let notice = h.cashier.notice.clone().unwrap();
    assert!(notice.is_error);
    assert_eq!(
        notice.text,
        "cashier id or PIN is wrong; check them and try again"
    );
    // The PIN is not kept on screen after a try.
    match &h.cashier.screen {
        Screen::SignIn { pin, .. } => assert!(pin.is_empty()),
        other => panic!("{other:?}"),
    }
    sign_in(&mut h, "1234");
    assert_eq!(h.cashier.screen.name(), "open_shift");
    assert_eq!(
        h.cashier.shift.cashier_name.as_deref(),
        Some("Wang Fang 王芳")
    );
    assert!(h.cashier.notice.is_none());
}

/// Keys that reach no field (typed between a screen change and the focus arriving) go to the
/// field the screen waits on, and the field gets the focus back.
#[test]
fn stray_keys_go_to_the_field_the_screen_waits_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path());
    let stray = |h: &mut Harness, text: &str| {
        h.send(Message::Stray(StrayKey::Text(text.into())));
    };
    stray(&mut h, "10");
    stray(&mut h, "01");
    assert_eq!(h.other_effects.last(), Some(&Effect::FocusScan));
    h.send(Message::Stray(StrayKey::Enter));
    // Enter on the cashier id moves on: focus the id field first, then the PIN.
    assert_eq!(
        h.other_effects[h.other_effects.len() - 2..],
        [
            Effect::FocusScan,
            Effect::Focus(lanepay_ui::view::PIN_FIELD)
        ]
    );
    stray(&mut h, "1234");
    assert_eq!(
        h.other_effects.last(),
        Some(&Effect::Focus(lanepay_ui::view::PIN_FIELD))
    );
    h.send(Message::Stray(StrayKey::Enter));
    assert_eq!(h.cashier.screen.name(), "open_shift");
    stray(&mut h, "200");
    h.send(Message::Stray(StrayKey::Enter));
    assert_eq!(h.cashier.screen, Screen::Sale);
    assert_eq!(h.cashier.shift.opening_float, "200.00");
    // Stray keys, then the focus lands on the field's widget in the same frame: the widget
    // still shows the text from before the stray keys and adds the next key to that.
    h.send_same_frame(Message::Stray(StrayKey::Text("69".into())));
    h.send_same_frame(Message::Stray(StrayKey::Text("3".into())));
    h.send_same_frame(Message::Sale(SaleMessage::Input("0".into())));
    h.send(Message::Sale(SaleMessage::Input("00".into())));
    assert_eq!(h.cashier.input, "69300");
    h.send(Message::Sale(SaleMessage::Input(String::new())));
    // Half a barcode reached the field, the rest came stray: one scan of the whole code.
    h.send(Message::Sale(SaleMessage::Input("690123".into())));
    stray(&mut h, "4567892");
    h.send(Message::Stray(StrayKey::Enter));
    assert_eq!(
        h.commands.last(),
        Some(&Command::Scan {
            code: "6901234567892".into()
        })
    );
    assert_eq!(h.cashier.cart.lines.len(), 1);
    assert_eq!(h.cashier.cart.total, "3.50");
    // The card screen has no field: a stray key there does nothing.
    h.send(Message::Key(Key::F(8)));
    assert_eq!(payment_kind(&h), Some(PayKind::Card));
    let commands_before = h.commands.len();
    stray(&mut h, "7");
    h.send(Message::Stray(StrayKey::Enter));
    assert_eq!(h.commands.len(), commands_before);
}

/// Keys that reach a field after its Enter, before the screen is drawn again (the same batch
/// of key events), arrive as edits adding to what that field showed: they are the next typing.
#[test]
fn keys_a_field_took_after_its_enter_are_the_next_typing() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path());
    // The cashier id's Enter, then the PIN and its Enter all reach the id field's widget
    // before the screen is drawn again (the focus never got to the PIN field).
    h.send(Message::SignIn(SignInMessage::CashierId("1001".into())));
    h.send_same_frame(Message::SignIn(SignInMessage::NextField));
    for pin_typed in ["10011", "100112", "1001123", "10011234"] {
        h.send_same_frame(Message::SignIn(SignInMessage::CashierId(pin_typed.into())));
    }
    h.send(Message::SignIn(SignInMessage::NextField));
    assert_eq!(h.cashier.screen.name(), "open_shift");
    assert_eq!(
        h.commands.last(),
        Some(&Command::SignIn {
            cashier_id: "1001".into(),
            pin: "1234".into()
        })
    );
    h.send(Message::Shift(ShiftMessage::Float("200".into())));
    h.send(Message::Shift(ShiftMessage::Open));
    // Two codes in one batch: the second is typed into the first one's widget.
    let first = "6901234567892";
    let second = "6930000000011";
    h.send(Message::Sale(SaleMessage::Input(first.into())));
    h.send_same_frame(Message::Sale(SaleMessage::Submit));
    for end in 1..=second.len() {
        let shown = format!("{first}{}", &second[..end]);
        h.send_same_frame(Message::Sale(SaleMessage::Input(shown)));
    }
    h.send(Message::Sale(SaleMessage::Submit));
    assert_eq!(
        h.commands.last(),
        Some(&Command::Scan {
            code: second.into()
        })
    );
    assert_eq!(h.cashier.cart.total, "16.40");
    // Backspace in the stale widget right after its Enter: the field it passes to loses one
    // character, the submitted code does not come back.
    h.send(Message::Sale(SaleMessage::Input("12".into())));
    h.send_same_frame(Message::Sale(SaleMessage::Input("123".into())));
    h.send_same_frame(Message::Sale(SaleMessage::Submit));
    h.send_same_frame(Message::Sale(SaleMessage::Input("1234".into())));
    h.send_same_frame(Message::Sale(SaleMessage::Input("123".into())));
    assert_eq!(h.cashier.input, "");
    h.send(Message::Sale(SaleMessage::Input("12".into())));
    assert_eq!(h.cashier.input, "", "a second Backspace on an empty field");
    // Drawn again: a code that begins like the last one is a new code, not more keys.
    h.send(Message::Sale(SaleMessage::Input(format!("{second}9"))));
    assert_eq!(h.cashier.input, format!("{second}9"));
}

/// What the cashier types while a sign-in or the shift opening is on its way is kept for the
/// screen that follows, in order; after a refusal it is dropped.
#[test]
fn keys_typed_while_the_screen_changes_go_to_the_next_screen() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path());
    let typed = |h: &mut Harness, text: &str| {
        h.send(Message::Stray(StrayKey::Text(text.into())));
        h.send(Message::Stray(StrayKey::Enter));
    };
    // A wrong PIN, and the float typed on before the answer: the float is not a PIN try.
    h.hold_replies();
    typed(&mut h, "1001");
    typed(&mut h, "9999");
    assert_eq!(h.cashier.changing_screen, Some(Request::SignIn));
    typed(&mut h, "200");
    assert_eq!(h.cashier.typeahead.len(), 2);
    h.release();
    assert_eq!(h.cashier.screen.name(), "sign_in");
    assert!(h.cashier.notice.clone().unwrap().is_error);
    assert!(h.cashier.typeahead.is_empty());
    let sign_ins = |h: &Harness| {
        h.commands
            .iter()
            .filter(|c| matches!(c, Command::SignIn { .. }))
            .count()
    };
    assert_eq!(sign_ins(&h), 1);
    // The PIN field has the focus again, the cashier id is kept.
    assert_eq!(
        h.other_effects.last(),
        Some(&Effect::Focus(lanepay_ui::view::PIN_FIELD))
    );
    // The right PIN, then the float and two scans typed before any answer came.
    h.hold_replies();
    typed(&mut h, "1234");
    typed(&mut h, "200");
    // A second Enter on the PIN does not sign in twice.
    assert_eq!(sign_ins(&h), 2);
    typed(&mut h, "6901234567892");
    typed(&mut h, "6930000000011");
    h.release();
    assert_eq!(h.cashier.screen, Screen::Sale);
    assert_eq!(h.cashier.shift.opening_float, "200.00");
    assert_eq!(h.cashier.cart.lines.len(), 2);
    assert_eq!(h.cashier.cart.total, "16.40");
    assert!(h.cashier.typeahead.is_empty());
    assert_eq!(h.cashier.changing_screen, None);

    // Part payment: the cash screen comes back, not the sale screen the keys were typed for.
    // A code typed ahead for the next sale must not be taken as cash.
    h.send(Message::Key(Key::F(5)));
    h.hold_replies();
    typed(&mut h, "10");
    typed(&mut h, "4011");
    h.release();
    assert_eq!(h.cashier.screen.name(), "cash");
    assert!(h.cashier.typeahead.is_empty());
    let tenders = h
        .commands
        .iter()
        .filter(|c| matches!(c, Command::TenderCash { .. }))
        .count();
    assert_eq!(tenders, 1, "{:?}", h.commands);
    assert_eq!(h.cashier.cart.remaining, "6.40");
    // Backspace typed ahead is kept in its place: `7⌫6.40` is 6.40.
    h.hold_replies();
    h.send(Message::Stray(StrayKey::Text("7".into())));
    h.send(Message::Stray(StrayKey::Backspace));
    typed(&mut h, "6.40");
    h.release();
    assert_eq!(h.cashier.screen, Screen::Sale);
    assert_eq!(h.cashier.last_sale.clone().unwrap().change, "0.00");
}

#[test]
fn open_shift_screen_refuses_a_bad_float_and_opens_with_a_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path());
    sign_in(&mut h, "1234");
    h.send(Message::Shift(ShiftMessage::Float("abc".into())));
    h.send(Message::Shift(ShiftMessage::Open));
    assert_eq!(h.cashier.screen.name(), "open_shift");
    assert!(
        h.cashier
            .notice
            .as_ref()
            .unwrap()
            .text
            .contains("opening float")
    );
    h.send(Message::Shift(ShiftMessage::Float("200.00".into())));
    h.send(Message::Shift(ShiftMessage::Open));
    assert_eq!(h.cashier.screen, Screen::Sale);
    assert_eq!(h.cashier.shift.opening_float, "200.00");
    assert_eq!(h.cashier.shift.state, "open");
}

#[test]
fn sale_screen_scans_edits_lines_with_f_keys_and_reports_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path());
    selling(&mut h);
    scan(&mut h, "6901234567892");
    scan(&mut h, "6930000000011");
    assert_eq!(h.cashier.cart.lines.len(), 2);
    assert_eq!(h.cashier.cart.total, "16.40");
    assert!(
        h.cashier.input.is_empty(),
        "the field is cleared after a scan"
    );
    // F2: the number typed becomes the quantity of the selected (last) line.
    h.send(Message::Sale(SaleMessage::Input("3".into())));
    h.send(Message::Sale(SaleMessage::Key(Key::F(2))));
    assert_eq!(h.cashier.cart.lines[1].quantity, "3");
    assert_eq!(h.cashier.cart.total, "42.20");
    // F3 on line 1 after selecting it: 10 % off the cola.
    h.send(Message::Sale(SaleMessage::SelectLine(1)));
    h.send(Message::Sale(SaleMessage::Input("10%".into())));
    h.send(Message::Key(Key::F(3)));
    assert_eq!(h.cashier.cart.lines[0].discount, "0.35");
    assert_eq!(h.cashier.cart.total, "41.85");
    // F4 voids the selected line.
    h.send(Message::Key(Key::F(4)));
    assert_eq!(h.cashier.cart.lines.len(), 1);
    assert_eq!(h.cashier.cart.total, "38.70");
    // An unknown code: the cart stays, the cashier reads why.
    scan(&mut h, "6901234567893");
    assert_eq!(h.cashier.cart.lines.len(), 1);
    let notice = h.cashier.notice.clone().unwrap();
    assert!(notice.is_error);
    assert!(notice.text.contains("6901234567893"), "{}", notice.text);
    // F6 opens the wallet-code screen; Esc with nothing started goes back.
    h.send(Message::Key(Key::F(6)));
    assert_eq!(h.cashier.screen.name(), "payment");
    h.send(Message::Key(Key::Escape));
    assert_eq!(h.cashier.screen, Screen::Sale);
    // F12 voids the sale.
    h.send(Message::Key(Key::F(12)));
    assert!(h.cashier.cart.lines.is_empty());
    // Every sale-screen message keeps the scan field focused.
    assert!(h.other_effects.contains(&Effect::FocusScan));
}

#[test]
fn cash_screen_shows_change_as_typed_and_completes_the_sale() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path());
    selling(&mut h);
    scan(&mut h, "6901234567892");
    scan(&mut h, "6901234567892");
    scan(&mut h, "6930000000011");
    h.send(Message::Key(Key::F(5)));
    assert_eq!(h.cashier.screen.name(), "cash");
    h.send(Message::Cash(CashMessage::Given("10".into())));
    assert_eq!(
        h.cashier.cash_change("10"),
        Some(Err(lanepay_checkout::Money::from_fen(990)))
    );
    h.send(Message::Cash(CashMessage::Given("50".into())));
    assert_eq!(
        h.cashier.cash_change("50"),
        Some(Ok(lanepay_checkout::Money::from_fen(3010)))
    );
    // Esc goes back to the sale without paying; F5 returns.
    h.send(Message::Key(Key::Escape));
    assert_eq!(h.cashier.screen, Screen::Sale);
    h.send(Message::Key(Key::F(5)));
    h.send(Message::Cash(CashMessage::Given("50".into())));
    h.send(Message::Cash(CashMessage::Submit));
    assert_eq!(h.cashier.screen, Screen::Sale);
    let sale = h.cashier.last_sale.clone().unwrap();
    assert_eq!(sale.change, "30.10");
    assert_eq!(sale.receipt_no, "T0001-000001");
    assert!(h.cashier.cart.lines.is_empty());
    assert!(h.cashier.notice.as_ref().unwrap().text.contains("¥30.10"));
    // In Chinese the same amount reads "30.10 元".
    h.send(Message::ToggleLocale);
    assert_eq!(h.cashier.locale, Locale::ZhCn);
    assert_eq!(h.cashier.money(&sale.change), "30.10 元");
}

/// The lane's own refusals, as the real lane words them, read in Chinese on a Chinese screen
/// (and in English again after F11): the screen's table follows the lane's wording.
#[test]
fn the_lanes_refusals_are_said_in_the_screens_language() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path());
    h.send(Message::ToggleLocale);
    assert_eq!(h.cashier.locale, Locale::ZhCn);
    let notice = |h: &Harness| h.cashier.notice.clone().unwrap().text;
    sign_in(&mut h, "9999");
    assert_eq!(notice(&h), "收银员编号或密码错误；请检查后重试");
    h.send(Message::Key(Key::F(11)));
    assert_eq!(
        notice(&h),
        "cashier id or PIN is wrong; check them and try again"
    );
    h.send(Message::Key(Key::F(11)));
    sign_in(&mut h, "1234");
    h.send(Message::Shift(ShiftMessage::Float("abc".into())));
    h.send(Message::Shift(ShiftMessage::Open));
    assert_eq!(
        notice(&h),
        "备用金：`abc` 不是金额：请以元为单位，最多两位小数，例如 12.50"
    );
    h.send(Message::Shift(ShiftMessage::Float("200".into())));
    h.send(Message::Shift(ShiftMessage::Open));
    scan(&mut h, "6930011");
    assert_eq!(
        notice(&h),
        "未加入 6930011: 6930011 不在商品目录中：请手工输入价格，或把商品放在一边"
    );
    scan(&mut h, "6901234567893");
    assert!(
        notice(&h).ends_with("校验位不符（误读）：请重新扫描"),
        "{}",
        notice(&h)
    );
    // A discount larger than the line: refused by the checkout core.
    scan(&mut h, "6901234567892");
    h.send(Message::Sale(SaleMessage::Input("999".into())));
    h.send(Message::Key(Key::F(3)));
    assert_eq!(notice(&h), "折扣大于它所适用的金额");
}

#[test]
fn refund_screen_finds_by_receipt_qr_and_refunds_chosen_lines() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path());
    selling(&mut h);
    scan(&mut h, "6901234567892");
    scan(&mut h, "6930000000011");
    h.send(Message::Key(Key::F(5)));
    h.send(Message::Cash(CashMessage::Submit)); // exact amount
    assert_eq!(h.cashier.last_sale.as_ref().unwrap().change, "0.00");
    // A receipt QR scanned at the sale screen opens the refund with the sale found.
    scan(&mut h, "LANEPAY-RECEIPT:T0001-000001");
    let Screen::Refund(form) = &h.cashier.screen else {
        panic!("{:?}", h.cashier.screen)
    };
    assert_eq!(form.sale.as_ref().unwrap().refundable, "16.40");
    // Nothing chosen: the cashier is told what to do.
    h.send(Message::Refund(RefundMessage::Submit));
    assert!(
        h.cashier
            .notice
            .as_ref()
            .unwrap()
            .text
            .contains("choose the lines")
    );
    h.send(Message::Refund(RefundMessage::ToggleLine(2)));
    h.send(Message::Refund(RefundMessage::Submit));
    assert_eq!(h.cashier.screen, Screen::Sale);
    let notice = h.cashier.notice.clone().unwrap();
    assert!(!notice.is_error, "{}", notice.text);
    assert!(notice.text.contains("¥12.90"), "{}", notice.text);
    // F10 with a receipt number typed; an unknown one says so.
    h.send(Message::Sale(SaleMessage::Input("T0001-999999".into())));
    h.send(Message::Key(Key::F(10)));
    assert!(
        h.cashier
            .notice
            .as_ref()
            .unwrap()
            .text
            .contains("no sale with receipt number")
    );
    h.send(Message::Refund(RefundMessage::ReceiptNo(
        "T0001-000001".into(),
    )));
    h.send(Message::Refund(RefundMessage::Find));
    let Screen::Refund(form) = &h.cashier.screen else {
        panic!()
    };
    assert_eq!(form.sale.as_ref().unwrap().refundable, "3.50");
    // By amount.
    h.send(Message::Refund(RefundMessage::Amount("1.00".into())));
    h.send(Message::Refund(RefundMessage::Submit));
    assert!(h.cashier.notice.as_ref().unwrap().text.contains("¥1.00"));
}

#[test]
fn close_shift_screen_shows_expected_and_the_z_report() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path());
    selling(&mut h);
    scan(&mut h, "6930000000011");
    // A sale in progress blocks closing.
    h.send(Message::Shift(ShiftMessage::ShowCloseForm));
    assert_eq!(h.cashier.screen, Screen::Sale);
    h.send(Message::Key(Key::F(5)));
    h.send(Message::Cash(CashMessage::Given("20".into())));
    h.send(Message::Cash(CashMessage::Submit));
    h.send(Message::Shift(ShiftMessage::XReport));
    let Screen::Report(x) = &h.cashier.screen else {
        panic!("{:?}", h.cashier.screen)
    };
    assert_eq!(x.expected, "212.90");
    assert!(x.report_lines[0].starts_with("X REPORT"));
    h.send(Message::Key(Key::Escape));
    h.send(Message::Shift(ShiftMessage::ShowCloseForm));
    assert_eq!(h.cashier.screen.name(), "close_shift");
    assert_eq!(h.cashier.shift.expected, "212.90");
    h.send(Message::Shift(ShiftMessage::Counted("213.00".into())));
    h.send(Message::Shift(ShiftMessage::Close));
    let Screen::Report(z) = &h.cashier.screen else {
        panic!("{:?}", h.cashier.screen)
    };
    assert_eq!(z.difference.as_deref(), Some("0.10"));
    assert!(z.report_lines[0].starts_with("Z REPORT"));
    // On screen, the report in the screen's language.
    let z = z.clone();
    h.send(Message::ToggleLocale);
    let rows = h.cashier.report_rows(&z);
    for row in [
        ("销售笔数", "1"),
        ("现金", "12.90 元"),
        ("备用金", "200.00 元"),
        ("应有", "212.90 元"),
        ("实点", "213.00 元"),
        ("差额", "0.10 元"),
    ] {
        assert!(
            rows.contains(&(row.0.to_string(), row.1.to_string())),
            "{row:?} not in {rows:?}"
        );
    }
    h.send(Message::ToggleLocale);
    // F9 prints the Z report: the lane sends its lines to the devices and the screen stays.
    h.send(Message::Key(Key::F(9)));
    assert_eq!(h.cashier.screen.name(), "report");
    let notice = h.cashier.notice.clone().unwrap();
    assert!(!notice.is_error, "{}", notice.text);
    assert!(notice.text.contains("printer"), "{}", notice.text);
    // Esc after the Z report: no open shift, so the next step is opening one.
    h.send(Message::Key(Key::Escape));
    assert_eq!(h.cashier.screen.name(), "open_shift");
}

#[test]
fn status_bar_state_follows_sync_and_device_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path());
    h.send(Message::Lane(Event::SyncStatus(
        lanepay_agent::api::SyncStatusView {
            online: true,
            backlog: 7,
            clock_skew_ms: Some(-90_000),
            ..Default::default()
        },
    )));
    assert!(h.cashier.sync.online);
    assert_eq!(h.cashier.skew_warning_ms(), Some(-90_000));
    assert_eq!(h.cashier.sync_problem_line(), None);
    // The uplink's raw reason is not the cashier's business; what to do is.
    h.send(Message::Lane(Event::SyncStatus(
        lanepay_agent::api::SyncStatusView {
            online: false,
            problem: Some(
                "cannot reach the gateway: IO error: Connection refused (os error 111)".into(),
            ),
            ..Default::default()
        },
    )));
    assert_eq!(
        h.cashier.sync_problem_line(),
        Some(
            "no network: keep selling (cash, cards within the offline limit, offline QR); everything is sent when it is back"
        )
    );
    // A refused entry is not a network problem: the cashier is told to call support.
    h.send(Message::Lane(Event::SyncStatus(
        lanepay_agent::api::SyncStatusView {
            online: false,
            problem: Some("the gateway refused entry 12: bad signature".into()),
            problem_kind: "refused".into(),
            ..Default::default()
        },
    )));
    assert_eq!(
        h.cashier.sync_problem_line(),
        Some("the gateway refuses some of this lane's records: keep selling and call support")
    );
    h.send(Message::Lane(Event::DeviceStatus(
        lanepay_agent::api::DeviceStatusView {
            device: "printer".into(),
            state: "warning".into(),
            detail: Some("paper out".into()),
        },
    )));
    assert_eq!(h.cashier.devices["printer"].state, "warning");
    h.send(Message::Tick(START_MS + 5_000));
    assert_eq!(h.cashier.now_ms, START_MS + 5_000);
    h.send(Message::Key(Key::F(11)));
    assert_eq!(h.cashier.locale, Locale::ZhCn);
}

#[test]
fn device_panel_customer_actions_go_out_as_effects_and_their_outcome_is_shown() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path());
    selling(&mut h);
    let action = CustomerAction::WalletCode(WalletOutcome::ConfirmsLate);
    h.send(Message::Customer(action.clone()));
    assert_eq!(h.other_effects.last(), Some(&Effect::Customer(action)));
    h.send(Message::CustomerDone(Err(
        "no sale in progress: scan a product first".into(),
    )));
    assert_eq!(
        h.cashier.panel_status,
        Some((false, "no sale in progress: scan a product first".into()))
    );
    // A new action clears the last outcome until its own arrives.
    h.send(Message::Customer(CustomerAction::TapCard));
    assert_eq!(h.cashier.panel_status, None);
    h.send(Message::CustomerDone(Ok(
        "test card tapped: payment paid".into()
    )));
    assert_eq!(
        h.cashier.panel_status,
        Some((true, "test card tapped: payment paid".into()))
    );
    // The panel can take the store's network down for the offline demo.
    h.send(Message::Customer(CustomerAction::Network(false)));
    assert_eq!(
        h.other_effects.last(),
        Some(&Effect::Customer(CustomerAction::Network(false)))
    );
    // No dynamic QR on the sale screen: the phone has nothing to pay.
    assert_eq!(h.cashier.open_dynamic_qr(), None);
}

fn attempt(method: &str, state: &str, step: &str) -> lanepay_agent::api::PaymentAttemptView {
    lanepay_agent::api::PaymentAttemptView {
        attempt_id: "T0001-000001-1".into(),
        sale_id: "sale-1".into(),
        method: method.into(),
        amount: "3.50".into(),
        state: state.into(),
        step: step.into(),
        qr_text: None,
        deadline_ms: Some(START_MS + 30_000),
        masked_pan: None,
        message: None,
    }
}

fn payment_kind(h: &Harness) -> Option<PayKind> {
    match &h.cashier.screen {
        Screen::Payment(screen) => Some(screen.kind),
        _ => None,
    }
}

#[test]
fn wallet_code_screen_counts_down_says_what_happens_and_cancels() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path());
    selling(&mut h);
    scan(&mut h, "6901234567892");
    h.send(Message::Key(Key::F(6)));
    assert_eq!(payment_kind(&h), Some(PayKind::WalletCode));
    h.send(Message::Payment(PaymentMessage::Input(
        "281234567890123456".into(),
    )));
    h.send(Message::Payment(PaymentMessage::Submit));
    assert_eq!(
        h.commands.last(),
        Some(&Command::PayWalletCode {
            code: "281234567890123456".into()
        })
    );
    // The lane's runtime reports the customer confirming on the phone.
    h.send(Message::Lane(Event::PaymentChanged(attempt(
        "alipay",
        "waiting",
        "waiting for customer to confirm",
    ))));
    assert_eq!(payment_kind(&h), Some(PayKind::WalletCode));
    assert_eq!(h.cashier.payment_seconds_left(), Some(30));
    h.send(Message::Tick(START_MS + 12_500));
    assert_eq!(h.cashier.payment_seconds_left(), Some(18));
    h.send(Message::Tick(START_MS + 31_000));
    assert_eq!(h.cashier.payment_seconds_left(), Some(0));
    assert_eq!(
        h.cashier
            .locale
            .lane_words("waiting for customer to confirm"),
        "waiting for customer to confirm"
    );
    // Esc while the attempt is open asks the lane to cancel; the screen stays until it says.
    h.send(Message::Key(Key::Escape));
    assert_eq!(h.commands.last(), Some(&Command::CancelPayment));
    h.send(Message::Lane(Event::PaymentChanged(attempt(
        "alipay",
        "reversing",
        "reversing",
    ))));
    assert_eq!(payment_kind(&h), Some(PayKind::WalletCode));
    let mut reversed = attempt("alipay", "reversed", "reversed, nothing charged");
    reversed.message = Some("cancelled by the cashier".into());
    h.send(Message::Lane(Event::PaymentChanged(reversed)));
    let notice = h.cashier.notice.clone().unwrap();
    assert!(notice.is_error);
    assert_eq!(notice.text, "cancelled by the cashier — Esc");
    // A final attempt: Esc goes back to the sale, and nothing more is sent.
    let sent = h.commands.len();
    h.send(Message::Key(Key::Escape));
    assert_eq!(h.cashier.screen, Screen::Sale);
    assert_eq!(h.commands.len(), sent);
}

#[test]
fn dynamic_qr_screen_shows_the_qr_until_paid() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path());
    selling(&mut h);
    scan(&mut h, "6901234567892");
    h.send(Message::Key(Key::F(7)));
    assert_eq!(payment_kind(&h), Some(PayKind::DynamicQr));
    h.send(Message::Payment(PaymentMessage::Wallet("wechat")));
    assert_eq!(
        h.commands.last(),
        Some(&Command::StartDynamicQr {
            wallet: "wechat".into()
        })
    );
    let url = "http://127.0.0.1:9/sandbox/pay/T0001-000001-1";
    let mut waiting = attempt(
        "wechat",
        "waiting",
        "waiting for the customer to scan and pay",
    );
    waiting.qr_text = Some(url.into());
    h.send(Message::Lane(Event::PaymentChanged(waiting)));
    assert_eq!(h.cashier.open_dynamic_qr(), Some(url));
    assert_eq!(
        h.cashier.qr.as_ref().map(|(text, _)| text.as_str()),
        Some(url)
    );
    // A second wallet button while the QR is open does not start another order.
    let sent = h.commands.len();
    h.send(Message::Payment(PaymentMessage::Wallet("alipay")));
    assert_eq!(h.commands.len(), sent);
    let mut paid = attempt("wechat", "paid", "paid");
    paid.qr_text = Some(url.into());
    h.send(Message::Lane(Event::PaymentChanged(paid)));
    assert_eq!(h.cashier.screen, Screen::Sale);
    assert!(h.cashier.qr.is_none());
    assert_eq!(
        h.cashier.notice.clone().unwrap().text,
        "wechat ¥3.50 — paid"
    );
}

#[test]
fn card_screen_shows_the_reader_and_the_offline_room_left() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path());
    selling(&mut h);
    scan(&mut h, "6901234567892");
    h.send(Message::Lane(Event::DeviceStatus(
        lanepay_agent::api::DeviceStatusView {
            device: "nfc".into(),
            state: "ready".into(),
            detail: Some("PN532 firmware 1.6".into()),
        },
    )));
    h.send(Message::Lane(Event::SyncStatus(
        lanepay_agent::api::SyncStatusView {
            online: false,
            offline_card_room: "500.00".into(),
            offline_payments_left: 199,
            ..Default::default()
        },
    )));
    h.send(Message::Key(Key::F(8)));
    assert_eq!(payment_kind(&h), Some(PayKind::Card));
    assert_eq!(h.commands.last(), Some(&Command::PayCard));
    assert_eq!(
        h.cashier.card_reader_line(),
        "Card reader: ready (PN532 firmware 1.6)"
    );
    assert_eq!(
        h.cashier.offline_room_line().as_deref(),
        Some("Offline card limit left: up to ¥500.00, 199 more payments")
    );
    h.send(Message::Key(Key::F(11)));
    assert_eq!(
        h.cashier.offline_room_line().as_deref(),
        Some("离线刷卡剩余额度: 单笔最多 500.00 元, 199 笔")
    );
    assert_eq!(h.cashier.locale.lane_words("tap card"), "请顾客挥卡");
    // Full: the cashier is told what to do instead.
    h.send(Message::Lane(Event::SyncStatus(
        lanepay_agent::api::SyncStatusView {
            online: false,
            offline_card_room: "0.00".into(),
            offline_payments_left: 0,
            ..Default::default()
        },
    )));
    assert_eq!(
        h.cashier.offline_room_line().as_deref(),
        Some("离线刷卡额度已满：请收现金或等网络恢复")
    );
    // Online, the card is authorised at once: no offline line.
    h.send(Message::Lane(Event::SyncStatus(
        lanepay_agent::api::SyncStatusView {
            online: true,
            offline_card_room: "500.00".into(),
            offline_payments_left: 200,
            ..Default::default()
        },
    )));
    assert_eq!(h.cashier.offline_room_line(), None);
    // The card is stored offline: the sale screen comes back.
    let mut stored = attempt("card", "stored", "stored offline, to forward");
    stored.masked_pan = Some("6222 •••• •••• 0017".into());
    h.send(Message::Lane(Event::PaymentChanged(stored)));
    assert_eq!(h.cashier.screen, Screen::Sale);
}

#[test]
fn offline_qr_screen_takes_the_scanned_confirmation() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path());
    selling(&mut h);
    scan(&mut h, "6901234567892");
    h.send(Message::Key(Key::F(9)));
    assert_eq!(payment_kind(&h), Some(PayKind::OfflineQr));
    assert_eq!(h.commands.last(), Some(&Command::StartOfflineQr));
    // An empty Enter sends nothing.
    let sent = h.commands.len();
    h.send(Message::Payment(PaymentMessage::Submit));
    assert_eq!(h.commands.len(), sent);
    h.send(Message::Payment(PaymentMessage::Input(
        "LPC1.T0001-000001-1.abcdef".into(),
    )));
    h.send(Message::Payment(PaymentMessage::Submit));
    assert_eq!(
        h.commands.last(),
        Some(&Command::ScanOfflineConfirmation {
            text: "LPC1.T0001-000001-1.abcdef".into()
        })
    );
}

#[test]
fn the_notice_on_screen_is_said_again_in_the_other_language() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path());
    selling(&mut h);
    scan(&mut h, "6901234567892");
    h.send(Message::Key(Key::F(5)));
    h.send(Message::Cash(CashMessage::Given("10".into())));
    h.send(Message::Cash(CashMessage::Submit));
    assert_eq!(
        h.cashier.notice.clone().unwrap().text,
        "Sale complete — Change due ¥6.50"
    );
    h.send(Message::Key(Key::F(11)));
    assert_eq!(
        h.cashier.notice.clone().unwrap().text,
        "交易完成 — 找零 6.50 元"
    );
    // The next sale's first item clears the last sale's "done" line.
    scan(&mut h, "6901234567892");
    assert_eq!(h.cashier.notice, None);
    // The lane's refusal of a scan: its words are kept, the screen's own are translated.
    scan(&mut h, "0000000000000");
    let notice = h.cashier.notice.clone().unwrap();
    assert!(notice.is_error);
    assert!(
        notice.text.starts_with("未加入 0000000000000: "),
        "{}",
        notice.text
    );
}

#[test]
fn the_lane_keeps_the_last_sync_status_for_a_screen_that_starts_later() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(dir.path());
    assert_eq!(h.handle.last_sync_status(), None);
    let status = lanepay_agent::api::SyncStatusView {
        online: true,
        live: true,
        backlog: 3,
        ..Default::default()
    };
    h.handle.publish(Event::SyncStatus(status.clone()));
    assert_eq!(h.handle.last_sync_status(), Some(status));
}
