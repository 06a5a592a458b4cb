#!/usr/bin/env bash
# Installs this checkout on every worker: a wheel built from the working tree (committed or not)
# into a Python 3.11 virtual environment (~/dg-venv, made by uv with a standalone Python: the TPU
# images ship 3.10) with jax[tpu] at the tested version. Safe to rerun. Ends with each worker's
# jax version, process index and device counts, so a broken install shows before a long run.
#   tpu_scripts/setup.sh --name faces --zone us-central2-b [--dry-run]
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
source "$(dirname "$0")/common.sh"

parse_common "$@"
only_common_flags 2,6

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
mapfile -t scope < <(scope_flags)
VERSION="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "${ROOT}/dg_jax/__init__.py")"
JAX="$(grep -E '^jax==' "${ROOT}/constraints.txt" | cut -d= -f3)"
[[ -n "${VERSION}" && -n "${JAX}" ]] || die "cannot read the version or jax== from the checkout"
WHEEL="dg_jax-${VERSION}-py3-none-any.whl"
DIST="$(mktemp -d)"

run python3 -m pip wheel --no-deps --quiet -w "${DIST}" "${ROOT}"
on_workers "rm -rf ~/dg-wheels && mkdir -p ~/dg-wheels"
run gcloud compute tpus tpu-vm scp "${DIST}/${WHEEL}" "${ROOT}/constraints.txt" \
  "${NAME}:~/dg-wheels/" "${scope[@]}" --worker=all
on_workers "set -e; export PATH=\$HOME/.local/bin:\$PATH; \
command -v uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh; \
[ -x ${VENV}/bin/python ] || uv venv --python 3.11 ${VENV}; \
uv pip install --quiet --python ${VENV}/bin/python --reinstall-package dg-jax \
~/dg-wheels/${WHEEL} 'jax[tpu]==${JAX}' -c ~/dg-wheels/constraints.txt"
on_workers "${VENV}/bin/python -c 'import sys, jax; jax.distributed.initialize(); \
print(\"python\", sys.version.split()[0], \"jax\", jax.__version__, \"process\", jax.process_index(), \
\"devices\", jax.device_count(), \"local\", jax.local_device_count())'"
