"""Model adapters: one object per model family owns everything that differs between families.

The role of T5X's `BaseModel` (`t5x/models.py`): the trainer, evaluator, inference, loading and
conversion hold an adapter and never ask which network it wraps. An adapter owns
- the features its network reads and the SeqIO feature converter that makes them
  (`input_features`, `model_features`, `feature_converter`); e2-CLM's routed variants add
  `input_domain`, T5 does not;
- its loss settings (z-loss, label smoothing) and `loss_fn`;
- its optimizer wrapping (`wrap_optimizer`: e2-CLM's frozen encoders get no updates, no state);
- `init` / `abstract_params` (what checkpoints are restored into);
- `predict_batch` (encode once, project cross-attention keys and values once, create the cache for
  every beam or sample, step the decoder) for
  any search of `textchem_jax.models.decoding`, and `score_batch` (teacher-forced log-likelihoods).

Adapters are frozen dataclasses of plain configs: hashable, so jitted functions can close over them.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from textchem_jax.models import decoding, e2clm, feature_converters, flops
from textchem_jax.models.config import T5Config
from textchem_jax.models.losses import cross_entropy_loss
from textchem_jax.models.t5 import T5, cross_attention_kv

Array = jax.Array
Batch = Mapping[str, Array]
DecodeFn = Callable[..., tuple[Array, Array]]

TARGET_FEATURES = (
    "decoder_input_tokens",
    "decoder_target_tokens",
    "encoder_segment_ids",
    "decoder_segment_ids",
    "encoder_positions",
    "decoder_positions",
)


@dataclasses.dataclass(frozen=True)
class EncoderDecoderModel:
    """T5 (v1.0 / v1.1): SeqIO's encoder-decoder features in, logits out."""

    config: T5Config
    z_loss: float = 1e-4
    label_smoothing: float = 0.0
    # The SeqIO vocabulary of inputs and targets (gin: VOCABULARY; T5X's input/output_vocabulary): the
    # runtime registers the tasks with it. Opaque here; not part of the adapter's identity for jit.
    vocabulary: Any = dataclasses.field(default=None, compare=False, repr=False)

    # -- what differs between families (overridden by E2ClmModel) ----------------------------------------

    @property
    def module(self) -> nn.Module:
        """The Flax network trained and evaluated."""
        return T5(self.config)

    @property
    def t5_config(self) -> T5Config:
        """The T5 layout of the decoder side (and of every encoder): for conversion and loading."""
        return self.config

    @property
    def input_features(self) -> tuple[str, ...]:
        """What decoding needs of a batch (`predict_batch`)."""
        return ("encoder_input_tokens",)

    def feature_converter(self, pack: bool = True):
        return feature_converters.encoder_decoder_feature_converter(pack=pack)

    def encode(self, params: Any, batch: Batch) -> Array:
        """(batch, length, d_model): what the decoder cross-attends to."""
        return self.module.apply({"params": params}, jnp.asarray(batch["encoder_input_tokens"], jnp.int32), method=T5.encode)

    def _dummy_features(self) -> dict[str, Array]:
        tokens = jnp.ones((1, 8), jnp.int32)
        return {"encoder_input_tokens": tokens, "decoder_input_tokens": tokens, "decoder_target_tokens": tokens}

    def train_flops(self, batch: Batch) -> float | None:
        """Model FLOPs of a training step on `batch` (host arrays): MFU's numerator (`models.flops`)."""
        return flops.train_step_flops(self.config, batch)

    def wrap_optimizer(self, optimizer: optax.GradientTransformation, params: Any) -> optax.GradientTransformation:
        """The optimizer this family trains `params` with (T5: `optimizer` as given)."""
        del params
        return optimizer

    @property
    def t5_parts(self) -> tuple[str, ...]:
        """The parts `with_t5_parts` can take from a T5 checkpoint (a T5 loads one whole: none)."""
        return ()

    def with_t5_parts(self, params: Any, t5_params: Any, parts: tuple[str, ...]) -> Any:
        """`params` with `parts` taken from a T5 parameter tree (e2-CLM: encoders and decoder from T5)."""
        raise ValueError(
            f"a T5 starts from a T5 checkpoint of its own shape, not from parts {list(parts)}: give "
            "INITIAL_CHECKPOINT_PATH one checkpoint (and the model configuration it was made with)"
        )

    # -- shared by every family ----------------------------------------------------------------------------

    @property
    def model_features(self) -> tuple[str, ...]:
        """What the network reads of a training batch."""
        return (*self.input_features, *TARGET_FEATURES)

    def features(self, batch: Batch, names: tuple[str, ...] | None = None) -> dict[str, Array]:
        """The entries of `batch` among `names` (default: all the network reads; loss weights stay out)."""
        return {key: batch[key] for key in (self.model_features if names is None else names) if key in batch}

    def init(self, rng: Array) -> Any:
        """Boxed parameters (`nn.LogicallyPartitioned` leaves) of a fresh model."""
        return self.module.init({"params": rng, "dropout": rng}, **self._dummy_features())["params"]

    def abstract_params(self) -> Any:
        """Boxed ShapeDtypeStructs of the parameters, nothing allocated (what loading restores into)."""
        return jax.eval_shape(lambda: self.init(jax.random.key(0)))

    def logits(self, params: Any, batch: Batch, dropout_rng: Array | None = None, deterministic: bool = True) -> Array:
        rngs = {"dropout": dropout_rng} if dropout_rng is not None else {}
        return self.module.apply({"params": params}, **self.features(batch), deterministic=deterministic, rngs=rngs)

    def loss_fn(
        self, params: Any, batch: Batch, dropout_rng: Array | None = None, deterministic: bool = True
    ) -> tuple[Array, dict[str, Array]]:
        """(summed loss over real target tokens, metrics of `losses.cross_entropy_loss`)."""
        logits = self.logits(params, batch, dropout_rng, deterministic)
        return cross_entropy_loss(
            logits,
            batch["decoder_target_tokens"],
            batch.get("decoder_loss_weights"),
            label_smoothing=self.label_smoothing,
            z_loss=self.z_loss,
            loss_normalization="none",
            segment_ids=batch.get("decoder_segment_ids"),
        )

    def _decoder(self) -> T5:
        """The T5 whose `decode` runs the steps; every family's decoder side has T5's names and cache."""
        return T5(self.t5_config)

    def _empty_cache(self, inputs: int, n: int, length: int) -> Any:
        """The decoder's cache for n rows per input, `length` tokens long, all zeros (empty)."""
        decoder, d_model, rows = self._decoder(), self.t5_config.d_model, inputs * n

        def create():
            tokens = jnp.zeros((rows, length), jnp.int32)
            encoded = jnp.zeros((rows, 1, d_model), jnp.dtype(self.t5_config.dtype))
            variables = decoder.init(
                jax.random.key(0), encoded, jnp.ones((rows, 1), jnp.int32), tokens, decode=True, method=T5.decode,
                parents=jnp.zeros((inputs, n), jnp.int32),
            )  # fmt: skip
            return variables["cache"]

        shapes = jax.eval_shape(create)  # no parameters are materialized; all zeros is an empty cache
        return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def decoding_start(self, params: Any, batch: Batch) -> decoding.Start:
        """Encodes `batch` and projects its cross-attention keys and values once; the returned `start(n)`
        gives the cached decoder step and `new_cache(length)` for n rows per input (example-major), which
        is all a search needs. The n rows of an input share its keys and values (never copied per beam).
        The step works on a cache of any length (the decoder reads it from the cache's shapes), so
        searches can grow it."""
        tokens = jnp.asarray(batch["encoder_input_tokens"], jnp.int32)
        cross_kv = cross_attention_kv(params, self.t5_config, self.encode(params, batch))  # once per input
        decoder = self._decoder()

        def start(n: int) -> tuple[decoding.StepFn, decoding.NewCache]:
            def step(cache: Any, last_tokens: Array, parents: Array | None = None) -> tuple[Array, Any]:
                logits, variables = decoder.apply(
                    {"params": params, "cache": cache}, cross_kv, tokens, last_tokens[:, None],
                    decode=True, deterministic=True, method=T5.decode, mutable=["cache"], parents=parents,
                )  # fmt: skip
                return logits[:, -1, :].astype(jnp.float32), variables["cache"]

            return step, functools.partial(self._empty_cache, tokens.shape[0], n)

        return start

    def predict_batch(
        self,
        params: Any,
        batch: Batch,
        *,
        max_decode_length: int,
        decode_fn: DecodeFn | None = None,
        rng: Array | None = None,
    ) -> tuple[Array, Array]:
        """(sequences (batch, k, max_decode_length), scores (batch, k)) of `decode_fn` (default greedy),
        any search of `decoding` / `beam_search`: it asks `decoding_start` for the rows it needs."""
        decode_fn = decoding.greedy if decode_fn is None else decode_fn
        start = self.decoding_start(params, batch)
        batch_size = batch["encoder_input_tokens"].shape[0]
        return decode_fn(start, batch_size=batch_size, max_decode_length=max_decode_length, rng=rng)

    def score_batch(self, params: Any, batch: Batch, *, length_penalty: float = 0.0, eos_id: int = decoding.EOS_ID) -> Array:
        """Teacher-forced scores of `decoder_target_tokens`: (batch, length) -> (batch,), or k candidates
        per input (batch, k, length) -> (batch, k).

        Score = sum of log p(token) up to and including the first EOS, / generated_length ** length_penalty
        (0: the plain sum; the length counts the EOS, as beam search does). A 0 token before EOS counts as
        a token: the decoder attends causally to every earlier position, as during incremental decoding.
        """
        targets = jnp.asarray(batch["decoder_target_tokens"], jnp.int32)
        candidates = targets if targets.ndim == 3 else targets[:, None, :]
        size, k, length = candidates.shape
        flat = candidates.reshape(size * k, length)
        encoded, tokens = decoding.repeat_rows((self.encode(params, batch), batch["encoder_input_tokens"]), k)
        decoder_inputs = jnp.pad(flat[:, :-1], ((0, 0), (1, 0)))  # start token 0, shifted right
        # No decoder_target_tokens: every position is a valid key; causality hides positions after EOS.
        logits = self._decoder().apply({"params": params}, encoded, tokens, decoder_inputs, method=T5.decode)
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        token_log_probs = jnp.take_along_axis(log_probs, flat[..., None], axis=-1)[..., 0]
        lengths = decoding.generated_lengths(flat, eos_id)
        counted = jnp.arange(length)[None, :] < lengths[:, None]
        totals = jnp.sum(jnp.where(counted, token_log_probs, 0.0), axis=-1)
        penalties = jnp.asarray(decoding.length_penalties(length, length_penalty))
        scores = (totals / penalties[lengths]).reshape(size, k)
        return scores if targets.ndim == 3 else scores[:, 0]


@dataclasses.dataclass(frozen=True)
class E2ClmModel(EncoderDecoderModel):
    """e2-CLM: text and chemistry encoders, one T5 decoder; routed variants read `input_domain`."""

    config: e2clm.E2ClmConfig  # type: ignore[assignment]

    @property
    def module(self) -> nn.Module:
        return e2clm.E2Clm(self.config)

    @property
    def t5_config(self) -> T5Config:
        return self.config.t5

    @property
    def input_features(self) -> tuple[str, ...]:
        return ("encoder_input_tokens", "input_domain") if self.config.needs_domain else ("encoder_input_tokens",)

    def train_flops(self, batch: Batch) -> float | None:
        """The T5 count for the shared, trained encoder (Text+Chem T5's layout); None for two encoders, whose
        work depends on the variant's routing and freezing (the run logs XLA's count, `timing/hfu`, only)."""
        if self.config.shared and not (self.config.freeze_text or self.config.freeze_chemistry):
            return flops.train_step_flops(self.config.t5, batch)
        return None

    def feature_converter(self, pack: bool = True):
        if self.config.needs_domain:
            return feature_converters.domain_feature_converter(pack=pack)
        return super().feature_converter(pack)

    def encode(self, params: Any, batch: Batch) -> Array:
        domain = batch.get("input_domain") if self.config.needs_domain else None
        tokens = jnp.asarray(batch["encoder_input_tokens"], jnp.int32)
        return self.module.apply({"params": params}, tokens, input_domain=domain, method=e2clm.E2Clm.encode)

    def _dummy_features(self) -> dict[str, Array]:
        return {**super()._dummy_features(), "input_domain": jnp.zeros((1,), jnp.int32)}

    def wrap_optimizer(self, optimizer: optax.GradientTransformation, params: Any) -> optax.GradientTransformation:
        """Frozen encoders: zero updates and no optimizer state (`e2clm.make_optimizer`)."""
        return e2clm.make_optimizer(optimizer, params, self.config)

    @property
    def t5_parts(self) -> tuple[str, ...]:
        return ("text", "chemistry", "decoder")

    def with_t5_parts(self, params: Any, t5_params: Any, parts: tuple[str, ...]) -> Any:
        """T5 `encoder` -> the text / chemistry encoder, T5 `token_embedder` + `decoder` -> the decoder side
        (`e2clm.with_t5_weights`): the paper's encoders start from real T5 weights, frozen or not."""
        return e2clm.with_t5_weights(params, t5_params, self.config, into=parts)
