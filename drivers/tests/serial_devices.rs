//! The serial drivers (scanner, pole display, receipt printer) against their emulators over
//! real pseudo-terminals: every byte goes through the kernel's tty layer, as with hardware.
//! Unplug/replug is simulated with a symlink the test controls: the driver opens the link, the
//! emulator is dropped (its pseudo-terminal closes: the driver sees a hang-up), and a new
//! emulator is created and the link pointed at its new pseudo-terminal.

#![cfg(feature = "emulator")]
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too

use std::sync::mpsc;
use std::time::{Duration, Instant};

use lanepay_drivers::display::{
    CustomerDisplay, DisplayLabels, SerialDisplay, SerialDisplaySettings,
};
use lanepay_drivers::emulator::display::{DisplayEmulator, DisplayEmulatorSettings, DisplayEvent};
use lanepay_drivers::emulator::printer::{
    PrinterEmulator, PrinterEmulatorCommand, PrinterEmulatorSettings, PrinterEvent,
};
use lanepay_drivers::emulator::scanner::{
    ScannerCommand, ScannerEmulator, ScannerEmulatorSettings,
};
use lanepay_drivers::printer::{
    PrinterCondition, RECEIPT_COLUMNS_58MM, ReceiptJob, ReceiptPrinter, SerialPrinter,
    SerialPrinterSettings,
};
use lanepay_drivers::scanner::{
    Scanner, ScannerEvent, ScannerFormat, SerialScanner, SerialScannerSettings, Symbology,
    Terminator, spawn_scanner,
};
use lanepay_drivers::serial::{SerialSettings, SupervisedPort};
use lanepay_drivers::text::TextEncoding;
use lanepay_drivers::{DeviceStatus, ErrorKind};

/// Generous bound for anything to arrive over a pty on a loaded 2-core machine; tests wait
/// for a condition and only hit this when something is broken.
const DEADLINE: Duration = Duration::from_secs(10);

fn scanner_format(terminator: Terminator, prefix: &str, aim_ids: bool) -> ScannerFormat {
    ScannerFormat {
        terminator,
        prefix: prefix.to_owned(),
        aim_ids,
    }
}

fn serial_scanner(path: &str, format: ScannerFormat) -> SerialScanner {
    SerialScanner::new(SerialScannerSettings {
        serial: SerialSettings::new(path, 9600),
        format,
    })
    .unwrap()
}

/// The next event that is not a status change, waiting up to the deadline.
fn next_code_event(scanner: &mut impl Scanner) -> ScannerEvent {
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        match scanner.next_event(Duration::from_millis(200)).unwrap() {
            Some(ScannerEvent::Status { .. }) | None => {}
            Some(event) => return event,
        }
    }
    panic!("no scan event within {DEADLINE:?}");
}

/// Waits for a status event matching `wanted`.
fn wait_for_status(
    scanner: &mut impl Scanner,
    wanted: impl Fn(&DeviceStatus) -> bool,
) -> DeviceStatus {
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        if let Some(ScannerEvent::Status { status }) =
            scanner.next_event(Duration::from_millis(200)).unwrap()
            && wanted(&status)
        {
            return status;
        }
    }
    panic!(
        "status not reached within {DEADLINE:?}; last {:?}",
        scanner.status()
    );
}

fn scanned(code: &str, symbology: Symbology) -> ScannerEvent {
    ScannerEvent::Scanned {
        code: code.to_owned(),
        symbology,
    }
}

#[test]
fn scanner_reads_codes_with_prefix_and_aim_ids_and_rejects_bad_ones_without_losing_sync() {
    let format = scanner_format(Terminator::CrLf, "@", true);
    let (path, mut emulator) = ScannerEmulator::spawn(ScannerEmulatorSettings {
        format: format.clone(),
        link: None,
    })
    .unwrap();
    assert!(path.starts_with("/dev/pts/"), "{path}");
    let mut scanner = serial_scanner(&path, format);

    emulator.scan("4006381333931").unwrap();
    assert_eq!(
        next_code_event(&mut scanner),
        scanned("4006381333931", Symbology::Ean13)
    );

    emulator.scan("96385074").unwrap();
    assert_eq!(
        next_code_event(&mut scanner),
        scanned("96385074", Symbology::Ean8)
    );

    // A bad check digit is a misread, never a code.
    emulator.scan("4006381333932").unwrap();
    assert!(
        matches!(next_code_event(&mut scanner), ScannerEvent::Misread { code, .. } if code == "4006381333932")
    );

    emulator
        .execute(&ScannerCommand::parse("garbage").unwrap())
        .unwrap();
    assert!(matches!(
        next_code_event(&mut scanner),
        ScannerEvent::Rejected { .. }
    ));

    emulator
        .execute(&ScannerCommand::parse("long").unwrap())
        .unwrap();
    assert!(
        matches!(next_code_event(&mut scanner), ScannerEvent::Rejected { reason } if reason.contains("longer"))
    );

    emulator
        .execute(&ScannerCommand::parse("scan-as ]C1 (01)09501101020917").unwrap())
        .unwrap();
    assert_eq!(
        next_code_event(&mut scanner),
        scanned("(01)09501101020917", Symbology::Gs1_128)
    );

    // A WeChat payment code (18 digits) comes through as Code 128.
    emulator.scan("134567890123456789").unwrap();
    assert_eq!(
        next_code_event(&mut scanner),
        scanned("134567890123456789", Symbology::Code128)
    );

    // A frame split across writes (and so across reads) is still one code.
    emulator.send_raw(b"@]Q1LP1:ord").unwrap();
    emulator.send_raw(b"er=42\r").unwrap();
    emulator.send_raw(b"\n").unwrap();
    assert_eq!(
        next_code_event(&mut scanner),
        scanned("LP1:order=42", Symbology::Qr)
    );
}

#[test]
fn scanner_handles_every_terminator() {
    for terminator in [
        Terminator::Cr,
        Terminator::Lf,
        Terminator::CrLf,
        Terminator::Tab,
    ] {
        let format = scanner_format(terminator, "", false);
        let (path, mut emulator) = ScannerEmulator::spawn(ScannerEmulatorSettings {
            format: format.clone(),
            link: None,
        })
        .unwrap();
        let mut scanner = serial_scanner(&path, format);
        emulator.scan("036000291452").unwrap();
        emulator.scan("ABC-abc-123").unwrap();
        assert_eq!(
            next_code_event(&mut scanner),
            scanned("036000291452", Symbology::UpcA),
            "{terminator:?}"
        );
        assert_eq!(
            next_code_event(&mut scanner),
            scanned("ABC-abc-123", Symbology::Unknown),
            "{terminator:?}"
        );
    }
}

#[test]
fn scanner_thread_delivers_events_to_a_channel() {
    let format = scanner_format(Terminator::Cr, "", true);
    let (path, mut emulator) = ScannerEmulator::spawn(ScannerEmulatorSettings {
        format: format.clone(),
        link: None,
    })
    .unwrap();
    let (sender, receiver) = mpsc::channel();
    let thread = spawn_scanner(serial_scanner(&path, format), move |event| {
        let _ = sender.send(event);
    })
    .unwrap();
    emulator.scan("4006381333931").unwrap();
    let deadline = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    loop {
        let event = receiver
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap();
        if let ScannerEvent::Scanned { .. } = event {
            assert_eq!(event, scanned("4006381333931", Symbology::Ean13));
            break;
        }
        seen.push(event);
    }
    assert_eq!(
        seen,
        vec![ScannerEvent::Status {
            status: DeviceStatus::Ready
        }]
    );
    thread.stop();
}

#[test]
fn scanner_unplugged_is_reported_and_reopened_when_it_returns() {
    let directory = tempfile::tempdir().unwrap();
    let link = directory.path().join("scanner");
    let format = scanner_format(Terminator::Cr, "", false);
    let (path, mut emulator) = ScannerEmulator::spawn_linked(format.clone(), &link).unwrap();
    assert_eq!(path, link.to_string_lossy());
    let mut scanner = serial_scanner(&path, format.clone());

    emulator.scan("4006381333931").unwrap();
    assert_eq!(
        next_code_event(&mut scanner),
        scanned("4006381333931", Symbology::Ean13)
    );
    assert_eq!(scanner.status(), DeviceStatus::Ready);

    // Unplug: the pseudo-terminal closes under the driver.
    drop(emulator);
    let status = wait_for_status(&mut scanner, |status| {
        !matches!(status, DeviceStatus::Ready)
    });
    assert!(
        matches!(
            &status,
            DeviceStatus::Unavailable {
                kind: ErrorKind::Disconnected,
                ..
            }
        ),
        "{status:?}"
    );

    // Replug: a new device appears at the same path.
    let (_, mut emulator) = ScannerEmulator::spawn_linked(format, &link).unwrap();
    wait_for_status(&mut scanner, |status| *status == DeviceStatus::Ready);
    emulator.scan("96385074").unwrap();
    assert_eq!(
        next_code_event(&mut scanner),
        scanned("96385074", Symbology::Ean8)
    );
}

#[test]
fn a_scanner_that_is_not_plugged_in_is_reported_not_fatal() {
    let directory = tempfile::tempdir().unwrap();
    let link = directory.path().join("absent");
    let mut scanner = serial_scanner(&link.to_string_lossy(), ScannerFormat::default());
    let status = wait_for_status(&mut scanner, |status| {
        matches!(status, DeviceStatus::Unavailable { .. })
    });
    assert!(
        matches!(&status, DeviceStatus::Unavailable { kind: ErrorKind::Disconnected, reason } if reason.contains("plugged"))
    );
    // Plugged in later: picked up without a restart.
    let (_, mut emulator) = ScannerEmulator::spawn_linked(ScannerFormat::default(), &link).unwrap();
    emulator.scan("4006381333931").unwrap();
    assert_eq!(
        next_code_event(&mut scanner),
        scanned("4006381333931", Symbology::Ean13)
    );
}

#[test]
fn supervised_port_reports_each_status_change_to_its_callback() {
    let directory = tempfile::tempdir().unwrap();
    let link = directory.path().join("port");
    let (path, emulator) = ScannerEmulator::spawn_linked(ScannerFormat::default(), &link).unwrap();
    let (sender, statuses) = mpsc::channel();
    let mut port = SupervisedPort::new("test", SerialSettings::new(path, 9600));
    port.on_status_change(Box::new(move |status| {
        let _ = sender.send(status.clone());
    }));
    port.write_all(b"hello").unwrap();
    assert_eq!(statuses.try_recv(), Ok(DeviceStatus::Ready));

    drop(emulator);
    let error = port.write_all(b"hello").unwrap_err();
    assert_eq!(error.kind, ErrorKind::Disconnected);
    assert!(matches!(
        statuses.try_recv(),
        Ok(DeviceStatus::Unavailable {
            kind: ErrorKind::Disconnected,
            ..
        })
    ));
    // Within the backoff, operations fail fast without touching the device.
    assert_eq!(
        port.write_all(b"hello").unwrap_err().kind,
        ErrorKind::Disconnected
    );

    let (_, _emulator) = ScannerEmulator::spawn_linked(ScannerFormat::default(), &link).unwrap();
    let deadline = Instant::now() + DEADLINE;
    while port.write_all(b"back").is_err() {
        assert!(Instant::now() < deadline, "port not reopened");
        let _ = statuses.recv_timeout(port.time_until_retry());
    }
    let last = statuses.try_iter().last();
    assert_eq!(last, Some(DeviceStatus::Ready));
}

fn serial_display(path: &str, labels: DisplayLabels) -> SerialDisplay {
    SerialDisplay::new(SerialDisplaySettings {
        serial: SerialSettings::new(path, 9600),
        encoding: TextEncoding::Gb18030,
        labels,
    })
}

#[test]
fn display_shows_item_total_and_thank_you_on_its_two_lines() {
    let (events, received) = mpsc::channel();
    let (path, emulator) =
        DisplayEmulator::spawn(DisplayEmulatorSettings::default(), move |event| {
            let _ = events.send(event.clone());
        })
        .unwrap();
    let mut display = serial_display(&path, DisplayLabels::english());

    display
        .show_line_item_and_total("Cola 330ml", "3.50", "12.00")
        .unwrap();
    emulator
        .wait_for_lines("Cola 330ml      3.50", "Total          12.00", DEADLINE)
        .unwrap();

    display
        .show_line_item("Chocolate biscuits with a very long name", "8.90")
        .unwrap();
    emulator
        .wait_for_lines("Chocolate biscuits w", "                8.90", DEADLINE)
        .unwrap();

    display.show_total("20.90").unwrap();
    emulator
        .wait_for_lines("Total", "               20.90", DEADLINE)
        .unwrap();

    display.show_thank_you(Some("79.10")).unwrap();
    emulator
        .wait_for_lines("Thank you", "Change         79.10", DEADLINE)
        .unwrap();

    display.set_brightness(2).unwrap();
    emulator
        .wait_until(DEADLINE, |screen| screen.brightness == 2)
        .unwrap();
    display.clear().unwrap();
    emulator.wait_for_lines("", "", DEADLINE).unwrap();

    // On the wire: initialise, overwrite mode, cursor off, brightness, then positioned lines.
    let wire = emulator.received();
    assert!(
        wire.starts_with(&[0x1B, b'@', 0x1F, 0x01, 0x1F, b'C', 0, 0x1F, b'X', 4]),
        "{wire:02X?}"
    );
    let first_line: Vec<u8> = [&[0x1F, b'$', 1, 1][..], b"Cola 330ml      3.50"].concat();
    assert!(
        wire.windows(first_line.len())
            .any(|window| window == first_line.as_slice())
    );

    // The JSON lines `lanepay emulate display` prints.
    let mut last = None;
    while let Ok(event) = received.try_recv() {
        last = Some(event);
    }
    let Some(DisplayEvent::Screen(screen)) = last else {
        panic!("no screen event")
    };
    let json = serde_json::to_string(&DisplayEvent::Screen(screen)).unwrap();
    assert_eq!(
        json,
        r#"{"event":"screen","lines":["",""],"brightness":2,"cursor":[1,1]}"#
    );
}

#[test]
fn display_shows_chinese_in_gb18030_counting_two_columns_per_hanzi() {
    let (path, emulator) =
        DisplayEmulator::spawn(DisplayEmulatorSettings::default(), |_| {}).unwrap();
    let mut display = serial_display(&path, DisplayLabels::chinese());
    display
        .show_line_item_and_total("可口可乐零度无糖饮料", "3.50", "12.00")
        .unwrap();
    emulator
        .wait_for_lines("可口可乐零度无  3.50", "合计           12.00", DEADLINE)
        .unwrap();
    display.show_thank_you(Some("8.00")).unwrap();
    emulator
        .wait_for_lines("谢谢惠顾", "找零            8.00", DEADLINE)
        .unwrap();
    // "谢" in GB18030 is D0 BB.
    assert!(
        emulator
            .received()
            .windows(2)
            .any(|window| window == [0xD0, 0xBB])
    );
}

#[test]
fn display_replugged_gets_the_current_screen_back() {
    let directory = tempfile::tempdir().unwrap();
    let link = directory.path().join("display");
    let settings = DisplayEmulatorSettings {
        encoding: TextEncoding::Gb18030,
        link: Some(link.clone()),
    };
    let (path, emulator) = DisplayEmulator::spawn(settings.clone(), |_| {}).unwrap();
    let mut display = serial_display(&path, DisplayLabels::english());
    display.show_total("12.00").unwrap();
    emulator
        .wait_for_lines("Total", "               12.00", DEADLINE)
        .unwrap();
    assert_eq!(display.status(), DeviceStatus::Ready);

    drop(emulator);
    let error = display.show_total("15.00").unwrap_err();
    assert_eq!(error.kind, ErrorKind::Disconnected, "{error}");
    assert!(matches!(
        display.status(),
        DeviceStatus::Unavailable {
            kind: ErrorKind::Disconnected,
            ..
        }
    ));

    let (_, emulator) = DisplayEmulator::spawn(settings, |_| {}).unwrap();
    // The lane polls status; once the backoff lets the driver reopen, it redraws the screen.
    let deadline = Instant::now() + DEADLINE;
    while display.status() != DeviceStatus::Ready {
        assert!(Instant::now() < deadline, "display not reopened");
        let _ = emulator.wait_until(Duration::from_millis(50), |_| false);
    }
    emulator
        .wait_for_lines("Total", "               15.00", DEADLINE)
        .unwrap();
}

fn serial_printer(path: &str) -> SerialPrinter {
    SerialPrinter::new(SerialPrinterSettings {
        serial: SerialSettings::new(path, 19200),
        encoding: TextEncoding::Gb18030,
        query_status: true,
    })
}

fn sample_receipt() -> ReceiptJob {
    ReceiptJob {
        title: Some("便利店 Lanepay".to_owned()),
        lines: vec![
            "可口可乐 330ml       x2     7.00".to_owned(),
            "Bread                      5.50".to_owned(),
            "合计 Total                12.50".to_owned(),
            "银联 Card 622588******1234 12.50".to_owned(),
        ],
        qr_payload: Some("https://pay.example/r/T1-000042".to_owned()),
        cut: true,
        kick_drawer: true,
    }
}

#[test]
fn printer_prints_text_qr_cut_and_kicks_the_drawer() {
    let (events, received) = mpsc::channel();
    let (path, emulator) = PrinterEmulator::spawn(
        // 58 mm paper: the sample receipt is laid out to fit, so no line may wrap.
        PrinterEmulatorSettings {
            paper_columns: Some(RECEIPT_COLUMNS_58MM),
            ..Default::default()
        },
        move |event| {
            let _ = events.send(event.clone());
        },
    )
    .unwrap();
    let mut printer = serial_printer(&path);
    assert_eq!(printer.status(), DeviceStatus::Ready);
    printer.print(&sample_receipt()).unwrap();

    let receipt = emulator.wait_for_receipt(1, DEADLINE).unwrap();
    assert_eq!(
        receipt.lines,
        [
            "便利店 Lanepay",
            "可口可乐 330ml       x2     7.00",
            "Bread                      5.50",
            "合计 Total                12.50",
            "银联 Card 622588******1234 12.50",
            "",
        ]
    );
    assert_eq!(receipt.qr_payloads, ["https://pay.example/r/T1-000042"]);
    let state = emulator
        .wait_until(DEADLINE, |state| state.drawer_kicks == 1)
        .unwrap();
    // Status was asked before printing (DLE EOT 1, 2, 4) and once more by status().
    assert_eq!(state.status_queries, 6);

    let events: Vec<PrinterEvent> = received.try_iter().collect();
    assert!(events.contains(&PrinterEvent::Qr {
        payload: "https://pay.example/r/T1-000042".to_owned(),
        model: 2,
        module_dots: 6,
        error_correction: 'M'
    }));
    let json: Vec<String> = events
        .iter()
        .map(|event| serde_json::to_string(event).unwrap())
        .collect();
    assert!(
        json.contains(&r#"{"event":"cut","partial":true}"#.to_owned()),
        "{json:#?}"
    );
    assert!(
        json.contains(&r#"{"event":"drawer_kick","pin":2,"on_ms":50,"off_ms":500}"#.to_owned())
    );
    assert!(json.contains(
        &r#"{"event":"line","text":"便利店 Lanepay","alignment":"center","bold":true,"width":2,"height":2}"#.to_owned()
    ));
}

#[test]
fn printer_reports_paper_out_and_cover_open_and_refuses_to_print() {
    let (path, emulator) = PrinterEmulator::spawn(
        PrinterEmulatorSettings {
            condition: PrinterCondition {
                paper_out: true,
                ..Default::default()
            },
            ..Default::default()
        },
        |_| {},
    )
    .unwrap();
    let mut printer = serial_printer(&path);
    assert!(
        matches!(printer.status(), DeviceStatus::Unavailable { kind: ErrorKind::NeedsAttention, reason } if reason.contains("paper")),
    );
    let error = printer.print(&sample_receipt()).unwrap_err();
    assert_eq!(error.kind, ErrorKind::NeedsAttention);

    emulator.execute(PrinterEmulatorCommand::parse("cover-open").unwrap());
    assert!(
        matches!(printer.status(), DeviceStatus::Unavailable { kind: ErrorKind::NeedsAttention, reason } if reason.contains("cover")),
    );

    emulator.set_condition(PrinterCondition {
        paper_near_end: true,
        ..Default::default()
    });
    assert!(
        matches!(printer.status(), DeviceStatus::Warning(reason) if reason.contains("paper low"))
    );
    printer.print(&sample_receipt()).unwrap();
    let receipt = emulator.wait_for_receipt(1, DEADLINE).unwrap();
    assert_eq!(receipt.qr_payloads.len(), 1);
    // Nothing was printed while the printer was offline.
    assert_eq!(emulator.state().receipts.len(), 1);

    emulator.set_condition(PrinterCondition::default());
    assert_eq!(printer.status(), DeviceStatus::Ready);
}

#[test]
fn a_printer_that_does_not_answer_status_is_a_timeout() {
    // A pseudo-terminal nobody answers on: the scanner emulator never reads.
    let (path, _silent) = ScannerEmulator::spawn(ScannerEmulatorSettings::default()).unwrap();
    let mut printer = serial_printer(&path);
    let error = printer.print(&sample_receipt()).unwrap_err();
    assert_eq!(error.kind, ErrorKind::Timeout, "{error}");
    assert!(matches!(
        printer.status(),
        DeviceStatus::Unavailable {
            kind: ErrorKind::Timeout,
            ..
        }
    ));
}

#[test]
fn printer_replugged_prints_again() {
    let directory = tempfile::tempdir().unwrap();
    let link = directory.path().join("printer");
    let settings = PrinterEmulatorSettings {
        link: Some(link),
        ..Default::default()
    };
    let (path, emulator) = PrinterEmulator::spawn(settings.clone(), |_| {}).unwrap();
    let mut printer = serial_printer(&path);
    printer.print(&sample_receipt()).unwrap();
    emulator.wait_for_receipt(1, DEADLINE).unwrap();

    drop(emulator);
    let error = printer.print(&sample_receipt()).unwrap_err();
    assert_eq!(error.kind, ErrorKind::Disconnected, "{error}");

    let (_, emulator) = PrinterEmulator::spawn(settings, |_| {}).unwrap();
    let deadline = Instant::now() + DEADLINE;
    while printer.status() != DeviceStatus::Ready {
        assert!(
            Instant::now() < deadline,
            "printer not reopened: {:?}",
            printer.status()
        );
        let _ = emulator.wait_until(Duration::from_millis(50), |_| false);
    }
    printer.print(&sample_receipt()).unwrap();
    let receipt = emulator.wait_for_receipt(1, DEADLINE).unwrap();
    assert_eq!(receipt.lines[0], "便利店 Lanepay");
}

/// Random bytes into every parser (scanner framing, display interpreter, ESC/POS interpreter):
/// no panic, bounded buffers, the same result however the bytes are split into reads, and no
/// desynchronisation: after garbage and the protocol's resync point, a real message is read
/// exactly as a fresh parser reads it. The cargo-fuzz targets in `drivers/fuzz` run the same
/// parsers without nightly-only tooling here.
mod parsers {
    use lanepay_drivers::display::{
        DisplayCommand, MAX_LINE_WRITE_BYTES, SerialDisplay, encode_display_command,
    };
    use lanepay_drivers::emulator::display::DisplayInterpreter;
    use lanepay_drivers::emulator::printer::{EscPosInterpreter, PrinterEvent};
    use lanepay_drivers::printer::{PrinterCondition, ReceiptJob, receipt_bytes};
    use lanepay_drivers::scanner::{
        MAX_SCAN_LINE_BYTES, ScanDecoder, ScannerEvent, ScannerFormat, Symbology, Terminator,
    };
    use lanepay_drivers::text::TextEncoding;
    use proptest::prelude::*;

    /// Splits `bytes` at the given cut points (taken modulo its length).
    fn chunks(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut points: Vec<usize> = cuts.iter().map(|cut| cut % (bytes.len() + 1)).collect();
        points.push(0);
        points.push(bytes.len());
        points.sort_unstable();
        points
            .windows(2)
            .map(|pair| bytes[pair[0]..pair[1]].to_vec())
            .collect()
    }

    fn terminator() -> impl Strategy<Value = Terminator> {
        prop_oneof![
            Just(Terminator::Cr),
            Just(Terminator::Lf),
            Just(Terminator::CrLf),
            Just(Terminator::Tab)
        ]
    }

    /// Bytes that are mostly protocol-relevant (control bytes, GB18030 lead bytes) plus noise.
    fn wire_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            4 => any::<u8>(),
            2 => prop::sample::select(vec![0x0A, 0x0D, 0x09, 0x1B, 0x1C, 0x1D, 0x1F, 0x10, 0x04, 0x0C, 0x18]),
            1 => prop::sample::select(vec![b'@', b'$', b'Q', b'A', b'(', b'k', b'V', b'p', b'!', b'X', 49, 80, 81]),
            1 => 0x81u8..=0xFE,
        ];
        prop::collection::vec(byte, 0..max)
    }

    fn display_lines(bytes: &[u8]) -> [String; 2] {
        let mut display = DisplayInterpreter::new(TextEncoding::Gb18030);
        display.push(bytes);
        display.lines()
    }

    fn printer_events(interpreter: &mut EscPosInterpreter, bytes: &[u8]) -> Vec<PrinterEvent> {
        interpreter.push(bytes, &PrinterCondition::default())
    }

    proptest! {
        #[test]
        fn scanner_framing_survives_garbage(
            terminator in terminator(),
            garbage in prop::collection::vec(any::<u8>(), 0..(MAX_SCAN_LINE_BYTES * 2)),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            let format = ScannerFormat { terminator, prefix: String::new(), aim_ids: false };
            let mut whole = ScanDecoder::new(format.clone());
            let all_at_once = whole.push(&garbage);
            let mut split = ScanDecoder::new(format.clone());
            let mut chunked = Vec::new();
            for chunk in chunks(&garbage, &cuts) {
                chunked.extend(split.push(&chunk));
                prop_assert!(split.buffered() <= MAX_SCAN_LINE_BYTES + 2);
            }
            prop_assert_eq!(&all_at_once, &chunked);

            // Resync at the next terminator: the following code is read as if nothing came before.
            whole.push(terminator.bytes());
            let mut frame = b"4006381333931".to_vec();
            frame.extend_from_slice(terminator.bytes());
            prop_assert_eq!(
                whole.push(&frame),
                vec![ScannerEvent::Scanned { code: "4006381333931".to_owned(), symbology: Symbology::Ean13 }]
            );
        }

        #[test]
        fn display_interpreter_survives_garbage(
            garbage in wire_bytes(600),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut split = DisplayInterpreter::new(TextEncoding::Gb18030);
            for chunk in chunks(&garbage, &cuts) {
                split.push(&chunk);
                prop_assert!(split.pending() <= MAX_LINE_WRITE_BYTES + 4);
            }
            prop_assert_eq!(split.lines(), display_lines(&garbage));

            // Resync: four CRs finish any command in progress, ESC = 2 selects the display,
            // ESC @ resets it; then a real screen is drawn exactly as on a fresh display.
            let mut message = Vec::new();
            encode_display_command(&DisplayCommand::Initialize, &mut message);
            let lines = ["可乐 Cola       3.50".to_owned(), "Total          12.00".to_owned()];
            message.extend(SerialDisplay::screen_bytes(&lines, TextEncoding::Gb18030));
            let mut resync = b"\r\r\r\r\x1b=\x02".to_vec();
            resync.extend_from_slice(&message);
            split.push(&resync);
            prop_assert_eq!(split.lines(), display_lines(&message));
            prop_assert_eq!(split.lines(), lines.map(|line| line.trim_end().to_owned()));
        }

        #[test]
        fn escpos_interpreter_survives_garbage(
            garbage in wire_bytes(600),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut whole = EscPosInterpreter::new(TextEncoding::Gb18030);
            let all_at_once = printer_events(&mut whole, &garbage);
            let mut split = EscPosInterpreter::new(TextEncoding::Gb18030);
            let mut chunked = Vec::new();
            for chunk in chunks(&garbage, &cuts) {
                chunked.extend(printer_events(&mut split, &chunk));
                prop_assert!(split.pending() <= 65_539);
            }
            prop_assert_eq!(&all_at_once, &chunked);
        }

        #[test]
        fn escpos_interpreter_resyncs_after_garbage_without_images(garbage in wire_bytes(600)) {
            // Images and GS blocks legitimately swallow their declared length (a real printer
            // does the same), so this property leaves them out of the garbage.
            let garbage: Vec<u8> = garbage.into_iter().map(|b| if b == 0x1D || b == b'*' { 0 } else { b }).collect();
            let job = ReceiptJob {
                title: Some("小店".to_owned()),
                lines: vec!["可乐 3.50".to_owned(), "Total 3.50".to_owned()],
                qr_payload: Some("LP1:42".to_owned()),
                cut: true,
                kick_drawer: true,
            };
            let receipt = receipt_bytes(&job, TextEncoding::Gb18030).unwrap();
            let mut interpreter = EscPosInterpreter::new(TextEncoding::Gb18030);
            printer_events(&mut interpreter, &garbage);
            // Five NULs finish any command in progress (ESC p is the longest, five bytes).
            printer_events(&mut interpreter, &[0; 5]);
            let after_garbage = printer_events(&mut interpreter, &receipt);
            let fresh = printer_events(&mut EscPosInterpreter::new(TextEncoding::Gb18030), &receipt);
            prop_assert_eq!(after_garbage, fresh);
        }
    }
}
