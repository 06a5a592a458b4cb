#!/usr/bin/env bash
# After a preemption: recreates what is gone (the VM, or the queued resource), installs, stops
# any generation still running on a worker, and relaunches the run from its own record,
# OUT/run.json (dg-generate --resume): nothing to retype. Flags after -- are checked against the
# record (a mismatch is a one-line error).
#   tpu_scripts/resume.sh --name faces --zone us-central2-b --type v4-32 [--version RUNTIME]
#       [--spot] [--queued] [--wait-timeout SECONDS] --out gs://bucket/faces [--dry-run]
#       [-- <flags to check>]
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
source "$(dirname "$0")/common.sh"
HERE="$(dirname "$0")"

parse_common "$@"
set -- "${REST[@]+"${REST[@]}"}"
CREATE=()
OUT=""
QUEUED=0
CHECK=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --type|--version) CREATE+=("$1" "$2"); shift 2 ;;
    --wait-timeout) WAIT_SECONDS="$2"; CREATE+=("$1" "$2"); shift 2 ;;
    --spot) CREATE+=("$1"); shift ;;
    --queued) CREATE+=("$1"); QUEUED=1; shift ;;
    --out) OUT="$2"; shift 2 ;;
    --) shift; CHECK=("$@"); break ;;
    -h|--help) sed -n 2,8p "$0"; usage_common; exit 0 ;;
    *) die "unknown flag $1" ;;
  esac
done
[[ -n "${OUT}" ]] || die "--out is required: the run to continue (its run.json holds the command)"
mapfile -t common < <(common_args)

recreate() {  # delete what is left (if anything), create, install
  if [[ "$1" != MISSING ]]; then "${HERE}/delete.sh" "${common[@]}"; fi
  "${HERE}/create.sh" "${common[@]}" "${CREATE[@]+"${CREATE[@]}"}"
  "${HERE}/setup.sh" "${common[@]}"
}

if [[ "${QUEUED}" == 1 ]]; then
  state="$(queued_state)"
  echo "queued resource ${NAME}: ${state}" >&2
  case "${state}" in
    ACTIVE) ;;  # the VM lives: only the processes died or hang
    WAITING_FOR_RESOURCES|ACCEPTED|PROVISIONING|CREATING)
      wait_active "${WAIT_SECONDS}"
      "${HERE}/setup.sh" "${common[@]}" ;;
    *) recreate "${state}" ;;  # SUSPENDED, FAILED, MISSING, ...
  esac
else
  state="$(vm_state)"
  echo "TPU ${NAME}: ${state}" >&2
  if [[ "${state}" != "READY" ]]; then recreate "${state}"; fi
fi
# a process that survived (hung on a collective after another host died) would hold the TPU
on_workers "pkill -9 -f '[d]g-generate' || true"
"${HERE}/launch.sh" "${common[@]}" --out "${OUT}" -- --resume "${CHECK[@]+"${CHECK[@]}"}"
