#!/usr/bin/env bash
# Creates the TPU VM, or queues it (--queued, for spot capacity on large slices) and waits until
# the queued resource is ACTIVE.
#   tpu_scripts/create.sh --name faces --zone us-central2-b --type v4-32 [--spot] [--queued]
#       [--version RUNTIME] [--wait-timeout SECONDS] [--dry-run]
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
source "$(dirname "$0")/common.sh"

TYPE="v4-8"
VERSION=""
SPOT=0
QUEUED=0
TIMEOUT="${WAIT_SECONDS}"
parse_common "$@"
set -- "${REST[@]+"${REST[@]}"}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --type) TYPE="$2"; shift 2 ;;
    --version) VERSION="$2"; shift 2 ;;
    --spot) SPOT=1; shift ;;
    --queued) QUEUED=1; shift ;;
    --wait-timeout) TIMEOUT="$2"; shift 2 ;;
    -h|--help) sed -n 2,5p "$0"; usage_common; exit 0 ;;
    *) die "unknown flag $1" ;;
  esac
done
[[ "${TIMEOUT}" =~ ^[0-9]+$ ]] || die "--wait-timeout must be a number of seconds"

# The runtime image for the chip generation (Cloud TPU's documented software versions).
if [[ -z "${VERSION}" ]]; then
  case "${TYPE}" in
    v2-[0-9]*|v3-[0-9]*|v4-[0-9]*) VERSION="tpu-ubuntu2204-base" ;;
    v5litepod-[0-9]*) VERSION="v2-alpha-tpuv5-lite" ;;
    v5p-[0-9]*) VERSION="v2-alpha-tpuv5" ;;
    v6e-[0-9]*) VERSION="v2-alpha-tpuv6e" ;;
    *) die "unknown TPU type ${TYPE} (e.g. v4-8, v4-32, v5litepod-16, v5p-8, v6e-8)" ;;
  esac
fi

mapfile -t scope < <(scope_flags)
extra=()
if [[ "${SPOT}" == 1 ]]; then extra+=(--spot); fi
if [[ "${QUEUED}" == 1 ]]; then
  run gcloud compute tpus queued-resources create "${NAME}" "${scope[@]}" \
    --node-id="${NAME}" --accelerator-type="${TYPE}" --runtime-version="${VERSION}" "${extra[@]+"${extra[@]}"}"
  wait_active "${TIMEOUT}"
else
  run gcloud compute tpus tpu-vm create "${NAME}" "${scope[@]}" \
    --accelerator-type="${TYPE}" --version="${VERSION}" "${extra[@]+"${extra[@]}"}"
fi
