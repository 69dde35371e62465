package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/fulcrum-lb/fulcrum/internal/config"
	"github.com/fulcrum-lb/fulcrum/internal/daemon"
)

// TestCheckExamples: every example config passes.
func TestCheckExamples(t *testing.T) {
	files, err := filepath.Glob("../../docs/examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example configs under docs/examples (%v)", err)
	}
	for _, f := range files {
		r := runCLI(t, "check", "-f", f)
		if r.code != exitOK || r.stderr != "" || !strings.HasPrefix(r.stdout, f+": good: ") {
			t.Errorf("fulcrum check -f %s: exit %d, stdout %q, stderr %q; want 0 and %q", f, r.code, r.stdout, r.stderr, f+": good: ...")
		}
	}
	runCLI(t, "check", "-f", "../../docs/examples/minimal.yaml").check(t, exitOK,
		"../../docs/examples/minimal.yaml: good: 1 interface, 1 VIP, 2 backends\n", "")
}

// TestCheckBadFiles: each file under testdata/check fails with exit 1 and
// exactly the problems in its golden file, and those are the daemon's own
// words: what daemon.Run returns for the same file, as `fulcrum daemon`
// prints it after "fulcrum daemon: ".
func TestCheckBadFiles(t *testing.T) {
	files, err := filepath.Glob("testdata/check/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 20 {
		t.Fatalf("%d bad configs under testdata/check, want at least 20", len(files))
	}
	for _, f := range files {
		r := runCLI(t, "check", "-f", f)
		if r.code != exitError || r.stdout != "" {
			t.Errorf("fulcrum check -f %s: exit %d, stdout %q; want 1 and nothing", f, r.code, r.stdout)
		}
		golden(t, strings.TrimPrefix(strings.TrimSuffix(f, ".yaml")+".golden", "testdata/"), r.stderr)

		// Run the daemon on it only when the config package refuses the
		// file: a good one would start a daemon.
		if _, err := config.Load(f); err == nil {
			t.Fatalf("%s: config.Load accepts it; a bad config is wanted", f)
		}
		err := daemon.Run(context.Background(), daemon.Options{ConfigPath: f, LogOutput: io.Discard})
		if err == nil {
			t.Fatalf("%s: the daemon accepted it", f)
		}
		if want := "fulcrum check: " + err.Error() + "\n"; r.stderr != want {
			t.Errorf("%s: check says\n%s\nthe daemon says\n%s", f, r.stderr, want)
		}
	}
}

// TestCheckJSON: -o json gives the problems as fields.
func TestCheckJSON(t *testing.T) {
	r := runCLI(t, "-o", "json", "check", "-f", "testdata/check/10-duplicate-backend.yaml")
	want := `{
  "file": "testdata/check/10-duplicate-backend.yaml",
  "valid": false,
  "problems": [
    {
      "path": "vips[0].backends[1].address",
      "message": "198.18.0.11 is already backends[0]; list each backend once",
      "line": 9
    }
  ],
  "interfaces": 0,
  "vips": 0,
  "backends": 0
}
`
	r.check(t, exitError, want, "")
	checkJSON(t, runCLI(t, "-o", "json", "check", "-f", "../../docs/examples/minimal.yaml"), checkResult{
		File: "../../docs/examples/minimal.yaml", Valid: true, Problems: []config.Problem{}, Interfaces: 1, VIPs: 1, Backends: 2})
}

// TestCheckStandardInput: - reads the config from standard input.
func TestCheckStandardInput(t *testing.T) {
	data, err := os.ReadFile("testdata/check/06-bad-protocol.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr strings.Builder
	app := newApp(&stdout, &stderr, nil)
	app.Reader = strings.NewReader(string(data))
	code := report(&stderr, app.RunContext(context.Background(), []string{"fulcrum", "check", "-f", "-"}))
	want := "fulcrum check: vips[0].protocol: \"sctp\" is not supported; use tcp or udp (line 6)\n"
	if code != exitError || stdout.String() != "" || stderr.String() != want {
		t.Errorf("check -f - : exit %d, stdout %q, stderr %q; want 1, nothing, %q", code, stdout.String(), stderr.String(), want)
	}
}

func TestCheckArguments(t *testing.T) {
	runCLI(t, "check").fails(t, exitUsage, "fulcrum: check: missing -f FILE: want the config file to check (- for standard input)")
	runCLI(t, "check", "-f", "x.yaml", "extra").fails(t, exitUsage, `fulcrum: check: unexpected argument "extra" (usage: fulcrum check)`)
	runCLI(t, "check", "-f", "/nonexistent/fulcrum.yaml").fails(t, exitError, "fulcrum check: config: open /nonexistent/fulcrum.yaml: no such file or directory")
}

// TestCheckGettingStarted: the configuration docs/getting-started.md has
// the reader write (step 2, then step 5 appended to it) passes the check.
func TestCheckGettingStarted(t *testing.T) {
	doc, err := os.ReadFile("../../docs/getting-started.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile(`(?s)cat >>? /etc/fulcrum/fulcrum.yaml <<'EOF'\n(.*?)\nEOF\n`).FindAllStringSubmatch(string(doc), -1)
	if len(blocks) != 2 {
		t.Fatalf("%d config blocks in docs/getting-started.md, want 2 (dsr, then ipip appended)", len(blocks))
	}
	dir := t.TempDir()
	cfg := ""
	for i, b := range blocks {
		cfg += b[1] + "\n"
		path := filepath.Join(dir, fmt.Sprintf("step%d.yaml", i+1))
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("%s: good: 1 interface, %s, %s\n", path, plural(i+1, "VIP"), plural(2*(i+1), "backend"))
		runCLI(t, "check", "-f", path).check(t, exitOK, want, "")
	}
}
