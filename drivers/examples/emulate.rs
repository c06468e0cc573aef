//! What `lanepay emulate scanner|display|printer` has to do, in a few lines each: create the
//! emulator, print its path alone on the first line, then serve it (scanner and printer
//! commands from stdin, display and printer events as JSON lines on stdout).
//!
//! `cargo run -p lanepay-drivers --example emulate -- scanner [--link PATH] [--aim]`

use std::io::{BufRead, Write};
use std::path::PathBuf;

use lanepay_drivers::emulator::display::{DisplayEmulator, DisplayEmulatorSettings};
use lanepay_drivers::emulator::printer::{
    PrinterEmulator, PrinterEmulatorCommand, PrinterEmulatorSettings,
};
use lanepay_drivers::emulator::scanner::{
    ScannerCommand, ScannerEmulator, ScannerEmulatorSettings,
};
use lanepay_drivers::scanner::ScannerFormat;

fn print_json(value: &impl serde::Serialize) {
    if let Ok(line) = serde_json::to_string(value) {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let device = args.first().map(String::as_str).unwrap_or("");
    let link = args
        .iter()
        .position(|arg| arg == "--link")
        .and_then(|at| args.get(at + 1))
        .map(PathBuf::from);
    let stdin = std::io::stdin();
    match device {
        "scanner" => {
            let format = ScannerFormat {
                aim_ids: args.iter().any(|arg| arg == "--aim"),
                ..ScannerFormat::default()
            };
            let (path, mut emulator) =
                ScannerEmulator::spawn(ScannerEmulatorSettings { format, link })?;
            println!("{path}");
            for line in stdin.lock().lines() {
                let line = line?;
                match ScannerCommand::parse(&line) {
                    Ok(command) => emulator.execute(&command)?,
                    Err(usage) => eprintln!("{usage}"),
                }
            }
        }
        "display" => {
            let settings = DisplayEmulatorSettings {
                link,
                ..Default::default()
            };
            let (path, _emulator) = DisplayEmulator::spawn(settings, print_json)?;
            println!("{path}");
            // Serve until stdin closes.
            for line in stdin.lock().lines() {
                line?;
            }
        }
        "printer" => {
            let settings = PrinterEmulatorSettings {
                link,
                ..Default::default()
            };
            let (path, emulator) = PrinterEmulator::spawn(settings, print_json)?;
            println!("{path}");
            for line in stdin.lock().lines() {
                match PrinterEmulatorCommand::parse(&line?) {
                    Ok(command) => emulator.execute(command),
                    Err(usage) => eprintln!("{usage}"),
                }
            }
        }
        _ => return Err("usage: emulate scanner|display|printer [--link PATH] [--aim]".into()),
    }
    Ok(())
}
