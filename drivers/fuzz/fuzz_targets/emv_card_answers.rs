//! Fuzzes the EMV read sequence with hostile card answers: the input is cut into answers
//! (a length byte, then that many bytes), fed to the reader one per command. It must end in
//! card data or an error, never a panic, and errors must not quote the card's bytes.

#![no_main]

use lanepay_drivers::DeviceError;
use lanepay_drivers::nfc::emv::{ApduTransport, read_payment_application};
use lanepay_drivers::nfc::{TransactionContext, tlv};
use libfuzzer_sys::fuzz_target;

struct Scripted<'a> {
    rest: &'a [u8],
}

impl ApduTransport for Scripted<'_> {
    fn transmit(&mut self, _command: &[u8]) -> Result<Vec<u8>, DeviceError> {
        let Some((&length, rest)) = self.rest.split_first() else {
            return Err(DeviceError::new(
                "fuzz",
                lanepay_drivers::ErrorKind::Protocol,
                "silent",
            ));
        };
        let take = usize::from(length).min(rest.len());
        let (answer, rest) = rest.split_at(take);
        self.rest = rest;
        // Most answers end in 9000 so the parser gets past the status checks.
        let mut answer = answer.to_vec();
        if length & 0x01 == 0 {
            answer.extend_from_slice(&[0x90, 0x00]);
        }
        Ok(answer)
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = tlv::parse(data);
    let _ = tlv::find_all(data, 0x61);
    let _ = tlv::parse_dol(data);
    let mut transport = Scripted { rest: data };
    let _ = read_payment_application(&mut transport, &TransactionContext::default());
});
