//! `lanepay demo`: a scripted sale through the lane's real local API, printing what a person
//! would look at (the receipt and the journal tail).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use lanepay_agent::clock::SystemClock;
use lanepay_agent::store::{self, journal};
use lanepay_agent::{local_api, service};
use lanepay_config::AgentConfig;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::init::{self, InitArgs};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Run without screens (the scripted sale in the terminal).
    #[arg(long)]
    pub headless: bool,
    /// The lane's data directory; created with a demo catalog when new, kept afterwards.
    #[arg(long)]
    pub data: PathBuf,
}

pub fn run(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    if !args.headless {
        println!(
            "The cashier screen is not part of this build yet; running the scripted sale headless."
        );
    }
    let config_path = init::run(&InitArgs {
        data: args.data.clone(),
        terminal_id: "T0001".into(),
        store_id: "S001".into(),
        merchant_id: "M1001".into(),
        listen: "127.0.0.1:0".parse()?,
        demo_catalog: true,
    })?;
    let config = AgentConfig::load(&config_path)?;
    tokio::runtime::Runtime::new()?.block_on(demo(config))?;
    Ok(ExitCode::SUCCESS)
}

/// A scale label for 1.250 kg of Fuji apples (PLU 12345), check digit computed.
fn apple_label() -> String {
    let body = "211234501250";
    let digit = (0..10u8)
        .find(|d| lanepay_checkout::barcode::check_gtin(&format!("{body}{d}")).is_ok())
        .unwrap_or(0);
    format!("{body}{digit}")
}

async fn demo(mut config: AgentConfig) -> anyhow::Result<()> {
    // The demo always picks a free port, whatever the data directory's configuration says.
    config.local_api.listen = "127.0.0.1:0".parse()?;
    let (lane, _key) = lanepay_agent::open_lane(&config)?;
    let handle = service::start(lane, Arc::new(SystemClock))?;
    let sync_handle = handle.clone();
    // Hardware the configuration names is used; anything not configured is emulated, so the
    // scripted sale goes through real serial drivers either way.
    let mut devices_config = config.devices.clone();
    if devices_config.scanner.driver == lanepay_config::ScannerDriver::None {
        devices_config.scanner.driver = lanepay_config::ScannerDriver::Emulator;
    }
    if devices_config.display.driver == lanepay_config::DisplayDriver::None {
        devices_config.display.driver = lanepay_config::DisplayDriver::Emulator;
    }
    if devices_config.printer.driver == lanepay_config::PrinterDriver::None {
        devices_config.printer.driver = lanepay_config::PrinterDriver::Emulator;
    }
    let mut devices = lanepay_agent::devices::start(&devices_config, &handle, "Lanepay demo store");
    for status in devices.statuses() {
        println!(
            "device {:<8} {}{}",
            status.device,
            status.state,
            status.detail.map(|d| format!(" ({d})")).unwrap_or_default()
        );
    }
    let listener = tokio::net::TcpListener::bind(config.local_api.listen).await?;
    let address = listener.local_addr()?;
    let token = config.local_api.token().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(local_api::run(
        listener,
        handle,
        token.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    println!(
        "Lane {} is serving its local API on ws://{address}/v1/ws",
        config.terminal.id
    );

    let mut client = Client::connect(&format!("ws://{address}/v1/ws"), &token).await?;
    println!("\n== Scripted sale ==");
    for (code, what) in [
        ("6901234567892", "cola"),
        ("6901234567892", "cola again (quantity 2)"),
        ("6930000000011", "wholemeal bread"),
        (apple_label().as_str(), "1.250 kg of apples from the scale"),
        ("96385074", "chewing gum (EAN-8)"),
        ("6901234567893", "a misread cola label (bad check digit)"),
    ] {
        match devices.emulators.scanner.as_mut() {
            // Through the scanner: bytes on its serial line, the driver, then the cart.
            Some(scanner) => {
                scanner.scan(code)?;
                match client.next_cart_event().await? {
                    Ok(total) => println!("scan {code:<14} {what:<40} total {total}"),
                    Err(reason) => println!("scan {code:<14} {what:<40} refused: {reason}"),
                }
            }
            None => match client.call(json!({"type": "scan", "code": code})).await {
                Ok(cart) => println!(
                    "scan {code:<14} {what:<40} total {}",
                    cart["total"].as_str().unwrap_or("?")
                ),
                Err(error) => println!("scan {code:<14} {what:<40} refused: {error}"),
            },
        }
    }
    client.call(json!({"type": "line_discount", "line": 2, "discount": {"kind": "percent", "value": "10"}})).await?;
    let tender = client
        .call(json!({"type": "tender_cash", "amount": "100.00"}))
        .await?;
    let receipt_no = tender["receipt_no"]
        .as_str()
        .context("no receipt number")?
        .to_string();
    println!(
        "cash 100.00: applied {}, change {}, completed {} (journal entry {})",
        tender["applied"].as_str().unwrap_or("?"),
        tender["change"].as_str().unwrap_or("?"),
        tender["completed"],
        tender["journal_seq"]
    );

    if let Some(display) = &devices.emulators.display {
        // The display shows the thank-you screen once the sale is paid; either way, show it.
        let screen = display
            .wait_until(std::time::Duration::from_secs(5), |screen| {
                screen.lines[1].contains("55.91")
            })
            .unwrap_or_else(|last| last);
        println!(
            "\nPole display: [{}] [{}]",
            screen.lines[0], screen.lines[1]
        );
    }
    if let Some(printer) = &devices.emulators.printer {
        match printer.wait_for_receipt(1, std::time::Duration::from_secs(5)) {
            Ok(receipt) => {
                let drawer = printer
                    .wait_until(std::time::Duration::from_secs(2), |state| {
                        state.drawer_kicks > 0
                    })
                    .is_ok();
                println!(
                    "Printer: {} lines printed, QR {:?}, cut {}, cash drawer opened {drawer}",
                    receipt.lines.len(),
                    receipt.qr_payloads,
                    receipt.cut
                );
            }
            Err(_) => println!("Printer: no receipt came out (see the device status above)"),
        }
    }

    println!("\n== Receipt {receipt_no} ==");
    let receipt = client
        .call(json!({"type": "receipt", "receipt_no": receipt_no}))
        .await?;
    for line in receipt["lines"].as_array().into_iter().flatten() {
        println!("{}", line.as_str().unwrap_or(""));
    }

    let refund = client
        .call(json!({"type": "refund", "receipt_no": receipt_no, "lines": [{"line": 1, "quantity": "1"}], "reason": "customer returned one cola"}))
        .await?;
    let back: Vec<String> = refund["tenders"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|part| {
            format!(
                "{} {}",
                part[1].as_str().unwrap_or("?"),
                part[0].as_str().unwrap_or("?")
            )
        })
        .collect();
    println!(
        "\nRefund {}: {} paid back ({})",
        refund["refund_id"].as_str().unwrap_or("?"),
        refund["total"].as_str().unwrap_or("?"),
        back.join(", ")
    );

    println!("\n== Journal tail ==");
    let tail = client
        .call(json!({"type": "journal_tail", "count": 5}))
        .await?;
    for entry in tail["entries"].as_array().into_iter().flatten() {
        let hash = entry["hash"].as_str().unwrap_or("");
        let payload = &entry["payload"];
        let total = payload
            .get("total_fen")
            .and_then(Value::as_i64)
            .map(|f| format!("{}.{:02}", f / 100, f % 100));
        println!(
            "#{:<5} {:<17} total {:<9} hash {}…",
            entry["seq"],
            entry["kind"].as_str().unwrap_or(""),
            total.unwrap_or_else(|| "-".into()),
            &hash[..hash.len().min(16)]
        );
    }
    client.close().await;
    let _ = stop.send(());
    server.await??;

    match lanepay_agent::uplink_settings(&config)? {
        None => println!(
            "\nThis lane is not enrolled with a gateway, so its journal stays on the lane (see `lanepay enroll`)."
        ),
        Some(settings) => {
            let key =
                lanepay_agent::key::load(&lanepay_agent::key::key_path(&config.storage.data_dir))?;
            match lanepay_agent::uplink::sync_now(
                &settings,
                key,
                Arc::new(SystemClock),
                sync_handle,
            )
            .await
            {
                Ok(status) if status.backlog == 0 => println!(
                    "\nSynced with the gateway {}: every entry up to {} is acknowledged.",
                    settings.base_url, status.acknowledged_seq
                ),
                Ok(status) => println!(
                    "\nCOULD NOT SYNC everything: {} entries still wait for the gateway ({}).",
                    status.backlog,
                    status.problem.unwrap_or_else(|| "it holds a gap".into())
                ),
                Err(error) => println!(
                    "\nCOULD NOT SYNC with the gateway {}: {error:#}. The entries stay in the outbox.",
                    settings.base_url
                ),
            }
        }
    }

    let conn = store::open_read_only(&store::db_path(&config.storage.data_dir))?;
    let key = lanepay_agent::key::load(&lanepay_agent::key::key_path(&config.storage.data_dir))?;
    match journal::verify(&conn, &config.terminal.id, key.verifying_key(), 1)? {
        journal::Verification::Intact { entries, .. } => {
            println!("\nJournal verified: {entries} entries, chain and signatures intact.");
        }
        journal::Verification::Broken { seq, reason } => bail!("journal broken at {seq}: {reason}"),
    }
    println!(
        "The lane's database is {}",
        store::db_path(&config.storage.data_dir).display()
    );
    Ok(())
}

/// A minimal local API client: one request at a time, events skipped.
struct Client {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
}

impl Client {
    async fn connect(url: &str, token: &str) -> anyhow::Result<Client> {
        let mut request = url.into_client_request()?;
        request
            .headers_mut()
            .insert("Authorization", format!("Bearer {token}").parse()?);
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .context("cannot reach the lane's local API")?;
        Ok(Client { socket, next_id: 1 })
    }

    /// Waits for the cart to change (`Ok(total)`) or a scan to be refused (`Err(reason)`).
    async fn next_cart_event(&mut self) -> anyhow::Result<Result<String, String>> {
        let wait = async {
            while let Some(message) = self.socket.next().await {
                let Message::Text(text) = message? else {
                    continue;
                };
                let value: Value = serde_json::from_str(text.as_str())?;
                let event = &value["event"];
                match event["type"].as_str() {
                    Some("cart_changed") => {
                        return Ok(Ok(event["total"].as_str().unwrap_or("?").to_string()));
                    }
                    Some("scan_rejected") => {
                        return Ok(Err(event["reason"].as_str().unwrap_or("?").to_string()));
                    }
                    _ => {}
                }
            }
            bail!("the lane closed the connection")
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), wait)
            .await
            .context("the scan did not reach the cart within 10 s")?
    }

    /// Sends a command and returns the reply's result, or the lane's error message.
    async fn call(&mut self, command: Value) -> anyhow::Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        self.socket
            .send(Message::text(
                json!({"id": id, "command": command}).to_string(),
            ))
            .await?;
        while let Some(message) = self.socket.next().await {
            let Message::Text(text) = message? else {
                continue;
            };
            let value: Value = serde_json::from_str(text.as_str())?;
            if value.get("reply_to").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            if value["ok"].as_bool() == Some(true) {
                return Ok(value["result"].clone());
            }
            bail!(
                "{}",
                value["error"]["message"]
                    .as_str()
                    .unwrap_or("unknown error")
            );
        }
        bail!("the lane closed the connection")
    }

    async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}
