"""What every training loop here shares: data-parallel mesh, EMA, resumable orbax checkpoints,
deterministic epoch shuffling and the progress bar."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from dg_jax import configs
from dg_jax.errors import ConfigMismatchError, UserError
from dg_jax.parallel import batch_mesh, batch_sharding, replicate


def shard_batch(batch, mesh: jax.sharding.Mesh):
    """Splits the leading axis of every array of the batch over the data axis."""
    return jax.device_put(batch, batch_sharding(mesh))


def ema_decay(step: jax.Array, max_decay: float) -> jax.Array:
    """EMA warm-up: (1 + step) / (10 + step), capped at max_decay, so early averages are not
    dominated by the random initialisation."""
    step = step.astype(jnp.float32)
    return jnp.minimum(max_decay, (1 + step) / (10 + step))


def ema_update(ema, params, decay: jax.Array):
    return jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, ema, params)


def epoch_batches(num_examples: int, batch_size: int, seed: int, start_step: int
                  ) -> Iterator[tuple[int, np.ndarray]]:
    """Yields (step, example indices) forever from start_step on.

    Each epoch is a permutation drawn from (seed, epoch), so resuming at any step reproduces exactly
    the batches an uninterrupted run would have seen.
    """
    per_epoch = num_examples // batch_size
    if per_epoch == 0:
        raise UserError(f"batch size {batch_size} is larger than the data set ({num_examples})")
    step = start_step
    while True:
        epoch, offset = divmod(step, per_epoch)
        order = np.random.default_rng([seed, epoch]).permutation(num_examples)
        yield step, order[offset * batch_size:(offset + 1) * batch_size]
        step += 1


def checkpoint_manager(workdir: str, keep: int = 2) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, "checkpoints")),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
    )


def save_state(manager: ocp.CheckpointManager, step: int, state, config) -> None:
    """Saves the train state (any pytree) with the run's config as JSON next to it."""
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        config=ocp.args.JsonSave(configs.to_dict(config)),
    ))


def restore_latest(manager: ocp.CheckpointManager, abstract_state, config):
    """Returns (step, state) of the newest checkpoint, or (0, None) when there is none.

    Refuses to resume a run that was started with another config.
    """
    step = manager.latest_step()
    if step is None:
        return 0, None
    saved = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
    # Through the config class: fields added since the run was saved take their defaults.
    saved = configs.to_dict(configs.from_dict(type(config), saved))
    current = configs.to_dict(config)
    changed = {k for k in set(saved) | set(current)
               if k not in RESUMABLE_FIELDS and saved.get(k) != current.get(k)}
    if changed:
        raise ConfigMismatchError(f"{manager.directory} holds a run with another config "
                                  f"(differs in {sorted(changed)}); use a new {{workdir}}")
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state)))
    return step, restored["state"]


# Fields that may change when a run is resumed (how long to run, how often to save, what to
# export; init_from only matters for a fresh start).
RESUMABLE_FIELDS = {"steps", "save_every", "log_every", "workdir", "export", "export_dtype",
                    "init_from"}


def fit(config, state, train_step: Callable, get_batch: Callable[[np.ndarray], object],
        num_examples: int, desc: str):
    """The shared training loop: resume, shuffle, step, log, checkpoint.

    config needs workdir, steps, batch_size, data_seed, log_every, save_every.
    train_step(state, sharded_batch) -> (state, loss); get_batch(indices) -> host batch (pytree).
    Returns the final (replicated) state.
    """
    print(f"config: {configs.to_dict(config)}", flush=True)
    # the devices the batch splits over evenly (every one when it can); split along DATA_AXIS
    mesh = batch_mesh(config.batch_size)
    manager = checkpoint_manager(config.workdir)
    replicated = NamedSharding(mesh, P())
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                            jax.eval_shape(lambda: state))
    # Restored onto this run's devices, whatever the device count of the run that saved it.
    start, restored = restore_latest(manager, abstract, config)
    if restored is not None:
        state = restored
        print(f"resumed from step {start}", flush=True)
    state = replicate(state, mesh)
    bar = tqdm(total=config.steps, initial=start, desc=desc, unit="step", dynamic_ncols=True)
    losses, tick = [], time.time()
    for step, idx in epoch_batches(num_examples, config.batch_size, config.data_seed, start):
        if step >= config.steps:
            break
        state, loss = train_step(state, shard_batch(get_batch(idx), mesh))
        # The bar follows finished steps, not dispatched ones (which run far ahead and then
        # stall it at the next log): wait for the step before, so one stays queued at most.
        if losses:
            losses[-1].block_until_ready()
        losses.append(loss)
        bar.update(1)
        if (step + 1) % config.log_every == 0:
            rate = config.log_every * config.batch_size / (time.time() - tick)
            bar.set_postfix(loss=f"{float(np.mean(jax.device_get(losses))):.4f}",
                            img_s=f"{rate:.1f}")
            losses, tick = [], time.time()
        if (step + 1) % config.save_every == 0 or step + 1 == config.steps:
            save_state(manager, step + 1, state, config)
    bar.close()
    manager.wait_until_finished()
    return state
