//! CFlow-AD's way of evaluating the flows, kept as a reference for tests and benchmarks: the
//! feature map is cut into fiber batches of vectors and each batch goes through the flow with its
//! own condition rows, in a loop. [`crate::model::ClsFlowModel::flow_log_prob_maps`] computes
//! the same numbers on whole maps at once.

use crate::model::ClsFlowModel;
use tch::Tensor;

/// log p / C per position, (N, h, w) per tap, evaluated fiber batch by fiber batch.
pub fn fiber_loop_log_prob_maps(
    model: &ClsFlowModel,
    taps: &[Tensor; 3],
    fiber_batch: i64,
) -> [Tensor; 3] {
    let maps: Vec<Tensor> = taps
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let (n, c, h, w) = f.size4().expect("feature map");
            let rows = f.permute([0, 2, 3, 1]).reshape([n * h * w, c]);
            let cond = model.condition_rows(i).repeat([n, 1]);
            let mut parts = Vec::new();
            let mut start = 0;
            while start < n * h * w {
                let len = fiber_batch.min(n * h * w - start);
                let lp = model.flows()[i]
                    .log_prob(&rows.narrow(0, start, len), &cond.narrow(0, start, len));
                parts.push(lp / c as f64);
                start += len;
            }
            Tensor::cat(&parts, 0).reshape([n, h, w])
        })
        .collect();
    maps.try_into().expect("three taps")
}
