"""Jit-compiled samplers built from a UNet: unguided, distribution-guided in h-space, or one of
the paper's baselines (sample-level guidance on h, or on x0_hat with an image classifier).

A sampler maps per-sample keys [B] to images [B, H, W, C] in [-1, 1] and a trace (the batch
distributions p_hat at every step when guided; h at every step on request). Unguided and h-space
samplers evaluate the UNet once per step: the guided one splits it at h (`encode` -> guide h ->
`decode`), with the gradient taken through the ADP only.

Text-conditional (latent) models add classifier-free guidance (`TextConditioning`): the UNet runs
once per step on [unconditional; conditional] halves, the ADP reads the conditional half's h, the
guided h' replaces only that half, and the outputs combine as u + w (c - u). The autoencoder turns
the final latents into images inside the same jit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from dg_jax.diffusion import samplers
from dg_jax.diffusion.sampler_config import SamplerConfig
from dg_jax.diffusion.schedules import alphas_cumprod, make_betas
from dg_jax.guidance.distribution import (
    GuidanceConfig,
    batch_distribution,
    class_probabilities,
    default_refs,
    guide_h,
    step_scale,
    target_weights,
)
from dg_jax.guidance.sample_level import draw_cells, guide_h_per_sample, sample_level_loss
from dg_jax.guidance.targets import Target
from dg_jax.models.adp import ADP
from dg_jax.models.classifier import AttributeClassifier
from dg_jax.models.config import ModelConfig
from dg_jax.models.unet import UNet
from dg_jax.models.vae import AutoencoderKL
from dg_jax.parallel import DATA_AXIS, replicate


@dataclasses.dataclass(frozen=True)
class TextConditioning:
    """Sampling a text-conditional UNet: the sampler is then called with context [B, L, D] (the
    prompts' embeddings) and uncond_context [L, D] (the empty prompt's).

    cfg_scale: classifier-free guidance weight w (1: the conditional branch alone, no
    unconditional pass). group_size: the batch is B / group_size groups of consecutive samples
    with one prompt each, and each group's batch distribution is pushed to the targets on its
    own (None: the whole batch is one group).
    """

    cfg_scale: float = 7.5
    group_size: int | None = None

    def __post_init__(self):
        if self.cfg_scale < 1:
            raise ValueError(f"cfg_scale must be >= 1, got {self.cfg_scale}")
        if self.group_size is not None and self.group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {self.group_size}")


def sampling_plan(model_config: ModelConfig, config: SamplerConfig):
    """(resolved SamplerConfig, descending timesteps [S] np.int32, alpha_bar [T], final alpha_bar)."""
    config = config.resolve(model_config.sampling)
    schedule = model_config.schedule
    alpha_bar = alphas_cumprod(schedule)
    multistep = config.method == "dpm++2m"
    ts = samplers.sampling_timesteps(schedule.num_train_timesteps, config.num_steps,
                                     config.spacing, config.steps_offset, multistep)
    # DPM-Solver++ ends at sigma 0 (diffusers' final_sigmas_type "zero")
    final = 1.0 if config.set_alpha_to_one or multistep else alpha_bar[0]
    return config, ts, alpha_bar, final


def check_adp_fits(adp: ADP, unet: UNet, timesteps: np.ndarray) -> None:
    """An ADP must read this UNet's h (and, per-step heads, these exact timesteps)."""
    if tuple(adp.config.h_shape) != tuple(unet.config.h_shape):
        raise ValueError(f"ADP expects h of shape {tuple(adp.config.h_shape)} but the UNet's h is "
                         f"{tuple(unet.config.h_shape)}: ADP and UNet do not match")
    if adp.config.timesteps is not None and tuple(adp.config.timesteps) != tuple(
            int(t) for t in timesteps):
        raise ValueError(f"this per-step ADP was trained for {len(adp.config.timesteps)} "
                         f"sampling steps {list(adp.config.timesteps)[:3]}..., the sampler uses "
                         f"{len(timesteps)} steps {list(timesteps)[:3]}...")


GUIDANCE_METHODS = ("distribution", "sample", "image")


def make_sampler(model: UNet, model_config: ModelConfig, config: SamplerConfig,
                 adp: ADP | None = None, targets: Sequence[Target] = (),
                 guidance: GuidanceConfig | None = None, record_h: bool = False,
                 method: str = "distribution", classifier: AttributeClassifier | None = None,
                 mesh: Mesh | None = None, distribution_scope: str = "global",
                 text: TextConditioning | None = None, vae: AutoencoderKL | None = None):
    """Returns a jitted (keys [B], refs=None, context=None, uncond_context=None) -> (images
    [B, H, W, C] in [-1, 1], trace).

    method (when targets are given):
      distribution  the paper's method: the batch distribution of the ADP's predictions on h is
                    pushed towards the targets (one UNet evaluation per step);
      sample        baseline: each sample is pushed on h towards its own cell drawn from the
                    targets (-log p(cell) through the ADP; one UNet evaluation per step);
      image         baseline, universal-guidance style: the same per-sample loss with `classifier`
                    on x0_hat, differentiated w.r.t. x_t through the UNet (a forward and a
                    backward pass of the UNet per step).
    refs: target name -> distribution [prod K] to steer towards instead of the target's p_ref (a
    traced argument: changing it does not recompile).
    mesh: a 1-D (DATA_AXIS,) device mesh (dg_jax.parallel.data_mesh): the batch is split over its
    devices with jax.shard_map (B must be a multiple of the device count). distribution_scope
    "global" pushes the global batch's p_hat (one all-reduce of K floats per step), "local" each
    device's own.
    trace["p_hat"]: target name -> batch distribution (global) before each step's update [S, K]
    (guided only); trace["h"]: h at every step, [S, B, h, w, c] float16 (before guidance), if
    record_h; trace["h_change"]: each sample's relative change of h by guidance,
    ||h' - h|| / ||h|| [S, B] (distribution guidance). Fields of `config` left None take the
    model's sampling defaults.
    text, vae: a text-conditional latent model (Stable Diffusion): classifier-free guidance and
    per-prompt-group batch distributions (`TextConditioning`); the UNet samples latents, `vae`
    decodes them (without `vae` the sampler returns the latents).
    """
    config, ts, alpha_bar, final = sampling_plan(model_config, config)
    targets = tuple(targets)
    guided = len(targets) > 0 and (classifier if method == "image" else adp) is not None
    if method not in GUIDANCE_METHODS:
        raise ValueError(f"unknown guidance method {method!r}; use {', '.join(GUIDANCE_METHODS)}")
    if distribution_scope not in ("global", "local"):
        raise ValueError(f"unknown distribution scope {distribution_scope!r}; use global or local")
    if guided and method != "image":
        check_adp_fits(adp, model, ts)
    conditional = model.config.cross_attention_dim is not None
    if conditional != (text is not None):
        raise ValueError("a text-conditional UNet needs `text` (TextConditioning), and only it"
                         if conditional else "`text` given for a UNet without cross-attention")
    if guided and method == "image" and conditional:
        raise ValueError("image-space guidance is not supported for latent models (it would "
                         "decode x0_hat through the autoencoder at every step)")
    group = text.group_size if text is not None and method == "distribution" else None
    guidance = guidance or GuidanceConfig()
    betas = jnp.asarray(make_betas(model_config.schedule), jnp.float32)
    c = model.config
    shape = (c.sample_size, c.sample_size, c.in_channels)
    graphdef, state = nnx.split((model, adp, classifier, vae))
    guide_axis = DATA_AXIS if mesh is not None and distribution_scope == "global" else None

    def sample(state, keys, refs, context, uncond_context):
        unet, predictor, image_classifier, autoencoder = nnx.merge(graphdef, state)
        cells = draw_cells(keys, targets, refs) if guided and method != "distribution" else {}
        if conditional and context is None:
            raise ValueError("a text-conditional sampler needs context [B, L, D]")

        def unet_with_h_edit(x, t, edit):
            """The model's output with h replaced by edit(h) (-> h', trace); under
            classifier-free guidance only the conditional half's h is read and edited."""
            if not conditional or text.cfg_scale == 1:
                enc = unet.encode(x, t, context)
                h, trace = edit(enc.h)
                return unet.decode(h, enc.skips, enc.temb, enc.context), trace
            b = x.shape[0]
            uncond = jnp.broadcast_to(uncond_context, context.shape).astype(context.dtype)
            enc = unet.encode(jnp.concatenate([x, x]), jnp.concatenate([t, t]),
                              jnp.concatenate([uncond, context]))
            h, trace = edit(enc.h[b:])
            out = unet.decode(jnp.concatenate([enc.h[:b], h]), enc.skips, enc.temb,
                              enc.context)
            return out[:b] + text.cfg_scale * (out[b:] - out[:b]), trace

        def guide_groups(h, predict, scale):
            """guide_h on each prompt group's own batch distribution: p_hat [G, K] per target.
            A group lies on one device: its distribution is its own (local) under a mesh too."""
            b = h.shape[0]
            if b % group:
                raise ValueError(f"batch {b} is not a whole number of groups of {group}")
            grouped = h.reshape(b // group, group, *h.shape[1:])
            h, p_hat, change = jax.vmap(lambda hg: guide_h(hg, predict, targets, guidance,
                                                           scale, None, refs))(grouped)
            return h.reshape(b, *h.shape[2:]), p_hat, change.reshape(b)

        def h_guided_fn(x, t, i):
            def edit(h):
                trace = {"h": h.astype(jnp.float16)} if record_h else {}
                if guided:
                    scale = step_scale(guidance, i, betas[t[0]], len(ts))

                    def predict(h):  # t: the batch's one timestep, sized to h (a group's rows)
                        return predictor(h, jnp.full(h.shape[0], t[0]), i)

                    if group is not None:
                        h, trace["p_hat"], trace["h_change"] = guide_groups(h, predict, scale)
                    elif method == "distribution":
                        h, trace["p_hat"], trace["h_change"] = guide_h(
                            h, predict, targets, guidance, scale, guide_axis, refs)
                    else:
                        h, trace["p_hat"] = guide_h_per_sample(h, predict, targets, cells,
                                                               guidance, scale)
                return h, trace

            return unet_with_h_edit(x, t, edit)

        def image_guided_fn(x, t, i):
            a = alpha_bar[t[0]]

            def loss_of_x(x):
                out = unet(x, t)
                x0, _ = samplers.predict_x0_eps(out, x, a, c.prediction_type)
                logits = image_classifier(jnp.clip(x0, -1, 1))
                loss, p_hats = sample_level_loss(logits, targets, cells, guidance.temperature,
                                                 target_weights(guidance))
                return loss, (out, p_hats)

            def guided_output(x):
                grad, (out, p_hats) = jax.grad(loss_of_x, has_aux=True)(x)
                # eps_hat' = eps_hat + s_t sqrt(1 - a) d(-log p)/dx_t, as classifier guidance
                # does with grad log p(c | x_t); carried into the model's output parametrisation.
                shift = scale * jnp.sqrt(1 - a) * samplers.output_per_epsilon(a, c.prediction_type)
                return out + shift * grad, p_hats

            def plain_output(x):  # outside the guidance interval: no backward pass
                out = unet(x, t)
                x0, _ = samplers.predict_x0_eps(out, x, a, c.prediction_type)
                probs = class_probabilities(image_classifier(jnp.clip(x0, -1, 1)),
                                            guidance.temperature)
                return out, {tg.name: batch_distribution(probs, tg) for tg in targets}

            scale = step_scale(guidance, i, betas[t[0]], len(ts))
            out, p_hats = jax.lax.cond(scale > 0, guided_output, plain_output, x)
            return out, {"p_hat": p_hats}

        model_fn = image_guided_fn if guided and method == "image" else h_guided_fn
        x_T = samplers.initial_noise(keys, shape)
        x0, trace = samplers.sample(model_fn, x_T, keys, alpha_bar, ts, config.method,
                                    config.eta, c.prediction_type, config.clip_range, final)
        if mesh is not None and "p_hat" in trace and group is None:
            # the trace reports the global batch, whichever batch was pushed (pmean leaves an
            # already global p_hat as it is)
            trace["p_hat"] = jax.lax.pmean(trace["p_hat"], DATA_AXIS)
        if autoencoder is not None:
            x0 = autoencoder.latents_to_images(x0)
        elif conditional:  # latents of a latent model sampled without its autoencoder: as they are
            return x0, trace
        return jnp.clip(x0, -1, 1), trace

    if mesh is not None:
        trace_specs = {}
        if guided:  # per-group p_hat [S, G, K]: each device reports its own groups
            trace_specs["p_hat"] = P() if group is None else P(None, DATA_AXIS)
            if method == "distribution":
                trace_specs["h_change"] = P(None, DATA_AXIS)
        if record_h:
            trace_specs["h"] = P(None, DATA_AXIS)
        sample = jax.shard_map(sample, mesh=mesh,
                               in_specs=(P(), P(DATA_AXIS), P(), P(DATA_AXIS), P()),
                               out_specs=(P(DATA_AXIS), trace_specs))
        state = replicate(state, mesh)
    sample = jax.jit(sample)
    target_refs = default_refs(targets)
    return lambda keys, refs=None, context=None, uncond_context=None: sample(
        state, keys, target_refs if refs is None else refs, context, uncond_context)


def make_h_inverter(model: UNet, model_config: ModelConfig, config: SamplerConfig):
    """Returns a jitted images [B, H, W, C] in [-1, 1] -> h [S, B, h, w, c] float16: DDIM
    inversion (eta 0) through the sampler's timesteps, h in sampling order (step 0 = noisiest)."""
    config, ts, alpha_bar, _ = sampling_plan(model_config, config)
    graphdef, state = nnx.split(model)
    prediction_type = model.config.prediction_type

    @jax.jit
    def invert(state, x0):
        unet = nnx.merge(graphdef, state)

        def model_fn(x, t, i):
            enc = unet.encode(x, t)
            return unet.decode(enc.h, enc.skips, enc.temb), enc.h.astype(jnp.float16)

        _, hs = samplers.invert(model_fn, x0, alpha_bar, ts, prediction_type)
        return hs[::-1]  # inversion visits timesteps ascending

    return lambda images: invert(state, images)
