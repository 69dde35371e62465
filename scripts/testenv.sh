#!/bin/sh
# Test environment (testenv/): self-test, or a canonical topology by hand.
#   scripts/testenv.sh [test [go test flags]]   run the package's tests (root)
#   scripts/testenv.sh up [-backends N] [-lb2] [-vip A,B]
#   scripts/testenv.sh down PREFIX
#   scripts/testenv.sh list
set -eu
cd "$(dirname "$0")/.."
cmd=${1:-test}
[ $# -gt 0 ] && shift
case $cmd in
test) exec go test ./testenv/ -count=1 -v "$@" ;;
up | down | list) exec go run ./testenv/cmd/testenv "$cmd" "$@" ;;
*) sed -n '2,6p' "$0" >&2; exit 2 ;;
esac
