"""What the three entry points share, T5X style: flags, gin parsing with clear errors, multi-host start.

Flags: `--gin_file` (repeatable), `--gin.NAME=VALUE` (a binding; `--gin.MODEL_DIR="'/tmp/run'"`),
`--gin_bindings`, `--gin_search_paths` (the packaged `gin_configs/` is always searched),
`--tfds_data_dir`, and for multi-host runs `--coordinator_address`, `--process_count`,
`--process_index` (or the environment variables `jax.distributed.initialize` reads on TPU/SLURM).
Gin stays here: the library functions it configures (`train`, `evaluate`, `infer`, models,
optimizers) never import gin themselves.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pathlib
import platform
import re
import signal
import sys
import tokenize
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

from textchem_jax import peers, xla_cpu
from textchem_jax.cli import command, quiet_libraries, without_gin_context
from textchem_jax.local_cache import cache_root
from textchem_jax.paths import absolute, expand_user, is_remote, makedirs

logger = logging.getLogger("textchem_jax.launch")

_PACKAGE = pathlib.Path(__file__).resolve().parent  # local only: the package's own files
# gin_configs/ of a source checkout (editable install: setup.py beside it), else the copy installed inside the
# package: a user's own gin_configs/ beside an installed package (pip install --target into a project) is theirs.
_CHECKOUT = _PACKAGE.parent if (_PACKAGE.parent / "setup.py").is_file() else None
GIN_CONFIGS = _CHECKOUT / "gin_configs" if _CHECKOUT and (_CHECKOUT / "gin_configs").is_dir() else _PACKAGE / "gin_configs"


class ConfigError(Exception):
    """A gin configuration problem, explained with the file and the fix."""


def split_gin_flags(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(`--gin.NAME=VALUE` bindings as `NAME=VALUE`, the other arguments)."""
    bindings, rest = [], []
    for arg in argv:
        match = re.match(r"--gin\.([^=]+)=(.*)$", arg, re.S)
        if match:
            bindings.append(f"{match.group(1)}={match.group(2)}")
        else:
            rest.append(arg)
    return bindings, rest


def _find_gin_file(name: str, search_paths: Sequence[str]) -> tuple[str, str] | None:
    """(path, text) of `name` as given or along the search paths (local or `gs://`), else None."""
    from etils import epath

    for root in ("", *search_paths):
        path = epath.Path(root) / name if root else epath.Path(name)
        if path.is_file():
            return str(path), path.read_text()
    return None


def gin_search_paths(search_paths: Sequence[str]) -> list[str]:
    """The folders gin files are looked up in: the user's (`--gin_search_paths=~/x` expanded), then ours."""
    return [*(expand_user(path) for path in search_paths), str(GIN_CONFIGS)]


def gin_sources(files: Sequence[str], search_paths: Sequence[str]) -> list[tuple[str, str]]:
    """(path, text) of `files` and of everything they `include`, found along the search paths, each read once."""
    seen, sources, queue = set(), [], list(files)
    while queue:
        name = queue.pop(0)
        if name in seen:
            continue
        seen.add(name)
        found = _find_gin_file(name, search_paths)
        if found:
            sources.append(found)
            queue += re.findall(r"^\s*include\s+['\"]([^'\"]+)['\"]", found[1], re.M)
    return sources


def _required_macros(sources: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Macro name -> the gin file that declares it `%gin.REQUIRED` (for error messages)."""
    declared = {}
    for path, text in sources:
        for match in re.finditer(r"^\s*([A-Z_][A-Z0-9_]*)\s*=\s*%gin\.REQUIRED", text, re.M):
            declared[match.group(1)] = path
    return declared


# Example values for a missing %gin.REQUIRED macro, as a shell passes them; other macros name paths or tasks.
_STRING_EXAMPLE = "\"'...'\""
_MACRO_EXAMPLES = {"TASK_FEATURE_LENGTHS": "\"{'inputs': 512, 'targets': 512}\"", "TRAIN_STEPS": "1000"}
_IMPORT = re.compile(r"^\s*((?:from\s+[\w.]+\s+)?import\s+[\w.]+(?:\s+as\s+(\w+))?)\s*(?:#.*)?$", re.M)


def _user_line_numbers(message: str, hidden: int) -> str:
    """gin's "In bindings string line N" counted from the user's first binding, not the import lines before it."""
    return re.sub(r"(In bindings string line )(\d+)", lambda m: f"{m.group(1)}{int(m.group(2)) - hidden}", message)


def _binding_imports(sources: Sequence[tuple[str, str]]) -> list[str]:
    """The import lines of the gin files (dynamic registration), for the command-line bindings: gin's imports
    are per file, so without them `--gin.OPTIMIZER=@optax.adafactor()` finds no configurable unless some
    file happened to reference `optax.adafactor`. An alias two files bind to different modules is left out."""
    by_alias: dict[str, list[str]] = {}
    for _, text in sources:
        for match in _IMPORT.finditer(text):
            line = " ".join(match.group(1).split())
            alias = match.group(2) or line.split()[-1].split(".")[0]  # `import a.b` binds `a`
            lines = by_alias.setdefault(alias, [])
            if "__gin__" not in line and line not in lines:
                lines.append(line)
    return [lines[0] for lines in by_alias.values() if len(lines) == 1]


def _quiet_search_misses(record) -> bool:
    """gin logs an ERROR for every search path a file is not in, even when a later one has it."""
    return not str(record.getMessage()).startswith("Path not found:")


def _open_remote(path: str):
    from etils import epath

    return epath.Path(path).open("r")


def _is_remote_file(path: str) -> bool:
    """gin itself opens local files only; `gs://` gin files and search paths go through etils.epath."""
    from etils import epath

    return is_remote(path) and epath.Path(path).is_file()


def _package_file_exists(path: str) -> bool:
    """gin's own check for `runs/pretrain.gin` as a file of package `runs`, saying no where it raised TypeError: a
    plain `runs/` or `models/` folder in the working directory (on sys.path under `python -m`, `-c` and notebooks)
    is a namespace package without a file, and every experiment's `include` ended in a traceback."""
    from gin import resource_reader

    try:
        return resource_reader.system_path_file_exists(path)
    except TypeError:
        return False


def _register_file_readers() -> None:
    """Ours (gs:// files) once, and gin's package reader behind `_package_file_exists` (gin keeps the list)."""
    from gin import config, resource_reader

    readers = [(reader, _package_file_exists if check is resource_reader.system_path_file_exists else check)
               for reader, check in config._FILE_READERS if check is not _is_remote_file]  # fmt: skip
    config._FILE_READERS[:] = [*readers, (_open_remote, _is_remote_file)]


_PATH_VALUE = re.compile(r"^(\s*[\w./]+\s*=\s*)(['\"])(~[^'\"]*|(?:[^'\"]*/)?\.\.(?:/[^'\"]*)?)\2\s*$")


def _tilde_expanded(binding: str) -> str:
    """`MODEL_DIR='~/run'` with the `~` expanded as a shell would: bash leaves it alone inside quotes (and after
    `=`), and every library below took it for a folder named `~` in the working directory; and a `..` resolved as
    the kernel does (`paths.expand_user`)."""
    match = _PATH_VALUE.match(binding)
    return f"{match.group(1)}{match.group(2)}{expand_user(match.group(3))}{match.group(2)}" if match else binding


# T5X's names (its runs/*.gin and flags) -> ours: a T5X user's binding was refused with a generic hint, or one that
# misled (`--gin.EVAL_STEPS`: "did you mean --gin.TRAIN_STEPS?"). A selector maps those of its parameters ours has
# (`_T5X_ONLY` says what the others were for); a module alias may differ (`infer_lib.infer.mode` is T5X's
# `infer.mode`); a value with a space says what we offer instead.
T5X_NAMES = {
    "EVAL_STEPS": "train_lib.train.eval_steps",
    "EVAL_PERIOD": "train_lib.train.eval_period",
    "EVALUATOR_NUM_EXAMPLES": "infer_eval/run_config.DatasetConfig.num_examples",
    "train.eval_steps": "train_lib.train.eval_steps",
    "train.eval_period": "train_lib.train.eval_period",
    "train.stats_period": "train_lib.train.log_period",
    "trainer.num_microbatches": "trainer.Trainer.num_microbatches",
    "utils.DatasetConfig": "run_config.DatasetConfig",
    "utils.SaveCheckpointConfig": "run_config.CheckpointConfig",
    "utils.RestoreCheckpointConfig.mode": "CHECKPOINT_STEPS",
    "partitioning.PjitPartitioner.num_partitions": "NUM_PARTITIONS",
    "partitioning.ModelBasedPjitPartitioner.num_partitions": "NUM_PARTITIONS",
    "seqio.Evaluator.num_examples": "infer_eval/run_config.DatasetConfig.num_examples",
    "infer.mode": "has no counterpart: textchem-infer always decodes ('predict'), and scoring given targets ('score') "
                  "is not offered; --gin.infer_lib.infer.row_format=\"'textchem'\" writes every beam with its score, "
                  "and textchem-score computes a task's metrics from predictions",
    "--multiprocess_gpu": "has no counterpart: a multi-host run starts from --coordinator_address=HOST:PORT "
                          "--process_count=N --process_index=I alone (TPU VMs and SLURM set them up): drop it",
}  # fmt: skip
# What a T5X parameter our class lacks was for: mapped as the others, `--gin.run_config.CheckpointConfig.dtype=...`
# was the advice, and pasted it failed ("doesn't have a parameter named 'dtype'").
_T5X_ONLY = {
    "utils.SaveCheckpointConfig.dtype": "the dtype checkpoints are saved in",
    "utils.SaveCheckpointConfig.save_dataset": "saving the input pipeline's position with each checkpoint",
    "utils.SaveCheckpointConfig.keep_dataset_checkpoints": "how many of those to keep",
    "utils.DatasetConfig.use_custom_packing_ops": "SeqIO's TensorFlow custom ops for packing",
    "utils.DatasetConfig.use_memory_cache": "tf.data's in-memory cache of the split",
}
# (T5X name, value) whose value has no twin of ours: `mode='specific'` (T5X eval.gin's default) was answered with
# CHECKPOINT_STEPS='specific', which evaluate() rejects.
_T5X_VALUES = {
    ("utils.RestoreCheckpointConfig.mode", "specific"): "is our default: leave CHECKPOINT_STEPS out (its default "
                                                        "'latest' of CHECKPOINT_PATH = one checkpoint: the one it "
                                                        "names, or its run's latest)",
}  # fmt: skip


def t5x_equivalent(name: str, value: str | None = None, gin_file_text: str | None = None) -> str | None:
    """For a T5X name (`train/utils.DatasetConfig.batch_size`, a macro, a flag): "T5X's NAME is ours OURS: write
    BINDING", the binding for the command line or else for the gin file of `gin_file_text` (with the imports it
    lacks), the user's `value` in it, the scope kept where the configuration has it; else None."""
    scope, _, bare = name.rpartition("/")
    parts = bare.split(".")
    for start in range(len(parts) if len(parts) == 1 else len(parts) - 1):  # an alias's module left off, not all
        written = ".".join(parts[start:])
        if written in T5X_NAMES:
            theirs, ours = written, T5X_NAMES[written]
        elif len(parts) - start > 2 and written.rpartition(".")[0] in T5X_NAMES:
            theirs, ours = written, f"{T5X_NAMES[written.rpartition('.')[0]]}.{parts[-1]}"
            accepted = _our_parameters(ours.rpartition("/")[2].rpartition(".")[0])
            if accepted is not None and parts[-1] not in accepted:
                purpose = f" ({_T5X_ONLY[theirs]})" if theirs in _T5X_ONLY else ""
                return (f"T5X's {theirs}{purpose} has no counterpart here: ours {ours.rpartition('.')[0]} takes "
                        f"{', '.join(accepted)}; drop it")  # fmt: skip
        else:
            continue
        if value is not None and (said := _T5X_VALUES.get((theirs, _string_value(value)))):
            return f"T5X's {theirs}={value} {said}"
        if " " in ours:
            return f"T5X's {theirs} {ours}"
        import gin

        ours_scope, _, ours = ours.rpartition("/")
        config = getattr(gin.config, "_CONFIG", {})
        scope = ours_scope or scope
        if "." in ours and scope and scope in {s for s, selector in config if selector != "gin.macro"}:
            ours = f"{scope}/{ours}"
        unscoped = ours.rpartition("/")[2]  # the import is looked up by the module alias: `run_config`, not `train/...`
        missing = _our_imports(unscoped, gin_file_text) if gin_file_text is not None and "." in ours else []
        imports = f" (after {'; '.join(f'`{line}`' for line in missing)}, as runs/*.gin import it)" if missing else ""
        if value is None:  # a block's `selector:` line
            return f"T5X's {theirs} is ours {ours}{imports}"
        if gin_file_text is None:
            binding = f"--gin.{ours}=" + (f'"{value}"' if re.search(r"['\s{}\[\]()]", value) else value)
        else:
            binding = f"{ours} = {value}"
        return f"T5X's {theirs} is ours {ours}: write {binding}{imports}"
    return None


def _runs_import(alias: str) -> str | None:
    """The import line our runs/*.gin make for the module alias `alias` (`train_lib`), else None."""
    runs = gin_sources([f"runs/{run}.gin" for run in ("pretrain", "eval", "infer")], [str(GIN_CONFIGS)])
    return next((line for line in _binding_imports(runs) if line.split()[-1] == alias), None)


def _our_imports(name: str, gin_file_text: str) -> list[str]:
    """The import lines our runs/*.gin make for the module of `name` (`train_lib.train.eval_steps`, without a scope)
    that the gin file lacks: gin's imports are per file, so a user's file binding ours needs them too."""
    module = [line] if (line := _runs_import(name.split(".")[0])) else []
    present = {" ".join(match.group(1).split()) for match in _IMPORT.finditer(gin_file_text)}
    return [line for line in ["from __gin__ import dynamic_registration", *module] if line not in present]


def _our_parameters(selector: str) -> list[str] | None:
    """The parameters of our configurable `selector` (`run_config.CheckpointConfig`, its module as runs/*.gin import
    it), as gin checks a binding against them; None where it cannot be told (takes **kwargs, not found)."""
    import importlib
    import inspect

    alias, _, attributes = selector.partition(".")
    line = _runs_import(alias)
    if line is None or not attributes:
        return None
    words = line.split()  # `from A import B [as C]` or `import A.B [as C]`
    module = f"{words[1]}.{words[3]}" if words[0] == "from" else words[1]
    try:
        configurable = importlib.import_module(module)
        for attribute in attributes.split("."):
            configurable = getattr(configurable, attribute)
        parameters = inspect.signature(configurable).parameters.values()
    except (ImportError, AttributeError, TypeError, ValueError):
        return None
    if any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
        return None
    return [parameter.name for parameter in parameters if parameter.kind is not parameter.VAR_POSITIONAL]


def _close_parameters(configurable: str, parameter: str) -> list[str]:
    """Our configurable's parameters spelt like `parameter` (`train_lib.train.log_perod`: log_period), as misspelt
    macros and task names are answered; gin named the configurable and the wrong name only."""
    import difflib

    names = _our_parameters(configurable.rpartition("/")[2])
    return difflib.get_close_matches(parameter, names, n=2, cutoff=0.6) if names else []


def _string_value(value: str) -> str:
    """The string a binding's quoted literal holds (`'specific'` and `"specific"` -> specific), else the text."""
    import ast

    try:
        literal = ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return value
    return literal if isinstance(literal, str) else value


_GIN_CONTEXT = re.compile(r'In (?:bindings string line \d+|file "(?P<file>[^"]+)", line (?P<line>\d+))\n'
                          r"(?P<text>[^\n]*)")  # fmt: skip
_UNKNOWN_PARAMETER = re.compile(r"Configurable '(?P<configurable>[\w./]+)' doesn't have a parameter named "
                                r"'(?P<parameter>\w+)'")  # fmt: skip


def _gin_error_place(message: str) -> tuple[str, str, str | None]:
    """(where, the line's text, the gin file or None) of the innermost place gin's error message names: `FILE, line
    N` (included from the user's file, where that is another), or `the binding 'TEXT'`."""
    places = list(_GIN_CONTEXT.finditer(message))
    if not places:
        return "a gin file or binding", "", None
    text = places[0]["text"].strip()
    if not places[0]["file"]:
        return f"the binding {text!r}", text, None
    where = f"{places[0]['file']}, line {places[0]['line']}"
    if places[-1]["file"] and places[-1]["file"] != places[0]["file"]:  # the user's file, including T5X's
        where += f" (included from {places[-1]['file']}, line {places[-1]['line']})"
    return where, text, places[0]["file"]


def _t5x_name_error(message: str) -> str | None:
    """One line for gin's error about a name that is T5X's (unknown import, configurable, selector or parameter, or
    a module bound as if a configurable: "not enough values to unpack"), saying where and ours; else None."""
    where, text, gin_file = _gin_error_place(message)
    written = re.match(r"((?:[\w.]+/)*[\w.]+)\s*[=:]\s*(.*?)\s*(?:#.*)?$", text)  # `name = value`, a block's `name:`
    value = (written.group(2) or None) if written else None
    unknown = _UNKNOWN_PARAMETER.search(message)
    names = [f"{unknown['configurable']}.{unknown['parameter']}"] if unknown else []
    found = _find_gin_file(gin_file, []) if gin_file else None
    gin_file_text = None if gin_file is None else found[1] if found else ""  # "": not readable here, imports unknown
    for name in [*names, *([written.group(1)] if written else [])]:
        if hint := t5x_equivalent(name, value, gin_file_text):
            return f"{where}: {hint}"
    return None


def _raised_in_our_modules(error: BaseException) -> bool:
    """Whether `error` came from running the code of a textchem_jax module (a circular import inside ours), not from
    the gin file's import itself: "install it or remove the import" told a user to fix our bug, traceback lost."""
    frames = [frame for frame, _ in traceback.walk_tb(error.__traceback__)][1:]  # the first: the caller's own
    return any(re.match(r"textchem_jax(\.|$)", frame.f_globals.get("__name__") or "") for frame in frames)


def _import_error(error: ImportError, hidden: int) -> str:
    """One line for an import a gin file makes that fails: a T5X config (`from t5x import adafactor`) is T5X's
    trainer's to run, and gin's error was a traceback of 80 lines."""
    where, text, _ = _gin_error_place(_user_line_numbers(str(error), hidden))
    message = str(error)
    missing = re.search(r"No module named '([\w.]+)'", message)
    if re.search(r"\bt5x\b", text) or (missing and missing.group(1).split(".")[0] == "t5x"):
        return (f"{where}: {text!r} makes it a T5X config, for T5X's own trainer: run it with `python -m t5x.train` "
                f"(README, \"Real T5X as the engine\"; gin_configs/t5x/ holds our experiments for it), or give "
                f"textchem-train our models/*.gin with runs/*.gin (e.g. --gin_file=models/t5_small.gin "
                f"--gin_file=runs/finetune.gin)")  # fmt: skip
    problem = f"no module named {missing.group(1)!r}" if missing else message.splitlines()[0]
    return f"{where}: {text!r} fails ({problem}): install it or remove the import"


def _use_search_paths(search_paths: Sequence[str]) -> None:
    """gin's search paths are exactly `search_paths`: `gin.add_config_file_search_path` appends to a global list that
    `gin.clear_config()` keeps, so a notebook's second parse_gin still found `experiments/quickstart.gin` in the
    first one's folder (TRAIN_STEPS 11 of that copy, not the packaged 400). gin-config 0.5 (pinned) has no public
    reset: its `_LOCATION_PREFIXES` starts as `['']` (a name as given)."""
    from gin import config

    config._LOCATION_PREFIXES[:] = ["", *search_paths]


def parse_gin(files: Sequence[str], bindings: Sequence[str], search_paths: Sequence[str] = (),
              warn_unused_macros: bool = True) -> None:  # fmt: skip
    """Parses gin files and bindings into a fresh configuration (a notebook's cell run again: gin stayed locked
    after the first, even one rejected); raises ConfigError naming the file and the fix. With `warn_unused_macros`,
    a macro the user's own gin files define and nothing uses is a warning (`unused_macros`)."""
    import gin

    gin.clear_config()
    _register_file_readers()
    search_paths = gin_search_paths(search_paths)
    logging.getLogger().addFilter(_quiet_search_misses)
    _use_search_paths(search_paths)
    if not files:
        raise ConfigError("no --gin_file given: e.g. --gin_file=experiments/quickstart.gin")
    files, bindings = [expand_user(f) for f in files], [_tilde_expanded(b) for b in bindings]
    sources = gin_sources(files, search_paths)
    imports = ["from __gin__ import dynamic_registration", *_binding_imports(sources)] if bindings else []
    try:
        gin.parse_config_files_and_bindings(list(files), [*imports, *bindings], finalize_config=False)
        _log_the_optimizers_rate()
        gin.finalize()
        check_binding_types()
        check_macro_bindings(bindings)
        for line in unused_macros(sources) if warn_unused_macros else ():
            logger.warning(line)
    except ValueError as error:
        message = _user_line_numbers(str(error), len(imports))
        match = re.search(r"(\w+)/macro\.value set to `%gin\.REQUIRED` but not subsequently overridden", message)
        if match:
            macro = match.group(1)
            where = _required_macros(sources).get(macro, "a gin file")
            raise ConfigError(
                f"{macro} is required ({where} declares it %gin.REQUIRED): add --gin.{macro}=VALUE, "
                f"e.g. --gin.{macro}={_MACRO_EXAMPLES.get(macro, _STRING_EXAMPLE)}, or bind it in a gin file "
                f"included after {where}"
            ) from None
        match = re.search(r"No bindings specified for '(\w+)/gin\.macro'", message)
        if match:
            macro = match.group(1)
            hint = " (e.g. --gin_file=models/t5_small.gin)" if macro == "MODEL" else ""
            raise ConfigError(
                f"macro {macro} is used but never defined: add a gin file that defines it{hint} to the "
                f"--gin_file list, or bind it with --gin.{macro}=VALUE"
            ) from None
        if t5x_hint := _t5x_name_error(message):
            raise ConfigError(t5x_hint) from None
        if (unknown := _UNKNOWN_PARAMETER.search(message)) and (close := _close_parameters(**unknown.groupdict())):
            raise ConfigError(f"{message}\nFix: did you mean {' or '.join(close)}?") from None
        if "No configurable matching" in message:
            raise ConfigError(
                f"{message}\nFix: check the spelling, and that the file imports the module "
                "(`from textchem_jax import train` etc.) before binding it"
            ) from None
        raise ConfigError(message) from None
    except (NameError, AttributeError) as error:  # dynamic registration: no import provides the name, or
        # the module has no such attribute (a misspelt function)
        if t5x_hint := _t5x_name_error(_user_line_numbers(str(error), len(imports))):
            raise ConfigError(t5x_hint) from None
        raise ConfigError(
            f"{_user_line_numbers(str(error), len(imports))}\nFix: check the spelling; a gin file binds a module's "
            "functions after importing it (`from textchem_jax import train as train_lib`), and the --gin. bindings "
            "may use what the gin files import"
        ) from None
    except ImportError as error:  # a gin file's import: gin adds the file and line to the message
        if _raised_in_our_modules(error):  # our bug (a circular import), not the user's: its traceback is the lead
            raise
        raise ConfigError(_import_error(error, len(imports))) from None
    except (SyntaxError, tokenize.TokenError) as error:  # how gin's parser reports a malformed file or binding
        if isinstance(error, SyntaxError) and error.filename:
            text = f": {error.text.strip()!r}" if error.text and error.text.strip() else ""
            problem = f"{error.filename}, line {error.lineno}: {error.msg}{text}"
        elif isinstance(error, SyntaxError):  # gin parses the bindings one per line
            line = (error.lineno or 0) - len(imports)
            binding = bindings[line - 1] if 0 < line <= len(bindings) else "?"
            said = _AST_NODE.sub(r"\g<token> is not a Python literal", error.msg)  # not "<ast.Name object at 0x...>"
            problem = f"the binding {binding!r} (--gin.NAME=VALUE or --gin_bindings): {said}"
        else:  # unclosed brackets or quotes
            problem = f"a gin file or binding does not parse: {error.args[0]}"
        if isinstance(error, SyntaxError) and error.text and "\ufeff" in error.text:  # gin (and T5X) read files as is
            fix = "the file starts with a byte-order mark (U+FEFF, written by some Windows editors): save it as UTF-8 without one"
        else:
            fix = ("a value is a Python literal or a gin reference, e.g. --gin.TRAIN_STEPS=100, "
                   "--gin.MODEL_DIR=\"'/tmp/run'\", --gin.OPTIMIZER=@optax.adam()")  # fmt: skip
        raise ConfigError(f"{problem}\nFix: {fix}") from None
    except OSError as error:
        raise ConfigError(
            f"{error}\nFix: give a path, or a name relative to --gin_search_paths or to {GIN_CONFIGS}"
        ) from None


_AST_NODE = re.compile(r"malformed node or string.*?: <ast\.\w+ object at 0x[0-9a-f]+>\s*Failed to parse token "
                       r"(?P<token>'.*')", re.S)  # ast.literal_eval's words, as gin passes them on
# What a literal value must be for a parameter annotated with these names (a float takes an int too).
_LITERAL_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "None": (type(None),)}
_LITERALS = (int, float, str, bool, type(None), list, tuple, dict)  # what gin parses a literal into


def _literal(value: Any, config: Mapping) -> tuple[Any, str | None]:
    """(value, macro name) with macros followed to their value; anything else (a reference) comes back as is."""
    import gin

    macro, chain = None, []
    while isinstance(value, gin.config.ConfigurableReference) and value.selector == "gin.macro" and value.scopes:
        if (value.scopes[-1], "gin.macro") not in config:
            break  # an undefined macro: gin's own error says so
        macro = value.scopes[-1]
        if macro in chain:  # gin would follow it forever
            cycle = " -> ".join([*chain[chain.index(macro) :], macro])
            raise ConfigError(f"the macros refer to each other in a circle ({cycle}): bind one of them to a value")
        chain.append(macro)
        value = config[(macro, "gin.macro")].get("value")
    return value, macro


# Its whole name: "trainer.Trainer" is ambiguous in a process that has imported T5X's trainer (a notebook, a test).
_LEARNING_RATE_FN = "textchem_jax.trainer.Trainer.learning_rate_fn"


def _log_the_optimizers_rate() -> None:
    """The logged learning_rate (`trainer.Trainer.learning_rate_fn`, LEARNING_RATE_SCHEDULE in runs/*.gin) is the
    rate OPTIMIZER binds: `@optax.sgd()` with `optax.sgd.learning_rate = 0.5`, or an adamw given its own schedule,
    logged a LEARNING_RATE_SCHEDULE they did not use. An OPTIMIZER without a learning_rate binding of its own
    (a chain, a wrapper) logs none: `lr n/a`. A learning_rate_fn bound by the user is theirs."""
    import gin

    try:
        logged, optimizer = gin.query_parameter(_LEARNING_RATE_FN), gin.query_parameter("%OPTIMIZER")
    except ValueError:  # no training configuration (eval, infer), or no OPTIMIZER macro
        return
    if repr(logged) != "%LEARNING_RATE_SCHEDULE" or not isinstance(optimizer, gin.config.ConfigurableReference):
        return
    try:
        rate = gin.query_parameter(f"{optimizer.selector}.learning_rate")
    except ValueError:
        rate = None
    if repr(rate) != repr(logged):
        gin.bind_parameter(_LEARNING_RATE_FN, rate)


def _binding_name(scope: str, selector: str, parameter: str) -> str:
    """A key of gin's configuration as a binding writes it: `scope/selector.parameter`, or a macro's NAME."""
    if selector == "gin.macro":
        return scope
    return f"{scope + '/' if scope else ''}{selector}.{parameter}"


def check_binding_types() -> None:
    """Raises ConfigError for a literal binding (directly or through a macro) that its parameter's annotation
    rules out, e.g. `NUM_PARTITIONS = 'two'` for `num_partitions: int | None`: said before the run starts,
    instead of a TypeError from deep inside it. Only annotations made of int, float, str, bool and None are
    checked, against values gin parsed from literals; gin keeps them in `gin.config._CONFIG` (gin-config 0.5)."""
    import inspect

    import gin

    config, registry = getattr(gin.config, "_CONFIG", None), getattr(gin.config, "_REGISTRY", None)
    if not isinstance(config, Mapping) or registry is None:
        return  # another gin version: no check rather than a wrong one
    for (scope, selector), parameters in list(config.items()):
        configurable = registry.get_match(selector) if selector != "gin.macro" else None
        try:
            signature = inspect.signature(configurable.wrapped) if configurable is not None else None
        except (TypeError, ValueError):  # builtins without a signature
            signature = None
        for name, bound in parameters.items() if signature is not None else ():
            annotation = signature.parameters[name].annotation if name in signature.parameters else None
            kinds = [part.strip() for part in annotation.split("|")] if isinstance(annotation, str) else []
            value, macro = _literal(bound, config)
            if not kinds or not all(k in _LITERAL_TYPES for k in kinds) or type(value) not in _LITERALS:
                continue
            if not any(isinstance(value, _LITERAL_TYPES[k]) and not (k != "bool" and isinstance(value, bool)) for k in kinds):
                where = _binding_name(scope, selector, name)
                via = f" (through the macro {macro}: --gin.{macro}=VALUE)" if macro else ""
                raise ConfigError(f"{where} takes {annotation}, but is bound to {value!r} ({type(value).__name__}){via}; "
                                  "in gin an int is 2, a float 2.0, a str 'text', a bool True")  # fmt: skip


# Where each host writes (T5X's evaluation on N hosts may name a folder per host): the one setting that may differ.
_WRITTEN_PER_HOST = re.compile(r"output_dir$", re.I)


def _same_everywhere(value: Any) -> str:
    """`repr(value)` alike in every process: gin's references read as written (@f(), %MACRO), a set's items sorted
    (string hashes, hence set order, differ between processes)."""
    if isinstance(value, (set, frozenset)):
        return "{" + ", ".join(sorted(_same_everywhere(item) for item in value)) + "}"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_same_everywhere(k)}: {_same_everywhere(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        items = ", ".join(_same_everywhere(item) for item in value)
        return f"[{items}]" if isinstance(value, list) else f"({items}{',' if len(value) == 1 else ''})"
    return repr(value)


def check_same_configuration() -> None:
    """Raises ConfigError, on every process alike, when the processes of a multi-process run parsed different gin
    bindings (a flag given to one host only): a BATCH_SIZE on one host ended in gloo's native abort, and a
    num_examples on one hung both processes after process 0 had printed its results."""
    import gin

    config = getattr(gin.config, "_CONFIG", None)
    if not isinstance(config, Mapping):
        return  # another gin version: no check rather than a wrong one
    entries = {}
    for (scope, selector), parameters in list(config.items()):
        for name, value in parameters.items():
            key = _binding_name(scope, selector, name)
            if not _WRITTEN_PER_HOST.search(key):
                entries[key] = _same_everywhere(value)
    differ = peers.differences(entries)
    if differ:
        shown = "; ".join(f"{key} is {peers.by_process(values, absent='unbound')}" for key, values in list(differ.items())[:3])
        more = f" (and {len(differ) - 3} more)" if len(differ) > 3 else ""
        raise ConfigError(f"the processes of this run were given different settings: {shown}{more}. Give every "
                          "process the same flags and gin files (only the *OUTPUT_DIR folders may differ)")


def _used_macros(config: Mapping) -> set[str]:
    """The macros some binding of gin's configuration (`gin.config._CONFIG`) refers to, `%NAME`."""
    import gin

    used = set()

    def visit(value: Any) -> None:
        if isinstance(value, gin.config.ConfigurableReference):
            if value.selector == "gin.macro" and value.scopes:
                used.add(value.scopes[-1])
        elif isinstance(value, Mapping):
            for item in value.values():
                visit(item)
        elif isinstance(value, (list, tuple, set)):
            for item in value:
                visit(item)

    for parameters in list(config.values()):
        visit(dict(parameters))
    return used


_MACRO_DEFINITION = re.compile(r"^([A-Za-z_]\w*)[ \t]*=(?!=)", re.M)  # at the line's start: not a block's parameter


def _package_gin_file(path: str) -> bool:
    """One of our gin_configs/ (or the package's own copy), not a file of the user's."""
    if is_remote(path):
        return False
    resolved = pathlib.Path(path).resolve()  # local only: a remote path returned above
    return resolved.is_relative_to(GIN_CONFIGS.resolve()) or resolved.is_relative_to(_PACKAGE)


def unused_macros(sources: Sequence[tuple[str, str]]) -> list[str]:
    """One line per macro that a user's own gin file (one of `sources`, (path, text), outside our gin_configs/)
    defines and no binding uses: `LEARNING_RAET = 1e-5` in a file including our experiment trained at the
    experiment's rate, without a word. Read from gin's configuration (gin-config 0.5); another version: none."""
    import difflib

    import gin

    config = getattr(gin.config, "_CONFIG", None)
    if not isinstance(config, Mapping):
        return []
    used = _used_macros(config)
    lines, said = [], set()
    for path, text in sources:
        if _package_gin_file(path):
            continue
        for name in _MACRO_DEFINITION.findall(text):
            if name in used or name in said or (name, "gin.macro") not in config:
                continue
            said.add(name)
            close = difflib.get_close_matches(name, sorted(used), n=3, cutoff=0.6)
            hint = t5x_equivalent(name, repr(config[(name, "gin.macro")].get("value")), text) or (
                f"did you mean {' or '.join(close)}?" if close else f"use it as %{name} in a binding, or remove it")
            lines.append(f"{path} defines the macro {name}, which no gin file or binding uses, so it changes nothing: {hint}")
    return lines


def check_macro_bindings(bindings: Sequence[str]) -> None:
    """Raises ConfigError for a binding of a macro nothing uses: gin takes `--gin.LEARNING_RAET=1e-3` as a new
    macro of its own and the run goes on at the configured learning rate, without a word."""
    import difflib

    import gin

    config = getattr(gin.config, "_CONFIG", None)
    if not isinstance(config, Mapping):
        return  # another gin version: no check rather than a wrong one
    used = _used_macros(config)
    defined = {scope for scope, selector in config if selector == "gin.macro"}
    for binding in bindings:
        match = re.match(r"\s*([A-Za-z_]\w*)\s*=(.*)$", binding, re.S)
        name = match.group(1) if match else None
        if name in defined and name not in used:
            close = difflib.get_close_matches(name, sorted(used), n=3, cutoff=0.6)
            hint = t5x_equivalent(name, match.group(2).strip()) or (
                f"did you mean {' or '.join(f'--gin.{c}' for c in close)}?" if close else
                "bind a macro the gin files use (they say %NAME where it takes effect)")  # fmt: skip
            raise ConfigError(f"--gin.{name} binds a macro that no gin file or binding uses, so it would change "
                              f"nothing: {hint}")  # fmt: skip


def write_config(folder: str, *, keep_a_runs: bool = False, **settings) -> None:
    """FOLDER/config.gin, the full configuration the command used, as T5X writes into MODEL_DIR and into eval's and
    infer's output folders; what the environment chose bound in it, so that the file alone reproduces the command
    (a run trained on TEXTCHEM_VOCABULARY's vocabulary, rerun from its config.gin, trained on the shipped one
    without a word). None without a parsed configuration (the library called from Python), nor, `keep_a_runs`
    (eval, infer), in a folder that holds a run or a textchem-convert output (read by its config.gin, else its
    model.gin: an eval's config.gin there became what the converted model "was trained with"). And a `provenance`
    entry with `settings` (versions, revision, command: what the configuration does not say). Written by process 0
    only: the others' read-modify-write of provenance.json raced it (a process died on the vanished temporary file)."""
    import gin
    import jax
    import tensorflow as tf

    from textchem_jax import provenance
    from textchem_jax.run_results import CHECKPOINTS_FOLDER, CONVERTED_GIN_FILE, RUN_CONFIG_FILE, latest_step

    if jax.process_index() != 0:
        return
    makedirs(folder)
    config = gin.config_str()
    a_run = keep_a_runs and (latest_step(folder) > 0 or tf.io.gfile.isdir(os.path.join(folder, CHECKPOINTS_FOLDER))
                             or tf.io.gfile.exists(os.path.join(folder, CONVERTED_GIN_FILE)))  # a textchem-convert output
    if config.strip() and not a_run:
        with tf.io.gfile.GFile(os.path.join(folder, RUN_CONFIG_FILE), "w") as f:
            f.write(config + _chosen_by_the_environment(config))
    provenance.append(folder, **settings)


def _chosen_by_the_environment(config: str) -> str:
    """Bindings of what TEXTCHEM_VOCABULARY and TEXTCHEM_DATA_DIR chose where `config` (gin's) left it to them."""
    lines = []  # paths made absolute: read from the working directory then, from any other
    vocabulary = os.environ.get("TEXTCHEM_VOCABULARY")
    task_vocabulary = re.search(r"@([\w.]+)\.task_vocabulary\(", config)  # the module as the gin files import it
    if vocabulary and task_vocabulary and not re.search(r"\.task_vocabulary\.path\s*=", config):
        lines.append(f"{task_vocabulary.group(1)}.task_vocabulary.path = {str(absolute(expand_user(vocabulary)))!r}")
    data = os.environ.get("TEXTCHEM_DATA_DIR")
    if data and re.search(r"^DATA_DIR = None$", config, re.M):
        lines.append(f"DATA_DIR = {str(absolute(expand_user(data)))!r}")
    if not lines:
        return ""
    return "\n# Chosen by the environment (TEXTCHEM_VOCABULARY, TEXTCHEM_DATA_DIR) when this started:\n" + "\n".join(lines) + "\n"


@dataclasses.dataclass(frozen=True)
class SavedRun:
    """What a MODEL_DIR's `config.gin` (or a textchem-convert directory's `model.gin`: the model only) says."""

    model: Any
    mixture_or_task_name: str | None = None
    task_feature_lengths: Mapping[str, int] | None = None
    module: str | None = None
    data_dir: str | None = None  # the DATA_DIR its tasks read (TEXTCHEM_DATA_DIR's, when that chose it: bound too)


def saved_run(directory: str) -> SavedRun:
    """The model adapter a run was configured with, its mixture, feature lengths, task module and data folder, read
    from `directory/config.gin` (textchem-train) or `directory/model.gin` (textchem-convert); local or gs://."""
    import gin
    from etils import epath

    from textchem_jax.run_results import CONVERTED_GIN_FILE, RUN_CONFIG_FILE

    candidates = [epath.Path(directory) / name for name in (RUN_CONFIG_FILE, CONVERTED_GIN_FILE)]
    path = next((candidate for candidate in candidates if candidate.exists()), None)
    if path is None:
        raise FileNotFoundError(f"{directory} has neither {RUN_CONFIG_FILE} (a textchem-train MODEL_DIR) nor "
                                f"{CONVERTED_GIN_FILE} (a textchem-convert directory)")  # fmt: skip

    def macro(name: str):
        try:
            return gin.query_parameter(f"%{name}")
        except ValueError:
            return None

    gin.clear_config()
    try:
        _use_search_paths([str(GIN_CONFIGS)])
        try:
            gin.parse_config(path.read_text())
        except Exception as error:  # an import gin cannot make (a T5X run's config.gin), a name ours lacks, ...
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(f"{path} is not a textchem_jax run config ({reason}): give a textchem-train MODEL_DIR or "
                             "a textchem-convert directory") from None  # fmt: skip
        return SavedRun(gin.query_parameter("%MODEL").scoped_configurable_fn(), macro("MIXTURE_OR_TASK_NAME"),
                        macro("TASK_FEATURE_LENGTHS"), macro("MIXTURE_OR_TASK_MODULE"), macro("DATA_DIR"))  # fmt: skip
    finally:
        gin.clear_config()


def initialize_distributed(coordinator_address: str | None, process_count: int | None, process_index: int | None,
                           heartbeat_timeout_seconds: int = 100) -> bool:  # fmt: skip
    """`jax.distributed.initialize` from flags, or from the environment when the cluster sets it up; whether it was."""
    import jax

    sigterm_handler = signal.getsignal(signal.SIGTERM)
    if coordinator_address:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU multi-process collectives
        jax.distributed.initialize(coordinator_address, process_count, process_index,
                                   heartbeat_timeout_seconds=heartbeat_timeout_seconds)  # fmt: skip
    elif any(v in os.environ for v in ("JAX_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES")) or _in_a_slurm_step():
        jax.distributed.initialize(heartbeat_timeout_seconds=heartbeat_timeout_seconds)
    else:
        return False
    # JAX's preemption notifier (C++) takes SIGTERM over at `initialize` and only records it: a SIGTERM before
    # textchem-train's own handler (while restoring or compiling) or during eval/infer was swallowed, and the
    # process ran on past a SLURM time limit ("preemption_notifier.cc:90] SIGTERM caught"). Back to the handler before:
    # the process ends, as on one host; textchem-train's handler saves once its steps run.
    signal.signal(signal.SIGTERM, signal.SIG_DFL if sigterm_handler is None else sigterm_handler)
    program = os.path.basename(sys.argv[0])
    peers.watch(lambda detail: exit_lost_peer(program, RuntimeError(detail)))  # not at the heartbeat timeout
    return True


def _in_a_slurm_step() -> bool:
    """Whether this process is a task of a SLURM job step (`srun`), whose nodes JAX reads: in an `salloc` shell or
    a batch script without srun, SLURM_JOB_ID alone made every command end in JAX's traceback ("coordinator_address
    should be defined"); there a command runs as one process."""
    return "SLURM_JOB_ID" in os.environ and "SLURM_STEP_NODELIST" in os.environ


LOST_PEER_EXIT_CODE = 75  # EX_TEMPFAIL: nothing wrong with this process; rerun to resume
# How a collective or the coordination service reports that another process of the run is gone (JAX raises
# it as JaxRuntimeError; orbax's save threads hand it on as ValueError or RuntimeError).
_LOST_PEER = re.compile(r"Gloo \w+ failed|Connection (reset|closed) by peer|heartbeat timeout|coordination service", re.I)


def lost_peer(error: BaseException) -> bool:
    """Whether `error` (or what caused it) says another process of a multi-process run died."""
    import jax

    if jax.process_count() < 2:
        return False
    chain = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return any(_LOST_PEER.search(str(e)) for e in chain)


def exit_lost_peer(program: str, error: BaseException) -> None:
    """One clear line, then exit at once: JAX's shutdown barrier would wait for the dead process's heartbeat
    timeout and then abort with a page of C++ logs. Checkpoints already committed stay; rerunning resumes."""
    import jax

    detail = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
    print(f"{program}: process {jax.process_index()} of {jax.process_count()} lost another process of the run "
          f"({detail[:300]}). That process's log says why it stopped; {_rerun_advice(program)}.", file=sys.stderr,
          flush=True)  # fmt: skip
    sys.stdout.flush()
    os._exit(LOST_PEER_EXIT_CODE)


def _rerun_advice(program: str) -> str:
    """Training resumes from its last checkpoint; an evaluation or inference has nothing to resume, and was told to."""
    if "train" in program:
        return "rerun the same command on every host to resume from the last checkpoint"
    return "fix what it names there, then rerun the command on every host"


COMPILATION_CACHE_BYTES = 2 << 30  # least recently used entries go beyond this


def use_compilation_cache() -> str | None:
    """Turns on JAX's persistent compilation cache in this user's cache folder, so that a resumed run, an
    evaluation or an inference loads the train step and decoders an earlier command compiled instead of
    compiling them again. A folder the user named (JAX_COMPILATION_CACHE_DIR) wins, and
    JAX_ENABLE_COMPILATION_CACHE=false turns it off. JAX's cache key leaves out the CPU's instruction set,
    which CPU executables are built for, so each CPU model and flag set gets a folder of its own (a home
    folder shared by AVX-512 and AVX2 hosts). Returns the folder it set, None when it set none."""
    import jax

    if jax.config.jax_compilation_cache_dir:  # JAX reads JAX_COMPILATION_CACHE_DIR into it
        return None
    folder = str(cache_root() / "xla" / _cpu_tag())
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_compilation_cache_max_size", COMPILATION_CACHE_BYTES)
    return folder


def prepare_jax() -> None:
    """What every command sets up before its first JAX computation: our XLA CPU flags and the compilation cache."""
    xla_cpu.apply_cpu_flags()
    use_compilation_cache()


def _cpu_tag(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The machine and a digest of its CPU's model name and instruction-set flags (Linux's /proc/cpuinfo)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:  # local only: this machine's own CPU
            described = sorted({line for line in f if line.startswith(("model name", "flags", "Features"))})
    except OSError:
        described = [platform.processor()]
    return f"{platform.machine()}-{hashlib.sha256(''.join(described).encode()).hexdigest()[:12]}"


def define_flags() -> None:
    from absl import flags

    flags.DEFINE_multi_string("gin_file", [], "gin files (names are looked up along --gin_search_paths)")
    flags.DEFINE_multi_string("gin_bindings", [], "gin bindings, e.g. 'TRAIN_STEPS = 100'")
    flags.DEFINE_list("gin_search_paths", [], "folders to look for gin files in (gin_configs/ is always searched)")
    flags.DEFINE_string("tfds_data_dir", None, "TFDS data folder (sets TFDS_DATA_DIR)")
    flags.DEFINE_string("coordinator_address", None, "multi-host: host:port of process 0")
    flags.DEFINE_integer("process_count", None, "multi-host: number of processes")
    flags.DEFINE_integer("process_index", None, "multi-host: index of this process")
    flags.DEFINE_integer("heartbeat_timeout_seconds", 100, "multi-host: a process silent this long is declared dead")
    flags.DEFINE_list("seqio_additional_cache_dirs", [], "folders of SeqIO task caches (USE_CACHED_TASKS), as T5X's flag")
    flags.DEFINE_boolean("restore_fallback", True, "textchem-train resuming: a corrupt latest checkpoint is set aside and "
                         "the step before it restored (--norestore_fallback stops with the error instead); eval and "
                         "infer read the checkpoint they are given")  # fmt: skip
    for flag in flags.FLAGS.flags_by_module_dict().get(__name__, []):  # --help shows the main module's key flags only
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


_GIN_FLAG_HELP = (
    "\nGin bindings: --gin.NAME=VALUE (one per flag, the value a gin literal: --gin.TRAIN_STEPS=100,\n"
    "--gin.MODEL_DIR=\"'/tmp/run'\"); --helpfull lists every library's flags.\n"
)


_HELP_FLAGS = {"--help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml"}


def run(main: Callable[[], int | None], argv: Sequence[str] | None = None, usage: str | None = None) -> None:
    """Runs an entry point: `--gin.X=Y` flags split off, absl flags parsed, gin parsed, `main()` called.
    `usage` (the command's docstring) is what --help prints above our flags."""
    from absl import app, flags

    prepare_jax()
    argv = list(sys.argv if argv is None else argv)
    program = os.path.basename(argv[0])
    gin_flag_bindings, argv = split_gin_flags(argv)
    spaced = [arg for arg in argv[1:] if arg.startswith("--gin.")]  # `--gin.TRAIN_STEPS 5`: absl knows no such flag
    if spaced:
        print(f"{program}: {spaced[0]} needs its value after '=': {spaced[0]}=VALUE", file=sys.stderr)
        end_process(2)
    theirs = [hint for arg in argv[1:] if arg.startswith("-")
              and (hint := t5x_equivalent(re.sub(r"^--?(no)?", "--", arg.partition("=")[0])))]  # fmt: skip
    if theirs:  # absl's FATAL "Unknown command line flag", status 1
        print(f"{program}: {theirs[0]}", file=sys.stderr)
        end_process(2)
    define_flags()
    if usage:  # absl's --help prints the main module's docstring; a console script's wrapper has none
        sys.modules["__main__"].__doc__ = usage + _GIN_FLAG_HELP

    @command  # Ctrl-C and file-system errors in one line, the gin files' own (a gs:// one unreachable) included
    def absl_main(arguments):
        if len(arguments) > 1:  # absl leaves what is no flag: ignored, the run went on without what was meant
            print(f"{program}: unexpected argument(s) {' '.join(arguments[1:])}: every argument is a --flag=value "
                  "(gin: --gin.NAME=VALUE)", file=sys.stderr)  # fmt: skip
            return 2
        FLAGS = flags.FLAGS
        if not FLAGS["verbosity"].present:  # library chatter off; `-v 0` brings it back
            quiet_libraries()
        if FLAGS.tfds_data_dir:
            os.environ["TFDS_DATA_DIR"] = FLAGS.tfds_data_dir
        if FLAGS.seqio_additional_cache_dirs:
            import seqio

            seqio.add_global_cache_dirs(FLAGS.seqio_additional_cache_dirs)
        distributed = initialize_distributed(FLAGS.coordinator_address, FLAGS.process_count, FLAGS.process_index,
                                             FLAGS.heartbeat_timeout_seconds)  # fmt: skip
        try:
            fallback = [f"run_config.CheckpointConfig.restore_fallback = {FLAGS.restore_fallback}"]
            parse_gin(FLAGS.gin_file, [*FLAGS.gin_bindings, *gin_flag_bindings,
                                       *(fallback if FLAGS["restore_fallback"].present else [])], FLAGS.gin_search_paths)  # fmt: skip
            if distributed:
                check_same_configuration()
        except ConfigError as error:
            print(f"configuration error: {error}", file=sys.stderr)
            return 2
        _use_data_dir()
        try:
            return main()
        except TypeError as error:  # a configurable called without a value gin should have given: a traceback
            if (unbound := unbound_arguments(error)) is None:
                raise
            print(f"configuration error: {unbound}", file=sys.stderr)
            return 2
        except Exception as error:
            if lost_peer(error):
                exit_lost_peer(os.path.basename(argv[0]), error)
            raise

    try:
        app.run(absl_main, argv=argv)
    except SystemExit as done:  # how absl's app.run ends, whatever main returned
        asked_for_help = any(arg.partition("=")[0] in _HELP_FLAGS for arg in argv[1:])
        end_process(0 if asked_for_help and done.code == 1 else done.code)  # absl's help ends with status 1


_UNBOUND = re.compile(r"No values supplied by Gin or caller for arguments: \[([^\]]*)\].*?In call to configurable "
                      r"'([^']+)' \(<[^>]*>\)(?: in scope '([^']+)')?", re.S)


def unbound_arguments(error: TypeError) -> str | None:
    """What gin left unbound, in one line (`--gin.OPTIMIZER=@optax.sgd()` without its learning_rate), or None
    for a TypeError of another cause."""
    found = _UNBOUND.search(str(error))
    if found is None:
        return None
    arguments, name, scope = [a.strip(" '\"") for a in found.group(1).split(",")], found.group(2), found.group(3)
    where = f" (for {scope})" if scope else ""
    return (f"{name}(){where} has no value for {', '.join(arguments)}: bind "
            f"{' and '.join(f'<module>.{name}.{argument}' for argument in arguments)}, <module> as your gin files import "
            f"it (e.g. --gin.vocabularies.load_vocabulary.path=\"'my.model'\", --gin.optax.sgd.learning_rate=1e-3)")


def end_process(code: int | str | None) -> NoReturn:
    """Exits as `sys.exit(code)` does, less the native teardown after Python's own: threads are joined and atexit
    handlers run (orbax's pending saves, the metric process pool, JAX's distributed shutdown, logging), then
    `os._exit`. Left to the interpreter, `textchem-eval` died of SIGSEGV after its last line was printed and its
    files written, once in a CI test and once in 107 runs here; faulthandler, on, printed nothing, so the crash
    came after Python's own finalization: in the native teardown of the TensorFlow and XLA a command loads."""
    import atexit
    import threading

    if isinstance(code, str):  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
    status = 0 if code is None else code if isinstance(code, int) else 1
    if status == 0:
        peers.finish()  # the run's other processes go on; any other end stops them (peers.watch)
    elif peers.watching():  # at once: JAX's shutdown barrier at exit would wait up to 300 s for the processes that
        sys.stdout.flush()  # this end stops, then abort with a page of C++ logs
        sys.stderr.flush()
        os._exit(status)
    threading._shutdown()  # the interpreter's first step at exit; multiprocessing's children end the same way
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _use_data_dir() -> None:
    """Our tasks read their files from the DATA_DIR gin macro (runs/*.gin bind `datasets.set_data_dir.path` to
    it) when it is bound, else from TEXTCHEM_DATA_DIR: the errors named the macro, and no gin file had it."""
    import gin

    from textchem_jax.data import datasets

    try:
        set_data_dir = gin.get_configurable(datasets.set_data_dir)
    except ValueError:  # a configuration without runs/*.gin
        return
    set_data_dir()


def run_configured(qualified_name: str, program: str) -> None:
    """Runs the gin-configured library function `package.module.function` as the command `program`.

    The function is looked up in its package module (not `__main__`, which `python -m` creates as a
    second copy that gin never registered); data and configuration errors become one clear line.
    """
    import importlib

    module_name, _, function_name = qualified_name.rpartition(".")

    def main() -> int:
        from textchem_jax.checkpoints import CheckpointError
        from textchem_jax.run_config import register_our_tasks

        function = getattr(importlib.import_module(module_name), function_name)
        try:
            register_our_tasks()
            configured(function)()
        except ConfigError as error:
            print(f"configuration error: {error}", file=sys.stderr)
            return 2
        except (ValueError, FileNotFoundError, CheckpointError) as error:
            print(f"{program}: {without_gin_context(error)}", file=sys.stderr)
            return 2
        return 0

    run(main, usage=importlib.import_module(module_name).__doc__)


# The run file that configures each command's function (DESIGN.md: a model file, then a run file).
_RUN_FILES = {"train": "runs/pretrain.gin (or runs/finetune.gin)", "evaluate": "runs/eval.gin", "infer": "runs/infer.gin"}


def configured(function: Callable) -> Callable:
    """gin's configured `function`. Without the run file that binds it, gin said only "Could not find <function
    train at 0x...> in the Gin registry": the error now names the file to add."""
    import gin

    try:
        return gin.get_configurable(function)
    except ValueError:
        run_file = _RUN_FILES.get(function.__name__, "the runs/ file that configures it")
        raise ConfigError(f"no gin file configures {function.__module__}.{function.__name__}: add --gin_file={run_file} "
                          "after the model's gin file, or give an experiments/ file (it includes both)") from None
