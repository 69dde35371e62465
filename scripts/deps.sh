#!/bin/sh
# What Fulcrum's build and tests need from the system, in one place: `make
# deps`, `make test` (through `make deps-check`) and .ci/run use this list.
#
#   scripts/deps.sh install   apt-get install every package below (root)
#   scripts/deps.sh check     a quick check of every tool and header: as root
#                             with apt-get, installs what is missing; else
#                             lists all that is missing, with the command
#                             that installs it, and exits 1
#   scripts/deps.sh packages  print the Debian package list
#
# Each line: the tool (a command, an absolute path for a daemon outside PATH, or a header file under /usr/include), the
# Debian package that has it, and who needs it. Keep it exact: a tool here
# that nothing uses costs every fresh machine a download.
set -eu

# Administration tools (ip, nft, keepalived...) live in sbin directories
# that a non-root PATH may lack; they count as present there too. The
# test of this script empties FULCRUM_DEPS_SBIN to look at PATH alone.
for dir in ${FULCRUM_DEPS_SBIN-/usr/sbin /sbin /usr/local/sbin}; do
	PATH=$PATH:$dir
done

deps='
clang-19                 clang-19        make generate: compiles bpf/*.c
llvm-strip-19            llvm-19         make generate: bpf2go strips the objects
bpf/bpf_helpers.h        libbpf-dev      make generate: the BPF programs include libbpf headers
linux/bpf.h              linux-libc-dev  make generate: kernel UAPI headers
make                     make            the Makefile
git                      git             make check-generated compares with git
bash                     bash            cmd/fulcrum: the completion test runs bash
ip                       iproute2        testenv: namespaces, veths, `ip netns exec`
bridge                   iproute2        internal/daemon: the failover tests set bridge ports
ss                       iproute2        internal/daemon: waits for backends to listen
ethtool                  ethtool         testenv and internal/perf: offloads and NIC counters
nft                      nftables        internal/daemon (health flapping), internal/perf (the nftables rig)
keepalived               keepalived      internal/vrrp: interoperability with keepalived
haproxy                  haproxy         internal/perf: make bench compares connection rates with HAProxy
bird                     bird2           internal/daemon: the scale-out tests run BIRD as the ECMP router
birdc                    bird2           internal/daemon: reads the sessions and routes of BIRD
/usr/lib/frr/bgpd        frr             internal/daemon: the scale-out tests run FRR as the ECMP router
vtysh                    frr             internal/daemon: reads the sessions and routes of FRR
tar                      tar             internal/daemon: the upgrade test unpacks the previous release (git archive)
setpriv                  util-linux      internal/daemon: runs the daemon with the systemd unit capabilities
unshare                  util-linux      internal/daemon, internal/datapath: private mount and pid namespaces
nsenter                  util-linux      internal/datapath: enters mount namespaces
systemd-analyze          systemd         deploy: systemd-analyze verify on the unit
dpkg-deb                 dpkg            deploy: the package test reads and installs the .deb
'
# Not apt: Go itself, at the version go.mod names. ca-certificates is no
# tool, but the go command needs it to fetch modules over https.
extra_packages='ca-certificates'

packages() {
	{
		echo "$deps" | awk 'NF { print $2 }'
		for p in $extra_packages; do echo "$p"; done
	} | sort -u | tr '\n' ' ' | sed 's/ $//'
}

# missing prints "tool package" for every tool or header that is absent.
missing() {
	echo "$deps" | while read -r tool pkg _; do
		[ -n "$tool" ] || continue
		case $tool in
		*.h)
			# Architecture directories hold asm/*; linux/ and bpf/ are
			# in /usr/include itself.
			[ -e "/usr/include/$tool" ] || echo "$tool $pkg"
			;;
		/*) [ -x "$tool" ] || echo "$tool $pkg" ;; # a daemon outside PATH
		*) command -v "$tool" >/dev/null 2>&1 || echo "$tool $pkg" ;;
		esac
	done
}

apt_install() {
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q --no-install-recommends "$@"
}

report() {
	# $1: the missing lines; $2: why nothing was installed.
	echo "fulcrum: the build and tests need tools that are missing ($2):" >&2
	echo "$1" | while read -r tool pkg; do
		printf '  %-20s (Debian package %s)\n' "$tool" "$pkg" >&2
	done
	pkgs=$(echo "$1" | awk '{ print $2 }' | sort -u | tr '\n' ' ' | sed 's/ $//')
	echo "install them with:" >&2
	echo "  sudo apt-get install -y --no-install-recommends $pkgs" >&2
	echo "or everything at once, as root: make deps" >&2
	nogo
}

# nogo says, and returns 0, if Go is missing: apt's Go is older than
# go.mod's, so it is never installed from here.
nogo() {
	command -v go >/dev/null 2>&1 && return 1
	echo "fulcrum: go is missing too: install Go at the version go.mod names (not from apt: it is older)" >&2
}

cmd=${1:-check}
case $cmd in
packages) packages; echo ;;
install)
	# shellcheck disable=SC2046 # one word per package
	apt_install $(packages)
	;;
check)
	miss=$(missing)
	if [ -z "$miss" ]; then
		nogo && exit 1
		exit 0
	fi
	if [ "$(id -u)" != 0 ]; then
		report "$miss" "not root, so not installing"
		exit 1
	fi
	if ! command -v apt-get >/dev/null 2>&1; then
		report "$miss" "no apt-get here, so not installing"
		exit 1
	fi
	pkgs=$(echo "$miss" | awk '{ print $2 }' | sort -u | tr '\n' ' ')
	echo "fulcrum: installing what the build and tests need: $pkgs" >&2
	# shellcheck disable=SC2086 # one word per package
	if ! apt_install $pkgs; then
		report "$miss" "apt-get install failed"
		exit 1
	fi
	miss=$(missing)
	if [ -n "$miss" ]; then
		report "$miss" "still missing after apt-get install"
		exit 1
	fi
	nogo && exit 1
	;;
*) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
