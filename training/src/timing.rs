//! Timing helpers shared by `clsflow-bench` and the diagnostics in `examples/`.

/// The median of timings (the upper middle one for an even count): robust to the outliers that
/// a shared, noisy machine adds. Panics on an empty list.
pub fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_unsorted_timings() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![9.0, 1.0, 100.0, 2.0]), 9.0);
        assert_eq!(median(vec![5.0]), 5.0);
    }
}
