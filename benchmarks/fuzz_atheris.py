"""Coverage-guided fuzzing of the SMILES and reaction parsers with atheris (libFuzzer); a script, not a test.

    pip install atheris==2.3.0
    python benchmarks/fuzz_atheris.py                      # 20,000 inputs
    python benchmarks/fuzz_atheris.py -max_total_time=600  # any libFuzzer flag

Python coverage of `textchem_jax.chem` steers the inputs (RDKit's C++ is not instrumented). Half of each input
is read as SMILES characters, so that most inputs get past the lexer. The contract is the one
tests/test_fuzz.py checks by property: nothing raises but the documented ValueError, anything RDKit cannot read
gives None with a reason. A crash stops the run with the input that caused it. Prints the inputs tried every
5,000 (libFuzzer's own last line, "Done N runs in T second(s)", gives the total).
"""

from __future__ import annotations

import os
import sys

import atheris

with atheris.instrument_imports(include=["textchem_jax.chem"]):
    from textchem_jax import chem

SMILES_ALPHABET = "CNOSPFIBrclnosp()[]=#$@+-\\/%0123456789.~:*H>| "
TRIED = 0


def _text(data: bytes) -> str:
    provider = atheris.FuzzedDataProvider(data)
    if provider.ConsumeBool():
        return "".join(SMILES_ALPHABET[b % len(SMILES_ALPHABET)] for b in provider.ConsumeBytes(provider.remaining_bytes()))
    return provider.ConsumeUnicodeNoSurrogates(provider.remaining_bytes())


def one_input(data: bytes) -> None:
    global TRIED
    TRIED += 1
    if TRIED % 5_000 == 0:
        print(f"atheris: {TRIED} inputs tried", flush=True)
    text = _text(data)
    canonical, reason = chem.canonicalize_with_reason(text)
    assert (canonical is None) != (reason is None), (text, canonical, reason)
    if canonical is not None:
        assert chem.canonicalize(canonical) is not None, (text, canonical)
    chem.molecule_key(text)
    chem.inchikey(text)
    for parse in (chem.parse_reaction, chem.precursors_and_products, chem.precursors_and_products_as_written):
        try:
            parse(text)
        except ValueError:
            pass


def main() -> None:
    argv = list(sys.argv)
    if not any(arg.startswith(("-runs=", "-max_total_time=")) for arg in argv[1:]):
        argv.append("-runs=20000")
    atheris.Setup(argv, one_input)
    atheris.Fuzz()  # never returns: libFuzzer ends the process itself, printing "Done N runs"


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
