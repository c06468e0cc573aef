//! Fuzzes the ESC/POS command parser and the printer emulator's interpreter: any bytes, split
//! into reads anywhere, give the same events (lines, QR payloads, cuts, status answers), never
//! panic, and keep the pending buffer within the longest command.

#![no_main]

use lanepay_drivers::emulator::printer::EscPosInterpreter;
use lanepay_drivers::printer::PrinterCondition;
use lanepay_drivers::text::TextEncoding;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let encoding = if selector & 1 == 0 {
        TextEncoding::Gb18030
    } else {
        TextEncoding::Ascii
    };
    let condition = PrinterCondition {
        paper_out: selector & 2 != 0,
        ..Default::default()
    };
    let mut whole = EscPosInterpreter::new(encoding);
    let all_at_once = whole.push(rest, &condition);
    let mut split = EscPosInterpreter::new(encoding);
    let mut chunked = Vec::new();
    for chunk in rest.chunks(usize::from(selector >> 2) + 1) {
        chunked.extend(split.push(chunk, &condition));
        assert!(split.pending() <= 65_539);
    }
    assert_eq!(all_at_once, chunked);
});
