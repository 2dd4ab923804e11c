"""textchem_jax.checkpoints on its own: a small pytree state saved and restored with real orbax and tf.data."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow as tf
from etils import epath
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from textchem_jax import checkpoints as ckpt
from textchem_jax.trainer import TrainState


def _params(scale: float = 1.0, kernel_shape: tuple[int, int] = (3, 4)) -> dict:
    rng = np.random.default_rng(0)
    kernel = (scale * rng.standard_normal(kernel_shape)).astype(np.float32)
    kernel.flat[:3] = [np.nan, -0.0, np.inf]  # bit patterns a value comparison would not check
    return {
        "dense": {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(rng.standard_normal(4), jnp.bfloat16)},
        "embedding": jnp.asarray(rng.integers(-(2**31), 2**31 - 1, (5, 2)), jnp.int32),
    }


def _state(kind: str, step: int = 1, scale: float = 1.0):
    params = _params(scale)
    opt_state = optax.adam(1e-3).init(params)
    if kind == "dict":
        return {"step": jnp.asarray(step, jnp.int32), "params": params, "opt_state": opt_state}
    return TrainState(step=jnp.asarray(step, jnp.int32), params=params, opt_state=opt_state)


def _assert_bitwise_equal(actual, expected) -> None:
    assert jax.tree_util.tree_structure(actual) == jax.tree_util.tree_structure(expected)
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(actual)[0], jax.tree_util.tree_leaves(expected)):
        a, b = np.asarray(a), np.asarray(b)
        assert (a.dtype, a.shape) == (b.dtype, b.shape), jax.tree_util.keystr(path)
        assert a.tobytes() == b.tobytes(), jax.tree_util.keystr(path)


def _saved(directory, kind: str = "dict", steps=(1,), keep: int | None = 3, iterator=None) -> ckpt.Checkpoints:
    checkpoints = ckpt.Checkpoints(str(directory), keep=keep)
    for step in steps:
        checkpoints.save(step, _state(kind, step, scale=step), iterator)
    checkpoints.wait()
    return checkpoints


@pytest.mark.parametrize("kind", ["dict", "TrainState"])
def test_save_restore_round_trip_is_bitwise(tmp_path, kind):
    checkpoints = _saved(tmp_path, kind, steps=(7,))
    assert checkpoints.latest_step() == 7
    restored, step = checkpoints.restore(ckpt.abstract_like(_state(kind, 0, scale=0.5)))
    checkpoints.close()
    assert step == 7 and type(restored) is type(_state(kind))
    _assert_bitwise_equal(restored, _state(kind, 7, scale=7))


def test_keep_n_and_latest_step(tmp_path):
    checkpoints = ckpt.Checkpoints(str(tmp_path), keep=2)
    assert checkpoints.latest_step() is None
    assert checkpoints.restore(ckpt.abstract_like(_state("dict"))) is None
    for step in (1, 2, 3):
        checkpoints.save(step, _state("dict", step, scale=step))
    checkpoints.wait()
    assert checkpoints.latest_step() == 3
    assert sorted(int(name) for name in os.listdir(tmp_path) if name.isdigit()) == [2, 3]
    restored, step = checkpoints.restore(ckpt.abstract_like(_state("dict")), step=2)
    checkpoints.close()
    assert step == 2
    _assert_bitwise_equal(restored, _state("dict", 2, scale=2))


def test_restore_resumes_the_data_iterator_at_exactly_the_next_element(tmp_path):
    dataset = tf.data.Dataset.range(100).shuffle(100, seed=1).batch(3)
    iterator = iter(dataset)
    [next(iterator) for _ in range(4)]
    checkpoints = ckpt.Checkpoints(str(tmp_path))
    checkpoints.save(4, _state("dict", 4), iterator)  # asynchronous: the loop goes on at once
    expected = [next(iterator).numpy().tolist() for _ in range(3)]
    checkpoints.wait()
    checkpoints.close()

    fresh = iter(dataset)
    restored = ckpt.Checkpoints(str(tmp_path)).restore(ckpt.abstract_like(_state("dict")), fresh)
    assert restored is not None and restored[1] == 4
    assert [next(fresh).numpy().tolist() for _ in range(3)] == expected
    assert any(name.startswith("process_0-of-1.") for name in os.listdir(tmp_path / "4" / "data_iterator"))


def _iterator_files_renamed(step_dir, writers: int) -> None:
    """Step `step_dir`'s data iterator as `writers` processes name theirs (each file once per process)."""
    folder = step_dir / "data_iterator"
    for name in [name for name in os.listdir(folder) if name.startswith("process_0-of-1.")]:
        for index in range(writers):
            shutil.copy(folder / name, folder / name.replace("process_0-of-1", f"process_{index}-of-{writers}"))
        os.remove(folder / name)
    ckpt.seal(step_dir)


def test_resuming_with_fewer_processes_names_the_writers_count_and_the_fix(tmp_path):
    """2 -> 1 said "written by 1 != this run's process count" of a folder of process_*-of-2 files."""
    _saved(tmp_path, iterator=iter(tf.data.Dataset.range(10))).close()
    _iterator_files_renamed(tmp_path / "1", writers=2)
    with pytest.raises(ckpt.ProcessCountMismatch) as raised:
        ckpt.Checkpoints(str(tmp_path)).restore(ckpt.abstract_like(_state("dict")), iter(tf.data.Dataset.range(10)))
    assert str(raised.value) == (
        f"no data iterator for process 0 in {tmp_path / '1' / 'data_iterator'}: the checkpoint was written by 2 "
        "processes; this run has 1: rerun with 2 processes (--process_count, or the same SLURM --nodes / TPU slice)")
    assert (tmp_path / "1").is_dir()  # a setting to fix, not a damaged step: nothing set aside


@pytest.mark.parametrize("files_of, expected", [
    ("process_0-of-1", "written by 1 process; this run has 2: rerun with 1 process (--process_count, or the same"),
    ("process_1-of-2", "the checkpoint is incomplete (it lacks process_0-of-2.index); move {step} away to resume"),
])  # fmt: skip
def test_resuming_with_more_processes_or_a_missing_file_says_which(tmp_path, files_of, expected):
    """1 -> 2 said "written by 2" of a folder of process_0-of-1 files. Said for process 0 of 2 (two processes would
    need jax.distributed; the 2 -> 1 test above goes through a restore)."""
    _saved(tmp_path, iterator=iter(tf.data.Dataset.range(10))).close()
    folder = tmp_path / "1" / "data_iterator"
    for name in os.listdir(folder):
        os.rename(folder / name, folder / name.replace("process_0-of-1", files_of))
    assert expected.format(step=tmp_path / "1") in ckpt.missing_iterator(epath.Path(folder), 0, 2)


@pytest.mark.parametrize("kind", ["dict", "TrainState"])
def test_load_params_restores_only_the_params(tmp_path, kind):
    _saved(tmp_path, kind, steps=(1, 2)).close()
    params = ckpt.load_params(str(tmp_path), ckpt.abstract_like(_params()))
    _assert_bitwise_equal(params, _params(scale=2))
    _assert_bitwise_equal(ckpt.load_params(str(tmp_path), ckpt.abstract_like(_params()), step=1), _params(scale=1))


def test_check_shapes_names_the_parameter():
    wrong = ckpt.abstract_like(_params(kernel_shape=(3, 5)))
    with pytest.raises(ValueError, match=r"\['dense'\]\['kernel'\] is \(3, 4\) in DIR but \(3, 5\)"):
        ckpt.check_shapes(_params(), wrong, "DIR")
    ckpt.check_shapes(_params(), ckpt.abstract_like(_params()), "DIR")  # equal shapes pass


def test_load_params_of_another_shape_names_the_parameter(tmp_path):
    _saved(tmp_path).close()
    with pytest.raises(ValueError, match=r"\['dense'\]\['kernel'\]"):
        ckpt.load_params(str(tmp_path), ckpt.abstract_like(_params(kernel_shape=(3, 5))))


def test_load_params_with_a_parameter_the_checkpoint_lacks_is_a_value_error(tmp_path):
    _saved(tmp_path).close()
    target = ckpt.abstract_like(_params())
    target["dense"]["scale"] = jax.ShapeDtypeStruct((4,), jnp.float32, sharding=target["dense"]["bias"].sharding)
    with pytest.raises(ValueError):
        ckpt.load_params(str(tmp_path), target)


def test_abstract_like_keeps_shapes_dtypes_and_shardings(tmp_path):
    mesh = Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("data", "model"))
    shardings = {"dense": {"kernel": NamedSharding(mesh, P(None, "model")), "bias": NamedSharding(mesh, P("model"))},
                 "embedding": NamedSharding(mesh, P("data", None))}  # fmt: skip
    params = jax.tree_util.tree_map(jax.device_put, _params(), shardings)
    abstract = ckpt.abstract_like(params)
    for leaf, array in zip(jax.tree_util.tree_leaves(abstract), jax.tree_util.tree_leaves(params)):
        assert isinstance(leaf, jax.ShapeDtypeStruct)
        assert (leaf.shape, leaf.dtype, leaf.sharding) == (array.shape, array.dtype, array.sharding)

    checkpoints = ckpt.Checkpoints(str(tmp_path))
    checkpoints.save(1, {"params": params})
    checkpoints.wait()
    restored, _ = checkpoints.restore({"params": abstract})  # a restore places every array like the abstract tree
    checkpoints.close()
    for leaf, array in zip(jax.tree_util.tree_leaves(abstract), jax.tree_util.tree_leaves(restored["params"])):
        assert array.sharding == leaf.sharding
    loaded = ckpt.load_params(str(tmp_path), abstract)
    assert jax.tree_util.tree_map(lambda x: x.sharding, loaded) == shardings
    _assert_bitwise_equal(loaded, _params())


def test_load_params_without_a_checkpoint_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        ckpt.load_params(str(tmp_path / "missing"), ckpt.abstract_like(_params()))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        ckpt.load_params(str(tmp_path), ckpt.abstract_like(_params()))  # a folder without numbered steps


def test_load_params_of_a_missing_folder_does_not_create_it(tmp_path):
    with pytest.raises(FileNotFoundError):
        ckpt.load_params(str(tmp_path / "missing"), ckpt.abstract_like(_params()))
    assert not (tmp_path / "missing").exists()


def test_a_step_is_sealed_on_a_thread_of_its_own_while_the_next_save_and_training_go_on(tmp_path, monkeypatch):
    seal, released, threads = ckpt.seal, threading.Event(), {}

    def held_seal(step_dir):
        threads[os.path.basename(str(step_dir))] = threading.current_thread().name
        assert released.wait(20), "the seal was never released: save() waited for it"
        seal(step_dir)

    monkeypatch.setattr(ckpt, "seal", held_seal)
    checkpoints = ckpt.Checkpoints(str(tmp_path))
    checkpoints.save(1, _state("dict", 1, scale=1))
    checkpoints.save(2, _state("dict", 2, scale=2))  # returns while step 1 is being sealed
    checkpoints.wait(sealed=False)  # step 2 committed, its seal queued: what the final evaluation runs beside
    assert checkpoints.latest_step() == 2 and (tmp_path / "2" / "state").is_dir()
    assert not any((tmp_path / str(step) / ckpt.CHECKSUMS_FILE).exists() for step in (1, 2))
    released.set()
    checkpoints.wait()
    assert sorted(threads) == ["1", "2"] and all(name.startswith("textchem-seal") for name in threads.values())
    for step in (1, 2):
        ckpt.verify(tmp_path / str(step), step)  # a whole seal of each step
        assert (tmp_path / str(step) / ckpt.CHECKSUMS_FILE).exists()
    restored, step = checkpoints.restore(ckpt.abstract_like(_state("dict")))
    checkpoints.close()
    assert step == 2
    _assert_bitwise_equal(restored, _state("dict", 2, scale=2))


def test_with_keep_one_each_step_is_sealed_before_the_next_save_deletes_it(tmp_path, monkeypatch, capsys):
    seal = ckpt.seal
    monkeypatch.setattr(ckpt, "seal", lambda step_dir: (time.sleep(1.0), seal(step_dir)))  # a slow bucket
    _saved(tmp_path, steps=(1, 2, 3), keep=1).close()
    assert "could not be sealed" not in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["3"]
    assert (tmp_path / "3" / ckpt.CHECKSUMS_FILE).exists()


def test_a_seal_that_fails_is_reported_and_the_step_still_restores(tmp_path, monkeypatch, capsys):
    seal = ckpt.seal

    def failing_seal(step_dir):
        if os.path.basename(str(step_dir)) == "1":
            raise OSError("quota exceeded")
        seal(step_dir)

    monkeypatch.setattr(ckpt, "seal", failing_seal)
    checkpoints = _saved(tmp_path, steps=(1, 2))
    assert "checkpoint step 1 could not be sealed (quota exceeded)" in capsys.readouterr().out
    assert not (tmp_path / "1" / ckpt.CHECKSUMS_FILE).exists() and (tmp_path / "2" / ckpt.CHECKSUMS_FILE).exists()
    restored, step = checkpoints.restore(ckpt.abstract_like(_state("dict")), step=1)
    checkpoints.close()
    assert step == 1
    _assert_bitwise_equal(restored, _state("dict", 1, scale=1))


def test_a_restored_step_that_was_never_sealed_is_sealed(tmp_path):
    """A run stopped while its last step was sealed (a SIGTERM in the final evaluation) left that step without
    checksums through every rerun, and a byte flipped in it then evaluated without a word."""
    _saved(tmp_path, steps=(1,)).close()
    sums = (tmp_path / "1" / ckpt.CHECKSUMS_FILE).read_text()
    (tmp_path / "1" / ckpt.CHECKSUMS_FILE).unlink()
    checkpoints = ckpt.Checkpoints(str(tmp_path))
    restored, step = checkpoints.restore(ckpt.abstract_like(_state("dict")))
    checkpoints.close()
    assert step == 1 and (tmp_path / "1" / ckpt.CHECKSUMS_FILE).read_text() == sums
    _assert_bitwise_equal(restored, _state("dict", 1, scale=1))


def test_sealing_and_checking_read_several_files_at_once_and_name_the_first_bad_file_in_order(tmp_path, monkeypatch):
    _saved(tmp_path, steps=(1,)).close()
    step_dir = tmp_path / "1"
    sums = json.loads((step_dir / ckpt.CHECKSUMS_FILE).read_text())
    for name, (size, sha256) in sums.items():  # what one reader, file by file, makes of them
        assert (step_dir / name).stat().st_size == size and hashlib.sha256((step_dir / name).read_bytes()).hexdigest() == sha256
    sha256, lock, reading, most = ckpt._sha256, threading.Lock(), [0], [0]

    def counted(path):
        with lock:
            reading[0] += 1
            most[0] = max(most[0], reading[0])
        time.sleep(0.05)
        try:
            return sha256(path)
        finally:
            with lock:
                reading[0] -= 1

    monkeypatch.setattr(ckpt, "_sha256", counted)
    (step_dir / ckpt.CHECKSUMS_FILE).unlink()
    ckpt.seal(step_dir)
    assert json.loads((step_dir / ckpt.CHECKSUMS_FILE).read_text()) == sums and most[0] > 1
    most[0] = 0
    ckpt.verify(step_dir, 1)
    assert most[0] > 1
    names = list(sums)  # the checksums file's order: the error names the first bad file of it
    (step_dir / names[-1]).unlink()
    with open(step_dir / names[1], "ab") as f:
        f.write(b"\0")
    with pytest.raises(ckpt.CheckpointError, match=rf"step 1: .*{re.escape(names[1])} is \d+ bytes"):
        ckpt.verify(step_dir, 1)


def test_a_checkpoint_brings_its_runs_vocabulary_and_another_one_of_its_size_is_refused(tmp_path):
    """A run's spiece.model is found from any folder a user names (MODEL_DIR, checkpoints/, one step; a T5X
    MODEL_DIR's latest checkpoint_<step>), and a model bound to another vocabulary of the same size is refused
    naming both files and the fix: the embedding fits either, and the ids decoded to garbage silently."""
    from sentencepiece import sentencepiece_model_pb2

    from helpers import tiny_t5
    from textchem_jax.data import vocabulary as vocabularies
    from textchem_jax.model_loading import check_checkpoint_vocabulary

    default = vocabularies.default_vocabulary()
    run = tmp_path / "run"
    (run / "checkpoints" / "4").mkdir(parents=True)
    tf.io.gfile.copy(vocabularies.vocabulary_file(default), str(run / "spiece.model"))
    for folder in (run, run / "checkpoints", run / "checkpoints" / "4"):
        assert vocabularies.own_vocabulary_file(folder) == f"{run}/spiece.model", folder
    t5x = tmp_path / "t5x"
    for step in (2, 10):
        (t5x / f"checkpoint_{step}").mkdir(parents=True)
        (t5x / f"checkpoint_{step}" / "spiece.model").write_bytes((run / "spiece.model").read_bytes())
    assert vocabularies.own_vocabulary_file(t5x) == f"{t5x}/checkpoint_10/spiece.model"
    assert vocabularies.own_vocabulary_file(tmp_path) is None

    model = dataclasses.replace(tiny_t5(), vocabulary=default)
    check_checkpoint_vocabulary(model, str(run / "checkpoints" / "4"))  # the same bytes: the run's own
    check_checkpoint_vocabulary(dataclasses.replace(model, vocabulary=None), str(run))  # no vocabulary to hold against it
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString((run / "spiece.model").read_bytes())
    proto.pieces[10].piece, proto.pieces[11].piece = proto.pieces[11].piece, proto.pieces[10].piece
    (run / "spiece.model").write_bytes(proto.SerializeToString())  # the same size, two ids swapped
    with pytest.raises(ValueError, match=rf"trained with the vocabulary {run}/spiece.model, but VOCABULARY is .*"
                                         rf"TEXTCHEM_VOCABULARY={run}/spiece.model"):  # fmt: skip
        check_checkpoint_vocabulary(model, str(run / "checkpoints" / "4"))


# textchem-eval beside a training run: which step's weights are decoded, and which step the files say.
_EVAL_TASK = "textchem_demo_forward"


def _tiny_t5_params(seed: int) -> dict:
    import flax.linen as nn

    from helpers import tiny_t5

    return jax.tree_util.tree_map(np.asarray, nn.meta.unbox(tiny_t5().init(jax.random.key(seed))))


def _save_run_steps(run, steps) -> None:
    """Real run checkpoints (`MODEL_DIR/checkpoints/<step>`) of a tiny T5, each step its own random weights."""
    checkpoints = ckpt.Checkpoints(str(run / "checkpoints"), keep=None)
    for step in steps:
        checkpoints.save(step, {"step": jnp.asarray(step, jnp.int32), "params": _tiny_t5_params(step)})
    checkpoints.close()


def _eval_cfg():
    from helpers import LENGTHS

    import tasks  # noqa: F401  (registers the demo tasks)
    from textchem_jax.run_config import DatasetConfig

    return DatasetConfig(_EVAL_TASK, LENGTHS, "test", 4, shuffle=False, pack=False, num_examples=4)


def _predictions(path) -> list:
    return [json.loads(line)["prediction"] for line in path.read_text().splitlines()]


def _metric_steps(output_dir) -> list[int]:
    return [json.loads(line)["step"] for line in (output_dir / f"{_EVAL_TASK}-metrics.jsonl").read_text().splitlines()]


def _reference_predictions(tmp_path, steps) -> dict[int, list]:
    """Each step's predictions, decoded here from the parameters saved as that step."""
    from helpers import tiny_t5

    from textchem_jax import partitioning
    from textchem_jax.evaluator import InferenceEvaluator

    out = tmp_path / "reference"
    evaluator = InferenceEvaluator(tiny_t5(), _eval_cfg(), str(out), partitioning.make_mesh())
    for step in steps:
        evaluator.evaluate(_tiny_t5_params(step), step=step)
    return {step: _predictions(out / f"{_EVAL_TASK}-{step:06}.jsonl") for step in steps}


def test_eval_labels_its_files_with_the_step_it_decoded_though_a_newer_one_is_saved_meanwhile(tmp_path, monkeypatch, capsys):
    """A training run saved step 2 while textchem-eval, which had restored step 1, built its evaluator: the files were
    labelled 2 (the folder listed again after loading). The step is resolved once, loaded and named everywhere; a step
    orbax is still writing (`<step>.orbax-checkpoint-tmp-*`) is not a checkpoint yet."""
    from helpers import tiny_t5

    from textchem_jax import evaluate
    from textchem_jax.model_loading import resolve_checkpoint

    run, out = tmp_path / "run", tmp_path / "eval"
    _save_run_steps(run, [1])
    (run / "checkpoints" / "5.orbax-checkpoint-tmp-1700000000" / "state").mkdir(parents=True)  # being written
    built, real = [], evaluate.InferenceEvaluator

    def newer_step_saved_first(*args, **kwargs):  # training saves step 2 between the load and the labelling
        _save_run_steps(run, [2])
        built.append(True)
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "InferenceEvaluator", newer_step_saved_first)
    evaluate.evaluate(model=tiny_t5(), checkpoint_path=str(run), dataset_cfg=_eval_cfg(), output_dir=str(out))
    assert built and (run / "checkpoints" / "2").is_dir()
    assert sorted(path.name for path in (out / "inference_eval").glob(f"{_EVAL_TASK}-0*.jsonl")) == [f"{_EVAL_TASK}-000001.jsonl"]
    assert _metric_steps(out / "inference_eval") == [1]  # as t5x.eval lays EVAL_OUTPUT_DIR out
    assert f"evaluating step 1 of {run}" in capsys.readouterr().out
    reference = _reference_predictions(tmp_path, [1, 2])
    assert reference[1] != reference[2]  # the two steps' weights tell apart
    assert _predictions(out / "inference_eval" / f"{_EVAL_TASK}-000001.jsonl") == reference[1]
    assert resolve_checkpoint(str(run)) == (str(run / "checkpoints" / "2"), 2) and resolve_checkpoint(str(run))[1] == 2
    assert resolve_checkpoint(str(run / "checkpoints" / "1")) == (str(run / "checkpoints" / "1"), 1)


def test_eval_of_all_steps_evaluates_each_once_and_a_rerun_only_the_new_ones(tmp_path, monkeypatch, capsys):
    """`checkpoint_steps='all'` (T5X's eval of every checkpoint): every complete step in order, each once, with one
    evaluator (decoding compiled once); the same command again evaluates only the steps saved since."""
    from helpers import tiny_t5

    from textchem_jax import evaluate

    run, out = tmp_path / "run", tmp_path / "eval"
    _save_run_steps(run, [1, 2])
    (run / "checkpoints" / "3.orbax-checkpoint-tmp-1700000000" / "state").mkdir(parents=True)  # being written
    built, evaluated = [], []
    real = evaluate.InferenceEvaluator

    class Counting(real):
        def __init__(self, *args, **kwargs):
            built.append(True)
            super().__init__(*args, **kwargs)

        def evaluate(self, params, step):
            evaluated.append(step)
            return super().evaluate(params, step)

    monkeypatch.setattr(evaluate, "InferenceEvaluator", Counting)

    def run_eval():
        built.clear(), evaluated.clear()
        return evaluate.evaluate(model=tiny_t5(), checkpoint_path=str(run), dataset_cfg=_eval_cfg(), output_dir=str(out),
                                 checkpoint_steps="all")  # fmt: skip

    results = run_eval()
    assert (evaluated, len(built), sorted(results)) == ([1, 2], 1, [1, 2])
    printed = capsys.readouterr().out
    assert printed.index("evaluating step 1 (1 of 2)") < printed.index("evaluating step 2 (2 of 2)")
    assert _metric_steps(out / "inference_eval") == [1, 2]

    _save_run_steps(run, [4])
    results = run_eval()
    assert (evaluated, len(built), sorted(results)) == ([4], 1, [4])
    assert "already evaluated in" in capsys.readouterr().out
    assert _metric_steps(out / "inference_eval") == [1, 2, 4]
    reference = _reference_predictions(tmp_path, [1, 2, 4])
    assert len({json.dumps(predictions) for predictions in reference.values()}) == 3
    for step in (1, 2, 4):
        assert _predictions(out / "inference_eval" / f"{_EVAL_TASK}-{step:06}.jsonl") == reference[step], step

    assert run_eval() == {} and (evaluated, built) == ([], [])  # nothing new: no evaluator built
    assert "no new step" in capsys.readouterr().out
    metrics = f"{_EVAL_TASK}-metrics.jsonl"
    (out / "inference_eval" / metrics).replace(out / metrics)  # an EVAL_OUTPUT_DIR written before inference_eval/
    assert run_eval() == {} and (evaluated, built) == ([], [])  # its steps are found there: evaluated already

    from textchem_jax import provenance  # what made each step's metrics line: checkpoint, decoder, versions

    recorded = provenance.history(str(out))
    assert [(entry["step"], entry["checkpoint"]) for entry in recorded] == [(s, str(run / "checkpoints" / str(s))) for s in (1, 2, 4)]
    assert recorded[0]["decoder"] == "greedy (the model's default)" and recorded[0]["versions"]["rdkit"] != "not installed"
    assert recorded[0]["task_feature_lengths"] == dict(_eval_cfg().task_feature_lengths)


def test_eval_of_all_steps_says_the_steps_its_run_saved_meanwhile(tmp_path, monkeypatch, capsys):
    """'all' beside a live run evaluates the steps on disk when it started, and exited 0 saying nothing of those the
    run saved since: one line at the end names them."""
    from helpers import tiny_t5

    from textchem_jax import evaluate

    run, out = tmp_path / "run", tmp_path / "eval"
    _save_run_steps(run, [1, 2])
    real = evaluate.InferenceEvaluator

    class RunSavesWhileEvaluated(real):  # the live run: steps 3 and 4 are saved while step 2 is evaluated
        def evaluate(self, params, step):
            if step == 2:
                _save_run_steps(run, [3, 4])
            return super().evaluate(params, step)

    monkeypatch.setattr(evaluate, "InferenceEvaluator", RunSavesWhileEvaluated)
    assert sorted(_evaluate_all(tiny_t5(), run, out)) == [1, 2]
    assert capsys.readouterr().out.splitlines()[-1] == "the run has saved steps 3-4 since; rerun to evaluate them"


def _evaluate_all(model, run, out):
    from textchem_jax import evaluate

    return evaluate.evaluate(model=model, checkpoint_path=str(run), dataset_cfg=_eval_cfg(), output_dir=str(out),
                             checkpoint_steps="all")  # fmt: skip


def test_eval_of_all_steps_evaluates_again_a_step_whose_metrics_line_is_cut_short(tmp_path, caplog):
    """A metrics line cut short (a write or copy stopped in it) ended 'all' with "Unterminated string starting at:
    line 1 column 32 (char 31)", naming no file. The cut last line is dropped with one warning naming file:line, its
    step evaluated again and its line appended whole (seqio appends to the text as it is: glued to the cut one); a
    damaged line before others is skipped with the warning run_results gives (file and line), its step evaluated."""
    from helpers import tiny_t5

    run, out = tmp_path / "run", tmp_path / "eval"
    _save_run_steps(run, [1, 2])
    _evaluate_all(tiny_t5(), run, out)
    metrics = out / "inference_eval" / f"{_EVAL_TASK}-metrics.jsonl"
    text = metrics.read_text()
    metrics.write_text(text[:-20])
    caplog.clear()
    assert sorted(_evaluate_all(tiny_t5(), run, out)) == [2]
    assert caplog.text.count("cut short") == 1
    assert f"{metrics}:2: the last line is cut short" in caplog.text
    assert _metric_steps(out / "inference_eval") == [1, 2]  # every line whole
    assert metrics.read_text().startswith(text.splitlines()[0] + "\n")

    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join([lines[0][:20], *lines[1:]]) + "\n")  # step 1's line damaged, step 2's after it
    caplog.clear()
    assert sorted(_evaluate_all(tiny_t5(), run, out)) == [1]
    assert f"{metrics}: skipped 1 line(s) that are not JSON (line 1)" in caplog.text


def test_eval_of_all_steps_skips_a_step_its_run_deletes_while_it_loads(tmp_path, capsys):
    """A run keeping N checkpoints deletes the oldest as it saves, also while 'all' loads one: beside a run keeping
    3 (period 10) it ended rc=2 ("Could not find directory .../checkpoints/330") where the README promises the
    step skipped. The step's folder goes after the load checked it, when the loader asks the model for its shapes."""
    import shutil

    from helpers import tiny_t5

    run, out = tmp_path / "run", tmp_path / "eval"
    _save_run_steps(run, [1, 2])
    deleted = []

    class DeletedWhileLoading(type(tiny_t5())):
        def abstract_params(self):
            if not deleted:  # the first load: step 1's
                deleted.append(run / "checkpoints" / "1")
                shutil.rmtree(deleted[0])
            return super().abstract_params()

    results = _evaluate_all(DeletedWhileLoading(tiny_t5().config), run, out)
    assert deleted and sorted(results) == [2]
    assert (f"step 1 (1 of 2): {run / 'checkpoints' / '1'} was deleted before its turn (the run keeps only its latest "
            "checkpoints), skipped") in capsys.readouterr().out  # fmt: skip
    assert _metric_steps(out / "inference_eval") == [2]


def test_eval_of_all_steps_stops_at_a_damaged_step_though_newer_ones_are_saved(tmp_path):
    """A step that stays in its folder but cannot be read is not one its run deleted: its error stands."""
    from helpers import tiny_t5

    run = tmp_path / "run"
    _save_run_steps(run, [1, 2])
    files = [p for p in (run / "checkpoints" / "1" / "state").rglob("*") if p.is_file()]
    array = max(files, key=lambda p: p.stat().st_size)  # the parameters' data
    data = bytearray(array.read_bytes())
    data[len(data) // 2] ^= 0xFF
    array.write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match=rf"step 1: .*{array.name}"):
        _evaluate_all(tiny_t5(), run, tmp_path / "eval")
    assert not (tmp_path / "eval" / "inference_eval" / f"{_EVAL_TASK}-metrics.jsonl").exists()


def test_every_checkpoint_kind_resolves_to_a_concrete_checkpoint_and_its_step(tmp_path):
    """What `textchem-eval` loads and labels: a run's or a T5X MODEL_DIR's steps (a T5X step still being written,
    `checkpoint_<step>.tmp-*`, is none), one step as it is, a converted directory as step 0."""
    from textchem_jax import t5x_checkpoints
    from textchem_jax.model_loading import checkpoint_format, complete_checkpoints, resolve_checkpoint, write_params

    params = _tiny_t5_params(0)
    t5x = tmp_path / "t5x"
    for step in (10, 2):
        t5x_checkpoints.write_checkpoint(str(t5x), params, step)
    (t5x / "checkpoint_12.tmp-1700000000").mkdir()
    assert complete_checkpoints(str(t5x)) == [(f"{t5x}/checkpoint_2", 2), (f"{t5x}/checkpoint_10", 10)]
    assert resolve_checkpoint(str(t5x)) == (f"{t5x}/checkpoint_10", 10)
    assert complete_checkpoints(f"{t5x}/checkpoint_2") == [(f"{t5x}/checkpoint_2", 2)]
    (tmp_path / "converted").mkdir()
    write_params(tmp_path / "converted", params)
    assert checkpoint_format(str(tmp_path / "converted")) == "converted"
    assert complete_checkpoints(str(tmp_path / "converted")) == [(str(tmp_path / "converted"), 0)]
    run = tmp_path / "run"
    _save_run_steps(run, [3, 1])
    steps = [(f"{run}/checkpoints/1", 1), (f"{run}/checkpoints/3", 3)]
    assert complete_checkpoints(str(run)) == complete_checkpoints(f"{run}/checkpoints/") == steps
    assert resolve_checkpoint(str(tmp_path / "missing")) == (str(tmp_path / "missing"), 0)  # loading says what is missing
