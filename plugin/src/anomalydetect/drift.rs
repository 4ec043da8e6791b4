//! Drift: light, lens or product changes show first as a shift of the image scores of frames that
//! are still judged normal. Calibration predicts where those scores lie: the median held-out good
//! image scores one `score_spread` below the threshold (a normalised score of 0.1), and no good
//! image scores above the threshold. A rolling window of the fresh frames' scores is compared
//! with that band; the monitor reports when the window leaves it and when it comes back.

use clsflow::scoring::Scoring;
use std::collections::VecDeque;

/// Where calibration says a window of normal frames lies, and how far it may stray.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DriftBand {
    /// The median image score calibration predicts for normal frames (raw units).
    pub expected_median: f64,
    /// How far the window's median may move from it (raw units).
    pub tolerance: f64,
    /// The largest share of flagged frames in a window before it counts as drift.
    pub max_flagged: f64,
}

impl DriftBand {
    /// The band of a calibrated scoring: the median `tolerance_spreads` score spreads around the
    /// held-out good images' median, at most `max_flagged` of the frames flagged.
    pub fn from_scoring(calibrated: &Scoring, tolerance_spreads: f64, max_flagged: f64) -> Self {
        DriftBand {
            expected_median: calibrated.threshold - calibrated.score_spread,
            tolerance: tolerance_spreads * calibrated.score_spread.abs(),
            max_flagged,
        }
    }
}

/// The state of a full window.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftStatus {
    /// Whether the window is outside the band (the latest report).
    pub drifting: bool,
    /// The window's median image score (raw units).
    pub median: f64,
    /// The share of the window's frames above the threshold.
    pub flagged_fraction: f64,
    /// Frames in the window.
    pub window: usize,
    /// Why the window is outside the band, in words; empty when inside.
    pub reason: String,
}

/// A rolling window of image scores judged against a [`DriftBand`].
#[derive(Debug)]
pub struct DriftMonitor {
    band: DriftBand,
    size: usize,
    window: VecDeque<(f64, bool)>,
    drifting: bool,
}

/// Inside this share of the band's limits a drifting window counts as back: a window that sits on
/// a limit does not report drift and recovery frame after frame.
const CLEAR_SHARE: f64 = 0.8;

impl DriftMonitor {
    /// A monitor over the last `size` frames (at least 1).
    pub fn new(band: DriftBand, size: usize) -> Self {
        DriftMonitor {
            band,
            size: size.max(1),
            window: VecDeque::with_capacity(size.max(1)),
            drifting: false,
        }
    }

    /// The band the window is judged against.
    pub fn band(&self) -> DriftBand {
        self.band
    }

    /// Whether the last report was drift.
    pub fn drifting(&self) -> bool {
        self.drifting
    }

    /// Adds a fresh frame's score and verdict. Returns the window's status when the frame
    /// changed it (drift began or ended); nothing until the window is full.
    pub fn push(&mut self, score: f64, flagged: bool) -> Option<DriftStatus> {
        if self.window.len() == self.size {
            self.window.pop_front();
        }
        self.window.push_back((score, flagged));
        if self.window.len() < self.size {
            return None;
        }
        let status = self.status();
        (status.drifting != self.drifting).then(|| {
            self.drifting = status.drifting;
            status
        })
    }

    /// The full window's status; `drifting` keeps the last report while the window sits between
    /// the clearing limits and the band's limits.
    fn status(&self) -> DriftStatus {
        let mut scores: Vec<f64> = self.window.iter().map(|w| w.0).collect();
        scores.sort_by(f64::total_cmp);
        let n = scores.len();
        let median = if n % 2 == 1 {
            scores[n / 2]
        } else {
            0.5 * (scores[n / 2 - 1] + scores[n / 2])
        };
        let flagged_fraction = self.window.iter().filter(|w| w.1).count() as f64 / n as f64;
        let shift = median - self.band.expected_median;
        let share = if self.drifting { CLEAR_SHARE } else { 1.0 };
        let mut reasons = Vec::new();
        if shift.abs() > share * self.band.tolerance {
            reasons.push(format!(
                "median score {median:.4} is {} the calibrated {:.4} by more than {:.4}",
                if shift > 0.0 { "above" } else { "below" },
                self.band.expected_median,
                share * self.band.tolerance
            ));
        }
        if flagged_fraction > share * self.band.max_flagged {
            reasons.push(format!(
                "{:.0} % of the frames flagged (at most {:.0} %)",
                100.0 * flagged_fraction,
                100.0 * share * self.band.max_flagged
            ));
        }
        DriftStatus {
            drifting: !reasons.is_empty(),
            median,
            flagged_fraction,
            window: n,
            reason: reasons.join("; "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn band() -> DriftBand {
        DriftBand {
            expected_median: 1.0,
            tolerance: 0.5,
            max_flagged: 0.2,
        }
    }

    #[test]
    fn a_shifted_window_reports_drift_once_and_its_return_once() {
        let mut m = DriftMonitor::new(band(), 10);
        // normal frames around the calibrated median: nothing to report
        for i in 0..30 {
            assert_eq!(m.push(1.0 + 0.01 * (i % 3) as f64, false), None);
        }
        // the scores shift up by more than the tolerance: drift within the window's length
        let reports: Vec<_> = (0..10).filter_map(|_| m.push(1.8, false)).collect();
        assert_eq!(reports.len(), 1);
        assert!(reports[0].drifting && reports[0].reason.contains("above"));
        assert!(m.drifting());
        assert!(
            (0..20).all(|_| m.push(1.8, false).is_none()),
            "reported once"
        );
        // back to normal: cleared within the window's length, once
        let reports: Vec<_> = (0..10).filter_map(|_| m.push(1.0, false)).collect();
        assert_eq!(reports.len(), 1);
        assert!(!reports[0].drifting && reports[0].reason.is_empty());
    }

    #[test]
    fn flagged_frames_and_low_scores_count_too_and_a_limit_does_not_flap() {
        let mut m = DriftMonitor::new(band(), 10);
        let flagged: Vec<_> = (0..10).filter_map(|i| m.push(1.0, i % 3 == 0)).collect();
        assert_eq!(flagged.len(), 1, "4 of 10 flagged");
        assert!(flagged[0].reason.contains("flagged"));
        let mut m = DriftMonitor::new(band(), 10);
        assert!(
            (0..10)
                .filter_map(|_| m.push(0.3, false))
                .next()
                .unwrap()
                .reason
                .contains("below")
        );
        // a window that sits just inside the limit after drift stays reported as drift
        let mut m = DriftMonitor::new(band(), 4);
        (0..4).for_each(|_| {
            m.push(1.6, false);
        });
        assert!(m.drifting());
        assert!((0..8).all(|_| m.push(1.45, false).is_none()));
        assert!(m.drifting());
    }

    #[test]
    fn the_band_comes_from_the_calibration() {
        let mut s = Scoring::single([0.0; 3], 1.0, 3.0);
        s.score_spread = 2.0;
        let b = DriftBand::from_scoring(&s, 0.5, 0.1);
        assert_eq!(
            (b.expected_median, b.tolerance, b.max_flagged),
            (1.0, 1.0, 0.1)
        );
    }
}
