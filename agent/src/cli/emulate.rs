//! `lanepay emulate scanner|display|printer|nfc`: one software device on a new
//! pseudo-terminal, for training lanes, manual tests and other people's tools. The first line
//! of output is the device path; scanner and NFC take commands on standard input, the display
//! and printer print what they interpreted as JSON lines (see `docs/devices.md`).

use std::io::{BufRead, Write};

use anyhow::Context;
use lanepay_drivers::emulator::display::{DisplayEmulator, DisplayEmulatorSettings};
use lanepay_drivers::emulator::nfc::Pn532Emulator;
use lanepay_drivers::emulator::printer::{PrinterEmulator, PrinterEmulatorSettings};
use lanepay_drivers::emulator::scanner::{
    ScannerCommand, ScannerEmulator, ScannerEmulatorSettings,
};
use lanepay_drivers::printer::PrinterCondition;
use lanepay_drivers::scanner::{ScannerFormat, Terminator};
use lanepay_drivers::text::TextEncoding;

#[derive(Debug, clap::Subcommand)]
pub enum EmulateCommand {
    /// A serial barcode scanner; commands on stdin: `scan CODE`, `garbage`, `long`.
    Scanner {
        /// Line terminator: cr, lf, crlf or tab.
        #[arg(long, default_value = "cr")]
        terminator: String,
        #[arg(long, default_value = "")]
        prefix: String,
        /// Start each code with its AIM symbology identifier (]E0, ]E4, ]C1, ]Q1, ...).
        #[arg(long)]
        aim_ids: bool,
    },
    /// A 2×20 customer pole display; prints each screen as a JSON line.
    Display {
        /// Use ASCII instead of GB18030.
        #[arg(long)]
        ascii: bool,
    },
    /// An ESC/POS receipt printer; prints what it interpreted as JSON lines.
    Printer {
        #[arg(long)]
        ascii: bool,
        /// Start with the paper out (DLE EOT reports it).
        #[arg(long)]
        paper_out: bool,
        /// Start with the cover open.
        #[arg(long)]
        cover_open: bool,
    },
    /// A PN532 NFC reader (pn532_uart); commands on stdin: `tap [CARD]`, `remove`.
    Nfc,
}

fn json_line<T: serde::Serialize>(value: &T) {
    if let Ok(text) = serde_json::to_string(value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
}

fn first_line(path: &str) {
    println!("{path}");
    let _ = std::io::stdout().flush();
}

/// Serves until standard input closes (or the process is stopped).
fn wait_for_eof() {
    let mut sink = String::new();
    let stdin = std::io::stdin();
    while stdin
        .lock()
        .read_line(&mut sink)
        .map(|n| n > 0)
        .unwrap_or(false)
    {
        sink.clear();
    }
}

pub fn run(command: &EmulateCommand) -> anyhow::Result<()> {
    match command {
        EmulateCommand::Scanner {
            terminator,
            prefix,
            aim_ids,
        } => {
            let terminator = match terminator.as_str() {
                "cr" => Terminator::Cr,
                "lf" => Terminator::Lf,
                "crlf" => Terminator::CrLf,
                "tab" => Terminator::Tab,
                other => anyhow::bail!("unknown terminator `{other}`: use cr, lf, crlf or tab"),
            };
            let format = ScannerFormat {
                terminator,
                prefix: prefix.clone(),
                aim_ids: *aim_ids,
            };
            let (path, mut emulator) =
                ScannerEmulator::spawn(ScannerEmulatorSettings { format, link: None })?;
            first_line(&path);
            for line in std::io::stdin().lock().lines() {
                let line = line.context("reading commands")?;
                if line.trim().is_empty() {
                    continue;
                }
                match ScannerCommand::parse(&line) {
                    Ok(command) => {
                        if let Err(error) = emulator.execute(&command) {
                            eprintln!("scanner: {error}");
                        }
                    }
                    Err(error) => eprintln!("scanner: {error}"),
                }
            }
            Ok(())
        }
        EmulateCommand::Display { ascii } => {
            let encoding = if *ascii {
                TextEncoding::Ascii
            } else {
                TextEncoding::Gb18030
            };
            let (path, _emulator) = DisplayEmulator::spawn(
                DisplayEmulatorSettings {
                    encoding,
                    link: None,
                },
                json_line,
            )?;
            first_line(&path);
            wait_for_eof();
            Ok(())
        }
        EmulateCommand::Printer {
            ascii,
            paper_out,
            cover_open,
        } => {
            let encoding = if *ascii {
                TextEncoding::Ascii
            } else {
                TextEncoding::Gb18030
            };
            let condition = PrinterCondition {
                paper_out: *paper_out,
                cover_open: *cover_open,
                ..Default::default()
            };
            let (path, _emulator) = PrinterEmulator::spawn(
                PrinterEmulatorSettings {
                    encoding,
                    condition,
                    link: None,
                    paper_columns: Some(lanepay_drivers::printer::RECEIPT_COLUMNS_80MM),
                },
                json_line,
            )?;
            first_line(&path);
            wait_for_eof();
            Ok(())
        }
        EmulateCommand::Nfc => {
            let emulator = Pn532Emulator::spawn()?;
            first_line(&emulator.path().display().to_string());
            for line in std::io::stdin().lock().lines() {
                let line = line.context("reading commands")?;
                if line.trim().is_empty() {
                    continue;
                }
                match emulator.run_command(&line) {
                    Ok(said) => eprintln!("nfc: {said}"),
                    Err(error) => eprintln!("nfc: {error}"),
                }
            }
            Ok(())
        }
    }
}
