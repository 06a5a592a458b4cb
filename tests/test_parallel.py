"""Data parallel sampling over the virtual CPU devices (conftest: 4) and dataset-level balance."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import TINY_UNET

from dg_jax.balance import corrected_distribution, deficit_distribution, max_deviation
from dg_jax.diffusion.sampler_config import DEFAULT_SAMPLING, SamplerConfig
from dg_jax.diffusion.samplers import sample_keys
from dg_jax.diffusion.schedules import ScheduleConfig
from dg_jax.guidance.distribution import GuidanceConfig
from dg_jax.guidance.methods import DistributionGuidance
from dg_jax.guidance.targets import parse_target
from dg_jax.models.adp import ADP, ADPConfig
from dg_jax.models.config import ModelConfig
from dg_jax.models.unet import UNet
from dg_jax.parallel import batch_mesh, data_mesh, local_row_range
from dg_jax.sampling import make_sampler

MODEL_CONFIG = ModelConfig(TINY_UNET, ScheduleConfig(), DEFAULT_SAMPLING)
TARGETS = [parse_target("hair=0.5,0.5", {"hair": 2})]
GUIDANCE = GuidanceConfig(scale=50.0, temperature=1.0, schedule="constant")
KEYS = sample_keys(0, np.arange(8))


@pytest.fixture(scope="module")
def models():
    adp = ADP(ADPConfig(attributes=(("hair", 2),), h_shape=TINY_UNET.h_shape, hidden=16,
                        time_dim=8), rngs=nnx.Rngs(3))
    return UNet(TINY_UNET, rngs=nnx.Rngs(0)), adp


def sampler(models, mesh=None, scope="global", guidance=GUIDANCE):
    unet, adp = models
    return make_sampler(unet, MODEL_CONFIG, SamplerConfig(num_steps=3, eta=0.0),
                        DistributionGuidance(adp, TARGETS, guidance, scope), mesh=mesh).jitted()


def test_there_are_several_devices():
    assert len(jax.devices()) >= 2 and data_mesh().size == len(jax.devices())


@pytest.mark.parametrize("push", ["posterior", "commit"])
def test_global_scope_over_devices_matches_one_device(models, push):
    guidance = dataclasses.replace(GUIDANCE, push=push)
    single, trace = sampler(models, guidance=guidance)(KEYS)
    split, split_trace = sampler(models, mesh=data_mesh(), guidance=guidance)(KEYS)
    assert len(split.sharding.device_set) == len(jax.devices())
    np.testing.assert_allclose(np.asarray(split), np.asarray(single), atol=1e-4)
    np.testing.assert_allclose(split_trace["p_hat"]["hair"], trace["p_hat"]["hair"], atol=1e-5)


def test_local_scope_guides_each_device_batch_on_its_own(models):
    mesh = data_mesh()
    local, trace = sampler(models, mesh=mesh, scope="local")(KEYS)
    rows = len(KEYS) // mesh.size
    alone = [sampler(models)(KEYS[i:i + rows]) for i in range(0, len(KEYS), rows)]
    np.testing.assert_allclose(np.asarray(local), np.concatenate([a[0] for a in alone]),
                               atol=1e-4)
    # the trace reports the global batch's p_hat: the mean of the devices' own
    np.testing.assert_allclose(trace["p_hat"]["hair"],
                               np.mean([a[1]["p_hat"]["hair"] for a in alone], axis=0), atol=1e-5)
    assert np.abs(np.asarray(local) - np.asarray(sampler(models, mesh=mesh)(KEYS)[0])).max() > 1e-3


def test_refs_replace_the_target_without_recompiling(models):
    sample = sampler(models, mesh=data_mesh())
    default, _ = sample(KEYS)
    same, _ = sample(KEYS, {"hair": jnp.array([0.5, 0.5])})
    other, _ = sample(KEYS, {"hair": jnp.array([1.0, 0.0])})
    np.testing.assert_array_equal(np.asarray(same), np.asarray(default))
    assert np.abs(np.asarray(other) - np.asarray(default)).max() > 1e-3


def test_local_rows_of_one_process_are_the_whole_batch():
    assert local_row_range(data_mesh(), 8) == (0, 8)


def test_a_batch_that_does_not_split_evenly_uses_fewer_devices(capsys):
    assert batch_mesh(8).size == 4
    assert batch_mesh(6).size == 2 and "using 2" in capsys.readouterr().err
    assert batch_mesh(3).size == 1


@pytest.mark.parametrize("counts, p_ref, batch, expected", [
    ([5, 3], [0.5, 0.5], 8, [3 / 8, 5 / 8]),  # pay back the 1-image surplus of class 0
    ([4, 4], [0.5, 0.5], 8, [0.5, 0.5]),  # on target: p_ref itself
    ([0, 0], [0.25, 0.75], 8, [0.25, 0.75]),  # nothing written yet
    # more surplus than a batch can pay back: [0, 1], held at half of p_ref for class 0
    ([30, 10], [0.5, 0.5], 8, [0.25, 0.75]),
    ([3, 0, 1], [0.5, 0.0, 0.5], 4, [0.25, 0.0, 0.75]),  # a forbidden cell stays at 0
    # deficit [0.5, 0, 0.5] of a uniform p_ref: scaled half-way back, cell 1 at 1/6
    ([0, 10, 0], [1 / 3, 1 / 3, 1 / 3], 20, [5 / 12, 1 / 6, 5 / 12]),
])
def test_deficit_distribution(counts, p_ref, batch, expected):
    got = deficit_distribution(np.array(counts), np.array(p_ref), batch)
    np.testing.assert_allclose(got, expected, atol=1e-7)
    assert got.dtype == np.float32 and abs(got.sum() - 1) < 1e-6


def test_deficit_distribution_unbounded():
    # min_share 0: the raw deficit, clipped at 0
    got = deficit_distribution(np.array([30, 10]), np.array([0.5, 0.5]), 8, min_share=0.0)
    np.testing.assert_allclose(got, [0.0, 1.0])


@pytest.mark.parametrize("asked, counts, p_ref, expected", [
    ([0, 0], [0, 0], [0.3, 0.7], [0.3, 0.7]),  # no batch yet: p_ref
    ([32, 32], [32, 32], [0.5, 0.5], [0.5, 0.5]),  # came out as steered: p_ref
    # steered to 50/50 twice, labelled 56/72: aim 4 points past p_ref on class 0 (-> 50/50)
    ([64, 64], [56, 72], [0.5, 0.5], [0.5625, 0.4375]),
    # a bias that would take class 1 below half its p_ref: floored there
    ([32, 32], [8, 56], [0.8, 0.2], [0.9, 0.1]),
    # a forbidden cell stays at 0; the rest is renormalised
    ([32, 0, 32], [20, 4, 40], [0.5, 0.0, 0.5], [0.6875 / 1.0625, 0.0, 0.375 / 1.0625]),
])
def test_corrected_distribution(asked, counts, p_ref, expected):
    got = corrected_distribution(np.array(asked), np.array(counts), np.array(p_ref))
    np.testing.assert_allclose(got, expected, atol=1e-7)
    assert got.dtype == np.float32 and abs(got.sum() - 1) < 1e-6


def test_max_deviation():
    assert max_deviation(np.array([60, 40]), np.array([0.5, 0.5])) == pytest.approx(0.1)
    assert max_deviation(np.array([0, 0]), np.array([0.5, 0.5])) == 0.0


def test_the_mesh_keeps_each_hosts_devices_together(monkeypatch):
    from types import SimpleNamespace

    from dg_jax import parallel

    # a pod's jax.devices() order is not promised: interleave 2 hosts' devices
    fake = [SimpleNamespace(process_index=p, id=i) for i, p in [(5, 1), (0, 0), (4, 1), (1, 0),
                                                               (7, 1), (2, 0), (6, 1), (3, 0)]]
    monkeypatch.setattr(parallel.jax, "devices", lambda: fake)
    ordered = parallel.host_ordered_devices()
    assert [(d.process_index, d.id) for d in ordered] == [(0, 0), (0, 1), (0, 2), (0, 3),
                                                          (1, 4), (1, 5), (1, 6), (1, 7)]
