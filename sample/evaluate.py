"""Evaluates a generated data set (from sample.generate): FD, KL and deviation ratio per target,
KID and FID against real SynthFaces, a class-share chart and a sample grid.

    python -m sample.evaluate out/faces                       # the run's own targets
    python -m sample.evaluate out/unguided --target hair=uniform --before out/unguided

Writes RUN_DIR/evaluation/{report.json, shares.png, grid.png} (or --out).
"""

import json
import sys

from dg_jax.evaluation.evaluate import EvaluateConfig, evaluate
from dg_jax.flags import config_parser, parse_config, run_cli


def main(argv=None) -> int:
    parser = config_parser(EvaluateConfig, __doc__)

    def run():
        report = evaluate(parse_config(parser, EvaluateConfig, argv)[0])
        summary = {name: {k: round(m[k], 4) for k in ("fd", "kl", "deviation_ratio")}
                   for name, m in report["fairness"].items()}
        print(json.dumps({"fairness": summary, "quality": report.get("quality", {})}, indent=2))

    return run_cli(parser, run)


if __name__ == "__main__":
    sys.exit(main())
