//! Cashiers and shifts at the lane: who is signed in (PINs checked against argon2id hashes,
//! locked for a while after repeated failures), the cash drawer's float, and the X and Z
//! reports that compare the cash the lane expects with what the cashier counted.
//!
//! The expected cash is computed from the sale and refund rows of the shift's time window
//! (one lane, one open shift at a time), so a tender never has to know about shifts.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use ed25519_dalek::SigningKey;
use lanepay_checkout::Money;
use lanepay_sync::payload::{ShiftClosed, ShiftOpened, kind};
use rusqlite::{Connection, TransactionBehavior};
use serde::{Deserialize, Serialize};

use crate::api::{CommandError, Event};
use crate::store::shifts::{self, ShiftClose, ShiftRow};
use crate::store::{StoreError, journal};

pub use crate::store::shifts::{ShiftFigures, figures};

/// Failed PIN attempts in a row before a cashier is locked out.
pub const MAX_FAILED_ATTEMPTS: i64 = 5;
/// How long a lockout lasts: long enough to stop guessing a 4-digit PIN at the lane.
pub const LOCKOUT_MS: i64 = 5 * 60 * 1_000;
/// PIN length bounds, in digits.
pub const PIN_DIGITS_MIN: usize = 4;
pub const PIN_DIGITS_MAX: usize = 8;
/// Longest cashier id and name kept.
pub const MAX_CASHIER_ID_CHARS: usize = 32;
pub const MAX_CASHIER_NAME_CHARS: usize = 64;

/// Where the lane's cashier and shift stand, with the shift's figures (X report while open,
/// Z report once closed). Amounts are yuan strings like everywhere in the API.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShiftView {
    /// signed_out, signed_in (no open shift), open, closed (the Z report just taken).
    pub state: String,
    pub cashier_id: Option<String>,
    pub cashier_name: Option<String>,
    pub shift_id: Option<String>,
    /// The cashier whose shift is open, when it is not the one signed in (or nobody is).
    pub shift_cashier_id: Option<String>,
    pub opened_at_ms: Option<i64>,
    pub closed_at_ms: Option<i64>,
    pub opening_float: String,
    pub cash_sales: String,
    pub cash_refunds: String,
    pub expected: String,
    pub counted: Option<String>,
    /// counted - expected; negative means the drawer is short.
    pub difference: Option<String>,
    pub sales_count: u64,
    pub refunds_count: u64,
    /// Takings of the shift per tender method (method, yuan), refunds deducted.
    pub by_method: Vec<(String, String)>,
    /// The report as printable lines (X while open, Z once closed).
    pub report_lines: Vec<String>,
}

/// What shift commands need from the lane.
#[derive(Debug)]
pub struct ShiftContext<'a> {
    pub key: &'a SigningKey,
    pub terminal_id: &'a str,
    /// A sale is being built or paid right now.
    pub sale_in_progress: bool,
}

fn storage(error: impl Into<StoreError>) -> CommandError {
    let error: StoreError = error.into();
    tracing::error!(%error, "shift storage failed");
    CommandError::new(
        "storage",
        "the lane could not save this; try again, and call support if it keeps happening",
    )
}

fn not_allowed(message: impl Into<String>) -> CommandError {
    CommandError::new("not_allowed", message)
}

fn parse_amount(text: &str, what: &str) -> Result<Money, CommandError> {
    let amount = Money::parse_yuan(text)
        .map_err(|e| CommandError::new("bad_request", format!("{what}: {e}")))?;
    if amount.is_negative() {
        return Err(CommandError::new(
            "bad_request",
            format!("{what} cannot be negative; count the cash again"),
        ));
    }
    Ok(amount)
}

fn hash_pin(pin: &str) -> Result<String, CommandError> {
    let mut salt_bytes = [0u8; 16];
    getrandom::fill(&mut salt_bytes).map_err(|error| {
        tracing::error!(%error, "no randomness for a PIN salt");
        CommandError::new("storage", "the PIN could not be stored; try again")
    })?;
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|error| {
        tracing::error!(%error, "encoding a PIN salt failed");
        CommandError::new("storage", "the PIN could not be stored; try again")
    })?;
    Argon2::default()
        .hash_password(pin.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| {
            tracing::error!(%error, "hashing a PIN failed");
            CommandError::new("storage", "the PIN could not be stored; try again")
        })
}

fn pin_matches(pin: &str, stored_hash: &str) -> bool {
    PasswordHash::new(stored_hash)
        .and_then(|hash| Argon2::default().verify_password(pin.as_bytes(), &hash))
        .is_ok()
}

fn check_pin_format(pin: &str) -> Result<(), CommandError> {
    let digits = pin.chars().count();
    if !(PIN_DIGITS_MIN..=PIN_DIGITS_MAX).contains(&digits)
        || !pin.chars().all(|c| c.is_ascii_digit())
    {
        return Err(CommandError::new(
            "bad_request",
            format!("a PIN is {PIN_DIGITS_MIN} to {PIN_DIGITS_MAX} digits"),
        ));
    }
    Ok(())
}

/// Registers a cashier (setup and demo). The PIN is kept only as an argon2id hash.
pub fn add_cashier(
    conn: &Connection,
    cashier_id: &str,
    name: &str,
    pin: &str,
) -> Result<ShiftView, CommandError> {
    let cashier_id = cashier_id.trim();
    if cashier_id.is_empty()
        || cashier_id.chars().count() > MAX_CASHIER_ID_CHARS
        || cashier_id.chars().any(char::is_control)
    {
        return Err(CommandError::new(
            "bad_request",
            format!("a cashier id is 1 to {MAX_CASHIER_ID_CHARS} characters"),
        ));
    }
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_CASHIER_NAME_CHARS {
        return Err(CommandError::new(
            "bad_request",
            format!("a cashier's name is 1 to {MAX_CASHIER_NAME_CHARS} characters"),
        ));
    }
    check_pin_format(pin)?;
    if shifts::cashier_exists(conn, cashier_id).map_err(storage)? {
        return Err(not_allowed(format!(
            "cashier {cashier_id} exists already; choose another id"
        )));
    }
    let hash = hash_pin(pin)?;
    shifts::insert_cashier(conn, cashier_id, name, &hash).map_err(storage)?;
    tracing::info!(cashier_id, "cashier added");
    view(conn, None)
}

/// Signs a cashier in with their PIN. Five failures in a row lock the cashier for five minutes.
pub fn sign_in(
    conn: &Connection,
    cashier_id: &str,
    pin: &str,
    now_ms: i64,
) -> Result<ShiftView, CommandError> {
    let wrong = || {
        CommandError::new(
            "not_allowed",
            "cashier id or PIN is wrong; check them and try again",
        )
    };
    let found = shifts::credentials(conn, cashier_id.trim()).map_err(storage)?;
    // An unknown id costs the same hash as a known one, so timing does not tell ids apart.
    let Some(shifts::CashierCredentials {
        pin_hash: stored_hash,
        failed_attempts: failed,
        locked_until_ms,
    }) = found
    else {
        let _ = pin_matches(pin, &hash_pin("0000")?);
        return Err(wrong());
    };
    if let Some(until) = locked_until_ms.filter(|until| *until > now_ms) {
        let minutes = (until - now_ms + 59_999) / 60_000;
        return Err(CommandError::new(
            "locked",
            format!(
                "too many wrong PINs: cashier {cashier_id} is locked for {minutes} more minute(s); \
                 wait, or ask a supervisor"
            ),
        ));
    }
    if !pin_matches(pin, &stored_hash) {
        let failed = failed + 1;
        let (failed, locked_until) = if failed >= MAX_FAILED_ATTEMPTS {
            tracing::warn!(cashier_id, "cashier locked after repeated wrong PINs");
            (0, Some(now_ms + LOCKOUT_MS))
        } else {
            (failed, None)
        };
        shifts::set_failed_attempts(conn, cashier_id.trim(), failed, locked_until)
            .map_err(storage)?;
        if locked_until.is_some() {
            return Err(CommandError::new(
                "locked",
                format!(
                    "too many wrong PINs: cashier {cashier_id} is locked for 5 minutes; \
                     wait, or ask a supervisor"
                ),
            ));
        }
        return Err(wrong());
    }
    let cashier_id = cashier_id.trim();
    if let Some(open) = shifts::open_shift(conn).map_err(storage)?
        && open.cashier_id != cashier_id
    {
        return Err(not_allowed(format!(
            "the shift of cashier {} is still open: they sign in and close it first",
            open.cashier_id
        )));
    }
    shifts::set_failed_attempts(conn, cashier_id, 0, None).map_err(storage)?;
    shifts::start_session(conn, cashier_id, now_ms).map_err(storage)?;
    tracing::info!(cashier_id, "cashier signed in");
    report(conn, now_ms)
}

/// Signs the cashier out; an open shift stays open (a break), and only its cashier resumes it.
pub fn sign_out(conn: &Connection, sale_in_progress: bool) -> Result<ShiftView, CommandError> {
    if sale_in_progress {
        return Err(not_allowed(
            "finish or void the sale in progress before signing out",
        ));
    }
    shifts::end_session(conn).map_err(storage)?;
    view(conn, None)
}

/// Opens a shift for the signed-in cashier with the cash float in the drawer.
pub fn open(
    conn: &mut Connection,
    context: &ShiftContext<'_>,
    float: &str,
    now_ms: i64,
    events: &mut Vec<Event>,
) -> Result<ShiftView, CommandError> {
    let float = parse_amount(float, "opening float")?;
    let cashier_id = signed_in(conn)?;
    if let Some(open) = shifts::open_shift(conn).map_err(storage)? {
        return Err(not_allowed(format!(
            "shift {} is already open; close it before opening another",
            open.shift_id
        )));
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(storage)?;
    let shift_id = shifts::insert_shift(&tx, context.terminal_id, &cashier_id, now_ms, float.fen())
        .map_err(storage)?;
    let payload = ShiftOpened {
        shift_id: shift_id.clone(),
        cashier_id: cashier_id.clone(),
        opening_float_fen: float.fen(),
        at_ms: now_ms,
    };
    let entry = append(&tx, context, kind::SHIFT_OPENED, &payload, now_ms)?;
    tx.commit().map_err(storage)?;
    events.push(Event::JournalAppended {
        seq: entry.seq,
        kind: entry.kind,
    });
    tracing::info!(shift_id, cashier_id, "shift opened");
    report(conn, now_ms)
}

/// Closes the signed-in cashier's shift with the counted cash: the Z report, journaled.
pub fn close(
    conn: &mut Connection,
    context: &ShiftContext<'_>,
    counted: &str,
    now_ms: i64,
    events: &mut Vec<Event>,
) -> Result<ShiftView, CommandError> {
    let counted = parse_amount(counted, "counted cash")?;
    let cashier_id = signed_in(conn)?;
    let Some(shift) = shifts::open_shift(conn).map_err(storage)? else {
        return Err(not_allowed("there is no open shift to close"));
    };
    if shift.cashier_id != cashier_id {
        return Err(not_allowed(format!(
            "this is the shift of cashier {}; they close it",
            shift.cashier_id
        )));
    }
    if context.sale_in_progress {
        return Err(not_allowed(
            "finish or void the sale in progress before closing the shift",
        ));
    }
    let figures = figures(conn, shift.opened_at_ms, now_ms).map_err(storage)?;
    let expected = shift.opening_float_fen + figures.cash_sales_fen - figures.cash_refunds_fen;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(storage)?;
    let row_close = ShiftClose {
        shift_id: &shift.shift_id,
        closed_at_ms: now_ms,
        expected_fen: expected,
        counted_fen: counted.fen(),
    };
    shifts::close_shift(&tx, &row_close).map_err(storage)?;
    let payload = ShiftClosed {
        shift_id: shift.shift_id.clone(),
        cashier_id: cashier_id.clone(),
        opened_at_ms: shift.opened_at_ms,
        opening_float_fen: shift.opening_float_fen,
        cash_sales_fen: figures.cash_sales_fen,
        cash_refunds_fen: figures.cash_refunds_fen,
        expected_fen: expected,
        counted_fen: counted.fen(),
        difference_fen: counted.fen() - expected,
        sales_count: figures.sales_count,
        refunds_count: figures.refunds_count,
        at_ms: now_ms,
    };
    let entry = append(&tx, context, kind::SHIFT_CLOSED, &payload, now_ms)?;
    tx.commit().map_err(storage)?;
    events.push(Event::JournalAppended {
        seq: entry.seq,
        kind: entry.kind,
    });
    tracing::info!(
        shift_id = shift.shift_id,
        difference_fen = counted.fen() - expected,
        "shift closed"
    );
    let closed = ShiftRow {
        closed_at_ms: Some(now_ms),
        counted_fen: Some(counted.fen()),
        ..shift
    };
    let mut shown = view(conn, Some((closed, figures)))?;
    shown.state = "closed".into();
    Ok(shown)
}

/// The current state; with an open shift, its X report (figures so far).
pub fn report(conn: &Connection, now_ms: i64) -> Result<ShiftView, CommandError> {
    match shifts::open_shift(conn).map_err(storage)? {
        Some(shift) => {
            let figures = figures(conn, shift.opened_at_ms, now_ms).map_err(storage)?;
            view(conn, Some((shift, figures)))
        }
        None => view(conn, None),
    }
}

/// The report to print: the open shift's X report, or else the Z report of the shift closed
/// last (its figures recomputed from the same rows as at its close).
pub fn report_to_print(conn: &Connection, now_ms: i64) -> Result<ShiftView, CommandError> {
    if let Some(shift) = shifts::open_shift(conn).map_err(storage)? {
        let figures = figures(conn, shift.opened_at_ms, now_ms).map_err(storage)?;
        return view(conn, Some((shift, figures)));
    }
    let Some(closed) = shifts::last_closed_shift(conn).map_err(storage)? else {
        return Err(not_allowed(
            "there is no shift to report yet: open a shift first",
        ));
    };
    let closed_at_ms = closed.closed_at_ms.unwrap_or(now_ms);
    let figures = figures(conn, closed.opened_at_ms, closed_at_ms).map_err(storage)?;
    let mut shown = view(conn, Some((closed, figures)))?;
    shown.state = "closed".into();
    Ok(shown)
}

fn append<T: Serialize>(
    conn: &Connection,
    context: &ShiftContext<'_>,
    kind: &str,
    payload: &T,
    now_ms: i64,
) -> Result<lanepay_sync::journal::SignedEntry, CommandError> {
    let bytes = lanepay_sync::canonical::to_vec(payload).map_err(storage)?;
    journal::append(conn, context.key, context.terminal_id, kind, bytes, now_ms).map_err(storage)
}

fn signed_in(conn: &Connection) -> Result<String, CommandError> {
    shifts::signed_in(conn)
        .map_err(storage)?
        .map(|(cashier_id, _)| cashier_id)
        .ok_or_else(|| not_allowed("no cashier is signed in: sign in with your id and PIN"))
}

/// Whether a shift is open, for checks before selling.
pub fn has_open_shift(conn: &Connection) -> Result<bool, StoreError> {
    Ok(shifts::open_shift(conn)?.is_some())
}

fn yuan(fen: i64) -> String {
    Money::from_fen(fen).to_string()
}

fn view(
    conn: &Connection,
    shift: Option<(ShiftRow, ShiftFigures)>,
) -> Result<ShiftView, CommandError> {
    let cashier = shifts::signed_in(conn).map_err(storage)?;
    let shift = match shift {
        Some(shift) => Some(shift),
        None => shifts::open_shift(conn)
            .map_err(storage)?
            .map(|row| (row, ShiftFigures::default())),
    };
    let mut shown = ShiftView {
        state: if cashier.is_some() {
            "signed_in"
        } else {
            "signed_out"
        }
        .into(),
        cashier_id: cashier.as_ref().map(|(id, _)| id.clone()),
        cashier_name: cashier.as_ref().map(|(_, name)| name.clone()),
        opening_float: yuan(0),
        cash_sales: yuan(0),
        cash_refunds: yuan(0),
        expected: yuan(0),
        ..ShiftView::default()
    };
    let Some((row, figures)) = shift else {
        return Ok(shown);
    };
    let expected = row.opening_float_fen + figures.cash_sales_fen - figures.cash_refunds_fen;
    if shown.cashier_id.as_deref() == Some(row.cashier_id.as_str()) {
        shown.state = "open".into();
    }
    shown.shift_id = Some(row.shift_id.clone());
    shown.shift_cashier_id = Some(row.cashier_id.clone());
    shown.opened_at_ms = Some(row.opened_at_ms);
    shown.closed_at_ms = row.closed_at_ms;
    shown.opening_float = yuan(row.opening_float_fen);
    shown.cash_sales = yuan(figures.cash_sales_fen);
    shown.cash_refunds = yuan(figures.cash_refunds_fen);
    shown.expected = yuan(expected);
    shown.counted = row.counted_fen.map(yuan);
    shown.difference = row.counted_fen.map(|counted| yuan(counted - expected));
    shown.sales_count = figures.sales_count;
    shown.refunds_count = figures.refunds_count;
    shown.by_method = figures
        .by_method
        .iter()
        .map(|(method, fen)| (method.clone(), yuan(*fen)))
        .collect();
    shown.report_lines = report_lines(&shown);
    Ok(shown)
}

/// The X (open) or Z (closed) report as lines for the printer and the screen.
fn report_lines(shown: &ShiftView) -> Vec<String> {
    let title = if shown.closed_at_ms.is_some() {
        "Z REPORT (shift closed)"
    } else {
        "X REPORT (shift so far)"
    };
    let mut lines = vec![
        title.to_string(),
        format!("shift     {}", shown.shift_id.clone().unwrap_or_default()),
        format!(
            "cashier   {}",
            shown.shift_cashier_id.clone().unwrap_or_default()
        ),
        format!(
            "opened    {}",
            shown
                .opened_at_ms
                .map(crate::lane::format_utc)
                .unwrap_or_default()
        ),
    ];
    if let Some(closed) = shown.closed_at_ms {
        lines.push(format!("closed    {}", crate::lane::format_utc(closed)));
    }
    lines.push(format!("sales     {}", shown.sales_count));
    lines.push(format!("refunds   {}", shown.refunds_count));
    for (method, amount) in &shown.by_method {
        lines.push(format!("{method:<10}{amount:>12}"));
    }
    lines.push(format!("float     {:>12}", shown.opening_float));
    lines.push(format!("cash in   {:>12}", shown.cash_sales));
    lines.push(format!("cash out  {:>12}", shown.cash_refunds));
    lines.push(format!("expected  {:>12}", shown.expected));
    if let (Some(counted), Some(difference)) = (&shown.counted, &shown.difference) {
        lines.push(format!("counted   {counted:>12}"));
        lines.push(format!("difference{difference:>12}"));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_hashed_and_checked() {
        let hash = hash_pin("1234").unwrap();
        assert!(!hash.contains("1234"));
        assert!(hash.starts_with("$argon2id$"));
        assert!(pin_matches("1234", &hash));
        assert!(!pin_matches("1235", &hash));
        assert!(!pin_matches("1234", "not a hash"));
    }

    #[test]
    fn pin_format() {
        assert!(check_pin_format("1234").is_ok());
        assert!(check_pin_format("12345678").is_ok());
        assert!(check_pin_format("123").is_err());
        assert!(check_pin_format("123456789").is_err());
        assert!(check_pin_format("12a4").is_err());
    }
}
