//! The subcommands of `lanepay` and how they map to the library.

mod agent;
mod demo;
mod devices;
mod emulate;
mod enroll;
mod init;
mod journal;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "lanepay",
    version,
    about = "Lanepay lane agent: an offline-first checkout lane"
)]
pub struct Args {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Create a lane's data directory: configuration, terminal key, database (and a demo catalog).
    Init(init::InitArgs),
    /// Register this lane with the gateway using a one-time token from HQ.
    Enroll(enroll::EnrollArgs),
    /// Run the lane headless and serve its local API.
    Agent(agent::AgentArgs),
    /// Run a scripted sale end to end and print the receipt and the journal tail.
    Demo(demo::DemoArgs),
    /// List the configured devices and their state; `devices test` tries each one.
    Devices(devices::DevicesArgs),
    /// Run one emulated device on a new pseudo-terminal (prints its path first).
    Emulate {
        #[command(subcommand)]
        device: emulate::EmulateCommand,
    },
    /// The terminal key.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Check or export a journal database.
    Journal {
        #[command(subcommand)]
        command: journal::JournalCommand,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Print the terminal's public key (hex), creating the key if the lane has none yet.
    Show {
        /// The lane's data directory.
        #[arg(long)]
        data: PathBuf,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Commands::Init(args) => init::run(&args).map(|_| ExitCode::SUCCESS),
        Commands::Enroll(args) => enroll::run(&args).map(|()| ExitCode::SUCCESS),
        Commands::Agent(args) => agent::run(&args),
        Commands::Demo(args) => demo::run(&args),
        Commands::Key {
            command: KeyCommand::Show { data },
        } => {
            std::fs::create_dir_all(&data)?;
            let key = lanepay_agent::key::load_or_create(&data)?;
            println!("{}", hex::encode(key.verifying_key().to_bytes()));
            Ok(ExitCode::SUCCESS)
        }
        Commands::Journal { command } => journal::run(command),
        Commands::Devices(args) => devices::run(&args),
        Commands::Emulate { device } => emulate::run(&device).map(|()| ExitCode::SUCCESS),
    }
}
