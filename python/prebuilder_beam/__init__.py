"""Apache Beam engine plugin for prebuilder: `--prebuild_sdk_container_engine=prebuilder`.

    import prebuilder_beam  # registers the `prebuilder` engine with Beam

Beam then stages the pipeline's dependencies as usual and the `prebuilder`
binary ($PREBUILDER_BIN, else PATH) bakes them into an SDK container image,
reusing whatever did not change since the last launch. See README.md.
"""

from prebuilder_beam._binary import PrebuilderError
from prebuilder_beam.builder import BUILDER_KEY
from prebuilder_beam.builder import PrebuilderSdkContainerImageBuilder

__version__ = "0.1.0"

__all__ = [
    "BUILDER_KEY",
    "PrebuilderError",
    "PrebuilderSdkContainerImageBuilder",
]
