#!/usr/bin/env bash
# The CUDA path, checked and measured on a GPU machine. Two halves:
#
#   scripts/gpu-check.sh build     here (any machine with the checkout set up): release binaries
#                                  with --features cuda into target/gpu-check/ (needs no GPU)
#   scripts/gpu-check.sh run       on the GPU machine, from the checkout with target/gpu-check/:
#                                  1. CPU and cuda:0 maps and scores agree to 1e-3 of the range
#                                  2. the detector's time at batch 1, 8 and 32 on cuda:0
#                                  3. with GStreamer there: a real pipeline on cuda:0, and 8
#                                     streams of 256x256 sharing one batched model
#
# On the GPU machine libtorch comes from its PyTorch 2.11 install: `run` sets LD_LIBRARY_PATH to
# that torch's lib/ (TORCH_LIB overrides). Figures go to target/gpu-check/report.md.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/gpu-check
case "${1:-}" in
  build)
    cargo build --release --features cuda -p clsflow-train --bin clsflow-bench --bin clsflow-train
    cargo build --release --features cuda -p gst-plugin-clsflow --lib --example bench_streams
    mkdir -p "$out"
    cp target/release/clsflow-bench target/release/clsflow-train target/release/libgstclsflow.so \
      target/release/examples/bench_streams "$out/"
    echo "gpu-check: binaries in $out; run 'scripts/gpu-check.sh run' on the GPU machine"
    ;;
  run)
    [ -x "$out/clsflow-bench" ] || { echo "gpu-check: no $out/clsflow-bench: run 'scripts/gpu-check.sh build' first" >&2; exit 1; }
    lib=${TORCH_LIB:-$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')}
    export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    report="$out/report.md"
    {
      echo "# GPU check ($(date -u +%F), $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1))"
      echo
      echo "## CPU against cuda:0 (the default architecture, random weights)"
      "$out/clsflow-bench" --check-devices
      echo
      echo "## Detector on cuda:0, 256x256"
      "$out/clsflow-bench" --device cuda --batches 1,8,32 --iters 20
    } | tee "$report"
    if command -v gst-launch-1.0 >/dev/null; then
      export GST_PLUGIN_PATH="$PWD/$out" GST_REGISTRY="$out/registry.bin"
      {
        echo
        echo "## A real pipeline on cuda:0"
        "$out/clsflow-train" demo-data --out "$out/plates" --train 8 --test-good 1 --per-defect 1 > /dev/null
        "$out/clsflow-train" train --data "$out/plates" --out "$out/model" --overwrite \
          --backbone efficientnet_lite0 --frozen-epochs 1 --joint-epochs 0 --flow-epochs 1 > "$out/train.log" 2>&1
        gst-launch-1.0 -q videotestsrc num-buffers=30 ! video/x-raw,width=1280,height=720 \
          ! anomalydetect model="$out/model/model.clsflow" device=cuda:0 ! fakesink \
          && echo "gst-launch: 30 frames of 720p through anomalydetect device=cuda:0"
        echo
        echo "## 8 streams of 256x256 on cuda:0, one shared model"
        echo
        echo "| streams | models | frames/s (all streams) | latency p50 ms | latency p99 ms | peak RSS MiB |"
        echo "|---|---|---|---|---|---|"
        for b in 1 8; do
          "$out/bench_streams" --streams 8 --mode shared --batch "$b" --frames 100 --size 256x256 --device cuda:0
        done
      } | tee -a "$report"
    else
      echo "gpu-check: no GStreamer on this machine: pipeline and streams skipped" | tee -a "$report"
    fi
    echo "gpu-check: report in $report"
    ;;
  *)
    sed -n '2,14p' "$0"
    exit 2
    ;;
esac
