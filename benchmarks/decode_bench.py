"""Beam search throughput and peak memory: our jitted `beam_search` against Hugging Face `generate`.

Ours is `EncoderDecoderModel.predict_batch` with `decode_fn=beam_search` (all beams returned), jitted whole
with our decoders' XLA options (`xla_cpu.decode_compiler_options`).

Same weights (a random T5-small v1.0, vocabulary 32,128, written once as an HF directory and read by both
sides), same inputs (batch 8 x 256 random tokens), same settings (10 beams, 128 new tokens, length penalty
1.0, HF's default early stopping). To make both decode the full 128 tokens, EOS is made unreachable the
same way in both: HF `min_new_tokens=128` (its MinNewTokensLengthLogitsProcessor sets the EOS log-prob to
-inf) and our `min_decode_length=128` (the same -inf on the EOS log-prob). Every beam therefore runs
all 128 steps on both sides, and the final step finishes the hypotheses at the maximum length.

Each implementation runs in its own subprocesses, so its peak resident memory (`rss.peak_rss_mib`, read by
the worker when it ends) is its own; "after loading" is the RSS with weights and libraries loaded.
Ours is compiled once per process (compile time printed, excluded from throughput); HF gets a 2-token
warm-up call. The sides alternate for `--rounds` processes each, `--repeats` runs per process, and each
side's fastest run counts: on a shared machine single runs of either side move by up to 30% within
minutes. The top hypotheses of both are compared token for token as a sanity check.

Usage: python benchmarks/decode_bench.py [--batch=8] [--input_length=256] [--new_tokens=128] [--beams=10]
       [--repeats=2] [--rounds=2] [--dtype=float32|bfloat16 (our activations; bfloat16 is faster but not token-exact)]

On a GPU (torch sees CUDA) HF runs there too, in `--dtype`; on CPUs it stays float32.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from rss import current_rss_mib, peak_rss_mib

REPO = pathlib.Path(__file__).resolve().parents[1]


def prepare(directory: pathlib.Path, args) -> None:
    """Random T5-small v1.0 weights as an HF directory, and the encoder inputs."""
    import flax.linen as nn
    import jax
    import numpy as np

    from textchem_jax.models.adapters import EncoderDecoderModel
    from textchem_jax.models.config import t5_config
    from textchem_jax.models.hf_convert import save_hf_directory

    config = t5_config("small", "1.0", vocab_size=32128, dropout_rate=0.0)
    model = EncoderDecoderModel(config)
    params = jax.jit(lambda key: nn.meta.unbox(model.init(key)))(jax.random.key(0))
    save_hf_directory(directory / "hf", config, jax.tree_util.tree_map(np.asarray, params))
    inputs = np.random.default_rng(0).integers(2, config.vocab_size, (args.batch, args.input_length))
    np.save(directory / "inputs.npy", inputs.astype(np.int32))


def run_ours(directory: pathlib.Path, args) -> dict:
    import functools

    from textchem_jax import xla_cpu

    xla_cpu.apply_cpu_flags()  # as our entry points do, before JAX starts
    import jax
    import numpy as np

    from textchem_jax.models.adapters import EncoderDecoderModel
    from textchem_jax.models.beam_search import beam_search
    from textchem_jax.models.hf_convert import load_hf_directory

    config, params = load_hf_directory(directory / "hf", dropout_rate=0.0, dtype=args.dtype)
    params = jax.device_put(params)
    inputs = np.load(directory / "inputs.npy")
    model = EncoderDecoderModel(config)
    loaded_rss = current_rss_mib()
    decode_fn = functools.partial(
        beam_search, num_decodes=args.beams, length_penalty=1.0, early_stopping=False, min_decode_length=args.new_tokens
    )  # all beams returned, best first
    search = jax.jit(
        lambda params, tokens: model.predict_batch(
            params, {"encoder_input_tokens": tokens}, decode_fn=decode_fn, max_decode_length=args.new_tokens
        ),
        compiler_options=xla_cpu.decode_compiler_options(jax.devices()[0].platform),  # as `make_batch_decoder`
    )
    start = time.perf_counter()
    compiled = search.lower(params, inputs).compile()
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        sequences, scores = jax.block_until_ready(compiled(params, inputs))
        times.append(time.perf_counter() - start)
    np.save(directory / "ours.npy", np.asarray(sequences)[:, 0])
    return {"compile_s": compile_s, "times": times, "loaded_rss_mib": loaded_rss, "threads": os.cpu_count(),
            "device": f"{jax.devices()[0].platform} {args.dtype}"}  # fmt: skip


def run_hf(directory: pathlib.Path, args) -> dict:
    import numpy as np
    import torch
    import transformers

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, args.dtype) if device == "cuda" else torch.float32  # bfloat16 generate is slow on CPUs
    model = transformers.T5ForConditionalGeneration.from_pretrained(directory / "hf", dtype=dtype).to(device).eval()
    inputs = torch.tensor(np.load(directory / "inputs.npy"), dtype=torch.long, device=device)
    loaded_rss = current_rss_mib()
    options = dict(num_beams=args.beams, do_sample=False, length_penalty=1.0, early_stopping=False)
    with torch.inference_mode():
        model.generate(input_ids=inputs[:1], max_new_tokens=2, **options)  # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            out = model.generate(
                input_ids=inputs, attention_mask=inputs != 0, max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens, **options,
            )  # fmt: skip
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    np.save(directory / "hf.npy", out.cpu().numpy()[:, 1:])  # drop the start token
    return {"compile_s": 0.0, "times": times, "loaded_rss_mib": loaded_rss, "threads": torch.get_num_threads(),
            "device": f"{device} {str(dtype).removeprefix('torch.')}"}  # fmt: skip


def worker(kind: str, directory: pathlib.Path, args) -> None:
    result = {"ours": run_ours, "hf": run_hf}[kind](directory, args)
    result["peak_rss_mib"] = peak_rss_mib()
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--input_length", type=int, default=256)
    parser.add_argument("--new_tokens", type=int, default=128)
    parser.add_argument("--beams", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side per process; the fastest counts")
    parser.add_argument("--rounds", type=int, default=2, help="processes of each side, alternating ours and HF")
    parser.add_argument("--dtype", default="float32", help="our activation dtype (bfloat16: faster, not HF-exact)")
    parser.add_argument("--worker", choices=["ours", "hf"])
    parser.add_argument("--dir")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, pathlib.Path(args.dir), args)
        return

    import numpy as np

    from textchem_jax import provenance

    print(provenance.versions_line(("torch", "transformers")))

    with tempfile.TemporaryDirectory() as tmp:
        directory = pathlib.Path(tmp)
        _run_prepare(directory, args)
        results = {}
        for kind in ("ours", "hf") * args.rounds:  # alternating, so a change in the machine's load hits both
            command = [
                sys.executable, __file__, f"--worker={kind}", f"--dir={tmp}", f"--batch={args.batch}",
                f"--input_length={args.input_length}", f"--new_tokens={args.new_tokens}", f"--beams={args.beams}",
                f"--repeats={args.repeats}", f"--dtype={args.dtype}",
            ]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=_env())
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode != 0 or not lines:
                print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{kind} worker failed")
            result = json.loads(lines[-1][len("RESULT ") :])
            if kind in results:  # a later round: every run counts, memory and compile time as the worst round
                earlier = results[kind]
                result["times"] = earlier["times"] + result["times"]
                for key in ("compile_s", "loaded_rss_mib", "peak_rss_mib"):
                    result[key] = max(earlier[key], result[key])
            results[kind] = result
        ours_top, hf_top = np.load(directory / "ours.npy"), np.load(directory / "hf.npy")

    print(
        f"beam search: T5-small v1.0 (random weights, vocab 32128), batch {args.batch} x {args.input_length} input "
        f"tokens, {args.beams} beams, {args.new_tokens} new tokens (EOS suppressed in both: full length), "
        f"ours on {results['ours']['device']}, HF on {results['hf']['device']} ({os.cpu_count()} CPU cores)"
    )
    names = {"ours": "ours (JAX, jitted)", "hf": "HF transformers generate"}
    throughput = {}
    for kind, result in results.items():
        best = min(result["times"])
        throughput[kind] = args.batch / best
        print(
            f"  {names[kind]:<26} {throughput[kind]:7.3f} examples/s  (decode {best:7.1f} s, compile "
            f"{result['compile_s']:5.1f} s, threads {result['threads']}; RSS after loading "
            f"{result['loaded_rss_mib']:6.0f} MiB, peak {result['peak_rss_mib']:6.0f} MiB)"
        )
        print(f"  {'':<26} runs (s, in order): {', '.join(f'{t:.1f}' for t in result['times'])}")
    print(f"  speed-up ours / HF: {throughput['ours'] / throughput['hf']:.2f}x")
    print(f"  peak RSS ours / HF: {results['ours']['peak_rss_mib'] / results['hf']['peak_rss_mib']:.2f}x")
    same = int(np.sum(np.all(ours_top == hf_top[:, : ours_top.shape[1]], axis=1)))
    print(f"  top hypotheses identical token for token: {same}/{args.batch}")


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _run_prepare(directory: pathlib.Path, args) -> None:
    """Writes the weights and inputs in a child too, so the parent's RUSAGE_CHILDREN is not inflated by JAX."""
    code = (
        "import argparse, pathlib, sys; sys.path.insert(0, sys.argv[1]); import decode_bench as b; "
        "b.prepare(pathlib.Path(sys.argv[2]), argparse.Namespace(batch=int(sys.argv[3]), input_length=int(sys.argv[4])))"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(pathlib.Path(__file__).parent), str(directory), str(args.batch),
         str(args.input_length)],
        check=True, cwd=REPO, env=_env(),
    )  # fmt: skip


if __name__ == "__main__":
    main()
