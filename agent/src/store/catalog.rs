//! The local product catalog (synced from HQ later; seeded from a CSV file or the demo set).

use std::str::FromStr;

use lanepay_checkout::{Money, Pricing, Product, ProductKey};
use rusqlite::{Connection, OptionalExtension, Row, params};
use rust_decimal::Decimal;

use super::StoreError;

const COLUMNS: &str = "sku, gtin, plu, name_zh, name_en, unit_price_fen, tax_rate, pricing";

fn pricing_code(pricing: Pricing) -> &'static str {
    match pricing {
        Pricing::PerUnit => "per_unit",
        Pricing::PerKg => "per_kg",
    }
}

fn product_from_row(row: &Row<'_>) -> rusqlite::Result<Product> {
    let tax_rate: String = row.get(6)?;
    let pricing: String = row.get(7)?;
    Ok(Product {
        sku: row.get(0)?,
        gtin: row.get(1)?,
        plu: row.get(2)?,
        name_zh: row.get(3)?,
        name_en: row.get(4)?,
        unit_price: Money::from_fen(row.get(5)?),
        tax_rate: Decimal::from_str(&tax_rate).unwrap_or(Decimal::ZERO),
        pricing: if pricing == "per_kg" {
            Pricing::PerKg
        } else {
            Pricing::PerUnit
        },
    })
}

/// Finds the product a scanned code names.
pub fn find(conn: &Connection, key: &ProductKey) -> Result<Option<Product>, StoreError> {
    let (column, value) = match key {
        ProductKey::Gtin(v) => ("gtin", v),
        ProductKey::Plu(v) => ("plu", v),
        ProductKey::Internal(v) => ("sku", v),
    };
    let sql = format!("SELECT {COLUMNS} FROM products WHERE {column} = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([value], product_from_row)
        .optional()?)
}

/// Adds or replaces products (by SKU).
pub fn upsert(conn: &Connection, products: &[Product]) -> Result<(), StoreError> {
    let mut statement = conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO products ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
    ))?;
    for p in products {
        statement.execute(params![
            p.sku,
            p.gtin,
            p.plu,
            p.name_zh,
            p.name_en,
            p.unit_price.fen(),
            p.tax_rate.to_string(),
            pricing_code(p.pricing)
        ])?;
    }
    Ok(())
}

pub fn count(conn: &Connection) -> Result<u64, StoreError> {
    let n: i64 = conn.query_row("SELECT count(*) FROM products", [], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The demo and training catalog: everyday supermarket items with real-format barcodes.
pub fn demo_products() -> Vec<Product> {
    let item = |sku: &str,
                gtin: Option<&str>,
                plu: Option<&str>,
                zh: &str,
                en: &str,
                fen: i64,
                rate: &str,
                pricing| Product {
        sku: sku.into(),
        gtin: gtin.map(Into::into),
        plu: plu.map(Into::into),
        name_zh: zh.into(),
        name_en: en.into(),
        unit_price: Money::from_fen(fen),
        tax_rate: Decimal::from_str(rate).unwrap_or(Decimal::ZERO),
        pricing,
    };
    vec![
        item(
            "COLA-330",
            Some("6901234567892"),
            None,
            "可乐 330ml",
            "Cola 330ml",
            350,
            "0.13",
            Pricing::PerUnit,
        ),
        item(
            "WATER-550",
            Some("6920000000012"),
            None,
            "矿泉水 550ml",
            "Mineral water 550ml",
            200,
            "0.13",
            Pricing::PerUnit,
        ),
        item(
            "BREAD-400",
            Some("6930000000011"),
            None,
            "全麦面包 400g",
            "Wholemeal bread 400g",
            1290,
            "0.09",
            Pricing::PerUnit,
        ),
        item(
            "MILK-1L",
            Some("6940000000010"),
            None,
            "纯牛奶 1L",
            "Whole milk 1L",
            1150,
            "0.09",
            Pricing::PerUnit,
        ),
        item(
            "GUM-8",
            Some("96385074"),
            None,
            "口香糖",
            "Chewing gum",
            550,
            "0.13",
            Pricing::PerUnit,
        ),
        item(
            "APPLE-KG",
            None,
            Some("12345"),
            "富士苹果",
            "Fuji apples",
            1598,
            "0.09",
            Pricing::PerKg,
        ),
        item(
            "BANANA-KG",
            None,
            Some("12346"),
            "香蕉",
            "Bananas",
            699,
            "0.09",
            Pricing::PerKg,
        ),
        item(
            "BAG",
            None,
            None,
            "购物袋",
            "Shopping bag",
            30,
            "0.13",
            Pricing::PerUnit,
        ),
    ]
}
