"""The data folder layout, and the (input, target) examples of each Text+Chem T5 task.

The folder comes from an explicit argument, `set_data_dir` (what the gin macro sets) or
`TEXTCHEM_DATA_DIR`, and follows DESIGN §3:
`chebi20/{train,validation,test}.txt`, `uspto_mit/{train,valid,test}.txt[.tar.gz]`,
`uspto50k/{train,valid,test}.csv`, `paragraph2actions/{src,tgt}-{train,valid,test}.txt`,
`gt4sd/{train,valid,test}.jsonl`. Parsed files are cached on disk (keyed by path, size and
modification time), since reading 40,000 atom-mapped reactions takes ~10 s.
"""

from __future__ import annotations

import dataclasses
import fractions
import functools
import hashlib
import math
import os
import pathlib
import pickle
import random
import re
import tempfile
from collections.abc import Callable

from textchem_jax.catalogue import DOMAINS, PROMPTS, SPLITS  # noqa: F401  (re-exported for the data layer)
from textchem_jax.chem import canonicalize, molecule_key, notations, randomize_smiles
from textchem_jax.data import sources
from textchem_jax.local_cache import cache_root
from textchem_jax.paths import is_remote
from textchem_jax.process_pool import start_parallel_map

_FILE_SPLIT = {"train": "train", "validation": "valid", "test": "test"}
_CACHE_VERSION = 4  # 3: FileReport.notes; 4: ChEBI-20 headers however spelt, USPTO-50K header case


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    files: Callable[[str], tuple[list[str], ...]]  # split -> candidate relative paths per file
    origin: str


DATASETS = {
    "chebi20": DatasetInfo(
        lambda split: ([f"chebi20/{split}.txt"],),
        "ChEBI-20 (Edwards et al. 2021), folder ChEBI-20_data of the blender-nlp/MolT5 repository",
    ),
    "uspto_mit": DatasetInfo(
        lambda split: ([f"uspto_mit/{_FILE_SPLIT[split]}.txt", f"uspto_mit/{_FILE_SPLIT[split]}.txt.tar.gz"],),
        "USPTO-MIT (Jin et al. 2017), folder data of the wengong-jin/nips17-rexgen repository",
    ),
    "uspto50k": DatasetInfo(
        lambda split: ([f"uspto50k/{_FILE_SPLIT[split]}.csv"],),
        "USPTO-50K (Schneider et al. 2016, split of Dai et al. 2019), e.g. the canonicalized CSVs of uta-smile/RetroXpert",
    ),
    "paragraph2actions": DatasetInfo(
        lambda split: (
            [f"paragraph2actions/src-{_FILE_SPLIT[split]}.txt"],
            [f"paragraph2actions/tgt-{_FILE_SPLIT[split]}.txt"],
        ),
        "paragraph2actions (Vaucher et al. 2020), rxn4chemistry/paragraph2actions (public sample in test_data/)",
    ),
    "gt4sd": DatasetInfo(
        lambda split: ([f"gt4sd/{_FILE_SPLIT[split]}.jsonl", f"gt4sd_sample/{_FILE_SPLIT[split]}.jsonl"],),
        "the Text+Chem T5 training set in GT4SD jsonl format (GT4SD/multitask_text_and_chemistry_t5)",
    ),
}

_data_dir_override: str | None = None


def set_data_dir(path: str | None) -> None:
    """Sets the data folder for every task (the `DATA_DIR` gin macro ends up here)."""
    global _data_dir_override
    _data_dir_override = None if path is None else str(path)


class NoDataFolder(FileNotFoundError):
    """No data folder was given. `how` names the way to give one, which differs per command: gin's DATA_DIR macro
    for textchem-train, `--data_dir` for textchem-inspect and textchem-vocab (they re-raise it with their flag)."""

    def __init__(self, how: str = "the DATA_DIR gin macro (--gin.DATA_DIR=\"'DIR'\"; --tfds_data_dir serves tasks "
                 "registered with tfds_dir=, not these)"):  # fmt: skip
        super().__init__(f"no data folder: set TEXTCHEM_DATA_DIR (e.g. ../shared/data) or give {how}; the demo "
                         "mixture textchem_demo needs none")  # fmt: skip


def data_dir(explicit: str | None = None) -> str:
    path = explicit or _data_dir_override or os.environ.get("TEXTCHEM_DATA_DIR")
    if not path:
        raise NoDataFolder()
    return path


def dataset_files(dataset: str, split: str, directory: str | None = None) -> list[str]:
    """Absolute paths of a dataset split; raises FileNotFoundError naming the expected path and origin."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    root = data_dir(directory)
    info = DATASETS[dataset]
    found = []
    for candidates in info.files(split):
        paths = [f"{root.rstrip('/')}/{c}" for c in candidates]
        existing = [p for p in paths if sources.exists(p)]
        if not existing:
            raise FileNotFoundError(
                f"{dataset} split {split!r} not found: expected {' or '.join(paths)}. "
                f"It comes from {info.origin}."
            )
        found.append(existing[0])
    return found


def _cache_path(paths: list[str], reader: str) -> pathlib.Path | None:
    parts = [reader, str(_CACHE_VERSION)]
    for path in paths:
        if is_remote(path):
            return None  # remote files are read each time
        stat = os.stat(path)
        parts += [os.path.abspath(path), str(stat.st_size), str(stat.st_mtime_ns)]
    digest = hashlib.sha1("\0".join(parts).encode()).hexdigest()[:20]
    return cache_root() / "sources" / f"{digest}.pkl"


def read_dataset(
    dataset: str,
    split: str,
    directory: str | None = None,
    *,
    strict: bool = False,
    report: sources.SkipReport | None = None,
) -> list:
    """Records of one dataset split (`sources` types), from the disk cache when the files are unchanged.

    Evaluation splits keep rows whose chemistry RDKit cannot read (`sources`: `keep_unreadable`), so that
    they count as misses and metrics divide by the published split's size; training splits skip them.
    """
    paths = dataset_files(dataset, split, directory)
    keep_unreadable = split != "train"
    cache = None if strict else _cache_path(paths, f"{dataset}:{'keep' if keep_unreadable else 'skip'}")
    if cache is not None and cache.exists():
        with open(cache, "rb") as f:  # local only: this machine's cache
            records, file_report = pickle.load(f)
        if report is not None:
            report.merge(file_report)
        return records
    local = sources.SkipReport()
    chemistry_readers = {
        "chebi20": sources.read_chebi20,
        "uspto_mit": sources.read_uspto_mit,
        "uspto50k": sources.read_uspto50k,
    }
    if dataset in chemistry_readers:
        records = chemistry_readers[dataset](*paths, strict=strict, report=local, keep_unreadable=keep_unreadable)
    else:
        text_readers = {"paragraph2actions": sources.read_paragraph2actions, "gt4sd": sources.read_jsonl_pairs}
        records = text_readers[dataset](*paths, strict=strict, report=local)
    if report is not None:
        report.merge(local)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache.parent, delete=False) as f:
            pickle.dump((records, local), f)
        os.replace(f.name, cache)
    return records


# (dataset, split) -> records of `sources` types: `read_dataset` on a folder, or a TFDS reader.
RecordReader = Callable[[str, str], list]


def _task_pairs(task: str, split: str, read_records: RecordReader, reactions: str | None) -> list[tuple[str, str]]:
    read = functools.partial(read_records, split=split)
    if task in ("text2mol", "mol2text"):
        rows = read("chebi20")
        pairs = [(r.description, r.smiles) for r in rows]
        return pairs if task == "text2mol" else [(s, d) for d, s in pairs]
    if task == "forward":
        rows = read(reactions or "uspto_mit")
        return [(r.precursors, r.product) for r in rows]
    if task == "retro":
        rows = read(reactions or "uspto50k")
        return [(r.product, r.precursors) for r in rows]
    if task == "paragraph2actions":
        return [(r.source, r.target) for r in read("paragraph2actions")]
    raise ValueError(f"unknown task {task!r}; known: {', '.join(PROMPTS)}")


def gt4sd_pairs(task: str, split: str, directory: str | None = None) -> list[tuple[str, str]]:
    """(input, target) pairs of one task from GT4SD jsonl, recognized by its prompt."""
    prompt = PROMPTS[task]
    rows = read_dataset("gt4sd", split, directory)
    return [(r.source[len(prompt) :], r.target) for r in rows if r.source.startswith(prompt)]


def augment_smiles(pairs: list[tuple[str, str]], side: int, variants: int, seed: int) -> list[tuple[str, str]]:
    """Adds `variants` randomized-SMILES copies of each pair (SMILES on `side` 0 or 1), seeded."""
    rng = random.Random(seed)
    augmented = []
    for pair in pairs:
        augmented.append(pair)
        for _ in range(variants):
            copy = list(pair)
            copy[side] = randomize_smiles(pair[side], rng)
            augmented.append((copy[0], copy[1]))
    return augmented


_SMILES_SIDES = {"forward": (0, 1), "retro": (0, 1), "mol2text": (0,), "text2mol": (1,), "paragraph2actions": ()}


def canonicalize_pairs(task: str, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """RDKit-canonical SMILES on the chemistry side(s) of each pair (unreadable ones kept as they are)."""
    sides = _SMILES_SIDES[task]
    unique = list(dict.fromkeys(p[side] for p in pairs for side in sides))
    canonical = dict(zip(unique, start_parallel_map(canonicalize, unique)()))
    return [tuple(canonical[v] or v if i in sides else v for i, v in enumerate(p)) for p in pairs]


def rewrite_or_keep(smiles: str, notation: str) -> str:
    """`smiles` in another notation of the same molecule (`notations.rewrite_variant`), or as written when
    RDKit cannot read it: an unreadable input stays in the evaluation, as it stays in the original's."""
    try:
        return notations.rewrite_variant(smiles, notation)
    except ValueError:
        return smiles


def rewrite_inputs(task: str, pairs: list[tuple[str, str]], notation: str) -> list[tuple[str, str]]:
    """Each pair with its SMILES input written in `notation` (tasks with a chemistry input; others as they are)."""
    if 0 not in _SMILES_SIDES[task]:
        return pairs
    inputs = [p[0] for p in pairs]
    rewritten = start_parallel_map(functools.partial(rewrite_or_keep, notation=notation), inputs)()
    return [(new, target) for new, (_, target) in zip(rewritten, pairs)]


# TFDS's slice syntax, as far as a split read whole into memory honours it (all but TFDS's `+` and rounding options).
SPLIT_SLICE_FORMS = "NAME[:N], NAME[N:M], NAME[-N:] (rows), NAME[:P%], NAME[P%:Q%] (percent of the rows)"
_SLICED_SPLIT = re.compile(r"(\w+)\[(.*)\]")
_SLICE_BOUND = re.compile(r"-?[0-9]+(?:\.[0-9]+)?%|-?[0-9]+", re.ASCII)


@dataclasses.dataclass(frozen=True)
class SplitSlice:
    """A split and the rows of it a TFDS-style slice keeps (`validation[:100]`, `train[25%:50%]`): T5X recipes
    evaluate on `validation[:N]`, which our tasks refused ("no task ... has a split 'validation[:4]'")."""

    name: str
    start: str | None = None  # a bound as written, "4", "-10" or "25%"; None: from the split's first row
    stop: str | None = None  # None: to its last row

    def rows(self, count: int) -> slice:
        """The rows kept of a split of `count` rows. A percentage bound is the ceiling of that share of them,
        `[:P%]` keeps at least one row (the data-fraction sweeps' rule) and `[:P%]` + `[P%:]` are the whole."""
        return slice(_row_index(self.start, count), _row_index(self.stop, count))


def _row_index(bound: str | None, count: int) -> int | None:
    if bound is None or not bound.endswith("%"):
        return None if bound is None else int(bound)
    share = fractions.Fraction(bound[:-1]) / 100  # exact: 10% of 30 rows is 3, where 0.1 * 30 rounded up to 4
    return math.ceil((share if share > 0 else 1 + share) * count)


def split_slice(split: str) -> SplitSlice:
    """`split` read as TFDS's slice syntax (`SPLIT_SLICE_FORMS`); a name without brackets is the whole split. A
    slice we cannot honour (TFDS's `+`, rounding options, a percentage over 100) raises naming the forms."""
    match = _SLICED_SPLIT.fullmatch(split)
    if match is None:
        return SplitSlice(split)
    name, bounds = match.group(1), match.group(2).split(":")
    problem = None
    if len(bounds) != 2 or not all(_SLICE_BOUND.fullmatch(bound) for bound in bounds if bound):
        problem = "not a slice this data can read"
    elif len({bound.endswith("%") for bound in bounds if bound}) > 1:  # TFDS reads `[10:50%]` all as percent
        problem = "give both bounds in rows or both in percent"
    elif any(bound.endswith("%") and not 0 < abs(float(bound[:-1])) <= 100 for bound in bounds):
        problem = "the percentage must be in (0, 100] (from the end: [-100, 0))"
    if problem:  # quoted as given (not repr) so the message holds the very text bound in gin
        raise ValueError(f"split '{split}': {problem}; write one of {SPLIT_SLICE_FORMS}")
    return SplitSlice(name, bounds[0] or None, bounds[1] or None)


def task_pairs(
    task: str,
    split: str,
    directory: str | None = None,
    *,
    source: str = "files",
    reactions: str | None = None,
    records: RecordReader | None = None,
    canonical: bool = False,
    augment: int = 0,
    notation: str | None = None,
    seed: int = 0,
    report: sources.SkipReport | None = None,
) -> list[tuple[str, str]]:
    """(input, target) pairs of a task split, without prompt.

    `source="files"` reads the real formats (reactions: forward from `uspto_mit`, retro from
    `uspto50k`, unless `reactions` names one) from `directory`, or through `records(dataset, split)`
    when given (e.g. `tfds_builders.tfds_records(tfds_dir)`); `"gt4sd"` the GT4SD jsonl.
    `split` may be a TFDS-style slice (`split_slice`): `"train[:25%]"` (the first quarter of the file's rows:
    data-fraction sweeps), `"validation[:100]"`. `canonical=True` rewrites SMILES in RDKit's canonical form;
    `augment=N` adds N randomized SMILES of each chemistry input (training splits only; targets stay as they are);
    `notation` rewrites each chemistry input in that notation (`notations.variant_names`: robustness evaluation).
    """
    selection = split_slice(split)
    split = selection.name
    if source == "files":
        if records is None:
            records = functools.partial(read_dataset, directory=directory, report=report)
        pairs = _task_pairs(task, split, records, reactions)
    else:
        pairs = gt4sd_pairs(task, split, directory)
    pairs = pairs[selection.rows(len(pairs))]
    if canonical:
        pairs = canonicalize_pairs(task, pairs)
    if augment and split == "train" and 0 in _SMILES_SIDES[task]:
        pairs = augment_smiles(pairs, 0, augment, seed)
    if notation is not None:
        pairs = rewrite_inputs(task, pairs, notation)
    return pairs


def leaked_molecules(
    task: str, directory: str | None = None, *, split: str = "test", reactions: str | None = None
) -> list[str]:
    """Molecules of `split` that also occur in the training split (canonical, order-free comparison)."""
    side = {"forward": 1, "retro": 0, "mol2text": 0, "text2mol": 1}.get(task)
    if side is None:
        return []
    read = functools.partial(task_pairs, task, directory=directory, reactions=reactions)
    train = set(start_parallel_map(molecule_key, [p[side] for p in read("train")])())
    train.discard(None)
    candidates = [p[side] for p in read(split)]
    keys = start_parallel_map(molecule_key, candidates)()
    return sorted({smiles for smiles, key in zip(candidates, keys) if key in train})
