"""Two local processes of 4 devices each, joined by jax.distributed (CPU collectives), make the
same data set as one process over 8 devices."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx
from helpers import TINY_CLASSIFIER, TINY_UNET

from dg_jax import configs
from dg_jax.checkpoints import save_bundle
from dg_jax.data import generated
from dg_jax.diffusion.sampler_config import DEFAULT_SAMPLING
from dg_jax.diffusion.schedules import ScheduleConfig
from dg_jax.loading import save_unet
from dg_jax.models.adp import ADP, ADPConfig
from dg_jax.models.classifier import AttributeClassifier
from dg_jax.models.config import ModelConfig
from dg_jax.models.unet import UNet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    save_unet(root / "unet", UNet(TINY_UNET, rngs=nnx.Rngs(0)),
              ModelConfig(TINY_UNET, ScheduleConfig(), DEFAULT_SAMPLING))
    adp_config = ADPConfig(attributes=(("hair", 2),), h_shape=TINY_UNET.h_shape, hidden=16,
                           time_dim=8)
    save_bundle(root / "adp", "adp", configs.to_dict(adp_config), ADP(adp_config,
                                                                       rngs=nnx.Rngs(3)))
    save_bundle(root / "clf", "classifier", configs.to_dict(TINY_CLASSIFIER),
                AttributeClassifier(TINY_CLASSIFIER, rngs=nnx.Rngs(0)))
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_make_the_single_process_data_set(bundles, tmp_path):
    args = ["--model", str(bundles / "unet"), "--classifier", str(bundles / "clf"),
            "--adp", str(bundles / "adp"), "--num-images", "20", "--batch-size", "8",
            "--shard-size", "8", "--steps", "3", "--method", "distribution",
            "--target", "hair=0.5,0.5", "--push-scale", "50", "--temperature", "1",
            "--on-degenerate", "warn"]  # a random UNet makes noise

    def start(out, devices, distributed=()):
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT,
               "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
        return subprocess.Popen(
            [sys.executable, "-m", "sample.generate", "--out", str(tmp_path / out), *args,
             *distributed], cwd=ROOT, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)

    port = free_port()
    procs = [start("one", 8)] + [start("two", 4, [
        "--distributed", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
        "--process-id", str(i)]) for i in range(2)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], logs

    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["files"][:2] == ["shard-00000-part-000-of-002.array_record",
                                     "shard-00000-part-001-of-002.array_record"]
    one, two = (generated.read_generated(tmp_path / d) for d in ("one", "two"))
    np.testing.assert_array_equal(two["index"], np.arange(20))
    # the same global batches and p_hat; float sums over other device groupings may move a
    # pixel by one step
    assert np.abs(two["image"].astype(int) - one["image"].astype(int)).max() <= 1
    np.testing.assert_array_equal(two["label_hair"], one["label_hair"])
    assert manifest["counts"] == json.loads((tmp_path / "one" / "manifest.json").read_text())[
        "counts"]
