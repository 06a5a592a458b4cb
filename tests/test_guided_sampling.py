import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import TINY_CLASSIFIER, TINY_UNET, crash_at_shard

from dg_jax import checkpoints, configs
from dg_jax.balance import corrected_distribution
from dg_jax.balanced import generate_balanced
from dg_jax.checkpoints import save_bundle
from dg_jax.data import read_generated
from dg_jax.diffusion.sampler_config import DEFAULT_SAMPLING, SamplerConfig
from dg_jax.diffusion.samplers import sample_keys
from dg_jax.diffusion.schedules import ScheduleConfig
from dg_jax.generation import run as run_generation
from dg_jax.guard import GuardConfig
from dg_jax.guidance.distribution import LATER_FIELDS, GuidanceConfig
from dg_jax.guidance.methods import DistributionGuidance
from dg_jax.guidance.targets import parse_target
from dg_jax.loading import load_classifier, save_unet
from dg_jax.models.adp import ADP, ADPConfig
from dg_jax.models.classifier import AttributeClassifier
from dg_jax.models.config import ModelConfig
from dg_jax.models.unet import UNet
from dg_jax.sampling import make_sampler
from sample import generate

MODEL_CONFIG = ModelConfig(TINY_UNET, ScheduleConfig(), DEFAULT_SAMPLING)
SAMPLER = SamplerConfig(num_steps=4, eta=0.0)
TARGETS = [parse_target("hair=1,0", {"hair": 2})]


@pytest.fixture(scope="module")
def unet():
    return UNet(TINY_UNET, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def adp():
    config = ADPConfig(attributes=(("hair", 2),), h_shape=TINY_UNET.h_shape, hidden=16, time_dim=8)
    return ADP(config, rngs=nnx.Rngs(3))


def run(unet, adp, scale, targets=TARGETS):
    guidance = GuidanceConfig(scale=scale, temperature=1.0, schedule="constant")
    method = DistributionGuidance(adp, targets, guidance) if adp is not None else None
    sample = make_sampler(unet, MODEL_CONFIG, SAMPLER, method).jitted()
    images, trace = sample(sample_keys(0, np.arange(8)))
    return np.asarray(images), {k: np.asarray(v) for k, v in trace.get("p_hat", {}).items()}


@pytest.fixture(scope="module")
def runs(unet, adp):
    return {"unguided": run(unet, None, 0.0, targets=()), "zero": run(unet, adp, 0.0),
            "guided": run(unet, adp, 50.0)}


def test_zero_scale_is_exactly_unguided(runs):
    unguided, none = runs["unguided"]
    guided, p_hats = runs["zero"]
    assert none == {} and p_hats["hair"].shape == (4, 2)  # p_hat at each of the 4 steps
    np.testing.assert_array_equal(guided, unguided)  # bit for bit


def test_the_posterior_power_takes_effect_from_its_fraction_of_the_loop_on(unet, adp):
    targets = [parse_target("hair=0.3,0.7", {"hair": 2})]  # one-hot targets ignore the power

    def images(accuracy=None, **power):
        # unless a test names them, the values that give power 1 (the defaults would not)
        guidance = GuidanceConfig(scale=50.0, temperature=1.0, schedule="constant",
                                  **{**LATER_FIELDS, **power})
        sample = make_sampler(unet, MODEL_CONFIG, SAMPLER,
                              DistributionGuidance(adp, targets, guidance,
                                                   accuracy=accuracy)).jitted()
        return np.asarray(sample(sample_keys(0, np.arange(8)))[0])

    plain = images()
    # from the end of the loop on: never, so exactly the power-1 push
    np.testing.assert_array_equal(images(posterior_power=4.0, power_from=1.0), plain)
    everywhere = images(posterior_power=4.0)
    last_step = images(posterior_power=4.0, power_from=0.75)  # step 3 of 4
    for a, b in [(everywhere, plain), (last_step, plain), (last_step, everywhere)]:
        assert np.abs(a - b).max() > 1e-4
    # an attribute the ADP reads under power_min_accuracy keeps power 1; one it reads at or
    # above it takes the power
    np.testing.assert_array_equal(
        images({"hair": 0.9}, posterior_power=4.0, power_min_accuracy=0.95), plain)
    np.testing.assert_array_equal(
        images({"hair": 0.9}, posterior_power=4.0, power_min_accuracy=0.85), everywhere)
    # the defaults: the power in the last fifth of the loop (step 3 of 4) on a well-read
    # attribute, none on an ADP that records no accuracy
    defaults = {name: getattr(GuidanceConfig(), name) for name in LATER_FIELDS}
    np.testing.assert_array_equal(images({"hair": 0.9}, **defaults), last_step)
    np.testing.assert_array_equal(images(**defaults), plain)


def test_guidance_changes_the_samples_through_h(runs):
    free, free_p = runs["zero"]
    guided, guided_p = runs["guided"]
    # Step 0 is not guided (start_step=1), so both runs see the same first p_hat.
    np.testing.assert_allclose(guided_p["hair"][0], free_p["hair"][0], atol=1e-6)
    assert np.abs(guided - free).max() > 1e-3 and np.all(np.isfinite(guided))


def test_one_unet_evaluation_per_step(unet, adp, monkeypatch):
    calls = {"encode": 0, "decode": 0, "call": 0}
    for name in calls:
        method = "__call__" if name == "call" else name
        original = getattr(UNet, method)

        def counted(self, *args, _name=name, _original=original):
            calls[_name] += 1
            return _original(self, *args)

        monkeypatch.setattr(UNet, method, counted)
    run(unet, adp, 1.0)
    # The scan body is traced once: one encode and one decode, and the gradient of the
    # distribution loss never runs the UNet again.
    assert calls == {"encode": 1, "decode": 1, "call": 0}


def test_adp_for_another_unet_is_refused(unet):
    config = ADPConfig(attributes=(("hair", 2),), h_shape=(8, 8, 32))
    with pytest.raises(ValueError, match="ADP and UNet do not match"):
        make_sampler(unet, MODEL_CONFIG, SAMPLER,
                     DistributionGuidance(ADP(config, rngs=nnx.Rngs(0)), TARGETS))
    per_step = ADPConfig(attributes=(("hair", 2),), h_shape=TINY_UNET.h_shape,
                         kind="linear_per_step", timesteps=(999, 500, 0))
    with pytest.raises(ValueError, match="per-step ADP was trained for 3"):
        make_sampler(unet, MODEL_CONFIG, SAMPLER,
                     DistributionGuidance(ADP(per_step, rngs=nnx.Rngs(0)), TARGETS))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, unet, adp):
    root = tmp_path_factory.mktemp("bundles")
    save_unet(root / "unet", unet, MODEL_CONFIG)
    save_bundle(root / "adp", "adp", configs.to_dict(adp.config), adp)
    other = ADPConfig(attributes=(("hair", 2),), h_shape=(8, 8, 32))
    save_bundle(root / "other_adp", "adp", configs.to_dict(other), ADP(other, rngs=nnx.Rngs(0)))
    classifier = AttributeClassifier(TINY_CLASSIFIER, rngs=nnx.Rngs(0))
    save_bundle(root / "clf", "classifier", configs.to_dict(TINY_CLASSIFIER), classifier)
    return root


def cli_args(root, out, *extra):
    return ["--out", str(out), "--model", str(root / "unet"), "--classifier", str(root / "clf"),
            "--num-images", "4", "--batch-size", "4", "--steps", "3",
            "--on-degenerate", "warn", *extra]  # a random UNet makes noise


def test_generate_cli_with_distribution_guidance(bundles, tmp_path, capsys):
    args = cli_args(bundles, tmp_path / "g", "--method", "distribution", "--adp",
                    str(bundles / "adp"), "--target", "hair=0.5,0.5", "--push-scale", "3")
    assert generate.main(args) == 0
    # the random UNet's noise is written with a warning that names the flags to change
    warning = "".join(capsys.readouterr())
    assert "images from index 0 are broken" in warning
    assert "--push-scale or --max-h-step, or --on-degenerate warn" in warning
    run = json.loads((tmp_path / "g" / "run.json").read_text())
    assert run["method"] == "distribution" and run["targets"] == ["hair=0.5,0.5"]
    assert run["guidance"]["scale"] == 3.0
    assert generate.main(args) == 0  # rerun: same config, nothing to do


def test_a_run_records_its_adp_weights_and_refuses_other_weights_at_the_same_path(
        bundles, adp, tmp_path, capsys):
    path = tmp_path / "adp"
    shutil.copytree(bundles / "adp", path)
    args = cli_args(bundles, tmp_path / "g", "--method", "distribution", "--adp", str(path),
                    "--target", "hair=0.5,0.5")
    assert generate.main(args) == 0
    recorded = json.loads((tmp_path / "g" / "run.json").read_text())["weights"]["adp_sha256"]
    assert recorded == checkpoints.params_sha256(adp, {})  # the tiny bundle records no report
    # the record is read back as a config: --resume and --config skip what is not a setting
    assert generate.main(["--out", str(tmp_path / "g"), "--resume"]) == 0
    # new weights at the same path must not continue the data set the old ones started
    shutil.rmtree(path)
    save_bundle(path, "adp", configs.to_dict(adp.config), ADP(adp.config, rngs=nnx.Rngs(1)))
    capsys.readouterr()
    assert generate.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "another config (differs in ['weights'])" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("method, target", [("sample", ["--target", "hair=0.5,0.5"]),
                                            ("image", ["--joint", "hair,skin=uniform"])])
def test_generate_cli_with_a_baseline(bundles, tmp_path, method, target):
    # the tiny ADP knows hair only; image guidance steers with the classifier's 4 attributes
    args = cli_args(bundles, tmp_path / method, "--method", method, "--adp", str(bundles / "adp"),
                    *target, "--push-scale", "2")
    assert generate.main(args) == 0
    manifest = json.loads((tmp_path / method / "manifest.json").read_text())
    assert manifest["num_images"] == 4 and manifest["config"]["method"] == method


@pytest.mark.parametrize("extra, message", [
    (["--method", "distribution", "--adp", "ADP", "--target", "hair=0.6,0.6"], "sums to 1.2"),
    (["--method", "distribution", "--adp", "ADP", "--target", "beard=0.5,0.5"],
     "unknown attribute 'beard'"),
    (["--method", "distribution", "--adp", "ADP", "--target", "hair=0.5,0.25,0.25"],
     "needs 2 probabilities"),
    (["--method", "distribution", "--target", "hair=0.5,0.5"], "needs --adp"),
    (["--target", "hair=0.5,0.5"], "needs a guidance --method"),
    (["--method", "sample", "--target", "hair=0.5,0.5"], "--method sample needs --adp"),
    (["--method", "image", "--target", "beard=0.5,0.5"], "unknown attribute 'beard'"),
    (["--method", "distribution", "--adp", "OTHER", "--target", "hair=0.5,0.5"],
     "ADP and UNet do not match"),
    (["--method", "distribution", "--adp", "ADP", "--target", "hair=0.5,0.5",
      "--temperature", "0"], "temperature"),
    (["--method", "distribution", "--adp", "ADP", "--target", "hair=0.5,0.5",
      "--target-weight", "skin=2"], "--target-weight for skin, which is not a target"),
    (["--method", "distribution", "--adp", "ADP", "--target", "hair=0.5,0.5",
      "--target-weight", "hair=x"], "--target-weight: bad 'hair=x'"),
])
def test_bad_guidance_input_is_one_line_and_exit_2(bundles, tmp_path, capsys, extra, message):
    extra = [str(bundles / "adp") if e == "ADP" else str(bundles / "other_adp") if e == "OTHER"
             else e for e in extra]
    assert generate.main(cli_args(bundles, tmp_path / "bad", *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "bad").exists()  # nothing written


def test_the_sampler_runs_inside_the_callers_jit_and_new_params_do_not_recompile(unet, adp):
    guidance = GuidanceConfig(scale=50.0, temperature=1.0, schedule="constant")
    sampler = make_sampler(unet, MODEL_CONFIG, SAMPLER, DistributionGuidance(adp, TARGETS, guidance))
    traced = []

    @jax.jit
    def mean_image_and_last_p_hat(params, keys):  # the caller's own program around it
        traced.append(1)
        images, trace = sampler(params, keys)
        return images.mean(0), trace["p_hat"]["hair"][-1]

    keys = sample_keys(0, np.arange(4))
    first = mean_image_and_last_p_hat(sampler.params, keys)
    tuned = jax.tree.map(lambda p: p * 1.05 if jnp.issubdtype(p.dtype, jnp.floating) else p,
                         sampler.params)  # e.g. fine-tuned weights, same structure
    second = mean_image_and_last_p_hat(tuned, keys)
    assert len(traced) == 1  # one compilation for both
    assert not np.allclose(first[0], second[0])
    # the same numbers as the sampler's own jitted form
    np.testing.assert_allclose(first[0], sampler.jitted()(keys)[0].mean(0), atol=1e-6)


def test_generate_balanced_in_memory_is_the_cli_writers_data_set(bundles, unet, adp, tmp_path):
    # the same images, labels and shares as the CLI writes, with dataset-level balance
    args = cli_args(bundles, tmp_path / "cli", "--method", "distribution", "--adp",
                    str(bundles / "adp"), "--target", "hair=0.5,0.5", "--push-scale", "3",
                    "--num-images", "6", "--batch-size", "4")
    assert generate.main(args) == 0
    written = read_generated(tmp_path / "cli")
    classifier = load_classifier(bundles / "clf")
    targets = [parse_target("hair=0.5,0.5", {"hair": 2})]
    config, _ = generate.parse_args(args)  # the CLI's guidance and sampler settings
    sampler = make_sampler(unet, MODEL_CONFIG, config.sampler,
                           DistributionGuidance(adp, targets, config.guidance))
    result = generate_balanced(sampler, classifier, targets, 6, batch_size=4,
                               guard=GuardConfig(on_degenerate="warn"))
    assert result.images.shape == (6, 8, 8, 3) and list(result.index) == list(range(6))
    np.testing.assert_array_equal(result.images, written["image"])
    np.testing.assert_array_equal(result.labels["hair"], written["label_hair"])
    manifest = json.loads((tmp_path / "cli" / "manifest.json").read_text())
    np.testing.assert_allclose(result.shares["hair"], manifest["shares"]["hair"])


def test_corrected_batches_aim_past_the_bias_and_resume_as_they_went(bundles, tmp_path):
    def config(out):
        return generate.parse_args(cli_args(
            bundles, out, "--method", "distribution", "--adp", str(bundles / "adp"),
            "--target", "hair=0.5,0.5", "--push-scale", "3", "--balance", "batch-corrected",
            "--num-images", "12", "--shard-size", "4"))[0]

    whole = run_generation(config(tmp_path / "whole"))
    # batch 1 is steered to p_ref, each later one past the bias the labels before it show
    labels = read_generated(tmp_path / "whole")["label_hair"]
    p_ref, asked = np.array([0.5, 0.5]), np.zeros(2)
    for start in range(0, 12, 4):
        counts = np.bincount(labels[:start], minlength=2)
        asked += 4 * corrected_distribution(asked, counts, p_ref)
    np.testing.assert_allclose(whole["asked"]["hair"], asked, rtol=1e-6)
    assert not np.allclose(asked, [6, 6])  # the tiny labeller is biased: the aim moved
    with crash_at_shard(2):
        run_generation(config(tmp_path / "resumed"))
    # the manifest kept what the batches before the crash were steered to
    resumed = run_generation(config(tmp_path / "resumed"))
    np.testing.assert_allclose(resumed["asked"]["hair"], asked, rtol=1e-6)
    np.testing.assert_array_equal(read_generated(tmp_path / "resumed")["image"],
                                  read_generated(tmp_path / "whole")["image"])

