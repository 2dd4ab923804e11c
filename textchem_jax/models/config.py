"""T5 hyper-parameters and the published presets (v1.0 and v1.1, tiny to xxl).

The config is a plain frozen dataclass with dtypes kept as names ("float32", "bfloat16"), so it can be
written to JSON or bound from gin without importing JAX.
"""

from __future__ import annotations

import dataclasses
from typing import Any

FEED_FORWARD_KINDS = ("relu", "gated-gelu")
REMAT_POLICIES = ("none", "full", "dots", "dots_with_no_batch_dims")
DTYPE_NAMES = ("float32", "bfloat16", "float16")
# The fields that change what a model computes (dtypes, dropout, scanning and remat do not).
ARCHITECTURE_FIELDS = ("vocab_size", "d_model", "d_kv", "d_ff", "num_heads", "num_encoder_layers", "num_decoder_layers",
                       "relative_attention_num_buckets", "relative_attention_max_distance", "layer_norm_epsilon",
                       "feed_forward", "tie_word_embeddings")  # fmt: skip
T5_VOCAB_SIZE = 32128  # 32,000 SentencePiece pieces + 100 sentinels, padded to a multiple of 128


def dtype_name(value: Any) -> str:
    """'float32' for "float32", np.float32, jnp.float32 or np.dtype('float32')."""
    if isinstance(value, str):
        name = value
    else:
        import numpy as np  # jnp.bfloat16 and friends convert through their `dtype` attribute

        name = np.dtype(value).name
    if name not in DTYPE_NAMES:
        raise ValueError(f"unsupported dtype {value!r}; expected one of {DTYPE_NAMES}")
    return name


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Sizes and switches of one T5 encoder-decoder.

    `feed_forward`: "relu" (T5 v1.0) or "gated-gelu" (v1.1, tanh-approximated GELU as HF's `gelu_new`).
    `tie_word_embeddings`: True (v1.0) computes logits with the shared embedding after scaling the decoder
    output by d_model**-0.5; False (v1.1) uses a separate, unscaled `logits_dense` projection.
    `dtype` is the activation dtype, `param_dtype` the storage dtype of the parameters.
    `scan_layers` stacks the layers of each stack into one scanned module (parameters get a `layers` axis);
    `remat_policy` is "none", "full" (recompute everything), "dots" or "dots_with_no_batch_dims".
    """

    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_heads: int
    num_encoder_layers: int
    num_decoder_layers: int
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    feed_forward: str = "relu"
    tie_word_embeddings: bool = True
    dtype: str = "float32"
    param_dtype: str = "float32"
    scan_layers: bool = False
    remat_policy: str = "none"

    def __post_init__(self):
        if self.feed_forward not in FEED_FORWARD_KINDS:
            raise ValueError(f"feed_forward must be one of {FEED_FORWARD_KINDS}, got {self.feed_forward!r}")
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"remat_policy must be one of {REMAT_POLICIES}, got {self.remat_policy!r}")
        if not 0 <= self.dropout_rate < 1:  # 1.5 trained a frozen loss to the end, and ended 0
            raise ValueError(f"dropout_rate (gin DROPOUT_RATE) must be in [0, 1), got {self.dropout_rate!r}")
        sizes = {name: getattr(self, name) for name in ("vocab_size", "d_model", "d_kv", "d_ff", "num_heads")}
        if any(not isinstance(size, int) or size < 1 for size in sizes.values()):
            raise ValueError(f"sizes must be positive whole numbers, got {sizes}")
        object.__setattr__(self, "dtype", dtype_name(self.dtype))
        object.__setattr__(self, "param_dtype", dtype_name(self.param_dtype))

    @property
    def inner_dim(self) -> int:
        """Width of the concatenated attention heads (`joined_kv`)."""
        return self.num_heads * self.d_kv

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> T5Config:
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown T5Config fields: {unknown}")
        return cls(**values)


# (d_model, d_kv, d_ff, num_heads, num_layers) per size, from the T5 paper (v1.0) and the T5.1.1 release notes.
_V1_0 = {
    "small": (512, 64, 2048, 8, 6),
    "base": (768, 64, 3072, 12, 12),
    "large": (1024, 64, 4096, 16, 24),
    "xl": (1024, 128, 16384, 32, 24),  # "3B"
    "xxl": (1024, 128, 65536, 128, 24),  # "11B"
}
_V1_1 = {
    "small": (512, 64, 1024, 6, 8),
    "base": (768, 64, 2048, 12, 12),
    "large": (1024, 64, 2816, 16, 24),
    "xl": (2048, 64, 5120, 32, 24),
    "xxl": (4096, 64, 10240, 64, 24),
}
_TINY = (64, 16, 128, 4, 2)  # for tests: compiles and runs in seconds on a laptop CPU
TINY_VOCAB_SIZE = 512
SIZES = ("tiny", "small", "base", "large", "xl", "xxl")
VERSIONS = ("1.0", "1.1")


def preset_dimensions(size: str, version: str = "1.0") -> dict[str, int]:
    """d_model, d_kv, d_ff, num_heads and layer counts of a published T5 size (what a sweep's size axis binds)."""
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
    if size == "tiny":
        d_model, d_kv, d_ff, num_heads, num_layers = _TINY
    else:
        table = _V1_0 if version == "1.0" else _V1_1
        if size not in table:
            raise ValueError(f"size must be one of {SIZES}, got {size!r}")
        d_model, d_kv, d_ff, num_heads, num_layers = table[size]
    return dict(d_model=d_model, d_kv=d_kv, d_ff=d_ff, num_heads=num_heads,
                num_encoder_layers=num_layers, num_decoder_layers=num_layers)  # fmt: skip


def t5_config(size: str, version: str = "1.0", vocab_size: int | None = None, **overrides: Any) -> T5Config:
    """The published T5 `size` ("tiny", "small", ..., "xxl") of `version` "1.0" or "1.1".

    v1.0: ReLU MLP, tied and scaled logits; v1.1: gated-GELU MLP, separate lm head. `vocab_size` defaults
    to 32,128 (T5's SentencePiece vocabulary) except for "tiny" (512). Any field can be overridden.
    """
    if vocab_size is None:
        vocab_size = TINY_VOCAB_SIZE if size == "tiny" else T5_VOCAB_SIZE
    values: dict[str, Any] = dict(
        vocab_size=vocab_size,
        **preset_dimensions(size, version),
        feed_forward="relu" if version == "1.0" else "gated-gelu",
        tie_word_embeddings=version == "1.0",
    )
    values.update(overrides)
    return T5Config(**values)


def preset_name(config: T5Config) -> tuple[str, str] | None:
    """(size, version) of the preset whose architecture `config` has (dtypes, dropout etc. aside), else None."""
    for version in VERSIONS:
        for size in SIZES:
            preset = t5_config(size, version, vocab_size=config.vocab_size)
            if all(getattr(preset, name) == getattr(config, name) for name in ARCHITECTURE_FIELDS):
                return size, version
    return None
