"""Evaluation metrics by hand, and sample.evaluate end to end on a tiny run."""

import json

import numpy as np
import pytest

from dg_jax import checkpoints
from dg_jax.data import synthfaces
from dg_jax.evaluation.evaluate import EvaluateConfig, make_featurizer, quality
from dg_jax.evaluation.fairness import (
    cell_labels,
    class_shares,
    deviation_ratio,
    fairness_discrepancy,
    kl_divergence,
)
from dg_jax.evaluation.quality import frechet_distance, kernel_inception_distance
from dg_jax.loading import load_classifier
from sample import evaluate


def test_fairness_metrics_by_hand():
    p_gen, p_ref = np.array([0.7, 0.3]), np.array([0.5, 0.5])
    assert fairness_discrepancy(p_gen, p_ref) == pytest.approx(np.sqrt(0.08))
    assert kl_divergence(p_gen, p_ref) == pytest.approx(0.7 * np.log(1.4) + 0.3 * np.log(0.6))
    assert deviation_ratio(p_gen, p_ref) == pytest.approx(0.2 / 0.5)
    assert deviation_ratio(np.array([1.0, 0, 0]), np.ones(3) / 3) == pytest.approx(1.0)
    # one-hot targets stay finite: a class the target forbids is floored, not divided by zero
    assert np.isfinite(kl_divergence(np.array([0.2, 0.8]), np.array([0.0, 1.0])))
    assert kl_divergence(np.array([0.0, 1.0]), np.array([0.0, 1.0])) == 0.0
    np.testing.assert_allclose(class_shares(np.array([0, 2, 2, 1]), 3), [0.25, 0.25, 0.5])


def test_cell_labels_are_row_major():
    labels = {"hair": np.array([0, 1, 1]), "skin": np.array([2, 0, 1])}
    np.testing.assert_array_equal(cell_labels(labels, ("hair", "skin"), (2, 3)), [2, 3, 4])


def test_frechet_distance_matches_the_gaussian_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, size=(20000, 3))
    b = rng.normal([1, 0, 2], [2, 1, 1], size=(20000, 3))
    # diagonal covariances: |mu_a - mu_b|^2 + sum (s_a - s_b)^2
    assert frechet_distance(a, b) == pytest.approx(5 + 1, rel=0.03)
    assert abs(frechet_distance(a, a)) < 1e-6


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(600, 8)), rng.normal(size=(600, 8))
    shifted = rng.normal(0.5, 1, size=(600, 8))
    same = kernel_inception_distance(a, b, num_subsets=20, subset_size=300)
    different = kernel_inception_distance(a, shifted, num_subsets=20, subset_size=300)
    assert abs(same) < 0.02 < different


def test_matched_reference_discounts_the_attribute_mix():
    # Real faces with far more glasses than the training data, worn mostly by dark-skinned faces:
    # against the training reference they look far off (the features see glasses and skin),
    # against the matched reference (the same attribute combinations) they do not.
    featurize = make_featurizer(load_classifier(checkpoints.EMBEDDED_EVALUATOR))
    glasses_by_skin = np.array([[0.25, 0.05, 0.0], [0.05, 0.15, 0.5]])  # [glasses, skin]
    images, _ = synthfaces.generate(600, 5, {("glasses", "skin"): glasses_by_skin})
    features, labels = featurize(images)
    result = quality(features, featurize, [], EvaluateConfig(run_dir="", num_real=600), size=32,
                     evaluator_id="embedded", labels=labels)
    assert result["matched"]["kid"] < 0.25 * result["training"]["kid"]


def test_evaluate_writes_report_chart_and_grid(tiny_run):
    args = [str(tiny_run / "run"), "--evaluator", str(tiny_run / "evaluator"), "--target",
            "hair=0.5,0.5", "--joint", "glasses,skin=uniform", "--num-real", "40",
            "--before", str(tiny_run / "run")]
    assert evaluate.main(args) == 0
    out = tiny_run / "run" / "evaluation"
    report = json.loads((out / "report.json").read_text())
    assert report["num_images"] == 12 and report["targets"][0].startswith("hair=0.5")
    joint = report["fairness"]["glasses,skin"]
    assert len(joint["shares"]) == 6 and sum(joint["shares"]) == pytest.approx(1.0)
    assert joint["fd"] == pytest.approx(np.linalg.norm(np.array(joint["shares"]) - 1 / 6))
    assert set(report["quality"]) == {"training", "target", "matched"}
    assert np.isfinite(report["quality"]["target"]["kid"])
    assert np.isfinite(report["quality"]["matched"]["kid"])
    assert (out / "shares.png").stat().st_size > 0 and (out / "grid.png").stat().st_size > 0
    # the labeller's labels in the shards give a second view of the same targets
    assert set(report["fairness_by_labeller"]) == {"hair", "glasses,skin"}


def test_evaluate_bad_input_is_one_line(tiny_run, tmp_path, capsys):
    assert evaluate.main([str(tmp_path)]) == 2
    assert "manifest.json missing" in capsys.readouterr().err
    assert evaluate.main([str(tiny_run / "run"), "--evaluator", str(tiny_run / "evaluator"),
                          "--target", "hair=0.3,0.3"]) == 2
    assert "sums to 0.6" in capsys.readouterr().err
