"""Every path of a generation job on an object store (gs://): model, ADP, labeller, label file
and output, against etils' fake store (gs://bucket/x is ./gs:/bucket/x under the working
directory), including a kill -9 and the resume that continues there."""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from etils.epath import testing as epath_testing
from flax import nnx
from helpers import TINY_CLASSIFIER, TINY_UNET

from bench import kill_resume
from dg_jax import checkpoints, configs
from dg_jax.data.generated import read_generated
from dg_jax.data.label_file import LabelFile
from dg_jax.data.shards import read_json, write_json_atomic
from dg_jax.data.writer import dataset_files
from dg_jax.loading import load_adp, load_unet
from dg_jax.models.adp import ADP, ADPConfig
from dg_jax.models.classifier import AttributeClassifier
from dg_jax.models.unet import UNet
from sample import generate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# sample.generate in a process of its own, with gs:// on the fake store
RUNNER = ("import sys\nfrom etils.epath import testing\nfrom sample import generate\n"
          "with testing.mock_epath():\n    sys.exit(generate.main(sys.argv[1:]))\n")


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    """Bundles on the fake store; the working directory is the store's root."""
    monkeypatch.chdir(tmp_path)
    adp = ADPConfig(attributes=(("hair", 2),), h_shape=TINY_UNET.h_shape, hidden=8, time_dim=8)
    with epath_testing.mock_epath():  # written through the store, as a user would stage them
        checkpoints.save_bundle("gs://bucket/models/unet", "unet", TINY_UNET.__dict__,
                                UNet(TINY_UNET, rngs=nnx.Rngs(0)))
        checkpoints.save_bundle("gs://bucket/models/clf", "classifier",
                                configs.to_dict(TINY_CLASSIFIER),
                                AttributeClassifier(TINY_CLASSIFIER, rngs=nnx.Rngs(0)))
        checkpoints.save_bundle("gs://bucket/models/adp", "adp", configs.to_dict(adp),
                                ADP(adp, rngs=nnx.Rngs(1)))
    (tmp_path / "gs:" / "bucket" / "models" / "labels.csv").write_text("index,hair\n0,1\n1,0\n")
    return tmp_path


def job(out, num_images=16):
    return ["--out", out, "--model", "gs://bucket/models/unet", "--adp",
            "gs://bucket/models/adp", "--classifier", "gs://bucket/models/clf",
            "--num-images", str(num_images), "--batch-size", "4", "--shard-size", "4",
            "--steps", "2", "--method", "distribution", "--target", "hair=0.5,0.5",
            "--on-degenerate", "warn"]  # a random UNet makes noise


def test_models_and_label_files_load_from_the_store(bucket):
    with epath_testing.mock_epath():
        unet, _ = load_unet("gs://bucket/models/unet")
        assert unet.config == TINY_UNET
        assert load_adp("gs://bucket/models/adp").config.attributes == (("hair", 2),)
        labels = LabelFile("gs://bucket/models/labels.csv")
        assert labels([0, 1])["hair"].tolist() == [[0, 1], [1, 0]]
        with pytest.raises(FileNotFoundError, match="no checkpoint bundle at gs://bucket/nope"):
            load_adp("gs://bucket/nope")


def test_generate_on_the_store_resumes_after_kill_9(bucket):
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
    with epath_testing.mock_epath():
        assert generate.main(job("gs://bucket/ref")) == 0
    out = bucket / "gs:" / "bucket" / "out"
    cache = ["--compilation-cache", "gs://bucket/jax-cache"]
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, *job("gs://bucket/out"), *cache],
                            env=env, cwd=bucket, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while not (out / "manifest.json").exists() and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)  # just after the first shard is recorded
    proc.wait()
    assert 1 <= len(dataset_files(out)) < 4
    compiled = {p.name for p in (bucket / "gs:" / "bucket" / "jax-cache").iterdir()}
    assert compiled  # the killed run's compiled programs are on the store, for the resume
    # the relaunch retypes nothing: the run's own record holds the command
    done = subprocess.run([sys.executable, "-c", RUNNER, "--out", "gs://bucket/out", "--resume",
                           "--on-degenerate", "warn", *cache], env=env, cwd=bucket,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    ref = bucket / "gs:" / "bucket" / "ref"
    assert kill_resume.digest(out) == kill_resume.digest(ref)
    assert kill_resume.index_check(out, 16) == (0, 0)
    np.testing.assert_array_equal(read_generated(out)["image"], read_generated(ref)["image"])


def test_a_reader_never_sees_part_of_a_manifest_on_the_store(tmp_path, monkeypatch):
    """The fake store writes in place, as some mounts do; a kill mid-write must not leave a
    truncated manifest, so a reader polling it sees only whole versions."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gs:" / "bucket" / "m").mkdir(parents=True)
    big = {"files": [f"shard-{i:05d}-part-0-of-1.array_record" for i in range(20000)]}
    with epath_testing.mock_epath():
        write_json_atomic("gs://bucket/m/manifest.json", big)
        done = threading.Event()

        def rewrite():
            for n in range(30):
                write_json_atomic("gs://bucket/m/manifest.json", {**big, "n": n})
            done.set()

        writer = threading.Thread(target=rewrite)
        writer.start()
        reads = 0
        while not reads or not done.is_set():
            assert read_json("gs://bucket/m/manifest.json")["files"] == big["files"]
            reads += 1
        writer.join()
    assert read_json(tmp_path / "gs:/bucket/m/manifest.json")["n"] == 29


def test_a_missing_bucket_path_is_one_line(bucket, capsys):
    with epath_testing.mock_epath():
        assert generate.main(["--out", "gs://bucket/o", "--model", "gs://bucket/missing"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: no checkpoint bundle at gs://bucket/missing (config.json missing)"
    assert not (bucket / "gs:" / "bucket" / "o").exists()


def test_a_bucket_without_access_is_one_line(bucket, capsys):
    def forbidden(original, path, *args):
        if "gs://locked" in str(path) or "gs:/locked" in str(path):
            raise PermissionError(f"403 no storage.objects.get access to {path}")
        return original(path, *args)

    with epath_testing.mock_epath(exists=forbidden, isdir=forbidden, open=forbidden):
        assert generate.main(["--out", "gs://bucket/o", "--model", "gs://locked/unet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: 403 no storage.objects.get access to") and "\n" not in err
    assert not (bucket / "gs:" / "bucket" / "o").exists()
