#!/usr/bin/env bash
# Starts sample.generate on every worker (one process per host, joined by jax.distributed),
# in the background, logging to ~/generate.log. Rerunning it after a preemption resumes the run.
#   tpu_scripts/launch.sh --name faces --zone us-central2-b --out gs://bucket/faces [--dry-run] -- \
#       --num-images 1000000 --batch-size 512 --method distribution --target hair=0.5,0.5
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
source "$(dirname "$0")/common.sh"

OUT=""
parse_common "$@"
set -- "${REST[@]+"${REST[@]}"}"
GENERATE=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --) shift; GENERATE=("$@"); break ;;
    -h|--help) sed -n 2,5p "$0"; usage_common; exit 0 ;;
    *) die "unknown flag $1 (sample.generate flags go after --)" ;;
  esac
done
[[ -n "${OUT}" ]] || die "--out is required (a gs:// path every worker can write)"

args=""
for arg in --out "${OUT}" "${GENERATE[@]+"${GENERATE[@]}"}"; do args+="$(quote "${arg}") "; done
on_workers "cd ~/dg-jax && nohup python3 -m sample.generate --distributed ${args}> ~/generate.log 2>&1 &"
