#!/usr/bin/env bash
# ManiSkill's SAPIEN needs a Vulkan device even for state observations. On a CPU-only Debian 12 that is Mesa's
# lavapipe, and bookworm's Mesa 22.3 finds no device ("Failed to find a supported physical device"); Mesa 25
# from bookworm-backports works (it also upgrades the Mesa GL stack; MuJoCo's EGL/OSMesa keep working).
# Idempotent: does nothing when a Mesa >= 25 Vulkan driver is installed.
set -euo pipefail
have=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true)
if [ -n "$have" ] && dpkg --compare-versions "$have" ge 25; then exit 0; fi
sudo=$([ "$(id -u)" = 0 ] || echo sudo)
list=/etc/apt/sources.list.d/bookworm-backports.sources
if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  # the same mirror as the existing bookworm entries
  uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  uri=${uri:-$(awk '/^deb .*bookworm/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)}
  uri=${uri:-http://deb.debian.org/debian}
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$uri" | $sudo tee "$list" >/dev/null
fi
echo "installing Mesa's Vulkan driver from bookworm-backports (for ManiSkill)"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null
