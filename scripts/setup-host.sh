#!/usr/bin/env bash
# Sets up a Debian 12/13 host for failover-testbed: QEMU >= 8.0 with igb, the guest-image tools, and a
# virtualenv (.venv) holding the testbed. Idempotent: a second run only checks and exits quickly.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
venv=${TESTBED_VENV:-$here/.venv}
packages=(mmdebstrap cpio kmod lz4 iproute2 fping socat ethtool dnsmasq-base
          python3-venv ca-certificates cloud-image-utils tcpdump)

log() { printf '[setup-host] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

. /etc/os-release
qemu_ok() {
  command -v qemu-system-x86_64 >/dev/null || return 1
  qemu-system-x86_64 -device help 2>/dev/null | grep -q '"igb"'
}
missing=()
for p in "${packages[@]}" qemu-system-x86; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done

if [ "${#missing[@]}" -gt 0 ] || ! qemu_ok; then
  case "${VERSION_CODENAME:-}" in
    bookworm)
      # bookworm's own QEMU is 7.2 and has no igb: take QEMU from bookworm-backports, from the mirror
      # the machine already uses.
      as_root apt-get update -qq
      mirror=$(apt-cache policy | awk '$3 == "bookworm/main" && $2 ~ /^https?:/ {print $2; exit}')
      mirror=${mirror:-http://deb.debian.org/debian}
      if ! apt-cache policy | grep -q 'bookworm-backports/main'; then
        log "adding bookworm-backports from $mirror"
        printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
          "$mirror" | as_root tee /etc/apt/sources.list.d/testbed-backports.sources >/dev/null
      fi
      as_root apt-get update -qq
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}"
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -t bookworm-backports qemu-system-x86 qemu-utils
      ;;
    trixie|forky|sid)
      as_root apt-get update -qq
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${packages[@]}" qemu-system-x86 qemu-utils
      ;;
    *) log "unsupported distribution '${PRETTY_NAME:-unknown}': need Debian 12 or newer"; exit 1 ;;
  esac
fi
qemu_ok || { log "qemu-system-x86_64 has no igb device after installation"; exit 1; }

# The guest kernel comes from bookworm-backports on Debian 12 (6.12); the image builder resolves it
# through apt, so the package lists must be there.
[ -n "$(ls /var/lib/apt/lists/*_Packages 2>/dev/null | head -n1)" ] || as_root apt-get update -qq

stamp=$venv/.testbed-installed
want=$(cat "$here/pyproject.toml" | sha256sum | cut -c1-16)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "creating $venv"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -e "$here[test]"
  echo "$want" > "$stamp"
fi
log "ready: $(qemu-system-x86_64 --version | head -n1)"
