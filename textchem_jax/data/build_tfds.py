"""Prepares our TFDS datasets offline from a manual folder (no network, no apache-beam).

  python -m textchem_jax.data.build_tfds --manual_dir=$TEXTCHEM_DATA_DIR --data_dir=~/tensorflow_datasets
"""

from __future__ import annotations

from textchem_jax.cli import command, parse_args
from textchem_jax.data import tfds_builders


@command
def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Prepare TFDS datasets offline from a manual folder.")
    parser.add_argument("--manual_dir", required=True, help="folder with the DESIGN §3 layout")
    parser.add_argument("--data_dir", required=True, help="TFDS data folder to write")
    parser.add_argument("--datasets", default=",".join(tfds_builders.BUILDERS), help="comma-separated subset of " + ", ".join(tfds_builders.BUILDERS))
    args = parse_args(parser, argv)
    for name in args.datasets.split(","):
        builder = tfds_builders.build(name.strip(), args.manual_dir, args.data_dir)
        splits = ", ".join(f"{split}: {info.num_examples}" for split, info in builder.info.splits.items())
        print(f"{builder.name} -> {builder.data_dir} ({splits})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
