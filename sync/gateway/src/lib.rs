//! `lanepay-gateway`: the upstream gateway that merchant servers pay through and lanes sync to.
//!
//! It implements the merchant payment API of seed 004 (`/api/payment/create`, `query`,
//! `refund`, `refund/query`, `close`) over JSON with sorted-parameter signatures (HMAC-SHA256 or
//! RSA-SHA256, pinned per merchant), a ±300 s timestamp window and a nonce cache; idempotency by
//! `(merchant_id, out_trade_no)` and `(merchant_id, out_refund_no)` with a request hash; the
//! order state machine (seed 004 extended with PAYING, FAILED, REVOKED) as compare-and-set
//! updates in SQLite; sandbox channels for Alipay, WeChat Pay, UnionPay and a card acquirer;
//! the rails' rule for code payments (poll, then reverse); async notify with a persisted retry
//! schedule; timeout close; and an OpenAPI document. `docs/gateway-api.md` is the reference.
//!
//! Layout, outside in: [`http`] (axum routes) → [`service`] (business logic, synchronous, on the
//! blocking pool) → [`store`] (SQLite) and [`channel`] (rails); [`workers`] run the timed parts;
//! [`model`], [`money`], [`signing`] and [`params`] are pure. All time comes from [`clock`].
//!
//! The server follows mini-redis: [`run`] takes a bound listener and a shutdown future, so tests
//! and the binary start it the same way.

pub mod channel;
pub mod clock;
pub mod error;
pub mod http;
pub mod model;
pub mod money;
pub mod openapi;
pub mod params;
pub mod service;
pub mod signing;
pub mod store;
pub mod terminals;
pub mod tls;
pub mod workers;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::clock::ManualClock;
use crate::service::Gateway;

/// Serves the gateway on `listener` until `shutdown` resolves, with its background workers
/// (notify, rail rule, refund retries, timeout close). In-flight requests finish; workers stop at their next
/// wait, and anything they had not done is still in the database for the next start.
pub async fn run(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    gateway: Arc<Gateway>,
    manual_clock: Option<Arc<ManualClock>>,
) -> Result<(), error::GatewayError> {
    // Small request/response frames: no Nagle delay on the live channel.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    run_on(listener, shutdown, gateway, manual_clock).await
}

/// [`run`] over HTTPS and WSS: TLS with `tls` (see [`tls::server_config`]) on `listener`.
pub async fn run_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    gateway: Arc<Gateway>,
    manual_clock: Option<Arc<ManualClock>>,
) -> Result<(), error::GatewayError> {
    let listener = tls::TlsListener::new(listener, tls).map_err(error::GatewayError::Io)?;
    run_on(listener, shutdown, gateway, manual_clock).await
}

async fn run_on<L>(
    listener: L,
    shutdown: impl Future<Output = ()> + Send + 'static,
    gateway: Arc<Gateway>,
    manual_clock: Option<Arc<ManualClock>>,
) -> Result<(), error::GatewayError>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let (stop_workers, worker_shutdown) = tokio::sync::watch::channel(false);
    let client = reqwest::Client::builder()
        .timeout(workers::NOTIFY_HTTP_TIMEOUT)
        // Redirects could lead a notify off the merchant's registered hosts.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|error| {
            error::GatewayError::Invalid(format!("cannot build the notify HTTP client: {error}"))
        })?;
    let workers = [
        tokio::spawn(workers::notify_worker(
            gateway.clone(),
            client,
            worker_shutdown.clone(),
        )),
        tokio::spawn(workers::rail_worker(
            gateway.clone(),
            worker_shutdown.clone(),
        )),
        tokio::spawn(workers::refund_worker(
            gateway.clone(),
            worker_shutdown.clone(),
        )),
        tokio::spawn(workers::expiry_worker(gateway.clone(), worker_shutdown)),
    ];
    let terminal_service =
        terminals::TerminalService::open(&gateway.config.data_dir, gateway.clock.clone()).map_err(
            |error| {
                error::GatewayError::Invalid(format!("cannot open the terminal registry: {error}"))
            },
        )?;
    let terminal_state = terminals::http::TerminalState {
        service: Arc::new(terminal_service),
        admin_token: gateway.config.admin_token.clone(),
    };
    let payments_state =
        terminals::payments::PaymentsState::new(gateway.clone(), terminal_state.service.clone())
            .map_err(|error| {
                error::GatewayError::Invalid(format!(
                    "cannot start the terminal payment API: {error}"
                ))
            })?;
    let payment_pushes = tokio::spawn(terminals::payments::forward_order_changes(
        payments_state.clone(),
        stop_workers.subscribe(),
    ));
    let router = http::router(http::AppState::new(gateway, manual_clock))
        .merge(terminals::http::router(terminal_state))
        .merge(terminals::payments::router(payments_state));
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await;
    // Workers only wait for the signal; a send error means they are all gone already.
    let _ = stop_workers.send(true);
    let _ = payment_pushes.await;
    for worker in workers {
        if let Err(error) = worker.await {
            tracing::error!(%error, "a background worker failed");
        }
    }
    served.map_err(error::GatewayError::Io)
}
