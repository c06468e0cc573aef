//! The iced daemon around [`Cashier`]: the cashier window, the customer display window and
//! (in the demo) the device panel; lane commands run as tasks off the UI thread, lane events
//! arrive through a subscription, F-keys and Esc through a keyboard subscription.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use iced::widget::operation;
use iced::{Element, Font, Point, Size, Subscription, Task, Theme, window};
use lanepay_agent::api::{Command, Event};
use lanepay_agent::service::LaneHandle;
use lanepay_drivers::emulator::scanner::ScannerEmulator;

use crate::app::{Cashier, Effect, Key, Message, StrayKey};
use crate::demo::DemoCustomer;
use crate::fonts::LoadedFont;
use crate::i18n::{Locale, Text};
use crate::view;

/// How often the clock on the screen (countdowns, sync age) moves.
pub const TICK_MS: u64 = 1_000;

/// What the daemon needs to start.
#[derive(Clone)]
pub struct ShellOptions {
    pub handle: LaneHandle,
    pub locale: Locale,
    pub customer_window: bool,
    pub device_panel: bool,
    /// Debug aid: after every update the screen's state is written here as text.
    pub state_file: Option<PathBuf>,
    pub font: Option<LoadedFont>,
    /// The demo's emulated scanner, driven by the device panel.
    pub scanner: Option<Arc<Mutex<ScannerEmulator>>>,
    /// Cashiers the lane learns at start (demo): (id, name, PIN).
    pub seed_cashiers: Vec<(String, String, String)>,
    /// The devices' states at start (later changes arrive as events).
    pub initial_devices: Vec<lanepay_agent::api::DeviceStatusView>,
    /// The demo's customer (device panel: wallet codes, card taps, the phone).
    pub customer: Option<Arc<DemoCustomer>>,
}

impl std::fmt::Debug for ShellOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShellOptions")
            .field("terminal_id", &self.handle.terminal_id())
            .field("locale", &self.locale)
            .field("state_file", &self.state_file)
            .finish_non_exhaustive()
    }
}

/// The daemon's message: the cashier screen's, or a window event.
// Almost every message is `App`; boxing it would allocate once per message for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum ShellMessage {
    App(Message),
    /// Typed text or Enter that no field took, in this window.
    Stray(window::Id, StrayKey),
    WindowOpened(window::Id),
    WindowClosed(window::Id),
    /// SIGTERM (a service manager stopping the lane) or SIGINT (Ctrl+C in a terminal).
    StopRequested,
}

/// The running UI.
pub struct Shell {
    pub cashier: Cashier,
    handle: LaneHandle,
    cashier_window: Option<window::Id>,
    customer_window: Option<window::Id>,
    panel_window: Option<window::Id>,
    scanner: Option<Arc<Mutex<ScannerEmulator>>>,
    customer: Option<Arc<DemoCustomer>>,
    state_file: Option<PathBuf>,
    written_state: String,
}

impl std::fmt::Debug for Shell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shell")
            .field("screen", &self.cashier.screen.name())
            .finish_non_exhaustive()
    }
}

fn system_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Turns the effects of one update into iced tasks; lane calls run on the async executor.
pub fn effects_to_task(
    handle: &LaneHandle,
    scanner: Option<&Arc<Mutex<ScannerEmulator>>>,
    customer: Option<&Arc<DemoCustomer>>,
    effects: Vec<Effect>,
) -> Task<Message> {
    Task::batch(effects.into_iter().map(|effect| match effect {
        Effect::Lane(request, command) => {
            let handle = handle.clone();
            Task::perform(
                async move { handle.execute(command).await },
                move |result| Message::Replied(request, result),
            )
        }
        Effect::Customer(action) => match customer.cloned() {
            Some(customer) => Task::perform(customer.act(action), Message::CustomerDone),
            None => Task::none(),
        },
        Effect::FocusScan => operation::focus(view::scan_field_id()),
        Effect::Focus(id) => operation::focus(iced::widget::Id::new(id)),
        Effect::EmulatorScan(code) => {
            let Some(scanner) = scanner.cloned() else {
                return Task::none();
            };
            Task::perform(
                async move {
                    tokio::task::spawn_blocking(move || match scanner.lock() {
                        Ok(mut scanner) => scanner.scan(&code).map_err(|e| e.to_string()),
                        Err(_) => Err("the emulated scanner stopped".to_string()),
                    })
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()))
                },
                |result| match result {
                    Ok(()) => Message::Noop,
                    Err(reason) => Message::Lane(Event::ScanRejected {
                        code: String::new(),
                        reason: format!("the emulated scanner failed ({reason}); scan again"),
                    }),
                },
            )
        }
    }))
}

impl Shell {
    fn boot(options: &ShellOptions) -> (Shell, Task<ShellMessage>) {
        let mut cashier = Cashier::new(
            options.handle.terminal_id(),
            options.locale,
            system_now_ms(),
        );
        cashier.has_emulated_scanner = options.scanner.is_some();
        cashier.has_customer = options.customer.is_some();
        if let Some(sync) = options.handle.last_sync_status() {
            cashier.sync = sync;
        }
        for device in &options.initial_devices {
            cashier
                .devices
                .insert(device.device.clone(), device.clone());
        }
        let mut shell = Shell {
            cashier,
            handle: options.handle.clone(),
            cashier_window: None,
            customer_window: None,
            panel_window: None,
            scanner: options.scanner.clone(),
            customer: options.customer.clone(),
            state_file: options.state_file.clone(),
            written_state: String::new(),
        };
        let (cashier_id, open_cashier) = window::open(window::Settings {
            size: Size::new(1280.0, 800.0),
            // Side by side on a 1920×1080 desktop (a window manager may still move them).
            position: window::Position::Specific(Point::new(0.0, 0.0)),
            ..window::Settings::default()
        });
        shell.cashier_window = Some(cashier_id);
        let mut tasks = vec![open_cashier.map(ShellMessage::WindowOpened)];
        if options.customer_window {
            let (id, open) = window::open(window::Settings {
                size: Size::new(620.0, 500.0),
                position: window::Position::Specific(Point::new(1290.0, 0.0)),
                ..window::Settings::default()
            });
            shell.customer_window = Some(id);
            tasks.push(open.map(ShellMessage::WindowOpened));
        }
        if options.device_panel {
            let (id, open) = window::open(window::Settings {
                size: Size::new(460.0, 570.0),
                position: window::Position::Specific(Point::new(1290.0, 510.0)),
                ..window::Settings::default()
            });
            shell.panel_window = Some(id);
            tasks.push(open.map(ShellMessage::WindowOpened));
        }
        let mut effects: Vec<Effect> = options
            .seed_cashiers
            .iter()
            .map(|(id, name, pin)| {
                Effect::Lane(
                    crate::app::Request::AddCashier,
                    Command::AddCashier {
                        cashier_id: id.clone(),
                        name: name.clone(),
                        pin: pin.clone(),
                    },
                )
            })
            .collect();
        effects.extend(Cashier::boot_effects());
        for effect in &effects {
            if matches!(effect, Effect::Lane(..)) {
                shell.cashier.pending += 1;
            }
        }
        tasks.push(shell.run_effects(effects));
        (shell, Task::batch(tasks))
    }

    fn run_effects(&self, effects: Vec<Effect>) -> Task<ShellMessage> {
        effects_to_task(
            &self.handle,
            self.scanner.as_ref(),
            self.customer.as_ref(),
            effects,
        )
        .map(ShellMessage::App)
    }

    fn update(&mut self, message: ShellMessage) -> Task<ShellMessage> {
        let task = match message {
            ShellMessage::App(Message::Replied(crate::app::Request::AddCashier, Err(error)))
                if error.message.contains("exists already") =>
            {
                // A seeded demo cashier from an earlier run.
                self.cashier.pending = self.cashier.pending.saturating_sub(1);
                Task::none()
            }
            ShellMessage::App(message) => {
                let effects = self.cashier.update(message);
                self.run_effects(effects)
            }
            ShellMessage::Stray(id, key) if Some(id) == self.cashier_window => {
                let effects = self.cashier.update(Message::Stray(key));
                self.run_effects(effects)
            }
            // The customer display and the device panel take no typing.
            ShellMessage::Stray(..) => Task::none(),
            ShellMessage::WindowOpened(id) if Some(id) == self.cashier_window => {
                self.run_effects(vec![Effect::FocusScan])
            }
            ShellMessage::WindowOpened(_) => Task::none(),
            ShellMessage::StopRequested => {
                // As closing the cashier window: the caller then stops the lane in order.
                tracing::info!("asked to stop; closing the screen");
                iced::exit()
            }
            ShellMessage::WindowClosed(id) => {
                if Some(id) == self.cashier_window {
                    // Closing the cashier screen ends the program; the lane's work is on disk.
                    iced::exit()
                } else {
                    if Some(id) == self.customer_window {
                        self.customer_window = None;
                    }
                    if Some(id) == self.panel_window {
                        self.panel_window = None;
                    }
                    Task::none()
                }
            }
        };
        self.write_state();
        task
    }

    fn write_state(&mut self) {
        let Some(path) = &self.state_file else {
            return;
        };
        let text = self.cashier.state_text();
        if text != self.written_state {
            // Write then rename: a reader never sees half a state.
            let partial = path.with_extension("partial");
            if std::fs::write(&partial, &text)
                .and_then(|()| std::fs::rename(&partial, path))
                .is_err()
            {
                tracing::warn!(path = %path.display(), "cannot write the state file");
            }
            self.written_state = text;
        }
    }

    fn view(&self, window: window::Id) -> Element<'_, ShellMessage> {
        let element = if Some(window) == self.customer_window {
            view::customer(&self.cashier)
        } else if Some(window) == self.panel_window {
            view::device_panel(&self.cashier)
        } else {
            view::cashier(&self.cashier)
        };
        element.map(ShellMessage::App)
    }

    fn title(&self, window: window::Id) -> String {
        let text = if Some(window) == self.customer_window {
            Text::CustomerTitle
        } else if Some(window) == self.panel_window {
            Text::DevicePanelTitle
        } else {
            Text::AppTitle
        };
        format!("{} — {}", self.cashier.t(text), self.cashier.terminal_id)
    }

    fn subscription(&self) -> Subscription<ShellMessage> {
        Subscription::batch([
            Subscription::run_with(LaneEvents(self.handle.clone()), lane_events)
                .map(|event| ShellMessage::App(Message::Lane(event))),
            iced::event::listen_with(key_message),
            iced::time::every(std::time::Duration::from_millis(TICK_MS))
                .map(|_| ShellMessage::App(Message::Tick(system_now_ms()))),
            window::close_events().map(ShellMessage::WindowClosed),
            Subscription::run(stop_signals),
        ])
    }
}

/// F1–F12 wherever focus is (text fields ignore them); Esc even from a focused field, which
/// would otherwise only lose focus. Typed text and Enter that no field took are kept as stray
/// keys for the window's waiting field.
fn key_message(
    event: iced::Event,
    status: iced::event::Status,
    window: window::Id,
) -> Option<ShellMessage> {
    use iced::keyboard::key::Named;
    let iced::Event::Keyboard(iced::keyboard::Event::KeyPressed {
        key,
        text,
        modifiers,
        repeat,
        ..
    }) = event
    else {
        return None;
    };
    let key = match key {
        iced::keyboard::Key::Named(named) => match named {
            Named::F1 => Key::F(1),
            Named::F2 => Key::F(2),
            Named::F3 => Key::F(3),
            Named::F4 => Key::F(4),
            Named::F5 => Key::F(5),
            Named::F6 => Key::F(6),
            Named::F7 => Key::F(7),
            Named::F8 => Key::F(8),
            Named::F9 => Key::F(9),
            Named::F10 => Key::F(10),
            Named::F11 => Key::F(11),
            Named::F12 => Key::F(12),
            Named::Escape => Key::Escape,
            Named::Enter if status == iced::event::Status::Ignored => {
                return Some(ShellMessage::Stray(window, StrayKey::Enter));
            }
            Named::Backspace if status == iced::event::Status::Ignored => {
                return Some(ShellMessage::Stray(window, StrayKey::Backspace));
            }
            _ => return stray_text(status, modifiers, text, window),
        },
        _ => return stray_text(status, modifiers, text, window),
    };
    // Holding an F-key down does its action once.
    (!repeat).then_some(ShellMessage::App(Message::Key(key)))
}

fn stray_text(
    status: iced::event::Status,
    modifiers: iced::keyboard::Modifiers,
    text: Option<impl AsRef<str>>,
    window: window::Id,
) -> Option<ShellMessage> {
    // Shortcuts are not typing.
    if status != iced::event::Status::Ignored
        || modifiers.control()
        || modifiers.alt()
        || modifiers.logo()
    {
        return None;
    }
    let typed: String = text?.as_ref().chars().filter(|c| !c.is_control()).collect();
    (!typed.is_empty()).then_some(ShellMessage::Stray(window, StrayKey::Text(typed)))
}

/// The first SIGTERM or SIGINT, as a message. Without it a service manager's stop would kill
/// the screen mid-update instead of stopping the lane's devices and link in order.
fn stop_signals() -> impl iced::futures::Stream<Item = ShellMessage> + use<> {
    iced::futures::stream::once(async {
        lanepay_agent::runtime::stop_signal().await;
        ShellMessage::StopRequested
    })
}

/// The lane handle as a subscription's identity: one event stream per terminal.
struct LaneEvents(LaneHandle);

impl Hash for LaneEvents {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.terminal_id().hash(state);
    }
}

fn lane_events(events: &LaneEvents) -> impl iced::futures::Stream<Item = Event> + use<> {
    let receiver = events.0.subscribe();
    iced::futures::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(event) => return Some((event, receiver)),
                // Missed events: the next cart event carries the whole cart anyway.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "the screen fell behind the lane's events");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// Runs the windows until the cashier window is closed.
pub fn run(options: ShellOptions) -> iced::Result {
    let font = options.font.clone();
    let boot_options = options.clone();
    let mut daemon = iced::daemon(
        move || Shell::boot(&boot_options),
        Shell::update,
        Shell::view,
    )
    .title(Shell::title)
    .subscription(Shell::subscription)
    .theme(Theme::Light);
    if let Some(font) = font {
        daemon = daemon
            .font(font.bytes)
            .default_font(Font::with_name(font.family));
    }
    daemon.run()
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced::event::Status;
    use iced::keyboard::key::{Named, NativeCode, Physical};
    use iced::keyboard::{Event as KeyboardEvent, Location, Modifiers};

    fn pressed(
        key: iced::keyboard::Key,
        text: Option<&str>,
        modifiers: Modifiers,
        repeat: bool,
    ) -> iced::Event {
        iced::Event::Keyboard(KeyboardEvent::KeyPressed {
            modified_key: key.clone(),
            key,
            physical_key: Physical::Unidentified(NativeCode::Unidentified),
            location: Location::Standard,
            modifiers,
            text: text.map(Into::into),
            repeat,
        })
    }

    fn character(text: &str) -> iced::Event {
        let key = iced::keyboard::Key::Character(text.into());
        pressed(key, Some(text), Modifiers::empty(), false)
    }

    fn stray(message: Option<ShellMessage>) -> Option<(window::Id, StrayKey)> {
        match message {
            Some(ShellMessage::Stray(window, key)) => Some((window, key)),
            _ => None,
        }
    }

    #[test]
    fn typing_no_field_took_becomes_a_stray_key_of_its_window() {
        let window = window::Id::unique();
        assert_eq!(
            stray(key_message(character("7"), Status::Ignored, window)),
            Some((window, StrayKey::Text("7".into())))
        );
        let enter = pressed(Named::Enter.into(), Some("\r"), Modifiers::empty(), false);
        assert_eq!(
            stray(key_message(enter.clone(), Status::Ignored, window)),
            Some((window, StrayKey::Enter))
        );
        // A focused field took them: nothing more to do.
        assert!(key_message(character("7"), Status::Captured, window).is_none());
        assert!(key_message(enter, Status::Captured, window).is_none());
        // Shortcuts and control characters are not typing; Backspace is.
        let copy = pressed(
            iced::keyboard::Key::Character("c".into()),
            Some("c"),
            Modifiers::CTRL,
            false,
        );
        assert!(key_message(copy, Status::Ignored, window).is_none());
        let backspace = pressed(
            Named::Backspace.into(),
            Some("\u{8}"),
            Modifiers::empty(),
            false,
        );
        assert_eq!(
            stray(key_message(backspace.clone(), Status::Ignored, window)),
            Some((window, StrayKey::Backspace))
        );
        assert!(key_message(backspace, Status::Captured, window).is_none());
    }

    #[test]
    fn f_keys_and_escape_work_wherever_focus_is_once_per_press() {
        let window = window::Id::unique();
        let f5 = pressed(Named::F5.into(), None, Modifiers::empty(), false);
        assert!(matches!(
            key_message(f5, Status::Captured, window),
            Some(ShellMessage::App(Message::Key(Key::F(5))))
        ));
        let held = pressed(Named::F5.into(), None, Modifiers::empty(), true);
        assert!(key_message(held, Status::Ignored, window).is_none());
    }
}
