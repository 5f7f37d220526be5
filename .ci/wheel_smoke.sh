#!/usr/bin/env bash
# The package as a user installs it: build the wheel, install it into a fresh virtualenv that
# cannot see the checkout, then import it and run both commands on the offline digits.
# With WHEEL_DIR set, the wheel is built there and kept (.ci/run hands it to the slow tier's
# tests/test_packaging.py, so CI builds it once).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dist=${WHEEL_DIR:-$work/dist}
rm -rf "$repo/build"  # setuptools stages there and does not clear it: a stale module would ship
python -m pip wheel --no-deps -q -w "$dist" "$repo"
python -m venv "$work/venv"
# The wheel's own dependency ranges, resolved to the versions CI pins.
"$work/venv/bin/pip" install -q -c "$repo/requirements.txt" "$dist"/carl_tf-*.whl
cd "$work"  # nothing of the checkout on sys.path
unset PYTHONPATH
"$work/venv/bin/python" -c "import carl_tf; print('import carl_tf', carl_tf.__version__, 'from', carl_tf.__file__)"
"$work/venv/bin/carl-train" --dataset=digits --config.epochs=1 --config.backbone_width=4 \
  --config.projection_hidden_dim=64 --config.knn_every=1 --workdir="$work/run"
"$work/venv/bin/carl-evaluate" --model="$work/run" --protocol=knn,cluster --plots=false
echo "wheel smoke test passed"
