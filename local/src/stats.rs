//! The few statistics the benchmarks print, computed one way everywhere.

use chrono::{DateTime, Utc};

/// The `q` quantile (0..=1) of an ascending sample by nearest rank: the smallest value with at
/// least that share of the sample at or below it. NaN for an empty sample.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// `quantile_sorted` of a sample in any order.
pub fn quantile(mut sample: Vec<f64>, q: f64) -> f64 {
    sample.sort_by(f64::total_cmp);
    quantile_sorted(&sample, q)
}

/// An RFC 3339 time (as the sandbox and the connector write them), in UTC.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile_sorted(&v, 0.5), 50.0);
        assert_eq!(quantile_sorted(&v, 0.99), 99.0);
        assert_eq!(quantile_sorted(&v, 1.0), 100.0);
        assert_eq!(quantile_sorted(&v, 0.0), 1.0);
        assert_eq!(quantile(vec![3.0, 1.0, 2.0], 0.5), 2.0);
        assert!(quantile_sorted(&[], 0.99).is_nan());
    }

    #[test]
    fn times_are_read_in_any_offset() {
        let t = parse_time("2026-12-06T05:00:00+01:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-12-06T04:00:00+00:00");
        assert!(parse_time("yesterday").is_none());
    }
}
