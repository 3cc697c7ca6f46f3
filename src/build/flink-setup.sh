# PyFlink setup of one layer (prebuilder). It runs as the setup step of the
# engine's setup script (see src/engine/setup.rs), in a subshell, with the
# layer's staged files under $PREBUILDER_ARTIFACTS:
#   archives/NAME/FILE   extracted into $FLINK_ARCHIVES/NAME (checked on the
#                        host before the build; checked again here)
#   requirements.txt     installed with $FLINK_PYTHON -m pip; with a cache dir
#   cache/*              (FLINK_CACHE=1) --no-index --find-links cache/
#   files/I/...          copied to $FLINK_FILES/I (on the image's PYTHONPATH)
# Set before it runs: FLINK_ARCHIVES, FLINK_FILES, FLINK_PYTHON, FLINK_CACHE.
# Its text is part of every PyFlink layer key: editing it rebuilds them.
set -eu
art=$PREBUILDER_ARTIFACTS
# The image's record (pip freeze) lives where Beam images keep it.
mkdir -p "$(dirname "$PREBUILDER_RECORD")"

if [ -d "$art/archives" ]; then
  for dir in "$art"/archives/*/; do
    name=$(basename "$dir")
    for file in "$dir"*; do
      echo "prebuilder-flink: extracting $(basename "$file") into $FLINK_ARCHIVES/$name"
      rm -rf "${FLINK_ARCHIVES:?}/$name"
      if ! python3 - "$file" "$FLINK_ARCHIVES/$name" <<'EOF'
import os, shutil, stat, sys, tarfile, zipfile

src, dest = sys.argv[1], sys.argv[2]


def target(name):
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        sys.exit("prebuilder-flink: the entry %r of %s escapes its directory" % (name, src))
    return os.path.join(dest, *parts)


os.makedirs(dest, exist_ok=True)
if zipfile.is_zipfile(src):
    with zipfile.ZipFile(src) as z:
        for info in z.infolist():
            path = target(info.filename)
            mode = info.external_attr >> 16
            if info.is_dir():
                os.makedirs(path, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if stat.S_ISLNK(mode):
                os.symlink(z.read(info).decode(), path)
                continue
            with z.open(info) as f, open(path, "wb") as out:
                shutil.copyfileobj(f, out)
            os.chmod(path, (mode & 0o777) or 0o644)
else:
    with tarfile.open(src) as t:
        members = t.getmembers()
        for m in members:
            target(m.name)
        t.extractall(dest, members=members, numeric_owner=True)
EOF
      then
        echo "prebuilder-flink: extracting the archive $name failed" >&2
        exit 1
      fi
      # Task managers often run as a non-root user.
      chmod -R a+rX "$FLINK_ARCHIVES/$name"
    done
  done
fi

if [ -f "$art/requirements.txt" ]; then
  set -- --no-cache-dir --disable-pip-version-check
  if [ "$FLINK_CACHE" = 1 ]; then
    mkdir -p "$art/cache"
    set -- "$@" --no-index --find-links "$art/cache"
  fi
  echo "prebuilder-flink: $FLINK_PYTHON -m pip install -r requirements.txt $*"
  if ! "$FLINK_PYTHON" -m pip install "$@" -r "$art/requirements.txt"; then
    echo "prebuilder-flink: installing the requirements failed" >&2
    exit 1
  fi
fi

if [ -d "$art/files" ]; then
  mkdir -p "$FLINK_FILES"
  for item in "$art"/files/*; do
    i=$(basename "$item")
    rm -rf "${FLINK_FILES:?}/$i"
    cp -R "$item" "$FLINK_FILES/$i"
  done
  chmod -R a+rX "$FLINK_FILES"
fi
