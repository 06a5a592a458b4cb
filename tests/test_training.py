import dataclasses

import jax
import numpy as np
import pytest
from helpers import TINY_CLASSIFIER, TINY_UNET

from dg_jax.errors import ConfigMismatchError
from dg_jax.training import ddpm
from dg_jax.training.classifier import ClassifierTrainConfig, augment
from dg_jax.training.classifier import train as train_classifier


def tiny_ddpm(workdir, steps):
    return ddpm.DDPMTrainConfig(workdir=str(workdir), unet=TINY_UNET, num_images=64, batch_size=8,
                                steps=steps, warmup_steps=1, save_every=2, log_every=1)


def test_resumed_training_continues_from_the_saved_step(tmp_path, capsys):
    straight = ddpm.train(tiny_ddpm(tmp_path / "a", 4))
    ddpm.train(tiny_ddpm(tmp_path / "b", 2))
    assert "resumed from step" not in capsys.readouterr().out
    resumed = ddpm.train(tiny_ddpm(tmp_path / "b", 4))
    assert "resumed from step 2" in capsys.readouterr().out
    # Same data order and keys after the restart: the same weights as an uninterrupted run.
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_resume_with_another_config_is_refused(tmp_path):
    ddpm.train(tiny_ddpm(tmp_path, 2))
    changed = dataclasses.replace(tiny_ddpm(tmp_path, 4), learning_rate=0.5)
    with pytest.raises(ConfigMismatchError, match="another config"):
        ddpm.train(changed)


def test_classifier_training_learns_and_exports(tmp_path):
    config = ClassifierTrainConfig(workdir=str(tmp_path / "w"), model=TINY_CLASSIFIER,
                                   num_images=512, num_eval=256, batch_size=64, steps=100,
                                   learning_rate=1e-2, warmup_steps=5, save_every=100,
                                   export=str(tmp_path / "bundle"))
    _, acc = train_classifier(config)
    # A 100-step tiny CNN is far from the shipped one, but clearly better than chance (1/3) on skin.
    assert acc["skin"] > 0.6
    assert (tmp_path / "bundle" / "config.json").is_file()


def test_augment_keeps_shape_and_range():
    x = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3), minval=-1, maxval=1)
    y = augment(x, jax.random.key(1))
    assert y.shape == x.shape and np.abs(np.asarray(y)).max() < 2
