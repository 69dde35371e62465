package version

import (
	"runtime"
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	oldV, oldC := Version, Commit
	t.Cleanup(func() { Version, Commit = oldV, oldC })

	Version, Commit = "v1.2.3", "abc123"
	got := String()
	want := "fulcrum v1.2.3 (commit abc123, " + runtime.Version() + ")"
	if got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}

	Commit = ""
	if got := String(); !strings.HasPrefix(got, "fulcrum v1.2.3 (commit ") || strings.Contains(got, "commit ,") {
		t.Errorf("String() without Commit = %q, want a build-info revision or \"unknown\"", got)
	}
}
