#!/usr/bin/env bash
# `make demo`: the main job end to end on the embedded demo category.
#   1. build release binaries   2. generate the demo category (procedural plates with defects)
#   3. train with configs/demo.toml   4. evaluate and write the report   5. predict on a folder
#   6. run a real GStreamer pipeline over the test images as a video: annotated MP4 + JSON per frame
# Every step uses only what this script builds (a fresh clone works); the outputs are checked.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_OUT:-runs/demo}
CONFIG=${DEMO_CONFIG:-configs/demo.toml}
t0=$(date +%s)
step() { printf '\n==> [%4ss] %s\n' "$(( $(date +%s) - t0 ))" "$*"; }

step "building release binaries (clsflow-train, the GStreamer plugin, the JSON example)"
# --bins and --lib name the targets: with only --example, cargo builds neither the trainer nor
# the plugin's target/release/libgstclsflow.so
cargo build --release -p clsflow-train -p gst-plugin-clsflow --bins --lib --example anomaly_json
t_built=$(date +%s)

step "generating the demo category in $OUT/plates"
rm -rf "$OUT"
./target/release/clsflow-train demo-data --out "$OUT/plates" --train 60 --test-good 16 --per-defect 10

step "training with $CONFIG"
./target/release/clsflow-train train --config "$CONFIG" --data "$OUT/plates" --out "$OUT/model"

step "evaluating on the test split"
./target/release/clsflow-train eval --model "$OUT/model/model.clsflow" --data "$OUT/plates" --out "$OUT/report"

step "predicting on the test folder (heatmap, mask and overlay per image)"
./target/release/clsflow-train predict --model "$OUT/model/model.clsflow" --input "$OUT/plates/test" --out "$OUT/predict"

step "running the GStreamer pipeline over the test images as a 4 fps video"
frames="$OUT/frames"
mkdir -p "$frames"
i=0
while IFS= read -r f; do
  cp "$f" "$frames/$(printf %04d "$i").png"
  i=$((i + 1))
done < <(find "$OUT/plates/test" -name '*.png' | sort)
# anomaly_json registers the plugin itself and prints one JSON line per frame from the metadata
./target/release/examples/anomaly_json \
  "multifilesrc location=$frames/%04d.png caps=image/png,framerate=4/1 ! pngdec ! videoconvert \
   ! anomalydetect model=$OUT/model/model.clsflow ! anomalyoverlay ! videoconvert \
   ! x264enc speed-preset=veryfast ! mp4mux ! filesink location=$OUT/annotated.mp4" > "$OUT/frames.jsonl"

flagged=$(grep -c '"anomalous":true' "$OUT/frames.jsonl" || true)
for f in "$OUT/model/model.clsflow" "$OUT/report/report.md" "$OUT/annotated.mp4" "$OUT/frames.jsonl" "$OUT/predict/predictions.jsonl"; do
  [ -s "$f" ] || { echo "demo: expected output $f is missing or empty" >&2; exit 1; }
done
[ "$(wc -l < "$OUT/frames.jsonl")" -eq "$i" ] || { echo "demo: $OUT/frames.jsonl has $(wc -l < "$OUT/frames.jsonl") lines for $i frames" >&2; exit 1; }
step "done in $(( $(date +%s) - t0 )) s ($(( $(date +%s) - t_built )) s after the build)"
cat <<MSG
  what it did: trained a detector on $(ls "$OUT/plates/train/good" | wc -l) good demo images, evaluated it on
  $(find "$OUT/plates/test" -name '*.png' | wc -l) test images, then ran anomalydetect + anomalyoverlay over them as a video
  ($flagged of $i frames flagged anomalous at the calibrated threshold).
  outputs:
    model:           $OUT/model/model.clsflow   (training summary: $OUT/model/training.json)
    report:          $OUT/report/report.md      (+ report.json, roc.png, pro.png, samples.png)
    predictions:     $OUT/predict/predictions.jsonl (+ heatmap, mask and overlay PNGs per image)
    annotated video: $OUT/annotated.mp4
    per-frame JSON:  $OUT/frames.jsonl
MSG
