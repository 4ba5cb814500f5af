#!/usr/bin/env bash
# Render a generated report in headless Chromium and check the screenshot: `make check-report`.
# Skips (exit 0, with a message) where no Chromium is installed: apt-get install chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
    echo "check-report: SKIPPED: no Chromium found (install it with: apt-get install chromium)"
    exit 0
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
.venv/bin/surveillance demo --out "$out/demo" > /dev/null 2>&1
.venv/bin/surveillance report --db "$out/demo/demo.duckdb" --quarter 2025Q2 --out "$out/report" > /dev/null
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$out/profile" --window-size=1280,4000 \
    --screenshot="$out/report.png" "file://$out/report/index.html" > "$out/browser.log" 2>&1
.venv/bin/python - "$out/report.png" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
width, height = struct.unpack(">II", data[16:24])
assert (width, height) == (1280, 4000), (width, height)
assert len(data) > 100_000, f"screenshot suspiciously small ({len(data)} bytes): blank page?"
print(f"check-report: OK: Chromium rendered the report ({width}x{height}, {len(data):,} bytes)")
PY
cp "$out/report.png" reports/check-report-screenshot.png
echo "check-report: screenshot in reports/check-report-screenshot.png"
