"""Parameters for evaluation, inference or fine-tuning, from any checkpoint a user has.

`path` may be a training run (`MODEL_DIR`, or its `checkpoints/` folder: the latest step is used),
one step folder, a `textchem-convert` output (`params.npz`), a Hugging Face T5 directory or a T5X
checkpoint (`checkpoint_<step>/`, or a T5X MODEL_DIR: its latest), read directly as `t5x.eval` reads its
CHECKPOINT_PATH. Parameters are placed in the shardings their logical axes imply on `mesh`.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from textchem_jax import partitioning
from textchem_jax.checkpoints import check_shapes, load_params
from textchem_jax.checkpoints import stored_param_names as checkpoint_param_names
from textchem_jax.models.adapters import EncoderDecoderModel
from textchem_jax.models.config import ARCHITECTURE_FIELDS, T5Config, t5_config
from textchem_jax.models.e2clm import FREEZING_FIELDS, VARIANT_FIELDS, E2ClmConfig, recorded_fields
from textchem_jax.models.hf_convert import numpy_dtype
from textchem_jax.models.t5 import stack_layer_params, unstack_layer_params
from textchem_jax.run_results import (CHECKPOINTS_FOLDER, CONVERTED_CONFIG_FILE, CONVERTED_GIN_FILE, RUN_CONFIG_FILE,
                                      config_binding)

PARAMS_FILE = "params.npz"  # a textchem-convert directory's parameters, flat "encoder/layers_0/..." keys
HF_CONFIG_FILE = "config.json"  # a Hugging Face directory's model config
T5_PARTS = ("token_embedder", "encoder", "decoder")
ENCODER_PARTS = ("text", "chemistry")  # the e2-CLM parts a T5 encoder alone can start (`with_t5_parts`)
# What a T5 encoder alone (Hugging Face `T5EncoderModel`) cannot describe: its config.json's values are defaults.
DECODER_ONLY_FIELDS = ("num_decoder_layers", "tie_word_embeddings")
_SEPARATOR = "/"


def abstract_params(model, mesh, rules=None) -> tuple[Any, Any]:
    """(ShapeDtypeStructs with shardings, shardings) of a model adapter's parameters, nothing allocated."""
    boxed = model.abstract_params()
    shardings = partitioning.param_shardings(mesh, boxed, rules)
    shapes = nn.meta.unbox(boxed)
    return jax.tree_util.tree_map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings), shardings


def _orbax_root(path: str) -> tuple[str, int | None] | None:
    """(checkpoint manager folder, step or None for latest) if `path` is one of our run layouts."""
    import tensorflow as tf

    path = path.rstrip("/")
    if tf.io.gfile.isdir(os.path.join(path, CHECKPOINTS_FOLDER)):
        return os.path.join(path, CHECKPOINTS_FOLDER), None
    if tf.io.gfile.isdir(os.path.join(path, "state")) and os.path.basename(path).isdigit():
        return os.path.dirname(path), int(os.path.basename(path))
    if any(name.rstrip("/").isdigit() for name in tf.io.gfile.listdir(path)):
        return path, None
    return None


def checkpoint_format(path: str) -> str:
    """What `path` holds: "converted" (params.npz of textchem-convert), "orbax" (a textchem-train run, its
    checkpoints/ folder or one step), "hf" (a Hugging Face T5 directory) or "t5x" (a T5X checkpoint_<step>
    folder or MODEL_DIR); FileNotFoundError naming all four otherwise."""
    import tensorflow as tf

    from textchem_jax import t5x_checkpoints

    expected = (f"a textchem-train MODEL_DIR (or its checkpoints/, or one step in that), a textchem-convert output "
                f"({PARAMS_FILE}), a Hugging Face T5 directory ({HF_CONFIG_FILE} and weights) or a T5X "
                "checkpoint_<step> folder or MODEL_DIR")  # fmt: skip
    if not tf.io.gfile.isdir(path):
        raise FileNotFoundError(f"no checkpoint folder at {path}: expected {expected}")
    if tf.io.gfile.exists(os.path.join(path, PARAMS_FILE)):
        return "converted"
    if _orbax_root(path) is not None:
        return "orbax"
    if tf.io.gfile.exists(os.path.join(path, HF_CONFIG_FILE)):
        return "hf"
    try:
        t5x_checkpoints.checkpoint_directory(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} holds no checkpoint: expected {expected}") from None
    return "t5x"


def resolve_checkpoint(path: str | Mapping[str, str]) -> tuple[str | Mapping[str, str], int]:
    """(the concrete checkpoint `path` names now, its step): a run, its checkpoints/ folder or a T5X MODEL_DIR
    becomes its latest complete step's folder, which `load_for_inference` then reads whatever a run still training
    saves meanwhile; any other checkpoint is itself (a converted or Hugging Face directory: step 0). A run without
    a complete step is itself, step 0: loading it says what is missing."""
    found = complete_checkpoints(path)
    return found[-1] if found else (path, 0)


def complete_checkpoints(path: str | Mapping[str, str]) -> list[tuple[str | Mapping[str, str], int]]:
    """[(concrete checkpoint, step)] of every complete step `path` names, in step order: each step of a run
    (`MODEL_DIR` or its checkpoints/) or of a T5X MODEL_DIR; otherwise the one checkpoint (`resolve_checkpoint`)."""
    import tensorflow as tf

    from textchem_jax import t5x_checkpoints

    if isinstance(path, Mapping) or not tf.io.gfile.isdir(path):
        return [(path, 0)]
    kind = checkpoint_format(path)
    if kind == "orbax":
        root, step = _orbax_root(path)
        return [(path, step)] if step is not None else [(os.path.join(root, str(s)), s) for s in _complete_steps(root)]
    if kind != "t5x":
        return [(path, 0)]
    latest = t5x_checkpoints.checkpoint_directory(path)
    if latest.rstrip("/") == path.rstrip("/"):  # one checkpoint_<step> folder
        return [(path, t5x_checkpoints.step_of(path))]
    steps = sorted((int(m.group(1)), name.rstrip("/")) for name in tf.io.gfile.listdir(path)
                   if (m := re.fullmatch(r"checkpoint_(\d+)", name.rstrip("/"))))  # fmt: skip
    return [(os.path.join(path.rstrip("/"), name), step) for step, name in steps]


def _complete_steps(root: str) -> list[int]:
    """The steps orbax has committed in a run's checkpoints/ folder, in order: not a step still being written
    (`<step>.orbax-checkpoint-tmp-*`; on a bucket, a step folder without its commit file), nor `<step>.corrupt`."""
    from orbax.checkpoint import path as orbax_path

    from textchem_jax.paths import absolute

    return sorted(int(p.name) for p in orbax_path.step.checkpoint_steps_paths(absolute(root)) if p.name.isdigit())


def _foreign_fix(path: str) -> str:
    """How to run a Hugging Face or T5X checkpoint that is not the gin-bound model: most often its size or
    its vocabulary (the embedding's rows follow VOCABULARY, whose default is our small demo vocabulary)."""
    import tensorflow as tf

    from textchem_jax.data.vocabulary import CHECKPOINT_VOCABULARY_FILE

    vocabulary = os.path.join(path, CHECKPOINT_VOCABULARY_FILE)
    own = f"TEXTCHEM_VOCABULARY={vocabulary}" if tf.io.gfile.exists(vocabulary) else "a VOCABULARY binding"
    return (f"give the model it holds (the models/*.gin of its size; its vocabulary: {own}), or import it with "
            "textchem-convert, whose model.gin binds both")  # fmt: skip


def _foreign_params(model, path: str, kind: str, part: str | None = None) -> dict:
    """Plain parameters of a Hugging Face directory or a T5X checkpoint, laid out for the model. A Hugging
    Face config.json, or the settings our T5X export records, must describe the model's architecture: what shapes
    cannot show (the relative-position range, the norm's epsilon) would otherwise change its outputs silently.
    A Hugging Face T5 encoder alone (`_hf_encoder_only`) gives an e2-CLM's text or chemistry `part` its
    `token_embedder` and `encoder`, and nothing else."""
    from textchem_jax import t5x_checkpoints
    from textchem_jax.models.hf_convert import load_hf_directory

    if kind == "t5x":  # T5X keeps the settings in gin: only what our export recorded beside the parameters
        params, _ = t5x_checkpoints.read_checkpoint(path)
        step_dir = t5x_checkpoints.checkpoint_directory(path)
        recorded = t5x_checkpoints.read_model_settings(step_dir) or {}
        described = {name: recorded[name] for name in t5x_checkpoints.SETTINGS_NOT_IN_PARAMS if name in recorded}
        source = f"{os.path.join(step_dir, t5x_checkpoints.MODEL_SETTINGS_FILE)} records"
    elif _hf_encoder_only(path):
        if part not in ENCODER_PARTS:
            needs = "the decoder" if part else "a whole model"
            raise ValueError(f"{path} holds a T5 encoder alone (config.json: T5EncoderModel), and {needs} needs a full "
                             "encoder-decoder T5 (T5ForConditionalGeneration, or textchem-convert's import of one); an "
                             "encoder alone starts an e2-CLM's text or chemistry part")  # fmt: skip
        theirs, params = load_hf_directory(path, encoder_alone=True)
        described = {name: getattr(theirs, name) for name in ARCHITECTURE_FIELDS if name not in DECODER_ONLY_FIELDS}
        source = f"{os.path.join(path, HF_CONFIG_FILE)} describes"
    else:
        theirs, params = load_hf_directory(path)
        described = {name: getattr(theirs, name) for name in ARCHITECTURE_FIELDS}
        source = f"{os.path.join(path, HF_CONFIG_FILE)} describes"
    _refuse_another_architecture(_architecture_of(model), described, source, functools.partial(_foreign_fix, path))
    return stack_layer_params(params) if model.t5_config.scan_layers else unstack_layer_params(params)


def _hf_encoder_only(path: str) -> bool:
    """Whether a Hugging Face directory holds a T5 encoder without its decoder (`T5EncoderModel.save_pretrained`):
    the paper's variant A takes its encoders from pretrained language encoders, and such a folder failed as a part
    with a list of the decoder tensors it lacks."""
    import tensorflow as tf

    with tf.io.gfile.GFile(os.path.join(path, HF_CONFIG_FILE)) as f:
        described = json.load(f)
    return "T5EncoderModel" in (described.get("architectures") or ()) or described.get("is_encoder_decoder") is False


def _architecture_of(model) -> dict[str, Any]:
    """What a checkpoint's description is held against: the ARCHITECTURE_FIELDS of the model's T5 and, for an
    e2-CLM, its variant and freezing (`e2clm.recorded_fields`)."""
    fields = {name: getattr(model.t5_config, name) for name in ARCHITECTURE_FIELDS}
    config = getattr(model, "config", None)
    if isinstance(config, E2ClmConfig):
        fields.update(recorded_fields(config))
    return fields


def _refuse_another_architecture(ours: Mapping[str, Any], described: Mapping[str, Any], source: str,
                                 fix: Callable[[], str], hints: Mapping[str, str] | None = None) -> None:  # fmt: skip
    """One line naming each field `source` ("<file> describes") gives otherwise than the model (`ours`, from
    `_architecture_of`: a field the model lacks is not compared), with its `hints` (how to bind it), and `fix()`."""
    hints = hints or {}
    differ = [f"{name}={value!r} (the model has {ours[name]!r}{hints.get(name, '')})"
              for name, value in described.items() if name in ours and value != ours[name]]  # fmt: skip
    if differ:
        raise ValueError(f"{source} another model: {', '.join(differ)}; {fix()}")


def _recorded_architecture(path: str, kind: str) -> tuple[str, dict[str, Any], str | None] | None:
    """(the file, {field: value}, the configurable a run binds them on) of the model a checkpoint of ours records
    beside its parameters: the ARCHITECTURE_FIELDS of a textchem-convert directory's t5_config.json, or those and an
    e2-CLM's variant and freezing in the config.gin of the run whose MODEL_DIR, checkpoints/ or one step `path` is
    (`kind`: `checkpoint_format`'s); None where none is recorded (a Hugging Face or T5X checkpoint, a run trained
    from Python, which writes no config.gin)."""
    import tensorflow as tf

    if kind == "converted":
        file = os.path.join(path, CONVERTED_CONFIG_FILE)
        if not tf.io.gfile.exists(file):
            return None
        with tf.io.gfile.GFile(file) as f:
            config = T5Config.from_dict(json.load(f))
        return file, {name: getattr(config, name) for name in ARCHITECTURE_FIELDS}, None
    root = _orbax_root(path) if kind == "orbax" else None
    if root is None or os.path.basename(root[0]) != CHECKPOINTS_FOLDER:
        return None
    file = os.path.join(os.path.dirname(root[0]), RUN_CONFIG_FILE)
    if not tf.io.gfile.exists(file):
        return None
    with tf.io.gfile.GFile(file) as f:
        bound = _bound_architecture(f.read())
    return (file, *bound) if bound else None


def _bound_architecture(config: str) -> tuple[dict[str, Any], str] | None:
    """({field: value}, the configurable binding them) of the model a run's config.gin text builds MODEL from
    (`t5_config` or `e2clm_config` and their bindings): its T5's ARCHITECTURE_FIELDS and an e2-CLM's
    `e2clm.recorded_fields`, read from the text as `run_results.config_binding` reads a binding: parsing it with
    gin, as `launch.saved_run` does for the export (the same values), would replace the live configuration that the
    command writes into its own config.gin afterwards. A field bound to something gin evaluates (vocab_size from the
    vocabulary: the embedding's shape shows it) is left out, one not bound is its default; None where MODEL is built
    otherwise, or its size or version is left to gin."""

    def reference(value: Any) -> re.Match | None:
        return re.fullmatch(r"@([\w.]+)\(\)", value) if isinstance(value, str) else None

    model = reference(config_binding(config, "MODEL"))
    made_by = reference(config_binding(config, rf"{re.escape(model[1])}\.config")) if model else None
    if made_by is None or made_by[1].rsplit(".", 1)[-1] not in ("t5_config", "e2clm_config"):
        return None
    configurable, e2clm_fields = made_by[1], (*VARIANT_FIELDS, *FREEZING_FIELDS)
    is_e2clm = configurable.endswith("e2clm_config")
    bound = {name: config_binding(config, rf"{re.escape(configurable)}\.{name}")
             for name in ("size", "version", *ARCHITECTURE_FIELDS, *(e2clm_fields if is_e2clm else ()))}  # fmt: skip
    evaluated = {name for name, value in bound.items() if isinstance(value, str) and value[:1] in ("@", "%", "")}
    literal = {name: value for name, value in bound.items() if value is not None and name not in evaluated}
    if {"size", "version"} & evaluated or "size" not in literal:
        return None
    variant = {name: literal.pop(name) for name in e2clm_fields if name in literal}
    try:
        made = t5_config(literal.pop("size"), literal.pop("version", "1.0"), **literal)
        described = {name: getattr(made, name) for name in ARCHITECTURE_FIELDS if name not in evaluated}
        if is_e2clm:
            described |= {name: value for name, value in recorded_fields(E2ClmConfig(made, **variant)).items()
                          if name not in evaluated}  # fmt: skip
    except (TypeError, ValueError):  # not a configuration of ours: nothing to hold the model against
        return None
    return described, configurable


def check_recorded_architecture(model, path: str, kind: str | None = None,
                                fix: Callable[[], str] | None = None, *, resuming: bool = False,
                                starting: bool = False) -> None:  # fmt: skip
    """Raises unless the architecture a checkpoint of ours records (`_recorded_architecture`) is the model's: what
    parameter shapes cannot show ran silently as the gin-bound model's, as it does not for a Hugging Face or T5X
    checkpoint (a relative-position range of 40 and an epsilon of 1e-3 ran as t5_1_1_tiny.gin's 128 and 1e-6:
    first-step loss 31.59 for 31.62, 2 of 10 predictions changed; a `select` e2-CLM run evaluated as the default
    `mean` decoded other text, and a `mean` run resumed as `select` overwrote its config.gin, then stopped in
    tf.data). An e2-CLM's freezing is held against the run only when `resuming` it: the optimizer state has no
    moments for a frozen part, so a resume keeps what the run froze, where starting from it may freeze otherwise; and
    a new run `starting` from it may be another variant of the same parameters (a `select` run from a `mean` one).
    `fix` (default: bind the model it records)."""
    kind = checkpoint_format(path) if kind is None else kind
    recorded = _recorded_architecture(path, kind)
    if recorded is None:
        return
    file, described, configurable = recorded
    apart = (*(() if resuming else FREEZING_FIELDS), *(VARIANT_FIELDS if starting else ()))
    described = {name: value for name, value in described.items() if name not in apart}
    if kind == "converted":
        own = f"bind the model it holds: --gin_file={os.path.join(path, CONVERTED_GIN_FILE)}, written beside it"
    else:
        own = f"bind the model the run was trained with: the model gin file and overrides {file} records"
    run = os.path.dirname(file)
    hints = {name: f'; bind --gin.{configurable}.{name}="{value!r}"' for name, value in described.items()
             if name in (*VARIANT_FIELDS, *FREEZING_FIELDS)}  # fmt: skip
    for name in set(FREEZING_FIELDS) & set(hints):
        hints[name] += (": the optimizer state keeps no moments for a frozen part, so a resume freezes what the run "
                        "froze; to freeze or train a part otherwise, start another MODEL_DIR from this run, "
                        f"--gin.run_config.CheckpointConfig.initial_checkpoint_path=\"'{run}'\"")  # fmt: skip
    verb = "describes" if kind == "converted" else "records"
    _refuse_another_architecture(_architecture_of(model), described, f"{file} {verb}", fix or (lambda: own), hints)


def _starting_fix(path: str) -> str:
    """How to start a run from a checkpoint of ours that is not the gin-bound model (the run's own config.gin,
    the default fix, is for resuming)."""
    return (f"{path} is a starting checkpoint of another model: bind the model it holds (its MODEL_DIR/config.gin, or "
            "a converted folder's model.gin: its size, and its MLP, ReLU `wi` in T5 v1.0 or gated-GELU `wi_0`/`wi_1` "
            "in v1.1; an e2-CLM binds them as e2clm.e2clm_config's size, version and vocab_size), or start from a "
            "checkpoint of the gin-bound model")  # fmt: skip


def check_checkpoint_vocabulary(model, path: str, otherwise: str = "") -> None:
    """Raises unless the model reads with the vocabulary the checkpoint at `path` brings (its spiece.model, when
    it has one): two vocabularies of one size fit the same embedding, and ids read with the other decode to
    garbage without an error (two textchem-vocab models of one --vocab_size, say)."""
    from textchem_jax.data import vocabulary as vocabularies

    own = vocabularies.own_vocabulary_file(path)
    bound = vocabularies.vocabulary_file(model.vocabulary) if model.vocabulary is not None else "?"
    if own is None or bound == "?" or vocabularies.same_vocabulary_files(own, bound):
        return
    raise ValueError(f"{path} was trained with the vocabulary {own}, but VOCABULARY is {bound}, another SentencePiece "
                     f"model (its ids mean other pieces): bind the checkpoint's own, TEXTCHEM_VOCABULARY={own} (what the "
                     "models/ gin files read) or \"--gin.VOCABULARY=@vocabularies.load_vocabulary()\" "
                     f"--gin.vocabularies.load_vocabulary.path=\"'{own}'\"{otherwise}")  # fmt: skip


def load_for_inference(model, path: str, mesh, *, like: Any = None, starting: bool = False,
                       part: str | None = None) -> Any:  # fmt: skip
    """Parameters of the model adapter `model` from `path` (see module docstring), sharded for `mesh`; a
    checkpoint of another model is one error whose fix fits loading it to run, or to start from (`starting`), and
    so is one trained with another vocabulary than the model's (a model without one, as export reads it, takes any).
    Read for an e2-CLM's text or chemistry `part`, a Hugging Face T5 encoder alone gives the T5 `model` its
    `token_embedder` and `encoder` only."""
    check_checkpoint_vocabulary(model, path)
    kind = checkpoint_format(path)
    target, shardings = abstract_params(model, mesh)
    if like is not None:
        target = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like)
    if kind in ("hf", "t5x"):
        fix = functools.partial(_foreign_fix, path)
    else:  # ours: by default the run's own config.gin, which fits resuming it
        fix = functools.partial(_starting_fix, path) if starting else None
        check_recorded_architecture(model, path, kind, fix, starting=starting)  # what shapes cannot show
    if kind == "orbax":  # the whole model: a checkpoint holding more is another model (e2-CLM variants)
        root = _orbax_root(path)
        return load_params(root[0], target, step=root[1], fix=fix, exact=True)
    params = read_params(path, model.t5_config) if kind == "converted" else _foreign_params(model, path, kind, part)
    if part in ENCODER_PARTS and "decoder" not in params:  # a T5 encoder alone (`_foreign_params`)
        target = {name: target[name] for name in ("token_embedder", "encoder")}
    check_shapes(params, target, path, fix=fix, exact=True)
    return jax.tree_util.tree_map(lambda value, t: jax.device_put(jnp.asarray(value, t.dtype), t.sharding), params, target)


def stored_param_names(path: str) -> set[str]:
    """Top-level parameter names a checkpoint holds (T5: `token_embedder`, `encoder`, `decoder`)."""
    kind = checkpoint_format(path)
    if kind == "converted":
        with _params_file(path) as arrays:
            return {name.split(_SEPARATOR)[0] for name in arrays.files}
    if kind == "orbax":
        return checkpoint_param_names(*_orbax_root(path))
    return set(T5_PARTS)  # Hugging Face and T5X checkpoints hold a T5


def initial_params(model, source: str | Mapping[str, str], mesh, like: Any) -> tuple[Any, int]:
    """(parameters, step) a new run starts from (`INITIAL_CHECKPOINT_PATH`), placed like `like` (the fresh
    ones). The step is the checkpoint's when it is this model's (T5X: TRAIN_STEPS counts on), else 0.

    `source` is a checkpoint of this model, or a T5 checkpoint (a T5 run, a `textchem-convert` import, a
    Hugging Face T5 directory or a T5X checkpoint) whose parts the adapter takes (`with_t5_parts`: e2-CLM encoders and decoder from real T5
    weights), or a mapping part -> T5 checkpoint (e.g. {"text": t5-small, "chemistry": MolT5,
    "decoder": t5-small}) for encoders started from different checkpoints.
    """
    if not isinstance(source, Mapping) and (  # a T5 takes no parts: another model's checkpoint is refused there
        not model.t5_parts or stored_param_names(source) == set(model.abstract_params())
    ):
        concrete, step = resolve_checkpoint(source)  # the step loaded is the step returned, whatever is saved since
        return load_for_inference(model, concrete, mesh, like=like, starting=True), step
    parts = dict(source) if isinstance(source, Mapping) else {part: source for part in model.t5_parts}
    for part, path in parts.items():
        _refuse_an_e2clm_part(part, path)
    _check_parts_vocabulary(model, parts)  # an e2-CLM took encoders trained on another vocabulary of the same size
    t5 = EncoderDecoderModel(model.t5_config, vocabulary=model.vocabulary)
    params = like
    for part, path in parts.items():
        try:
            part_params = load_for_inference(t5, path, mesh, starting=True, part=part)
        except ValueError as error:
            raise ValueError(f"the {part} part: {error}") from None
        params = model.with_t5_parts(params, part_params, (part,))
    return params, 0


def _refuse_an_e2clm_part(part: str, path: str) -> None:
    """A part is taken from a T5 checkpoint: an e2-CLM run given as one was told to bind the model it holds, which
    cannot make it a part."""
    import tensorflow as tf

    if not tf.io.gfile.isdir(path) or checkpoint_format(path) != "orbax":
        return  # a textchem-convert folder holds a T5 (no need to read its parameters); another loads as itself
    names = stored_param_names(path)
    if names - set(T5_PARTS):
        raise ValueError(f"the {part} part: {path} is an e2-CLM checkpoint (parameters {', '.join(sorted(names))}), "
                         f"and a part must be a T5 checkpoint ({', '.join(T5_PARTS)}): a T5 run, a textchem-convert "
                         "import, a Hugging Face T5 directory or a T5X checkpoint; an e2-CLM run starts the same "
                         "variant whole, as INITIAL_CHECKPOINT_PATH of a model bound as its config.gin "
                         "records")  # fmt: skip


def _check_parts_vocabulary(model, parts: Mapping[str, str]) -> None:
    """Raises unless every part's checkpoint brings VOCABULARY's SentencePiece model (when it brings one), naming
    each part that does not: the fix for one T5 checkpoint (bind its own vocabulary) broke an e2-CLM's other parts,
    and TEXTCHEM_VOCABULARY, which it suggested, is not read where the variant binds VOCABULARY itself."""
    from textchem_jax.data import vocabulary as vocabularies

    bound = vocabularies.vocabulary_file(model.vocabulary)
    if bound == "?":  # no vocabulary, or one without a file: nothing to compare
        return
    brought = {part: vocabularies.own_vocabulary_file(path) for part, path in parts.items()}
    brought = {part: own for part, own in brought.items() if own is not None}  # a Hugging Face or T5X part: none
    differ = {part: own for part, own in brought.items() if not vocabularies.same_vocabulary_files(own, bound)}
    if not differ:
        return
    said = "; ".join(f"the {part} part ({parts[part]}) brings {own}" for part, own in differ.items())
    theirs = next(iter(differ.values()))
    if len(differ) == len(brought) and all(vocabularies.same_vocabulary_files(own, theirs) for own in differ.values()):
        fix = (f"bind theirs: \"--gin.VOCABULARY=@vocabularies.load_vocabulary()\" "
               f"--gin.vocabularies.load_vocabulary.path=\"'{theirs}'\"")  # fmt: skip
    else:
        fix = "start every part from checkpoints trained with one vocabulary, and bind VOCABULARY to it"
    raise ValueError(f"an e2-CLM's parts and VOCABULARY must share one SentencePiece model (an id means one piece in "
                     f"all of them), but VOCABULARY is {bound}: {said}; {fix}")  # fmt: skip


def write_params(directory: str | os.PathLike, params: dict) -> epath.Path:
    """Saves a nested dict of arrays as one .npz (bfloat16 stored as float32, exactly), local or gs://."""
    flat: dict[str, np.ndarray] = {}

    def walk(tree: dict, prefix: tuple[str, ...]) -> None:
        for key, value in tree.items():
            if isinstance(value, dict):
                walk(value, (*prefix, key))
            else:
                array = np.asarray(value)
                if array.dtype.name == "bfloat16":  # .npz has no bfloat16
                    array = array.astype(np.float32)
                flat[_SEPARATOR.join((*prefix, key))] = array

    walk(dict(params), ())
    buffer = io.BytesIO()
    np.savez(buffer, **flat)
    path = epath.Path(directory) / PARAMS_FILE
    path.write_bytes(buffer.getvalue())
    return path


def _params_file(directory: str | os.PathLike):
    """The `params.npz` of a converted directory (local or `gs://`)."""
    return np.load(io.BytesIO((epath.Path(directory) / PARAMS_FILE).read_bytes()))


def read_params(directory: str | os.PathLike, config: T5Config) -> dict:
    """The nested parameter dict written by `write_params`, cast to `config.param_dtype` and laid out
    for `config.scan_layers` (stacked or per-layer, whichever way it was written)."""
    dtype = numpy_dtype(config.param_dtype)
    params: dict = {}
    with _params_file(directory) as arrays:
        for name in arrays.files:
            *parents, leaf = name.split(_SEPARATOR)
            node = params
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = arrays[name].astype(dtype)
    return stack_layer_params(params) if config.scan_layers else unstack_layer_params(params)
