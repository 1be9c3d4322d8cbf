#!/usr/bin/env bash
# Vendor the dashboard's front-end libraries from npm, pinned, with their licences.
#
#   scripts/vendor_ui.sh            # re-download every library below into src/agentmaestro/ui/vendor/
#   scripts/vendor_ui.sh --check    # verify the committed files against VERSIONS.txt (no network)
#
# Each library is fetched with `npm pack NAME@EXACT_VERSION` into a temporary directory (no
# node_modules, no install scripts run), its built browser file and licence are copied out, and
# name, version, file and sha256 are recorded in VERSIONS.txt. The results are committed, so
# installing, running and testing AgentMaestro never needs Node. Only this script needs `npm`.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=src/agentmaestro/ui/vendor
VERSIONS="$DEST/VERSIONS.txt"

# name              version  files to copy: PATH_IN_PACKAGE:VENDORED_NAME ...
LIBS=(
  "chart.js           4.6.1  package/dist/chart.umd.min.js:chart.umd.min.js package/LICENSE.md:chart.LICENSE.txt"
  "@dagrejs/dagre     3.1.3  package/dist/dagre.min.js:dagre.min.js package/LICENSE:dagre.LICENSE.txt
                             package/dist/dagre.min.js.LEGAL.txt:dagre.min.js.LEGAL.txt"
  # Bundled inside dagre.min.js (dagre's only dependency, pinned by dagre 3.1.3): its licence only.
  "@dagrejs/graphlib  4.0.6  package/LICENSE:graphlib.LICENSE.txt"
)

sha() { sha256sum "$1" | cut -d' ' -f1; }

if [[ "${1:-}" == "--check" ]]; then
  status=0
  while read -r name version file hash; do
    [[ -z "$name" || "$name" == \#* ]] && continue
    if [[ ! -f "$DEST/$file" ]]; then echo "missing: $DEST/$file ($name@$version)"; status=1; continue; fi
    if [[ "$(sha "$DEST/$file")" != "$hash" ]]; then echo "changed: $DEST/$file ($name@$version)"; status=1; fi
  done < "$VERSIONS"
  [[ $status == 0 ]] && echo "vendored files match $VERSIONS"
  exit $status
fi

command -v npm >/dev/null || { echo "error: npm is needed to re-vendor (not to run or test)" >&2; exit 1; }
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

{
  echo "# Front-end libraries vendored by scripts/vendor_ui.sh (npm pack NAME@VERSION). Do not edit by hand."
  echo "# name version file sha256"
} > "$TMP/VERSIONS.txt"

for entry in "${LIBS[@]}"; do
  read -r name version files <<< "$(echo $entry)"
  work="$TMP/$(echo "$name" | tr '/@' '__')"
  mkdir -p "$work"
  (cd "$work" && npm pack --silent --ignore-scripts "$name@$version" > packed.txt)
  tarball="$work/$(tail -n1 "$work/packed.txt")"
  for pair in $files; do
    src="${pair%%:*}"
    out="${pair#*:}"
    tar -xzf "$tarball" -C "$work" "$src"
    cp "$work/$src" "$DEST/$out"
    echo "$name $version $out $(sha "$DEST/$out")" >> "$TMP/VERSIONS.txt"
    echo "vendored $name@$version $src -> $DEST/$out"
  done
done
cp "$TMP/VERSIONS.txt" "$VERSIONS"
