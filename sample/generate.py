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

import dataclasses
import json
import sys

import jax

from dg_jax.configs import option
from dg_jax.errors import UserError
from dg_jax.flags import (
    add_config_flags,
    add_prompts_file_flag,
    command_line_defaults,
    config_from_flags,
    config_parser,
    parse_config,
    run_cli,
    user_message,
)
from dg_jax.generation import LATER_FIELDS, GenerateConfig, run
from dg_jax.run_record import COMMAND_LINE_FIELDS, resumed_config


@dataclasses.dataclass(frozen=True)
class LaunchConfig:
    """How this process runs the job; not part of the data set's config (run.json)."""

    resume: bool = option(False, "continue the run in --out with the config its run.json "
                                 "records (retype nothing); flags given as well must agree with "
                                 "the record")
    compilation_cache: str = option("", "a folder (local or gs://) where compiled programs are "
                                        "kept and reused by a resume or the next job")
    distributed: bool = option(False, "join the other hosts with jax.distributed.initialize() "
                                      "(on Cloud TPU the rest is found automatically)",
                               group="multi-host (one process per host)")
    coordinator: str = option("", "host:port of process 0 (not needed on Cloud TPU)",
                              group="multi-host (one process per host)")
    num_processes: int | None = option(None, group="multi-host (one process per host)")
    process_id: int | None = option(None, group="multi-host (one process per host)")


def make_parser():
    parser = config_parser(GenerateConfig, __doc__)
    add_config_flags(parser, LaunchConfig)
    add_prompts_file_flag(parser)
    return parser


def parse_args(argv=None, parser=None) -> tuple[GenerateConfig, LaunchConfig]:
    parser = parser or make_parser()
    a = parser.parse_args(argv)
    if a.resume and a.config:  # before reading either file
        raise UserError("--resume continues --out's own run.json; give --config without it")
    config, _ = parse_config(parser, GenerateConfig, argv, keep=COMMAND_LINE_FIELDS,
                             later_fields=LATER_FIELDS)
    launch = config_from_flags(a, LaunchConfig)
    if launch.resume:
        config = resumed_config(config, command_line_defaults(config), LATER_FIELDS)
    return config, launch


def join_hosts(launch: LaunchConfig) -> None:
    """jax.distributed.initialize() before anything touches a device, and the compilation
    cache before anything compiles."""
    if launch.compilation_cache:
        jax.config.update("jax_compilation_cache_dir", launch.compilation_cache)
        # every program: the small per-batch ones too cost seconds each on every host
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    if launch.distributed:
        # CPU hosts (tests, a workstation) need collectives across processes; TPU and GPU
        # backends bring their own and ignore this.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=launch.coordinator or None,
                                   num_processes=launch.num_processes,
                                   process_id=launch.process_id)


def main(argv=None) -> int:
    parser = make_parser()

    def generate():
        config, launch = parse_args(argv, parser)
        config.validate()
        join_hosts(launch)
        manifest = run(config, describe=lambda e: user_message(e, parser))
        if jax.process_index() == 0:
            print(json.dumps({k: manifest[k] for k in ("num_images", "shares", "max_deviation",
                                                       "last_run") if k in manifest}, indent=2))

    return run_cli(parser, generate)


if __name__ == "__main__":
    sys.exit(main())
