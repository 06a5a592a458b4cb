"""The one flag system: flags generated from the config dataclasses, errors in field or flag terms."""

import dataclasses
import typing

import pytest

from dg_jax import configs
from dg_jax.errors import UserError
from dg_jax.flags import config_from_flags, config_parser, error_line, flag_names
from dg_jax.generation import GenerateConfig
from dg_jax.guidance.distribution import GuidanceConfig
from dg_jax.training.hspace import CollectConfig
from sample import generate


def parse(*argv) -> GenerateConfig:
    return generate.parse_args(["--out", "o", *argv])[0]


def test_no_flags_give_the_dataclass_defaults():
    assert parse() == GenerateConfig(out="o")
    parser = config_parser(CollectConfig, "")
    assert config_from_flags(parser.parse_args(["--out", "h"]), CollectConfig) == \
        CollectConfig(out="h")


def test_every_scalar_field_of_the_job_configs_has_a_flag():
    def scalar_paths(cls, prefix=""):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(f.default):
                yield from scalar_paths(type(f.default), f"{prefix}{f.name}.")
            elif typing.get_origin(hints[f.name]) is not tuple or f.metadata:
                yield prefix + f.name

    for cls in (GenerateConfig, CollectConfig):
        flags = flag_names(config_parser(cls, ""))
        assert set(scalar_paths(cls)) <= set(flags), cls


def test_names_aliases_choices_and_parsers():
    config = parse("--num-inference-steps", "7", "--sampler", "ddpm", "--push-scale", "5",
                   "--target", "hair=0.5,0.5", "--joint", "hair,skin=uniform",
                   "--preserve", "smile,skin", "--preserve", "glasses", "--max-h-step", "0",
                   "--no-calibrated", "--cfg-scale", "3", "--prompt", "a", "--prompt", "b",
                   "--min-contrast", "0.1")
    assert config.sampler.num_steps == 7 and config.sampler.method == "ddpm"
    assert config.guidance.scale == 5 and config.guidance.max_step is None
    assert not config.guidance.calibrated
    assert config.targets == ("hair=0.5,0.5", "hair,skin=uniform")
    assert config.preserve == ("smile", "skin", "glasses")
    assert config.text.cfg_scale == 3 and config.text.prompts == ("a", "b")
    assert config.guard.min_contrast == 0.1


@pytest.mark.parametrize("argv", [["--sampler", "euler"], ["--method", "magic"],
                                  ["--dtype", "float16"], ["--guidance-loss", "mse"]])
def test_literal_fields_refuse_other_values(argv, capsys):
    with pytest.raises(SystemExit) as e:
        parse(*argv)
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_errors_name_fields_in_the_library_and_flags_on_the_command_line():
    with pytest.raises(UserError) as e:
        GuidanceConfig(temperature=0.0)
    assert str(e.value) == "temperature must be > 0, got 0.0"
    parser = generate.make_parser()
    assert error_line(e.value.within("guidance."), parser) == \
        "error: --temperature must be > 0, got 0.0"
    with pytest.raises(UserError) as e:
        dataclasses.replace(GenerateConfig(), num_images=0).validate()
    assert str(e.value) == "num_images must be positive"
    assert error_line(e.value, parser) == "error: --num-images must be positive"
    # a nested config's check inside the job's config: its flag, or its full path in the library
    bad_cfg = dataclasses.replace(GenerateConfig(), text=dataclasses.replace(
        GenerateConfig().text, cfg_scale=3.0))
    with pytest.raises(UserError) as e:
        bad_cfg.validate()
    assert str(e.value).startswith("text.cfg_scale is classifier-free guidance, for text models "
                                   "with text.prompts; the strength of distribution guidance "
                                   "is guidance.scale")
    assert error_line(e.value, parser).startswith("error: --guidance-scale is classifier-free")
    assert error_line(e.value, parser).endswith("is --push-scale")


def test_a_field_declares_its_flag_with_option():
    @dataclasses.dataclass(frozen=True)
    class Job:
        mode: typing.Literal["fast", "exact"] = configs.option("fast", "how", flag="how")
        names: tuple[str, ...] = configs.option((), "repeatable", sep=",")
        size: int | None = None

    parser = config_parser(Job, "")
    args = parser.parse_args(["--how", "exact", "--names", "a,b", "--names", "c", "--size", "3"])
    assert config_from_flags(args, Job) == Job("exact", ("a", "b", "c"), 3)
    assert flag_names(parser) == {"help": "-h", "mode": "--how", "names": "--names",
                                  "size": "--size", "config": "--config"}


def test_a_malformed_target_is_refused_before_any_model_loads(capsys):
    with pytest.raises(UserError, match="target hair sums to 0.9000, not 1"):
        GenerateConfig(method="distribution", targets=("hair=0.5,0.4",)).validate()
    assert generate.main(["--out", "o", "--method", "distribution", "--target", "hair=a"]) == 2
    assert capsys.readouterr().err == "error: target 'hair=a': probabilities must be numbers\n"
