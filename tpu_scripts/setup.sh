#!/usr/bin/env bash
# Copies this checkout to every worker and installs it with JAX for TPU.
#   tpu_scripts/setup.sh --name faces --zone us-central2-b [--dry-run]
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
source "$(dirname "$0")/common.sh"

parse_common "$@"
only_common_flags 2,3

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
mapfile -t scope < <(scope_flags)
# a source archive without build outputs, the same on every worker
ARCHIVE="$(mktemp -d)/dg-jax.tar.gz"
run git -C "${ROOT}" archive --format=tar.gz -o "${ARCHIVE}" HEAD
run gcloud compute tpus tpu-vm scp "${ARCHIVE}" "${NAME}:~/dg-jax.tar.gz" "${scope[@]}" --worker=all
on_workers "rm -rf ~/dg-jax && mkdir ~/dg-jax && tar -xzf ~/dg-jax.tar.gz -C ~/dg-jax && python3 -m pip install -q -e ~/dg-jax 'jax[tpu]==0.9.0.1'"
