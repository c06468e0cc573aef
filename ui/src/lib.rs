//! The cashier screen and the customer display (iced), on the lane runtime's command/event
//! interface in process ([`lanepay_agent::service::LaneHandle`]).
//!
//! - [`app`]: the state and its `update` (no IO; effects out);
//! - [`view`]: the windows as pure functions of the state;
//! - [`i18n`]: zh-CN and en texts, amounts per locale; [`fonts`]: the CJK font;
//! - [`qr`]: QR codes as images; [`shell`]: the iced daemon that ties them to the lane;
//! - [`testing`]: the screen driven against a real lane without a window.

pub mod app;
pub mod demo;
pub mod fonts;
pub mod i18n;
pub mod lane_words;
pub mod qr;
pub mod shell;
pub mod testing;
pub mod typing;
pub mod view;
