#!/usr/bin/env bash
# Deletes the TPU VM, and its queued resource if it came from one (the data set on GCS stays).
#   tpu_scripts/delete.sh --name faces --zone us-central2-b [--dry-run]
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
source "$(dirname "$0")/common.sh"

parse_common "$@"
only_common_flags 2,3
mapfile -t scope < <(scope_flags)
if [[ "$(queued_state)" != MISSING ]]; then
  # --force deletes the queued resource's VM with it
  run gcloud compute tpus queued-resources delete "${NAME}" "${scope[@]}" --force --quiet
else
  run gcloud compute tpus tpu-vm delete "${NAME}" "${scope[@]}" --quiet
fi
