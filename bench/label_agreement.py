"""Where the labeller that steered a run and the evaluation network that grades it disagree.

    python -m bench.label_agreement runs/results/hair_skin_distribution_dataset runs/results/unguided \
        --target hair=uniform --target skin=uniform

Dataset-level balance counts the labeller's labels, so by the labeller a balanced run is on
target; the evaluation network charges the images the two read differently. For each data set
and target this prints the shares by the labeller's labels, by its mean probabilities (a
confident labeller gives the same) and by the evaluation network, each one's FD against the
target, and how many images each network puts in a class that the other puts elsewhere
(labeller class -> evaluation class, the off-diagonal of their cross-table). A one-way
disagreement on guided images that unguided images do not show is images guidance left between
two classes. Last, the labeller's top probability on the images the two read alike and on those
they read differently, how many of the latter a confidence line (--confidence) would catch, and
both networks' FD on the images the labeller reads at or above the line on every target, with
the distance between the two networks' shares there and on all images: what a balance by the
labeller leaves the evaluation network to charge.
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np

from dg_jax import checkpoints
from dg_jax.data.generated import read_generated
from dg_jax.evaluation.evaluate import cell_names, make_featurizer, run_targets
from dg_jax.evaluation.fairness import cell_labels, class_shares, fairness_discrepancy
from dg_jax.guidance.distribution import cell_probabilities
from dg_jax.guidance.targets import Target
from dg_jax.loading import load_classifier


def labeller_cells(data: dict[str, np.ndarray], target: Target) -> np.ndarray:
    """The labeller's probabilities of the target's cells, [N, prod K]."""
    return np.asarray(cell_probabilities({a: data[f"prob_{a}"] for a in target.attributes},
                                         target.attributes))


def agreement(data: dict[str, np.ndarray], evaluated: dict[str, np.ndarray],
              target: Target, confident: np.ndarray | None = None) -> dict:
    """Shares, FDs and the labeller -> evaluation cross-table [C, C] of one target; with
    `confident` [N] (bool), also both networks' FD on those images alone."""
    cells = int(np.prod(target.num_classes))
    written = {a: data[f"label_{a}"] for a in target.attributes}
    by_labeller = cell_labels(written, target.attributes, target.num_classes)
    by_evaluator = cell_labels(evaluated, target.attributes, target.num_classes)
    probs = labeller_cells(data, target)
    shares = {"labeller": class_shares(by_labeller, cells),
              "labeller probs": np.mean(probs, axis=0),
              "evaluator": class_shares(by_evaluator, cells)}
    cross = np.zeros((cells, cells), np.int64)
    np.add.at(cross, (by_labeller, by_evaluator), 1)
    result = {"shares": shares, "cross": cross,
              "fd": {k: fairness_discrepancy(v, target.array) for k, v in shares.items()},
              "confidence": np.max(probs, axis=-1), "disagree": by_labeller != by_evaluator}
    result["gap"] = float(np.linalg.norm(shares["evaluator"] - shares["labeller"]))
    if confident is not None and confident.any():
        kept = {by: class_shares(labels[confident], cells)
                for by, labels in (("labeller", by_labeller), ("evaluator", by_evaluator))}
        result["confident"] = {
            "fraction": float(np.mean(confident)),
            "fd": {by: fairness_discrepancy(v, target.array) for by, v in kept.items()},
            "gap": float(np.linalg.norm(kept["evaluator"] - kept["labeller"]))}
    return result


def report(name: str, target: Target, result: dict, line: float = 0.9) -> str:
    names = cell_names(target)
    lines = [f"\n{name}: {target.to_spec()}, {int(result['cross'].sum())} images",
             "| by | " + " | ".join(names) + " | FD |", "|---" * (len(names) + 2) + "|"]
    for by, shares in result["shares"].items():
        lines.append(f"| {by} | " + " | ".join(f"{v:.3f}" for v in shares)
                     + f" | {result['fd'][by]:.3f} |")
    cross = result["cross"]
    moves = [f"{names[i]} -> {names[j]}: {cross[i, j]} (back {cross[j, i]})"
             for i in range(len(names)) for j in range(i + 1, len(names))
             if cross[i, j] or cross[j, i]]
    lines.append(f"disagree on {int(cross.sum() - np.trace(cross))} images (labeller -> "
                 "evaluation network): " + ("; ".join(moves) or "none"))
    confidence, disagree = result["confidence"], result["disagree"]
    if disagree.any() and not disagree.all():
        below = confidence < line
        lines.append(
            "labeller's top probability, median: "
            f"{np.median(confidence[disagree]):.3f} where they disagree, "
            f"{np.median(confidence[~disagree]):.3f} where they agree; below {line:g}: "
            f"{int(np.sum(below & disagree))} of the {int(disagree.sum())} disagreements, in "
            f"{100 * np.mean(below):.1f} % of the images")
    if "confident" in result:
        kept = result["confident"]
        lines.append(
            f"on the {100 * kept['fraction']:.1f} % of the images read at {line:g} or above on "
            f"every target: FD labeller {kept['fd']['labeller']:.3f}, evaluation network "
            f"{kept['fd']['evaluator']:.3f}; the two networks' shares {kept['gap']:.3f} apart "
            f"(on all images {result['gap']:.3f})")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="generated data sets (OUTs of sample.generate)")
    p.add_argument("--target", action="append", default=[],
                   help="grade against this target (default: each run's own); repeatable")
    p.add_argument("--confidence", type=float, default=0.9,
                   help="the labeller's top probability line the last line counts under")
    p.add_argument("--evaluator", default=checkpoints.EMBEDDED_EVALUATOR,
                   help="evaluation network bundle (default: the embedded one)")
    a = p.parse_args(argv)
    evaluator = load_classifier(a.evaluator)
    featurize = make_featurizer(evaluator)
    num_classes = dict(evaluator.config.attributes)
    for run in a.runs:
        data = read_generated(run)
        _, evaluated = featurize(data["image"])
        targets = run_targets(pathlib.Path(run), a.target, num_classes)
        confident = np.all([labeller_cells(data, t).max(axis=-1) >= a.confidence
                            for t in targets], axis=0)
        for target in targets:
            print(report(run, target, agreement(data, evaluated, target, confident),
                         a.confidence))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
