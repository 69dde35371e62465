package datapath

// Where the pins live, and whether they outlive the daemon.
//
// A pinned map, program or link lives as long as the bpffs that holds it,
// and a bpffs lives as long as one of its mounts: when the last mount goes,
// the kernel drops every pin in it, and the XDP link with its program
// detaches. A mount goes with its mount namespace, and that ends with the
// last process in it. `ip netns exec` and container runtimes start a
// process in a mount namespace of its own; a bpffs that the daemon mounts
// there ends with the daemon, and the fast path with it.
//
// So when the daemon starts in a mount namespace other than the one of the
// process that started it (the "outer" one: the operator's shell, systemd,
// a container's init), and finds no bpffs at the configured path, it mounts
// the bpffs in the outer namespace and the same bpffs at the same path in
// its own. The pins then outlive it, a restarted daemon finds them in the
// copy of the outer namespace that `ip netns exec` gives it, and
// `fulcrum detach` run from the outer namespace finds them where it looks.
// Where that cannot be done (the daemon is pid 1 of its pid namespace, as
// a container's entrypoint is, or it lacks the privilege) it mounts the
// bpffs privately and says, at start and at stop, that the fast path ends
// with it. docs/operations.md has the recipes.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

// DefaultBPFFS is where bpffs is normally mounted.
const DefaultBPFFS = "/sys/fs/bpf"

// IsBPFFS reports whether dir is the root of a mounted bpf filesystem.
func IsBPFFS(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == unix.BPF_FS_MAGIC
}

// EnsureBPFFS mounts a bpf filesystem at dir unless one is there already.
// A fresh machine (and every `ip netns exec`) has none at /sys/fs/bpf. It
// mounts in this process's mount namespace, whatever that is; the daemon
// uses MountBPFFS, which makes sure the mount outlives it.
func EnsureBPFFS(dir string) error {
	if IsBPFFS(dir) {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create bpffs mount point %s: %w", dir, err)
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs at %s: %w", dir, err)
	}
	return nil
}

// BPFFS is the bpffs that holds a daemon's pins, and what becomes of them
// when the daemon ends.
type BPFFS struct {
	Dir string
	// Outlives is false when the pins, and so the attached fast path, end
	// with this process.
	Outlives bool
	// Note says what was found or done, and when the pins do not outlive
	// the process, how to make them: a sentence for the start-up log (a
	// warning when !Outlives).
	Note string
	// Stop says what becomes of the fast path as the daemon stops: the end
	// of "stopping; ...".
	Stop string
}

// Stop sentences, one per verdict.
const (
	stopStays   = "the fast path stays attached"
	stopDetachF = "the fast path detaches with this process: its bpffs at %s ends with this process's mount namespace"
	stopMaybeF  = "the fast path stays attached if the bpffs at %s is mounted outside this mount namespace too"
	fixF        = "for hitless restarts, mount bpffs at %s where it outlives the daemon before starting it (on the host: mount -t bpf bpf %s; in a container: bind the host's bpffs there); see docs/operations.md"
)

// MountBPFFS makes sure a bpffs is mounted at dir, in a mount namespace
// that outlives this process when it can (see the top of this file), and
// says whether the pins outlive the process. It fails only when it can
// mount no bpffs at dir at all.
func MountBPFFS(dir string) (BPFFS, error) {
	b := BPFFS{Dir: dir, Outlives: true, Stop: stopStays}
	dies := func(why string) (BPFFS, error) {
		b.Outlives = false
		b.Note = "the fast path detaches when this process ends: " + why + "; " + fmt.Sprintf(fixF, dir, dir)
		b.Stop = fmt.Sprintf(stopDetachF, dir)
		return b, nil
	}
	own, err := mountNamespace("self")
	if err != nil {
		return b, err
	}
	outer, haveOuter := outerProcess(own)
	pid1 := os.Getpid() == 1

	if IsBPFFS(dir) {
		switch {
		case haveOuter:
			dev, err := superblock(dir)
			if err != nil {
				return b, err
			}
			if ok, err := mountedIn(outer.pid, dev); err != nil {
				return dies(fmt.Sprintf("the bpffs at %s is mounted in this private mount namespace, and the mounts of %s cannot be read (%v)", dir, outer, err))
			} else if !ok {
				return dies(fmt.Sprintf("the bpffs at %s is mounted only in this private mount namespace, not in that of %s, which started this process", dir, outer))
			}
			b.Note = fmt.Sprintf("pins outlive this process: the bpffs at %s is mounted in the mount namespace of %s too", dir, outer)
		case pid1:
			b.Note = fmt.Sprintf("pins outlive this process only if the bpffs at %s is mounted outside this mount namespace too (a host bpffs bound into a container is): as pid 1 of its pid namespace, this process ends its mount namespace when it ends", dir)
			b.Stop = fmt.Sprintf(stopMaybeF, dir)
		default:
			other, ok := sharer(own)
			if !ok {
				return dies(fmt.Sprintf("the bpffs at %s is mounted in a mount namespace that no other process (in sight) shares", dir))
			}
			b.Note = fmt.Sprintf("pins outlive this process: the bpffs at %s is in the mount namespace that this process shares with %s", dir, other)
		}
		return b, nil
	}

	if haveOuter {
		mounted, err := mountFrom(outer.pid, dir)
		if err == nil {
			if mounted {
				b.Note = fmt.Sprintf("pins outlive this process: mounted bpffs at %s in the mount namespace of %s, which started this process in a private one, and the same bpffs here", dir, outer)
			} else {
				b.Note = fmt.Sprintf("pins outlive this process: mounted the bpffs at %s of the mount namespace of %s, which started this process in a private one, here too", dir, outer)
			}
			return b, nil
		}
		if err2 := EnsureBPFFS(dir); err2 != nil {
			return b, errors.Join(err, err2)
		}
		return dies(fmt.Sprintf("could not mount bpffs at %s in the mount namespace of %s (%v), so it is mounted in this private mount namespace only", dir, outer, err))
	}

	if err := EnsureBPFFS(dir); err != nil {
		return b, err
	}
	if pid1 {
		return dies(fmt.Sprintf("this process is pid 1 of its pid namespace (a container's entrypoint?), and the bpffs it mounted at %s ends with its mount namespace", dir))
	}
	other, ok := sharer(own)
	if !ok {
		// No outer namespace in sight (an ancestor that may not be read)
		// and nobody else in this one: it ends with this process.
		return dies(fmt.Sprintf("the bpffs it mounted at %s is in a mount namespace that no other process (in sight) shares", dir))
	}
	b.Note = fmt.Sprintf("pins outlive this process: mounted bpffs at %s in the mount namespace that this process shares with %s", dir, other)
	return b, nil
}

// sharer finds another process in the mount namespace own, which keeps it
// (and the mounts in it) after this process ends: the parent if it is one,
// else any.
func sharer(own uint64) (process, bool) {
	pids := []string{strconv.Itoa(os.Getppid())}
	if entries, err := os.ReadDir("/proc"); err == nil {
		for _, e := range entries {
			pids = append(pids, e.Name())
		}
	}
	self := strconv.Itoa(os.Getpid())
	for _, p := range pids {
		pid, err := strconv.Atoi(p)
		if err != nil || p == self || pid <= 0 {
			continue
		}
		if ns, err := mountNamespace(p); err == nil && ns == own {
			return process{pid: pid, comm: comm(p)}, true
		}
	}
	return process{}, false
}

// process names a process for messages.
type process struct {
	pid  int
	comm string
}

func (p process) String() string { return fmt.Sprintf("pid %d (%s)", p.pid, p.comm) }

// mountNamespace returns the inode of the mount namespace of /proc/PID.
func mountNamespace(pid string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/"+pid+"/ns/mnt", &st); err != nil {
		return 0, fmt.Errorf("mount namespace of %s: %w", pid, err)
	}
	return st.Ino, nil
}

// outerProcess finds the nearest ancestor of this process that is in a
// mount namespace other than own. It stops, finding none, at pid 1, at the
// edge of the pid namespace (a parent of 0), and at an ancestor whose
// namespace it may not read.
func outerProcess(own uint64) (process, bool) {
	pid := os.Getppid()
	for range 1 << 16 { // a bound against a loop in a changing /proc
		if pid <= 0 {
			break
		}
		p := strconv.Itoa(pid)
		ns, err := mountNamespace(p)
		if err != nil {
			break
		}
		if ns != own {
			return process{pid: pid, comm: comm(p)}, true
		}
		if pid == 1 {
			break
		}
		if pid, err = parentOf(p); err != nil {
			break
		}
	}
	return process{}, false
}

// parentOf reads a process's parent from /proc/PID/stat: the field after
// the state, which follows the command name in parentheses (the name may
// hold spaces and parentheses itself, hence the last one).
func parentOf(pid string) (int, error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 2 {
		return 0, fmt.Errorf("/proc/%s/stat: no parent in %q", pid, s)
	}
	return strconv.Atoi(fields[1])
}

func comm(pid string) string {
	b, _ := os.ReadFile("/proc/" + pid + "/comm")
	return strings.TrimSpace(string(b))
}

// superblock returns the device number of the file system at dir: each
// bpffs has its own, and /proc/PID/mountinfo lists it for every mount.
func superblock(dir string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", dir, err)
	}
	return st.Dev, nil
}

// mountedIn reports whether the bpffs with device number dev is mounted
// anywhere in the mount namespace of pid.
func mountedIn(pid int, dev uint64) (bool, error) {
	mounts, err := procfs.GetProcMounts(pid)
	if err != nil {
		return false, err
	}
	for _, m := range mounts {
		maj, min, _ := strings.Cut(m.MajorMinorVer, ":")
		ma, err1 := strconv.ParseUint(maj, 10, 32)
		mi, err2 := strconv.ParseUint(min, 10, 32)
		if err1 != nil || err2 != nil {
			return false, fmt.Errorf("/proc/%d/mountinfo: bad device %q", pid, m.MajorMinorVer)
		}
		if m.FSType == "bpf" && unix.Mkdev(uint32(ma), uint32(mi)) == dev {
			return true, nil
		}
	}
	return false, nil
}

// inMountNamespaceOf runs fn on a thread that has joined the mount
// namespace of pid. A thread can join one only once it no longer shares
// its file system context (root, working directory) with the others,
// hence unshare(CLONE_FS) first. The thread stays locked to the goroutine,
// so that it ends with it and never runs other Go code in the wrong
// namespace.
func inMountNamespaceOf(pid int, fn func() error) error {
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	if err != nil {
		return err
	}
	defer f.Close()
	fd := int(f.Fd())
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // and never unlocked: see above
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			errc <- fmt.Errorf("unshare the file system context: %w", err)
			return
		}
		if err := unix.Setns(fd, unix.CLONE_NEWNS); err != nil {
			errc <- fmt.Errorf("join the mount namespace: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// mountFrom mounts at dir, here, the bpffs at dir in the mount namespace
// of pid, mounting one there first if there is none (mounted says so).
// The mount there is cloned (open_tree) and the clone moved here
// (move_mount), unless propagation from there has brought it already.
func mountFrom(pid int, dir string) (mounted bool, err error) {
	clone := -1
	err = inMountNamespaceOf(pid, func() error {
		if !IsBPFFS(dir) {
			if err := EnsureBPFFS(dir); err != nil {
				return err
			}
			mounted = true
		}
		fd, err := unix.OpenTree(unix.AT_FDCWD, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
		if err != nil {
			return fmt.Errorf("clone the mount at %s: %w", dir, err)
		}
		clone = fd
		return nil
	})
	if err == nil {
		defer unix.Close(clone)
		err = moveHere(clone, dir)
	}
	if err != nil && mounted {
		// Leave nothing behind in the other namespace.
		inMountNamespaceOf(pid, func() error { return unix.Unmount(dir, unix.MNT_DETACH) })
	}
	return mounted, err
}

// moveHere mounts the detached mount clone at dir, unless dir holds that
// file system already.
func moveHere(clone int, dir string) error {
	var want unix.Stat_t
	if err := unix.Fstat(clone, &want); err != nil {
		return fmt.Errorf("stat the cloned mount: %w", err)
	}
	if IsBPFFS(dir) {
		if dev, err := superblock(dir); err == nil && dev == want.Dev {
			return nil
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create bpffs mount point %s: %w", dir, err)
	}
	if err := unix.MoveMount(clone, "", unix.AT_FDCWD, dir, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("mount the cloned bpffs at %s: %w", dir, err)
	}
	return nil
}

// Detach removes the pins of an instance under the bpffs at root, and says
// what it did. It looks in this mount namespace, then in that of the
// nearest ancestor in another one (where a daemon run in a private mount
// namespace mounts its bpffs). Pins in neither are not removed: when some
// other process's mount namespace holds them, the error names it and says
// how to run the detach there.
func Detach(root, instance string) (string, error) {
	// The same path is looked up in other namespaces, from their root.
	root, err := filepath.Abs(root)
	if err != nil {
		return "", err
	}
	dir := PinDir(root, instance)
	if IsBPFFS(root) && pinsExist(dir) {
		if err := RemovePins(dir); err != nil {
			return "", err
		}
		return "detached: removed " + dir, nil
	}
	own, err := mountNamespace("self")
	if err != nil {
		return "", err
	}
	seen := map[uint64]bool{own: true}
	if outer, ok := outerProcess(own); ok {
		if ns, err := mountNamespace(strconv.Itoa(outer.pid)); err == nil {
			seen[ns] = true
		}
		there := filepath.Join(fmt.Sprintf("/proc/%d/root", outer.pid), root)
		if IsBPFFS(there) && pinsExist(PinDir(there, instance)) {
			if err := RemovePins(PinDir(there, instance)); err != nil {
				return "", err
			}
			return fmt.Sprintf("detached: removed %s in the mount namespace of %s", dir, outer), nil
		}
	}
	if holder, ok := pinsElsewhere(root, instance, seen); ok {
		return "", fmt.Errorf("no pins in %s in this mount namespace; the mount namespace of %s holds them (a daemon's under ip netns exec or in a container mounts its own bpffs there): run the detach in it, e.g. nsenter --mount --target %d fulcrum detach --instance %s --bpffs %s",
			dir, holder, holder.pid, instance, root)
	}
	if !IsBPFFS(root) {
		return fmt.Sprintf("nothing to detach: no bpffs at %s in this mount namespace, and no pins of instance %s at that path in any other; a daemon that mounted its own bpffs in a private mount namespace (ip netns exec, a container) took its pins, and the fast path, with it when it ended", root, instance), nil
	}
	return fmt.Sprintf("nothing to detach: no pins in %s, nor at that path in any other mount namespace", dir), nil
}

// pinsElsewhere finds a process in a mount namespace (other than those in
// skip) that has the pins of instance under a bpffs at root.
func pinsElsewhere(root, instance string, skip map[uint64]bool) (process, bool) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return process{}, false
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ns, err := mountNamespace(e.Name())
		if err != nil || skip[ns] {
			continue
		}
		skip[ns] = true
		there := filepath.Join("/proc", e.Name(), "root", root)
		if IsBPFFS(there) && pinsExist(PinDir(there, instance)) {
			return process{pid: pid, comm: comm(e.Name())}, true
		}
	}
	return process{}, false
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
