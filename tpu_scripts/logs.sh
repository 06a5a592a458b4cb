#!/usr/bin/env bash
# Shows the end of every worker's newest generation log (which shard each host is on, images/s,
# ETA; ~/dg-logs keeps one file per host and launch).
#   tpu_scripts/logs.sh --name faces --zone us-central2-b [--lines 20] [--dry-run]
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
source "$(dirname "$0")/common.sh"

LINES=20
parse_common "$@"
set -- "${REST[@]+"${REST[@]}"}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --lines) LINES="$2"; shift 2 ;;
    -h|--help) sed -n 2,4p "$0"; usage_common; exit 0 ;;
    *) die "unknown flag $1" ;;
  esac
done
[[ "${LINES}" =~ ^[0-9]+$ ]] || die "--lines must be a number"
on_workers "log=\$(ls -t ${LOGS}/generate-*.log | head -n 1); echo \"== \$(hostname) \$log\"; \
tail -n ${LINES} \"\$log\" | tr '\\r' '\\n' | tail -n ${LINES}"
