//! Products as the checkout sees them: how they are found and how they are priced.

use rust_decimal::Decimal;

use crate::money::Money;

/// How a product's price applies to the quantity on a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pricing {
    /// A price per piece; quantities are whole numbers.
    PerUnit,
    /// A price per kilogram; the quantity is a weight in kg with up to three decimals.
    PerKg,
}

/// A product from the local catalog (synced from HQ; the shell looks it up).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Product {
    pub sku: String,
    /// EAN-13 / EAN-8 / UPC-A (normalised to 13 digits) when the product has one.
    pub gtin: Option<String>,
    /// The item number printed into scale labels, for weighed products.
    pub plu: Option<String>,
    pub name_zh: String,
    pub name_en: String,
    /// Price per piece or per kg, tax included or excluded as the store's tax mode says.
    pub unit_price: Money,
    /// VAT rate as a fraction (0.13 for 13 %).
    pub tax_rate: Decimal,
    pub pricing: Pricing,
}

/// The key the shell uses to find a product for a scanned code.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ProductKey {
    Gtin(String),
    Plu(String),
    Internal(String),
}
