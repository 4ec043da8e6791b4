#!/usr/bin/env bash
# `make bench`: speed and memory, side by side in one run (release build).
#   BENCH_ITERS (default 10)          timed iterations per detector row
#   BENCH_FRAMES (default 60)         frames per GStreamer row at 1280x720 (in 5 rounds taken in turn)
#   BENCH_SOAK_FRAMES (default 10000) frames of the memory soak run (0 skips it)
#   BENCH_SNAPSHOT_FRAMES (default 10000) frames per snapshot row (in 5 rounds taken in turn)
#   BENCH_TRAIN_RUN (default runs/magnetic_tile) training run whose stage times are reported
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p clsflow-train --bin clsflow-bench -p gst-plugin-clsflow --example bench_pipeline --example bench_snapshots -p clsflow-tools --bin openmp_threads --bin stage2_threads
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB"
echo
echo "## Detector (256x256 input)"
./target/release/clsflow-bench --iters "${BENCH_ITERS:-10}"
echo
echo "## libtorch threads (why the element runs inference on one clsflow-torch thread)"
./target/release/openmp_threads
echo
echo "## GStreamer path"
./target/release/examples/bench_pipeline --frames "${BENCH_FRAMES:-60}" --soak-frames "${BENCH_SOAK_FRAMES:-10000}"
echo
echo "## Snapshots of flagged frames"
./target/release/examples/bench_snapshots --frames "${BENCH_SNAPSHOT_FRAMES:-10000}"
echo
echo "## Many streams"
scripts/bench-streams.sh
echo
echo "## Stage 2: the flows one after the other vs side by side (configs/cpu-fast.toml, random rows)"
./target/release/stage2_threads 3 0.05
echo
echo "## Training (configs/cpu-fast.toml)"
run=${BENCH_TRAIN_RUN:-runs/magnetic_tile}
if [ -f "$run/training.json" ]; then
  python3 - "$run/training.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
s = d["seconds"]
print(f"run {sys.argv[1]} ({d['dataset']}, {d['train_images']} training images):")
print(f"| stage | seconds |\n|---|---|\n| stage 1 | {s['stage1']:.0f} |\n| stage 2 | {s['stage2']:.0f} |\n| calibration | {s['calibration']:.0f} |")
print(f"peak resident memory of training: {d.get('peak_rss_mib') or float('nan'):.0f} MiB")
PY
else
  echo "no $run/training.json: run 'make eval' first (trains configs/cpu-fast.toml on magnetic_tile, ~20 min)"
fi
