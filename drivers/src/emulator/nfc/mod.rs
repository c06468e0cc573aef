//! A software PN532 on a pseudo-terminal, speaking the pn532_uart frame protocol so that real
//! libnfc (and so the lane's real NFC driver) drives it unchanged; with virtual EMV cards that
//! are tapped and removed by method call or by the `tap [CARD]` / `remove` commands that
//! `lanepay emulate nfc` reads from stdin.
//!
//! The pseudo-terminal comes from `emulator::pty` (shared with the serial emulators): the
//! emulator keeps the reader's side open itself, so the reader may open, close and reopen the
//! path any number of times (as libnfc does) without the master seeing a hang-up, and an
//! optional symbolic link gives it a stable path across restarts.

pub mod card;
pub mod chip;
pub mod frame;

use std::io::{ErrorKind as IoErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use serialport::{SerialPort, TTYPort};

use super::pty::{PtyDevice, PtyGuard};

pub use card::{CardFault, CardLayout, DEFAULT_TEST_CARD, TEST_CARD_NAMES, VirtualCard};
use chip::{ChipAnswer, Field, Pn532Chip, command_name};
use frame::{ACK_FRAME, ERROR_FRAME, FrameReader, HostFrame, build_response};

use crate::error::{DeviceError, ErrorKind};

const DEVICE: &str = "nfc emulator";

/// How long the serving thread waits for bytes before checking whether it should stop; this
/// bounds how long dropping the emulator takes.
pub const READ_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Most command codes remembered for [`Pn532Emulator::commands_seen`] (oldest dropped).
pub const MAX_COMMANDS_REMEMBERED: usize = 4096;
/// Pause after an unexpected read error before trying again, so a broken pty cannot spin a
/// core.
const READ_ERROR_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct State {
    field: Field,
    commands_seen: Vec<u8>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in the serving thread must not take the controls down with it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A running PN532 emulator. Dropping it stops the serving thread and closes the pty.
#[derive(Debug)]
pub struct Pn532Emulator {
    path: PathBuf,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Pn532Emulator {
    /// Creates a pseudo-terminal and starts serving it. The reader opens [`Self::path`]
    /// (connstring [`Self::connstring`]).
    pub fn spawn() -> Result<Pn532Emulator, DeviceError> {
        Pn532Emulator::spawn_with_link(None)
    }

    /// Like [`Self::spawn`], and with `link` also points a symbolic link at the pty (replacing
    /// an older one): a stable path across emulator restarts, which is how a training lane
    /// keeps its configuration and how tests unplug and replug the reader.
    pub fn spawn_with_link(link: Option<&Path>) -> Result<Pn532Emulator, DeviceError> {
        let mut device = PtyDevice::create(DEVICE, link)?;
        let path = PathBuf::from(device.path());
        device
            .master()
            .set_timeout(READ_POLL_INTERVAL)
            .map_err(|error| {
                DeviceError::new(
                    DEVICE,
                    ErrorKind::Other,
                    format!("cannot configure the pseudo-terminal: {error}"),
                )
            })?;
        let (master, guard) = device.into_parts();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            stop: AtomicBool::new(false),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("pn532-emulator".to_string())
            .spawn(move || serve(master, guard, &thread_shared))
            .map_err(|error| {
                DeviceError::new(
                    DEVICE,
                    ErrorKind::Other,
                    format!("cannot start the emulator thread: {error}"),
                )
            })?;
        tracing::info!(path = %path.display(), "PN532 emulator serving");
        Ok(Pn532Emulator {
            path,
            shared,
            thread: Some(thread),
        })
    }

    /// The path the reader opens: the link when there is one, else the pty itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The libnfc connstring for this emulator.
    pub fn connstring(&self) -> String {
        crate::nfc::pn532_uart_connstring(&self.path.to_string_lossy())
    }

    /// Puts `card` in the field (replacing any card there).
    pub fn tap(&self, card: VirtualCard) {
        tracing::info!(card = %card.name, "emulated card tapped");
        self.shared.lock().field.tap(card);
    }

    /// Takes the card out of the field.
    pub fn remove(&self) {
        tracing::info!("emulated card removed");
        self.shared.lock().field.remove();
    }

    /// The name of the card in the field, if any.
    pub fn card_in_field(&self) -> Option<String> {
        self.shared
            .lock()
            .field
            .card
            .as_ref()
            .map(|card| card.name.clone())
    }

    /// The PN532 command codes received so far, oldest first (bounded by
    /// [`MAX_COMMANDS_REMEMBERED`]).
    pub fn commands_seen(&self) -> Vec<u8> {
        self.shared.lock().commands_seen.clone()
    }

    /// Runs one line of the emulator's command language: `tap [CARD]` (default card when none
    /// is named) or `remove`. Returns what happened, for the operator; an unknown command or
    /// card is an error message listing what is accepted.
    pub fn run_command(&self, line: &str) -> Result<String, String> {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("tap"), name, None) => {
                let name = name.unwrap_or(DEFAULT_TEST_CARD);
                let card = VirtualCard::test_card(name).ok_or_else(|| {
                    format!(
                        "unknown card {name:?}; test cards: {}",
                        TEST_CARD_NAMES.join(", ")
                    )
                })?;
                self.tap(card);
                Ok(format!("tapped {name}"))
            }
            (Some("remove"), None, None) => {
                self.remove();
                Ok("removed".to_string())
            }
            _ => Err(format!(
                "unknown command {:?}; commands: tap [CARD], remove (cards: {})",
                line.trim(),
                TEST_CARD_NAMES.join(", ")
            )),
        }
    }
}

impl Drop for Pn532Emulator {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The serving loop: bytes in, frames out, until told to stop.
fn serve(mut master: TTYPort, guard: PtyGuard, shared: &Shared) {
    // Keeps the reader's side open (so the master never sees a hang-up while the reader is
    // closed) and removes the link when serving ends.
    let _guard = guard;
    let mut chip = Pn532Chip::new();
    let mut reader = FrameReader::new();
    let mut last_answer: Option<Vec<u8>> = None;
    let mut buffer = [0u8; 512];
    while !shared.stop.load(Ordering::Relaxed) {
        let count = match master.read(&mut buffer) {
            Ok(count) => count,
            Err(error)
                if error.kind() == IoErrorKind::TimedOut
                    || error.kind() == IoErrorKind::WouldBlock =>
            {
                continue;
            }
            Err(error) if error.kind() == IoErrorKind::Interrupted => continue,
            Err(error) => {
                tracing::warn!("PN532 emulator read failed: {error}");
                std::thread::sleep(READ_ERROR_BACKOFF);
                continue;
            }
        };
        reader.push(&buffer[..count]);
        while let Some(frame) = reader.next_frame() {
            let reply = match frame {
                HostFrame::Command(command) => {
                    let code = command.first().copied().unwrap_or(0xFF);
                    tracing::debug!(
                        command = command_name(code),
                        code = format_args!("{code:02X}"),
                        length = command.len(),
                        "PN532 emulator command"
                    );
                    let answer = {
                        let mut state = shared.lock();
                        if state.commands_seen.len() >= MAX_COMMANDS_REMEMBERED {
                            state.commands_seen.remove(0);
                        }
                        state.commands_seen.push(code);
                        chip.handle(&command, &mut state.field)
                    };
                    let frame = match answer {
                        ChipAnswer::Data(data) => build_response(code, &data),
                        ChipAnswer::Error => ERROR_FRAME.to_vec(),
                    };
                    last_answer = Some(frame.clone());
                    let mut bytes = ACK_FRAME.to_vec();
                    bytes.extend_from_slice(&frame);
                    Some(bytes)
                }
                // The host aborts or acknowledges: nothing is running, nothing to do.
                HostFrame::Ack => None,
                HostFrame::Nack => last_answer.clone(),
                HostFrame::Malformed(error) => {
                    tracing::debug!(?error, "PN532 emulator ignored a malformed frame");
                    None
                }
            };
            if let Some(bytes) = reply
                && let Err(error) = master.write_all(&bytes).and_then(|()| master.flush())
            {
                tracing::warn!("PN532 emulator write failed: {error}");
            }
        }
    }
}
