#!/usr/bin/env bash
# `make eval-all`: trains and evaluates one config on every category at hand, under two seeds,
# and writes one summary table (per category and the mean, with the spread between seeds) into
# docs/experiments.md between its eval-all markers (and runs/eval-all/summary.md).
# EVAL_SUMMARY_ONLY=1 writes the table from the runs finished so far, training nothing.
#
# Each finished run's figures are also kept as a small record (docs/eval-all/ for the built-in
# config, committed; $EVAL_OUT/records otherwise), so that the table still shows every category
# and seed on a checkout without the run folders or the ELPV download.
#
# Categories: ../shared/data/magnetic_tile, data/elpv_mono and data/elpv_poly (scripts/get-elpv.sh)
# when present, and the demo category (generated). A finished run is reused, so an interrupted
# eval-all continues where it stopped.
#
#   EVAL_SEEDS   seeds (default "0 1")
#   EVAL_ONLY    train only these categories, e.g. "elpv_mono demo" (default: all); the summary
#                still shows every category
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
RECORDS=$OUT/records
[ -z "${CONFIG:-}" ] && [ -z "${TRAIN_ARGS:-}" ] && RECORDS=docs/eval-all
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
    if [ -n "${EVAL_ONLY:-}" ] && [[ " $EVAL_ONLY " != *" $name "* ]]; then continue; fi
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

python3 - "$OUT" "$RECORDS" "$LABEL" "$SEEDS" "${categories[@]}" <<'PY'
import json, os, statistics, sys
from pathlib import Path

out, records, label, seeds = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4].split()
present = ["demo" if Path(c).name == "plates" else Path(c).name for c in sys.argv[5:]]
metrics = [("image_auroc", "image AUROC"), ("pixel_auroc", "pixel AUROC"), ("au_pro", "AU-PRO")]
BRANCHES = ["fused", "flow", "classifier"]
ORDER = ["magnetic_tile", "elpv_mono", "elpv_poly", "demo"]


def record_of(run, name, seed):
    """The figures the table shows, from one finished run's report and training summary."""
    rep = json.loads((run / "report" / "report.json").read_text())
    tr = json.loads((run / "training.json").read_text())
    cal = tr["calibration"]
    w = cal["scoring"]["fusion_weight"]
    fused = next((c["objective"] for c in cal["candidates"] if c["fusion_weight"] == w), None)
    ref = "position" if any(cal["scoring"].get("tap_offsets") or []) else "global"
    refs = cal.get("references") or [a for a in cal.get("aggregations", [])
                                     if a["aggregation"] == "sum"]
    flow = next((a["flow"]["objective"] for a in refs if a["reference"] == ref), None)
    d = rep["decisions"]
    return {
        "category": name, "seed": int(seed), "config": label, "source": str(run),
        "test": {b: {k: rep["branches"][b][k] for k, _ in metrics} for b in BRANCHES},
        "validation": {"fused_objective": fused, "flow_objective": flow},
        "fusion_weight": w, "score_weight": cal["scoring"]["score_weight"],
        "recall": d["recall"], "false_positive_rate": d["false_positive_rate"],
        "training_minutes": sum(tr["seconds"].values()) / 60,
    }


def write_atomic(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# A run folder wins over its record (and refreshes it); a record stands in for a missing folder.
found = {}
for name in present:
    for s in seeds:
        run = out / name / f"seed{s}"
        if (run / "report" / "report.json").is_file():
            rec = record_of(run, name, s)
            write_atomic(records / f"{name}-seed{s}.json", json.dumps(rec, indent=1) + "\n")
            found[(name, s)] = rec
for path in sorted(records.glob("*.json")) if records.is_dir() else []:
    rec = json.loads(path.read_text())
    key = (rec["category"], str(rec["seed"]))
    if key[1] in seeds and key not in found and rec.get("config") == label:
        found[key] = rec
names = sorted({n for n, _ in found}, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def pct(v):
    return "n/a" if v is None else f"{100 * v:.1f}"


def spread(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "n/a"
    m = statistics.mean(vals)
    return f"{100 * m:.1f}" + (f" ± {50 * (max(vals) - min(vals)):.1f}" if len(vals) > 1 else "")


def num(v):
    return "n/a" if v is None else f"{v:.4f}"


rows, objectives, means = [], [], {}
for name in names:
    done = [s for s in seeds if (name, s) in found]
    recs = [found[(name, s)] for s in done]
    shown = name if len(done) == len(seeds) else f"{name} (seed {', '.join(done)} only)"
    for branch in BRANCHES:
        cells = []
        for key, _ in metrics:
            vals = [r["test"][branch][key] for r in recs]
            cells.append(spread(vals))
            if branch == "fused" and all(v is not None for v in vals):
                means.setdefault(key, []).append(statistics.mean(vals))
        rows.append(f"| {shown} | {branch} | " + " | ".join(cells) + " |")
    for r, s in zip(recs, done):
        v = r["validation"]
        objectives.append(
            f"| {name} | {s} | {num(v['fused_objective'])} | {num(v['flow_objective'])} | "
            f"{r['fusion_weight']} / {r['score_weight']} | {pct(r['recall'])} / "
            f"{pct(r['false_positive_rate'])} | {r['training_minutes']:.1f} |")

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
write_atomic(out / "summary.md", table)
doc = Path("docs/experiments.md")
text = doc.read_text()
begin, end = "<!-- eval-all:begin -->", "<!-- eval-all:end -->"
if begin in text and end in text:
    pre, rest = text.split(begin, 1)
    _, post = rest.split(end, 1)
    write_atomic(doc, pre + begin + "\n" + table + end + post)
print(table)
PY
