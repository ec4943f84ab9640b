#!/usr/bin/env bash
# Debian's Chromium for the end-to-end browser tests (Playwright's own browser download does not
# work offline). Installed once; needs root or sudo, as on CI.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
