"""Prepares our TFDS datasets offline from a manual folder (no network, no apache-beam).

  python -m textchem_jax.data.build_tfds --manual_dir=$TEXTCHEM_DATA_DIR --data_dir=~/tensorflow_datasets
"""

from __future__ import annotations

import contextlib
import io
import sys

from textchem_jax.cli import command, parse_args, quiet_libraries
from textchem_jax.data import sources, tfds_builders

PROGRAM = "build_tfds"


@command
def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog=PROGRAM, description="Prepare TFDS datasets offline from a manual folder.")
    parser.add_argument("--manual_dir", required=True, help="folder with the DESIGN §3 layout")
    parser.add_argument("--data_dir", required=True, help="TFDS data folder to write")
    parser.add_argument("--datasets", default=",".join(tfds_builders.BUILDERS),
                        help="comma-separated subset of " + ", ".join(tfds_builders.BUILDERS) + " (or their textchem_ names)")  # fmt: skip
    parser.add_argument("--verbose", action="store_true", help="show library logs")
    args = parse_args(parser, argv)
    try:  # every name checked before the first dataset is built
        names = [tfds_builders.dataset_name(name) for name in args.datasets.split(",")]
    except ValueError as error:
        print(f"{PROGRAM}: {error}", file=sys.stderr)
        return 2
    if not args.verbose:  # TensorFlow's and CUDA's start-up lines, absl INFO logs
        quiet_libraries()
        import tensorflow_datasets as tfds

        # and TFDS's bars ("Generating splits...", "Shuffling .../incomplete...tfrecord"): over a dozen lines for one
        # small dataset, one of which took our skipped-rows warning onto its own line
        tfds.disable_progress_bar()
    for name in names:
        print(f"preparing {name} from {args.manual_dir} ...", flush=True)
        try:  # TFDS prints "Downloading and preparing dataset Unknown size ..." to stdout: nothing is downloaded
            with contextlib.redirect_stdout(sys.stdout if args.verbose else io.StringIO()):
                builder = tfds_builders.build(name, args.manual_dir, args.data_dir)
        except (sources.DataFormatError, OSError) as error:  # a bad or missing file: its message names it
            print(f"{PROGRAM}: {error}", file=sys.stderr)
            return 2
        splits = ", ".join(f"{split}: {info.num_examples}" for split, info in builder.info.splits.items())
        print(f"{builder.name} -> {builder.data_dir} ({splits})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
