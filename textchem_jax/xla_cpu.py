"""XLA CPU settings our entry points apply before JAX starts a backend.

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


def apply_cpu_flags() -> None:
    """Adds our XLA CPU flags to XLA_FLAGS unless already set there (call before the first JAX computation)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if YNN_FUSION_FLAG not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {YNN_FUSION_FLAG}={YNN_FUSION_TYPES}".strip()
