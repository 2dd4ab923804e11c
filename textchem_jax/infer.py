"""`textchem-infer`: predictions (with scores and all beams) as jsonl, from a mixture split or a file.

Either `mixture_or_task_name` + `split` (targets are written alongside), or `input_file` (one input
per line, or jsonl with an `input` field) + `task` (one of forward, retro, paragraph2actions,
text2mol, mol2text): the task's prompt is added for the user. Batches are split over the mesh's
`data` axis (all hosts take part); process 0 writes `INFER_OUTPUT_DIR/<task>-<split>.jsonl`.

  textchem-infer --gin_file=models/t5_1_1_tiny.gin --gin_file=runs/infer.gin \\
    --gin.CHECKPOINT_PATH="'/tmp/run'" --gin.INFER_OUTPUT_DIR="'/tmp/preds'" \\
    --gin.infer_lib.infer.input_file="'molecules.txt'" --gin.infer_lib.infer.task="'mol2text'"
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import numpy as np


def beam_decode(model, params, encoder_input_tokens, *, max_decode_length: int, num_beams: int = 4, **options):
    """Default decode function for inference: all beams, best first, with their scores."""
    from textchem_jax.models.generate import decode

    return decode(model, params, encoder_input_tokens, method="beam", num_beams=num_beams,
                  max_decode_length=max_decode_length, **options)  # fmt: skip


def _file_examples(path: str, task: str, vocabulary, max_input_length: int) -> Iterator[dict]:
    import tensorflow as tf

    from textchem_jax.data.datasets import DOMAINS, PROMPTS
    from textchem_jax.data.seqio_tasks import DOMAIN_IDS

    if task not in PROMPTS:
        raise ValueError(f"unknown task {task!r}; use one of {', '.join(PROMPTS)}")
    with tf.io.gfile.GFile(path) as f:
        for number, line in enumerate(f, start=1):
            text = line.rstrip("\n")
            if not text.strip():
                continue
            if path.endswith(".jsonl"):
                try:
                    text = json.loads(text)["input"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise ValueError(f"{path}:{number}: expected a JSON object with an 'input' field") from None
            inputs = PROMPTS[task] + text
            ids = list(vocabulary.encode(inputs))[: max_input_length - 1] + [1]
            domain = np.full(len(ids), DOMAIN_IDS[DOMAINS[task][0]], np.int32)
            yield {"inputs_pretokenized": inputs, "inputs": np.array(ids, np.int32), "input_domain": domain}


def _task_examples(name: str, split: str, lengths: Mapping[str, int]) -> Iterator[tuple[str, Iterator[dict]]]:
    import seqio

    import tasks  # noqa: F401

    provider = seqio.get_mixture_or_task(name)
    for task in provider.tasks if isinstance(provider, seqio.Mixture) else [provider]:
        ds = task.get_dataset(dict(lengths), split=split, shuffle=False, use_cached=False)
        yield task.name, ({k: (v.decode() if isinstance(v, bytes) else v) for k, v in ex.items()} for ex in ds.as_numpy_iterator())


def _batches(examples: Iterator[dict], batch_size: int, length: int) -> Iterator[tuple[list[dict], np.ndarray, np.ndarray]]:
    """(examples, padded input tokens, their domains per example) in batches."""
    batch: list[dict] = []
    for example in examples:
        batch.append(example)
        if len(batch) == batch_size:
            yield batch, _pad([e["inputs"] for e in batch], length), np.array([e["input_domain"][0] for e in batch])
            batch = []
    if batch:
        yield batch, _pad([e["inputs"] for e in batch], length), np.array([e["input_domain"][0] for e in batch])


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
    task_feature_lengths: Mapping[str, int],
    mixture_or_task_name: str | None = None,
    split: str = "test",
    input_file: str | None = None,
    task: str | None = None,
    batch_size: int = 32,
    decode_fn: Any = beam_decode,
    num_partitions: int = 1,
    mixture_or_task_module: str | None = None,
) -> list[str]:
    """Writes one jsonl per task; returns their paths."""
    from textchem_jax.data.seqio_tasks import import_task_module

    import_task_module(mixture_or_task_module)
    import tensorflow as tf

    from textchem_jax import partitioning
    from textchem_jax.data.seqio_tasks import vocabulary
    from textchem_jax.evaluate import make_batch_decoder
    from textchem_jax.model_loading import load_for_inference

    if (input_file is None) == (mixture_or_task_name is None):
        raise ValueError("give either input_file (with task) or mixture_or_task_name (with split)")
    vocab = vocabulary()
    mesh = partitioning.make_mesh(num_partitions)
    params = load_for_inference(model, checkpoint_path, mesh)
    decode = make_batch_decoder(model, params, mesh, decode_fn, int(task_feature_lengths["targets"]))

    if input_file is not None:
        if task is None:
            raise ValueError("input_file needs task= (forward, retro, paragraph2actions, text2mol or mol2text)")
        sources = [(f"textchem_{task}", _file_examples(input_file, task, vocab, task_feature_lengths["inputs"]))]
        split_name = os.path.splitext(os.path.basename(input_file))[0]
    else:
        sources = _task_examples(mixture_or_task_name, split, task_feature_lengths)
        split_name = split
    tf.io.gfile.makedirs(output_dir)
    written = []
    for task_name, examples in sources:
        path = os.path.join(output_dir, f"{task_name}-{split_name}.jsonl")
        lines = []
        for batch, tokens, domains in _batches(examples, batch_size, task_feature_lengths["inputs"]):
            sequences, scores = decode(tokens, domains)
            for i, example in enumerate(batch):
                beams = [vocab.decode(_trim(beam)) for beam in sequences[i]]
                row = {"input": example["inputs_pretokenized"], "prediction": beams[0], "beams": beams}
                if scores is not None:
                    row["score"], row["beam_scores"] = float(scores[i][0]), [float(s) for s in scores[i]]
                if "targets_pretokenized" in example:
                    row["target"] = example["targets_pretokenized"]
                lines.append(json.dumps(row, ensure_ascii=False))
        if jax.process_index() == 0:
            with tf.io.gfile.GFile(path, "w") as f:
                f.write("\n".join(lines) + ("\n" if lines else ""))
            print(f"{len(lines)} predictions -> {path}", flush=True)
        written.append(path)
    return written


def main() -> int:
    from textchem_jax import launch

    launch.run_configured("textchem_jax.infer.infer", "textchem-infer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
