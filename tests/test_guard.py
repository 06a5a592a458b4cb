import jax.numpy as jnp
import numpy as np
import pytest

from bench.detail_replay import window_medians
from dg_jax.data import synthfaces
from dg_jax.data.images import to_model_range
from dg_jax.guard import (
    DegenerateOutputError,
    GuardConfig,
    QualityGuard,
    SharpnessReference,
    broken_counts,
    detail_ratios,
    image_health,
)
from dg_jax.guidance.targets import parse_target
from dg_jax.unguided_reference import unguided_statistics_of


def faces(n=8):
    images, _ = synthfaces.generate(n, 3, synthfaces.BIASED_PROBS, size=32)
    return to_model_range(images)


def blur(images, k=4):
    """Each k x k block replaced by its mean: a washed-out, edge-less version."""
    b, h, w, c = images.shape
    blocks = images.reshape(b, h // k, k, w // k, k, c).mean(axis=(2, 4), keepdims=True)
    return 0.3 * np.broadcast_to(blocks, (b, h // k, k, w // k, k, c)).reshape(images.shape)


def test_each_kind_of_broken_image_is_named_and_real_faces_pass():
    real = faces()
    rng = np.random.RandomState(0)
    noise = np.clip(rng.randn(*real.shape), -1, 1).astype(np.float32)
    black = np.full_like(real, -1.0)
    nan = real.copy()
    nan[:, 0, 0, 0] = np.nan
    sharpness = float(np.median(image_health(jnp.asarray(real))["sharpness"]))
    images = np.concatenate([real, noise[:2], black[:2], nan[:2], blur(real)[:2]])
    valid = jnp.ones(len(images), bool)
    counts = broken_counts(jnp.asarray(images), None, valid, GuardConfig(),
                           reference_sharpness=sharpness)
    assert {k: int(v) for k, v in counts.items()} == {
        "non-finite": 2, "blank": 2, "noise": 2, "washed-out": 2, "unreadable": 0}
    # without the model's unguided sharpness there is no washed-out check; padding rows are
    # not counted; a labeller that cannot read an image makes it unreadable
    counts = broken_counts(jnp.asarray(images), None, valid.at[-1].set(False), GuardConfig())
    assert int(counts["washed-out"]) == 0 and int(counts["noise"]) == 2
    unsure = {"hair": jnp.full((len(real), 2), 0.5)}
    counts = broken_counts(jnp.asarray(real), unsure, jnp.ones(len(real), bool), GuardConfig())
    assert int(counts["unreadable"]) == len(real)


def test_stop_raises_one_line_and_warn_only_counts():
    bad = {"non-finite": 0, "blank": 0, "noise": 9, "washed-out": 0, "unreadable": 0}
    guard = QualityGuard(GuardConfig())
    with pytest.raises(DegenerateOutputError, match=r"9 of 64 images from index 128 are broken "
                                                    r"\(9 noise\)") as e:
        guard.check_batch(bad, 64, 128)
    assert "\n" not in str(e.value)
    warn = QualityGuard(GuardConfig(on_degenerate="warn"))
    assert "9 noise" in warn.check_batch(bad, 64, 0)
    assert "1 noise" in warn.check_batch({**bad, "noise": 1}, 64, 64)  # noise is never data
    # washed-out or unreadable images (judgements a good image can fail) up to 10 % are kept
    assert warn.check_batch({**bad, "noise": 0, "washed-out": 6}, 64, 128) is None
    assert "7 washed-out" in warn.check_batch({**bad, "noise": 0, "washed-out": 7}, 64, 192)
    summary = warn.summary()
    assert summary["broken"]["noise"] == 10 and summary["broken"]["washed-out"] == 13
    assert summary["checked"] == 256
    resumed = QualityGuard(GuardConfig(), warn.summary())
    assert resumed.summary()["broken"] == warn.summary()["broken"]


def test_a_target_still_far_off_after_enough_images_is_out_of_reach():
    target = parse_target("glasses=0,1", {"glasses": 2})
    guard = QualityGuard(GuardConfig(min_images=256))
    far = {"glasses": np.array([80, 176])}
    assert guard.check_shares(far, [target], 192) is None  # too early to tell
    with pytest.raises(DegenerateOutputError, match=r"target glasses is out of reach: after 256 "
                                                    r"images its shares are 31/69 %"):
        guard.check_shares(far, [target], 256)
    assert QualityGuard(GuardConfig()).check_shares({"glasses": np.array([10, 246])}, [target],
                                                    256) is None
    # The default margin: a 70/30 target the model only takes to 63/37 is out of reach, one
    # that is 4 points off after 256 images (dataset-level balance still closing in) is not.
    mirrored = parse_target("hair=0.7,0.3", {"hair": 2})
    assert QualityGuard(GuardConfig()).check_shares({"hair": np.array([169, 87])}, [mirrored],
                                                    256) is None
    with pytest.raises(DegenerateOutputError, match=r"after 320 images its shares are 63/37 %"):
        QualityGuard(GuardConfig()).check_shares({"hair": np.array([202, 118])}, [mirrored], 320)
    # each batch balanced on its own: dataset-level balance is one more thing to try
    with pytest.raises(DegenerateOutputError, match=r"try a milder target, balance dataset, "):
        QualityGuard(GuardConfig()).check_shares({"hair": np.array([202, 118])}, [mirrored], 320,
                                                 balance="batch")
    # ... but not for a one-hot target, whose deficit is the target itself
    with pytest.raises(DegenerateOutputError, match=r"try a milder target, guidance\.target_weights"):
        QualityGuard(GuardConfig()).check_shares(far, [target], 256, balance="batch")


def test_detail_is_judged_against_unguided_images_with_the_same_labels():
    real = jnp.asarray(faces(4))
    sharpness = np.asarray(image_health(real)["sharpness"])
    glasses = {"glasses": jnp.asarray([[0.1, 0.9], [0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])}
    # faces with glasses have twice the edges of those without, in the unguided record
    reference = SharpnessReference.of({"sharpness": 0.05, "sharpness_by_class": {
        "glasses": [0.8, 1.6]}})
    expected = 0.05 * np.array([1.6, 0.8, 0.8, 1.6])
    np.testing.assert_allclose(detail_ratios(real, glasses, reference), sharpness / expected,
                               rtol=1e-5)
    # attributes the record has no factors for, or no labels at all: the median alone
    plain = SharpnessReference.of({"sharpness": 0.05})
    np.testing.assert_allclose(detail_ratios(real, glasses, plain), sharpness / 0.05, rtol=1e-5)
    assert SharpnessReference.of({"label_shares": {}}) is None


def test_the_unguided_record_has_each_class_sharpness_over_the_median():
    images, _ = synthfaces.generate(40, 5, synthfaces.BIASED_PROBS, size=32)
    labels = {"hair": np.repeat([0, 1], 20), "glasses": np.repeat([0, 1], [25, 15])}
    stats = unguided_statistics_of(images, labels, {"hair": 2, "glasses": 2})
    sharpness = np.asarray(image_health(to_model_range(images))["sharpness"])
    median = np.median(sharpness)
    assert stats["sharpness"] == pytest.approx(median, abs=1e-6)
    np.testing.assert_allclose(stats["sharpness_by_class"]["hair"],
                               [np.median(sharpness[:20]) / median,
                                np.median(sharpness[20:]) / median], atol=1e-4)
    # 15 images say too little of a class: its factor stays 1
    assert stats["sharpness_by_class"]["glasses"][1] == 1.0
    assert stats["label_shares"]["glasses"] == pytest.approx([25 / 40, 15 / 40])


def test_images_losing_detail_stop_once_enough_are_seen_and_resume_with_their_window():
    guard = QualityGuard(GuardConfig(min_images=128))
    assert guard.check_detail(np.full(64, 0.7), 64) is None  # too early to tell
    with pytest.raises(DegenerateOutputError, match=r"the images are losing detail: after 128 "
                                                    r"images the last 128 are 70 % as sharp") as e:
        guard.check_detail(np.full(64, 0.7), 128)
    assert "\n" not in str(e.value)
    # clean faces pass; the window is the last min_images images, kept for a resume
    warn = QualityGuard(GuardConfig(min_images=128, on_degenerate="warn"))
    for start in range(0, 384, 64):
        warn.check_detail(np.full(64, 0.7 if start < 128 else 0.95), start + 64)
    assert warn.summary()["detail"] == pytest.approx(0.95)
    resumed = QualityGuard(GuardConfig(min_images=128), warn.summary())
    assert resumed.check_detail(np.full(32, 0.6), 416) is None  # 96 of the last 128 at 0.95
    with pytest.raises(DegenerateOutputError, match="after 480 images the last 128 are 60 %"):
        resumed.check_detail(np.full(64, 0.6), 480)
    assert QualityGuard(GuardConfig(), guided=False).check_detail(np.zeros(512), 512) is None


def test_replay_reports_the_window_at_each_check_and_where_the_guard_stops():
    config = GuardConfig(min_images=128)
    ratios = np.concatenate([np.full(128, 0.95), np.full(64, 0.5), np.full(128, 0.6)])
    medians, stop = window_medians(ratios, config, 64)
    assert medians == pytest.approx([0.95, 0.725, 0.55, 0.6]) and stop == 192
    assert window_medians(np.full(200, 0.9), config, 64) == ([0.9] * 3, None)  # 128, 192, 200


@pytest.mark.parametrize("bad", [dict(on_degenerate="maybe"), dict(max_roughness=float("nan")),
                                 dict(min_confidence=-1.0)])
def test_bad_guard_settings_are_refused(bad):
    with pytest.raises(ValueError):
        GuardConfig(**bad)
