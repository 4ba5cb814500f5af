#!/usr/bin/env bash
# `make check-report`: render a generated report in headless Chromium at 1280 and 390 px and fail
# on a console error, a broken image, an external request or an accessibility rule (axe-core).
# Skips (exit 0, with a message) where Chromium is missing: apt-get install chromium chromium-driver.
# The checks themselves are in scripts/check_report.py; pass a report folder to check that one.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium > /dev/null && ! command -v chromium-browser > /dev/null; then
    echo "check-report: SKIPPED: no Chromium found (install it with: apt-get install chromium chromium-driver)"
    exit 0
fi
# selenium drives Chromium; axe-playwright-python is installed only for the axe-core script it
# bundles (--no-deps: no Playwright, no browser download).
.venv/bin/python -c "import selenium" 2> /dev/null || .venv/bin/pip install --quiet "selenium>=4.20"
.venv/bin/python -c "import axe_playwright_python" 2> /dev/null \
    || .venv/bin/pip install --quiet --no-deps "axe-playwright-python>=0.1.8"
exec .venv/bin/python scripts/check_report.py "$@"
