package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// TestManPages runs `fulcrum man-pages DIR` (what make man runs) and walks
// the command tree of the CLI: every visible command has its page, the
// page names the command and every one of its flags, fulcrum(8) names the
// global flags, and there is no page for anything else.
func TestManPages(t *testing.T) {
	dir := t.TempDir()
	runCLI(t, "man-pages", dir).check(t, exitOK, "", "")

	read := func(name string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, "man8", name+".8"))
		if err != nil {
			t.Fatalf("no page %s(8): %v", name, err)
		}
		// roff writes a dash as \-.
		page := strings.ReplaceAll(string(b), `\-`, "-")
		if !strings.HasPrefix(page, ".nh\n.TH ") && !strings.Contains(page, "\n.TH ") {
			t.Errorf("%s.8 has no .TH title line:\n%s", name, page)
		}
		return page
	}
	mentions := func(name, page string, flags []cli.Flag) {
		t.Helper()
		for _, f := range flags {
			if f == cli.HelpFlag {
				continue
			}
			for _, n := range f.Names() {
				if !strings.Contains(page, dashes(n)) {
					t.Errorf("%s(8) does not mention the flag %s", name, dashes(n))
				}
			}
		}
	}

	app := newApp(os.Stdout, os.Stderr, nil)
	want := []string{"fulcrum.8"}
	mentions("fulcrum", read("fulcrum"), app.VisibleFlags())
	var walk func(path []string, cmds []*cli.Command)
	walk = func(path []string, cmds []*cli.Command) {
		for _, c := range cmds {
			if c.Hidden || c.Name == "help" {
				continue
			}
			p := append(append([]string{}, path...), c.Name)
			name := "fulcrum-" + strings.Join(p, "-")
			want = append(want, name+".8")
			page := read(name)
			if !strings.Contains(page, strings.Join(p, " ")) {
				t.Errorf("%s(8) does not name the command %q", name, strings.Join(p, " "))
			}
			mentions(name, page, c.Flags)
			walk(p, c.Subcommands)
		}
	}
	walk(nil, app.Commands)
	if len(want) < 20 {
		t.Fatalf("walked %d commands; the tree has more than 20", len(want))
	}

	entries, err := os.ReadDir(filepath.Join(dir, "man8"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("pages %v, want %v", got, want)
	}
}

func TestManPagesArguments(t *testing.T) {
	runCLI(t, "man-pages").fails(t, exitUsage, "fulcrum: man-pages: missing DIR: want the directory to write man8/*.8 into")
}
