package datapath_test

import (
	"errors"
	"testing"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/testenv"
)

// TestAttachAutoFallsBack attaches the balancer to lo in a namespace of
// its own: lo has no native XDP (no ndo_bpf), so native must fail, auto
// must fall back to generic and say why, and generic must attach without
// a refusal to report.
func TestAttachAutoFallsBack(t *testing.T) {
	require.BPF(t)
	require.Netns(t)
	h, err := testenv.NewEnv(t).NewNamespace("attach")
	if err != nil {
		t.Fatal(err)
	}
	lo, err := h.Link("lo")
	if err != nil {
		t.Fatal(err)
	}
	idx := lo.Attrs().Index
	// kernelMode reads the attach mode from the kernel, not from us.
	kernelMode := func() uint32 {
		t.Helper()
		l, err := h.Link("lo")
		if err != nil {
			t.Fatal(err)
		}
		if x := l.Attrs().Xdp; x != nil && x.Attached {
			return x.AttachMode
		}
		return nl.XDP_ATTACHED_NONE
	}

	for _, c := range []struct {
		mode    datapath.AttachMode
		refused bool   // NativeRefused reports a reason
		want    uint32 // the kernel's attach mode afterwards
	}{
		{datapath.AttachAuto, true, nl.XDP_ATTACHED_SKB},
		{datapath.AttachGeneric, false, nl.XDP_ATTACHED_SKB},
	} {
		var refused error
		err := h.Do(func() error {
			d, err := datapath.Load(datapath.Options{ConntrackEntries: 8192})
			if err != nil {
				return err
			}
			defer d.Close()
			// The premise: this kernel refuses native XDP on lo.
			if err := d.Attach(idx, datapath.AttachNative); !errors.Is(err, unix.EOPNOTSUPP) {
				t.Fatalf("native attach to lo: got %v, want EOPNOTSUPP (the test needs a device without native XDP)", err)
			}
			if err := d.Attach(idx, c.mode); err != nil {
				return err
			}
			refused = d.NativeRefused(idx)
			if got := kernelMode(); got != c.want {
				t.Errorf("%s: kernel reports attach mode %d, want %d", c.mode, got, c.want)
			}
			return d.Detach()
		})
		if err != nil {
			t.Fatalf("%s: %v", c.mode, err)
		}
		if (refused != nil) != c.refused || (refused != nil && !errors.Is(refused, unix.EOPNOTSUPP)) {
			t.Errorf("%s: NativeRefused = %v, want a reason: %v (EOPNOTSUPP)", c.mode, refused, c.refused)
		}
		if got := kernelMode(); got != nl.XDP_ATTACHED_NONE {
			t.Errorf("%s: after Detach the kernel reports attach mode %d, want none", c.mode, got)
		}
	}
}
