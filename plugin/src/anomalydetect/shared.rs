//! One loaded detector per model instance in a process, shared by every `anomalydetect` that
//! names it, and the batching of their frames.
//!
//! Elements with the same `model-instance-id` (by default their model path), device and
//! precision hold one [`SharedModel`] (reference-counted: loaded by the first, freed when the
//! last goes to NULL). Each element hands a frame to it and waits for that frame's result; the
//! frames of all its elements queue up, and one job on the libtorch thread runs them as batches
//! of up to the largest `batch-size` among them, waiting at most the largest `batch-timeout`
//! for a batch to fill. An element waits only for its own frame, so a stream that stops never
//! blocks the others.

use clsflow::resample::input_tensor_dims;
use clsflow::{Detection, Detector, DetectorOptions, DeviceSpec, InputResize, Normalization};
use clsflow::{Scoring, torch_thread};
use std::collections::{HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Condvar, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

/// The threshold and weight properties of an element (-1 or negative: the checkpoint's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Overrides {
    /// Image-score threshold; exactly -1 = calibrated.
    pub threshold: f64,
    /// Classifier weight in the image score; negative = the checkpoint's.
    pub score_weight: f64,
    /// Classifier weight in the fused map; negative = the checkpoint's.
    pub fusion_weight: f64,
    /// Region threshold; exactly -1 = calibrated.
    pub region_threshold: f64,
}

/// The property value of the thresholds and weights that means "the checkpoint's value".
pub const UNSET: f64 = -1.0;

impl Overrides {
    /// The checkpoint's scoring with these overrides: exactly -1 keeps a threshold (raw scores
    /// can be negative), any negative value keeps a weight.
    pub fn apply(&self, c: &Scoring) -> Scoring {
        let threshold_or = |v: f64, default: f64| if v == UNSET { default } else { v };
        let weight_or = |v: f64, default: f64| if v < 0.0 { default } else { v };
        Scoring {
            threshold: threshold_or(self.threshold, c.threshold),
            score_weight: weight_or(self.score_weight, c.score_weight),
            fusion_weight: weight_or(self.fusion_weight, c.fusion_weight),
            region_threshold: threshold_or(self.region_threshold, c.region_threshold),
            ..c.clone()
        }
    }
}

/// One frame waiting for the detector.
struct Request {
    /// Normalised input (3, height, width), made on the streaming thread.
    input: Vec<f32>,
    /// (width, height) of the input.
    dims: (usize, usize),
    /// (width, height) of the frame: regions come in its pixels.
    frame: (u32, u32),
    overrides: Overrides,
    min_region_area: u32,
    arrived: Instant,
    reply: Sender<Result<(Detection, Scoring), String>>,
}

impl Request {
    /// Frames that can share a batch: same input shape, scoring and region rule.
    fn batches_with(&self, other: &Request) -> bool {
        self.dims == other.dims
            && self.overrides == other.overrides
            && self.min_region_area == other.min_region_area
    }
}

#[derive(Default)]
struct Queue {
    pending: VecDeque<Request>,
    /// Whether a job that drains the queue is on (or waiting for) the libtorch thread.
    draining: bool,
}

/// How many frames a batch may hold, and how long it may wait to fill.
#[derive(Debug, Clone, Copy)]
struct Batching {
    size: usize,
    timeout: Duration,
}

/// What identifies a shared model: instance id, device and precision.
pub type ModelKey = (String, String, bool);

/// A detector shared by the elements that name its instance.
pub struct SharedModel {
    key: ModelKey,
    /// The checkpoint it was loaded from.
    pub path: String,
    /// The checkpoint's model name.
    pub name: String,
    /// Input side, resize and normalisation: frames become input on the streaming threads.
    pub input_size: usize,
    /// How frames of other shapes become input.
    pub resize: InputResize,
    /// The input normalisation.
    pub norm: Normalization,
    /// The checkpoint's calibrated scoring.
    pub scoring: Scoring,
    /// Where it runs, for the log.
    pub device_name: String,
    /// Only jobs on the libtorch thread lock it.
    detector: Mutex<Option<Detector>>,
    queue: Mutex<Queue>,
    arrivals: Condvar,
    batching: Mutex<Batching>,
}

static REGISTRY: LazyLock<Mutex<HashMap<ModelKey, Weak<SharedModel>>>> =
    LazyLock::new(Default::default);
static LOADS: AtomicU64 = AtomicU64::new(0);

/// How many models this process has loaded (each shared instance counts once).
pub fn loads() -> u64 {
    LOADS.load(Ordering::SeqCst)
}

/// How many shared models are alive in this process.
pub fn live_instances() -> usize {
    REGISTRY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .filter(|w| w.strong_count() > 0)
        .count()
}

/// The shared model of `instance_id` on `device` in `half` precision: the one already loaded,
/// or `path` loaded now on the libtorch thread. An instance id that holds another model file is
/// an error naming both.
pub fn acquire(
    instance_id: &str,
    path: &str,
    device: DeviceSpec,
    half: bool,
) -> Result<Arc<SharedModel>, clsflow::Error> {
    let key: ModelKey = (instance_id.to_string(), device.to_string(), half);
    // held while loading, so that two elements starting together load once
    let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(model) = registry.get(&key).and_then(Weak::upgrade) {
        if model.path != path {
            return Err(clsflow::Error::Config(format!(
                "model-instance-id {instance_id:?} already holds {} on {device}; this element asks \
                 for {path}: give it another model-instance-id",
                model.path
            )));
        }
        return Ok(model);
    }
    let file = path.to_string();
    let detector =
        torch_thread::try_run(move || Detector::load(&file, &DetectorOptions { device, half }))?;
    LOADS.fetch_add(1, Ordering::SeqCst);
    let model = Arc::new(SharedModel {
        key: key.clone(),
        path: path.to_string(),
        name: detector.manifest().name.clone(),
        input_size: detector.model().config().input_size as usize,
        resize: detector.resize(),
        norm: detector.manifest().normalization,
        scoring: detector.manifest().scoring.clone(),
        device_name: clsflow::device::device_name(detector.device()),
        detector: Mutex::new(Some(detector)),
        queue: Mutex::new(Queue::default()),
        arrivals: Condvar::new(),
        batching: Mutex::new(Batching {
            size: 1,
            timeout: Duration::ZERO,
        }),
    });
    registry.retain(|_, w| w.strong_count() > 0);
    registry.insert(key, Arc::downgrade(&model));
    Ok(model)
}

impl SharedModel {
    /// What identifies it.
    pub fn key(&self) -> &ModelKey {
        &self.key
    }

    /// Lets batches grow to `size` frames, waiting up to `timeout` to fill (the largest that
    /// any of its elements asked for).
    pub fn allow_batching(&self, size: usize, timeout: Duration) {
        let mut b = self.batching.lock().unwrap_or_else(|e| e.into_inner());
        b.size = b.size.max(size.max(1));
        b.timeout = b.timeout.max(timeout);
    }

    /// Runs the detector on one frame's input, in a batch with other elements' frames where
    /// they are queued together, and returns its detection with the scoring it used.
    pub fn detect(
        self: &Arc<Self>,
        input: Vec<f32>,
        dims: (usize, usize),
        frame: (u32, u32),
        overrides: Overrides,
        min_region_area: u32,
    ) -> Result<(Detection, Scoring), String> {
        let (reply, result) = channel();
        let start_drain = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.pending.push_back(Request {
                input,
                dims,
                frame,
                overrides,
                min_region_area,
                arrived: Instant::now(),
                reply,
            });
            !std::mem::replace(&mut q.draining, true)
        };
        self.arrivals.notify_all();
        if start_drain {
            let me = self.clone();
            torch_thread::spawn(move || me.drain()).map_err(|e| e.to_string())?;
        }
        result
            .recv()
            .map_err(|_| "the detector's job ended without a result".to_string())?
    }

    /// On the libtorch thread: runs the queued frames in batches until the queue is empty. A
    /// batch that panics answers its frames with an error; the queue goes on.
    fn drain(&self) {
        while let Some(batch) = self.next_batch() {
            let results =
                catch_unwind(AssertUnwindSafe(|| self.run_batch(&batch))).unwrap_or_else(|_| {
                    let e = "the detector panicked on this batch".to_string();
                    batch.iter().map(|_| Err(e.clone())).collect()
                });
            for (req, r) in batch.into_iter().zip(results) {
                let _ = req.reply.send(r);
            }
        }
    }

    /// The next batch: up to `size` frames that batch with the oldest, once that many are
    /// queued or the oldest has waited `timeout`; None (and draining ends) when none are left.
    fn next_batch(&self) -> Option<Vec<Request>> {
        let Batching { size, timeout } = *self.batching.lock().unwrap_or_else(|e| e.into_inner());
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let Some(first) = q.pending.front() else {
                q.draining = false;
                return None;
            };
            let deadline = first.arrived + timeout;
            let ready = q.pending.iter().filter(|r| r.batches_with(first)).count();
            let now = Instant::now();
            if ready >= size || now >= deadline {
                break;
            }
            q = self
                .arrivals
                .wait_timeout(q, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let first = q.pending.pop_front().expect("a queued frame");
        let mut batch = vec![first];
        let mut i = 0;
        while batch.len() < size && i < q.pending.len() {
            if q.pending[i].batches_with(&batch[0]) {
                batch.push(q.pending.remove(i).expect("in range"));
            } else {
                i += 1;
            }
        }
        Some(batch)
    }

    /// One detector call for a batch of frames that batch together.
    fn run_batch(&self, batch: &[Request]) -> Vec<Result<(Detection, Scoring), String>> {
        let mut guard = self.detector.lock().unwrap_or_else(|e| e.into_inner());
        let Some(detector) = guard.as_mut() else {
            return batch
                .iter()
                .map(|_| Err("the model was freed".into()))
                .collect();
        };
        let first = &batch[0];
        let scoring = first.overrides.apply(&self.scoring);
        detector.set_scoring(scoring.clone());
        let (w, h) = first.dims;
        let run = || -> clsflow::Result<Vec<Detection>> {
            let inputs: Vec<tch::Tensor> = batch
                .iter()
                .map(|r| input_tensor_dims(&r.input, w, h))
                .collect();
            let maps = detector.detect_input(&tch::Tensor::cat(&inputs, 0))?;
            let frames: Vec<(u32, u32)> = batch.iter().map(|r| r.frame).collect();
            detector.split(&maps, &frames, first.min_region_area)
        };
        match run() {
            Ok(ds) => ds.into_iter().map(|d| Ok((d, scoring.clone()))).collect(),
            Err(e) => batch.iter().map(|_| Err(e.to_string())).collect(),
        }
    }
}

impl Drop for SharedModel {
    /// The model's tensors are freed on the libtorch thread, like everything else of libtorch.
    fn drop(&mut self) {
        let detector = self
            .detector
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let _ = torch_thread::run(move || drop(detector));
    }
}
