//! A virtual contactless EMV card for the PN532 emulator: answers SELECT PPSE, SELECT AID, GET
//! PROCESSING OPTIONS and READ RECORD like a real card profile would, from made-up test data
//! (test card numbers with valid check digits, never a real card), and can misbehave on
//! purpose (stop answering mid-read, answer garbage) so the lane's error paths get exercised.

use std::fmt;

use crate::nfc::tlv::{encode, parse_dol};
use crate::nfc::{CardExpiry, emv};

/// How a card answers GET PROCESSING OPTIONS and lays out its records: the two shapes real
/// cards use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CardLayout {
    /// Asks for a PDOL, answers GPO in format 2 (tag 77), one record holds everything (the
    /// common qVSDC shape).
    PdolFormat2,
    /// No PDOL, GPO in format 1 (tag 80), track 2 in record 1 and the PAN in record 2 of
    /// file 2.
    NoPdolFormat1,
}

/// Deliberate misbehaviour, for testing the lane's handling of bad taps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CardFault {
    /// Behaves.
    None,
    /// Answers SELECT PPSE and SELECT AID, then goes silent (pulled away mid-read).
    StopAnsweringAfterSelectAid,
    /// Answers READ RECORD with a record whose TLV lengths overrun.
    MalformedRecord,
}

/// One virtual card.
#[derive(Clone, PartialEq, Eq)]
pub struct VirtualCard {
    /// The name the emulator's `tap NAME` command uses.
    pub name: String,
    /// Card number digits (a test number with a valid Luhn digit).
    pub pan: String,
    pub expiry: CardExpiry,
    /// Tag 5F20; `None` makes the card send the "/" placeholder contactless cards often use.
    pub cardholder_name: Option<String>,
    pub aid: Vec<u8>,
    pub label: String,
    pub pan_sequence_number: u8,
    /// Anticollision UID (4 or 7 bytes).
    pub uid: Vec<u8>,
    pub layout: CardLayout,
    pub fault: CardFault,
    selected_application: bool,
    processing_started: bool,
}

impl fmt::Debug for VirtualCard {
    // Test numbers only, but the emulator follows the same rule as the driver: no PAN in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VirtualCard")
            .field("name", &self.name)
            .field(
                "pan_last_four",
                &self.pan.get(self.pan.len().saturating_sub(4)..),
            )
            .field("label", &self.label)
            .field("layout", &self.layout)
            .field("fault", &self.fault)
            .finish()
    }
}

/// The card `tap` presents when no name is given.
pub const DEFAULT_TEST_CARD: &str = "visa";

/// Names of the built-in test cards, default first.
pub const TEST_CARD_NAMES: [&str; 5] = ["visa", "mastercard", "unionpay", "failing", "garbage"];

/// Answers to every command the card does not handle: "instruction not supported".
const SW_INS_NOT_SUPPORTED: [u8; 2] = [0x6D, 0x00];
const SW_OK: [u8; 2] = [0x90, 0x00];
const SW_FILE_NOT_FOUND: [u8; 2] = [0x6A, 0x82];
const SW_RECORD_NOT_FOUND: [u8; 2] = [0x6A, 0x83];
const SW_WRONG_LENGTH: [u8; 2] = [0x67, 0x00];
const SW_CONDITIONS_NOT_SATISFIED: [u8; 2] = [0x69, 0x85];

/// The PDOL the PDOL-asking cards send: TTQ, amount, unpredictable number, currency, date,
/// type, country.
const TEST_PDOL: [u8; 21] = [
    0x9F, 0x66, 0x04, 0x9F, 0x02, 0x06, 0x9F, 0x37, 0x04, 0x5F, 0x2A, 0x02, 0x9A, 0x03, 0x9C, 0x01,
    0x9F, 0x1A, 0x02, 0x95, 0x05,
];

fn bcd_pan(digits: &str) -> Vec<u8> {
    let mut nibbles: Vec<u8> = digits
        .bytes()
        .map(|byte| byte.wrapping_sub(b'0') & 0x0F)
        .collect();
    if nibbles.len() % 2 == 1 {
        nibbles.push(0x0F);
    }
    nibbles
        .chunks(2)
        .map(|pair| (pair[0] << 4) | pair.get(1).copied().unwrap_or(0x0F))
        .collect()
}

fn bcd2(value: u16) -> u8 {
    let value = (value % 100) as u8;
    ((value / 10) << 4) | (value % 10)
}

impl VirtualCard {
    /// A built-in test card by name (see [`TEST_CARD_NAMES`]).
    pub fn test_card(name: &str) -> Option<VirtualCard> {
        let base = |name: &str, pan: &str, year, month, aid: &[u8], label: &str| VirtualCard {
            name: name.to_string(),
            pan: pan.to_string(),
            expiry: CardExpiry { year, month },
            cardholder_name: None,
            aid: aid.to_vec(),
            label: label.to_string(),
            pan_sequence_number: 1,
            uid: vec![0x08, 0x4C, 0x50, 0x01],
            layout: CardLayout::PdolFormat2,
            fault: CardFault::None,
            selected_application: false,
            processing_started: false,
        };
        const VISA_AID: [u8; 7] = [0xA0, 0x00, 0x00, 0x00, 0x03, 0x10, 0x10];
        let card = match name {
            "visa" => VirtualCard {
                cardholder_name: Some("TEST/CARDHOLDER".to_string()),
                ..base("visa", "4761739001010010", 2029, 12, &VISA_AID, "VISA")
            },
            "mastercard" => VirtualCard {
                uid: vec![0x08, 0x4C, 0x50, 0x02],
                layout: CardLayout::NoPdolFormat1,
                pan_sequence_number: 0,
                ..base(
                    "mastercard",
                    "5413330089010434",
                    2027,
                    11,
                    &[0xA0, 0x00, 0x00, 0x00, 0x04, 0x10, 0x10],
                    "MASTERCARD",
                )
            },
            "unionpay" => VirtualCard {
                cardholder_name: Some("ZHANG/SAN".to_string()),
                uid: vec![0x08, 0x4C, 0x50, 0x03],
                ..base(
                    "unionpay",
                    "6250946000000016",
                    2030,
                    6,
                    &[0xA0, 0x00, 0x00, 0x03, 0x33, 0x01, 0x01, 0x01],
                    "UnionPay Debit",
                )
            },
            "failing" => VirtualCard {
                uid: vec![0x08, 0x4C, 0x50, 0x04],
                fault: CardFault::StopAnsweringAfterSelectAid,
                ..base("failing", "4000000000000002", 2028, 1, &VISA_AID, "VISA")
            },
            "garbage" => VirtualCard {
                uid: vec![0x08, 0x4C, 0x50, 0x05],
                fault: CardFault::MalformedRecord,
                ..base("garbage", "4000000000000002", 2028, 1, &VISA_AID, "VISA")
            },
            _ => return None,
        };
        Some(card)
    }

    /// The default test card (Visa-like, PDOL, format 2).
    pub fn default_test_card() -> VirtualCard {
        // The name is one of TEST_CARD_NAMES, so this never falls back in practice.
        VirtualCard::test_card(DEFAULT_TEST_CARD).unwrap_or_else(|| VirtualCard {
            name: DEFAULT_TEST_CARD.to_string(),
            pan: "4761739001010010".to_string(),
            expiry: CardExpiry {
                year: 2029,
                month: 12,
            },
            cardholder_name: None,
            aid: vec![0xA0, 0x00, 0x00, 0x00, 0x03, 0x10, 0x10],
            label: "VISA".to_string(),
            pan_sequence_number: 1,
            uid: vec![0x08, 0x4C, 0x50, 0x01],
            layout: CardLayout::PdolFormat2,
            fault: CardFault::None,
            selected_application: false,
            processing_started: false,
        })
    }

    /// ATS sent after RATS (length byte first): T0 with TA, TB, TC present; FSCI 8 (256-byte
    /// frames).
    pub fn ats(&self) -> Vec<u8> {
        vec![0x05, 0x78, 0x80, 0x70, 0x02]
    }

    /// Forgets the selected application, as a card does when it leaves the field.
    pub fn reset(&mut self) {
        self.selected_application = false;
        self.processing_started = false;
    }

    fn track2(&self) -> Vec<u8> {
        let text = format!(
            "{}D{:02}{:02}2011234500000",
            self.pan,
            self.expiry.year % 100,
            self.expiry.month
        );
        let nibbles: Vec<u8> = text
            .bytes()
            .map(|byte| {
                if byte == b'D' {
                    0x0D
                } else {
                    byte.wrapping_sub(b'0') & 0x0F
                }
            })
            .collect();
        nibbles
            .chunks(2)
            .map(|pair| (pair[0] << 4) | pair.get(1).copied().unwrap_or(0x0F))
            .collect()
    }

    fn expiry_5f24(&self) -> Vec<u8> {
        vec![
            bcd2(self.expiry.year),
            bcd2(u16::from(self.expiry.month)),
            0x31,
        ]
    }

    fn name_5f20(&self) -> Vec<u8> {
        self.cardholder_name
            .clone()
            .unwrap_or_else(|| "/".to_string())
            .into_bytes()
    }

    fn ppse_answer(&self) -> Vec<u8> {
        let entry = [
            encode(0x4F, &self.aid),
            encode(0x50, self.label.as_bytes()),
            encode(0x87, &[0x01]),
        ]
        .concat();
        let directory = encode(0xBF0C, &encode(0x61, &entry));
        encode(
            0x6F,
            &[encode(0x84, emv::PPSE_NAME), encode(0xA5, &directory)].concat(),
        )
    }

    fn application_answer(&self) -> Vec<u8> {
        let mut proprietary = [encode(0x50, self.label.as_bytes()), encode(0x87, &[0x01])].concat();
        if self.layout == CardLayout::PdolFormat2 {
            proprietary.extend(encode(0x9F38, &TEST_PDOL));
        }
        encode(
            0x6F,
            &[encode(0x84, &self.aid), encode(0xA5, &proprietary)].concat(),
        )
    }

    fn processing_options(&self, command: &[u8]) -> Vec<u8> {
        // Command data must be 83 Lc <PDOL data> of exactly the length the PDOL asks.
        let expected = match self.layout {
            CardLayout::PdolFormat2 => parse_dol(&TEST_PDOL)
                .map(|dol| dol.iter().map(|(_, length)| length).sum())
                .unwrap_or(0),
            CardLayout::NoPdolFormat1 => 0,
        };
        let data = command_data(command);
        if data.len() != expected + 2 || data.first() != Some(&0x83) {
            return SW_WRONG_LENGTH.to_vec();
        }
        let answer = match self.layout {
            CardLayout::PdolFormat2 => encode(
                0x77,
                &[
                    encode(0x82, &[0x20, 0x00]),
                    encode(0x94, &[0x08, 0x01, 0x01, 0x00]),
                    encode(0x9F10, &[0x06, 0x01, 0x0A, 0x03, 0xA0, 0x00, 0x00]),
                ]
                .concat(),
            ),
            CardLayout::NoPdolFormat1 => encode(
                0x80,
                &[0x19, 0x80, 0x08, 0x01, 0x01, 0x00, 0x10, 0x02, 0x02, 0x00],
            ),
        };
        [answer, SW_OK.to_vec()].concat()
    }

    fn record(&self, sfi: u8, number: u8) -> Option<Vec<u8>> {
        if self.fault == CardFault::MalformedRecord {
            // Claims 0x40 bytes of PAN, sends three.
            return Some(vec![0x70, 0x05, 0x5A, 0x40, 0x47, 0x61, 0x73]);
        }
        let psn = encode(0x5F34, &[bcd2(u16::from(self.pan_sequence_number))]);
        let body = match (self.layout, sfi, number) {
            (CardLayout::PdolFormat2, 1, 1) => [
                encode(0x57, &self.track2()),
                encode(0x5A, &bcd_pan(&self.pan)),
                encode(0x5F24, &self.expiry_5f24()),
                encode(0x5F20, &self.name_5f20()),
                psn,
            ]
            .concat(),
            (CardLayout::NoPdolFormat1, 1, 1) => [
                encode(0x57, &self.track2()),
                encode(0x5F20, &self.name_5f20()),
            ]
            .concat(),
            (CardLayout::NoPdolFormat1, 2, 2) => [
                encode(0x5A, &bcd_pan(&self.pan)),
                encode(0x5F24, &self.expiry_5f24()),
                psn,
            ]
            .concat(),
            _ => return None,
        };
        Some(encode(0x70, &body))
    }

    /// Answers one command APDU. `None` means the card stays silent (the reader times out).
    pub fn respond(&mut self, command: &[u8]) -> Option<Vec<u8>> {
        let (Some(&class), Some(&instruction), Some(&p1), Some(&p2)) = (
            command.first(),
            command.get(1),
            command.get(2),
            command.get(3),
        ) else {
            return Some(SW_WRONG_LENGTH.to_vec());
        };
        if self.fault == CardFault::StopAnsweringAfterSelectAid && self.selected_application {
            return None;
        }
        let answer = match (class, instruction) {
            (0x00, 0xA4) if p1 == 0x04 => {
                let name = command_data(command);
                if name == emv::PPSE_NAME {
                    self.selected_application = false;
                    [self.ppse_answer(), SW_OK.to_vec()].concat()
                } else if name == self.aid.as_slice() {
                    self.selected_application = true;
                    self.processing_started = false;
                    [self.application_answer(), SW_OK.to_vec()].concat()
                } else {
                    SW_FILE_NOT_FOUND.to_vec()
                }
            }
            (0x80, 0xA8) => {
                if !self.selected_application {
                    SW_CONDITIONS_NOT_SATISFIED.to_vec()
                } else {
                    let answer = self.processing_options(command);
                    self.processing_started = answer.ends_with(&SW_OK);
                    answer
                }
            }
            (0x00, 0xB2) if p2 & 0x07 == 0x04 => {
                if !self.processing_started {
                    SW_CONDITIONS_NOT_SATISFIED.to_vec()
                } else {
                    match self.record(p2 >> 3, p1) {
                        Some(record) => [record, SW_OK.to_vec()].concat(),
                        None => SW_RECORD_NOT_FOUND.to_vec(),
                    }
                }
            }
            _ => SW_INS_NOT_SUPPORTED.to_vec(),
        };
        Some(answer)
    }
}

/// The data field of a short command APDU (`CLA INS P1 P2 [Lc data] [Le]`); empty when
/// there is none or Lc overruns.
fn command_data(command: &[u8]) -> &[u8] {
    let Some(&length) = command.get(4) else {
        return &[];
    };
    if command.len() == 5 {
        // CLA INS P1 P2 Le: no data.
        return &[];
    }
    command.get(5..5 + usize::from(length)).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::error::DeviceError;
    use crate::nfc::TransactionContext;
    use crate::nfc::emv::{ApduTransport, is_valid_pan, read_payment_application};

    struct Direct<'a>(&'a mut VirtualCard);

    impl ApduTransport for Direct<'_> {
        fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, DeviceError> {
            self.0
                .respond(command)
                .ok_or_else(|| DeviceError::new("nfc", crate::ErrorKind::Protocol, "card silent"))
        }
    }

    #[test]
    fn every_good_test_card_reads_back_in_memory() {
        for name in ["visa", "mastercard", "unionpay"] {
            let mut card = VirtualCard::test_card(name).unwrap();
            assert!(is_valid_pan(&card.pan), "{name}");
            let expected_pan = card.pan.clone();
            let data =
                read_payment_application(&mut Direct(&mut card), &TransactionContext::default())
                    .unwrap();
            assert_eq!(data.pan.expose(), expected_pan, "{name}");
            assert_eq!(data.expiry, card.expiry, "{name}");
            assert_eq!(data.aid, card.aid, "{name}");
            assert_eq!(data.application_label.as_deref(), Some(card.label.as_str()));
            assert_eq!(data.cardholder_name, card.cardholder_name, "{name}");
            assert!(
                data.track2
                    .unwrap()
                    .expose()
                    .starts_with(&format!("{expected_pan}D"))
            );
        }
    }

    #[test]
    fn faulty_cards_fail_with_protocol_errors() {
        for name in ["failing", "garbage"] {
            let mut card = VirtualCard::test_card(name).unwrap();
            let error =
                read_payment_application(&mut Direct(&mut card), &TransactionContext::default())
                    .unwrap_err();
            assert_eq!(error.kind, crate::ErrorKind::Protocol, "{name}: {error}");
            assert!(!error.message.contains("4000000000000002"), "{error}");
        }
    }

    #[test]
    fn card_refuses_out_of_order_and_short_commands() {
        let mut card = VirtualCard::default_test_card();
        assert_eq!(card.respond(&[0x00]).unwrap(), SW_WRONG_LENGTH);
        assert_eq!(
            card.respond(&[0x00, 0xB2, 0x01, 0x0C, 0x00]).unwrap(),
            SW_CONDITIONS_NOT_SATISFIED
        );
        assert_eq!(
            card.respond(&[0x80, 0xA8, 0x00, 0x00, 0x02, 0x83, 0x00, 0x00])
                .unwrap(),
            SW_CONDITIONS_NOT_SATISFIED
        );
        assert_eq!(
            card.respond(&[0x00, 0xCA, 0x9F, 0x17, 0x00]).unwrap(),
            SW_INS_NOT_SUPPORTED
        );
    }
}
