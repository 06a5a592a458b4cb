"""The package as others install it: its module graph, its package list, its docs."""

import ast
import pathlib
import re
import subprocess
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: pathlib.Path, modules: set[str]) -> set[str]:
    """dg_jax modules that `path` imports anywhere (also inside functions): for `from a import b`
    the module a.b if it is one, else a."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                      else node.module for a in node.names}
    return {m for m in found if m in modules}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_among_dg_jax_modules():
    files = {module_name(p): p for p in (ROOT / "dg_jax").rglob("*.py")}
    graph = {m: imported_modules(p, set(files)) - {m} for m, p in files.items()}
    # a package's __init__ importing its own modules is how packages export; a module importing
    # its package's __init__ back is the cycle that matters
    for m in graph:
        graph[m] = {d for d in graph[m] if not (files[m].name == "__init__.py"
                                                and d.startswith(m + "."))}
    assert cycles(graph) == []


def test_every_package_directory_is_installed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {module_name(p) for p in (ROOT / "dg_jax").rglob("__init__.py")}
    found |= {"dg_jax.cli.train", "dg_jax.cli.sample"}  # train/ and sample/, mapped
    assert found == listed


def test_docs_and_code_describe_the_software_not_its_history():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    pattern = re.compile(r"session [0-9]|issue #[0-9]", re.IGNORECASE)
    hits = [f"{name}:{i + 1}" for name in tracked
            if name.endswith((".md", ".py", ".sh", ".toml", ".txt"))
            for i, line in enumerate((ROOT / name).read_text(errors="replace").splitlines())
            if pattern.search(line) and name != "tests/test_package.py"]
    assert hits == []
