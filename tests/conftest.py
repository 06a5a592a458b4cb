import os

# Tests run on the CPU with 4 virtual devices, so data-parallel code paths are exercised. They
# compile many small programs and run each briefly: XLA:CPU at -O0 compiles them ~40 % faster (the
# suite: 16.6 -> 12.2 min on 2 cores). .ci/newest runs the core tests at XLA's default level.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4 "
                                   "--xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Many tests compile the same programs (the same tiny models and steps, also in subprocesses): a
# compilation cache that lives for one pytest run, shared by the xdist workers and subprocesses
# through the environment, compiles each once. The controller, whose conftest runs first, makes it.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="dg-jax-test-xla-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)

import pytest  # noqa: E402
from flax import nnx  # noqa: E402
from helpers import TINY_CLASSIFIER, TINY_UNET  # noqa: E402

from dg_jax import configs  # noqa: E402
from dg_jax.checkpoints import save_bundle  # noqa: E402
from dg_jax.diffusion.sampler_config import DEFAULT_SAMPLING  # noqa: E402
from dg_jax.diffusion.schedules import ScheduleConfig  # noqa: E402
from dg_jax.loading import save_unet  # noqa: E402
from dg_jax.models.classifier import AttributeClassifier  # noqa: E402
from dg_jax.models.config import ModelConfig  # noqa: E402
from dg_jax.models.unet import UNet  # noqa: E402
from sample import generate  # noqa: E402


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A tiny UNet, labeller and evaluator, and 12 generated 8x8 images with labels (run/)."""
    root = tmp_path_factory.mktemp("eval")
    save_unet(root / "unet", UNet(TINY_UNET, rngs=nnx.Rngs(0)),
              ModelConfig(TINY_UNET, ScheduleConfig(), DEFAULT_SAMPLING))
    for name, seed in (("labeller", 0), ("evaluator", 1)):
        save_bundle(root / name, "classifier", configs.to_dict(TINY_CLASSIFIER),
                    AttributeClassifier(TINY_CLASSIFIER, rngs=nnx.Rngs(seed)))
    args = ["--out", str(root / "run"), "--model", str(root / "unet"), "--classifier",
            str(root / "labeller"), "--num-images", "12", "--batch-size", "6", "--steps", "2",
            # a random UNet makes noise, which the quality guard would stop
            "--on-degenerate", "warn"]
    assert generate.main(args) == 0
    return root
