//! QR codes drawn for the screens: the text encoded with `qrcode` into RGBA pixels for an iced
//! image (the dynamic and offline payment QR on both windows).

use qrcode::{Color, QrCode};

/// Pixels per QR module: large enough to scan from a phone across the counter.
pub const MODULE_PX: u32 = 8;
/// White modules around the code (the quiet zone the standard asks for).
pub const QUIET_MODULES: u32 = 4;

/// An RGBA image of `text` as a QR code: (width, height, pixels).
pub fn qr_rgba(text: &str) -> Option<(u32, u32, Vec<u8>)> {
    let code = QrCode::new(text.as_bytes()).ok()?;
    let modules = u32::try_from(code.width()).ok()?;
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET_MODULES) * MODULE_PX;
    let mut pixels = Vec::with_capacity((side * side * 4) as usize);
    for y in 0..side {
        for x in 0..side {
            let (mx, my) = (x / MODULE_PX, y / MODULE_PX);
            let dark = mx >= QUIET_MODULES
                && my >= QUIET_MODULES
                && mx < modules + QUIET_MODULES
                && my < modules + QUIET_MODULES
                && colors[((my - QUIET_MODULES) * modules + (mx - QUIET_MODULES)) as usize]
                    == Color::Dark;
            let value = if dark { 0 } else { 255 };
            pixels.extend_from_slice(&[value, value, value, 255]);
        }
    }
    Some((side, side, pixels))
}

/// The same as an iced image handle.
pub fn qr_handle(text: &str) -> Option<iced::widget::image::Handle> {
    let (width, height, pixels) = qr_rgba(text)?;
    Some(iced::widget::image::Handle::from_rgba(
        width, height, pixels,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_qr_has_dark_modules_inside_a_white_quiet_zone() {
        let (width, height, pixels) = qr_rgba("LPC1.test").unwrap();
        assert_eq!(width, height);
        assert_eq!(pixels.len(), (width * height * 4) as usize);
        // Top-left corner is quiet zone (white); the finder pattern's corner is dark.
        assert_eq!(pixels[0], 255);
        let finder = ((QUIET_MODULES * MODULE_PX) * width + QUIET_MODULES * MODULE_PX) * 4;
        assert_eq!(pixels[finder as usize], 0);
    }
}
