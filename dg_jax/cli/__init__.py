"""The command-line entry points, installed as dg_jax.cli.train and dg_jax.cli.sample (console
scripts dg-generate, dg-train-adp, ...). In a checkout they are train/ and sample/ at the root:
`python -m sample.generate` there runs the same code as `dg-generate`."""
