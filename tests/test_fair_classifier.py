"""The downstream fairness experiment: group metrics by hand, the confounded SynthFaces sets, the
classifier trained on real + generated images, CelebA through TFDS's mock data, CLI errors."""

import dataclasses
import json

import numpy as np
import pytest
import tensorflow_datasets as tfds
from helpers import TINY_CLASSIFIER

from dg_jax.data import downstream
from dg_jax.errors import ConfigMismatchError
from dg_jax.evaluation.group_fairness import group_metrics
from dg_jax.flags import main_for
from dg_jax.training.fair_classifier import FairClassifierConfig, train_fair_classifier


def test_group_metrics_by_hand():
    # groups 0 and 1, binary target; per cell (g, y): predictions
    target = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    group = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    pred = np.array([0, 0, 1, 0, 0, 1, 0, 0])
    m = group_metrics(pred, target, group, num_classes=2, num_groups=2)
    assert m["accuracy"] == pytest.approx(4 / 8)
    assert m["group_accuracy"] == pytest.approx([3 / 4, 1 / 4])
    assert m["cell_accuracy"] == [[1.0, 0.5], [0.5, 0.0]]
    assert m["worst_group_accuracy"] == 0.0 and m["worst_group_gap"] == 1.0
    # P(pred=1 | g): 1/4 vs 1/4
    assert m["demographic_parity_gap"] == pytest.approx(0.0)
    # TPR 0.5 vs 0, FPR 0 vs 0.5
    assert m["equalized_odds_gap"] == pytest.approx(0.5)


def test_group_metrics_skip_empty_cells_and_check_shapes():
    m = group_metrics(np.array([1, 1]), np.array([1, 1]), np.array([0, 2]), 2, 3)
    assert m["worst_group_accuracy"] == 1.0 and m["worst_group_gap"] == 0.0
    assert np.isnan(m["cell_accuracy"][1][1])
    with pytest.raises(ValueError, match="one length"):
        group_metrics(np.zeros(3), np.zeros(2), np.zeros(3), 2, 2)


def test_confounded_probs():
    table = downstream.confounded_probs("smile", "skin", 0.9)[("smile", "skin")]
    np.testing.assert_allclose(table.sum(), 1.0)
    np.testing.assert_allclose(table.sum(1), [0.5, 0.5])  # target classes equally likely
    np.testing.assert_allclose(table[1] / table[1].sum(), [0.1, 0.45, 0.45])  # smiling: darker
    np.testing.assert_allclose(table[0] / table[0].sum(), [0.9, 0.05, 0.05])
    uniform = downstream.confounded_probs("smile", "skin", None)[("smile", "skin")]
    np.testing.assert_allclose(uniform, np.full((2, 3), 1 / 6))
    probs = downstream.confounded_probs("smile", "skin", 0.9)
    assert set(probs) == {"hair", "glasses", ("smile", "skin")}
    test = downstream.synthfaces_set(600, 3, "smile", "skin")
    cells = np.bincount(test.target * 3 + test.sensitive, minlength=6)
    assert cells.min() > 60  # ~100 each


def tiny(workdir, **changes) -> FairClassifierConfig:
    settings = dict(workdir=str(workdir), model=TINY_CLASSIFIER, num_images=48, num_eval=60,
                    steps=4, batch_size=16, warmup_steps=1, save_every=2, log_every=2)
    return FairClassifierConfig(**{**settings, **changes})


def test_fair_classifier_on_real_and_generated_faces(tiny_run, tmp_path, capsys):
    # the tiny run's 8x8 images, resized to the real faces' 32x32
    config = tiny(tmp_path / "b", generated=str(tiny_run / "run"), num_generated=10)
    report = train_fair_classifier(config)
    assert json.loads((tmp_path / "b" / "report.json").read_text()) == report
    assert report["trained_steps"] == 4
    assert report["training_set"]["generated"]["images"] == 10
    assert np.sum(report["training_set"]["real"]["cells"]) == 48
    assert np.array(report["cell_accuracy"]).shape == (3, 2)  # skin x smile
    assert np.sum(report["test_set"]["cells"]) == 60
    for metric in ("accuracy", "worst_group_accuracy", "worst_group_gap", "equalized_odds_gap",
                   "demographic_parity_gap"):
        assert 0.0 <= report[metric] <= 1.0
    # a rerun resumes the finished run; another config in that workdir is refused
    capsys.readouterr()
    assert train_fair_classifier(config)["accuracy"] == report["accuracy"]
    assert "resumed from step 4" in capsys.readouterr().out
    with pytest.raises(ConfigMismatchError, match="another config"):
        train_fair_classifier(dataclasses.replace(config, bias=0.5))


def test_fair_classifier_reads_celeba_from_tfds(tmp_path):
    config = tiny(tmp_path / "celeba", real="tfds:celeb_a", target="smile",
                  tfds_target="Smiling", sensitive="male", tfds_sensitive="Male",
                  image_size=16, num_images=30, num_eval=0, steps=2)
    with tfds.testing.mock_data(num_examples=40):
        report = train_fair_classifier(config)
    cells = np.array(report["test_set"]["cells"])
    assert cells.shape == (2, 2) and cells.min() == cells.max() > 0  # balanced test cells
    assert np.sum(report["training_set"]["real"]["cells"]) == 30


@pytest.mark.parametrize("flags, message", [
    (["--target", "beard"], "unknown SynthFaces attribute 'beard'"),
    (["--bias", "1.5"], "bias must lie in [0, 1]"),
    (["--sensitive", "smile"], "must differ"),
    (["--real", "imagenet"], "unknown real data 'imagenet'"),
    (["--num-eval", "0"], "--num-eval above 0"),
    (["--target", "beard", "--real", "tfds:celeb_a"], "no attribute 'beard'"),
])
def test_bad_input_is_one_line_and_exit_2(flags, message, tmp_path, capsys):
    with tfds.testing.mock_data(num_examples=8):
        status = main_for(FairClassifierConfig, train_fair_classifier, "",
                          ["--workdir", str(tmp_path / "w"), "--num-images", "8", *flags])
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "w").exists()  # nothing written


def test_generated_folder_without_the_target_is_refused(tiny_run):
    with pytest.raises(ValueError, match="no labels for 'beard'"):
        downstream.generated_set(tiny_run / "run", "beard")
    with pytest.raises(ValueError, match="12 images, 20 were asked for"):
        downstream.generated_set(tiny_run / "run", "smile", num=20)
