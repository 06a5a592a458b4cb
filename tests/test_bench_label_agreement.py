"""bench/label_agreement.py: shares and FD by each network, and where they disagree."""

import numpy as np

from bench import label_agreement
from dg_jax.guidance.targets import parse_target


def test_agreement_counts_each_disagreement_once_and_by_direction():
    target = parse_target("hair=uniform", {"hair": 2})
    written = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    data = {"label_hair": written,
            "prob_hair": np.eye(2, dtype=np.float32)[written] * 0.9 + 0.05}
    evaluated = {"hair": np.array([0, 0, 0, 1, 1, 1, 1, 1])}  # one labeller-short is long
    result = label_agreement.agreement(data, evaluated, target)
    np.testing.assert_array_equal(result["cross"], [[3, 1], [0, 4]])
    np.testing.assert_allclose(result["shares"]["labeller"], [0.5, 0.5])
    np.testing.assert_allclose(result["shares"]["labeller probs"], [0.5, 0.5])
    np.testing.assert_allclose(result["shares"]["evaluator"], [0.375, 0.625])
    assert result["fd"]["labeller"] == 0
    np.testing.assert_allclose(result["fd"]["evaluator"], np.hypot(0.125, 0.125))
    text = label_agreement.report("run", target, result)
    assert "disagree on 1 images" in text and "hair:short -> hair:long: 1 (back 0)" in text
    # every image at 0.95: the one disagreement is above a 0.9 line, under a 0.99 one
    assert "0.950 where they disagree, 0.950 where they agree; below 0.9: 0 of the 1" in text
    assert "below 0.99: 1 of the 1 disagreements, in 100.0 % of the images" in (
        label_agreement.report("run", target, result, line=0.99))
    # on the images the labeller reads confidently (all but the disagreement, here)
    confident = np.array([True, True, True, False, True, True, True, True])
    kept = label_agreement.agreement(data, evaluated, target, confident)["confident"]
    np.testing.assert_allclose(kept["fraction"], 7 / 8)
    np.testing.assert_allclose(kept["fd"]["evaluator"], kept["fd"]["labeller"])
    np.testing.assert_allclose(kept["fd"]["labeller"], np.hypot(0.5 - 3 / 7, 4 / 7 - 0.5))
    assert kept["gap"] == 0  # the one image they read differently is left out
    np.testing.assert_allclose(result["gap"], np.hypot(0.125, 0.125))


def test_a_joint_target_crosses_cells():
    target = parse_target("hair,glasses=uniform", {"hair": 2, "glasses": 2})
    data = {"label_hair": np.array([0, 1]), "label_glasses": np.array([1, 1]),
            "prob_hair": np.array([[1.0, 0.0], [0.0, 1.0]]),
            "prob_glasses": np.array([[0.0, 1.0], [0.0, 1.0]])}
    evaluated = {"hair": np.array([0, 1]), "glasses": np.array([0, 1])}
    result = label_agreement.agreement(data, evaluated, target)
    assert result["cross"][1, 0] == 1 and result["cross"][3, 3] == 1  # cell (0,1) -> (0,0)
    np.testing.assert_allclose(result["shares"]["labeller probs"], [0, 0.5, 0, 0.5])
