//! The running mean loss of an epoch, shown on its progress bar, with the check that stops a
//! run whose loss is no longer finite (stage 1 and stage 2 alike).

use indicatif::ProgressBar;

/// Sum and count of an epoch's step losses so far.
#[derive(Debug)]
pub struct EpochLoss {
    what: String,
    label: String,
    sum: f64,
    count: usize,
}

impl EpochLoss {
    /// An empty epoch of `what` (named in errors), whose progress message starts with `label`.
    pub fn new(what: impl Into<String>, label: impl Into<String>) -> Self {
        EpochLoss {
            what: what.into(),
            label: label.into(),
            sum: 0.0,
            count: 0,
        }
    }

    /// Adds step `step`'s loss of epoch `epoch` (0-based) and shows the mean on `pb`; a loss
    /// that is not finite is an error naming what trains, the epoch and the step.
    pub fn add(
        &mut self,
        loss: f64,
        epoch: usize,
        step: usize,
        pb: &ProgressBar,
    ) -> anyhow::Result<()> {
        if !loss.is_finite() {
            anyhow::bail!(
                "{} loss became {loss} at epoch {} step {step}: lower the learning rate",
                self.what,
                epoch + 1
            );
        }
        self.sum += loss;
        self.count += 1;
        pb.inc(1);
        pb.set_message(format!("{}loss {:.4}", self.label, self.mean()));
        Ok(())
    }

    /// The mean so far (0 before any step).
    pub fn mean(&self) -> f64 {
        self.sum / self.count.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_non_finite_losses() {
        let pb = ProgressBar::hidden();
        let mut e = EpochLoss::new("flow 2", "");
        assert_eq!(e.mean(), 0.0);
        e.add(1.0, 0, 0, &pb).unwrap();
        e.add(3.0, 0, 1, &pb).unwrap();
        assert_eq!(e.mean(), 2.0);
        assert_eq!(pb.position(), 2);
        let err = e.add(f64::NAN, 4, 7, &pb).unwrap_err();
        assert_eq!(
            err.to_string(),
            "flow 2 loss became NaN at epoch 5 step 7: lower the learning rate"
        );
        assert_eq!(e.mean(), 2.0, "a bad loss is not counted");
    }
}
