//! Perlin noise masks for synthetic defects (docs/method.md section 3): noise at scale 2^a x 2^b
//! (a, b uniform in 0..=5), rotated uniformly in [-90, 90] degrees, thresholded at 0.5.

use image::GrayImage;
use rand::Rng;

/// 2-D Perlin noise of `size` x `size` with `res_x` x `res_y` lattice cells (each must divide `size`).
pub fn perlin(size: usize, res_x: usize, res_y: usize, rng: &mut impl Rng) -> Vec<f32> {
    let grads: Vec<(f32, f32)> = (0..(res_x + 1) * (res_y + 1))
        .map(|_| {
            let a = rng.gen_range(0.0..std::f32::consts::TAU);
            (a.cos(), a.sin())
        })
        .collect();
    let g = |ix: usize, iy: usize| grads[iy * (res_x + 1) + ix];
    let fade = |t: f32| t * t * t * (t * (t * 6.0 - 15.0) + 10.0);
    let (cell_x, cell_y) = (size as f32 / res_x as f32, size as f32 / res_y as f32);
    let mut out = vec![0.0; size * size];
    for y in 0..size {
        let fy = y as f32 / cell_y;
        let (iy, ty) = (fy.floor() as usize, fy.fract());
        for x in 0..size {
            let fx = x as f32 / cell_x;
            let (ix, tx) = (fx.floor() as usize, fx.fract());
            let dot = |cx: usize, cy: usize| {
                let (gx, gy) = g(ix + cx, iy + cy);
                gx * (tx - cx as f32) + gy * (ty - cy as f32)
            };
            let (u, v) = (fade(tx), fade(ty));
            let n0 = dot(0, 0) + u * (dot(1, 0) - dot(0, 0));
            let n1 = dot(0, 1) + u * (dot(1, 1) - dot(0, 1));
            // sqrt(2) scales the range to about [-1, 1], as the reference implementation does
            out[y * size + x] = std::f32::consts::SQRT_2 * (n0 + v * (n1 - n0));
        }
    }
    out
}

/// Rotates a square field about its centre by `degrees` (bilinear, zero outside).
pub fn rotate(field: &[f32], size: usize, degrees: f32) -> Vec<f32> {
    let (s, c) = degrees.to_radians().sin_cos();
    let mid = (size as f32 - 1.0) / 2.0;
    let at = |x: isize, y: isize| {
        if x < 0 || y < 0 || x >= size as isize || y >= size as isize {
            0.0
        } else {
            field[y as usize * size + x as usize]
        }
    };
    let mut out = vec![0.0; size * size];
    for y in 0..size {
        for x in 0..size {
            let (dx, dy) = (x as f32 - mid, y as f32 - mid);
            let sx = c * dx + s * dy + mid;
            let sy = -s * dx + c * dy + mid;
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as isize, y0 as isize);
            let top = at(x0, y0) * (1.0 - fx) + at(x0 + 1, y0) * fx;
            let bottom = at(x0, y0 + 1) * (1.0 - fx) + at(x0 + 1, y0 + 1) * fx;
            out[y * size + x] = top * (1.0 - fy) + bottom * fy;
        }
    }
    out
}

/// A random defect mask (255 = defect) of `size` x `size` (a power of two >= 32).
pub fn perlin_mask(
    size: usize,
    max_scale_exp: u32,
    threshold: f32,
    rng: &mut impl Rng,
) -> GrayImage {
    let a = rng.gen_range(0..=max_scale_exp);
    let b = rng.gen_range(0..=max_scale_exp);
    let noise = perlin(size, 1 << a, 1 << b, rng);
    let rotated = rotate(&noise, size, rng.gen_range(-90.0..=90.0));
    GrayImage::from_fn(size as u32, size as u32, |x, y| {
        image::Luma([if rotated[y as usize * size + x as usize] > threshold {
            255
        } else {
            0
        }])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn noise_is_zero_on_the_lattice_and_bounded() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let n = perlin(64, 4, 2, &mut rng);
        // lattice points: offsets are zero, so every dot product is zero
        assert_eq!(n[0], 0.0);
        assert_eq!(n[16], 0.0);
        assert_eq!(n[32 * 64 + 48], 0.0);
        assert!(n.iter().all(|v| v.abs() <= 1.5));
        assert!(n.iter().any(|v| v.abs() > 0.2), "not flat");
    }

    #[test]
    fn rotation_by_zero_is_identity_and_masks_are_binary() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let n = perlin(32, 2, 2, &mut rng);
        let r = rotate(&n, 32, 0.0);
        assert!(n.iter().zip(&r).all(|(a, b)| (a - b).abs() < 1e-6));
        let mut covered = 0usize;
        for _ in 0..20 {
            let m = perlin_mask(64, 5, 0.5, &mut rng);
            assert!(m.pixels().all(|p| p[0] == 0 || p[0] == 255));
            covered += m.pixels().filter(|p| p[0] == 255).count();
        }
        assert!(covered > 0, "some masks cover pixels");
        assert!(covered < 20 * 64 * 64 / 2, "masks are sparse");
    }
}
