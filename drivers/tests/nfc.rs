//! The NFC driver against the PN532 emulator over real pseudo-terminals: real libnfc (through
//! nfc1) opens the emulator, selects the virtual cards and reads them with the EMV sequence.
#![allow(clippy::unwrap_used)]
#![cfg(feature = "emulator")]

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use lanepay_drivers::ErrorKind;
use lanepay_drivers::emulator::nfc::{Pn532Emulator, TEST_CARD_NAMES, VirtualCard};
use lanepay_drivers::nfc::{CardExpiry, CardReader, Pn532Reader, TransactionContext};

/// Generous bound for anything that should take milliseconds; only reached on failure.
const DEADLINE: Duration = Duration::from_secs(5);

/// libnfc's first initialisation is not safe to race, so the tests take turns.
static LIBNFC: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    LIBNFC
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn transaction() -> TransactionContext {
    TransactionContext {
        amount_fen: 1_250,
        currency_code: 156,
        country_code: 156,
        date: (2026, 11, 22),
        unpredictable_number: [0x12, 0x34, 0x56, 0x78],
    }
}

fn open(emulator: &Pn532Emulator) -> Pn532Reader {
    Pn532Reader::open(&emulator.connstring()).unwrap()
}

#[test]
fn real_libnfc_opens_the_emulator_and_reads_the_default_card() {
    let _turn = serial();
    let emulator = Pn532Emulator::spawn().unwrap();
    let mut reader = open(&emulator);
    let information = reader.device_information().unwrap().to_string();
    assert!(information.contains("PN532 v1.6"), "{information}");

    emulator.run_command("tap").unwrap();
    let detected = reader.wait_for_card(DEADLINE).unwrap();
    assert_eq!(detected.uid, VirtualCard::default_test_card().uid);
    assert_eq!(detected.sak & 0x20, 0x20);

    let card = reader.read_card(&transaction()).unwrap();
    assert_eq!(card.pan.expose(), "4761739001010010");
    assert_eq!(
        card.expiry,
        CardExpiry {
            year: 2029,
            month: 12
        }
    );
    assert_eq!(card.cardholder_name.as_deref(), Some("TEST/CARDHOLDER"));
    assert_eq!(card.application_label.as_deref(), Some("VISA"));
    assert_eq!(card.aid_hex(), "A0000000031010");
    assert_eq!(card.pan_sequence_number, Some(1));
    let track2 = card.track2.as_ref().unwrap();
    assert!(track2.expose().starts_with("4761739001010010D2912"));
    assert_eq!(track2.service_code(), Some("201"));

    // Nothing the driver returns shows the PAN or track 2 in Debug or Display.
    let shown = format!(
        "{card:?} {card:#?} {detected:?} {reader:?} {} {}",
        card.pan, card.expiry
    );
    assert!(!shown.contains("4761739001010010"), "{shown}");
    assert!(!shown.contains("2011234500000"), "{shown}");
    assert!(shown.contains("476173******0010"), "{shown}");

    // libnfc really drove the chip through the frame protocol.
    let seen = emulator.commands_seen();
    for code in [0x00, 0x02, 0x14, 0x32, 0x4A, 0x40] {
        assert!(
            seen.contains(&code),
            "command {code:02X} not seen in {seen:02X?}"
        );
    }
}

#[test]
fn no_card_is_a_timeout() {
    let _turn = serial();
    let emulator = Pn532Emulator::spawn().unwrap();
    let mut reader = open(&emulator);
    let error = reader
        .wait_for_card(Duration::from_millis(300))
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Timeout, "{error}");
    // And a read with nothing selected is refused, not attempted.
    let error = reader.read_card(&transaction()).unwrap_err();
    assert_eq!(error.kind, ErrorKind::Other, "{error}");
}

#[test]
fn removal_is_seen() {
    let _turn = serial();
    let emulator = Pn532Emulator::spawn().unwrap();
    let mut reader = open(&emulator);
    emulator.tap(VirtualCard::default_test_card());
    reader.wait_for_card(DEADLINE).unwrap();
    assert!(reader.card_present().unwrap());
    let error = reader
        .wait_for_removal(Duration::from_millis(200))
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Timeout);
    emulator.run_command("remove").unwrap();
    reader.wait_for_removal(DEADLINE).unwrap();
    assert!(!reader.card_present().unwrap());
    assert_eq!(emulator.card_in_field(), None);
}

#[test]
fn several_cards_in_sequence() {
    let _turn = serial();
    let emulator = Pn532Emulator::spawn().unwrap();
    let mut reader = open(&emulator);
    for name in ["visa", "mastercard", "unionpay", "visa"] {
        let expected = VirtualCard::test_card(name).unwrap();
        emulator.run_command(&format!("tap {name}")).unwrap();
        let detected = reader.wait_for_card(DEADLINE).unwrap();
        assert_eq!(detected.uid, expected.uid, "{name}");
        let card = reader.read_card(&transaction()).unwrap();
        assert_eq!(card.pan.expose(), expected.pan, "{name}");
        assert_eq!(card.expiry, expected.expiry, "{name}");
        assert_eq!(card.aid, expected.aid, "{name}");
        assert_eq!(card.cardholder_name, expected.cardholder_name, "{name}");
        emulator.remove();
        reader.wait_for_removal(DEADLINE).unwrap();
    }
}

#[test]
fn failing_cards_are_protocol_errors_and_the_reader_recovers() {
    let _turn = serial();
    let emulator = Pn532Emulator::spawn().unwrap();
    let mut reader = open(&emulator);
    for name in ["failing", "garbage"] {
        emulator.run_command(&format!("tap {name}")).unwrap();
        reader.wait_for_card(DEADLINE).unwrap();
        let error = reader.read_card(&transaction()).unwrap_err();
        assert_eq!(error.kind, ErrorKind::Protocol, "{name}: {error}");
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains("4000000000000002"), "{shown}");
        emulator.remove();
        reader.wait_for_removal(DEADLINE).unwrap();
    }
    // The next customer's card reads fine on the same reader.
    emulator.tap(VirtualCard::default_test_card());
    reader.wait_for_card(DEADLINE).unwrap();
    assert_eq!(
        reader.read_card(&transaction()).unwrap().pan.last_four(),
        "0010"
    );
}

#[test]
fn reader_reopens_the_same_port_and_reports_a_vanished_device() {
    let _turn = serial();
    let emulator = Pn532Emulator::spawn().unwrap();
    {
        // Open, use and close: libnfc powers the chip down on close.
        let mut reader = open(&emulator);
        emulator.tap(VirtualCard::default_test_card());
        reader.wait_for_card(DEADLINE).unwrap();
    }
    // A second open of the same port wakes the chip up again.
    let mut reader = open(&emulator);
    reader.wait_for_card(DEADLINE).unwrap();
    reader.read_card(&transaction()).unwrap();

    drop(emulator);
    let error = reader
        .wait_for_card(Duration::from_millis(500))
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Disconnected, "{error}");
    assert!(matches!(
        reader.status(),
        lanepay_drivers::DeviceStatus::Unavailable {
            kind: ErrorKind::Disconnected,
            ..
        }
    ));
}

#[test]
fn emulator_command_language() {
    let emulator = Pn532Emulator::spawn().unwrap();
    assert_eq!(emulator.run_command("tap").unwrap(), "tapped visa");
    assert_eq!(emulator.card_in_field().as_deref(), Some("visa"));
    assert_eq!(
        emulator.run_command("  tap   unionpay ").unwrap(),
        "tapped unionpay"
    );
    assert!(
        emulator
            .run_command("tap nosuchcard")
            .unwrap_err()
            .contains("mastercard")
    );
    assert!(emulator.run_command("jump").is_err());
    assert_eq!(emulator.run_command("remove").unwrap(), "removed");
    assert_eq!(emulator.card_in_field(), None);
    for name in TEST_CARD_NAMES {
        assert!(VirtualCard::test_card(name).is_some(), "{name}");
    }
}

#[test]
fn unplug_and_replug_at_a_stable_path_needs_no_restart() {
    let _turn = serial();
    let directory = tempfile::tempdir().unwrap();
    let link = directory.path().join("pn532");
    let emulator = Pn532Emulator::spawn_with_link(Some(&link)).unwrap();
    let mut reader = Pn532Reader::open(&emulator.connstring()).unwrap();
    emulator.tap(VirtualCard::default_test_card());
    reader.wait_for_card(DEADLINE).unwrap();

    // Unplug: the port disappears under the open reader.
    drop(emulator);
    let error = reader.wait_for_card(DEADLINE).unwrap_err();
    assert_eq!(error.kind, ErrorKind::Disconnected, "{error}");
    let error = reader.wait_for_card(DEADLINE).unwrap_err();
    assert_eq!(error.kind, ErrorKind::Disconnected, "{error}");

    // Replug at the same path: the same reader object reopens it on its next call.
    let emulator = Pn532Emulator::spawn_with_link(Some(&link)).unwrap();
    emulator.run_command("tap mastercard").unwrap();
    reader.wait_for_card(DEADLINE).unwrap();
    let card = reader.read_card(&transaction()).unwrap();
    assert_eq!(card.pan.last_four(), "0434");
    assert!(matches!(
        reader.status(),
        lanepay_drivers::DeviceStatus::Ready
    ));
}

#[test]
fn a_configured_card_reads_back_and_a_bad_check_digit_is_refused() {
    let _turn = serial();
    let emulator = Pn532Emulator::spawn().unwrap();
    let mut reader = open(&emulator);
    let mut card = VirtualCard::default_test_card();
    card.name = "custom".to_string();
    card.pan = "6212345678901232".to_string();
    card.expiry = CardExpiry {
        year: 2031,
        month: 3,
    };
    card.cardholder_name = Some("LI/SI".to_string());
    card.aid = vec![0xA0, 0x00, 0x00, 0x03, 0x33, 0x01, 0x01, 0x02];
    card.label = "UnionPay Credit".to_string();
    emulator.tap(card.clone());
    reader.wait_for_card(DEADLINE).unwrap();
    let data = reader.read_card(&transaction()).unwrap();
    assert_eq!(data.pan.expose(), "6212345678901232");
    assert_eq!(data.expiry, card.expiry);
    assert_eq!(data.cardholder_name.as_deref(), Some("LI/SI"));
    assert_eq!(data.aid_hex(), "A000000333010102");
    assert_eq!(data.application_label.as_deref(), Some("UnionPay Credit"));

    card.pan = "6212345678901233".to_string();
    emulator.tap(card);
    reader.wait_for_card(DEADLINE).unwrap();
    let error = reader.read_card(&transaction()).unwrap_err();
    assert_eq!(error.kind, ErrorKind::Protocol, "{error}");
    assert!(!format!("{error:?}").contains("6212345678901233"));
}
