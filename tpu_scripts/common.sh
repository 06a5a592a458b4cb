# Shared by the tpu_scripts: flag parsing and the dry-run switch. Sourced, not run.
# shellcheck shell=bash

NAME="${TPU_NAME:-dg-jax}"
ZONE="${TPU_ZONE:-us-central2-b}"
PROJECT="${TPU_PROJECT:-}"
DRY_RUN=0
REST=()

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

die() {
  echo "error: $*" >&2
  exit 2
}
