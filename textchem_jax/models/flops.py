"""Model FLOPs of a T5 encoder-decoder step, counted from its shapes: the numerator of honest MFU.

Counted as PaLM's appendix B and T5X's utilization reports do: every matrix multiply of the network once
(2 FLOPs per multiply-add), forward for the real (non-padding) tokens of the batch, the backward pass as twice
the forward; attention scores and their weighted sum over each packed segment's own length (a segment never
attends to another); no remat recomputation, no optimizer, no elementwise work (norms, softmax,
activations), no embedding lookups. XLA's executed count (remat, optimizer and all) is the hardware
FLOPs instead, which is logged beside it as `timing/hfu`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from textchem_jax.models.config import T5Config


def segment_lengths(tokens: np.ndarray, segment_ids: np.ndarray | None = None) -> np.ndarray:
    """(batch, segments): the non-padding length of each packed segment of each row (one per row unpacked)."""
    ids = np.where(tokens > 0, segment_ids if segment_ids is not None else 1, 0).astype(np.int64)
    rows, width = ids.shape[0], int(ids.max(initial=0)) + 1
    flat = (np.arange(rows)[:, None] * width + ids).ravel()
    return np.bincount(flat, minlength=rows * width).reshape(rows, width)[:, 1:]


def forward_flops(config: T5Config, encoder_lengths: np.ndarray, decoder_lengths: np.ndarray) -> float:
    """Forward matmul FLOPs for segments of these encoder and decoder lengths (matching shapes: segment k of
    row b is one example)."""
    d, inner, ff, vocab = config.d_model, config.inner_dim, config.d_ff, config.vocab_size
    mlp = (3 if config.feed_forward == "gated-gelu" else 2) * d * ff  # wi (wi_0, wi_1 when gated) and wo
    encoder_tokens, decoder_tokens = float(encoder_lengths.sum()), float(decoder_lengths.sum())
    encoder_layer = 2 * (4 * d * inner + mlp) * encoder_tokens + 4 * inner * float((encoder_lengths**2).sum())
    decoder_layer = (
        2 * (4 * d * inner + 2 * d * inner + mlp) * decoder_tokens  # self-attention, cross q and o, MLP
        + 2 * 2 * d * inner * encoder_tokens  # cross-attention keys and values of the encoder's outputs
        + 4 * inner * float((decoder_lengths**2).sum())  # self-attention scores and weighted values
        + 4 * inner * float((decoder_lengths * encoder_lengths).sum())  # cross-attention
    )
    logits = 2 * d * vocab * decoder_tokens
    return config.num_encoder_layers * encoder_layer + config.num_decoder_layers * decoder_layer + logits


def train_step_flops(config: T5Config, batch: Mapping[str, np.ndarray]) -> float:
    """Model FLOPs of one training step on `batch` (SeqIO encoder-decoder features): 3x the forward."""
    encoder = segment_lengths(batch["encoder_input_tokens"], batch.get("encoder_segment_ids"))
    decoder = segment_lengths(batch["decoder_target_tokens"], batch.get("decoder_segment_ids"))
    width = max(encoder.shape[1], decoder.shape[1])
    pad = lambda x: np.pad(x, ((0, 0), (0, width - x.shape[1])))  # noqa: E731  (a row's trailing empty segments)
    return 3 * forward_flops(config, pad(encoder), pad(decoder))
