#!/usr/bin/env bash
# Part of `make test`: `scripts/install.sh` into a temporary prefix, then, with the checkout's
# .deps/ (libtorch) and models/ (weights) hidden and GST_PLUGIN_PATH set to the prefix only:
# gst-inspect-1.0, training from another folder, predict, and a real gst-launch-1.0 pipeline.
# Installs the debug build that `make test` has already made (the layout and rpaths are the
# same as a release install's).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"

scripts/install.sh --profile debug "$prefix" > "$work/install.log" 2>&1 || { cat "$work/install.log"; exit 1; }

# 1. no installed file refers to the build tree
for f in "$prefix"/bin/* "$prefix"/lib/gstreamer-1.0/* "$prefix"/lib/clsflow/*; do
  if readelf -d "$f" | grep -E 'RPATH|RUNPATH' | grep -qF "$ROOT"; then
    echo "install-test: $f has a build-tree rpath:" >&2; readelf -d "$f" | grep -E 'RPATH|RUNPATH' >&2; exit 1
  fi
done
readelf -d "$prefix/lib/gstreamer-1.0/libgstclsflow.so" | grep -q 'ORIGIN/../clsflow' \
  || { echo "install-test: the plugin's rpath is not relative to it" >&2; exit 1; }

# 2. everything else runs in a private mount namespace where the checkout's libtorch and
# weights are empty folders, from a folder outside the checkout
mkdir -p "$work/empty" "$work/elsewhere"
cat > "$work/inside.sh" <<'EOF'
set -euo pipefail
root=$1 prefix=$2 work=$3
mount --bind "$work/empty" "$root/.deps"
mount --bind "$work/empty" "$root/models"
unset LD_LIBRARY_PATH CLSFLOW_MODELS_DIR LIBTORCH
export GST_PLUGIN_PATH="$prefix/lib/gstreamer-1.0" GST_REGISTRY="$work/registry.bin"
export PATH="$prefix/bin:$PATH"
cd "$work/elsewhere"
[ -z "$(ls "$root/.deps")" ] && [ -z "$(ls "$root/models")" ] || { echo "install-test: the checkout is not hidden" >&2; exit 1; }
gst-inspect-1.0 anomalydetect > inspect.txt || { echo "install-test: gst-inspect-1.0 cannot load the installed plugin" >&2; exit 1; }
grep -q "$prefix/lib/gstreamer-1.0/libgstclsflow.so" inspect.txt || { echo "install-test: anomalydetect not loaded from the prefix:" >&2; cat inspect.txt >&2; exit 1; }
if grep -q "example.invalid" inspect.txt; then echo "install-test: placeholder origin in the plugin" >&2; exit 1; fi
command -v clsflow-train | grep -qF "$prefix/bin/" || { echo "install-test: clsflow-train not from the prefix" >&2; exit 1; }
clsflow-train config --print | grep -q 'backbone = "efficientnet_lite2"'
clsflow-train demo-data --out plates --train 16 --test-good 2 --per-defect 2 > /dev/null
# the installed test config; the weights must come from the prefix's share folder
clsflow-train train --config "$prefix/share/clsflow/configs/test-tiny.toml" --data plates --out run > train.log 2>&1 \
  || { cat train.log >&2; exit 1; }
clsflow-train predict --model run/model.clsflow --input plates/test --out predicted --save mask > predict.log
[ "$(wc -l < predicted/predictions.jsonl)" -eq 8 ] || { echo "install-test: predict wrote $(wc -l < predicted/predictions.jsonl) lines for 8 images" >&2; exit 1; }
mkdir out
gst-launch-1.0 -q multifilesrc location=plates/test/crack/%03d.png index=0 stop-index=1 caps=image/png,framerate=1/1 \
  ! pngdec ! videoconvert ! anomalydetect model=run/model.clsflow ! anomalyoverlay ! videoconvert \
  ! pngenc ! multifilesink location=out/frame-%03d.png
[ "$(ls out | wc -l)" -eq 2 ] || { echo "install-test: expected 2 annotated frames" >&2; exit 1; }
EOF
if [ "$(id -u)" -eq 0 ]; then ns=(unshare -m --propagation private); else ns=(unshare -r -m --propagation private); fi
"${ns[@]}" bash "$work/inside.sh" "$ROOT" "$prefix" "$work" \
  || { echo "install-test: FAILED (install log: $(tail -3 "$work/install.log"))" >&2; exit 1; }
echo "install-test: passed (installed into a temporary prefix; rpaths relative; gst-inspect, train, predict and gst-launch ran with the checkout's libtorch and weights hidden)"
