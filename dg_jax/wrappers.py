"""Model functions for the sampling loop, built from a UNet by small wrappers that compose.

A model function maps (x_t [B, H, W, C], t [B], step index) -> (model output [B, H, W, C],
trace), the form `dg_jax.diffusion.samplers.sample` runs:

    h_edit_model(unet, edit)                 encode -> edit(h) -> decode: one UNet evaluation,
                                             h replaced by the edit's h' (guidance on h)
    classifier_free(unet, edit, c, u, w)     classifier-free guidance u + w (c - u), one UNet
                                             evaluation on [unconditional; conditional] halves;
                                             the edit sees the conditional half's h only
    ImageGuidance(...).model_fn(...)         classifier guidance on x0_hat, differentiated w.r.t.
                                             x_t through the UNet (a backward pass per step)

Edits (h [B, ...], t, i) -> (h', trace) come from `dg_jax.guidance.methods`; `recording(edit)`
adds h itself to the trace.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from dg_jax.diffusion import samplers
from dg_jax.diffusion.samplers import ModelFn
from dg_jax.guidance.distribution import (
    GuidanceConfig,
    References,
    batch_distribution,
    class_probabilities,
    target_weights,
)
from dg_jax.guidance.methods import Edit, ScaleAt, checked_targets
from dg_jax.guidance.sample_level import draw_cells, sample_level_loss
from dg_jax.guidance.targets import Target
from dg_jax.models.classifier import AttributeClassifier
from dg_jax.models.unet import UNet


def no_edit(h, t, i):
    return h, {}


def recording(edit: Edit) -> Edit:
    """The edit, with h before it in the trace as "h" (float16)."""
    def record(h, t, i):
        h_new, trace = edit(h, t, i)
        return h_new, {**trace, "h": h.astype(jnp.float16)}

    return record


def h_edit_model(unet: UNet, edit: Edit = no_edit, context: jax.Array | None = None) -> ModelFn:
    """The UNet with h replaced by edit(h); context [B, L, D] for a text-conditional UNet."""
    def model_fn(x, t, i):
        enc = unet.encode(x, t, context)
        h, trace = edit(enc.h, t, i)
        return unet.decode(h, enc.skips, enc.temb, enc.context), trace

    return model_fn


def second_half(edit: Edit) -> Edit:
    """The edit applied to the second half of the batch only (the conditional branch)."""
    def half(h, t, i):
        b = h.shape[0] // 2
        h_cond, trace = edit(h[b:], t[b:], i)
        return jnp.concatenate([h[:b], h_cond]), trace

    return half


def classifier_free(unet: UNet, edit: Edit, context: jax.Array, uncond_context: jax.Array,
                    scale: float) -> ModelFn:
    """Classifier-free guidance u + scale (c - u) with context [B, L, D] and the unconditional
    context [L, D]; scale 1 is the conditional branch alone (no unconditional pass)."""
    if scale == 1:
        return h_edit_model(unet, edit, context)
    uncond = jnp.broadcast_to(uncond_context, context.shape).astype(context.dtype)
    both = h_edit_model(unet, second_half(edit), jnp.concatenate([uncond, context]))

    def model_fn(x, t, i):
        b = x.shape[0]
        out, trace = both(jnp.concatenate([x, x]), jnp.concatenate([t, t]), i)
        return out[:b] + scale * (out[b:] - out[:b]), trace

    return model_fn


@dataclasses.dataclass(frozen=True, eq=False)
class ImageGuidance:
    """Baseline, universal-guidance style: each sample's cell, drawn from the targets as for
    sample-level guidance, scored by `classifier` on x0_hat and differentiated w.r.t. x_t
    through the UNet. trace: "p_hat" (the classifier's batch distribution on x0_hat)."""

    classifier: AttributeClassifier
    targets: tuple[Target, ...]
    config: GuidanceConfig = GuidanceConfig()

    def __post_init__(self):
        object.__setattr__(self, "targets", checked_targets(self.targets))

    @property
    def module(self) -> AttributeClassifier:
        return self.classifier

    def model_fn(self, unet: UNet, classifier: AttributeClassifier, keys: jax.Array,
                 refs: References, scale_at: ScaleAt, alpha_bar: jax.Array) -> ModelFn:
        cells = draw_cells(keys, self.targets, refs)
        prediction_type, variance_type = unet.config.prediction_type, unet.config.variance_type

        def x0_logits(out, x, a):
            prediction, _ = samplers.split_output(out, variance_type)
            x0, _ = samplers.predict_x0_eps(prediction, x, a, prediction_type)
            return classifier(jnp.clip(x0, -1, 1))

        def guided_output(x, t, a, scale):
            def loss_of_x(x):
                out = unet(x, t)
                loss, p_hats = sample_level_loss(x0_logits(out, x, a), self.targets, cells,
                                                 self.config.temperature,
                                                 target_weights(self.config))
                return loss, (out, p_hats)

            grad, (out, p_hats) = jax.grad(loss_of_x, has_aux=True)(x)
            # eps_hat' = eps_hat + s_t sqrt(1 - a) d(-log p)/dx_t, as classifier guidance does
            # with grad log p(c | x_t); carried into the model's output parametrisation.
            shift = scale * jnp.sqrt(1 - a) * samplers.output_per_epsilon(a, prediction_type)
            prediction, v = samplers.split_output(out, variance_type)
            prediction = prediction + shift * grad
            return (prediction if v is None else jnp.concatenate([prediction, v], -1)), p_hats

        def plain_output(x, t, a, scale):  # outside the guidance interval: no backward pass
            out = unet(x, t)
            probs = class_probabilities(x0_logits(out, x, a), self.config.temperature)
            return out, {tg.name: batch_distribution(probs, tg) for tg in self.targets}

        def model_fn(x, t, i):
            scale = scale_at(t, i)
            out, p_hats = jax.lax.cond(scale > 0, guided_output, plain_output, x, t,
                                       alpha_bar[t[0]], scale)
            return out, {"p_hat": p_hats}

        return model_fn
