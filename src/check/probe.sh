# prebuilder's image probe (run by /bin/sh in a short-lived container with no
# network): looks for the boot and for the interpreters the boot would run, then
# hands over to the Python probe ($1) with what it found. Without any Python it
# prints the one JSON line itself.
boot=/opt/apache/beam/boot
if [ -f "$boot" ] && [ -x "$boot" ]; then b=executable
elif [ -e "$boot" ]; then b=not-executable
else b=missing
fi
py=$(command -v python 2>/dev/null) || py=
py3=$(command -v python3 2>/dev/null) || py3=
run=${py:-$py3}
if [ -z "$run" ]; then
    printf 'prebuilder-probe: {"mode": "image", "boot": "%s"}\n' "$b"
    exit 0
fi
exec "$run" -c "$1" image "$b" "$py" "$py3"
