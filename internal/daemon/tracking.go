package daemon

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/internal/reconcile"
)

// trackInterval is how often the node checks its own interfaces and XDP
// attachments for VRRP tracking. The checks are a netlink request per
// interface; backend health is tracked as it changes.
const trackInterval = 100 * time.Millisecond

// sickPriorityOffset takes a sick node's priority down to 1 (the offset is
// clamped there), below any healthy backup's.
const sickPriorityOffset = -254

// trackNode lowers the node's VRRP priority while it is sick, so that a
// healthy backup takes over (a sick master yields: the backup preempts, or
// becomes master when ours is lower than its own) and restores it when the
// node is well again. Sick means any of:
//   - a configured interface is down (not up and running);
//   - the balancer's XDP program is no longer attached to one of them
//     (detached by hand, or replaced by another program);
//   - every backend of some VIP is down.
//
// It runs until ctx ends; healthChanged calls track too, so that a VIP
// whose last backend went down is acted on at once.
func (d *Daemon) trackNode(ctx context.Context) {
	if d.vr == nil {
		return
	}
	tick := time.NewTicker(trackInterval)
	defer tick.Stop()
	for {
		d.track()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// track checks the node once and sets the VRRP priority offset.
func (d *Daemon) track() {
	if d.vr == nil {
		return
	}
	reasons := d.sickReasons()
	d.trackMu.Lock()
	defer d.trackMu.Unlock()
	if slices.Equal(reasons, d.sick) {
		return
	}
	switch {
	case len(reasons) > 0 && len(d.sick) == 0:
		d.log.Warn("vrrp: node sick, priority lowered to 1 so that a healthy backup takes over", "reasons", strings.Join(reasons, "; "))
	case len(reasons) > 0:
		d.log.Warn("vrrp: node still sick", "reasons", strings.Join(reasons, "; "))
	default:
		d.log.Info("vrrp: node well again, priority restored")
	}
	d.sick = reasons
	if len(reasons) > 0 {
		d.vr.SetPriorityOffset(sickPriorityOffset)
	} else {
		d.vr.SetPriorityOffset(0)
	}
}

// VRRPSick implements metrics.Source.
func (d *Daemon) VRRPSick() bool { return len(d.Sick()) > 0 }

// Sick returns why the node is sick for VRRP tracking, or nothing.
func (d *Daemon) Sick() []string {
	d.trackMu.Lock()
	defer d.trackMu.Unlock()
	return slices.Clone(d.sick)
}

// sickReasons returns what is wrong with the node, sorted.
func (d *Daemon) sickReasons() []string {
	out := d.nodeReasons()
	for vip, m := range d.rec.HealthOf() {
		all := len(m) > 0
		for _, h := range m {
			all = all && h == reconcile.Down
		}
		if all {
			out = append(out, fmt.Sprintf("every backend of %s is down", vip))
		}
	}
	slices.Sort(out)
	return out
}

// nodeReasons returns what is wrong with the node as a whole, whatever
// the VIPs: an interface down, the balancer detached from one. BGP
// withdraws every VIP for these, but only a VIP's own address when its
// backends are down (bgp.go).
func (d *Daemon) nodeReasons() []string {
	var out []string
	for _, ifc := range d.ifaces {
		l, err := netlink.LinkByIndex(ifc.Ifindex)
		if err != nil {
			out = append(out, fmt.Sprintf("interface %s: %v", ifc.Name, err))
			continue
		}
		a := l.Attrs()
		if a.RawFlags&unix.IFF_UP == 0 || a.RawFlags&unix.IFF_RUNNING == 0 {
			out = append(out, fmt.Sprintf("interface %s is down", ifc.Name))
		}
		// What the kernel has on the interface, not the datapath's own
		// list: the daemon never detaches while it runs, others may.
		if a.Xdp == nil || !a.Xdp.Attached || ebpf.ProgramID(a.Xdp.ProgId) != d.progID {
			out = append(out, fmt.Sprintf("the balancer is not attached to %s", ifc.Name))
		}
	}
	return out
}
