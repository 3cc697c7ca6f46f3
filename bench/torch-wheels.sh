# Sourced by bench/gpu.sh and bench/direct.sh: the GPU-size wheel set
# (torch==2.5.1 for cp311 with its CUDA 12 dependencies, about 3 GB of
# wheels), downloaded once from PyPI into the fixture cache and shared by
# every bench that uses it. The host reaches PyPI; containers do not.
#
#   torch_wheels_fresh DIR SPEC         status 0 when DIR holds SPEC's set
#   torch_wheels_download PYTHON DIR SPEC
#                                       download it (PYTHON's pip) into DIR,
#                                       through DIR.$$, moved in place only
#                                       when complete; status 1 on failure
#   torch_wheels_pins DIR               one `name==version` per wheel in DIR,
#                                       sorted (Beam's Stager downloads each
#                                       line with --no-deps: all are pinned)

torch_wheels_stamp() {
  printf '%s cp311 manylinux2014_x86_64 only-binary\n' "$1"
}

torch_wheels_fresh() {
  local wheels=$1 spec=$2
  [ -f "$wheels/.stamp" ] && [ "$(cat "$wheels/.stamp")" = "$(torch_wheels_stamp "$spec")" ]
}

torch_wheels_download() {
  local python=$1 wheels=$2 spec=$3 dl="$2.$$"
  rm -rf "$dl"
  mkdir -p "$dl"
  env -u PIP_FIND_LINKS -u PIP_NO_INDEX "$python" -m pip download -q \
    --disable-pip-version-check --dest "$dl" \
    --platform manylinux2014_x86_64 --python-version 3.11 --implementation cp --abi cp311 \
    --only-binary=:all: "$spec" ||
    { rm -rf "$dl"; return 1; }
  torch_wheels_stamp "$spec" >"$dl/.stamp"
  rm -rf "$wheels"
  mv "$dl" "$wheels"
}

torch_wheels_pins() {
  local w name rest
  for w in "$1"/*.whl; do
    w=$(basename "$w")
    name=${w%%-*}
    rest=${w#*-}
    printf '%s==%s\n' "${name//_/-}" "${rest%%-*}"
  done | sort
}
