//! Datasets on disk: MVTec AD layout (`train/good`, `test/<type>`, `ground_truth/<type>/<name>_mask.png`)
//! or a plain folder of good images. Images of any format, channel count and size are read with
//! `image`, converted to RGB and resized once to the model input.

use anyhow::{Context, Result, bail};
use clsflow::preprocess::{rgb_to_tensor, tensor_to_rgb};
use clsflow::tiling::{InputResize, TileLayout, resized_dims};
use image::{GrayImage, RgbImage};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use tch::Kind;

/// File extensions treated as images.
pub const IMAGE_EXTENSIONS: [&str; 9] = [
    "png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp", "gif", "pnm",
];

/// What to do with a file that cannot be read as an image.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum OnBadImage {
    /// Report the path and continue without it.
    Skip,
    /// Stop with an error naming the path.
    Fail,
}

/// A test image with its label.
#[derive(Debug, Clone)]
pub struct TestItem {
    /// Image path.
    pub path: PathBuf,
    /// Folder name under `test/` (`good` for normal images).
    pub defect_type: String,
    /// Ground-truth mask path: defective images whose `ground_truth/<type>/<name>_mask.png`
    /// exists (without one, the image counts at image level only).
    pub mask: Option<PathBuf>,
}

/// The files of a category.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Root folder.
    pub root: PathBuf,
    /// Category name (the root folder's name).
    pub name: String,
    /// Good training images.
    pub train: Vec<PathBuf>,
    /// Test images (empty for a plain folder of good images).
    pub test: Vec<TestItem>,
}

/// Whether the file name has an image extension ([`IMAGE_EXTENSIONS`], any case).
pub fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Image files of a folder, sorted by name.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_image(p))
        .collect();
    files.sort();
    Ok(files)
}

impl Dataset {
    /// Opens `root` as an MVTec AD category, or, when it has no `train/good`, as a plain folder
    /// of good images (training only).
    pub fn open(root: &Path) -> Result<Self> {
        let name = category_name(root)?;
        let train_dir = root.join("train/good");
        if !train_dir.is_dir() {
            let train = list_images(root)?;
            if train.is_empty() {
                bail!(
                    "{}: no train/good folder and no images directly inside; expected MVTec AD layout \
                     (train/good, test/<type>, ground_truth/<type>/<name>_mask.png) or a folder of good images",
                    root.display()
                );
            }
            return Ok(Dataset {
                root: root.into(),
                name,
                train,
                test: Vec::new(),
            });
        }
        let train = list_images(&train_dir)?;
        if train.is_empty() {
            bail!(
                "{}: no images (extensions {:?})",
                train_dir.display(),
                IMAGE_EXTENSIONS
            );
        }
        let test_dir = root.join("test");
        let test = if test_dir.is_dir() {
            test_split(root)?
        } else {
            Vec::new()
        };
        Ok(Dataset {
            root: root.into(),
            name,
            train,
            test,
        })
    }

    /// Opens the test split of a category alone (`test/good`, `test/<defect type>`, masks where
    /// `ground_truth/` has them): what evaluation reads, with or without `train/`.
    pub fn open_test(root: &Path) -> Result<Self> {
        let name = category_name(root)?;
        if !root.join("test").is_dir() {
            bail!(
                "{}: no test/ folder: nothing to evaluate (expected test/good and \
                 test/<defect type>, with optional ground_truth/<type>/<name>_mask.png)",
                root.display()
            );
        }
        Ok(Dataset {
            root: root.into(),
            name,
            train: Vec::new(),
            test: test_split(root)?,
        })
    }
}

/// The category's name (its folder's), after checking that `root` is a folder.
fn category_name(root: &Path) -> Result<String> {
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!(
            "{}: is a file, not a folder (expected an MVTec AD category with train/good, or a \
             folder of good images)",
            root.display()
        ),
        Err(e) => bail!("{}: {e}", root.display()),
    }
    Ok(root
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "dataset".into()))
}

/// Test images of every folder under `root/test`, with their masks where present.
fn test_split(root: &Path) -> Result<Vec<TestItem>> {
    let test_dir = root.join("test");
    let mut types: Vec<PathBuf> = std::fs::read_dir(&test_dir)
        .with_context(|| format!("cannot read {}", test_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    types.sort();
    let mut test = Vec::new();
    for dir in types {
        let defect_type = dir.file_name().unwrap().to_string_lossy().into_owned();
        for path in list_images(&dir)? {
            let mask = (defect_type != "good")
                .then(|| {
                    let stem = path.file_stem().unwrap().to_string_lossy();
                    root.join("ground_truth")
                        .join(&defect_type)
                        .join(format!("{stem}_mask.png"))
                })
                .filter(|m| m.is_file());
            test.push(TestItem {
                path,
                defect_type: defect_type.clone(),
                mask,
            });
        }
    }
    Ok(test)
}

/// Resizes an RGB image to `size` x `size` with the detector's own resize (bilinear, antialiased),
/// so that training sees exactly what inference sees.
pub fn resize_rgb(img: &RgbImage, size: u32) -> RgbImage {
    resize_rgb_to(img, size, size)
}

/// [`resize_rgb`] to `width` x `height`.
pub fn resize_rgb_to(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    if img.dimensions() == (width, height) {
        return img.clone();
    }
    let t = rgb_to_tensor(img).unsqueeze(0).to_kind(Kind::Float) / 255.0;
    let r = t.internal_upsample_bilinear2d_aa([height as i64, width as i64], false, None, None);
    tensor_to_rgb(&r.squeeze_dim(0)).expect("resized image")
}

/// An image as the detector resizes it for input side `size`: to `size` x `size`, or with
/// tiling to a short side of `size` ([`clsflow::tiling`]).
pub fn resize_for(img: &RgbImage, size: u32, resize: InputResize) -> RgbImage {
    match resize {
        InputResize::Stretch => resize_rgb(img, size),
        InputResize::Tile => {
            let (w, h) = img.dimensions();
            let (w, h) = resized_dims(w as i64, h as i64, size as i64);
            resize_rgb_to(img, w as u32, h as u32)
        }
    }
}

/// The `size` x `size` tiles of an image from [`resize_for`], in [`TileLayout`] order (the image
/// itself when it is square).
pub fn cut_tiles(img: &RgbImage, size: u32) -> Vec<RgbImage> {
    let (w, h) = img.dimensions();
    TileLayout::of_resized(w as i64, h as i64, size as i64)
        .origins
        .iter()
        .map(|&(x, y)| image::imageops::crop_imm(img, x as u32, y as u32, size, size).to_image())
        .collect()
}

/// Reads an image of any format and channel count as RGB.
pub fn read_rgb(path: &Path) -> Result<RgbImage> {
    let img = image::ImageReader::open(path)
        .with_context(|| format!("{}: cannot open", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("{}: cannot read", path.display()))?
        .decode()
        .with_context(|| format!("{}: not a readable image", path.display()))?;
    Ok(img.to_rgb8())
}

/// Reads a ground-truth mask (non-zero = defect), resized to `size` with nearest neighbour.
pub fn read_mask(path: &Path, size: u32) -> Result<GrayImage> {
    let m = image::open(path)
        .with_context(|| format!("{}: not a readable mask", path.display()))?
        .to_luma8();
    let m = image::imageops::resize(&m, size, size, image::imageops::FilterType::Nearest);
    Ok(GrayImage::from_fn(size, size, |x, y| {
        image::Luma([if m.get_pixel(x, y)[0] > 127 { 255 } else { 0 }])
    }))
}

/// A progress bar with ETA in the project's style.
pub fn progress(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:>14} [{bar:30}] {pos}/{len} {elapsed_precise} ETA {eta_precise} {per_sec}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// A file left out of training or evaluation, with the reason.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SkippedFile {
    /// The file.
    pub path: PathBuf,
    /// Why it was left out.
    pub error: String,
}

/// Images read and resized, and the files that could not be read.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// Each readable image with its path, in input order.
    pub images: Vec<(PathBuf, RgbImage)>,
    /// Unreadable files (with `on_bad_image = "skip"`).
    pub skipped: Vec<SkippedFile>,
}

/// Prints a warning on stderr above the progress bar; unlike `ProgressBar::println`, also when
/// stderr is not a terminal (CI, logs, pipes), where the bar itself is hidden.
pub fn warn(pb: &ProgressBar, message: &str) {
    pb.suspend(|| eprintln!("warning: {message}"));
}

/// Loads and resizes images to `size` x `size`; unreadable files are reported by path and
/// skipped or fatal by `on_bad`.
pub fn load_images(paths: &[PathBuf], size: u32, on_bad: OnBadImage, what: &str) -> Result<Loaded> {
    load_images_for(paths, size, InputResize::Stretch, on_bad, what)
}

/// [`load_images`], each image resized as the detector does under `resize` ([`resize_for`]).
pub fn load_images_for(
    paths: &[PathBuf],
    size: u32,
    resize: InputResize,
    on_bad: OnBadImage,
    what: &str,
) -> Result<Loaded> {
    let pb = progress(paths.len() as u64, what);
    let mut out = Loaded::default();
    for p in paths {
        match read_rgb(p) {
            Ok(img) => out.images.push((p.clone(), resize_for(&img, size, resize))),
            Err(e) if on_bad == OnBadImage::Skip => {
                warn(&pb, &format!("skipping {e:#}"));
                out.skipped.push(SkippedFile {
                    path: p.clone(),
                    error: format!("{e:#}"),
                });
            }
            Err(e) => return Err(e.context("use --on-bad-image skip to leave such files out")),
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    if out.images.is_empty() {
        bail!(
            "no readable images among {} file(s) for {what}",
            paths.len()
        );
    }
    Ok(out)
}
