"""Robustness of distribution guidance across target shapes, on the embedded default.

    python -m bench.target_matrix                                 # every row, 512 images, both modes
    python -m bench.target_matrix --num-images 128 --rows "hair=0,1" --balance batch   # a probe
    python -m bench.target_matrix --guidance-push commit --out runs/target_matrix_commit \
        --images-dir docs/images/target_matrix_commit       # another push, its own doc section
    python -m bench.target_matrix --posterior-power 1 --out runs/target_matrix_power1 \
        --images-dir docs/images/target_matrix_power1       # without the posterior power, likewise
    python -m bench.target_matrix --posterior-power-from 0 --out runs/target_matrix_from0 \
        --images-dir docs/images/target_matrix_from0        # the power throughout, likewise
    python -m bench.target_matrix --adp runs/adp_adv10_export --out runs/target_matrix_adv10 \
        --images-dir docs/images/target_matrix_adv10         # another ADP, its own doc section

Rows: each binary attribute (hair, glasses, smile) at uniform, 0.3/0.7 both ways and one-hot both
ways; skin at uniform, (0.2, 0.3, 0.5) and (0, 0, 1); hair 0.5/0.5 + glasses 0.3/0.7; hair,
glasses and skin uniform at once; the joint hair x glasses uniform. Every row runs with the
library's defaults (`GuidanceConfig()`, `GuardConfig()`), batch 64, once with each batch balanced
on its own (batch-corrected; `--balance batch` measures the paper's uncorrected per-batch
balance) and once with dataset-level balance (dataset).

Columns: FD by the evaluation network and by the labeller (the worst of the row's targets); the
matched-KID ratio (KID against real faces with the images' own attribute combinations, over the
unguided model's, measured on --num-unguided images; the table's head says how far the ratio of
a row-sized unguided set moves by chance); for one-hot rows the share of the asked class; the
largest drift of an untargeted attribute from the unguided shares (evaluation network,
percentage points); the largest relative change of h in one step and its mean total over the
steps; broken images (the quality guard); images/s (- for a run resumed after an interruption).
A row the guard stopped says why (`--on-degenerate warn` measures what such a row writes
instead). Runs live under --out and are reused (generation resumes, evaluations are cached by
bench/results.py's helper); the figures go to --out/target_matrix.json and the table and sample
grids into docs/GUIDANCE.md.

Each measured row is also kept in --images-dir/rows.json beside its grid (both are committed),
keyed by everything that made it: the row's generation config, the ADP's weights
(`checkpoints.params_sha256`), the reference sizes. A rerun takes a row from there when its key
matches, so the matrix (~5 min a row here) can be measured over several machines or sittings
without the run folders; rows whose settings or ADP changed are measured again. The section of
--doc is rewritten after every row measured, naming the rows not measured yet, so an
interrupted run leaves a doc that agrees with rows.json and the grids.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import pathlib
import re
from typing import get_args, get_type_hints

from PIL import Image

from bench.doc_sections import write_section
from bench.results import base_config, generate_and_evaluate
from dg_jax import checkpoints, configs
from dg_jax.data.generated import read_generated
from dg_jax.data.images import image_grid
from dg_jax.evaluation.evaluate import EvaluateConfig, make_featurizer, quality
from dg_jax.flags import error_line
from dg_jax.generation import adp_weights
from dg_jax.guard import DegenerateOutputError, GuardConfig
from dg_jax.guidance.distribution import LATER_FIELDS as guidance_later_fields
from dg_jax.guidance.distribution import GuidanceConfig
from dg_jax.loading import load_classifier
from sample.generate import make_parser

BINARY = ("hair", "glasses", "smile")
# In the order they are run: the shares users ask for most first, then one-hot targets, then
# the mirrored asymmetric ones (a run that is cut short still covers every kind of target).
ROWS = (
    *[[f"{a}={p}"] for p in ("uniform", "0.3,0.7") for a in BINARY],
    ["skin=uniform"], ["skin=0.2,0.3,0.5"],
    ["hair=0.5,0.5", "glasses=0.3,0.7"],
    ["hair=uniform", "glasses=uniform", "skin=uniform"],
    ["hair,glasses=uniform"],
    *[[f"{a}={p}"] for p in ("0,1", "1,0") for a in BINARY], ["skin=0,0,1"],
    *[[f"{a}=0.7,0.3"] for a in BINARY],
)
ATTRIBUTES = ("glasses", "hair", "skin", "smile")
PROGRAM = "python -m bench.target_matrix"
# Part of every rows.json key: raise it when a column comes to be measured differently, so that
# rows measured the old way are measured again.
RECORD_VERSION = 1
# Config fields added after rows were first recorded: left out of a key while they do what was
# done before them, so that the rows recorded before them still match.
LATER_FIELDS = {f"guidance.{name}": v for name, v in guidance_later_fields.items()}


def slug(targets) -> str:
    return re.sub(r"[^a-z0-9]+", "_", "+".join(targets)).strip("_")


def one_hot_share(targets, shares: dict) -> float | None:
    """The evaluation network's share of the asked class for a one-hot single target."""
    if len(targets) != 1 or "," in targets[0].split("=")[0]:
        return None
    name, _, probs = targets[0].partition("=")
    values = [float(v) for v in probs.split(",")] if probs != "uniform" else []
    if sorted(values)[-1:] != [1.0]:
        return None
    return shares[name][values.index(1.0)]


def row_config(guided, targets, balance: str):
    return dataclasses.replace(guided, method="distribution", targets=tuple(targets),
                               balance=balance)


def measure_row(out: pathlib.Path, config, num_real: int, unguided: dict) -> dict:
    targets, balance = list(config.targets), config.balance
    name = f"{balance}/{slug(targets)}"
    row = {"targets": targets, "balance": balance}
    # A stop is a result too: kept, so that a rerun of the bench does not run into it again.
    stopped = out / name / "stopped.txt"
    if stopped.exists():
        return {**row, "stopped": stopped.read_text().strip()}
    try:
        report = generate_and_evaluate(out, name, config, targets, num_real)
    except DegenerateOutputError as e:
        # as sample.generate prints it: settings named by their flags
        line = error_line(e, make_parser()).removeprefix("error: ")
        stopped.write_text(f"{line}\n")
        return {**row, "stopped": line}
    manifest = json.loads((out / name / "manifest.json").read_text())
    targeted = {a for t in targets for a in t.split("=")[0].split(",")}
    row.update({
        "fd": max(v["fd"] for v in report["fairness"].values()),
        "fd_labeller": max(v["fd"] for v in report["fairness_by_labeller"].values()),
        "kid_ratio": report["quality"]["matched"]["kid"] / unguided["kid"],
        "one_hot_share": one_hot_share(targets, report["shares"]),
        "drift": max((abs(g - u) for a in ATTRIBUTES if a not in targeted
                      for g, u in zip(report["shares"][a], unguided["shares"][a])), default=0.0),
        "h_step_max": manifest["quality"]["h_change"]["step_max"],
        "h_total_mean": manifest["quality"]["h_change"]["total_mean"],
        "broken": manifest["quality"]["broken_fraction"],
        "images_per_second": report["images_per_second"],
        "shares": {a: report["shares"][a] for a in ATTRIBUTES},
    })
    return row


def unguided_reference(out: pathlib.Path, base, num_unguided: int, size: int,
                       num_real: int) -> dict:
    """What the rows are measured against: the unguided model's shares and matched KID on
    num_unguided images, and the KIDs of its disjoint `size`-image parts ("chance")."""
    report = generate_and_evaluate(
        out, f"unguided_{num_unguided}",
        dataclasses.replace(base, method="none", num_images=num_unguided), (), num_real)
    return {"num_images": report["num_images"], "shares": report["shares"],
            "kid": report["quality"]["matched"]["kid"],
            "chance": subset_kids(out / f"unguided_{num_unguided}", size, num_real)}


def record_key(**parts) -> str:
    """A rows.json key: the digest of everything that made a row (configs as dicts, without
    where their runs live)."""
    parts = {k: ({n: v for n, v in configs.to_recorded_dict(p, LATER_FIELDS).items()
                  if n != "out"}
                 if dataclasses.is_dataclass(p) else p) for k, p in parts.items()}
    text = json.dumps({**parts, "version": RECORD_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class RowRecord:
    """--images-dir/rows.json: the reference and each row last measured for a (targets,
    balance), under the key of what made it; rewritten after every row, so an interrupted run
    keeps what it measured."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        self.data = (json.loads(path.read_text()) if path.exists()
                     else {"unguided": None, "rows": []})

    def reference(self, key: str) -> dict | None:
        found = self.data["unguided"]
        return found["figures"] if found and found["key"] == key else None

    def row(self, key: str) -> dict | None:
        return next((r["row"] for r in self.data["rows"] if r["key"] == key), None)

    def keep_reference(self, key: str, figures: dict) -> None:
        self.data["unguided"] = {"key": key, "figures": figures}
        self._write()

    def keep_row(self, key: str, row: dict) -> None:
        self.data["rows"] = [r for r in self.data["rows"]
                             if (r["row"]["targets"], r["row"]["balance"])
                             != (row["targets"], row["balance"])] + [{"key": key, "row": row}]
        self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=1) + "\n")


def subset_kids(run_dir: pathlib.Path, size: int, num_real: int) -> list[float]:
    """Matched KID of each disjoint `size`-image part of an unguided run: how far a row's KID
    moves by chance alone. Cached in the run's folder (rendering the references takes minutes)."""
    cache = run_dir / f"subset_kids_{size}_{num_real}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    featurize = make_featurizer(load_classifier(checkpoints.EMBEDDED_EVALUATOR))
    images = read_generated(run_dir)["image"]
    features, labels = featurize(images)
    config = EvaluateConfig(run_dir=str(run_dir), num_real=num_real)
    kids = []
    for start in range(0, len(images) - size + 1, size):
        part = slice(start, start + size)
        kids.append(float(quality(features[part], featurize, [], config, images.shape[1],
                                  "embedded evaluator",
                                  labels={a: v[part] for a, v in labels.items()}
                                  )["matched"]["kid"]))
    cache.write_text(json.dumps(kids) + "\n")
    return kids


def passes(row: dict) -> bool:
    """The acceptance line: FD <= 0.05 by both networks, matched KID ratio <= 1.5, one-hot rows
    >= 95 % of the asked class."""
    if "stopped" in row:
        return False
    one_hot = row["one_hot_share"]
    return (row["fd"] <= 0.05 and row["fd_labeller"] <= 0.05 and row["kid_ratio"] <= 1.5
            and (one_hot is None or one_hot >= 0.95))


def table(rows: list[dict], unguided: dict, size: int) -> list[str]:
    shares = " ".join(f"{a} " + "/".join(f"{100 * v:.0f}" for v in unguided["shares"][a])
                      for a in ATTRIBUTES)
    kid, chance = unguided["kid"], unguided["chance"]
    lines = [f"Unguided ({unguided['num_images']} images): shares (evaluation network, %) "
             f"{shares}; matched KID {kid:.5f}, the KID ratio's denominator. Its "
             f"{len(chance)} disjoint parts of {size} images have "
             f"ratios {', '.join(f'{k / kid:.2f}' for k in chance)}: how far a row's ratio "
             "moves by chance.", "",
             "| targets | balance | FD eval | FD labeller | matched KID ratio | one-hot share | "
             "untargeted drift (pp) | dh/h step max | dh/h total mean | broken | img/s | meets |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head = f"| `{' '.join(r['targets'])}` | {r['balance']} |"
        if "stopped" in r:
            lines.append(head + f" stopped: {r['stopped']} |" + " |" * 10)
            continue
        one_hot = "" if r["one_hot_share"] is None else f"{100 * r['one_hot_share']:.1f} %"
        # a run resumed after an interruption has no speed of its own
        speed = "-" if r["images_per_second"] is None else f"{r['images_per_second']:.2f}"
        lines.append(
            head + f" {r['fd']:.3f} | {r['fd_labeller']:.3f} | {r['kid_ratio']:.2f} | "
            f"{one_hot} | {100 * r['drift']:.1f} | {r['h_step_max']:.2f} | "
            f"{r['h_total_mean']:.1f} | {100 * r['broken']:.1f} % | "
            f"{speed} | {'yes' if passes(r) else 'no'} |")
    return lines


def save_grid(out: pathlib.Path, row: dict, images_dir: pathlib.Path) -> None:
    """The row's first 32 images as a 4 x 8 grid in images_dir; a run without images (stopped
    before its first shard) removes the grid an earlier measurement left."""
    run_dir = out / row["balance"] / slug(row["targets"])
    path = grid_path(row, images_dir)
    images = (read_generated(run_dir)["image"][:32] if (run_dir / "manifest.json").exists()
              else [])
    if not len(images):
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_grid(images, 8, scale=2)).save(path, optimize=True)


def grid_path(row: dict, images_dir: pathlib.Path) -> pathlib.Path:
    return images_dir / f"{row['balance']}_{slug(row['targets'])}.png"


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/target_matrix")
    p.add_argument("--doc", default="docs/GUIDANCE.md")
    p.add_argument("--images-dir", default="docs/images/target_matrix")
    p.add_argument("--num-images", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-real", type=int, default=8192)
    p.add_argument("--num-unguided", type=int, default=2048,
                   help="unguided images behind the KID ratio's denominator and the drift")
    p.add_argument("--balance", default="dataset,batch-corrected",
                   help="comma-separated --balance values of sample.generate, each a set of rows")
    p.add_argument("--rows", default="",
                   help="';'-separated rows, each a '+'-joined list of targets (default: all)")
    p.add_argument("--guidance-push", default=GuidanceConfig.push,
                   choices=get_args(get_type_hints(GuidanceConfig)["push"]),
                   help="the rows' push (default: the library's); another one writes its own "
                        "section of --doc (use another --out and --images-dir, too)")
    p.add_argument("--posterior-power", type=float, default=GuidanceConfig.posterior_power,
                   help="the rows' posterior power (default: the library's); another one writes "
                        "its own section of --doc, as --guidance-push does")
    p.add_argument("--posterior-power-from", type=float, default=GuidanceConfig.power_from,
                   help="the fraction of the sampling loop from which the power applies "
                        "(default: the library's); another one writes its own section of --doc")
    p.add_argument("--posterior-power-min-accuracy", type=float,
                   default=GuidanceConfig.power_min_accuracy,
                   help="the ADP accuracy a targeted attribute needs for the power to act on it "
                        "(default: the library's); another one writes its own section of --doc")
    p.add_argument("--on-degenerate", default=GuardConfig.on_degenerate,
                   choices=get_args(get_type_hints(GuardConfig)["on_degenerate"]),
                   help="the quality guard's action (default: the library's, so that a row the "
                        "guard stops is a stop); warn measures what such a row writes")
    p.add_argument("--adp", default="",
                   help="the rows' ADP bundle (default: the embedded one); another one writes its "
                        "own section of --doc, as --guidance-push does")
    a = p.parse_args()
    out = pathlib.Path(a.out)
    rows = ([r.split("+") for r in a.rows.split(";")] if a.rows else ROWS)
    # bench.results' base config with the guard a user gets (that bench warns instead). Its
    # guidance, which only the unguided reference's key sees, holds the later fields at their
    # pinned values: an unguided run ignores them, so a new default of theirs keeps the
    # reference (and the rows keyed with it).
    base = dataclasses.replace(base_config(a.num_images, a.batch_size, ""), adp="",
                               guard=GuardConfig(on_degenerate=a.on_degenerate),
                               guidance=GuidanceConfig(**guidance_later_fields))
    guidance = rows_guidance(a)
    guided = dataclasses.replace(base, guidance=guidance, adp=a.adp)
    variant = [name for name, _ in variant_settings(guidance)] + (
        [f"adp-{pathlib.Path(a.adp).name}"] if a.adp else [])
    images_dir = pathlib.Path(a.images_dir)
    record = RowRecord(images_dir / "rows.json")
    # The KID ratio's denominator and the drift's reference from more images than a row has: a
    # 512-image KID is a noisy estimate (subset_kids says how noisy). Made only when a row is.
    sizes = {"num_unguided": a.num_unguided, "size": a.num_images, "num_real": a.num_real}
    reference_key = record_key(config=base, **sizes)
    unguided = record.reference(reference_key)
    weights = adp_weights(a.adp or str(checkpoints.EMBEDDED_ADP))
    planned = [row_config(guided, targets, balance)
               for balance in a.balance.split(",") for targets in rows]
    keys = [record_key(config=c, weights=weights, reference=reference_key) for c in planned]
    results = [record.row(key) for key in keys]  # None: to be measured

    def kept_reference() -> dict:
        figures = unguided_reference(out, base, **sizes)
        record.keep_reference(reference_key, figures)
        return figures

    for i, config in enumerate(planned):
        if results[i] is not None:
            continue
        unguided = unguided or kept_reference()
        results[i] = measure_row(out, config, a.num_real, unguided)
        save_grid(out, results[i], images_dir)
        record.keep_row(keys[i], results[i])
        print(json.dumps(results[i]), flush=True)
        # after every row, so that an interrupted run leaves a doc that matches rows.json
        publish(a, guidance, variant, planned, results, unguided)
    # every row came from the record, but the reference did not (it was replaced since)
    unguided = unguided or kept_reference()
    lines = publish(a, guidance, variant, planned, results, unguided)
    out.mkdir(parents=True, exist_ok=True)  # absent when every row came from the record
    (out / "target_matrix.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n".join(lines))
    meets, stops = sum(map(passes, results)), sum("stopped" in r for r in results)
    print(f"of {len(results)} rows {meets} meet the line, {stops} stopped, "
          f"{len(results) - stops - meets} miss it")


def rows_guidance(a) -> GuidanceConfig:
    """The rows' guidance from the flags. Power 1 is no power: when and on what it would act
    changes nothing, so those two stay at their pinned values and the rows keep the keys of rows
    measured before the power existed."""
    no_power = a.posterior_power == 1
    return GuidanceConfig(
        push=a.guidance_push, posterior_power=a.posterior_power,
        power_from=(guidance_later_fields["power_from"] if no_power
                    else a.posterior_power_from),
        power_min_accuracy=(guidance_later_fields["power_min_accuracy"] if no_power
                            else a.posterior_power_min_accuracy))


def variant_settings(guidance: GuidanceConfig) -> list[tuple[str, str]]:
    """(part of the section's name, flag) for each of the rows' guidance settings that is not
    the library's default; power 1 leaves when and on what the power acts unnamed (it does
    nothing)."""
    default = GuidanceConfig()
    settings = [(guidance.push, f"--guidance-push {guidance.push}",
                 guidance.push != default.push)]
    power = guidance.posterior_power
    settings.append((f"power-{power:g}", f"--posterior-power {power:g}",
                     power != default.posterior_power))
    if power != 1:
        settings += [
            (f"from-{guidance.power_from:g}",
             f"--posterior-power-from {guidance.power_from:g}",
             guidance.power_from != default.power_from),
            (f"min-accuracy-{guidance.power_min_accuracy:g}",
             f"--posterior-power-min-accuracy {guidance.power_min_accuracy:g}",
             guidance.power_min_accuracy != default.power_min_accuracy)]
    return [(name, flag) for name, flag, differs in settings if differs]


def publish(a, guidance: GuidanceConfig, variant: list[str], planned: list,
            results: list[dict | None], unguided: dict) -> list[str]:
    """Writes the section of --doc: the table of the rows measured so far, the rows still to be
    measured, the command and the grids. Returns the table's lines."""
    done = [r for r in results if r is not None]
    made_by = (f"Made by `{PROGRAM} --num-images {a.num_images} --batch-size {a.batch_size} "
               f"--num-real {a.num_real} --num-unguided {a.num_unguided} --balance {a.balance}"
               + (f" --rows \"{a.rows}\"" if a.rows else "")
               + "".join(f" {flag}" for _, flag in variant_settings(guidance))
               + (f" --on-degenerate {a.on_degenerate}"
                  if a.on_degenerate != GuardConfig.on_degenerate else "")
               + (f" --adp {a.adp}" if a.adp else "")
               + (f" --out {a.out} --images-dir {a.images_dir}" if variant else "") + "`.")
    pending = [f"`{' '.join(c.targets)}` ({c.balance})"
               for c, r in zip(planned, results) if r is None]
    if pending:
        made_by += (f" Not measured yet ({len(pending)} of {len(planned)} rows; the same command "
                    f"measures them and keeps the rows above): {', '.join(pending)}.")
    lines = table(done, unguided, a.num_images)
    images_dir, doc_dir = pathlib.Path(a.images_dir), pathlib.Path(a.doc).parent
    grids = [f"![{r['balance']}: {' '.join(r['targets'])}]"
             f"({os.path.relpath(grid_path(r, images_dir), doc_dir)})"
             for r in done if grid_path(r, images_dir).exists()]
    write_section(a.doc, "-".join(["target-matrix", *variant]),
                  [*lines, "", made_by, "", *grids])
    return lines


if __name__ == "__main__":
    main()
