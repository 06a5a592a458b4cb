import dataclasses
import json
import signal
import subprocess
import time

import grain.python as grain
import numpy as np
import pytest
from etils.epath import testing as epath_testing
from flax import nnx
from helpers import TINY_CLASSIFIER, TINY_UNET, crash_at_shard

from bench import kill_resume
from dg_jax import checkpoints
from dg_jax.data import generated, shards
from dg_jax.data.writer import PART_PATTERN, dataset_files
from dg_jax.diffusion.sampler_config import SamplerConfig
from dg_jax.errors import ConfigMismatchError, UserError
from dg_jax.generation import (
    WEAK_ADP_ACCURACY,
    GenerateConfig,
    guidance_for,
    load_guidance,
    run,
)
from dg_jax.guard import GuardConfig
from dg_jax.guidance.distribution import GuidanceConfig, powered_targets
from dg_jax.models.classifier import AttributeClassifier
from dg_jax.models.unet import UNet
from sample import generate as cli


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    checkpoints.save_bundle(root / "unet", "unet", TINY_UNET.__dict__,
                            UNet(TINY_UNET, rngs=nnx.Rngs(0)), dtype="float16")
    checkpoints.save_bundle(root / "clf", "classifier",
                            {"attributes": TINY_CLASSIFIER.attributes,
                             "channels": TINY_CLASSIFIER.channels, "groups": TINY_CLASSIFIER.groups},
                            AttributeClassifier(TINY_CLASSIFIER, rngs=nnx.Rngs(0)))
    return root


def config(bundles, out, **kw):
    base = dict(out=str(out), num_images=10, seed=7, batch_size=4, shard_size=6,
                model=str(bundles / "unet"), classifier=str(bundles / "clf"),
                sampler=SamplerConfig(num_steps=3),
                # a random UNet makes noise, which the quality guard would stop
                guard=GuardConfig(on_degenerate="warn"))
    return GenerateConfig(**{**base, **kw})


def test_generate_writes_readable_deterministic_shards(bundles, tmp_path):
    manifest = run(config(bundles, tmp_path / "a", png=True))
    data = generated.read_generated(tmp_path / "a")
    assert len(shards.shard_files(tmp_path / "a")) == 2
    assert data["image"].shape == (10, 8, 8, 3) and data["image"].dtype == np.uint8
    np.testing.assert_array_equal(data["index"], np.arange(10))
    assert data["index"].dtype == np.int64 and data["label_skin"].dtype == np.int32
    assert data["prob_skin"].shape == (10, 3)
    np.testing.assert_allclose(data["prob_skin"].sum(-1), 1, atol=1e-5)
    assert manifest["num_images"] == 10 and sum(manifest["counts"]["hair"]) == 10
    on_disk = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert on_disk["shares"] == manifest["shares"]
    assert len(list((tmp_path / "a" / "png").glob("*.png"))) == 10
    # grain reads the manifest's shard files directly (docs/GENERATION.md)
    source = grain.ArrayRecordDataSource(dataset_files(tmp_path / "a"))
    assert len(source) == 10
    record = generated.decode_record(source[7])
    assert record["index"] == 7 and record["image"].shape == (8, 8, 3)
    np.testing.assert_array_equal(record["image"], data["image"][7])
    # Same config and seed elsewhere, other batch size: the same images.
    run(config(bundles, tmp_path / "b", batch_size=2))
    other = generated.read_generated(tmp_path / "b")
    np.testing.assert_allclose(other["image"].astype(int), data["image"].astype(int), atol=1)
    # Another seed: other images.
    run(config(bundles, tmp_path / "c", seed=8))
    assert not np.array_equal(generated.read_generated(tmp_path / "c")["image"], data["image"])


def part(out, shard):
    return out / PART_PATTERN.format(shard, 0, 1)


def test_rerun_after_a_crash_continues_and_refuses_other_configs(bundles, tmp_path):
    whole = tmp_path / "whole"
    run(config(bundles, whole))
    out = tmp_path / "d"
    with crash_at_shard(1):  # shard 1's part is on disk, the manifest does not list it yet
        run(config(bundles, out))
    assert part(out, 1).exists() and json.loads((out / "manifest.json").read_text())[
        "complete_shards"] == 1
    # the stray part is not data...
    np.testing.assert_array_equal(generated.read_generated(out)["index"], np.arange(6))
    manifest = run(config(bundles, out))
    assert manifest["last_run"]["generated"] == 4 and manifest["num_images"] == 10
    for shard in (0, 1):  # ...and the rerun ends with the uninterrupted run's bytes
        assert part(out, shard).read_bytes() == part(whole, shard).read_bytes()
    first = part(out, 0).read_bytes()
    with pytest.raises(ConfigMismatchError, match="another config"):
        run(config(bundles, out, seed=99))
    assert part(out, 0).read_bytes() == first
    # a folder moved elsewhere is still the same data set: its rerun generates nothing
    moved = tmp_path / "moved"
    out.rename(moved)
    assert run(config(bundles, moved))["last_run"]["generated"] == 0


def test_cli_errors_are_one_line_and_exit_2(bundles, tmp_path, capsys):
    assert cli.main(["--out", str(tmp_path / "x"), "--num-images", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --num-images must be positive"
    assert cli.main(["--out", str(tmp_path / "y"), "--model", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no checkpoint bundle") and "\n" not in err
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "notes.txt").write_text("keep me")
    assert cli.main(["--out", str(tmp_path / "z"), "--model", str(bundles / "unet"),
                     "--classifier", str(bundles / "clf")]) == 2
    assert "not a dg-jax output" in capsys.readouterr().err
    assert (tmp_path / "z" / "notes.txt").read_text() == "keep me"


def test_reader_reports_missing_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="no generated shards"):
        generated.read_generated(tmp_path)


def test_embedded_default_generates_labelled_faces(tmp_path):
    # The shipped UNet and classifier load and run end to end through the CLI (few steps).
    assert cli.main(["--out", str(tmp_path), "--num-images", "3", "--batch-size", "4",
                     "--steps", "2"]) == 0
    data = generated.read_generated(tmp_path)
    assert data["image"].shape == (3, 32, 32, 3)
    assert set(k for k in data if k.startswith("label_")) == {
        "label_hair", "label_glasses", "label_skin", "label_smile"}


def test_embedded_adp_is_the_default_for_the_embedded_model(tmp_path):
    # The shipped ADP fits the shipped UNet (same h shape), so guided generation needs no --adp.
    assert cli.main(["--out", str(tmp_path), "--num-images", "2", "--batch-size", "2",
                     "--steps", "2", "--method", "distribution", "--joint", "hair,skin=uniform",
                     "--target", "glasses=0.5,0.5"]) == 0
    assert generated.read_generated(tmp_path)["image"].shape == (2, 32, 32, 3)


def test_kill_9_mid_run_then_rerun_gives_the_same_data_set(bundles, tmp_path):
    # bench/kill_resume.py repeats this 10 times on the embedded model, at random moments
    cfg = dict(num_images=40, batch_size=4, shard_size=4)
    run(config(bundles, tmp_path / "ref", **cfg))
    out = tmp_path / "out"
    proc = subprocess.Popen(kill_resume.command(out, [
        "--model", str(bundles / "unet"), "--classifier", str(bundles / "clf"), "--seed", "7",
        "--num-images", "40", "--batch-size", "4", "--shard-size", "4", "--steps", "3",
        "--on-degenerate", "warn"]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (out / "manifest.json").exists() and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)  # just after the first shard is recorded
    proc.wait()
    assert 1 <= len(dataset_files(out)) < 10  # killed mid-run
    manifest = run(config(bundles, out, **cfg))  # the same command again
    assert manifest["num_images"] == 40
    assert kill_resume.digest(out) == kill_resume.digest(tmp_path / "ref")
    assert kill_resume.index_check(out, 40) == (0, 0)


def test_object_store_output_goes_through_epath(bundles, tmp_path, monkeypatch):
    # etils' mock maps gs:// onto the local file system (relative to the working directory), so
    # the object-store code path (parts copied from a local temporary, manifest written whole)
    # runs without a bucket.
    monkeypatch.chdir(tmp_path)
    with epath_testing.mock_epath():
        manifest = run(config(bundles, "gs://bucket/faces"))
        with pytest.raises(ConfigMismatchError, match="another config"):
            run(config(bundles, "gs://bucket/faces", seed=99))
    local = tmp_path / "gs:" / "bucket" / "faces"
    assert manifest["num_images"] == 10 and (local / "manifest.json").is_file()
    assert generated.read_generated(local)["image"].shape == (10, 8, 8, 3)


def test_text_to_image_options_are_recorded_only_when_used():
    """Output folders written before the text-to-image options existed stay resumable: the
    options enter run.json only when they differ from their defaults."""
    from dg_jax import configs
    from dg_jax.text_to_image import TextToImageConfig

    assert "text" not in configs.to_recorded_dict(GenerateConfig(), ("text",))
    used = GenerateConfig(text=TextToImageConfig(prompts=("a doctor",)))
    assert configs.to_recorded_dict(used, ("text",))["text"]["prompts"] == ["a doctor"]


def test_a_later_field_of_a_nested_config_is_recorded_only_when_used():
    """A run recorded before GuidanceConfig.posterior_power / power_from existed resumes at
    their defaults; another value is recorded (and so refused on that folder)."""
    from dg_jax import configs
    from dg_jax.generation import LATER_FIELDS

    later = ("posterior_power", "power_from", "power_min_accuracy")
    before = GenerateConfig(guidance=GuidanceConfig(posterior_power=1.0, power_from=0.0,
                                                    power_min_accuracy=0.0))
    recorded = configs.to_recorded_dict(before, LATER_FIELDS)["guidance"]
    assert not set(later) & set(recorded)
    # the defaults (power 4 from 0.8 on attributes read at 0.85) are not what was done before
    recorded = configs.to_recorded_dict(GenerateConfig(), LATER_FIELDS)["guidance"]
    assert [recorded[name] for name in later] == [4.0, 0.8, 0.85]


def test_a_later_field_is_left_out_at_its_pinned_value_whatever_the_default():
    """A default changed after data were written must not let the new default continue them:
    a later field is left out only while it holds the value it pins (what was done before it)."""
    from dg_jax import configs

    pinned = {"guidance.posterior_power": 2.0}  # as if 2 had been the old way
    assert "posterior_power" not in configs.to_recorded_dict(
        GenerateConfig(guidance=GuidanceConfig(posterior_power=2.0)), pinned)["guidance"]
    assert configs.to_recorded_dict(GenerateConfig(), pinned)["guidance"]["posterior_power"] == 4


def test_guard_stops_an_unbounded_huge_push_and_writes_nothing(tmp_path, capsys):
    """Without the trust region a huge scale breaks the images: the run stops with one line
    naming the cause, exit 2, nothing written; with the default bound the same push is safe."""
    args = ["--num-images", "4", "--batch-size", "4", "--steps", "4", "--method",
            "distribution", "--target", "hair=0,1", "--push-scale", "1e9"]
    out = tmp_path / "broken"
    assert cli.main(["--out", str(out), *args, "--max-h-step", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: 4 of 4 images from index 0 are broken (") and "guidance" in err
    assert not list(out.glob("shard-*")) and not (out / "manifest.json").exists()
    assert cli.main(["--out", str(tmp_path / "bounded"), *args]) == 0
    manifest = json.loads((tmp_path / "bounded" / "manifest.json").read_text())
    assert manifest["quality"]["broken"] == dict.fromkeys(manifest["quality"]["broken"], 0)
    assert manifest["quality"]["h_change"]["step_max"] <= 1.0 + 1e-5


@pytest.mark.parametrize("flags, message", [
    (["--push-scale", "nan"], "error: --push-scale must be finite, got nan"),
    (["--temperature", "inf"], "error: --temperature must be finite, got inf"),
    (["--max-h-step", "nan"], "error: --max-h-step must be finite, got nan"),
    (["--target-weight", "hair=nan"], "error: --target-weight: bad 'hair=nan'"),
    # diffusers' name means classifier-free guidance, never the push on h
    (["--guidance-scale", "3000"], "the strength of distribution guidance is --push-scale"),
])
def test_non_finite_guidance_flags_are_refused_up_front(tmp_path, capsys, flags, message):
    out = tmp_path / "x"
    assert cli.main(["--out", str(out), "--method", "distribution", "--target", "hair=0.5,0.5",
                     *flags]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_preserve_adds_the_unguided_shares_and_weak_attributes_are_named(capsys):
    config = GenerateConfig(method="distribution", targets=("smile=0.5,0.5",),
                            preserve=("hair", "skin"))
    adp, targets, unguided, accuracy = load_guidance(config, None)
    recorded = unguided["label_shares"]
    assert [t.name for t in targets] == ["smile", "hair", "skin"]
    # the embedded ADP's best-step accuracy reaches its guidance, where
    # --posterior-power-min-accuracy reads it
    assert accuracy["smile"] < WEAK_ADP_ACCURACY <= min(accuracy["hair"], accuracy["skin"])
    guidance = guidance_for(config, adp, None, targets, accuracy)
    # under the default accuracy line the posterior power acts on hair and skin, not smile
    assert powered_targets(config.guidance, targets, guidance.accuracy) == {"hair", "skin"}
    np.testing.assert_allclose(targets[1].array, recorded["hair"], atol=1e-6)
    assert "the ADP reads smile poorly" in capsys.readouterr().err
    with pytest.raises(UserError, match="both a target and preserved"):
        load_guidance(dataclasses.replace(config, preserve=("smile",)), None)
    # a library call names the config's fields
    with pytest.raises(UserError, match="^preserve holds attributes through the ADP: it needs "
                                        "method distribution"):
        dataclasses.replace(config, method="none", targets=()).validate()
