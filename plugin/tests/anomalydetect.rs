//! gst-check Harness tests of `anomalydetect` with a real (tiny) trained model.
mod common;

use gst::prelude::*;
use gst_video::VideoFormat;
use gstclsflow::frame::DETECT_FORMATS;
use gstclsflow::meta::{AnomalyInfo, RegionInfo};

fn harness(props: &str) -> gst_check::Harness {
    harness_with(&common::model(), props)
}

fn harness_with(model: &std::path::Path, props: &str) -> gst_check::Harness {
    common::init();
    gst_check::Harness::new_parse(&format!("anomalydetect model={} {props}", model.display()))
}

fn run(
    h: &mut gst_check::Harness,
    format: VideoFormat,
    w: u32,
    hgt: u32,
    rgb: &[u8],
) -> (AnomalyInfo, Vec<RegionInfo>) {
    h.set_src_caps(common::caps(format, w, hgt));
    let out = h
        .push_and_pull(common::pack(rgb, w, hgt, format))
        .expect("a buffer comes out");
    let info = AnomalyInfo::from_buffer(&out).expect("anomaly meta present");
    (info, RegionInfo::all_from_buffer(&out))
}

#[test]
fn metas_have_model_shapes_and_frame_coordinates() {
    // one weight for map and score, so that the score is the map's maximum
    let mut h = harness("threshold=0 region-threshold=0 fusion-weight=1 score-weight=1");
    let rgb = common::rgb_frame(320, 240);
    let (info, regions) = run(&mut h, VideoFormat::Rgb, 320, 240, &rgb);
    assert_eq!(
        (info.map_width, info.map_height),
        (128, 128),
        "model resolution"
    );
    assert_eq!(info.map.len(), 128 * 128);
    let max = info.map.iter().copied().fold(f32::MIN, f32::max) as f64;
    assert!(
        (info.score - max).abs() < 1e-4,
        "score is the max of the map"
    );
    assert!(info.anomalous && info.fresh && info.inference_ms > 0.0);
    assert_eq!(info.threshold, 0.0);
    let manifest = clsflow::checkpoint::read_manifest(&common::model()).unwrap();
    assert_eq!(info.model, manifest.name);
    // region threshold 0: the whole map is one region covering the frame
    assert_eq!(regions.len() as u32, info.regions);
    assert_eq!(regions.len(), 1);
    assert_eq!(regions[0].rect, (0, 0, 320, 240));
    assert_eq!(regions[0].area, 320 * 240);

    let mut h = harness("map-size=32");
    let (info, regions) = run(&mut h, VideoFormat::Rgb, 320, 240, &rgb);
    assert_eq!(
        (info.map_width, info.map_height, info.map.len()),
        (32, 32, 1024)
    );
    for r in regions {
        let (x, y, w, hh) = r.rect;
        assert!(
            x + w <= 320 && y + hh <= 240,
            "region inside the frame: {:?}",
            r.rect
        );
    }
}

fn score_of(h: &mut gst_check::Harness, path: &std::path::Path) -> f64 {
    let img = image::open(path).unwrap().to_rgb8();
    let (w, hh) = img.dimensions();
    run(h, VideoFormat::Rgb, w, hh, img.as_raw()).0.score
}

#[test]
fn defective_tiles_score_above_good_ones() {
    let Some((model, root)) = common::magnetic_tile_model() else {
        return;
    };
    let mut h = harness_with(&model, "");
    // the five defective test images with the largest defects, and five good ones
    let mut defective: Vec<(usize, std::path::PathBuf)> = Vec::new();
    for t in ["break", "fray", "blowhole", "crack", "uneven"] {
        for e in std::fs::read_dir(root.join("ground_truth").join(t)).unwrap() {
            let mask = e.unwrap().path();
            let area = image::open(&mask)
                .unwrap()
                .to_luma8()
                .pixels()
                .filter(|p| p[0] > 127)
                .count();
            let name = mask
                .file_name()
                .unwrap()
                .to_string_lossy()
                .replace("_mask.png", ".jpg");
            defective.push((area, root.join("test").join(t).join(name)));
        }
    }
    defective.sort_by_key(|d| std::cmp::Reverse(d.0));
    let bad: f64 = defective[..5]
        .iter()
        .map(|(_, p)| score_of(&mut h, p))
        .sum::<f64>()
        / 5.0;
    let mut goods: Vec<_> = std::fs::read_dir(root.join("test/good"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    goods.sort();
    let good: f64 = goods[..5].iter().map(|p| score_of(&mut h, p)).sum::<f64>() / 5.0;
    assert!(
        bad > good,
        "defective mean score {bad:.4} should exceed good mean {good:.4}"
    );
}

/// A grey picture in 2x2 blocks of the levels 0, 85, 170 and 255, which 8-bit YUV holds
/// exactly in either range (limited: Y = 16, 89, 162, 235; chroma 128) and 4:2:0 keeps whole:
/// every format carries the same picture, so every format must give the same result.
fn exact_grey_frame(w: usize, h: usize) -> Vec<u8> {
    (0..w * h)
        .flat_map(|i| {
            let (x, y) = (i % w / 2, i / w / 2);
            let level = ((x / 3 + y / 2 + x * y / 7) % 4 * 85) as u8;
            [level; 3]
        })
        .collect()
}

#[test]
fn every_listed_format_gives_the_same_result() {
    let rgb = exact_grey_frame(64, 48);
    let (reference, _) = run(&mut harness(""), VideoFormat::Rgb, 64, 48, &rgb);
    for &f in DETECT_FORMATS.iter() {
        let (info, _) = run(&mut harness(""), f, 64, 48, &rgb);
        let rel = (info.score - reference.score).abs() / reference.score.abs().max(1e-3);
        assert!(
            rel < 1e-4,
            "{f:?}: {} vs {} (relative {rel:.2e})",
            info.score,
            reference.score
        );
    }
    // odd width: RGB rows are padded to 4 bytes
    let rgb = common::rgb_frame(50, 30);
    let (a, _) = run(&mut harness(""), VideoFormat::Rgb, 50, 30, &rgb);
    let (b, _) = run(&mut harness(""), VideoFormat::Bgrx, 50, 30, &rgb);
    assert!((a.score - b.score).abs() < 1e-5);
}

/// Colour in NV12 and I420 frames (planes, strides, the order of U and V, the caps' matrix) reaches
/// the network as the same RGB input as a packed frame, up to 8-bit YUV's rounding: checked on
/// the input itself, so that no model's sensitivity to that rounding enters.
#[test]
fn yuv_frames_give_the_rgb_input() {
    common::init();
    let (w, h) = (64usize, 48usize);
    // one colour per 2x2 block, so that 4:2:0 subsampling loses nothing but rounding
    let blocks = common::rgb_frame(w / 2, h / 2);
    let rgb: Vec<u8> = (0..w * h)
        .flat_map(|i| {
            let (x, y) = (i % w / 2, i / w / 2);
            blocks[(y * (w / 2) + x) * 3..][..3].to_vec()
        })
        .collect();
    let raw = clsflow::Normalization {
        mean: [0.0; 3],
        std: [1.0; 3],
    };
    let input = |format: VideoFormat| {
        let info = gst_video::VideoInfo::builder(format, w as u32, h as u32)
            .build()
            .unwrap();
        let buffer = common::pack(&rgb, w as u32, h as u32, format);
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(&buffer, &info).unwrap();
        gstclsflow::frame::frame_input(&frame, (w, h), &raw).unwrap()
    };
    let want = input(VideoFormat::Rgb);
    for f in [VideoFormat::Nv12, VideoFormat::I420] {
        let got = input(f);
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // rounding Y, U and V to 8 bits moves a channel by at most about 1.7 levels
        assert!(
            worst < 2.5 / 255.0,
            "{f:?}: worst {:.2} levels",
            worst * 255.0
        );
    }
}

#[test]
fn caps_change_mid_stream() {
    // every pixel above the region threshold: one region, the whole frame, whatever the model
    let mut h = harness("threshold=0 region-threshold=-1e9");
    let (_, r1) = run(
        &mut h,
        VideoFormat::Rgb,
        320,
        240,
        &common::rgb_frame(320, 240),
    );
    assert_eq!(r1[0].rect, (0, 0, 320, 240));
    let (info, r2) = run(
        &mut h,
        VideoFormat::Bgra,
        100,
        60,
        &common::rgb_frame(100, 60),
    );
    assert_eq!(
        r2[0].rect,
        (0, 0, 100, 60),
        "regions follow the new frame size"
    );
    assert!(info.fresh, "no result repeated across a caps change");
}

#[test]
fn interval_repeats_results_and_messages_are_posted() {
    let mut h = harness("interval=3 threshold=0 post-messages=true");
    h.set_src_caps(common::caps(VideoFormat::Rgb, 64, 48));
    let rgb = common::rgb_frame(64, 48);
    let fresh: Vec<bool> = (0..6)
        .map(|_| {
            AnomalyInfo::from_buffer(
                &h.push_and_pull(common::pack(&rgb, 64, 48, VideoFormat::Rgb))
                    .unwrap(),
            )
            .unwrap()
            .fresh
        })
        .collect();
    assert_eq!(fresh, vec![true, false, false, true, false, false]);
    let bus = gst::Bus::new();
    h.element().unwrap().set_bus(Some(&bus));
    h.push_and_pull(common::pack(&rgb, 64, 48, VideoFormat::Rgb))
        .unwrap(); // frame 7: fresh
    h.push_and_pull(common::pack(&rgb, 64, 48, VideoFormat::Rgb))
        .unwrap();
    let msgs: Vec<_> =
        std::iter::from_fn(|| bus.pop_filtered(&[gst::MessageType::Element])).collect();
    assert_eq!(msgs.len(), 1, "one message per fresh anomalous frame");
    let s = msgs[0].structure().unwrap();
    assert_eq!(s.name(), "clsflow-anomaly");
    assert!(s.get::<f64>("score").unwrap() > 0.0);
}

#[test]
fn clearing_overrides_restores_the_calibrated_scoring() {
    let mut h =
        harness("name=detect threshold=0 score-weight=0 fusion-weight=5 region-threshold=1e30");
    let rgb = common::rgb_frame(64, 48);
    let (info, regions) = run(&mut h, VideoFormat::Rgb, 64, 48, &rgb);
    assert_eq!(
        (info.threshold, info.score_weight, info.fusion_weight),
        (0.0, 0.0, 5.0)
    );
    assert!(regions.is_empty(), "no map value is above 1e30");
    assert!(info.anomalous, "the verdict has its own threshold");
    // the map adds 5 x classifier, the score none of it
    let max = info.map.iter().copied().fold(f32::MIN, f32::max) as f64;
    assert!(info.score < max, "score {} vs map max {max}", info.score);
    // new_parse wraps the element in a bin
    let bin = h.element().unwrap().downcast::<gst::Bin>().unwrap();
    let detect = bin.by_name("detect").unwrap();
    for p in [
        "threshold",
        "score-weight",
        "fusion-weight",
        "region-threshold",
    ] {
        detect.set_property(p, -1.0f64);
    }
    let (info, _) = run(&mut h, VideoFormat::Rgb, 64, 48, &rgb);
    let calibrated = clsflow::checkpoint::read_manifest(&common::model())
        .unwrap()
        .scoring;
    assert_eq!(info.threshold, calibrated.threshold);
    assert_eq!(info.score_weight, calibrated.score_weight);
    assert_eq!(info.fusion_weight, calibrated.fusion_weight);
    assert_eq!(info.region_threshold, calibrated.region_threshold);
}

/// Only exactly -1 means "calibrated" for the thresholds: other negative values are raw
/// thresholds like any other (maps and scores can be negative); for the weights, any negative
/// value means the checkpoint's.
#[test]
fn negative_thresholds_other_than_minus_one_are_used_as_given() {
    let mut h = harness("threshold=-0.5 region-threshold=-2.5 score-weight=-3");
    let rgb = common::rgb_frame(64, 48);
    let (info, _) = run(&mut h, VideoFormat::Rgb, 64, 48, &rgb);
    let calibrated = clsflow::checkpoint::read_manifest(&common::model())
        .unwrap()
        .scoring;
    assert_eq!(info.threshold, -0.5);
    assert_eq!(info.region_threshold, -2.5);
    assert_eq!(info.score_weight, calibrated.score_weight);
}

/// The normalised score is 0.5 at the threshold in use and rises with the raw score; each
/// region carries DL Streamer's detection structure with its confidence.
#[test]
fn normalised_scores_and_detection_structures() {
    common::init();
    let rgb = common::rgb_frame(64, 48);
    let mut h = harness("");
    let (info, _) = run(&mut h, VideoFormat::Rgb, 64, 48, &rgb);
    let mut at = harness(&format!("threshold={}", info.score));
    let (same, _) = run(&mut at, VideoFormat::Rgb, 64, 48, &rgb);
    assert!(
        (same.normalized_score - 0.5).abs() < 1e-9,
        "{}",
        same.normalized_score
    );
    assert!(!same.anomalous, "a score at the threshold is not above it");
    let mut below = harness(&format!("threshold={}", info.score - 1.0));
    let (higher, _) = run(&mut below, VideoFormat::Rgb, 64, 48, &rgb);
    assert!(higher.normalized_score > 0.5 && higher.anomalous);
    let mut above = harness(&format!("threshold={}", info.score + 1.0));
    let (lower, _) = run(&mut above, VideoFormat::Rgb, 64, 48, &rgb);
    assert!(lower.normalized_score < 0.5 && !lower.anomalous);

    // every region: a detection structure with label, confidence and the box as fractions
    let mut h = harness("region-threshold=-1e30");
    h.set_src_caps(common::caps(VideoFormat::Rgb, 64, 48));
    let out = h
        .push_and_pull(common::pack(&rgb, 64, 48, VideoFormat::Rgb))
        .unwrap();
    let rois: Vec<_> = out
        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .collect();
    assert_eq!(rois.len(), 1, "the whole map is one region");
    assert_eq!(rois[0].id(), 0);
    let d = rois[0].param("detection").expect("detection structure");
    assert_eq!(d.get::<&str>("label").unwrap(), "defect");
    let c = d.get::<f64>("confidence").unwrap();
    assert!((0.5..=1.0).contains(&c), "{c}");
    assert_eq!(d.get::<f64>("x_min").unwrap(), 0.0);
    assert_eq!(d.get::<f64>("x_max").unwrap(), 1.0);
    assert_eq!(d.get::<f64>("y_max").unwrap(), 1.0);
}

/// The `drifting` field of each drift message the element posted since the last call.
fn drift_messages(bus: &gst::Bus) -> Vec<bool> {
    std::iter::from_fn(|| bus.pop_filtered(&[gst::MessageType::Element]))
        .filter_map(|m| {
            let s = m.structure()?;
            (s.name() == gstclsflow::meta::DRIFT_MESSAGE)
                .then(|| s.get::<bool>("drifting").unwrap())
        })
        .collect()
}

/// Frames of good parts whose light dims half-way and comes back: the element says so within
/// the window's length after each change, once each, and not before the change.
#[test]
fn drift_is_posted_when_the_light_changes_and_cleared_when_it_returns() {
    let window = 16usize;
    let mut h = harness(&format!("drift-window={window} drift-tolerance=0.5"));
    let bus = gst::Bus::new();
    h.element().unwrap().set_bus(Some(&bus));
    let data = common::demo_data();
    let mut goods: Vec<_> = ["test/good", "train/good"]
        .iter()
        .flat_map(|d| std::fs::read_dir(data.join(d)).unwrap())
        .map(|e| e.unwrap().path())
        .collect();
    goods.sort();
    let frames: Vec<image::RgbImage> = goods[..24]
        .iter()
        .map(|p| image::open(p).unwrap().to_rgb8())
        .collect();
    let (w, hh) = frames[0].dimensions();
    h.set_src_caps(common::caps(VideoFormat::Rgb, w, hh));
    let mut i = 0usize;
    // pushes `n` frames, dimmed by `light`; the frame offsets (from the first) of the messages
    let mut push = |h: &mut gst_check::Harness, n: usize, light: f32| {
        let mut got = Vec::new();
        for k in 0..n {
            let mut img = frames[i % frames.len()].clone();
            i += 1;
            img.pixels_mut()
                .for_each(|p| p.0 = p.0.map(|v| (v as f32 * light).round() as u8));
            let out = h
                .push_and_pull(common::pack(img.as_raw(), w, hh, VideoFormat::Rgb))
                .unwrap();
            let info = AnomalyInfo::from_buffer(&out).unwrap();
            for drifting in drift_messages(&bus) {
                assert_eq!(info.drift, drifting, "the meta agrees with the message");
                got.push((k, drifting));
            }
        }
        got
    };
    assert_eq!(
        push(&mut h, 3 * window, 1.0),
        vec![],
        "no drift under normal light"
    );
    let dimmed = push(&mut h, 2 * window, 0.25);
    assert_eq!(dimmed.len(), 1, "{dimmed:?}");
    assert!(dimmed[0].1 && dimmed[0].0 < window, "{dimmed:?}");
    let back = push(&mut h, 2 * window, 1.0);
    assert_eq!(back.len(), 1, "{back:?}");
    assert!(!back[0].1 && back[0].0 < window, "{back:?}");
}

/// Pushes `n` frames at 25 frames/s through `h`; the number that came out.
fn push_timed(h: &mut gst_check::Harness, n: u64) -> u64 {
    let rgb = common::rgb_frame(64, 48);
    h.set_src_caps(common::caps(VideoFormat::Rgb, 64, 48));
    (0..n)
        .filter(|i| {
            let mut b = common::pack(&rgb, 64, 48, VideoFormat::Rgb);
            b.get_mut()
                .unwrap()
                .set_pts(gst::ClockTime::from_mseconds(40 * i));
            h.push_and_pull(b).is_ok()
        })
        .count() as u64
}

/// The folder's file names, sorted.
fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Flagged frames are kept as image, overlay and JSON record, whole, in a folder held to its
/// bound; `snapshot-max-rate` spaces them in stream time.
#[test]
fn flagged_frames_are_kept_within_the_folder_bound_and_rate() {
    let dir = tempfile::tempdir().unwrap();
    let bounded = dir.path().join("bounded");
    let mut h = harness(&format!(
        "threshold=-1000 snapshot-location={} snapshot-max-rate=0 snapshot-max-files=7 snapshot-format=png",
        bounded.display()
    ));
    assert_eq!(push_timed(&mut h, 10), 10);
    drop(h); // to NULL: the writer finishes what is queued
    let names = listing(&bounded);
    // seven files allowed: two whole snapshots of three files, the last two frames
    assert_eq!(names.len(), 6, "{names:?}");
    assert!(names[0].ends_with("-00000008.json"), "{names:?}");
    assert!(names[1].ends_with("-00000008.overlay.png"), "{names:?}");
    assert!(names[2].ends_with("-00000008.png"), "{names:?}");
    let stem = names[2].trim_end_matches(".png");
    let image = image::open(bounded.join(&names[2])).unwrap().to_rgb8();
    let overlay = image::open(bounded.join(format!("{stem}.overlay.png")))
        .unwrap()
        .to_rgb8();
    assert_eq!(image.dimensions(), (64, 48));
    assert_eq!(
        image.as_raw(),
        &common::rgb_frame(64, 48),
        "the frame as it came"
    );
    assert_ne!(image, overlay, "the overlay is drawn");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bounded.join(&names[0])).unwrap()).unwrap();
    assert_eq!(record["frame"], 8);
    assert_eq!(record["anomalous"], true);

    // at most two per second of stream time: 0.5 s (13 frames at 25 frames/s) apart at least
    let spaced = dir.path().join("spaced");
    let mut h = harness(&format!(
        "threshold=-1000 snapshot-location={} snapshot-max-rate=2 snapshot-max-files=0",
        spaced.display()
    ));
    assert_eq!(push_timed(&mut h, 50), 50);
    drop(h);
    let names = listing(&spaced);
    let frames: Vec<&str> = names
        .iter()
        .filter(|n| n.ends_with(".json"))
        .map(|n| &n[n.len() - 13..n.len() - 5])
        .collect();
    assert_eq!(frames, ["00000000", "00000013", "00000026", "00000039"]);
    assert_eq!(names.len(), 12, "{names:?}");

    // not flagged: nothing kept
    let quiet = dir.path().join("quiet");
    let mut h = harness(&format!(
        "threshold=1e30 snapshot-location={}",
        quiet.display()
    ));
    assert_eq!(push_timed(&mut h, 5), 5);
    drop(h);
    assert!(listing(&quiet).is_empty());
}

/// A folder that cannot be made gives one warning on the bus, and every frame still flows.
#[test]
fn an_unwritable_snapshot_folder_warns_and_the_stream_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a folder").unwrap();
    let mut h = harness(&format!(
        "name=detect threshold=-1000 snapshot-max-rate=0 snapshot-location={}",
        file.join("snapshots").display()
    ));
    let bus = gst::Bus::new();
    h.element().unwrap().set_bus(Some(&bus));
    assert_eq!(push_timed(&mut h, 20), 20);
    drop(h);
    let warnings: Vec<String> =
        std::iter::from_fn(|| bus.pop_filtered(&[gst::MessageType::Warning]))
            .map(|m| match m.view() {
                gst::MessageView::Warning(w) => w.error().to_string(),
                _ => unreachable!(),
            })
            .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one warning until a write succeeds: {warnings:?}"
    );
    assert!(
        warnings[0].contains("snapshot-location") && warnings[0].contains("a-file"),
        "{warnings:?}"
    );
}
