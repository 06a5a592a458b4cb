#!/usr/bin/env bash
# Creates the TPU VM (or queues it: --queued, needed for spot capacity on large slices).
#   tpu_scripts/create.sh --name faces --zone us-central2-b --type v4-32 [--spot] [--queued] [--dry-run]
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
source "$(dirname "$0")/common.sh"

TYPE="v4-8"
VERSION="tpu-ubuntu2204-base"
SPOT=0
QUEUED=0
parse_common "$@"
set -- "${REST[@]+"${REST[@]}"}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --type) TYPE="$2"; shift 2 ;;
    --version) VERSION="$2"; shift 2 ;;
    --spot) SPOT=1; shift ;;
    --queued) QUEUED=1; shift ;;
    -h|--help) sed -n 2,3p "$0"; usage_common; exit 0 ;;
    *) die "unknown flag $1" ;;
  esac
done

mapfile -t scope < <(scope_flags)
extra=()
if [[ "${SPOT}" == 1 ]]; then extra+=(--spot); fi
if [[ "${QUEUED}" == 1 ]]; then
  run gcloud compute tpus queued-resources create "${NAME}" "${scope[@]}" \
    --node-id="${NAME}" --accelerator-type="${TYPE}" --runtime-version="${VERSION}" "${extra[@]+"${extra[@]}"}"
else
  run gcloud compute tpus tpu-vm create "${NAME}" "${scope[@]}" \
    --accelerator-type="${TYPE}" --version="${VERSION}" "${extra[@]+"${extra[@]}"}"
fi
