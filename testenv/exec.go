package testenv

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

var (
	ipOnce sync.Once
	ipPath string
)

// ipCommand finds iproute2's ip, also when /usr/sbin is not on PATH.
func ipCommand() string {
	ipOnce.Do(func() {
		ipPath = "ip"
		if p, err := exec.LookPath("ip"); err == nil {
			ipPath = p
			return
		}
		for _, p := range []string{"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"} {
			if _, err := exec.LookPath(p); err == nil {
				ipPath = p
				return
			}
		}
	})
	return ipPath
}

// Command returns `ip netns exec NAME name args...`; ip execs the command
// in place, so the process's PID is the command's. The process gets its own
// process group, so that it and its children can be killed together, also
// when ctx is cancelled.
//
// There is deliberately no Pdeathsig: the kernel sends it when the *thread*
// that forked the process exits, and Go ends threads whenever a goroutine
// exits while locked to one (pkg/vrrp's protocol thread does, by design).
// With it, keepalived started by a test died now and then the moment an
// in-process VRRP router stopped, as if keepalived had a bug. Processes are
// killed by their owners' cleanups and by the Env (Start).
//
// A command started from the returned Cmd is not tracked; use Start for
// background processes that must die with the Env.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	argv := append([]string{"netns", "exec", h.Name, name}, args...)
	cmd := exec.CommandContext(ctx, ipCommand(), argv...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); err != nil {
			return cmd.Process.Kill()
		}
		return nil
	}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Run runs the command in the host's namespace to completion and returns its
// combined output. On failure the error includes that output.
func (h *Host) Run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := h.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("testenv: %s: %s %s: %w\n%s",
			h.Name, name, strings.Join(args, " "), err, strings.TrimRight(string(out), "\n"))
	}
	return string(out), nil
}

// Start starts the command in the host's namespace in the background. Its
// process group is SIGKILLed when the Env closes (before the namespaces are
// deleted). The caller may Wait for it, before or after that.
func (h *Host) Start(ctx context.Context, name string, args ...string) (*exec.Cmd, error) {
	cmd := h.Command(ctx, name, args...)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("testenv: %s: start %s: %w", h.Name, name, err)
	}
	if err := h.env.addProc(cmd); err != nil {
		_ = killProcess(cmd)
		_ = cmd.Wait()
		return nil, err
	}
	return cmd, nil
}
