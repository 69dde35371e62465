package main

import "testing"

// TestVersion runs a binary built with the link flags a release uses and
// compares its output with the values given to the linker and the
// toolchain that built it. It needs no daemon.
func TestVersion(t *testing.T) {
	r := runBinary(t, "--socket", "/nonexistent/api.sock", "version")
	r.check(t, 0, "fulcrum "+buildVersion+" (commit "+buildCommit+", "+binary.goVersion+")\n", "")

	checkJSON(t, runBinary(t, "-o", "json", "version"), buildInfo{Version: buildVersion, Commit: buildCommit, Go: binary.goVersion})

	runBinary(t, "version", "now").check(t, exitUsage, "", "fulcrum: version: unexpected argument \"now\" (usage: fulcrum version)\n")
}
