//! Camera frames from a byte stream of fixed-size raw frames (8-bit grey or YUYV 4:2:2), and a
//! V4L2 camera read through `v4l2-ctl` (Debian package `v4l-utils`) writing such a stream:
//! a camera without `unsafe` ioctls and without a new crate. The stream reader is tested with
//! generated frames; the `v4l2-ctl` camera has not met real hardware yet.

use std::io::{ErrorKind as IoErrorKind, Read};
use std::process::{Child, ChildStdout, Command, Stdio};

use image::GrayImage;

use super::{FrameSource, MAX_FRAME_PIXELS};
use crate::error::{DeviceError, ErrorKind};

const DEVICE: &str = "camera";

/// How the bytes of one frame are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawPixelFormat {
    /// One byte per pixel, luminance.
    Gray8,
    /// YUYV 4:2:2 (V4L2 `YUYV`, what most USB cameras deliver): Y0 U Y1 V per two pixels;
    /// the Y bytes are the grey image.
    Yuyv,
}

impl RawPixelFormat {
    fn bytes_per_pixel(self) -> usize {
        match self {
            RawPixelFormat::Gray8 => 1,
            RawPixelFormat::Yuyv => 2,
        }
    }
}

/// Frames of `width × height` pixels read back to back from `reader`.
#[derive(Debug)]
pub struct RawFrameStream<R> {
    reader: R,
    width: u32,
    height: u32,
    format: RawPixelFormat,
    buffer: Vec<u8>,
}

impl<R: Read> RawFrameStream<R> {
    /// Fails when the frame size is zero, odd for YUYV, or larger than the decoder accepts.
    pub fn new(
        reader: R,
        width: u32,
        height: u32,
        format: RawPixelFormat,
    ) -> Result<RawFrameStream<R>, DeviceError> {
        let pixels = u64::from(width) * u64::from(height);
        if pixels == 0
            || pixels > MAX_FRAME_PIXELS
            || (format == RawPixelFormat::Yuyv && width % 2 == 1)
        {
            return Err(DeviceError::new(
                DEVICE,
                ErrorKind::Other,
                format!("unsupported frame size {width}×{height} for {format:?}"),
            ));
        }
        let frame_bytes = pixels as usize * format.bytes_per_pixel();
        Ok(RawFrameStream {
            reader,
            width,
            height,
            format,
            buffer: vec![0; frame_bytes],
        })
    }
}

impl<R: Read> FrameSource for RawFrameStream<R> {
    fn next_frame(&mut self) -> Result<Option<GrayImage>, DeviceError> {
        let mut filled = 0;
        while filled < self.buffer.len() {
            match self.reader.read(&mut self.buffer[filled..]) {
                Ok(0) if filled == 0 => return Ok(None),
                Ok(0) => {
                    return Err(DeviceError::new(
                        DEVICE,
                        ErrorKind::Disconnected,
                        "camera stream ended in the middle of a frame",
                    ));
                }
                Ok(count) => filled += count,
                Err(error) if error.kind() == IoErrorKind::Interrupted => {}
                Err(error) => {
                    return Err(DeviceError::new(
                        DEVICE,
                        ErrorKind::Disconnected,
                        format!("camera stream failed: {error}"),
                    ));
                }
            }
        }
        let grey: Vec<u8> = match self.format {
            RawPixelFormat::Gray8 => self.buffer.clone(),
            RawPixelFormat::Yuyv => self.buffer.iter().step_by(2).copied().collect(),
        };
        GrayImage::from_raw(self.width, self.height, grey)
            .map(Some)
            .ok_or_else(|| {
                DeviceError::new(DEVICE, ErrorKind::Other, "frame buffer has the wrong size")
            })
    }
}

/// A V4L2 camera read through `v4l2-ctl --stream-mmap --stream-to=-` in YUYV. The child
/// process is killed when this is dropped.
#[derive(Debug)]
pub struct V4l2CtlCamera {
    child: Child,
    stream: RawFrameStream<ChildStdout>,
}

impl V4l2CtlCamera {
    /// Starts streaming `device` (`/dev/video0`) at `width × height` YUYV. A missing
    /// `v4l2-ctl` is `Other` (install `v4l-utils`); a camera that cannot stream shows up as
    /// `Disconnected` on the first frame.
    pub fn spawn(device: &str, width: u32, height: u32) -> Result<V4l2CtlCamera, DeviceError> {
        let mut child = Command::new("v4l2-ctl")
            .arg("--device")
            .arg(device)
            .arg(format!(
                "--set-fmt-video=width={width},height={height},pixelformat=YUYV"
            ))
            .arg("--stream-mmap")
            .arg("--stream-to=-")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| {
                DeviceError::new(
                    DEVICE,
                    ErrorKind::Other,
                    format!("cannot start v4l2-ctl for {device}: {error}; install v4l-utils"),
                )
            })?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(DeviceError::new(
                DEVICE,
                ErrorKind::Other,
                "v4l2-ctl has no output pipe",
            ));
        };
        let stream = match RawFrameStream::new(stdout, width, height, RawPixelFormat::Yuyv) {
            Ok(stream) => stream,
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(error);
            }
        };
        Ok(V4l2CtlCamera { child, stream })
    }
}

impl FrameSource for V4l2CtlCamera {
    fn next_frame(&mut self) -> Result<Option<GrayImage>, DeviceError> {
        match self.stream.next_frame()? {
            Some(frame) => Ok(Some(frame)),
            // A camera never ends on its own: the end of its stream means it is gone.
            None => Err(DeviceError::new(
                DEVICE,
                ErrorKind::Disconnected,
                "the camera stopped streaming; check its cable and the device in agent.toml",
            )),
        }
    }
}

impl Drop for V4l2CtlCamera {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
