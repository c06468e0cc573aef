//! The PN532 reader (and any reader libnfc drives) through nfc1: opens the device by
//! connstring, polls for ISO 14443-A cards, exchanges APDUs, and reopens the device after it
//! disappears, without a restart of the lane.
//!
//! libnfc pitfalls handled here (see PLATFORM.md): a serial reader is never found by scanning,
//! so it is always opened by connstring; selecting with no card present returns success with an
//! all-zero target, so a target only counts when its UID length is not zero; libnfc's default
//! "infinite select" would block forever, so it is turned off and the driver polls.

use std::fmt;
use std::time::{Duration, Instant};

use nfc1::target_info::TargetInfo;
use nfc1::{BaudRate, Modulation, ModulationType, Property};

use super::emv::{self, ApduTransport};
#[cfg(test)]
use super::pn532_uart_connstring;
use super::{CardData, CardReader, DetectedCard, TransactionContext};
use crate::error::{DeviceError, DeviceStatus, ErrorKind};

const DEVICE: &str = "nfc";

/// Time between two polls for a card while waiting. Short enough that a tap feels instant,
/// long enough not to keep the serial line busy.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long one APDU may take on the card (READ RECORD on a slow card is well under this).
pub const APDU_TIMEOUT: Duration = Duration::from_millis(1_000);
/// Largest APDU answer accepted from the reader (short APDU: 256 data bytes and the status
/// word; the PN532's extended frames hold at most 264).
pub const MAX_APDU_RESPONSE_BYTES: usize = 264;

/// SAK bit 6: the card speaks ISO 14443-4 (every contactless payment card does).
const SAK_ISO14443_4: u8 = 0x20;

/// Longest wait honoured in one call; longer timeouts (`Duration::MAX`) are cut to this
/// rather than overflowing the clock.
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout.min(MAX_WAIT)).unwrap_or(now)
}

/// An open libnfc device. Field order matters: the device must close before its context.
struct OpenDevice {
    device: nfc1::Device,
    _context: nfc1::Context,
    information: String,
}

/// A contactless reader driven by libnfc (nfc1), opened by connstring such as
/// `pn532_uart:/dev/ttyUSB0:115200`.
pub struct Pn532Reader {
    connstring: String,
    open: Option<OpenDevice>,
    selected: Option<DetectedCard>,
    last_error: Option<DeviceError>,
}

impl fmt::Debug for Pn532Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pn532Reader")
            .field("connstring", &self.connstring)
            .field("open", &self.open.is_some())
            .field("selected", &self.selected)
            .finish()
    }
}

fn map_nfc_error(error: nfc1::Error, doing: &str) -> DeviceError {
    use nfc1::Error as E;
    let kind = match error {
        E::Io | E::NoDeviceFound | E::NoSuchDeviceFound => ErrorKind::Disconnected,
        E::Timeout => ErrorKind::Timeout,
        E::RfTransmissionError | E::TargetReleased | E::Chip | E::MifareAuthFailed => {
            ErrorKind::Protocol
        }
        _ => ErrorKind::Other,
    };
    let advice = match kind {
        ErrorKind::Disconnected => "; check the reader's cable and the port in agent.toml",
        ErrorKind::Protocol => {
            "; the card left the field or stopped answering: ask for another tap"
        }
        _ => "",
    };
    DeviceError::new(DEVICE, kind, format!("{doing}: {error}{advice}"))
}

impl Pn532Reader {
    /// Opens the reader. Fails with `Disconnected` when nothing answers at `connstring`; the
    /// lane may keep the reader and call again later ([`Pn532Reader::new`] does that lazily).
    pub fn open(connstring: &str) -> Result<Pn532Reader, DeviceError> {
        let mut reader = Pn532Reader::new(connstring);
        reader.ensure_open()?;
        Ok(reader)
    }

    /// A reader that opens the device on first use (and again after it disappears).
    pub fn new(connstring: &str) -> Pn532Reader {
        Pn532Reader {
            connstring: connstring.to_string(),
            open: None,
            selected: None,
            last_error: None,
        }
    }

    pub fn connstring(&self) -> &str {
        &self.connstring
    }

    /// libnfc's description of the open device ("chip: PN532 v1.6", …), if open.
    pub fn device_information(&self) -> Option<&str> {
        self.open.as_ref().map(|open| open.information.as_str())
    }

    fn ensure_open(&mut self) -> Result<&mut OpenDevice, DeviceError> {
        if self.open.is_none() {
            let opened = self.open_device();
            if let Err(error) = &opened {
                self.last_error = Some(error.clone());
            }
            let opened = opened?;
            tracing::info!(connstring = %self.connstring, "NFC reader opened");
            self.last_error = None;
            self.open = Some(opened);
        }
        self.open.as_mut().ok_or_else(|| {
            DeviceError::new(DEVICE, ErrorKind::Other, "reader state lost after opening")
        })
    }

    fn open_device(&self) -> Result<OpenDevice, DeviceError> {
        let mut context =
            nfc1::Context::new().map_err(|error| map_nfc_error(error, "starting libnfc"))?;
        let mut device = context.open_with_connstring(&self.connstring).map_err(|_| {
            DeviceError::new(
                DEVICE,
                ErrorKind::Disconnected,
                format!(
                    "no reader answers at {}; check the cable, the port and the speed in agent.toml",
                    self.connstring
                ),
            )
        })?;
        device
            .initiator_init()
            .map_err(|error| map_nfc_error(error, "initialising the reader"))?;
        // Poll instead of letting the chip wait forever for a card (libnfc's default).
        device
            .set_property_bool(Property::InfiniteSelect, false)
            .map_err(|error| map_nfc_error(error, "configuring the reader"))?;
        let information = device
            .get_information_about()
            .unwrap_or_else(|_| device.name().to_string());
        Ok(OpenDevice {
            device,
            _context: context,
            information,
        })
    }

    /// Forgets the device after an error that means it is gone, so the next call reopens it.
    fn note_error(&mut self, error: DeviceError) -> DeviceError {
        if error.kind == ErrorKind::Disconnected {
            tracing::warn!(connstring = %self.connstring, "NFC reader lost: {}", error.message);
            self.open = None;
            self.selected = None;
        }
        self.last_error = Some(error.clone());
        error
    }

    /// One poll: the card in the field, if any.
    fn poll_once(&mut self) -> Result<Option<DetectedCard>, DeviceError> {
        let open = self.ensure_open()?;
        let modulation = Modulation {
            modulation_type: ModulationType::Iso14443a,
            baud_rate: BaudRate::Baud106,
        };
        let target = match open.device.initiator_select_passive_target(&modulation) {
            Ok(target) => target,
            // No card: some libnfc paths report a timeout rather than zero targets.
            Err(nfc1::Error::Timeout) => return Ok(None),
            Err(error) => return Err(map_nfc_error(error, "polling for a card")),
        };
        let TargetInfo::Iso14443a(info) = target.target_info else {
            return Ok(None);
        };
        // PLATFORM pitfall: success with an all-zero target means no card.
        if info.uid_len == 0 {
            return Ok(None);
        }
        let uid = info
            .uid
            .get(..info.uid_len.min(info.uid.len()))
            .unwrap_or_default()
            .to_vec();
        Ok(Some(DetectedCard {
            uid,
            atqa: info.atqa,
            sak: info.sak,
        }))
    }
}

/// APDUs through libnfc to the selected card.
struct LibnfcTransport<'a> {
    device: &'a mut nfc1::Device,
}

impl ApduTransport for LibnfcTransport<'_> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, DeviceError> {
        self.device
            .initiator_transceive_bytes(
                command,
                MAX_APDU_RESPONSE_BYTES,
                nfc1::Timeout::Duration(APDU_TIMEOUT),
            )
            .map_err(|error| map_nfc_error(error, "exchanging with the card"))
    }
}

impl CardReader for Pn532Reader {
    fn wait_for_card(&mut self, timeout: Duration) -> Result<DetectedCard, DeviceError> {
        let deadline = deadline_after(timeout);
        loop {
            match self.poll_once() {
                Ok(Some(card)) => {
                    if card.sak & SAK_ISO14443_4 == 0 {
                        let error = DeviceError::new(
                            DEVICE,
                            ErrorKind::Protocol,
                            "the card in the field is not a contactless payment card (no ISO 14443-4)",
                        );
                        return Err(self.note_error(error));
                    }
                    tracing::debug!(uid_len = card.uid.len(), "card in the field");
                    self.selected = Some(card.clone());
                    return Ok(card);
                }
                Ok(None) => {}
                Err(error) => return Err(self.note_error(error)),
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(DeviceError::new(
                    DEVICE,
                    ErrorKind::Timeout,
                    format!("no card presented within {} ms", timeout.as_millis()),
                ));
            }
            std::thread::sleep(POLL_INTERVAL.min(deadline - now));
        }
    }

    fn read_card(&mut self, transaction: &TransactionContext) -> Result<CardData, DeviceError> {
        if self.selected.is_none() {
            return Err(DeviceError::new(
                DEVICE,
                ErrorKind::Other,
                "no card selected: call wait_for_card first",
            ));
        }
        let result = match self.ensure_open() {
            Ok(open) => {
                let mut transport = LibnfcTransport {
                    device: &mut open.device,
                };
                emv::read_payment_application(&mut transport, transaction)
            }
            Err(error) => Err(error),
        };
        match result {
            Ok(card) => {
                tracing::info!(aid = %card.aid_hex(), "payment card read");
                Ok(card)
            }
            Err(error) => Err(self.note_error(error)),
        }
    }

    fn card_present(&mut self) -> Result<bool, DeviceError> {
        if self.selected.is_none() {
            return Ok(false);
        }
        let open = self.ensure_open()?;
        match open.device.initiator_target_is_present_any() {
            Ok(()) => Ok(true),
            Err(nfc1::Error::TargetReleased | nfc1::Error::InvalidArgument) => {
                self.selected = None;
                Ok(false)
            }
            Err(error) => {
                let error = map_nfc_error(error, "checking the card");
                Err(self.note_error(error))
            }
        }
    }

    fn wait_for_removal(&mut self, timeout: Duration) -> Result<(), DeviceError> {
        let deadline = deadline_after(timeout);
        loop {
            if !self.card_present()? {
                tracing::debug!("card left the field");
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(DeviceError::new(
                    DEVICE,
                    ErrorKind::Timeout,
                    format!("card still in the field after {} ms", timeout.as_millis()),
                ));
            }
            std::thread::sleep(POLL_INTERVAL.min(deadline - now));
        }
    }

    fn status(&mut self) -> DeviceStatus {
        match self.ensure_open() {
            Ok(_) => DeviceStatus::Ready,
            Err(error) => DeviceStatus::Unavailable {
                kind: error.kind,
                reason: error.message,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_can_move_to_the_device_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<Pn532Reader>();
        assert_send::<CardData>();
    }

    #[test]
    fn endless_timeouts_do_not_overflow_the_clock() {
        assert!(deadline_after(Duration::MAX) > Instant::now());
    }

    #[test]
    fn connstring_format() {
        assert_eq!(
            pn532_uart_connstring("/dev/pts/7"),
            "pn532_uart:/dev/pts/7:115200"
        );
    }

    #[test]
    fn missing_reader_is_disconnected_not_fatal() {
        let mut reader = Pn532Reader::new("pn532_uart:/dev/lanepay-no-such-port:115200");
        match reader.status() {
            DeviceStatus::Unavailable { kind, .. } => assert_eq!(kind, ErrorKind::Disconnected),
            other => panic!("unexpected status {other:?}"),
        }
        let error = reader.wait_for_card(Duration::from_millis(10)).err();
        assert_eq!(error.map(|error| error.kind), Some(ErrorKind::Disconnected));
    }
}
