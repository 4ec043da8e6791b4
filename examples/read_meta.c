/* Reads clsflow's metadata from C: score, verdict, map and defect regions of each frame.
 *
 *   gcc examples/read_meta.c -o read_meta $(pkg-config --cflags --libs gstreamer-1.0 gstreamer-video-1.0)
 *   GST_PLUGIN_PATH=target/release ./read_meta \
 *     'videotestsrc num-buffers=5 ! anomalydetect name=detect model=model.clsflow ! fakesink'
 *
 * The pipeline must name its anomalydetect element "detect". */
#include <gst/gst.h>
#include <gst/video/video.h>

static GstPadProbeReturn on_buffer(GstPad *pad, GstPadProbeInfo *info, gpointer user_data) {
  GstBuffer *buf = GST_PAD_PROBE_INFO_BUFFER(info);
  GstCustomMeta *meta = gst_buffer_get_custom_meta(buf, "ClsflowAnomalyMeta");
  if (!meta) return GST_PAD_PROBE_OK;
  GstStructure *s = gst_custom_meta_get_structure(meta);
  gdouble score = 0, threshold = 0;
  gboolean anomalous = FALSE;
  guint w = 0, h = 0;
  gst_structure_get_double(s, "score", &score);
  gst_structure_get_double(s, "threshold", &threshold);
  gst_structure_get_boolean(s, "anomalous", &anomalous);
  gst_structure_get_uint(s, "map-width", &w);
  gst_structure_get_uint(s, "map-height", &h);
  GBytes *bytes = g_value_get_boxed(gst_structure_get_value(s, "map"));
  gsize size = 0;
  const gfloat *map = g_bytes_get_data(bytes, &size); /* little-endian float32, row-major */
  gfloat max = map[0];
  for (gsize i = 1; i < size / sizeof(gfloat); i++) if (map[i] > max) max = map[i];
  g_print("score %.4f threshold %.4f %s map %ux%u (max %.4f)", score, threshold,
          anomalous ? "ANOMALOUS" : "normal", w, h, max);
  gpointer state = NULL;
  GstMeta *m;
  while ((m = gst_buffer_iterate_meta_filtered(buf, &state, GST_VIDEO_REGION_OF_INTEREST_META_API_TYPE))) {
    GstVideoRegionOfInterestMeta *roi = (GstVideoRegionOfInterestMeta *) m;
    GstStructure *p = gst_video_region_of_interest_meta_get_param(roi, "clsflow-region");
    gdouble rmax = 0;
    if (p) gst_structure_get_double(p, "max-score", &rmax);
    g_print(" region %u,%u %ux%u (max %.4f)", roi->x, roi->y, roi->w, roi->h, rmax);
  }
  g_print("\n");
  return GST_PAD_PROBE_OK;
}

int main(int argc, char **argv) {
  gst_init(&argc, &argv);
  if (argc < 2) { g_printerr("usage: read_meta 'PIPELINE with anomalydetect name=detect'\n"); return 2; }
  GError *err = NULL;
  GstElement *pipeline = gst_parse_launch(argv[1], &err);
  if (!pipeline) { g_printerr("invalid pipeline: %s\n", err->message); return 1; }
  GstElement *detect = gst_bin_get_by_name(GST_BIN(pipeline), "detect");
  if (!detect) { g_printerr("no element named 'detect'\n"); return 1; }
  GstPad *pad = gst_element_get_static_pad(detect, "src");
  gst_pad_add_probe(pad, GST_PAD_PROBE_TYPE_BUFFER, on_buffer, NULL, NULL);
  gst_element_set_state(pipeline, GST_STATE_PLAYING);
  GstBus *bus = gst_element_get_bus(pipeline);
  GstMessage *msg = gst_bus_timed_pop_filtered(bus, GST_CLOCK_TIME_NONE, GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
  int rc = 0;
  if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR) {
    GError *e = NULL;
    gst_message_parse_error(msg, &e, NULL);
    g_printerr("error: %s\n", e->message);
    g_error_free(e);
    rc = 1;
  }
  gst_message_unref(msg);
  gst_object_unref(bus);
  gst_object_unref(pad);
  gst_object_unref(detect);
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(pipeline);
  return rc;
}
