"""Sequence-to-sequence cross entropy that counts real target tokens only.

Padding (target id 0) gets weight 0, so a batch padded to any length has the same loss as the
unpadded one (the GT4SD original counted pad tokens). Optional label smoothing (with the constant
that makes a perfect prediction score 0, as Mesh TensorFlow/T5X do) and z-loss (`z_loss * log(Z)^2`
per token, keeping the softmax normalizer near 1 in low precision).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

Array = jax.Array

NORMALIZATIONS = ("tokens", "sequences", "none")


def _smoothing_constant(confidence: float, low_confidence: float, vocab_size: int) -> float:
    """Entropy of the smoothed target distribution: subtracting it makes the minimum loss 0."""
    def x_log_x(p: float) -> float:
        return p * math.log(p) if p > 0 else 0.0

    return -(x_log_x(confidence) + (vocab_size - 1) * x_log_x(low_confidence))


def cross_entropy_loss(
    logits: Array,
    targets: Array,
    weights: Array | None = None,
    *,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    loss_normalization: str | float = "tokens",
    segment_ids: Array | None = None,
) -> tuple[Array, dict[str, Array]]:
    """(loss, metrics) for logits (batch, length, vocab) and integer targets (batch, length).

    `weights` default to `targets > 0`. `loss_normalization`: "tokens" divides the weighted sum by the
    number (total weight) of real target tokens, "sequences" by the number of target sequences
    (packed rows count their segments when `segment_ids` are given), "none" returns the sum, and a
    number divides by that constant (T5X's fixed `loss_normalizing_factor`).

    Metrics (float32 scalars): `loss`; `cross_entropy` and `z_loss` per real token (no smoothing);
    `accuracy` (argmax equals target) over real tokens; `num_tokens`; `num_sequences`.
    """
    logits = logits.astype(jnp.float32)
    vocab_size = logits.shape[-1]
    if weights is None:
        weights = (targets > 0).astype(jnp.float32)
    weights = weights.astype(jnp.float32)

    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    token_nll = log_z - target_logit  # -log p(target)

    if label_smoothing > 0.0:
        confidence = 1.0 - label_smoothing
        low_confidence = label_smoothing / (vocab_size - 1)
        # -sum_v q_v log p_v with q = low everywhere and `confidence` on the target, without a one-hot.
        sum_log_p = jnp.sum(logits, axis=-1) - vocab_size * log_z
        token_loss = -(confidence - low_confidence) * (target_logit - log_z) - low_confidence * sum_log_p
        token_loss = token_loss - _smoothing_constant(confidence, low_confidence, vocab_size)
    else:
        token_loss = token_nll
    token_z_loss = z_loss * jnp.square(log_z)
    token_loss = token_loss + token_z_loss

    num_tokens = jnp.sum(weights)
    if segment_ids is not None:
        num_sequences = jnp.sum(jnp.max(segment_ids, axis=-1)).astype(jnp.float32)
    else:
        num_sequences = jnp.sum(jnp.any(weights > 0, axis=-1)).astype(jnp.float32)
    if isinstance(loss_normalization, str):
        if loss_normalization not in NORMALIZATIONS:
            raise ValueError(f"loss_normalization must be one of {NORMALIZATIONS} or a number")
        denominator = {"tokens": num_tokens, "sequences": num_sequences, "none": jnp.float32(1.0)}[loss_normalization]
    else:
        denominator = jnp.float32(loss_normalization)
    loss = jnp.sum(token_loss * weights) / jnp.maximum(denominator, 1e-8)

    per_token = jnp.maximum(num_tokens, 1e-8)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    metrics = {
        "loss": loss,
        "cross_entropy": jnp.sum(token_nll * weights) / per_token,
        "z_loss": jnp.sum(token_z_loss * weights) / per_token,
        "accuracy": jnp.sum(correct * weights) / per_token,
        "num_tokens": num_tokens,
        "num_sequences": num_sequences,
    }
    return loss, metrics
