package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestCompletionScripts(t *testing.T) {
	runCLI(t, "completion", "bash").expect(t, 0, []string{"complete -o bashdefault -o default -F __fulcrum_complete fulcrum", "--generate-bash-completion"})
	runCLI(t, "completion", "zsh").expect(t, 0, []string{"#compdef fulcrum", "compdef __fulcrum fulcrum"})
	runCLI(t, "completion").expect(t, 2, nil, "fulcrum: completion: missing SHELL: want bash or zsh")
	runCLI(t, "completion", "fish").expect(t, 2, nil, `fulcrum: completion: shell "fish": want bash or zsh`)
}

func TestCompletionBashSyntax(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash to check the script's syntax")
	}
	path := filepath.Join(t.TempDir(), "fulcrum.bash")
	if err := os.WriteFile(path, []byte(completionScripts["bash"]), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bash, "-n", path).CombinedOutput(); err != nil {
		t.Errorf("bash -n: %v\n%s", err, out)
	}
}

func TestShellCompletionWords(t *testing.T) {
	// What the scripts run: the line so far plus --generate-bash-completion.
	r := runCLI(t, "--generate-bash-completion")
	r.expect(t, 0, []string{"vip\n", "backend\n", "explain\n", "completion\n"})
	r = runCLI(t, "backend", "--generate-bash-completion")
	r.expect(t, 0, []string{"drain\n", "weight\n"})
	if strings.Contains(r.stdout, "vip\n") {
		t.Errorf("backend's completions include top-level commands:\n%s", r.stdout)
	}
	r = runCLI(t, "vip", "add", "--no", "--generate-bash-completion")
	if r.code != 0 || r.stdout != "--no-conntrack\n" {
		t.Errorf("completing vip add --no: exit %d, %q; want --no-conntrack", r.code, r.stdout)
	}
	r = runCLI(t, "--o", "--generate-bash-completion")
	if r.stdout != "--output\n" {
		t.Errorf("completing --o: %q, want --output", r.stdout)
	}
}
