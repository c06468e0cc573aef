//! Fuzzes the pole display's command parser and screen model: any bytes, split into reads
//! anywhere, give the same screen, never panic, keep the pending buffer bounded and never draw
//! more than 20 columns on a line.

#![no_main]

use lanepay_drivers::display::{DISPLAY_COLUMNS, MAX_LINE_WRITE_BYTES};
use lanepay_drivers::emulator::display::DisplayInterpreter;
use lanepay_drivers::text::{TextEncoding, columns};
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
    let mut whole = DisplayInterpreter::new(encoding);
    whole.push(rest);
    let mut split = DisplayInterpreter::new(encoding);
    for chunk in rest.chunks(usize::from(selector >> 1) + 1) {
        split.push(chunk);
        assert!(split.pending() <= MAX_LINE_WRITE_BYTES + 4);
    }
    assert_eq!(whole.lines(), split.lines());
    for line in whole.lines() {
        // U+FFFD (an undecodable byte) is drawn in one cell; count it as such.
        let width: usize = line
            .chars()
            .map(|c| {
                if c == char::REPLACEMENT_CHARACTER {
                    1
                } else {
                    columns(&c.to_string(), encoding)
                }
            })
            .sum();
        assert!(width <= DISPLAY_COLUMNS, "{line:?}");
    }
});
