"""textchem_jax: the JAX/Flax training stack for Text+Chem T5.

Importing the package is cheap: subpackages (`chem`, `metrics`, ...) load RDKit, NLTK, JAX or
TensorFlow only when they are imported themselves.
"""

__version__ = "0.1.0"
