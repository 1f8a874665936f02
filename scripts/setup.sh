# Sourced by scripts/run and scripts/test: make a fresh Debian 12 able to run tapstack.
#
#   tapstack_setup run     system packages for running the daemon, then the venv
#   tapstack_setup test    plus the tools the test suite drives (ping, tcpdump, ndisc6, ...)
#
# Installs only what is missing (apt-get update at most once), creates .venv when
# absent and (re)installs the project into it when pyproject.toml or native/ is newer
# than the stamp .venv/.tapstack-installed. Messages go to stderr.

TAPSTACK_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

RUN_PACKAGES=(iproute2 python3 python3-venv python3-dev gcc libffi-dev)
TEST_PACKAGES=(iputils-ping netcat-openbsd telnet tcpdump ndisc6 traceroute openssh-server openssh-client
               iperf3 radvd nftables)
# Nice to have: without it one test (vagrant validate) skips, nothing fails.
OPTIONAL_TEST_PACKAGES=(vagrant)

_say() { echo "tapstack-setup: $*" >&2; }

_missing_packages() {
  local p
  for p in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      echo "$p"
    fi
  done
}

_apt_install() {
  local missing
  mapfile -t missing < <(_missing_packages "$@")
  [ "${#missing[@]}" -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null; then
    _say "missing packages ${missing[*]} and no apt-get: install them by hand"
    return 1
  fi
  if [ "$(id -u)" -ne 0 ]; then
    _say "missing packages ${missing[*]}: run as root (or install them first)"
    return 1
  fi
  _say "installing ${missing[*]}"
  # Do not start daemons (sshd, radvd) from package scripts: tests start what they need.
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && made_policy=1
  fi
  local rc=0
  { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } || rc=$?
  [ "$made_policy" -eq 1 ] && rm -f "$policy"
  return "$rc"
}

_venv_stale() {
  local stamp="$TAPSTACK_ROOT/.venv/.tapstack-installed"
  [ -x "$TAPSTACK_ROOT/.venv/bin/python" ] || return 0
  [ -f "$stamp" ] || return 0
  [ "$TAPSTACK_ROOT/pyproject.toml" -nt "$stamp" ] && return 0
  if [ -d "$TAPSTACK_ROOT/native" ] && [ -n "$(find "$TAPSTACK_ROOT/native" -newer "$stamp" -type f 2>/dev/null | head -1)" ]; then
    return 0
  fi
  "$TAPSTACK_ROOT/.venv/bin/python" -c "import stack, pyroute2, uvloop" 2>/dev/null || return 0
  return 1
}

tapstack_setup() {
  local mode="${1:-run}"
  if [ "$mode" = test ]; then
    _apt_install "${RUN_PACKAGES[@]}" "${TEST_PACKAGES[@]}"
    _apt_install "${OPTIONAL_TEST_PACKAGES[@]}" ||
      _say "could not install ${OPTIONAL_TEST_PACKAGES[*]}: the tests that need them will skip"
  else
    _apt_install "${RUN_PACKAGES[@]}"
  fi
  if _venv_stale; then
    if [ ! -x "$TAPSTACK_ROOT/.venv/bin/python" ]; then
      _say "creating .venv"
      python3 -m venv "$TAPSTACK_ROOT/.venv"
    fi
    _say "installing tapstack into .venv (pip install -e '.[test]')"
    "$TAPSTACK_ROOT/.venv/bin/python" -m pip install -q --disable-pip-version-check -e "$TAPSTACK_ROOT[test]" >&2
    touch "$TAPSTACK_ROOT/.venv/.tapstack-installed"
  fi
}
