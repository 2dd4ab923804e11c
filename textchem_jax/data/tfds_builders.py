"""TFDS builders that build offline from a manual folder, so the datasets can be prepared on air-gapped clusters.

  python -m textchem_jax.data.build_tfds --manual_dir=$TEXTCHEM_DATA_DIR --data_dir=~/tensorflow_datasets

(Not `tfds build`: TFDS 4.9.10's command imports apache-beam at start-up, which we do not depend on.)

The manual folder has the layout of DESIGN §3 (the same folder `TEXTCHEM_DATA_DIR` points at); a
builder prepares the splits present there and reads them with our own readers, so examples are
already in the Text+Chem T5 format (single backslashes, atom maps removed, sorted precursors).
Rows the readers skip are logged with their line numbers.
`read_tfds` reads a prepared split back as the same records; `tfds_records` hands it to
`datasets.task_pairs`, so the SeqIO tasks (`tfds_dir=`) get the same pairs as from the files.
A build records the manual files it was made of (`MANUAL_FILES`), and `build` makes it again when they changed:
TFDS reuses any build of the same version, so a split added to the folder later was never prepared.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from typing import TYPE_CHECKING

import tensorflow_datasets as tfds

from textchem_jax.data import datasets, sources

if TYPE_CHECKING:
    from etils import epath

logger = logging.getLogger("textchem_jax.data")
_INSTRUCTIONS = (
    "Put the dataset files in --manual_dir with the layout chebi20/{train,validation,test}.txt, "
    "uspto_mit/{train,valid,test}.txt[.tar.gz], uspto50k/{train,valid,test}.csv, "
    "paragraph2actions/{src,tgt}-{train,valid,test}.txt (see ../shared/data/SOURCES.md for origins)."
)


def _present_splits(dataset: str, root: str) -> list[str]:
    """The splits of `dataset` whose files are in the manual folder `root`."""
    present = []
    for split in datasets.SPLITS:
        try:
            datasets.dataset_files(dataset, split, root)
        except FileNotFoundError:
            continue
        present.append(split)
    return present


class _ManualBuilder(tfds.core.GeneratorBasedBuilder):
    """Shared logic: one dataset of `datasets.DATASETS`, each split present in the manual folder."""

    DATASET = ""
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
    FEATURES: tuple[str, ...] = ()

    def _info(self) -> tfds.core.DatasetInfo:
        features = tfds.features.FeaturesDict({name: tfds.features.Text() for name in self.FEATURES})
        return self.dataset_info_from_configs(
            description=datasets.DATASETS[self.DATASET].origin,
            features=features,
            disable_shuffling=True,  # keep file order: the same examples, in the same order, as the files
        )

    def _split_generators(self, dl_manager):
        root = str(dl_manager.manual_dir)
        present = {split: self._generate_examples(root, split) for split in _present_splits(self.DATASET, root)}
        if not present:
            # Raises the FileNotFoundError that names the expected paths.
            datasets.dataset_files(self.DATASET, "test", root)
        return present

    def _generate_examples(self, root: str, split: str):
        report = sources.SkipReport()
        records = datasets.read_dataset(self.DATASET, split, root, report=report)
        if not records:  # TFDS cannot write an empty split and would only say "No examples were yielded"
            raise sources.DataFormatError(f"{self.DATASET} {split}: no readable rows\n{report.format()}")
        if report.total_skipped or report.total_kept_unreadable:
            logger.warning("%s %s: skipped or unreadable rows\n%s", self.DATASET, split, report.format())
        for index, record in enumerate(records):
            yield index, self._features(record)

    def _features(self, record) -> dict[str, str]:
        raise NotImplementedError


class TextchemChebi20(_ManualBuilder):
    """ChEBI-20: molecule SMILES and their ChEBI descriptions."""

    DATASET = "chebi20"
    FEATURES = ("cid", "smiles", "description")

    def _features(self, record):
        return {"cid": record.cid, "smiles": record.smiles, "description": record.description}


class _ReactionBuilder(_ManualBuilder):
    FEATURES = ("precursors", "product")

    def _features(self, record):
        return {"precursors": record.precursors, "product": record.product}


class TextchemUsptoMit(_ReactionBuilder):
    """USPTO-MIT reactions in the Text+Chem T5 format."""

    DATASET = "uspto_mit"


class TextchemUspto50k(_ReactionBuilder):
    """USPTO-50K reactions in the Text+Chem T5 format."""

    DATASET = "uspto50k"


class TextchemParagraph2actions(_ManualBuilder):
    """paragraph2actions: experimental sentences and their action sequences."""

    DATASET = "paragraph2actions"
    FEATURES = ("source", "target")

    def _features(self, record):
        return {"source": record.source, "target": record.target}


BUILDERS = {
    "chebi20": TextchemChebi20,
    "uspto_mit": TextchemUsptoMit,
    "uspto50k": TextchemUspto50k,
    "paragraph2actions": TextchemParagraph2actions,
}


_RECORD_TYPES = {
    "chebi20": sources.MoleculeText,
    "uspto_mit": sources.ReactionPair,
    "uspto50k": sources.ReactionPair,
    "paragraph2actions": sources.TextPair,
}


def dataset_name(name: str) -> str:
    """Our short name of a dataset, given it or its TFDS name (`textchem_chebi20`, what TFDS and build_tfds print)."""
    short = name.strip().removeprefix("textchem_")
    if short not in BUILDERS:
        raise ValueError(f"unknown dataset {name!r}: use one of {', '.join(BUILDERS)} (or its textchem_ name)")
    return short


def read_tfds(dataset: str, split: str, tfds_dir: str) -> list:
    """Records of a split prepared by these builders, as the `sources` types `datasets.read_dataset` gives."""
    dataset = dataset_name(dataset)
    builder = BUILDERS[dataset](data_dir=tfds_dir)
    if split not in builder.info.splits:
        raise FileNotFoundError(
            f"{builder.name} split {split!r} is not prepared in {tfds_dir}: run `python -m textchem_jax.data.build_tfds "
            f"--manual_dir=DATA --data_dir={tfds_dir} --datasets={dataset}` (DATA: the folder with the dataset files)"
        )
    record = _RECORD_TYPES[dataset]
    names = [f.name for f in dataclasses.fields(record)]
    rows = tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))
    return [record(*(row[name].decode() for name in names)) for row in rows]


def tfds_records(tfds_dir: str) -> datasets.RecordReader:
    """The `records` reader of `datasets.task_pairs` for the splits these builders prepared in `tfds_dir`."""
    return functools.partial(read_tfds, tfds_dir=tfds_dir)


MANUAL_FILES = "manual_files.json"  # in a build's folder: the manual files it was made of


def _manual_files(dataset: str, manual_dir: str) -> dict[str, list[int]]:
    """The files of `dataset` in `manual_dir` (local or gs://), by their path there: [size, modification time in ns]."""
    import tensorflow as tf

    files = {}
    for split in _present_splits(dataset, manual_dir):
        for path in datasets.dataset_files(dataset, split, manual_dir):
            stat = tf.io.gfile.stat(path)
            files[path[len(manual_dir.rstrip("/")) + 1 :]] = [stat.length, stat.mtime_nsec]
    return files


def _changes(record: epath.Path, files: dict[str, list[int]]) -> str | None:
    """Why a build that recorded its manual files in `record` is not one of `files`, in words; None when it is."""
    try:
        built = json.loads(record.read_text())["files"]
    except (FileNotFoundError, ValueError, KeyError, TypeError):  # built before builds recorded their files, or cut
        built = None
    if not isinstance(built, dict):
        return f"it has no {MANUAL_FILES} naming the manual files it was built from (an earlier version's build?)"
    changes = {name: "added" for name in files.keys() - built.keys()}
    changes.update({name: "removed" for name in built.keys() - files.keys()})
    changes.update({name: "changed" for name in files.keys() & built.keys() if files[name] != built[name]})
    said = ", ".join(f"{name} {change}" for name, change in sorted(changes.items()))
    return f"the manual files changed since it was built ({said})" if said else None


def build(dataset: str, manual_dir: str, data_dir: str) -> tfds.core.DatasetBuilder:
    """Prepares one dataset from `manual_dir` into the TFDS folder `data_dir` (no network); a build made of other
    manual files (a split added, rows changed) is made again, with a warning saying why."""
    from etils import epath  # local or gs://

    dataset = dataset_name(dataset)
    builder = BUILDERS[dataset](data_dir=data_dir)
    files = _manual_files(dataset, manual_dir)
    if not files:  # TFDS would raise an AssertionError for a missing or empty folder: this names the files it needs
        datasets.dataset_files(dataset, "test", manual_dir)
    if builder.info.splits:  # prepared: TFDS would reuse it whatever the manual folder holds now
        changes = _changes(epath.Path(builder.data_dir) / MANUAL_FILES, files)
        if changes is None:
            return builder
        logger.warning("%s: rebuilding %s: %s", dataset, builder.data_dir, changes)
        epath.Path(builder.data_dir).rmtree()
        builder = BUILDERS[dataset](data_dir=data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    (epath.Path(builder.data_dir) / MANUAL_FILES).write_text(json.dumps({"manual_dir": manual_dir, "files": files}))
    return builder

