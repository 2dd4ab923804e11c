"""Train-step throughput on T5-small shape: ours (JAX, jitted) vs Hugging Face PyTorch T5, same machine.

Batch 8, inputs 256, targets 128, AdamW (lr 6e-4), float32, random weights (v1.0 small, 32,128 vocab),
no dropout. The two implementations alternate in one script, each timed over the same number of
steps after warm-up; tokens/s counts input + target tokens. MFU divides each one's model FLOPs
(XLA's cost analysis of our step; the same count is used for both) by a matmul peak measured here.

Usage: python benchmarks/train_bench.py [--steps 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

BATCH, INPUTS, TARGETS, VOCAB = 8, 256, 128, 32128


def batch(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = rng.integers(3, VOCAB, (BATCH, TARGETS)).astype(np.int32)
    return {
        "encoder_input_tokens": rng.integers(3, VOCAB, (BATCH, INPUTS)).astype(np.int32),
        "decoder_input_tokens": np.concatenate([np.zeros((BATCH, 1), np.int32), targets[:, :-1]], axis=1),
        "decoder_target_tokens": targets,
        "decoder_loss_weights": np.ones((BATCH, TARGETS), np.float32),
    }


class Ours:
    def __init__(self):
        import jax
        import optax

        from textchem_jax import partitioning, trainer
        from textchem_jax.models.adapters import EncoderDecoderModel
        from textchem_jax.models.config import t5_config

        self.jax = jax
        schedule = trainer.learning_rate_schedule("constant", 6e-4)
        self.trainer = trainer.Trainer(
            EncoderDecoderModel(t5_config("small", "1.0", vocab_size=VOCAB, dropout_rate=0.0), z_loss=0.0),
            optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0),  # as torch.optim.AdamW below
            partitioning.make_mesh(),
        )
        self.state = self.trainer.init_state(jax.random.key(0))
        self.rng = jax.random.key(1)
        example = self.trainer.shard_batch(batch(0))
        start = time.perf_counter()
        compiled = self.trainer.train_step.lower(self.state, example, self.rng).compile()
        self.compile_seconds = time.perf_counter() - start
        analysis = compiled.cost_analysis()
        analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
        self.flops = float(analysis.get("flops", 0.0))
        self.step(0)  # warm-up

    def step(self, seed: int) -> float:
        self.state, metrics = self.trainer.train_step(self.state, self.trainer.shard_batch(batch(seed)), self.rng)
        return float(self.jax.device_get(metrics["loss"]))


class HuggingFace:
    def __init__(self):
        import torch
        from transformers import T5Config, T5ForConditionalGeneration

        torch.manual_seed(0)
        self.torch = torch
        config = T5Config(vocab_size=VOCAB, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8,
                          dropout_rate=0.0, feed_forward_proj="relu", tie_word_embeddings=True)  # fmt: skip
        self.model = T5ForConditionalGeneration(config).train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=6e-4, weight_decay=0.0)
        self.step(0)  # warm-up

    def step(self, seed: int) -> float:
        b = {k: self.torch.from_numpy(v.astype(np.int64)) for k, v in batch(seed).items() if k != "decoder_loss_weights"}
        out = self.model(input_ids=b["encoder_input_tokens"], attention_mask=(b["encoder_input_tokens"] > 0).long(),
                         decoder_input_ids=b["decoder_input_tokens"], labels=b["decoder_target_tokens"])  # fmt: skip
        out.loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(out.loss)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    import torch

    print(f"T5-small v1.0 shape, batch {BATCH}, inputs {INPUTS}, targets {TARGETS}, AdamW; "
          f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}")  # fmt: skip
    from textchem_jax.trainer import peak_flops

    peak, source = peak_flops("float32")
    ours, hf = Ours(), HuggingFace()
    model_flops = ours.trainer.model.train_flops(batch(0))
    print(f"peak {peak / 1e9:.1f} GFLOP/s ({source}); our step: {model_flops / 1e9:.1f} GFLOP model (models.flops), "
          f"{ours.flops / 1e9:.1f} GFLOP executed (XLA), compiled in {ours.compile_seconds:.1f} s")  # fmt: skip
    times = {"ours": [], "hf": []}
    for round_index in range(args.rounds):
        for name, impl in (("ours", ours), ("hf", hf)):
            start = time.perf_counter()
            for step in range(args.steps):
                impl.step(1 + round_index * args.steps + step)
            times[name].append((time.perf_counter() - start) / args.steps)
    tokens = BATCH * (INPUTS + TARGETS)
    for name in ("ours", "hf"):
        seconds = float(np.median(times[name]))
        hfu = f"  HFU {ours.flops / seconds / peak:6.1%}" if name == "ours" else ""  # XLA's count: ours only
        print(f"{name:>5}: {seconds * 1000:8.0f} ms/step {tokens / seconds:8.0f} tokens/s  MFU {model_flops / seconds / peak:6.1%}{hfu}")
    ratio = float(np.median(times["hf"])) / float(np.median(times["ours"]))
    print(f"speed-up ours / Hugging Face: {ratio:.2f}x (target 1.2x)")


if __name__ == "__main__":
    main()
