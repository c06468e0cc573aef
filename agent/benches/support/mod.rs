//! What the lane's benchmarks share: the `BENCH_SCALE` factor, nearest-rank percentiles and the
//! machine's load average printed beside every table.

use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

/// `BENCH_SCALE` as a decimal factor of every size (1 when unset).
#[derive(Debug, Clone, Copy)]
pub struct Scale(pub Decimal);

impl Scale {
    pub fn from_env() -> anyhow::Result<Scale> {
        match std::env::var("BENCH_SCALE") {
            Ok(text) => {
                let factor = Decimal::from_str(text.trim())
                    .with_context(|| format!("BENCH_SCALE={text} is not a decimal number"))?;
                if factor <= Decimal::ZERO {
                    bail!("BENCH_SCALE={text} must be above 0");
                }
                Ok(Scale(factor))
            }
            Err(_) => Ok(Scale(Decimal::ONE)),
        }
    }

    pub fn apply(self, size: u64) -> u64 {
        (Decimal::from(size) * self.0)
            .round()
            .to_u64()
            .unwrap_or(size)
            .max(1)
    }
}

/// Nearest-rank percentile of `samples`, `per_mille` of 1000 (zero when empty).
pub fn percentile(samples: &[Duration], per_mille: u64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = (sorted.len() as u64 * per_mille).div_ceil(1000).max(1);
    usize::try_from(rank - 1)
        .ok()
        .and_then(|index| sorted.get(index).copied())
        .unwrap_or_default()
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` gives them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".into())
}
