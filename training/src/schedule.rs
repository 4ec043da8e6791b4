//! Learning-rate schedules.

/// Cosine decay from `lr` at step 0 to `lr * final_ratio` at step `total`.
pub fn cosine(step: usize, total: usize, lr: f64, final_ratio: f64) -> f64 {
    let t = if total <= 1 {
        1.0
    } else {
        (step as f64 / (total - 1) as f64).min(1.0)
    };
    let lo = lr * final_ratio;
    lo + 0.5 * (lr - lo) * (1.0 + (std::f64::consts::PI * t).cos())
}

/// Linear warm-up from `lr / 10` over `warmup` steps, then cosine to `lr / 1000`.
pub fn warmup_cosine(step: usize, warmup: usize, total: usize, lr: f64) -> f64 {
    if step < warmup {
        let f = step as f64 / warmup as f64;
        lr * (0.1 + 0.9 * f)
    } else {
        cosine(step - warmup, total.saturating_sub(warmup), lr, 1e-3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_and_warmup() {
        assert!((cosine(0, 100, 1.0, 1e-3) - 1.0).abs() < 1e-12);
        assert!((cosine(99, 100, 1.0, 1e-3) - 1e-3).abs() < 1e-12);
        assert!((cosine(50, 101, 2.0, 0.0) - 1.0).abs() < 1e-9);
        assert!((warmup_cosine(0, 10, 100, 1.0) - 0.1).abs() < 1e-12);
        assert!((warmup_cosine(10, 10, 100, 1.0) - 1.0).abs() < 1e-12);
        assert!(warmup_cosine(5, 10, 100, 1.0) < 1.0);
    }
}
