#!/usr/bin/env bash
# Starts dg-generate on every worker (one process per host, joined by jax.distributed), in the
# background. Each host logs to ~/dg-logs/generate-HOST-ATTEMPT.log (a new file per launch;
# nothing is overwritten); compiled programs are kept in --compilation-cache (default: OUT's
# sibling OUT-jax-cache), so a relaunch does not compile again.
#   tpu_scripts/launch.sh --name faces --zone us-central2-b --out gs://bucket/faces [--dry-run] -- \
#       --num-images 1000000 --batch-size 512 --method distribution --target hair=0.5,0.5
# Relaunching after a preemption: `-- --resume` replays the run's own OUT/run.json.
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
source "$(dirname "$0")/common.sh"

OUT=""
CACHE=""
parse_common "$@"
set -- "${REST[@]+"${REST[@]}"}"
GENERATE=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --compilation-cache) CACHE="$2"; shift 2 ;;
    --) shift; GENERATE=("$@"); break ;;
    -h|--help) sed -n 2,8p "$0"; usage_common; exit 0 ;;
    *) die "unknown flag $1 (dg-generate flags go after --)" ;;
  esac
done
[[ -n "${OUT}" ]] || die "--out is required (a gs:// path every worker can write)"
CACHE="${CACHE:-${OUT%/}-jax-cache}"

args=""
for arg in --out "${OUT}" --compilation-cache "${CACHE}" "${GENERATE[@]+"${GENERATE[@]}"}"; do
  args+="$(quote "${arg}") "
done
ATTEMPT="$(date -u +%Y%m%dT%H%M%SZ)"
on_workers "mkdir -p ${LOGS} && nohup ${VENV}/bin/dg-generate --distributed ${args}\
>> ${LOGS}/generate-\$(hostname)-${ATTEMPT}.log 2>&1 &"
