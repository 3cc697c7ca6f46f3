#!/usr/bin/env python3
# Licensed under the Apache License, Version 2.0.
"""What the Beam plugin's staging costs, Beam's part measured apart.

Run with the fixture venv's python, the plugin package on PYTHONPATH:

    python bench/plugin_staging.py --out DIR --requirements_file F \
        --requirements_cache DIR [--setup_file F] [--sdk_container_image IMG]

Runs the plugin's `_prepare_dependencies` (Beam's own staging, with the
plugin noting where each copy came from) into DIR/context, writes
DIR/origins.json as the plugin passes it to `prebuilder build --origins`,
and prints one JSON object on stdout:

    {"stage_seconds": Beam's whole staging (its pip downloads into the
                      requirements cache, the sdist, the copies),
     "copy_seconds":  the part of it spent in shutil.copyfile (Beam copying
                      every artifact into the context),
     "files": staged files, "bytes": their size, "origins": originals named}

Offline as integration/fixtures/beam_context.py is: PIP_NO_INDEX=1, so every
requirement must be in --requirements_cache.
"""

import argparse
import json
import logging
import os
import shutil
import sys
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--requirements_file", required=True)
    p.add_argument("--requirements_cache", required=True)
    p.add_argument("--setup_file")
    p.add_argument("--sdk_container_image")
    args = p.parse_args()

    os.environ.pop("PIP_FIND_LINKS", None)
    os.environ["PIP_NO_INDEX"] = "1"
    os.environ["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    quiet = logging.NullHandler()
    logging.getLogger().addHandler(quiet)
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability import sdk_container_builder
    from prebuilder_beam import _binary
    from prebuilder_beam.builder import PrebuilderSdkContainerImageBuilder
    logging.getLogger().removeHandler(quiet)

    context = os.path.join(os.path.abspath(args.out), "context")
    os.makedirs(context)
    opts = ["--requirements_file", os.path.abspath(args.requirements_file),
            "--requirements_cache", os.path.abspath(args.requirements_cache)]
    if args.setup_file:
        opts += ["--setup_file", os.path.abspath(args.setup_file)]
    if args.sdk_container_image:
        opts += ["--sdk_container_image", args.sdk_container_image]
    builder = PrebuilderSdkContainerImageBuilder(PipelineOptions(opts))
    builder._temp_src_dir = context

    # Time Beam's copies: the module's shutil as Beam sees it, timed around
    # each copyfile (the plugin's own proxy is installed inside this one).
    copy_seconds = [0.0]
    real = sdk_container_builder.shutil

    class Timed:
        def __getattr__(self, name):
            return getattr(real, name)

        def copyfile(self, src, dst, *a, **kw):
            t = time.monotonic()
            try:
                return real.copyfile(src, dst, *a, **kw)
            finally:
                copy_seconds[0] += time.monotonic() - t

    sdk_container_builder.shutil = Timed()
    t0 = time.monotonic()
    try:
        builder._prepare_dependencies()
    finally:
        sdk_container_builder.shutil = real
    stage_seconds = time.monotonic() - t0
    origins = _binary.write_origins(
        builder._origins, os.path.join(os.path.abspath(args.out), "origins.json"))
    names = os.listdir(context)
    json.dump({
        "stage_seconds": stage_seconds,
        "copy_seconds": copy_seconds[0],
        "files": len(names),
        "bytes": sum(os.path.getsize(os.path.join(context, n)) for n in names),
        "origins": len(json.load(open(origins))) if origins else 0,
    }, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
