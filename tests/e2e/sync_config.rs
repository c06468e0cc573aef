//! HQ's signed store configuration and its pushes end to end, on the real binaries over
//! loopback: the initial configuration comes with enrollment; a version set by HQ (HTTP or the
//! `config set` CLI beside a running gateway) reaches a live lane, which journals
//! `config_applied`; a configuration signed by another key, or older than the lane's, is
//! refused and changes nothing; HQ's `sync_now` and `reload_config` commands reach the lane.

use std::time::Duration;

use anyhow::{Context, ensure};
use lanepay_sync::config::{TerminalConfig, sign_config};
use lanepay_tests::books::{lane_config, lane_journal};
use lanepay_tests::client::LaneClient;
use lanepay_tests::gateway::Hq;
use lanepay_tests::lane::{LaneDir, RunningAgent};
use lanepay_tests::terminal::random_key;
use rusqlite::{Connection, params};
use serde_json::{Value, json};

use crate::sync::{SYNC_DEADLINE, connect, fleet, poll, wait_synced};

/// A safety net on waiting for one event from the lane; never a timing assertion.
const EVENT_DEADLINE: Duration = Duration::from_secs(60);

/// The `config_applied` entries of the lane's journal: (seq, version).
fn applied_versions(lane: &LaneDir) -> anyhow::Result<Vec<(u64, u64)>> {
    lane_journal(&lane.db_path())?
        .into_iter()
        .filter(|entry| entry.kind == "config_applied")
        .map(|entry| {
            let payload: Value = serde_json::from_slice(&entry.payload)?;
            let version = payload["version"]
                .as_u64()
                .with_context(|| format!("config_applied without a version: {payload}"))?;
            Ok((entry.seq, version))
        })
        .collect()
}

fn lane_version(lane: &LaneDir) -> anyhow::Result<Option<u64>> {
    Ok(lane_config(&lane.db_path())?.and_then(|c| c["config"]["version"].as_u64()))
}

/// Waits for the first event of type `kind` that `matches`; earlier events are skipped.
async fn wait_event(
    client: &mut LaneClient,
    agent: &RunningAgent,
    kind: &str,
    matches: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let wait = async {
        loop {
            let event = client.next_event().await?;
            if event["type"] == kind && matches(&event) {
                return Ok::<_, anyhow::Error>(event);
            }
        }
    };
    tokio::time::timeout(EVENT_DEADLINE, wait)
        .await
        .with_context(|| format!("no {kind} event; agent log:\n{}", agent.log()))?
}

/// Sends an HQ command and waits for the lane to say it carried it out.
async fn command(
    hq: &Hq,
    client: &mut LaneClient,
    agent: &RunningAgent,
    terminal_id: &str,
    name: &str,
) -> anyhow::Result<()> {
    // Delivered only over a live channel: until the lane's is up, HQ is told "not delivered"
    // and sends again.
    let id = poll("the command delivered", SYNC_DEADLINE, || async move {
        let (status, sent) = hq.send_command(terminal_id, name).await?;
        ensure!(status == 200, "command {name}: {status} {sent}");
        Ok((sent["delivered"] == json!(true))
            .then(|| sent["id"].as_str().map(str::to_string))
            .flatten())
    })
    .await?;
    let event = wait_event(client, agent, "gateway_command", |e| e["id"] == json!(id)).await?;
    ensure!(event["command"] == json!(name), "{event}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hq_configuration_reaches_a_live_lane_and_commands_are_carried_out() {
    let fleet = fleet("lanepay-sync-config-", &[]).await;
    let hq = fleet.gateway.hq().unwrap();
    let url = fleet.gateway.url();
    let token = fleet.gateway_dir.create_token("S010").unwrap();
    let lane = LaneDir::enroll(&fleet.lane_binary, &url, &token, &fleet.root.join("lane")).unwrap();
    let terminal_id = lane.terminal_id().unwrap();

    // Enrollment brought the store's first configuration: defaults, version 1, the gateway's
    // card-seal key, applied and journaled as the lane's first entry.
    let initial = lane_config(&lane.db_path()).unwrap().unwrap();
    assert_eq!(initial["config"]["version"], json!(1));
    assert_eq!(initial["config"]["store_id"], json!("S010"));
    assert_eq!(
        initial["config"]["offline_card"],
        json!({"per_payment_fen": 50_000, "total_fen": 500_000, "count": 200, "max_age_ms": 259_200_000})
    );
    let at_gateway = hq.store_config("S010").await.unwrap();
    assert_eq!(initial, at_gateway);
    let seal_key = initial["config"]["card_seal_public_key"].as_str().unwrap();
    assert_eq!(hex::decode(seal_key).unwrap().len(), 32);
    assert_eq!(applied_versions(&lane).unwrap(), vec![(1, 1)]);

    let agent = lane.start().await.unwrap();
    let mut client = connect(&lane, &agent).await;

    // HQ sets version 2 over HTTP: pushed, verified, stored and journaled by the live lane.
    let (status, set) = hq
        .set_store_config(
            "S010",
            json!({"offline_card": {"per_payment_fen": 30_000, "total_fen": 300_000, "count": 50, "max_age_ms": 86_400_000},
                   "dynamic_qr_timeout_ms": 90_000}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["config"]["version"], json!(2));
    poll("version 2 applied", SYNC_DEADLINE, || async {
        Ok((lane_version(&lane)? == Some(2)).then_some(()))
    })
    .await
    .unwrap();
    let stored = lane_config(&lane.db_path()).unwrap().unwrap();
    assert_eq!(stored, set);
    assert_eq!(
        stored["config"]["offline_card"]["total_fen"],
        json!(300_000)
    );
    assert_eq!(stored["config"]["dynamic_qr_timeout_ms"], json!(90_000));
    assert_eq!(stored["config"]["offline_qr_validity_ms"], json!(600_000));
    let applied = applied_versions(&lane).unwrap();
    assert_eq!(applied.len(), 2, "{applied:?}");
    assert_eq!(applied[1].1, 2);
    // The entry syncs like any other: the gateway holds the lane's whole journal.
    wait_synced(&lane, &fleet.gateway_dir, &terminal_id)
        .await
        .unwrap();

    // The CLI writes version 3 beside the running gateway, which pushes it.
    let file = fleet.root.join("s010.toml");
    std::fs::write(
        &file,
        "[offline_card]\nper_payment_fen = 20000\ntotal_fen = 100000\n\n[wallet_code]\npoll_interval_ms = 3000\n",
    )
    .unwrap();
    let printed = fleet
        .gateway_dir
        .cli(&[
            "config",
            "set",
            "--store",
            "S010",
            "--file",
            file.to_str().unwrap(),
        ])
        .unwrap();
    assert!(printed.contains("configuration version 3 set"), "{printed}");
    poll("version 3 applied", SYNC_DEADLINE, || async {
        Ok((lane_version(&lane)? == Some(3)).then_some(()))
    })
    .await
    .unwrap();
    let stored = lane_config(&lane.db_path()).unwrap().unwrap();
    assert_eq!(
        stored["config"]["offline_card"]["per_payment_fen"],
        json!(20_000)
    );
    assert_eq!(stored["config"]["offline_card"]["count"], json!(200));
    assert_eq!(
        stored["config"]["wallet_code"]["poll_interval_ms"],
        json!(3_000)
    );
    assert_eq!(
        applied_versions(&lane)
            .unwrap()
            .iter()
            .map(|(_, v)| *v)
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let shown = fleet
        .gateway_dir
        .cli(&["config", "show", "--store", "S010"])
        .unwrap();
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown, stored);

    // A version at or below the current one is refused by HQ, and nothing moves.
    let (status, refused) = hq
        .set_store_config("S010", json!({"version": 3}))
        .await
        .unwrap();
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["code"], json!("stale_version"));
    let (status, refused) = hq
        .set_store_config("S010", json!({"wallet_code": {"poll_interval_ms": 0}}))
        .await
        .unwrap();
    assert_eq!(status, 400, "{refused}");
    assert_eq!(hq.store_config("S010").await.unwrap(), stored);

    // HQ's sync_now reaches the lane, which says so on its local API.
    command(&hq, &mut client, &agent, &terminal_id, "sync_now")
        .await
        .unwrap();
    assert!(agent.log().contains("command from HQ"), "{}", agent.log());
    // A command to a terminal nobody enrolled is refused.
    let (status, _) = hq.send_command("S010-L999", "sync_now").await.unwrap();
    assert_eq!(status, 403);
    let (status, _) = hq.send_command(&terminal_id, "format_disk").await.unwrap();
    assert_eq!(status, 400);
    agent.kill().await.unwrap();
}

/// Writes a configuration row straight into the gateway's database: what an attacker with
/// the disk, or a restored old backup, would leave there.
fn plant_config(terminals_db: &std::path::Path, config: &Value, signature: &str) {
    let connection = Connection::open(terminals_db).unwrap();
    connection.busy_timeout(Duration::from_secs(5)).unwrap();
    connection
        .execute(
            "INSERT INTO store_configs (store_id, version, config, signature, created_at_ms) VALUES (?1, ?2, ?3, ?4, 0)",
            params![
                config["store_id"].as_str().unwrap(),
                config["version"].as_i64().unwrap(),
                config.to_string(),
                signature
            ],
        )
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_refuses_a_configuration_signed_by_another_key_or_older_than_its_own() {
    let fleet = fleet("lanepay-sync-config-refused-", &[]).await;
    let hq = fleet.gateway.hq().unwrap();
    let url = fleet.gateway.url();
    let token = fleet.gateway_dir.create_token("S011").unwrap();
    let lane = LaneDir::enroll(&fleet.lane_binary, &url, &token, &fleet.root.join("lane")).unwrap();
    let terminal_id = lane.terminal_id().unwrap();
    let agent = lane.start().await.unwrap();
    let mut client = connect(&lane, &agent).await;
    let (status, v2) = hq
        .set_store_config("S011", json!({"offline_card": {"total_fen": 200_000}}))
        .await
        .unwrap();
    assert_eq!(status, 200, "{v2}");
    poll("version 2 applied", SYNC_DEADLINE, || async {
        Ok((lane_version(&lane)? == Some(2)).then_some(()))
    })
    .await
    .unwrap();
    let journal_before = lane_journal(&lane.db_path()).unwrap().len();

    // Version 5, generous limits, signed by a key that is not the gateway's.
    let mut forged: TerminalConfig = serde_json::from_value(v2["config"].clone()).unwrap();
    forged.version = 5;
    forged.offline_card.total_fen = 99_999_999;
    let forged = sign_config(&forged, &random_key());
    let terminals_db = fleet.gateway_dir.terminals_db();
    plant_config(
        &terminals_db,
        &serde_json::to_value(&forged.config).unwrap(),
        &forged.signature,
    );
    command(&hq, &mut client, &agent, &terminal_id, "reload_config")
        .await
        .unwrap();
    assert_eq!(lane_version(&lane).unwrap(), Some(2));
    assert_eq!(lane_config(&lane.db_path()).unwrap().unwrap(), v2);
    assert!(
        agent
            .log()
            .contains("configuration signature does not verify with the gateway's key"),
        "{}",
        agent.log()
    );

    // The gateway's store restored from an old backup: it serves version 1, validly signed.
    {
        let connection = Connection::open(&terminals_db).unwrap();
        connection.busy_timeout(Duration::from_secs(5)).unwrap();
        connection
            .execute(
                "DELETE FROM store_configs WHERE store_id = 'S011' AND version > 1",
                [],
            )
            .unwrap();
    }
    assert_eq!(
        hq.store_config("S011").await.unwrap()["config"]["version"],
        json!(1)
    );
    command(&hq, &mut client, &agent, &terminal_id, "reload_config")
        .await
        .unwrap();
    assert_eq!(lane_config(&lane.db_path()).unwrap().unwrap(), v2);
    assert!(
        agent
            .log()
            .contains("configuration version 1 is not newer than the current version 2"),
        "{}",
        agent.log()
    );
    // Nothing was journaled for either refusal.
    assert_eq!(lane_journal(&lane.db_path()).unwrap().len(), journal_before);
    agent.kill().await.unwrap();
}
