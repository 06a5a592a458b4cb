import numpy as np
import pytest
from flax import nnx
from helpers import TINY_UNET

from dg_jax.diffusion.sampler_config import DEFAULT_SAMPLING, SamplerConfig
from dg_jax.diffusion.schedules import ScheduleConfig
from dg_jax.generation import sample_keys
from dg_jax.guidance.distribution import GuidanceConfig
from dg_jax.guidance.targets import parse_target
from dg_jax.models.adp import ADP, ADPConfig
from dg_jax.models.config import ModelConfig
from dg_jax.models.unet import UNet
from dg_jax.sampling import make_sampler

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
    sample = make_sampler(unet, MODEL_CONFIG, SAMPLER, adp, targets, guidance)
    images, p_hats = sample(sample_keys(0, np.arange(8)))
    return np.asarray(images), {k: np.asarray(v) for k, v in p_hats.items()}


@pytest.fixture(scope="module")
def runs(unet, adp):
    return {"unguided": run(unet, None, 0.0, targets=()), "zero": run(unet, adp, 0.0),
            "guided": run(unet, adp, 50.0)}


def test_zero_scale_is_exactly_unguided(runs):
    unguided, none = runs["unguided"]
    guided, p_hats = runs["zero"]
    assert none == {} and p_hats["hair"].shape == (4, 2)  # p_hat at each of the 4 steps
    np.testing.assert_allclose(guided, unguided, atol=1e-6)


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
        make_sampler(unet, MODEL_CONFIG, SAMPLER, ADP(config, rngs=nnx.Rngs(0)), TARGETS)
    per_step = ADPConfig(attributes=(("hair", 2),), h_shape=TINY_UNET.h_shape,
                         kind="linear_per_step", timesteps=(999, 500, 0))
    with pytest.raises(ValueError, match="per-step ADP was trained for 3"):
        make_sampler(unet, MODEL_CONFIG, SAMPLER, ADP(per_step, rngs=nnx.Rngs(0)), TARGETS)
