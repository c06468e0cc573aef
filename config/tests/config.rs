//! Integration tests for lanepay-config: loading, defaults, errors a technician reads, writing.

use std::fs;
use std::path::{Path, PathBuf};

use lanepay_config::{
    AgentConfig, ConfigError, DisplayDriver, JournalSync, NfcDriver, PrinterDriver, ScannerDriver,
    ScannerTerminator, TaxMode, TextEncoding, WeightedValue,
};
use proptest::prelude::*;

const REFERENCE_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/agent.reference.toml");

const TOKEN: &str = "0123456789abcdef-secret";

/// The smallest file that loads: the required identity and a token.
const MINIMAL: &str = r#"
[terminal]
id = "T0001"
store_id = "S001"
merchant_id = "M1001"

[local_api]
token = "0123456789abcdef-secret"
"#;

fn messages_path() -> &'static Path {
    Path::new("/etc/lanepay/agent.toml")
}

fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
    AgentConfig::from_toml_str(text, messages_path())
}

/// `MINIMAL` with `extra` appended (new sections or keys of the last section).
fn parse_minimal_plus(extra: &str) -> Result<AgentConfig, ConfigError> {
    parse(&format!("{MINIMAL}{extra}"))
}

/// 1-based line of the first line of `text` that contains `needle`.
fn line_containing(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|line| line.contains(needle))
        .expect("the needle is in the text")
        + 1
}

#[track_caller]
fn expect_parse_error(result: Result<AgentConfig, ConfigError>) -> (String, Option<usize>, String) {
    match result {
        Err(ConfigError::Parse {
            path,
            key,
            line,
            message,
        }) => {
            assert_eq!(path, messages_path());
            (key, line, message)
        }
        other => panic!("expected a Parse error, got {other:?}"),
    }
}

#[track_caller]
fn expect_invalid(result: Result<AgentConfig, ConfigError>) -> (String, String) {
    match result {
        Err(ConfigError::Invalid { path, key, message }) => {
            assert_eq!(path, messages_path());
            (key, message)
        }
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

#[test]
fn reference_file_loads_with_the_documented_values() {
    let config = AgentConfig::load(Path::new(REFERENCE_FILE)).unwrap();
    assert_eq!(config.terminal.id, "T0001");
    assert_eq!(config.terminal.name.as_deref(), Some("Lane 1"));
    assert_eq!(config.storage.data_dir, PathBuf::from("/var/lib/lanepay"));
    assert_eq!(config.local_api.listen, "127.0.0.1:7420".parse().unwrap());
    assert_eq!(
        config.gateway.as_ref().unwrap().url,
        "https://gw.example:8443"
    );
    assert_eq!(config.offline_limits.per_payment_fen, 50_000);
    assert_eq!(config.offline_limits.total_stored_fen, 500_000);
    assert_eq!(config.devices.nfc.baud, 115_200);
}

/// The reference file claims to show the defaults; hold it to that.
#[test]
fn reference_file_values_are_the_defaults() {
    let reference = AgentConfig::load(Path::new(REFERENCE_FILE)).unwrap();
    let defaults = parse(MINIMAL).unwrap();
    assert_eq!(reference.sale, defaults.sale);
    assert_eq!(
        reference.storage.journal_sync,
        defaults.storage.journal_sync
    );
    assert_eq!(reference.local_api.listen, defaults.local_api.listen);
    assert_eq!(reference.offline_limits, defaults.offline_limits);
    assert_eq!(reference.devices, defaults.devices);
}

#[test]
fn defaults_are_as_documented() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.terminal.name, None);
    assert_eq!(config.sale.currency, "CNY");
    assert_eq!(config.sale.tax_mode, TaxMode::Included);
    let weighted = &config.sale.weighted_barcode;
    assert_eq!(
        weighted.prefixes,
        ["20", "21", "22", "23", "24", "25", "26", "27", "28", "29"]
    );
    assert_eq!(weighted.item_digits, 5);
    assert_eq!(weighted.value_digits(), 5);
    assert_eq!(weighted.value, WeightedValue::WeightGrams);
    assert!(weighted.matches_prefix("2112345012345"));
    assert!(!weighted.matches_prefix("6901234567892"));
    assert_eq!(config.storage.data_dir, PathBuf::from("/etc/lanepay"));
    assert_eq!(config.storage.journal_sync, JournalSync::Full);
    assert_eq!(config.storage.journal_sync.sqlite_pragma_value(), "FULL");
    assert_eq!(config.local_api.listen, "127.0.0.1:7420".parse().unwrap());
    assert_eq!(config.local_api.token(), TOKEN);
    assert_eq!(config.local_api.token_file, None);
    assert_eq!(config.gateway, None);
    assert_eq!(config.offline_limits.per_payment_fen, 50_000);
    assert_eq!(config.offline_limits.total_stored_fen, 500_000);
    assert_eq!(config.offline_limits.max_count, 200);
    assert_eq!(config.offline_limits.max_age_hours, 72);
    let devices = &config.devices;
    assert_eq!(devices.scanner.driver, ScannerDriver::None);
    assert_eq!(devices.scanner.port, None);
    assert_eq!(devices.scanner.baud, 9_600);
    assert_eq!(devices.scanner.terminator, ScannerTerminator::Cr);
    assert_eq!(devices.scanner.prefix, "");
    assert!(!devices.scanner.aim_ids);
    assert_eq!(devices.display.driver, DisplayDriver::None);
    assert_eq!(devices.display.baud, 9_600);
    assert_eq!(devices.display.encoding, TextEncoding::Gb18030);
    assert_eq!(devices.printer.driver, PrinterDriver::None);
    assert_eq!(devices.printer.encoding, TextEncoding::Gb18030);
    assert_eq!(devices.nfc.driver, NfcDriver::None);
    assert_eq!(devices.nfc.baud, 115_200);
}

#[test]
fn configured_values_are_read() {
    let config = parse_minimal_plus(
        r#"
[sale]
currency = "HKD"
tax_mode = "excluded"
[sale.weighted_barcode]
prefixes = ["02", "28"]
item_digits = 6
value = "price_fen"

[storage]
journal_sync = "normal"

[offline_limits]
per_payment = "12.3"
total_stored = "1000"
max_count = 0
max_age_hours = 24

[devices.scanner]
driver = "serial"
port = "/dev/ttyACM0"
baud = 115200
terminator = "crlf"
prefix = "\u0002"
aim_ids = true

[devices.printer]
driver = "emulator"
encoding = "ascii"

[devices.nfc]
driver = "libnfc"
port = "pn532_uart:/dev/ttyUSB0:115200"
"#,
    )
    .unwrap();
    assert_eq!(config.sale.currency, "HKD");
    assert_eq!(config.sale.tax_mode, TaxMode::Excluded);
    assert_eq!(config.sale.weighted_barcode.prefixes, ["02", "28"]);
    assert_eq!(config.sale.weighted_barcode.value_digits(), 4);
    assert_eq!(config.sale.weighted_barcode.value, WeightedValue::PriceFen);
    assert_eq!(config.storage.journal_sync, JournalSync::Normal);
    assert_eq!(config.offline_limits.per_payment_fen, 1_230);
    assert_eq!(config.offline_limits.total_stored_fen, 100_000);
    assert_eq!(config.offline_limits.max_count, 0);
    assert_eq!(config.devices.scanner.driver, ScannerDriver::Serial);
    assert_eq!(config.devices.scanner.terminator.as_bytes(), b"\r\n");
    assert_eq!(config.devices.scanner.prefix, "\u{2}");
    assert!(config.devices.scanner.aim_ids);
    assert_eq!(config.devices.printer.driver, PrinterDriver::Emulator);
    assert_eq!(config.devices.printer.encoding, TextEncoding::Ascii);
    assert_eq!(config.devices.nfc.driver, NfcDriver::Libnfc);
    assert_eq!(
        config.devices.nfc.port.as_deref(),
        Some("pn532_uart:/dev/ttyUSB0:115200")
    );
}

#[test]
fn unknown_top_level_key_is_named_with_its_line() {
    let text = format!("colour = \"red\"\n{MINIMAL}");
    let (key, line, message) = expect_parse_error(parse(&text));
    assert_eq!(key, "colour");
    assert_eq!(line, Some(1));
    assert!(message.contains("unknown field `colour`"), "{message}");
}

#[test]
fn unknown_section_is_named() {
    let text = format!("{MINIMAL}\n[printer]\ndriver = \"serial\"\n");
    let (key, line, _) = expect_parse_error(parse(&text));
    assert_eq!(key, "printer");
    assert_eq!(line, Some(line_containing(&text, "[printer]")));
}

#[test]
fn unknown_nested_key_is_named_with_its_line() {
    let text = format!("{MINIMAL}\n[sale]\ncurrency = \"CNY\"\ntaxmode = \"included\"\n");
    let error = parse(&text).unwrap_err();
    let display = error.to_string();
    let (key, line, message) = expect_parse_error(Err(error));
    assert_eq!(key, "sale.taxmode");
    assert_eq!(line, Some(line_containing(&text, "taxmode")));
    assert!(message.contains("unknown field `taxmode`"), "{message}");
    assert!(
        message.contains("tax_mode"),
        "names the keys that exist: {message}"
    );
    assert!(
        display.starts_with("/etc/lanepay/agent.toml: key `sale.taxmode` (line "),
        "{display}"
    );
}

#[test]
fn unknown_device_key_is_named() {
    let text = format!("{MINIMAL}\n[devices.display]\nterminator = \"cr\"\n");
    let (key, line, _) = expect_parse_error(parse(&text));
    assert_eq!(key, "devices.display.terminator");
    assert_eq!(line, Some(line_containing(&text, "terminator")));

    let text = format!("{MINIMAL}\n[gateway]\nurl = \"https://gw.example\"\npin = \"x\"\n");
    let (key, line, _) = expect_parse_error(parse(&text));
    assert_eq!(key, "gateway.pin");
    assert_eq!(line, Some(line_containing(&text, "pin")));
}

#[test]
fn unknown_variant_reads_as_documented() {
    let text = format!("{MINIMAL}\n[sale]\ntax_mode = \"inclusive\"\n");
    let line = line_containing(&text, "inclusive");
    let error = parse(&text).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "/etc/lanepay/agent.toml: key `sale.tax_mode` (line {line}): unknown variant `inclusive`, expected `included` or `excluded`"
        )
    );
    assert_eq!(error.key(), Some("sale.tax_mode"));
}

#[test]
fn wrong_type_names_the_key() {
    let text = format!("{MINIMAL}\n[offline_limits]\nmax_count = \"many\"\n");
    let (key, line, message) = expect_parse_error(parse(&text));
    assert_eq!(key, "offline_limits.max_count");
    assert_eq!(line, Some(line_containing(&text, "max_count")));
    assert!(message.contains("invalid type"), "{message}");

    let (key, _, _) = expect_parse_error(parse_minimal_plus(
        "\n[devices.scanner]\naim_ids = \"yes\"\n",
    ));
    assert_eq!(key, "devices.scanner.aim_ids");

    let (key, _, _) = expect_parse_error(parse_minimal_plus(
        "\n[sale.weighted_barcode]\nprefixes = [\"20\", 21]\n",
    ));
    assert_eq!(key, "sale.weighted_barcode.prefixes[1]");

    let (key, _, _) = expect_parse_error(parse_minimal_plus(
        "\n[offline_limits]\nmax_age_hours = -1\n",
    ));
    assert_eq!(key, "offline_limits.max_age_hours");
}

#[test]
fn bad_amounts_name_the_key() {
    for (amount, expected_words) in [
        ("\"5.001\"", "more than 2 decimal places"),
        ("\"-1\"", "negative"),
        ("\"abc\"", "not an amount"),
        ("\"0.00\"", "zero"),
        ("\"\"", "not an amount"),
        ("500.00", "quoted decimal string"),
        ("500", "quoted decimal string"),
    ] {
        let text = format!("{MINIMAL}\n[offline_limits]\nper_payment = {amount}\n");
        let (key, line, message) = expect_parse_error(parse(&text));
        assert_eq!(key, "offline_limits.per_payment", "{amount}");
        assert_eq!(
            line,
            Some(line_containing(&text, "per_payment")),
            "{amount}"
        );
        assert!(message.contains(expected_words), "{amount}: {message}");
    }
}

#[test]
fn per_payment_above_total_stored_is_refused() {
    let (key, _) = expect_invalid(parse_minimal_plus(
        "\n[offline_limits]\nper_payment = \"600\"\ntotal_stored = \"500\"\n",
    ));
    assert_eq!(key, "offline_limits.per_payment");
}

#[test]
fn missing_required_keys_are_named() {
    let (key, _, message) =
        expect_parse_error(parse("[local_api]\ntoken = \"0123456789abcdef\"\n"));
    assert_eq!(key, "terminal");
    assert!(message.contains("missing field"), "{message}");

    let (key, _, _) = expect_parse_error(parse(
        "[terminal]\nstore_id = \"S1\"\nmerchant_id = \"M1\"\n[local_api]\ntoken = \"0123456789abcdef\"\n",
    ));
    assert_eq!(key, "terminal.id");

    let (key, _, _) = expect_parse_error(parse_minimal_plus("\n[gateway]\nca_file = \"ca.pem\"\n"));
    assert_eq!(key, "gateway.url");
}

#[test]
fn toml_syntax_error_gives_the_line() {
    let text = format!("{MINIMAL}\n[sale\ncurrency = \"CNY\"\n");
    let (key, line, message) = expect_parse_error(parse(&text));
    assert_eq!(key, "");
    assert_eq!(line, Some(line_containing(&text, "[sale")));
    assert!(message.starts_with("invalid TOML"), "{message}");
    assert!(!message.contains('\n'), "one line: {message}");
}

#[test]
fn bad_identity_values_are_refused() {
    let text = MINIMAL.replace("\"T0001\"", "\"lane one\"");
    let (key, message) = expect_invalid(parse(&text));
    assert_eq!(key, "terminal.id");
    assert!(message.contains("A-Z"), "{message}");

    let text = MINIMAL.replace("\"S001\"", &format!("\"{}\"", "S".repeat(33)));
    assert_eq!(expect_invalid(parse(&text)).0, "terminal.store_id");

    let (key, _) = expect_invalid(parse_minimal_plus("\n[sale]\ncurrency = \"rmb\"\n"));
    assert_eq!(key, "sale.currency");

    let (key, _) = expect_invalid(parse_minimal_plus(
        "\n[sale.weighted_barcode]\nprefixes = [\"2\"]\n",
    ));
    assert_eq!(key, "sale.weighted_barcode.prefixes[0]");

    let (key, _) = expect_invalid(parse_minimal_plus(
        "\n[sale.weighted_barcode]\nitem_digits = 7\n",
    ));
    assert_eq!(key, "sale.weighted_barcode.item_digits");
}

#[test]
fn non_loopback_listen_address_is_refused() {
    for listen in ["0.0.0.0:7420", "192.168.1.20:7420", "[::]:7420"] {
        let text = MINIMAL.replace(
            "[local_api]",
            &format!("[local_api]\nlisten = \"{listen}\""),
        );
        let (key, message) = expect_invalid(parse(&text));
        assert_eq!(key, "local_api.listen", "{listen}");
        assert!(message.contains("loopback"), "{message}");
    }
    let text = MINIMAL.replace("[local_api]", "[local_api]\nlisten = \"[::1]:9000\"");
    assert_eq!(
        parse(&text).unwrap().local_api.listen,
        "[::1]:9000".parse().unwrap()
    );

    let text = MINIMAL.replace("[local_api]", "[local_api]\nlisten = \"localhost\"");
    let (key, _, message) = expect_parse_error(parse(&text));
    assert_eq!(key, "local_api.listen");
    assert!(message.contains("127.0.0.1:7420"), "{message}");
}

#[test]
fn plain_http_gateway_only_to_loopback() {
    for url in [
        "http://gw.example:8080",
        "http://10.1.2.3",
        "http://localhost.example",
    ] {
        let (key, message) = expect_invalid(parse_minimal_plus(&format!(
            "\n[gateway]\nurl = \"{url}\"\n"
        )));
        assert_eq!(key, "gateway.url", "{url}");
        assert!(message.contains("https://"), "{message}");
    }
    for url in [
        "https://gw.example:8443",
        "http://127.0.0.1:8080",
        "http://localhost:8080",
        "http://[::1]:8080",
    ] {
        let config = parse_minimal_plus(&format!("\n[gateway]\nurl = \"{url}\"\n")).unwrap();
        assert_eq!(config.gateway.unwrap().url, url);
    }
    let (key, _) = expect_invalid(parse_minimal_plus("\n[gateway]\nurl = \"gw.example\"\n"));
    assert_eq!(key, "gateway.url");
}

#[test]
fn token_and_token_file_exclusive_and_one_required() {
    let both = MINIMAL.replace("[local_api]", "[local_api]\ntoken_file = \"api-token\"");
    let (key, message) = expect_invalid(parse(&both));
    assert_eq!(key, "local_api.token");
    assert!(message.contains("exactly one"), "{message}");

    let neither = MINIMAL.replace(&format!("token = \"{TOKEN}\""), "");
    let (key, message) = expect_invalid(parse(&neither));
    assert_eq!(key, "local_api.token");
    assert!(message.contains("token_file"), "{message}");

    let no_section = MINIMAL.replace(&format!("[local_api]\ntoken = \"{TOKEN}\""), "");
    assert_eq!(expect_invalid(parse(&no_section)).0, "local_api.token");
}

#[test]
fn unquoted_token_is_refused_without_echoing_it() {
    let text = MINIMAL.replace(&format!("\"{TOKEN}\""), "1234567890123456789");
    let (key, line, message) = expect_parse_error(parse(&text));
    assert_eq!(key, "local_api.token");
    assert_eq!(line, Some(line_containing(&text, "token")));
    assert!(!message.contains("1234567890123456789"), "{message}");
}

#[test]
fn short_or_unprintable_token_is_refused() {
    let short = MINIMAL.replace(TOKEN, "fifteen-chars-x");
    let (key, message) = expect_invalid(parse(&short));
    assert_eq!(key, "local_api.token");
    assert!(message.contains("16"), "{message}");
    assert!(
        !message.contains("fifteen-chars-x"),
        "the error must not echo the token"
    );

    assert!(parse(&MINIMAL.replace(TOKEN, "sixteen-chars-xx")).is_ok());
    assert_eq!(
        expect_invalid(parse(&MINIMAL.replace(TOKEN, "has a space in the token"))).0,
        "local_api.token"
    );
}

#[test]
fn token_file_is_read_trimmed_and_resolved_against_the_config_directory() {
    let directory = tempfile::tempdir().unwrap();
    fs::create_dir(directory.path().join("secrets")).unwrap();
    fs::write(
        directory.path().join("secrets/api-token"),
        format!("  {TOKEN}\n"),
    )
    .unwrap();
    let config_path = directory.path().join("agent.toml");
    let text = MINIMAL.replace(
        &format!("token = \"{TOKEN}\""),
        "token_file = \"secrets/api-token\"",
    );
    fs::write(&config_path, &text).unwrap();

    let config = AgentConfig::load(&config_path).unwrap();
    assert_eq!(config.local_api.token(), TOKEN);
    assert_eq!(
        config.local_api.token_file.as_deref(),
        Some(directory.path().join("secrets/api-token").as_path())
    );
    assert!(!format!("{config:?}").contains(TOKEN));

    fs::write(directory.path().join("secrets/api-token"), "tiny-tok\n").unwrap();
    match AgentConfig::load(&config_path) {
        Err(ConfigError::Invalid { key, message, .. }) => {
            assert_eq!(key, "local_api.token_file");
            assert!(
                !message.contains("tiny-tok"),
                "the error must not echo the token: {message}"
            );
        }
        other => panic!("expected Invalid, got {other:?}"),
    }

    fs::remove_file(directory.path().join("secrets/api-token")).unwrap();
    match AgentConfig::load(&config_path) {
        Err(error @ ConfigError::ReadTokenFile { .. }) => {
            assert_eq!(error.key(), Some("local_api.token_file"));
            assert!(error.to_string().contains("secrets/api-token"), "{error}");
        }
        other => panic!("expected ReadTokenFile, got {other:?}"),
    }
}

#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let directory = tempfile::tempdir().unwrap();
    let config_path = directory.path().join("agent.toml");
    fs::write(
        &config_path,
        format!("{MINIMAL}\n[storage]\ndata_dir = \"data\"\n\n[gateway]\nurl = \"https://gw.example\"\nca_file = \"pki/ca.pem\"\n"),
    )
    .unwrap();
    let config = AgentConfig::load(&config_path).unwrap();
    assert_eq!(config.storage.data_dir, directory.path().join("data"));
    assert_eq!(
        config.gateway.unwrap().ca_file,
        Some(directory.path().join("pki/ca.pem"))
    );

    fs::write(&config_path, MINIMAL).unwrap();
    let config = AgentConfig::load(&config_path).unwrap();
    assert_eq!(config.storage.data_dir, directory.path());

    let config = AgentConfig::from_toml_str(MINIMAL, Path::new("agent.toml")).unwrap();
    assert_eq!(config.storage.data_dir, PathBuf::from("."));
}

#[test]
fn missing_file_is_a_read_error_naming_the_path() {
    let directory = tempfile::tempdir().unwrap();
    let config_path = directory.path().join("absent.toml");
    match AgentConfig::load(&config_path) {
        Err(error @ ConfigError::Read { .. }) => {
            let ConfigError::Read { path, .. } = &error else {
                unreachable!()
            };
            assert_eq!(path, &config_path);
            assert!(
                error
                    .to_string()
                    .starts_with(&config_path.display().to_string())
            );
        }
        other => panic!("expected Read, got {other:?}"),
    }
}

#[test]
fn oversized_or_binary_file_is_a_read_error() {
    let directory = tempfile::tempdir().unwrap();
    let config_path = directory.path().join("agent.toml");
    fs::write(&config_path, vec![b'#'; 2 * 1024 * 1024]).unwrap();
    assert!(matches!(
        AgentConfig::load(&config_path),
        Err(ConfigError::Read { .. })
    ));
    fs::write(&config_path, [0xff, 0xfe, 0x00]).unwrap();
    assert!(matches!(
        AgentConfig::load(&config_path),
        Err(ConfigError::Read { .. })
    ));
}

#[test]
fn devices_need_a_port_and_a_standard_baud() {
    let (key, message) = expect_invalid(parse_minimal_plus(
        "\n[devices.scanner]\ndriver = \"serial\"\n",
    ));
    assert_eq!(key, "devices.scanner.port");
    assert!(message.contains("required"), "{message}");

    let (key, _) = expect_invalid(parse_minimal_plus("\n[devices.nfc]\ndriver = \"libnfc\"\n"));
    assert_eq!(key, "devices.nfc.port");

    let (key, message) = expect_invalid(parse_minimal_plus(
        "\n[devices.printer]\ndriver = \"serial\"\nport = \"COM3\"\nbaud = 9601\n",
    ));
    assert_eq!(key, "devices.printer.baud");
    assert!(message.contains("9600"), "{message}");

    let (key, line, message) =
        expect_parse_error(parse_minimal_plus("\n[devices.nfc]\ndriver = \"pcsc\"\n"));
    assert_eq!(key, "devices.nfc.driver");
    assert!(line.is_some());
    assert!(message.contains("libnfc"), "{message}");
}

#[test]
fn new_default_round_trips_through_load() {
    let directory = tempfile::tempdir().unwrap();
    let data_dir = directory.path().join("data");
    let config = AgentConfig::new_default("T0042", "S001", "M1001", &data_dir, TOKEN).unwrap();
    assert_eq!(config.storage.data_dir, data_dir);
    assert_eq!(config.local_api.token(), TOKEN);
    assert_eq!(config.gateway, None);

    let config_path = directory.path().join("agent.toml");
    fs::write(&config_path, config.to_toml_string().unwrap()).unwrap();
    let loaded = AgentConfig::load(&config_path).unwrap();
    assert_eq!(loaded, config);
}

#[test]
fn new_default_refuses_what_load_would_refuse() {
    assert!(matches!(
        AgentConfig::new_default("T 1", "S001", "M1001", "/var/lib/lanepay", TOKEN),
        Err(ConfigError::Invalid { key, .. }) if key == "terminal.id"
    ));
    assert!(matches!(
        AgentConfig::new_default("T1", "S001", "M1001", "/var/lib/lanepay", "short"),
        Err(ConfigError::Invalid { key, .. }) if key == "local_api.token"
    ));
}

#[test]
fn every_section_round_trips_through_load() {
    let directory = tempfile::tempdir().unwrap();
    fs::write(directory.path().join("api-token"), TOKEN).unwrap();
    let config_path = directory.path().join("agent.toml");
    let reference = fs::read_to_string(REFERENCE_FILE).unwrap();
    let text = reference
        .replace(
            "token = \"REPLACE-WITH-A-RANDOM-SECRET\"",
            "token_file = \"api-token\"",
        )
        .replace("# ca_file", "ca_file")
        .replacen("\ndriver = \"none\"", "\ndriver = \"serial\"", 1)
        .replace("# port = \"/dev/ttyACM0\"", "port = \"/dev/ttyACM0\"")
        .replace("terminator = \"cr\"", "terminator = \"tab\"")
        .replace("prefix = \"\"", "prefix = \"]\\\"x\"");
    fs::write(&config_path, text).unwrap();
    let config = AgentConfig::load(&config_path).unwrap();
    assert_eq!(config.devices.scanner.driver, ScannerDriver::Serial);
    assert_eq!(config.devices.scanner.prefix, "]\"x");
    assert!(config.gateway.as_ref().unwrap().ca_file.is_some());

    let written = config.to_toml_string().unwrap();
    assert!(
        !written.contains(TOKEN),
        "a token read from token_file is not copied into the file"
    );
    let rewritten_path = directory.path().join("rewritten.toml");
    fs::write(&rewritten_path, written).unwrap();
    assert_eq!(AgentConfig::load(&rewritten_path).unwrap(), config);
}

#[test]
fn debug_output_hides_the_token() {
    let config = parse(MINIMAL).unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains(TOKEN), "{debug}");
    assert!(debug.contains("redacted"), "{debug}");
    let pretty = format!("{:#?}", config.local_api);
    assert!(!pretty.contains(TOKEN), "{pretty}");
}

/// A valid file with one value replaced by arbitrary text, to reach past the TOML parser.
fn file_with_value(key_line: &str, value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    format!("{MINIMAL}\n{key_line}\"{escaped}\"\n")
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = parse(&text);
    }

    #[test]
    fn arbitrary_toml_like_text_never_panics(text in "[\\[\\]a-z_.=\"'0-9 \n#{},:-]{0,200}") {
        let _ = parse(&text);
    }

    #[test]
    fn arbitrary_values_never_panic(value in any::<String>()) {
        for key_line in [
            "[offline_limits]\nper_payment = ",
            "[gateway]\nurl = ",
            "[sale]\ncurrency = ",
            "[storage]\ndata_dir = ",
            "[devices.nfc]\ndriver = \"libnfc\"\nport = ",
        ] {
            let _ = parse(&file_with_value(key_line, &value));
        }
        let _ = parse(&MINIMAL.replace("\"T0001\"", &format!("{value:?}")));
        let _ = parse(&MINIMAL.replace(TOKEN, &value.replace(['"', '\\'], "")));
    }

    #[test]
    fn amounts_with_two_decimals_are_exact(yuan in 0u32..10_000_000, fen in 1u32..100) {
        let per_payment_fen = i64::from(yuan) * 100 + i64::from(fen);
        let text = format!(
            "{MINIMAL}\n[offline_limits]\nper_payment = \"{yuan}.{fen:02}\"\ntotal_stored = \"100000000\"\n"
        );
        prop_assert_eq!(parse(&text).unwrap().offline_limits.per_payment_fen, per_payment_fen);
    }
}
