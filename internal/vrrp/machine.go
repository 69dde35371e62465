package vrrp

import (
	"fmt"
	"net/netip"
	"time"
)

// State is a virtual router's state.
type State int32

// States of RFC 5798 §6.4, plus Fault.
const (
	// Initialize: not running (before Run, after it returns).
	Initialize State = iota
	// Backup: watching the master; takes over when it falls silent.
	Backup
	// Master: advertising and holding the virtual addresses.
	Master
	// Fault: the interface is down (or has no usable source address), so
	// the router can neither hear nor advertise. Not in the RFC; keepalived
	// has the same state. It ends in Backup when the interface comes back.
	Fault
)

func (s State) String() string {
	switch s {
	case Initialize:
		return "init"
	case Backup:
		return "backup"
	case Master:
		return "master"
	case Fault:
		return "fault"
	}
	return fmt.Sprintf("State(%d)", int32(s))
}

// MarshalText makes a State read as its name in JSON and logs.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a State's name (the VRRP agent sends its stats to
// the daemon as JSON).
func (s *State) UnmarshalText(b []byte) error {
	for _, x := range []State{Initialize, Backup, Master, Fault} {
		if string(b) == x.String() {
			*s = x
			return nil
		}
	}
	return fmt.Errorf("vrrp: unknown state %q", b)
}

// actions is what the state machine does to the world. Calls happen on the
// machine's goroutine, in order.
type actions interface {
	// advertise sends one advertisement with the given priority.
	advertise(priority uint8)
	// transition reports a state change; why is a constant phrase.
	transition(from, to State, why string)
}

// machine is the protocol of RFC 5798 §6.4 with no clock and no sockets:
// events come in with the current time, timers are deadlines that next
// reports, and what it does goes through actions. Intervals are in
// centiseconds, as on the wire, and computed with integer arithmetic as
// the RFC writes them.
type machine struct {
	out actions

	// Configuration.
	priority     uint8 // effective priority (configured + offset)
	advertInt    int   // Advertisement_Interval, centiseconds
	preempt      bool
	preemptDelay time.Duration
	primary      netip.Addr // our primary address, for the tie-break

	state     State
	masterInt int       // Master_Adver_Interval, centiseconds
	adverAt   time.Time // Adver_Timer; zero = stopped
	downAt    time.Time // Master_Down_Timer; zero = stopped
	// preemptAt is when the preemption delay after a start ends.
	preemptAt time.Time
	// suspended is set by a handover: no preemption until resume.
	suspended bool
	// master is the primary address of the master as last heard (ours when
	// master); zero when unknown.
	master netip.Addr
}

// cs converts centiseconds to a duration.
func cs(n int) time.Duration { return time.Duration(n) * 10 * time.Millisecond }

// skew is Skew_Time in centiseconds: ((256 - Priority) * Master_Adver_Interval) / 256.
func (m *machine) skew() int { return (256 - int(m.priority)) * m.masterInt / 256 }

// downInterval is Master_Down_Interval in centiseconds:
// 3 * Master_Adver_Interval + Skew_Time.
func (m *machine) downInterval() int { return 3*m.masterInt + m.skew() }

// next returns when tick has something to do: the Adver_Timer of a master
// or the Master_Down_Timer of a backup; the zero time if neither runs.
// Only the timer of the current state counts, so that a deadline tick
// would ignore can never make the loop spin.
func (m *machine) next() time.Time {
	switch m.state {
	case Master:
		return m.adverAt
	case Backup:
		return m.downAt
	}
	return time.Time{}
}

func (m *machine) set(to State, why string) {
	from := m.state
	m.state = to
	if to == Master {
		m.master = m.primary
	}
	m.out.transition(from, to, why)
}

// preempting reports whether a lower-priority master is to be overthrown.
func (m *machine) preempting(now time.Time) bool {
	return m.preempt && !m.suspended && !now.Before(m.preemptAt)
}

// start is the Startup event in Initialize (or the interface coming back
// in Fault).
func (m *machine) start(now time.Time, why string) {
	m.preemptAt = now.Add(m.preemptDelay)
	m.master = netip.Addr{}
	if m.priority == 255 {
		m.set(Master, "address owner (priority 255)")
		m.advertise(now)
		return
	}
	m.masterInt = m.advertInt
	m.adverAt = time.Time{}
	m.downAt = now.Add(cs(m.downInterval()))
	m.set(Backup, why)
}

// advertise sends an advertisement and restarts the Adver_Timer.
func (m *machine) advertise(now time.Time) {
	m.out.advertise(m.priority)
	m.adverAt = now.Add(cs(m.advertInt))
}

// tick fires the timers that are due.
func (m *machine) tick(now time.Time) {
	switch m.state {
	case Backup:
		if !m.downAt.IsZero() && !now.Before(m.downAt) {
			m.downAt = time.Time{}
			// RFC 5798 6.4.2 lists the advertisement before the
			// gratuitous ARPs; both go out at once, but a send call
			// can stall on a flooded CPU (the kernel runs pending
			// softirq work in it), and the announcements are what
			// move the traffic here: they go first.
			m.set(Master, "master down timer expired")
			m.advertise(now)
		}
	case Master:
		if !m.adverAt.IsZero() && !now.Before(m.adverAt) {
			m.out.advertise(m.priority)
			// Keep the cadence; after a stall, restart it from now.
			if m.adverAt = m.adverAt.Add(cs(m.advertInt)); !m.adverAt.After(now) {
				m.adverAt = now.Add(cs(m.advertInt))
			}
		}
	}
}

// receive handles a valid advertisement of our virtual router from src.
// It returns false if the RFC says to discard it (a lower-priority master
// being preempted, or a weaker master while we are master).
func (m *machine) receive(now time.Time, src netip.Addr, priority uint8, interval int) bool {
	switch m.state {
	case Backup:
		if priority == 0 {
			// The master is leaving: take over after Skew_Time.
			m.downAt = now.Add(cs(m.skew()))
			m.master = netip.Addr{}
			return true
		}
		if !m.preempting(now) || priority >= m.priority {
			m.masterInt = interval
			m.downAt = now.Add(cs(m.downInterval()))
			m.master = src
			return true
		}
		return false
	case Master:
		if priority == 0 {
			m.advertise(now)
			return true
		}
		if priority > m.priority || priority == m.priority && src.Compare(m.primary) > 0 {
			m.adverAt = time.Time{}
			m.masterInt = interval
			m.downAt = now.Add(cs(m.downInterval()))
			m.master = src
			m.set(Backup, "higher-priority advertisement")
			return true
		}
		return false
	}
	return false
}

// shutdown is the Shutdown event: a master advertises priority 0.
func (m *machine) shutdown(why string) {
	if m.state == Master {
		m.out.advertise(0)
	}
	m.adverAt, m.downAt = time.Time{}, time.Time{}
	m.master = netip.Addr{}
	if m.state != Initialize {
		m.set(Initialize, why)
	}
}

// fault stops the timers and enters Fault (the interface went down).
func (m *machine) fault(why string) {
	m.adverAt, m.downAt = time.Time{}, time.Time{}
	m.master = netip.Addr{}
	if m.state != Fault {
		m.set(Fault, why)
	}
}

// handover gives mastership away: a master advertises priority 0, so that
// the best backup takes over after its Skew_Time, and becomes a backup.
// Preemption stays off until resume, so that the router does not take
// mastership straight back; it still takes over if no master appears.
func (m *machine) handover(now time.Time) {
	m.suspended = true
	if m.state != Master {
		return
	}
	m.out.advertise(0)
	m.adverAt = time.Time{}
	m.masterInt = m.advertInt
	m.downAt = now.Add(cs(m.downInterval()))
	m.master = netip.Addr{}
	m.set(Backup, "handover")
}

// resume ends a handover: preemption applies again.
func (m *machine) resume() { m.suspended = false }

// setPriority changes the effective priority. A master advertises the new
// one at once, so that a better backup can preempt it without waiting.
func (m *machine) setPriority(now time.Time, p uint8) {
	if p == m.priority {
		return
	}
	m.priority = p
	if m.state == Master {
		m.advertise(now)
	}
}
