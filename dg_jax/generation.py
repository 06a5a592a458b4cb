"""The main job: sample images, label them with the attribute classifier, write shards + manifest.

    run(GenerateConfig(out="out/faces", num_images=1024, seed=0))

Sample i's noise comes from fold_in(key(seed), i) only, so the same config gives the same images,
and any shard can be regenerated alone.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
import time
from collections.abc import Callable
from typing import Literal

import numpy as np
from PIL import Image
from tqdm import tqdm

from dg_jax import checkpoints, configs
from dg_jax.balance import Balance, max_deviation
from dg_jax.balanced import Batch, BatchGenerator
from dg_jax.configs import option
from dg_jax.data import generated
from dg_jax.data.writer import DatasetWriter
from dg_jax.diffusion.sampler_config import SamplerConfig
from dg_jax.errors import UserError, nested_at, template_of
from dg_jax.guard import GuardConfig, QualityGuard, SharpnessReference
from dg_jax.guidance.distribution import LATER_FIELDS as guidance_later_fields
from dg_jax.guidance.distribution import GuidanceConfig, target_weights
from dg_jax.guidance.methods import DistributionGuidance, SampleLevelGuidance
from dg_jax.guidance.targets import (
    Target,
    check_disjoint,
    parse_target,
    preserved_targets,
    split_spec,
)
from dg_jax.loading import load_adp, load_unet, model_config_option
from dg_jax.models.classifier import AttributeClassifier
from dg_jax.parallel import (
    batch_mesh,
    global_batch,
    replicate,
)
from dg_jax.sampling import TextConditioning, make_sampler
from dg_jax.text_to_image import TextToImageConfig, load_labeller, split_model
from dg_jax.wrappers import ImageGuidance

GuidanceMethod = Literal["none", "distribution", "sample", "image"]


@dataclasses.dataclass(frozen=True)
class GenerateConfig:
    out: str = option("out/synthfaces", "output directory (local or gs://)", required=True)
    num_images: int = 1024
    seed: int = 0
    batch_size: int = 64
    shard_size: int = option(1024, "images per array_record shard")
    model: str = option("", "UNet bundle, diffusers folder, or guided-diffusion checkpoint (.pt, "
                            ".safetensors) with --model-config (default: the embedded model)")
    model_config: str = model_config_option()
    # parameters, the ADP, the distribution loss and its gradient stay float32
    dtype: Literal["float32", "bfloat16"] = option(
        "float32", "the UNet's compute dtype (parameters, the ADP and the guidance gradient stay "
                   "float32; bfloat16 for TPU)")
    classifier: str = option("", "labeller bundle (default: the embedded SynthFaces "
                                 "classifier); 'none' writes unlabelled images")
    # None fields: the model's sampling defaults
    sampler: SamplerConfig = option(SamplerConfig(), flatten=True, group="sampling")
    method: GuidanceMethod = option(
        "none", "none (unguided); distribution (the paper's method); baselines: sample "
                "(per-sample targets on h), image (per-sample targets with the classifier on "
                "x0_hat)", group="guidance")
    targets: tuple[str, ...] = option(
        (), "target distribution, e.g. hair=0.5,0.5 or skin=uniform, or a joint one over "
            "attributes, hair,skin=uniform (row-major cells); repeatable", flag="target",
        aliases=("joint",), group="guidance")
    adp: str = option("", "ADP bundle trained for --model (distribution, sample; default with "
                          "the embedded model: its shipped ADP)", group="guidance")
    guidance: GuidanceConfig = option(GuidanceConfig(), flatten=True, group="guidance")
    png: bool = option(False, "also write OUT/png/<index>.png")
    balance: Balance = option(
        "dataset", "dataset: steer each batch to what the images written so far lack, so the "
                   "whole data set meets the target; batch-corrected: each batch to the target "
                   "on its own, aimed past the ADP's bias that the labels of the batches before "
                   "show; batch: each batch to the target as the ADP reads it (the paper)",
        group="guidance")
    distribution_scope: Literal["global", "local"] = option(
        "global", "batch distribution over the global batch (all devices and hosts; one "
                  "all-reduce per step) or each device's own", group="guidance")
    text: TextToImageConfig = option(TextToImageConfig(), flatten=True,
                                     group="text-to-image (a Stable Diffusion --model)")
    guard: GuardConfig = option(GuardConfig(), flatten=True, group="quality guard")
    # held as extra targets at the ADP bundle's label_shares, so that guiding one attribute does
    # not drag the others along
    preserve: tuple[str, ...] = option(
        (), "attributes to hold at the unguided model's own shares (as the ADP bundle records "
            "them), comma-separated or repeated, e.g. smile,skin", sep=",", group="guidance")

    def validate(self) -> None:
        for name in ("num_images", "batch_size", "shard_size"):
            if getattr(self, name) <= 0:
                raise UserError(f"{{{name}}} must be positive")
        configs.check_choices(self)
        for spec in self.targets:  # their form here; their attributes with the ADP's classes
            split_spec(spec)
        if self.method == "none" and self.targets:
            raise UserError("{targets} needs a guidance {method} (e.g. distribution)")
        if self.preserve and self.method not in ("distribution", "sample"):
            raise UserError("{preserve} holds attributes through the ADP: it needs {method} "
                            "distribution (or sample)")
        if self.method != "none" and not self.targets:
            raise UserError(f"{{method}} {self.method} needs at least one of {{targets}}")
        if self.method in ("distribution", "sample") and not self.adp and self.model:
            raise UserError(f"{{method}} {self.method} needs {{adp}} (an ADP bundle trained for "
                            "the model)")
        if self.png and "://" in self.out:
            raise UserError("{png} writes local files; use it with a local {out}")
        if self.method == "image" and self.classifier == "none":
            raise UserError("{method} image guides with the classifier; {classifier} none "
                            "leaves it without one")
        with nested_at("text."):
            self.text.validate(self.classifier)
        prompts = self.text.prompts
        if prompts and self.batch_size % len(prompts):
            raise UserError(f"{{batch_size}} {self.batch_size} must hold each of the "
                            f"{len(prompts)} prompts equally often (a multiple of it)")


def guidance_for(config: GenerateConfig, adp, classifier, targets: list[Target],
                 accuracy: dict[str, float] | None = None):
    """What --method steers with (None: unguided). accuracy: the ADP's (`adp_accuracy`)."""
    if config.method == "none" or not targets:
        return None
    if config.method == "image":
        return ImageGuidance(classifier, targets, config.guidance)
    if config.method == "sample":
        return SampleLevelGuidance(adp, targets, config.guidance)
    return DistributionGuidance(adp, targets, config.guidance, config.distribution_scope,
                                accuracy)


def load_guidance(config: GenerateConfig, classifier: AttributeClassifier | None
                  ) -> tuple[object, list[Target], dict, dict[str, float]]:
    """(ADP, validated targets, the model's unguided statistics as the ADP bundle records them,
    the ADP's held-out accuracy per attribute: `adp_accuracy`) for a guided run, or
    (None, [], {}, {}) for an unguided one; image guidance needs no ADP (its
    targets are checked against the classifier's attributes). Whether the ADP fits the UNet is
    checked by `make_sampler`."""
    if config.method == "none":
        return None, [], {}, {}
    adp, report = None, {}
    if config.method == "image":
        num_classes = classifier.num_classes
    else:
        # validate(): empty only for the embedded UNet
        adp, report = load_adp_bundle(config.adp or checkpoints.EMBEDDED_ADP)
        num_classes = adp.config.num_classes
    targets = [parse_target(spec, num_classes) for spec in config.targets]
    check_disjoint(targets)
    unguided = unguided_statistics(report)
    targets += preserved_targets(config.preserve, unguided.get("label_shares", {}),
                                 num_classes, targets)
    for line in weak_attribute_warnings(report, targets):
        print(f"warning: {line}", file=sys.stderr)
    unknown = sorted(set(target_weights(config.guidance)) - {t.name for t in targets})
    if unknown:
        raise UserError(f"{{guidance.target_weights}} for {', '.join(unknown)}, which is not a "
                        f"target (targets: {', '.join(t.name for t in targets)})")
    return adp, targets, unguided, adp_accuracy(report)


def load_adp_bundle(path) -> tuple[object, dict]:
    """(ADP, its bundle's report) of the bundle at `path`; one that will not load is a UserError."""
    try:
        return load_adp(path), checkpoints.read_bundle_config(path).get("report", {})
    except (ValueError, ImportError) as e:
        raise UserError(f"cannot load ADP {path}: {template_of(e)}") from None


def adp_weights(path) -> dict:
    """`weights_record` of the ADP bundle at `path`, as a guided run's run.json records it."""
    adp, report = load_adp_bundle(path)
    return weights_record(adp, unguided_statistics(report))


def weights_record(adp, unguided: dict) -> dict:
    """What run.json records of the ADP beside the config: its weights' fingerprint (with the
    unguided statistics it brings, which --preserve and the guard use). A bundle replaced at the
    same path (a new embedded ADP with a new dg-jax) must not continue a data set the old one
    started, which the path alone would allow."""
    return {"adp_sha256": checkpoints.params_sha256(adp, unguided)}


def unguided_statistics(report: dict) -> dict:
    """What an ADP bundle's report knows of its model's unguided output: "label_shares"
    (attribute -> shares) and "sharpness" (median image sharpness, `guard.image_health`), as
    `train.record_unguided` measures them; an ADP trained on the model's own samples gives its
    training labels' shares."""
    unguided = dict(report.get("unguided", {}))
    if "label_shares" not in unguided and report.get("source") == "generate":
        unguided["label_shares"] = report.get("label_shares", {})
    return unguided


# GenerateConfig fields added after data sets were first written, each with the value that does
# what was done before it: run.json leaves them out while they hold it, so that such a data set
# still resumes.
LATER_FIELDS = {"text": TextToImageConfig(), "model_config": "", "dtype": "float32",
                **{f"guidance.{name}": v for name, v in guidance_later_fields.items()}}


# An attribute the ADP reads below this held-out accuracy at its best step is steered weakly
# and noisily (smile on the embedded model: 0.80 at best, against 0.94-0.99 for the others).
WEAK_ADP_ACCURACY = 0.85


def adp_accuracy(report: dict) -> dict[str, float]:
    """attribute -> the ADP's held-out accuracy at its best step, as its bundle's report records
    it (empty for a bundle that records none)."""
    return {a: max(per_step) for a, per_step in report.get("heldout_accuracy", {}).items()
            if per_step}


def weak_attribute_warnings(report: dict, targets: list[Target]) -> list[str]:
    """One line per targeted attribute that the ADP bundle's held-out accuracy calls weak."""
    best = adp_accuracy(report)
    lines = []
    for a in dict.fromkeys(a for t in targets for a in t.attributes):
        if a in best and best[a] < WEAK_ADP_ACCURACY:
            mean = np.mean(report["heldout_accuracy"][a])
            lines.append(f"the ADP reads {a} poorly (held-out accuracy {best[a]:.2f} at "
                         f"its best step, {mean:.2f} over all): guidance on {a} "
                         "is weak and noisy; a better ADP for it (more h samples) helps")
    return lines


def load_model(config, dtype: str | None = None):
    """(UNet, ModelConfig, config with its sampler resolved) for a config with `model`,
    `model_config` and `sampler` fields; the resolved sampler (model defaults filled in) is what
    run.json records. dtype: the UNet's compute dtype (None: the model's own)."""
    try:
        unet, model_config = load_unet(config.model or None, config.model_config or None, dtype)
    except (ValueError, ImportError) as e:
        raise UserError(f"cannot load model {config.model or 'embedded'}: "
                        f"{template_of(e)}") from None
    try:
        sampler = config.sampler.resolve(model_config.sampling)
    except UserError as e:  # e.g. num_steps against the model's respacing string
        raise UserError(f"the sampler settings do not fit the model's sampling defaults: "
                        f"{e.within('sampler.').template}; give {{sampler.spacing}} as "
                        "well") from None
    return unet, model_config, dataclasses.replace(config, sampler=sampler)


def run(config: GenerateConfig, describe: Callable[[Exception], str] = str) -> dict:
    """Generates the data set (continuing after the shards already complete) over every device
    of every host, and returns the manifest. describe: the text of the quality guard's warnings
    from their errors (str names config fields; the command line names its flags)."""
    config.validate()
    # Models first: a missing checkpoint must not leave an output directory behind.
    unet, model_config, config = load_model(config, config.dtype)
    sd, unet = split_model(unet, config.text)
    # The labeller; image guidance steers with it too. None for a real model without one.
    classifier = load_labeller(config.text, config.classifier, sd is not None)
    adp, targets, unguided, accuracy = load_guidance(config, classifier)
    wanted = configs.to_recorded_dict(config, later_fields=LATER_FIELDS)
    # Neither writing PNGs as well nor how broken images are handled changes the images, so
    # a rerun may change them (e.g. --on-degenerate warn after a stop).
    wanted.pop("png")
    wanted.pop("guard")
    if adp is not None:
        wanted[configs.WEIGHTS_RECORD] = weights_record(adp, unguided)
    generate, row_prompts = make_batch_generator(config, unet, model_config, sd, classifier, adp,
                                                 targets, unguided, accuracy)
    writer = DatasetWriter(config.out, wanted, config.num_images, config.shard_size)
    progress = writer.progress or {}
    generate.counts = {k: np.asarray(v, np.int64) for k, v in progress.get("counts", {}).items()}
    generate.asked = {k: np.asarray(v, np.float64) for k, v in progress.get("asked", {}).items()}
    # a resumed run continues the counts and the guard's tallies of the shards written
    generate.guard = QualityGuard(config.guard, progress.get("quality"), guided=bool(targets),
                                  describe=describe)
    out = pathlib.Path(config.out)
    if config.png:
        (out / "png").mkdir(exist_ok=True)
    first = writer.next_shard
    done = writer.shard_range(first)[0] if first < writer.num_shards else config.num_images
    bar = tqdm(total=config.num_images, initial=done, unit="img", dynamic_ncols=True,
               desc=f"generate (host {writer.host}/{writer.hosts})")
    generate.warn = bar.write
    start_time, made = time.time(), 0
    try:  # closed before an error is printed, so that the error is the last line
        for shard in range(first, writer.num_shards):
            lo, hi = writer.shard_range(shard)
            if writer.hosts > 1:
                bar.write(f"host {writer.host}: shard {shard} (images {lo}..{hi - 1})")
            records = []
            for start in range(lo, hi, config.batch_size):
                batch = generate(start, hi)
                records += encode_records(batch, config.seed, row_prompts)
                if config.png:
                    for i, image in zip(batch.index, batch.images):
                        Image.fromarray(image).save(out / "png" / f"{i:08d}.png")
                made += min(config.batch_size, hi - start)
                bar.update(min(config.batch_size, hi - start))
                bar.set_postfix_str(status_text(generate.counts, targets, classifier,
                                                generate.guard), refresh=False)
            writer.write_part(shard, records)
            writer.commit(shard, {**summarise(generate.counts, targets, hi),
                                  "asked": {k: v.tolist() for k, v in generate.asked.items()},
                                  "quality": generate.guard.summary()})
    finally:
        bar.close()
    elapsed = time.time() - start_time
    manifest = writer.record_run({"generated": made, "seconds": round(elapsed, 2),
                                  "images_per_second": round(made / elapsed, 3) if made else None})
    if writer.host == 0 and targets and generate.counts:
        print(summary_table(manifest, targets))
    return manifest


def make_batch_generator(config: GenerateConfig, unet, model_config, sd, classifier, adp,
                         targets: list[Target], unguided: dict,
                         accuracy: dict[str, float] | None = None):
    """(BatchGenerator for the run, the prompt of each row of a batch) on a mesh over every
    device that the batch (in whole prompt groups) splits over. accuracy: the ADP's
    (`adp_accuracy`)."""
    prompts = config.text.prompts
    group = config.batch_size // len(prompts) if sd is not None else 1
    text, context, uncond, row_prompts = None, None, None, None
    try:
        mesh = batch_mesh(config.batch_size, group)  # each device holds whole prompt groups
        if sd is not None:
            text = TextConditioning(config.text.cfg_scale, group)
            # the same prompt layout in every batch: row r has prompt r // group
            row_prompts = [prompts[r // group] for r in range(config.batch_size)]
            context = global_batch(mesh, np.asarray(sd.encode_prompts(row_prompts)))
            uncond = replicate(sd.encode_prompts([config.text.negative_prompt])[0], mesh)
        sampler = make_sampler(unet, model_config, config.sampler,
                               guidance_for(config, adp, classifier, targets, accuracy),
                               text=text,
                               vae=sd.vae if sd is not None else None, mesh=mesh)
        generate = BatchGenerator(sampler, classifier, targets, mesh, seed=config.seed,
                                  batch_size=config.batch_size, balance=config.balance,
                                  guard=QualityGuard(config.guard, guided=bool(targets)),
                                  reference=SharpnessReference.of(unguided),
                                  context=context, uncond_context=uncond)
    except ValueError as e:  # e.g. an ADP for another UNet or for other timesteps
        raise UserError(str(e)) from None
    return generate, row_prompts


def encode_records(batch: Batch, seed: int, row_prompts: list[str] | None) -> list[bytes]:
    """The data set's records of one batch (generated.encode_record)."""
    records = []
    for j, i in enumerate(batch.index):
        p = {n: v[j] for n, v in batch.probs.items()}
        records.append(generated.encode_record(
            batch.images[j], i, seed, {n: int(np.argmax(v)) for n, v in p.items()}, p,
            row_prompts[batch.rows[j]] if row_prompts is not None else None))
    return records


def summarise(counts: dict[str, np.ndarray], targets: list[Target], num_images: int) -> dict:
    """The manifest's label statistics: counts and shares per attribute and per target cell, and
    each target's largest deviation from p_ref."""
    as_list = {k: [int(c) for c in v] for k, v in counts.items()}
    shares = {k: [round(c / num_images, 6) for c in v] for k, v in as_list.items()}
    return {"num_images": num_images, "counts": as_list, "shares": shares,
            "max_deviation": {t.name: round(max_deviation(counts[t.name], t.array), 6)
                              for t in targets if t.name in counts}}


def status_text(counts: dict[str, np.ndarray], targets: list[Target], classifier,
                guard: QualityGuard) -> str:
    """Progress-bar text: the shares so far of each target (or of every labelled attribute),
    the broken images and the largest relative change of h in one step."""
    names = [t.name for t in targets] or (list(classifier.num_classes) if classifier else [])
    parts = []
    for n in names:
        c = counts[n]
        parts.append(f"{n} " + "/".join(f"{100 * v / max(c.sum(), 1):.0f}" for v in c))
    summary = guard.summary()
    parts.append(f"broken {100 * summary['broken_fraction']:.0f}%")
    if guard.h_change["images"]:
        parts.append(f"dh/h {summary['h_change']['step_max']:.2f}")
    return " ".join(parts)


def summary_table(manifest: dict, targets: list[Target]) -> str:
    """Achieved vs target shares, one line per target cell."""
    lines = [f"{'target':<16}{'cell':>6}{'achieved':>10}{'p_ref':>8}"]
    for t in targets:
        for k, (got, want) in enumerate(zip(manifest["shares"][t.name], t.array)):
            lines.append(f"{t.name:<16}{k:>6}{100 * got:>9.2f}%{100 * want:>7.1f}%")
        lines.append(f"{t.name:<16}{'max |dev|':>6} {100 * manifest['max_deviation'][t.name]:.2f} pp")
    return "\n".join(lines)
