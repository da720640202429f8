#!/usr/bin/env bash
# mypy on the package as it installs: expiry/ with components/ as expiry.components and runtime/ as
# expiry.runtime. mypy cannot follow setuptools' editable import hook, so it checks a view of symlinks
# under .mypy_cache/ and reports paths as they are in this repository.
set -euo pipefail
cd "$(dirname "$0")/.."
view=.mypy_cache/package
rm -rf "$view" && mkdir -p "$view/expiry"
for file in expiry/*; do ln -s "$PWD/$file" "$view/expiry/"; done
ln -s "$PWD/components" "$view/expiry/components"
ln -s "$PWD/runtime" "$view/expiry/runtime"
"${MYPY:-venv/bin/mypy}" "$view/expiry" | sed -e "s#^$view/expiry/\(components\|runtime\)/#\1/#" -e "s#^$view/expiry/#expiry/#"
