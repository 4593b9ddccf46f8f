//! Latency histograms (HdrHistogram, microseconds) and how they print.

use hdrhistogram::Histogram;
use serde::Serialize;

pub fn histogram() -> Histogram<u64> {
    // 1 µs .. 100 s at 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid bounds")
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// (quantile, µs) at every percent and at 99.9%, for CDF plots.
    #[serde(default)]
    pub cdf: Vec<(f64, u64)>,
}

impl Percentiles {
    pub fn of(histogram: &Histogram<u64>) -> Self {
        Percentiles {
            count: histogram.len(),
            p50_us: histogram.value_at_quantile(0.50),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
            cdf: (1..=100)
                .map(|percent| percent as f64 / 100.0)
                .chain([0.999])
                .map(|quantile| (quantile, histogram.value_at_quantile(quantile)))
                .collect(),
        }
    }
}

/// Microseconds as people read them.
pub fn human(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else if us >= 1000 {
        format!("{:.2} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}
