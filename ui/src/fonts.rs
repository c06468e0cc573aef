//! The CJK font the screens need: found at start-up among the places Debian and other
//! distributions install Noto Sans CJK (Debian package `fonts-noto-cjk`), else a fallback.

use std::path::Path;

/// Where a CJK font may be, best first, with the family name to ask for.
pub const CJK_FONT_CANDIDATES: &[(&str, &str)] = &[
    (
        "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
        "Noto Sans CJK SC",
    ),
    (
        "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
        "Noto Sans CJK SC",
    ),
    (
        "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
        "Noto Sans CJK SC",
    ),
    (
        "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
        "WenQuanYi Micro Hei",
    ),
    (
        "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
        "Droid Sans Fallback",
    ),
];

/// A loaded font: its bytes (handed to iced) and the family to use as the default font.
#[derive(Debug, Clone)]
pub struct LoadedFont {
    pub bytes: Vec<u8>,
    pub family: &'static str,
    pub path: &'static str,
}

/// Loads the first CJK font found; `None` (with a warning naming the package) if none is.
pub fn load_cjk_font() -> Option<LoadedFont> {
    for (path, family) in CJK_FONT_CANDIDATES {
        if !Path::new(path).exists() {
            continue;
        }
        match std::fs::read(path) {
            Ok(bytes) => {
                tracing::info!(path, family, "CJK font loaded");
                return Some(LoadedFont {
                    bytes,
                    family,
                    path,
                });
            }
            Err(error) => tracing::warn!(path, %error, "cannot read a CJK font"),
        }
    }
    tracing::warn!(
        "no CJK font found: Chinese text will not render; install the Debian package fonts-noto-cjk"
    );
    None
}
