//! The PN532's command set as libnfc uses it, as a state machine with no IO: a command in, the
//! answer's data out. The pseudo-terminal loop wraps it in frames; tests and the fuzzer call it
//! directly.
//!
//! Covered: Diagnose (communication test, card presence), GetFirmwareVersion ("PN532 v1.6"),
//! GetGeneralStatus, ReadRegister/WriteRegister (a register file), SetParameters,
//! SAMConfiguration, PowerDown, RFConfiguration (field, timings, retries), InListPassiveTarget
//! (ISO 14443-A at 106 kbps only, one target, ATS after automatic RATS), InDataExchange (APDUs to
//! the virtual card), InCommunicateThru (the ISO-DEP presence check libnfc sends),
//! InDeselect/InRelease/InSelect. Anything else gets the application error frame.

use std::collections::BTreeMap;

use super::card::VirtualCard;

/// PN532 command codes (user manual, 7.1).
pub mod command {
    pub const DIAGNOSE: u8 = 0x00;
    pub const GET_FIRMWARE_VERSION: u8 = 0x02;
    pub const GET_GENERAL_STATUS: u8 = 0x04;
    pub const READ_REGISTER: u8 = 0x06;
    pub const WRITE_REGISTER: u8 = 0x08;
    pub const SET_PARAMETERS: u8 = 0x12;
    pub const SAM_CONFIGURATION: u8 = 0x14;
    pub const POWER_DOWN: u8 = 0x16;
    pub const RF_CONFIGURATION: u8 = 0x32;
    pub const IN_DATA_EXCHANGE: u8 = 0x40;
    pub const IN_COMMUNICATE_THRU: u8 = 0x42;
    pub const IN_DESELECT: u8 = 0x44;
    pub const IN_LIST_PASSIVE_TARGET: u8 = 0x4A;
    pub const IN_RELEASE: u8 = 0x52;
    pub const IN_SELECT: u8 = 0x54;
}

/// The name of a command code, for the emulator's log.
pub fn command_name(code: u8) -> &'static str {
    match code {
        command::DIAGNOSE => "Diagnose",
        command::GET_FIRMWARE_VERSION => "GetFirmwareVersion",
        command::GET_GENERAL_STATUS => "GetGeneralStatus",
        command::READ_REGISTER => "ReadRegister",
        command::WRITE_REGISTER => "WriteRegister",
        command::SET_PARAMETERS => "SetParameters",
        command::SAM_CONFIGURATION => "SAMConfiguration",
        command::POWER_DOWN => "PowerDown",
        command::RF_CONFIGURATION => "RFConfiguration",
        command::IN_DATA_EXCHANGE => "InDataExchange",
        command::IN_COMMUNICATE_THRU => "InCommunicateThru",
        command::IN_DESELECT => "InDeselect",
        command::IN_LIST_PASSIVE_TARGET => "InListPassiveTarget",
        command::IN_RELEASE => "InRelease",
        command::IN_SELECT => "InSelect",
        _ => "unsupported",
    }
}

/// GetFirmwareVersion answer: IC PN532 (0x32), firmware 1.6, supports ISO 14443-A, -B and
/// ISO 18092 (0x07). libnfc shows it as "PN532 v1.6".
pub const FIRMWARE_VERSION: [u8; 4] = [0x32, 0x01, 0x06, 0x07];

/// Status byte: success.
const STATUS_OK: u8 = 0x00;
/// Status byte: the target did not answer in time (libnfc reads it as "card gone").
const STATUS_TIMEOUT: u8 = 0x01;
/// Status byte: the command is not acceptable in the current context (no target selected).
const STATUS_NOT_ACCEPTABLE: u8 = 0x27;
/// InListPassiveTarget BrTy for ISO 14443-A at 106 kbps, the only one the emulator answers.
const BRTY_ISO14443A_106: u8 = 0x00;
/// ATQA of the virtual cards (as the PN532 reports SENS_RES) and SAK "ISO 14443-4 compliant".
const CARD_ATQA: [u8; 2] = [0x00, 0x04];
const CARD_SAK: u8 = 0x20;
/// Most registers the register file remembers; writes beyond are dropped (a PN532 has far
/// fewer).
const MAX_REGISTERS: usize = 1024;

/// What the chip answers to one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChipAnswer {
    /// A normal answer: its data (the frame adds TFI and command code + 1).
    Data(Vec<u8>),
    /// The application error frame (unknown or malformed command).
    Error,
}

/// The card in the field, as the chip sees it.
#[derive(Debug, Default)]
pub struct Field {
    pub card: Option<VirtualCard>,
    /// Changes on every tap and removal, so a target selected before belongs to an old tap.
    pub generation: u64,
}

impl Field {
    pub fn tap(&mut self, mut card: VirtualCard) {
        card.reset();
        self.card = Some(card);
        self.generation = self.generation.wrapping_add(1);
    }

    pub fn remove(&mut self) {
        self.card = None;
        self.generation = self.generation.wrapping_add(1);
    }
}

/// The chip's state between commands.
#[derive(Debug, Default)]
pub struct Pn532Chip {
    registers: BTreeMap<u16, u8>,
    rf_field_on: bool,
    /// The `generation` of the tap the selected target belongs to.
    selected: Option<u64>,
}

impl Pn532Chip {
    pub fn new() -> Pn532Chip {
        Pn532Chip::default()
    }

    fn target_selected(&self, field: &Field) -> bool {
        field.card.is_some() && self.selected == Some(field.generation)
    }

    /// Handles one command (code and parameters) against the card in `field`.
    pub fn handle(&mut self, command: &[u8], field: &mut Field) -> ChipAnswer {
        let Some((&code, params)) = command.split_first() else {
            return ChipAnswer::Error;
        };
        match code {
            command::DIAGNOSE => match params.first() {
                // Communication test: echo the test number and data.
                Some(0x00) => ChipAnswer::Data(params.to_vec()),
                // Card presence.
                Some(0x06) => ChipAnswer::Data(vec![if self.target_selected(field) {
                    STATUS_OK
                } else {
                    STATUS_TIMEOUT
                }]),
                Some(_) => ChipAnswer::Data(vec![STATUS_OK]),
                None => ChipAnswer::Error,
            },
            command::GET_FIRMWARE_VERSION => ChipAnswer::Data(FIRMWARE_VERSION.to_vec()),
            command::GET_GENERAL_STATUS => {
                let mut data = vec![STATUS_OK, u8::from(self.rf_field_on)];
                if self.target_selected(field) {
                    data.extend_from_slice(&[1, 1, 0x00, 0x00, 0x00]);
                } else {
                    data.push(0);
                }
                data.push(0x00); // SAM status
                ChipAnswer::Data(data)
            }
            command::READ_REGISTER => {
                if params.is_empty() || params.len() % 2 != 0 {
                    return ChipAnswer::Error;
                }
                let values = params
                    .chunks_exact(2)
                    .map(|pair| {
                        let address = u16::from_be_bytes([pair[0], pair[1]]);
                        self.registers.get(&address).copied().unwrap_or(0)
                    })
                    .collect();
                ChipAnswer::Data(values)
            }
            command::WRITE_REGISTER => {
                if params.is_empty() || params.len() % 3 != 0 {
                    return ChipAnswer::Error;
                }
                for triple in params.chunks_exact(3) {
                    let address = u16::from_be_bytes([triple[0], triple[1]]);
                    if self.registers.len() < MAX_REGISTERS || self.registers.contains_key(&address)
                    {
                        self.registers.insert(address, triple[2]);
                    }
                }
                ChipAnswer::Data(Vec::new())
            }
            command::SET_PARAMETERS | command::SAM_CONFIGURATION => {
                if params.is_empty() {
                    return ChipAnswer::Error;
                }
                ChipAnswer::Data(Vec::new())
            }
            command::POWER_DOWN => {
                self.selected = None;
                ChipAnswer::Data(vec![STATUS_OK])
            }
            command::RF_CONFIGURATION => {
                match params {
                    [0x01, setting, ..] => {
                        self.rf_field_on = setting & 0x01 != 0;
                        if !self.rf_field_on {
                            // No field, no powered card: it forgets everything.
                            self.selected = None;
                            if let Some(card) = field.card.as_mut() {
                                card.reset();
                            }
                        }
                    }
                    [_, ..] => {}
                    [] => return ChipAnswer::Error,
                }
                ChipAnswer::Data(Vec::new())
            }
            command::IN_LIST_PASSIVE_TARGET => {
                let (Some(&max_targets), Some(&baud_and_type)) = (params.first(), params.get(1))
                else {
                    return ChipAnswer::Error;
                };
                if max_targets == 0 || max_targets > 2 {
                    return ChipAnswer::Error;
                }
                match field.card.as_mut() {
                    Some(card) if baud_and_type == BRTY_ISO14443A_106 => {
                        card.reset();
                        self.selected = Some(field.generation);
                        let mut data = vec![1, 1];
                        data.extend_from_slice(&CARD_ATQA);
                        data.push(CARD_SAK);
                        data.push(card.uid.len() as u8);
                        data.extend_from_slice(&card.uid);
                        data.extend_from_slice(&card.ats());
                        ChipAnswer::Data(data)
                    }
                    _ => {
                        self.selected = None;
                        ChipAnswer::Data(vec![0])
                    }
                }
            }
            command::IN_DATA_EXCHANGE => {
                let Some((_target, apdu)) = params.split_first() else {
                    return ChipAnswer::Error;
                };
                if !self.target_selected(field) {
                    return ChipAnswer::Data(vec![if field.card.is_none() {
                        STATUS_TIMEOUT
                    } else {
                        STATUS_NOT_ACCEPTABLE
                    }]);
                }
                let answer = field.card.as_mut().and_then(|card| card.respond(apdu));
                match answer {
                    Some(answer) => {
                        let mut data = Vec::with_capacity(answer.len() + 1);
                        data.push(STATUS_OK);
                        data.extend_from_slice(&answer);
                        ChipAnswer::Data(data)
                    }
                    None => ChipAnswer::Data(vec![STATUS_TIMEOUT]),
                }
            }
            command::IN_COMMUNICATE_THRU => {
                // libnfc's presence check for ISO-DEP cards sends an R(NAK) block (B2/B3);
                // a card in the field answers with an R(ACK).
                if params.is_empty() {
                    return ChipAnswer::Error;
                }
                if self.target_selected(field) {
                    ChipAnswer::Data(vec![STATUS_OK, 0xA2])
                } else {
                    ChipAnswer::Data(vec![STATUS_TIMEOUT])
                }
            }
            command::IN_DESELECT | command::IN_RELEASE => {
                self.selected = None;
                if let Some(card) = field.card.as_mut() {
                    card.reset();
                }
                ChipAnswer::Data(vec![STATUS_OK])
            }
            command::IN_SELECT => {
                if field.card.is_some() && self.selected.is_some() {
                    self.selected = Some(field.generation);
                    ChipAnswer::Data(vec![STATUS_OK])
                } else {
                    ChipAnswer::Data(vec![STATUS_NOT_ACCEPTABLE])
                }
            }
            _ => ChipAnswer::Error,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn select_exchange_remove() {
        let mut chip = Pn532Chip::new();
        let mut field = Field::default();
        assert_eq!(
            chip.handle(&[0x4A, 1, 0], &mut field),
            ChipAnswer::Data(vec![0])
        );
        field.tap(VirtualCard::default_test_card());
        let ChipAnswer::Data(listed) = chip.handle(&[0x4A, 1, 0], &mut field) else {
            panic!("no data");
        };
        assert_eq!(&listed[..6], &[1, 1, 0x00, 0x04, 0x20, 4]);
        let select_ppse = [
            &[0x40, 0x01, 0x00, 0xA4, 0x04, 0x00, 0x0E][..],
            b"2PAY.SYS.DDF01",
            &[0],
        ]
        .concat();
        let ChipAnswer::Data(answer) = chip.handle(&select_ppse, &mut field) else {
            panic!("no data");
        };
        assert_eq!(answer[0], STATUS_OK);
        assert!(answer.ends_with(&[0x90, 0x00]));
        field.remove();
        assert_eq!(
            chip.handle(&select_ppse, &mut field),
            ChipAnswer::Data(vec![STATUS_TIMEOUT])
        );
        assert_eq!(
            chip.handle(&[0x42, 0xB2], &mut field),
            ChipAnswer::Data(vec![STATUS_TIMEOUT])
        );
    }

    #[test]
    fn registers_and_errors() {
        let mut chip = Pn532Chip::new();
        let mut field = Field::default();
        assert_eq!(
            chip.handle(&[0x08, 0x63, 0x3D, 0x07], &mut field),
            ChipAnswer::Data(vec![])
        );
        assert_eq!(
            chip.handle(&[0x06, 0x63, 0x3D, 0x63, 0x02], &mut field),
            ChipAnswer::Data(vec![7, 0])
        );
        assert_eq!(chip.handle(&[0x06, 0x63], &mut field), ChipAnswer::Error);
        assert_eq!(chip.handle(&[0xFE], &mut field), ChipAnswer::Error);
        assert_eq!(chip.handle(&[], &mut field), ChipAnswer::Error);
    }

    proptest! {
        #[test]
        fn random_commands_never_panic(commands in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..16)) {
            let mut chip = Pn532Chip::new();
            let mut field = Field::default();
            field.tap(VirtualCard::default_test_card());
            for command in commands {
                let _ = chip.handle(&command, &mut field);
            }
        }
    }
}
