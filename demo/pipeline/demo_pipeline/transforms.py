"""The demo's transforms.

The third-party imports happen inside the functions that run on the workers,
so the pipeline can be launched from an environment without them: they must
be installed in the SDK container, which is what prebuilder's image provides.
"""

import apache_beam as beam


class Slugify(beam.DoFn):
    """Turns each title into (title, slug)."""

    def process(self, title):
        from slugify import slugify

        yield title, slugify(title)


def render_table(rows):
    """Renders all (title, slug) pairs as one plain-text table."""
    from tabulate import tabulate

    return tabulate(sorted(rows), headers=["title", "slug"])
