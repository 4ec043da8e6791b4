//! How an image of any shape becomes network input of S x S, S the model's input size.
//!
//! - [`InputResize::Stretch`] (the method's): the whole image resized to S x S. A 400 x 160 tile
//!   or a 1280 x 720 frame is squeezed along one axis and stretched along the other, so the same
//!   surface is seen at a scale that differs with every image's shape.
//! - [`InputResize::Tile`]: the image is resized so that its short side is S, keeping its aspect
//!   ratio, and cut along its long side into as few S x S tiles as cover it, spread evenly (they
//!   overlap unless the long side is a multiple of S). Each tile goes through the networks as an
//!   image of its own; the tiles' maps are put back together ([`stitch`]), averaged where tiles
//!   overlap, into one map of the resized image's shape. Square images are one tile: the same
//!   input as `Stretch`.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// How images are brought to the network's square input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputResize {
    /// The whole image resized to S x S (the paper's).
    #[default]
    Stretch,
    /// Aspect ratio kept (short side S), cut into overlapping S x S tiles.
    Tile,
}

impl InputResize {
    /// The setting's name in configs.
    pub fn name(self) -> &'static str {
        match self {
            InputResize::Stretch => "stretch",
            InputResize::Tile => "tile",
        }
    }
}

/// Where the tiles of one image lie in its resized form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileLayout {
    /// Columns of the resized image.
    pub width: i64,
    /// Rows of the resized image.
    pub height: i64,
    /// Side of every tile (the model's input size).
    pub size: i64,
    /// Top-left corner (x, y) of each tile.
    pub origins: Vec<(i64, i64)>,
}

impl TileLayout {
    /// The layout of a `width` x `height` image for input size `size` under `resize`.
    pub fn new(resize: InputResize, width: i64, height: i64, size: i64) -> Result<Self> {
        if width < 1 || height < 1 || size < 1 {
            return Err(Error::Input(format!(
                "cannot tile a {width}x{height} image for input size {size}"
            )));
        }
        let (w, h) = match resize {
            InputResize::Stretch => (size, size),
            InputResize::Tile => resized_dims(width, height, size),
        };
        Ok(Self::of_resized(w, h, size))
    }

    /// The layout of an image already resized so that its short side is `size`.
    pub fn of_resized(width: i64, height: i64, size: i64) -> Self {
        let long = width.max(height);
        let n = (long as f64 / size as f64).ceil().max(1.0) as i64;
        let origins = (0..n)
            .map(|i| {
                let o = if n == 1 {
                    0
                } else {
                    ((i * (long - size)) as f64 / (n - 1) as f64).round() as i64
                };
                if width >= height { (o, 0) } else { (0, o) }
            })
            .collect();
        TileLayout {
            width,
            height,
            size,
            origins,
        }
    }

    /// Number of tiles.
    pub fn tiles(&self) -> usize {
        self.origins.len()
    }
}

/// The size (width, height) of a `width` x `height` image resized so that its short side is
/// `size`, its aspect ratio kept (the long side rounded, at least `size`).
pub fn resized_dims(width: i64, height: i64, size: i64) -> (i64, i64) {
    let scale = size as f64 / width.min(height) as f64;
    let long = |v: i64| ((v as f64 * scale).round() as i64).max(size);
    if width <= height {
        (size, long(height))
    } else {
        (long(width), size)
    }
}

/// Cuts a batch (N, C, H, W) of resized images laid out as `layout` into tiles (N * T, C, S, S),
/// the tiles of each image together, in the layout's order.
pub fn cut(batch: &Tensor, layout: &TileLayout) -> Result<Tensor> {
    let size = batch.size();
    if size.len() != 4 || size[2] != layout.height || size[3] != layout.width {
        return Err(Error::Input(format!(
            "expected a (N, C, {}, {}) batch to tile, got {size:?}",
            layout.height, layout.width
        )));
    }
    if layout.tiles() == 1 && layout.width == layout.size && layout.height == layout.size {
        return Ok(batch.shallow_clone());
    }
    let s = layout.size;
    let tiles: Vec<Tensor> = layout
        .origins
        .iter()
        .map(|&(x, y)| batch.narrow(2, y, s).narrow(3, x, s))
        .collect();
    // (T, N, C, S, S) -> (N, T, C, S, S) -> (N * T, C, S, S)
    let c = size[1];
    Ok(Tensor::stack(&tiles, 1).reshape([-1, c, s, s]))
}

/// Puts tile maps (N * T, C, S, S) from [`cut`] back together into maps (N, C, H, W) of the
/// resized images, each position the mean of the tiles that cover it.
pub fn stitch(tiles: &Tensor, layout: &TileLayout) -> Result<Tensor> {
    let size = tiles.size();
    let t = layout.tiles() as i64;
    let s = layout.size;
    if size.len() != 4 || size[2] != s || size[3] != s || size[0] % t != 0 {
        return Err(Error::Input(format!(
            "expected (N * {t}, C, {s}, {s}) tile maps, got {size:?}"
        )));
    }
    if t == 1 && layout.width == s && layout.height == s {
        return Ok(tiles.shallow_clone());
    }
    let (n, c) = (size[0] / t, size[1]);
    let per_image = tiles.reshape([n, t, c, s, s]);
    let opts = (tiles.kind(), tiles.device());
    let mut sum = Tensor::zeros([n, c, layout.height, layout.width], opts);
    let count = Tensor::zeros([1, 1, layout.height, layout.width], opts);
    for (i, &(x, y)) in layout.origins.iter().enumerate() {
        let mut region = sum.narrow(2, y, s).narrow(3, x, s);
        let _ = region.g_add_(&per_image.select(1, i as i64));
        let mut covered = count.narrow(2, y, s).narrow(3, x, s);
        let _ = covered.g_add_scalar_(1.0);
    }
    let _ = sum.g_div_(&count);
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn layouts_keep_the_aspect_ratio_and_cover_the_image() {
        // a 400 x 160 magnetic-tile image at 256: 640 x 256, three tiles 0, 192, 384
        let l = TileLayout::new(InputResize::Tile, 400, 160, 256).unwrap();
        assert_eq!((l.width, l.height), (640, 256));
        assert_eq!(l.origins, vec![(0, 0), (192, 0), (384, 0)]);
        // portrait: along the rows
        let l = TileLayout::new(InputResize::Tile, 200, 300, 256).unwrap();
        assert_eq!((l.width, l.height), (256, 384));
        assert_eq!(l.origins, vec![(0, 0), (0, 128)]);
        // square, or nearly: one tile, as with stretch
        let l = TileLayout::new(InputResize::Tile, 700, 700, 256).unwrap();
        assert_eq!((l.width, l.height, l.tiles()), (256, 256, 1));
        let l = TileLayout::new(InputResize::Tile, 257, 256, 256).unwrap();
        assert_eq!((l.width, l.height, l.tiles()), (257, 256, 2));
        let l = TileLayout::new(InputResize::Stretch, 1280, 720, 256).unwrap();
        assert_eq!((l.width, l.height, l.tiles()), (256, 256, 1));
        // 16:9 video at 256: 455 x 256 in two tiles
        let l = TileLayout::new(InputResize::Tile, 1280, 720, 256).unwrap();
        assert_eq!((l.width, l.height), (455, 256));
        assert_eq!(l.origins, vec![(0, 0), (199, 0)]);
        assert!(TileLayout::new(InputResize::Tile, 0, 10, 256).is_err());
    }

    #[test]
    fn stitching_cut_tiles_gives_back_the_image() {
        let layout = TileLayout::of_resized(10, 4, 4);
        assert_eq!(layout.origins, vec![(0, 0), (3, 0), (6, 0)]);
        let img = Tensor::rand([2, 3, 4, 10], (Kind::Float, Device::Cpu));
        let tiles = cut(&img, &layout).unwrap();
        assert_eq!(tiles.size(), vec![6, 3, 4, 4]);
        // the second image's first tile is its own left edge
        let d = (tiles.get(3) - img.get(1).narrow(2, 0, 4)).abs().max();
        assert!(d.double_value(&[]) == 0.0);
        let back = stitch(&tiles, &layout).unwrap();
        let d = (back - &img).abs().max().double_value(&[]);
        assert!(d < 1e-6, "{d}");
        assert!(cut(&img, &TileLayout::of_resized(9, 4, 4)).is_err());
    }

    #[test]
    fn overlaps_are_averaged() {
        // two 1 x 2 tiles of a 1 x 3 map, overlapping in the middle column
        let layout = TileLayout::of_resized(3, 2, 2);
        assert_eq!(layout.origins, vec![(0, 0), (1, 0)]);
        let tiles = Tensor::cat(
            &[
                Tensor::ones([1, 1, 2, 2], (Kind::Float, Device::Cpu)),
                Tensor::full([1, 1, 2, 2], 3.0, (Kind::Float, Device::Cpu)),
            ],
            0,
        );
        let m = stitch(&tiles, &layout).unwrap();
        let row = Vec::<f32>::try_from(m.get(0).get(0).get(0)).unwrap();
        assert_eq!(row, vec![1.0, 2.0, 3.0]);
    }
}
