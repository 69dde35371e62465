package daemon

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"

	"github.com/fulcrum-lb/fulcrum/internal/config"
	"github.com/fulcrum-lb/fulcrum/internal/datapath"
)

// attachMode is the datapath's attach mode for a configured xdp_mode.
func attachMode(m config.XDPMode) (datapath.AttachMode, error) {
	switch m {
	case config.XDPAuto:
		return datapath.AttachAuto, nil
	case config.XDPNative:
		return datapath.AttachNative, nil
	case config.XDPGeneric:
		return datapath.AttachGeneric, nil
	}
	return 0, fmt.Errorf("xdp_mode %q is not supported", m)
}

// noteAttached logs how the program sits on each interface and records,
// for status, the mode the kernel reports. It runs once the attachments
// are final: after a migration, Attach only queues them until the swap.
// A pinned link taken over keeps the mode it was created in, whatever the
// configuration says now; the log and status show it.
func (d *Daemon) noteAttached(dp *datapath.Datapath) {
	for i := range d.ifaces {
		ifc := &d.ifaces[i]
		ifc.XDPMode = kernelXDPMode(ifc.Ifindex)
		if err := dp.NativeRefused(ifc.Ifindex); err != nil {
			d.log.Warn("xdp_mode auto: the driver refused native XDP, attached in generic mode: every packet takes the kernel's skb path first",
				"interface", ifc.Name, "error", err)
		} else if ifc.XDPMode == "generic" {
			d.log.Warn("generic XDP: every packet takes the kernel's skb path first; use native mode in production", "interface", ifc.Name)
		}
		d.log.Info("attached", "interface", ifc.Name, "ifindex", ifc.Ifindex, "mode", ifc.XDPMode)
	}
}

// kernelXDPMode names the mode of the XDP program on an interface as the
// kernel reports it, or says why it cannot.
func kernelXDPMode(ifindex int) string {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return fmt.Sprintf("unknown (%v)", err)
	}
	x := l.Attrs().Xdp
	switch {
	case x == nil || !x.Attached:
		return "none"
	case x.AttachMode == nl.XDP_ATTACHED_DRV:
		return "native"
	case x.AttachMode == nl.XDP_ATTACHED_SKB:
		return "generic"
	case x.AttachMode == nl.XDP_ATTACHED_HW:
		return "offload"
	}
	return fmt.Sprintf("mode %d", x.AttachMode)
}
