//! An emulated camera for QR payments: renders a payload (with qrcode) into a camera-like
//! 640×480 grayscale frame, scaled, rotated, offset, blurred and noisy, all drawn from a seed
//! so any frame can be reproduced; and a `FrameSource` that shows whatever payload a test or a
//! training lane presents.
// Image geometry needs floating point (rotation, sub-pixel sampling); no money is near here.
#![allow(clippy::float_arithmetic)]

use std::collections::VecDeque;

use image::{GrayImage, Luma};
use qrcode::{Color, QrCode};

use crate::camera::FrameSource;
use crate::error::{DeviceError, ErrorKind};

const DEVICE: &str = "camera emulator";

/// Frame size of the emulated camera (VGA, what cheap USB cameras deliver).
pub const FRAME_WIDTH: u32 = 640;
pub const FRAME_HEIGHT: u32 = 480;
/// Modules of white border around the code (the QR standard's quiet zone).
pub const QUIET_ZONE_MODULES: f32 = 4.0;
/// Samples per pixel side when rendering (anti-aliasing, like a real lens).
const SUPERSAMPLING: u32 = 2;
/// Most frames queued in an [`EmulatedCamera`].
pub const MAX_QUEUED_FRAMES: usize = 64;

/// How the code appears in the frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FrameDistortion {
    /// Size of one QR module in pixels.
    pub module_pixels: f32,
    /// Rotation of the code in degrees.
    pub rotation_degrees: f32,
    /// Offset of the code's centre from the frame's centre, in pixels.
    pub offset: (f32, f32),
    /// Rounds of defocus blur (0: sharp; each round is a Gaussian of σ ≈ 0.7 px).
    pub blur_passes: u32,
    /// Uniform noise added to every pixel, ± this many grey levels.
    pub noise_amplitude: u8,
    /// Grey levels of dark modules and light paper (real prints are never 0 and 255).
    pub dark_level: u8,
    pub light_level: u8,
    /// Seed of the noise.
    pub seed: u64,
}

impl Default for FrameDistortion {
    /// A clean, centred, upright code.
    fn default() -> FrameDistortion {
        FrameDistortion {
            module_pixels: 5.0,
            rotation_degrees: 0.0,
            offset: (0.0, 0.0),
            blur_passes: 0,
            noise_amplitude: 0,
            dark_level: 20,
            light_level: 235,
            seed: 0,
        }
    }
}

/// A small deterministic generator (SplitMix64): the same seed gives the same frame on every
/// machine, with no dependency.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[low, high)`.
    pub fn range_f32(&mut self, low: f32, high: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        low + (high - low) * unit
    }

    /// Uniform in `low..=high`.
    pub fn range_u32(&mut self, low: u32, high: u32) -> u32 {
        let span = u64::from(high.saturating_sub(low)) + 1;
        low + (self.next_u64() % span) as u32
    }
}

impl FrameDistortion {
    /// A random but reproducible distortion, within what a phone held up to a lane camera
    /// looks like and the lane must read: modules of 4.5 to 7 pixels, up to ±30° of rotation,
    /// off-centre, up to one round of defocus, sensor noise, washed-out contrast.
    ///
    /// Measured limits of the decoder (rqrr 0.11) beyond this range: rotations near ±45°,
    /// and modules under 4 pixels combined with blur, fail often; see docs/devices.md.
    pub fn from_seed(seed: u64) -> FrameDistortion {
        let mut random = SplitMix64::new(seed);
        FrameDistortion {
            module_pixels: random.range_f32(4.5, 7.0),
            rotation_degrees: random.range_f32(-30.0, 30.0),
            offset: (random.range_f32(-60.0, 60.0), random.range_f32(-40.0, 40.0)),
            blur_passes: random.range_u32(0, 1),
            noise_amplitude: random.range_u32(0, 20) as u8,
            dark_level: random.range_u32(10, 60) as u8,
            light_level: random.range_u32(180, 245) as u8,
            seed: random.next_u64(),
        }
    }
}

/// Renders `payload` as a QR code into a 640×480 frame with `distortion`. Fails when the
/// payload does not fit a QR code, or the code does not fit the frame at this scale.
pub fn render_qr_frame(
    payload: &str,
    distortion: &FrameDistortion,
) -> Result<GrayImage, DeviceError> {
    let code = QrCode::new(payload.as_bytes()).map_err(|error| {
        DeviceError::new(
            DEVICE,
            ErrorKind::Other,
            format!("payload does not fit a QR code: {error}"),
        )
    })?;
    let modules = code.width();
    let colors = code.to_colors();
    let side_modules = modules as f32 + 2.0 * QUIET_ZONE_MODULES;
    let side_pixels = side_modules * distortion.module_pixels;
    // The rotated square's bounding box must stay inside the frame.
    let angle = distortion.rotation_degrees.to_radians();
    let extent = side_pixels * (angle.cos().abs() + angle.sin().abs()) / 2.0;
    let centre_x = FRAME_WIDTH as f32 / 2.0 + distortion.offset.0;
    let centre_y = FRAME_HEIGHT as f32 / 2.0 + distortion.offset.1;
    if centre_x - extent < 0.0
        || centre_y - extent < 0.0
        || centre_x + extent > FRAME_WIDTH as f32
        || centre_y + extent > FRAME_HEIGHT as f32
    {
        return Err(DeviceError::new(
            DEVICE,
            ErrorKind::Other,
            "the code does not fit the frame at this scale, rotation and offset",
        ));
    }
    let (sin, cos) = angle.sin_cos();
    let dark = f32::from(distortion.dark_level);
    let light = f32::from(distortion.light_level);
    // Background: a gentle left-to-right gradient (a lane's uneven light).
    let background = |x: f32| light * 0.55 + 30.0 * (x / FRAME_WIDTH as f32);
    let module_at = |u: f32, v: f32| -> Option<bool> {
        // Code coordinates in modules, quiet zone included, origin at the top-left corner.
        if u < 0.0 || v < 0.0 || u >= side_modules || v >= side_modules {
            return None;
        }
        let column = (u - QUIET_ZONE_MODULES).floor();
        let row = (v - QUIET_ZONE_MODULES).floor();
        if column < 0.0 || row < 0.0 || column >= modules as f32 || row >= modules as f32 {
            return Some(false);
        }
        let index = row as usize * modules + column as usize;
        Some(colors.get(index) == Some(&Color::Dark))
    };
    let mut frame = GrayImage::new(FRAME_WIDTH, FRAME_HEIGHT);
    let step = 1.0 / SUPERSAMPLING as f32;
    let samples = (SUPERSAMPLING * SUPERSAMPLING) as f32;
    for y in 0..FRAME_HEIGHT {
        for x in 0..FRAME_WIDTH {
            let mut sum = 0.0;
            for sy in 0..SUPERSAMPLING {
                for sx in 0..SUPERSAMPLING {
                    let px = x as f32 + (sx as f32 + 0.5) * step - centre_x;
                    let py = y as f32 + (sy as f32 + 0.5) * step - centre_y;
                    // Inverse rotation into the code's frame.
                    let u = (px * cos + py * sin) / distortion.module_pixels + side_modules / 2.0;
                    let v = (-px * sin + py * cos) / distortion.module_pixels + side_modules / 2.0;
                    sum += match module_at(u, v) {
                        Some(true) => dark,
                        Some(false) => light,
                        None => background(x as f32),
                    };
                }
            }
            frame.put_pixel(
                x,
                y,
                Luma([(sum / samples).round().clamp(0.0, 255.0) as u8]),
            );
        }
    }
    let mut frame = blur(&frame, distortion.blur_passes);
    add_noise(&mut frame, distortion.noise_amplitude, distortion.seed);
    Ok(frame)
}

/// Defocus: `passes` rounds of the binomial kernel [1 2 1]/4 in each direction (a Gaussian
/// of σ ≈ 0.7 px per pass), edges clamped.
fn blur(frame: &GrayImage, passes: u32) -> GrayImage {
    let mut current = frame.clone();
    let (width, height) = frame.dimensions();
    for _ in 0..passes {
        let horizontal = GrayImage::from_fn(width, height, |x, y| {
            let left = current.get_pixel(x.saturating_sub(1), y).0[0];
            let centre = current.get_pixel(x, y).0[0];
            let right = current.get_pixel((x + 1).min(width - 1), y).0[0];
            Luma([((u32::from(left) + 2 * u32::from(centre) + u32::from(right) + 2) / 4) as u8])
        });
        current = GrayImage::from_fn(width, height, |x, y| {
            let up = horizontal.get_pixel(x, y.saturating_sub(1)).0[0];
            let centre = horizontal.get_pixel(x, y).0[0];
            let down = horizontal.get_pixel(x, (y + 1).min(height - 1)).0[0];
            Luma([((u32::from(up) + 2 * u32::from(centre) + u32::from(down) + 2) / 4) as u8])
        });
    }
    current
}

fn add_noise(frame: &mut GrayImage, amplitude: u8, seed: u64) {
    if amplitude == 0 {
        return;
    }
    let mut random = SplitMix64::new(seed);
    let span = u64::from(amplitude) * 2 + 1;
    for pixel in frame.pixels_mut() {
        let delta = (random.next_u64() % span) as i32 - i32::from(amplitude);
        pixel.0[0] = (i32::from(pixel.0[0]) + delta).clamp(0, 255) as u8;
    }
}

/// A blank frame: what the camera sees with nothing held up (lane background and noise).
pub fn blank_frame(seed: u64) -> GrayImage {
    let mut frame = GrayImage::from_fn(FRAME_WIDTH, FRAME_HEIGHT, |x, _| {
        Luma([(110 + x * 30 / FRAME_WIDTH) as u8])
    });
    add_noise(&mut frame, 8, seed);
    frame
}

/// A camera whose frames are whatever was presented: each [`EmulatedCamera::present`] queues
/// one frame showing the payload; with nothing queued it shows blank frames, `frames_left`
/// of them (then the source ends, so tests never wait forever).
#[derive(Debug)]
pub struct EmulatedCamera {
    queued: VecDeque<GrayImage>,
    blank_frames_left: u32,
    frame_counter: u64,
}

impl EmulatedCamera {
    /// A camera that shows at most `blank_frames` blank frames when nothing is presented.
    pub fn new(blank_frames: u32) -> EmulatedCamera {
        EmulatedCamera {
            queued: VecDeque::new(),
            blank_frames_left: blank_frames,
            frame_counter: 0,
        }
    }

    /// Queues a frame showing `payload` with `distortion`.
    pub fn present(
        &mut self,
        payload: &str,
        distortion: &FrameDistortion,
    ) -> Result<(), DeviceError> {
        if self.queued.len() >= MAX_QUEUED_FRAMES {
            return Err(DeviceError::new(
                DEVICE,
                ErrorKind::Other,
                "too many frames queued",
            ));
        }
        self.queued.push_back(render_qr_frame(payload, distortion)?);
        Ok(())
    }
}

impl FrameSource for EmulatedCamera {
    fn next_frame(&mut self) -> Result<Option<GrayImage>, DeviceError> {
        self.frame_counter += 1;
        if let Some(frame) = self.queued.pop_front() {
            return Ok(Some(frame));
        }
        if self.blank_frames_left == 0 {
            return Ok(None);
        }
        self.blank_frames_left -= 1;
        Ok(Some(blank_frame(self.frame_counter)))
    }
}
