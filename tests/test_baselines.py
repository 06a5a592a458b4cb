"""The paper's baselines: sample-level guidance on h and image-space guidance on x0_hat."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import TINY_CLASSIFIER, TINY_UNET

from dg_jax.diffusion.sampler_config import DEFAULT_SAMPLING, SamplerConfig
from dg_jax.diffusion.samplers import output_per_epsilon, predict_x0_eps, sample_keys
from dg_jax.diffusion.schedules import ScheduleConfig, prediction_target
from dg_jax.guidance.distribution import GuidanceConfig, cell_probabilities
from dg_jax.guidance.methods import DistributionGuidance, SampleLevelGuidance
from dg_jax.guidance.sample_level import cell_log_probability, draw_cells, sample_level_loss
from dg_jax.guidance.targets import parse_target
from dg_jax.models.adp import ADP, ADPConfig
from dg_jax.models.classifier import AttributeClassifier
from dg_jax.models.config import ModelConfig
from dg_jax.models.unet import UNet
from dg_jax.sampling import make_sampler
from dg_jax.wrappers import ImageGuidance

NUM_CLASSES = {"hair": 2, "skin": 3}
SAMPLER = SamplerConfig(num_steps=3, eta=0.0)


def test_cells_follow_the_target_and_depend_only_on_the_sample_key():
    target = parse_target("hair,skin=0.1,0.2,0,0.3,0.4,0", NUM_CLASSES)
    keys = sample_keys(0, np.arange(4000))
    cells = np.asarray(draw_cells(keys, [target])["hair,skin"])
    shares = np.bincount(cells, minlength=6) / len(cells)
    np.testing.assert_allclose(shares, target.array, atol=0.025)
    assert shares[2] == 0 and shares[5] == 0  # forbidden cells are never drawn
    again = np.asarray(draw_cells(keys[10:20], [target])["hair,skin"])
    np.testing.assert_array_equal(again, cells[10:20])


def test_sample_level_loss_by_hand():
    logits = {"hair": jnp.array([[2.0, 0.0], [0.0, 1.0]]),
              "skin": jnp.array([[0.0, 0.0, 3.0], [1.0, 0.0, 0.0]])}
    target = parse_target("hair,skin=uniform", NUM_CLASSES)
    cells = {"hair,skin": jnp.array([2, 3])}  # (hair 0, skin 2), (hair 1, skin 0)
    loss, p_hat = sample_level_loss(logits, [target], cells, temperature=2.0)

    def log_softmax(v):
        v = np.asarray(v) / 2.0
        return v - np.log(np.exp(v).sum())

    expected = -(log_softmax([2, 0])[0] + log_softmax([0, 0, 3])[2]
                 + log_softmax([0, 1])[1] + log_softmax([1, 0, 0])[0])
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    probs = {a: jax.nn.softmax(v / 2.0) for a, v in logits.items()}
    np.testing.assert_allclose(p_hat["hair,skin"],
                               cell_probabilities(probs, ("hair", "skin")).mean(0), rtol=1e-6)
    # the joint log-probability of a cell is the log of the outer-product cell probability
    log_probs = {a: jnp.log(p) for a, p in probs.items()}
    np.testing.assert_allclose(
        cell_log_probability(log_probs, target, cells["hair,skin"]),
        np.log(np.asarray(cell_probabilities(probs, ("hair", "skin")))[[0, 1], [2, 3]]),
        rtol=1e-5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_output_per_epsilon_matches_the_parametrisation(prediction_type):
    rng = np.random.default_rng(0)
    x0, eps = rng.normal(size=(2, 4)), rng.normal(size=(2, 4))
    a = jnp.float32(0.3)
    x_t = jnp.sqrt(a) * x0 + jnp.sqrt(1 - a) * eps
    delta = 1e-2 * rng.normal(size=(2, 4))
    out = prediction_target(jnp.asarray(x0), jnp.asarray(eps), jnp.full((2,), a), prediction_type)
    # the output for the same x_t with eps_hat + delta (x0_hat moves with it)
    x0_moved = (x_t - jnp.sqrt(1 - a) * (eps + delta)) / jnp.sqrt(a)
    moved = prediction_target(x0_moved, jnp.asarray(eps + delta), jnp.full((2,), a),
                              prediction_type)
    np.testing.assert_allclose(moved - out, output_per_epsilon(a, prediction_type) * delta,
                               rtol=1e-4, atol=1e-6)
    # and predict_x0_eps inverts prediction_target
    x0_back, eps_back = predict_x0_eps(out, x_t, a, prediction_type)
    np.testing.assert_allclose(x0_back, x0, atol=1e-5)
    np.testing.assert_allclose(eps_back, eps, atol=1e-5)


@pytest.fixture(scope="module")
def models():
    unet = UNet(dataclasses.replace(TINY_UNET, prediction_type="v_prediction"), rngs=nnx.Rngs(0))
    adp = ADP(ADPConfig(attributes=(("hair", 2),), h_shape=TINY_UNET.h_shape, hidden=16,
                        time_dim=8), rngs=nnx.Rngs(3))
    classifier = AttributeClassifier(TINY_CLASSIFIER, rngs=nnx.Rngs(1))
    return unet, adp, classifier


def sample_with(models, method, scale):
    unet, adp, classifier = models
    model_config = ModelConfig(unet.config, ScheduleConfig(), DEFAULT_SAMPLING)
    targets = [parse_target("hair=0.5,0.5", {"hair": 2})] if method else []
    guidance = GuidanceConfig(scale=scale, temperature=1.0, schedule="constant", start_step=0)
    spec = None if method is None else {
        "distribution": lambda: DistributionGuidance(adp, targets, guidance),
        "sample": lambda: SampleLevelGuidance(adp, targets, guidance),
        "image": lambda: ImageGuidance(classifier, targets, guidance)}[method]()
    sample = make_sampler(unet, model_config, SAMPLER, spec).jitted()
    images, trace = sample(sample_keys(0, np.arange(6)))
    return np.asarray(images), trace


@pytest.mark.parametrize("method", ["sample", "image"])
def test_baseline_at_zero_scale_is_unguided_and_guides_otherwise(models, method):
    unguided, _ = sample_with(models, None, 0.0)
    zero, trace = sample_with(models, method, 0.0)
    np.testing.assert_array_equal(zero, unguided)  # bit for bit
    assert trace["p_hat"]["hair"].shape == (3, 2)
    guided, _ = sample_with(models, method, 30.0)
    assert np.all(np.isfinite(guided)) and np.abs(guided - unguided).max() > 1e-3


def test_image_guidance_lowers_the_classifier_loss_of_the_first_step(models):
    """One guided step moves x0_hat the way the classifier wants (checked at the x0_hat level)."""
    unet, _, classifier = models
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
    t, a = jnp.full((4,), 500), jnp.float32(0.3)
    target = parse_target("hair=1,0", {"hair": 2})
    cells = {"hair": jnp.zeros((4,), jnp.int32)}

    def loss_of_output(out):
        x0, _ = predict_x0_eps(out, x, a, "v_prediction")
        return sample_level_loss(classifier(jnp.clip(x0, -1, 1)), [target], cells, 1.0)[0]

    def loss_of_x(x):
        x0, _ = predict_x0_eps(unet(x, t), x, a, "v_prediction")
        return sample_level_loss(classifier(jnp.clip(x0, -1, 1)), [target], cells, 1.0)[0]

    out = unet(x, t)
    grad = jax.grad(loss_of_x)(x)
    shifted = out + 0.05 * jnp.sqrt(1 - a) * output_per_epsilon(a, "v_prediction") * grad
    assert loss_of_output(shifted) < loss_of_output(out)
