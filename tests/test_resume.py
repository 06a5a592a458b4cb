"""Resuming a run from OUT/run.json (--resume), and output folders whose records are damaged."""

import json
import shutil

import pytest
from flax import nnx
from helpers import TINY_CLASSIFIER, TINY_UNET, crash_at_shard

from dg_jax import checkpoints
from dg_jax.data import generated
from dg_jax.guidance.distribution import GuidanceConfig
from dg_jax.models.classifier import AttributeClassifier
from dg_jax.models.unet import UNet
from sample import generate as cli


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    checkpoints.save_bundle(root / "unet", "unet", TINY_UNET.__dict__,
                            UNet(TINY_UNET, rngs=nnx.Rngs(0)))
    checkpoints.save_bundle(root / "clf", "classifier",
                            {"attributes": TINY_CLASSIFIER.attributes,
                             "channels": TINY_CLASSIFIER.channels, "groups": TINY_CLASSIFIER.groups},
                            AttributeClassifier(TINY_CLASSIFIER, rngs=nnx.Rngs(0)))
    return root


@pytest.fixture(scope="module")
def recorded(bundles, tmp_path_factory):
    """A finished run of `flags` (read only: copy it to change it)."""
    out = tmp_path_factory.mktemp("recorded") / "run"
    assert cli.main(flags(bundles, out)) == 0
    return out


def flags(bundles, out):
    return ["--out", str(out), "--model", str(bundles / "unet"), "--classifier",
            str(bundles / "clf"), "--num-images", "8", "--batch-size", "4", "--shard-size", "4",
            "--steps", "2", "--seed", "5", "--on-degenerate", "warn"]  # random UNet: noise


def test_resume_replays_the_recorded_command(bundles, recorded, tmp_path, capsys):
    out = tmp_path / "out"
    with crash_at_shard(1):
        cli.main(flags(bundles, out))
    run_json = (out / "run.json").read_text()
    capsys.readouterr()
    # a flag that disagrees with the record: one line, nothing written
    assert cli.main(["--out", str(out), "--resume", "--seed", "6"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --resume: seed is 6 on the command line but 5 in ")
    assert "\n" not in err and (out / "run.json").read_text() == run_json
    # the same value, and flags the record does not hold, are fine
    assert cli.main(["--out", str(out), "--resume", "--steps", "2", "--png",
                     "--on-degenerate", "warn"]) == 0
    resumed, whole = generated.read_generated(out), generated.read_generated(recorded)
    assert (resumed["image"] == whole["image"]).all()
    assert json.loads((out / "manifest.json").read_text())["last_run"]["generated"] == 4
    assert len(list((out / "png").iterdir())) == 4  # --png came from the resuming command
    assert cli.main(["--out", str(tmp_path / "nothing"), "--resume"]) == 2
    assert "has no run.json" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["run.json", "manifest.json"])
def test_a_truncated_record_is_a_one_line_error(bundles, recorded, tmp_path, capsys, name):
    out = tmp_path / "out"
    shutil.copytree(recorded, out)
    damaged = (out / name).read_text()[:40]
    (out / name).write_text(damaged)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for args in (flags(bundles, out), ["--out", str(out), "--resume"]):
        assert cli.main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {out / name} is corrupt (") and "\n" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_config_file_repeats_a_run_and_flags_change_it(recorded, tmp_path, capsys):
    run_json = str(recorded / "run.json")
    # the same run elsewhere: the same images
    warn = ["--on-degenerate", "warn"]  # not recorded: it does not change the images
    assert cli.main(["--config", run_json, "--out", str(tmp_path / "again"), *warn]) == 0
    first, again = (generated.read_generated(d) for d in (recorded, tmp_path / "again"))
    assert (first["image"] == again["image"]).all()
    # a flag changes the file's setting, the others stay
    config, _ = cli.parse_args(["--config", run_json, "--out", str(tmp_path / "seed6"),
                                "--seed", "6", "--num-images", "4"])
    assert (config.seed, config.num_images, config.sampler.num_steps) == (6, 4, 2)
    assert config.model == json.loads((recorded / "run.json").read_text())["model"]
    assert cli.main(["--config", str(tmp_path / "none.json"), "--out", str(tmp_path / "x")]) == 2
    assert "no config file" in capsys.readouterr().err


def test_config_file_for_a_dataclass_entry_point(tmp_path):
    from dg_jax.flags import main_for

    seen = []
    (tmp_path / "c.json").write_text(json.dumps({"steps": 7, "hidden": 12}))
    from dg_jax.training.adp import ADPTrainConfig

    assert main_for(ADPTrainConfig, seen.append, "", ["--config", str(tmp_path / "c.json"),
                                                      "--hidden", "16"]) == 0
    assert seen[0].steps == 7 and seen[0].hidden == 16


def test_a_record_written_before_a_later_field_resumes_as_it_was_made(recorded, tmp_path):
    """A run.json leaves out a later field (GuidanceConfig.posterior_power, ...) while it holds
    its pinned value, as every record written before the field existed does: --resume and
    --config rebuild that value, not today's default, so such a data set still continues."""
    out = tmp_path / "out"
    shutil.copytree(recorded, out)
    record = json.loads((out / "run.json").read_text())
    for name in ("posterior_power", "power_from", "power_min_accuracy"):
        record["guidance"].pop(name, None)
    (out / "run.json").write_text(json.dumps(record))
    for args in (["--out", str(out), "--resume"],
                 ["--config", str(out / "run.json"), "--out", str(tmp_path / "again")]):
        config, _ = cli.parse_args(args)
        assert (config.guidance.posterior_power, config.guidance.power_from,
                config.guidance.power_min_accuracy) == (1.0, 0.0, 0.0)
    assert cli.main(["--out", str(out), "--resume", "--on-degenerate", "warn"]) == 0


def test_a_hand_written_partial_config_keeps_todays_defaults(tmp_path):
    """--config with a file that leaves fields out on purpose: they take today's defaults, the
    later fields included (only a whole record is read as written before them)."""
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"num_images": 16, "guidance": {"scale": 5000.0}}))
    config, _ = cli.parse_args(["--config", str(partial), "--out", str(tmp_path / "o")])
    assert (config.num_images, config.guidance.scale) == (16, 5000.0)
    assert config.guidance.posterior_power == GuidanceConfig().posterior_power
