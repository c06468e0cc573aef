//! Text as pole displays and receipt printers take it: encoded in GB18030 (Chinese devices) or
//! ASCII, measured in device columns, and money shown from integer fen. Shared by the display
//! and printer drivers and their emulators, so both ends count columns the same way.
//!
//! Column rule: a character that encodes to one byte takes one column; a character that encodes
//! to two or four bytes (hanzi, full-width forms) takes two columns, which is how GB2312/GB18030
//! VFDs and printers draw them (a 16-dot-wide glyph on an 8-dot grid).

/// Character encoding the device expects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TextEncoding {
    /// GB18030 (a superset of GB2312 and GBK): Chinese devices.
    #[default]
    Gb18030,
    /// Plain ASCII; anything else is sent as `?`.
    Ascii,
}

/// Columns `c` takes on the device (see the module doc).
pub fn char_columns(c: char, encoding: TextEncoding) -> usize {
    if c.is_ascii() || encoding == TextEncoding::Ascii {
        1
    } else {
        2
    }
}

/// Columns `text` takes on the device.
pub fn columns(text: &str, encoding: TextEncoding) -> usize {
    text.chars().map(|c| char_columns(c, encoding)).sum()
}

/// Encodes `text` for the device. Control characters become spaces (they would be commands),
/// and characters the encoding cannot carry become `?`.
pub fn encode(text: &str, encoding: TextEncoding) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            bytes.push(b' ');
        } else if c.is_ascii() {
            bytes.push(c as u8);
        } else {
            match encoding {
                TextEncoding::Ascii => bytes.push(b'?'),
                TextEncoding::Gb18030 => {
                    let mut utf8 = [0u8; 4];
                    let (encoded, _, unmappable) =
                        encoding_rs::GB18030.encode(c.encode_utf8(&mut utf8));
                    if unmappable {
                        bytes.push(b'?');
                    } else {
                        bytes.extend_from_slice(&encoded);
                    }
                }
            }
        }
    }
    bytes
}

/// Decodes device bytes back to text (the emulators' side of [`encode`]). Bytes the encoding
/// does not define become U+FFFD.
pub fn decode(bytes: &[u8], encoding: TextEncoding) -> String {
    match encoding {
        TextEncoding::Gb18030 => encoding_rs::GB18030
            .decode_without_bom_handling(bytes)
            .0
            .into_owned(),
        TextEncoding::Ascii => bytes
            .iter()
            .map(|&b| {
                if b.is_ascii() {
                    b as char
                } else {
                    char::REPLACEMENT_CHARACTER
                }
            })
            .collect(),
    }
}

/// The longest prefix of `text` that fits in `width` columns, never splitting a double-width
/// character, with control characters replaced by spaces.
pub fn truncate_columns(text: &str, width: usize, encoding: TextEncoding) -> String {
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        let w = char_columns(c, encoding);
        if used + w > width {
            break;
        }
        used += w;
        out.push(c);
    }
    out
}

/// `left` and `right` on one line of `width` columns: `right` flush right, `left` truncated to
/// leave at least one space between them, the rest padded with spaces to exactly `width`.
pub fn left_right(left: &str, right: &str, width: usize, encoding: TextEncoding) -> String {
    let right = truncate_columns(right, width, encoding);
    let right_width = columns(&right, encoding);
    let room = width.saturating_sub(right_width);
    let left_room = if right.is_empty() {
        room
    } else {
        room.saturating_sub(1)
    };
    let left = truncate_columns(left, left_room, encoding);
    let gap = width.saturating_sub(columns(&left, encoding) + right_width);
    format!("{left}{}{right}", " ".repeat(gap))
}

/// `text` padded with spaces (or truncated) to exactly `width` columns.
pub fn pad_columns(text: &str, width: usize, encoding: TextEncoding) -> String {
    left_right(text, "", width, encoding)
}

/// Integer fen as yuan with two decimals (`1250` → `12.50`, `-5` → `-0.05`); money is never a
/// float on its way to a device.
pub fn format_fen(amount_fen: i64) -> String {
    let sign = if amount_fen < 0 { "-" } else { "" };
    let magnitude = amount_fen.unsigned_abs();
    format!("{sign}{}.{:02}", magnitude / 100, magnitude % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hanzi_take_two_columns_and_round_trip_through_gb18030() {
        let text = "可乐 Cola";
        assert_eq!(columns(text, TextEncoding::Gb18030), 2 + 2 + 1 + 4);
        let bytes = encode(text, TextEncoding::Gb18030);
        assert_eq!(&bytes[..4], &[0xBF, 0xC9, 0xC0, 0xD6]);
        assert_eq!(decode(&bytes, TextEncoding::Gb18030), text);
        assert_eq!(encode(text, TextEncoding::Ascii), b"?? Cola");
    }

    #[test]
    fn lines_are_fitted_without_splitting_wide_characters() {
        let line = left_right("可口可乐零度无糖饮料", "3.50", 20, TextEncoding::Gb18030);
        assert_eq!(columns(&line, TextEncoding::Gb18030), 20);
        assert_eq!(line, "可口可乐零度无  3.50");
        assert_eq!(pad_columns("Total", 8, TextEncoding::Ascii), "Total   ");
        assert_eq!(truncate_columns("a可", 2, TextEncoding::Gb18030), "a");
    }

    #[test]
    fn fen_are_formatted_with_two_decimals() {
        assert_eq!(format_fen(1250), "12.50");
        assert_eq!(format_fen(5), "0.05");
        assert_eq!(format_fen(-305), "-3.05");
        assert_eq!(format_fen(i64::MIN), "-92233720368547758.08");
    }
}
