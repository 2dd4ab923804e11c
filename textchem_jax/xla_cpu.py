"""XLA CPU settings: the flags our entry points apply before JAX starts a backend (`apply_cpu_flags`),
and the options our decoders compile with (`decode_compiler_options`).

XLA's CPU backend (jaxlib 0.10.2) hands dots, elementwise work *and reductions* to YNNPACK fusions by
default. A dot whose output feeds a reduction, as the logits feed log-softmax at every decoding step,
then runs 3.6x slower (80 x 512 x 32,128 logits plus log-softmax: 71 ms against 19.7 ms with reduction
fusions off, `benchmarks/decode_bench.py` 21.9 s against 17.9 s here). YNNPACK's elementwise fusions
cost memory instead: each op of a chain writes its own buffer, where XLA's loop fusion writes one. A
normal sample of the 32,128 x 512 embedding took 879 MiB of temporaries (188 MiB without them), T5-small's
init 3.3 GiB, and its train step 1,814 MiB (1,296 MiB without; peak RSS 4,018 -> 2,633 MiB, step 3,589 ->
3,285 ms; beam and greedy decoding the same within noise). `--xla_cpu_experimental_ynn_fusion_type=dot`
keeps YNNPACK for dots only. Other backends ignore the flag; a user's own setting of it in XLA_FLAGS wins.
YNNPACK's reductions alone (dot + reduce) are faster on whole arrays (a norm of T5-small's parameters: 96 ->
11 ms) and made its train step 0.96x as long, but its temporaries 1,296 -> 1,559 MiB and beam decoding 10.0 ->
14.3 s (2026-12-05, AVX-512 Xeon).
"""

from __future__ import annotations

import os

YNN_FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
YNN_FUSION_TYPES = "dot"
DISABLED_PASSES_FLAG = "xla_disable_hlo_passes"


def apply_cpu_flags() -> None:
    """Adds our XLA CPU flags to XLA_FLAGS unless already set there (call before the first JAX computation)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if YNN_FUSION_FLAG not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {YNN_FUSION_FLAG}={YNN_FUSION_TYPES}".strip()


def decode_compiler_options(platform: str) -> dict[str, str]:
    """XLA options for our jitted decoders (`jax.jit(..., compiler_options=...)`) on `platform`.

    XLA's CPU backend splits every reduction longer than 32 into a reduce-window and a reduce, for the
    accuracy of long sums. A decoding step runs dozens of short ones (RMSNorm over d_model, softmax over
    the history and the inputs, log-softmax over the vocabulary): a T5-small beam decode (10 beams, 128
    tokens) ran 5,645 reduce-windows, 520-616 ms of 9.5-11 s. Without the split its outputs are identical
    and it takes 0.93x as long (median of 6 alternating pairs). Decoding's longest sum, log-softmax over
    32,128 logits, stays within 1.2e-6 of float64, absolute (6.2e-7 split). Training keeps the split: a global norm
    of 60 M floats summed without it is off by 1.3e-3 (5e-8 with it). Other backends get no options, and a
    user's own `--xla_disable_hlo_passes` in XLA_FLAGS wins (2026-12-06, AVX-512 Xeon)."""
    if platform != "cpu" or DISABLED_PASSES_FLAG in os.environ.get("XLA_FLAGS", ""):
        return {}
    return {DISABLED_PASSES_FLAG: "tree_reduction_rewriter"}
