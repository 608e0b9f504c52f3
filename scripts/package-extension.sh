#!/usr/bin/env bash
# Check the card-reader browser extension (extension/) and pack it as a zip
# that Chromium loads once extracted (chrome://extensions, "Load unpacked").
#
#   scripts/package-extension.sh [OUT.zip]   # default: target/bankbridge-card-extension.zip
#
# Checks: manifest.json and adapters.json are JSON, every file the manifest
# names is there, and every shipped adapter's pages are among the manifest's
# content-script matches. Uses python3 (else node) to check, `zip` if present
# (else python3's zipfile) to pack. Prints the zip's path.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
src="$root/extension"
out="${1:-$root/target/bankbridge-card-extension.zip}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

die() { echo "package-extension.sh: $*" >&2; exit 1; }

[ -f "$src/manifest.json" ] || die "no $src/manifest.json"

if command -v python3 >/dev/null 2>&1; then
    python3 - "$src" <<'PY' || die "the extension does not check out (above)"
import json, os, sys
src = sys.argv[1]
def load(name):
    try:
        with open(os.path.join(src, name), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"{name}: {e}")
m = load("manifest.json")
problems = []
if m.get("manifest_version") != 3:
    problems.append("manifest_version must be 3")
files = [m.get("background", {}).get("service_worker"), m.get("options_ui", {}).get("page"),
         m.get("action", {}).get("default_popup")]
for cs in m.get("content_scripts", []):
    files += cs.get("js", []) + cs.get("css", [])
for f in files:
    if not f or not os.path.isfile(os.path.join(src, f)):
        problems.append(f"the manifest names {f!r}, which is not in extension/")
matches = {p for cs in m.get("content_scripts", []) for p in cs.get("matches", [])}
for a in load("adapters.json").get("adapters", []):
    for p in a.get("matches", []):
        if p not in matches:
            problems.append(f"adapter {a.get('name')!r}: {p} is not among the manifest's content_scripts matches")
if problems:
    sys.exit("\n".join(problems))
PY
elif command -v node >/dev/null 2>&1; then
    node -e '
      const fs = require("fs"), path = require("path"), src = process.argv[1];
      for (const f of ["manifest.json", "adapters.json"]) JSON.parse(fs.readFileSync(path.join(src, f), "utf8"));
    ' "$src" || die "manifest.json or adapters.json is not JSON"
else
    die "python3 or node is needed to check the manifest"
fi

mkdir -p "$(dirname "$out")"
rm -f "$out"
if command -v zip >/dev/null 2>&1; then
    (cd "$src" && zip -q -r -X "$out" . -x '.*' -x '*/.*')
else
    python3 - "$src" "$out" <<'PY'
import os, sys, zipfile
src, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    for d, dirs, names in os.walk(src):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        for n in sorted(names):
            if not n.startswith("."):
                p = os.path.join(d, n)
                z.write(p, os.path.relpath(p, src))
PY
fi
echo "$out"
