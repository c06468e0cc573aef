//! Fuzzes the scanner's line framing and decoding: any bytes, split into reads anywhere, give
//! the same events, never panic, and never buffer more than one over-long line's worth.

#![no_main]

use lanepay_drivers::scanner::{MAX_SCAN_LINE_BYTES, ScanDecoder, ScannerFormat, Terminator};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let terminator = match selector & 0x03 {
        0 => Terminator::Cr,
        1 => Terminator::Lf,
        2 => Terminator::CrLf,
        _ => Terminator::Tab,
    };
    let format = ScannerFormat {
        terminator,
        prefix: if selector & 0x04 != 0 {
            "#".to_owned()
        } else {
            String::new()
        },
        aim_ids: selector & 0x08 != 0,
    };
    let mut whole = ScanDecoder::new(format.clone());
    let all_at_once = whole.push(rest);
    let step = usize::from(selector >> 4) + 1;
    let mut split = ScanDecoder::new(format);
    let mut chunked = Vec::new();
    for chunk in rest.chunks(step) {
        chunked.extend(split.push(chunk));
        assert!(split.buffered() <= MAX_SCAN_LINE_BYTES + 2);
    }
    assert_eq!(all_at_once, chunked);
});
