//! Rules a parsed configuration must satisfy; each failure names the key and what to write.
//!
//! Checks run in file order so the first error reported is the first one a reader meets.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use crate::error::ConfigError;
use crate::model::{
    AgentConfig, DisplayDriver, MAX_ID_CHARS, MIN_LOCAL_API_TOKEN_CHARS, NfcDriver, PrinterDriver,
    STANDARD_BAUD_RATES, ScannerDriver, WEIGHTED_ITEM_DIGITS_RANGE, WEIGHTED_PREFIX_DIGITS,
};

pub(crate) fn validate(config: &AgentConfig, path: &Path) -> Result<(), ConfigError> {
    let check = |key: &str, result: Result<(), String>| {
        result.map_err(|message| ConfigError::invalid(path, key, message))
    };

    check("terminal.id", check_id(&config.terminal.id))?;
    check("terminal.store_id", check_id(&config.terminal.store_id))?;
    check(
        "terminal.merchant_id",
        check_id(&config.terminal.merchant_id),
    )?;

    check("sale.currency", check_currency(&config.sale.currency))?;
    let weighted_barcode = &config.sale.weighted_barcode;
    for (index, prefix) in weighted_barcode.prefixes.iter().enumerate() {
        check(
            &format!("sale.weighted_barcode.prefixes[{index}]"),
            check_weighted_prefix(prefix),
        )?;
    }
    check(
        "sale.weighted_barcode.item_digits",
        check_item_digits(weighted_barcode.item_digits),
    )?;

    let local_api = &config.local_api;
    if !local_api.listen.ip().is_loopback() {
        return Err(ConfigError::invalid(
            path,
            "local_api.listen",
            format!(
                "{} is not a loopback address; the local API must only be reachable from this PC, use 127.0.0.1 or [::1] with a port, like \"127.0.0.1:7420\"",
                local_api.listen
            ),
        ));
    }
    match &local_api.token_file {
        Some(token_file) => check(
            "local_api.token_file",
            check_token(local_api.token())
                .map_err(|problem| format!("the token in {} {problem}", token_file.display())),
        )?,
        None => check(
            "local_api.token",
            check_token(local_api.token()).map_err(|problem| format!("the token {problem}")),
        )?,
    }

    if let Some(gateway) = &config.gateway {
        check("gateway.url", check_gateway_url(&gateway.url))?;
    }

    let limits = &config.offline_limits;
    check(
        "offline_limits.per_payment",
        check_positive_fen(limits.per_payment_fen),
    )?;
    check(
        "offline_limits.total_stored",
        check_positive_fen(limits.total_stored_fen),
    )?;
    if limits.per_payment_fen > limits.total_stored_fen {
        return Err(ConfigError::invalid(
            path,
            "offline_limits.per_payment",
            "is larger than `total_stored`, so a single payment could never be stored; lower `per_payment` or raise `total_stored`",
        ));
    }

    let devices = &config.devices;
    let scanner = &devices.scanner;
    check("devices.scanner.baud", check_baud(scanner.baud))?;
    check(
        "devices.scanner.port",
        check_port(
            scanner.port.as_deref(),
            scanner.driver == ScannerDriver::Serial,
            "serial",
        ),
    )?;
    let display = &devices.display;
    check("devices.display.baud", check_baud(display.baud))?;
    check(
        "devices.display.port",
        check_port(
            display.port.as_deref(),
            display.driver == DisplayDriver::Serial,
            "serial",
        ),
    )?;
    let printer = &devices.printer;
    check("devices.printer.baud", check_baud(printer.baud))?;
    check(
        "devices.printer.port",
        check_port(
            printer.port.as_deref(),
            printer.driver == PrinterDriver::Serial,
            "serial",
        ),
    )?;
    let nfc = &devices.nfc;
    check("devices.nfc.baud", check_baud(nfc.baud))?;
    check(
        "devices.nfc.port",
        check_port(
            nfc.port.as_deref(),
            nfc.driver == NfcDriver::Libnfc,
            "libnfc (a connection string like \"pn532_uart:/dev/ttyUSB0:115200\")",
        ),
    )?;
    Ok(())
}

fn check_id(id: &str) -> Result<(), String> {
    let length_ok = (1..=MAX_ID_CHARS).contains(&id.chars().count());
    let charset_ok = id
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
    if length_ok && charset_ok {
        Ok(())
    } else {
        Err(format!(
            "`{id}` is not a valid id; use 1 to {MAX_ID_CHARS} characters from A-Z, a-z, 0-9, `_` and `-`"
        ))
    }
}

fn check_currency(currency: &str) -> Result<(), String> {
    if currency.len() == 3 && currency.bytes().all(|byte| byte.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(format!(
            "`{currency}` is not an ISO 4217 currency code; write three uppercase letters, like \"CNY\""
        ))
    }
}

fn check_weighted_prefix(prefix: &str) -> Result<(), String> {
    if prefix.len() == usize::from(WEIGHTED_PREFIX_DIGITS)
        && prefix.bytes().all(|byte| byte.is_ascii_digit())
    {
        Ok(())
    } else {
        Err(format!(
            "`{prefix}` is not a {WEIGHTED_PREFIX_DIGITS}-digit prefix; write it as a quoted two-digit string, like \"20\""
        ))
    }
}

fn check_item_digits(item_digits: u8) -> Result<(), String> {
    if WEIGHTED_ITEM_DIGITS_RANGE.contains(&item_digits) {
        Ok(())
    } else {
        Err(format!(
            "{item_digits} is out of range; the item number on a weighted label has {} to {} digits",
            WEIGHTED_ITEM_DIGITS_RANGE.start(),
            WEIGHTED_ITEM_DIGITS_RANGE.end()
        ))
    }
}

/// The token goes into an `Authorization: Bearer` header, so it must be visible ASCII.
fn check_token(token: &str) -> Result<(), String> {
    if token.chars().count() < MIN_LOCAL_API_TOKEN_CHARS {
        return Err(format!(
            "is shorter than {MIN_LOCAL_API_TOKEN_CHARS} characters; use a random secret of at least {MIN_LOCAL_API_TOKEN_CHARS} characters"
        ));
    }
    if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(
            "contains spaces, control or non-ASCII characters; use visible ASCII characters only"
                .to_owned(),
        );
    }
    Ok(())
}

fn check_positive_fen(amount_fen: i64) -> Result<(), String> {
    if amount_fen > 0 {
        Ok(())
    } else {
        Err("must be greater than zero; write yuan like \"500.00\"".to_owned())
    }
}

fn check_baud(baud: u32) -> Result<(), String> {
    if STANDARD_BAUD_RATES.contains(&baud) {
        Ok(())
    } else {
        let rates = STANDARD_BAUD_RATES
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        Err(format!(
            "{baud} is not a standard baud rate; use one of {rates} (the device's manual or DIP switches tell which)"
        ))
    }
}

fn check_port(port: Option<&str>, required: bool, driver: &str) -> Result<(), String> {
    match port {
        Some(port) if port.trim().is_empty() => Err(
            "is empty; name the port, like \"/dev/ttyACM0\" or \"COM3\", or remove the key"
                .to_owned(),
        ),
        Some(_) => Ok(()),
        None if required => Err(format!(
            "is required for driver {driver}; name the port, like \"/dev/ttyACM0\" or \"COM3\""
        )),
        None => Ok(()),
    }
}

/// `https://host[:port][/path]`, or `http://` to a loopback host for development: anything else
/// would send signed journal entries and card data readable to the network.
fn check_gateway_url(url: &str) -> Result<(), String> {
    const FORM: &str = "write it like \"https://gateway.example.com:8443\"";
    if url
        .bytes()
        .any(|byte| byte.is_ascii_whitespace() || byte.is_ascii_control())
    {
        return Err(format!(
            "`{url}` contains spaces or control characters; {FORM}"
        ));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("`{url}` is not a URL; {FORM}"));
    };
    let is_http = if scheme.eq_ignore_ascii_case("https") {
        false
    } else if scheme.eq_ignore_ascii_case("http") {
        true
    } else {
        return Err(format!(
            "`{url}` uses scheme `{scheme}`; use https://, {FORM}"
        ));
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = rest.get(..authority_end).unwrap_or(rest);
    if authority.contains('@') {
        return Err(format!(
            "`{url}` contains a user name or password; remove it, the terminal authenticates with its key"
        ));
    }
    let host =
        host_of_authority(authority).map_err(|problem| format!("`{url}` {problem}; {FORM}"))?;
    if is_http && !is_loopback_host(host) {
        return Err(format!(
            "`{url}` uses plain http:// to `{host}`, which is not this PC; use https:// (http:// is allowed only to 127.0.0.0/8, [::1] or localhost, for development)"
        ));
    }
    Ok(())
}

/// The host of `host`, `host:port`, `[v6]` or `[v6]:port`, checked for form.
fn host_of_authority(authority: &str) -> Result<&str, String> {
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else {
            return Err("has an unclosed `[` in its host".to_owned());
        };
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(format!("has `[{host}]`, which is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return Err("has text after its `]`".to_owned()),
            },
        };
        (host, port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("has no host".to_owned());
    }
    if !authority.starts_with('[')
        && !host.bytes().all(|byte| {
            byte.is_ascii_alphanumeric() || byte == b'.' || byte == b'-' || byte == b'_'
        })
    {
        return Err(format!(
            "has host `{host}` with characters a host name cannot have (IPv6 addresses go in brackets)"
        ));
    }
    if let Some(port) = port
        && !port.parse::<u16>().is_ok_and(|port| port != 0)
    {
        return Err(format!(
            "has port `{port}`, which is not a port number (1-65535)"
        ));
    }
    Ok(host)
}

fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<Ipv4Addr>()
            .is_ok_and(|address| address.is_loopback())
        || host
            .parse::<Ipv6Addr>()
            .is_ok_and(|address| address.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_urls() {
        for good in [
            "https://gw.example:8443",
            "https://gw.example",
            "https://gw.example/base/path?x=1",
            "HTTPS://10.0.0.5:8443",
            "https://[2001:db8::1]:8443/",
            "http://127.0.0.1:8080",
            "http://127.9.9.9",
            "http://localhost:8080/",
            "http://LOCALHOST",
            "http://[::1]:8080",
        ] {
            assert_eq!(check_gateway_url(good), Ok(()), "{good}");
        }
        for bad in [
            "http://gw.example:8080",
            "http://10.0.0.5",
            "http://[2001:db8::1]:80",
            "http://localhost.evil.example",
            "http://127.0.0.1.evil.example",
            "ftp://gw.example",
            "gw.example:8443",
            "https://",
            "https://:8443",
            "https://user:pass@gw.example",
            "https://gw.example:99999",
            "https://gw.example:",
            "https://gw example",
            "https://[::1",
            "https://2001:db8::1",
        ] {
            assert!(check_gateway_url(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn ids() {
        assert_eq!(check_id("T0001"), Ok(()));
        assert_eq!(check_id("lane_1-a"), Ok(()));
        assert!(check_id("").is_err());
        assert!(check_id("has space").is_err());
        assert!(check_id("收银台").is_err());
        assert!(check_id(&"x".repeat(33)).is_err());
    }
}
