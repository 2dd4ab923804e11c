"""e2-CLM: the multi-encoder variants the Text+Chem T5 paper compares with its single shared encoder.

Two domain encoders, one for text and one for chemistry, each trained or frozen, feed ONE shared T5
decoder, which cross-attends to their aggregated encoding exactly as T5's decoder does to its encoder's.
Everything is composed from T5's pieces (`t5.Encoder`, `t5.Decoder`, and `layers.TokenEmbedding`,
`MultiHeadAttention`, `RelativePositionBias`, `RMSNorm`), so every parameter keeps its logical axis names.

Which domain an example belongs to is its task's *input* domain (`textchem_jax.catalogue.DOMAINS`,
element 0): forward, retro and mol2text read chemistry (1), paragraph2actions and text2mol read text (0).
It arrives as the int feature `input_domain`, (batch,) per example, or (batch, length) per encoder token
for packed rows (SeqIO packing may put examples of different tasks in one row; segments never attend to
each other, so per-token routing is exact).

Aggregation (`E2ClmConfig.aggregation`) -- how the two encodings become the one the decoder reads:
  * "mean": both encoders read every example (prompt and input alike); the decoder reads the position-wise
    mean of the two encodings. `input_domain` is not needed.
  * "cross_attention": both encoders read every example; the encoding of the example's own domain ("lead")
    attends to the other encoder's encoding of the same tokens through one pre-norm, residual T5 attention
    sublayer (with a bidirectional relative position bias, so "the same token in the other domain" is easy
    to find): `lead + Attention(norm(lead), other)`. The lead keeps the input's length and positions.
  * "select": the domain chooses the encoder; the other one's output is discarded (both still run on the
    whole batch -- static shapes -- so an encoder pass costs 2x, as in the aggregating modes).
The paper's wording (Figure 4's caption, as quoted at liner.com/review/unifying-molecular-and-textual-
representations-via-multitask-language-modelling): "A: ... two frozen sets of weights (φ̄t, φ̄c) are used for
the text and chemistry encoders respectively. These weights are extracted from large, pre-trained language
encoders, such as T5 and T5Chem. B: ... the chemistry encoder is fine-tuned (enc-training) while the text
encoder remains frozen (no enc-sharing). The fine-tuning process starts from a pre-trained T5 checkpoint(1.0)
fine-tuned on chemistry data. C: ... the encoders are merged, using a joint encoder for text and chemistry".
How the two encodings meet the one decoder is not in that caption, and the rest of the paper's text was not
readable here. Our reading: both encoders read the input and their outputs are combined ("mean", or
"cross_attention") before the shared decoder; "select" is ours, the routing alternative, kept because it
isolates what each domain encoder contributes. Variants A and B are `experiments/e2clm_small_variant_{a,b}_augm.gin`.
Cross-attention is led by the input's domain because the attention needs an asymmetric query side and the
domain is the one principled way to pick it; it needs `input_domain` like "select" does.

`shared=True` is Text+Chem T5 itself: ONE encoder, parameters `token_embedder`, `encoder`, `decoder`,
exactly T5's tree, and the same logits (mean of an encoding with itself and selection between equal
encodings are both the identity, so they are not computed). Cross-attention of one encoding to itself
would only add a self-attention layer, so it is rejected with `shared=True`.
Separate encoders are `text_encoder` and `chemistry_encoder`, each a T5 `Encoder` with T5's layout; the
mapping from T5 checkpoints is `with_t5_weights` (T5 `encoder` -> `text_encoder` / `chemistry_encoder`,
T5 `token_embedder` and `decoder` -> the same names). Cross-attention adds `aggregator`.

Embeddings: by default all encoders look tokens up in the decoder's `token_embedder` (one vocabulary, one
table, as T5), so separate and shared models differ by exactly one encoder stack. A frozen encoder then
still sees a trained embedding; `own_embeddings=True` gives each encoder its own table (`text_embedder`,
`chemistry_embedder`, or `encoder_embedder` when shared), frozen with it -- what encoders imported from
separately pretrained checkpoints want.

Frozen means the optimizer leaves it alone: `make_optimizer` wraps the base optimizer in
`optax.multi_transform` with `optax.set_to_zero()` for frozen parameters, which therefore keep no optimizer
state (no Adam moments), and weight decay does not touch them. Frozen encoders with their own embedding
also stop gradients at their output, so a backward pass does no work for them; dropout still applies
in them when not deterministic.

Decoding: `encode` once (with `input_domain`), then the decoder with its key/value cache. The decoder side
has T5's names and T5's cache, so `adapters.E2ClmModel` decodes with T5's decoder on e2-CLM parameters.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from textchem_jax.catalogue import CHEMISTRY
from textchem_jax.models.config import T5Config, t5_config
from textchem_jax.models.layers import (
    MultiHeadAttention,
    RelativePositionBias,
    RMSNorm,
    TokenEmbedding,
    attention_mask,
)
from textchem_jax.models.t5 import T5, Decoder, Encoder, encoder_valid_positions

Array = jax.Array

AGGREGATIONS = ("mean", "cross_attention", "select")
TRAINED, FROZEN = "trained", "frozen"
# E2ClmConfig's fields besides its T5, which a checkpoint of a run records (its config.gin) and is held against:
# what the variant computes (a `mean` and a `select` run have the same parameters: one evaluated as the other
# decoded otherwise, silently), and what the optimizer leaves alone (no optimizer state for it: a resume keeps it).
VARIANT_FIELDS = ("shared", "aggregation", "own_embeddings")
FREEZING_FIELDS = ("freeze_text", "freeze_chemistry")


# ----------------------------------------------------------------------------------------------------------
# Configuration


@dataclasses.dataclass(frozen=True)
class E2ClmConfig:
    """One e2-CLM variant: the T5 sizes of its encoders and decoder, and how the encoders are used.

    `shared`: one encoder for both domains (Text+Chem T5). `freeze_text` / `freeze_chemistry`: the optimizer
    leaves that encoder untouched (with `shared`, both must agree). `aggregation`: "mean",
    "cross_attention" or "select" (module docstring). `own_embeddings`: each encoder has its own token
    embedding, frozen with it, instead of the decoder's.
    """

    t5: T5Config
    shared: bool = False
    freeze_text: bool = False
    freeze_chemistry: bool = False
    aggregation: str = "mean"
    own_embeddings: bool = False

    def __post_init__(self):
        if isinstance(self.t5, dict):  # from to_dict / JSON
            object.__setattr__(self, "t5", T5Config.from_dict(self.t5))
        if not isinstance(self.t5, T5Config):
            raise TypeError(f"t5 must be a T5Config, got {type(self.t5).__name__}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        if self.shared and self.aggregation == "cross_attention":
            raise ValueError(
                "a shared encoder has one encoding: cross-attention to itself is not a multi-encoder model; "
                "use aggregation='mean' or 'select' (both reduce to T5) or shared=False"
            )
        if self.shared and self.freeze_text != self.freeze_chemistry:
            raise ValueError(
                "a shared encoder is frozen for both domains or for neither: set freeze_text == freeze_chemistry"
            )

    @property
    def needs_domain(self) -> bool:
        """Whether the model reads `input_domain` (separate encoders routed or led by the domain)."""
        return not self.shared and self.aggregation != "mean"

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "t5": self.t5.to_dict()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> E2ClmConfig:
        return cls(**values)


def e2clm_config(
    size: str,
    version: str = "1.0",
    vocab_size: int | None = None,
    *,
    shared: bool = False,
    freeze_text: bool = False,
    freeze_chemistry: bool = False,
    aggregation: str = "mean",
    own_embeddings: bool = False,
    **t5_overrides: Any,
) -> E2ClmConfig:
    """An e2-CLM over the published T5 `size`/`version` (see `t5_config`); one flat call for gin bindings."""
    return E2ClmConfig(
        t5_config(size, version, vocab_size, **t5_overrides), shared, freeze_text, freeze_chemistry, aggregation,
        own_embeddings,
    )  # fmt: skip


def recorded_fields(config: E2ClmConfig) -> dict[str, Any]:
    """`config`'s VARIANT_FIELDS and FREEZING_FIELDS, what a checkpoint is held against; a shared encoder's
    aggregation is left out (the mean of one encoding with itself and a selection between the two are both T5)."""
    fields = {name: getattr(config, name) for name in (*VARIANT_FIELDS, *FREEZING_FIELDS)}
    if config.shared:
        del fields["aggregation"]
    return fields


def domain_scopes(config: E2ClmConfig) -> dict[str, tuple[str, ...]]:
    """Domain ("text", "chemistry") -> the top-level parameter names of its encoder (both the same when shared)."""
    if config.shared:
        names = ("encoder", "encoder_embedder") if config.own_embeddings else ("encoder",)
        return {"text": names, "chemistry": names}
    return {
        domain: (f"{domain}_encoder", f"{domain}_embedder") if config.own_embeddings else (f"{domain}_encoder",)
        for domain in ("text", "chemistry")
    }


def frozen_scopes(config: E2ClmConfig) -> frozenset[str]:
    """Top-level parameter names the optimizer must leave untouched."""
    scopes = domain_scopes(config)
    frozen = {"text": config.freeze_text, "chemistry": config.freeze_chemistry}
    return frozenset(name for domain, names in scopes.items() if frozen[domain] for name in names)


# ----------------------------------------------------------------------------------------------------------
# The network


class CrossAttentionAggregation(nn.Module):
    """`lead + Attention(norm(lead), other)`: the in-domain encoding consults the other domain's encoding.

    A T5 pre-norm residual attention sublayer (T5's `MultiHeadAttention`, `RMSNorm`), plus a bidirectional
    relative position bias since both encodings are of the same tokens at the same positions.
    """

    config: T5Config

    @nn.compact
    def __call__(self, lead: Array, other: Array, mask: Array, deterministic: bool = True) -> Array:
        cfg = self.config
        positions = jnp.arange(lead.shape[1])
        bias = RelativePositionBias(cfg, bidirectional=True, name="relpos_bias")(positions, positions)
        dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        norm = RMSNorm(cfg.layer_norm_epsilon, dtype, param_dtype, name="pre_attention_layer_norm")
        attended = MultiHeadAttention(cfg, deterministic, name="attention")(norm(lead), other, bias, mask)
        attended = nn.Dropout(cfg.dropout_rate, deterministic=deterministic)(attended)
        return nn.with_logical_constraint(lead + attended, ("batch", "length", "embed"))


def _is_chemistry(input_domain: Array | None, tokens: Array) -> Array:
    """(batch, length, 1) bool from a per-example (batch,) or per-token (batch, length) `input_domain`."""
    if input_domain is None:
        raise ValueError("this e2-CLM variant routes by domain: pass input_domain (0 = text, 1 = chemistry)")
    domain = jnp.asarray(input_domain)
    if domain.ndim == 0:
        domain = jnp.broadcast_to(domain, tokens.shape[:1])
    if domain.ndim == 1:
        domain = domain[:, None]
    elif domain.shape != tokens.shape:
        raise ValueError(f"input_domain must be (batch,) or (batch, length) = {tokens.shape}, got {domain.shape}")
    return jnp.broadcast_to(domain == CHEMISTRY, tokens.shape)[..., None]


class E2Clm(nn.Module):
    """Text and chemistry encoders, aggregated, one T5 decoder: T5's `encode`/`decode`/`__call__` + `input_domain`."""

    config: E2ClmConfig

    def setup(self):
        cfg, t5 = self.config, self.config.t5
        dtype, param_dtype = jnp.dtype(t5.dtype), jnp.dtype(t5.param_dtype)

        def embedder() -> TokenEmbedding:
            return TokenEmbedding(t5.vocab_size, t5.d_model, dtype, param_dtype)

        self.token_embedder = embedder()
        self.decoder = Decoder(t5, self.token_embedder)
        # Attribute names are the parameter names (see `domain_scopes`).
        if cfg.shared:
            if cfg.own_embeddings:
                self.encoder_embedder = embedder()
            self.encoder = Encoder(t5, self.encoder_embedder if cfg.own_embeddings else self.token_embedder)
        else:
            if cfg.own_embeddings:
                self.text_embedder = embedder()
                self.chemistry_embedder = embedder()
            self.text_encoder = Encoder(t5, self.text_embedder if cfg.own_embeddings else self.token_embedder)
            self.chemistry_encoder = Encoder(
                t5, self.chemistry_embedder if cfg.own_embeddings else self.token_embedder
            )
            if cfg.aggregation == "cross_attention":
                self.aggregator = CrossAttentionAggregation(t5)

    def _encode_domain(self, domain: str, *args: Any) -> Array:
        encoder = self.encoder if self.config.shared else getattr(self, f"{domain}_encoder")
        encoded = encoder(*args)
        frozen = self.config.freeze_text if domain == "text" else self.config.freeze_chemistry
        if frozen and self.config.own_embeddings:
            # Nothing trainable upstream: no backward pass through a frozen encoder (exact, and cheaper).
            encoded = jax.lax.stop_gradient(encoded)
        return encoded

    def encode(
        self,
        encoder_input_tokens: Array,
        encoder_mask: Array | None = None,
        encoder_segment_ids: Array | None = None,
        deterministic: bool = True,
        input_domain: Array | None = None,
    ) -> Array:
        """(batch, length, d_model): the aggregated encoding the decoder cross-attends to."""
        cfg = self.config
        args = (encoder_input_tokens, encoder_mask, encoder_segment_ids, deterministic)
        if cfg.shared:
            return self._encode_domain("text", *args)
        if cfg.aggregation != "mean":
            is_chemistry = _is_chemistry(input_domain, encoder_input_tokens)  # fail before any work
        text = self._encode_domain("text", *args)
        chemistry = self._encode_domain("chemistry", *args)
        if cfg.aggregation == "mean":
            encoded = ((text.astype(jnp.float32) + chemistry.astype(jnp.float32)) * 0.5).astype(text.dtype)
        elif cfg.aggregation == "select":
            encoded = jnp.where(is_chemistry, chemistry, text)
        else:
            lead = jnp.where(is_chemistry, chemistry, text)
            other = jnp.where(is_chemistry, text, chemistry)
            valid = encoder_valid_positions(encoder_input_tokens, encoder_mask)
            mask = attention_mask(None, valid, encoder_segment_ids, encoder_segment_ids)
            encoded = self.aggregator(lead, other, mask, deterministic)
        return nn.with_logical_constraint(encoded, ("batch", "length", "embed"))

    decode = T5.decode  # the same decoder stack, arguments and cache: (batch, length, vocab) logits

    def __call__(
        self,
        encoder_input_tokens: Array,
        decoder_input_tokens: Array,
        decoder_target_tokens: Array | None = None,
        encoder_segment_ids: Array | None = None,
        decoder_segment_ids: Array | None = None,
        encoder_positions: Array | None = None,
        decoder_positions: Array | None = None,
        deterministic: bool = True,
        decode: bool = False,
        max_decode_length: int | None = None,
        input_domain: Array | None = None,
    ) -> Array:
        """Teacher-forced logits (batch, target length, vocab) for SeqIO's enc-dec features + `input_domain`."""
        del encoder_positions
        encoded = self.encode(encoder_input_tokens, None, encoder_segment_ids, deterministic, input_domain)
        return self.decode(
            encoded, encoder_input_tokens, decoder_input_tokens, decoder_target_tokens, encoder_segment_ids,
            decoder_segment_ids, decoder_positions, None, deterministic, decode, max_decode_length,
        )  # fmt: skip


def init_params(
    config: E2ClmConfig, rng: Array, batch_size: int = 1, input_length: int = 8, target_length: int = 8
) -> Any:
    """Boxed parameters (`nn.LogicallyPartitioned` leaves) of a fresh model; wrap in jax.eval_shape for shapes."""
    encoder_tokens = jnp.ones((batch_size, input_length), jnp.int32)
    decoder_tokens = jnp.ones((batch_size, target_length), jnp.int32)
    domain = jnp.zeros((batch_size,), jnp.int32)
    return E2Clm(config).init(
        {"params": rng}, encoder_tokens, decoder_tokens, decoder_tokens, input_domain=domain
    )["params"]


def with_t5_weights(
    params: Any, t5_params: Any, config: E2ClmConfig, into: Iterable[str] = ("text", "chemistry", "decoder")
) -> Any:
    """`params` with parts taken from a T5 parameter tree (e.g. a pretrained checkpoint): the documented mapping.

    "decoder": T5 `token_embedder`, `decoder` -> the same names. "text" / "chemistry": T5 `encoder` -> that
    domain's encoder (`encoder` when shared), and with own embeddings T5 `token_embedder` -> its embedder.
    Works on plain or boxed trees alike (subtrees are moved, not looked into).
    """
    into = tuple(into)
    unknown = set(into) - {"text", "chemistry", "decoder"}
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)}: use text, chemistry, decoder")
    result = dict(params)
    if "decoder" in into:
        result["token_embedder"] = t5_params["token_embedder"]
        result["decoder"] = t5_params["decoder"]
    for domain in ("text", "chemistry"):
        if domain in into:
            encoder_name, *embedder_name = domain_scopes(config)[domain]
            result[encoder_name] = t5_params["encoder"]
            for name in embedder_name:
                result[name] = t5_params["token_embedder"]
    return result


# ----------------------------------------------------------------------------------------------------------
# Frozen vs trained parameters


def _top_level_name(path: tuple) -> str:
    key = path[0]
    return str(getattr(key, "key", getattr(key, "name", key)))


def optimizer_labels(params: Any, config: E2ClmConfig) -> Any:
    """`params`' tree with "trained" or "frozen" at every leaf (plain, boxed or abstract parameters)."""
    frozen = frozen_scopes(config)
    return jax.tree_util.tree_map_with_path(
        lambda path, _: FROZEN if _top_level_name(path) in frozen else TRAINED, params
    )


def trainable_mask(params: Any, config: E2ClmConfig) -> Any:
    """`params`' tree with True where the optimizer updates the parameter, False where it is frozen."""
    return jax.tree_util.tree_map(lambda label: label == TRAINED, optimizer_labels(params, config))


def make_optimizer(
    base_optimizer: optax.GradientTransformation, params: Any, config: E2ClmConfig
) -> optax.GradientTransformation:
    """`base_optimizer` on trained parameters; frozen ones get zero updates and keep no optimizer state.

    `params` (any tree of this model's parameters) is checked against `config`, so a config/checkpoint
    mismatch fails here rather than silently training a "frozen" encoder. The labels are recomputed from
    whatever tree the optimizer sees, so boxed and unboxed parameters both work.
    """
    expected = {name for names in domain_scopes(config).values() for name in names} | {"token_embedder", "decoder"}
    if not config.shared and config.aggregation == "cross_attention":
        expected.add("aggregator")
    present = set(params)
    if present != expected:
        raise ValueError(
            f"parameters {sorted(present)} do not match this E2ClmConfig (expects {sorted(expected)}): "
            "were they made for another variant?"
        )
    return optax.multi_transform(
        {TRAINED: base_optimizer, FROZEN: optax.set_to_zero()},
        functools.partial(optimizer_labels, config=config),
    )
