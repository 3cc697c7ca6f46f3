# prebuilder's setup script (see src/build/setup.rs); its text is part of
# every layer's cache key (src/plan/keys.rs).
set -u
no_index=$1; shift
if [ "$no_index" = 1 ]; then PIP_NO_INDEX=1; export PIP_NO_INDEX; fi
# Reproducible installs (see image::reproducible): pip compiles hash-based
# .pyc when SOURCE_DATE_EPOCH is set, and wheel builds of sdists take their
# dates from it. Exported here, so it never reaches the image's config.
SOURCE_DATE_EPOCH=$PREBUILDER_EPOCH; export SOURCE_DATE_EPOCH
# The layer snapshot (see engine::layer): every path but mounts, the snapshot
# and the staged artifacts, NUL-separated, before and after the setup. Only
# with GNU find/tar/sort/comm; without them there is no snapshot and the
# engine commits the container instead. No snapshot either when
# PREBUILDER_SNAPSHOT is empty (the container is committed).
# PREBUILDER_ROOT is empty (the container's /) except in unit tests.
root=$PREBUILDER_ROOT
snap=$root$PREBUILDER_SNAPSHOT
# Where the snapshot's bytes go: with PREBUILDER_SPOOL (a directory on the
# setup container's volume, in Beam builds) the snapshot directory is a
# symbolic link to it, so the multi-GB layer.tar is written, and read back
# by prebuilder at the same path, outside the container's storage driver
# (fuse-overlayfs passes every byte through FUSE). The walk skips both.
make_snap() {
  if [ -n "${PREBUILDER_SPOOL:-}" ]; then
    mkdir -p "$root$PREBUILDER_SPOOL" && ln -s "$root$PREBUILDER_SPOOL" "$snap"
  else
    mkdir -p "$snap"
  fi
}
# The distributions Python sees (for the record, see crate::record), one JSON
# line each: `# before [name, version]` (before the setup), or `# dist {...}`
# with the licence metadata and pip's direct URL and wheel tags (after it).
# No single quote in it: it is one shell word. It writes nothing.
lister='
import json, sys
try:
    from importlib import metadata
except ImportError:
    sys.exit(0)
full = sys.argv[1] == "dist"
seen = set()
for d in metadata.distributions():
    m = d.metadata
    name = m.get("Name")
    if not name or name.lower() in seen:
        continue
    seen.add(name.lower())
    if not full:
        print("# before " + json.dumps([name, m.get("Version")]))
        continue
    try:
        url = json.loads(d.read_text("direct_url.json") or "{}").get("url")
    except Exception:
        url = None
    tags = [l[4:].strip() for l in (d.read_text("WHEEL") or "").splitlines() if l.startswith("Tag:")]
    print("# dist " + json.dumps({
        "name": name, "version": m.get("Version"),
        "license_expression": m.get("License-Expression"), "license": m.get("License"),
        "classifiers": [c for c in (m.get_all("Classifier") or []) if c.startswith("License ::")],
        "direct_url": url, "tags": tags}, sort_keys=True))
'
before=$(PYTHONDONTWRITEBYTECODE=1 "$PREBUILDER_PYTHON" -c "$lister" before 2>/dev/null)
# PREBUILDER_BASE_BEAM: a staged SDK wheel this platform's boot would not
# install was left out (see build::platform::sdk), so the base's own
# apache-beam must be that version (the launch's): checked from the listing
# above, before the boot runs; refused otherwise, naming both versions.
if [ -n "${PREBUILDER_BASE_BEAM:-}" ]; then
  found=$(printf '%s\n' "$before" | sed -n 's/^# before \["[Aa]pache[-_.][Bb]eam", "\([^"]*\)"\]$/\1/p' | head -n 1)
  if [ "$found" != "$PREBUILDER_BASE_BEAM" ]; then
    echo "prebuilder: refused: ${PREBUILDER_PLATFORM:-this platform}: the base's apache-beam is ${found:-missing}, not $PREBUILDER_BASE_BEAM, the staged SDK's version (Beam's boot would not install the staged SDK wheel here)" >&2
    exit 96
  fi
  echo "prebuilder: ${PREBUILDER_PLATFORM:-this platform}: the base's own apache-beam $found is used (Beam's boot would not install the staged SDK wheel here)"
fi
paths() {
  (cd "${root:-/}" && find . -xdev \( -path ./proc -o -path ./sys -o -path ./dev -o -path ./etc/hosts \
    -o -path ./etc/hostname -o -path ./etc/resolv.conf -o -path ./.dockerenv \
    -o -path ".$PREBUILDER_SNAPSHOT" -o -path ".$PREBUILDER_ARTIFACTS" \) -prune -o "$@")
}
# tar of the listed paths (NUL-separated list in $2) into $1. GNU tar exits 1
# when a file's status changed while it was read; nothing writes by then, but
# under emulation (qemu) or fuse-overlayfs's attribute cache a directory's
# ctime was seen to read differently twice ("file changed as we read it"), so
# that status gets one more try, and a second failure means no snapshot.
snap_tar() {
  tar --null --no-recursion --numeric-owner -C "${root:-/}" -cf "$1" -T "$2" && return 0
  [ $? -eq 1 ] && echo "prebuilder: the snapshot changed while it was read; reading it again" >&2 &&
    tar --null --no-recursion --numeric-owner -C "${root:-/}" -cf "$1" -T "$2"
}
# The snapshot in parts (PREBUILDER_PARTS, see build::layer): once the
# lists above are made, prebuilder reads them, plans the split and runs one
# `tar` per part in this container, reading its output as it is written
# (no copy of the snapshot on disk), leaving $snap/parts/NNN.start before
# each, then $snap/parts/done. Ten minutes without a new file there
# (prebuilder gone; PREBUILDER_PARTS_TICKS, in 50 ms ticks, for tests) is
# no snapshot; however long the whole takes.
snap_parts() {
  echo "prebuilder: snapshot listed"
  waited=0
  seen=0
  ticks=${PREBUILDER_PARTS_TICKS:-12000}
  while [ ! -e "$snap/parts/done" ]; do
    set -- "$snap"/parts/*
    [ -e "$1" ] || set --
    [ "$#" != "$seen" ] && { seen=$#; waited=0; }
    waited=$((waited + 1))
    [ "$waited" -gt "$ticks" ] && { echo "prebuilder: the snapshot's parts were not read" >&2; return 1; }
    sleep 0.05
  done
}
# Early layers (with the parts, PREBUILDER_PARTS; see build::early): while
# the setup step runs, each distribution pip has finished installing (pip
# writes its RECORD last, once with INSTALLER listed) is announced once as
# `prebuilder: installed <its RECORD>`, and prebuilder reads its files
# meanwhile; once more when the step ends, so none is missed. What was
# installed before is not announced.
installed_records() { for s in $sites; do printf '%s\n' "$s"/*.dist-info/RECORD; done | LC_ALL=C sort; }
announce_installed() {
  installed_records | LC_ALL=C comm -23 - "$snap/installed" | while IFS= read -r r; do
    [ -f "$r" ] && grep -q '[.]dist-info/INSTALLER,' "$r" || continue
    echo "prebuilder: installed $r"
    printf '%s\n' "$r" >>"$snap/installed"
  done
  LC_ALL=C sort -o "$snap/installed" "$snap/installed"
}
snapshot=0
if [ -n "$PREBUILDER_SNAPSHOT" ] && find / -maxdepth 0 -printf '' 2>/dev/null && tar --version 2>/dev/null | grep -q GNU &&
   comm --version 2>/dev/null | grep -q GNU && make_snap && : >"$snap/marker" &&
   paths -print0 | LC_ALL=C sort -z >"$snap/before"; then
  snapshot=1
fi
# The setup step: the boot in setup-only mode, unless the mode defined
# `run_setup` before this script (PyFlink: src/build/flink-setup.sh).
command -v run_setup >/dev/null 2>&1 ||
  run_setup() { "$PREBUILDER_BOOT" --setup_only --artifacts "$PREBUILDER_MANIFEST"; }
watcher=
if [ "$snapshot" = 1 ] && [ -n "${PREBUILDER_PARTS:-}" ] &&
   sites=$(PYTHONDONTWRITEBYTECODE=1 "$PREBUILDER_PYTHON" -c 'import sys
print("\n".join(p for p in sys.path if p.endswith("-packages")))' 2>/dev/null) &&
   installed_records >"$snap/installed"; then
  while sleep 0.25; do announce_installed; done &
  watcher=$!
fi
run_setup
status=$?
if [ -n "$watcher" ]; then
  kill "$watcher" 2>/dev/null; wait "$watcher" 2>/dev/null
  announce_installed
fi
if [ "$status" -ne 0 ]; then
  echo "prebuilder: $PREBUILDER_STEP exited with status $status" >&2
  exit "$status"
fi
# The record: Python's version, pip's freeze and the distributions before and
# after the setup, which prebuilder turns into the JSON record. Best effort: no freeze, no record (an empty freeze with a
# snapshot). It runs while the staged files are removed and the snapshot
# walks the filesystem (pip takes seconds to start): with a snapshot, the
# freeze and pip's temporary files go into the snapshot directory, which the
# walk never enters, and nothing else is written (no bytecode), so the walk
# cannot list a file that vanishes before tar reads it (such a file made tar
# fail, the snapshot was dropped and the commit that replaced it refused).
# Without a snapshot the freeze goes to the record's path, as the commit takes it.
# PREBUILDER_PYTHON: the Python whose packages are recorded (PyFlink: the workers').
if [ "$snapshot" = 1 ]; then freeze=$snap/freeze; else freeze=$PREBUILDER_RECORD; fi
{ { PYTHONDONTWRITEBYTECODE=1; export PYTHONDONTWRITEBYTECODE
    if [ "$snapshot" = 1 ]; then TMPDIR=$snap; PIP_NO_CACHE_DIR=1; export TMPDIR PIP_NO_CACHE_DIR; fi
    "$PREBUILDER_PYTHON" -c 'import sys; print("# python %d.%d.%d" % sys.version_info[:3])' &&
    "$PREBUILDER_PYTHON" -m pip freeze --all --disable-pip-version-check &&
    { printf '%s\n' "$before"; "$PREBUILDER_PYTHON" -c "$lister" dist || :; }; } >"$freeze" 2>/dev/null ||
    if [ "$snapshot" = 1 ]; then : >"$freeze"; else rm -f "$freeze"; fi; } &
record=$!
cd "$PREBUILDER_ARTIFACTS" || exit 97
rm -rf -- "$PREBUILDER_MANIFEST" "$@" || exit 98
if [ "$snapshot" = 1 ]; then
  # One walk: every path to `after`; those whose ctime is newer than the
  # marker (ctime cannot be set back, unlike mtime) to `changed` as well.
  paths \( -cnewer "$snap/marker" -fprint0 "$snap/changed" -o -true \) -print0 |
    LC_ALL=C sort -z >"$snap/after" || snapshot=0
fi
wait "$record"
if [ "$snapshot" = 1 ]; then
  # Deleted = listed before, not after. Best effort: no tar, no snapshot.
  # The changed paths and every directory above them, in byte order: the
  # entry order must not follow the storage driver's walk, and a directory's
  # ctime after a copy-up is not reliable on every driver (fuse-overlayfs
  # caches attributes), so ancestors are in whether their ctime moved or not.
  { LC_ALL=C comm -z -23 "$snap/before" "$snap/after" >"$snap/deleted" &&
    LC_ALL=C sort -zu "$snap/changed" >"$snap/all" && cp "$snap/all" "$snap/level" &&
    while [ -s "$snap/level" ]; do
      xargs -0 -r dirname -z -- <"$snap/level" | LC_ALL=C sort -zu >"$snap/parents" &&
        LC_ALL=C comm -z -13 "$snap/all" "$snap/parents" >"$snap/level" &&
        LC_ALL=C sort -zu -o "$snap/all" "$snap/all" "$snap/level" || { rm -f "$snap/all"; break; }
    done &&
    # The RECORDs among them, on their own (small): prebuilder plans the
    # per-distribution split from them before it reads the snapshot, so it
    # reads that once, as a stream (src/build/layer.rs). No match is no
    # RECORD (an empty tar), not a failure.
    { LC_ALL=C grep -z '\.dist-info/RECORD$' "$snap/all" || :; } |
      tar --null --no-recursion --numeric-owner -C "${root:-/}" -cf "$snap/records.tar" -T - &&
    if [ -n "${PREBUILDER_PARTS:-}" ]; then snap_parts; else snap_tar "$snap/layer.tar" "$snap/all"; fi; } ||
    rm -f "$snap/layer.tar"
fi
exit 0
