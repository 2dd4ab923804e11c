"""textchem_jax: JAX/Flax training stack for Text+Chem T5 (T5X-style, SeqIO, RDKit evaluation)."""

from setuptools import find_packages, setup

# Versions verified to install and work together (see README). Pinned so a fresh machine gets them.
INSTALL_REQUIRES = [
    "numpy>=2.0,<3",
    "rdkit==2026.9.1",
    "nltk==3.10.4",
    "rouge-score==0.1.2",
    "rapidfuzz==3.14.6",
    "absl-py==2.5.1",
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "seqio==0.0.20",
    "tensorflow==2.21.0",
    "tensorflow-text==2.21.1",
    "tensorflow-datasets==4.9.10",
    "gin-config==0.5.0",
    "clu==0.0.12",
    "tensorboard==2.21.0",  # clu.metric_writers writes TensorBoard summaries through it
    "importlib_resources==7.1.0",  # tensorflow-datasets needs it to build datasets
    "sentencepiece==0.2.3",
    "google-cloud-storage==3.17.1",  # orbax asks the bucket (hierarchical namespace?) before it saves to gs://
    "matplotlib==3.11.2",  # sweep and report plots
    "filelock==4.3.2",  # JAX's compilation cache needs it to evict entries beyond our size limit (launch)
    "safetensors==0.8.0",  # Hugging Face weights in and out (textchem-convert, HF folders as checkpoints); NumPy only
]

EXTRAS_REQUIRE = {
    # gs:// tests run a GCS emulator on loopback, behind a TLS proxy with a certificate the test makes.
    # The report test drives Debian's Chromium (scripts/setup.sh installs it) with Playwright.
    "test": ["pytest==9.0.3", "pytest-xdist==3.8.0", "hypothesis==6.155.2", "gcp-storage-emulator==2026.7.19", "cryptography==48.0.0",
             "playwright==1.65.2"],
    # Hugging Face interop and parity tests; torch 2.13.0 has a CPU wheel preinstalled on our machines.
    "hf": ["torch==2.13.0", "transformers==5.24.0"],
    # GPU clusters (SLURM jobs of textchem-tpu --slurm): JAX's CUDA 12 build of the same version.
    "gpu": ["jax[cuda12]==0.10.2"],
    # Cloud TPU VMs (textchem-tpu's workers): libtpu from PyPI; without it JAX trains on the VM's CPU.
    "tpu": ["jax[tpu]==0.10.2"],
}

setup(
    name="textchem_jax",
    version="0.1.0",
    description=__doc__,
    # gin_configs/ ships inside the package (textchem_jax/gin_configs once installed), so that a non-editable
    # install finds experiments/*.gin, runs/*.gin, models/*.gin and t5x/*.gin (launch.GIN_CONFIGS).
    packages=[*find_packages(include=["textchem_jax", "textchem_jax.*", "tasks"]), "textchem_jax.gin_configs"],
    package_dir={"textchem_jax.gin_configs": "gin_configs"},
    package_data={"textchem_jax": ["examples/*", "data/vocab/*"], "textchem_jax.gin_configs": ["*/*.gin"]},
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={
        "console_scripts": [
            "textchem-score=textchem_jax.score:main",
            "textchem-convert=textchem_jax.convert:main",
            "textchem-vocab=textchem_jax.vocab:main",
            "textchem-inspect=textchem_jax.inspect:main",
            "textchem-train=textchem_jax.train:main",
            "textchem-eval=textchem_jax.evaluate:main",
            "textchem-infer=textchem_jax.infer:main",
            "textchem-tpu=textchem_jax.tpu:main",
            "textchem-sweep=textchem_jax.sweep:main",
            "textchem-robustness=textchem_jax.robustness:main",
            "textchem-report=textchem_jax.report:main",
        ]
    },
)
