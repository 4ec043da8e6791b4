//! Training configuration: a TOML file (see `configs/`) with command-line overrides.

use crate::data::OnBadImage;
use crate::synth::SynthConfig;
use crate::synth::foreground::ForegroundMode;
use anyhow::{Context, Result, bail};
use clsflow::decoder::DecoderConfig;
use clsflow::flow::FlowConfig;
use clsflow::{BackboneKind, InputResize, ModelConfig, TapReference};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The whole training configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Seed of every random choice (libtorch, synthetic defects, splits).
    #[serde(default)]
    pub seed: u64,
    /// Architecture.
    pub model: ModelSection,
    /// Stage 1: the classifier fine-tunes the extractor.
    pub stage1: Stage1Config,
    /// Stage 2: flows on the frozen extractor.
    pub stage2: Stage2Config,
    /// Label-free calibration.
    #[serde(default)]
    pub calibration: CalibrationConfig,
    /// Synthetic defects.
    #[serde(default)]
    pub synth: SynthConfig,
    /// Data handling.
    #[serde(default)]
    pub data: DataConfig,
}

/// Architecture settings; decoder and flow shapes default from the backbone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Feature extractor: `efficientnet_lite0`, `efficientnet_lite1`, `efficientnet_lite2` (the
    /// CPU default), `resnet18` or `wide_resnet50_2`.
    pub backbone: BackboneKind,
    /// Network input side (multiple of 32).
    #[serde(default = "default_input_size")]
    pub input_size: i64,
    /// How images of other shapes become the square input: `stretch` (the paper's) or `tile`
    /// (aspect ratio kept, short side = input_size, overlapping tiles; docs/experiments.md).
    #[serde(default)]
    pub resize: InputResize,
    /// ImageNet weights of the extractor; default `<models dir>/<backbone file name>`.
    #[serde(default)]
    pub weights: Option<PathBuf>,
    /// Decoder shape override.
    #[serde(default)]
    pub decoder: Option<DecoderConfig>,
    /// Flow override.
    #[serde(default)]
    pub flow: Option<FlowConfig>,
}

fn default_input_size() -> i64 {
    256
}

/// Stage 1 settings (docs/method.md section 5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage1Config {
    /// Images per step.
    pub batch_size: usize,
    /// Start learning rate of the cosine schedule (ends at lr / 1000).
    pub lr: f64,
    /// Adam weight decay.
    #[serde(default = "default_wd")]
    pub weight_decay: f64,
    /// Epochs with the extractor frozen (decoder only).
    pub frozen_epochs: usize,
    /// Epochs with extractor and decoder trained jointly.
    pub joint_epochs: usize,
    /// Passes over the training images per epoch (the authors' sub-epochs x repeats).
    #[serde(default = "one")]
    pub repeat: usize,
}

fn default_wd() -> f64 {
    1e-4
}
fn one() -> usize {
    1
}

/// Stage 2 settings (docs/method.md section 4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage2Config {
    /// Epochs per flow.
    pub epochs: usize,
    /// Warm-up epochs from lr / 10 (then cosine to lr / 1000).
    #[serde(default)]
    pub warmup_epochs: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Feature vectors per step.
    pub fiber_batch: usize,
    /// Feature vectors drawn per flow and epoch (all when absent).
    #[serde(default)]
    pub vectors_per_epoch: Option<usize>,
    /// Adam's (L2) weight decay of the flows; 0 = none, as in the paper.
    #[serde(default)]
    pub weight_decay: f64,
    /// Per tap (stride 8, 16, 32 for Lite0): Gaussian noise added to every training feature
    /// vector, as a fraction of each channel's standard deviation over the training features;
    /// 0 = none, as in the paper. A regulariser for a tap with few vectors per position, whose
    /// flow otherwise fits its training images far better than held-out ones.
    #[serde(default)]
    pub feature_noise: [f64; 3],
    /// On a CPU with two or more libtorch threads, train the flow with the most vectors on a
    /// helper thread beside the others, one libtorch thread each (a flow's steps are too small
    /// to share two threads well); `false` trains them one after the other.
    #[serde(default = "yes")]
    pub parallel_flows: bool,
}

fn yes() -> bool {
    true
}

/// Label-free calibration settings (docs/method.md section 8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CalibrationConfig {
    /// Fraction of the good training images held out (never trained on).
    pub holdout_fraction: f64,
    /// Candidate fusion weights, chosen on held-out good + synthetic defects.
    pub fusion_weights: Vec<f64>,
    /// A fixed fusion weight instead of the label-free choice (e.g. the paper's).
    pub fusion_weight: Option<f64>,
    /// A fixed weight of the classifier in the image score. When absent it is chosen among
    /// `fusion_weights` on the validation image AUROC alone, or equals a fixed `fusion_weight`
    /// (the paper's single weight).
    pub score_weight: Option<f64>,
    /// The smallest candidate within this much of the best validation objective is chosen (the
    /// synthetic validation set flatters the classifier, which was trained on such defects).
    pub fusion_tolerance: f64,
    /// The image score's weight and reduction, judged on validation image AUROC alone, need a
    /// gain above this many standard errors of that AUROC (Hanley and McNeil; about 0.009 for
    /// 76 good images and 70 defects at 0.98), or above `fusion_tolerance` where that is larger:
    /// the one-standard-error rule (docs/experiments.md). 0 = `fusion_tolerance` alone.
    pub score_tolerance_se: f64,
    /// Threshold = max(max held-out good score, mean + this many standard deviations).
    pub threshold_sigmas: f64,
    /// Fraction of the texture images kept out of stage 1: the synthetic validation defects are
    /// made from these alone, i.e. of a kind the classifier never saw. 0 = one synthesiser for
    /// both (the paper's way).
    pub holdout_textures: f64,
    /// Removed (the taps are always combined by the paper's sum); read so that older configs
    /// and runs load: `auto` and `sum` are accepted, the others refused by name.
    #[serde(skip_serializing)]
    pub tap_aggregation: Option<String>,
    /// Removed (pooled image scores); read so that older runs load: only `[]` is accepted.
    #[serde(skip_serializing)]
    pub score_pools: Option<Vec<u32>>,
    /// Removed (the cut-and-paste guard); read so that older runs load: only `false` is
    /// accepted.
    #[serde(skip_serializing)]
    pub cut_paste_guard: Option<bool>,
    /// Removed (image-level choices judged on faint defects too); read so that runs of the
    /// version that had it load: only `0` is accepted.
    #[serde(skip_serializing)]
    pub faint_contrast: Option<f64>,
    /// What each position's log p / C is compared with: `auto` chooses between the paper's
    /// `global` reference and the `position` one (each position centred on the training
    /// images' mean there) on the flow branch's synthetic validation objective, the latter only
    /// for a gain above `fusion_tolerance` (docs/experiments.md); `auto` is `global` with a fixed
    /// `fusion_weight`.
    pub tap_reference: ReferenceChoice,
    /// Candidate image scores, each the mean of that fraction of a map's largest values (0:
    /// the maximum, the paper's). Calibration takes one other than the first only for a gain
    /// above `fusion_tolerance` in validation image AUROC (docs/experiments.md); with
    /// fixed weights the first is used.
    pub score_top_fractions: Vec<f64>,
}

impl CalibrationConfig {
    /// These settings with the classifier's weights fixed where given (`recalibrate
    /// --fusion-weight`, `--score-weight`). Fixed weights would otherwise bring the paper's flow
    /// reference with them; an `auto` reference becomes `run_reference`, the one the run
    /// chose, so that the flow branch stays the one its evaluation showed.
    pub fn with_fixed_weights(
        mut self,
        fusion_weight: Option<f64>,
        score_weight: Option<f64>,
        run_reference: TapReference,
    ) -> Self {
        if fusion_weight.is_none() && score_weight.is_none() {
            return self;
        }
        self.fusion_weight = fusion_weight.or(self.fusion_weight);
        self.score_weight = score_weight.or(self.score_weight);
        if self.tap_reference == ReferenceChoice::Auto {
            self.tap_reference = match run_reference {
                TapReference::Global => ReferenceChoice::Global,
                TapReference::Position => ReferenceChoice::Position,
            };
        }
        self
    }
}

/// The `tap_reference` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReferenceChoice {
    /// Chosen by calibration (docs/experiments.md).
    #[default]
    Auto,
    /// The paper's: one reference per tap.
    Global,
    /// Each position centred on the training images' mean there.
    Position,
}

impl ReferenceChoice {
    /// The forced reference, or None for `auto`.
    pub fn forced(self) -> Option<TapReference> {
        match self {
            ReferenceChoice::Auto => None,
            ReferenceChoice::Global => Some(TapReference::Global),
            ReferenceChoice::Position => Some(TapReference::Position),
        }
    }
}

impl Default for CalibrationConfig {
    fn default() -> Self {
        CalibrationConfig {
            holdout_fraction: 0.1,
            fusion_weights: vec![0.05, 0.1, 0.15, 0.3, 0.5, 0.6, 1.0],
            fusion_weight: None,
            score_weight: None,
            fusion_tolerance: 0.005,
            score_tolerance_se: 1.0,
            threshold_sigmas: 3.0,
            holdout_textures: 0.0,
            tap_aggregation: None,
            score_pools: None,
            cut_paste_guard: None,
            faint_contrast: None,
            tap_reference: ReferenceChoice::Auto,
            score_top_fractions: vec![0.0],
        }
    }
}

/// Data handling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Unreadable images: skip (with a warning naming them) or fail.
    pub on_bad_image: OnBadImage,
    /// Texture folders for synthetic defects (images and GIMP .pat files).
    pub textures: Vec<PathBuf>,
    /// Where synthetic defects go: `none` (anywhere), `object` (on the part, found as the Otsu
    /// class that touches the border less), `dark` or `bright` (that Otsu class); absent: the
    /// category's switch (MVTec names), else none.
    pub foreground: Option<ForegroundMode>,
    /// Hole filling of the foreground; absent: the category's switch.
    pub fill_holes: Option<bool>,
    /// Use at most this many good training images (after the seeded shuffle), for quick runs.
    pub max_train_images: Option<usize>,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            on_bad_image: OnBadImage::Skip,
            textures: vec![PathBuf::from(crate::synth::textures::GIMP_PATTERNS)],
            foreground: None,
            fill_holes: None,
            max_train_images: None,
        }
    }
}

/// The default configuration (`configs/cpu-fast.toml`), built into the program so that it runs
/// from any folder; `clsflow-train config --print` shows it.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../../configs/cpu-fast.toml");

impl TrainConfig {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid config {}", path.display()))
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self> {
        let cfg: TrainConfig = toml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The built-in default ([`DEFAULT_CONFIG_TOML`]).
    pub fn builtin() -> Self {
        Self::parse(DEFAULT_CONFIG_TOML).expect("the built-in config is valid (tested)")
    }

    /// The file's config when one is given, else the built-in default.
    pub fn load_or_builtin(path: Option<&Path>) -> Result<Self> {
        path.map_or_else(|| Ok(Self::builtin()), Self::load)
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        let s1 = &self.stage1;
        if s1.batch_size == 0 || s1.repeat == 0 || s1.lr.is_nan() || s1.lr <= 0.0 {
            bail!("stage1: batch_size, repeat and lr must be positive");
        }
        if s1.frozen_epochs + s1.joint_epochs == 0 {
            bail!("stage1: at least one epoch (frozen_epochs + joint_epochs)");
        }
        let s2 = &self.stage2;
        if s2.epochs == 0
            || s2.fiber_batch == 0
            || s2.lr.is_nan()
            || s2.lr <= 0.0
            || s2.warmup_epochs > s2.epochs
        {
            bail!("stage2: epochs, fiber_batch, lr must be positive and warmup_epochs <= epochs");
        }
        if s2.vectors_per_epoch == Some(0) {
            bail!(
                "stage2.vectors_per_epoch = 0: the flows would train on no feature vector; give \
                 at least fiber_batch ({}), or leave it out to use every vector",
                s2.fiber_batch
            );
        }
        if !(s2.weight_decay >= 0.0 && s2.weight_decay.is_finite()) {
            bail!("stage2.weight_decay must be >= 0, got {}", s2.weight_decay);
        }
        if let Some(v) = s2.feature_noise.iter().find(|v| !(0.0..=1.0).contains(*v)) {
            bail!("stage2.feature_noise values must be in [0, 1], got {v}");
        }
        let c = &self.calibration;
        if !(0.0..0.9).contains(&c.holdout_fraction) {
            bail!(
                "calibration.holdout_fraction must be in [0, 0.9), got {}",
                c.holdout_fraction
            );
        }
        if !(0.0..0.9).contains(&c.holdout_textures) {
            bail!(
                "calibration.holdout_textures must be in [0, 0.9), got {}",
                c.holdout_textures
            );
        }
        if !(0.0..1.0).contains(&c.fusion_tolerance) {
            bail!(
                "calibration.fusion_tolerance = {}: must be in [0, 1)",
                c.fusion_tolerance
            );
        }
        if !(c.score_tolerance_se.is_finite() && c.score_tolerance_se >= 0.0) {
            bail!(
                "calibration.score_tolerance_se = {}: must be a finite number >= 0",
                c.score_tolerance_se
            );
        }
        for (name, w) in [
            ("fusion_weight", c.fusion_weight),
            ("score_weight", c.score_weight),
        ] {
            if let Some(w) = w
                && !(w.is_finite() && w >= 0.0)
            {
                bail!("calibration.{name} = {w}: must be a finite number >= 0");
            }
        }
        if let Some(w) = c
            .fusion_weights
            .iter()
            .find(|w| !(w.is_finite() && **w >= 0.0))
        {
            bail!("calibration.fusion_weights: {w} is not a finite number >= 0");
        }
        if c.score_top_fractions.is_empty() {
            bail!("calibration.score_top_fractions: give at least one (0 = the map's maximum)");
        }
        if let Some(q) = c
            .score_top_fractions
            .iter()
            .find(|q| !(0.0..1.0).contains(*q))
        {
            bail!("calibration.score_top_fractions: {q} is not a fraction in [0, 1)");
        }
        if c.fusion_weight.is_none() && c.fusion_weights.is_empty() {
            bail!("calibration: give fusion_weights to choose from, or a fixed fusion_weight");
        }
        if !(0.0..=1.0).contains(&self.synth.defect_probability)
            || !(0.0..=1.0).contains(&self.synth.texture_probability)
        {
            bail!("synth: probabilities must be in [0, 1]");
        }
        let (line, smooth) = (self.synth.line_probability, self.synth.smooth_probability);
        if !(0.0..=1.0).contains(&line) || !(0.0..=1.0).contains(&smooth) || line + smooth > 1.0 {
            bail!(
                "synth: line_probability ({line}) and smooth_probability ({smooth}) must be in \
                 [0, 1] and sum to at most 1 (the rest of the defects are texture blends)"
            );
        }
        let c = &self.calibration;
        let removed = [
            (
                "tap_aggregation",
                c.tap_aggregation
                    .as_deref()
                    .filter(|a| !matches!(*a, "auto" | "sum"))
                    .map(|a| format!("\"{a}\"")),
            ),
            (
                "score_pools",
                c.score_pools
                    .as_ref()
                    .filter(|p| !p.is_empty())
                    .map(|p| format!("{p:?}")),
            ),
            (
                "cut_paste_guard",
                c.cut_paste_guard.filter(|&g| g).map(|g| g.to_string()),
            ),
            (
                "faint_contrast",
                c.faint_contrast
                    .filter(|&f| f != 0.0)
                    .map(|f| f.to_string()),
            ),
        ];
        if let Some((key, value)) = removed.into_iter().find_map(|(k, v)| Some((k, v?))) {
            bail!(clsflow::model::removed_option(
                &format!("calibration.{key}"),
                &value
            ));
        }
        self.model_config().validate()?;
        Ok(())
    }

    /// The model architecture this config describes.
    pub fn model_config(&self) -> ModelConfig {
        let mut m = ModelConfig::new(self.model.backbone);
        m.input_size = self.model.input_size;
        m.resize = self.model.resize;
        if let Some(d) = &self.model.decoder {
            m.decoder = d.clone();
        }
        if let Some(f) = &self.model.flow {
            m.flow = f.clone();
        }
        m
    }

    /// The extractor's ImageNet weights file: the config's (or `--weights`) when given, else
    /// the backbone's file found by [`clsflow::paths::find_weights`].
    pub fn weights_path(&self) -> Result<PathBuf> {
        Ok(clsflow::paths::find_weights(
            self.model.backbone.weights_file_name(),
            self.model.weights.as_deref(),
        )?)
    }
}

/// Command-line overrides of config values.
///
/// Signed numbers take `allow_negative_numbers`, so that `--lr -1` reaches [`TrainConfig::validate`],
/// which names the key and value, instead of clap reading `-1` as an unknown flag.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// Random seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Network input side.
    #[arg(long, allow_negative_numbers = true)]
    pub input_size: Option<i64>,
    /// Stage 1 batch size.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Stage 1 learning rate.
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// Stage 1 epochs with the extractor frozen.
    #[arg(long)]
    pub frozen_epochs: Option<usize>,
    /// Stage 1 joint epochs.
    #[arg(long)]
    pub joint_epochs: Option<usize>,
    /// Stage 2 epochs.
    #[arg(long)]
    pub flow_epochs: Option<usize>,
    /// Stage 2 vectors per flow and epoch.
    #[arg(long)]
    pub vectors_per_epoch: Option<usize>,
    /// Texture folder (repeatable; replaces the config's list).
    #[arg(long = "textures")]
    pub textures: Vec<PathBuf>,
    /// Where synthetic defects go: none (anywhere), object (on the part, whichever its
    /// brightness), dark or bright (the darker or brighter Otsu class).
    #[arg(long, value_enum)]
    pub foreground: Option<ForegroundMode>,
    /// What to do with unreadable images.
    #[arg(long, value_enum)]
    pub on_bad_image: Option<OnBadImage>,
    /// Fixed fusion weight of the maps (skips the label-free choice; also the score's weight
    /// unless --score-weight or the config's score_weight is given).
    #[arg(long, allow_negative_numbers = true)]
    pub fusion_weight: Option<f64>,
    /// Fixed weight of the classifier in the image score (skips the label-free choice).
    #[arg(long, allow_negative_numbers = true)]
    pub score_weight: Option<f64>,
    /// ImageNet weights file of the extractor.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Feature extractor, instead of the config's: efficientnet_lite0, efficientnet_lite1,
    /// efficientnet_lite2, resnet18, wide_resnet50_2.
    #[arg(long, value_parser = parse_backbone)]
    pub backbone: Option<BackboneKind>,
}

fn parse_backbone(s: &str) -> std::result::Result<BackboneKind, String> {
    BackboneKind::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = BackboneKind::ALL.iter().map(|k| k.name()).collect();
        format!("unknown backbone {s:?}; one of {}", names.join(", "))
    })
}

impl Overrides {
    /// Applies the overrides given on the command line, then re-validates.
    pub fn apply(&self, cfg: &mut TrainConfig) -> Result<()> {
        macro_rules! set {
            ($src:expr, $dst:expr) => {
                if let Some(v) = $src.clone() {
                    $dst = v;
                }
            };
        }
        set!(self.seed, cfg.seed);
        set!(self.input_size, cfg.model.input_size);
        set!(self.batch_size, cfg.stage1.batch_size);
        set!(self.lr, cfg.stage1.lr);
        set!(self.frozen_epochs, cfg.stage1.frozen_epochs);
        set!(self.joint_epochs, cfg.stage1.joint_epochs);
        set!(self.flow_epochs, cfg.stage2.epochs);
        set!(self.on_bad_image, cfg.data.on_bad_image);
        if self.vectors_per_epoch.is_some() {
            cfg.stage2.vectors_per_epoch = self.vectors_per_epoch;
        }
        if !self.textures.is_empty() {
            cfg.data.textures = self.textures.clone();
        }
        if self.foreground.is_some() {
            cfg.data.foreground = self.foreground;
        }
        if self.fusion_weight.is_some() {
            cfg.calibration.fusion_weight = self.fusion_weight;
        }
        if self.score_weight.is_some() {
            cfg.calibration.score_weight = self.score_weight;
        }
        if self.weights.is_some() {
            cfg.model.weights = self.weights.clone();
        }
        // the decoder's and flows' widths follow the backbone (unless the config sets a decoder),
        // and so does the default weights file
        set!(self.backbone, cfg.model.backbone);
        cfg.stage2.warmup_epochs = cfg.stage2.warmup_epochs.min(cfg.stage2.epochs);
        cfg.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_weights_keep_the_runs_flow_reference() {
        let auto = CalibrationConfig::default();
        let c = auto
            .clone()
            .with_fixed_weights(Some(0.0), Some(0.0), TapReference::Position);
        assert_eq!((c.fusion_weight, c.score_weight), (Some(0.0), Some(0.0)));
        assert_eq!(c.tap_reference, ReferenceChoice::Position);
        // the score's weight alone: the map's stays chosen
        let c = auto
            .clone()
            .with_fixed_weights(None, Some(0.5), TapReference::Global);
        assert_eq!((c.fusion_weight, c.score_weight), (None, Some(0.5)));
        assert_eq!(c.tap_reference, ReferenceChoice::Global);
        // a reference the settings force stays; no weights given, nothing changes
        let forced = CalibrationConfig {
            tap_reference: ReferenceChoice::Global,
            ..auto.clone()
        };
        let c = forced.with_fixed_weights(Some(0.0), None, TapReference::Position);
        assert_eq!(c.tap_reference, ReferenceChoice::Global);
        assert_eq!(
            auto.clone()
                .with_fixed_weights(None, None, TapReference::Position),
            auto
        );
    }
}
