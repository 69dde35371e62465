// Package decap loads and drives Fulcrum's backend-side XDP program, which
// removes the outer IPv4 or IPv6 header that the balancer's ipip mode adds
// (4in4, 6in4, 4in6, 6in6) from packets whose inner destination is one of
// the configured VIPs, and passes the inner packet to the host stack. It is
// for backends whose kernel has no ipip, sit or ip6_tunnel driver.
// docs/decap.md describes the rules the program applies.
//
// Requires Linux 5.9 or later (BPF links for XDP); developed on 6.18.
package decap

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/fulcrum-lb/fulcrum/internal/linkset"
)

// Decap owns the loaded decapsulation program and its maps; it is their
// only writer. Its methods are safe for concurrent use.
type Decap struct {
	mu   sync.Mutex
	objs decapObjects
	// links are the XDP attachments by ifindex.
	links linkset.Set
	// vips mirrors the VIP maps, so SetVIPs writes only the difference.
	vips map[netip.Addr]struct{}
}

// MaxVIPs is the capacity of each VIP set (IPv4 and IPv6), as the loaded
// maps have it (bpf/decap.c).
func (d *Decap) MaxVIPs() int {
	return int(min(d.objs.DecapVipsV4.MaxEntries(), d.objs.DecapVipsV6.MaxEntries()))
}

// Load loads the program and its maps into the kernel without attaching
// them. It needs root (CAP_BPF and CAP_NET_ADMIN).
func Load() (*Decap, error) {
	spec, err := loadDecap()
	if err != nil {
		return nil, fmt.Errorf("load decap spec: %w", err)
	}
	d := &Decap{links: make(linkset.Set), vips: make(map[netip.Addr]struct{})}
	if err := spec.LoadAndAssign(&d.objs, nil); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("load decap: %+v", verr)
		}
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("load decap: %w (loading BPF programs needs root)", err)
		}
		return nil, fmt.Errorf("load decap: %w", err)
	}
	return d, nil
}

// Program returns the decapsulation program, for tests that run it with
// BPF_PROG_RUN.
func (d *Decap) Program() *ebpf.Program {
	return d.objs.FulcrumDecap
}

// CheckVIP reports whether a can be a VIP: a unicast IPv4 or IPv6 address
// without a zone, IPv4 in its 4-byte form (an IPv4-mapped IPv6 address
// never appears as an inner destination).
func CheckVIP(a netip.Addr) error {
	switch {
	case !a.IsValid():
		return errors.New("an empty address is not a VIP")
	case a.Zone() != "":
		return fmt.Errorf("%s has a zone: want a global address", a)
	case a.Is4In6():
		return fmt.Errorf("%s is IPv4-mapped: write it as %s", a, a.Unmap())
	case a.IsUnspecified(), a.IsMulticast(), a.IsLoopback(), a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Errorf("%s is not a unicast address", a)
	}
	return nil
}

// SetVIPs replaces the set of VIPs whose packets are decapsulated. Every
// address is checked (CheckVIP) before anything is written; then the
// addresses that are new are added and those that are gone are removed.
// Duplicates are ignored. If a map write fails, the set is left between
// the old and the new one and a later SetVIPs completes it.
func (d *Decap) SetVIPs(vips []netip.Addr) error {
	want := make(map[netip.Addr]struct{}, len(vips))
	var n4, n6 int
	for _, a := range vips {
		if err := CheckVIP(a); err != nil {
			return fmt.Errorf("set decap vips: %w", err)
		}
		if _, dup := want[a]; dup {
			continue
		}
		want[a] = struct{}{}
		if a.Is4() {
			n4++
		} else {
			n6++
		}
	}
	if max := d.MaxVIPs(); n4 > max || n6 > max {
		return fmt.Errorf("set decap vips: %d IPv4 and %d IPv6 VIPs, at most %d of each fit", n4, n6, max)
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	// Add before removing: a VIP that stays is never missing.
	for _, a := range sortedAddrs(want) {
		if _, ok := d.vips[a]; ok {
			continue
		}
		var err error
		if a.Is4() {
			err = d.objs.DecapVipsV4.Update(a.As4(), uint32(0), ebpf.UpdateAny)
		} else {
			err = d.objs.DecapVipsV6.Update(in6(a), uint32(0), ebpf.UpdateAny)
		}
		if err != nil {
			return fmt.Errorf("set decap vips: add %s: %w", a, err)
		}
		d.vips[a] = struct{}{}
	}
	for _, a := range sortedAddrs(d.vips) {
		if _, ok := want[a]; ok {
			continue
		}
		var err error
		if a.Is4() {
			err = d.objs.DecapVipsV4.Delete(a.As4())
		} else {
			err = d.objs.DecapVipsV6.Delete(in6(a))
		}
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("set decap vips: remove %s: %w", a, err)
		}
		delete(d.vips, a)
	}
	return nil
}

// VIPs returns the VIPs that are decapsulated now, sorted.
func (d *Decap) VIPs() []netip.Addr {
	d.mu.Lock()
	defer d.mu.Unlock()
	return sortedAddrs(d.vips)
}

func in6(a netip.Addr) decapIn6Addr {
	var k decapIn6Addr
	k.In6U.U6Addr8 = a.As16()
	return k
}

func sortedAddrs(set map[netip.Addr]struct{}) []netip.Addr {
	out := make([]netip.Addr, 0, len(set))
	for a := range set {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// Attach attaches the program to the interface with the given index, in
// the network namespace of the calling thread. It uses native XDP unless
// generic is set; generic XDP works on any interface but is slower.
func (d *Decap) Attach(ifindex int, generic bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.links[ifindex]; ok {
		return fmt.Errorf("attach decap xdp to ifindex %d: already attached", ifindex)
	}
	flags := link.XDPDriverMode
	if generic {
		flags = link.XDPGenericMode
	}
	l, err := link.AttachXDP(link.XDPOptions{Program: d.objs.FulcrumDecap, Interface: ifindex, Flags: flags})
	if err != nil {
		return fmt.Errorf("attach decap xdp to ifindex %d: %w", ifindex, err)
	}
	d.links[ifindex] = l
	return nil
}

// Attached returns the indexes of the interfaces the program is attached
// to, sorted.
func (d *Decap) Attached() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.links.Indexes()
}

// Detach removes the program from every interface it is attached to.
func (d *Decap) Detach() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.links.Close("decap xdp")
}

// Close detaches the program and releases it and its maps.
func (d *Decap) Close() error {
	err := d.Detach()
	return errors.Join(err, d.objs.Close())
}
