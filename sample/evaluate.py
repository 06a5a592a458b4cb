"""Evaluates a generated data set (from sample.generate): FD, KL and deviation ratio per target,
KID and FID against real SynthFaces, a class-share chart and a sample grid.

    python -m sample.evaluate out/faces                       # the run's own targets
    python -m sample.evaluate out/unguided --target hair=uniform --before out/unguided

Writes RUN_DIR/evaluation/{report.json, shares.png, grid.png} (or --out).
"""

import argparse
import json
import sys

from dg_jax.errors import UserError
from dg_jax.evaluation.evaluate import EvaluateConfig, evaluate


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--out", default="", help="default: RUN_DIR/evaluation")
    p.add_argument("--target", action="append", default=[],
                   help="grade against this target instead of the run's (repeatable)")
    p.add_argument("--joint", action="append", default=[], help="joint target, e.g. hair,skin=uniform")
    p.add_argument("--evaluator", default="", help="evaluation network bundle (default: embedded)")
    p.add_argument("--num-real", type=int, default=EvaluateConfig.num_real,
                   help="real SynthFaces per reference set for KID/FID (0: skip)")
    p.add_argument("--before", default="", help="another run shown as 'before' in shares.png")
    a = p.parse_args(argv)
    config = EvaluateConfig(run_dir=a.run_dir, out=a.out, targets=tuple(a.target + a.joint),
                            evaluator=a.evaluator, num_real=a.num_real, before=a.before)
    try:
        report = evaluate(config)
    except (UserError, OSError) as e:  # OSError: missing files, no access to a bucket
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = {name: {k: round(m[k], 4) for k in ("fd", "kl", "deviation_ratio")}
               for name, m in report["fairness"].items()}
    print(json.dumps({"fairness": summary, "quality": report.get("quality", {})}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
