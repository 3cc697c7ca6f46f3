"""Runs the prebuilder binary for the Beam plugin.

The binary does the real work (engine, cache keys, layers, push); this module
only finds it, builds its command line, streams its progress into `logging`
while it runs, and turns its JSON report or its error into Python. It reads
only the binary's machine channel (`--progress json --format json`: one JSON
object per stderr line, the report or the error object on stdout), never its
English, whose wording is free to change. Keeping it free of Beam imports lets
it be tested, and read, on its own.
"""

import collections
import json
import logging
import os
import posixpath
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading

_LOGGER = logging.getLogger(__name__)

BIN_ENV = "PREBUILDER_BIN"
ARGS_ENV = "PREBUILDER_ARGS"
REPOSITORY_ENV = "PREBUILDER_REPOSITORY"

# Beam's own builders name their images `<push url>/beam_python_prebuilt_sdk`.
DEFAULT_REPOSITORY = "beam_python_prebuilt_sdk"

# Flags the plugin sets itself from Beam's options; PREBUILDER_ARGS may not
# repeat them (the binary would reject the second one with a usage error that
# does not say where it came from).
_OWN_FLAGS = ("--base", "--context", "--repository", "--push", "--format",
              "--progress", "--origins")

# The version of the binary's JSON lines this module reads (the `v` of each
# line; the project README's "Machine output" lists the events).
PROGRESS_VERSION = 1

# A `log` line's level, as Python logging's.
_LEVELS = {
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": logging.DEBUG,
}

# The binary's exit statuses (`prebuilder build --help`).
EXIT_SETUP_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130

_EXIT_MEANINGS = {
    EXIT_SETUP_FAILED: "the setup inside the container failed",
    EXIT_USAGE: "bad input or usage, or a refusal: fix it, a retry will not help",
    EXIT_UNAVAILABLE: "the engine or a registry is unavailable: worth a retry",
    EXIT_INTERRUPTED: "interrupted",
    143: "terminated by SIGTERM",
    129: "hung up by SIGHUP",
}

# How long an interrupted binary gets to remove its setup container.
_STOP_GRACE_SECONDS = 30


class PrebuilderError(RuntimeError):
    """The prebuilder binary is missing, misconfigured, or failed.

    The message carries the binary's error and hint (from its JSON error
    object) and its exit status. Attributes: `status` (exit status, or None
    when the binary never ran), `command` (argv list, or None), `error` (the
    binary's error as `error: ...` and `hint: ...` lines, or None), and from
    its error object `hint` (or None) and `causes` (a list, possibly empty).

    Exit statuses: 1 the setup inside the container failed (fix the
    failing package); 2 bad input or usage, or a refusal (fix it; a retry will
    not help); 3 the engine or a registry is unavailable (connection refused
    or reset, timeout, HTTP 5xx: worth a retry, see `retryable`); 130
    interrupted, 143 terminated, 129 hung up; negative when killed by that
    signal.
    """

    def __init__(self, message, status=None, command=None, error=None,
                 hint=None, causes=()):
        super().__init__(message)
        self.status = status
        self.command = command
        self.error = error
        self.hint = hint
        self.causes = list(causes)

    @property
    def retryable(self):
        """True when the binary said the engine or a registry was unavailable."""
        return self.status == EXIT_UNAVAILABLE


def find_binary(environ=None):
    """Returns the binary's path.

    $PREBUILDER_BIN when set (an override: a development build, say); else the
    `prebuilder` the wheel installed next to this interpreter's scripts (the
    venv's bin/, or the user scheme's for `pip install --user`), whatever
    PATH says; else `prebuilder` on PATH.
    """
    environ = os.environ if environ is None else environ
    configured = environ.get(BIN_ENV)
    if configured:
        path = os.path.abspath(os.path.expanduser(configured))
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise PrebuilderError(
                "%s=%s is not an executable file\n"
                "hint: point %s at the prebuilder binary (e.g. "
                "target/release/prebuilder), or unset it to use the one "
                "installed with prebuilder-beam" % (BIN_ENV, configured, BIN_ENV))
        return path
    for scripts in _scripts_dirs():
        path = os.path.join(scripts, "prebuilder")
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    found = shutil.which("prebuilder", path=environ.get("PATH"))
    if found:
        return found
    raise PrebuilderError(
        "the prebuilder binary was not found: %s is not set, it is not "
        "installed next to this interpreter (%s) and there is no "
        "`prebuilder` on PATH\n"
        "hint: `pip install prebuilder-beam` installs it with this package; "
        "or build it (`cargo build --release`) and set %s to "
        "target/release/prebuilder" % (BIN_ENV, sys.executable, BIN_ENV))


def _scripts_dirs():
    """Where pip puts the scripts of packages installed for this interpreter."""
    dirs = []
    schemes = [None]
    user_scheme = "%s_user" % os.name
    if user_scheme in sysconfig.get_scheme_names():
        schemes.append(user_scheme)
    for scheme in schemes:
        try:
            path = (sysconfig.get_path("scripts") if scheme is None
                    else sysconfig.get_path("scripts", scheme))
        except KeyError:
            continue
        if path and path not in dirs:
            dirs.append(path)
    return dirs


def extra_args(environ=None):
    """Returns the flags in $PREBUILDER_ARGS (shell-quoted), e.g. --network none."""
    environ = os.environ if environ is None else environ
    text = environ.get(ARGS_ENV, "")
    try:
        args = shlex.split(text)
    except ValueError as e:
        raise PrebuilderError(
            "%s=%r cannot be parsed: %s\n"
            "hint: quote it as you would on a shell command line" %
            (ARGS_ENV, text, e))
    for arg in args:
        if arg.split("=", 1)[0] in _OWN_FLAGS:
            raise PrebuilderError(
                "%s must not set %s: the plugin sets it from Beam's options\n"
                "hint: use --sdk_container_image for the base, "
                "--docker_registry_push_url to push, and %s to name the "
                "repository" % (ARGS_ENV, arg, REPOSITORY_ENV))
    return args


def repository_for(push_url, environ=None):
    """Where the result's tags live, named as Beam's own builders name it.

    `<push url>/beam_python_prebuilt_sdk`, or `beam_python_prebuilt_sdk` on
    the local engine; $PREBUILDER_REPOSITORY replaces the last part.
    """
    environ = os.environ if environ is None else environ
    name = environ.get(REPOSITORY_ENV) or DEFAULT_REPOSITORY
    return posixpath.join(push_url or "", name)


def build_command(binary, base, context, repository, push, extra=(),
                  origins=None):
    """The argv of one `prebuilder build` of a Beam staging context.

    `origins`: a JSON file naming the file each staged copy was made from
    (see `write_origins`).
    """
    command = [
        binary, "build",
        "--base", base,
        "--context", context,
        "--repository", repository,
        "--format", "json",
        "--progress", "json",
    ]
    if origins:
        command.extend(["--origins", origins])
    if push:
        command.append("--push")
    command.extend(extra)
    return command


def write_origins(origins, path):
    """Writes staged name -> original file as JSON for `--origins`.

    Only originals that still exist are named (Beam deletes the files it
    generated, such as the pipeline's sdist, once they are copied); the
    binary reads each copy whose original is gone or differs in size.
    Returns `path`, or None when no original is left to name.
    """
    kept = {name: source for name, source in sorted(origins.items())
            if os.path.isfile(source)}
    if not kept:
        return None
    with open(path, "w", encoding="utf-8") as f:
        json.dump(kept, f)
    return path


def direct_args(extra, push):
    """`extra` plus what lets the binary build with no engine: with a push
    URL, `--builder auto` (direct mode when no engine answers; PREBUILDER_ARGS
    may choose another builder), and always `--launch-python` this
    interpreter, which builds the pipeline's sdist in direct mode."""
    args = list(extra)
    if push and not any(a == "--builder" or a.startswith("--builder=") for a in args):
        args += ["--builder", "auto"]
    if not any(a == "--launch-python" or a.startswith("--launch-python=") for a in args):
        args += ["--launch-python", sys.executable]
    return args


def run_build(command, environ=None):
    """Runs `prebuilder build ... --format json --progress json`; returns its report.

    Each JSON line the binary writes on stderr (progress, the setup's output,
    log records) is logged as it arrives, in the binary's own words (its
    `text`); stdout carries the JSON report, or the error object of a
    failure. Raises PrebuilderError when it cannot start, exits non-zero, or
    prints no report.
    """
    env = dict(os.environ if environ is None else environ)
    try:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=env, text=True, encoding="utf-8",
            errors="replace")
    except OSError as e:
        raise PrebuilderError(
            "cannot run %s: %s\nhint: check %s or PATH" %
            (command[0], e, BIN_ENV), command=command)
    # The report arrives at the end, but read stdout concurrently anyway so a
    # full pipe can never stall the binary while we wait on stderr.
    stdout = []
    reader = threading.Thread(
        target=lambda: stdout.append(process.stdout.read()),
        name="prebuilder-stdout", daemon=True)
    stream = _Stream()
    # From here on a KeyboardInterrupt (or any exception, a logging handler's
    # included) must stop the binary: everything after Popen is in the try.
    try:
        reader.start()
        _LOGGER.info("running prebuilder (pid %d): %s", process.pid,
                     shlex.join(command))
        for raw in process.stderr:
            stream.feed(raw.rstrip("\n"))
        status = process.wait()
    except BaseException:
        _stop(process)
        raise
    finally:
        if reader.ident is not None:  # started
            reader.join()
        process.stderr.close()
        process.stdout.close()

    text = "".join(stdout).strip()
    if status != 0:
        # The error object on stdout (--format json); the `error` line of
        # stderr when stdout has none (a binary that died writing it).
        failure = _error_object(text) or stream.error
        raise PrebuilderError(
            _failure_message(status, command, failure, list(stream.tail)),
            status=status, command=command,
            error=_error_text(failure) if failure else None,
            hint=failure.get("hint") if failure else None,
            causes=failure.get("causes") or () if failure else ())

    try:
        report = json.loads(text)
        reference = report["sdk_container_image"]
    except (ValueError, TypeError, KeyError):
        raise PrebuilderError(
            "prebuilder exited with status 0 but printed no JSON report with "
            "`sdk_container_image` on stdout (got %r)\ncommand: %s" %
            (text[:200], shlex.join(command)), status=status, command=command)
    if not isinstance(reference, str) or not reference:
        raise PrebuilderError(
            "prebuilder's report has no usable sdk_container_image: %r\n"
            "command: %s" % (reference, shlex.join(command)),
            status=status, command=command)
    return report


class _Stream:
    """The binary's stderr, one line at a time: logged for people, its error kept."""

    def __init__(self):
        self.tail = collections.deque(maxlen=20)
        self.error = None

    def feed(self, line):
        record = _record(line)
        if record is None:
            # Not one of the binary's JSON lines (a crash, an ssh client's
            # message on the same stderr): shown as it came.
            _LOGGER.info("%s", line)
            self.tail.append(line)
            return
        event = record["event"]
        shown = _describe(record)
        if event == "error":
            # Raised with the exception; logged for the record only.
            self.error = record
            _LOGGER.debug("%s", shown)
            return
        level = logging.INFO
        if event == "log":
            level = _LEVELS.get(record.get("level"), logging.INFO)
        _LOGGER.log(level, "%s", shown)
        self.tail.append(shown)


def _record(line):
    """The JSON object on one stderr line, or None when it is not one."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("event"), str):
        return None
    return record


def _describe(record):
    """What a person reads for one JSON line: the binary's own words (`text`),
    laid out as its plain output lays them out."""
    text = record.get("text")
    text = text if isinstance(text, str) else json.dumps(record)
    event = record["event"]
    if event == "setup_output":
        return "  %12s | %s" % (record.get("layer", ""), record.get("line", ""))
    if event == "log":
        return "prebuilder: %s: %s" % (record.get("level", "log"), text)
    return "prebuilder: %s" % text


def _error_object(text):
    """The error object (`{"error", "hint", "exit_code", "causes"}`) on stdout."""
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if isinstance(obj, dict) and isinstance(obj.get("error"), str):
        return obj
    return None


def _error_text(failure):
    """`error: ...` (with the causes it does not quote) and `hint: ...`."""
    message = failure["error"]
    for cause in failure.get("causes") or ():
        if isinstance(cause, str) and cause not in message:
            message += ": " + cause
    lines = ["error: " + message]
    if failure.get("hint"):
        lines.append("hint: %s" % failure["hint"])
    return "\n".join(lines)


def describe_outcome(report):
    """What a build did, from its report: built, reused or found in the
    registry; each layer's outcome; pushed or on this engine only."""
    layers = report.get("layers") or []
    caches = [layer.get("cache") for layer in layers]
    if not report.get("cached"):
        what = "built"
    elif "registry" in caches:
        what = "found in the registry (nothing built)"
    else:
        what = "reused (nothing built)"
    words = {"miss": "built", "hit": "reused", "registry": "from the registry"}
    per_layer = ", ".join(
        "%s %s" % (layer.get("name"), words.get(layer.get("cache"), layer.get("cache")))
        for layer in layers)
    where = ("pushed, digest %s" % report["digest"] if report.get("digest")
             else "on this machine's engine only")
    by = (" by the direct builder (no container)"
          if report.get("builder") == "direct" else "")
    return "%s %s%s in %.1f s (%s; %s)" % (
        report.get("sdk_container_image"), what, by,
        report.get("seconds") or 0.0, per_layer or "no layers", where)


def _failure_message(status, command, failure, tail):
    if status < 0:
        try:
            what = "was killed by %s" % signal.Signals(-status).name
        except ValueError:
            what = "was killed by signal %d" % -status
    else:
        what = "exited with status %d" % status
        if status in _EXIT_MEANINGS:
            what += " (%s)" % _EXIT_MEANINGS[status]
    lines = ["prebuilder %s" % what]
    if failure:
        lines.append(_error_text(failure))
    elif tail:
        lines.append("last lines of its output:")
        lines.extend("  | " + line for line in tail)
    lines.append("command: %s" % shlex.join(command))
    return "\n".join(lines)


def _stop(process):
    """Interrupts the binary as Ctrl-C would, so it removes its container."""
    if process.poll() is not None:
        return
    try:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=_STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
