"""Command-line flags from a dataclass config: `--field-name` per scalar field, `--outer.inner`
for the scalar fields of a nested dataclass config."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from dg_jax.convert.guided_diffusion import PRESETS
from dg_jax.diffusion.sampler_config import SamplerConfig
from dg_jax.errors import UserError
from dg_jax.run_record import recorded_config
from dg_jax.text_to_image import TextToImageConfig


def add_config_flags(parser: argparse.ArgumentParser, config_cls, defaults=None,
                     prefix: str = "") -> None:
    """One flag per scalar field; fields that are dataclasses themselves get dotted flags
    (`--unet.prediction-type`) for their scalar fields."""
    defaults = config_cls() if defaults is None else defaults
    for field in dataclasses.fields(config_cls):
        value = getattr(defaults, field.name)
        flag, dest = f"--{prefix}{field.name.replace('_', '-')}", prefix + field.name
        if dataclasses.is_dataclass(value):
            add_config_flags(parser, type(value), value, prefix=f"{dest}.")
        elif isinstance(value, bool):
            parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction,
                                default=value)
        elif isinstance(value, (int, float, str)):
            parser.add_argument(flag, dest=dest, type=type(value), default=value,
                                help=f"default: {value!r}")


def config_from_flags(args: argparse.Namespace, config_cls, defaults=None, prefix: str = ""):
    defaults = config_cls() if defaults is None else defaults
    values = vars(args)
    changes = {}
    for field in dataclasses.fields(config_cls):
        value, dest = getattr(defaults, field.name), prefix + field.name
        if dataclasses.is_dataclass(value):
            changes[field.name] = config_from_flags(args, type(value), value, prefix=f"{dest}.")
        elif dest in values:
            changes[field.name] = values[dest]
    return dataclasses.replace(defaults, **changes)


def main_for(config_cls, run, doc: str, argv=None) -> int:
    """An entry point's main: parses `--field` flags for config_cls (and `--config FILE`, a JSON
    file of its fields that the flags given change) and calls run(config). Returns the exit
    status: 0, or 2 after one line on stderr for bad input."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(parser, config_cls)
    parser.add_argument("--config", default="",
                        help="start from this JSON file of the config's fields; flags given "
                             "as well change it")
    try:
        args = parser.parse_args(argv)
        config = config_from_flags(args, config_cls)
        if args.config:
            defaults = config_from_flags(parser.parse_args([]), config_cls)
            config = recorded_config(args.config, config, defaults)
        run(config)
    except (UserError, OSError) as e:  # OSError: missing files, no access to a bucket
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def add_model_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-config", default="",
                        help="a guided-diffusion --model's architecture: a preset "
                             f"({', '.join(PRESETS)}) or a JSON file of its create_model and "
                             "diffusion flags")


def add_sampler_flags(parser: argparse.ArgumentParser) -> None:
    """--steps, --spacing, --steps-offset, --sampler, --eta, --clip-sample (see SamplerConfig)."""
    parser.add_argument("--steps", "--num-inference-steps", dest="steps", type=int,
                        help="sampling steps (default: a respacing's count, else the model's, 50)")
    parser.add_argument("--spacing",
                        help="timestep spacing: leading, trailing, linspace, or a guided-diffusion "
                             "respacing such as ddim50, 250 or 10,20,30 (default: the model's)")
    parser.add_argument("--steps-offset", type=int,
                        help="offset of leading timesteps (default: the model's)")
    parser.add_argument("--sampler", dest="sampler_method", default="ddim",
                        choices=["ddim", "ddpm", "dpm++2m"])
    parser.add_argument("--eta", type=float, default=1.0,
                        help="DDIM noise (1: as the original code; 0: deterministic)")
    parser.add_argument("--clip-sample", type=float,
                        help="clip x0_hat to [-c, c] each step; 0: off, as the paper (default: "
                             "the model's; 1 for the embedded model)")


def add_text_flags(parser: argparse.ArgumentParser) -> None:
    """Text-to-image flags (see TextToImageConfig)."""
    t = parser.add_argument_group("text-to-image (a Stable Diffusion --model)")
    t.add_argument("--prompt", action="append", default=[],
                   help="repeatable: generation puts each prompt in an equal group of rows of "
                        "every batch, and balances each group on its own")
    t.add_argument("--prompts-file", help="more prompts, one per line")
    t.add_argument("--negative-prompt", default="",
                   help="the unconditional branch of classifier-free guidance (default: empty)")
    t.add_argument("--guidance-scale", "--cfg-scale", dest="cfg_scale", type=float,
                   help="classifier-free guidance weight w, u + w (c - u), as diffusers' "
                        f"guidance_scale (default {TextToImageConfig.cfg_scale}; 1: the "
                        "conditional branch only); the strength of distribution guidance is "
                        "--push-scale")
    t.add_argument("--clip", default="", help="CLIPModel folder: zero-shot labels")
    t.add_argument("--class-prompt", action="append", default=[],
                   help="with --clip, per attribute: ATTR=prompt for class 0|prompt for class "
                        "1|...; repeatable")


def text_from_flags(args: argparse.Namespace) -> TextToImageConfig:
    prompts = list(args.prompt)
    if args.prompts_file:
        try:
            with open(args.prompts_file) as f:
                prompts += [line.strip() for line in f if line.strip()]
        except OSError as e:
            raise UserError(f"cannot read --prompts-file: {e}") from None
    if args.cfg_scale is not None and not prompts:
        raise UserError("--guidance-scale is classifier-free guidance, for text models with "
                        "--prompt; the strength of distribution guidance is --push-scale")
    cfg_scale = TextToImageConfig.cfg_scale if args.cfg_scale is None else args.cfg_scale
    return TextToImageConfig(prompts=tuple(prompts), negative_prompt=args.negative_prompt,
                             cfg_scale=cfg_scale, clip=args.clip,
                             class_prompts=tuple(args.class_prompt))


def sampler_from_flags(args: argparse.Namespace) -> SamplerConfig:
    try:
        return SamplerConfig(num_steps=args.steps, method=args.sampler_method, eta=args.eta,
                             spacing=args.spacing, steps_offset=args.steps_offset,
                             clip_sample=args.clip_sample)
    except ValueError as e:
        raise UserError(str(e)) from None
