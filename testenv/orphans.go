package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// ownerDir holds a file per open Env, named by its prefix: the PID and the
// start time of the process that owns it, then the mount points it owns,
// one a line. A test process that dies before its cleanups run (the panic
// of `go test -timeout`, a SIGKILL) leaves its namespaces and mounts
// behind; the next Env opened on the machine removes those of owners that
// are gone (reapOrphans), so a killed run does not leak into the next.
const ownerDir = "/run/fulcrum-testenv"

// processStart returns the start time of process pid in clock ticks since
// boot (field 22 of /proc/PID/stat): with the PID it names one process,
// whatever later reuses the number.
func processStart(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	// The command name (field 2) may hold spaces; it ends at the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return "", fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 20 {
		return "", fmt.Errorf("/proc/%d/stat: %d fields after the name", pid, len(fields))
	}
	return fields[19], nil // field 22 of the whole line
}

// claim records this process as the owner of prefix, with its mounts.
func claim(prefix string, mounts []string) error {
	start, err := processStart(os.Getpid())
	if err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	if err := os.MkdirAll(ownerDir, 0o755); err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s\n", os.Getpid(), start)
	for _, m := range mounts {
		b.WriteString(m + "\n")
	}
	if err := os.WriteFile(filepath.Join(ownerDir, prefix), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	return nil
}

// unclaim forgets prefix's owner; a missing file is not an error.
func unclaim(prefix string) error {
	if err := os.Remove(filepath.Join(ownerDir, prefix)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("testenv: %w", err)
	}
	return nil
}

// reapOrphans removes the namespaces and mounts of every prefix whose
// owning process is gone. A live owner's, and anything without an owner
// file, is left alone.
func reapOrphans() error {
	entries, err := os.ReadDir(ownerDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	var errs []error
	for _, ent := range entries {
		prefix := ent.Name()
		if !prefixRE.MatchString(prefix) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(ownerDir, prefix))
		if err != nil {
			continue // unclaimed meanwhile
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		var pid int
		var start string
		if _, err := fmt.Sscan(lines[0], &pid, &start); err != nil {
			errs = append(errs, fmt.Errorf("testenv: owner file of %s: %w", prefix, err))
			continue
		}
		if now, err := processStart(pid); err == nil && now == start {
			continue // the owner lives
		}
		errs = append(errs, removeOrphan(prefix, lines[1:]))
	}
	return errors.Join(errs...)
}

// removeOrphan deletes prefix's namespaces and mounts, then its owner file.
func removeOrphan(prefix string, mounts []string) error {
	var errs []error
	names, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("testenv: %w", err)
	}
	for _, n := range names {
		if strings.HasPrefix(n.Name(), prefix+"-") {
			errs = append(errs, deleteNamed(n.Name()))
		}
	}
	for _, m := range mounts {
		errs = append(errs, removeMount(m))
	}
	if err := errors.Join(errs...); err != nil {
		return err // keep the owner file: the next reap tries again
	}
	return unclaim(prefix)
}

// removeMount detaches the mount at dir and removes the directory.
func removeMount(dir string) error {
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		return fmt.Errorf("testenv: unmount %s: %w", dir, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	return nil
}

// OwnMount makes the mount at dir (made by the caller) part of the Env:
// Close detaches it and removes the directory, and if the process dies
// before Close, the next Env opened removes it with the namespaces.
func (e *Env) OwnMount(dir string) error {
	e.mu.Lock()
	e.mounts = append(e.mounts, dir)
	mounts := slices.Clone(e.mounts)
	e.mu.Unlock()
	e.addCleanup(func() error { return removeMount(dir) })
	return claim(e.Prefix, mounts)
}
