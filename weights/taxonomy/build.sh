#!/usr/bin/env bash
# Install the prerequisites of build_taxonomy.py if missing, then run it (arguments are passed on).
#
#   bash weights/taxonomy/build.sh            # rewrite weights/taxonomy.json and the README table
#   bash weights/taxonomy/build.sh --check    # only verify that they are up to date
#
# Needs python3 >= 3.11 (standard library only) and WordNet 3.0's data.noun: Debian/Ubuntu package
# `wordnet-base`, installed here with apt-get when /usr/share/wordnet/data.noun is missing (as root, or
# with sudo). weights/taxonomy/imagenet_synsets.txt is committed; the script fetches it again with
# `pip download timm==<pinned> --no-deps` only if it is missing (or with --refetch-synsets).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"

WN_DIR="${WNSEARCHDIR:-/usr/share/wordnet}"
if [ ! -f "$WN_DIR/data.noun" ]; then
  echo "build.sh: $WN_DIR/data.noun missing; installing wordnet-base with apt-get" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends wordnet-base
fi
exec "$PYTHON" "$HERE/build_taxonomy.py" "$@"
