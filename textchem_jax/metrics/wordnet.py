"""Finding WordNet 3.0 for METEOR without any hub download.

NLTK's METEOR needs WordNet synonyms. `nltk.download` cannot run on air-gapped clusters, so we look,
in order, at: `TEXTCHEM_WORDNET_DIR` (any WordNet `dict/` folder), NLTK's own data path (a
`corpora/wordnet` that a user installed), and Debian's `wordnet-base` package (`/usr/share/wordnet`,
the same Princeton WordNet 3.0 files that NLTK ships; `apt-get install wordnet-base`). Debian's copy
lacks the `lexnames` index that NLTK's reader opens, so we copy it once into a cache folder and add
that standard 45-line file (it names lexicographer files and does not affect synonym lookup).
When none is found, METEOR is reported as None with a warning, never as a different number.

NLTK's reader parses the four index files at every start (5.1 s here, in every process that scores METEOR);
their parse is kept in the same cache folder, keyed by the files' paths, sizes and times and NLTK's version,
and read back in a fraction of that. NLTK's synset reads are not thread-safe; ours take a lock, since seqio's
evaluator scores METEOR for several tasks at once.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import pathlib
import pickle
import shutil
import tempfile
import threading
import warnings

from textchem_jax.local_cache import cache_root

logger = logging.getLogger("textchem_jax.metrics")

DEBIAN_WORDNET = pathlib.Path("/usr/share/wordnet")  # local only: NLTK reads WordNet from the local disk
_REQUIRED = ("data.noun", "index.noun", "data.verb", "index.verb", "data.adj", "index.adj", "data.adv", "index.adv")
_LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
INSTALL_HINT = (
    "METEOR needs WordNet 3.0: `apt-get install wordnet-base` (Debian/Ubuntu), or point "
    "TEXTCHEM_WORDNET_DIR at a WordNet dict/ folder, or install NLTK's 'wordnet' corpus"
)


def _lexnames_text() -> str:
    category = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}
    return "".join(f"{i:02d}\t{name}\t{category[name.split('.')[0]]}\n" for i, name in enumerate(_LEXNAMES))


def _reader_folder(source: pathlib.Path) -> pathlib.Path:
    """`source` when NLTK can read it as is, else a copy with `lexnames` added, under an NLTK data root.

    NLTK 3.10 only opens files under its data path (and refuses symlinks that leave it), hence a copy (~35 MB,
    made once) whose root our reader puts on `nltk.data.path` while it opens a file (`_on_nltk_data_path`).
    """
    if (source / "lexnames").exists():
        root = source
    else:
        cache = cache_root()
        digest = hashlib.sha1(str(source.resolve()).encode()).hexdigest()[:12]
        root = cache / f"nltk_data-{digest}" / "corpora" / "wordnet"
        if not (root / "lexnames").exists():
            root.parent.mkdir(parents=True, exist_ok=True)
            staging = pathlib.Path(tempfile.mkdtemp(prefix="wordnet.", dir=root.parent))  # local only: NLTK's own copy
            for item in source.iterdir():
                if item.is_file():
                    shutil.copyfile(item, staging / item.name)  # local only: NLTK's own copy
            (staging / "lexnames").write_text(_lexnames_text())
            try:
                staging.rename(root)  # atomic; another process may have won the race
            except OSError:
                shutil.rmtree(staging, ignore_errors=True)  # local only: NLTK's own copy
    return root


_DATA_PATH_CHANGE = threading.RLock()


@contextlib.contextmanager
def _on_nltk_data_path(folder: pathlib.Path):
    """`folder` on `nltk.data.path` for the block only, so that NLTK 3.10 opens a file under it.

    Left there, it broke NLTK for the rest of the process: `nltk.corpus.wordnet` and NLTK's own `meteor_score`
    found our partial copy as `corpora/wordnet` and failed with OSError (no index.sense) instead of LookupError.
    """
    import nltk

    entry = str(folder.resolve())  # local only: NLTK reads WordNet from the local disk
    with _DATA_PATH_CHANGE:  # one thread's block must not remove the entry while another thread's opens a file
        added = entry not in nltk.data.path
        if added:
            nltk.data.path.append(entry)
        try:
            yield
        finally:
            if added and entry in nltk.data.path:
                nltk.data.path.remove(entry)


def _candidates() -> list[pathlib.Path]:
    found = []
    if os.environ.get("TEXTCHEM_WORDNET_DIR"):
        found.append(pathlib.Path(os.environ["TEXTCHEM_WORDNET_DIR"]))  # local only: NLTK needs a local folder
    try:
        import nltk

        found.append(pathlib.Path(str(nltk.data.find("corpora/wordnet"))))  # local only: NLTK's own copy
    except LookupError:
        pass
    found.append(DEBIAN_WORDNET)
    return found


def _index_cache(root: pathlib.Path) -> pathlib.Path:
    """Where the parse of the index files under `root` is kept: named by their paths, sizes and times and
    NLTK's version, so that any change to either is a new name."""
    import nltk

    stats = [(name, (root / name).stat()) for name in _REQUIRED + ("lexnames",)]  # local only: NLTK's folder
    key = repr([str(root.resolve()), nltk.__version__] + [(n, s.st_size, s.st_mtime_ns) for n, s in stats])
    return cache_root() / f"wordnet-index-{hashlib.sha1(key.encode()).hexdigest()[:16]}.pickle"


def _english_wordnet_class():
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class EnglishWordNet(WordNetCorpusReader):
        """NLTK's reader, whose index parse is read from our cache when it is there (written when not), and
        whose synset reads are safe from several threads."""

        _reading = threading.RLock()

        def open(self, file):  # local only: NLTK's reader of the WordNet copy on the local disk
            # NLTK checks each open against its data path; a data file, once open, is kept (`_data_file`)
            with _on_nltk_data_path(pathlib.Path(self.root.path)):  # local only: NLTK reads the local disk
                return super().open(file)

        def synset_from_pos_and_offset(self, pos, offset):
            # NLTK reads a synset by seek + readline on one file per part of speech, shared by all threads:
            # two at once read each other's lines ("'NoneType' object has no attribute 'lemmas'"). seqio's
            # evaluator scores each task on its own thread, so mol2text tasks score METEOR at the same time.
            with self._reading:
                return super().synset_from_pos_and_offset(pos, offset)

        def map_wn(self, version="wordnet"):
            return None  # the version map only serves multilingual (OMW) lookups, which METEOR never makes

        def _scan_satellites(self):
            pass  # in _load_lemma_pos_offset_map, whose parse needs it first (NLTK's __init__ calls both)

        def _load_lemma_pos_offset_map(self):
            path = _index_cache(pathlib.Path(self.root.path))  # local only: NLTK reads WordNet from the local disk
            try:
                self.satellite_offsets, self._lemma_pos_offset_map = pickle.loads(path.read_bytes())
                return
            except Exception:  # noqa: BLE001  (absent, torn or foreign: a bad cache is never trusted)
                pass  # parse, and write it for the next process
            super()._scan_satellites()
            super()._load_lemma_pos_offset_map()
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                staging = path.with_name(f"{path.name}.{os.getpid()}.tmp")
                staging.write_bytes(pickle.dumps((self.satellite_offsets, self._lemma_pos_offset_map)))
                staging.replace(path)  # atomic: a concurrent reader sees the whole file or none
            except OSError as error:
                logger.info("WordNet's index parse is not cached (%s): each process parses it again", error)

    return EnglishWordNet


@functools.cache
def load_wordnet():
    """An NLTK `WordNetCorpusReader`, or None (with a warning saying how to install WordNet)."""
    EnglishWordNet = _english_wordnet_class()

    chosen = os.environ.get("TEXTCHEM_WORDNET_DIR")
    for candidate in _candidates():
        missing = [name for name in _REQUIRED if not (candidate / name).is_file()]
        if missing and chosen and candidate == pathlib.Path(chosen):  # local only: NLTK needs a local folder
            warnings.warn(f"TEXTCHEM_WORDNET_DIR={chosen} is not a WordNet dict/ folder (no {', '.join(missing[:2])}"
                          f"{' ...' if len(missing) > 2 else ''}): looking elsewhere. {INSTALL_HINT}", stacklevel=2)  # fmt: skip
        if not missing:
            folder = _reader_folder(candidate)
            with warnings.catch_warnings(), _on_nltk_data_path(folder):  # NLTK checks the reader's root too
                warnings.simplefilter("ignore")  # "multilingual functions are not available"
                reader = EnglishWordNet(str(folder), None)
            logger.debug("METEOR uses WordNet from %s", candidate)
            return reader
    warnings.warn(f"WordNet not found, METEOR is reported as None. {INSTALL_HINT}", stacklevel=2)
    return None
