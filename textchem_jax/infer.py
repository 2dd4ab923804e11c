"""`textchem-infer`: predictions as jsonl, from a mixture split or a file.

Either `mixture_or_task_name` + `split` (targets are written alongside), or `input_file` (one input
per line; `.jsonl` with an `input` field and optionally a `target`, written alongside; `.csv`/`.tsv` with a header
naming `input` and optionally `target` columns; each also as a one-file `.tar.gz`) + `task`: one of forward, retro,
paragraph2actions, text2mol, mol2text (the Text+Chem T5 prompt is added, rows written as `textchem_<task>`), or a task
registered with `seqio_tasks.register_task` (ours, or a user's in MIXTURE_OR_TASK_MODULE): its own prompt is added and
its inputs take its own form (RDKit-canonical, another notation), rows written under its name.
Batches are split over the mesh's `data` axis (all hosts take part); process 0 writes the rows:
- `row_format="t5x"` (default): T5X's infer rows, `{"inputs": {"inputs_pretokenized", "targets_pretokenized"},
  "prediction": best beam, "aux": {"scores": its score}}` in `INFER_OUTPUT_DIR/<task>-predict.jsonl-00000-of-00001`
  (T5X's file name, with its `.COMPLETED` marker), what T5X tooling and `textchem-score` read;
- `row_format="textchem"`: ours, with every beam and its score, `{"task", "input", "target", "prediction", "beams",
  "score", "beam_scores"}` (and `"input_cut": true` where the model read only the input's first tokens) in
  `INFER_OUTPUT_DIR/<task>-<split>.jsonl` (from a file: `<task>-<its name>.jsonl`; `textchem-score` reads them too).
A file an earlier run wrote is replaced only by a rerun on the same input (file and task, or mixture and split);
another input is refused: give it another INFER_OUTPUT_DIR.

  textchem-infer --gin_file=models/t5_1_1_tiny.gin --gin_file=runs/infer.gin \\
    --gin.CHECKPOINT_PATH="'/tmp/run'" --gin.INFER_OUTPUT_DIR="'/tmp/preds'" \\
    --gin.infer_lib.infer.input_file="'molecules.txt'" --gin.infer_lib.infer.task="'mol2text'"
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import jax
import numpy as np

from textchem_jax import peers
from textchem_jax.catalogue import PROMPTS, task_input_domain
from textchem_jax.paths import absolute, expand_user, makedirs
from textchem_jax.progress import ProgressLine

logger = logging.getLogger("textchem_jax.infer")


def _file_inputs(path: str) -> Iterator[tuple[int, str, str | None]]:
    """(line number, input, target or None) of each row: `.jsonl` objects, `.csv`/`.tsv` rows under a header with
    an `input` column (and `target`), else one input per line; blank inputs come as "" for the caller to count.
    Lines are read as the data readers read them (Windows line ends and byte-order marks dropped, fields stripped:
    kept, they were encoded as extra tokens the model never saw)."""
    import csv

    from textchem_jax.data.sources import name_and_kind, not_utf8, numbered_lines, open_text

    kind = name_and_kind(path)[1]
    if kind in (".csv", ".tsv"):  # read by lines, the header was an input and a quoted comma split nothing
        with open_text(path, errors="surrogateescape") as f, _csv_errors_named(path, kind):
            rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if kind == ".tsv" else csv.reader(f)
            header = next(rows, [])
            columns = {name.strip().casefold(): i for i, name in enumerate(header) if name}
            if "input" not in columns:
                raise ValueError(f"{path}:1: a {kind} file needs a header with an 'input' column (and, to be scored, "
                                 f"'target'); its header is {header}")  # fmt: skip
            for fields in rows:
                if not fields:  # a blank line, as csv.DictReader skips it
                    continue
                if len(fields) != len(header):  # a surplus field was dropped, a missing target scored as a miss
                    raise ValueError(f"{path}:{rows.line_num}: {len(fields)} fields where the header has "
                                     f"{len(header)}; {_FIELD_FIX[kind]}")  # fmt: skip
                text = fields[columns["input"]]
                target = fields[columns["target"]] if "target" in columns else None  # `input,`: no target column
                if reason := not_utf8(text + (target or "")):
                    raise ValueError(f"{path}:{rows.line_num}: {reason}")
                yield rows.line_num, text.strip(), None if target is None else target.strip()
        return
    for number, text in numbered_lines(path):
        if not_utf8(text):
            raise ValueError(f"{path}:{number}: {not_utf8(text)}")
        target = None
        if kind == ".jsonl" and text.strip():
            try:
                row = json.loads(text)
                text, target = row["input"], row.get("target")
                if not isinstance(text, str) or not isinstance(target, (str, type(None))):
                    raise TypeError
            except (json.JSONDecodeError, RecursionError, KeyError, TypeError, AttributeError):
                raise ValueError(f"{path}:{number}: expected a JSON object with an 'input' string (and, to be "
                                 "scored, a 'target' string)") from None  # fmt: skip
        yield number, text.strip(), None if target is None else target.strip()


_FIELD_FIX = {  # how a row gets the header's number of fields
    ".csv": 'quote fields that contain commas ("a, b") and give every row each column (an empty one: "CCO,")',
    ".tsv": "remove the tabs inside fields and give every row each column (an empty one: a tab at the end)",
}


@contextlib.contextmanager
def _csv_errors_named(path: str, kind: str) -> Iterator[None]:
    """The csv module's errors (a NUL, a field over its size limit) as one ValueError naming the file."""
    import csv

    try:
        yield
    except csv.Error as error:
        raise ValueError(f"{path}: not a readable {kind} ({error}); save it again as plain UTF-8 "
                         "text with one row per line") from None  # fmt: skip


def _file_task(task: str):
    """(the name the predictions are written under, the `seqio_tasks.TaskSpec` whose prompt and input form the file's
    inputs take) of infer's `task`: a family name (the Text+Chem T5 prompt, as `textchem_<family>`) or a task
    registered with `register_task`. Only the family names were read: a user's `my_p2r` (prompt "Suggest reactants
    for: ") was "unknown task", and `retro` fed its model a prompt it never saw."""
    import seqio

    from textchem_jax.data.seqio_tasks import SPECS, TaskSpec

    if task in PROMPTS:
        return f"textchem_{task}", TaskSpec(task, directory=lambda: "")  # the input file is the only source
    if task in SPECS:
        return task, SPECS[task]
    if task in seqio.TaskRegistry.names() or task in seqio.MixtureRegistry.names():
        raise ValueError(f"infer_lib.infer.task={task!r} is a SeqIO task or mixture not made by "
                         "seqio_tasks.register_task, so its prompt is unknown to an input file: register the task with "
                         "register_task(name, family, directory, prompt=...), or predict its split with "
                         "MIXTURE_OR_TASK_NAME")  # fmt: skip
    raise ValueError(f"unknown task {task!r} (infer_lib.infer.task): use one of {', '.join(PROMPTS)} (the "
                     "Text+Chem T5 prompt) or a task registered with seqio_tasks.register_task in "
                     "MIXTURE_OR_TASK_MODULE")  # fmt: skip


def _warn_of_own_prompts(task: str) -> None:
    """A family name given while a user's task of that family (MIXTURE_OR_TASK_MODULE) has its own prompt: said, as
    the model trained on that task may never have seen the Text+Chem T5 prompt (`retro` beside `my_p2r`)."""
    from textchem_jax.data.seqio_tasks import SPECS

    if task not in PROMPTS:
        return
    own = sorted(name for name, spec in SPECS.items() if spec.task == task and not name.startswith("textchem_")
                 and spec.prompt not in (None, PROMPTS[task]))  # fmt: skip
    if own:
        logger.warning("infer_lib.infer.task=%r adds the Text+Chem T5 prompt %r, but the registered task(s) %s of this "
                       "family add their own: give infer_lib.infer.task=%r if the model was trained on it", task,
                       PROMPTS[task], ", ".join(own), own[0])  # fmt: skip


def _as_the_task_reads(spec, texts: list[str]) -> list[str]:
    """`texts` in the form the task's own inputs take in `datasets.task_pairs`: RDKit-canonical where `canonical`,
    then rewritten in its `notation`; a model trained on canonical SMILES was otherwise given them as typed."""
    from textchem_jax.data import datasets

    pairs = [(text, "") for text in texts]
    if spec.canonical:
        pairs = datasets.canonicalize_pairs(spec.task, pairs)
    if spec.notation is not None:
        pairs = datasets.rewrite_inputs(spec.task, pairs, spec.notation)
    return [text for text, _ in pairs]


def _file_examples(path: str, task: str, vocabulary, max_input_length: int, chunk_rows: int = 4096) -> Iterator[dict]:
    """The file's inputs (`_file_inputs`) as the model's examples of `task` (`_file_task`: its prompt and input form),
    tokenized as the task's own examples are (`encode_as_tasks`, `chunk_rows` inputs at a time: a user's vocabulary
    may tokenize otherwise in TensorFlow than in Python, as seqio's own SentencePiece vocabulary does).
    An input that already starts with the prompt (as Hugging Face's Text+Chem T5 users write them; our textchem rows'
    `input`) keeps it once, and how many did is said: it was given twice. An input cut to `max_input_length` is
    marked `input_cut` (its row says so)."""
    from textchem_jax.data.vocabulary import encode_as_tasks

    spec = _file_task(task)[1]
    prompt = PROMPTS[spec.task] if spec.prompt is None else spec.prompt
    cut, blank, prompted, count = [], [], [], 0  # line numbers of inputs cut, of blank lines, of prompted inputs
    head = prompt.strip()
    rows = _file_inputs(path)
    while chunk := list(itertools.islice(rows, chunk_rows)):
        blank += [number for number, text, _ in chunk if not text]  # no input to predict from: skipped, named below
        chunk = [row for row in chunk if row[1]]
        # its prompt written in already: taken off, and put back once after the input takes the task's form
        rests = [text[len(head):].strip() if head and text.startswith(head) else "" for _, text, _ in chunk]
        prompted += [number for (number, _, _), rest in zip(chunk, rests) if rest]
        chunk = [(number, rest or text, target) for (number, text, target), rest in zip(chunk, rests)]
        texts = _as_the_task_reads(spec, [text for _, text, _ in chunk])
        chunk = [(number, prompt + text, target) for (number, _, target), text in zip(chunk, texts)]
        encoded = encode_as_tasks(vocabulary, [inputs for _, inputs, _ in chunk])
        count += len(chunk)
        for (number, inputs, target), ids in zip(chunk, encoded):
            ids = [*ids.tolist(), 1]
            example = {"inputs_pretokenized": inputs}
            if len(ids) > max_input_length:
                cut.append(number)
                ids, example["input_cut"] = ids[: max_input_length - 1] + [1], True
            domain = np.full(len(ids), task_input_domain(spec.task), np.int32)
            example.update(inputs=np.array(ids, np.int32), input_domain=domain)
            yield example if target is None else {**example, "targets_pretokenized": target}
    if not count:  # an empty file: 0 predictions and a .COMPLETED marker said the inference had worked
        raise ValueError(f"{path} has no inputs: write one per line (.txt), one JSON object per line (.jsonl), or "
                         "rows under a header with an 'input' column (.csv, .tsv)")  # fmt: skip
    if jax.process_index() != 0:  # said once, by process 0, as our other warnings (srun shows every host's)
        return
    if blank:  # said, or the predictions no longer line up with the file's lines and nothing tells
        logger.warning("%s: %d of %d lines are blank (line %s); skipped: the %d predictions follow the other lines in "
                       "order. Remove them, or put an input on each.", path, len(blank), count + len(blank),
                       _first_numbers(blank), count)  # fmt: skip
    if prompted:  # given twice, the model read a prompt it never trained on
        logger.warning("%s: %d of %d inputs already start with the task's prompt %r (line %s); it is given once, not "
                       "added again.", path, len(prompted), count, head, _first_numbers(prompted))  # fmt: skip
    if cut:  # T5X cuts them without a word; a cut SMILES or procedure asks another question, so each is named
        lines = _first_numbers(cut)
        logger.warning("%s: %d of %d inputs are longer than %d tokens (line %s); inference cuts them. Raise "
                       "TASK_FEATURE_LENGTHS['inputs'] to keep them whole.", path, len(cut), count, max_input_length,
                       lines)  # fmt: skip


def _first_numbers(numbers: list[int], shown: int = 10) -> str:
    return ", ".join(map(str, numbers[:shown])) + (", ..." if len(numbers) > shown else "")


def _task_examples(cfg, model) -> Iterator[tuple[str, list[dict]]]:
    """Each task's first `cfg.num_examples` examples of the split (all: None), from SeqIO's cache if `cfg.use_cached`;
    inputs longer than the input length are counted and said, as in evaluation."""
    import seqio

    from textchem_jax.evaluator import cut_examples
    from textchem_jax.run_config import checked_provider

    for task in seqio.get_subtasks(checked_provider(cfg, model)):
        ds = task.get_dataset(dict(cfg.task_feature_lengths), split=cfg.split, shuffle=False, use_cached=cfg.use_cached)
        examples = [{k: (v.decode() if isinstance(v, bytes) else v) for k, v in ex.items()}
                    for ex in ds.take(cfg.num_examples or -1).as_numpy_iterator()]  # fmt: skip
        if jax.process_index() == 0:
            for line in cut_examples(task, examples, cfg, features=("inputs",), by="inference"):
                logger.warning(line)
        yield task.name, examples


def _batches(examples: Iterable[dict], batch_size: int, length: int) -> Iterator[tuple[list[dict], dict[str, np.ndarray]]]:
    """(examples, their model features: padded input tokens and, where known, per-example input domains)."""
    batch: list[dict] = []
    for example in itertools.chain(examples, [None]):
        if example is not None:
            batch.append(example)
        if batch and (len(batch) == batch_size or example is None):
            features = {"encoder_input_tokens": _pad([e["inputs"] for e in batch], length)}
            if all("input_domain" in e for e in batch):  # a user's task may have none; only e2-CLM needs it
                features["input_domain"] = np.array([e["input_domain"][0] for e in batch], np.int32)
            yield batch, features
            batch = []


def _pad(rows: list[np.ndarray], length: int) -> np.ndarray:
    out = np.zeros((len(rows), length), np.int32)
    for i, row in enumerate(rows):
        out[i, : min(len(row), length)] = row[:length]
    return out


def _trim(tokens: np.ndarray) -> list[int]:
    ids = [int(t) for t in tokens]
    return ids[: ids.index(1)] if 1 in ids else [t for t in ids if t != 0]


def infer(
    *,
    model,
    checkpoint_path: str,
    output_dir: str,
    dataset_cfg,
    input_file: str | None = None,
    task: str | None = None,
    decode_fn: Any = None,
    mesh=None,
    row_format: str = "t5x",
) -> list[str]:
    """Writes one jsonl per task (`row_format` "t5x" or "textchem", see above); returns their paths.

    `dataset_cfg` (gin scope `infer/`) gives the lengths, the batch size and, unless `input_file` is
    given, the mixture or task and split to predict (each task's first `num_examples`; SeqIO's cache with
    `use_cached`), and the seed of a sampling `decode_fn` (None: 0; the same seed and inputs give the same
    samples). `decode_fn` defaults to 4-beam search; its options are checked before the checkpoint loads.
    A rerun on the same input replaces its own predictions (config.gin and provenance.json then tell of the rerun);
    another input's predictions are refused where an earlier run's lie.
    """
    import tensorflow as tf

    from textchem_jax import partitioning
    from textchem_jax.data.seqio_tasks import vocabulary
    from textchem_jax.data.sources import name_and_kind
    from textchem_jax.evaluator import make_batch_decoder
    from textchem_jax import launch, provenance
    from textchem_jax.model_loading import load_for_inference, resolve_checkpoint
    from textchem_jax.models.beam_search import beam_search
    from textchem_jax.run_config import import_task_module

    if row_format not in ("t5x", "textchem"):
        raise ValueError(f"row_format={row_format!r}: use 't5x' (T5X's infer rows) or 'textchem' (ours, every beam)")
    import_task_module(dataset_cfg.module, model)
    if (input_file is None) == (dataset_cfg.mixture_or_task_name is None):
        given = "neither was given" if input_file is None else "both were given"
        raise ValueError(f"give either infer_lib.infer.input_file (with task) or MIXTURE_OR_TASK_NAME (with the split): {given}")
    lengths = dataset_cfg.task_feature_lengths
    vocab = vocabulary()
    mesh = partitioning.make_mesh() if mesh is None else mesh
    decode_fn = beam_search if decode_fn is None else decode_fn  # 4 beams by default
    decode = make_batch_decoder(model, mesh, decode_fn, int(lengths["targets"]), batch_size=dataset_cfg.batch_size,
                                seed=dataset_cfg.seed)  # fmt: skip
    # Inputs read and checked before the checkpoint loads (a minute for a large one)
    if input_file is not None:
        if task is None:
            raise ValueError("input_file needs infer_lib.infer.task: forward, retro, paragraph2actions, text2mol, "
                             "mol2text or a task registered with seqio_tasks.register_task")  # fmt: skip
        if not tf.io.gfile.exists(input_file) or tf.io.gfile.isdir(input_file):  # not "[Errno 2]" alone
            found = "is a folder: give one file in it" if tf.io.gfile.exists(input_file) else "does not exist"
            raise ValueError(f"the input file {input_file!r} (infer_lib.infer.input_file) {found}")
        _warn_of_own_prompts(task)
        sources = [(_file_task(task)[0], list(_file_examples(input_file, task, vocab, lengths["inputs"])))]
        split_name = name_and_kind(input_file)[0]
        this = {"input_file": str(absolute(expand_user(input_file))), "task": task}  # as provenance records it
    else:
        sources = list(_task_examples(dataset_cfg, model))
        split_name = dataset_cfg.split
        this = {"mixture_or_task_name": dataset_cfg.mixture_or_task_name, "split": dataset_cfg.split}
    _check_same_inputs(sources)
    names = [_output_name(task_name, row_format, split_name) for task_name, _ in sources]
    _refuse_to_replace(output_dir, names, this)
    concrete, step = resolve_checkpoint(checkpoint_path)  # the step recorded is the step loaded
    params = load_for_inference(model, concrete, mesh)  # a mesh that cannot split it: said before the folder
    makedirs(output_dir)
    if jax.process_index() == 0:
        launch.write_config(output_dir, keep_a_runs=True, checkpoint=concrete, step=step, input_file=this.get("input_file"),
                            task=task, mixture_or_task_name=dataset_cfg.mixture_or_task_name, split=dataset_cfg.split,
                            num_examples=dataset_cfg.num_examples, task_feature_lengths=dict(lengths),
                            batch_size=dataset_cfg.batch_size, seed=dataset_cfg.seed,
                            decoder=provenance.decoder(decode_fn), row_format=row_format, outputs=names)  # fmt: skip
    written = []
    batch_numbers = itertools.count()  # every batch of every task samples with its own key (make_batch_decoder)
    for (task_name, examples), name in zip(sources, names):
        path = os.path.join(output_dir, name)
        progress = ProgressLine(f"predicting {task_name}", len(examples), enabled=jax.process_index() == 0)
        lines = []
        for batch, features in _batches(examples, dataset_cfg.batch_size, lengths["inputs"]):
            sequences, scores = decode(params, features, batch_index=next(batch_numbers))
            progress.advance(len(batch))
            for i, example in enumerate(batch):
                beams = [vocab.decode(_trim(beam)) for beam in sequences[i]]
                row = _row(task_name, example, beams, [float(s) for s in scores[i]], row_format)
                lines.append(json.dumps(row, ensure_ascii=False))
        if jax.process_index() == 0:
            with tf.io.gfile.GFile(path, "w") as f:
                f.write("\n".join(lines) + ("\n" if lines else ""))
            if row_format == "t5x":
                with tf.io.gfile.GFile(path + ".COMPLETED", "w") as f:
                    f.write("")
            print(f"{len(lines)} predictions -> {path}", flush=True)
        written.append(path)
    return written


def _check_same_inputs(sources: list[tuple[str, list[dict]]]) -> None:
    """Every host decodes every batch (the batches are collectives): an input file of one name holding other lines on
    another host hung every process, after process 0 had written its predictions. Refused on each, before loading."""
    import hashlib

    def summary(examples: list[dict]) -> str:
        digest = hashlib.sha256("\n".join(e["inputs_pretokenized"] for e in examples).encode()).hexdigest()
        return f"{len(examples)} inputs (SHA-256 {digest[:12]})"

    differ = peers.differences({task_name: summary(examples) for task_name, examples in sources})
    if differ:
        task_name, values = next(iter(differ.items()))
        raise ValueError(f"the processes of this run read different inputs for {task_name}: "
                         f"{peers.by_process(values, absent='none')}. Give every process "
                         "the same input file (a shared path, or identical copies)")  # fmt: skip


def _output_name(task_name: str, row_format: str, split_name: str) -> str:
    """T5X's infer file name (what its tooling reads), or ours: `<task>-<split, or the input file's name>.jsonl`."""
    return f"{task_name}-predict.jsonl-00000-of-00001" if row_format == "t5x" else f"{task_name}-{split_name}.jsonl"


def _refuse_to_replace(output_dir: str, names: list[str], this: Mapping[str, str]) -> None:
    """A second input's predictions refused where an earlier run's lie (they were silently replaced, and config.gin
    then told of the second input only); the same input again (`this`: its input file and task, or mixture and
    split) is a rerun and replaces them. The earlier run is the newest of `provenance.json` to write the file; a
    folder written before runs recorded their outputs goes by its newest run (an identical rerun was refused)."""
    import tensorflow as tf

    from textchem_jax import provenance

    existing = [name for name in names if tf.io.gfile.exists(os.path.join(output_dir, name))]
    if not existing:
        return
    runs = provenance.history(output_dir)
    unrecorded = [run for run in runs if "outputs" not in run][-1:]
    for name in existing:
        earlier = next((run for run in reversed(runs) if name in (run.get("outputs") or ())), None) or (
            unrecorded[0] if unrecorded else None)
        if earlier is not None and _same_input(earlier, this):
            continue
        if earlier is None:
            source = "an earlier run"
        elif earlier.get("input_file"):
            source = f"the input file {earlier['input_file']} (task {earlier.get('task')})"
        else:
            source = f"{earlier.get('mixture_or_task_name')}'s {earlier.get('split')} split"
        raise ValueError(f"{os.path.join(output_dir, name)} holds the predictions of {source}: give another "
                         "INFER_OUTPUT_DIR, or delete the file to replace them")  # fmt: skip


def _same_input(run: Mapping[str, Any], this: Mapping[str, str]) -> bool:
    """Whether a provenance entry predicted the input `this` names (its file absolute; an older entry's relative one
    read against the working directory, as it was then)."""
    if "input_file" in this:
        file = run.get("input_file")
        return (bool(file) and run.get("task") == this["task"]
                and str(absolute(expand_user(file))) == this["input_file"])  # fmt: skip
    return not run.get("input_file") and all(run.get(key) == value for key, value in this.items())


def _row(task: str, example: Mapping, beams: list[str], scores: list[float], row_format: str) -> dict:
    target = example.get("targets_pretokenized")
    if row_format == "t5x":  # T5X's: the task is in the file name
        inputs = {"inputs_pretokenized": example["inputs_pretokenized"]}
        if target is not None:
            inputs["targets_pretokenized"] = target
        return {"inputs": inputs, "prediction": beams[0], "aux": {"scores": scores[0]}}
    row = {"task": task, "input": example["inputs_pretokenized"], "prediction": beams[0], "beams": beams,
           "score": scores[0], "beam_scores": scores}  # fmt: skip
    if target is not None:
        row["target"] = target
    if example.get("input_cut"):  # the model read its first tokens only (TASK_FEATURE_LENGTHS['inputs'])
        row["input_cut"] = True
    return row


def main() -> int:
    from textchem_jax import launch

    launch.run_configured("textchem_jax.infer.infer", "textchem-infer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
