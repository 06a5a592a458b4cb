import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import TINY_CLASSIFIER, TINY_UNET

from dg_jax import configs
from dg_jax.checkpoints import save_bundle
from dg_jax.data.hspace import HSpaceSource
from dg_jax.data.shards import shard_files
from dg_jax.diffusion.sampler_config import DEFAULT_SAMPLING, SamplerConfig
from dg_jax.diffusion.schedules import ScheduleConfig
from dg_jax.errors import ConfigMismatchError
from dg_jax.loading import save_unet
from dg_jax.models.classifier import AttributeClassifier
from dg_jax.models.config import ModelConfig
from dg_jax.models.unet import UNet
from dg_jax.training.hspace import CollectConfig, collect


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    unet = UNet(TINY_UNET, rngs=nnx.Rngs(0))
    save_unet(root / "unet", unet, ModelConfig(TINY_UNET, ScheduleConfig(), DEFAULT_SAMPLING))
    classifier = AttributeClassifier(TINY_CLASSIFIER, rngs=nnx.Rngs(0))
    save_bundle(root / "classifier", "classifier", configs.to_dict(TINY_CLASSIFIER), classifier)
    return root, unet


@pytest.mark.parametrize("source", ["generate", "invert"])
def test_collect_writes_labelled_h_trajectories_and_resumes(bundles, tmp_path, source):
    root, unet = bundles
    config = CollectConfig(out=str(tmp_path / "h"), num_samples=5, source=source, batch_size=2,
                           shard_size=3, model=str(root / "unet"),
                           classifier=str(root / "classifier"), sampler=SamplerConfig(num_steps=3))
    summary = collect(config)
    assert summary["num_shards"] == 2 and summary["steps"] == 3
    source_ = HSpaceSource(tmp_path / "h")
    assert len(source_) == 5
    r = source_[4]
    assert r["h"].shape == (3, *TINY_UNET.h_shape) and r["h"].dtype == np.float16
    assert r["index"] == 4 and len(r["timesteps"]) == 3 and r["timesteps"][0] > r["timesteps"][-1]
    assert set(r["labels"]) == {"hair", "glasses", "skin", "smile"}
    assert np.all(np.isfinite(r["h"].astype(np.float32)))
    # A rerun after losing the last shard rebuilds it bit for bit.
    last = shard_files(tmp_path / "h")[-1]
    before = open(last, "rb").read()
    os.remove(last)
    assert collect(config)["made_now"] == 2
    assert open(last, "rb").read() == before
    with pytest.raises(ConfigMismatchError):
        collect(CollectConfig(**{**config.__dict__, "seed": 1}))


def test_a_collection_of_whole_shards_grows_to_more_samples(bundles, tmp_path):
    """--num-samples raised on a collection whose shards are whole adds the missing samples only,
    and the result is the larger collection made at once; one with a partial last shard, or a
    smaller count, is refused."""
    root, _ = bundles
    config = CollectConfig(out=str(tmp_path / "h"), num_samples=4, batch_size=2, shard_size=2,
                           model=str(root / "unet"), classifier=str(root / "classifier"),
                           sampler=SamplerConfig(num_steps=2))
    collect(config)
    grown = CollectConfig(**{**config.__dict__, "num_samples": 7})
    assert collect(grown)["made_now"] == 3
    at_once = collect(CollectConfig(**{**grown.__dict__, "out": str(tmp_path / "at_once")}))
    assert at_once["num_samples"] == 7
    for a, b in zip(shard_files(tmp_path / "h"), shard_files(tmp_path / "at_once"), strict=True):
        assert open(a, "rb").read() == open(b, "rb").read()
    for num_samples in (8, 6):  # 7 left a partial shard; 6 is fewer than it holds
        with pytest.raises(ConfigMismatchError, match="num_samples"):
            collect(CollectConfig(**{**config.__dict__, "num_samples": num_samples}))


def test_labels_from_a_label_file(bundles, tmp_path):
    """--labels: each sample's labels are the file's row for its index (one-hot probabilities),
    whatever the images look like; a sample missing from the file is an error naming it."""
    from dg_jax.data.hspace import read_labels
    from dg_jax.errors import UserError

    root, _ = bundles
    (tmp_path / "labels.csv").write_text("index,gender,age\n" + "".join(
        f"{i},{i % 2},{i % 3}\n" for i in range(5)))
    config = CollectConfig(out=str(tmp_path / "h"), num_samples=5, batch_size=2, shard_size=3,
                           model=str(root / "unet"), labels=str(tmp_path / "labels.csv"),
                           sampler=SamplerConfig(num_steps=2))
    collect(config)
    source = HSpaceSource(tmp_path / "h")
    labels = read_labels(source)
    np.testing.assert_array_equal(labels["gender"], np.arange(5) % 2)
    np.testing.assert_array_equal(labels["age"], np.arange(5) % 3)
    assert source[4]["probs"]["age"] == [0.0, 1.0, 0.0]
    with pytest.raises(UserError, match="no sample 5"):
        collect(CollectConfig(**{**config.__dict__, "out": str(tmp_path / "h2"),
                                 "num_samples": 6}))


def test_inverted_h_at_the_last_step_is_the_forward_pass_h(bundles, tmp_path):
    """The inverter's step-0 h is h at the largest timestep of the inverted latent; its last
    (cleanest) h is the encoder's h of the image itself at the smallest timestep."""
    from dg_jax.sampling import make_h_inverter
    root, unet = bundles
    model_config = ModelConfig(TINY_UNET, ScheduleConfig(), DEFAULT_SAMPLING)
    invert = make_h_inverter(unet, model_config, SamplerConfig(num_steps=3))
    x0 = jnp.asarray(np.random.RandomState(0).uniform(-1, 1, (2, 8, 8, 3)), jnp.float32)
    hs = invert(x0)
    assert hs.shape == (3, 2, *TINY_UNET.h_shape)
    t_min = jnp.full((2,), 332)  # trailing spacing of 3 steps: 999, 666, 332 (smallest last)
    expected = unet.encode(x0, t_min).h
    np.testing.assert_allclose(np.asarray(hs[-1], np.float32), expected, atol=2e-2)


@pytest.mark.parametrize("kind", ["mlp", "linear_per_step"])
def test_train_adp_on_collected_h(bundles, tmp_path, kind):
    from dg_jax.loading import load_adp
    from dg_jax.training.adp import ADPTrainConfig
    from train.train_adp import run

    root, _ = bundles
    data = tmp_path / "h"
    collect(CollectConfig(out=str(data), num_samples=12, batch_size=4, shard_size=6,
                          model=str(root / "unet"), classifier=str(root / "classifier"),
                          sampler=SamplerConfig(num_steps=3)))
    config = ADPTrainConfig(data=str(data), workdir=str(tmp_path / "adp"), kind=kind, hidden=16,
                            time_dim=8, holdout=0.25, batch_size=4, steps=6, save_every=3,
                            export=str(tmp_path / "bundle"))
    model, report = run(config)
    acc = report["heldout_accuracy"]
    assert (tmp_path / "adp" / "heldout_accuracy.png").stat().st_size > 0
    assert set(acc) == {"hair", "glasses", "skin", "smile"} and report["heldout_samples"] == 3
    assert all(len(v) == 3 and all(0 <= a <= 1 for a in v) for v in acc.values())
    loaded = load_adp(tmp_path / "bundle")
    assert loaded.config == model.config
    assert (loaded.config.timesteps is not None) == (kind == "linear_per_step")


def test_worst_direction_is_the_gradient_at_the_length_of_h():
    from dg_jax.training.adp import worst_direction

    rng = np.random.default_rng(0)
    h = jnp.asarray(rng.normal(size=(2, 3, 4, 4, 5)) * rng.uniform(1, 5, (2, 3, 1, 1, 1)))
    grad = jnp.asarray(rng.normal(size=h.shape) * 1e-3)
    d = np.asarray(worst_direction(grad, h)).reshape(6, -1)
    h, grad = np.asarray(h).reshape(6, -1), np.asarray(grad).reshape(6, -1)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), np.linalg.norm(h, axis=1), rtol=1e-5)
    cosine = np.sum(d * grad, 1) / np.linalg.norm(d, axis=1) / np.linalg.norm(grad, axis=1)
    np.testing.assert_allclose(cosine, 1.0, rtol=1e-5)


def test_adversarial_strengths_per_attribute_and_bad_specs():
    from dg_jax.errors import UserError
    from dg_jax.flags import config_parser, user_message
    from dg_jax.training.adp import ADPTrainConfig, adversarial_strengths

    names = ["glasses", "hair", "smile"]
    assert adversarial_strengths((), names) == {"glasses": 0, "hair": 0, "smile": 0}
    assert adversarial_strengths(("0.1", "smile=0"), names) == {"glasses": 0.1, "hair": 0.1,
                                                                "smile": 0.0}
    assert adversarial_strengths(("hair=0.2",), names) == {"glasses": 0, "hair": 0.2, "smile": 0}
    parser = config_parser(ADPTrainConfig, "")
    for bad in ("-0.1", "nan", "beard=0.1", "hair=x"):
        with pytest.raises(UserError, match="^adversarial: bad") as error:
            adversarial_strengths((bad,), names)
        assert user_message(error.value, parser).startswith("--adversarial: bad")


def test_adversarial_fine_tuning_from_a_bundle_and_a_mismatched_start(bundles, tmp_path):
    from dg_jax.errors import UserError
    from dg_jax.flags import config_parser, user_message
    from dg_jax.training.adp import ADPTrainConfig
    from train.train_adp import run

    root, _ = bundles
    data = tmp_path / "h"
    collect(CollectConfig(out=str(data), num_samples=8, batch_size=4, shard_size=8,
                          model=str(root / "unet"), classifier=str(root / "classifier"),
                          sampler=SamplerConfig(num_steps=2)))
    small = dict(data=str(data), features="flatten", hidden=16, time_dim=8, holdout=0.25,
                 batch_size=4, steps=2, save_every=2)
    start, _ = run(ADPTrainConfig(workdir=str(tmp_path / "a"), export=str(tmp_path / "start"),
                                  **small))
    tuned, report = run(ADPTrainConfig(workdir=str(tmp_path / "b"), seed=1,
                                       adversarial=("0.1", "smile=0"),
                                       init_from=str(tmp_path / "start"), **small))
    assert tuned.config == start.config and report["heldout_samples"] == 2
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))),
                         nnx.state(tuned, nnx.Param), nnx.state(start, nnx.Param))
    assert 0 < max(jax.tree.leaves(moved)) < 0.1  # trained on, from the start's weights
    with pytest.raises(UserError, match="init_from .* is an ADP for") as error:
        run(ADPTrainConfig(workdir=str(tmp_path / "c"), init_from=str(tmp_path / "start"),
                           **{**small, "hidden": 8}))
    message = user_message(error.value, config_parser(ADPTrainConfig, ""))
    assert message.startswith("--init-from ") and " is an ADP for " in message


def test_invert_a_tfds_set_labelled_by_its_own_attributes(bundles, tmp_path):
    """--images tfds:NAME (sample i = example i, resized) with --labels tfds:NAME=ATTR,..."""
    import tensorflow_datasets as tfds

    from dg_jax.errors import UserError

    root, _ = bundles
    config = CollectConfig(out=str(tmp_path / "h"), num_samples=6, source="invert",
                           batch_size=4, shard_size=6, model=str(root / "unet"),
                           images="tfds:celeb_a", labels="tfds:gender=Male,Smiling",
                           sampler=SamplerConfig(num_steps=2))
    with tfds.testing.mock_data(num_examples=8):
        collect(config)
        examples = tfds.data_source("celeb_a", split="train")
        want = {"gender": [int(examples[i]["attributes"]["Male"]) for i in range(6)],
                "Smiling": [int(examples[i]["attributes"]["Smiling"]) for i in range(6)]}
        with pytest.raises(UserError, match="holds 8 images, fewer than num_samples 9"):
            collect(CollectConfig(**{**config.__dict__, "num_samples": 9,
                                     "out": str(tmp_path / "h9")}))
        assert not (tmp_path / "h9").exists()
    source = HSpaceSource(tmp_path / "h")
    got = {name: [source[i]["labels"][name] for i in range(6)] for name in want}
    assert got == want
    with pytest.raises(UserError, match="give images tfds:NAME"):
        CollectConfig(labels="tfds:Male", source="invert").validate()
