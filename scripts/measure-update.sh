#!/usr/bin/env bash
# Measures `clsflow-train update` on a trained run (docs/experiments.md, "update"): every other
# false alarm of the run on the test split (good test images above its threshold, by name)
# becomes --good; the updated model is evaluated on the rest of the test split (eval leaves the
# added images out by itself). Prints false alarms and recall before and after on the same
# images, and the update's time against the run's training.
#
#   scripts/measure-update.sh DATA RUN OUT [update options, e.g. --added-share 0]
set -euo pipefail
[ $# -ge 3 ] || { sed -n '2,8p' "$0" >&2; exit 2; }
data=$1 run=$2 out=$3; shift 3
bin=${CLSFLOW_TRAIN:-./target/release/clsflow-train}
if [ ! -f "$run/report/scores.csv" ]; then
  $bin eval --model "$run/model.clsflow" --data "$data" --out "$run/report" > "$run/eval.log"
fi
mkdir -p "$out"
python3 - "$run/report/scores.csv" > "$out/good.txt" <<'PY'
import csv, sys
alarms = sorted(r["path"] for r in csv.DictReader(open(sys.argv[1]))
                if r["defect_type"] == "good" and r["anomalous"] == "true")
print("\n".join(alarms[::2]))
PY
if [ ! -s "$out/good.txt" ]; then
  echo "$run: no false alarms on the test split at its threshold: nothing to update"
  exit 0
fi
good=(); while read -r p; do good+=(--good "$p"); done < "$out/good.txt"
if [ ! -f "$out/updated/model.clsflow" ]; then
  $bin update --run "$run" "${good[@]}" --out "$out/updated" --overwrite "$@" > "$out/update.log" 2>&1 \
    || { tail -20 "$out/update.log" >&2; exit 1; }
fi
# the added false alarms as they recur on a line: themselves, and copies shifted by a few pixels
# with the light 3 % brighter or darker (ImageMagick's convert, where installed)
im=${IMAGEMAGICK:-/usr/bin/convert}
"$im" -version 2>/dev/null | grep -q ImageMagick || im=
rm -rf "$out/recurring"; mkdir -p "$out/recurring"
i=0; while read -r p; do
  i=$((i + 1)); ext=${p##*.}; cp "$p" "$out/recurring/$i.$ext"
  if [ -n "$im" ]; then
    "$im" "$p" -roll +3+2 -modulate 103 "$out/recurring/$i-a.png"
    "$im" "$p" -roll -2+3 -modulate 97 "$out/recurring/$i-b.png"
  fi
done < "$out/good.txt"
[ -n "$im" ] || echo "  (no ImageMagick: the recurring false alarms are the added images alone)"
for m in before:"$run" after:"$out/updated"; do
  $bin predict --model "${m#*:}/model.clsflow" --input "$out/recurring" --out "$out/recurring-${m%%:*}" --save heatmap \
    | head -1 | sed "s/^/  recurring false alarms, ${m%%:*} the update: /"
done
$bin eval --model "$out/updated/model.clsflow" --data "$data" --out "$out/updated/report" > "$out/eval.log"
python3 - "$run/report/scores.csv" "$out/updated/report/scores.csv" "$out/good.txt" \
  "$out/updated/training.json" "$run" <<'PY'
import csv, json, sys
before, after = ({r["path"]: r for r in csv.DictReader(open(f))} for f in sys.argv[1:3])
added = set(open(sys.argv[3]).read().split())
summary = json.load(open(sys.argv[4]))
paths = [p for p in before if p not in added]
assert set(paths) == set(after), "the updated model's report covers other images"
def flagged(rows, kind):
    return sum(rows[p]["anomalous"] == "true" for p in paths if (rows[p]["defect_type"] == "good") == (kind == "good"))
good = sum(before[p]["defect_type"] == "good" for p in paths)
bad = len(paths) - good
held = [p for p in paths if before[p]["defect_type"] == "good" and before[p]["anomalous"] == "true"]
still = sum(after[p]["anomalous"] == "true" for p in held)
secs = sum(summary["seconds"].values())
run_secs = summary["update"]["run_seconds"]
print(f"{sys.argv[5]}: {len(added)} false alarm(s) added, {len(held)} held out")
print(f"  held-out false alarms still flagged: {still} of {len(held)}")
print(f"  good test images flagged (of {good}): {flagged(before, 'good')} -> {flagged(after, 'good')}")
print(f"  recall (of {bad} defective): {100 * flagged(before, 'bad') / bad:.1f} % -> {100 * flagged(after, 'bad') / bad:.1f} %")
def auroc(rows):
    g = [float(rows[p]["fused"]) for p in paths if rows[p]["defect_type"] == "good"]
    b = [float(rows[p]["fused"]) for p in paths if rows[p]["defect_type"] != "good"]
    return 100 * sum((x > y) + 0.5 * (x == y) for x in b for y in g) / (len(g) * len(b))
print(f"  image AUROC: {auroc(before):.1f} -> {auroc(after):.1f}")
print(f"  update {secs / 60:.1f} min against the run's {run_secs / 60:.1f} min ({secs / run_secs:.2f})")
PY
