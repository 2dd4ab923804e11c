"""Released checkpoints evaluated the paper's way: the README recipe, run on a random GT4SD-shaped
checkpoint made here (a T5 v1.0 Hugging Face folder with `pytorch_model.bin` and a T5-like 32,100-id
`spiece.model`), on the public test splits in ../shared/data."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import seqio
from helpers import ROOT, t5_like_vocabulary

import tasks  # noqa: F401  (registers the evaluation tasks)
from textchem_jax.catalogue import PROMPTS, TASKS

EXPECTED_KEYS = {
    "forward": {"accuracy", "accuracy_top2", "accuracy_top3", "invalid_rate"},
    "retro": {"accuracy", "accuracy_top2", "accuracy_top3", "invalid_rate", "roundtrip_accuracy"},
    "paragraph2actions": {"bleu2", "modified_bleu", "levenshtein_similarity", "exact_match", "partial_accuracy_90",
                          "partial_accuracy_75", "validity"},  # fmt: skip
    "text2mol": {"bleu", "exact_match", "levenshtein", "validity", "maccs_fts", "rdk_fts", "morgan_fts"},
    "mol2text": {"bleu2", "bleu4", "rouge1", "rouge2", "rougeL", "meteor"},
}


def test_released_checkpoint_tasks_read_outputs_as_their_authors_did():
    gt4sd = seqio.get_mixture_or_task("textchem_gt4sd_eval_text2mol")
    assert gt4sd.postprocess_fn("C/C=C \u2047 C") == "C/C=C\\C"  # SentencePiece's unknown piece -> `\`
    assert gt4sd.postprocess_fn(["C/C=C<unk>C", "CC"]) == ["C/C=C\\C", "CC"]
    assert seqio.get_mixture_or_task("textchem_gt4sd_eval_mol2text").postprocess_fn("a \u2047 b") == "a \u2047 b"
    assert seqio.get_mixture_or_task("textchem_text2mol").postprocess_fn("C/C=C \u2047 C") == "C/C=C\u2047C"
    assert {t.name for t in seqio.get_mixture_or_task("textchem_gt4sd_eval").tasks} == {
        f"textchem_gt4sd_eval_{task}" for task in TASKS
    }
    molt5 = seqio.get_mixture_or_task("textchem_molt5_eval_mol2text")
    (example,) = molt5.preprocessors[0](_one_example()).as_numpy_iterator()
    assert example["inputs"] == b"CCO"  # MolT5 takes no prompt
    (example,) = seqio.get_mixture_or_task("textchem_gt4sd_eval_mol2text").preprocessors[0](_one_example()).as_numpy_iterator()
    assert example["inputs"] == (PROMPTS["mol2text"] + "CCO").encode()


def _one_example():
    import tensorflow as tf

    return tf.data.Dataset.from_tensors({"input": "CCO", "target": "The molecule is ethanol."})


@pytest.mark.slow
@pytest.mark.needs_data
@pytest.mark.needs_hf
def test_readme_recipe_on_a_random_gt4sd_shaped_checkpoint(tmp_path, data):
    transformers = pytest.importorskip("transformers", reason="needs the hf extra")
    import torch

    spiece = t5_like_vocabulary(tmp_path / "spiece")
    gt4sd = tmp_path / "multitask-text-and-chemistry-t5-small-standard"
    config = transformers.T5Config(vocab_size=32128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                   feed_forward_proj="relu", tie_word_embeddings=True, decoder_start_token_id=0)  # fmt: skip
    model = transformers.T5ForConditionalGeneration(config)
    gt4sd.mkdir()
    config.save_pretrained(gt4sd)
    torch.save(model.state_dict(), gt4sd / "pytorch_model.bin")  # as GT4SD's folders hold the weights
    shutil.copyfile(spiece, gt4sd / "spiece.model")
    assert {"config.json", "pytorch_model.bin", "spiece.model"} <= set(os.listdir(gt4sd))

    env = {**os.environ, "TEXTCHEM_DATA_DIR": str(data), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TEXTCHEM_VOCABULARY", None)

    def run(*command: str) -> str:
        result = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=1200)  # fmt: skip
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout

    converted, out = tmp_path / "converted", tmp_path / "eval"
    run("textchem_jax.convert", f"--hf_dir={gt4sd}", f"--output_dir={converted}")
    # The README's command with the whole mixture instead of one task per command, and fewer rows, beams and
    # positions so that it fits a test.
    printed = run(
        "textchem_jax.evaluate", f"--gin_file={converted / 'model.gin'}", "--gin_file=runs/eval_released.gin",
        f"--gin.CHECKPOINT_PATH='{converted}'", f"--gin.EVAL_OUTPUT_DIR='{out}'",
        "--gin.MIXTURE_OR_TASK_NAME='textchem_gt4sd_eval'", "--gin.run_config.DatasetConfig.num_examples=3",
        "--gin.TASK_FEATURE_LENGTHS={'inputs': 96, 'targets': 24}", "--gin.beam_search.beam_search.num_decodes=3",
    )  # fmt: skip
    for task in TASKS:
        name = f"textchem_gt4sd_eval_{task}"
        assert name in printed
        rows = [json.loads(line) for line in (out / "inference_eval" / f"{name}-000000.jsonl").read_text().splitlines()]
        assert len(rows) == 3 and all(len(row["prediction"]) == 3 for row in rows)  # test split rows, 3 beams each
        metrics = json.loads((out / "inference_eval" / f"{name}-metrics.jsonl").read_text().splitlines()[-1])
        assert EXPECTED_KEYS[task] <= set(metrics), (task, sorted(metrics))
    retro = json.loads((out / "inference_eval" / "textchem_gt4sd_eval_retro-metrics.jsonl").read_text().splitlines()[-1])
    assert not math.isnan(retro["roundtrip_accuracy"])  # the model itself is the forward predictor
