"""Regenerates docs/RESULTS.md: distribution guidance vs the baselines on the embedded default.

    python -m bench.results --adp dg_jax/assets/synthfaces_adp            # 2,048 images per row
    python -m bench.results --adp ... --num-images 256 --sweep-images 256  # a quicker pass

Rows: unguided, sample-level (h), image-space (x0_hat + classifier) and distribution guidance, for
each single attribute at a uniform target, two attributes at once, and one joint target; FD, KL
and deviation ratio from the evaluation network, KID/FID against real SynthFaces of the training
distribution, images/s. Then FD vs batch size (the batch-normalised scale against a fixed
multiplier tuned at batch 64, as the original code's), FD vs guidance scale, and how far each
group's distribution-guidance row moves with the sampler's seed (--seeds; seed 0 is the table's
own run).
Runs live under --out and are reused when rerun (generation resumes; the evaluation of a run
that did not change is reused). Each part (table, batch, scale, seeds) rewrites only its own
section of --doc, so parts can run at different times. The table keeps the rows of the table it
replaces that this run does not measure (--groups): all 20 rows at 2,048 images take ~2.5 h on a
fast 2-core machine and ~6 h on a slow one. Kept groups' unguided rows are measured again, and a
kept row whose unguided row came out different is named as stale.
"""

import argparse
import dataclasses
import json
import pathlib
import re

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench.doc_sections import RESULTS_TITLE, read_section, write_section  # noqa: E402
from bench.table_rows import cells, commands, merge_rows, row_key, table_rows  # noqa: E402
from dg_jax import configs  # noqa: E402
from dg_jax.diffusion.sampler_config import SamplerConfig  # noqa: E402
from dg_jax.evaluation.evaluate import EvaluateConfig, evaluate  # noqa: E402
from dg_jax.generation import GenerateConfig, run  # noqa: E402
from dg_jax.guard import GuardConfig  # noqa: E402
from dg_jax.guidance.distribution import GuidanceConfig  # noqa: E402

SETTINGS = {  # row group -> targets
    "hair": ("hair=uniform",),
    "glasses": ("glasses=uniform",),
    "skin": ("skin=uniform",),
    "hair + skin": ("hair=uniform", "skin=uniform"),
    "hair x skin (joint)": ("hair,skin=uniform",),
}
# table method -> (guidance method, balance): the paper's methods balance each batch on its own;
# "distribution-dataset" is dg-jax's default, steering each batch to the data set's deficit.
METHODS = {"sample": ("sample", "batch"), "image": ("image", "batch"),
           "distribution": ("distribution", "batch"),
           "distribution-dataset": ("distribution", "dataset")}
# Table order within a group, by the (method, balance) cells.
ROW_ORDER = (("none", "-"), ("distribution", "dataset"), ("distribution", "batch"),
             ("sample", "batch"), ("image", "batch"))
PROGRAM = "python -m bench.results"
# Sample-level guidance's scale: distribution guidance's default (10,000) breaks about one
# sample-level image in ten on the embedded model (washed out).
SAMPLE_SCALE = 3000.0


def generate_and_evaluate(out: pathlib.Path, name: str, config: GenerateConfig, targets,
                          num_real: int) -> dict:
    config = dataclasses.replace(config, out=str(out / name))
    manifest = run(config)
    # One evaluation folder per target set: the unguided run is evaluated for every row group.
    evaluated = out / name / ("evaluation_" + re.sub(r"[^a-z0-9]+", "_", "+".join(targets)))
    evaluation = EvaluateConfig(run_dir=config.out, out=str(evaluated), targets=tuple(targets),
                                num_real=num_real)
    # An evaluation of these very images with this very config is reused (it takes ~1 min).
    done_file = evaluated / "evaluated.json"
    done = {"evaluation": configs.to_dict(evaluation), "manifest": manifest["num_images"],
            "version": 3}  # 3: the "matched" reference has the images' attribute combinations
    report_file = evaluated / "report.json"
    if (done_file.exists() and report_file.exists()
            and json.loads(done_file.read_text()) == done
            and manifest["last_run"]["generated"] == 0):
        report = json.loads(report_file.read_text())
    else:
        report = evaluate(evaluation)
        done_file.write_text(json.dumps(done) + "\n")
    # images/s of the run that generated the images (a rerun that only reuses them has none)
    speed_file = out / name / "speed.json"
    if manifest["last_run"]["generated"] == manifest["num_images"]:
        speed_file.write_text(json.dumps(manifest["last_run"]) + "\n")
    speed = json.loads(speed_file.read_text()) if speed_file.exists() else {}
    report["images_per_second"] = speed.get("images_per_second")
    report["num_images"] = manifest["num_images"]
    return report


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--adp", required=True)
    p.add_argument("--out", default="runs/results")
    p.add_argument("--doc", default="docs/RESULTS.md")
    p.add_argument("--num-images", type=int, default=2048)
    p.add_argument("--sweep-images", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-real", type=int, default=8192,
                   help="real faces per KID/FID reference (at 2,048 the reference alone moves "
                        "the unguided KID by +-0.0009, at 8,192 by +-0.0002)")
    p.add_argument("--scale", type=float, default=GuidanceConfig.scale,
                   help="distribution guidance scale")
    p.add_argument("--sample-scale", type=float, default=SAMPLE_SCALE, help="not tuned yet")
    p.add_argument("--image-scale", type=float, default=10.0,
                   help="image-space guidance scale (a 128-image probe on hair: FD 0.077, "
                        "matched KID ~0)")
    p.add_argument("--image-images", type=int, default=2048,
                   help="images per image-space row: it takes a UNet backward per step, "
                        "~0.7 img/s on 2 idle CPU cores (2,048 images: ~50 min a row)")
    p.add_argument("--target-weights", default="",
                   help="comma list of TARGET=W loss weights for rows with that target "
                        "(default: none, as the library)")
    p.add_argument("--sweep-scales", default="1000,2000,3000,5000,10000,30000")
    p.add_argument("--sample-sweep-scales", default="300,1000,3000,10000",
                   help="sample-level guidance scales beside the distribution sweep")
    p.add_argument("--batch-sizes", default="16,32,64,128,256")
    p.add_argument("--seeds", default="0,1,2",
                   help="comma list of sampler seeds for the seeds part: each group's "
                        "dataset-balanced distribution row is generated and evaluated at each")
    p.add_argument("--skip", default="",
                   help="comma list of parts to skip: table,batch,scale,seeds")
    p.add_argument("--groups", default=",".join(SETTINGS),
                   help="comma list of table row groups (default: all); GROUP:M1+M2 gives a "
                        "group its own methods instead of --methods")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma list of guided rows in the table, of {', '.join(METHODS)} "
                        "(unguided is always run)")
    a = p.parse_args()
    out = pathlib.Path(a.out)
    skip = set(filter(None, a.skip.split(",")))
    # The sweeps show the batch mechanism itself: each batch balanced on its own.
    base = base_config(a.num_images, a.batch_size, a.adp)
    scales = {"sample": a.sample_scale, "image": a.image_scale, "distribution": a.scale,
              "distribution-dataset": a.scale}
    made_by = (f"Made by `{PROGRAM} " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(a).items() if v not in ("", None))
        + "` (see the script's docstring).")
    write_section(a.doc, "results-intro", [
        "Fairness from the evaluation network (`dg_jax/assets/synthfaces_evaluator`, not the "
        "labeller the ADP was trained on); KID/FID on its features against real SynthFaces "
        "(which ones: each section says). Each section also says which command made it."],
        title=RESULTS_TITLE)
    results_file = out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    groups = {}  # group -> its guided methods
    for entry in a.groups.split(","):
        group, _, methods = entry.partition(":")
        groups[group] = (methods or a.methods.replace(",", "+")).split("+")
    parts = {"table": lambda: table(out, base, scales, a.num_real, results, groups,
                                    tuple(filter(None, a.target_weights.split(","))),
                                    a.image_images, read_section(a.doc, "results-table"),
                                    made_by),
             "batch": lambda: batch_sweep(out, base, a, results),
             "scale": lambda: scale_sweep(out, base, a, results),
             "seeds": lambda: seed_spread(out, base, scales["distribution-dataset"],
                                          a.num_real, results, list(groups),
                                          [int(v) for v in a.seeds.split(",")],
                                          tuple(filter(None, a.target_weights.split(","))),
                                          read_section(a.doc, "results-seeds"), made_by)}
    for part, make in parts.items():
        if part in skip:
            continue
        lines = make()
        write_section(a.doc, f"results-{part}", lines + [made_by, ""])
        results_file.write_text(json.dumps(results, indent=2) + "\n")
        print("\n".join(lines), flush=True)


def base_config(num_images: int, batch_size: int, adp: str) -> GenerateConfig:
    """What every run of the bench shares (each batch balanced on its own unless a row says).
    The benches compare methods and scales by what they make, broken or not: the quality guard
    counts broken images instead of stopping a run (a baseline or a large scale would leave a
    hole in a table); the KID columns grade them."""
    return GenerateConfig(num_images=num_images, batch_size=batch_size, adp=adp,
                          sampler=SamplerConfig(), balance="batch", shard_size=256,
                          guard=GuardConfig(on_degenerate="warn"))


def row_config(base: GenerateConfig, method: str, balance: str, targets, scale: float,
               weights: tuple[str, ...] = ()) -> GenerateConfig:
    """One table row's run. An unguided row gets no targets and no guidance settings (they do
    nothing there), so one unguided folder serves every group and bench/fair_classifier.py."""
    if method == "none":
        targets, scale, weights = (), 0.0, ()
    return dataclasses.replace(base, method=method, targets=tuple(targets), balance=balance,
                               guidance=GuidanceConfig(scale=scale, target_weights=weights))


def weights_for(targets, weights: tuple[str, ...]) -> tuple[str, ...]:
    """The TARGET=W weights whose target is among `targets` (specs "name=probs")."""
    names = {t.split("=")[0] for t in targets}
    return tuple(w for w in weights if w.rpartition("=")[0] in names)


def table(out, base, scales, num_real, results, groups: dict[str, list[str]],
          weights, image_images: int, previous: list[str], made_by: str) -> list[str]:
    """The methods table: the rows of `groups` measured now, the other rows of the `previous`
    section kept (each kept group's unguided row measured again: the same images, evaluated
    against that group's targets)."""
    previous_rows = table_rows(previous)
    for row in previous_rows:
        group = cells(row)[0]
        if group in SETTINGS and group not in groups:
            groups = {**groups, group: []}
    fewer = "" if image_images == base.num_images else (
        f" ({image_images} for image-space guidance, whose UNet backward per step makes it "
        "~3x slower; FID, unlike KID, is biased upwards at fewer images)")
    lines = ["## Methods", "",
             f"{base.num_images} images per row{fewer}, batch "
             f"{base.batch_size}, 50 DDIM steps (eta 1), the quality guard warning rather than "
             "stopping (`--on-degenerate warn`). "
             "FD, KL and deviation ratio are summed over the row's targets. KID and FID on the "
             "evaluation network's features, against real faces of: the training distribution "
             "(train); the distribution the row aims at (aim: the training one for unguided, "
             "the target's for guided rows); the attribute combinations the evaluation network "
             "reads on the row's own images (matched: real faces rendered with those label "
             "vectors). These features see attributes, so a row that meets its target is far "
             "from the training distribution by design, and a row whose other attributes "
             "drifted (glasses guidance also moves smile and skin) is far from its aim; the "
             "matched reference charges neither and keeps image quality: broken images are "
             f"far from every real face. {num_real} real faces per reference. KID ratios divide "
             "by the unguided row's KID against the same kind of reference.", "",
             "| targets | method | balance | scale (weights) | images | FD | KL | dev. ratio | "
             "KID train | KID aim | FID aim | KID matched | KID ratio aim | KID ratio matched | "
             "img/s |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    measured = []
    for group, methods in groups.items():
        measured += group_rows(out, base, scales, num_real, results, group, methods, weights,
                               image_images)
    group_order = list(SETTINGS)
    rows, kept = merge_rows(previous_rows, measured, 3, lambda key: (
        group_order.index(key[0]) if key[0] in group_order else len(group_order),
        ROW_ORDER.index(key[1:]) if key[1:] in ROW_ORDER else len(ROW_ORDER)))
    lines += rows + [""]
    if kept:
        # A kept row's KID ratios divide by its group's unguided KID as it was then.
        before = {row_key(r, 3): cells(r)[:-1] for r in previous_rows}
        now = {row_key(r, 3): cells(r)[:-1] for r in measured}
        changed = {k[0] for k in now if k[1] == "none" and before.get(k, now[k]) != now[k]}
        stale = [" / ".join(row_key(r, 3)) for r in kept if cells(r)[0] in changed]
        lines += kept_rows_note(previous, made_by)
        if stale:
            lines += ["Stale (their unguided row changed since): " + ", ".join(stale) + ".", ""]
            print("bench.results: stale kept rows: " + ", ".join(stale), flush=True)
    return lines


def run_name(row: str, group: str) -> str:
    """The folder under --out of a table row's run (its method and group, without spaces)."""
    return f"{row}_{group}".replace(" ", "")


def group_rows(out, base, scales, num_real, results, group: str, methods: list[str], weights,
               image_images: int) -> list[str]:
    """One row group's table rows: unguided, then each of `methods`."""
    targets = SETTINGS[group]
    lines, unguided = [], {}
    for row, scale in [("none", 0.0)] + [(m, scales[m]) for m in methods]:
        method, balance = METHODS.get(row, (row, "batch"))
        name = "unguided" if method == "none" else run_name(row, group)
        row_weights = () if method == "none" else weights_for(targets, weights)
        config = row_config(base, method, balance, targets, scale, row_weights)
        if method == "image":
            config = dataclasses.replace(config, num_images=image_images)
        report = generate_and_evaluate(out, name, config, targets, num_real)
        results[f"{group}/{row}"] = report
        fair = report["fairness"].values()
        quality = report["quality"]
        aim = quality["training" if method == "none" else "target"]
        if method == "none":
            unguided = report
        ratio = aim["kid"] / unguided["quality"]["training"]["kid"]
        matched_ratio = quality["matched"]["kid"] / unguided["quality"]["matched"]["kid"]
        speed = report["images_per_second"]
        strength = "-" if method == "none" else f"{scale:g}" + (
            f" ({', '.join(row_weights)})" if row_weights else "")
        lines.append(
            f"| {group} | {method} | {'-' if method == 'none' else balance} | {strength} | "
            f"{report['num_images']} | "
            f"{sum(m['fd'] for m in fair):.3f} | {sum(m['kl'] for m in fair):.3f} | "
            f"{max(m['deviation_ratio'] for m in fair):.3f} | "
            f"{quality['training']['kid']:.4f} | {aim['kid']:.4f} | {aim['fid']:.2f} | "
            f"{quality['matched']['kid']:.4f} | {ratio:.2f} | {matched_ratio:.2f} | "
            f"{speed if speed is not None else '-'} |")
    return lines


def seed_spread(out, base, scale: float, num_real: int, results, groups: list[str],
                seeds: list[int], weights, previous: list[str], made_by: str) -> list[str]:
    """Each group's dataset-balanced distribution row at each of `seeds` (the sampler's noise;
    the ADP, the labeller and the real references stay): FD and matched KID ratio per seed, and
    the FD's mean and spread. A row at base.seed is the table's own run (reused). Rows of groups
    not measured now are kept from the `previous` section."""
    lines = ["## How far a row moves with the seed", "",
             f"The dataset-balanced distribution rows of the table at {base.num_images} images, "
             "generated again with other sampler seeds (`--seed`), everything else as in the "
             "table. The matched KID ratio divides by the table's unguided KID (seed "
             f"{base.seed}). FD std is the sample standard deviation over the seeds.", "",
             "| targets | seeds | FD per seed | FD mean | FD std | FD max | matched KID ratio "
             "per seed |", "|---|---|---|---|---|---|---|"]
    measured = []
    for group in groups:
        targets = SETTINGS[group]
        unguided = generate_and_evaluate(out, "unguided", row_config(
            base, "none", "batch", (), 0.0), targets, num_real)["quality"]["matched"]["kid"]
        config = row_config(base, "distribution", "dataset", targets, scale,
                            weights_for(targets, weights))
        fds, ratios = [], []
        for seed in seeds:
            name = run_name("distribution-dataset", group) + (
                "" if seed == base.seed else f"_seed{seed}")
            report = generate_and_evaluate(out, name, dataclasses.replace(config, seed=seed),
                                           targets, num_real)
            results[f"seeds/{group}/{seed}"] = report
            fds.append(sum(m["fd"] for m in report["fairness"].values()))
            ratios.append(report["quality"]["matched"]["kid"] / unguided)
        std = float(np.std(fds, ddof=1)) if len(fds) > 1 else 0.0
        measured.append(
            f"| {group} | {', '.join(map(str, seeds))} | "
            f"{', '.join(f'{v:.3f}' for v in fds)} | {np.mean(fds):.3f} | {std:.3f} | "
            f"{max(fds):.3f} | {', '.join(f'{v:.2f}' for v in ratios)} |")
    group_order = list(SETTINGS)
    rows, kept = merge_rows(table_rows(previous), measured, 1, lambda key: (
        group_order.index(key[0]) if key[0] in group_order else len(group_order),))
    lines += rows + [""]
    return lines + (kept_rows_note(previous, made_by) if kept else [])


def kept_rows_note(previous: list[str], made_by: str) -> list[str]:
    """The lines that name the commands which made the rows kept from the `previous` section
    (none if this command made them all)."""
    current = commands([made_by], PROGRAM)
    earlier = [c for c in commands(previous, PROGRAM) if c not in current]
    return ["Rows this command did not measure are kept from the table before, made by "
            + "; ".join(f"`{c}`" for c in earlier) + ".", ""] if earlier else []


def sweep_plot(path, xs, series: dict, xlabel: str, log_x: bool = True) -> None:
    """FD (y) against `xs`, one line per series (label -> ys, or -> (xs, ys) with its own xs)."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for label, ys in series.items():
        own_xs, ys = ys if isinstance(ys, tuple) else (xs, ys)
        ax.plot(own_xs, ys, marker="o", label=label)
    if log_x:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("FD (hair, uniform target)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def batch_sweep(out, base, a, results) -> list[str]:
    """FD vs batch size at one scale: ours (the update carries the factor N, see
    guidance/distribution.py) against the original code's fixed multiplier, emulated as our scale
    times 64 / N (the same push as ours at batch 64)."""
    sizes = [int(b) for b in a.batch_sizes.split(",")]
    series = {"batch-normalised scale (dg-jax)": [], "fixed multiplier tuned at 64 (original)": []}
    lines = ["## FD vs batch size", "",
             f"hair=uniform, {a.sweep_images} images per point, scale {a.scale:g}, each batch "
             "balanced on its own.", "",
             "| batch | FD (dg-jax) | FD (fixed multiplier) |", "|---|---|---|"]
    for b in sizes:
        row = []
        for label, scale in zip(series, (a.scale, a.scale * 64 / b)):
            name = f"batch{b}_{'ours' if scale == a.scale else 'fixed'}"
            config = dataclasses.replace(base, num_images=a.sweep_images, batch_size=b,
                                         method="distribution", targets=("hair=uniform",),
                                         guidance=GuidanceConfig(scale=scale))
            report = generate_and_evaluate(out, name, config, ("hair=uniform",), 0)
            results[f"batch/{name}"] = report
            series[label].append(report["fairness"]["hair"]["fd"])
            row.append(f"{series[label][-1]:.3f}")
        lines.append(f"| {b} | " + " | ".join(row) + " |")
    sweep_plot(pathlib.Path(a.doc).parent / "images" / "fd_vs_batch_size.png", sizes, series,
               "batch size")
    return lines + ["", "![FD vs batch size](images/fd_vs_batch_size.png)", ""]


def scale_sweep(out, base, a, results) -> list[str]:
    """FD and KID vs scale for distribution and sample-level guidance (hair), and FD against
    matched KID: which method balances better at the same image quality."""
    sweeps = {"distribution": [float(s) for s in a.sweep_scales.split(",")],
              "sample": [float(s) for s in a.sample_sweep_scales.split(",")]}
    lines = ["## FD vs guidance scale", "",
             f"hair=uniform, batch {base.batch_size}, {a.sweep_images} images per point, each "
             "batch balanced on its own. KID against real faces of the training distribution "
             "(grows as hair leaves it, by design) and of the images' own attribute "
             "combinations (matched: image quality). Sample-level guidance (each image pushed "
             "to its own drawn class) beside distribution guidance: the second plot puts FD "
             "against matched KID, so the methods meet at equal image quality.", "",
             "| method | scale | FD | KID train | KID matched |", "|---|---|---|---|---|"]
    fds, kids = {}, {}
    for method, scales in sweeps.items():
        fds[method], kids[method] = [], []
        for s in scales:
            name = f"scale{s:g}" if method == "distribution" else f"{method}_scale{s:g}"
            config = dataclasses.replace(base, num_images=a.sweep_images, method=method,
                                         targets=("hair=uniform",),
                                         guidance=GuidanceConfig(scale=s))
            report = generate_and_evaluate(out, name, config, ("hair=uniform",), a.num_real)
            results[f"scale/{name}"] = report
            quality = report["quality"]
            fds[method].append(report["fairness"]["hair"]["fd"])
            kids[method].append(quality["matched"]["kid"])
            lines.append(f"| {method} | {s:g} | {fds[method][-1]:.3f} | "
                         f"{quality['training']['kid']:.4f} | {kids[method][-1]:.4f} |")
    images = pathlib.Path(a.doc).parent / "images"
    sweep_plot(images / "fd_vs_scale.png", None,
               {f"{m} guidance": (sweeps[m], fds[m]) for m in sweeps}, "guidance scale")
    sweep_plot(images / "fd_vs_kid.png", None,
               {f"{m} guidance": (kids[m], fds[m]) for m in sweeps},
               "matched KID (image quality, lower is better)",
               log_x=False)
    return lines + ["", "![FD vs guidance scale](images/fd_vs_scale.png) "
                        "![FD vs matched KID](images/fd_vs_kid.png)", ""]


if __name__ == "__main__":
    main()
