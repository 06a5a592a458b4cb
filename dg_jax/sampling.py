"""Samplers built from a UNet: unguided, distribution-guided in h-space, or one of the paper's
baselines (sample-level guidance on h, or on x0_hat with an image classifier).

    sampler = make_sampler(unet, model_config, SamplerConfig(), DistributionGuidance(adp, targets))
    images, trace = jax.jit(sampler)(sampler.params, keys)

A sampler is a pure function of its parameters, per-sample keys [B] (and target references) to
images [B, H, W, C] in [-1, 1] and a trace (the batch distributions p_hat at every step when
guided; h at every step on request). It is a short composition of the model-function wrappers in
`dg_jax.wrappers`. Unguided and h-space samplers evaluate the UNet once per step: the guided one
splits it at h (`encode` -> guide h -> `decode`), with the gradient taken through the ADP only.

Text-conditional (latent) models add classifier-free guidance (`TextConditioning`): the UNet runs
once per step on [unconditional; conditional] halves, the ADP reads the conditional half's h, the
guided h' replaces only that half, and the outputs combine as u + w (c - u). The autoencoder turns
the final latents into images inside the same jit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from dg_jax.diffusion import samplers
from dg_jax.diffusion.sampler_config import SamplerConfig
from dg_jax.diffusion.schedules import alphas_cumprod, make_betas
from dg_jax.guidance.distribution import default_refs, step_scale
from dg_jax.guidance.methods import DistributionGuidance, SampleLevelGuidance, check_adp_fits
from dg_jax.models.config import ModelConfig
from dg_jax.models.unet import UNet
from dg_jax.models.vae import AutoencoderKL
from dg_jax.parallel import DATA_AXIS, replicate
from dg_jax.wrappers import ImageGuidance, classifier_free, h_edit_model, no_edit, recording

Guidance = DistributionGuidance | SampleLevelGuidance | ImageGuidance


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


@dataclasses.dataclass(frozen=True, eq=False)
class Sampler:
    """A pure function of its parameters: sampler(params, keys [B], refs=None, context=None,
    uncond_context=None) -> (images [B, H, W, C] in [-1, 1], trace).

    `params` holds every model's parameters (UNet, guidance model, autoencoder; `self.params`
    are the ones it was built with). Call it inside your own jax.jit / vmap / sharding; other
    params of the same structure (fine-tuned weights) do not recompile. refs: target name ->
    distribution [prod K] to steer towards instead of the targets' p_ref (traced: changing it
    does not recompile either). trace: what the guidance reports per step ("p_hat", "h_change",
    leaves [S, ...]) and "h" [S, B, h, w, c] float16 when recording h.
    """

    fn: Callable
    params: nnx.State
    refs: dict
    mesh: Mesh | None = None  # the device mesh it splits the batch over (None: one device)

    def __call__(self, params, keys, refs=None, context=None, uncond_context=None):
        return self.fn(params, keys, self.refs if refs is None else refs, context, uncond_context)

    def jitted(self) -> Callable:
        """This sampler jitted, with its own params: (keys, refs=None, context=None,
        uncond_context=None) -> (images, trace)."""
        sample = jax.jit(self)
        return lambda keys, refs=None, context=None, uncond_context=None: sample(
            self.params, keys, refs, context, uncond_context)


def make_sampler(unet: UNet, model_config: ModelConfig, config: SamplerConfig,
                 guidance: Guidance | None = None, *, text: TextConditioning | None = None,
                 vae: AutoencoderKL | None = None, record_h: bool = False,
                 mesh: Mesh | None = None) -> Sampler:
    """The sampling loop for `unet` (unguided, or steered by `guidance`: DistributionGuidance,
    SampleLevelGuidance, ImageGuidance) as a `Sampler`. Fields of `config` left None take the
    model's sampling defaults.

    text, vae: a text-conditional latent model (Stable Diffusion): classifier-free guidance and
    per-prompt-group batch distributions; `vae` decodes the latents (without it the sampler
    returns latents). mesh: a 1-D (DATA_AXIS,) mesh (dg_jax.parallel.data_mesh): the batch is
    split over its devices with jax.shard_map (B a multiple of the device count).
    """
    config, ts, alpha_bar, final = sampling_plan(model_config, config)
    check_sampler_inputs(unet, ts, guidance, text)
    betas = jnp.asarray(make_betas(model_config.schedule), jnp.float32)
    graphdef, params = nnx.split((unet, getattr(guidance, "module", None), vae))
    axis = DATA_AXIS if mesh is not None else None
    c = unet.config
    on_h = guidance is not None and hasattr(guidance, "h_edit")
    grouped = text is not None and isinstance(guidance, DistributionGuidance)
    group = text.group_size if grouped else None

    def sample(params, keys, refs, context, uncond_context):
        unet, module, autoencoder = nnx.merge(graphdef, params)
        if c.cross_attention_dim is not None and context is None:
            raise ValueError("a text-conditional sampler needs context [B, L, D]")

        def scale_at(t, i):
            return step_scale(guidance.config, i, betas[t[0]], len(ts))

        edit = (guidance.h_edit(module, keys, refs, scale_at, axis, group, len(ts)) if on_h
                else no_edit)
        edit = recording(edit) if record_h else edit
        if guidance is not None and not on_h:
            model_fn = guidance.model_fn(unet, module, keys, refs, scale_at, alpha_bar)
        elif text is not None:
            model_fn = classifier_free(unet, edit, context, uncond_context, text.cfg_scale)
        else:
            model_fn = h_edit_model(unet, edit)
        x_T = samplers.initial_noise(keys, (c.sample_size, c.sample_size, c.in_channels))
        x0, trace = samplers.sample(model_fn, x_T, keys, alpha_bar, ts, config.method,
                                    config.eta, c.prediction_type, config.clip_range, final,
                                    c.variance_type)
        if axis is not None and "p_hat" in trace and group is None:
            # the trace reports the global batch, whichever batch was pushed (pmean leaves an
            # already global p_hat as it is)
            trace["p_hat"] = jax.lax.pmean(trace["p_hat"], axis)
        if autoencoder is not None:
            x0 = autoencoder.latents_to_images(x0)
        elif text is not None:  # latents of a latent model sampled without its autoencoder
            return x0, trace
        return jnp.clip(x0, -1, 1), trace

    if mesh is not None:
        sample = jax.shard_map(sample, mesh=mesh,
                               in_specs=(P(), P(DATA_AXIS), P(), P(DATA_AXIS), P()),
                               out_specs=(P(DATA_AXIS), trace_specs(guidance, group, record_h)))
        params = replicate(params, mesh)
    return Sampler(sample, params, default_refs(getattr(guidance, "targets", ())), mesh)


def check_sampler_inputs(unet: UNet, timesteps: np.ndarray, guidance: Guidance | None,
                         text: TextConditioning | None) -> None:
    """What make_sampler refuses: an ADP for another UNet or other timesteps, text settings for
    the wrong kind of UNet, image-space guidance on a latent model."""
    conditional = unet.config.cross_attention_dim is not None
    if conditional != (text is not None):
        raise ValueError("a text-conditional UNet needs `text` (TextConditioning), and only it"
                         if conditional else "`text` given for a UNet without cross-attention")
    if guidance is None:
        return
    if hasattr(guidance, "h_edit"):
        check_adp_fits(guidance.adp, unet.config.h_shape, timesteps)
    elif conditional:
        raise ValueError("image-space guidance is not supported for latent models (it would "
                         "decode x0_hat through the autoencoder at every step)")


def trace_specs(guidance: Guidance | None, group: int | None, record_h: bool) -> dict:
    """How each trace entry is laid out over the mesh: global p_hat replicated; per-group p_hat
    [S, G, K], h_change [S, B] and h [S, B, ...] split along the batch."""
    specs = {}
    if guidance is not None:
        specs["p_hat"] = P() if group is None else P(None, DATA_AXIS)
        if isinstance(guidance, DistributionGuidance):
            specs["h_change"] = P(None, DATA_AXIS)
    if record_h:
        specs["h"] = P(None, DATA_AXIS)
    return specs


def make_h_inverter(model: UNet, model_config: ModelConfig, config: SamplerConfig):
    """Returns a jitted images [B, H, W, C] in [-1, 1] -> h [S, B, h, w, c] float16: DDIM
    inversion (eta 0) through the sampler's timesteps, h in sampling order (step 0 = noisiest)."""
    config, ts, alpha_bar, _ = sampling_plan(model_config, config)
    graphdef, state = nnx.split(model)
    prediction_type, variance_type = model.config.prediction_type, model.config.variance_type

    @jax.jit
    def invert(state, x0):
        unet = nnx.merge(graphdef, state)

        def model_fn(x, t, i):
            enc = unet.encode(x, t)
            return unet.decode(enc.h, enc.skips, enc.temb), enc.h.astype(jnp.float16)

        _, hs = samplers.invert(model_fn, x0, alpha_bar, ts, prediction_type, variance_type)
        return hs[::-1]  # inversion visits timesteps ascending

    return lambda images: invert(state, images)
