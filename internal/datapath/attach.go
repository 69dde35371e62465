package datapath

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf/link"
)

// AttachMode is how Attach puts the balancer on an interface.
type AttachMode uint8

// The attach modes.
const (
	// AttachNative has the driver run the program, before any skb is
	// allocated; a driver without XDP support refuses it.
	AttachNative AttachMode = iota
	// AttachGeneric runs the program on the kernel's skb path: it works on
	// every device, at a fraction of native speed.
	AttachGeneric
	// AttachAuto tries native and falls back to generic if the driver
	// refuses; NativeRefused then says why.
	AttachAuto
)

func (m AttachMode) String() string {
	switch m {
	case AttachNative:
		return "native"
	case AttachGeneric:
		return "generic"
	case AttachAuto:
		return "auto"
	}
	return fmt.Sprintf("AttachMode(%d)", uint8(m))
}

// attachXDP creates the XDP link of the program on ifindex in the given
// mode. The caller holds d.mu.
func (d *Datapath) attachXDP(ifindex int, mode AttachMode) (link.Link, error) {
	var f link.XDPAttachFlags
	switch mode {
	case AttachNative, AttachAuto:
		f = link.XDPDriverMode
	case AttachGeneric:
		f = link.XDPGenericMode
	default:
		return nil, fmt.Errorf("attach xdp to ifindex %d: unknown mode %s", ifindex, mode)
	}
	l, err := link.AttachXDP(link.XDPOptions{Program: d.objs.FulcrumBalancer, Interface: ifindex, Flags: f})
	if err == nil || mode != AttachAuto {
		if err != nil {
			return nil, fmt.Errorf("attach xdp to ifindex %d in %s mode: %w", ifindex, mode, err)
		}
		delete(d.refused, ifindex)
		return l, nil
	}
	// Any refusal of native mode is worth a generic try: drivers say no
	// with EOPNOTSUPP (no XDP support) but also with EINVAL (an MTU or a
	// queue count that native XDP cannot take). If generic fails too,
	// both reasons are returned.
	l, gerr := link.AttachXDP(link.XDPOptions{Program: d.objs.FulcrumBalancer, Interface: ifindex, Flags: link.XDPGenericMode})
	if gerr != nil {
		return nil, fmt.Errorf("attach xdp to ifindex %d: %w", ifindex, errors.Join(
			fmt.Errorf("native mode: %w", err), fmt.Errorf("generic mode: %w", gerr)))
	}
	d.refused[ifindex] = err
	return l, nil
}

// NativeRefused returns why the driver refused native XDP on ifindex
// where an AttachAuto attached in generic mode instead, or nil if it did
// not fall back (native, an explicit mode, or a pinned link taken over).
func (d *Datapath) NativeRefused(ifindex int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.refused[ifindex]
}
