"""bench/target_matrix.py takes a row from --images-dir/rows.json when everything that made it
(the row's config, the ADP's weights, the reference sizes) is unchanged, and measures it again
when any of them changed."""

import hashlib
import json
import sys

import pytest
from flax import nnx

from bench import target_matrix
from dg_jax import checkpoints, configs
from dg_jax.generation import GenerateConfig
from dg_jax.guidance.distribution import LATER_FIELDS, GuidanceConfig
from dg_jax.loading import load_adp
from dg_jax.models.adp import ADP

UNGUIDED = {"num_images": 4, "shares": {a: [0.5, 0.5] for a in target_matrix.ATTRIBUTES},
            "kid": 0.01, "chance": [0.01]}


def test_rows_are_reused_until_their_settings_or_adp_weights_change(tmp_path, monkeypatch):
    measured, references = [], []

    def fake_measure_row(out, config, num_real, unguided):
        measured.append((config.targets, config.balance))
        return {"targets": list(config.targets), "balance": config.balance,
                "stopped": "the fake stops every row"}

    def fake_reference(out, base, num_unguided, size, num_real):
        references.append(size)
        return UNGUIDED

    monkeypatch.setattr(target_matrix, "measure_row", fake_measure_row)
    monkeypatch.setattr(target_matrix, "unguided_reference", fake_reference)
    other_adp = tmp_path / "other_adp"  # the embedded ADP's config, other weights
    embedded = load_adp()
    checkpoints.save_bundle(other_adp, "adp", configs.to_dict(embedded.config),
                            ADP(embedded.config, rngs=nnx.Rngs(1)))
    doc = tmp_path / "doc.md"

    def bench(*flags):
        measured.clear(), references.clear()
        monkeypatch.setattr(sys, "argv", [
            "target_matrix", "--out", str(tmp_path / "runs"), "--images-dir",
            str(tmp_path / "images"), "--doc", str(doc), "--balance", "batch",
            "--rows", "hair=0,1;glasses=uniform", *flags])
        target_matrix.main()

    bench()
    rows = [(("hair=0,1",), "batch"), (("glasses=uniform",), "batch")]
    assert measured == rows and references == [512]
    bench()  # nothing changed: every row and the reference come from rows.json
    assert measured == [] and references == []
    assert "the fake stops every row" in doc.read_text()
    bench("--adp", str(other_adp))  # other weights: every row again, the same reference
    assert measured == rows and references == []
    bench("--num-images", "256")  # other sizes: the reference and every row again
    assert measured == rows and references == [256]
    bench("--num-images", "256", "--on-degenerate", "warn")  # another guard: all again
    assert measured == rows and references == [256]
    assert "--on-degenerate warn" in doc.read_text()
    record = json.loads((tmp_path / "images" / "rows.json").read_text())
    assert len(record["rows"]) == 2  # one entry per (targets, balance): the last measured


def test_power_1_is_keyed_and_named_as_no_power(tmp_path, monkeypatch):
    """--posterior-power 1 does nothing whenever and on whatever it would act: its rows keep
    the keys of rows measured before the power existed, and its section is named by it alone."""
    keys = []

    def fake_measure_row(out, config, num_real, unguided):
        keys.append((target_matrix.record_key(config=config), key_without(
            config, "posterior_power", "power_from", "power_min_accuracy")))
        return {"targets": list(config.targets), "balance": config.balance, "stopped": "fake"}

    monkeypatch.setattr(target_matrix, "measure_row", fake_measure_row)
    monkeypatch.setattr(target_matrix, "unguided_reference", lambda *a, **k: UNGUIDED)
    doc = tmp_path / "doc.md"
    for i, flags in enumerate([["--posterior-power", "1"],
                               ["--posterior-power", "1", "--posterior-power-from", "0.5"]]):
        monkeypatch.setattr(sys, "argv", [
            "target_matrix", "--out", str(tmp_path / f"runs{i}"), "--images-dir",
            str(tmp_path / f"images{i}"), "--doc", str(doc), "--balance", "batch",
            "--rows", "hair=uniform", *flags])
        target_matrix.main()
    # the key of the row as it was measured before the three fields existed, both times
    assert keys[0] == keys[1] and keys[0][0] == keys[0][1]
    text = doc.read_text()
    assert "<!-- begin target-matrix-power-1 -->" in text and "from-" not in text
    assert "--posterior-power 1 --out" in text and "--posterior-power-from" not in text


def test_an_interrupted_bench_leaves_a_doc_of_the_rows_measured(tmp_path, monkeypatch):
    def measure_one_row_then_stop(out, config, num_real, unguided):
        if config.targets == ("glasses=uniform",):
            raise KeyboardInterrupt
        return {"targets": list(config.targets), "balance": config.balance, "stopped": "fake"}

    monkeypatch.setattr(target_matrix, "measure_row", measure_one_row_then_stop)
    monkeypatch.setattr(target_matrix, "unguided_reference", lambda *a, **k: UNGUIDED)
    doc = tmp_path / "doc.md"
    monkeypatch.setattr(sys, "argv", [
        "target_matrix", "--out", str(tmp_path / "runs"), "--images-dir",
        str(tmp_path / "images"), "--doc", str(doc), "--balance", "batch",
        "--rows", "hair=0,1;glasses=uniform"])
    with pytest.raises(KeyboardInterrupt):
        target_matrix.main()
    text = doc.read_text()
    assert "| `hair=0,1` | batch | stopped: fake |" in text
    assert "Not measured yet (1 of 2 rows" in text and "`glasses=uniform` (batch)" in text


def key_without(config, *fields: str) -> str:
    """The key `config` had when the GuidanceConfig `fields` did not exist yet."""
    before = configs.to_dict(config)
    for name in fields:
        del before["guidance"][name]
    without_out = {n: v for n, v in before.items() if n != "out"}
    text = json.dumps({"config": without_out, "version": target_matrix.RECORD_VERSION},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def test_a_key_leaves_out_later_fields_at_their_pinned_values():
    # rows recorded before GuidanceConfig.posterior_power, power_from and power_min_accuracy
    # existed keep their keys; another value of any (the defaults among them) is another row
    before = GenerateConfig(guidance=GuidanceConfig(**LATER_FIELDS))
    assert target_matrix.record_key(config=before) == key_without(
        before, "posterior_power", "power_from", "power_min_accuracy")
    config = GenerateConfig(guidance=GuidanceConfig(posterior_power=4.0, power_from=0.0,
                                                    power_min_accuracy=0.0))
    assert target_matrix.record_key(config=config) == key_without(
        config, "power_from", "power_min_accuracy")
    assert target_matrix.record_key(config=GenerateConfig()) == key_without(GenerateConfig())
    gated = GenerateConfig(guidance=GuidanceConfig(posterior_power=4.0, power_from=0.0,
                                                   power_min_accuracy=0.85))
    assert target_matrix.record_key(config=gated) != target_matrix.record_key(config=config)
    late = GenerateConfig(guidance=GuidanceConfig(posterior_power=4.0, power_from=0.8,
                                                  power_min_accuracy=0.0))
    assert target_matrix.record_key(config=late) != target_matrix.record_key(config=config)
