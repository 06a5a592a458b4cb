#!/usr/bin/env bash
# Deletes the TPU VM (the data set on GCS stays).
#   tpu_scripts/delete.sh --name faces --zone us-central2-b [--dry-run]
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
source "$(dirname "$0")/common.sh"

parse_common "$@"
only_common_flags 2,3
mapfile -t scope < <(scope_flags)
run gcloud compute tpus tpu-vm delete "${NAME}" "${scope[@]}" --quiet
