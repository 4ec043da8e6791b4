#!/usr/bin/env bash
# Part of `make bench`: several camera streams in one process (one shared model, batched or
# not, against a model per stream), a memory soak of 4 streams, and two processes sharing the
# cores with and without `threads`. Release build; each row is its own process.
#   BENCH_STREAM_FRAMES (default 240) frames per row, split over its streams
#   BENCH_SOAK_FRAMES   (default 10000) frames of the 4-stream soak (0 skips it)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p gst-plugin-clsflow --example bench_streams
bin=./target/release/examples/bench_streams
total=${BENCH_STREAM_FRAMES:-240}
echo "Streams of 1280x720 RGBx (videotestsrc) through anomalydetect, the default model's architecture"
echo "with random weights; $total frames per row; latency through the element, after 3 warm-up frames per stream."
echo
echo "| streams | models | frames/s (all streams) | latency p50 ms | latency p99 ms | peak RSS MiB |"
echo "|---|---|---|---|---|---|"
for n in 1 2 4 8; do
  f=$(( total / n ))
  $bin --streams "$n" --mode separate --batch 1 --frames "$f"
  $bin --streams "$n" --mode shared --batch 1 --frames "$f"
  [ "$n" -gt 1 ] && $bin --streams "$n" --mode shared --batch "$n" --timeout-ms 20 --frames "$f"
done
soak=${BENCH_SOAK_FRAMES:-10000}
if [ "$soak" -gt 0 ]; then
  echo
  echo "Soak: 4 streams of 320x240 on one shared model (batch-size 4), $soak frames in all, resident memory:"
  echo
  $bin --streams 4 --mode shared --batch 4 --frames $(( soak / 4 )) --size 320x240 --soak
fi
echo
echo "Two processes at once, one 720p stream each ($(( total / 2 )) frames), libtorch threads per process:"
echo
echo "| threads per process | process | frames/s | latency p50 ms | latency p99 ms | peak RSS MiB |"
echo "|---|---|---|---|---|---|"
for t in 0 1; do
  label=$([ "$t" = 0 ] && echo "default ($(nproc))" || echo "$t")
  a=$(mktemp) b=$(mktemp)
  $bin --streams 1 --frames $(( total / 2 )) --threads "$t" > "$a" &
  $bin --streams 1 --frames $(( total / 2 )) --threads "$t" > "$b"
  wait
  for f in "$a" "$b"; do
    sed "s/^| 1 | shared model, batch-size 1 |/| $label | $([ "$f" = "$a" ] && echo A || echo B) |/" "$f"
  done
  rm -f "$a" "$b"
done
