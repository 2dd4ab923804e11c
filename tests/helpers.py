"""Shared test builders: tiny models (as model adapters), a demo batch, jitted decoding, N fake devices.

One place for what many tests need, so each test file states only what it checks.
"""

from __future__ import annotations

import functools
import os
import pathlib
import subprocess
import sys
from collections.abc import Mapping, Sequence

import jax
import numpy as np

from textchem_jax import xla_cpu
from textchem_jax.models import adapters, decoding, e2clm
from textchem_jax.models.beam_search import beam_search
from textchem_jax.models.config import t5_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
LENGTHS = {"inputs": 48, "targets": 32}

# A demo run's evaluations (teacher-forced and decoded) on one task, not the mixture's six: each more task's
# evaluation datasets, built beside the live training pipeline, cost a command about 1.5 s on 2 cores (a 2-step
# quickstart run 26.5 s -> 19.1 s). For tests of a run's behaviour, not of what each task's evaluation holds.
ONE_TASK_EVALUATION = [
    "--gin.train_eval/run_config.DatasetConfig.mixture_or_task_name='textchem_demo_forward'",
    "--gin.infer_eval/run_config.DatasetConfig.mixture_or_task_name='textchem_demo_forward'",
]


def demo_vocabulary_size() -> int:
    """Embedding rows for the shipped vocabulary (what models/*.gin give a model by default)."""
    from textchem_jax.data import vocabulary as vocabularies

    return vocabularies.padded_vocab_size(vocabularies.default_vocabulary())


def tiny_t5(version: str = "1.1", vocab_size: int | None = None, **overrides) -> adapters.EncoderDecoderModel:
    """A tiny T5 (dropout off) over the demo vocabulary unless `vocab_size` is given."""
    vocab_size = demo_vocabulary_size() if vocab_size is None else vocab_size
    return adapters.EncoderDecoderModel(t5_config("tiny", version, vocab_size=vocab_size, **{"dropout_rate": 0.0, **overrides}))


def tiny_e2clm(vocab_size: int | None = None, version: str = "1.0", **variant) -> adapters.E2ClmModel:
    """A tiny e2-CLM variant (`shared`, `aggregation`, `freeze_*`, `own_embeddings`), dropout off."""
    vocab_size = demo_vocabulary_size() if vocab_size is None else vocab_size
    return adapters.E2ClmModel(e2clm.e2clm_config("tiny", version, vocab_size, dropout_rate=0.0, **variant))


def demo_batch(model, batch_size: int = 8, lengths: Mapping[str, int] = LENGTHS, seed: int = 3) -> dict[str, np.ndarray]:
    """One packed training batch of the demo mixture, converted by `model`'s feature converter."""
    from textchem_jax.run_config import DatasetConfig, get_dataset

    cfg = DatasetConfig("textchem_demo", dict(lengths), "train", batch_size, seed=seed)
    return {k: v.numpy() for k, v in next(iter(get_dataset(cfg, model))).items()}


@functools.cache
def search(name: str, **options):
    """A search with fixed options, the same object for the same options (so jitted decoding is reused)."""
    fn = {"greedy": decoding.greedy, "sample": decoding.temperature_sample, "beam": beam_search}[name]
    return functools.partial(fn, **options)


def predict(model, params, features, *, max_decode_length: int, decode_fn=None, rng=None):
    """`model.predict_batch`, jitted as our decoders are: (sequences (batch, k, length), scores (batch, k))."""
    return _jitted_predict()(model, params, features, max_decode_length=max_decode_length, decode_fn=decode_fn, rng=rng)


@functools.cache
def _jitted_predict():  # on first use: asking for the backend's platform starts it
    def run(model, params, features, *, max_decode_length, decode_fn, rng):
        return model.predict_batch(params, features, decode_fn=decode_fn, max_decode_length=max_decode_length, rng=rng)

    options = xla_cpu.decode_compiler_options(jax.default_backend())  # as `evaluator.make_batch_decoder`
    return jax.jit(run, static_argnames=("model", "decode_fn", "max_decode_length"), compiler_options=options)


@functools.partial(jax.jit, static_argnames=("model", "length_penalty"))
def score(model, params, features, *, length_penalty: float = 0.0):
    """`model.score_batch`, jitted."""
    return model.score_batch(params, features, length_penalty=length_penalty)


def run_with_devices(script: pathlib.Path, devices: int, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Runs a worker file in a fresh interpreter with `devices` fake CPU devices; asserts it succeeded."""
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, str(script), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def tree_leaves(tree) -> Sequence[np.ndarray]:
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


T5_PIECES = 32000  # T5's (and GT4SD's) spiece.model; with 100 sentinels 32,100 ids, 32,128 embedding rows


def t5_like_vocabulary(prefix: pathlib.Path, pieces: int = T5_PIECES) -> str:
    """A SentencePiece model shaped like T5's: SentencePiece's default NFKC unigram (no byte fallback, so
    no `\\`, `~`, `{`, `}`, `<`) trained on the demo corpus, filled up to `pieces` with rare word pieces.

    The filler pieces are ordinary pieces with scores far below every trained one, so they keep the
    size and ids of T5's vocabulary without changing how the trained pieces tokenize.
    """
    from sentencepiece import sentencepiece_model_pb2

    from textchem_jax.data import vocabulary as vocabularies
    from textchem_jax.data.demo import demo_data_dir

    missing = str.maketrans("", "", "".join(vocabularies.CHEMISTRY_CHARACTERS))  # what T5's vocabulary lacks
    texts = [line.translate(missing) for path in sorted(demo_data_dir().rglob("*.txt")) for line in path.read_text().splitlines()]
    path = vocabularies.train_plain_vocabulary(texts, prefix, vocab_size=1500)
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(pathlib.Path(path).read_bytes())
    lowest = min(piece.score for piece in proto.pieces)
    for index in range(pieces - len(proto.pieces)):
        piece = proto.pieces.add()
        piece.piece, piece.score = f"\u2581filler{index}", lowest - 100.0 - index
    pathlib.Path(path).write_bytes(proto.SerializeToString())
    return path


def checkpoint_params(model_dir: pathlib.Path, step: int) -> dict[str, np.ndarray]:
    """The parameters of a run's orbax checkpoint at `step`, flat by key path (for bitwise comparisons)."""
    import orbax.checkpoint as ocp

    with ocp.CheckpointManager(model_dir / "checkpoints", item_names=("state", "data_iterator")) as manager:
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore()))
    leaves = jax.tree_util.tree_flatten_with_path(restored.state["params"])[0]
    return {jax.tree_util.keystr(path): np.asarray(value) for path, value in leaves}


# A user's own SeqIO task module (MIXTURE_OR_TASK_MODULE / --module_import), written into a test's folder.
USER_TASKS = '''
"""A user's own SeqIO task (no input_domain), registered by MIXTURE_OR_TASK_MODULE."""
import seqio
import tensorflow as tf

from textchem_jax.data.seqio_tasks import vocabulary

WORDS = ["benzene", "ethanol", "acetone", "toluene"] * 4


def examples(split, shuffle_files, seed=None):
    return tf.data.Dataset.from_tensor_slices({"inputs": [f"Spell: {w}" for w in WORDS], "targets": WORDS})


def exact(targets, predictions):
    return {"exact": sum(t == p for t, p in zip(targets, predictions)) / len(targets)}


seqio.TaskRegistry.add(
    "my_spelling",
    source=seqio.FunctionDataSource(examples, splits=("train", "validation", "test")),
    preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
    output_features={"inputs": seqio.Feature(vocabulary(), add_eos=True), "targets": seqio.Feature(vocabulary(), add_eos=True)},
    metric_fns=[exact],
)
'''


def as_from_a_terminal(command: Sequence[str]) -> list[str]:
    """`command` with SIGINT at its default, as a terminal starts it, so Ctrl-C reaches it as KeyboardInterrupt: a
    parent that ignores SIGINT (a pytest-xdist worker, `nohup`, `&`) passes that on through exec. A tiny Python
    resets it and execs the command (`preexec_fn` would run Python in a fork of the threaded test process)."""
    reset = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])"
    return [sys.executable, "-c", reset, *command]
