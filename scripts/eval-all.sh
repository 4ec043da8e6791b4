#!/usr/bin/env bash
# `make eval-all`: trains and evaluates one config on every category at hand, under two seeds,
# and writes one summary table (per category and the mean, with the spread between seeds) into
# docs/experiments.md between its eval-all markers (and runs/eval-all/summary.md).
# EVAL_SUMMARY_ONLY=1 writes the table from the runs finished so far, training nothing.
#
# Categories: ../shared/data/magnetic_tile, data/elpv_mono and data/elpv_poly (scripts/get-elpv.sh)
# when present, and the demo category (generated). A finished run is reused, so an interrupted
# eval-all continues where it stopped.
#
#   EVAL_SEEDS   seeds (default "0 1")
#   CONFIG       config file (default: the built-in one)
#   TRAIN_ARGS   extra training options, e.g. "--backbone efficientnet_lite0"
#   EVAL_OUT     output folder (default runs/eval-all)
#   EVAL_LABEL   the summary's title (default: the config and options)
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${EVAL_SEEDS:-0 1}
OUT=${EVAL_OUT:-runs/eval-all}
CONFIG_ARGS=()
[ -n "${CONFIG:-}" ] && CONFIG_ARGS=(--config "$CONFIG")
read -r -a EXTRA <<< "${TRAIN_ARGS:-}"
LABEL=${EVAL_LABEL:-"${CONFIG:-built-in config}${TRAIN_ARGS:+ $TRAIN_ARGS}"}
cargo build --release -p clsflow-train --bin clsflow-train
bin=./target/release/clsflow-train

categories=()
[ -d ../shared/data/magnetic_tile ] && categories+=(../shared/data/magnetic_tile)
for c in data/elpv_mono data/elpv_poly; do [ -d "$c" ] && categories+=("$c"); done
if [ ! -d "$OUT/demo/plates" ]; then
  $bin demo-data --out "$OUT/demo/plates" > /dev/null
fi
categories+=("$OUT/demo/plates")
echo "eval-all: ${#categories[@]} categories x seeds $SEEDS ($LABEL)"

# Seed-major, so that an interrupted eval-all has every category under the first seed.
[ -n "${EVAL_SUMMARY_ONLY:-}" ] && SEEDS_TO_RUN="" || SEEDS_TO_RUN=$SEEDS
for seed in $SEEDS_TO_RUN; do
  for data in "${categories[@]}"; do
    name=$(basename "$data"); [ "$name" = plates ] && name=demo
    run="$OUT/$name/seed$seed"
    mkdir -p "$OUT/$name"
    if [ ! -f "$run/model.clsflow" ]; then
      echo "==> training $name, seed $seed"
      mode=(); [ -f "$run/state.json" ] && mode=(--resume)
      $bin train "${CONFIG_ARGS[@]}" --data "$data" --out "$run" --seed "$seed" "${EXTRA[@]}" "${mode[@]}" > "$run.log" 2>&1 \
        || { mkdir -p "$run"; tail -20 "$run.log" >&2; exit 1; }
    fi
    if [ ! -f "$run/report/report.json" ]; then
      echo "==> evaluating $name, seed $seed"
      $bin eval --model "$run/model.clsflow" --data "$data" --out "$run/report" > "$run/eval.log" 2>&1 \
        || { tail -20 "$run/eval.log" >&2; exit 1; }
    fi
  done
done

python3 - "$OUT" "$LABEL" "$SEEDS" "${categories[@]}" <<'PY'
import json, statistics, sys
from pathlib import Path

out, label, seeds, cats = Path(sys.argv[1]), sys.argv[2], sys.argv[3].split(), sys.argv[4:]
names = ["demo" if Path(c).name == "plates" else Path(c).name for c in cats]
metrics = [("image_auroc", "image AUROC"), ("pixel_auroc", "pixel AUROC"), ("au_pro", "AU-PRO")]

def pct(v):
    return "n/a" if v is None else f"{100 * v:.1f}"

def spread(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "n/a"
    m = statistics.mean(vals)
    return f"{100 * m:.1f}" + (f" ± {50 * (max(vals) - min(vals)):.1f}" if len(vals) > 1 else "")

rows, objectives, means = [], [], {}
for name in names:
    per_seed, done = [], []
    for s in seeds:
        run = out / name / f"seed{s}"
        if not (run / "report" / "report.json").is_file():
            continue  # not finished (EVAL_SUMMARY_ONLY)
        rep = json.loads((run / "report" / "report.json").read_text())
        tr = json.loads((run / "training.json").read_text())
        per_seed.append((rep, tr))
        done.append(s)
    if not per_seed:
        continue
    for branch in ["fused", "flow", "classifier"]:
        cells = []
        for key, _ in metrics:
            vals = [rep["branches"][branch][key] for rep, _ in per_seed]
            cells.append(spread(vals))
            if branch == "fused" and all(v is not None for v in vals):
                means.setdefault(key, []).append(statistics.mean(vals))
        shown = name if len(done) == len(seeds) else f"{name} (seed {', '.join(done)} only)"
        rows.append(f"| {shown} | {branch} | " + " | ".join(cells) + " |")
    for (rep, tr), s in zip(per_seed, done):
        cal = tr["calibration"]
        w = cal["scoring"]["fusion_weight"]
        fused = next((c["objective"] for c in cal["candidates"] if c["fusion_weight"] == w), None)
        ref = "position" if any(cal["scoring"].get("tap_offsets") or []) else "global"
        refs = cal.get("references") or [a for a in cal.get("aggregations", [])
                                         if a["aggregation"] == "sum"]
        flow = next((a["flow"]["objective"] for a in refs if a["reference"] == ref), None)
        minutes = sum(tr["seconds"].values()) / 60
        d = rep["decisions"]
        objectives.append(
            f"| {name} | {s} | {fused if fused is None else f'{fused:.4f}'} | "
            f"{flow if flow is None else f'{flow:.4f}'} | {w} / {cal['scoring']['score_weight']} | "
            f"{pct(d['recall'])} / {pct(d['false_positive_rate'])} | {minutes:.1f} |")

lines = [f"### {label}", "",
         f"Seeds {', '.join(seeds)}: mean ± half the range between seeds, in %. "
         "Pixel metrics where the category has masks.", "",
         "| category | branch | " + " | ".join(n for _, n in metrics) + " |",
         "|---|---|" + "---|" * len(metrics)]
lines += rows
lines.append("| **mean over categories** | fused | " + " | ".join(
    pct(statistics.mean(means[k])) if k in means else "n/a" for k, _ in metrics) + " |")
lines += ["", "Validation (training images only; what a default change is decided on), thresholds and time:", "",
          "| category | seed | fused objective | flow objective | weights (map / score) | recall / good flagged at the threshold | training min |",
          "|---|---|---|---|---|---|---|"]
lines += objectives
table = "\n".join(lines) + "\n"
(out / "summary.md").write_text(table)
doc = Path("docs/experiments.md")
text = doc.read_text()
begin, end = "<!-- eval-all:begin -->", "<!-- eval-all:end -->"
if begin in text and end in text:
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    text = head + begin + "\n" + table + end + tail
    doc.write_text(text)
print(table)
PY
