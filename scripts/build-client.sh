#!/usr/bin/env bash
# Build isobox's compiled front end (client/isobox.c) into a virtual
# environment where isobox is installed: VENV/bin/isobox becomes the
# compiled program, and the Python front end that pip installed there moves
# to VENV/libexec/isobox/isobox, where the compiled one hands over every
# command that no command server takes. Run again after each pip install
# (scripts/setup.sh does). Without a C compiler, the Python front end stays
# the isobox program: the same commands, 8-12 ms slower each.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(cd "${1:-.venv}" && pwd)
bin="$venv/bin/isobox"
fallback="$venv/libexec/isobox/isobox"
cc=${CC:-cc}
if ! command -v "$cc" >/dev/null; then
    echo "build-client: no C compiler ($cc): the Python front end stays $bin" >&2
    exit 0
fi
if [ "$(head -c 2 "$bin")" = "#!" ]; then  # pip's fresh copy of bin/isobox
    mkdir -p "$(dirname "$fallback")"
    mv -f "$bin" "$fallback"
fi
if [ ! -x "$fallback" ]; then
    echo "build-client: no Python front end at $fallback: reinstall isobox first" >&2
    exit 1
fi
# The installation's identity, as its command server checks it.
mapfile -t identity < <("$venv/bin/python" -I -c \
    'from isobox.linux.forkserver import identity; print(*identity(), sep="\n")')
for value in "$fallback" "${identity[@]}"; do
    case $value in
    *[\"\\]* | *$'\n'*) echo "build-client: cannot embed the path $value" >&2; exit 1 ;;
    esac
done
if ! "$cc" -O2 -Wall -Wextra -Werror -std=gnu11 \
        -DISOBOX_FALLBACK="\"$fallback\"" -DISOBOX_SRC="\"${identity[0]}\"" \
        -DISOBOX_PYTHON="\"${identity[1]}\"" -o "$bin.new" client/isobox.c; then
    rm -f "$bin.new"
    cp -p "$fallback" "$bin"  # isobox still works, the slower way
    echo "build-client: client/isobox.c did not compile" >&2
    exit 1
fi
mv -f "$bin.new" "$bin"
