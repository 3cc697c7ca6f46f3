"""The demo pipeline's own package, staged by Beam as workflow.tar.gz.

There is deliberately no pyproject.toml: without one, pip installs the sdist
with the setuptools already in the image instead of fetching a build backend
from an index, so it installs inside a container without network.
"""

import setuptools

setuptools.setup(
    name="prebuilder-demo",
    version="0.1.0",
    description="A tiny Apache Beam pipeline for prebuilder's demo and tests",
    license="Apache-2.0",
    packages=["demo_pipeline"],
    python_requires=">=3.9",
    # Keep in step with ../requirements.txt (which also pins text-unidecode,
    # python-slugify's dependency).
    install_requires=[
        "python-slugify==8.0.4",
        "tabulate==0.9.0",
    ],
)
