"""Hugging Face T5 directories <-> our T5Config and parameter tree.

One table (`hf_parameter_map`) names, for a config, every HF tensor with its place in our tree and
whether it is transposed (HF `Linear.weight` is (out, in); our kernels are (in, out)); both directions
use it. T5 differences handled here:
- the relative position tables live in HF's block 0 of each stack; ours at `<stack>/relpos_bias`;
- v1.0 ties the logits to `shared.weight` and scales the decoder output; v1.1 has `lm_head.weight`.
  Transformers 5 writes `tie_word_embeddings: true` for every T5 and keeps the v1.0/v1.1 switch in
  `scale_decoder_outputs`, and may save a v1.1 model whose head equals the embedding without
  `lm_head.weight`: then our `logits_dense` starts as a copy of the embedding.

torch, safetensors and tokenizers are imported inside the functions that read or write their formats, so this
module is cheap to import without the `hf` extra.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from etils import epath

from textchem_jax.models.config import T5Config, dtype_name
from textchem_jax.paths import makedirs

logger = logging.getLogger(__name__)

SUPPORTED_FEED_FORWARD = {"relu": "relu", "gated-gelu": "gated-gelu"}
# Present in some HF checkpoints, never used by HF's T5 (cross-attention has no position bias), or tied
# copies of the shared embedding.
_IGNORED_HF_KEYS = ("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",)
_EMBEDDING_COPIES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
_POSITIVE_INTEGERS = ("vocab_size", "d_model", "d_kv", "d_ff", "num_heads", "num_encoder_layers", "num_decoder_layers",
                      "relative_attention_num_buckets", "relative_attention_max_distance")  # fmt: skip


# ----------------------------------------------------------------------------------------------------------
# Configs


def config_from_hf(hf_config: Mapping[str, Any], **overrides: Any) -> T5Config:
    """Our T5Config for an HF T5 `config.json` (dtypes, scanning and remat come from `overrides`)."""
    if not isinstance(hf_config, Mapping):
        raise ValueError(f"not a T5 config: a JSON object was expected, got {type(hf_config).__name__}")
    missing = [key for key in ("vocab_size", "d_model", "d_kv", "d_ff", "num_heads") if key not in hf_config]
    if missing:
        raise ValueError(f"not a T5 config: it lacks {', '.join(missing)}")
    if hf_config.get("model_type", "t5") != "t5":
        raise ValueError(f"not a T5 config: model_type={hf_config.get('model_type')!r}")
    feed_forward = hf_config.get("feed_forward_proj", "relu")
    if feed_forward not in SUPPORTED_FEED_FORWARD:
        raise ValueError(f"unsupported feed_forward_proj {feed_forward!r}; supported: {sorted(SUPPORTED_FEED_FORWARD)}")
    if "scale_decoder_outputs" in hf_config:  # transformers >= 5
        tied = bool(hf_config["scale_decoder_outputs"])
    else:
        tied = bool(hf_config.get("tie_word_embeddings", True))
    num_layers = hf_config.get("num_layers", 6)
    values = dict(
        vocab_size=hf_config["vocab_size"],
        d_model=hf_config["d_model"],
        d_kv=hf_config["d_kv"],
        d_ff=hf_config["d_ff"],
        num_heads=hf_config["num_heads"],
        num_encoder_layers=num_layers,
        num_decoder_layers=hf_config.get("num_decoder_layers") or num_layers,
        relative_attention_num_buckets=hf_config.get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=hf_config.get("relative_attention_max_distance", 128),
        dropout_rate=hf_config.get("dropout_rate", 0.1),
        layer_norm_epsilon=hf_config.get("layer_norm_epsilon", 1e-6),
        feed_forward=SUPPORTED_FEED_FORWARD[feed_forward],
        tie_word_embeddings=tied,
    )
    for name, value in values.items():  # a wrong config must not load as a model that cannot run
        if name in _POSITIVE_INTEGERS and (type(value) is not int or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if name in ("dropout_rate", "layer_norm_epsilon") and (type(value) not in (int, float) or not 0 <= value < 1):
            raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    values.update(overrides)
    return T5Config(**values)


def hf_config_from(config: T5Config) -> dict[str, Any]:
    """An HF `config.json` for `config`, readable by transformers 4.x and 5.x."""
    return {
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "vocab_size": config.vocab_size,
        "d_model": config.d_model,
        "d_kv": config.d_kv,
        "d_ff": config.d_ff,
        "num_heads": config.num_heads,
        "num_layers": config.num_encoder_layers,
        "num_decoder_layers": config.num_decoder_layers,
        "relative_attention_num_buckets": config.relative_attention_num_buckets,
        "relative_attention_max_distance": config.relative_attention_max_distance,
        "dropout_rate": config.dropout_rate,
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "initializer_factor": 1.0,
        "feed_forward_proj": config.feed_forward,
        # 4.x reads the v1.0/v1.1 switch from tie_word_embeddings, 5.x from scale_decoder_outputs.
        "tie_word_embeddings": config.tie_word_embeddings,
        "scale_decoder_outputs": config.tie_word_embeddings,
        "is_encoder_decoder": True,
        "use_cache": True,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
        "dtype": config.param_dtype,
    }


# ----------------------------------------------------------------------------------------------------------
# The name table


def hf_parameter_map(config: T5Config) -> list[tuple[str, tuple[str, ...], bool]]:
    """(HF name, our unscanned parameter path, transposed?) for every parameter of `config`'s model."""
    mlp = ["wi", "wo"] if config.feed_forward == "relu" else ["wi_0", "wi_1", "wo"]
    attention = {"q": "query", "k": "key", "v": "value", "o": "out"}
    rows: list[tuple[str, tuple[str, ...], bool]] = [("shared.weight", ("token_embedder", "embedding"), False)]

    def attention_rows(hf_prefix: str, ours: tuple[str, ...]) -> None:
        for hf_name, our_name in attention.items():
            rows.append((f"{hf_prefix}.{hf_name}.weight", (*ours, our_name, "kernel"), True))

    def mlp_rows(hf_prefix: str, ours: tuple[str, ...]) -> None:
        for name in mlp:
            rows.append((f"{hf_prefix}.DenseReluDense.{name}.weight", (*ours, "mlp", name, "kernel"), True))

    for stack, num_layers in (("encoder", config.num_encoder_layers), ("decoder", config.num_decoder_layers)):
        rows.append(
            (f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
             (stack, "relpos_bias", "rel_embedding"), False)
        )  # fmt: skip
        for i in range(num_layers):
            block, layer = f"{stack}.block.{i}.layer", (stack, f"layers_{i}")

            def norm_row(index: int, our_name: str) -> None:
                rows.append((f"{block}.{index}.layer_norm.weight", (*layer, our_name, "scale"), False))

            if stack == "encoder":
                attention_rows(f"{block}.0.SelfAttention", (*layer, "attention"))
                norm_row(0, "pre_attention_layer_norm")
                mlp_rows(f"{block}.1", layer)
                norm_row(1, "pre_mlp_layer_norm")
            else:
                attention_rows(f"{block}.0.SelfAttention", (*layer, "self_attention"))
                norm_row(0, "pre_self_attention_layer_norm")
                attention_rows(f"{block}.1.EncDecAttention", (*layer, "encoder_decoder_attention"))
                norm_row(1, "pre_cross_attention_layer_norm")
                mlp_rows(f"{block}.2", layer)
                norm_row(2, "pre_mlp_layer_norm")
        rows.append((f"{stack}.final_layer_norm.weight", (stack, f"{stack}_norm", "scale"), False))
    if not config.tie_word_embeddings:
        rows.append(("lm_head.weight", ("decoder", "logits_dense", "kernel"), True))
    return rows


def _set_path(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get_path(tree: Mapping, path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def expected_shapes(config: T5Config) -> dict[str, tuple[int, ...]]:
    """HF name -> HF tensor shape for `config`, from the table (no model is built)."""
    d, inner, ff, vocab = config.d_model, config.inner_dim, config.d_ff, config.vocab_size
    shapes: dict[str, tuple[int, ...]] = {}
    for hf_name, path, _ in hf_parameter_map(config):
        leaf = path[-2] if path[-1] == "kernel" else path[-1]
        if hf_name in ("shared.weight", "lm_head.weight"):
            shape: tuple[int, ...] = (vocab, d)
        elif path[-1] == "rel_embedding":
            shape = (config.relative_attention_num_buckets, config.num_heads)
        elif path[-1] == "scale":
            shape = (d,)
        elif leaf in ("query", "key", "value"):
            shape = (inner, d)
        elif leaf == "out":
            shape = (d, inner)
        elif leaf == "wo":
            shape = (d, ff)
        else:  # wi, wi_0, wi_1
            shape = (ff, d)
        shapes[hf_name] = shape
    return shapes


# ----------------------------------------------------------------------------------------------------------
# Tensors


def params_from_hf_state_dict(state: Mapping[str, np.ndarray], config: T5Config) -> dict:
    """Our plain (unboxed) parameters, as NumPy arrays of `config.param_dtype`, from HF tensors.

    Raises on missing, unexpected or mis-shaped tensors: a wrong config must not load silently.
    """
    state = dict(state)
    if "shared.weight" not in state:  # some checkpoints store only the (tied) stack embeddings
        for name in _EMBEDDING_COPIES:
            if name in state:
                state["shared.weight"] = state[name]
                break
    if not config.tie_word_embeddings and "lm_head.weight" not in state and "shared.weight" in state:
        logger.info("no lm_head.weight: the v1.1 head starts as a copy of shared.weight (tied when saved)")
        state["lm_head.weight"] = state["shared.weight"]
    shapes = expected_shapes(config)
    missing = [name for name in shapes if name not in state]
    allowed_extra = set(_IGNORED_HF_KEYS) | set(_EMBEDDING_COPIES)
    if config.tie_word_embeddings:
        allowed_extra.add("lm_head.weight")
        if "lm_head.weight" in state and not np.array_equal(state["lm_head.weight"], state["shared.weight"]):
            raise ValueError("the checkpoint has an lm_head.weight different from shared.weight, but its config ties "
                             "them (v1.0): set tie_word_embeddings/scale_decoder_outputs to false (v1.1)")  # fmt: skip
    unexpected = sorted(set(state) - set(shapes) - allowed_extra)
    if missing or unexpected:
        raise ValueError(f"HF tensors do not match the T5 config: missing {missing[:8]}, unexpected {unexpected[:8]}")
    wrong = [(n, tuple(state[n].shape), s) for n, s in shapes.items() if tuple(state[n].shape) != s]
    if wrong:
        name, found, expected = wrong[0]
        raise ValueError(f"HF tensor shapes do not match the config: {len(wrong)} of {len(shapes)} differ, first "
                         f"{name} {found} where the config makes {expected}: config.json describes another model than "
                         "the weights beside it (d_model, d_ff, num_heads, d_kv, vocab_size): correct it, or take the "
                         "config.json saved with these weights")  # fmt: skip

    dtype = numpy_dtype(config.param_dtype)
    params: dict = {}
    for hf_name, path, transposed in hf_parameter_map(config):
        value = np.asarray(state[hf_name])
        value = value.T if transposed else value
        _set_path(params, path, np.ascontiguousarray(value.astype(dtype)))
    return params


def numpy_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes  # NumPy's bfloat16 (a dependency of jax)

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def hf_state_dict_from_params(params: Mapping, config: T5Config) -> dict[str, np.ndarray]:
    """HF tensors (contiguous NumPy, the parameters' dtype) from our plain parameters (either layout)."""
    from textchem_jax.models.t5 import unstack_layer_params

    params = unstack_layer_params(dict(params))
    state = {}
    for hf_name, path, transposed in hf_parameter_map(config):
        value = np.asarray(_get_path(params, path))
        state[hf_name] = np.ascontiguousarray(value.T if transposed else value)
    return state


# ----------------------------------------------------------------------------------------------------------
# Directories


def read_hf_state_dict(directory: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of an HF model directory (local or gs://): model.safetensors or pytorch_model.bin (read with
    `weights_only`: tensors, never pickled code), each whole or in shards listed by its `.index.json`, as
    `save_pretrained` splits a large model."""
    directory = epath.Path(directory)
    for name, read in (("model.safetensors", _read_safetensors), ("pytorch_model.bin", _read_torch)):
        single, index = directory / name, directory / f"{name}.index.json"
        if single.exists():
            return read(single)
        if index.exists():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (ValueError, KeyError, TypeError, AttributeError) as error:
                raise ValueError(f"{index}: not an index with a weight_map of shard files ({error!r})") from None
            state: dict[str, np.ndarray] = {}
            for shard in shards:
                if not (directory / str(shard)).exists():
                    raise FileNotFoundError(f"{directory / str(shard)}: a shard {index.name} lists is missing")
                state.update(read(directory / str(shard)))
            return state
    raise FileNotFoundError(f"{directory}: no model.safetensors or pytorch_model.bin (whole, or sharded with an .index.json)")


def _read_safetensors(path: epath.Path) -> dict[str, np.ndarray]:
    """Tensors of a safetensors file; anything else (a pickle, a torch `.bin` renamed) is a ValueError, never
    unpickled."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        return load(path.read_bytes())
    except (SafetensorError, ValueError, TypeError) as error:
        raise ValueError(f"{path}: not a safetensors file ({error}); a PyTorch .bin belongs in pytorch_model.bin") from None


def _read_torch(path: epath.Path) -> dict[str, np.ndarray]:
    """Tensors of a `torch.save` file, read with `weights_only=True`: a pickle that holds anything but tensors
    and plain containers (code to run, other objects) is refused with a ValueError before anything runs."""
    try:
        import torch
    except ImportError:  # the [hf] extra: safetensors, which reads model.safetensors, comes with our own install
        raise ValueError(f"{path}: reading a PyTorch .bin needs torch: pip install 'textchem_jax[hf]', or give a "
                         "directory with model.safetensors") from None  # fmt: skip

    try:
        state = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001  the weights-only unpickler runs no code; on junk it raises anything
        # (UnpicklingError, IndexError, KeyError, struct.error, ...): all mean the file is not plain tensors.
        reason = type(error).__name__ + (f": {str(error).splitlines()[0]}" if str(error).strip() else "")
        raise ValueError(f"{path}: refused, not a file of plain tensors ({reason}); convert it to model.safetensors "
                         "where it came from, or give a directory with model.safetensors") from None  # fmt: skip
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a state dict of named tensors")
    # bfloat16 has no NumPy view in torch; float32 holds it exactly and we cast to param_dtype later.
    return {
        name: (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()
        for name, tensor in state.items()
        if isinstance(tensor, torch.Tensor)
    }


def load_hf_directory(directory: str | os.PathLike, *, encoder_alone: bool = False,
                      **config_overrides: Any) -> tuple[T5Config, dict]:  # fmt: skip
    """(config, plain parameters in the config's layout) from an HF T5 directory (local or gs://). `encoder_alone`:
    the directory holds a T5 encoder without its decoder (`T5EncoderModel.save_pretrained`, an e2-CLM part): its
    absent decoder tensors are converted as zeros and dropped, so only `token_embedder` and `encoder` come back."""
    from textchem_jax.models.t5 import stack_layer_params

    directory = epath.Path(directory)
    if not (directory / "config.json").exists():
        what = "holds no config.json" if directory.is_dir() else "is not a folder here"
        raise FileNotFoundError(f"{directory} {what}: give a local (or gs://) Hugging Face T5 directory with config.json "
                                "and model.safetensors or pytorch_model.bin (nothing is downloaded: fetch a hub model "
                                "first, e.g. `hf download t5-small --local-dir t5-small`)")  # fmt: skip
    try:
        hf_config = json.loads((directory / "config.json").read_text())
        config = config_from_hf(hf_config, **config_overrides)
    except ValueError as error:  # JSONDecodeError too
        raise ValueError(f"{directory / 'config.json'}: {error}") from None
    state = read_hf_state_dict(directory)
    if encoder_alone:
        state |= {name: np.zeros(shape, np.float32) for name, shape in expected_shapes(config).items()
                  if name.startswith("decoder.") and name not in state}  # fmt: skip
    params = params_from_hf_state_dict(state, config)
    if encoder_alone:
        params = {name: params[name] for name in ("token_embedder", "encoder")}
    if config.scan_layers:
        params = stack_layer_params(params)
    return config, params


# What an export writes; a folder holding anything else is another model's (`check_export_directory`).
CONFIG_FILE, WEIGHTS_FILE, GENERATION_CONFIG_FILE = "config.json", "model.safetensors", "generation_config.json"
VOCABULARY_FILE, TOKENIZER_FILE, TOKENIZER_CONFIG_FILE = "spiece.model", "tokenizer.json", "tokenizer_config.json"
EXPORT_FILES = (CONFIG_FILE, WEIGHTS_FILE, GENERATION_CONFIG_FILE,
                VOCABULARY_FILE, TOKENIZER_FILE, TOKENIZER_CONFIG_FILE)  # fmt: skip
# The key of config.json that records where an export came from; transformers keeps it as an attribute, silently.
RECORD_KEY = "textchem_jax"


def check_export_directory(directory: str | os.PathLike) -> None:
    """Raises FileExistsError when `directory` holds files that are not an earlier export's: an export into another
    model's folder kept its generation_config.json (num_beams=10), spiece.vocab, pytorch_model.bin ... beside ours,
    and transformers read them. A re-export (config.json carries RECORD_KEY) is overwritten. A git clone's own files
    (`.git`, `.gitattributes`, a README.md model card) stay: transformers reads none of them."""
    directory = epath.Path(directory)
    if not directory.exists():
        return
    if not directory.is_dir():
        raise FileExistsError(f"{directory} is a file, not a folder: give a new or empty folder to export into")
    names = sorted(path.name for path in directory.iterdir()
                   if not path.name.startswith(".") and path.name != "README.md")  # fmt: skip
    others = [name for name in names if name not in EXPORT_FILES]
    if not others and names and not _is_an_export(directory / CONFIG_FILE):
        others = names  # another model's save_pretrained: its weights or tokenizer would be replaced or deleted
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise FileExistsError(f"{directory} holds files that are not an earlier export's ({shown}): another model's, "
                              "which transformers would read with ours or which the export would replace; remove "
                              "them, or choose a new or empty folder")  # fmt: skip


def _is_an_export(config_file: epath.Path) -> bool:
    try:
        return RECORD_KEY in json.loads(config_file.read_text())
    except (OSError, ValueError):  # missing, or not JSON
        return False


def generation_config(**settings: Any) -> dict[str, Any]:
    """`generation_config.json`: T5's start, end and padding ids, then `settings` (Hugging Face's names:
    `max_new_tokens`, `num_beams`, ...; an imported folder's own file). Without the file `generate()` decodes
    greedily up to 20 tokens: all 8 mol2text predictions of a demo run were cut short."""
    return {"decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0, **settings}


def save_hf_directory(
    directory: str | os.PathLike,
    config: T5Config,
    params: Mapping,
    vocabulary_path: str | os.PathLike | None = None,
    *,
    generation: Mapping[str, Any] | None = None,
    model_max_length: int | None = None,
    record: Mapping[str, Any] | None = None,
) -> epath.Path:
    """Writes config.json (with `record` under RECORD_KEY: the step and run exported), model.safetensors,
    generation_config.json (`generation_config(**generation)`) and (given a SentencePiece model) spiece.model with
    the tokenizer files that make AutoTokenizer encode as it does (`model_max_length`: `tokenizer_config`), local or
    gs://. A folder holding other files is refused (`check_export_directory`); a re-export's files are replaced."""
    from safetensors.numpy import save

    directory = epath.Path(directory)
    check_export_directory(directory)
    makedirs(directory)
    written = [CONFIG_FILE, WEIGHTS_FILE, GENERATION_CONFIG_FILE]
    state = hf_state_dict_from_params(params, config)
    hf_config = hf_config_from(config)
    hf_config["dtype"] = dtype_name(next(iter(state.values())).dtype)
    if record:
        hf_config[RECORD_KEY] = dict(record)
    (directory / CONFIG_FILE).write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    (directory / WEIGHTS_FILE).write_bytes(save(state, metadata={"format": "pt"}))
    generation_json = json.dumps(generation_config(**(generation or {})), indent=2)
    (directory / GENERATION_CONFIG_FILE).write_text(generation_json + "\n")
    if vocabulary_path is not None:
        epath.Path(vocabulary_path).copy(directory / VOCABULARY_FILE, overwrite=True)
        written.append(VOCABULARY_FILE)
        if save_tokenizer(directory, vocabulary_path, model_max_length):
            written += [TOKENIZER_FILE, TOKENIZER_CONFIG_FILE]
    for name in set(EXPORT_FILES) - set(written):  # an earlier export's, which would describe another vocabulary
        if (directory / name).exists():
            (directory / name).unlink()
    return directory


# ----------------------------------------------------------------------------------------------------------
# Tokenizer files

# What SentencePiece scores a user-defined piece (`Cl`, `[nH]`) in its lattice: length * max(FLT_MIN, best normal
# score) - 0.1, a bonus that makes it win wherever it matches.
_FLOAT32_TINY = float(np.finfo(np.float32).tiny)
_USER_DEFINED_PENALTY = 0.1


def read_sentencepiece(path: str | os.PathLike):
    """The `ModelProto` of a SentencePiece model file (local or gs://)."""
    from google.protobuf.message import DecodeError
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(epath.Path(path).read_bytes())
    except DecodeError:
        raise ValueError(f"{path}: not a SentencePiece model; give the spiece.model the checkpoint was trained with") from None
    return proto


def sentencepiece_tokenizer(proto, vocabulary_path: str | os.PathLike, extra_ids: int = 100):
    """A `tokenizers.Tokenizer` that encodes and decodes as the SentencePiece model `proto` (read from
    `vocabulary_path`: `read_sentencepiece`) does, plus T5's EOS and sentinels.

    transformers' own T5 conversion does not: it splits on whitespace (runs of spaces and tabs are lost), makes
    each user-defined piece an added token followed by an extra `▁`, and drops byte fallback (`μ` becomes <unk>).
    Here SentencePiece's pipeline is rebuilt step by step: its normalization rules, whitespace as `▁`, the one
    dummy prefix, one Unigram lattice over the whole text with its scores (user-defined pieces at its bonus) and
    byte fallback. Known differences: where two segmentations of a text score exactly the same, SentencePiece's
    float32 sums may pick the other one (0.5% of ChEBI-20 lines); text that spells a special token (`</s>`,
    `<extra_id_0>`) or a byte piece (`<0x41>`) is read as that token.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, processors
    from tokenizers.models import Unigram

    kind, trainer, spec = proto.SentencePiece, proto.trainer_spec, proto.normalizer_spec
    if trainer.model_type != trainer.UNIGRAM:
        raise ValueError(f"{vocabulary_path}: a {trainer.ModelType.Name(trainer.model_type)} SentencePiece model; only "
                         "Unigram models (T5's and ours) are written as tokenizer.json")  # fmt: skip
    bonus = max([piece.score for piece in proto.pieces if piece.type == kind.NORMAL] + [_FLOAT32_TINY])
    vocab = [
        (piece.piece, len(piece.piece) * bonus - _USER_DEFINED_PENALTY if piece.type == kind.USER_DEFINED else piece.score)
        for piece in proto.pieces
    ]
    vocab += [(f"<extra_id_{i}>", 0.0) for i in reversed(range(extra_ids))]  # T5's sentinels: the last ids
    tokenizer = Tokenizer(Unigram(vocab, unk_id=trainer.unk_id, byte_fallback=trainer.byte_fallback))

    steps = [normalizers.Precompiled(spec.precompiled_charsmap)] if spec.precompiled_charsmap else []
    if spec.remove_extra_whitespaces:
        steps += [normalizers.Strip(), normalizers.Replace(Regex(" {2,}"), " ")]
    if spec.escape_whitespaces:
        steps.append(normalizers.Replace(" ", "▁"))
    if spec.add_dummy_prefix:  # a normalizer, not a Metaspace pre-tokenizer: that one skips text starting with a space
        steps.append(normalizers.Prepend("▁"))
    tokenizer.normalizer = normalizers.Sequence(steps)
    undo = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    tokenizer.decoder = decoders.Sequence(undo + ([decoders.Strip(" ", 1, 0)] if spec.add_dummy_prefix else []))
    specials = [piece.piece for piece in proto.pieces if piece.type in (kind.CONTROL, kind.UNKNOWN)]
    specials += [f"<extra_id_{i}>" for i in range(extra_ids)]
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in specials])
    if trainer.eos_id >= 0:
        eos = proto.pieces[trainer.eos_id].piece
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"$A {eos}", pair=f"$A {eos} $B {eos}", special_tokens=[(eos, trainer.eos_id)]
        )
    return tokenizer


def tokenizer_config(proto, extra_ids: int = 100, model_max_length: int | None = None) -> dict[str, Any]:
    """`tokenizer_config.json` for the SentencePiece model `proto`: the generic class, which loads tokenizer.json
    as written (transformers 4 and 5); the T5 class would rebuild the tokenizer from spiece.model its own way.

    `model_max_length` only when given (the run's input length, an imported folder's own value): the 10**9 written
    before made `padding='max_length'` allocate 4 GB per text and abort; without it transformers takes its "no
    limit" (1e30), which padding and truncation skip."""
    trainer = proto.trainer_spec
    config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast"}
    for name, index in (("eos_token", trainer.eos_id), ("unk_token", trainer.unk_id), ("pad_token", trainer.pad_id)):
        if index >= 0:
            config[name] = proto.pieces[index].piece
    config["additional_special_tokens"] = [f"<extra_id_{i}>" for i in range(extra_ids)]
    if model_max_length is not None:
        config["model_max_length"] = model_max_length
    return config


def save_tokenizer(directory: str | os.PathLike, vocabulary_path: str | os.PathLike,
                   model_max_length: int | None = None) -> bool:  # fmt: skip
    """Writes tokenizer.json and tokenizer_config.json for `vocabulary_path` (needs the `tokenizers` package, which
    transformers installs); without it, warns and returns False: AutoTokenizer then builds a tokenizer that differs."""
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        logger.warning("tokenizers is not installed: %s gets no tokenizer.json, and AutoTokenizer will encode other "
                       "ids than spiece.model for SMILES; pip install 'textchem_jax[hf]' and export again", directory)  # fmt: skip
        return False
    directory, proto = epath.Path(directory), read_sentencepiece(vocabulary_path)  # read once for both files
    (directory / TOKENIZER_FILE).write_text(sentencepiece_tokenizer(proto, vocabulary_path).to_str(pretty=True) + "\n")
    config = tokenizer_config(proto, model_max_length=model_max_length)
    (directory / TOKENIZER_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return True
