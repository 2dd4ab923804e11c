"""`gs://` on every path, against a real GCS protocol server on loopback (tests/gcs_emulator.py).

The quickstart trains with MODEL_DIR=gs://..., from a gin file in the bucket, checkpoints, resumes,
evaluates; the run is exported to a Hugging Face directory in the bucket, imported back, and scored. Every
object is checked in the emulator's own listing, not through the clients under test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import gcs_emulator
from helpers import ONE_TASK_EVALUATION

BUCKET = f"gs://{gcs_emulator.BUCKET}"


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    """The emulator's client settings, also set in this process for the in-process checks."""
    with gcs_emulator.running(tmp_path_factory.mktemp("gcs")) as env:
        saved = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        try:
            yield env
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _run(gcs, *command: str, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(command, env={**os.environ, **gcs}, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command[0]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result


def test_gcs_clients_reach_the_emulator(gcs):
    """tf.io.gfile (through the TLS proxy), etils.epath and TensorStore (its own endpoint setting) write objects
    that the emulator lists, and read them back."""
    import tensorflow as tf
    import tensorstore as ts
    from etils import epath

    with tf.io.gfile.GFile(f"{BUCKET}/clients/gfile.txt", "w") as f:
        f.write("x" * 300_000)  # over 256 KiB: a chunked resumable upload
    (epath.Path(BUCKET) / "clients" / "epath.txt").write_text("epath")
    store = ts.open({"driver": "zarr", "kvstore": f"{BUCKET}/clients/array/"}, create=True, dtype=ts.int32, shape=[3]).result()
    store.write([1, 2, 3]).result()
    assert {"clients/gfile.txt", "clients/epath.txt", "clients/array/.zarray"} <= set(gcs_emulator.list_objects(gcs, "clients/"))
    assert tf.io.gfile.GFile(f"{BUCKET}/clients/gfile.txt").read() == "x" * 300_000
    assert [line.numpy() for line in tf.data.TextLineDataset(f"{BUCKET}/clients/epath.txt")] == [b"epath"]
    assert store.read().result().tolist() == [1, 2, 3]


@pytest.mark.slow
def test_quickstart_on_gcs_trains_checkpoints_resumes_evaluates_exports_and_scores(gcs, tmp_path, capsys):
    """Training, evaluation and the export run as commands; the import and scoring in this process (through
    the `main`s of their console scripts), which has the emulator's settings too."""
    import tensorflow as tf

    from textchem_jax import convert, score

    run, gin_file = f"{BUCKET}/run", f"{BUCKET}/configs/quickstart_tiny.gin"
    with tf.io.gfile.GFile(gin_file, "w") as f:  # a gin file in the bucket, including a packaged one
        f.write("include 'experiments/quickstart.gin'\n"
                "TASK_FEATURE_LENGTHS = {'inputs': 64, 'targets': 32}\nBATCH_SIZE = 4\n"
                "run_config.CheckpointConfig.period = 2\ntrain_lib.train.log_period = 1\ntrain_lib.train.eval_steps = 1\n"
                "infer_eval/run_config.DatasetConfig.num_examples = 2\n")  # fmt: skip
    train = ["textchem-train", f"--gin_file={gin_file}", f"--gin.MODEL_DIR='{run}'"]
    first = _run(gcs, *train, "--gin.TRAIN_STEPS=2")
    assert "resumed" not in first.stdout
    # lengths 64/32 cut some demo examples: counted per task and feature, in place of SeqIO's "*may be*" warning
    assert "textchem_demo_paragraph2actions: 2 of 2 validation examples have inputs longer than 64" in first.stderr
    assert "*may be* insufficient" not in first.stderr
    # A gs:// gin file that is not there: gin tried it under each search path, `.../gin_configs/gs://...`, which was
    # taken for remote and ended in a KeyError traceback from etils.
    missing = subprocess.run(["textchem-train", f"--gin_file={BUCKET}/configs/missing.gin", f"--gin.MODEL_DIR='{run}'"],
                             env={**os.environ, **gcs}, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert missing.returncode == 2 and "Traceback" not in missing.stderr, missing.stderr
    assert f"configuration error: Unable to open file: {BUCKET}/configs/missing.gin" in missing.stderr
    second = _run(gcs, *train, "--gin.TRAIN_STEPS=4", *ONE_TASK_EVALUATION)  # the forward task's rows go on
    assert f"resumed from step 2 in {run}/checkpoints" in second.stdout

    stored = gcs_emulator.list_objects(gcs, "run/")
    for step in (2, 4):
        assert f"run/checkpoints/{step}/commit_success.txt" in stored  # orbax's completion marker on GCS
        assert f"run/checkpoints/{step}/textchem-checksums.json" in stored  # sealed (step 4 beside the final eval)
    assert {"run/config.gin", "run/spiece.model"} <= set(stored)
    assert any(name.startswith("run/train/events.out.tfevents") for name in stored)
    metrics_file = f"{run}/inference_eval/textchem_demo_forward-metrics.jsonl"
    rows = [json.loads(line) for line in tf.io.gfile.GFile(metrics_file).read().splitlines()]
    assert [row["step"] for row in rows] == [2, 4] and "accuracy" in rows[-1]

    evaluation = f"{BUCKET}/eval"
    quickstart_model = ["--gin.config.t5_config.d_model=128", "--gin.config.t5_config.d_kv=32", "--gin.config.t5_config.d_ff=256"]
    _run(gcs, "textchem-eval", "--gin_file=models/t5_1_1_tiny.gin", "--gin_file=runs/eval.gin", *quickstart_model,
         f"--gin.CHECKPOINT_PATH='{run}'", f"--gin.EVAL_OUTPUT_DIR='{evaluation}'",
         "--gin.MIXTURE_OR_TASK_NAME='textchem_demo_forward'", "--gin.run_config.DatasetConfig.num_examples=2",
         "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 32}")  # fmt: skip
    assert any(name.endswith("-metrics.jsonl") for name in gcs_emulator.list_objects(gcs, "eval/"))

    hf, converted = f"{BUCKET}/hf", f"{BUCKET}/converted"
    exported = _run(gcs, "textchem-convert", f"--checkpoint_dir={run}", f"--hf_output_dir={hf}")
    # The console is for people: no TensorFlow start-up lines, no orbax notes. TensorStore's C++ note on the
    # emulator's test token is all there is (a real bucket has real credentials).
    assert [line for line in exported.stderr.splitlines() if "GOOGLE_AUTH_TOKEN_FOR_TESTING" not in line] == []
    assert {"hf/config.json", "hf/model.safetensors", "hf/spiece.model", "hf/tokenizer.json",
            "hf/tokenizer_config.json"} <= set(gcs_emulator.list_objects(gcs, "hf/"))  # fmt: skip
    assert convert.main([f"--hf_dir={hf}", f"--output_dir={converted}"]) == 0
    assert {"converted/params.npz", "converted/t5_config.json", "converted/model.gin", "converted/spiece.model"} <= set(
        gcs_emulator.list_objects(gcs, "converted/"))

    from etils import epath
    from helpers import checkpoint_params

    from textchem_jax.model_loading import read_params
    from textchem_jax.models.config import T5Config

    config = T5Config.from_dict(json.loads(tf.io.gfile.GFile(f"{converted}/t5_config.json").read()))
    round_trip = read_params(converted, config)
    trained = checkpoint_params(epath.Path(run), 4)  # what the gs:// run holds, through gs:// HF and back
    np.testing.assert_array_equal(round_trip["token_embedder"]["embedding"], trained["['token_embedder']['embedding']"])

    capsys.readouterr()  # the run's whole gs:// inference_eval folder, and one file of it
    assert score.main([f"--predictions={run}/inference_eval", f"--output={BUCKET}/new/folder/scores.json"]) == 0
    assert "accuracy" in capsys.readouterr().out
    in_folder = json.loads(tf.io.gfile.GFile(f"{BUCKET}/new/folder/scores.json").read())
    assert score.main([f"--predictions={run}/inference_eval/textchem_demo_forward-000004.jsonl", f"--output={BUCKET}/one.json"]) == 0
    alone = json.loads(tf.io.gfile.GFile(f"{BUCKET}/one.json").read())["textchem_demo_forward"]
    assert "accuracy" in alone and alone in in_folder.values()
    assert score.main([f"--predictions={run}/inference_eval", f"--output={BUCKET}/new/folder"]) == 0  # a folder there
    assert json.loads(tf.io.gfile.GFile(f"{BUCKET}/new/folder/scores.json").read()) == in_folder
    assert f"Metrics written to {BUCKET}/new/folder/scores.json" in capsys.readouterr().out


def test_a_bucket_that_does_not_exist_is_one_error_not_a_hang(gcs):
    """TensorFlow's recursive folder creation loops forever at the root of a missing bucket (Ctrl-C ignored):
    MODEL_DIR, --output and every other folder we make is checked first, and the command ends in one line."""
    import threading

    from textchem_jax import paths

    errors = []
    attempt = threading.Thread(target=lambda: _raised(errors, paths.makedirs, "gs://no-such-bucket/run/eval"), daemon=True)
    attempt.start()
    attempt.join(60)
    assert not attempt.is_alive(), "paths.makedirs hung on a missing bucket"
    assert isinstance(errors[0], FileNotFoundError) and "the bucket gs://no-such-bucket does not exist" in str(errors[0])
    # textchem-tpu's loop, whose run saved nothing there, said "is TRAIN_STEPS set?" (the loop sets it itself)
    assert paths.missing_bucket("gs://no-such-bucket/run") == str(errors[0]).replace("/run/eval", "/run")
    assert paths.missing_bucket(f"{BUCKET}/run") is None and paths.missing_bucket("/tmp/run") is None
    result = subprocess.run(["textchem-score", "--output=gs://no-such-bucket/scores.json"], env={**os.environ, **gcs},
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 2 and "gs://no-such-bucket does not exist" in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr


def _raised(errors: list, function, *args) -> None:
    try:
        function(*args)
    except Exception as error:  # noqa: BLE001  (the test asserts which)
        errors.append(error)


def test_data_vocabularies_and_t5x_checkpoints_in_the_bucket(gcs):
    """Dataset folders, a vocabulary trained straight into the bucket, and a T5X checkpoint written there
    read back equal to their local counterparts."""
    import flax.linen as nn
    import jax
    import tensorflow as tf
    from helpers import tiny_t5

    from textchem_jax import t5x_checkpoints
    from textchem_jax.data import datasets
    from textchem_jax.data import vocabulary as vocabularies
    from textchem_jax.data.demo.corpus import demo_data_dir

    local = demo_data_dir()
    for name in ("chebi20/test.txt", "paragraph2actions/src-test.txt", "paragraph2actions/tgt-test.txt"):
        tf.io.gfile.makedirs(os.path.dirname(f"{BUCKET}/data/{name}"))
        tf.io.gfile.copy(str(local / name), f"{BUCKET}/data/{name}", overwrite=True)
    for dataset in ("chebi20", "paragraph2actions"):
        remote = datasets.read_dataset(dataset, "test", f"{BUCKET}/data")
        assert remote and remote == datasets.read_dataset(dataset, "test", str(local))

    texts = [record.smiles for record in datasets.read_dataset("chebi20", "test", str(local))]
    path = vocabularies.train_vocabulary(texts, f"{BUCKET}/vocab/chem", vocab_size=600, hard_vocab_limit=False)
    assert path == f"{BUCKET}/vocab/chem.model" and "vocab/chem.model" in gcs_emulator.list_objects(gcs, "vocab/")
    vocabulary = vocabularies.load_vocabulary(path)
    assert vocabulary.decode(vocabulary.encode(texts[0])) == texts[0]

    params = jax.tree_util.tree_map(np.asarray, nn.meta.unbox(tiny_t5("1.1").init(jax.random.key(3))))
    written = t5x_checkpoints.write_checkpoint(f"{BUCKET}/t5x", params, 3, vocabulary=path)
    assert written == f"{BUCKET}/t5x/checkpoint_3" and "t5x/checkpoint_3/checkpoint" in gcs_emulator.list_objects(gcs, "t5x/")
    read, step = t5x_checkpoints.read_checkpoint(f"{BUCKET}/t5x")
    assert step == 3
    for got, want in zip(jax.tree_util.tree_leaves(read), jax.tree_util.tree_leaves(params), strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_slurm_jobs_step_check_reads_a_bucket_quietly(gcs):
    """`textchem-tpu --slurm`'s check of MODEL_DIR's step, as the job runs it: TensorFlow (for gs:// only) printed
    its C++ start-up lines into the job log at every attempt."""
    import tensorflow as tf

    for folder in ("checkpoints/7", "checkpoint_5", "checkpoints/9.orbax-checkpoint-tmp-1"):  # ours, T5X's, unfinished
        tf.io.gfile.makedirs(f"{BUCKET}/slurm_run/{folder}")
    check = "import sys; from textchem_jax.tpu import run_step; print(run_step(sys.argv[1]))"
    result = _run(gcs, sys.executable, "-c", check, f"{BUCKET}/slurm_run")
    assert result.stdout == "7\n"
    assert not [line for line in result.stderr.splitlines() if "InitializeLog" in line or "cudart_stub" in line]


def test_a_bucket_that_cannot_be_reached_says_what_to_check(capsys):
    """With no network (or a proxy or DNS that does not answer), `--gin.MODEL_DIR="'gs://bucket/run'"` ended in
    TensorFlow's "Error executing an HTTP request: libcurl code 6 ... Could not resolve host: www.googleapis.com
    when reading metadata of gs://..." with no fix. The line keeps that detail and says what to check."""
    import tensorflow as tf

    from textchem_jax.cli import command

    detail = ("Error executing an HTTP request: libcurl code 6 meaning 'Could not resolve hostname', error details: "
              "Could not resolve host: www.googleapis.com\n\t when reading metadata of gs://no-such-bucket/run")  # fmt: skip

    @command
    def unreachable() -> int:
        raise tf.errors.FailedPreconditionError(None, None, detail)

    assert unreachable() == 2
    (said,) = capsys.readouterr().err.strip().splitlines()  # one line
    assert ("Could not resolve host: www.googleapis.com when reading metadata of gs://no-such-bucket/run: Cloud Storage "
            "could not be reached (no network, or a proxy or DNS problem)") in said, said  # fmt: skip
    assert "storage.googleapis.com" in said and "gcloud auth application-default login" in said

    @command
    def missing() -> int:  # a file that is not there: no word of the network
        raise tf.errors.NotFoundError(None, None, "gs://bucket/run/config.gin; No such file or directory")

    assert missing() == 2 and "Cloud Storage could not be reached" not in capsys.readouterr().err
