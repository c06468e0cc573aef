//! Crashes between "gateway stored" and "lane marked acknowledged", in both orders, on the
//! real binaries with a proxy between them that holds back the gateway's answers (the gateway
//! stored, the lane never heard) or the lane's requests (the lane sent, the gateway never got
//! them) while a process is SIGKILLed. Afterwards: every entry stored exactly once, the ledger
//! equal to the lane's totals to the fen, the outbox drained.

use anyhow::Context;
use lanepay_tests::books::{lane_acknowledged, lane_head};
use lanepay_tests::gateway::stored_entries;
use lanepay_tests::lane::LaneDir;
use lanepay_tests::proxy::{FaultProxy, Mode};

use crate::sync::{SYNC_DEADLINE, check_books, connect, fleet, poll, sell, wait_synced};

/// Crash order 1: the gateway stored a batch, the lane never heard (its answers are held),
/// and the lane is SIGKILLed before it could mark anything. Restarted, it sends again; the
/// gateway acknowledges the duplicates and stores nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lane_killed_after_the_gateway_stored_but_before_it_marked_the_outbox() {
    let fleet = fleet("lanepay-sync-crash-lane-", &[]).await;
    let proxy = FaultProxy::start(fleet.gateway.address(), 1).await.unwrap();
    let token = fleet.gateway_dir.create_token("S011").unwrap();
    let lane = LaneDir::enroll(
        &fleet.lane_binary,
        &proxy.url(),
        &token,
        &fleet.root.join("lane"),
    )
    .unwrap();
    let terminal_id = lane.terminal_id().unwrap();
    let agent = lane.start().await.unwrap();
    let mut client = connect(&lane, &agent).await;
    for item in 0..3 {
        sell(&mut client, item).await.unwrap();
    }
    wait_synced(&lane, &fleet.gateway_dir, &terminal_id)
        .await
        .unwrap();

    proxy.set_mode(Mode::HoldAnswers);
    for item in 0..5 {
        sell(&mut client, item).await.unwrap();
    }
    // One batch is in flight at a time, so the gateway stores the first batch sent after
    // the switch and the lane waits for its answer.
    let head = lane_head(&lane.db_path()).unwrap();
    let synced = head - 5;
    let terminals_db = fleet.gateway_dir.terminals_db();
    let id = terminal_id.clone();
    let stored = poll(
        "the gateway to store a batch whose answer is held",
        SYNC_DEADLINE,
        || {
            let (terminals_db, id) = (terminals_db.clone(), id.clone());
            async move {
                let stored = stored_entries(&terminals_db, &id)?.len() as u64;
                Ok((stored > synced).then_some(stored))
            }
        },
    )
    .await
    .unwrap();
    let acknowledged = lane_acknowledged(&lane.db_path()).unwrap();
    assert!(
        acknowledged < stored,
        "the lane marked {acknowledged} though no answer reached it (gateway stored {stored})"
    );
    let log = agent.kill().await.unwrap();
    assert!(!log.contains("panicked"), "{log}");

    proxy.set_mode(Mode::Pass);
    let agent = lane.start().await.unwrap();
    let mut client = connect(&lane, &agent).await;
    sell(&mut client, 4).await.unwrap();
    wait_synced(&lane, &fleet.gateway_dir, &terminal_id)
        .await
        .with_context(|| format!("agent log:\n{}", agent.log()))
        .unwrap();
    let hq = fleet.gateway.hq().unwrap();
    let (entries, _) = check_books(&lane, &fleet.gateway_dir, &hq, &terminal_id)
        .await
        .unwrap();
    assert_eq!(entries, head + 1);
    agent.kill().await.unwrap();
}

/// Crash order 2: the lane sent, and the gateway is SIGKILLed (a) before the batch reached
/// it and (b) after it stored the batch but before its answer reached the lane; the lane is
/// killed too, and both restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_killed_after_the_lane_sent_before_and_after_storing() {
    let mut fleet = fleet("lanepay-sync-crash-gateway-", &[]).await;
    let proxy = FaultProxy::start(fleet.gateway.address(), 2).await.unwrap();
    let token = fleet.gateway_dir.create_token("S012").unwrap();
    let lane = LaneDir::enroll(
        &fleet.lane_binary,
        &proxy.url(),
        &token,
        &fleet.root.join("lane"),
    )
    .unwrap();
    let terminal_id = lane.terminal_id().unwrap();
    let mut agent = lane.start().await.unwrap();
    let mut client = connect(&lane, &agent).await;
    sell(&mut client, 0).await.unwrap();
    wait_synced(&lane, &fleet.gateway_dir, &terminal_id)
        .await
        .unwrap();

    for (mode, label) in [
        (Mode::HoldRequests, "before storing"),
        (Mode::HoldAnswers, "after storing"),
    ] {
        proxy.set_mode(mode);
        let held_before = proxy
            .stats()
            .held_requests
            .load(std::sync::atomic::Ordering::SeqCst)
            + proxy
                .stats()
                .held_answers
                .load(std::sync::atomic::Ordering::SeqCst);
        let synced = lane_head(&lane.db_path()).unwrap();
        for item in 0..4 {
            sell(&mut client, item).await.unwrap();
        }
        let head = lane_head(&lane.db_path()).unwrap();
        let terminals_db = fleet.gateway_dir.terminals_db();
        let id = terminal_id.clone();
        let stats = proxy.stats();
        poll(
            &format!("the lane to send ({label})"),
            SYNC_DEADLINE,
            || {
                let (terminals_db, id) = (terminals_db.clone(), id.clone());
                let held = stats
                    .held_requests
                    .load(std::sync::atomic::Ordering::SeqCst)
                    + stats.held_answers.load(std::sync::atomic::Ordering::SeqCst);
                async move {
                    let stored = stored_entries(&terminals_db, &id)?.len() as u64;
                    let sent = held > held_before;
                    Ok(match mode {
                        // Stored beyond what the lane had marked: the answer is what is missing.
                        Mode::HoldAnswers => (sent && stored > synced).then_some(()),
                        _ => sent.then_some(()),
                    })
                }
            },
        )
        .await
        .unwrap();
        let stored = stored_entries(&fleet.gateway_dir.terminals_db(), &terminal_id)
            .unwrap()
            .len() as u64;
        let acknowledged = lane_acknowledged(&lane.db_path()).unwrap();
        assert_eq!(
            acknowledged, synced,
            "{label}: the lane marked what no answer told it"
        );
        if mode == Mode::HoldRequests {
            assert_eq!(
                stored, synced,
                "{label}: the gateway stored what it never got"
            );
        }
        let log = fleet.gateway.kill().await.unwrap();
        assert!(!log.contains("panicked"), "{log}");
        let log = agent.kill().await.unwrap();
        assert!(!log.contains("panicked"), "{log}");
        proxy.set_mode(Mode::Pass);
        fleet.gateway = fleet.gateway_dir.start().await.unwrap();
        proxy.set_upstream(fleet.gateway.address());
        agent = lane.start().await.unwrap();
        client = connect(&lane, &agent).await;
        wait_synced(&lane, &fleet.gateway_dir, &terminal_id)
            .await
            .with_context(|| format!("{label}: agent log:\n{}", agent.log()))
            .unwrap();
        let hq = fleet.gateway.hq().unwrap();
        let (entries, _) = check_books(&lane, &fleet.gateway_dir, &hq, &terminal_id)
            .await
            .with_context(|| label.to_string())
            .unwrap();
        assert_eq!(entries, head, "{label}");
    }
    agent.kill().await.unwrap();
}
