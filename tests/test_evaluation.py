"""Inference evaluation as the paper reports it: every beam reaches the metrics (top-k accuracy), the
model under evaluation is the retrosynthesis round trip's forward predictor, a caption tokenizer from gin;
evaluation and `textchem-infer` decode every batch in one compiled shape."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import threading

import flax.linen as nn
import jax
import numpy as np
import pytest
import seqio
from helpers import LENGTHS, predict, tiny_t5

import tasks  # noqa: F401  (registers the demo tasks)
from textchem_jax import metrics, partitioning
from textchem_jax.catalogue import PROMPTS
from textchem_jax.evaluator import InferenceEvaluator
from textchem_jax.models.beam_search import beam_search
from textchem_jax.run_config import DatasetConfig


@functools.cache
def _model_and_params():
    model = tiny_t5()
    return model, jax.tree_util.tree_map(np.asarray, nn.meta.unbox(model.init(jax.random.key(7))))


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_postprocessors_clean_every_beam():
    assert metrics.smiles_postprocessor([" C C O </s>", "c1ccccc1 "]) == ["CCO", "c1ccccc1"]
    assert metrics.gt4sd_smiles_postprocessor(["C/C=C<unk>C", "CC"]) == ["C/C=C\\C", "CC"]
    assert metrics.retro_postprocessor(["CC.O", "CO"], example={"product": "CCO"}) == ["CC.O", "CO"]
    assert metrics.retro_postprocessor("CC.O", example={"product": "CCO"}, is_target=True) == {"target": "CC.O", "product": "CCO"}


def test_beams_reach_the_metrics_as_top_k_accuracy(tmp_path):
    model, params = _model_and_params()
    cfg = DatasetConfig("textchem_demo_forward", LENGTHS, "test", 4, shuffle=False, pack=False, num_examples=6)
    evaluator = InferenceEvaluator(
        model, cfg, str(tmp_path), partitioning.make_mesh(), decode_fn=functools.partial(beam_search, num_decodes=3)
    )
    results = evaluator.evaluate(params, step=5)["textchem_demo_forward"]
    assert {"accuracy", "accuracy_top2", "accuracy_top3", "invalid_rate"} <= set(results)
    rows = _rows(tmp_path / "textchem_demo_forward-000005.jsonl")
    assert len(rows) == 6 and all(len(row["prediction"]) == 3 for row in rows)  # three beams, best first
    expected = metrics.forward_metrics([row["target"] for row in rows], [row["prediction"] for row in rows])
    assert results == pytest.approx(expected)


def test_a_split_no_task_has_is_an_error_not_an_empty_evaluation(tmp_path):
    """seqio drops the tasks without the split and says so only in a log: evaluation ran on nothing and ended 0."""
    cfg = DatasetConfig("textchem_demo", LENGTHS, "valid", 4, shuffle=False, pack=False)
    with pytest.raises(ValueError, match="no task of textchem_demo has a split 'valid'.*test, train, validation"):
        InferenceEvaluator(tiny_t5(), cfg, str(tmp_path), partitioning.make_mesh())


def test_the_model_itself_is_the_round_trip_forward_predictor(tmp_path, capsys):
    model, params = _model_and_params()
    cfg = DatasetConfig("textchem_demo_retro", LENGTHS, "test", 4, shuffle=False, pack=False, num_examples=6)
    evaluator = InferenceEvaluator(model, cfg, str(tmp_path), partitioning.make_mesh())
    forward = evaluator.forward_predictor(params)

    # What it predicts for precursors is what decoding the forward task's own tokenized example gives.
    task = seqio.get_mixture_or_task("textchem_demo_forward")
    examples = list(task.get_dataset(LENGTHS, split="test", shuffle=False).take(5).as_numpy_iterator())
    precursors = [example["inputs_pretokenized"].decode().removeprefix(PROMPTS["forward"]) for example in examples]
    tokens = np.zeros((len(examples), LENGTHS["inputs"]), np.int32)
    for row, example in enumerate(examples):
        tokens[row, : len(example["inputs"])] = example["inputs"]
    sequences, _ = predict(model, params, {"encoder_input_tokens": tokens}, max_decode_length=LENGTHS["targets"])
    vocab = task.output_features["targets"].vocabulary
    expected = [metrics.smiles_postprocessor(vocab.decode(row[0].tolist())) for row in np.asarray(sequences)]
    assert forward(precursors) == expected
    assert "round trip (forward model): 5/5 precursors in " in capsys.readouterr().out  # its progress line
    assert forward(precursors[:3]) + forward(precursors[3:]) == expected  # batching changes nothing

    capsys.readouterr()
    results = evaluator.evaluate(params, step=2)["textchem_demo_retro"]
    assert not math.isnan(results["roundtrip_accuracy"])
    assert "textchem_demo_retro: round trip (forward model): " in capsys.readouterr().out  # a notation's say theirs
    rows = _rows(tmp_path / "textchem_demo_retro-000002.jsonl")
    recomputed = metrics.retro_metrics([row["target"] for row in rows], [row["prediction"] for row in rows], forward_fn=forward)
    assert results["roundtrip_accuracy"] == recomputed["roundtrip_accuracy"]


def test_caption_tokenizer_reaches_the_registered_caption_metric(tmp_path):
    """What `CAPTION_TOKENIZER` sets for an evaluation is the tokenizer mol2text's BLEU/METEOR use."""
    transformers = pytest.importorskip("transformers")

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "molecule", "is", "a", "benz", "##ene"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizer(str(tmp_path / "vocab.txt")).save_pretrained(str(tmp_path / "scibert"))
    (mol2text,) = seqio.get_mixture_or_task("textchem_demo_mol2text").metric_fns
    targets, predictions = ["the molecule is a benzene"], ["the molecule is a benzfoo"]
    default = mol2text(targets, predictions)
    with metrics.metric_settings(caption_tokenizer=str(tmp_path / "scibert")):
        word_pieces = mol2text(targets, predictions)
    assert word_pieces["bleu2"] == pytest.approx(metrics.mol2text_metrics(targets, predictions, tokenizer=str(tmp_path / "scibert"))["bleu2"])
    assert word_pieces["bleu2"] != pytest.approx(default["bleu2"])  # "benzfoo" is [UNK] there, one wrong word here
    assert metrics.settings.current().caption_tokenizer is None  # only inside the evaluation


def test_a_caption_tokenizer_that_is_not_there_stops_eval_and_train_before_they_start(tmp_path):
    """A wrong CAPTION_TOKENIZER was met in the mol2text metrics, after the whole split was decoded (hours at
    ChEBI-20 with 10 beams), and the predictions were lost; training met it at its first evaluation."""
    import optax

    from textchem_jax import evaluate
    from textchem_jax import train as train_lib
    from textchem_jax.run_config import CheckpointConfig

    missing = str(tmp_path / "scibert")
    cfg = DatasetConfig("textchem_demo_mol2text", LENGTHS, "validation", batch_size=2, shuffle=False, pack=False)
    with pytest.raises(ValueError, match="the caption tokenizer .*scibert' is not a local folder"):
        evaluate.evaluate(model=tiny_t5(), checkpoint_path=str(tmp_path / "no_run"), dataset_cfg=cfg,
                          output_dir=str(tmp_path / "eval"), caption_tokenizer=missing)  # fmt: skip
    with pytest.raises(ValueError, match="the caption tokenizer .*scibert' is not a local folder"):
        train_lib.train(model=tiny_t5(), model_dir=str(tmp_path / "run"), optimizer=optax.adamw(1e-3), total_steps=2,
                        train_dataset_cfg=dataclasses.replace(cfg, split="train"), checkpoint_cfg=CheckpointConfig(),
                        caption_tokenizer=missing)  # fmt: skip
    assert not list(tmp_path.iterdir())  # no checkpoint read, no folder made


@pytest.fixture
def forward_and_retro():
    """A mixture of two demo tasks (SeqIO orders them by name: forward, then retrosynthesis)."""
    name = "test_demo_forward_and_retro"
    seqio.MixtureRegistry.add(name, [("textchem_demo_retro", 1.0), ("textchem_demo_forward", 1.0)])
    yield name
    seqio.MixtureRegistry.remove(name)


def _recording_decoder(evaluator, shapes: list):
    decode = evaluator.decode

    def recorded(params, features):
        shapes.append(features["encoder_input_tokens"].shape)
        return decode(params, features)

    return recorded


def _traced_shapes(model, monkeypatch) -> list:
    """The input shapes `predict_batch` of `model`'s class is traced with: one per compiled decoding program."""
    shapes = []
    predict = type(model).predict_batch

    def traced(self, params, features, **kwargs):
        shapes.append(features["encoder_input_tokens"].shape)
        return predict(self, params, features, **kwargs)

    monkeypatch.setattr(type(model), "predict_batch", traced)
    return shapes


def test_infer_pads_the_last_batch_so_one_program_serves_a_file(tmp_path, monkeypatch):
    """5 molecules in batches of 4: the last batch of 1 runs padded to 4 rows (no second compilation), and each
    molecule gets its own row, in order, with as many beams as asked for."""
    from textchem_jax import infer as infer_lib
    from textchem_jax.model_loading import write_params

    model, params = _model_and_params()
    write_params(tmp_path, params)
    molecules = ["CCO", "c1ccccc1", "CC(=O)O", "CCN", "O=C=O"]
    (tmp_path / "molecules.txt").write_text("\n".join(molecules) + "\n")
    traced = _traced_shapes(model, monkeypatch)
    (path,) = infer_lib.infer(
        model=model, checkpoint_path=str(tmp_path), output_dir=str(tmp_path / "preds"), row_format="textchem",
        dataset_cfg=DatasetConfig(None, LENGTHS, "test", 4), decode_fn=functools.partial(beam_search, num_decodes=2),
        input_file=str(tmp_path / "molecules.txt"), task="mol2text",
    )  # fmt: skip
    assert traced == [(4, LENGTHS["inputs"])]
    rows = [json.loads(line) for line in open(path)]
    assert [row["input"] for row in rows] == [PROMPTS["mol2text"] + m for m in molecules]
    assert all(len(row["beams"]) == 2 for row in rows)
    from textchem_jax import provenance, score

    (recorded,) = provenance.history(str(tmp_path / "preds"))  # the settings and versions the predictions rest on
    assert recorded["decoder"] == "textchem_jax.models.beam_search.beam_search(num_decodes=2)"
    assert (recorded["step"], recorded["batch_size"], recorded["input_file"]) == (0, 4, str(tmp_path / "molecules.txt"))
    assert score.prediction_files(tmp_path / "preds") == [path]  # not read as predictions
    for missing, said in ((tmp_path / "typo.txt", "does not exist"), (tmp_path, "is a folder: give one file in it")):
        with pytest.raises(ValueError, match=rf"^the input file '{missing}' \(infer_lib.infer.input_file\) {said}$"):
            infer_lib.infer(model=model, checkpoint_path=str(tmp_path), output_dir=str(tmp_path / "preds"),
                            dataset_cfg=DatasetConfig(None, LENGTHS, "test", 4), input_file=str(missing), task="mol2text")  # fmt: skip


def test_infer_reads_a_windows_file_as_the_plain_file_and_names_the_inputs_it_cuts(tmp_path, caplog):
    """A byte-order mark and CRLF line ends were encoded as extra input tokens (the BOM as three, each `\\r`
    as one), silently changing what the model read; now the inputs and predictions equal the plain file's.
    An input longer than the input length is cut, as in T5X, and named; a line that is not UTF-8 is an error
    naming the file and line."""
    from textchem_jax import infer as infer_lib
    from textchem_jax.model_loading import write_params

    model, params = _model_and_params()
    write_params(tmp_path, params)
    molecules = ["CCO", "c1ccccc1", "CC(=O)O"]
    (tmp_path / "plain.txt").write_text("\n".join(molecules) + "\n")
    (tmp_path / "windows.txt").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(molecules).encode() + b"\r\n")
    run = functools.partial(
        infer_lib.infer, model=model, checkpoint_path=str(tmp_path), output_dir=str(tmp_path / "preds"),
        row_format="textchem", dataset_cfg=DatasetConfig(None, LENGTHS, "test", 4), decode_fn=beam_search,
        task="mol2text",
    )  # fmt: skip
    plain, windows = ([json.loads(line) for line in open(run(input_file=str(tmp_path / f"{name}.txt"))[0])]
                      for name in ("plain", "windows"))  # fmt: skip
    assert [row["input"] for row in windows] == [PROMPTS["mol2text"] + m for m in molecules]
    assert [row["prediction"] for row in windows] == [row["prediction"] for row in plain]

    assert "inference cuts them" not in caplog.text  # nothing cut so far
    long_line = "C" * 10 * LENGTHS["inputs"]  # far over the input length: cut, and said so with its line number
    (tmp_path / "long.txt").write_text("\n".join([*molecules, long_line, long_line]) + "\n")
    rows = [json.loads(line) for line in open(run(input_file=str(tmp_path / "long.txt"))[0])]
    assert [row["prediction"] for row in rows[:3]] == [row["prediction"] for row in plain] and len(rows) == 5
    assert (f"{tmp_path / 'long.txt'}: 2 of 5 inputs are longer than {LENGTHS['inputs']} tokens (line 4, 5); "
            "inference cuts them. Raise TASK_FEATURE_LENGTHS['inputs'] to keep them whole.") in caplog.text  # fmt: skip

    (tmp_path / "blank.txt").write_text("\n  \n")  # wrote 0 predictions and a .COMPLETED marker, and ended 0
    with pytest.raises(ValueError, match=r"blank.txt has no inputs: write one per line"):
        run(input_file=str(tmp_path / "blank.txt"))
    (tmp_path / "latin1.txt").write_bytes("CCO\nacide acétique\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt:2: not UTF-8 text \(byte 0xe9 at character 9\)"):
        run(input_file=str(tmp_path / "latin1.txt"))


def test_infer_reads_every_input_format_by_its_name_and_refuses_what_it_cannot_read(tmp_path):
    """A `.jsonl.tar.gz`, `.JSONL` or `.ndjson` was read as plain lines (the JSON text, target included, was the
    model's input), a `.csv` line by line (its header predicted, a quoted comma kept); trailing spaces, an Excel
    tab and a second byte-order mark (files joined by `cat`) were encoded as tokens. UTF-16 and an unnamed gzip
    file were rows of garbage; each now ends in one error naming the file."""
    import gzip
    import tarfile

    from textchem_jax import infer as infer_lib
    from textchem_jax.data.sources import DataFormatError
    from textchem_jax.model_loading import write_params

    model, params = _model_and_params()
    write_params(tmp_path, params)
    molecules, targets = ["CCO", "c1ccccc1", "CC(=O)O"], ["ethanol", "benzene, aromatic", "acetic acid"]
    run = functools.partial(
        infer_lib.infer, model=model, checkpoint_path=str(tmp_path), output_dir=str(tmp_path / "preds"),
        row_format="textchem", dataset_cfg=DatasetConfig(None, LENGTHS, "test", 4), decode_fn=beam_search,
        task="mol2text",
    )  # fmt: skip

    def rows(name: str) -> list[dict]:  # each into its own folder: rows.csv and rows.tsv both write <task>-rows.jsonl
        (path,) = run(input_file=str(tmp_path / name), output_dir=str(tmp_path / "preds" / name))
        return [json.loads(line) for line in open(path)]

    (tmp_path / "plain.txt").write_text("\n".join(molecules) + "\n")
    plain = rows("plain.txt")
    (tmp_path / "joined.txt").write_bytes(b"\xef\xbb\xbfCCO  \r\n\xef\xbb\xbfc1ccccc1\t\r\n CC(=O)O\r\n")
    assert [(r["input"], r["prediction"]) for r in rows("joined.txt")] == [(r["input"], r["prediction"]) for r in plain]

    jsonl = "".join(json.dumps({"input": m, "target": t}) + "\n" for m, t in zip(molecules, targets))
    (tmp_path / "ROWS.JSONL").write_text(jsonl)
    (tmp_path / "rows.ndjson").write_text(jsonl)
    (tmp_path / "inner").mkdir()
    (tmp_path / "inner" / "rows.jsonl").write_text(jsonl)
    with tarfile.open(tmp_path / "rows.jsonl.tar.gz", "w:gz") as archive:
        archive.add(tmp_path / "inner" / "rows.jsonl", arcname="rows.jsonl")
    (tmp_path / "rows.csv").write_text('SMILES_note,Input,target\nx,CCO,ethanol\ny,"c1ccccc1","benzene, aromatic"\n'
                                       'z,CC(=O)O,acetic acid\n')  # fmt: skip
    (tmp_path / "rows.tsv").write_text("input\ttarget\n" + "".join(f"{m}\t{t}\n" for m, t in zip(molecules, targets)))
    for name in ("ROWS.JSONL", "rows.ndjson", "rows.jsonl.tar.gz", "rows.csv", "rows.tsv"):
        got = rows(name)
        assert [(r["input"], r["target"], r["prediction"]) for r in got] == [
            (r["input"], t, r["prediction"]) for r, t in zip(plain, targets)], name  # fmt: skip
    assert (tmp_path / "preds" / "rows.jsonl.tar.gz" / "textchem_mol2text-rows.jsonl").exists()  # no .tar.gz

    (tmp_path / "excel.csv").write_text("input,\r\nCCO,\r\nc1ccccc1,\r\n")  # Excel's empty last column: no targets
    assert list(infer_lib._file_inputs(str(tmp_path / "excel.csv"))) == [(2, "CCO", None), (3, "c1ccccc1", None)]
    (tmp_path / "open.csv").write_text('input\n"' + "C" * 200_000 + "\n")  # a quote never closed: the csv module's
    with pytest.raises(ValueError, match=r"open.csv: not a readable .csv \(field larger than field limit"):  # error
        list(infer_lib._file_inputs(str(tmp_path / "open.csv")))
    (tmp_path / "nocolumn.csv").write_text("smiles,name\nCCO,ethanol\n")
    with pytest.raises(ValueError, match=r"nocolumn.csv:1: a .csv file needs a header with an 'input' column"):
        run(input_file=str(tmp_path / "nocolumn.csv"))
    (tmp_path / "excel.txt").write_bytes("\r\n".join(molecules).encode("utf-16"))
    with pytest.raises(DataFormatError, match=r"excel.txt: UTF-16 text .*; save it as UTF-8"):
        run(input_file=str(tmp_path / "excel.txt"))
    (tmp_path / "packed.txt").write_bytes(gzip.compress("\n".join(molecules).encode()))
    with pytest.raises(DataFormatError, match=r"packed.txt: gzip-compressed; gunzip it"):
        run(input_file=str(tmp_path / "packed.txt"))


def test_infer_on_a_mixture_keeps_num_examples_and_either_row_format_scores_alike(tmp_path, forward_and_retro):
    """`num_examples` capped inference evaluation only: textchem-infer decoded whole splits. Its own rows
    (`row_format='textchem'`) had no task, so textchem-score could not read them; now a folder of either
    format scores alike, ours with every beam (top-k). A jsonl input file's targets are written beside its
    predictions."""
    from textchem_jax import infer as infer_lib
    from textchem_jax import score
    from textchem_jax.model_loading import write_params

    model, params = _model_and_params()
    write_params(tmp_path, params)
    cfg = DatasetConfig(forward_and_retro, LENGTHS, "test", 4, shuffle=False, pack=False, num_examples=5)
    for row_format in ("t5x", "textchem"):
        written = infer_lib.infer(model=model, checkpoint_path=str(tmp_path), output_dir=str(tmp_path / row_format),
                                  dataset_cfg=cfg, decode_fn=functools.partial(beam_search, num_decodes=2),
                                  row_format=row_format)  # fmt: skip
        assert [len(open(path).readlines()) for path in written] == [5, 5]
    t5x, ours = score.score(tmp_path / "t5x"), score.score(tmp_path / "textchem")
    assert set(t5x) == set(ours) == {"textchem_demo_forward", "textchem_demo_retro"}
    for task, values in t5x.items():
        assert values.keys() < ours[task].keys() and "accuracy_top2" in ours[task]
        assert {key: ours[task][key] for key in values} == pytest.approx(values, nan_ok=True)

    # a jsonl input file may bring its targets: written beside the predictions, so the file can be scored
    (tmp_path / "reactions.jsonl").write_text("".join(json.dumps({"input": i, "target": t}) + "\n" for i, t in [
        ("CC(=O)O.OCC", "CCOC(C)=O"), ("CCO.O=C=O", "CCOC(=O)O")]))  # fmt: skip
    (path,) = infer_lib.infer(model=model, checkpoint_path=str(tmp_path), output_dir=str(tmp_path / "file"),
                              dataset_cfg=DatasetConfig(None, LENGTHS, "test", 4), input_file=str(tmp_path / "reactions.jsonl"),
                              task="forward")  # fmt: skip
    assert [json.loads(line)["inputs"]["targets_pretokenized"] for line in open(path)] == ["CCOC(C)=O", "CCOC(=O)O"]
    assert set(score.score(path)["textchem_forward"]) == {"accuracy", "invalid_rate"}


def _not_json(constant):
    raise AssertionError(f"{constant} is not JSON (jq and JSON.parse refuse the file)")


def test_a_mixture_decodes_in_batches_across_tasks_with_one_shape(tmp_path, forward_and_retro, monkeypatch):
    """6 + 6 rows in batches of 4: three batches (the second holds both tasks), not four; the last batch and the
    round trip's are padded to the same shape, so one program is compiled; predictions and metrics are those of
    each task evaluated alone."""
    model, params = _model_and_params()
    cfg = DatasetConfig(forward_and_retro, LENGTHS, "test", 4, shuffle=False, pack=False, num_examples=6)
    mixed = InferenceEvaluator(model, cfg, str(tmp_path / "mixed"), partitioning.make_mesh())
    rows, traced = [], _traced_shapes(model, monkeypatch)
    mixed.decode = _recording_decoder(mixed, rows)
    results = mixed.evaluate(params, step=1)
    full, rest = divmod(len(mixed._round_trip), 4)  # the round trip's batches of 4 and its last, shorter one
    assert [shape[0] for shape in rows] == [4, 4, 4] + [4] * full + ([rest] if rest else [])
    assert traced == [(4, LENGTHS["inputs"])]

    for task in ("textchem_demo_retro", "textchem_demo_forward"):
        alone_dir = tmp_path / task
        alone = InferenceEvaluator(model, dataclasses.replace(cfg, mixture_or_task_name=task), str(alone_dir),
                                   partitioning.make_mesh())  # fmt: skip
        assert alone.evaluate(params, step=1)[task] == pytest.approx(results[task], nan_ok=True)
        written = json.loads((alone_dir / f"{task}-metrics.jsonl").read_text(), parse_constant=_not_json)
        assert {k for k, v in written.items() if v is None} == {k for k, v in results[task].items() if math.isnan(v)}
        mixed_rows = _rows(tmp_path / "mixed" / f"{task}-000001.jsonl")
        assert [row["prediction"] for row in mixed_rows] == [row["prediction"] for row in _rows(alone_dir / f"{task}-000001.jsonl")]
        assert len(mixed_rows) == 6


def test_a_task_is_scored_while_the_next_one_decodes(tmp_path, forward_and_retro, monkeypatch):
    """Once the first task is decoded and handed over, its scoring (a registered metric function reading the
    metric settings) and the next task's decoding run at once: each waits for the other to have started, and
    would time out if they ran one after the other (in either order)."""
    model, params = _model_and_params()
    cfg = DatasetConfig(forward_and_retro, LENGTHS, "test", 4, shuffle=False, pack=False, num_examples=4)
    evaluator = InferenceEvaluator(model, cfg, str(tmp_path), partitioning.make_mesh())
    scoring, next_decoding, handed_over = threading.Event(), threading.Event(), threading.Event()
    seen_by_scoring, seen_by_decoding = [], []
    first = next(iter(evaluator.evaluators.values()))
    current_settings, hand_over, decode = metrics.settings.current, first.evaluate, evaluator.decode

    def scored():
        if not scoring.is_set():  # the first task's scoring, on its metric thread
            scoring.set()
            seen_by_scoring.append(next_decoding.wait(timeout=120))
        return current_settings()

    def handed(**kwargs):
        result = hand_over(**kwargs)
        handed_over.set()
        return result

    def decoded(params, features):
        if handed_over.is_set() and not next_decoding.is_set():  # the next task's first batch
            next_decoding.set()
            seen_by_decoding.append(scoring.wait(timeout=120))
        return decode(params, features)

    monkeypatch.setattr(metrics.settings, "current", scored)
    first.evaluate, evaluator.decode = handed, decoded
    results = evaluator.evaluate(params, step=3)
    assert seen_by_scoring == [True] and seen_by_decoding == [True]
    assert set(results) == {"textchem_demo_retro", "textchem_demo_forward"}
    assert not math.isnan(results["textchem_demo_retro"]["roundtrip_accuracy"])


def test_an_evaluation_interrupted_while_a_task_scores_writes_nothing(tmp_path, monkeypatch, caplog):
    """Ctrl-C (or SIGTERM) while a task scored on its metric thread: the interrupt left the metric settings, the
    scoring went on without them and wrote its line at exit (retrosynthesis's roundtrip_accuracy null), and a rerun
    took the step as evaluated. Now the scoring finishes under the settings, writes nothing, and the step evaluates
    again. The Ctrl-C is sent from the scoring itself, which goes on once the evaluation has it (never before)."""
    import os
    import signal

    model, params = _model_and_params()
    cfg = DatasetConfig("textchem_demo_retro", LENGTHS, "test", 4, shuffle=False, pack=False, num_examples=4)
    evaluator = InferenceEvaluator(model, cfg, str(tmp_path), partitioning.make_mesh())
    current_settings, forward_fn_seen = metrics.settings.current, []

    def scored():  # the metric function's first step, on the task's metric thread, decoding done
        if not forward_fn_seen:
            os.kill(os.getpid(), signal.SIGINT)
            forward_fn_seen.append(evaluator._cut.wait(timeout=120) and current_settings().forward_fn is not None)
        return current_settings()

    monkeypatch.setattr(metrics.settings, "current", scored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as in a console
    try:
        with pytest.raises(KeyboardInterrupt), caplog.at_level("WARNING"):
            evaluator.evaluate(params, step=3)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert forward_fn_seen == [True]  # the interrupt came while it scored, under the settings to the end
    assert not list(tmp_path.glob("*.jsonl")) and "roundtrip_accuracy is n/a" not in caplog.text
    monkeypatch.undo()
    results = evaluator.evaluate(params, step=3)["textchem_demo_retro"]
    assert not math.isnan(results["roundtrip_accuracy"])
    written = _rows(tmp_path / "textchem_demo_retro-metrics.jsonl")
    assert [(row["step"], row["roundtrip_accuracy"]) for row in written] == [(3, results["roundtrip_accuracy"])]
    # A line a killed run left cut short: seqio appended the next line to it, and both were unreadable. The next
    # run's evaluator drops it first (its step is evaluated again), saying where.
    path = tmp_path / "textchem_demo_retro-metrics.jsonl"
    path.write_text(path.read_text() + '{"step": 4, "roundtrip_acc')
    with caplog.at_level("WARNING"):
        InferenceEvaluator(model, cfg, str(tmp_path), partitioning.make_mesh()).evaluate(params, step=4)
    assert [row["step"] for row in _rows(path)] == [3, 4] and f"{path}:2: the last line is cut short" in caplog.text


def test_examples_longer_than_the_feature_lengths_are_counted_by_task_and_feature(tmp_path, caplog):
    """SeqIO at most says that lengths "*may be*" insufficient; the evaluator counts the examples it cuts."""
    model, _ = _model_and_params()
    task = seqio.get_mixture_or_task("textchem_demo_forward")
    rows = list(task.get_dataset(sequence_length=None, split="test", shuffle=False).take(6).as_numpy_iterator())
    vocab = task.output_features["inputs"].vocabulary
    inputs = [len(vocab.encode(row["inputs_pretokenized"].decode())) + 1 for row in rows]  # + EOS
    limit = sorted(inputs)[2]  # half of the six are longer
    lengths = {"inputs": limit, "targets": LENGTHS["targets"]}
    cfg = DatasetConfig("textchem_demo_forward", lengths, "test", 4, shuffle=False, pack=False, num_examples=6)
    with caplog.at_level("WARNING", logger="textchem_jax.evaluator"):
        InferenceEvaluator(model, cfg, str(tmp_path / "short"), partitioning.make_mesh())
    cut = sum(length > limit for length in inputs)
    assert 0 < cut < 6
    expected = (f"textchem_demo_forward: {cut} of 6 test examples have inputs longer than {limit} tokens (longest "
                f"{max(inputs)}); evaluation cuts them. Raise TASK_FEATURE_LENGTHS['inputs'] to keep them whole.")  # fmt: skip
    assert [r.getMessage() for r in caplog.records if r.name == "textchem_jax.evaluator"] == [expected]
    caplog.clear()
    whole = dataclasses.replace(cfg, task_feature_lengths={**lengths, "inputs": max(inputs)})
    with caplog.at_level("WARNING", logger="textchem_jax.evaluator"):
        InferenceEvaluator(model, whole, str(tmp_path / "whole"), partitioning.make_mesh())
    assert not [r for r in caplog.records if r.name == "textchem_jax.evaluator"]


def test_robustness_reads_the_runs_own_data_folder_and_says_which_before_making_any_folder(tmp_path, monkeypatch,
                                                                                          capsys):  # fmt: skip
    """textchem-robustness read TEXTCHEM_DATA_DIR alone: without it, a run whose config.gin binds DATA_DIR ended,
    after loading the model, with "set TEXTCHEM_DATA_DIR ... or --gin.DATA_DIR" (a flag it lacks) and an empty
    robustness/inference_eval/; with it pointing at another copy, that copy was evaluated without a word. Runs with
    no checkpoint: the data are read (or refused) before the model is loaded."""
    import gin

    from textchem_jax import launch, robustness
    from textchem_jax.data import datasets

    ours, empty = tmp_path / "data", tmp_path / "empty"
    (ours / "uspto_mit").mkdir(parents=True)
    empty.mkdir()
    (ours / "uspto_mit" / "valid.txt").write_text("CCO.CC(=O)O>>CCOC(C)=O 1-2-1.0\nCC=O.[H][H]>>CCO 1-2-1.0\n")
    runs = {"with_data": [f"DATA_DIR = '{ours}'"], "without_data": []}
    monkeypatch.delenv("TEXTCHEM_DATA_DIR", raising=False)  # else config.gin records it as the run's DATA_DIR
    for name, bindings in runs.items():
        launch.parse_gin(["experiments/quickstart.gin"], [f"MODEL_DIR = '{tmp_path / name}'", *bindings])
        try:
            launch.write_config(str(tmp_path / name))
        finally:
            gin.clear_config()
    flags = ["--mixture=textchem_forward", "--split=validation", "--num_examples=2", "--no_embedding_check"]
    try:
        assert robustness.main([f"--model_dir={tmp_path / 'without_data'}", *flags]) == 2
        said = capsys.readouterr().err.strip().splitlines()[-1]
        assert said == (f"textchem-robustness: no data folder for textchem_forward: {tmp_path / 'without_data'}'s "
                        "config.gin binds no DATA_DIR; give --data_dir=DIR (local or gs://) or set TEXTCHEM_DATA_DIR")

        monkeypatch.setenv("TEXTCHEM_DATA_DIR", str(empty))  # another copy, here one without the files
        assert robustness.main([f"--model_dir={tmp_path / 'with_data'}", *flags]) == 2
        captured = capsys.readouterr()
        assert (f"reading the data from {ours} (the run's DATA_DIR, in {tmp_path / 'with_data'}'s config.gin), "
                f"not from {empty} (TEXTCHEM_DATA_DIR)\n") in captured.out
        assert "valid.txt" not in captured.err and "checkpoint" in captured.err  # read ours; stopped at the model

        assert robustness.main([f"--model_dir={tmp_path / 'with_data'}", f"--data_dir={empty}", *flags]) == 2
        captured = capsys.readouterr()
        assert f"reading the data from {empty} (--data_dir), not from {ours} (the run's DATA_DIR" in captured.out
        assert f"{empty}/uspto_mit/valid.txt" in captured.err  # the flag's folder was read: it lacks the file
    finally:
        datasets.set_data_dir(None)
    assert not any((tmp_path / name / "robustness").exists() for name in runs)


def test_notation_variants_rewrite_only_the_examples_evaluated_and_a_mixture_without_smiles_is_said_first(
        tmp_path, monkeypatch, capsys):  # fmt: skip
    """textchem-robustness --num_examples=3 rewrote every row of the split in every notation before taking the first
    3 (USPTO-MIT's 40,000 test rows: 1 min 51 s with no line printed); and a mixture with no SMILES input was said
    after "evaluating ... in 5 notations" and the model's loading."""
    import gin

    from textchem_jax import launch, robustness
    from textchem_jax.data import seqio_tasks
    from textchem_jax.evaluator import NotationEvaluator

    pairs, read = seqio_tasks.TaskSpec.pairs, []

    def recorded(spec, split, *args, **kwargs):
        read.append((spec.notation, split))
        return pairs(spec, split, *args, **kwargs)

    monkeypatch.setattr(seqio_tasks.TaskSpec, "pairs", recorded)
    model = tiny_t5()
    cfg = DatasetConfig("textchem_demo_forward", LENGTHS, "validation", 4, shuffle=False, pack=False, num_examples=2)
    evaluator = NotationEvaluator(model, cfg, partitioning.make_mesh(), str(tmp_path / "eval"), ["kekulized"])
    results = evaluator.evaluate(nn.meta.unbox(model.init(jax.random.key(0))), step=1)
    assert set(results["textchem_demo_forward"]) == {"original", "kekulized"}
    assert {split for notation, split in read if notation} == {"validation[:2]"}

    launch.parse_gin(["experiments/quickstart.gin"], [f"MODEL_DIR = '{tmp_path / 'run'}'"])
    try:
        launch.write_config(str(tmp_path / "run"))  # a run without a checkpoint: nothing to load
    finally:
        gin.clear_config()
    assert robustness.main([f"--model_dir={tmp_path / 'run'}", "--mixture=textchem_demo_text2mol",
                            "--split=validation", "--num_examples=2", "--no_embedding_check"]) == 2  # fmt: skip
    captured = capsys.readouterr()
    assert "textchem_demo_text2mol has no task with a SMILES input" in captured.err and "evaluating" not in captured.out


def test_a_refused_textchem_eval_leaves_no_output_folder(tmp_path):
    """textchem-eval builds its evaluator before the checkpoint loads, and the evaluator made its output folder:
    a run refused at the checkpoint (none there, another model's, an unreachable gs://) left an empty
    EVAL_OUTPUT_DIR/inference_eval/. The folder is made when the first task's results are written."""
    from textchem_jax import evaluate as evaluate_lib

    cfg = DatasetConfig("textchem_demo_forward", LENGTHS, "validation", 4, shuffle=False, pack=False, num_examples=2)
    with pytest.raises(FileNotFoundError, match="no checkpoint folder at"):
        evaluate_lib.evaluate(model=tiny_t5(), checkpoint_path=str(tmp_path / "nope"), dataset_cfg=cfg,
                              output_dir=str(tmp_path / "eval"))  # fmt: skip
    assert not (tmp_path / "eval").exists()
