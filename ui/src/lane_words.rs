//! The lane's own sentences (refusals, declines, payment steps) in Chinese. The lane writes
//! them in English with a stable code (`CommandError`); the screen matches them against
//! templates here, whose `{}` parts (an amount, a code, a field's name) are themselves
//! translated when they are words the tables know. A sentence no template matches is shown as
//! the lane wrote it, so a new lane message is never hidden, only untranslated.

use crate::i18n::{Locale, step_words_zh};

/// How deep the `{}` parts of a template are translated in turn (a refusal that quotes a
/// reason that quotes an amount).
const MAX_NESTING: u8 = 3;

/// Words that fill the templates' `{}` parts: field names, tender methods, sale states and
/// the actions the core refuses.
const PART_WORDS_ZH: &[(&str, &str)] = &[
    ("opening float", "备用金"),
    ("counted cash", "点钞金额"),
    ("discount", "折扣"),
    ("amount", "金额"),
    ("quantity", "数量"),
    ("cash", "现金"),
    ("card", "银行卡"),
    ("alipay", "支付宝"),
    ("wechat", "微信支付"),
    ("unionpay", "云闪付"),
    ("a wallet payment code", "付款码支付"),
    ("a dynamic QR", "动态二维码支付"),
    ("open", "进行中"),
    ("tendering", "付款中"),
    ("completed", "已完成"),
    ("voided", "已作废"),
    ("add items to", "向其添加商品"),
    ("change quantities on", "修改数量"),
    ("remove lines from", "删除商品行"),
    ("pay", "付款"),
    ("void", "作废"),
    ("refund", "退款"),
    ("offline_qr", "离线二维码"),
    ("stored", "已离线保存"),
    ("reversed", "已撤销"),
    ("closed", "已关闭"),
    ("declined", "已被拒"),
    ("failed", "已失败"),
];

/// (the lane's English, 简体中文); `{}` stands for a part, in the same order in both.
const LANE_MESSAGES_ZH: &[(&str, &str)] = &[
    // Signing in and the shift.
    (
        "cashier id or PIN is wrong; check them and try again",
        "收银员编号或密码错误；请检查后重试",
    ),
    (
        "too many wrong PINs: cashier {} is locked for {} more minute(s); wait, or ask a supervisor",
        "密码错误次数过多：收银员 {} 还要锁定 {} 分钟；请等待，或请主管处理",
    ),
    (
        "too many wrong PINs: cashier {} is locked for 5 minutes; wait, or ask a supervisor",
        "密码错误次数过多：收银员 {} 已锁定 5 分钟；请等待，或请主管处理",
    ),
    (
        "the shift of cashier {} is still open: they sign in and close it first",
        "收银员 {} 的班次还没有交班：请其先登录并交班",
    ),
    (
        "finish or void the sale in progress before signing out",
        "退出登录前，请先完成或作废当前交易",
    ),
    (
        "shift {} is already open; close it before opening another",
        "班次 {} 已经开班；请先交班，再开新班",
    ),
    ("there is no open shift to close", "没有可交班的班次"),
    (
        "this is the shift of cashier {}; they close it",
        "这是收银员 {} 的班次；请由其本人交班",
    ),
    (
        "finish or void the sale in progress before closing the shift",
        "交班前，请先完成或作废当前交易",
    ),
    (
        "there is no shift to report yet: open a shift first",
        "还没有可报告的班次：请先开班",
    ),
    (
        "no cashier is signed in: sign in with your id and PIN",
        "没有收银员登录：请输入编号和密码登录",
    ),
    (
        "{} cannot be negative; count the cash again",
        "{}不能为负数；请重新点钞",
    ),
    ("a PIN is {} to {} digits", "密码为 {} 到 {} 位数字"),
    (
        "a cashier id is 1 to {} characters",
        "收银员编号为 1 到 {} 个字符",
    ),
    (
        "a cashier's name is 1 to {} characters",
        "收银员姓名为 1 到 {} 个字符",
    ),
    (
        "cashier {} exists already; choose another id",
        "收银员 {} 已存在；请换一个编号",
    ),
    (
        "the lane could not save this; try again, and call support if it keeps happening",
        "收银台无法保存；请重试，如果一直发生，请联系技术支持",
    ),
    // Amounts and numbers typed in.
    (
        "{}: `{}` is not an amount: write yuan with at most two decimals, like 12.50",
        "{}：`{}` 不是金额：请以元为单位，最多两位小数，例如 12.50",
    ),
    (
        "{}: `{}` has more than two decimals; amounts are exact to the fen",
        "{}：`{}` 超过两位小数；金额精确到分",
    ),
    (
        "{}: `{}` is larger than the largest amount a lane accepts (10,000,000.00)",
        "{}：`{}` 超过收银台可接受的最大金额（10,000,000.00）",
    ),
    ("{}: `{}` is not a number", "{}：`{}` 不是数字"),
    // Scanning and the cart.
    (
        "{} is not in the catalog: key the price in or set the item aside",
        "{} 不在商品目录中：请手工输入价格，或把商品放在一边",
    ),
    (
        "check digit does not match (misread): scan again",
        "校验位不符（误读）：请重新扫描",
    ),
    ("empty code", "条码为空"),
    ("code is longer than {} characters", "条码超过 {} 个字符"),
    (
        "code contains characters a barcode cannot have",
        "条码含有条码中不可能出现的字符",
    ),
    (
        "that is a customer's payment code: take it on the payment screen",
        "这是顾客的付款码：请在支付界面收款",
    ),
    (
        "this sale is being paid: finish or void it before scanning",
        "本单正在付款：请先完成或作废，再扫描商品",
    ),
    (
        "there is no sale in progress: scan an item first",
        "当前没有交易：请先扫描商品",
    ),
    (
        "the lane could not save this to its database, so nothing changed; try again, and call support if it repeats",
        "收银台无法写入数据库，什么都没有改变；请重试，如果再次发生，请联系技术支持",
    ),
    ("cannot {} a sale that is {}", "无法{}：交易{}"),
    ("no line {} on this sale", "本单没有第 {} 行"),
    (
        "the cart is full ({} lines): finish this sale and start another",
        "购物车已满（{} 行）：请结束本单，再开新单",
    ),
    (
        "quantity must be a whole number from 1 to {}",
        "数量必须是 1 到 {} 的整数",
    ),
    (
        "a weight must be more than 0 and at most {} kg, to the gram",
        "重量必须大于 0、不超过 {} 千克，精确到克",
    ),
    (
        "a weighed item's quantity comes from its label; scan it again instead",
        "称重商品的数量来自标签；请重新扫描",
    ),
    (
        "a discount must be a positive amount or a percentage above 0 and at most 100",
        "折扣必须是正的金额，或大于 0、不超过 100 的百分比",
    ),
    (
        "the discount is larger than what it applies to",
        "折扣大于它所适用的金额",
    ),
    (
        "the cart is empty: scan an item first",
        "购物车是空的：请先扫描商品",
    ),
    // Paying.
    ("the amount must be positive", "金额必须为正数"),
    (
        "{} cannot pay more than the {} still owed",
        "{}付款不能超过待付的 {}",
    ),
    (
        "cash handed over exceeds what is owed by more than 10,000.00: check the amount",
        "收到的现金比应付多出 10,000.00 以上：请核对金额",
    ),
    ("too many tenders on one sale", "一笔交易的付款次数过多"),
    (
        "this sale was partly paid by {}: reverse that payment before voiding",
        "本单已部分由{}付款：作废前请先撤销该付款",
    ),
    (
        "a payment is in progress on this sale: wait for its result or cancel it",
        "本单有一笔支付正在进行：请等待结果或取消",
    ),
    (
        "a payment is already in progress on this sale: wait for its result or cancel it",
        "本单已有一笔支付正在进行：请等待结果或取消",
    ),
    (
        "this lane is not enrolled with a gateway, so it cannot take {}: take cash",
        "本收银台未接入网关，无法收取{}：请收现金",
    ),
    (
        "the lane is offline, and {} needs the gateway: take cash, a card (stored offline) or show the offline QR",
        "收银台离线，{}需要网关：请收现金、刷卡（离线保存）或出示离线二维码",
    ),
    ("nothing is owed on this sale", "本单没有待付金额"),
    (
        "that is not a wallet payment code: scan the customer's code again",
        "这不是付款码：请重新扫描顾客的付款码",
    ),
    (
        "`{}` is not a wallet: say alipay, wechat or unionpay",
        "`{}` 不是钱包：请选择支付宝、微信支付或云闪付",
    ),
    (
        "no card reader is configured on this lane: take another payment method",
        "本收银台没有配置读卡器：请换一种付款方式",
    ),
    (
        "this lane has no card sealing key from the gateway yet (enroll it, or let it sync once): take another payment method",
        "本收银台还没有网关下发的银行卡加密密钥（请接入网关，或等它同步一次）：请换一种付款方式",
    ),
    ("that card payment was cancelled", "这笔刷卡已取消"),
    (
        "the lane is offline and cannot store this card payment: {}. Take cash or show the offline QR",
        "收银台离线，无法保存这笔刷卡：{}。请收现金或出示离线二维码",
    ),
    (
        "{} is over the offline limit of {} per card payment",
        "{} 超过每笔离线刷卡限额 {}",
    ),
    (
        "the offline card payments stored would reach {}, over the limit of {}",
        "离线保存的刷卡金额将达到 {}，超过限额 {}",
    ),
    (
        "{} card payments are already stored offline, the limit",
        "已离线保存 {} 笔刷卡，已达上限",
    ),
    (
        "the oldest stored card payment is {} h old, past the limit of {} h",
        "最早一笔离线刷卡已保存 {} 小时，超过 {} 小时的期限",
    ),
    (
        "this lane is not enrolled with a gateway, so there is no payment page for an offline QR: take cash",
        "本收银台未接入网关，没有离线二维码的支付页面：请收现金",
    ),
    (
        "the lane is online: show the dynamic QR instead",
        "收银台在线：请改用动态二维码",
    ),
    (
        "this lane is not enrolled, so it cannot check a payment confirmation",
        "本收银台未接入网关，无法核验支付确认码",
    ),
    (
        "this is not a valid payment confirmation ({}): refused",
        "这不是有效的支付确认码（{}）：已拒绝",
    ),
    (
        "no offline QR is waiting for a confirmation: this confirmation was refused",
        "没有等待确认的离线二维码：此确认码已拒绝",
    ),
    (
        "no offline QR is waiting for a confirmation",
        "没有等待确认的离线二维码",
    ),
    (
        "the confirmation is for {}, not for this order: it was refused",
        "此确认码属于 {}，不是本订单：已拒绝",
    ),
    (
        "no payment is in progress on this sale",
        "本单没有正在进行的支付",
    ),
    (
        "this payment is {}: there is nothing to cancel",
        "这笔支付{}：没有可取消的",
    ),
    ("the sale is no longer open", "这笔交易已经结束"),
    // How the gateway says a payment ended.
    ("declined: insufficient balance", "支付被拒：余额不足"),
    (
        "this payment code was already used; ask for a fresh code",
        "该付款码已使用过：请顾客刷新付款码",
    ),
    (
        "the payment code was not accepted; ask for a fresh code",
        "付款码未被接受：请顾客刷新付款码",
    ),
    ("the customer declined the payment", "顾客拒绝了支付"),
    (
        "the card has expired; ask for another card",
        "银行卡已过期：请顾客换一张卡",
    ),
    ("the payment was declined", "支付被拒"),
    (
        "the payment was reversed; nothing was charged",
        "支付已撤销，未扣款",
    ),
    ("the order was closed unpaid", "订单已关闭，未付款"),
    ("the payment was reversed", "支付已撤销"),
    ("the order was closed", "订单已关闭"),
    ("the payment failed", "支付失败"),
    // Refunds.
    (
        "no sale with receipt number {} on this lane",
        "本收银台没有小票号为 {} 的交易",
    ),
    (
        "refund of line {} exceeds what is left to refund on it",
        "第 {} 行的退款超过该行剩余可退金额",
    ),
    (
        "refund of {} exceeds the {} left to refund",
        "退款 {} 超过剩余可退的 {}",
    ),
    ("nothing to refund", "没有可退的"),
    ("too many refunds on one sale", "一笔交易的退款次数过多"),
];

impl Locale {
    /// The lane's words (a payment step, a refusal, a decline) in this language.
    pub fn lane_words(self, english: &str) -> String {
        match self {
            Locale::En => english.to_string(),
            Locale::ZhCn => zh(english, 0).unwrap_or_else(|| english.to_string()),
        }
    }
}

fn zh(english: &str, nesting: u8) -> Option<String> {
    if let Some(zh) = step_words_zh(english) {
        return Some(zh.to_string());
    }
    if let Some((_, zh)) = PART_WORDS_ZH.iter().find(|(en, _)| *en == english) {
        return Some((*zh).to_string());
    }
    if nesting >= MAX_NESTING {
        return None;
    }
    LANE_MESSAGES_ZH.iter().find_map(|(template, zh_template)| {
        let parts = parts_of(template, english)?;
        // A part in backticks is what the cashier typed: shown as typed, never translated.
        let verbatim = template.split("{}").map(|piece| piece.ends_with('`'));
        let parts = parts.into_iter().zip(verbatim).map(|(part, verbatim)| {
            let translated = (!verbatim).then(|| zh(part, nesting + 1)).flatten();
            translated.unwrap_or_else(|| part.to_string())
        });
        Some(fill(zh_template, parts))
    })
}

/// The `{}` parts of `text` if it is `template` with them filled in (each part non-empty;
/// a part ends at the first place the template's next words follow).
fn parts_of<'a>(template: &str, text: &'a str) -> Option<Vec<&'a str>> {
    let mut pieces = template.split("{}");
    let first = pieces.next()?;
    let mut rest = text.strip_prefix(first)?;
    let pieces: Vec<&str> = pieces.collect();
    let mut parts = Vec::with_capacity(pieces.len());
    for (index, piece) in pieces.iter().enumerate() {
        let part = if index + 1 == pieces.len() {
            let part = rest.strip_suffix(piece)?;
            rest = "";
            part
        } else {
            let at = rest.find(piece).filter(|_| !piece.is_empty())?;
            let part = &rest[..at];
            rest = &rest[at + piece.len()..];
            part
        };
        if part.is_empty() {
            return None;
        }
        parts.push(part);
    }
    rest.is_empty().then_some(parts)
}

fn fill(template: &str, parts: impl Iterator<Item = String>) -> String {
    let mut parts = parts;
    let mut pieces = template.split("{}");
    let mut filled = pieces.next().unwrap_or_default().to_string();
    for piece in pieces {
        filled.push_str(&parts.next().unwrap_or_default());
        filled.push_str(piece);
    }
    filled
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_sentences_and_templates_are_translated() {
        assert_eq!(
            Locale::ZhCn.lane_words("cashier id or PIN is wrong; check them and try again"),
            "收银员编号或密码错误；请检查后重试"
        );
        assert_eq!(
            Locale::ZhCn.lane_words(
                "6930011 is not in the catalog: key the price in or set the item aside"
            ),
            "6930011 不在商品目录中：请手工输入价格，或把商品放在一边"
        );
        // Parts are words the tables know: translated too.
        assert_eq!(
            Locale::ZhCn.lane_words("opening float: `abc` is not an amount: write yuan with at most two decimals, like 12.50"),
            "备用金：`abc` 不是金额：请以元为单位，最多两位小数，例如 12.50"
        );
        assert_eq!(
            Locale::ZhCn.lane_words("cannot pay a sale that is completed"),
            "无法付款：交易已完成"
        );
        // A refusal quoting a reason quoting amounts.
        assert_eq!(
            Locale::ZhCn.lane_words(
                "the lane is offline and cannot store this card payment: 600.00 is over the offline limit of 500.00 per card payment. Take cash or show the offline QR"
            ),
            "收银台离线，无法保存这笔刷卡：600.00 超过每笔离线刷卡限额 500.00。请收现金或出示离线二维码"
        );
        assert_eq!(Locale::ZhCn.lane_words("reversing"), "正在撤销");
        assert_eq!(
            Locale::ZhCn.lane_words("this payment is reversed: there is nothing to cancel"),
            "这笔支付已撤销：没有可取消的"
        );
        // What the cashier typed stays as typed, even when it is a word the tables know.
        assert_eq!(
            Locale::ZhCn.lane_words("amount: `cash` is not a number"),
            "金额：`cash` 不是数字"
        );
    }

    #[test]
    fn english_and_unknown_sentences_are_shown_as_the_lane_wrote_them() {
        let refusal = "cashier id or PIN is wrong; check them and try again";
        assert_eq!(Locale::En.lane_words(refusal), refusal);
        assert_eq!(Locale::ZhCn.lane_words("something new"), "something new");
        // Almost a template: the words after the part differ.
        let near = "6930011 is not in the catalog: call the manager";
        assert_eq!(Locale::ZhCn.lane_words(near), near);
        // A template's part may not be empty.
        let empty_part = " is not in the catalog: key the price in or set the item aside";
        assert_eq!(Locale::ZhCn.lane_words(empty_part), empty_part);
    }

    #[test]
    fn every_template_has_its_parts_in_both_languages() {
        for (en, zh) in LANE_MESSAGES_ZH {
            assert_eq!(en.matches("{}").count(), zh.matches("{}").count(), "{en}");
            assert!(
                !zh.chars().any(|c| c.is_ascii_lowercase()) || zh.contains('`'),
                "untranslated words in {zh}"
            );
        }
    }
}
