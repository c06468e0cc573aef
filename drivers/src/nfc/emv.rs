//! Reading a contactless payment card: the EMV command sequence (SELECT PPSE, SELECT AID, GET
//! PROCESSING OPTIONS, READ RECORD) over any APDU transport, so the same code runs against a
//! PN532 through libnfc, the virtual card in memory, and fuzzers.
//!
//! Every card answer is untrusted input. Errors name what went wrong, never the bytes (they
//! may hold a card number).

use super::tlv::{self, TlvError};
use super::{CardData, CardExpiry, SensitivePan, SensitiveTrack2, TransactionContext};
use crate::error::{DeviceError, ErrorKind};

const DEVICE: &str = "nfc";

/// The proximity payment system environment's name (EMV Book B): the directory every
/// contactless payment card answers to.
pub const PPSE_NAME: &[u8] = b"2PAY.SYS.DDF01";
/// Most candidate applications considered from one PPSE answer.
pub const MAX_CANDIDATE_APPLICATIONS: usize = 16;
/// Most records read in total, whatever the card's file locator asks for (real cards list a
/// handful).
pub const MAX_RECORDS_TO_READ: usize = 32;
/// Most `61xx` GET RESPONSE rounds followed for one command.
pub const MAX_GET_RESPONSE_ROUNDS: usize = 4;
/// Longest response a card may return to one command, after GET RESPONSE chaining.
pub const MAX_RESPONSE_BYTES: usize = 4096;
/// Longest PDOL data accepted (it must fit a short APDU with its `83` wrapper).
pub const MAX_PDOL_DATA_BYTES: usize = 250;
/// Shortest and longest application identifier (ISO 7816-4: RID of 5 bytes plus up to 11).
pub const AID_LENGTH_RANGE: std::ops::RangeInclusive<usize> = 5..=16;
/// Card numbers are 12 to 19 digits (ISO/IEC 7812).
pub const PAN_DIGITS_RANGE: std::ops::RangeInclusive<usize> = 12..=19;
/// Longest cardholder name or application label kept (EMV: 26 and 16 characters).
pub const MAX_TEXT_FIELD_CHARS: usize = 26;

/// Sends one command APDU to the card in the field and returns its whole answer, status
/// word included.
pub trait ApduTransport {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, DeviceError>;
}

fn protocol(message: impl Into<String>) -> DeviceError {
    DeviceError::new(DEVICE, ErrorKind::Protocol, message)
}

fn tlv_error(context: &str, error: TlvError) -> DeviceError {
    protocol(format!(
        "{context}: {error}; ask the customer to tap again or use another method"
    ))
}

/// A card answer split into data and status word.
struct Response {
    data: Vec<u8>,
    status: u16,
}

fn split_status(mut raw: Vec<u8>, step: &str) -> Result<Response, DeviceError> {
    if raw.len() < 2 {
        return Err(protocol(format!(
            "{step}: card answer shorter than a status word"
        )));
    }
    let low = raw.pop().unwrap_or(0);
    let high = raw.pop().unwrap_or(0);
    Ok(Response {
        data: raw,
        status: u16::from_be_bytes([high, low]),
    })
}

/// Sends a command, following `61xx` (more data: GET RESPONSE) and `6Cxx` (wrong Le: send
/// again with the right one), bounded.
fn exchange(
    transport: &mut dyn ApduTransport,
    command: &[u8],
    step: &str,
) -> Result<Response, DeviceError> {
    let mut response = split_status(transport.transmit(command)?, step)?;
    if response.status >> 8 == 0x6C
        && let Some((_, head)) = command.split_last()
    {
        let mut again = head.to_vec();
        again.push((response.status & 0xFF) as u8);
        response = split_status(transport.transmit(&again)?, step)?;
    }
    let mut data = std::mem::take(&mut response.data);
    let mut rounds = 0;
    while response.status >> 8 == 0x61 {
        rounds += 1;
        if rounds > MAX_GET_RESPONSE_ROUNDS {
            return Err(protocol(format!(
                "{step}: card keeps asking for GET RESPONSE"
            )));
        }
        let get_response = [0x00, 0xC0, 0x00, 0x00, (response.status & 0xFF) as u8];
        response = split_status(transport.transmit(&get_response)?, step)?;
        data.append(&mut response.data);
        if data.len() > MAX_RESPONSE_BYTES {
            return Err(protocol(format!("{step}: card answer too long")));
        }
    }
    Ok(Response {
        data,
        status: response.status,
    })
}

fn select_command(name: &[u8]) -> Vec<u8> {
    let mut command = vec![0x00, 0xA4, 0x04, 0x00, name.len() as u8];
    command.extend_from_slice(name);
    command.push(0x00);
    command
}

/// One application the PPSE lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CandidateApplication {
    pub aid: Vec<u8>,
    pub label: Option<String>,
    /// Lower is preferred (tag 87, low nibble); `None` sorts last.
    pub priority: Option<u8>,
}

/// Parses the PPSE answer (FCI) into its candidate applications, preferred first.
pub fn parse_ppse(fci: &[u8]) -> Result<Vec<CandidateApplication>, DeviceError> {
    let entries = tlv::find_all(fci, 0x61).map_err(|error| tlv_error("PPSE answer", error))?;
    let mut candidates = Vec::new();
    for entry in entries.into_iter().take(MAX_CANDIDATE_APPLICATIONS) {
        let objects = tlv::parse(entry).map_err(|error| tlv_error("PPSE entry", error))?;
        let mut aid = None;
        let mut label = None;
        let mut priority = None;
        for object in objects {
            match object.tag {
                0x4F => aid = Some(object.value.to_vec()),
                0x50 => label = Some(text_field(object.value)),
                0x87 => priority = object.value.first().map(|byte| byte & 0x0F),
                _ => {}
            }
        }
        if let Some(aid) = aid
            && AID_LENGTH_RANGE.contains(&aid.len())
        {
            candidates.push(CandidateApplication {
                aid,
                label,
                priority,
            });
        }
    }
    // Stable: ties keep the card's order. Priority 0 means "no priority" in EMV.
    candidates.sort_by_key(|candidate| match candidate.priority {
        Some(priority) if priority > 0 => priority,
        _ => u8::MAX,
    });
    Ok(candidates)
}

/// Printable ASCII of an EMV text field, trimmed and bounded; anything else becomes `?`.
fn text_field(value: &[u8]) -> String {
    value
        .iter()
        .take(MAX_TEXT_FIELD_CHARS)
        .map(|byte| {
            if byte.is_ascii_graphic() || *byte == b' ' {
                char::from(*byte)
            } else {
                '?'
            }
        })
        .collect::<String>()
        .trim()
        .to_string()
}

fn bcd(value: u64, bytes: usize) -> Vec<u8> {
    let mut out = vec![0u8; bytes];
    let mut rest = value;
    for slot in out.iter_mut().rev() {
        let low = (rest % 10) as u8;
        rest /= 10;
        let high = (rest % 10) as u8;
        rest /= 10;
        *slot = (high << 4) | low;
    }
    out
}

/// Terminal transaction qualifiers sent when a card asks for tag 9F66: contactless EMV
/// (qVSDC) supported, online capable, no magstripe mode, no CVM.
const TERMINAL_TRANSACTION_QUALIFIERS: [u8; 4] = [0x26, 0x00, 0x00, 0x00];
/// Terminal type 22: attended, online with offline capability, merchant operated.
const TERMINAL_TYPE: u8 = 0x22;

/// Builds the PDOL data the card asked for, from what the terminal knows. Numeric fields
/// are right-aligned; other fields are cut or zero-padded on the right (EMV Book 3, 5.4).
pub fn build_pdol_data(pdol: &[(u32, usize)], transaction: &TransactionContext) -> Vec<u8> {
    let mut data = Vec::new();
    for &(tag, length) in pdol {
        let (value, numeric): (Vec<u8>, bool) = match tag {
            0x9F66 => (TERMINAL_TRANSACTION_QUALIFIERS.to_vec(), false),
            0x9F02 => (bcd(transaction.amount_fen, 6), true),
            0x9F03 => (bcd(0, 6), true),
            0x9F1A => (bcd(u64::from(transaction.country_code), 2), true),
            0x5F2A => (bcd(u64::from(transaction.currency_code), 2), true),
            0x9A => {
                let (year, month, day) = transaction.date;
                let yymmdd =
                    u64::from(year % 100) * 10_000 + u64::from(month) * 100 + u64::from(day);
                (bcd(yymmdd, 3), true)
            }
            0x9C => (vec![0x00], true),
            0x9F37 => (transaction.unpredictable_number.to_vec(), false),
            0x9F35 => (vec![TERMINAL_TYPE], false),
            _ => (Vec::new(), false),
        };
        let mut field = vec![0u8; length];
        if numeric {
            let take = value.len().min(length);
            field[length - take..].copy_from_slice(&value[value.len() - take..]);
        } else {
            let take = value.len().min(length);
            field[..take].copy_from_slice(&value[..take]);
        }
        data.extend_from_slice(&field);
    }
    data
}

/// One entry of the application file locator: read records `first..=last` of file `sfi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileLocatorEntry {
    pub sfi: u8,
    pub first_record: u8,
    pub last_record: u8,
}

/// Parses an AFL (tag 94): four bytes per entry, short file identifiers 1..=30, records from
/// one up.
pub fn parse_afl(afl: &[u8]) -> Result<Vec<FileLocatorEntry>, DeviceError> {
    if !afl.len().is_multiple_of(4) {
        return Err(protocol(
            "application file locator is not a multiple of four bytes",
        ));
    }
    let mut entries = Vec::new();
    let mut total = 0usize;
    for chunk in afl.chunks_exact(4) {
        let sfi = chunk[0] >> 3;
        let (first_record, last_record) = (chunk[1], chunk[2]);
        if !(1..=30).contains(&sfi) || first_record == 0 || last_record < first_record {
            return Err(protocol("application file locator entry is invalid"));
        }
        total += usize::from(last_record - first_record) + 1;
        if total > MAX_RECORDS_TO_READ {
            return Err(protocol("application file locator lists too many records"));
        }
        entries.push(FileLocatorEntry {
            sfi,
            first_record,
            last_record,
        });
    }
    Ok(entries)
}

/// What GET PROCESSING OPTIONS returned: the AFL and, in format 2, any data objects (some
/// cards put track 2 and the PAN right there).
struct ProcessingOptions {
    afl: Vec<u8>,
    template: Vec<u8>,
}

fn parse_processing_options(data: &[u8]) -> Result<ProcessingOptions, DeviceError> {
    let objects = tlv::parse(data).map_err(|error| tlv_error("GPO answer", error))?;
    let first = objects
        .first()
        .ok_or_else(|| protocol("GPO answer is empty"))?;
    match first.tag {
        // Format 1: AIP (2 bytes) then AFL.
        0x80 => {
            let afl = first
                .value
                .get(2..)
                .ok_or_else(|| protocol("GPO format 1 too short"))?;
            Ok(ProcessingOptions {
                afl: afl.to_vec(),
                template: Vec::new(),
            })
        }
        0x77 => {
            let afl = tlv::find(first.value, 0x94)
                .map_err(|error| tlv_error("GPO answer", error))?
                .unwrap_or_default();
            Ok(ProcessingOptions {
                afl: afl.to_vec(),
                template: first.value.to_vec(),
            })
        }
        _ => Err(protocol("GPO answer has neither format 1 nor format 2")),
    }
}

/// The data objects gathered from the GPO answer and the records, first occurrence wins.
#[derive(Default)]
struct Collected {
    pan: Option<Vec<u8>>,
    track2: Option<Vec<u8>>,
    expiry: Option<Vec<u8>>,
    name: Option<Vec<u8>>,
    pan_sequence_number: Option<u8>,
}

impl Collected {
    fn absorb(&mut self, data: &[u8]) -> Result<(), DeviceError> {
        let lookup = |tag| tlv::find(data, tag).map_err(|error| tlv_error("card record", error));
        if self.pan.is_none() {
            self.pan = lookup(0x5A)?.map(<[u8]>::to_vec);
        }
        if self.track2.is_none() {
            // 57: track 2 equivalent data; 9F6B: the same on some Mastercard profiles.
            self.track2 = match lookup(0x57)? {
                Some(value) => Some(value.to_vec()),
                None => lookup(0x9F6B)?.map(<[u8]>::to_vec),
            };
        }
        if self.expiry.is_none() {
            self.expiry = lookup(0x5F24)?.map(<[u8]>::to_vec);
        }
        if self.name.is_none() {
            self.name = lookup(0x5F20)?.map(<[u8]>::to_vec);
        }
        if self.pan_sequence_number.is_none() {
            self.pan_sequence_number = lookup(0x5F34)?
                .and_then(|value| value.first().copied())
                .map(from_bcd_byte);
        }
        Ok(())
    }
}

fn from_bcd_byte(byte: u8) -> u8 {
    (byte >> 4).min(9) * 10 + (byte & 0x0F).min(9)
}

/// BCD nibbles as digits, stopping at the first `F` padding nibble; `None` if any other
/// nibble is not a digit.
fn bcd_digits(value: &[u8]) -> Option<String> {
    let mut digits = String::with_capacity(value.len() * 2);
    for nibble in value.iter().flat_map(|byte| [byte >> 4, byte & 0x0F]) {
        match nibble {
            0..=9 => digits.push(char::from(b'0' + nibble)),
            0x0F => break,
            _ => return None,
        }
    }
    Some(digits)
}

/// Checks a card number: 12 to 19 digits and a valid Luhn check digit.
pub fn is_valid_pan(digits: &str) -> bool {
    if !PAN_DIGITS_RANGE.contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(index, byte)| {
            let digit = u32::from(byte - b'0');
            if index % 2 == 1 {
                let doubled = digit * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                digit
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Expiry from tag 5F24 (YYMMDD, BCD).
fn expiry_from_5f24(value: &[u8]) -> Option<CardExpiry> {
    let digits = bcd_digits(value)?;
    CardExpiry::from_yymm(digits.get(0..4)?)
}

/// Reads the payment application of the card in the field. `transaction` fills the PDOL
/// (amount, currency, date) when the card asks for it.
pub fn read_payment_application(
    transport: &mut dyn ApduTransport,
    transaction: &TransactionContext,
) -> Result<CardData, DeviceError> {
    // 1. SELECT PPSE.
    let ppse = exchange(transport, &select_command(PPSE_NAME), "SELECT PPSE")?;
    if ppse.status != 0x9000 {
        return Err(protocol(format!(
            "card has no contactless payment directory (SELECT PPSE status {:04X}); it may not be a payment card",
            ppse.status
        )));
    }
    let candidates = parse_ppse(&ppse.data)?;
    let Some(chosen) = candidates.into_iter().next() else {
        return Err(protocol(
            "card lists no payment application; ask for another card",
        ));
    };

    // 2. SELECT AID.
    let selected = exchange(transport, &select_command(&chosen.aid), "SELECT AID")?;
    if selected.status != 0x9000 {
        return Err(protocol(format!(
            "card refused its own payment application (SELECT AID status {:04X})",
            selected.status
        )));
    }
    let fci = &selected.data;
    let find_in_fci =
        |tag| tlv::find(fci, tag).map_err(|error| tlv_error("SELECT AID answer", error));
    let application_label = find_in_fci(0x50)?.map(text_field).or(chosen.label);
    let pdol = match find_in_fci(0x9F38)? {
        Some(pdol) => tlv::parse_dol(pdol).map_err(|error| tlv_error("PDOL", error))?,
        None => Vec::new(),
    };

    // 3. GET PROCESSING OPTIONS.
    let pdol_data = build_pdol_data(&pdol, transaction);
    if pdol_data.len() > MAX_PDOL_DATA_BYTES {
        return Err(protocol(
            "card asks for more PDOL data than a command can carry",
        ));
    }
    let wrapped = tlv::encode(0x83, &pdol_data);
    let mut gpo = vec![0x80, 0xA8, 0x00, 0x00, wrapped.len() as u8];
    gpo.extend_from_slice(&wrapped);
    gpo.push(0x00);
    let options = exchange(transport, &gpo, "GET PROCESSING OPTIONS")?;
    if options.status != 0x9000 {
        return Err(protocol(format!(
            "card declined to start the transaction (GPO status {:04X}); try another method",
            options.status
        )));
    }
    let processing = parse_processing_options(&options.data)?;
    let mut collected = Collected::default();
    collected.absorb(&processing.template)?;

    // 4. READ RECORD per AFL.
    for entry in parse_afl(&processing.afl)? {
        for record in entry.first_record..=entry.last_record {
            let command = [0x00, 0xB2, record, (entry.sfi << 3) | 0x04, 0x00];
            let answer = exchange(transport, &command, "READ RECORD")?;
            if answer.status != 0x9000 {
                return Err(protocol(format!(
                    "card could not read record {record} of file {} (status {:04X})",
                    entry.sfi, answer.status
                )));
            }
            collected.absorb(&answer.data)?;
        }
    }

    assemble(collected, chosen.aid, application_label)
}

fn assemble(
    collected: Collected,
    aid: Vec<u8>,
    application_label: Option<String>,
) -> Result<CardData, DeviceError> {
    let track2_digits = match &collected.track2 {
        Some(raw) => {
            // Track 2 equivalent: PAN, separator D, YYMM, service code, discretionary data.
            let text: String = raw
                .iter()
                .flat_map(|byte| [byte >> 4, byte & 0x0F])
                .map(|nibble| match nibble {
                    0..=9 => char::from(b'0' + nibble),
                    0x0D => 'D',
                    _ => 'F',
                })
                .collect();
            Some(text.trim_end_matches('F').to_string())
        }
        None => None,
    };
    let pan_from_track2 = track2_digits
        .as_ref()
        .and_then(|t| t.split_once('D'))
        .map(|(pan, _)| pan.to_string());
    let pan = match collected.pan.as_deref() {
        Some(raw) => bcd_digits(raw).ok_or_else(|| protocol("card number is not decimal"))?,
        None => pan_from_track2
            .clone()
            .ok_or_else(|| protocol("card returned no card number; ask for another card"))?,
    };
    if !is_valid_pan(&pan) {
        return Err(protocol(
            "card returned an invalid card number (length or check digit)",
        ));
    }
    if let Some(from_track2) = &pan_from_track2
        && *from_track2 != pan
    {
        return Err(protocol(
            "card number and track 2 disagree; ask for another card",
        ));
    }
    let expiry = match collected.expiry.as_deref().and_then(expiry_from_5f24) {
        Some(expiry) => expiry,
        None => track2_digits
            .as_ref()
            .and_then(|t| t.split_once('D'))
            .and_then(|(_, rest)| rest.get(0..4))
            .and_then(CardExpiry::from_yymm)
            .ok_or_else(|| protocol("card returned no valid expiry date"))?,
    };
    let cardholder_name = collected
        .name
        .as_deref()
        .map(text_field)
        // Contactless cards often carry a placeholder instead of the name.
        .filter(|name| !name.is_empty() && name != "/");
    Ok(CardData {
        pan: SensitivePan::new(pan),
        expiry,
        cardholder_name,
        aid,
        application_label,
        pan_sequence_number: collected.pan_sequence_number,
        track2: track2_digits.map(SensitiveTrack2::new),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    /// A transport that answers from a script and records what it was sent.
    struct Scripted {
        answers: Vec<Vec<u8>>,
    }

    impl ApduTransport for Scripted {
        fn transmit(&mut self, _command: &[u8]) -> Result<Vec<u8>, DeviceError> {
            if self.answers.is_empty() {
                return Err(DeviceError::new(DEVICE, ErrorKind::Protocol, "card gone"));
            }
            Ok(self.answers.remove(0))
        }
    }

    fn with_ok(mut data: Vec<u8>) -> Vec<u8> {
        data.extend_from_slice(&[0x90, 0x00]);
        data
    }

    #[test]
    fn luhn() {
        assert!(is_valid_pan("4761739001010010"));
        assert!(!is_valid_pan("4761739001010011"));
        assert!(!is_valid_pan("47617390"));
        assert!(!is_valid_pan("47617390010100x0"));
    }

    #[test]
    fn pdol_fields_are_aligned() {
        let transaction = TransactionContext {
            amount_fen: 12_345,
            currency_code: 156,
            country_code: 156,
            date: (2026, 11, 22),
            unpredictable_number: [1, 2, 3, 4],
        };
        let pdol = [
            (0x9F02, 6),
            (0x5F2A, 2),
            (0x9A, 3),
            (0x9F37, 4),
            (0x9F66, 2),
            (0xDF01, 3),
        ];
        let data = build_pdol_data(&pdol, &transaction);
        assert_eq!(
            data,
            vec![
                0, 0, 0, 1, 0x23, 0x45, 0x01, 0x56, 0x26, 0x11, 0x22, 1, 2, 3, 4, 0x26, 0, 0, 0, 0
            ]
        );
    }

    #[test]
    fn afl_limits() {
        assert_eq!(parse_afl(&[0x08, 1, 2, 0]).unwrap().len(), 1);
        assert!(parse_afl(&[0x08, 1, 2]).is_err());
        assert!(parse_afl(&[0x00, 1, 2, 0]).is_err());
        assert!(parse_afl(&[0x08, 0, 2, 0]).is_err());
        assert!(parse_afl(&[0x08, 3, 2, 0]).is_err());
        assert!(parse_afl(&[0x08, 1, 0xFF, 0]).is_err());
    }

    #[test]
    fn hostile_card_answers_are_protocol_errors() {
        let transaction = TransactionContext::default();
        let scripts: Vec<Vec<Vec<u8>>> = vec![
            vec![vec![]],
            vec![vec![0x90]],
            vec![vec![0x6A, 0x82]],
            vec![with_ok(vec![0x6F, 0x05, 0x01])],
            vec![with_ok(tlv::encode(0x6F, &[]))],
            vec![vec![0x61, 0x10]; 10],
        ];
        for answers in scripts {
            let error =
                read_payment_application(&mut Scripted { answers }, &transaction).unwrap_err();
            assert_eq!(error.kind, ErrorKind::Protocol, "{error}");
        }
    }

    proptest! {
        #[test]
        fn random_answers_never_panic(
            answers in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8)
        ) {
            let mut answers: Vec<Vec<u8>> = answers;
            // Make most answers look successful so the parser gets past the status checks.
            for answer in answers.iter_mut() {
                answer.extend_from_slice(&[0x90, 0x00]);
            }
            let _ = read_payment_application(&mut Scripted { answers }, &TransactionContext::default());
        }
    }
}
