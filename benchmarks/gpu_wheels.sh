#!/usr/bin/env bash
# Downloads the wheels benchmarks/gpu_jax_run.py needs on a JAX + CUDA machine without
# TensorFlow and without internet; run it here, where PyPI is reachable.
#
#   bash benchmarks/gpu_wheels.sh [DIR]      # DIR defaults to benchmarks/gpu_wheels
#
# Such a machine already has JAX and what JAX needs (numpy, scipy, ml_dtypes, opt_einsum).
# What it lacks is Keras and the few packages Keras imports at start-up under the JAX backend
# (absl-py, rich and its markdown-it-py/mdurl/pygments, namex, packaging, optree and its
# typing-extensions), ml_collections (the configs) with PyYAML, Pillow (the folder loader), and
# setuptools, with which pip builds carl_tf from the checkout on the device. Each is fetched
# without its dependencies (--no-deps): the list is complete for that path, and pip on the
# device installs only those whose module is missing. h5py (Keras's .keras/.h5 saving) is left
# out: the run saves no model.
#
# Versions are those requirements.txt and the dev virtualenv test (keras==3.15.1). Pure-Python
# packages come as one py3 wheel each; PyYAML, Pillow and optree are compiled, so they come
# once per CPython version in PYTHONS for manylinux x86_64: by default 3.11-3.13 (JAX 0.10
# needs 3.11 or later), 30 MiB in all, Pillow 21 MiB of it; PYTHONS="3.11 3.12 3.13 3.14" adds
# 8 MiB. The folder is untracked (never commit it) but not ignored, so it travels with the
# working tree to the device machine, whose limit is 64 MiB with the tarball (16.5 MB).
set -euo pipefail

cd "$(dirname "$0")/.."
DIR=${1:-benchmarks/gpu_wheels}
PYTHONS=${PYTHONS:-"3.11 3.12 3.13"}
PIP=${PIP:-python -m pip}

PURE=(
  keras==3.15.1 absl-py==2.5.1 rich==15.0.0 markdown-it-py==4.3.0 mdurl==0.1.2
  pygments==2.21.0 namex==0.1.0 packaging==26.4 typing-extensions==4.16.0
  ml_collections==1.1.0 "setuptools>=68"
)
# The newest release with a wheel for each Python: a pin could lack one for a new Python.
COMPILED=("pyyaml>=6" "pillow>=10" "optree>=0.13")

mkdir -p "$DIR"
$PIP download --quiet --no-deps --only-binary=:all: --dest "$DIR" "${PURE[@]}"
for python in $PYTHONS; do
  $PIP download --quiet --no-deps --only-binary=:all: --dest "$DIR" \
    --python-version "$python" --implementation cp --platform manylinux2014_x86_64 \
    --platform manylinux_2_28_x86_64 "${COMPILED[@]}"
done
ls -1 "$DIR"
du -sh "$DIR"
