//! Camera QR scanning: a `FrameSource` trait for anything that yields grayscale frames (image
//! files or a directory of them today; a camera device where one is wired in) and rqrr
//! decoding of each frame into the payloads it shows.
//!
//! A V4L2 camera is read through `v4l2-ctl` (see [`stream`]): direct V4L2 ioctls would need
//! `unsafe` (the workspace denies it) or a V4L2 crate that is not among its dependencies.

pub mod stream;

use std::path::{Path, PathBuf};

use image::GrayImage;

use crate::error::{DeviceError, ErrorKind};

const DEVICE: &str = "camera";

/// Largest frame decoded, in pixels (a 4K frame). Bigger images are refused rather than
/// decoded slowly.
pub const MAX_FRAME_PIXELS: u64 = 3840 * 2160;
/// Most QR codes decoded from one frame; a frame showing more is almost certainly a poster,
/// not a customer's phone.
pub const MAX_CODES_PER_FRAME: usize = 8;
/// Most image files a directory source lists.
pub const MAX_DIRECTORY_FILES: usize = 10_000;
/// Longest payload kept, in bytes (a version-40 QR holds at most 2,953 bytes).
pub const MAX_PAYLOAD_BYTES: usize = 4096;
/// Largest image file read, in bytes.
pub const MAX_IMAGE_FILE_BYTES: u64 = 32 * 1024 * 1024;

/// Yields camera frames, one at a time.
pub trait FrameSource {
    /// The next frame as 8-bit grayscale; `Ok(None)` when the source has no more frames (the
    /// end of a list of files). A live camera blocks until its next frame.
    fn next_frame(&mut self) -> Result<Option<GrayImage>, DeviceError>;
}

/// Decodes every QR code in a frame. Codes that are found but do not decode (blurred,
/// partly hidden) are skipped: the next frame usually does better.
///
/// rqrr alone misses a fair share of slightly defocused codes (measured with the camera
/// emulator: about one frame in twelve at 4.5–7 pixels per module with one round of blur, and
/// some perfectly sharp codes whose module edges fall mid-pixel), so a frame that yields
/// nothing is tried again binarised with a global (Otsu) threshold, then sharpened (unsharp
/// mask), then enlarged twice. A frame with no code therefore costs four decoder passes
/// (roughly 7 + 7 + 7 + 28 ms in release on the reference machine); a frame with a readable
/// code usually one.
pub fn decode_frame(frame: &GrayImage) -> Result<Vec<String>, DeviceError> {
    let (width, height) = frame.dimensions();
    if u64::from(width) * u64::from(height) > MAX_FRAME_PIXELS {
        return Err(DeviceError::new(
            DEVICE,
            ErrorKind::Other,
            format!("frame of {width}×{height} pixels is larger than the decoder accepts"),
        ));
    }
    if width == 0 || height == 0 {
        return Ok(Vec::new());
    }
    let (columns, rows) = (width as usize, height as usize);
    let pixel_of = |image: &GrayImage, x: usize, y: usize| image.get_pixel(x as u32, y as u32).0[0];
    let first = decode_grids(
        rqrr::PreparedImage::prepare_from_greyscale(columns, rows, |x, y| pixel_of(frame, x, y))
            .detect_grids(),
    );
    if !first.is_empty() {
        return Ok(first);
    }
    let threshold = otsu_threshold(frame);
    let binarised = decode_grids(
        rqrr::PreparedImage::prepare_from_bitmap(columns, rows, |x, y| {
            pixel_of(frame, x, y) < threshold
        })
        .detect_grids(),
    );
    if !binarised.is_empty() {
        return Ok(binarised);
    }
    let sharpened = sharpen(frame);
    let sharp = decode_grids(
        rqrr::PreparedImage::prepare_from_greyscale(columns, rows, |x, y| {
            pixel_of(&sharpened, x, y)
        })
        .detect_grids(),
    );
    if !sharp.is_empty() || u64::from(width) * u64::from(height) * 4 > MAX_FRAME_PIXELS {
        return Ok(sharp);
    }
    Ok(decode_grids(
        rqrr::PreparedImage::prepare_from_greyscale(columns * 2, rows * 2, |x, y| {
            enlarged_pixel(frame, x, y)
        })
        .detect_grids(),
    ))
}

fn decode_grids<G: rqrr::BitGrid>(grids: Vec<rqrr::Grid<G>>) -> Vec<String> {
    let mut payloads = Vec::new();
    for grid in grids.into_iter().take(MAX_CODES_PER_FRAME) {
        match grid.decode() {
            Ok((_, content)) if content.len() <= MAX_PAYLOAD_BYTES => {
                if !payloads.contains(&content) {
                    payloads.push(content);
                }
            }
            Ok(_) => tracing::debug!("QR payload longer than the limit ignored"),
            Err(error) => tracing::trace!("QR code found but not decoded: {error}"),
        }
    }
    payloads
}

/// The grey level that best separates a frame's dark and light pixels (Otsu's method, in
/// integers).
fn otsu_threshold(frame: &GrayImage) -> u8 {
    let mut histogram = [0u64; 256];
    for pixel in frame.pixels() {
        histogram[usize::from(pixel.0[0])] += 1;
    }
    let total: u64 = histogram.iter().sum();
    let weighted_total: u64 = histogram
        .iter()
        .enumerate()
        .map(|(level, count)| level as u64 * count)
        .sum();
    let (mut background_count, mut background_sum) = (0u64, 0u64);
    let (mut best_level, mut best_score) = (128u8, 0u128);
    for (level, count) in histogram.iter().enumerate() {
        background_count += count;
        background_sum += level as u64 * count;
        let foreground_count = total - background_count;
        if background_count == 0 || foreground_count == 0 {
            continue;
        }
        // Between-class variance scaled by total²: (sum_b·n − sum·n_b)² / (n_b·n_f).
        let difference = i128::from(background_sum as i64) * i128::from(total as i64)
            - i128::from(weighted_total as i64) * i128::from(background_count as i64);
        let score = (difference * difference) as u128
            / (u128::from(background_count) * u128::from(foreground_count));
        if score > best_score {
            best_score = score;
            best_level = level as u8;
        }
    }
    best_level.saturating_add(1)
}

/// Unsharp masking: each pixel pushed away from the mean of its 3×3 neighbourhood, which
/// undoes some of a camera's defocus.
fn sharpen(frame: &GrayImage) -> GrayImage {
    let (width, height) = frame.dimensions();
    GrayImage::from_fn(width, height, |x, y| {
        let mut sum = 0i32;
        for dy in [-1i32, 0, 1] {
            for dx in [-1i32, 0, 1] {
                let sx = (x as i32 + dx).clamp(0, width as i32 - 1) as u32;
                let sy = (y as i32 + dy).clamp(0, height as i32 - 1) as u32;
                sum += i32::from(frame.get_pixel(sx, sy).0[0]);
            }
        }
        let centre = i32::from(frame.get_pixel(x, y).0[0]);
        let mean = sum / 9;
        image::Luma([(centre + 2 * (centre - mean)).clamp(0, 255) as u8])
    })
}

/// The frame enlarged twice, sampled bilinearly (integer arithmetic).
fn enlarged_pixel(frame: &GrayImage, x: usize, y: usize) -> u8 {
    let (width, height) = frame.dimensions();
    let (width, height) = (width as usize, height as usize);
    // Source coordinates in halves: pixel x of the enlarged image sits at (x - 0.5) / 2 + 0.5.
    let sx = x / 2;
    let sy = y / 2;
    let nx = if x % 2 == 1 {
        (sx + 1).min(width - 1)
    } else {
        sx.saturating_sub(1)
    };
    let ny = if y % 2 == 1 {
        (sy + 1).min(height - 1)
    } else {
        sy.saturating_sub(1)
    };
    let at = |px: usize, py: usize| u32::from(frame.get_pixel(px as u32, py as u32).0[0]);
    // Weights 3/4 for the nearest pixel, 1/4 for the neighbour, in each direction.
    let value = 9 * at(sx, sy) + 3 * at(nx, sy) + 3 * at(sx, ny) + at(nx, ny);
    ((value + 8) / 16) as u8
}

/// Reads an image file as grayscale.
pub fn load_frame(path: &Path) -> Result<GrayImage, DeviceError> {
    let size = std::fs::metadata(path)
        .map_err(|error| {
            DeviceError::new(
                DEVICE,
                ErrorKind::Disconnected,
                format!("{}: {error}", path.display()),
            )
        })?
        .len();
    if size > MAX_IMAGE_FILE_BYTES {
        return Err(DeviceError::new(
            DEVICE,
            ErrorKind::Other,
            format!(
                "{}: image file of {size} bytes is too large",
                path.display()
            ),
        ));
    }
    let reader = image::ImageReader::open(path)
        .and_then(|reader| reader.with_guessed_format())
        .map_err(|error| {
            DeviceError::new(
                DEVICE,
                ErrorKind::Disconnected,
                format!("{}: {error}", path.display()),
            )
        })?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(3840);
    limits.max_image_height = Some(3840);
    let mut reader = reader;
    reader.limits(limits);
    let decoded = reader.decode().map_err(|error| {
        DeviceError::new(
            DEVICE,
            ErrorKind::Protocol,
            format!("{}: not a readable image: {error}", path.display()),
        )
    })?;
    Ok(decoded.into_luma8())
}

fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|extension| extension.to_str())
        .map(|extension| {
            matches!(
                extension.to_ascii_lowercase().as_str(),
                "png" | "jpg" | "jpeg"
            )
        })
        .unwrap_or(false)
}

/// Frames from a list of image files, in order.
#[derive(Debug)]
pub struct ImageFileSource {
    files: std::collections::VecDeque<PathBuf>,
}

impl ImageFileSource {
    pub fn new(files: impl IntoIterator<Item = PathBuf>) -> ImageFileSource {
        ImageFileSource {
            files: files.into_iter().collect(),
        }
    }

    /// Every PNG and JPEG file in `directory`, sorted by name (a kiosk's or test's
    /// "camera"). A missing directory is `Disconnected`.
    pub fn from_directory(directory: &Path) -> Result<ImageFileSource, DeviceError> {
        let entries = std::fs::read_dir(directory).map_err(|error| {
            DeviceError::new(
                DEVICE,
                ErrorKind::Disconnected,
                format!(
                    "{}: {error}; check the camera directory in agent.toml",
                    directory.display()
                ),
            )
        })?;
        let mut files = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|error| {
                    DeviceError::new(
                        DEVICE,
                        ErrorKind::Other,
                        format!("{}: {error}", directory.display()),
                    )
                })?
                .path();
            if is_image_file(&path) {
                if files.len() >= MAX_DIRECTORY_FILES {
                    return Err(DeviceError::new(
                        DEVICE,
                        ErrorKind::Other,
                        format!(
                            "{} holds more than {MAX_DIRECTORY_FILES} images",
                            directory.display()
                        ),
                    ));
                }
                files.push(path);
            }
        }
        files.sort();
        Ok(ImageFileSource::new(files))
    }

    /// Frames not yet read.
    pub fn remaining(&self) -> usize {
        self.files.len()
    }
}

impl FrameSource for ImageFileSource {
    fn next_frame(&mut self) -> Result<Option<GrayImage>, DeviceError> {
        match self.files.pop_front() {
            Some(path) => load_frame(&path).map(Some),
            None => Ok(None),
        }
    }
}

/// Reads frames from a source and reports each payload once per appearance: a code held in
/// front of the camera for many frames is one scan, shown again after it left it is another.
#[derive(Debug)]
pub struct QrScanner<S> {
    source: S,
    in_view: Vec<String>,
}

impl<S: FrameSource> QrScanner<S> {
    pub fn new(source: S) -> QrScanner<S> {
        QrScanner {
            source,
            in_view: Vec::new(),
        }
    }

    /// Reads frames until one shows a payload that was not in the previous frame, and returns
    /// the new payloads; `Ok(None)` when the source ends.
    pub fn next_scan(&mut self) -> Result<Option<Vec<String>>, DeviceError> {
        loop {
            let Some(frame) = self.source.next_frame()? else {
                return Ok(None);
            };
            let payloads = decode_frame(&frame)?;
            let new: Vec<String> = payloads
                .iter()
                .filter(|payload| !self.in_view.contains(payload))
                .cloned()
                .collect();
            self.in_view = payloads;
            if !new.is_empty() {
                return Ok(Some(new));
            }
        }
    }

    pub fn source_mut(&mut self) -> &mut S {
        &mut self.source
    }
}
