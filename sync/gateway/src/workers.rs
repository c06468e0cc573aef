//! Background workers, each a loop that does what is due, then waits on the injected clock for
//! the next due time (read from the database, so everything resumes after a restart) or for a
//! wakeup: async notify delivery, the rail rule for code payments, refund retries, and timeout
//! close.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::Value;
use tokio::sync::watch;

use crate::error::StoreError;
use crate::service::Gateway;
use crate::store::Notify;

/// Delays after failed attempt 1, 2, ...: fast early retries (15 s, 15 s, 30 s), then seed 004's
/// schedule (2 m, 10 m, 30 m, 1 h, 2 h, 6 h, 12 h). With the first attempt at once that is 11
/// attempts, the last about 21.7 h after the first.
pub const NOTIFY_RETRY_DELAYS_MS: [i64; 10] = [
    15_000, 15_000, 30_000, 120_000, 600_000, 1_800_000, 3_600_000, 7_200_000, 21_600_000,
    43_200_000,
];
/// Notifies stop being retried this long after they were created (seed 004: 24 小时内).
pub const NOTIFY_GIVE_UP_AFTER_MS: i64 = 24 * 3_600_000;
/// Real time a merchant has to answer one notify.
pub const NOTIFY_HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Notifies delivered at the same time.
const NOTIFY_CONCURRENCY: usize = 16;
/// Rows a worker takes per round.
const BATCH: usize = 64;
/// Pause after a database error before trying again (real time: the disk is real).
const ERROR_BACKOFF: Duration = Duration::from_secs(1);
/// Longest merchant answer kept in the attempt log.
const MAX_OUTCOME_CHARS: usize = 200;

/// When the attempt after `attempts_made` failed attempts is due, or `None` to give up.
pub fn next_notify_at(attempts_made: i64, created_at_ms: i64, now_ms: i64) -> Option<i64> {
    let index = usize::try_from(attempts_made.checked_sub(1)?).ok()?;
    let next_at_ms = now_ms + *NOTIFY_RETRY_DELAYS_MS.get(index)?;
    (next_at_ms <= created_at_ms + NOTIFY_GIVE_UP_AFTER_MS).then_some(next_at_ms)
}

async fn blocking<T: Send + 'static>(
    gateway: &Arc<Gateway>,
    work: impl FnOnce(&Gateway) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let gateway = gateway.clone();
    tokio::task::spawn_blocking(move || work(&gateway))
        .await
        .map_err(|error| StoreError::Corrupt(format!("worker task failed: {error}")))?
}

/// Waits until `next_at_ms` on the gateway clock, a wakeup, or shutdown. `false` on shutdown.
async fn wait(
    gateway: &Gateway,
    next_at_ms: Option<i64>,
    wakeup: &tokio::sync::Notify,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let sleep = gateway.clock.sleep_until(next_at_ms.unwrap_or(i64::MAX));
    tokio::select! {
        () = sleep => true,
        () = wakeup.notified() => true,
        _ = shutdown.changed() => false,
    }
}

async fn pause_after_error(shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(ERROR_BACKOFF) => true,
        _ = shutdown.changed() => false,
    }
}

/// Builds the signed notify body: the stored payload plus notify_id, timestamp, sign_type, sign.
fn notify_body(gateway: &Gateway, notify: &Notify) -> Result<Value, StoreError> {
    let mut fields: serde_json::Map<String, Value> =
        serde_json::from_str(&notify.payload).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    fields.insert("notify_id".into(), Value::String(notify.notify_id.clone()));
    let merchant = gateway
        .store
        .merchant(&notify.merchant_id)?
        .ok_or_else(|| {
            StoreError::Corrupt(format!(
                "notify for unknown merchant {}",
                notify.merchant_id
            ))
        })?;
    Ok(Value::Object(gateway.sign_fields(
        &merchant,
        fields,
        gateway.clock.now_ms(),
    )))
}

async fn deliver(gateway: Arc<Gateway>, client: reqwest::Client, notify: Notify) {
    let notify_for_body = notify.clone();
    let body = match blocking(&gateway, move |g| notify_body(g, &notify_for_body)).await {
        Ok(body) => body,
        Err(error) => {
            tracing::error!(%error, notify_id = %notify.notify_id, "cannot build notify");
            return;
        }
    };
    let (delivered, outcome) = match client.post(&notify.notify_url).json(&body).send().await {
        Ok(response) => {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            let delivered = status.is_success() && text.trim() == "success";
            let shown: String = text.chars().take(MAX_OUTCOME_CHARS).collect();
            (delivered, format!("HTTP {}: {shown}", status.as_u16()))
        }
        Err(error) => (false, format!("error: {error}")),
    };
    let now_ms = gateway.clock.now_ms();
    let attempts_made = notify.attempts + 1;
    let next_at_ms = if delivered {
        None
    } else {
        next_notify_at(attempts_made, notify.created_at_ms, now_ms)
    };
    tracing::info!(notify_id = %notify.notify_id, attempt = attempts_made, delivered, %outcome, ?next_at_ms, "notify attempt");
    let notify_id = notify.notify_id.clone();
    if let Err(error) = blocking(&gateway, move |g| {
        g.store
            .record_notify_attempt(&notify_id, now_ms, &outcome, delivered, next_at_ms)
    })
    .await
    {
        tracing::error!(%error, notify_id = %notify.notify_id, "cannot record notify attempt");
    }
}

/// Delivers due notifies until shutdown.
pub async fn notify_worker(
    gateway: Arc<Gateway>,
    client: reqwest::Client,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let now_ms = gateway.clock.now_ms();
        let due = match blocking(&gateway, move |g| g.store.due_notifies(now_ms, BATCH)).await {
            Ok(due) => due,
            Err(error) => {
                tracing::error!(%error, "notify worker: database error");
                if pause_after_error(&mut shutdown).await {
                    continue;
                } else {
                    return;
                }
            }
        };
        if !due.is_empty() {
            futures_util::stream::iter(due)
                .for_each_concurrent(NOTIFY_CONCURRENCY, |notify| {
                    deliver(gateway.clone(), client.clone(), notify)
                })
                .await;
            continue;
        }
        let next_at_ms = blocking(&gateway, |g| g.store.next_notify_at())
            .await
            .unwrap_or(None);
        if !wait(&gateway, next_at_ms, &gateway.notify_wakeup, &mut shutdown).await {
            return;
        }
    }
}

/// Runs the rail rule (poll, then reverse) for PAYING code payments until shutdown.
pub async fn rail_worker(gateway: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let now_ms = gateway.clock.now_ms();
        let result = blocking(&gateway, move |g| {
            let due = g.store.due_rail_orders(now_ms, BATCH)?;
            for order in &due {
                g.rail_step(order, now_ms)?;
            }
            Ok(due.len())
        })
        .await;
        match result {
            Ok(0) => {}
            Ok(_) => continue,
            Err(error) => {
                tracing::error!(%error, "rail worker: database error");
                if pause_after_error(&mut shutdown).await {
                    continue;
                } else {
                    return;
                }
            }
        }
        let next_at_ms = blocking(&gateway, |g| g.store.next_rail_at())
            .await
            .unwrap_or(None);
        if !wait(&gateway, next_at_ms, &gateway.rail_wakeup, &mut shutdown).await {
            return;
        }
    }
}

/// Sends PROCESSING refunds (unanswered, or never sent because of a crash) to the channel
/// again until they are answered, until shutdown.
pub async fn refund_worker(gateway: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let now_ms = gateway.clock.now_ms();
        let result = blocking(&gateway, move |g| {
            let due = g.store.due_refunds(now_ms, BATCH)?;
            for (refund, pay_type) in &due {
                g.refund_step(refund, *pay_type, now_ms)?;
            }
            Ok(due.len())
        })
        .await;
        match result {
            Ok(0) => {}
            Ok(_) => continue,
            Err(error) => {
                tracing::error!(%error, "refund worker: database error");
                if pause_after_error(&mut shutdown).await {
                    continue;
                } else {
                    return;
                }
            }
        }
        let next_at_ms = blocking(&gateway, |g| g.store.next_refund_retry_at())
            .await
            .unwrap_or(None);
        if !wait(&gateway, next_at_ms, &gateway.refund_wakeup, &mut shutdown).await {
            return;
        }
    }
}

/// Closes unpaid orders past their timeout (at the channel too) until shutdown.
pub async fn expiry_worker(gateway: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let now_ms = gateway.clock.now_ms();
        let result = blocking(&gateway, move |g| {
            let due = g.store.expired_orders(now_ms, BATCH)?;
            for order in &due {
                g.expire_step(order, now_ms)?;
            }
            Ok(due.len())
        })
        .await;
        match result {
            Ok(0) => {}
            Ok(_) => continue,
            Err(error) => {
                tracing::error!(%error, "expiry worker: database error");
                if pause_after_error(&mut shutdown).await {
                    continue;
                } else {
                    return;
                }
            }
        }
        let next_at_ms = blocking(&gateway, |g| g.store.next_expiry_at())
            .await
            .unwrap_or(None);
        if !wait(&gateway, next_at_ms, &gateway.expiry_wakeup, &mut shutdown).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_immediate_then_fast_then_seed_004_and_stops_within_24_hours() {
        let created = 0;
        let mut now = created;
        let mut times = vec![now];
        let mut attempts = 1;
        while let Some(next) = next_notify_at(attempts, created, now) {
            now = next;
            times.push(now);
            attempts += 1;
        }
        let minutes: Vec<i64> = times.iter().map(|t| t / 1_000).collect();
        assert_eq!(
            minutes,
            [
                0, 15, 30, 60, 180, 780, 2_580, 6_180, 13_380, 34_980, 78_180
            ]
        );
        assert!(next_notify_at(1, created, NOTIFY_GIVE_UP_AFTER_MS).is_none());
    }
}
