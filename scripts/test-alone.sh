#!/usr/bin/env bash
# Every test of every crate as on a user's clone: the shared folder beside the checkout (real
# categories) is hidden behind an empty folder in a private mount namespace and CLSFLOW_SHARED
# points at an empty folder, so a test that needs it must skip, and say so, instead of passing
# on data a user does not have. Part of CI (.ci/run), after `make test` and `make demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/empty"
skipped=target/tmp/skipped-tests.txt

cat > "$work/inside.sh" <<'INSIDE'
set -euo pipefail
root=$1 empty=$2
shared=$(dirname "$root")/shared
[ -d "$shared" ] && mount --bind "$empty" "$shared"
[ -z "$(ls -A "$empty")" ] && { [ ! -d "$shared" ] || [ -z "$(ls -A "$shared")" ]; } \
  || { echo "test-alone: the shared folder is not hidden" >&2; exit 1; }
export CLSFLOW_SHARED="$empty"
cd "$root"
cargo test
INSIDE
if [ "$(id -u)" -eq 0 ]; then ns=(unshare -m --propagation private); else ns=(unshare -r -m --propagation private); fi
mkdir -p target/tmp
rm -f "$skipped"
"${ns[@]}" bash "$work/inside.sh" "$ROOT" "$work/empty"
[ -s "$skipped" ] || { echo "test-alone: no test skipped with the shared folder hidden; the real-data tests did not look for it" >&2; exit 1; }
echo "test-alone: every test passed with the shared folder hidden; $(wc -l < "$skipped") skipped for want of real data:"
sort "$skipped" | sed 's/^/  /'
