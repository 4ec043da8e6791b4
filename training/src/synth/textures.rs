//! Texture sources for synthetic defects: any folder of images (e.g. DTD) and GIMP `.pat`
//! pattern files (Debian's gimp-data and gimp-data-extras install 168 of them).

use crate::data::{IMAGE_EXTENSIONS, read_rgb, resize_rgb};
use anyhow::{Context, Result, bail};
use image::{Rgb, RgbImage};
use std::path::{Path, PathBuf};

/// Where setup puts GIMP's patterns.
pub const GIMP_PATTERNS: &str = "/usr/share/gimp/2.0/patterns";

/// Decodes a GIMP pattern: big-endian u32 header size, version, width, height, bytes per pixel,
/// magic "GPAT", name; raw pixels from byte `header size` (1: grey, 2: grey+alpha, 3: RGB, 4: RGBA).
pub fn decode_pat(bytes: &[u8]) -> Result<RgbImage> {
    let word = |i: usize| -> Result<u32> {
        bytes
            .get(i * 4..i * 4 + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .context("file shorter than a pattern header")
    };
    let (header, width, height, bpp) = (word(0)? as usize, word(2)?, word(3)?, word(4)? as usize);
    if bytes.get(20..24) != Some(b"GPAT".as_slice()) {
        bail!("no GPAT magic: not a GIMP pattern");
    }
    if !(1..=4).contains(&bpp) || width == 0 || height == 0 || width > 8192 || height > 8192 {
        bail!("unsupported pattern: {width}x{height}, {bpp} bytes per pixel");
    }
    let n = width as usize * height as usize * bpp;
    let data = bytes
        .get(header..header + n)
        .context("pattern pixel data truncated")?;
    Ok(RgbImage::from_fn(width, height, |x, y| {
        let i = (y as usize * width as usize + x as usize) * bpp;
        match bpp {
            1 | 2 => Rgb([data[i]; 3]),
            _ => Rgb([data[i], data[i + 1], data[i + 2]]),
        }
    }))
}

/// Repeats a (seamless) pattern to fill `size` x `size`, keeping its scale.
pub fn tile(pattern: &RgbImage, size: u32) -> RgbImage {
    let (w, h) = pattern.dimensions();
    RgbImage::from_fn(size, size, |x, y| *pattern.get_pixel(x % w, y % h))
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                collect(&p, out);
            } else {
                out.push(p);
            }
        }
    }
}

/// Loads every image and `.pat` file under the given folders (recursively), `size` x `size`:
/// images are resized, patterns tiled. Unreadable files are skipped with a warning.
pub fn load_textures(dirs: &[PathBuf], size: u32) -> Result<Vec<RgbImage>> {
    let mut files = Vec::new();
    for d in dirs {
        if !d.is_dir() {
            bail!("texture folder {} does not exist", d.display());
        }
        collect(d, &mut files);
    }
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let ext = f
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        let loaded = if ext == "pat" {
            std::fs::read(&f)
                .map_err(anyhow::Error::from)
                .and_then(|b| decode_pat(&b))
                .map(|p| tile(&p, size))
        } else if IMAGE_EXTENSIONS.contains(&ext.as_str()) {
            read_rgb(&f).map(|i| resize_rgb(&i, size))
        } else {
            continue;
        };
        match loaded {
            Ok(img) => out.push(img),
            Err(e) => eprintln!("warning: texture {} skipped: {e:#}", f.display()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(width: u32, height: u32, bpp: u32, pixels: &[u8]) -> Vec<u8> {
        let name = b"test\0";
        let header = 24 + name.len() as u32;
        let mut b = Vec::new();
        for v in [header, 1, width, height, bpp] {
            b.extend(v.to_be_bytes());
        }
        b.extend(b"GPAT");
        b.extend(name);
        b.extend(pixels);
        b
    }

    #[test]
    fn decodes_grey_and_rgb_patterns() {
        let g = decode_pat(&pat(2, 1, 1, &[10, 200])).unwrap();
        assert_eq!(g.get_pixel(1, 0).0, [200, 200, 200]);
        let c = decode_pat(&pat(1, 2, 3, &[1, 2, 3, 4, 5, 6])).unwrap();
        assert_eq!(c.get_pixel(0, 1).0, [4, 5, 6]);
        let t = tile(&c, 4);
        assert_eq!(t.get_pixel(3, 3).0, [4, 5, 6]);
    }

    #[test]
    fn rejects_bad_patterns() {
        assert!(decode_pat(b"short").is_err());
        let mut bad = pat(2, 2, 3, &[0; 12]);
        bad[20] = b'X';
        assert!(decode_pat(&bad).unwrap_err().to_string().contains("GPAT"));
        let truncated = pat(4, 4, 3, &[0; 10]);
        assert!(
            decode_pat(&truncated)
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
    }

    #[test]
    fn installed_gimp_patterns_load() {
        let dir = PathBuf::from(GIMP_PATTERNS);
        if !dir.is_dir() {
            eprintln!("skipping: {GIMP_PATTERNS} absent (scripts/setup.sh installs gimp-data)");
            return;
        }
        let t = load_textures(&[dir], 64).unwrap();
        assert!(
            t.len() >= 100,
            "expected the ~168 GIMP patterns, got {}",
            t.len()
        );
        assert!(t.iter().all(|i| i.dimensions() == (64, 64)));
    }
}
