"""The package's shape: every import points down the list of concerns, and no
module imports, even lazily inside a function, one that imports it back."""
import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "ebpf_tutor"

# lowest first; a module may import from its own layer or any layer before it
LAYERS = [
    ("errors", "data"),
    ("kernel",),
    ("bpfsys",),
    ("program", "bpfobject", "events"),
    ("sandbox",),
    ("doctor", "features", "overhead", "commands", "contention", "perfcases", "workspace"),
    ("labs",),
    ("testing",),
    ("apps",),
    ("workshop",),
    ("cli", "kernelspec", "__main__", ""),      # "": the package's own __init__
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every in-package module `name` imports, wherever the import statement is."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[:len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module and node.module.startswith("ebpf_tutor"):
                target = node.module.removeprefix("ebpf_tutor").lstrip(".")
            else:
                continue
            for alias in node.names:   # `from . import net` imports the module net
                sub = ".".join(x for x in (target, alias.name) if x)
                found.add(sub if sub in known else target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("ebpf_tutor"):
                    found.add(alias.name.removeprefix("ebpf_tutor").lstrip("."))
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def layer(name: str) -> int:
    top = name.split(".")[0]
    for i, members in enumerate(LAYERS):
        if top in members:
            return i
    raise AssertionError(f"ebpf_tutor.{name} is in no layer: add it to LAYERS in {__file__}")


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v); on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    for v in g:
        if v not in index:
            visit(v)
    return out


def test_every_module_is_in_a_layer():
    for name in all_modules():
        layer(name)


def test_imports_point_down_the_layers():
    upward = [f"ebpf_tutor.{a} imports ebpf_tutor.{b}"
              for a, deps in graph().items() for b in deps if layer(b) > layer(a)]
    assert not upward, "imports against the layers:\n" + "\n".join(sorted(upward))


def test_no_import_cycle():
    found = cycles(graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_lazy_and_relative_imports():
    g = graph()
    assert "kernel.headers" in g["program"]            # module level, relative
    assert "sandbox.net" in g["doctor"]                  # inside a function
    assert "labs.verdict" in g["labs.checks.ch01"]       # two levels up
    assert "sandbox.net" in g["sandbox.sweep"]           # `from . import cgroup, net`


def test_every_learner_name_resolves():
    import ebpf_tutor
    for name in ebpf_tutor.__all__:
        assert getattr(ebpf_tutor, name) is not None, name
    with pytest.raises(AttributeError):
        ebpf_tutor.no_such_name


@pytest.mark.parametrize("module", sorted(m for m in all_modules() if m not in ("", "__main__")))
def test_every_module_imports(module):
    importlib.import_module(f"ebpf_tutor.{module}")
