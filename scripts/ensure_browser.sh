#!/usr/bin/env bash
# Make sure a headless Chromium is there for the report's browser tests (`make test` calls this).
# 1. a system chromium on PATH: nothing to do;
# 2. root with apt-get (how CI runs): Debian's chromium;
# 3. otherwise Playwright's own browser build, where the network allows;
# 4. otherwise one line naming the command to run, and a non-zero exit (the tests are never skipped).
set -uo pipefail
PY="${1:-.venv/bin/python}"
for name in chromium chromium-browser; do
  command -v "$name" >/dev/null 2>&1 && exit 0
done
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure_browser: installing Debian's chromium with apt-get" >&2
  if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; then
    exit 0
  fi
fi
if "$PY" -c "import playwright" >/dev/null 2>&1; then
  # Already installed by an earlier run?
  if "$PY" - <<'PYEOF' >/dev/null 2>&1
from playwright.sync_api import sync_playwright
with sync_playwright() as p:
    p.chromium.launch(args=["--no-sandbox"]).close()
PYEOF
  then
    exit 0
  fi
  echo "ensure_browser: installing Playwright's chromium" >&2
  "$PY" -m playwright install chromium >/dev/null 2>&1 && exit 0
fi
echo "ensure_browser: no headless browser for the report tests: run 'sudo apt-get install -y chromium' (Debian/Ubuntu) or '$PY -m playwright install chromium', then 'make test' again" >&2
exit 1
