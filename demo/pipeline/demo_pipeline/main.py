"""Runs the demo pipeline.

    python -m demo_pipeline.main --output /tmp/slugs.txt [Beam options...]

Any option this module does not know (--runner, --sdk_container_image,
--requirements_file, --setup_file, ...) is passed to Beam.
"""

import argparse
import logging

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from demo_pipeline.transforms import Slugify, render_table

TITLES = [
    "Hello, Wörld!",
    "Prebuilt SDK containers: no more pip at start-up",
    "Ünïcödé → ASCII",
    "Apache Beam & Docker",
]


def run(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", required=True,
                        help="the file to write the table to")
    known, pipeline_args = parser.parse_known_args(argv)
    options = PipelineOptions(pipeline_args)
    with beam.Pipeline(options=options) as p:
        (
            p
            | "Titles" >> beam.Create(TITLES)
            | "Slugify" >> beam.ParDo(Slugify())
            | "Collect" >> beam.combiners.ToList()
            | "Table" >> beam.Map(render_table)
            | "Write" >> beam.io.WriteToText(
                known.output, shard_name_template="", append_trailing_newlines=True)
        )


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.WARNING)
    run()
