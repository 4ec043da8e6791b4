//! Training images as the networks see them with `resize = "tile"` ([`clsflow::tiling`]): each
//! image, resized to a short side of the input size, becomes one or more input-sized tiles.
//!
//! The stages keep their cost per epoch whatever the images' shapes: stage 1 trains on one tile
//! of every image per epoch, drawn anew each epoch ([`TiledImages::draw`]), and stage 2 draws as
//! many feature vectors per epoch as one tile per image holds ([`TiledImages::image_share`]).
//! With square images, or `stretch`, every image is one tile and nothing changes.

use crate::data::cut_tiles;
use clsflow::TileLayout;
use image::RgbImage;
use rand::Rng;
use std::ops::Range;

/// Tiles of a set of images, with which image each came from.
#[derive(Debug, Clone)]
pub struct TiledImages {
    /// Every tile, the tiles of each image together.
    pub tiles: Vec<RgbImage>,
    /// Per image, the range of its tiles.
    pub groups: Vec<Range<usize>>,
    /// Per image, where its tiles lie in it.
    pub layouts: Vec<TileLayout>,
}

impl TiledImages {
    /// Cuts images (from [`crate::data::resize_for`]) into `size` x `size` tiles.
    pub fn new(images: Vec<RgbImage>, size: u32) -> Self {
        let mut tiles = Vec::new();
        let mut groups = Vec::new();
        let mut layouts = Vec::new();
        for img in images {
            let (w, h) = img.dimensions();
            layouts.push(TileLayout::of_resized(w as i64, h as i64, size as i64));
            let start = tiles.len();
            if (w, h) == (size, size) {
                tiles.push(img);
            } else {
                tiles.extend(cut_tiles(&img, size));
            }
            groups.push(start..tiles.len());
        }
        TiledImages {
            tiles,
            groups,
            layouts,
        }
    }

    /// Whether some image has more than one tile.
    pub fn is_tiled(&self) -> bool {
        self.tiles.len() > self.groups.len()
    }

    /// The fraction of all tiles that one tile per image makes (1 without tiling).
    pub fn image_share(&self) -> f64 {
        self.groups.len() as f64 / self.tiles.len().max(1) as f64
    }

    /// One tile index per image, uniformly among its tiles.
    pub fn draw(&self, rng: &mut impl Rng) -> Vec<usize> {
        self.groups
            .iter()
            .map(|g| rng.gen_range(g.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn images_become_tiles_drawn_one_per_image() {
        let img = |w, h, v| RgbImage::from_pixel(w, h, image::Rgb([v, v, v]));
        // a square image, one 3 tiles long (160 x 64 at 64: origins 0, 48, 96) and one portrait
        let t = TiledImages::new(vec![img(64, 64, 1), img(160, 64, 2), img(64, 96, 3)], 64);
        assert_eq!(t.tiles.len(), 6);
        assert_eq!(t.groups, vec![0..1, 1..4, 4..6]);
        assert!(t.tiles.iter().all(|i| i.dimensions() == (64, 64)));
        assert_eq!(t.tiles[3].get_pixel(0, 0)[0], 2);
        assert!(t.is_tiled() && (t.image_share() - 0.5).abs() < 1e-12);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        for _ in 0..20 {
            let d = t.draw(&mut rng);
            assert_eq!(d[0], 0);
            assert!((1..4).contains(&d[1]) && (4..6).contains(&d[2]));
        }
        let square = TiledImages::new(vec![img(64, 64, 1)], 64);
        assert!(!square.is_tiled() && square.image_share() == 1.0);
    }
}
