//! Camera QR: payloads rendered into camera-like frames by the emulator decode back through
//! the real decoder, across a range of seeded distortions; image files and directories work as
//! frame sources.
#![allow(clippy::unwrap_used)]
#![cfg(feature = "emulator")]

use image::GrayImage;
use lanepay_drivers::ErrorKind;
use lanepay_drivers::camera::{FrameSource, ImageFileSource, QrScanner, decode_frame};
use lanepay_drivers::emulator::camera::{
    EmulatedCamera, FRAME_HEIGHT, FRAME_WIDTH, FrameDistortion, blank_frame, render_qr_frame,
};

/// Payloads the lane meets: a WeChat payment code, an Alipay code, a dynamic-QR URL and a long
/// signed offline-QR confirmation.
fn payloads() -> Vec<String> {
    vec![
        "134567890123456789".to_string(),
        "28763443825664394".to_string(),
        "https://pay.example.invalid/c/7f3a9e2b?amount=12.50".to_string(),
        format!("LPQ1.{}", "AbCdEfGh0123456789-_".repeat(8)),
    ]
}

/// Seeds tried per payload.
const SEEDS: u64 = 16;

#[test]
fn clean_frame_decodes() {
    for payload in payloads() {
        let frame = render_qr_frame(&payload, &FrameDistortion::default()).unwrap();
        assert_eq!(frame.dimensions(), (FRAME_WIDTH, FRAME_HEIGHT));
        assert_eq!(decode_frame(&frame).unwrap(), vec![payload]);
    }
}

#[test]
fn distorted_frames_decode_reliably() {
    let mut failures = Vec::new();
    for (index, payload) in payloads().into_iter().enumerate() {
        for seed in 0..SEEDS {
            let seed = seed + 1000 * index as u64;
            let distortion = FrameDistortion::from_seed(seed);
            let frame = match render_qr_frame(&payload, &distortion) {
                Ok(frame) => frame,
                // Too big for the frame at this scale and angle: not a decoding failure.
                Err(error) if error.kind == ErrorKind::Other => continue,
                Err(error) => panic!("{error}"),
            };
            let decoded = decode_frame(&frame).unwrap();
            if decoded != vec![payload.clone()] {
                failures.push((seed, distortion, decoded));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "frames that did not decode: {failures:#?}"
    );
}

#[test]
fn extreme_distortions_each_decode() {
    let payload = "134567890123456789";
    let cases = [
        FrameDistortion {
            rotation_degrees: 45.0,
            ..FrameDistortion::default()
        },
        FrameDistortion {
            rotation_degrees: -90.0,
            ..FrameDistortion::default()
        },
        FrameDistortion {
            module_pixels: 3.0,
            ..FrameDistortion::default()
        },
        FrameDistortion {
            module_pixels: 12.0,
            ..FrameDistortion::default()
        },
        FrameDistortion {
            blur_passes: 1,
            noise_amplitude: 30,
            ..FrameDistortion::default()
        },
        FrameDistortion {
            offset: (-180.0, -120.0),
            ..FrameDistortion::default()
        },
        FrameDistortion {
            dark_level: 80,
            light_level: 170,
            ..FrameDistortion::default()
        },
    ];
    for distortion in cases {
        let frame = render_qr_frame(payload, &distortion).unwrap();
        assert_eq!(
            decode_frame(&frame).unwrap(),
            vec![payload.to_string()],
            "{distortion:?}"
        );
    }
}

#[test]
fn rendering_is_deterministic_per_seed() {
    let distortion = FrameDistortion::from_seed(42);
    let first = render_qr_frame("seeded", &distortion).unwrap();
    let second = render_qr_frame("seeded", &FrameDistortion::from_seed(42)).unwrap();
    assert_eq!(first.as_raw(), second.as_raw());
    let other = render_qr_frame("seeded", &FrameDistortion::from_seed(43)).unwrap();
    assert_ne!(first.as_raw(), other.as_raw());
}

#[test]
fn blank_and_oversized_frames() {
    assert!(decode_frame(&blank_frame(7)).unwrap().is_empty());
    assert!(decode_frame(&GrayImage::new(0, 0)).unwrap().is_empty());
    let error = decode_frame(&GrayImage::new(5000, 5000)).unwrap_err();
    assert_eq!(error.kind, ErrorKind::Other);
    let too_big = FrameDistortion {
        module_pixels: 40.0,
        ..FrameDistortion::default()
    };
    assert!(render_qr_frame("does not fit", &too_big).is_err());
}

#[test]
fn directory_source_reads_images_in_name_order() {
    let directory = tempfile::tempdir().unwrap();
    let first = render_qr_frame("first", &FrameDistortion::from_seed(1)).unwrap();
    let second = render_qr_frame("second", &FrameDistortion::from_seed(2)).unwrap();
    first.save(directory.path().join("01.png")).unwrap();
    blank_frame(3)
        .save(directory.path().join("02.png"))
        .unwrap();
    second.save(directory.path().join("03.jpg")).unwrap();
    std::fs::write(directory.path().join("notes.txt"), "not an image").unwrap();

    let source = ImageFileSource::from_directory(directory.path()).unwrap();
    assert_eq!(source.remaining(), 3);
    let mut scanner = QrScanner::new(source);
    assert_eq!(
        scanner.next_scan().unwrap(),
        Some(vec!["first".to_string()])
    );
    assert_eq!(
        scanner.next_scan().unwrap(),
        Some(vec!["second".to_string()])
    );
    assert_eq!(scanner.next_scan().unwrap(), None);

    let missing = ImageFileSource::from_directory(&directory.path().join("gone")).unwrap_err();
    assert_eq!(missing.kind, ErrorKind::Disconnected);
}

#[test]
fn corrupt_image_is_a_clear_error() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("broken.png");
    std::fs::write(&path, b"\x89PNG\r\n\x1a\nthis is not really a png").unwrap();
    let mut source = ImageFileSource::new(vec![path]);
    let error = source.next_frame().unwrap_err();
    assert_eq!(error.kind, ErrorKind::Protocol, "{error}");
}

#[test]
fn a_code_held_up_is_one_scan_until_it_leaves_the_view() {
    let mut camera = EmulatedCamera::new(2);
    let payload = "134567890123456789";
    camera
        .present(payload, &FrameDistortion::from_seed(5))
        .unwrap();
    camera
        .present(payload, &FrameDistortion::from_seed(6))
        .unwrap();
    let mut scanner = QrScanner::new(camera);
    assert_eq!(
        scanner.next_scan().unwrap(),
        Some(vec![payload.to_string()])
    );
    // The second frame shows the same code: no new scan; the camera then shows blank frames
    // and runs out.
    assert_eq!(scanner.next_scan().unwrap(), None);

    let mut camera = EmulatedCamera::new(0);
    camera
        .present(payload, &FrameDistortion::from_seed(7))
        .unwrap();
    let mut scanner = QrScanner::new(camera);
    assert_eq!(
        scanner.next_scan().unwrap(),
        Some(vec![payload.to_string()])
    );
    scanner
        .source_mut()
        .present(payload, &FrameDistortion::from_seed(8))
        .unwrap();
    assert_eq!(scanner.next_scan().unwrap(), None);
}

#[test]
fn raw_yuyv_and_grey_streams_decode_and_a_cut_stream_is_disconnected() {
    use lanepay_drivers::camera::stream::{RawFrameStream, RawPixelFormat};

    let first = render_qr_frame("first", &FrameDistortion::from_seed(11)).unwrap();
    let second = render_qr_frame("second", &FrameDistortion::from_seed(12)).unwrap();
    // YUYV as a USB camera sends it: Y0 U Y1 V, chroma neutral.
    let yuyv: Vec<u8> = [&first, &second]
        .iter()
        .flat_map(|frame| {
            frame
                .as_raw()
                .iter()
                .flat_map(|y| [*y, 128])
                .collect::<Vec<u8>>()
        })
        .collect();
    let stream = RawFrameStream::new(
        std::io::Cursor::new(yuyv.clone()),
        FRAME_WIDTH,
        FRAME_HEIGHT,
        RawPixelFormat::Yuyv,
    )
    .unwrap();
    let mut scanner = QrScanner::new(stream);
    assert_eq!(
        scanner.next_scan().unwrap(),
        Some(vec!["first".to_string()])
    );
    assert_eq!(
        scanner.next_scan().unwrap(),
        Some(vec!["second".to_string()])
    );
    assert_eq!(scanner.next_scan().unwrap(), None);

    let mut grey = RawFrameStream::new(
        std::io::Cursor::new(first.as_raw().clone()),
        FRAME_WIDTH,
        FRAME_HEIGHT,
        RawPixelFormat::Gray8,
    )
    .unwrap();
    assert_eq!(grey.next_frame().unwrap().unwrap().as_raw(), first.as_raw());

    let cut = yuyv[..yuyv.len() / 3].to_vec();
    let mut stream = RawFrameStream::new(
        std::io::Cursor::new(cut),
        FRAME_WIDTH,
        FRAME_HEIGHT,
        RawPixelFormat::Yuyv,
    )
    .unwrap();
    let error = stream.next_frame().unwrap_err();
    assert_eq!(error.kind, ErrorKind::Disconnected, "{error}");

    assert!(RawFrameStream::new(std::io::empty(), 0, 480, RawPixelFormat::Gray8).is_err());
    assert!(RawFrameStream::new(std::io::empty(), 641, 480, RawPixelFormat::Yuyv).is_err());
    assert!(RawFrameStream::new(std::io::empty(), 5000, 5000, RawPixelFormat::Gray8).is_err());
}
