#!/usr/bin/env bash
# After a preemption: recreates the TPU VM if it is gone or preempted, installs, and launches the
# same generation again; sample.generate continues after the last shard in the manifest.
#   tpu_scripts/resume.sh --name faces --zone us-central2-b --type v4-32 [--spot] --out gs://bucket/faces \
#       [--dry-run] -- <the same sample.generate flags as at launch>
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
source "$(dirname "$0")/common.sh"
HERE="$(dirname "$0")"

parse_common "$@"
set -- "${REST[@]+"${REST[@]}"}"
CREATE=()
LAUNCH=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --type|--version) CREATE+=("$1" "$2"); shift 2 ;;
    --spot) CREATE+=("$1"); shift ;;
    --out) LAUNCH+=("$1" "$2"); shift 2 ;;
    --) LAUNCH+=("$@"); break ;;
    -h|--help) sed -n 2,5p "$0"; usage_common; exit 0 ;;
    *) die "unknown flag $1" ;;
  esac
done

common=(--name "${NAME}" --zone "${ZONE}")
if [[ -n "${PROJECT}" ]]; then common+=(--project "${PROJECT}"); fi
if [[ "${DRY_RUN}" == 1 ]]; then common+=(--dry-run); fi
mapfile -t scope < <(scope_flags)

# READY: only the launch is needed (the processes died, the VM lives).
state="$(gcloud compute tpus tpu-vm describe "${NAME}" "${scope[@]}" --format='value(state)' 2>/dev/null || echo MISSING)"
echo "TPU ${NAME}: ${state}" >&2
if [[ "${state}" != "READY" ]]; then
  if [[ "${state}" != "MISSING" ]]; then
    "${HERE}/delete.sh" "${common[@]}"
  fi
  "${HERE}/create.sh" "${common[@]}" "${CREATE[@]+"${CREATE[@]}"}"
  "${HERE}/setup.sh" "${common[@]}"
fi
"${HERE}/launch.sh" "${common[@]}" "${LAUNCH[@]+"${LAUNCH[@]}"}"
