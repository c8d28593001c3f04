//! The benchmark's statistics: percentiles of a phase's samples (nearest rank, so every figure is a time
//! some user actually waited), and the new/old ratios `--compare` prints.

/// p50 / p95 / max of a set of samples, and how many there were.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
}

/// The `p`-th percentile (0 < p <= 100) by the nearest-rank method: the smallest sample such that at least
/// `p` % of the samples are at or below it. `None` for no samples. NaNs are ignored.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|value| !value.is_nan()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    Some(sorted[nearest_rank(sorted.len(), p) - 1])
}

/// The 1-based rank of the `p`-th percentile among `n` sorted samples: ceil(p/100 · n), clamped to 1..=n.
fn nearest_rank(n: usize, p: f64) -> usize {
    let rank = (p / 100.0 * n as f64).ceil() as usize;
    rank.clamp(1, n)
}

pub fn summarize(samples: &[f64]) -> Option<Summary> {
    Some(Summary {
        count: samples.iter().filter(|value| !value.is_nan()).count(),
        p50: percentile(samples, 50.0)?,
        p95: percentile(samples, 95.0)?,
        max: percentile(samples, 100.0)?,
    })
}

/// new / old, or `None` when it means nothing (an old figure of zero, or a missing one).
pub fn ratio(new: f64, old: f64) -> Option<f64> {
    (old > 0.0 && old.is_finite() && new.is_finite()).then(|| new / old)
}

/// A ratio as people read it in a comparison: `0.52×`; `n/a` when there is none.
pub fn format_ratio(ratio: Option<f64>) -> String {
    match ratio {
        Some(value) => format!("{value:.2}×"),
        None => "n/a".to_string(),
    }
}

/// Seconds with a precision that suits the figure: `0.042 s`, `1.3 s`, `37 s`.
pub fn format_seconds(seconds: f64) -> String {
    if seconds < 1.0 {
        format!("{seconds:.3} s")
    } else if seconds < 10.0 {
        format!("{seconds:.2} s")
    } else {
        format!("{seconds:.1} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_are_samples() {
        let samples = [15.0, 20.0, 35.0, 40.0, 50.0];
        assert_eq!(percentile(&samples, 30.0), Some(20.0));
        assert_eq!(percentile(&samples, 40.0), Some(20.0));
        assert_eq!(percentile(&samples, 50.0), Some(35.0));
        assert_eq!(percentile(&samples, 100.0), Some(50.0));
    }

    #[test]
    fn order_does_not_matter() {
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), Some(2.0));
    }

    #[test]
    fn p95_of_ten_users_is_the_slowest() {
        let samples: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&samples, 95.0), Some(10.0));
        assert_eq!(percentile(&samples, 50.0), Some(5.0));
    }

    #[test]
    fn p95_of_a_hundred_is_the_95th() {
        let samples: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&samples, 95.0), Some(95.0));
    }

    #[test]
    fn one_sample_is_every_percentile() {
        assert_eq!(summarize(&[4.2]), Some(Summary { count: 1, p50: 4.2, p95: 4.2, max: 4.2 }));
    }

    #[test]
    fn no_samples_no_summary() {
        assert_eq!(summarize(&[]), None);
        assert_eq!(percentile(&[f64::NAN], 50.0), None);
    }

    #[test]
    fn nans_are_ignored() {
        assert_eq!(summarize(&[f64::NAN, 1.0, 3.0]).map(|summary| (summary.count, summary.max)), Some((2, 3.0)));
    }

    #[test]
    fn ratios_are_new_over_old() {
        assert_eq!(ratio(5.0, 10.0), Some(0.5));
        assert_eq!(ratio(5.0, 0.0), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
        assert_eq!(format_ratio(Some(0.5)), "0.50×");
        assert_eq!(format_ratio(None), "n/a");
    }

    #[test]
    fn seconds_read_well() {
        assert_eq!(format_seconds(0.0421), "0.042 s");
        assert_eq!(format_seconds(1.333), "1.33 s");
        assert_eq!(format_seconds(37.26), "37.3 s");
    }
}
