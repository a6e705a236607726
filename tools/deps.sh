#!/usr/bin/env bash
# The system tools the test suite drives, installed with apt only where missing.
#
#   tools/deps.sh           install the Debian packages of the missing tools
#   tools/deps.sh --list    print those packages, one line, and install nothing
#   tools/deps.sh --check [TOOL...]
#                           fail unless apt could install them on this machine (apt-get -s),
#                           counting the named tools as missing too (the tests try each)
#
# One tool, one package: qemu-img, qemu-io and qemu-nbd come with qemu-utils, dot with
# graphviz, node with nodejs. npm is asked for only when there is no npm command, and then
# as the package that provides it: a Node.js build that bundles npm (NodeSource's nodejs
# "Provides: npm" and conflicts with Debian's npm) gives nodejs, Debian's own gives npm.
# Both the Makefile (make deps) and .ci/run call this script.
set -euo pipefail

mode=${1:-install}
case "$mode" in install|--list|--check) ;; *)
  echo "usage: tools/deps.sh [--list|--check [TOOL...]]" >&2; exit 2 ;;
esac
[ $# -gt 0 ] && shift
assume_missing=" $* "
have() { case "$assume_missing" in *" $1 "*) return 1 ;; esac; command -v "$1" >/dev/null 2>&1; }

want=()
add() { case " ${want[*]-} " in *" $1 "*) ;; *) want+=("$1") ;; esac; }
for pair in qemu-img:qemu-utils qemu-io:qemu-utils qemu-nbd:qemu-utils dot:graphviz \
            node:nodejs; do
  have "${pair%%:*}" || add "${pair#*:}"
done

# The package that provides npm: the installed (or about to be installed) nodejs when it
# declares "Provides: npm", else Debian's npm.
npm_package() {
  local provides
  provides=$(dpkg-query -W -f='${Provides}' nodejs 2>/dev/null || true)
  [ -n "$provides" ] || provides=$(apt-cache show nodejs 2>/dev/null \
    | sed -n 's/^Provides: //p' | head -n 1)
  case ", $provides," in *", npm"[,\ ]*) echo nodejs ;; *) echo npm ;; esac
}
have npm || add "$(npm_package)"

if [ "$mode" = --list ]; then
  echo "${want[*]-}"
  exit 0
fi
if [ ${#want[@]} -eq 0 ]; then
  [ "$mode" = --check ] && echo "deps: every tool is present; apt is asked for nothing"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# apt-cache and apt-get -s need package lists; a fresh machine has none.
if [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e '^lock$' -e '^partial$' -e '^auxfiles$')" ] \
    || [ "$mode" = install ]; then
  apt-get update -qq
fi
if ! sim=$(apt-get install -s -qq "${want[@]}" 2>&1); then
  echo "deps: apt cannot install ${want[*]} on this machine:" >&2
  echo "$sim" | tail -n 5 >&2
  exit 1
fi
if [ "$mode" = --check ]; then
  echo "deps: apt can install ${want[*]}"
  exit 0
fi
echo "deps: installing ${want[*]}"
apt-get install -y -qq "${want[@]}"
