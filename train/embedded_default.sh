#!/usr/bin/env bash
# Reproduces the embedded default UNet (dg_jax/assets/synthfaces_unet) with one command:
#     bash train/embedded_default.sh
# Phase 1: 7,200 steps of epsilon-prediction at AdamW 1e-3; phase 2: from its EMA weights, 1,400
# steps at 2e-4; phase 3: from those weights, 1,400 steps of v-prediction at 3e-4 (the shipped
# model; epsilon-prediction's x0 estimates at high noise were too poor, see
# docs/EMBEDDED_MODEL.md). Rerunning continues where it stopped. The result is written to
# runs/synthfaces_unet_export (copy it over dg_jax/assets/synthfaces_unet to ship it).
# The classifier: python -m train.train_classifier --steps 1200 --export dg_jax/assets/synthfaces_classifier
# The evaluator:  python -m train.train_evaluator --export dg_jax/assets/synthfaces_evaluator
set -euo pipefail
export XLA_FLAGS=--xla_force_host_platform_device_count=2   # data parallel over 2 CPU devices
COMMON=(--batch-size 32 --save-every 200)
[ -e runs/unet_ema_7200 ] || python -m train.train_ddpm --workdir runs/synthfaces_unet \
    --unet.prediction-type epsilon "${COMMON[@]}" --warmup-steps 200 --steps 7200 \
    --export runs/unet_ema_7200
[ -e runs/unet_eps_ft_1400 ] || python -m train.train_ddpm --workdir runs/synthfaces_unet_ft \
    --unet.prediction-type epsilon --init-from runs/unet_ema_7200 "${COMMON[@]}" \
    --learning-rate 0.0002 --warmup-steps 100 --steps 1400 --export runs/unet_eps_ft_1400
python -m train.train_ddpm --workdir runs/synthfaces_unet_v --unet.prediction-type v_prediction \
    --init-from runs/unet_eps_ft_1400 "${COMMON[@]}" --learning-rate 0.0003 --warmup-steps 100 \
    --steps 1400 --export runs/synthfaces_unet_export
