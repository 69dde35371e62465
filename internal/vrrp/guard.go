package vrrp

import (
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// Guards: a master's advertisements when the protocol thread's CPU stalls.
//
// A real-time thread runs as soon as it wakes only if its CPU can switch
// to it. On a PREEMPT_NONE kernel a CPU that runs another task's system
// call (a process loading BPF programs or creating large maps, a linker
// writing its output, an exec) switches at that code's next preemption
// point, and a virtual CPU can be descheduled by the hypervisor (steal
// time). The scheduler does not move the woken thread to another CPU: the
// CPU it woke on runs an ordinary task, which it counts as preemptible.
// Traces of TestFailoverUnderLoad on a shared 2-vCPU VM showed the protocol
// thread runnable but not running for 45 ms (a Go linker), 100 ms (steal)
// and 1.7 s (another test's BPF work) while the other CPU ran only
// ordinary work (docs/vrrp-measurements.md).
//
// So a master also has a guard thread on each of up to maxGuards CPUs it
// may run on, real-time like the protocol thread and pinned: each sleeps
// until an advertisement is guardGrace overdue and sends it if the
// protocol thread still has not. A stall of one CPU then delays the
// advertisements by guardGrace, not by the stall. Every advertisement
// send, the loop's and the guards', holds r.sendMu, under which the loop
// publishes what a guard may send (armed, due, priority), so that a guard
// never sends once the loop has stopped being master or advertised
// priority 0.

// maxGuards bounds the guard threads: two CPUs stalled at once are rare,
// and each guard wakes once an interval.
const maxGuards = 2

// guardGrace is how overdue an advertisement is before a guard sends it:
// well above the protocol thread's wake-up on a busy CPU (tens of
// microseconds; a send call that runs softirq work holds it milliseconds,
// and that call's advertisement has left), well below the three intervals
// of master down.
func guardGrace(interval time.Duration) time.Duration {
	return min(max(interval/4, 2*time.Millisecond), 25*time.Millisecond)
}

// guardIdle is how often a guard looks again while not armed (a backup).
const guardIdle = 100 * time.Millisecond

// guardCPUs returns the CPUs the guards run on: the first maxGuards the
// process may run on, none if it may run on only one (a guard there
// stalls with the protocol thread).
func guardCPUs() []int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil || set.Count() < 2 {
		return nil
	}
	var cpus []int
	for c := 0; len(cpus) < maxGuards && c < len(set)*64; c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	return cpus
}

// publish tells the guards what the loop expects: whether it is a master
// with an advertisement timer, when the next advertisement is due, and at
// which priority. The loop calls it before it sleeps.
func (r *Router) publish() {
	armed := r.State() == Master && !r.m.adverAt.IsZero()
	r.sendMu.Lock()
	// After a stall the guards' cadence goes on: the next advertisement
	// is an interval after their last, not an interval after the loop
	// woke (if that is past, the loop sends at once).
	if armed && r.guard.byGuard {
		r.m.adverAt = r.guard.covered.Add(cs(r.m.advertInt))
	}
	r.guard.armed, r.guard.due, r.guard.priority = armed, r.m.adverAt, r.m.priority
	r.guard.interval = cs(r.m.advertInt)
	r.sendMu.Unlock()
}

// disarm stops the guards' sends (under r.sendMu): the loop is leaving
// Master, or has advertised priority 0.
func (r *Router) disarm() { r.guard.armed = false }

// guardLoop is one guard, pinned to cpu, until stop becomes readable.
func (r *Router) guardLoop(cpu, stop int) {
	runtime.LockOSThread() // never unlocked: the thread ends with the guard
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		r.log.Warn("vrrp: advertisement guard not pinned; it stops", "cpu", cpu, "err", err)
		return
	}
	if r.realtime > 0 {
		if err := setRealtime(r.realtime); err != nil {
			r.log.Warn("vrrp: advertisement guard without real-time priority; it stops", "cpu", cpu, "err", err)
			return
		}
		defer clearRealtime()
	}
	fds := []unix.PollFd{{Fd: int32(stop), Events: unix.POLLIN}}
	var ts unix.Timespec
	for {
		r.sendMu.Lock()
		armed, due, interval, covered := r.guard.armed, r.guard.due, r.guard.interval, r.guard.covered
		r.sendMu.Unlock()
		wait := guardIdle
		if armed {
			// After a guard's send the loop may not have run yet: the
			// next one is due an interval later.
			if !covered.Before(due) {
				due = covered.Add(interval)
			}
			wait = max(time.Until(due.Add(guardGrace(interval))), 0)
		}
		ts = unix.NsecToTimespec(int64(wait))
		if n, err := unix.Ppoll(fds, &ts, nil); n > 0 || (err != nil && err != unix.EINTR) {
			return // stopped (or the descriptor is gone)
		}
		if armed {
			r.guardSend(due)
		}
	}
}

// guardSend sends the advertisement due at due if neither the loop nor
// another guard has.
func (r *Router) guardSend(due time.Time) {
	// The loop holds the lock only to publish or send: it is running.
	if !r.sendMu.TryLock() {
		return
	}
	defer r.sendMu.Unlock()
	g := &r.guard
	// The loop advanced the timer (it sent, or is no longer master), or
	// another guard sent it.
	if !g.armed || g.due.After(due) || !g.covered.Before(due) || time.Now().Before(due.Add(guardGrace(g.interval))) {
		return
	}
	r.adv.Priority = g.priority
	n, err := r.sock.send(&r.adv, r.src, r.buf)
	r.sent.Add(uint64(n))
	if err != nil {
		r.sendErrors.Add(1)
		return
	}
	g.covered, g.byGuard = due, true
	r.guardSent.Add(1)
}
