# prebuilder's environment probe: what a Beam worker needs from a Python
# environment, printed as one JSON line after the marker "prebuilder-probe: ".
#
#   python -c PROBE launch                      on the host that launches the pipeline
#   python -c PROBE image BOOT PYTHON PYTHON3   in the image (see probe.sh)
#
# It reads installed-package metadata and source text only and never imports
# apache_beam (that takes seconds and logs warnings). Python 2 syntax still
# parses, so an image whose `python` is Python 2 is reported, not a crash.
import json
import os
import platform
import re
import sys


def dist_version(name):
    try:
        from importlib import metadata
    except ImportError:
        try:
            import pkg_resources
            return pkg_resources.get_distribution(name).version
        except Exception:
            return None
    try:
        return metadata.version(name)
    except Exception:
        return None


def find(module):
    try:
        import importlib.util
        return importlib.util.find_spec(module)
    except Exception:
        return None


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except Exception:
        return ""


def beam_sources():
    """Beam's default pickler and its vendored cloudpickle, read from source."""
    spec = find("apache_beam")
    locations = getattr(spec, "submodule_search_locations", None) or []
    if not locations:
        return None, None
    internal = os.path.join(list(locations)[0], "internal")
    m = re.search(r"""__version__\s*=\s*['"]([^'"]+)""",
                  read(os.path.join(internal, "cloudpickle", "__init__.py")))
    vendored = m.group(1) if m else None
    m = re.search(r"^DEFAULT_PICKLE_LIB\s*=\s*(\S+)",
                  read(os.path.join(internal, "pickler.py")), re.M)
    lib = None
    if m:
        lib = m.group(1).strip("'\"")
        lib = {"USE_CLOUDPICKLE": "cloudpickle", "USE_DILL": "dill",
               "USE_DILL_UNSAFE": "dill"}.get(lib, lib)
    return vendored, lib


def os_release():
    for line in read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return None


def main(argv):
    mode = argv[0] if argv else "launch"
    vendored, lib = beam_sources()
    out = {
        "mode": mode,
        "executable": sys.executable,
        "version": "%d.%d.%d" % tuple(sys.version_info[:3]),
        "apache_beam": dist_version("apache-beam"),
        "pip": (dist_version("pip") or "unknown") if find("pip") else None,
        "venv": bool(find("venv") and find("ensurepip")),
        "protobuf": dist_version("protobuf"),
        "dill": dist_version("dill"),
        "cloudpickle": dist_version("cloudpickle"),
        "cloudpickle_vendored": vendored,
        "pickle_library": lib,
        "machine": platform.machine(),
    }
    if mode == "image":
        boot, python, python3 = (list(argv[1:4]) + ["", "", ""])[:3]
        out["boot"] = boot
        out["python"] = python or None
        out["python3"] = python3 or None
        out["os"] = os_release()
    sys.stdout.write("prebuilder-probe: " + json.dumps(out) + "\n")


main(sys.argv[1:])
