#!/usr/bin/env bash
# Run the user story's Playwright spec (xs2a.spec.ts) against a running
# bankbridge sandbox. Builds nothing and starts nothing: start the sandbox
# first, e.g. `bankbridge sandbox --listen 127.0.0.1:9000` (the default).
#
#   SANDBOX_URL     the sandbox root (default http://127.0.0.1:9000)
#   XS2A_BASE_URL   the playground root the spec talks to
#                   (default $SANDBOX_URL/xs2a-playground)
#   extra arguments go to `npx playwright test`
#
# Fetches the playground's API token from
# GET $SANDBOX_URL/_sandbox/xs2a-playground/credentials ({"api_token": ...}),
# exports it as KOSMA_AUTH_TOKEN (the story's variable), runs `npm ci` when
# node_modules is missing, then `npx playwright test`. Exits non-zero when the
# credentials cannot be read or the spec fails.
set -euo pipefail
cd "$(dirname "$0")"

SANDBOX_URL="${SANDBOX_URL:-http://127.0.0.1:9000}"
SANDBOX_URL="${SANDBOX_URL%/}"
export XS2A_BASE_URL="${XS2A_BASE_URL:-$SANDBOX_URL/xs2a-playground}"

credentials="$(curl -fsS --max-time 10 "$SANDBOX_URL/_sandbox/xs2a-playground/credentials")" || {
  echo "run.sh: no sandbox answering at $SANDBOX_URL (start one: bankbridge sandbox --listen 127.0.0.1:9000)" >&2
  exit 2
}
KOSMA_AUTH_TOKEN="$(printf '%s' "$credentials" | node -e '
  let s = ""; process.stdin.on("data", d => s += d).on("end", () => {
    const t = JSON.parse(s).api_token;
    if (typeof t !== "string" || !t) { console.error("run.sh: the credentials have no api_token"); process.exit(1); }
    process.stdout.write(t);
  });')"
export KOSMA_AUTH_TOKEN

if [ ! -d node_modules ]; then
  npm ci --no-audit --no-fund
fi

# The spec needs no browser: make sure none is looked for or fetched.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
exec npx --no-install playwright test "$@"
