"""Runs the prebuilder binary for the Beam plugin.

The binary does the real work (engine, cache keys, layers, push); this module
only finds it, builds its command line, streams its progress into `logging`
while it runs, and turns its JSON report or its error into Python. Keeping it
free of Beam imports lets it be tested, and read, on its own.
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
              "--origins")

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

    The message carries the binary's own `error:` and `hint:` lines and its
    exit status. Attributes: `status` (exit status, or None when the binary
    never ran), `command` (argv list, or None) and `error` (the binary's error
    text, or None).

    Exit statuses: 1 the setup inside the container failed (fix the
    failing package); 2 bad input or usage, or a refusal (fix it; a retry will
    not help); 3 the engine or a registry is unavailable (connection refused
    or reset, timeout, HTTP 5xx: worth a retry, see `retryable`); 130
    interrupted, 143 terminated, 129 hung up; negative when killed by that
    signal.
    """

    def __init__(self, message, status=None, command=None, error=None):
        super().__init__(message)
        self.status = status
        self.command = command
        self.error = error

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


def run_build(command, environ=None):
    """Runs `prebuilder build ... --format json` and returns its report.

    The binary's stderr (progress, the setup's output, errors) is logged line
    by line as it arrives; stdout carries only the JSON report. Raises
    PrebuilderError when it cannot start, exits non-zero, or prints no report.
    """
    env = dict(os.environ if environ is None else environ)
    # Plain lines in the user's log, whatever the binary thinks of the pipe.
    env["NO_COLOR"] = "1"
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
    tail = collections.deque(maxlen=20)
    error_lines = []
    # From here on a KeyboardInterrupt (or any exception, a logging handler's
    # included) must stop the binary: everything after Popen is in the try.
    try:
        reader.start()
        _LOGGER.info("running prebuilder (pid %d): %s", process.pid,
                     shlex.join(command))
        for raw in process.stderr:
            line = raw.rstrip("\n")
            _LOGGER.info("%s", line)
            tail.append(line)
            # The binary ends a failure with `error: ...`, detail lines and
            # `hint: ...`; everything from the first `error:` on is the cause.
            if error_lines or line.startswith("error:"):
                error_lines.append(line)
        status = process.wait()
    except BaseException:
        _stop(process)
        raise
    finally:
        if reader.ident is not None:  # started
            reader.join()
        process.stderr.close()
        process.stdout.close()

    if status != 0:
        error = "\n".join(error_lines) if error_lines else None
        raise PrebuilderError(
            _failure_message(status, command, error, list(tail)),
            status=status, command=command, error=error)

    text = "".join(stdout).strip()
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


def _failure_message(status, command, error, tail):
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
    if error:
        lines.append(error)
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
