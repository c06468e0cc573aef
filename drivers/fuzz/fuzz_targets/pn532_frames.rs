//! Fuzzes the PN532 emulator's host side: any bytes, split into reads anywhere, are cut into
//! frames without panicking or growing the buffer without bound, and every command frame the
//! chip receives is answered without panicking, whatever it says.

#![no_main]

use lanepay_drivers::emulator::nfc::VirtualCard;
use lanepay_drivers::emulator::nfc::chip::{Field, Pn532Chip};
use lanepay_drivers::emulator::nfc::frame::{FrameReader, HostFrame, build_response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let mut reader = FrameReader::new();
    let mut chip = Pn532Chip::new();
    let mut field = Field::default();
    if selector & 0x80 != 0 {
        field.tap(VirtualCard::default_test_card());
    }
    let step = usize::from(selector & 0x3F) + 1;
    for chunk in rest.chunks(step) {
        reader.push(chunk);
        while let Some(frame) = reader.next_frame() {
            if let HostFrame::Command(command) = frame {
                let code = command.first().copied().unwrap_or(0);
                if let lanepay_drivers::emulator::nfc::chip::ChipAnswer::Data(answer) =
                    chip.handle(&command, &mut field)
                {
                    let _ = build_response(code, &answer);
                }
            }
        }
    }
});
