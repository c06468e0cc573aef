//! From the checkout domain to the journal's payload types: the one place that decides what
//! an entry says about a sale.

use lanepay_checkout::refund::Refund;
use lanepay_checkout::{Pricing, Sale, Tender};
use lanepay_sync::payload::{
    RefundCompleted, RefundedLine, RefundedTender, SaleCompleted, SaleLine, SaleVoided, TenderLine,
    TenderRecorded,
};

use crate::store::sales::tax_mode_code;

pub fn tender_line(tender: &Tender) -> TenderLine {
    TenderLine {
        tender_id: tender.id.0.clone(),
        method: tender.method.code().to_string(),
        amount_fen: tender.amount.fen(),
        tendered_fen: tender.tendered.fen(),
        change_fen: tender.change.fen(),
        reference: tender.reference.clone(),
        at_ms: tender.at_ms,
    }
}

pub fn sale_completed(
    sale: &Sale,
    receipt_no: &str,
    store_id: &str,
    currency: &str,
) -> SaleCompleted {
    let totals = sale.totals();
    let lines = sale
        .lines()
        .iter()
        .filter_map(|line| {
            let t = totals.line(line.id)?;
            Some(SaleLine {
                line: line.id.0,
                sku: line.product.sku.clone(),
                gtin: line.product.gtin.clone(),
                name_zh: line.product.name_zh.clone(),
                name_en: line.product.name_en.clone(),
                pricing: if line.product.pricing == Pricing::PerKg {
                    "per_kg"
                } else {
                    "per_unit"
                }
                .into(),
                quantity: line.quantity.normalize().to_string(),
                unit_price_fen: line.label_price.unwrap_or(line.product.unit_price).fen(),
                gross_fen: t.gross.fen(),
                line_discount_fen: t.line_discount.fen(),
                order_discount_fen: t.order_discount.fen(),
                tax_rate: line.product.tax_rate.normalize().to_string(),
                tax_fen: t.tax.fen(),
                total_fen: t.total.fen(),
            })
        })
        .collect();
    SaleCompleted {
        sale_id: sale.id.0.clone(),
        receipt_no: receipt_no.to_string(),
        store_id: store_id.to_string(),
        currency: currency.to_string(),
        tax_mode: tax_mode_code(sale.tax_mode).into(),
        opened_at_ms: sale.opened_at_ms,
        completed_at_ms: sale.completed_at_ms().unwrap_or(sale.opened_at_ms),
        lines,
        gross_fen: totals.gross.fen(),
        discount_fen: totals.discount.fen(),
        tax_fen: totals.tax.fen(),
        total_fen: totals.total.fen(),
        change_fen: sale.change().fen(),
        tenders: sale.tenders().iter().map(tender_line).collect(),
    }
}

pub fn tender_recorded(sale: &Sale, tender: &Tender) -> TenderRecorded {
    TenderRecorded {
        sale_id: sale.id.0.clone(),
        tender: tender_line(tender),
        total_fen: sale.totals().total.fen(),
        remaining_fen: sale.remaining().fen(),
    }
}

pub fn sale_voided(sale: &Sale) -> SaleVoided {
    SaleVoided {
        sale_id: sale.id.0.clone(),
        voided_at_ms: sale.voided_at_ms().unwrap_or(sale.opened_at_ms),
        line_count: u32::try_from(sale.lines().len()).unwrap_or(u32::MAX),
        total_fen: sale.totals().total.fen(),
        tenders_returned: sale.tenders().iter().map(tender_line).collect(),
    }
}

pub fn refund_completed(sale: &Sale, receipt_no: &str, refund: &Refund) -> RefundCompleted {
    RefundCompleted {
        refund_id: refund.id.clone(),
        sale_id: sale.id.0.clone(),
        receipt_no: receipt_no.to_string(),
        lines: refund
            .lines
            .iter()
            .map(|l| RefundedLine {
                line: l.line.0,
                quantity: l.quantity.normalize().to_string(),
                amount_fen: l.amount.fen(),
            })
            .collect(),
        tenders: refund
            .tenders
            .iter()
            .map(|t| RefundedTender {
                tender_id: t.tender.0.clone(),
                method: t.method.code().into(),
                amount_fen: t.amount.fen(),
            })
            .collect(),
        total_fen: refund.total.fen(),
        reason: refund.reason.clone(),
        at_ms: refund.at_ms,
    }
}
