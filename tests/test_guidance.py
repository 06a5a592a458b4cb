import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dg_jax import configs
from dg_jax.errors import UserError
from dg_jax.guidance import losses
from dg_jax.guidance.distribution import (
    GuidanceConfig,
    batch_distribution,
    class_probabilities,
    distribution_loss,
    guide_h,
    powered_targets,
    step_power,
    step_scale,
)
from dg_jax.guidance.posterior import commit_draws, drawn_classes, target_posteriors
from dg_jax.guidance.targets import check_disjoint, make_target, parse_target, preserved_targets
from dg_jax.models.adp import ADP, ADPConfig

NUM_CLASSES = {"hair": 2, "glasses": 2, "skin": 3}


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
@pytest.mark.parametrize("q", [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [0.9, 0.1]])
@pytest.mark.parametrize("p", [[0.0, 1.0], [1.0, 0.0], [0.3, 0.7]])
def test_losses_and_gradients_are_finite_for_any_target(name, q, p):
    fn = losses.LOSSES[name]
    p, q = jnp.asarray(p), jnp.asarray(q)
    value, grad = jax.value_and_grad(lambda p: fn(p, q))(p)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    assert fn(q, q) <= 1e-6  # zero at the target (KL: p log p = 0 at p = 0)


def test_loss_formulas_for_interior_targets():
    p, q = jnp.array([0.2, 0.3, 0.5]), jnp.array([0.4, 0.4, 0.2])
    np.testing.assert_allclose(losses.chi_square(p, q), np.sum((p - q) ** 2 / q), rtol=1e-6)
    np.testing.assert_allclose(losses.kl(p, q), np.sum(p * np.log(p / q)), rtol=1e-6)
    np.testing.assert_allclose(losses.l2(p, q), np.sum((p - q) ** 2), rtol=1e-6)
    # Gradients by hand: chi2' = 2 (p - q) / q, KL' = log(p / q) + 1, L2' = 2 (p - q).
    np.testing.assert_allclose(jax.grad(losses.chi_square)(p, q), 2 * (p - q) / q, rtol=1e-5)
    np.testing.assert_allclose(jax.grad(losses.kl)(p, q), np.log(p / q) + 1, rtol=1e-5)
    np.testing.assert_allclose(jax.grad(losses.l2)(p, q), 2 * (p - q), rtol=1e-5)
    # A forbidden class (q_k = 0) weighs 1 / MIN_PROB.
    zero = jnp.array([0.0, 1.0])
    np.testing.assert_allclose(losses.chi_square(jnp.array([0.1, 0.9]), zero),
                               0.01 / losses.MIN_PROB + 0.01, rtol=1e-5)


def test_parse_targets_and_joint_cells():
    t = parse_target("skin=uniform", NUM_CLASSES)
    assert t.probs == pytest.approx((1 / 3,) * 3) and t.num_classes == (3,)
    joint = parse_target("hair,skin=0.25,0.15,0.1,0.25,0.15,0.1", NUM_CLASSES)
    assert joint.attributes == ("hair", "skin") and len(joint.probs) == 6
    assert parse_target("hair=0,1", NUM_CLASSES).probs == (0.0, 1.0)


@pytest.mark.parametrize("spec, message", [
    ("hair=0.5,0.4", "sums to 0.9"),
    ("skin=0.5,0.5", "needs 3 probabilities"),
    ("beard=0.5,0.5", "unknown attribute 'beard'"),
    ("hair=-0.5,1.5", "negative"),
    ("hair=a,b", "must be numbers"),
    ("hair", "must look like"),
    ("hair,hair=uniform", "distinct"),
])
def test_bad_targets_name_the_problem(spec, message):
    with pytest.raises(UserError, match=message):
        parse_target(spec, NUM_CLASSES)


def test_overlapping_targets_are_refused():
    targets = [parse_target("hair=uniform", NUM_CLASSES),
               parse_target("hair,skin=uniform", NUM_CLASSES)]
    with pytest.raises(UserError, match="'hair' appears in targets"):
        check_disjoint(targets)


def test_joint_batch_distribution_is_the_mean_outer_product():
    rng = np.random.RandomState(0)
    probs = {"hair": jax.nn.softmax(jnp.asarray(rng.randn(5, 2))),
             "skin": jax.nn.softmax(jnp.asarray(rng.randn(5, 3)))}
    target = make_target(("hair", "skin"), "uniform", NUM_CLASSES)
    expected = np.mean(np.einsum("bi,bj->bij", probs["hair"], probs["skin"]), 0).reshape(-1)
    np.testing.assert_allclose(batch_distribution(probs, target), expected, rtol=1e-6)
    assert batch_distribution(probs, target).sum() == pytest.approx(1.0)


def linear_predictor(key=0, classes=(("hair", 2), ("skin", 3)), dim=12):
    w = jax.random.normal(jax.random.key(key), (dim, sum(k for _, k in classes)))

    def predict(h):
        logits = h.reshape(h.shape[0], -1) @ w
        return {"hair": logits[:, :2], "skin": logits[:, 2:]}

    return predict


def test_guided_update_moves_the_batch_toward_the_target():
    predict = linear_predictor()
    targets = [parse_target("hair=0.9,0.1", NUM_CLASSES), parse_target("skin=0,0,1", NUM_CLASSES)]
    config = GuidanceConfig(temperature=1.0)
    h = jax.random.normal(jax.random.key(1), (16, 2, 2, 3))

    def loss(h):
        probs = class_probabilities(predict(h), config.temperature)
        return distribution_loss(probs, targets, config.loss)[0]

    before = loss(h)
    for _ in range(20):
        h, p_hats, _ = guide_h(h, predict, targets, config, scale=jnp.float32(0.05))
        assert all(np.all(np.isfinite(p)) for p in p_hats.values())
    assert loss(h) < 0.5 * before


def test_scale_carries_over_between_batch_sizes():
    """A batch of N copies of the same samples gets the same per-sample update for any N."""
    predict = linear_predictor()
    targets = [parse_target("hair=0.5,0.5", NUM_CLASSES)]
    config = GuidanceConfig(temperature=2.0)
    h = jax.random.normal(jax.random.key(2), (4, 2, 2, 3))
    small, _, _ = guide_h(h, predict, targets, config, jnp.float32(0.1))
    big, _, _ = guide_h(jnp.tile(h, (16, 1, 1, 1)), predict, targets, config, jnp.float32(0.1))
    np.testing.assert_allclose(big[:4], small, rtol=1e-4, atol=1e-6)
    assert np.abs(np.asarray(small - h)).max() > 1e-3


def test_target_weight_scales_that_targets_push():
    """Weight w on the only target: the update is w times the unweighted one; the refs argument
    replaces p_ref."""
    predict = linear_predictor()
    targets = [parse_target("hair=0.5,0.5", NUM_CLASSES)]
    h = jax.random.normal(jax.random.key(3), (8, 2, 2, 3))
    plain, _, _ = guide_h(h, predict, targets, GuidanceConfig(temperature=2.0), jnp.float32(0.1))
    weighted, _, _ = guide_h(h, predict, targets,
                          GuidanceConfig(temperature=2.0, target_weights=("hair=3",)),
                          jnp.float32(0.1))
    np.testing.assert_allclose(weighted - h, 3 * (plain - h), rtol=1e-3, atol=1e-6)
    refs = {"hair": jnp.array([0.5, 0.5])}
    same, _, _ = guide_h(h, predict, targets, GuidanceConfig(temperature=2.0), jnp.float32(0.1),
                      refs=refs)
    np.testing.assert_array_equal(same, plain)
    with pytest.raises(ValueError, match="target_weights: bad 'hair'"):
        GuidanceConfig(target_weights=("hair",))


def test_step_scale_interval_and_schedule():
    config = GuidanceConfig(scale=2.0, start_step=1, end_step=3)
    scales = [float(step_scale(config, jnp.int32(i), jnp.float32(0.02), 5)) for i in range(5)]
    assert scales[0] == 0 and scales[3] == 0 and scales[4] == 0
    assert scales[1] == pytest.approx(2.0 * 0.02 ** 0.05)
    constant = GuidanceConfig(scale=2.0, schedule="constant")
    assert float(step_scale(constant, jnp.int32(4), jnp.float32(0.02), 5)) == 2.0


@pytest.mark.parametrize("kind", ["mlp", "linear_per_step"])
def test_adp_kinds_share_one_interface_and_jit(kind):
    config = ADPConfig(attributes=(("hair", 2), ("skin", 3)), h_shape=(2, 2, 8), kind=kind,
                       hidden=16, time_dim=8, timesteps=(999, 499, 0))
    adp = ADP(config, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(adp)
    h = jax.random.normal(jax.random.key(0), (3, 2, 2, 8))

    @jax.jit
    def run(state, h, t, step):
        return nnx.merge(graphdef, state)(h, t, step)

    out = run(state, h, jnp.array([999, 999, 999]), jnp.int32(0))
    assert {k: v.shape for k, v in out.items()} == {"hair": (3, 2), "skin": (3, 3)}
    if kind == "linear_per_step":  # the step index picks a different head
        other = run(state, h, jnp.array([0, 0, 0]), jnp.int32(2))
        assert np.abs(np.asarray(other["hair"] - out["hair"])).max() > 1e-4
    assert ADPConfig.from_dict(configs.to_dict(config)) == config


@pytest.mark.parametrize("push", ["posterior", "commit"])
@pytest.mark.parametrize("specs", [["hair=0,1"], ["hair=1,0", "glasses=0.3,0.7", "skin=0,0,1"]])
def test_bounded_update_moves_h_by_at_most_the_bound(specs, push):
    """One-hot and three targets at once, at a scale far past the bound: every sample's step is
    at most max_step * ||h_i||, and the reported change is that step."""
    classes = (("hair", 2), ("glasses", 2), ("skin", 3))
    w = jax.random.normal(jax.random.key(4), (12, 7))

    def predict(h):
        logits = h.reshape(h.shape[0], -1) @ w
        return {"hair": logits[:, :2], "glasses": logits[:, 2:4], "skin": logits[:, 4:]}

    targets = [parse_target(s, dict(classes)) for s in specs]
    h = jax.random.normal(jax.random.key(5), (32, 2, 2, 3))
    norms = np.linalg.norm(np.asarray(h).reshape(32, -1), axis=1)
    draws = commit_draws(jax.random.split(jax.random.key(6), 32), targets)
    draws = draws if push == "commit" else None
    for bound in (0.25, 1.0):
        config = GuidanceConfig(max_step=bound, push=push)
        new, _, change = guide_h(h, predict, targets, config, jnp.float32(1e6), draws=draws)
        moved = np.linalg.norm(np.asarray(new - h).reshape(32, -1), axis=1)
        assert np.all(moved <= bound * norms * (1 + 1e-5))
        np.testing.assert_allclose(change, moved / norms, rtol=1e-4)
        assert moved.max() > 0.9 * bound * norms.max()  # the bound binds at this scale
    unbounded, _, change = guide_h(h, predict, targets, GuidanceConfig(max_step=None, push=push),
                                   jnp.float32(1e6), draws=draws)
    assert np.asarray(change).min() > 10  # what the bound prevents


def test_calibrated_p_hat_is_the_adps_own_estimate_with_the_tempered_gradient():
    """tau squeezes softmax(logits / tau) towards uniform; the calibrated p_hat is the mean of
    softmax(logits), and its gradient is the tempered softmax's."""
    logits = {"hair": jnp.array([[4.0, -4.0], [3.0, -3.0], [-5.0, 5.0]])}
    calibrated = class_probabilities(logits, 8.0, calibrated=True)["hair"]
    np.testing.assert_allclose(calibrated, jax.nn.softmax(logits["hair"]), atol=1e-6)
    grad = jax.grad(lambda v: class_probabilities({"hair": v}, 8.0, True)["hair"][:, 0].sum())
    tempered = jax.grad(lambda v: jax.nn.softmax(v / 8.0)[:, 0].sum())
    np.testing.assert_allclose(grad(logits["hair"]), tempered(logits["hair"]), rtol=1e-6)


@pytest.mark.parametrize("field", ["scale", "temperature", "max_step", "power_from",
                                   "power_min_accuracy"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_guidance_settings_are_refused(field, value):
    # library errors name the config's fields (the command line names its flags instead)
    with pytest.raises(ValueError, match=f"^{field} must be finite"):
        GuidanceConfig(**{field: value})
    with pytest.raises(ValueError, match="^target_weights: bad"):
        GuidanceConfig(target_weights=(f"hair={value}",))


def test_preserve_holds_an_attribute_that_guidance_would_drag_along():
    """Guiding hair through a predictor whose skin logits share hair's direction drags skin;
    holding skin at its own starting shares (a preserved target) keeps it within a few points."""
    rng = np.random.RandomState(6)
    w = rng.randn(12, 5).astype(np.float32)
    w[:, 2] += 2 * w[:, 1]  # skin class 0 rises with hair class 1
    w = jnp.asarray(w)

    def predict(h):
        logits = h.reshape(h.shape[0], -1) @ w
        return {"hair": logits[:, :2], "skin": logits[:, 2:]}

    h0 = jax.random.normal(jax.random.key(7), (256, 2, 2, 3))
    start = np.asarray(jax.nn.softmax(predict(h0)["skin"]).mean(0))
    hair = [parse_target("hair=0.1,0.9", NUM_CLASSES)]
    held = preserved_targets(["skin"], {"skin": start.tolist()}, NUM_CLASSES, hair)

    def skin_after(targets):
        h = h0
        for _ in range(30):
            h, _, _ = guide_h(h, predict, targets, GuidanceConfig(temperature=2.0, loss="l2"),
                              jnp.float32(0.3))
        return np.asarray(jax.nn.softmax(predict(h)["skin"]).mean(0))

    dragged, kept = skin_after(hair), skin_after(hair + held)
    assert np.abs(dragged - start).max() > 0.1
    assert np.abs(kept - start).max() < 0.03
    with pytest.raises(UserError, match="both a target and preserved"):
        preserved_targets(["hair"], {"hair": [0.5, 0.5]}, NUM_CLASSES, hair)
    with pytest.raises(UserError, match="records no unguided shares"):
        preserved_targets(["glasses"], {}, NUM_CLASSES, hair)


def test_target_posteriors_meet_the_target_and_keep_what_already_fits():
    rng = np.random.RandomState(8)
    cells = jax.nn.softmax(jnp.asarray(2 * rng.randn(64, 3), jnp.float32))
    for ref in ([0.2, 0.3, 0.5], [0.0, 0.0, 1.0], [0.5, 0.5, 0.0]):
        pi = target_posteriors(cells, jnp.asarray(ref))
        np.testing.assert_allclose(pi.mean(0), ref, atol=1e-3)
        np.testing.assert_allclose(pi.sum(-1), 1.0, atol=1e-5)
        assert np.all(np.asarray(pi)[:, np.asarray(ref) == 0] == 0)
    # a target the batch already meets: every sample keeps its own prediction (no push)
    np.testing.assert_allclose(target_posteriors(cells, cells.mean(0)), cells, atol=1e-4)
    # re-weighting keeps each sample's order of preference among the allowed classes
    pi = np.asarray(target_posteriors(cells, jnp.asarray([0.6, 0.2, 0.2])))
    ratio = pi / np.asarray(cells)
    per_class = ratio / ratio[:, :1]  # v_k / v_0, the same for every sample
    np.testing.assert_allclose(per_class, np.broadcast_to(per_class[:1], per_class.shape),
                               rtol=1e-3)


def test_a_posterior_power_sends_samples_to_the_class_they_lean_to():
    rng = np.random.RandomState(9)
    cells = jax.nn.softmax(jnp.asarray(rng.randn(256, 3), jnp.float32))
    ref = jnp.asarray([0.2, 0.3, 0.5])
    plain = np.asarray(target_posteriors(cells, ref))
    sharp = np.asarray(target_posteriors(cells, ref, power=6.0))
    np.testing.assert_allclose(sharp.mean(0), ref, atol=1e-3)  # the batch still meets ref
    # each sample's target is more decisive, and still on the class the plain target favours
    assert sharp.max(-1).mean() > plain.max(-1).mean() + 0.2
    assert np.mean(sharp.argmax(-1) == plain.argmax(-1)) > 0.85
    with pytest.raises(UserError, match="posterior_power must be > 0"):
        GuidanceConfig(posterior_power=0.0)


def test_the_posterior_power_applies_from_its_fraction_of_the_loop_on():
    late = GuidanceConfig(posterior_power=4.0, power_from=0.8)
    powers = [float(step_power(late, jnp.int32(i), 50)) for i in range(50)]
    assert powers == [1.0] * 40 + [4.0] * 10
    throughout = GuidanceConfig(posterior_power=4.0, power_from=0.0)
    assert {float(step_power(throughout, jnp.int32(i), 50)) for i in range(50)} == {4.0}
    # the default: power 4 in the last 10 of 50 steps
    assert [float(step_power(GuidanceConfig(), jnp.int32(i), 50)) for i in range(50)] == powers
    with pytest.raises(UserError, match=r"power_from must be in \[0, 1\], got 1.5"):
        GuidanceConfig(power_from=1.5)


def test_the_posterior_power_acts_on_the_attributes_the_adp_reads_well():
    targets = [parse_target(spec, {**NUM_CLASSES, "smile": 2})
               for spec in ("hair=uniform", "smile=uniform", "glasses,skin=uniform")]
    accuracy = {"hair": 0.98, "smile": 0.82, "glasses": 0.97, "skin": 0.93}
    gated = GuidanceConfig(posterior_power=4.0, power_min_accuracy=0.85)
    assert powered_targets(gated, targets, accuracy) == {"hair", "glasses,skin"}
    # a joint target takes the power only when every attribute of it is read well enough
    strict = GuidanceConfig(posterior_power=4.0, power_min_accuracy=0.95)
    assert powered_targets(strict, targets, accuracy) == {"hair"}
    # an ADP that records no accuracy: no target under a line; every target without one
    assert powered_targets(gated, targets, None) == set()
    assert powered_targets(GuidanceConfig(posterior_power=4.0, power_min_accuracy=0.0),
                           targets, None) == {t.name for t in targets}
    # the default line lets hair and glasses, skin through, not smile
    assert powered_targets(GuidanceConfig(), targets, accuracy) == {"hair", "glasses,skin"}
    with pytest.raises(UserError, match=r"power_min_accuracy must be in \[0, 1\], got 2"):
        GuidanceConfig(power_min_accuracy=2.0)


def test_drawn_classes_follow_each_samples_posterior():
    pi = jnp.array([[0.2, 0.3, 0.5], [0.0, 0.4, 0.6], [0.0, 1.0, 0.0]])
    u = jnp.linspace(0.0, 1.0, 1000, endpoint=False)
    draws = np.stack([np.asarray(drawn_classes(pi, jnp.full(3, v))) for v in u])  # [U, 3, C]
    assert np.all(draws.sum(-1) == 1)
    # over uniform u each row's class frequencies are its pi; a class with pi = 0 never comes
    np.testing.assert_allclose(draws.mean(0), pi, atol=2e-3)
    np.testing.assert_array_equal(drawn_classes(pi, jnp.array([0.1, 0.1, 0.9])),
                                  [[1, 0, 0], [0, 1, 0], [0, 1, 0]])
    # a cumulative sum rounded a hair under u still draws a class the row allows
    np.testing.assert_array_equal(drawn_classes(jnp.array([[0.7, 0.3 - 1e-7, 0.0]]),
                                                jnp.array([1.0 - 1e-8])), [[0, 1, 0]])


def test_commit_push_sends_ambiguous_samples_to_one_class_and_leaves_fitting_ones():
    """hair=0.5,0.5 on a batch of confident class-1 samples and ambiguous ones: the confident
    ones are not moved, the ambiguous ones end near one class each (not at 50/50), and the
    batch's shares meet the target."""
    w = jnp.array([[1.0, -1.0]] + [[0.0, 0.0]] * 11)

    def predict(h):
        return {"hair": h.reshape(h.shape[0], -1) @ w}

    targets = [parse_target("hair=0.5,0.5", NUM_CLASSES)]
    first = jnp.concatenate([jnp.full(16, -6.0), 0.1 * jax.random.normal(jax.random.key(9), (48,))])
    # the other entries do not reach the logits; they give h a norm the trust region allows
    # steps against
    h = jnp.ones((64, 2, 2, 3)).at[:, 0, 0, 0].set(first)
    keys = jax.random.split(jax.random.key(10), 64)
    config = GuidanceConfig(temperature=1.0, push="commit", posterior_power=1.0)
    new = h
    for _ in range(40):
        new, _, _ = guide_h(new, predict, targets, config, jnp.float32(0.5),
                            draws=commit_draws(keys, targets))
    p = np.asarray(jax.nn.softmax(predict(new)["hair"]))
    np.testing.assert_allclose(new[:16], h[:16], atol=1e-3)  # already fit: left alone
    assert np.mean(np.abs(p[16:, 0] - 0.5) > 0.4) > 0.9  # the ambiguous ones commit
    assert abs(p[:, 0].mean() - 0.5) < 0.1
    # the posterior push instead leaves the ambiguous ones in between
    soft = h
    for _ in range(40):
        soft, _, _ = guide_h(soft, predict, targets,
                             GuidanceConfig(temperature=1.0, posterior_power=1.0),
                             jnp.float32(0.5))
    q = np.asarray(jax.nn.softmax(predict(soft)["hair"]))
    assert np.mean(np.abs(q[16:, 0] - 0.5) > 0.4) < 0.1
    with pytest.raises(ValueError, match="needs the samples' draws"):
        guide_h(h, predict, targets, config, jnp.float32(0.5))
