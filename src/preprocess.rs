//! Images to network input: RGB tensors, resizing with antialiasing, normalisation.

use crate::backbone::Normalization;
use crate::{Error, Result};
use image::RgbImage;
use tch::{Device, Kind, Tensor};

/// An RGB image as a (3, H, W) uint8 tensor on the CPU.
pub fn rgb_to_tensor(image: &RgbImage) -> Tensor {
    let (w, h) = image.dimensions();
    Tensor::from_slice(image.as_raw())
        .reshape([h as i64, w as i64, 3])
        .permute([2, 0, 1])
        .contiguous()
}

/// Network input from same-sized RGB images: normalised float (N, 3, S, S), S the images' height
/// (images of training, already resized to the model input).
pub fn images_to_batch<'a>(
    images: impl IntoIterator<Item = &'a RgbImage>,
    norm: &Normalization,
) -> Result<Tensor> {
    let t: Vec<Tensor> = images.into_iter().map(rgb_to_tensor).collect();
    let Some(first) = t.first() else {
        return Err(Error::Input("empty image batch".into()));
    };
    let size = first.size()[1];
    prepare_batch(&Tensor::stack(&t, 0), size, norm, Kind::Float)
}

/// A (3, H, W) or (1, H, W) tensor (uint8 0..255 or float 0..1) back to an RGB image.
pub fn tensor_to_rgb(t: &Tensor) -> Result<RgbImage> {
    let (c, h, w) = t
        .size3()
        .map_err(|_| Error::Input(format!("expected (C, H, W), got {:?}", t.size())))?;
    let t = if t.kind() == Kind::Uint8 {
        t.shallow_clone()
    } else {
        (t.to_kind(Kind::Float).clamp(0.0, 1.0) * 255.0)
            .round()
            .to_kind(Kind::Uint8)
    };
    let t = if c == 1 {
        t.expand([3, h, w], false)
    } else {
        t
    };
    let data = Vec::<u8>::try_from(
        t.to_device(Device::Cpu)
            .permute([1, 2, 0])
            .contiguous()
            .flatten(0, -1),
    )
    .map_err(|e| Error::Input(e.to_string()))?;
    RgbImage::from_raw(w as u32, h as u32, data)
        .ok_or_else(|| Error::Input("image buffer size".into()))
}

/// Prepares a batch for the network: (N, 3, H, W) uint8 (0..255) or float (0..1) of any size,
/// to float (N, 3, size, size) resized bilinearly with antialiasing and normalised.
pub fn prepare_batch(
    batch: &Tensor,
    size: i64,
    norm: &Normalization,
    kind: Kind,
) -> Result<Tensor> {
    prepare_batch_to(batch, size, size, norm, kind)
}

/// (H, W) of an image batch (N, 3, H, W) with H, W >= 1, or an error naming the shape at fault.
pub fn image_batch_dims(batch: &Tensor) -> Result<(i64, i64)> {
    match batch.size4() {
        Ok((_, 3, h, w)) if h >= 1 && w >= 1 => Ok((h, w)),
        _ => Err(Error::Input(format!(
            "expected an image batch (N, 3, H, W) with H, W >= 1, got shape {:?}",
            batch.size()
        ))),
    }
}

/// [`prepare_batch`] to (N, 3, height, width), e.g. a [`crate::TileLayout`]'s resized image.
pub fn prepare_batch_to(
    batch: &Tensor,
    height: i64,
    width: i64,
    norm: &Normalization,
    kind: Kind,
) -> Result<Tensor> {
    let (h, w) = image_batch_dims(batch)?;
    let x = match batch.kind() {
        Kind::Uint8 => batch.to_kind(Kind::Float) / 255.0,
        Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16 => batch.to_kind(Kind::Float),
        other => {
            return Err(Error::Input(format!(
                "unsupported image tensor type {other:?}"
            )));
        }
    };
    let x = if h != height || w != width {
        x.internal_upsample_bilinear2d_aa([height, width], false, None, None)
    } else {
        x
    };
    let dev = x.device();
    let mean = Tensor::from_slice(&norm.mean)
        .to_kind(Kind::Float)
        .to_device(dev)
        .view([1, 3, 1, 1]);
    let std = Tensor::from_slice(&norm.std)
        .to_kind(Kind::Float)
        .to_device(dev)
        .view([1, 3, 1, 1]);
    Ok(((x - mean) / std).to_kind(kind))
}
