#!/usr/bin/env bash
# Dependency audit with cargo-deny (deny.toml): licences, bans and sources, offline. Advisories
# need the RustSec database from GitHub, which this project's machines cannot reach: they are
# checked only when it can be fetched, and the log says which happened.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VERSION=0.20.2
if ! cargo deny --version 2>/dev/null | grep -q " $VERSION\$"; then
  echo "   installing cargo-deny $VERSION (cargo install --locked; a few minutes on 2 cores)"
  cargo install cargo-deny --locked --version "$VERSION" --quiet
fi
cargo deny --version
cargo deny check licenses bans sources
if timeout 60 git ls-remote https://github.com/RustSec/advisory-db HEAD >/dev/null 2>&1; then
  cargo deny check advisories
else
  echo "   advisories: not checked (the RustSec database on github.com is unreachable from here)"
fi
