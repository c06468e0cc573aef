//! Drives a [`Cashier`] against a real lane without a window: effects run synchronously
//! against the [`LaneHandle`] and the lane's events are fed back, as the iced shell does
//! asynchronously. Used by the update and flow tests and the reaction benchmark.

use std::path::Path;
use std::sync::Arc;

use lanepay_agent::api::{Command, Event, Reply};
use lanepay_agent::clock::Clock;
use lanepay_agent::service::{self, LaneHandle};
use lanepay_agent::store::{self, catalog};
use lanepay_config::AgentConfig;
use tokio::sync::broadcast;

use crate::app::{Cashier, Effect, Message, Request};
use crate::i18n::Locale;

/// The most effects one message may cause, counting the ones their answers cause: a loop
/// between update and the lane is a bug, caught here instead of hanging a test.
pub const MAX_EFFECTS_PER_MESSAGE: usize = 64;

/// A cashier screen wired to a lane on disk.
#[derive(Debug)]
pub struct Harness {
    pub cashier: Cashier,
    pub handle: LaneHandle,
    events: broadcast::Receiver<Event>,
    runtime: tokio::runtime::Runtime,
    /// Effects that are not lane commands (focus, the demo customer's actions), in order.
    pub other_effects: Vec<Effect>,
    /// The lane commands the screen sent, in order.
    pub commands: Vec<Command>,
    /// While set, lane commands wait in `held` (a slow lane: the cashier types on meanwhile).
    holding: bool,
    held: Vec<(Request, Command)>,
}

impl Harness {
    /// A fresh lane (demo catalog) in `data_dir`, with cashier `1001` / PIN `1234`.
    pub fn new(data_dir: &Path, clock: Arc<dyn Clock>) -> anyhow::Result<Harness> {
        let config = AgentConfig::new_default(
            "T0001",
            "S001",
            "M1001",
            data_dir,
            "ui-test-serves-no-local-api-0000",
        )?;
        let (lane, _key) = lanepay_agent::open_lane(&config)?;
        if catalog::count(lane.connection())? == 0 {
            catalog::upsert(lane.connection(), &catalog::demo_products())?;
        }
        let handle = service::start(lane, clock.clone())?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let events = handle.subscribe();
        let mut harness = Harness {
            cashier: Cashier::new(handle.terminal_id(), Locale::En, clock.now_ms()),
            handle,
            events,
            runtime,
            other_effects: Vec::new(),
            commands: Vec::new(),
            holding: false,
            held: Vec::new(),
        };
        harness.execute(Command::AddCashier {
            cashier_id: "1001".into(),
            name: "Wang Fang 王芳".into(),
            pin: "1234".into(),
        })?;
        for effect in Cashier::boot_effects() {
            harness.run(vec![effect]);
        }
        Ok(harness)
    }

    /// The lane database's path (tests read the journal from it).
    pub fn db_path(data_dir: &Path) -> std::path::PathBuf {
        store::db_path(data_dir)
    }

    /// Runs a command on the lane directly (setup), not through the screen.
    pub fn execute(&mut self, command: Command) -> anyhow::Result<Reply> {
        let (reply, events) = self.execute_unseen(command)?;
        for event in events {
            self.show(event);
        }
        Ok(reply)
    }

    /// Runs a command on the lane directly and returns its reply with the events it
    /// published, which the screen has not seen (the reaction bench feeds them, timed).
    pub fn execute_unseen(&mut self, command: Command) -> anyhow::Result<(Reply, Vec<Event>)> {
        let handle = self.handle.clone();
        let reply = self
            .runtime
            .block_on(async move { handle.execute(command).await })
            .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))?;
        let mut events = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            events.push(event);
        }
        Ok((reply, events))
    }

    /// Sends one message to the screen and runs what it asks for until things settle; then
    /// the screen is drawn, as the shell draws it after each batch of events.
    pub fn send(&mut self, message: Message) {
        self.send_same_frame(message);
        self.cashier.drawn();
    }

    /// Sends one message as part of the batch of events before the next draw: the widgets
    /// that produced it may still show an older state.
    pub fn send_same_frame(&mut self, message: Message) {
        let effects = self.cashier.update(message);
        self.run(effects);
    }

    /// Lane commands sent from now on wait, unanswered, until [`Harness::release`].
    pub fn hold_replies(&mut self) {
        self.holding = true;
    }

    /// Runs the held lane commands, and answers the ones they lead to at once again.
    pub fn release(&mut self) {
        self.holding = false;
        for (request, command) in std::mem::take(&mut self.held) {
            let effects = self.answer(request, command);
            self.run(effects);
        }
        self.cashier.drawn();
    }

    /// Runs one lane command and shows the screen its events, then its reply.
    fn answer(&mut self, request: Request, command: Command) -> Vec<Effect> {
        let handle = self.handle.clone();
        let result = self
            .runtime
            .block_on(async move { handle.execute(command).await });
        // Events first, as the lane publishes them before it answers.
        self.pump_events();
        self.cashier.update(Message::Replied(request, result))
    }

    fn run(&mut self, effects: Vec<Effect>) {
        let mut queue: std::collections::VecDeque<Effect> = effects.into();
        let mut ran = 0;
        while let Some(effect) = queue.pop_front() {
            ran += 1;
            assert!(
                ran <= MAX_EFFECTS_PER_MESSAGE,
                "update and the lane keep asking each other"
            );
            match effect {
                Effect::Lane(request, command) => {
                    self.commands.push(command.clone());
                    if self.holding {
                        self.held.push((request, command));
                    } else {
                        queue.extend(self.answer(request, command));
                    }
                }
                Effect::EmulatorScan(code) => {
                    queue.extend(self.cashier.update(Message::PanelScan(code)));
                }
                other => self.other_effects.push(other),
            }
        }
    }

    /// Feeds every event the lane published so far to the screen.
    pub fn pump_events(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            self.show(event);
        }
    }

    fn show(&mut self, event: Event) {
        let effects = self.cashier.update(Message::Lane(event));
        debug_assert!(effects.iter().all(|e| !matches!(e, Effect::Lane(..))));
    }
}
