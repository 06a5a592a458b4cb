"""bench/results.py keeps the table rows it did not measure (a full table takes hours to
measure on CPU): the merge, the provenance line and the stale-row check."""

from bench import results
from bench.doc_sections import read_section, write_section
from bench.table_rows import cells, commands, merge_rows, table_rows

HEADER = ["| targets | method | balance | FD | img/s |", "|---|---|---|---|---|"]


def test_table_rows_skips_text_header_and_separator():
    lines = ["## Methods", "", "text | with a bar", *HEADER, "| a | b | c | 1 | - |", "",
             "| later table | x |"]
    assert table_rows(lines) == ["| a | b | c | 1 | - |"]
    assert cells("| a | b c |  d |") == ["a", "b c", "d"]


def test_merge_replaces_measured_keeps_the_rest_in_order():
    previous = ["| g2 | none | - | 0.3 | - |", "| g1 | none | - | 0.1 | - |",
                "| g1 | image | batch | 0.2 | 0.5 |"]
    measured = ["| g1 | none | - | 0.1 | 5.8 |", "| g1 | sample | batch | 0.4 | 1.0 |"]
    order = {"g1": 0, "g2": 1}
    methods = {"none": 0, "sample": 1, "image": 2}
    rows, kept = merge_rows(previous, measured, 3, lambda k: (order[k[0]], methods[k[1]]))
    assert rows == ["| g1 | none | - | 0.1 | 5.8 |", "| g1 | sample | batch | 0.4 | 1.0 |",
                    "| g1 | image | batch | 0.2 | 0.5 |", "| g2 | none | - | 0.3 | - |"]
    assert kept == ["| g1 | image | batch | 0.2 | 0.5 |", "| g2 | none | - | 0.3 | - |"]


def test_commands_are_found_once_in_order():
    lines = ["Made by `prog --a 1` (see).", "kept: `prog --b 2`; `prog --a 1`; `other`"]
    assert commands(lines, "prog") == ["prog --a 1", "prog --b 2"]


def row(group, method, balance, fd, kid="0.0049", speed="-"):
    return f"| {group} | {method} | {balance} | - | 2048 | {fd} | 0 | 0 | {kid} | {speed} |"


def test_table_keeps_unmeasured_rows_and_flags_stale_ones(tmp_path, monkeypatch):
    """Only the named groups are measured, plus each kept group's unguided row; a kept guided
    row whose unguided row now reads differently is named as stale."""
    doc = tmp_path / "RESULTS.md"
    old_command = "python -m bench.results --groups hair:sample"
    write_section(doc, "results-table", [
        "## Methods", "", *HEADER,
        row("hair", "none", "-", "0.382"), row("hair", "sample", "batch", "0.168"),
        row("glasses", "none", "-", "0.534"), row("glasses", "sample", "batch", "0.472"),
        "", f"Made by `{old_command}` (see the script's docstring)."])
    calls = []

    def fake_group_rows(out, base, scales, num_real, res, group, methods, *rest):
        calls.append((group, tuple(methods)))
        new = {"hair": [row("hair", "none", "-", "0.382", speed="5.8"),
                        row("hair", "image", "batch", "0.000", speed="0.5")],
               # the glasses unguided row moved: its kept guided rows are stale
               "glasses": [row("glasses", "none", "-", "0.530", speed="5.8")]}
        return new[group]

    monkeypatch.setattr(results, "group_rows", fake_group_rows)
    new_made_by = "Made by `python -m bench.results --groups hair:image`."
    lines = results.table(tmp_path, results.base_config(64, 64, "adp"), {}, 0, {},
                          {"hair": ["image"]}, (), 64, read_section(doc, "results-table"),
                          new_made_by)
    assert calls == [("hair", ("image",)), ("glasses", ())]
    body = table_rows(lines)
    assert [tuple(cells(r)[:3]) for r in body] == [
        ("hair", "none", "-"), ("hair", "sample", "batch"), ("hair", "image", "batch"),
        ("glasses", "none", "-"), ("glasses", "sample", "batch")]
    assert cells(body[0])[-1] == "5.8" and cells(body[1])[5] == "0.168"
    text = "\n".join(lines)
    assert f"`{old_command}`" in text
    assert "Stale (their unguided row changed since): glasses / sample / batch." in text


def test_seed_spread_reuses_the_tables_run_and_keeps_other_groups(tmp_path, monkeypatch):
    """The seeds part runs each group's dataset-balanced row at every seed (the table's own run at
    the base seed), prints FD per seed with its mean and spread, and keeps the rows of groups it
    did not measure, naming the command that made them."""
    runs = []

    def fake_generate_and_evaluate(out, name, config, targets, num_real):
        runs.append((name, config.seed, config.method, config.balance))
        fd = {0: 0.03, 1: 0.01, 2: 0.02}[config.seed] if config.method != "none" else 0.5
        return {"fairness": {t: {"fd": fd / len(targets)} for t in targets},
                "quality": {"matched": {"kid": 0.004 if config.method != "none" else 0.002}}}

    monkeypatch.setattr(results, "generate_and_evaluate", fake_generate_and_evaluate)
    old_command = "python -m bench.results --groups glasses --seeds 0,1"
    previous = ["| targets | seeds | FD per seed |", "|---|---|---|",
                "| glasses | 0, 1 | 0.005, 0.007 |", "| hair + skin | 0 | 0.9 |", "",
                f"Made by `{old_command}`."]
    lines = results.seed_spread(tmp_path, results.base_config(64, 64, "adp"), 10000.0, 0, {},
                                ["hair + skin"], [0, 1, 2], (), previous,
                                "Made by `python -m bench.results --seeds 0,1,2`.")
    guided = [r for r in runs if r[2] != "none"]
    assert guided == [("distribution-dataset_hair+skin", 0, "distribution", "dataset"),
                      ("distribution-dataset_hair+skin_seed1", 1, "distribution", "dataset"),
                      ("distribution-dataset_hair+skin_seed2", 2, "distribution", "dataset")]
    body = table_rows(lines)
    assert [cells(r)[0] for r in body] == ["glasses", "hair + skin"]  # the table's order
    assert cells(body[1])[1:] == ["0, 1, 2", "0.030, 0.010, 0.020", "0.020", "0.010", "0.030",
                                  "2.00, 2.00, 2.00"]
    assert f"`{old_command}`" in "\n".join(lines)
