//! The screen's words in English and Simplified Chinese, switchable at run time, and amounts
//! written the way each locale reads them (en `¥12.34`, zh-CN `12.34 元`).

/// The languages the cashier can switch between (F11 or the language button).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Locale {
    #[default]
    ZhCn,
    En,
}

impl Locale {
    pub fn toggled(self) -> Locale {
        match self {
            Locale::ZhCn => Locale::En,
            Locale::En => Locale::ZhCn,
        }
    }

    /// An amount given as the lane's yuan string ("12.34", "-0.40").
    pub fn money(self, yuan: &str) -> String {
        match self {
            Locale::En => match yuan.strip_prefix('-') {
                Some(positive) => format!("-¥{positive}"),
                None => format!("¥{yuan}"),
            },
            Locale::ZhCn => format!("{yuan} 元"),
        }
    }

    /// A device's name or state as the lane reports it ("printer", "ready") in this language.
    pub fn device_word(self, word: &str) -> &str {
        self.translated(DEVICE_WORDS_ZH, word)
    }

    /// `english` from the lane in this language, by a table of (English, 中文) pairs.
    fn translated<'a>(self, zh_table: &[(&str, &'a str)], english: &'a str) -> &'a str {
        match self {
            Locale::En => english,
            Locale::ZhCn => zh_table
                .iter()
                .find(|(en, _)| *en == english)
                .map_or(english, |(_, zh)| zh),
        }
    }

    /// The text for a key of the catalog.
    pub fn t(self, text: Text) -> &'static str {
        let (en, zh) = text.pair();
        match self {
            Locale::En => en,
            Locale::ZhCn => zh,
        }
    }
}

/// A payment step's words ("waiting for customer to confirm", ...) in Chinese, when the
/// table knows them (the lane's sentences: [`Locale::lane_words`]).
pub(crate) fn step_words_zh(english: &str) -> Option<&'static str> {
    STEP_WORDS_ZH
        .iter()
        .find(|(en, _)| *en == english)
        .map(|(_, zh)| *zh)
}

/// The lane's payment step words (`PaymentAttempt::step_words`, the card request's) in
/// Chinese.
const STEP_WORDS_ZH: &[(&str, &str)] = &[
    ("tap card", "请顾客挥卡"),
    ("creating the QR", "正在生成二维码"),
    ("authorising the card", "正在授权银行卡"),
    ("sending the payment", "正在发送支付"),
    (
        "waiting for the customer to scan and pay",
        "等待顾客扫码支付",
    ),
    (
        "waiting for the customer to pay and show the confirmation",
        "等待顾客支付并出示确认码",
    ),
    ("waiting for customer to confirm", "等待顾客确认"),
    ("checking result", "正在查询结果"),
    ("reversing", "正在撤销"),
    ("closing the QR order", "正在关闭二维码订单"),
    ("stored offline, to forward", "已离线保存，待上送"),
    ("paid", "已支付"),
    ("failed", "失败"),
    ("reversed, nothing charged", "已撤销，未扣款"),
    ("closed, nothing charged", "已关闭，未扣款"),
    ("declined after forwarding", "上送后被拒"),
];

/// The devices' names and states (`DeviceStatusView`) in Chinese.
const DEVICE_WORDS_ZH: &[(&str, &str)] = &[
    ("scanner", "扫描枪"),
    ("display", "顾客显示屏"),
    ("printer", "打印机"),
    ("nfc", "读卡器"),
    ("ready", "就绪"),
    ("warning", "警告"),
    ("unavailable", "不可用"),
    ("not_configured", "未配置"),
];

macro_rules! catalog {
    ($($key:ident => $en:literal, $zh:literal;)*) => {
        /// Every fixed text of the screens.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Text { $($key,)* }

        impl Text {
            /// (English, 简体中文).
            pub fn pair(self) -> (&'static str, &'static str) {
                match self { $(Text::$key => ($en, $zh),)* }
            }
        }
    };
}

catalog! {
    AppTitle => "Lanepay checkout", "Lanepay 收银";
    CustomerTitle => "Lanepay customer display", "Lanepay 顾客显示";
    DevicePanelTitle => "Lanepay device panel (demo)", "Lanepay 设备面板（演示）";
    SignInTitle => "Sign in", "收银员登录";
    CashierId => "Cashier id", "收银员编号";
    Pin => "PIN", "密码";
    SignInButton => "Enter  Sign in", "Enter  登录";
    OpenShiftTitle => "Open the shift", "开班";
    OpeningFloat => "Cash float in the drawer (yuan)", "钱箱备用金（元）";
    OpenShiftButton => "Enter  Open shift", "Enter  开班";
    ScanHint => "Scan or type a code, then Enter", "扫描或输入条码，按 Enter";
    Item => "Item", "商品";
    Qty => "Qty", "数量";
    Price => "Price", "单价";
    Discount => "Discount", "折扣";
    LineTotal => "Total", "小计";
    Total => "TOTAL", "合计";
    Paid => "Paid", "已付";
    Remaining => "To pay", "待付";
    EmptyCart => "Ready: scan the first item", "就绪：请扫描第一件商品";
    KeyHelp => "F1 Help", "F1 帮助";
    KeyQty => "F2 Quantity", "F2 数量";
    KeyDiscount => "F3 Discount", "F3 折扣";
    KeyVoidLine => "F4 Void line", "F4 删除行";
    KeyCash => "F5 Cash", "F5 现金";
    KeyWallet => "F6 Wallet code", "F6 付款码";
    KeyDynamicQr => "F7 QR code", "F7 二维码";
    KeyCard => "F8 Card", "F8 银行卡";
    KeyOfflineQr => "F9 Offline QR", "F9 离线二维码";
    KeyRefund => "F10 Refund", "F10 退货";
    KeyLanguage => "F11 中文", "F11 English";
    KeyVoidSale => "F12 Void sale", "F12 整单作废";
    KeyEnter => "Enter Confirm", "Enter 确认";
    KeyEsc => "Esc Back", "Esc 返回";
    XReport => "X report", "X 报表";
    CloseShiftButton => "Close shift", "交班";
    SignOutButton => "Sign out", "退出登录";
    HelpText => "Type a number then F2 to set the quantity of the selected line; type 10% or 5.00 then F3 for a discount; click a line to select it. F5 takes cash; F10 finds a sale to refund; F12 voids the whole sale.", "输入数字后按 F2 修改所选行数量；输入 10% 或 5.00 后按 F3 打折；点击一行即可选中。F5 收现金；F10 查找销售单退货；F12 作废整单。";
    CashTitle => "Cash", "现金收款";
    CashGiven => "Cash given (yuan)", "实收现金（元）";
    ChangeDue => "Change due", "找零";
    NotEnough => "Not enough: still to pay", "金额不足，仍需支付";
    TakeCashButton => "Enter  Take cash", "Enter  收款";
    SaleDone => "Sale complete", "交易完成";
    ThankYou => "Thank you!", "谢谢惠顾！";
    RefundTitle => "Refund", "退货";
    ReceiptNo => "Receipt number or scan the receipt QR", "小票号，或扫描小票二维码";
    FindButton => "Enter  Find sale", "Enter  查找";
    Refundable => "Refundable", "可退金额";
    RefundAmount => "Or an amount (yuan)", "或输入金额（元）";
    RefundButton => "Enter  Refund selected", "Enter  退款";
    RefundDone => "Refunded", "已退款";
    CloseShiftTitle => "Close the shift", "交班";
    CountedCash => "Cash counted in the drawer (yuan)", "钱箱实点现金（元）";
    Expected => "Expected", "应有";
    Counted => "Counted", "实点";
    Difference => "Difference", "差额";
    CloseButton => "Enter  Close shift", "Enter  交班";
    XReportTitle => "X report (shift so far)", "X 报表（本班至今）";
    ZReportTitle => "Z report (shift closed)", "Z 报表（已交班）";
    ShiftNo => "Shift", "班次";
    OpenedAt => "Opened", "开班";
    ClosedAt => "Closed", "交班";
    SalesCount => "Sales", "销售笔数";
    RefundsCount => "Refunds", "退款笔数";
    Float => "Float", "备用金";
    CashIn => "Cash in", "现金收入";
    CashOut => "Cash refunded", "现金退款";
    PrintButton => "F9  Print", "F9  打印";
    ReportPrinted => "Report sent to the receipt printer", "报表已发送到小票打印机";
    BackButton => "Esc  Back", "Esc  返回";
    Online => "Online", "在线";
    Offline => "Offline", "离线";
    Backlog => "Backlog", "待上传";
    Exposure => "Offline exposure", "离线风险金额";
    LastSync => "Last sync", "上次同步";
    Never => "never", "从未";
    ClockSkew => "Clock off by", "时钟偏差";
    Terminal => "Terminal", "终端";
    Cashier => "Cashier", "收银员";
    NobodySignedIn => "nobody", "未登录";
    Working => "Working…", "处理中…";
    WalletCodeTitle => "Wallet payment code", "付款码支付";
    WalletCodeHint => "Scan the customer's payment code, then Enter", "请扫描顾客的付款码，按 Enter";
    DynamicQrTitle => "QR code payment", "二维码收款";
    ChooseWallet => "Choose the wallet (Enter: Alipay)", "选择钱包（Enter：支付宝）";
    Alipay => "Alipay", "支付宝";
    Wechat => "WeChat Pay", "微信支付";
    Unionpay => "UnionPay", "云闪付";
    CardTitle => "Card payment", "银行卡支付";
    OfflineQrTitle => "Offline QR payment", "离线二维码收款";
    OfflineQrHint => "Customer pays the QR, then scan the confirmation on their phone", "顾客扫码付款后，扫描其手机上的确认码";
    SecondsLeft => "Time left", "剩余时间";
    CancelButton => "Esc  Cancel payment", "Esc  取消支付";
    Amount => "Amount", "金额";
    StoredCards => "stored cards", "笔离线卡";
    ScanRejected => "Not added", "未加入";
    Selected => "selected", "已选";
    DevicePanelHint => "Scan a product on the emulated scanner:", "用模拟扫描枪扫描商品：";
    CustomerPanelHint => "The customer pays:", "顾客付款：";
    WalletPaid => "Show wallet code (paid at once)", "出示付款码（立即成功）";
    WalletLate => "Show wallet code (confirms late on the phone)", "出示付款码（手机上稍后确认）";
    WalletDeclined => "Show wallet code (declined)", "出示付款码（余额不足被拒）";
    TapCard => "Tap the test card on the reader", "在读卡器上挥卡（测试卡）";
    SellingOffline => "no network: keep selling (cash, cards within the offline limit, offline QR); everything is sent when it is back", "网络中断：可继续收银（现金、离线额度内刷卡、离线二维码），恢复后自动上送";
    SyncTrouble => "the gateway refuses some of this lane's records: keep selling and call support", "网关拒收部分记录：可继续收银，请联系技术支持";
    NetworkHint => "The store's network:", "门店网络：";
    NetworkDown => "Pull the cable", "拔掉网线";
    NetworkUp => "Plug it back", "插回网线";
    PayQrOnPhone => "Pay the dynamic QR on the phone", "用手机支付屏幕上的动态码";
    Voided => "Sale voided", "已作废";
    NoSale => "Scan an item first", "请先扫描商品";
    CardReader => "Card reader", "读卡器";
    FinishSaleFirst => "finish or void the sale in progress before closing the shift (F12 voids it)", "请先完成或作废当前交易再交班（F12 作废）";
    QuantityFirst => "type the quantity first, then press F2", "请先输入数量，再按 F2";
    ChooseRefundLines => "choose the lines to refund (click them) or type an amount", "请选择要退的商品行（点击）或输入金额";
    StoredCardDeclined => "Stored card declined:", "离线卡交易上送后被拒：";
    TellSupervisor => "tell the supervisor", "请告知主管";
    JournalDamaged => "the lane's journal is damaged: stop selling and call support", "收银机日志已损坏：请停止销售并联系技术支持";
    OfflineRoom => "Offline card limit left", "离线刷卡剩余额度";
    PerPaymentUpTo => "up to", "单笔最多";
    PaymentsLeft => "more payments", "笔";
    OfflineFull => "no more offline card payments: take cash or wait for the network", "离线刷卡额度已满：请收现金或等网络恢复";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_per_locale() {
        assert_eq!(Locale::En.money("12.34"), "¥12.34");
        assert_eq!(Locale::En.money("-0.40"), "-¥0.40");
        assert_eq!(Locale::ZhCn.money("12.34"), "12.34 元");
    }

    #[test]
    fn both_languages_have_every_text() {
        for locale in [Locale::En, Locale::ZhCn] {
            assert!(!locale.t(Text::Total).is_empty());
        }
        assert_eq!(Locale::ZhCn.t(Text::Total), "合计");
        assert_eq!(Locale::En.toggled(), Locale::ZhCn);
    }

    #[test]
    fn payment_steps_are_translated_and_unknown_words_pass_through() {
        assert_eq!(
            Locale::ZhCn.lane_words("waiting for customer to confirm"),
            "等待顾客确认"
        );
        assert_eq!(Locale::ZhCn.lane_words("reversing"), "正在撤销");
        assert_eq!(Locale::En.lane_words("reversing"), "reversing");
        assert_eq!(Locale::ZhCn.lane_words("something new"), "something new");
    }
}
