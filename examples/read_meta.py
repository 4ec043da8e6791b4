#!/usr/bin/python3
"""Reads clsflow's metadata from Python (PyGObject): score, verdict and defect regions per frame.

    apt-get install python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0
    GST_PLUGIN_PATH=target/release /usr/bin/python3 examples/read_meta.py \
        'videotestsrc num-buffers=5 ! anomalydetect name=detect model=model.clsflow ! fakesink'

The pipeline must name its anomalydetect element "detect". Scores come from the custom meta
"ClsflowAnomalyMeta"; regions from the standard GstVideoRegionOfInterestMeta (type
"clsflow-defect"), which other GStreamer tools read as well.
"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstVideo", "1.0")
from gi.repository import Gst, GstVideo  # noqa: E402


def regions(buf, count):
    """The defect regions of a buffer: (x, y, w, h, label, confidence) from the standard ROI
    metas, which anomalydetect numbers 0, 1, ... (largest score first)."""
    found = []
    for i in range(count):
        roi = GstVideo.buffer_get_video_region_of_interest_meta_id(buf, i)
        if roi is None:
            break
        det = roi.get_param("detection")
        found.append((roi.x, roi.y, roi.w, roi.h, det.get_value("label"), det.get_value("confidence")))
    return found


def on_buffer(_pad, info):
    buf = info.get_buffer()
    meta = buf.get_custom_meta("ClsflowAnomalyMeta")
    if meta is None:
        return Gst.PadProbeReturn.OK
    s = meta.get_structure()
    line = "score %.4f (normalised %.3f) threshold %.4f %s" % (
        s.get_value("score"),
        s.get_value("normalized-score"),
        s.get_value("threshold"),
        "ANOMALOUS" if s.get_value("anomalous") else "normal",
    )
    for x, y, w, h, label, confidence in regions(buf, s.get_value("regions")):
        line += " %s %d,%d %dx%d (confidence %.3f)" % (label, x, y, w, h, confidence)
    print(line, flush=True)
    return Gst.PadProbeReturn.OK


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: read_meta.py 'PIPELINE with anomalydetect name=detect'")
    Gst.init(None)
    pipeline = Gst.parse_launch(sys.argv[1])
    detect = pipeline.get_by_name("detect")
    if detect is None:
        sys.exit("no element named 'detect'")
    detect.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, on_buffer)
    pipeline.set_state(Gst.State.PLAYING)
    msg = pipeline.get_bus().timed_pop_filtered(
        Gst.CLOCK_TIME_NONE, Gst.MessageType.EOS | Gst.MessageType.ERROR
    )
    pipeline.set_state(Gst.State.NULL)
    if msg.type == Gst.MessageType.ERROR:
        err, _debug = msg.parse_error()
        sys.exit("error: %s" % err.message)


if __name__ == "__main__":
    main()
