#!/usr/bin/env bash
# `make install PREFIX=...`: installs clsflow so that it runs from any folder and from no checkout.
#
#   scripts/install.sh [--profile release|debug] PREFIX
#
#   PREFIX/bin/clsflow-train, clsflow-bench        the programs
#   PREFIX/lib/gstreamer-1.0/libgstclsflow.so      the GStreamer plugin
#   PREFIX/lib/clsflow/                            the libtorch libraries both need
#   PREFIX/share/clsflow/                          ImageNet weights and the configs
#
# The libtorch libraries live in lib/clsflow rather than beside the plugin because GStreamer
# tries to load every library in a plugin folder as a plugin. Every installed program and the
# plugin find them through an rpath relative to their own location ($ORIGIN), so the install can
# be moved; nothing refers to the build tree. Needs patchelf (scripts/setup.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PROFILE=release
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) PROFILE=${2:?--profile needs release or debug}; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    -*) echo "install.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -eq 1 ] || { echo "usage: scripts/install.sh [--profile release|debug] PREFIX" >&2; exit 2; }
PREFIX=$1
case "$PROFILE" in
  release) cargo_profile=(--release) ;;
  debug) cargo_profile=() ;;
  *) echo "install.sh: --profile must be release or debug, got $PROFILE" >&2; exit 2 ;;
esac
command -v patchelf >/dev/null || { echo "install.sh: patchelf is missing: run scripts/setup.sh (or apt-get install patchelf)" >&2; exit 1; }
LIBTORCH=${LIBTORCH:-$ROOT/.deps/torch-2.11.0/torch}
[ -f "$LIBTORCH/lib/libtorch_cpu.so" ] || { echo "install.sh: no libtorch at $LIBTORCH: run scripts/setup.sh" >&2; exit 1; }

echo "==> building ($PROFILE)"
cargo build "${cargo_profile[@]}" -p clsflow-train -p gst-plugin-clsflow --bins --lib
target="$ROOT/target/$PROFILE"

mkdir -p "$PREFIX"
PREFIX=$(cd "$PREFIX" && pwd)
bin="$PREFIX/bin" plugins="$PREFIX/lib/gstreamer-1.0" libs="$PREFIX/lib/clsflow" share="$PREFIX/share/clsflow"
mkdir -p "$bin" "$plugins" "$libs" "$share/configs"
echo "==> installing into $PREFIX"

# the libtorch libraries (and the CUDA runtime libraries libtorch_cpu names) that the built files
# load, as the dynamic loader resolves them from the build tree
deps=$( { ldd "$target/libgstclsflow.so"; ldd "$target/clsflow-train"; } \
  | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u | grep -F "$(dirname "$LIBTORCH")/" || true)
[ -n "$deps" ] || { echo "install.sh: found no libtorch library among the dependencies of $target/libgstclsflow.so" >&2; exit 1; }
for lib in $deps; do
  install -m 0644 "$lib" "$libs/"
done

install -m 0755 "$target/clsflow-train" "$target/clsflow-bench" "$bin/"
install -m 0644 "$target/libgstclsflow.so" "$plugins/"
patchelf --set-rpath '$ORIGIN/../lib/clsflow' "$bin/clsflow-train" "$bin/clsflow-bench"
patchelf --set-rpath '$ORIGIN/../clsflow' "$plugins/libgstclsflow.so"

n=0
for w in "$ROOT"/models/*.safetensors; do
  [ -f "$w" ] || continue
  install -m 0644 "$w" "$share/"
  n=$((n + 1))
done
[ "$n" -gt 0 ] || echo "install.sh: warning: no ImageNet weights in $ROOT/models (run scripts/setup.sh); training will need --weights" >&2
install -m 0644 configs/*.toml "$share/configs/"
mkdir -p "$share/configs/paper"
install -m 0644 configs/paper/*.toml "$share/configs/paper/"

cat <<MSG
installed:
  $bin/clsflow-train
  $plugins/libgstclsflow.so
  $libs/ ($(echo "$deps" | wc -l) libtorch libraries)
  $share/ ($n ImageNet weight files, configs/)
use it with:
  export PATH=$bin:\$PATH GST_PLUGIN_PATH=$plugins
  gst-inspect-1.0 anomalydetect
MSG
