"""Downstream fairness on the embedded default: a smile classifier trained on real SynthFaces
where smiling faces are mostly medium- or dark-skinned, with and without generated faces; writes
its section of docs/RESULTS.md and docs/images/fair_classifier.png.

    python -m bench.fair_classifier                     # 3 seeds, 2,048 generated images per set

Training sets (same steps and batch size for all):
  (a) real:          2,000 real faces, smile confounded with skin (bias 0.9)
  (b) + distribution: plus faces generated with distribution guidance to skin=uniform
  (c) + unguided:     plus as many unguided faces (the model's own skin shares)
  (d) + sample-level: plus as many faces from sample-level guidance to skin=uniform
Generated faces are labelled by the embedded labeller (pseudo-labels). Each set is generated
once and shared by the seeds; a seed draws the real set, the initialisation and the batches.
The test set has every (smile, skin) cell equally common. Runs live under --out and are reused.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bench.doc_sections import RESULTS_TITLE, write_section  # noqa: E402
from bench.results import SAMPLE_SCALE, base_config, row_config  # noqa: E402
from dg_jax.generation import run  # noqa: E402
from dg_jax.guidance.distribution import GuidanceConfig  # noqa: E402
from dg_jax.training.fair_classifier import METRICS, FairClassifierConfig, train_fair_classifier  # noqa: E402

# training set -> (guidance method, balance) of its generated images (None: real only)
SETTINGS = {"(a) real": None, "(b) + distribution": ("distribution", "dataset"),
            "(c) + unguided": ("none", "batch"), "(d) + sample-level": ("sample", "batch")}
LABELS = {"accuracy": "accuracy", "worst_group_accuracy": "worst-group acc.",
          "worst_group_gap": "worst-group gap", "equalized_odds_gap": "equalized-odds gap",
          "demographic_parity_gap": "dem. parity gap"}


def generated_folder(out: pathlib.Path, method: str, balance: str, a) -> str:
    """Generates (or reuses) one set of faces; returns its folder."""
    name = {"none": "unguided"}.get(method, f"{method}_{a.sensitive}")
    # bench/results.py's row configs, so that its runs' folders can be reused here
    config = row_config(base_config(a.num_generated, 64, a.adp), method, balance,
                        (f"{a.sensitive}=uniform",),
                        a.sample_scale if method == "sample" else a.scale)
    out = str(out / "generated" / name)
    run(dataclasses.replace(config, out=out))
    return out


def summary(reports: list[dict]) -> dict[str, tuple[float, float]]:
    """metric -> (mean, std over seeds)."""
    return {m: (float(np.mean([r[m] for r in reports])), float(np.std([r[m] for r in reports])))
            for m in METRICS}


def plot(path: pathlib.Path, summaries: dict[str, dict]) -> None:
    """Grouped bars: one group per metric, one bar per training set, std as error bars."""
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / len(summaries)
    x = np.arange(len(METRICS))
    for i, (setting, s) in enumerate(summaries.items()):
        ax.bar(x + (i - (len(summaries) - 1) / 2) * width, [s[m][0] for m in METRICS], width,
               yerr=[s[m][1] for m in METRICS], capsize=2, label=setting)
    ax.set_xticks(x, [LABELS[m] for m in METRICS], fontsize=8)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("smile classifier on a balanced test set (mean ± std over seeds)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/fair")
    p.add_argument("--doc", default="docs/RESULTS.md")
    p.add_argument("--adp", default="dg_jax/assets/synthfaces_adp")
    p.add_argument("--target", default="smile")
    p.add_argument("--sensitive", default="skin")
    p.add_argument("--bias", type=float, default=FairClassifierConfig.bias)
    p.add_argument("--num-real", type=int, default=FairClassifierConfig.num_images)
    p.add_argument("--num-generated", type=int, default=2048)
    p.add_argument("--scale", type=float, default=GuidanceConfig.scale,
                   help="distribution guidance scale")
    p.add_argument("--sample-scale", type=float, default=SAMPLE_SCALE,
                   help="sample-level guidance scale (bench.results')")
    p.add_argument("--steps", type=int, default=FairClassifierConfig.steps)
    p.add_argument("--seeds", default="0,1,2")
    a = p.parse_args()
    out, tick = pathlib.Path(a.out), time.time()
    folders = {s: generated_folder(out, *m, a) if m else "" for s, m in SETTINGS.items()}
    generated_s = time.time() - tick
    seeds = [int(s) for s in a.seeds.split(",")]
    reports = {s: [] for s in SETTINGS}
    for seed in seeds:
        for setting, folder in folders.items():
            workdir = out / "classifiers" / f"{setting.split()[0].strip('()')}_seed{seed}"
            config = FairClassifierConfig(
                workdir=str(workdir), target=a.target, sensitive=a.sensitive, bias=a.bias,
                num_images=a.num_real, generated=folder, steps=a.steps, seed=seed,
                data_seed=seed)
            reports[setting].append(train_fair_classifier(config))
    summaries = {s: summary(r) for s, r in reports.items()}
    (out / "summary.json").write_text(json.dumps(
        {"summaries": summaries, "reports": reports}, indent=1) + "\n")
    plot(pathlib.Path(a.doc).parent / "images" / "fair_classifier.png", summaries)
    first = reports["(a) real"][0]
    lines = [
        "## Downstream: a fairer smile classifier", "",
        f"A {a.target} classifier (`train/train_fair_classifier.py`) trained on {a.num_real} "
        f"real faces where {a.target} is confounded with {a.sensitive} (bias {a.bias:g}: "
        f"cells [{a.sensitive}][{a.target}] {first['training_set']['real']['cells']}), alone "
        f"or with {a.num_generated} generated faces (pseudo-labelled by the embedded labeller), "
        f"{a.steps} steps at batch {FairClassifierConfig.batch_size} for every set. Test set: "
        f"{first['test_set']['images']} faces, every ({a.sensitive}, {a.target}) cell equally "
        "common. Groups are (sensitive, target) cells: worst-group accuracy is the lowest cell "
        "accuracy, worst-group gap the highest minus the lowest. Mean ± std over seeds "
        f"{a.seeds}.", "",
        "| training set | " + " | ".join(LABELS[m] for m in METRICS)
        + f" | generated {a.sensitive} shares (labeller) |",
        "|---|" + "---|" * (len(METRICS) + 1)]
    for setting, s in summaries.items():
        generated = reports[setting][0]["training_set"]["generated"]
        shares = "-" if generated is None else ", ".join(
            f"{c / generated['images']:.2f}" for c in np.sum(generated["cells"], axis=1))
        lines.append(f"| {setting} | " + " | ".join(f"{s[m][0]:.3f} ± {s[m][1]:.3f}"
                                                    for m in METRICS) + f" | {shares} |")
    lines += ["", "![fair classifier](images/fair_classifier.png)", "",
              f"Made by `python -m bench.fair_classifier` with {vars(a)}; generation "
              f"{generated_s / 60:.0f} min (0 where the sets were already there), whole run "
              f"{(time.time() - tick) / 60:.0f} min on 2 CPU cores.", ""]
    write_section(a.doc, "fair-classifier", lines, title=RESULTS_TITLE)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
