package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fulcrum-lb/fulcrum/internal/require"
)

func TestCompletionArguments(t *testing.T) {
	runCLI(t, "completion").fails(t, exitUsage, "fulcrum: completion: missing SHELL: want bash or zsh")
	runCLI(t, "completion", "fish").fails(t, exitUsage, `fulcrum: completion: shell "fish": want bash or zsh`)
	for _, shell := range []string{"bash", "zsh"} {
		runCLI(t, "completion", shell).check(t, 0, completionScripts[shell], "")
	}
}

// TestShellCompletionWords: what the scripts ask the binary, the line so
// far plus --generate-bash-completion, and the words it answers.
func TestShellCompletionWords(t *testing.T) {
	for _, tt := range []struct {
		line []string
		want string
	}{
		{nil, "daemon\ndetach\napply\ncheck\nconfig\nvip\nbackend\nstatus\nstats\nexplain\ndecap\nvrrp\nbgp\nnode\nversion\ncompletion\nhelp\n"},
		{[]string{"backend"}, "add\nremove\ndrain\nweight\nlist\nhelp\n"},
		{[]string{"vip", "add", "--no"}, "--no-conntrack\n"},
		{[]string{"--o"}, "--output\n"},
		{[]string{"vip", "add", "--ring"}, "--ring-size\n--ring-size-max\n"},
		{[]string{"status"}, "help\n"}, // urfave/cli gives every command a help subcommand
	} {
		runCLI(t, append(tt.line, "--generate-bash-completion")...).check(t, 0, tt.want, "")
	}
}

// TestBashCompletion loads the bash script into bash and completes lines
// with the built binary, as a user's shell would.
func TestBashCompletion(t *testing.T) {
	bash := require.Tool(t, "bash")
	dir := t.TempDir()
	script := filepath.Join(dir, "fulcrum.bash")
	if err := os.WriteFile(script, []byte(completionScripts["bash"]), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := fulcrumBinary(t)
	for _, tt := range []struct {
		words string // COMP_WORDS; the last is the word being completed
		want  string
	}{
		{`fulcrum vip ""`, "add remove list help"},
		{`fulcrum backend d`, "drain"},
		{`fulcrum vip add tcp/203.0.113.10:80 --no`, "--no-conntrack"},
		{`fulcrum -o json s`, "status stats"},
	} {
		cmd := exec.Command(bash, "--norc", "--noprofile", "-c",
			`source "$1"; COMP_WORDS=(`+tt.words+`); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); COMP_WORDS[0]="$2"; __fulcrum_complete; echo "${COMPREPLY[*]}"`,
			"bash", script, bin)
		out, err := cmd.CombinedOutput()
		if got := strings.TrimSpace(string(out)); err != nil || got != tt.want {
			t.Errorf("completing %s: %q (%v), want %q", tt.words, got, err, tt.want)
		}
	}
}
