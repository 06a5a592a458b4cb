"""Every Python block of README.md and docs/API.md runs as written, in order, each file in one
namespace (the README's reading example reads a small generated folder in place of the
set-up command's)."""

import os
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def python_blocks(path: pathlib.Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.DOTALL)


@pytest.mark.parametrize("doc", ["README.md", "docs/API.md"])
def test_python_blocks_run(doc, tiny_run, tmp_path, monkeypatch):
    blocks = python_blocks(ROOT / doc)
    assert blocks
    (tmp_path / "out").mkdir()
    os.symlink(tiny_run / "run", tmp_path / "out" / "synthfaces")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{doc} python block {i + 1}", "exec"), namespace)
