"""The plugin reads the binary's JSON, not its English.

The real binary runs behind a stand-in that rewrites every English string it
prints (each line's `text`, the error object's `error` and `hint`) into other
words, and starts each of them with `error:`, which the plugin's old reading
of stderr (everything from the first `error:` line on is the error) would
have taken for a failure. The plugin must reach the same outcome: the same
reference from a build, the same status and retryability from a failure,
with the reworded messages passed on as they are.
"""

import json
import sys
import textwrap

import pytest

from prebuilder_beam import PrebuilderError, _binary

from support import TEST_REPOSITORY, build_image

REWORDED = "error: said otherwise: "

_REWORDING_BINARY = """\
import json, os, subprocess, sys

def reword(text):
    return %(prefix)r + " ".join(reversed(text.split(" ")))

real = subprocess.Popen([%(real)r] + sys.argv[1:], stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True)
for line in real.stderr:
    record = json.loads(line)
    record["text"] = reword(record["text"])
    if record["event"] == "error":
        record["error"] = reword(record["error"])
        record["hint"] = record["hint"] and reword(record["hint"])
    print(json.dumps(record), file=sys.stderr, flush=True)
out = real.stdout.read()
status = real.wait()
if status != 0 and out.strip():
    failure = json.loads(out)
    failure["error"] = reword(failure["error"])
    failure["hint"] = failure["hint"] and reword(failure["hint"])
    out = json.dumps(failure) + "\\n"
sys.stdout.write(out)
sys.exit(status)
"""


@pytest.fixture
def reworded_binary(monkeypatch, tmp_path):
    """PREBUILDER_BIN: the real binary, its English rewritten."""
    path = tmp_path / "reworded-prebuilder"
    path.write_text("#!%s\n" % sys.executable + _REWORDING_BINARY % {
        "prefix": REWORDED, "real": _binary.find_binary()})
    path.chmod(0o755)
    monkeypatch.setenv("PREBUILDER_BIN", str(path))
    return path


def test_a_build_is_read_from_json_whatever_its_words(
        reworded_binary, base_image, installed_requirement, plugin_logs):
    reference = build_image("--sdk_container_image", base_image, *installed_requirement)
    assert reference.startswith(TEST_REPOSITORY + ":"), reference
    # The progress reached the log in the binary's (new) words...
    progress = [line for line in plugin_logs.lines if line.startswith("prebuilder: " + REWORDED)]
    assert progress, plugin_logs.text
    # ...and the outcome the plugin reports comes from the JSON report.
    assert "prebuilder: %s " % reference in plugin_logs.text
    assert ("%s built" % reference in plugin_logs.text
            or "%s reused (nothing built)" % reference in plugin_logs.text), plugin_logs.text


def test_a_failure_is_read_from_json_whatever_its_words(
        reworded_binary, monkeypatch, base_image, installed_requirement):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/prebuilder-test.sock")
    with pytest.raises(PrebuilderError) as raised:
        build_image("--sdk_container_image", base_image, *installed_requirement)
    error = raised.value
    assert error.status == 3
    assert error.retryable
    # The reworded error and hint, passed on untouched, from the error object.
    assert error.error.startswith("error: " + REWORDED), error.error
    assert error.hint.startswith(REWORDED), error.hint
    assert "\nhint: " + error.hint in error.error
    assert error.causes, "the error object lists its causes"
    assert str(error).startswith(
        "prebuilder exited with status 3 (the engine or a registry is unavailable")


def test_stderr_lines_that_are_not_json_are_shown_not_read(monkeypatch, tmp_path, plugin_logs):
    """Anything else on the binary's stderr (an ssh client's message) is shown
    as it came; an `error:` in it is not the binary's error."""
    binary = tmp_path / "fake-prebuilder"
    error = {"error": "the base is absent", "hint": "pull it", "exit_code": 2,
             "causes": []}
    binary.write_text("#!%s\n" % sys.executable + textwrap.dedent("""\
        import json, sys
        print("error: a line from ssh, not prebuilder's error", file=sys.stderr)
        print(json.dumps({"v": 1, "event": "setup_output", "layer": "dependencies",
                          "line": "error: pip said so", "text": "x"}), file=sys.stderr)
        print(%r)
        sys.exit(2)
        """ % json.dumps(error)))
    binary.chmod(0o755)
    with pytest.raises(PrebuilderError) as raised:
        _binary.run_build([str(binary), "build"])
    assert raised.value.status == 2
    assert raised.value.error == "error: the base is absent\nhint: pull it"
    assert raised.value.hint == "pull it"
    assert "error: a line from ssh, not prebuilder's error" in plugin_logs.text
    assert "  dependencies | error: pip said so" in plugin_logs.text


def test_the_outcome_says_what_happened_and_where_the_image_is():
    report = {"sdk_container_image": "r.example/p@sha256:ab", "cached": True,
              "digest": "sha256:ab", "seconds": 0.4,
              "layers": [{"name": "dependencies", "cache": "registry"},
                         {"name": "application", "cache": "registry"}]}
    assert _binary.describe_outcome(report) == (
        "r.example/p@sha256:ab found in the registry (nothing built) in 0.4 s "
        "(dependencies from the registry, application from the registry; "
        "pushed, digest sha256:ab)")
    report.update(cached=False, digest=None, sdk_container_image="p:k",
                  layers=[{"name": "dependencies", "cache": "hit"},
                          {"name": "application", "cache": "miss"}])
    assert _binary.describe_outcome(report) == (
        "p:k built in 0.4 s (dependencies reused, application built; "
        "on this machine's engine only)")
