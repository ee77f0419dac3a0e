"""Write a run's FFN weights to a row-column-bundled file, for `--decoder sparse` with `bundle:`.

    python -m plugins.sparse.write_bundle runs/relufy-tiny runs/relufy-tiny/ffn.bundle

RUN is a run directory (its latest checkpoint) or one checkpoint directory of an OpenELM. The
file (bundle.py's format, layout "bundled", the model's dtype unless --dtype) is written
atomically: the whole file or nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from plugins.sparse.bundle import DTYPES, write_bundle
from toolkit.cli.common import ArgumentParser, run_cli
from toolkit.errors import CheckpointError


def run(argv: list[str]) -> int:
    parser = ArgumentParser(prog="python -m plugins.sparse.write_bundle", description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run or checkpoint directory of an OpenELM")
    parser.add_argument("output", type=Path, help="the bundle file to write")
    parser.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="default: the model's")
    arguments: argparse.Namespace = parser.parse_args(argv)
    from plugins.openelm.model import OpenELM
    from toolkit.checkpoint import load_model

    if not arguments.output.parent.is_dir():
        raise CheckpointError(f"{arguments.output.parent}: no such directory for the bundle")
    model = load_model(arguments.run, device="cpu").model
    if not isinstance(model, OpenELM):
        raise CheckpointError(f"{arguments.run}: holds a {type(model).__name__}; FFN bundles are written for OpenELMs")
    header = write_bundle(model, arguments.output, "bundled", DTYPES[arguments.dtype] if arguments.dtype else None)
    print(f"wrote {arguments.output}: {len(header['layers'])} layers, {header['file_size']} bytes, {header['dtype']}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(run))
