//! BER-TLV as EMV cards speak it, parsed defensively: a card (or someone pretending to be one)
//! controls every byte, so lengths are checked against what is there, nesting and counts are
//! bounded, and nothing here can panic.

use std::fmt;

/// Longest tag accepted, in bytes. EMV tags are one or two bytes; three leaves room for
/// proprietary tags without letting a run of `0xFF` bytes read as one endless tag.
pub const MAX_TAG_BYTES: usize = 3;
/// Longest length field accepted, in bytes after the first (`0x81 xx`, `0x82 xx xx`). A card
/// response is at most a few hundred bytes, so three-byte lengths are already absurd.
pub const MAX_LENGTH_BYTES: usize = 2;
/// Deepest nesting of constructed objects searched. EMV responses nest four levels
/// (`6F` > `A5` > `BF0C` > `61`); anything much deeper is hostile.
pub const MAX_NESTING_DEPTH: usize = 8;
/// Most objects accepted at one level, so a response of thousands of one-byte objects
/// cannot make the reader allocate without bound.
pub const MAX_OBJECTS_PER_LEVEL: usize = 256;

/// Why a byte string is not valid BER-TLV. Messages never include the bytes themselves (they
/// may hold a card number).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlvError {
    /// The data ends inside a tag, a length or a value.
    Truncated,
    /// A tag longer than [`MAX_TAG_BYTES`].
    TagTooLong,
    /// An indefinite or over-long length field.
    BadLength,
    /// Constructed objects nested deeper than [`MAX_NESTING_DEPTH`].
    TooDeep,
    /// More than [`MAX_OBJECTS_PER_LEVEL`] objects at one level.
    TooMany,
}

impl fmt::Display for TlvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlvError::Truncated => "TLV data ends early",
            TlvError::TagTooLong => "TLV tag too long",
            TlvError::BadLength => "TLV length field invalid",
            TlvError::TooDeep => "TLV nesting too deep",
            TlvError::TooMany => "too many TLV objects",
        })
    }
}

impl std::error::Error for TlvError {}

/// One data object: its tag (the tag bytes as a big-endian number, `0x9F38` for PDOL) and its
/// value, borrowed from the input.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    pub tag: u32,
    pub value: &'a [u8],
}

impl Tlv<'_> {
    /// Whether the value holds further TLV objects (bit 6 of the tag's first byte).
    pub fn is_constructed(&self) -> bool {
        first_tag_byte(self.tag) & 0x20 != 0
    }
}

// Values may be card numbers: Debug shows the tag and the length only.
impl fmt::Debug for Tlv<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Tlv {{ tag: {:X}, length: {} }}",
            self.tag,
            self.value.len()
        )
    }
}

fn first_tag_byte(tag: u32) -> u8 {
    let mut first = tag;
    while first > 0xFF {
        first >>= 8;
    }
    // Lossless: the loop leaves at most eight bits.
    u8::try_from(first).unwrap_or(0)
}

/// Reads a tag at the start of `data`: returns the tag and the bytes it took.
pub fn read_tag(data: &[u8]) -> Result<(u32, usize), TlvError> {
    let first = *data.first().ok_or(TlvError::Truncated)?;
    let mut tag = u32::from(first);
    let mut used = 1;
    if first & 0x1F == 0x1F {
        // Subsequent bytes follow while bit 8 is set.
        loop {
            let next = *data.get(used).ok_or(TlvError::Truncated)?;
            used += 1;
            if used > MAX_TAG_BYTES {
                return Err(TlvError::TagTooLong);
            }
            tag = (tag << 8) | u32::from(next);
            if next & 0x80 == 0 {
                break;
            }
        }
    }
    Ok((tag, used))
}

/// Reads a definite length at the start of `data`: returns the length and the bytes it took.
pub fn read_length(data: &[u8]) -> Result<(usize, usize), TlvError> {
    let first = *data.first().ok_or(TlvError::Truncated)?;
    if first & 0x80 == 0 {
        return Ok((usize::from(first), 1));
    }
    let count = usize::from(first & 0x7F);
    if count == 0 || count > MAX_LENGTH_BYTES {
        // 0x80 is BER's indefinite length, which EMV never uses.
        return Err(TlvError::BadLength);
    }
    let bytes = data.get(1..1 + count).ok_or(TlvError::Truncated)?;
    let length = bytes
        .iter()
        .fold(0usize, |acc, byte| (acc << 8) | usize::from(*byte));
    Ok((length, 1 + count))
}

/// Parses one level of TLV objects. Padding bytes `0x00` and `0xFF` between objects (EMV
/// allows them) are skipped.
pub fn parse(data: &[u8]) -> Result<Vec<Tlv<'_>>, TlvError> {
    let mut objects = Vec::new();
    let mut rest = data;
    while let Some(&first) = rest.first() {
        if first == 0x00 || first == 0xFF {
            rest = &rest[1..];
            continue;
        }
        if objects.len() >= MAX_OBJECTS_PER_LEVEL {
            return Err(TlvError::TooMany);
        }
        let (tag, tag_bytes) = read_tag(rest)?;
        let after_tag = &rest[tag_bytes..];
        let (length, length_bytes) = read_length(after_tag)?;
        let after_length = &after_tag[length_bytes..];
        let value = after_length.get(..length).ok_or(TlvError::Truncated)?;
        objects.push(Tlv { tag, value });
        rest = &after_length[length..];
    }
    Ok(objects)
}

/// Finds the first object with `tag` anywhere in `data`, searching constructed objects
/// depth-first (bounded by [`MAX_NESTING_DEPTH`]). A malformed level is an error, not a miss.
pub fn find(data: &[u8], tag: u32) -> Result<Option<&[u8]>, TlvError> {
    find_at_depth(data, tag, 0)
}

fn find_at_depth(data: &[u8], tag: u32, depth: usize) -> Result<Option<&[u8]>, TlvError> {
    if depth >= MAX_NESTING_DEPTH {
        return Err(TlvError::TooDeep);
    }
    for object in parse(data)? {
        if object.tag == tag {
            return Ok(Some(object.value));
        }
        if object.is_constructed()
            && let Some(found) = find_at_depth(object.value, tag, depth + 1)?
        {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// Every object with `tag` at any depth (for example each `61` application entry in a PPSE
/// answer), in order.
pub fn find_all(data: &[u8], tag: u32) -> Result<Vec<&[u8]>, TlvError> {
    let mut found = Vec::new();
    find_all_at_depth(data, tag, 0, &mut found)?;
    Ok(found)
}

fn find_all_at_depth<'a>(
    data: &'a [u8],
    tag: u32,
    depth: usize,
    found: &mut Vec<&'a [u8]>,
) -> Result<(), TlvError> {
    if depth >= MAX_NESTING_DEPTH {
        return Err(TlvError::TooDeep);
    }
    for object in parse(data)? {
        if object.tag == tag {
            if found.len() >= MAX_OBJECTS_PER_LEVEL {
                return Err(TlvError::TooMany);
            }
            found.push(object.value);
        } else if object.is_constructed() {
            find_all_at_depth(object.value, tag, depth + 1, found)?;
        }
    }
    Ok(())
}

/// Parses a data object list (PDOL): tags with the lengths the card wants, no values.
pub fn parse_dol(data: &[u8]) -> Result<Vec<(u32, usize)>, TlvError> {
    let mut entries = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if entries.len() >= MAX_OBJECTS_PER_LEVEL {
            return Err(TlvError::TooMany);
        }
        let (tag, tag_bytes) = read_tag(rest)?;
        let (length, length_bytes) = read_length(&rest[tag_bytes..])?;
        entries.push((tag, length));
        rest = &rest[tag_bytes + length_bytes..];
    }
    Ok(entries)
}

/// Encodes one object (used to build commands and, in the emulator, card answers).
pub fn encode(tag: u32, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 6);
    let tag_bytes = tag.to_be_bytes();
    let skip = tag_bytes
        .iter()
        .take_while(|byte| **byte == 0)
        .count()
        .min(3);
    out.extend_from_slice(&tag_bytes[skip..]);
    match value.len() {
        length @ 0..=0x7F => out.push(length as u8),
        length @ 0x80..=0xFF => out.extend_from_slice(&[0x81, length as u8]),
        length => {
            let clamped = u16::try_from(length).unwrap_or(u16::MAX);
            out.push(0x82);
            out.extend_from_slice(&clamped.to_be_bytes());
        }
    }
    out.extend_from_slice(value);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_nested_ppse_answer() {
        let entry = [
            encode(0x4F, &[0xA0, 0, 0, 0, 3, 0x10, 0x10]),
            encode(0x50, b"VISA"),
        ]
        .concat();
        let fci = encode(0x6F, &encode(0xA5, &encode(0xBF0C, &encode(0x61, &entry))));
        assert_eq!(find(&fci, 0x50).unwrap(), Some(&b"VISA"[..]));
        assert_eq!(find_all(&fci, 0x61).unwrap().len(), 1);
        assert_eq!(find(&fci, 0x5A).unwrap(), None);
    }

    #[test]
    fn long_lengths_round_trip() {
        let value = vec![7u8; 300];
        let encoded = encode(0x70, &value);
        assert_eq!(&encoded[..4], &[0x70, 0x82, 0x01, 0x2C]);
        assert_eq!(parse(&encoded).unwrap()[0].value.len(), 300);
    }

    #[test]
    fn hostile_inputs_are_errors() {
        assert_eq!(parse(&[0x5A, 0x05, 1, 2]), Err(TlvError::Truncated));
        assert_eq!(parse(&[0x5A, 0x80, 1]), Err(TlvError::BadLength));
        assert_eq!(
            parse(&[0x5A, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]),
            Err(TlvError::BadLength)
        );
        assert_eq!(
            parse(&[0x5A, 0x82, 0xFF, 0xFF, 1]),
            Err(TlvError::Truncated)
        );
        assert_eq!(
            parse(&[0x9F, 0xFF, 0xFF, 0xFF, 0x01, 0x00]),
            Err(TlvError::TagTooLong)
        );
        assert_eq!(parse(&[0x9F]), Err(TlvError::Truncated));
        assert_eq!(parse(&[0x5A]), Err(TlvError::Truncated));
        // Nesting beyond the limit.
        let mut deep = encode(0x5A, &[1]);
        for _ in 0..20 {
            deep = encode(0x70, &deep);
        }
        assert_eq!(find(&deep, 0x5A), Err(TlvError::TooDeep));
        // Too many objects at one level.
        let many: Vec<u8> = (0..1000).flat_map(|_| [0x01u8, 0x00]).collect();
        assert_eq!(parse(&many), Err(TlvError::TooMany));
    }

    #[test]
    fn padding_is_skipped_and_dol_parses() {
        assert_eq!(
            parse(&[0x00, 0xFF, 0x5A, 0x01, 0x42, 0x00]).unwrap()[0].value,
            &[0x42]
        );
        let dol = [0x9F, 0x66, 0x04, 0x9F, 0x02, 0x06, 0x9A, 0x03];
        assert_eq!(
            parse_dol(&dol).unwrap(),
            vec![(0x9F66, 4), (0x9F02, 6), (0x9A, 3)]
        );
        assert_eq!(parse_dol(&[0x9F, 0x66]), Err(TlvError::Truncated));
    }

    #[test]
    fn debug_does_not_show_values() {
        let data = encode(0x5A, &[0x47, 0x61, 0x73, 0x90, 0x01, 0x01, 0x00, 0x10]);
        let debug = format!("{:?}", parse(&data).unwrap());
        assert!(!debug.contains("47"), "{debug}");
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600), tag in any::<u16>()) {
            let _ = parse(&data);
            let _ = find(&data, u32::from(tag));
            let _ = find_all(&data, u32::from(tag));
            let _ = parse_dol(&data);
        }
    }
}
