// Package version identifies the fulcrum build: a release version set at
// link time and the source revision it was built from.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is the release version. Release builds set it with
//
//	go build -ldflags "-X github.com/fulcrum-lb/fulcrum/internal/version.Version=v1.2.3"
var Version = "dev"

// Commit is the source revision. When the linker leaves it empty, the VCS
// revision that the go command stamped into the binary is used instead.
var Commit = ""

// Revision returns the source revision the binary was built from: Commit
// if set, else the VCS revision from the build info (with "-dirty" for a
// modified tree), else "unknown".
func Revision() string {
	if Commit != "" {
		return Commit
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	var rev string
	var dirty bool
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "unknown"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return rev
}

// String describes the build in one line, e.g.
// "fulcrum dev (commit abc123, go1.26.8)".
func String() string {
	return fmt.Sprintf("fulcrum %s (commit %s, %s)", Version, Revision(), runtime.Version())
}
