import numpy as np
import pytest

from dg_jax.data import synthfaces


def test_shapes_types_and_determinism():
    images, labels = synthfaces.generate(20, seed=3)
    again, labels_again = synthfaces.generate(20, seed=3)
    assert images.shape == (20, 32, 32, 3) and images.dtype == np.uint8
    assert set(labels) == {"hair", "glasses", "skin", "smile"}
    for name, k in synthfaces.NUM_CLASSES.items():
        assert labels[name].dtype == np.int32 and labels[name].shape == (20,)
        assert labels[name].min() >= 0 and labels[name].max() < k
        np.testing.assert_array_equal(labels[name], labels_again[name])
    np.testing.assert_array_equal(images, again)
    assert not np.array_equal(images, synthfaces.generate(20, seed=4)[0])


def test_other_sizes():
    images, _ = synthfaces.generate(3, seed=0, size=64)
    assert images.shape == (3, 64, 64, 3)


def test_biased_probs_are_followed():
    _, labels = synthfaces.generate(4000, seed=0, probs=synthfaces.BIASED_PROBS)
    for name, probs in synthfaces.BIASED_PROBS.items():
        shares = np.bincount(labels[name], minlength=len(probs)) / 4000
        np.testing.assert_allclose(shares, probs, atol=0.03)


def test_joint_probabilities_correlate_attributes():
    table = [[0.5, 0.0, 0.0], [0.0, 0.0, 0.5]]  # smile <=> dark skin, no smile <=> light skin
    _, labels = synthfaces.generate(500, seed=1, probs={("smile", "skin"): table})
    assert set(labels["skin"][labels["smile"] == 1]) == {2}
    assert set(labels["skin"][labels["smile"] == 0]) == {0}


def test_attributes_change_pixels():
    # Same style (seed), different attribute: the rendered images must differ.
    rng = np.random.default_rng(0)
    style = synthfaces._sample_style(1, rng)
    base = {"hair": np.array([0]), "glasses": np.array([0]), "skin": np.array([0]),
            "smile": np.array([0])}
    ref = synthfaces._render(base, style, 32)
    for name, k in synthfaces.NUM_CLASSES.items():
        for value in range(1, k):
            changed = synthfaces._render({**base, name: np.array([value])}, style, 32)
            assert np.abs(changed.astype(int) - ref).sum() > 300, (name, value)


def test_render_faces_draws_only_the_nuisance_factors():
    # generate = labels, then render_faces from the same generator: given the labels, render_faces
    # reproduces the faces; labels without every attribute are refused.
    images, labels = synthfaces.generate(20, seed=3)
    rng = np.random.default_rng(3)
    synthfaces.sample_labels(20, rng)
    np.testing.assert_array_equal(synthfaces.render_faces(labels, rng), images)
    with pytest.raises(ValueError, match="lack attributes"):
        synthfaces.render_faces({"hair": labels["hair"]}, rng)


@pytest.mark.parametrize("probs, message", [
    ({"hair": [0.5, 0.6]}, "sum to 1"),
    ({"hair": [0.5, 0.3, 0.2]}, "shape"),
    ({"beard": [0.5, 0.5]}, "unknown"),
    ({"skin": [1.2, -0.1, -0.1]}, "non-negative"),
])
def test_bad_probabilities(probs, message):
    with pytest.raises(ValueError, match=message):
        synthfaces.generate(4, seed=0, probs=probs)
