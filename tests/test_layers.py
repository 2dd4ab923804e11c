"""The house keeps its layers: every import goes downwards, none closes a cycle, models stay light.

DESIGN.md §2 / STYLE.md: catalogue -> chem, process pool -> metrics -> data | models (siblings: neither
imports the other) -> tasks (registers what data defines) -> runtime -> entry points. Function-level
imports count too: a lazy import that only breaks a cycle is still a cycle.
"""

from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

# (rank, group): a module may import lower ranks, its own group, or (runtime and entry tiers only)
# another group of its rank.
LAYERS = {
    "catalogue": (0, "catalogue"),
    "xla_cpu": (0, "xla_cpu"),
    "local_cache": (0, "local_cache"),
    "progress": (0, "progress"),
    "paths": (0, "paths"),
    "cli": (1, "cli"),
    "chem": (1, "chem"),
    "process_pool": (1, "process_pool"),
    "metrics": (2, "metrics"),
    "data": (3, "data"),
    "models": (3, "models"),
    "tasks": (4, "tasks"),
    **{name: (5, "runtime") for name in ("partitioning", "checkpoints", "t5x_checkpoints", "trainer", "evaluator", "run_config",
                                         "model_loading", "run_results", "figures", "peers", "provenance")},  # fmt: skip
    **{name: (6, "entry") for name in ("train", "evaluate", "infer", "convert", "inspect", "vocab", "score", "launch", "tpu",
                                       "sweep", "robustness", "report")},  # fmt: skip
}
OPEN_TIERS = {"runtime", "entry"}


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, pathlib.Path]:
    files = [*(ROOT / "textchem_jax").rglob("*.py"), *(ROOT / "tasks").rglob("*.py")]
    return {_module_name(path): path for path in files}


def _imports(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """Our modules that `name` imports anywhere in its file (module level or inside functions)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            # A submodule importing its own package's __init__ is how Python loads it anyway.
            if target and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


def _layer(module: str) -> tuple[int, str]:
    parts = module.split(".")
    key = parts[0] if parts[0] == "tasks" else parts[1] if len(parts) > 1 else "textchem_jax"
    assert key in LAYERS, f"{module} is in no layer: add it to LAYERS in tests/test_layers.py (DESIGN.md §2)"
    return LAYERS[key]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items() if name != "textchem_jax"}


def test_every_import_goes_down_the_layers():
    wrong = []
    for module, targets in sorted(_graph().items()):
        rank, group = _layer(module)
        for target in sorted(targets):
            if target == "textchem_jax":
                continue
            target_rank, target_group = _layer(target)
            allowed = target_rank < rank or target_group == group or (target_rank == rank and group in OPEN_TIERS)
            if not allowed:
                wrong.append(f"{module} ({group}) imports {target} ({target_group})")
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_no_import_cycles_even_through_lazy_imports():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join(stack[stack.index(target) :] + [target]))
            elif target not in state:
                visit(target, [*stack, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_importing_the_models_loads_neither_the_data_layer_nor_rdkit_nor_gin():
    code = (
        "import json, sys\n"
        "import textchem_jax.models\n"
        "from textchem_jax.models import adapters, beam_search, decoding, e2clm, feature_converters, hf_convert, t5\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert "textchem_jax.models.adapters" in loaded  # the probe imported what it claims
    unwanted = [m for m in loaded if m.startswith(("textchem_jax.data", "tasks", "rdkit", "gin", "seqio", "tensorflow"))]
    assert unwanted == [], f"importing the models loaded {unwanted[:10]}"


def test_the_layer_table_knows_every_module():
    for module in _graph():
        _layer(module)  # raises with the fix when a new module has no layer
