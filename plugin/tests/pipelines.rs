//! Whole pipelines: error reporting on the bus, state cycling, EOS, overlay drawing.
mod common;

use gst::prelude::*;
use gst_video::VideoFormat;

/// Runs a pipeline to EOS or error; returns the error text if any.
fn run(desc: &str) -> Result<(), String> {
    common::init();
    let pipeline = gst::parse::launch(desc).map_err(|e| e.to_string())?;
    let bus = pipeline.bus().unwrap();
    let started = pipeline.set_state(gst::State::Playing);
    let result = loop {
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_seconds(60)) else {
            break Err("timeout".to_string());
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break Ok(()),
            gst::MessageView::Error(e) => break Err(format!("{} ({:?})", e.error(), e.debug())),
            _ => {}
        }
    };
    pipeline.set_state(gst::State::Null).unwrap();
    if result.is_ok() && started.is_err() {
        return Err("state change failed without an error message".into());
    }
    result
}

#[test]
fn missing_or_invalid_model_is_an_element_error() {
    let e = run("videotestsrc num-buffers=1 ! anomalydetect ! fakesink").unwrap_err();
    assert!(e.contains("No model set"), "{e}");
    let e =
        run("videotestsrc num-buffers=1 ! anomalydetect model=/nonexistent/m.clsflow ! fakesink")
            .unwrap_err();
    assert!(e.contains("/nonexistent/m.clsflow"), "{e}");
    let junk = std::env::temp_dir().join(format!("junk-{}.clsflow", std::process::id()));
    std::fs::write(&junk, b"garbage").unwrap();
    let e = run(&format!(
        "videotestsrc num-buffers=1 ! anomalydetect model={} ! fakesink",
        junk.display()
    ))
    .unwrap_err();
    assert!(
        e.contains("Invalid model") && e.contains("truncated or corrupted"),
        "{e}"
    );
}

#[test]
fn cuda_requested_without_cuda_is_an_element_error() {
    if tch::Cuda::is_available() {
        eprintln!("skipping: CUDA is available here");
        return;
    }
    let m = common::model();
    let e = run(&format!(
        "videotestsrc num-buffers=1 ! anomalydetect model={} device=cuda:0 ! fakesink",
        m.display()
    ))
    .unwrap_err();
    assert!(e.contains("CUDA is not available"), "{e}");
}

#[test]
fn unsupported_caps_fail_negotiation() {
    let m = common::model();
    // static caps: refused when linking, naming the caps
    let e = run(&format!(
        "videotestsrc num-buffers=1 ! video/x-raw,format=YUY2 ! anomalydetect model={} ! fakesink",
        m.display()
    ))
    .unwrap_err();
    assert!(e.contains("can't handle caps") && e.contains("YUY2"), "{e}");
    // caps that arrive at run time: the push fails with not-negotiated, nothing crashes
    let mut h = gst_check::Harness::new_parse(&format!("anomalydetect model={}", m.display()));
    h.set_src_caps_str("video/x-raw,format=YUY2,width=64,height=48,framerate=25/1");
    let r = h.push(gst::Buffer::with_size(64 * 48 * 2).unwrap());
    assert_eq!(r, Err(gst::FlowError::NotNegotiated));
}

#[test]
fn repeated_state_cycling_reaches_eos_every_time() {
    common::init();
    let m = common::model();
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc num-buffers=3 ! video/x-raw,width=96,height=64 ! anomalydetect model={} ! anomalyoverlay ! fakesink",
        m.display()
    ))
    .unwrap();
    let bus = pipeline.bus().unwrap();
    for cycle in 0..6 {
        pipeline.set_state(gst::State::Playing).unwrap();
        let msg = bus
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(60),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            )
            .expect("EOS or error");
        assert!(
            matches!(msg.view(), gst::MessageView::Eos(_)),
            "cycle {cycle}: {msg:?}"
        );
        // alternate between a full stop and a pause to exercise both paths
        let target = if cycle % 2 == 0 {
            gst::State::Null
        } else {
            gst::State::Ready
        };
        pipeline.set_state(target).unwrap();
    }
    pipeline.set_state(gst::State::Null).unwrap();
}

#[test]
fn overlay_draws_and_respects_only_anomalous() {
    common::init();
    let m = common::model();
    let rgb = common::rgb_frame(96, 64);
    let mut drawn = gst_check::Harness::new_parse(&format!(
        "anomalydetect model={} threshold=0 ! anomalyoverlay",
        m.display()
    ));
    drawn.set_src_caps(common::caps(VideoFormat::Rgbx, 96, 64));
    let input = common::pack(&rgb, 96, 64, VideoFormat::Rgbx);
    let before = input.map_readable().unwrap().to_vec();
    let out = drawn.push_and_pull(input).unwrap();
    let after = out.map_readable().unwrap().to_vec();
    let changed = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    assert!(
        changed > before.len() / 2,
        "heatmap covers the frame: {changed} bytes changed"
    );

    let mut quiet = gst_check::Harness::new_parse(&format!(
        "anomalydetect model={} threshold=1000 ! anomalyoverlay only-anomalous=true",
        m.display()
    ));
    quiet.set_src_caps(common::caps(VideoFormat::Rgbx, 96, 64));
    let out = quiet
        .push_and_pull(common::pack(&rgb, 96, 64, VideoFormat::Rgbx))
        .unwrap();
    assert_eq!(
        out.map_readable().unwrap().to_vec(),
        before,
        "normal frame left untouched"
    );

    let mut boxes = gst_check::Harness::new_parse(&format!(
        "anomalydetect model={} threshold=0 region-threshold=0 ! anomalyoverlay mode=boxes text=false box-color=0xff00ff00",
        m.display()
    ));
    boxes.set_src_caps(common::caps(VideoFormat::Rgbx, 96, 64));
    let out = boxes
        .push_and_pull(common::pack(&rgb, 96, 64, VideoFormat::Rgbx))
        .unwrap();
    let px = out.map_readable().unwrap().to_vec();
    assert_eq!(&px[0..3], &[0, 255, 0], "box corner drawn in green");
    let centre = (32 * 96 + 48) * 4;
    assert_eq!(
        &px[centre..centre + 3],
        &before[centre..centre + 3],
        "inside of the box untouched"
    );
}

/// `anomalyoverlay` on NV12 and I420 draws what it draws on RGBx: the same detection drawn on
/// the frame converted to the YUV format, against the RGBx drawing converted to it, plane by
/// plane (compared in YUV, since converting 4:2:0 back to RGB spreads colour across edges).
#[test]
fn overlay_draws_yuv_frames_as_it_draws_rgb() {
    common::init();
    let m = common::model();
    let (w, h) = (96usize, 64usize);
    let rgb = common::rgb_frame(w, h);
    let run = |pipeline: &str| {
        let mut hn = gst_check::Harness::new_parse(&format!(
            "anomalydetect model={} threshold=0 region-threshold=0 ! {pipeline}",
            m.display()
        ));
        hn.set_src_caps(common::caps(VideoFormat::Rgbx, w as u32, h as u32));
        let out = hn
            .push_and_pull(common::pack(&rgb, w as u32, h as u32, VideoFormat::Rgbx))
            .unwrap();
        out.map_readable().unwrap().to_vec()
    };
    // mean absolute difference of luma (the first w x h bytes: these widths need no padding)
    // and of chroma (the rest; a converter's chroma filter is not a plain 2x2 mean, hence the
    // wider tolerance)
    let diff = |a: &[u8], b: &[u8]| {
        let mean = |r: std::ops::Range<usize>| {
            let n = r.len() as f64;
            r.map(|i| a[i].abs_diff(b[i]) as f64).sum::<f64>() / n
        };
        (mean(0..w * h), mean(w * h..a.len()))
    };
    for overlay in [
        "anomalyoverlay mode=heatmap-boxes",
        "anomalyoverlay mode=boxes text=false box-color=0xff00ff00",
    ] {
        for format in ["NV12", "I420"] {
            let to_yuv = format!("videoconvert ! capsfilter caps=video/x-raw,format={format}");
            let want = run(&format!("{overlay} ! {to_yuv}"));
            let got = run(&format!("{to_yuv} ! {overlay}"));
            let untouched = run(&to_yuv);
            let ((luma, chroma), (drew, _)) = (diff(&got, &want), diff(&got, &untouched));
            assert!(
                luma < 1.0 && chroma < 3.0 && drew > 10.0 * luma,
                "{overlay} on {format}: luma {luma:.2} and chroma {chroma:.2} levels from the RGBx drawing, luma {drew:.2} from the frame undrawn"
            );
            if overlay.contains("0xff00ff00") {
                // BT.601 (GStreamer's default for this size) green in video range
                assert_eq!(&got[0..2], &[145, 145], "{format}: box luma");
            }
        }
    }
}
