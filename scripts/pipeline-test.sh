#!/usr/bin/env bash
# A real gst-launch pipeline over files: PNG images in, annotated PNGs out, with a tiny model
# trained here on the generated demo category. Part of `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
export GST_PLUGIN_PATH="$PWD/target/debug${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build -q -p clsflow-train -p gst-plugin-clsflow
for e in anomalydetect anomalyoverlay; do
  gst-inspect-1.0 "$e" > "$work/inspect-$e.txt" || { echo "pipeline-test: gst-inspect-1.0 cannot find $e (GST_PLUGIN_PATH=$GST_PLUGIN_PATH)" >&2; exit 1; }
done
grep -q "model" "$work/inspect-anomalydetect.txt"

./target/debug/clsflow-train demo-data --out "$work/demo" --train 16 --test-good 2 --per-defect 2 > /dev/null
./target/debug/clsflow-train train --config configs/test-tiny.toml --data "$work/demo" --out "$work/run" > "$work/train.log" 2>&1 \
  || { cat "$work/train.log"; exit 1; }

# training from a 60-second recording of the demo parts (each part in view for a second, 10
# frames/s, H.264 in MP4, as a camera's recording): the frames are sampled, the repeats of a part
# dropped as near-duplicates, and the rest trains
gst-launch-1.0 -q multifilesrc location="$work/demo/train/good/%03d.png" index=0 stop-index=15 loop=true num-buffers=60 \
  caps=image/png,framerate=1/1 ! pngdec ! videoconvert ! videorate ! video/x-raw,format=I420,framerate=10/1 \
  ! x264enc speed-preset=ultrafast ! mp4mux ! filesink location="$work/parts.mp4"
./target/debug/clsflow-train train --config configs/test-tiny.toml --data "$work/parts.mp4" --out "$work/recorded" --frames 100 \
  > "$work/recorded.log" 2>&1 || { cat "$work/recorded.log"; exit 1; }
counts=$(grep -m1 -o "good images from the recording: .*" "$work/recorded.log" || true)
read -r read_ sampled kept dropped < <(sed -E 's/.*: ([0-9]+) frames read, ([0-9]+) sampled, ([0-9]+) kept, ([0-9]+) dropped.*/\1 \2 \3 \4/' <<< "$counts")
{ [ "${read_:-0}" -ge 580 ] && [ "${kept:-0}" -ge 40 ] && [ "${kept:-0}" -le 70 ] && [ "${dropped:-0}" -gt 0 ] && [ -s "$work/recorded/model.clsflow" ]; } \
  || { echo "pipeline-test: training from a recording: unexpected result ($counts):" >&2; cat "$work/recorded.log" >&2; exit 1; }

mkdir -p "$work/out"
# the two crack images of the demo category, decoded to raw video; one pipeline description for
# gst-launch (split into its arguments: the temporary path has no spaces) and the C reader alike
src="multifilesrc location=$work/demo/test/crack/%03d.png index=0 stop-index=1 caps=image/png,framerate=1/1 ! pngdec ! videoconvert"
case "$work" in *[[:space:]]*) echo "pipeline-test: temporary path $work has spaces" >&2; exit 1 ;; esac
# shellcheck disable=SC2086
gst-launch-1.0 -q $src ! anomalydetect model="$work/run/model.clsflow" threshold=0 \
  ! anomalyoverlay ! videoconvert ! pngenc ! multifilesink location="$work/out/frame-%03d.png"

n=$(ls "$work/out" | wc -l)
[ "$n" -eq 2 ] || { echo "pipeline-test: expected 2 annotated frames, got $n" >&2; exit 1; }
for f in "$work"/out/*.png; do
  python3 -c 'import struct,sys; b=open(sys.argv[1],"rb").read(24); sys.exit(not (b[:8]==b"\x89PNG\r\n\x1a\n" and struct.unpack(">II",b[16:24])==(256,256)))' "$f" \
    || { echo "pipeline-test: $f is not a 256x256 PNG" >&2; exit 1; }
  cmp -s "$f" "$work/demo/test/crack/$(basename "$f" | sed 's/frame-//')" && { echo "pipeline-test: $f was not annotated" >&2; exit 1; }
done

# the metadata is readable from C (examples/read_meta.c)
gcc examples/read_meta.c -o "$work/read_meta" $(pkg-config --cflags --libs gstreamer-1.0 gstreamer-video-1.0)
"$work/read_meta" "$src ! anomalydetect name=detect model=$work/run/model.clsflow threshold=0 region-threshold=0 ! fakesink" > "$work/c.txt"
[ "$(grep -c 'ANOMALOUS map 128x128.*region 0,0 256x256' "$work/c.txt")" -eq 2 ] \
  || { echo "pipeline-test: C reader output unexpected:" >&2; cat "$work/c.txt" >&2; exit 1; }
# and from Python (examples/read_meta.py, PyGObject): score, verdict, regions from the ROI metas
/usr/bin/python3 examples/read_meta.py "$src ! anomalydetect name=detect model=$work/run/model.clsflow threshold=0 region-threshold=0 ! fakesink" > "$work/py.txt"
[ "$(grep -c 'ANOMALOUS defect 0,0 256x256 (confidence' "$work/py.txt")" -eq 2 ] \
  || { echo "pipeline-test: Python reader output unexpected:" >&2; cat "$work/py.txt" >&2; exit 1; }
# half=true: bfloat16 flow matmuls on CPUs that have them, else a clear error naming what is missing
if grep -qw -e avx512_bf16 -e amx_bf16 /proc/cpuinfo; then
  "$work/read_meta" "$src ! anomalydetect name=detect model=$work/run/model.clsflow threshold=0 region-threshold=0 half=true ! fakesink" > "$work/half.txt"
  [ "$(grep -c 'ANOMALOUS map 128x128' "$work/half.txt")" -eq 2 ] \
    || { echo "pipeline-test: half=true output unexpected:" >&2; cat "$work/half.txt" >&2; exit 1; }
  half="half=true: 2 frames with bfloat16 flow matmuls"
else
  # shellcheck disable=SC2086
  if gst-launch-1.0 -q $src ! anomalydetect model="$work/run/model.clsflow" half=true ! fakesink > "$work/half.txt" 2>&1; then
    echo "pipeline-test: half=true ran on a CPU without bfloat16 matmuls" >&2; exit 1
  fi
  grep -q "AVX512-BF16" "$work/half.txt" || { echo "pipeline-test: half=true error unclear:" >&2; cat "$work/half.txt" >&2; exit 1; }
  half="half=true: refused with a clear error (no bfloat16 matmuls on this CPU)"
fi
# snapshots onto a full disk: a 64 KiB tmpfs (in a private mount namespace) fills after the first
# snapshot; the element warns on the bus and every frame still flows (one JSON record each)
mkdir -p "$work/full"
if [ "$(id -u)" -eq 0 ]; then ns=(unshare -m --propagation private); else ns=(unshare -r -m --propagation private); fi
"${ns[@]}" bash -c 'mount -t tmpfs -o size=64k tmpfs "$1" && shift && exec gst-launch-1.0 "$@"' _ "$work/full" \
  videotestsrc num-buffers=40 pattern=snow ! video/x-raw,width=256,height=256,framerate=25/1 ! videoconvert \
  ! anomalydetect model="$work/run/model.clsflow" threshold=-1000 snapshot-location="$work/full" snapshot-max-rate=0 \
    snapshot-format=png results-location="$work/full.jsonl" ! fakesink > "$work/full.log" 2>&1 \
  || { echo "pipeline-test: the pipeline failed on a full snapshot disk:" >&2; cat "$work/full.log" >&2; exit 1; }
grep -q "WARNING.*snapshot-location.*No space left" "$work/full.log" \
  || { echo "pipeline-test: no full-disk warning:" >&2; cat "$work/full.log" >&2; exit 1; }
[ "$(wc -l < "$work/full.jsonl")" -eq 40 ] || { echo "pipeline-test: $(wc -l < "$work/full.jsonl") of 40 frames went through with a full snapshot disk" >&2; exit 1; }

echo "pipeline-test: 6 passed, 0 failed (training from a 60-second MP4: $counts; gst-launch: 2 PNG frames in, 2 annotated PNG frames out; C and Python metadata readers; $half; a full snapshot disk warns and all 40 frames flow)"
