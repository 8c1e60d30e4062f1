#!/usr/bin/env bash
# Install Debian's chromium for tests/test_report_browser.py (the QC report opened in a real headless browser).
# Run as root (e.g. in the CI/container image); without chromium that test skips with a message.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    echo "chromium already installed: $(command -v chromium)"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "run as root: apt-get update && apt-get install -y chromium" >&2
    exit 1
fi
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium
chromium --version
