"""Our commands' persistent compilation cache (`launch.use_compilation_cache`), each case in a fresh Python.

A command run through `launch.run` compiles into a folder of the user's cache and the next command loads
from it (JAX's own cache-hit events counted); a folder the user named wins; JAX's own switch turns it off."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from textchem_jax import launch

from helpers import ROOT

COMMAND = """
import json, sys
import jax
import jax.numpy as jnp
from textchem_jax import launch

hits = []
jax.monitoring.register_event_listener(lambda event, **_: hits.append(event) if event.endswith("/cache_hits") else None)

def main():
    jax.jit(lambda x: jnp.tanh(x) @ x.T + 1.0)(jnp.ones((64, 64))).block_until_ready()
    print(json.dumps({"hits": len(hits), "folder": jax.config.jax_compilation_cache_dir}), flush=True)

launch.run(main, argv=["a-command", f"--gin_file={sys.argv[1]}"])
"""


def _command(tmp_path, env: dict[str, str]) -> dict:
    (tmp_path / "empty.gin").write_text("# a command's configuration: nothing to bind\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("JAX_COMPILATION_CACHE")} | env
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # the test's function compiles in milliseconds
    command = [sys.executable, "-c", COMMAND, str(tmp_path / "empty.gin")]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])


def _entries(folder) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.endswith("-cache")) if os.path.isdir(folder) else []


def test_a_command_compiles_into_the_users_cache_and_the_next_command_loads_from_it(tmp_path):
    first = _command(tmp_path, {"XDG_CACHE_HOME": str(tmp_path)})
    folder = tmp_path / "textchem_jax" / "xla" / launch._cpu_tag()
    assert first == {"hits": 0, "folder": str(folder)}
    written = _entries(folder)
    assert any(name.startswith("jit__lambda-") for name in written)  # the function, and jnp.ones' own
    second = _command(tmp_path, {"XDG_CACHE_HOME": str(tmp_path)})
    assert second == {"hits": len(written), "folder": str(folder)}  # every one loaded, none compiled again
    assert _entries(folder) == written


def test_the_users_own_cache_folder_wins_and_jax_switch_turns_the_cache_off(tmp_path):
    own = tmp_path / "own"
    assert _command(tmp_path, {"XDG_CACHE_HOME": str(tmp_path / "ours"), "JAX_COMPILATION_CACHE_DIR": str(own)})["folder"] == str(own)
    assert any(name.startswith("jit__lambda-") for name in _entries(own)) and not (tmp_path / "ours" / "textchem_jax").exists()
    off = _command(tmp_path, {"XDG_CACHE_HOME": str(tmp_path / "off"), "JAX_ENABLE_COMPILATION_CACHE": "false"})
    assert off["hits"] == 0 and _entries(off["folder"]) == []


def test_the_cache_folder_is_per_cpu_model_and_instruction_set(tmp_path):
    def tag(flags: str, mhz: str, model: str = "Intel(R) Xeon(R) Processor") -> str:
        cpuinfo = tmp_path / f"cpuinfo-{flags}-{mhz}-{len(model)}"
        cores = [f"processor\t: {i}\nmodel name\t: {model}\ncpu MHz\t\t: {mhz}\nflags\t\t: fpu sse2 avx2 {flags}\n" for i in (0, 1)]
        cpuinfo.write_text("\n".join(cores))
        return launch._cpu_tag(str(cpuinfo))

    assert tag("avx512f", "2100.0") == tag("avx512f", "3400.5")  # clocks and core numbers change, the folder not
    assert tag("avx512f", "2100.0") != tag("", "2100.0")  # an AVX2-only host never loads AVX-512 code
    assert tag("", "2100.0") != tag("", "2100.0", model="AMD EPYC 7B13")
    assert launch._cpu_tag().startswith(os.uname().machine + "-")
