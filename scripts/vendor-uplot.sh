#!/usr/bin/env bash
# vendor-uplot.sh: re-vendor uPlot from the npm registry into web/vendor/uplot/.
#
# The dashboard has no build step: it loads web/vendor/uplot/uPlot.iife.min.js and
# uPlot.min.css directly, and the files are committed. Run this by hand to upgrade uPlot
# (it is not run by `make` or CI). Usage: scripts/vendor-uplot.sh [VERSION]   (default: latest)
# It installs the package into a temporary directory with npm, copies the minified IIFE
# bundle, the CSS and the licence, and records the exact version in VERSION.
set -euo pipefail
cd "$(dirname "$0")/.."
ver="${1:-latest}"
dest=web/vendor/uplot
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
( cd "$tmp" && npm init -y >/dev/null && npm install --no-audit --no-fund --silent "uplot@$ver" >/dev/null )
pkg="$tmp/node_modules/uplot"
mkdir -p "$dest"
cp "$pkg/dist/uPlot.iife.min.js" "$pkg/dist/uPlot.min.css" "$pkg/LICENSE" "$dest/"
node -e 'console.log(require(process.argv[1]).version)' "$pkg/package.json" > "$dest/VERSION"
echo "vendored uPlot $(cat "$dest/VERSION") into $dest"
