//! The PN532 host-link framing (HSU/UART): what the host sends is cut into frames here,
//! checking preamble, length checksum, data checksum and postamble before anything is
//! parsed, and the chip's answers are built here. Pure functions over bytes, so the fuzzer
//! and the pseudo-terminal loop share them.
//!
//! Frame layouts (PN532 user manual, 6.2.1):
//! - normal:   `00 00 FF LEN LCS TFI PD0..PDn DCS 00` with `LEN + LCS = 0` and
//!   `TFI + PD0 + … + PDn + DCS = 0` (mod 256), TFI `D4` host to chip, `D5` chip to host;
//! - extended: `00 00 FF FF FF LENM LENL LCS TFI … DCS 00`;
//! - ACK `00 00 FF 00 FF 00`, NACK `00 00 FF FF 00 00`;
//! - application error `00 00 FF 01 FF 7F 81 00`.
//!
//! The wake-up sequence (`55 55 00 00 …`) and any other noise before a start code is skipped.

/// The ACK frame: the chip took the command.
pub const ACK_FRAME: [u8; 6] = [0x00, 0x00, 0xFF, 0x00, 0xFF, 0x00];
/// The NACK frame: send the last answer again.
pub const NACK_FRAME: [u8; 6] = [0x00, 0x00, 0xFF, 0xFF, 0x00, 0x00];
/// The application-level error frame (syntax error in the command).
pub const ERROR_FRAME: [u8; 8] = [0x00, 0x00, 0xFF, 0x01, 0xFF, 0x7F, 0x81, 0x00];
/// Frame identifier of host-to-chip frames.
pub const TFI_HOST_TO_CHIP: u8 = 0xD4;
/// Frame identifier of chip-to-host frames.
pub const TFI_CHIP_TO_HOST: u8 = 0xD5;
/// Most data bytes (TFI included) in a normal frame.
pub const NORMAL_FRAME_MAX_LEN: usize = 255;
/// Most data bytes (TFI included) in an extended frame: libnfc's 264-byte payload plus TFI.
pub const EXTENDED_FRAME_MAX_LEN: usize = 265;
/// Bytes kept while waiting for the rest of a frame; beyond this the buffer is garbage and
/// dropped, so a noisy line cannot grow memory.
pub const MAX_BUFFERED_BYTES: usize = 4096;

/// One thing the host sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostFrame {
    /// A command: command code and parameters (TFI stripped).
    Command(Vec<u8>),
    /// The host acknowledges (or aborts the running command).
    Ack,
    /// The host asks for the last answer again.
    Nack,
    /// A frame that failed its checks; the chip ignores it.
    Malformed(FrameError),
}

/// Why a frame was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    LengthChecksum,
    DataChecksum,
    Postamble,
    WrongDirection,
    TooLong,
    Empty,
}

/// Outcome of looking at the start of a buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not enough bytes yet for a whole frame.
    Incomplete,
    /// A frame, and how many bytes of the buffer it (and noise before it) used.
    Frame { frame: HostFrame, consumed: usize },
    /// No start code in the buffer: all of it (but a possible partial start code) is noise.
    Noise { consumed: usize },
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, byte| sum.wrapping_add(*byte))
}

/// Looks for one frame at the start of `buffer`. Never panics, whatever the bytes.
pub fn parse_host_frame(buffer: &[u8]) -> Parsed {
    // The start code is 00 FF (the preamble's leading 00 is optional on the wire).
    let Some(start) = buffer.windows(2).position(|pair| pair == [0x00, 0xFF]) else {
        // Keep a trailing 00: it may be the first half of a start code.
        let keep = usize::from(buffer.last() == Some(&0x00));
        return Parsed::Noise {
            consumed: buffer.len() - keep,
        };
    };
    let body = &buffer[start + 2..];
    let (Some(&first), Some(&second)) = (body.first(), body.get(1)) else {
        return Parsed::Incomplete;
    };
    let frame_at = |frame: HostFrame, used: usize| Parsed::Frame {
        frame,
        consumed: start + 2 + used,
    };
    match (first, second) {
        (0x00, 0xFF) => {
            if body.len() < 3 {
                return Parsed::Incomplete;
            }
            frame_at(HostFrame::Ack, 3)
        }
        (0xFF, 0x00) => {
            if body.len() < 3 {
                return Parsed::Incomplete;
            }
            frame_at(HostFrame::Nack, 3)
        }
        (0xFF, 0xFF) => {
            // Extended: LENM LENL LCS.
            let (Some(&high), Some(&low), Some(&lcs)) = (body.get(2), body.get(3), body.get(4))
            else {
                return Parsed::Incomplete;
            };
            if high.wrapping_add(low).wrapping_add(lcs) != 0 {
                return frame_at(HostFrame::Malformed(FrameError::LengthChecksum), 5);
            }
            let length = usize::from(u16::from_be_bytes([high, low]));
            if length > EXTENDED_FRAME_MAX_LEN {
                return frame_at(HostFrame::Malformed(FrameError::TooLong), 5);
            }
            data_part(&body[5..], length).map_or(Parsed::Incomplete, |(frame, used)| {
                frame_at(frame, 5 + used)
            })
        }
        (length, lcs) => {
            if length.wrapping_add(lcs) != 0 {
                // Skip just the start code so a real frame right after can still be found.
                return frame_at(HostFrame::Malformed(FrameError::LengthChecksum), 0);
            }
            data_part(&body[2..], usize::from(length))
                .map_or(Parsed::Incomplete, |(frame, used)| {
                    frame_at(frame, 2 + used)
                })
        }
    }
}

/// Checks `length` data bytes, DCS and postamble; `None` when more bytes are needed.
fn data_part(rest: &[u8], length: usize) -> Option<(HostFrame, usize)> {
    let data = rest.get(..length)?;
    let dcs = *rest.get(length)?;
    let postamble = *rest.get(length + 1)?;
    let used = length + 2;
    let frame = if length == 0 {
        HostFrame::Malformed(FrameError::Empty)
    } else if checksum(data).wrapping_add(dcs) != 0 {
        HostFrame::Malformed(FrameError::DataChecksum)
    } else if postamble != 0x00 {
        HostFrame::Malformed(FrameError::Postamble)
    } else if data[0] != TFI_HOST_TO_CHIP {
        HostFrame::Malformed(FrameError::WrongDirection)
    } else if data.len() < 2 {
        HostFrame::Malformed(FrameError::Empty)
    } else {
        HostFrame::Command(data[1..].to_vec())
    };
    Some((frame, used))
}

/// Builds the chip's answer to `command_code` carrying `data`: a normal frame when it fits,
/// an extended frame otherwise. Data longer than an extended frame is cut (the chip never
/// produces that; the emulator's card answers are bounded well below).
pub fn build_response(command_code: u8, data: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(data.len() + 2);
    payload.push(TFI_CHIP_TO_HOST);
    payload.push(command_code.wrapping_add(1));
    payload.extend_from_slice(&data[..data.len().min(EXTENDED_FRAME_MAX_LEN - 2)]);
    let mut frame = vec![0x00, 0x00, 0xFF];
    if payload.len() <= NORMAL_FRAME_MAX_LEN {
        let length = payload.len() as u8;
        frame.push(length);
        frame.push(length.wrapping_neg());
    } else {
        let [high, low] = (payload.len() as u16).to_be_bytes();
        frame.extend_from_slice(&[0xFF, 0xFF, high, low, high.wrapping_add(low).wrapping_neg()]);
    }
    frame.extend_from_slice(&payload);
    frame.push(checksum(&payload).wrapping_neg());
    frame.push(0x00);
    frame
}

/// Builds a host frame (what libnfc sends); for tests and fuzz seeds.
pub fn build_host_frame(command: &[u8]) -> Vec<u8> {
    let mut payload = vec![TFI_HOST_TO_CHIP];
    payload.extend_from_slice(command);
    let mut frame = vec![0x00, 0x00, 0xFF];
    if payload.len() <= NORMAL_FRAME_MAX_LEN {
        let length = payload.len() as u8;
        frame.extend_from_slice(&[length, length.wrapping_neg()]);
    } else {
        let [high, low] = (payload.len() as u16).to_be_bytes();
        frame.extend_from_slice(&[0xFF, 0xFF, high, low, high.wrapping_add(low).wrapping_neg()]);
    }
    frame.extend_from_slice(&payload);
    frame.push(checksum(&payload).wrapping_neg());
    frame.push(0x00);
    frame
}

/// Accumulates bytes from the line and yields frames.
#[derive(Debug, Default)]
pub struct FrameReader {
    buffer: Vec<u8>,
}

impl FrameReader {
    pub fn new() -> FrameReader {
        FrameReader::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() > MAX_BUFFERED_BYTES {
            // Garbage: nothing valid is that long. Keep the tail, which may start a frame.
            let cut = self.buffer.len() - EXTENDED_FRAME_MAX_LEN - 16;
            self.buffer.drain(..cut);
        }
    }

    /// The next whole frame, if the buffer holds one.
    pub fn next_frame(&mut self) -> Option<HostFrame> {
        match parse_host_frame(&self.buffer) {
            Parsed::Incomplete => None,
            Parsed::Noise { consumed } => {
                // What is left cannot hold a frame yet.
                self.buffer.drain(..consumed.min(self.buffer.len()));
                None
            }
            Parsed::Frame { frame, consumed } => {
                self.buffer.drain(..consumed.min(self.buffer.len()));
                Some(frame)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wakeup_then_sam_configuration() {
        let mut reader = FrameReader::new();
        let mut bytes = vec![0x55, 0x55];
        bytes.extend_from_slice(&[0u8; 14]);
        // libnfc's SAMConfiguration(normal mode) as it appears on the wire.
        bytes.extend_from_slice(&[0x00, 0x00, 0xFF, 0x03, 0xFD, 0xD4, 0x14, 0x01, 0x17, 0x00]);
        reader.push(&bytes);
        assert_eq!(
            reader.next_frame(),
            Some(HostFrame::Command(vec![0x14, 0x01]))
        );
        assert_eq!(reader.next_frame(), None);
    }

    #[test]
    fn split_frames_ack_nack_and_extended() {
        let mut reader = FrameReader::new();
        let frame = build_host_frame(&[0x02]);
        reader.push(&frame[..4]);
        assert_eq!(reader.next_frame(), None);
        reader.push(&frame[4..]);
        assert_eq!(reader.next_frame(), Some(HostFrame::Command(vec![0x02])));
        reader.push(&ACK_FRAME);
        reader.push(&NACK_FRAME);
        assert_eq!(reader.next_frame(), Some(HostFrame::Ack));
        assert_eq!(reader.next_frame(), Some(HostFrame::Nack));
        let long: Vec<u8> = std::iter::once(0x40)
            .chain((0..260).map(|i| i as u8))
            .collect();
        reader.push(&build_host_frame(&long));
        assert_eq!(reader.next_frame(), Some(HostFrame::Command(long)));
    }

    #[test]
    fn bad_checksums_are_reported_and_stream_resynchronises() {
        let mut reader = FrameReader::new();
        let mut bad = build_host_frame(&[0x02]);
        let dcs_at = bad.len() - 2;
        bad[dcs_at] ^= 0xFF;
        reader.push(&bad);
        reader.push(&build_host_frame(&[0x04]));
        assert_eq!(
            reader.next_frame(),
            Some(HostFrame::Malformed(FrameError::DataChecksum))
        );
        assert_eq!(reader.next_frame(), Some(HostFrame::Command(vec![0x04])));
        reader.push(&[0x00, 0x00, 0xFF, 0x05, 0x05]);
        reader.push(&build_host_frame(&[0x06]));
        assert_eq!(
            reader.next_frame(),
            Some(HostFrame::Malformed(FrameError::LengthChecksum))
        );
        assert_eq!(reader.next_frame(), Some(HostFrame::Command(vec![0x06])));
    }

    #[test]
    fn responses_round_trip_through_libnfc_rules() {
        let frame = build_response(0x02, &[0x32, 0x01, 0x06, 0x07]);
        assert_eq!(
            frame,
            vec![
                0, 0, 0xFF, 6, 0xFA, 0xD5, 0x03, 0x32, 0x01, 0x06, 0x07, 0xE8, 0
            ]
        );
        let long = build_response(0x40, &[0x11; 300]);
        assert_eq!(&long[3..5], &[0xFF, 0xFF]);
        let length = usize::from(u16::from_be_bytes([long[5], long[6]]));
        assert_eq!(length, EXTENDED_FRAME_MAX_LEN);
        assert_eq!(long.len(), 3 + 5 + length + 2);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..400), 0..8)) {
            let mut reader = FrameReader::new();
            for chunk in chunks {
                reader.push(&chunk);
                let mut guard = 0;
                while reader.next_frame().is_some() {
                    guard += 1;
                    prop_assert!(guard < 10_000);
                }
                prop_assert!(reader.buffer.len() <= MAX_BUFFERED_BYTES);
            }
        }
    }
}
