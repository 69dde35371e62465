package main

import (
	"runtime"
	"testing"

	"github.com/fulcrum-lb/fulcrum/internal/version"
)

func TestVersionWithoutDaemon(t *testing.T) {
	r := runCLI(t, "--socket", "/nonexistent/api.sock", "version")
	r.expect(t, 0, []string{"fulcrum " + version.Version + " (commit ", runtime.Version()})
	if r.stdout != version.String()+"\n" {
		t.Errorf("got %q, want %q", r.stdout, version.String()+"\n")
	}
}

func TestVersionJSON(t *testing.T) {
	r := runCLI(t, "-o", "json", "version")
	r.expect(t, 0, nil)
	var bi buildInfo
	decodeJSON(t, r.stdout, &bi)
	if bi.Version != version.Version || bi.Go != runtime.Version() || bi.Commit == "" {
		t.Errorf("decoded %+v", bi)
	}
}
