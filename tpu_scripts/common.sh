# Shared by the tpu_scripts: flag parsing, the dry-run switch, TPU states. Sourced, not run.
# shellcheck shell=bash

NAME="${TPU_NAME:-dg-jax}"
ZONE="${TPU_ZONE:-us-central2-b}"
PROJECT="${TPU_PROJECT:-}"
DRY_RUN=0
REST=()
# Where setup.sh installs dg-jax on every worker, and where launch.sh logs: paths on the
# workers, so the tilde stays for their shells to expand.
# shellcheck disable=SC2034,SC2088
VENV='~/dg-venv'
# shellcheck disable=SC2034,SC2088
LOGS='~/dg-logs'
# Seconds between state queries while waiting for a queued resource, and how long to wait.
POLL_SECONDS="${TPU_POLL_SECONDS:-30}"
# shellcheck disable=SC2034
WAIT_SECONDS=7200

usage_common() {
  cat <<'USAGE'
common flags:
  --name NAME       TPU VM / queued resource name (default $TPU_NAME or dg-jax)
  --zone ZONE       (default $TPU_ZONE or us-central2-b)
  --project ID      (default: gcloud's configured project)
  --dry-run         print the gcloud commands instead of running them
USAGE
}

# parse_common "$@": sets NAME, ZONE, PROJECT, DRY_RUN; other arguments land in REST.
parse_common() {
  REST=()
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --name) NAME="$2"; shift 2 ;;
      --zone) ZONE="$2"; shift 2 ;;
      --project) PROJECT="$2"; shift 2 ;;
      --dry-run) DRY_RUN=1; shift ;;
      *) REST+=("$1"); shift ;;
    esac
  done
}

# only_common_flags HELP_LINES: for a script with no flags of its own: --help prints lines
# HELP_LINES (e.g. 2,3) of the script, anything else left over is an error.
only_common_flags() {
  if [[ ${#REST[@]} -gt 0 ]]; then
    case "${REST[0]}" in
      -h|--help) sed -n "${1}p" "$0"; usage_common; exit 0 ;;
      *) die "unknown flag ${REST[0]}" ;;
    esac
  fi
}

# Flags every gcloud call gets.
scope_flags() {
  printf '%s\n' "--zone=${ZONE}"
  if [[ -n "${PROJECT}" ]]; then printf '%s\n' "--project=${PROJECT}"; fi
}

# common_args: the common flags again, for calling another of these scripts.
common_args() {
  printf '%s\n' --name "${NAME}" --zone "${ZONE}"
  if [[ -n "${PROJECT}" ]]; then printf '%s\n' --project "${PROJECT}"; fi
  if [[ "${DRY_RUN}" == 1 ]]; then printf '%s\n' --dry-run; fi
}

# quote ARG: ARG as the shell reads it back; single quotes only where needed.
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_@%+=:,./~-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# run CMD...: runs it, or with --dry-run prints it (one line, copy-pastable).
run() {
  if [[ "${DRY_RUN}" == 1 ]]; then
    local out=() arg
    for arg in "$@"; do out+=("$(quote "${arg}")"); done
    echo "${out[*]}"
  else
    "$@"
  fi
}

# on_workers COMMAND: runs a shell command on every worker of the TPU VM.
on_workers() {
  local scope
  mapfile -t scope < <(scope_flags)
  run gcloud compute tpus tpu-vm ssh "${NAME}" "${scope[@]}" --worker=all --command="$1"
}

# vm_state / queued_state: the TPU VM's state (READY, PREEMPTED, ...) or the queued resource's
# (WAITING_FOR_RESOURCES, ACTIVE, SUSPENDED, FAILED, ...); MISSING if there is none. Queried
# for real under --dry-run too: they decide what the script does.
vm_state() {
  local scope
  mapfile -t scope < <(scope_flags)
  gcloud compute tpus tpu-vm describe "${NAME}" "${scope[@]}" --format='value(state)' \
    2>/dev/null || echo MISSING
}
queued_state() {
  local scope
  mapfile -t scope < <(scope_flags)
  gcloud compute tpus queued-resources describe "${NAME}" "${scope[@]}" \
    --format='value(state.state)' 2>/dev/null || echo MISSING
}

# wait_active TIMEOUT_SECONDS: until the queued resource is ACTIVE; a state it cannot leave on
# its own is an error saying what to do.
wait_active() {
  local waited=0 state
  if [[ "${DRY_RUN}" == 1 ]]; then
    echo "# then wait until queued resource ${NAME} is ACTIVE (up to $1 s)"
    return
  fi
  while true; do
    state="$(queued_state)"
    case "${state}" in
      ACTIVE) echo "queued resource ${NAME}: ACTIVE" >&2; return ;;
      FAILED) die "queued resource ${NAME} FAILED (no capacity or a bad request); delete.sh, then create.sh again, perhaps in another zone" ;;
      SUSPENDING|SUSPENDED) die "queued resource ${NAME} is ${state} (its spot capacity was reclaimed); resume.sh --queued recreates it and continues the run" ;;
      MISSING) die "queued resource ${NAME} does not exist" ;;
      *) echo "queued resource ${NAME}: ${state} (waited ${waited} s of $1)" >&2 ;;
    esac
    if (( waited >= $1 )); then
      die "queued resource ${NAME} still ${state} after $1 s; it stays queued (delete.sh cancels it)"
    fi
    sleep "${POLL_SECONDS}"
    waited=$(( waited + POLL_SECONDS ))
  done
}

die() {
  echo "error: $*" >&2
  exit 2
}
