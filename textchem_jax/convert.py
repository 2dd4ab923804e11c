"""`textchem-convert`: Hugging Face T5 and T5X checkpoints <-> our converted-checkpoint directory.

    textchem-convert --hf_dir=DIR --output_dir=DIR [--vocabulary=spiece.model] [--scan_layers]
    textchem-convert --t5x_checkpoint=DIR --output_dir=DIR [--vocabulary=spiece.model] [--t5x_setting NAME=VALUE]
    textchem-convert --checkpoint_dir=DIR --hf_output_dir=DIR [--vocabulary=spiece.model]
    textchem-convert --checkpoint_dir=DIR --t5x_output_dir=T5X_MODEL_DIR
    (--checkpoint_dir: a converted directory, or a training run's MODEL_DIR or MODEL_DIR/checkpoints: its
    latest checkpoint, or MODEL_DIR/checkpoints/<step>: that one)

A Hugging Face export also writes tokenizer.json and tokenizer_config.json, so that AutoTokenizer encodes as
spiece.model does, and generation_config.json, so that `generate()` decodes as the run did (an imported folder's
own generation_config.json and tokenizer_config.json are kept in its converted directory and exported again); a T5X
export writes spiece.model and our model settings (`t5x_checkpoints.MODEL_SETTINGS_FILE`) into `checkpoint_<step>/`,
and a T5X import reads both when they are there.

A converted directory holds `params.npz` (flat "encoder/layers_0/attention/query/kernel" keys),
`t5_config.json` (every T5Config field), `model.gin` (binds `MODEL_CONFIG` to the matching
`t5_config` preset, overriding what differs, and `VOCABULARY_PATH` when a vocabulary is known) and a
copy of the SentencePiece model. `params.npz` is written and read by `model_loading`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from etils import epath  # every directory here may be local or gs://

from textchem_jax import launch, run_results
from textchem_jax.checkpoints import CheckpointError
from textchem_jax.cli import command, parse_args
from textchem_jax.model_loading import T5_PARTS, read_params, write_params
from textchem_jax.models.config import ARCHITECTURE_FIELDS, T5Config, preset_name, t5_config
from textchem_jax.models.hf_convert import GENERATION_CONFIG_FILE, TOKENIZER_CONFIG_FILE
from textchem_jax.paths import absolute, makedirs

CONFIG_FILE = run_results.CONVERTED_CONFIG_FILE
GIN_FILE = run_results.CONVERTED_GIN_FILE
RUN_CONFIG_FILE = run_results.RUN_CONFIG_FILE
CHECKPOINTS_FOLDER = run_results.CHECKPOINTS_FOLDER
VOCABULARY_FILE = "spiece.model"
# What an import keeps of a Hugging Face folder beyond the model, for its later export: decoding settings (GT4SD's
# num_beams=10, max_length=512) and model_max_length; they were dropped on the import -> export round trip.
KEPT_HF_FILES = (GENERATION_CONFIG_FILE, TOKENIZER_CONFIG_FILE)
# transformers 5's T5Tokenizer and T5TokenizerFast rebuild the tokenizer from spiece.model without byte fallback.
TOKENIZER_NOTE = ("load the tokenizer with AutoTokenizer: transformers 5's T5Tokenizer and T5TokenizerFast drop byte "
                  "fallback and read ~, >>, {, µ ... as <unk>")  # fmt: skip
# Fields that describe how to run, not the architecture; not written into model.gin.
_RUNTIME_FIELDS = ("dtype", "param_dtype", "scan_layers", "remat_policy")


def model_gin_text(config: T5Config, vocabulary_path: epath.Path | None, source: str) -> str:
    """A gin file that rebuilds `config` as `%MODEL_CONFIG` from the nearest preset plus overrides. Its dropout
    rate is `DROPOUT_RATE`, as in models/*.gin, so runs/finetune.gin and `--gin.DROPOUT_RATE` set it: bound as a
    value, the flag was refused as unused and config.gin said `DROPOUT_RATE = 0.1` of a run without dropout."""
    size, version = preset_name(config) or ("small", "1.1" if config.feed_forward == "gated-gelu" else "1.0")
    preset = t5_config(size, version, vocab_size=config.vocab_size)
    bindings = {"size": size, "version": version, "vocab_size": config.vocab_size}
    for name, value in config.to_dict().items():
        if name not in (*_RUNTIME_FIELDS, "dropout_rate") and name not in bindings and getattr(preset, name) != value:
            bindings[name] = value
    lines = [
        f"# Model of the checkpoint in this directory, written by textchem-convert from {source}.",
        "from __gin__ import dynamic_registration",
        "from textchem_jax.data import vocabulary as vocabularies",
        "from textchem_jax.models import adapters",
        "from textchem_jax.models import config as model_config",
        "",
        f"DROPOUT_RATE = {config.dropout_rate!r}  # the checkpoint's; runs/finetune.gin and runs/eval.gin set their own",
        "MODEL = @adapters.EncoderDecoderModel()  # what runs/eval.gin, runs/infer.gin and runs/finetune.gin use",
        "adapters.EncoderDecoderModel.config = %MODEL_CONFIG",
        "adapters.EncoderDecoderModel.vocabulary = %VOCABULARY",
        "MODEL_CONFIG = @model_config.t5_config()",
        "model_config.t5_config:",
        *(f"  {name} = {value!r}" for name, value in bindings.items()),
        "  dropout_rate = %DROPOUT_RATE",
    ]
    if vocabulary_path is not None:  # the checkpoint's own vocabulary drives the tasks and the model
        lines += [
            "",
            f"VOCABULARY_PATH = {str(vocabulary_path)!r}",
            "VOCABULARY = @vocabularies.load_vocabulary()",
            "vocabularies.load_vocabulary.path = %VOCABULARY_PATH",
        ]
    else:
        lines += ["", "VOCABULARY = @vocabularies.task_vocabulary()  # no vocabulary came with the checkpoint"]
    return "\n".join(lines) + "\n"



def import_hf(hf_dir: epath.Path, output_dir: epath.Path, vocabulary: epath.Path | None = None,
              extend_vocabulary: bool = False, **config_overrides: Any) -> T5Config:  # fmt: skip
    """HF directory -> converted directory; returns the model config. The vocabulary is `vocabulary`, else the
    directory's own spiece.model; either is checked against the embedding.

    `extend_vocabulary` adds the chemistry characters the vocabulary cannot write (T5's has no `\\`)
    and grows the embedding (and v1.1 logits) to match, so fine-tuning keeps cis/trans stereo.
    """
    from textchem_jax.models.hf_convert import load_hf_directory

    config, params = load_hf_directory(hf_dir, **config_overrides)
    vocabulary = chosen_vocabulary(vocabulary, hf_dir / VOCABULARY_FILE, "the directory's own vocabulary", config,
                                   sized=not extend_vocabulary)  # fmt: skip
    kept = {name: read_json_object(hf_dir / name) for name in KEPT_HF_FILES if (hf_dir / name).exists()}
    config = write_converted(output_dir, config, params, vocabulary, str(hf_dir), extend_vocabulary)
    for name in KEPT_HF_FILES:  # a converted directory written again keeps only its new source's
        if name in kept:
            (output_dir / name).write_text(json.dumps(kept[name], indent=2) + "\n")
        elif (output_dir / name).exists():
            (output_dir / name).unlink()
    return config


def read_json_object(path: epath.Path) -> dict[str, Any]:
    """The JSON object in `path`; anything else is a ValueError naming the file."""
    try:
        value = json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path}: not JSON ({error}); fix or delete it") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: a JSON object was expected, got {type(value).__name__}; fix or delete it")
    return value


def import_t5x(checkpoint: str, output_dir: epath.Path, vocabulary: epath.Path | None = None,
               extend_vocabulary: bool = False, settings: dict[str, Any] | None = None) -> T5Config:  # fmt: skip
    """T5X checkpoint (any layout, see `t5x_checkpoints`) -> converted directory. The config comes from the
    parameter shapes plus what our T5X export recorded beside them (`settings` override both); the vocabulary
    is `vocabulary`, else the checkpoint's own spiece.model (our T5X export writes one)."""
    from textchem_jax import t5x_checkpoints

    params, step = t5x_checkpoints.read_checkpoint(checkpoint)
    step_dir = t5x_checkpoints.checkpoint_directory(str(absolute(checkpoint)))
    config = t5x_config(params, step_dir, settings or {})
    vocabulary = chosen_vocabulary(vocabulary, epath.Path(step_dir) / VOCABULARY_FILE, "the checkpoint's own vocabulary",
                                   config, sized=not extend_vocabulary)  # fmt: skip
    return write_converted(output_dir, config, params, vocabulary, f"{checkpoint} (T5X, step {step})", extend_vocabulary)


def t5x_config(params: dict, step_dir: str, settings: dict[str, Any]) -> T5Config:
    """The config of a T5X checkpoint: sizes from the shapes; what shapes cannot show from `settings`, else
    from the settings our export recorded, else T5's values, said on stderr (they change every output)."""
    from textchem_jax import t5x_checkpoints

    config = t5x_checkpoints.config_from_params(params)
    recorded = t5x_checkpoints.read_model_settings(step_dir)
    record = f"{step_dir}/{t5x_checkpoints.MODEL_SETTINGS_FILE}"
    if recorded is not None:
        try:
            from_record = T5Config.from_dict({**config.to_dict(), **recorded})
        except (TypeError, ValueError) as error:
            raise ValueError(f"{record}: not our T5 settings ({error}); delete it to import with T5's defaults") from None
        differ = [f"{name}={getattr(from_record, name)!r} (the parameters have {getattr(config, name)!r})"
                  for name in ARCHITECTURE_FIELDS if name not in t5x_checkpoints.SETTINGS_NOT_IN_PARAMS
                  and getattr(from_record, name) != getattr(config, name)]  # fmt: skip
        if differ:
            raise ValueError(f"{record} describes another model than the checkpoint beside it: {', '.join(differ)}; "
                             "delete it (then give --t5x_setting for what shapes cannot show)")  # fmt: skip
        config = dataclasses.replace(from_record, **{name: getattr(config, name) for name in _RUNTIME_FIELDS})
    else:
        assumed = [f"{name}={getattr(config, name)!r}" for name in t5x_checkpoints.SETTINGS_NOT_IN_PARAMS if name not in settings]
        if assumed:
            print(f"textchem-convert: {step_dir} records no model settings (T5X keeps them in gin): assumed T5's "
                  f"{', '.join(assumed)}; if the model was trained with others, give --t5x_setting NAME=VALUE",
                  file=sys.stderr)  # fmt: skip
    return dataclasses.replace(config, **settings)


def parse_t5x_settings(pairs: Sequence[str]) -> dict[str, Any]:
    """`--t5x_setting NAME=VALUE` pairs -> {name: number}, for the settings shapes cannot show."""
    from textchem_jax.t5x_checkpoints import SETTINGS_NOT_IN_PARAMS

    settings: dict[str, Any] = {}
    for pair in pairs:
        name, _, text = pair.partition("=")
        if name not in SETTINGS_NOT_IN_PARAMS:
            raise ValueError(f"--t5x_setting {pair!r}: NAME must be one of {', '.join(SETTINGS_NOT_IN_PARAMS)} (the shapes "
                             "show every other setting)")  # fmt: skip
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        whole = name == "relative_attention_max_distance"
        if type(value) not in ((int,) if whole else (int, float)) or value <= 0 or (not whole and value >= 1):
            kind = "a positive whole number, e.g. 64" if whole else "a number in (0, 1), e.g. 1e-5"
            raise ValueError(f"--t5x_setting {pair!r}: {name} must be {kind}")
        settings[name] = value
    return settings


def chosen_vocabulary(given: epath.Path | None, own: epath.Path, own_name: str, config: T5Config, *,
                      sized: bool) -> epath.Path | None:  # fmt: skip
    """`given` (--vocabulary), else the checkpoint's `own` when it has one, checked against the embedding. With
    neither, model.gin takes the tasks' vocabulary, and says so here: the first evaluation failed on it, with a fix
    that did not mention the missing spiece.model."""
    from textchem_jax.data import vocabulary as vocabularies

    if given is not None:
        check_vocabulary(given, config, sized=sized)
        return given
    if own.exists():
        check_vocabulary(own, config, sized=sized, named=own_name)
        return own
    tasks = vocabularies.task_vocabulary()
    fits = vocabularies.fits_embedding(tasks, config.vocab_size)
    fast = own.parent / "tokenizer.json"  # what transformers 5 saves alone: not a SentencePiece model, not read
    only_fast = f" (only {fast.name}, which is not a SentencePiece model: its spiece.model is needed)" if fast.exists() else ""
    print(f"textchem-convert: warning: {own.parent} has no {own.name}{only_fast}, so the converted model.gin uses the tasks' "
          f"vocabulary ({vocabularies.vocabulary_file(tasks)}: TEXTCHEM_VOCABULARY, else the demo's), which "
          + ("fits its embedding; give --vocabulary if the model was trained with another" if fits else
             f"does not fit its {config.vocab_size:,}-row embedding ({vocabularies.fitting_rows(tasks)}): evaluating or "
             "fine-tuning it needs the vocabulary it was trained with, as --vocabulary here"), file=sys.stderr)  # fmt: skip
    return None


def check_vocabulary(path: epath.Path, config: T5Config, *, sized: bool = True, named: str = "--vocabulary") -> None:
    """Raises (naming where the vocabulary came from: `named`) unless `path` is a SentencePiece model whose pieces
    make the checkpoint's embedding rows (`sized`): any file was copied as spiece.model, and a tokenizer then failed
    on it, or read ids of another vocabulary; a missing one failed after the converted files were written."""
    from textchem_jax.data import vocabulary as vocabularies

    try:
        vocabulary = vocabularies.load_vocabulary(path)
    except (FileNotFoundError, ValueError) as error:
        raise ValueError(f"{named}: {error}") from None
    if sized and not vocabularies.fits_embedding(vocabulary, config.vocab_size):
        fix = "give the vocabulary it was trained with" + (" as --vocabulary" if named != "--vocabulary" else "")
        raise ValueError(f"{named} {path} has {vocabulary.vocab_size:,} pieces ({vocabularies.fitting_rows(vocabulary)}) "
                         f"but the checkpoint's embedding has {config.vocab_size:,} rows: {fix}")  # fmt: skip


def write_converted(output_dir: epath.Path, config: T5Config, params: dict, vocabulary: epath.Path | None,
                    source: str, extend_vocabulary: bool = False) -> T5Config:  # fmt: skip
    """A converted directory: params.npz, t5_config.json, model.gin and the vocabulary beside them."""
    from textchem_jax.data import vocabulary as vocabularies
    from textchem_jax.models.t5 import insert_vocabulary_rows

    makedirs(output_dir)
    copied = None
    if vocabulary is not None:
        copied = absolute(output_dir) / VOCABULARY_FILE  # model.gin names it, read from any working directory
        if absolute(vocabulary) != copied:
            epath.Path(vocabulary).copy(copied, overwrite=True)
    if extend_vocabulary:
        if copied is None:
            raise ValueError(f"--extend_vocabulary needs the SentencePiece model: {source} has none; give --vocabulary")
        _, pieces, added = vocabularies.extend_vocabulary(copied, copied)  # before seqio caches the file
        rows = vocabularies.padded_vocab_size(vocabularies.load_vocabulary(copied))
        params, config = insert_vocabulary_rows(params, config, pieces, len(added), max(rows, config.vocab_size))
        print(f"vocabulary extended by {added} ({pieces:,} -> {pieces + len(added):,} pieces, {config.vocab_size:,} rows)")
    write_params(output_dir, params)
    (output_dir / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    (output_dir / GIN_FILE).write_text(model_gin_text(config, copied, source))
    return config


def run_directory(checkpoint_dir: epath.Path) -> epath.Path | None:
    """The textchem-train MODEL_DIR that `checkpoint_dir` is, or whose `checkpoints/` folder or one numbered
    step in it `checkpoint_dir` is (the folder the end of training prints); None when it is none of these."""
    checkpoint_dir = absolute(checkpoint_dir)
    if checkpoint_dir.name.isdigit():  # checkpoints/<step>
        checkpoint_dir = checkpoint_dir.parent
    candidates = [checkpoint_dir] + ([checkpoint_dir.parent] if checkpoint_dir.name == CHECKPOINTS_FOLDER else [])
    return next((candidate for candidate in candidates if (candidate / RUN_CONFIG_FILE).exists()), None)


def load_checkpoint(checkpoint_dir: epath.Path) -> tuple[T5Config, dict, int, launch.SavedRun | None]:
    """`(config, params, step, run)` of a converted directory (step 0, run None) or of a training run's checkpoint
    (orbax: `MODEL_DIR` or its `checkpoints/` folder for the latest, `checkpoints/<step>` for that one; T5-shaped
    models only; `run` what its config.gin says). A T5X run is refused in one line: its config.gin is T5X's,
    `import_t5x` reads it."""
    import jax

    from textchem_jax import partitioning
    from textchem_jax.model_loading import checkpoint_format, load_for_inference, resolve_checkpoint

    if (checkpoint_dir / CONFIG_FILE).exists():
        config = T5Config.from_dict(json.loads((checkpoint_dir / CONFIG_FILE).read_text()))
        return config, read_params(checkpoint_dir, config), 0, None
    try:
        t5x = checkpoint_format(str(absolute(checkpoint_dir))) == "t5x"  # a T5X MODEL_DIR has a config.gin too
    except FileNotFoundError:
        t5x = False  # no checkpoint in it: said below
    if t5x:
        raise ValueError(f"{checkpoint_dir} is a T5X run or checkpoint_<step>: import it first with `textchem-convert "
                         f"--t5x_checkpoint={checkpoint_dir} --output_dir=OUT`, then give --checkpoint_dir=OUT")  # fmt: skip
    model_dir = run_directory(checkpoint_dir)
    if model_dir is None:
        raise ValueError(f"{checkpoint_dir} is neither a textchem-convert directory (with {CONFIG_FILE}) nor a "
                         f"textchem-train MODEL_DIR (with {RUN_CONFIG_FILE}), its {CHECKPOINTS_FOLDER}/ folder or "
                         f"one step in that")  # fmt: skip
    # The run's own vocabulary is what the export writes: the one its config.gin binds here does not matter
    run = launch.saved_run(str(model_dir))
    model = dataclasses.replace(run.model, vocabulary=None)
    names = set(model.abstract_params())
    if names != set(T5_PARTS):
        raise ValueError(
            f"{checkpoint_dir} holds {sorted(names)}: only T5-shaped models (Text+Chem T5, a shared-encoder e2-CLM) "
            "export to a Hugging Face T5 or T5X checkpoint"
        )
    mesh = partitioning.make_mesh(devices=jax.devices()[:1])
    concrete, step = resolve_checkpoint(str(checkpoint_dir))  # the step exported is the step named
    params = jax.tree_util.tree_map(np.asarray, load_for_inference(model, concrete, mesh))
    return model.t5_config, params, step, run


def checkpoint_vocabulary(checkpoint_dir: epath.Path):
    """The vocabulary kept beside a converted checkpoint or in a run's MODEL_DIR (also for its checkpoints),
    else `TEXTCHEM_VOCABULARY` (local or gs://) or the packaged default."""
    from textchem_jax.data import vocabulary as vocabularies

    own = vocabularies.own_vocabulary_file(absolute(checkpoint_dir))
    return epath.Path(own or os.environ.get("TEXTCHEM_VOCABULARY") or vocabularies.DEFAULT_VOCABULARY_PATH)


def run_generation_settings(model_dir: epath.Path, task_feature_lengths: dict[str, int] | None) -> dict[str, Any]:
    """Hugging Face `generate()` settings that decode as the run's own evaluation did: `max_new_tokens` its target
    feature length and, where config.gin binds `train_lib.train.decode_fn = @beam_search.beam_search`, its beams
    (`beam_search.beam_search.num_decodes`, else the search's default) and the options bound beside them."""
    import inspect

    from textchem_jax.models import beam_search
    from textchem_jax.run_results import config_binding

    text = (model_dir / RUN_CONFIG_FILE).read_text()
    settings: dict[str, Any] = {}
    if task_feature_lengths and "targets" in task_feature_lengths:
        settings["max_new_tokens"] = int(task_feature_lengths["targets"])
    decode_fn = config_binding(text, r"(?:[\w.]+\.)?train\.decode_fn")
    if not (isinstance(decode_fn, str) and re.fullmatch(r"@(?:[\w.]+\.)?beam_search\.beam_search(?:\(\))?", decode_fn)):
        return settings  # greedy (the default) or sampling: generate()'s own default is greedy
    settings["num_beams"] = inspect.signature(beam_search.beam_search).parameters["num_decodes"].default
    for ours, theirs in (("num_decodes", "num_beams"), ("length_penalty", "length_penalty"),
                         ("early_stopping", "early_stopping"), ("min_decode_length", "min_new_tokens")):  # fmt: skip
        value = config_binding(text, rf"(?:[\w.]+\.)?beam_search\.beam_search\.{ours}")
        if value is not None:
            settings[theirs] = value
    limit = config_binding(text, r"(?:[\w.]+\.)?beam_search\.beam_search\.max_new_tokens")
    if isinstance(limit, int):
        settings["max_new_tokens"] = min(limit, settings.get("max_new_tokens", limit))
    return settings


def export(checkpoint_dir: epath.Path, *, hf_output_dir: epath.Path | None = None, t5x_output_dir: str | None = None,
           vocabulary: epath.Path | None = None) -> tuple[T5Config, str, str]:  # fmt: skip
    """A converted directory or a run's MODEL_DIR -> a Hugging Face directory (config.json, model.safetensors,
    generation_config.json, spiece.model, tokenizer files) or a T5X checkpoint (`t5x_output_dir/checkpoint_<step>/`
    with spiece.model and the model settings); returns (config, what was written, what was exported: `step N of
    RUN`, or the converted directory). A run still training may delete the step soon: the Hugging Face export
    records step and run in config.json (`hf_convert.RECORD_KEY`), and the command prints them."""
    from textchem_jax.models import hf_convert

    if hf_output_dir is not None:
        hf_convert.check_export_directory(hf_output_dir)  # before the checkpoint is read
    config, params, step, run = load_checkpoint(checkpoint_dir)
    model_dir = run_directory(checkpoint_dir) if run is not None else None
    exported = f"step {step} of {model_dir}" if model_dir is not None else str(checkpoint_dir)
    if vocabulary is not None:
        check_vocabulary(vocabulary, config)
    if t5x_output_dir is not None:
        from textchem_jax import t5x_checkpoints

        vocabulary = vocabulary or checkpoint_vocabulary(checkpoint_dir)
        written = t5x_checkpoints.write_checkpoint(t5x_output_dir, params, step, str(vocabulary), config)
        if differ := t5x_checkpoints.non_default_settings(config):
            print(f"textchem-convert: {', '.join(f'{k}={v!r}' for k, v in differ.items())} differ from T5's values, which a "
                  f"T5X checkpoint cannot hold: recorded in {written}/{t5x_checkpoints.MODEL_SETTINGS_FILE}, which "
                  "textchem-convert --t5x_checkpoint reads; T5X itself needs them in its model gin", file=sys.stderr)  # fmt: skip
        return config, written, exported
    if model_dir is not None:  # a run: how its evaluation decoded, and its input length
        generation = run_generation_settings(model_dir, run.task_feature_lengths)
        model_max_length = (run.task_feature_lengths or {}).get("inputs")
        record = {"step": step, "source": str(model_dir)}
    else:  # a converted directory: what the folder it was imported from had
        kept = {name: read_json_object(checkpoint_dir / name)
                for name in KEPT_HF_FILES if (checkpoint_dir / name).exists()}  # fmt: skip
        generation = kept.get(GENERATION_CONFIG_FILE, {})
        model_max_length = kept.get(TOKENIZER_CONFIG_FILE, {}).get("model_max_length")
        record = {"source": str(absolute(checkpoint_dir))}
    hf_convert.save_hf_directory(hf_output_dir, config, params, vocabulary or checkpoint_vocabulary(checkpoint_dir),
                                 generation=generation, model_max_length=model_max_length, record=record)  # fmt: skip
    return config, str(hf_output_dir), exported


@command
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="textchem-convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("--hf_dir", type=epath.Path, help="Hugging Face T5 directory to import")
    parser.add_argument("--t5x_checkpoint", help="T5X checkpoint_<step> folder, or a T5X MODEL_DIR (its latest), to import")
    parser.add_argument("--output_dir", type=epath.Path, help="converted directory to write (with --hf_dir or --t5x_checkpoint)")
    parser.add_argument("--checkpoint_dir", type=epath.Path,
                        help="converted directory, or textchem-train MODEL_DIR or its checkpoints/ folder (latest "
                             "checkpoint) or checkpoints/<step> (that one), to export")  # fmt: skip
    parser.add_argument("--hf_output_dir", type=epath.Path, help="HF directory to write (with --checkpoint_dir)")
    parser.add_argument("--t5x_output_dir", help="T5X MODEL_DIR to write checkpoint_<step>/ into (with --checkpoint_dir)")
    parser.add_argument("--vocabulary", type=epath.Path, help="SentencePiece model to copy alongside")
    parser.add_argument("--scan_layers", action="store_true", help="import into the scanned (stacked) layout")
    parser.add_argument("--extend_vocabulary", action="store_true",
                        help="add the chemistry characters the vocabulary lacks (T5's: \\ ~ { } <) and grow the embedding")  # fmt: skip
    parser.add_argument("--t5x_setting", action="append", default=[], metavar="NAME=VALUE",
                        help="with --t5x_checkpoint: relative_attention_max_distance or layer_norm_epsilon of the model, "
                             "which T5X checkpoints do not hold (default: what our T5X export recorded, else T5's)")  # fmt: skip
    parser.add_argument("--verbose", action="store_true", help="show library logs")
    args = parse_args(parser, argv)
    if not args.verbose:
        # Checkpoints are read and vocabularies checked through TensorFlow (seqio) and orbax: their start-up lines
        # and orbax's note on a run's data-iterator item off, errors included.
        launch.quiet_libraries()
    if args.t5x_setting and not args.t5x_checkpoint:
        parser.error("--t5x_setting goes with --t5x_checkpoint (a Hugging Face config.json holds every setting)")
    sources = [s for s in (args.hf_dir, args.t5x_checkpoint) if s]
    exports = [d for d in (args.hf_output_dir, args.t5x_output_dir) if d]

    try:
        if len(sources) == 1 and args.output_dir and not (args.checkpoint_dir or exports):
            if args.hf_dir:
                config = import_hf(args.hf_dir, args.output_dir, args.vocabulary, args.extend_vocabulary,
                                   scan_layers=args.scan_layers)  # fmt: skip
            else:
                config = import_t5x(args.t5x_checkpoint, args.output_dir, args.vocabulary, args.extend_vocabulary,
                                    parse_t5x_settings(args.t5x_setting))  # fmt: skip
            preset = preset_name(config)
            print(f"imported {sources[0]} -> {args.output_dir} ({f'T5 v{preset[1]} {preset[0]}' if preset else 'custom'}): {config}")
            return 0
        if args.checkpoint_dir and len(exports) == 1 and not (sources or args.output_dir):
            config, written, exported = export(args.checkpoint_dir, hf_output_dir=args.hf_output_dir,
                                               t5x_output_dir=args.t5x_output_dir,
                                               vocabulary=args.vocabulary)  # fmt: skip
            print(f"exported {exported} -> {written}: {config}")
            if args.hf_output_dir:
                print(TOKENIZER_NOTE)
            return 0
    except (ValueError, FileNotFoundError, FileExistsError, CheckpointError) as error:
        print(f"textchem-convert: {error}", file=sys.stderr)
        return 2
    parser.error("give one of --hf_dir, --t5x_checkpoint with --output_dir; or --checkpoint_dir with one of "
                 "--hf_output_dir, --t5x_output_dir")  # fmt: skip
    return 2


if __name__ == "__main__":
    sys.exit(main())
