#!/usr/bin/env bash
# Reproduces the embedded default UNet (dg_jax/assets/synthfaces_unet) with one command:
#     bash train/embedded_default.sh [FINE_TUNE_STEPS]
# Phase 1: 7,200 steps at AdamW 1e-3, EMA weights exported; phase 2: from those weights, AdamW
# 2e-4. Rerunning continues where it stopped. The result is written to runs/synthfaces_unet_export
# (copy it over dg_jax/assets/synthfaces_unet to ship it).
# The classifier: python -m train.train_classifier --steps 1200 --export dg_jax/assets/synthfaces_classifier
set -euo pipefail
FINE_TUNE_STEPS=${1:-1400}
export XLA_FLAGS=--xla_force_host_platform_device_count=2   # data parallel over 2 CPU devices
[ -e runs/unet_ema_7200 ] || python -m train.train_ddpm --workdir runs/synthfaces_unet \
    --batch-size 32 --warmup-steps 200 --steps 7200 --save-every 200 --export runs/unet_ema_7200
python -m train.train_ddpm --workdir runs/synthfaces_unet_ft --init-from runs/unet_ema_7200 \
    --batch-size 32 --learning-rate 0.0002 --warmup-steps 100 --steps "$FINE_TUNE_STEPS" \
    --save-every 200 --export runs/synthfaces_unet_export
