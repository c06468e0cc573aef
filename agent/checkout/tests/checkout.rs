//! Checkout rules tested from the outside: totals to the fen, every refused transition, and
//! property tests over random carts and refund sequences.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too

use lanepay_checkout::barcode::{self, WeightedBarcodeFormat};
use lanepay_checkout::refund::refundable;
use lanepay_checkout::sale::{MAX_UNIT_QUANTITY, SaleError};
use lanepay_checkout::{
    Discount, LineId, Money, Pricing, Product, RefundRequest, Sale, SaleId, SaleState, ScannedCode,
    TaxMode, TenderId, TenderMethod,
};
use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

fn product(sku: &str, price_fen: i64, tax_rate: Decimal) -> Product {
    Product {
        sku: sku.to_string(),
        gtin: None,
        plu: None,
        name_zh: format!("商品{sku}"),
        name_en: format!("Item {sku}"),
        unit_price: Money::from_fen(price_fen),
        tax_rate,
        pricing: Pricing::PerUnit,
    }
}

fn weighed(sku: &str, price_per_kg_fen: i64) -> Product {
    Product {
        pricing: Pricing::PerKg,
        ..product(sku, price_per_kg_fen, dec!(0.09))
    }
}

fn sale(tax_mode: TaxMode) -> Sale {
    Sale::new(SaleId("S1".into()), tax_mode, 1_000)
}

fn cash(sale: &mut Sale, id: &str, fen: i64) -> Result<lanepay_checkout::TenderOutcome, SaleError> {
    sale.add_tender(
        TenderId(id.into()),
        TenderMethod::Cash,
        Money::from_fen(fen),
        None,
        2_000,
    )
}

#[test]
fn repeat_scan_increments_quantity_and_totals_are_exact() {
    let mut sale = sale(TaxMode::Included);
    let cola = product("cola", 350, dec!(0.13));
    let first = sale.add_item(cola.clone(), Decimal::ONE).unwrap();
    let again = sale.add_item(cola, Decimal::ONE).unwrap();
    assert_eq!(first, again);
    assert_eq!(sale.lines()[0].quantity, dec!(2));
    sale.add_item(product("bread", 1299, dec!(0.09)), dec!(3))
        .unwrap();
    let totals = sale.totals();
    assert_eq!(totals.total, Money::from_fen(700 + 3897));
    // Tax included: 7.00 × 0.13/1.13 = 0.8053 → 0.81; 38.97 × 0.09/1.09 = 3.2177 → 3.22
    assert_eq!(totals.tax, Money::from_fen(81 + 322));
}

#[test]
fn tax_excluded_adds_tax_per_line() {
    let mut sale = sale(TaxMode::Excluded);
    sale.add_item(product("a", 333, dec!(0.13)), dec!(3))
        .unwrap();
    let totals = sale.totals();
    // 9.99 × 0.13 = 1.2987 → 1.30
    assert_eq!(totals.tax, Money::from_fen(130));
    assert_eq!(totals.total, Money::from_fen(999 + 130));
}

#[test]
fn weighed_items_from_scale_labels() {
    let format = WeightedBarcodeFormat::default();
    let mut body = String::from("211234501250");
    let check = (0..10)
        .find(|d| barcode::check_gtin(&format!("{body}{d}")).is_ok())
        .unwrap();
    body.push_str(&check.to_string());
    let ScannedCode::WeightedLabel { weight_kg, .. } = barcode::classify(&body, &format).unwrap()
    else {
        panic!("not a scale label")
    };
    let mut sale = sale(TaxMode::Included);
    let apples = weighed("apple", 1598);
    sale.add_weighed_item(apples.clone(), weight_kg).unwrap();
    sale.add_weighed_item(apples.clone(), weight_kg).unwrap();
    assert_eq!(sale.lines().len(), 2, "each label is its own line");
    // 15.98 × 1.25 = 19.975 → 19.98 (half away from zero)
    assert_eq!(sale.totals().lines[0].gross, Money::from_fen(1998));
    assert_eq!(
        sale.add_item(apples, Decimal::ONE),
        Err(SaleError::WeightFromLabel)
    );
    assert_eq!(
        sale.set_quantity(LineId(1), dec!(2)),
        Err(SaleError::WeightFromLabel)
    );
}

#[test]
fn order_discount_is_spread_and_conserves_fen() {
    let mut sale = sale(TaxMode::Included);
    for sku in ["a", "b", "c"] {
        sale.add_item(product(sku, 100, dec!(0.13)), Decimal::ONE)
            .unwrap();
    }
    sale.set_order_discount(Some(Discount::Amount(Money::from_fen(100))))
        .unwrap();
    let totals = sale.totals();
    let shares: Vec<i64> = totals
        .lines
        .iter()
        .map(|l| l.order_discount.fen())
        .collect();
    assert_eq!(shares, vec![34, 33, 33]);
    assert_eq!(totals.total, Money::from_fen(200));
    assert_eq!(totals.discount, Money::from_fen(100));
    sale.set_line_discount(LineId(1), Some(Discount::Percent(dec!(10))))
        .unwrap();
    assert_eq!(sale.totals().lines[0].line_discount, Money::from_fen(10));
    assert_eq!(
        sale.set_line_discount(LineId(2), Some(Discount::Amount(Money::from_fen(101)))),
        Err(SaleError::DiscountTooLarge)
    );
    assert_eq!(
        sale.set_order_discount(Some(Discount::Percent(dec!(0)))),
        Err(SaleError::InvalidDiscount)
    );
}

#[test]
fn split_tender_with_change_completes_the_sale() {
    let mut sale = sale(TaxMode::Included);
    sale.add_item(product("a", 1050, dec!(0.13)), dec!(2))
        .unwrap();
    let card = sale
        .add_tender(
            TenderId("t1".into()),
            TenderMethod::Card,
            Money::from_fen(1000),
            None,
            1_500,
        )
        .unwrap();
    assert_eq!(
        (card.remaining, card.completed),
        (Money::from_fen(1100), false)
    );
    assert_eq!(sale.state(), SaleState::Tendering);
    assert!(matches!(
        sale.add_item(product("b", 1, dec!(0)), Decimal::ONE),
        Err(SaleError::InvalidTransition { .. })
    ));
    assert!(matches!(
        sale.add_tender(
            TenderId("t2".into()),
            TenderMethod::Card,
            Money::from_fen(2000),
            None,
            1_600
        ),
        Err(SaleError::TenderExceedsRemaining { .. })
    ));
    let done = cash(&mut sale, "t3", 2000).unwrap();
    assert_eq!(
        (done.applied, done.change, done.completed),
        (Money::from_fen(1100), Money::from_fen(900), true)
    );
    assert_eq!(sale.state(), SaleState::Completed);
    assert_eq!(sale.completed_at_ms(), Some(2_000));
}

#[test]
fn refused_transitions_are_typed_errors() {
    let mut sale = sale(TaxMode::Included);
    assert_eq!(cash(&mut sale, "t", 100), Err(SaleError::EmptyCart));
    assert!(matches!(
        sale.refund("r".into(), &RefundRequest::Full, String::new(), 3),
        Err(SaleError::InvalidTransition { state: "open", .. })
    ));
    sale.add_item(product("a", 100, dec!(0)), Decimal::ONE)
        .unwrap();
    assert_eq!(
        sale.set_quantity(LineId(1), dec!(0)),
        Err(SaleError::InvalidQuantity)
    );
    assert_eq!(
        sale.set_quantity(LineId(1), dec!(1.5)),
        Err(SaleError::InvalidQuantity)
    );
    assert_eq!(
        sale.set_quantity(LineId(1), Decimal::from(MAX_UNIT_QUANTITY + 1)),
        Err(SaleError::InvalidQuantity)
    );
    assert_eq!(sale.remove_line(LineId(9)), Err(SaleError::NoSuchLine(9)));
    sale.add_tender(
        TenderId("w".into()),
        TenderMethod::Card,
        Money::from_fen(50),
        None,
        5,
    )
    .unwrap();
    assert_eq!(sale.void(6), Err(SaleError::VoidNeedsReversal("card")));
    cash(&mut sale, "c", 50).unwrap();
    assert!(matches!(
        sale.void(7),
        Err(SaleError::InvalidTransition {
            state: "completed",
            action: "void"
        })
    ));
    assert!(matches!(
        cash(&mut sale, "c2", 1),
        Err(SaleError::InvalidTransition { .. })
    ));

    let mut voided = self::sale(TaxMode::Included);
    voided
        .add_item(product("a", 100, dec!(0)), Decimal::ONE)
        .unwrap();
    cash(&mut voided, "c", 40).unwrap();
    voided.void(9).unwrap();
    assert_eq!(voided.state(), SaleState::Voided);
    assert!(matches!(
        voided.void(10),
        Err(SaleError::InvalidTransition {
            state: "voided",
            ..
        })
    ));
    assert!(matches!(
        voided.refund("r".into(), &RefundRequest::Full, String::new(), 11),
        Err(SaleError::InvalidTransition { .. })
    ));
}

#[test]
fn partial_line_refunds_land_exactly_on_the_line_total() {
    let mut sale = sale(TaxMode::Included);
    let line = sale
        .add_item(product("a", 333, dec!(0.13)), dec!(3))
        .unwrap();
    sale.set_order_discount(Some(Discount::Amount(Money::from_fen(1))))
        .unwrap();
    cash(&mut sale, "c", 1000).unwrap();
    let total = sale.totals().total;
    assert_eq!(total, Money::from_fen(998));
    let mut refunded = Money::ZERO;
    for n in 0..3 {
        let refund = sale
            .refund(
                format!("r{n}"),
                &RefundRequest::Lines(vec![(line, Decimal::ONE)]),
                "return".into(),
                10,
            )
            .unwrap();
        refunded = refunded.saturating_add(refund.total);
    }
    assert_eq!(refunded, total);
    assert_eq!(
        sale.refund(
            "r4".into(),
            &RefundRequest::Lines(vec![(line, Decimal::ONE)]),
            "again".into(),
            11
        ),
        Err(SaleError::RefundExceedsLine { line: 1 })
    );
    assert_eq!(
        sale.refund("r5".into(), &RefundRequest::Full, String::new(), 12),
        Err(SaleError::NothingToRefund)
    );
}

#[test]
fn refunds_go_back_to_the_original_tenders() {
    let mut sale = sale(TaxMode::Included);
    sale.add_item(product("a", 1000, dec!(0)), Decimal::ONE)
        .unwrap();
    sale.add_tender(
        TenderId("card".into()),
        TenderMethod::Card,
        Money::from_fen(600),
        None,
        1,
    )
    .unwrap();
    cash(&mut sale, "cash", 500).unwrap();
    let refund = sale
        .refund(
            "r".into(),
            &RefundRequest::Amount(Money::from_fen(700)),
            "price match".into(),
            5,
        )
        .unwrap();
    let parts: Vec<(&str, i64)> = refund
        .tenders
        .iter()
        .map(|t| (t.tender.0.as_str(), t.amount.fen()))
        .collect();
    assert_eq!(
        parts,
        vec![("cash", 400), ("card", 300)],
        "cash net of change first, then card"
    );
    assert_eq!(
        sale.refund(
            "r2".into(),
            &RefundRequest::Amount(Money::from_fen(301)),
            String::new(),
            6
        ),
        Err(SaleError::RefundExceedsSale {
            requested: Money::from_fen(301),
            refundable: Money::from_fen(300)
        })
    );
}

/// A discount spec: (is a percentage, value).
type DiscountSpec = Option<(bool, i64)>;
/// A random cart: lines of (price fen, quantity, tax rate index, line discount), the order
/// discount, and whether prices exclude tax.
type CartSpec = (Vec<(i64, i64, usize, DiscountSpec)>, DiscountSpec, bool);

fn cart_strategy() -> impl Strategy<Value = CartSpec> {
    let line = (
        1i64..=500_000,
        1i64..=50,
        0usize..4,
        proptest::option::of((any::<bool>(), 1i64..=100)),
    );
    (
        proptest::collection::vec(line, 1..40),
        proptest::option::of((any::<bool>(), 1i64..=100)),
        any::<bool>(),
    )
}

const RATES: [Decimal; 4] = [dec!(0), dec!(0.06), dec!(0.09), dec!(0.13)];

fn build(spec: &CartSpec) -> Sale {
    let (lines, order_discount, excluded) = spec;
    let mut sale = Sale::new(
        SaleId("P".into()),
        if *excluded {
            TaxMode::Excluded
        } else {
            TaxMode::Included
        },
        0,
    );
    for (i, (price, qty, rate, discount)) in lines.iter().enumerate() {
        let id = sale
            .add_item(
                product(&format!("p{i}"), *price, RATES[*rate]),
                Decimal::from(*qty),
            )
            .unwrap();
        if let Some((percent, value)) = discount {
            let gross = sale.totals().line(id).unwrap().gross.fen();
            let d = if *percent {
                Discount::Percent(Decimal::from(*value))
            } else {
                Discount::Amount(Money::from_fen((gross * value / 100).max(1)))
            };
            sale.set_line_discount(id, Some(d)).unwrap();
        }
    }
    if let Some((percent, value)) = order_discount {
        let d = if *percent {
            Discount::Percent(Decimal::from(*value))
        } else {
            let net: i64 = sale.totals().lines.iter().map(|l| l.net.fen()).sum();
            Discount::Amount(Money::from_fen((net * value / 100).max(1).min(net.max(1))))
        };
        // Fails only when the whole cart is already free; that is a valid refusal.
        let _ = sale.set_order_discount(Some(d));
    }
    sale
}

proptest! {
    #[test]
    fn totals_are_sums_of_line_figures(spec in cart_strategy()) {
        let sale = build(&spec);
        let t = sale.totals();
        let sum = |f: fn(&lanepay_checkout::LineTotals) -> Money| t.lines.iter().map(f).sum::<Money>();
        prop_assert_eq!(t.total, sum(|l| l.total));
        prop_assert_eq!(t.tax, sum(|l| l.tax));
        prop_assert_eq!(t.gross, sum(|l| l.gross));
        prop_assert_eq!(t.discount, sum(|l| l.line_discount.saturating_add(l.order_discount)));
        for l in &t.lines {
            prop_assert_eq!(l.net, l.gross.saturating_sub(l.line_discount).saturating_sub(l.order_discount));
            prop_assert!(!l.net.is_negative() && !l.tax.is_negative());
        }
        let expected_total = match sale.tax_mode {
            TaxMode::Included => t.gross.saturating_sub(t.discount),
            TaxMode::Excluded => t.gross.saturating_sub(t.discount).saturating_add(t.tax),
        };
        prop_assert_eq!(t.total, expected_total);
    }

    #[test]
    fn refunds_never_exceed_payments(spec in cart_strategy(), ops in proptest::collection::vec((0usize..3, 0usize..40, 1i64..5, 1i64..100_000), 1..25), split in 0i64..100) {
        let mut sale = build(&spec);
        let total = sale.totals().total;
        let first = Money::from_fen(total.fen() * split / 100);
        if first.fen() > 0 {
            sale.add_tender(TenderId("card".into()), TenderMethod::Card, first, None, 1).unwrap();
        }
        let remaining = sale.remaining();
        sale.add_tender(TenderId("cash".into()), TenderMethod::Cash, remaining.saturating_add(Money::from_fen(50)), None, 2).unwrap();
        prop_assert_eq!(sale.state(), SaleState::Completed);
        prop_assert_eq!(sale.paid(), total);
        for (n, (kind, line, qty, amount)) in ops.into_iter().enumerate() {
            let request = match kind {
                0 => RefundRequest::Full,
                1 => RefundRequest::Lines(vec![(LineId(line as u32 + 1), Decimal::from(qty))]),
                _ => RefundRequest::Amount(Money::from_fen(amount)),
            };
            let before = refundable(&sale);
            match sale.refund(format!("r{n}"), &request, String::new(), 3) {
                Ok(refund) => {
                    prop_assert!(refund.total <= before);
                    prop_assert_eq!(refund.tenders.iter().map(|t| t.amount).sum::<Money>(), refund.total);
                }
                Err(_) => prop_assert_eq!(refundable(&sale), before, "a refused refund changes nothing"),
            }
        }
        let refunded: Money = sale.refunds().iter().map(|r| r.total).sum();
        prop_assert!(refunded <= total);
        let totals = sale.totals();
        for line in sale.lines() {
            let line_refunded: Money = sale.refunds().iter().flat_map(|r| &r.lines).filter(|l| l.line == line.id).map(|l| l.amount).sum();
            let qty: Decimal = sale.refunds().iter().flat_map(|r| &r.lines).filter(|l| l.line == line.id).map(|l| l.quantity).sum();
            prop_assert!(line_refunded <= totals.line(line.id).unwrap().total);
            prop_assert!(qty <= line.quantity);
        }
        for tender in sale.tenders() {
            let back: Money = sale.refunds().iter().flat_map(|r| &r.tenders).filter(|t| t.tender == tender.id).map(|t| t.amount).sum();
            prop_assert!(back <= tender.amount);
        }
        // A final full refund returns exactly what is left, and then everything is back.
        if !refundable(&sale).is_zero() {
            sale.refund("final".into(), &RefundRequest::Full, String::new(), 4).unwrap();
        }
        prop_assert_eq!(sale.refunds().iter().map(|r| r.total).sum::<Money>(), total);
    }
}
