//! Click- and key-level flows with iced's headless simulator on the real cashier view and a
//! real lane: sign in, open the shift, scan three items, take cash and see the change,
//! refund one line, close the shift. Assertions read the widgets' text.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use iced::keyboard::key::Named;
use iced_test::Simulator;
use lanepay_agent::clock::ManualClock;
use lanepay_ui::app::{Cashier, Message};
use lanepay_ui::testing::Harness;
use lanepay_ui::view;

const START_MS: i64 = 1_795_000_000_000;

/// The CJK font goes into iced's (global) font system once; later simulators only name it.
fn settings() -> iced::Settings {
    static FONT: std::sync::OnceLock<Option<lanepay_ui::fonts::LoadedFont>> =
        std::sync::OnceLock::new();
    static LOADED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let mut settings = iced::Settings::default();
    if let Some(font) = FONT.get_or_init(lanepay_ui::fonts::load_cjk_font) {
        if !LOADED.swap(true, std::sync::atomic::Ordering::SeqCst) {
            settings.fonts.push(font.bytes.clone().into());
        }
        settings.default_font = iced::Font::with_name(font.family);
    }
    settings
}

fn simulator(cashier: &Cashier) -> Simulator<'_, Message> {
    Simulator::with_size(
        settings(),
        iced::Size::new(1280.0, 800.0),
        view::cashier(cashier),
    )
}

/// Interacts with the screen as it is now, then feeds what the widgets produced to `update`.
fn interact(h: &mut Harness, act: impl FnOnce(&mut Simulator<'_, Message>)) {
    let messages: Vec<Message> = {
        let mut ui = simulator(&h.cashier);
        act(&mut ui);
        ui.into_messages().collect()
    };
    for message in messages {
        h.send(message);
    }
}

/// Clicks into the screen's input field, types `text` and presses Enter.
fn type_and_enter(h: &mut Harness, field: &'static str, text: &str) {
    interact(h, |ui| {
        ui.click(iced::widget::Id::new(field)).unwrap();
        ui.typewrite(text);
        ui.tap_key(Named::Enter);
    });
}

fn click(h: &mut Harness, label: &str) {
    interact(h, |ui| {
        ui.click(label)
            .unwrap_or_else(|e| panic!("no `{label}` to click: {e:?}"));
    });
}

fn shows(h: &Harness, text: &str) -> bool {
    simulator(&h.cashier).find(text).is_ok()
}

#[track_caller]
fn assert_shows(h: &Harness, text: &str) {
    assert!(
        shows(h, text),
        "the screen does not show `{text}`; state:\n{}",
        h.cashier.state_text()
    );
}

#[test]
fn a_cashier_day_sign_in_sell_cash_refund_close() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::new(dir.path(), Arc::new(ManualClock::new(START_MS))).unwrap();
    assert_shows(&h, "Sign in");

    type_and_enter(&mut h, view::SCAN_FIELD, "1001");
    type_and_enter(&mut h, view::PIN_FIELD, "1234");
    assert_shows(&h, "Open the shift");
    assert_shows(&h, "Cashier Wang Fang 王芳");

    type_and_enter(&mut h, view::SCAN_FIELD, "200");
    assert_shows(&h, "Ready: scan the first item");
    // Every key is on screen.
    for key in [
        "F1 Help",
        "F2 Quantity",
        "F3 Discount",
        "F4 Void line",
        "F5 Cash",
        "F6 Wallet code",
        "F7 QR code",
        "F8 Card",
        "F9 Offline QR",
        "F10 Refund",
        "F12 Void sale",
        "Enter Confirm",
        "Esc Back",
    ] {
        assert_shows(&h, key);
    }

    // Scanner in keyboard mode: digits and Enter into the always-focused field.
    for code in ["6901234567892", "6901234567892", "6930000000011"] {
        type_and_enter(&mut h, view::SCAN_FIELD, code);
    }
    assert_shows(&h, "1. Cola 330ml");
    // The selected line (the last one scanned) is marked.
    assert_shows(&h, "▶ 2. Wholemeal bread 400g");
    assert_shows(&h, "¥19.90");

    click(&mut h, "F5 Cash");
    assert_shows(&h, "Cash");
    interact(&mut h, |ui| {
        ui.click(iced::widget::Id::new(view::SCAN_FIELD)).unwrap();
        ui.typewrite("50");
    });
    assert_shows(&h, "Change due ¥30.10");
    type_and_enter(&mut h, view::SCAN_FIELD, "");
    assert_shows(&h, "Sale complete T0001-000001 — Change due ¥30.10");

    click(&mut h, "F10 Refund");
    type_and_enter(&mut h, view::SCAN_FIELD, "T0001-000001");
    assert_shows(&h, "☐ 2. Wholemeal bread 400g × 1  ¥12.90");
    click(&mut h, "☐ 2. Wholemeal bread 400g × 1  ¥12.90");
    assert_shows(&h, "☑ 2. Wholemeal bread 400g × 1  ¥12.90");
    click(&mut h, "Enter  Refund selected");
    assert_shows(&h, "Refunded ¥12.90 (cash ¥12.90) — T0001-000001");

    click(&mut h, "Close shift");
    // 200.00 float + 19.90 cash in - 12.90 cash out.
    assert_shows(&h, "Expected ¥207.00");
    type_and_enter(&mut h, view::SCAN_FIELD, "206.50");
    assert_shows(&h, "Difference: -¥0.50 T0001-S00001");
    // The Z report, row by row.
    assert_shows(&h, "Z report (shift closed)");
    for shown in [
        "Expected",
        "¥207.00",
        "Counted",
        "¥206.50",
        "Difference",
        "-¥0.50",
    ] {
        assert_shows(&h, shown);
    }

    // The same screen in Chinese.
    click(&mut h, "F11 中文");
    for shown in [
        "Z 报表（已交班）",
        "差额",
        "-0.50 元",
        "现金退款",
        "12.90 元",
    ] {
        assert_shows(&h, shown);
    }
}
