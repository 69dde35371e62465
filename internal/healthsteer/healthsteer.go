// Package healthsteer loads and drives the tc egress program that steers
// through-datapath health probes (bpf/healthsteer.c). A probe socket
// connects to a VIP with SO_MARK set to a mark this package owns; the
// program, attached at egress of the load balancer's interfaces, looks the
// mark up and sends the packet to that mark's one backend: in dsr mode by
// rewriting the destination MAC, in ipip mode by putting an outer IPv4 or
// IPv6 header to the backend in front of it. docs/health.md describes the
// whole path.
//
// Requires Linux 6.6 or later (TCX links); developed on 6.18.
package healthsteer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/internal/linkset"
)

// MaxTargets is the capacity of the mark map, from bpf/healthsteer.h.
const MaxTargets = 65536

// DefaultMarkBase is the first mark of the default range, 0x46430000
// ("FC" in the upper 16 bits): marks DefaultMarkBase to DefaultMarkBase +
// MaxTargets - 1 belong to Fulcrum. Pick another base if the host's own
// policy routing or firewall uses marks in that range.
const DefaultMarkBase uint32 = 0x46430000

// Mode is how a marked probe reaches its backend.
type Mode uint8

// Modes, as the VIP's forwarding modes.
const (
	DSR  = Mode(healthsteerSteerModeSTEER_MODE_DSR)
	IPIP = Mode(healthsteerSteerModeSTEER_MODE_IPIP)
)

func (m Mode) String() string {
	switch m {
	case DSR:
		return "dsr"
	case IPIP:
		return "ipip"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// Target is where the probes of one mark go.
type Target struct {
	Mode Mode
	// Ifindex is the interface the steered packet leaves by; if it is not
	// the one the probe was routed to, the program redirects it there.
	// 0 means the one it was routed to.
	Ifindex int
	// SrcMAC is Ifindex's MAC; DstMAC the backend's (dsr) or the next
	// hop's towards the backend (ipip).
	SrcMAC, DstMAC net.HardwareAddr
	// Backend and Source are the outer destination and source of ipip;
	// unused by dsr. Both of one family, IPv4 in its 4-byte form.
	Backend, Source netip.Addr
}

// Options configure the program at load time.
type Options struct {
	// MarkBase and MarkCount are the marks the program owns:
	// [MarkBase, MarkBase+MarkCount). Zero values mean DefaultMarkBase
	// and MaxTargets. Packets with other marks are not looked at.
	MarkBase, MarkCount uint32
}

// Steerer owns the loaded program and its maps; it is their only writer.
// Its methods are safe for concurrent use.
type Steerer struct {
	base, count uint32

	mu    sync.Mutex
	objs  healthsteerObjects
	links linkset.Set // TCX egress attachments by ifindex
}

// Load checks opts and loads the program and its maps into the kernel
// without attaching them. It needs root (CAP_BPF and CAP_NET_ADMIN).
func Load(opts Options) (*Steerer, error) {
	if opts.MarkBase == 0 {
		opts.MarkBase = DefaultMarkBase
	}
	if opts.MarkCount == 0 {
		opts.MarkCount = MaxTargets
	}
	if opts.MarkCount > MaxTargets {
		return nil, fmt.Errorf("health steering: %d marks, at most %d fit the map", opts.MarkCount, MaxTargets)
	}
	if uint64(opts.MarkBase)+uint64(opts.MarkCount) > 1<<32 {
		return nil, fmt.Errorf("health steering: marks %#x + %d overflow 32 bits", opts.MarkBase, opts.MarkCount)
	}
	spec, err := loadHealthsteer()
	if err != nil {
		return nil, fmt.Errorf("load health steering spec: %w", err)
	}
	if err := spec.Variables[healthsteerVarMarkBase].Set(opts.MarkBase); err != nil {
		return nil, fmt.Errorf("health steering: set mark_base: %w", err)
	}
	if err := spec.Variables[healthsteerVarMarkCount].Set(opts.MarkCount); err != nil {
		return nil, fmt.Errorf("health steering: set mark_count: %w", err)
	}
	s := &Steerer{base: opts.MarkBase, count: opts.MarkCount, links: make(linkset.Set)}
	if err := spec.LoadAndAssign(&s.objs, nil); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("load health steering: %+v", verr)
		}
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("load health steering: %w (loading BPF programs needs root)", err)
		}
		return nil, fmt.Errorf("load health steering: %w", err)
	}
	return s, nil
}

// Marks returns the range of marks the program owns: [base, base+count).
func (s *Steerer) Marks() (base, count uint32) { return s.base, s.count }

// Program returns the program, for tests that run it with BPF_PROG_RUN.
func (s *Steerer) Program() *ebpf.Program { return s.objs.FulcrumHealthsteer }

// Set points mark at t. It refuses a mark outside the range and a target
// that cannot be steered.
func (s *Steerer) Set(mark uint32, t Target) error {
	if mark-s.base >= s.count {
		return fmt.Errorf("set steering of mark %#x: outside the range %#x-%#x", mark, s.base, s.base+s.count-1)
	}
	v, err := value(t)
	if err != nil {
		return fmt.Errorf("set steering of mark %#x: %w", mark, err)
	}
	if err := s.objs.SteerTargets.Update(mark, v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("set steering of mark %#x: %w", mark, err)
	}
	return nil
}

// Delete removes mark's entry; removing an absent one is not an error.
func (s *Steerer) Delete(mark uint32) error {
	if err := s.objs.SteerTargets.Delete(mark); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete steering of mark %#x: %w", mark, err)
	}
	return nil
}

// Lookup returns mark's entry as the map holds it, for tests and
// diagnosis.
func (s *Steerer) Lookup(mark uint32) (Target, bool, error) {
	var v healthsteerSteerTarget
	if err := s.objs.SteerTargets.Lookup(mark, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return Target{}, false, nil
		}
		return Target{}, false, fmt.Errorf("look up steering of mark %#x: %w", mark, err)
	}
	t := Target{Mode: Mode(v.Mode), Ifindex: int(v.Ifindex),
		SrcMAC: net.HardwareAddr(v.Smac[:]), DstMAC: net.HardwareAddr(v.Dmac[:])}
	if t.Mode == IPIP {
		t.Backend, t.Source = fromWords(v.Family, v.Daddr), fromWords(v.Family, v.Saddr)
	}
	return t, true, nil
}

// value checks t and renders it as the map's value.
func value(t Target) (healthsteerSteerTarget, error) {
	var v healthsteerSteerTarget
	if t.Mode != DSR && t.Mode != IPIP {
		return v, fmt.Errorf("unknown mode %d", t.Mode)
	}
	if t.Ifindex < 0 || t.Ifindex > 1<<31-1 {
		return v, fmt.Errorf("bad ifindex %d", t.Ifindex)
	}
	if len(t.SrcMAC) != 6 || len(t.DstMAC) != 6 {
		return v, fmt.Errorf("source MAC %q and destination MAC %q: want 6 bytes each", t.SrcMAC, t.DstMAC)
	}
	v.Mode, v.Ifindex = uint8(t.Mode), uint32(t.Ifindex)
	copy(v.Smac[:], t.SrcMAC)
	copy(v.Dmac[:], t.DstMAC)
	if t.Mode == IPIP {
		b, src := t.Backend.Unmap(), t.Source.Unmap()
		if !b.IsValid() || !src.IsValid() || b.Is4() != src.Is4() {
			return v, fmt.Errorf("ipip needs a backend and a source address of one family, got %v and %v", t.Backend, t.Source)
		}
		v.Family = unix.AF_INET6
		if b.Is4() {
			v.Family = unix.AF_INET
		}
		v.Daddr, v.Saddr = words(b), words(src)
	}
	return v, nil
}

// words lays an address out as the program's __be32[4]: network order in
// memory, IPv4 in the first word.
func words(a netip.Addr) [4]uint32 {
	var b [16]byte
	if a.Is4() {
		a4 := a.As4()
		copy(b[:], a4[:])
	} else {
		b = a.As16()
	}
	var w [4]uint32
	for i := range w {
		w[i] = binary.NativeEndian.Uint32(b[4*i:])
	}
	return w
}

func fromWords(family uint8, w [4]uint32) netip.Addr {
	var b [16]byte
	for i := range w {
		binary.NativeEndian.PutUint32(b[4*i:], w[i])
	}
	if family == unix.AF_INET {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16(b)
}

// Attach attaches the program at TCX egress of the interface with the
// given index, in the network namespace of the calling thread. The link
// is not pinned: it goes away with this process, so a killed daemon
// leaves no steering behind.
func (s *Steerer) Attach(ifindex int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.links[ifindex]; ok {
		return nil
	}
	l, err := link.AttachTCX(link.TCXOptions{
		Interface: ifindex,
		Program:   s.objs.FulcrumHealthsteer,
		Attach:    ebpf.AttachTCXEgress,
	})
	if err != nil {
		return fmt.Errorf("attach health steering to tc egress of ifindex %d: %w", ifindex, err)
	}
	s.links[ifindex] = l
	return nil
}

// Attached returns the indexes of the interfaces the program is attached
// to, sorted.
func (s *Steerer) Attached() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.links.Indexes()
}

// Detach removes the program from every interface it is attached to.
func (s *Steerer) Detach() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.links.Close("health steering")
}

// Close detaches the program and releases it and its maps.
func (s *Steerer) Close() error {
	err := s.Detach()
	return errors.Join(err, s.objs.Close())
}

// Counters are the program's counters, summed over CPUs.
type Counters struct {
	Steered uint64 // sent towards their backend
	NoEntry uint64 // mark in range without an entry: left untouched
	NotIP   uint64 // marked, with an entry, not IPv4/IPv6: dropped
	Errors  uint64 // a helper failed: dropped
}

// Counters reads the counters.
func (s *Steerer) Counters() (Counters, error) {
	var perCPU []healthsteerSteerStatTable
	if err := s.objs.SteerStats.Lookup(uint32(0), &perCPU); err != nil {
		return Counters{}, fmt.Errorf("read health steering counters: %w", err)
	}
	var c Counters
	for _, cpu := range perCPU {
		c.Steered += cpu.Count[healthsteerSteerStatSTEER_STAT_STEERED]
		c.NoEntry += cpu.Count[healthsteerSteerStatSTEER_STAT_NO_ENTRY]
		c.NotIP += cpu.Count[healthsteerSteerStatSTEER_STAT_NOT_IP]
		c.Errors += cpu.Count[healthsteerSteerStatSTEER_STAT_ERROR]
	}
	return c, nil
}

// A compile-time check that the counter table has as many entries as the
// enum.
var _ [int(healthsteerSteerStatSTEER_STAT_MAX) - len(healthsteerSteerStatTable{}.Count)]struct{}
