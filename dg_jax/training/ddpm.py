"""DDPM training of the UNet on SynthFaces (the UNet config's prediction type, uniform t, MSE).

    python -m train.train_ddpm --workdir runs/unet      # resumable; rerun to continue
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from dg_jax import checkpoints
from dg_jax.data import synthfaces
from dg_jax.data.images import to_model_range
from dg_jax.diffusion.sampler_config import DEFAULT_SAMPLING
from dg_jax.diffusion.schedules import ScheduleConfig, add_noise, alphas_cumprod, prediction_target
from dg_jax.loading import save_unet
from dg_jax.models.config import ModelConfig
from dg_jax.models.unet import UNet, UNetConfig
from dg_jax.training import common

# The embedded default's architecture: h-space is 8x8x128. v-prediction: with epsilon-prediction
# the first sampling steps' x0 estimates (noise error / sqrt(alpha_bar) ~ 150x) were far off, which
# gave the samples colour casts and skewed attribute rates (docs/EMBEDDED_MODEL.md).
SYNTHFACES_UNET = UNetConfig(
    sample_size=32, block_out_channels=(32, 64, 128), layers_per_block=1,
    down_attention=(False, False, True), attention_head_dim=32, norm_num_groups=16,
    prediction_type="v_prediction",
)


@dataclasses.dataclass(frozen=True)
class DDPMTrainConfig:
    workdir: str = "runs/synthfaces_unet"
    unet: UNetConfig = SYNTHFACES_UNET
    schedule: ScheduleConfig = ScheduleConfig()
    num_images: int = 60_000  # SynthFaces drawn once from BIASED_PROBS
    data_seed: int = 0
    batch_size: int = 64
    steps: int = 20_000
    learning_rate: float = 1e-3
    warmup_steps: int = 500
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    save_every: int = 250
    log_every: int = 25
    export: str = ""  # after the last step, write the EMA weights as a float16 bundle here
    init_from: str = ""  # start (not resume) from a UNet bundle's weights, e.g. to train further


def ddpm_loss(model: UNet, x0: jax.Array, t: jax.Array, noise: jax.Array,
              alpha_bar: jax.Array) -> jax.Array:
    """Mean squared error of the model output against its prediction type's target.
    x0, noise: [B, H, W, C]; t: [B] int."""
    x_t = add_noise(x0, noise, alpha_bar[t])
    target = prediction_target(x0, noise, alpha_bar[t], model.config.prediction_type)
    return jnp.mean((model(x_t, t) - target) ** 2)


def make_train_step(graphdef, optimizer: optax.GradientTransformation, alpha_bar: jax.Array,
                    ema_decay: float):
    """Returns a jitted (state, images, key) -> (state, loss); state = dict(params, ema, opt, step)."""

    @jax.jit
    def train_step(state, x0, key):
        k_t, k_noise, k_flip = jax.random.split(jax.random.fold_in(key, state["step"]), 3)
        # Horizontal flips: every SynthFaces attribute is mirror-symmetric.
        flip = jax.random.bernoulli(k_flip, 0.5, (x0.shape[0], 1, 1, 1))
        x0 = jnp.where(flip, x0[:, :, ::-1], x0)
        t = jax.random.randint(k_t, (x0.shape[0],), 0, alpha_bar.shape[0])
        noise = jax.random.normal(k_noise, x0.shape, x0.dtype)
        loss_fn = lambda p: ddpm_loss(nnx.merge(graphdef, p), x0, t, noise, alpha_bar)  # noqa: E731
        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        updates, opt = optimizer.update(grads, state["opt"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        ema = common.ema_update(state["ema"], params, common.ema_decay(state["step"], ema_decay))
        return dict(params=params, ema=ema, opt=opt, step=state["step"] + 1), loss

    return train_step


def make_optimizer(config) -> optax.GradientTransformation:
    schedule = optax.linear_schedule(0.0, config.learning_rate, config.warmup_steps)
    return optax.chain(optax.clip_by_global_norm(config.grad_clip),
                       optax.adamw(schedule, weight_decay=config.weight_decay))


def train(config: DDPMTrainConfig) -> UNet:
    """Trains (or resumes) and returns the EMA model; exports it when config.export is set."""
    model = UNet(config.unet, rngs=nnx.Rngs(config.seed))
    if config.init_from:
        checkpoints.load_params_into(config.init_from, model)
    graphdef, params = nnx.split(model, nnx.Param)
    optimizer = make_optimizer(config)
    state = dict(params=params, ema=params, opt=optimizer.init(params), step=jnp.zeros((), jnp.int32))
    # Rendered on first use only: exporting a finished run needs no data.
    images = functools.cache(lambda: synthfaces.generate(
        config.num_images, config.data_seed, synthfaces.BIASED_PROBS,
        size=config.unet.sample_size)[0])
    step_fn = make_train_step(graphdef, optimizer, alphas_cumprod(config.schedule),
                              config.ema_decay)
    key = jax.random.key(config.seed)
    state = common.fit(config, state, lambda st, batch: step_fn(st, batch, key),
                       lambda idx: to_model_range(images()[idx]), config.num_images, "ddpm")
    ema_model = nnx.merge(graphdef, jax.device_get(state["ema"]))
    if config.export:
        model_config = ModelConfig(config.unet, config.schedule, DEFAULT_SAMPLING)
        save_unet(config.export, ema_model, model_config, dtype="float16",
                  extra={"trained_steps": int(state["step"])})
    return ema_model
