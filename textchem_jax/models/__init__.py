"""Models: the T5 network (v1.0 / v1.1), losses, decoding and Hugging Face conversion.

Submodules import JAX/Flax themselves (`textchem_jax.models.t5`, `.losses`, `.decoding`); `config` is
plain Python, and `hf_convert` loads torch/safetensors only inside the functions that need them.
"""

from textchem_jax.models.config import T5Config, t5_config

__all__ = ["T5Config", "t5_config"]
