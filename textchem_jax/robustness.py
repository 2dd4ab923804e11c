"""`textchem-robustness`: how much a model's metrics depend on how its input molecules are written.

  textchem-robustness --model_dir=/tmp/textchem_quickstart --split=test --num_examples=100 --random_variants=3

Every task of the run's mixture that reads SMILES (forward, retro, mol2text) is evaluated on the same
examples as written and rewritten as RDKit canonical, kekulized, explicit-H, ring-closure renumbered and N
seeded random SMILES (each the same molecule: `chem.notations`), through the run's own decoding,
postprocessing and metrics; each metric per notation with its change from the original. Then AMORE's
embedding check (Ganeeva et al. 2024): the encoder's mean-pooled embedding of each rewritten molecule
should retrieve its own original among all originals (acc@1, acc@5, MRR). Writes `robustness.json`,
`robustness.md` and the predictions (`inference_eval/`) into `--output_dir` (default MODEL_DIR/robustness),
where `textchem-report` finds them. `--model_dir` is a textchem-train MODEL_DIR or a textchem-convert
directory (then give --mixture and --task_feature_lengths). The data are read from `--data_dir`, else the run's
own DATA_DIR (its config.gin), else TEXTCHEM_DATA_DIR, as textchem-eval rerun from that config.gin reads them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence

from textchem_jax.cli import at_least, command, parse_args
from textchem_jax.metrics.tables import robustness_markdown
from textchem_jax.paths import absolute, expand_user, makedirs

RESULTS_FILE = "robustness.json"


def embedding_check(model, params, mesh, molecules: Sequence[str], variants: Sequence[str],
                    input_length: int) -> dict[str, dict[str, float]]:  # fmt: skip
    """{variant: {acc@1, acc@5, mrr, unchanged}} over distinct `molecules` (bare SMILES, as AMORE embeds them);
    `unchanged`: the share of molecules the notation writes exactly as given (they retrieve themselves trivially)."""
    from textchem_jax.catalogue import CHEMISTRY
    from textchem_jax.data import datasets, seqio_tasks
    from textchem_jax.evaluator import encode_rows, mean_pooled_embeddings, retrieval_scores

    vocab = seqio_tasks.vocabulary()

    def embed(texts: Sequence[str]):
        return mean_pooled_embeddings(model, params, mesh, encode_rows(vocab, texts, input_length), CHEMISTRY)

    originals = embed(molecules)
    scores = {}
    for variant in variants:
        rewritten = [datasets.rewrite_or_keep(m, variant) for m in molecules]
        scores[variant] = {**retrieval_scores(originals, embed(rewritten)),
                           "unchanged": sum(a == b for a, b in zip(rewritten, molecules)) / len(molecules)}  # fmt: skip
    return scores


def data_folder(model_dir: str, run_data_dir: str | None, given: str | None) -> str | None:
    """The folder our tasks read, chosen as textchem-eval rerun from the run's config.gin chooses it: `given`
    (--data_dir, as a --gin.DATA_DIR binding would), else the run's own DATA_DIR, else TEXTCHEM_DATA_DIR; a folder
    passed over is said. Robustness read TEXTCHEM_DATA_DIR alone: unset, a run trained on gs:// data ended with an
    error naming a --gin flag this command lacks; set to another copy, that copy was evaluated without a word."""
    candidates = [(given, "--data_dir"), (run_data_dir, f"the run's DATA_DIR, in {model_dir}'s config.gin"),
                  (os.environ.get("TEXTCHEM_DATA_DIR"), "TEXTCHEM_DATA_DIR")]  # fmt: skip
    present = [(folder, source) for folder, source in candidates if folder]
    if not present:
        return None
    (chosen, source), others = present[0], present[1:]

    def where(folder: str) -> str:
        return str(absolute(expand_user(folder))).rstrip("/")

    passed_over = [f"{folder} ({what})" for folder, what in others if where(folder) != where(chosen)]
    if passed_over:
        print(f"reading the data from {chosen} ({source}), not from {' nor '.join(passed_over)}", flush=True)
    return chosen


def _examples(model_dir: str, mixture: str, split: str) -> dict[str, list[tuple[str, str]]]:
    """The (input, target) rows of each of our tasks in the mixture's `split`, read before the model is loaded and
    any output folder made: a missing data folder was said after both, leaving an empty `inference_eval/`."""
    from textchem_jax.data import seqio_tasks
    from textchem_jax.evaluator import eval_tasks

    examples = {}
    for task in eval_tasks(mixture, split):  # an unknown split: said first
        spec = seqio_tasks.SPECS.get(task.name)
        if spec is None:  # a task of the user's own: read by SeqIO as it evaluates
            continue
        try:
            if not spec.tfds_dir:
                spec.folder()
        except FileNotFoundError:  # no folder anywhere; the library's error named a --gin flag this command lacks
            raise FileNotFoundError(f"no data folder for {task.name}: {model_dir}'s config.gin binds no DATA_DIR; give "
                                    "--data_dir=DIR (local or gs://) or set TEXTCHEM_DATA_DIR") from None  # fmt: skip
        examples[task.name] = spec.pairs(split)
    return examples


def read_results(directory: str) -> dict | None:
    """`robustness.json` of a robustness run, or None when there is none (local or gs://)."""
    import tensorflow as tf

    path = os.path.join(directory, RESULTS_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.loads(f.read())


def run(model_dir: str, *, checkpoint_path: str | None = None, mixture: str | None = None, split: str = "test",
        num_examples: int | None = 100, random_variants: int = 3, task_feature_lengths: Mapping[str, int] | None = None,
        batch_size: int = 32, output_dir: str | None = None, embeddings: bool = True,
        data_dir: str | None = None) -> dict:  # fmt: skip
    """Evaluates the notation variants and the embedding check; writes and returns the results. Our tasks read
    `data_folder`'s choice: `data_dir` or the run's DATA_DIR is set for this process (`datasets.set_data_dir`), as
    textchem-eval sets its DATA_DIR."""
    import tensorflow as tf

    from textchem_jax import partitioning
    from textchem_jax.chem import canonicalize, notations
    from textchem_jax.data import datasets
    from textchem_jax.evaluator import NotationEvaluator
    from textchem_jax.launch import saved_run
    from textchem_jax import provenance
    from textchem_jax.model_loading import load_for_inference, resolve_checkpoint
    from textchem_jax.run_config import DatasetConfig, import_task_module

    tf.config.set_visible_devices([], "GPU")  # tf.data only: the accelerators belong to JAX
    saved = saved_run(model_dir)
    mixture = mixture or saved.mixture_or_task_name
    lengths = dict(task_feature_lengths or saved.task_feature_lengths or {})
    if not mixture or not lengths:
        raise ValueError(f"{model_dir} does not say which mixture and feature lengths it was trained with: give "
                         "--mixture and --task_feature_lengths=inputs=N,targets=M")  # fmt: skip
    output_dir = output_dir or os.path.join(model_dir, "robustness")
    checkpoint_path = checkpoint_path or model_dir
    import_task_module(saved.module, saved.model)
    folder = data_folder(model_dir, saved.data_dir, data_dir)
    if data_dir or saved.data_dir:  # bound as textchem-eval binds DATA_DIR; else the process's own folder is kept
        datasets.set_data_dir(folder)
    examples = _examples(model_dir, mixture, split)  # missing data said now, not after loading the model
    mesh = partitioning.make_mesh()
    variants = notations.variant_names(random_variants)
    cfg = DatasetConfig(mixture, lengths, split, batch_size, shuffle=False, pack=False, module=saved.module,
                        num_examples=num_examples)  # fmt: skip
    evaluator = NotationEvaluator(saved.model, cfg, mesh, os.path.join(output_dir, "inference_eval"), variants,
                                  length_setting="--task_feature_lengths={feature}=N")  # its flag; no SMILES task: said
    print(f"evaluating {mixture} ({split}, {num_examples or 'all'} examples per task) in {len(variants)} notations: "
          f"{', '.join(variants)}", flush=True)  # fmt: skip
    concrete, step = resolve_checkpoint(checkpoint_path)  # the step loaded is the step named
    params = load_for_inference(saved.model, concrete, mesh)
    metrics = evaluator.evaluate(params, step)
    settings = {"model_dir": model_dir, "checkpoint": concrete, "checkpoint_step": step, "mixture": mixture,
                "split": split, "num_examples": num_examples, "task_feature_lengths": lengths, "batch_size": batch_size,
                "data_dir": folder,
                "decoder": provenance.decoder(None), "variants": list(variants)}  # fmt: skip
    results = {**provenance.record(**settings), "metrics": metrics, "embedding": {}, "embedding_molecules": {}}
    results["unreadable_inputs"] = {}
    for task in metrics:
        inputs = [source for source, _ in examples[task][: num_examples or None]]
        canonical = {source: canonicalize(source) for source in inputs}
        # Inputs RDKit cannot read stay as written in every notation (same denominators): counted, not hidden.
        results["unreadable_inputs"][task] = sum(canonical[source] is None for source in inputs)
        molecules = list({key: source for source, key in canonical.items() if key is not None}.values())
        if embeddings and len(molecules) >= 2:
            results["embedding"][task] = embedding_check(saved.model, params, mesh, molecules, variants, lengths["inputs"])
            results["embedding_molecules"][task] = len(molecules)
    makedirs(output_dir)
    with tf.io.gfile.GFile(os.path.join(output_dir, RESULTS_FILE), "w") as f:
        f.write(json.dumps(results, indent=1, allow_nan=True))
    with tf.io.gfile.GFile(os.path.join(output_dir, "robustness.md"), "w") as f:
        f.write(f"# Notation robustness of {model_dir} (step {step}, {split})\n\n{robustness_markdown(results)}\n\n"
                f"{len(variants)} notations, {num_examples or 'all'} examples per task, feature lengths {lengths}, "
                f"batch {batch_size}, {provenance.decoder(None)} decoding\n\n"
                f"{provenance.versions_line()}\n")
    return results


@command
def main(argv: Sequence[str] | None = None) -> int:
    from textchem_jax import launch
    from textchem_jax.inspect import feature_lengths
    from textchem_jax.metrics.tables import versions_line

    launch.prepare_jax()  # it decodes every notation of every example: see xla_cpu
    from textchem_jax.checkpoints import CheckpointError

    parser = argparse.ArgumentParser(prog="textchem-robustness", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", required=True, help="a textchem-train MODEL_DIR or a textchem-convert directory")
    parser.add_argument("--checkpoint_path", help="the checkpoint to evaluate (default: the latest in --model_dir)")
    parser.add_argument("--mixture", help="mixture or task (default: the run's MIXTURE_OR_TASK_NAME)")
    parser.add_argument("--split", default="test", help="a split of the mixture's tasks (default: test)")
    parser.add_argument("--num_examples", type=at_least(0), default=100, help="examples per task (0: the whole split)")
    parser.add_argument("--random_variants", type=at_least(0), default=3, help="seeded random SMILES per input")
    parser.add_argument("--task_feature_lengths", type=feature_lengths, help="inputs=N,targets=M (default: the run's)")
    parser.add_argument("--batch_size", type=at_least(1), default=32)
    parser.add_argument("--output_dir", help="default: MODEL_DIR/robustness")
    parser.add_argument("--data_dir", help="data folder, local or gs:// (default: the run's DATA_DIR, else "
                                           "TEXTCHEM_DATA_DIR)")  # fmt: skip
    parser.add_argument("--no_embedding_check", action="store_true", help="skip AMORE's embedding retrieval check")
    parser.add_argument("--verbose", action="store_true", help="show library logs")
    args = parse_args(parser, argv)
    if not args.verbose:
        launch.quiet_libraries()
    try:
        results = run(args.model_dir, checkpoint_path=args.checkpoint_path, mixture=args.mixture, split=args.split,
                      num_examples=args.num_examples or None, random_variants=args.random_variants,
                      task_feature_lengths=args.task_feature_lengths, batch_size=args.batch_size,
                      output_dir=args.output_dir, embeddings=not args.no_embedding_check,
                      data_dir=args.data_dir)  # fmt: skip
    except (ValueError, FileNotFoundError, CheckpointError) as error:
        print(f"textchem-robustness: {error}", file=sys.stderr)
        return 2
    print(robustness_markdown(results))
    print(versions_line())
    print(f"results: {os.path.join(args.output_dir or os.path.join(args.model_dir, 'robustness'), RESULTS_FILE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
