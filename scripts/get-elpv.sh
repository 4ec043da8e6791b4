#!/usr/bin/env bash
# Lays out the ELPV solar-cell electroluminescence images (PyPI `elpv-dataset`, 2,624 images of
# 300x300, CC BY-NC-SA 4.0: not redistributed here, downloaded by this script) as two categories
# in MVTec layout, one per cell type, since monocrystalline and polycrystalline cells look nothing
# alike and a line trains one model per product:
#
#   data/elpv_mono, data/elpv_poly
#     train/good          a seeded 70 % of the cells with defect probability 0
#     test/good           the other 30 %
#     test/defective      the cells with defect probability 1
#
# The cells rated 1/3 or 2/3 (uncertain) are left out and counted in each category's SOURCE.md.
# There are no pixel masks: `clsflow-train eval` reports image-level metrics. Not part of
# `make test`; `make eval-all` uses these categories when present.
#
#   scripts/get-elpv.sh [OUT_DIR]     (default: data)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-data}
WHEEL_SHA=85e31c1126ee9b48e62d3a0232c58f58b2d189b0814a45c13642fa0415af4a4c
dl=.deps/downloads
wheel="$dl/elpv_dataset-1.0.0.post1-py3-none-any.whl"
mkdir -p "$dl"
if [ ! -f "$wheel" ]; then
  echo "==> downloading elpv-dataset==1.0.0.post1 from PyPI (~90 MB)"
  python3 -m pip download -q --disable-pip-version-check --no-deps -d "$dl" "elpv-dataset==1.0.0.post1"
fi
echo "$WHEEL_SHA  $wheel" | sha256sum -c --quiet - || { rm -f "$wheel"; echo "get-elpv.sh: checksum mismatch (deleted; re-run)" >&2; exit 1; }
python3 - "$wheel" "$OUT" <<'PY'
import random, sys, zipfile
from pathlib import Path

wheel, out = sys.argv[1], Path(sys.argv[2])
z = zipfile.ZipFile(wheel)
rows = [l.split() for l in z.read("elpv_dataset/data/labels.csv").decode().splitlines() if l.strip()]
for kind in ("mono", "poly"):
    cells = [(path, float(p)) for path, p, t in rows if t == kind]
    good = sorted(path for path, p in cells if p == 0.0)
    bad = sorted(path for path, p in cells if p == 1.0)
    unsure = len(cells) - len(good) - len(bad)
    random.Random(0).shuffle(good)
    n_train = round(0.7 * len(good))
    split = {"train/good": good[:n_train], "test/good": good[n_train:], "test/defective": bad}
    root = out / f"elpv_{kind}"
    for folder, paths in split.items():
        d = root / folder
        d.mkdir(parents=True, exist_ok=True)
        for p in paths:
            (d / Path(p).name).write_bytes(z.read(f"elpv_dataset/data/{p}"))
    (root / "SOURCE.md").write_text(
        f"# ELPV {kind}crystalline cells\n\n"
        "From PyPI `elpv-dataset==1.0.0.post1` (Buerhop-Lutz et al., Deitsch et al.; CC BY-NC-SA 4.0), "
        "laid out by scripts/get-elpv.sh.\n\n"
        f"- {len(cells)} {kind} cells: {len(good)} with defect probability 0 "
        f"({n_train} train/good, {len(good) - n_train} test/good, seeded split), "
        f"{len(bad)} with probability 1 (test/defective)\n"
        f"- {unsure} cells rated 1/3 or 2/3 left out (uncertain labels)\n"
        "- no pixel masks: image-level metrics only\n"
    )
    print(f"{root}: {n_train} train/good, {len(good) - n_train} test/good, {len(bad)} test/defective, {unsure} uncertain left out")
PY
