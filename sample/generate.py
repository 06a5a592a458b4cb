"""Generates an attribute-labelled image data set (the main job).

    python -m sample.generate --out out/faces --num-images 1024 --seed 0 --batch-size 64 [--png]

Uses the embedded SynthFaces model unless --model points at a checkpoint bundle, a local diffusers
UNet2DModel folder (whose scheduler config sets the sampling defaults) or a guided-diffusion
checkpoint with --model-config. Rerunning the same command, or `--out OUT --resume` (which replays
OUT/run.json), continues an interrupted run; an --out made with another config is refused.

Text-to-image with a local Stable Diffusion pipeline folder, balanced per prompt, labelled by CLIP:

    python -m sample.generate --model sd-v1-5 --prompt "a photo of a doctor" --batch-size 16 \
        --method distribution --adp ADP --target gender=0.5,0.5 \
        --clip clip-vit-large-patch14 --class-prompt "gender=a photo of a man|a photo of a woman"
"""

import argparse
import json
import sys

import jax

from dg_jax.errors import UserError
from dg_jax.flags import (
    add_model_config_flag,
    add_sampler_flags,
    add_text_flags,
    sampler_from_flags,
    text_from_flags,
)
from dg_jax.generation import GUIDANCE_METHODS, GenerateConfig, run
from dg_jax.guard import GuardConfig
from dg_jax.guidance.distribution import GuidanceConfig
from dg_jax.run_record import recorded_config, resumed_config


def parse_args(argv=None) -> tuple[GenerateConfig, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--num-images", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--shard-size", type=int, default=1024, help="images per array_record shard")
    p.add_argument("--model", default="",
                   help="UNet bundle, diffusers folder, or guided-diffusion checkpoint (.pt, "
                        ".safetensors) with --model-config (default: the embedded model)")
    add_model_config_flag(p)
    p.add_argument("--classifier", default="",
                   help="labeller bundle (default: the embedded SynthFaces classifier); "
                        "'none' writes unlabelled images")
    add_sampler_flags(p)
    g = p.add_argument_group("guidance")
    g.add_argument("--method", default="none", choices=list(GUIDANCE_METHODS),
                   help="none (unguided, default); distribution (the paper's method); baselines: "
                        "sample (per-sample targets on h), image (per-sample targets with the "
                        "classifier on x0_hat)")
    g.add_argument("--target", action="append", default=[],
                   help="target distribution, e.g. hair=0.5,0.5 or skin=uniform; repeatable")
    g.add_argument("--joint", action="append", default=[],
                   help="joint target over attributes, e.g. hair,skin=uniform (row-major cells)")
    g.add_argument("--adp", default="",
                   help="ADP bundle trained for --model (distribution, sample; default with the "
                        "embedded model: its shipped ADP)")
    g.add_argument("--push-scale", type=float, default=GuidanceConfig.scale,
                   help="how hard guidance pushes towards the targets at each step (the step "
                        "size s, batch-size independent; default %(default)s); classifier-free "
                        "guidance of text models is --guidance-scale")
    g.add_argument("--target-weight", action="append", default=[],
                   help="TARGET=W: weigh that target's loss W times (default 1), e.g. hair=2 "
                        "for an attribute that moves less per push; repeatable")
    g.add_argument("--guidance-loss", default=GuidanceConfig.loss, choices=["chi_square", "kl", "l2"])
    g.add_argument("--temperature", type=float, default=GuidanceConfig.temperature,
                   help="softmax temperature of the ADP logits (original code: 8)")
    g.add_argument("--guidance-start", type=int, default=GuidanceConfig.start_step,
                   help="first guided loop step (0 = the noisiest)")
    g.add_argument("--guidance-end", type=int, help="guide steps before this one (default: all)")
    g.add_argument("--guidance-schedule", default=GuidanceConfig.schedule,
                   choices=["beta_power", "constant"])
    g.add_argument("--max-h-step", type=float, default=GuidanceConfig.max_step,
                   help="trust region: each sample's change of h per step is at most this "
                        "fraction of ||h|| (default %(default)s); 0 or inf: unbounded")
    g.add_argument("--guidance-push", default=GuidanceConfig.push, choices=["posterior", "batch"],
                   help="posterior (default): each sample towards its own prediction re-weighted "
                        "so that the batch meets the target; batch: every sample by the batch "
                        "loss's gradient (the paper)")
    g.add_argument("--calibrated", action=argparse.BooleanOptionalAction,
                   default=GuidanceConfig.calibrated,
                   help="p_hat from the ADP's softmax(logits), the gradient from softmax(logits "
                        "/ tau) (default); --no-calibrated: both tempered (the original code)")
    g.add_argument("--preserve", default="",
                   help="comma-separated attributes to hold at the unguided model's own shares "
                        "(as the ADP bundle records them), e.g. smile,skin")
    g.add_argument("--on-degenerate", default=GuardConfig.on_degenerate, choices=["stop", "warn"],
                   help="broken images (noise, blank, unreadable) or a target out of reach: stop "
                        "before writing them (default) or write them and count them")
    g.add_argument("--balance", default="dataset", choices=["dataset", "batch"],
                   help="dataset (default): steer each batch to what the images written so far "
                        "lack, so the whole data set meets the target; batch: each batch to the "
                        "target on its own (the paper)")
    g.add_argument("--distribution-scope", default="global", choices=["global", "local"],
                   help="batch distribution over the global batch (all devices and hosts; one "
                        "all-reduce per step) or each device's own")
    d = p.add_argument_group("multi-host (one process per host)")
    d.add_argument("--distributed", action="store_true",
                   help="join the other hosts with jax.distributed.initialize() (on Cloud TPU "
                        "the rest is found automatically)")
    d.add_argument("--coordinator", help="host:port of process 0 (not needed on Cloud TPU)")
    d.add_argument("--num-processes", type=int)
    d.add_argument("--process-id", type=int)
    add_text_flags(p)
    p.add_argument("--png", action="store_true", help="also write OUT/png/<index>.png")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out with the config its run.json records "
                        "(retype nothing); flags given as well must agree with the record")
    p.add_argument("--config", default="",
                   help="start from this config file (a recorded OUT/run.json repeats that "
                        "run); flags given as well change it")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="the UNet's compute dtype (parameters, the ADP and the guidance "
                        "gradient stay float32; bfloat16 for TPU)")
    p.add_argument("--compilation-cache", default="",
                   help="a folder (local or gs://) where compiled programs are kept and "
                        "reused by a resume or the next job")
    a = p.parse_args(argv)
    config = config_from_flags(a)
    if a.resume and a.config:
        raise UserError("--resume continues --out's own run.json; give --config without it")
    if a.resume or a.config:
        defaults = config_from_flags(p.parse_args(["--out", a.out]))
        config = (resumed_config(config, defaults) if a.resume else recorded_config(
            a.config, config, defaults, keep=("out", "png", "guard")))
    return config, a


def config_from_flags(a: argparse.Namespace) -> GenerateConfig:
    sampler = sampler_from_flags(a)
    try:
        max_step = a.max_h_step if a.max_h_step not in (0.0, float("inf")) else None
        guidance = GuidanceConfig(loss=a.guidance_loss, scale=a.push_scale,
                                  temperature=a.temperature, start_step=a.guidance_start,
                                  end_step=a.guidance_end, schedule=a.guidance_schedule,
                                  target_weights=tuple(a.target_weight), max_step=max_step,
                                  calibrated=a.calibrated, push=a.guidance_push)
        guard = GuardConfig(on_degenerate=a.on_degenerate)
    except ValueError as e:
        raise UserError(str(e)) from None
    return GenerateConfig(out=a.out, num_images=a.num_images, seed=a.seed,
                          batch_size=a.batch_size, shard_size=a.shard_size, model=a.model,
                          model_config=a.model_config, dtype=a.dtype,
                          classifier=a.classifier, sampler=sampler, method=a.method,
                          targets=tuple(a.target + a.joint), adp=a.adp, guidance=guidance,
                          png=a.png, balance=a.balance,
                          distribution_scope=a.distribution_scope, text=text_from_flags(a),
                          guard=guard,
                          preserve=tuple(x.strip() for x in a.preserve.split(",") if x.strip()))


def join_hosts(a) -> None:
    """jax.distributed.initialize() before anything touches a device, and the compilation
    cache before anything compiles."""
    if a.compilation_cache:
        jax.config.update("jax_compilation_cache_dir", a.compilation_cache)
        # every program: the small per-batch ones too cost seconds each on every host
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    if a.distributed:
        # CPU hosts (tests, a workstation) need collectives across processes; TPU and GPU
        # backends bring their own and ignore this.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=a.coordinator,
                                   num_processes=a.num_processes, process_id=a.process_id)


def main(argv=None) -> int:
    try:
        config, flags = parse_args(argv)
        config.validate()
        join_hosts(flags)
        manifest = run(config)
    except (UserError, OSError) as e:  # OSError: missing files, no access to a bucket
        print(f"error: {e}", file=sys.stderr)
        return 2
    if jax.process_index() == 0:
        print(json.dumps({k: manifest[k] for k in ("num_images", "shares", "max_deviation",
                                                   "last_run") if k in manifest}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
