package daemon_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
)

// TestApplyDryRunReweight asks the daemon for the plan of a reweight
// (backend1 from 1 to 3 on every VIP), checks that the dry run wrote
// nothing, applies the same file, and compares the plan with the rings
// actually written, read from the pins: for every VIP, the slots that
// moved and each backend's slots before and after.
func TestApplyDryRunReweight(t *testing.T) {
	h := newHarness(t)
	h.writeConfig(h.config())
	h.startDaemon()
	h.ringDigests() // every ring written, MACs resolved
	pins := datapath.PinDir(h.dir, "e2e")
	before, err := datapath.ReadRings(pins)
	if err != nil {
		t.Fatal(err)
	}

	path := filepath.Join(t.TempDir(), "reweight.yaml")
	if err := os.WriteFile(path, []byte(h.config(3, 1, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	plan, err := h.client.Plan(bg(), []byte(h.config(3, 1, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Added)+len(plan.Removed)+len(plan.Restart) != 0 || len(plan.Changed) != len(before) {
		t.Fatalf("plan %+v: want every one of the %d VIPs changed, nothing else", plan, len(before))
	}
	out, err := h.cli("apply", "--dry-run", "-f", path)
	if err != nil || !strings.Contains(out, "(nothing changed): 0 added, 5 changed, 0 removed, 0 unchanged") {
		t.Fatalf("fulcrum apply --dry-run: %v\n%s", err, out)
	}
	t.Logf("fulcrum apply --dry-run:\n%s", out)
	unchanged, err := datapath.ReadRings(pins)
	if err != nil {
		t.Fatal(err)
	}
	for k, r := range before {
		if datapath.RingDigest(unchanged[k]) != datapath.RingDigest(r) {
			t.Fatalf("vip %s: the dry run changed the ring", k)
		}
	}

	if out, err := h.cli("apply", "-f", path); err != nil {
		t.Fatalf("fulcrum apply: %v\n%s", err, out)
	}
	after, err := datapath.ReadRings(pins)
	if err != nil {
		t.Fatal(err)
	}
	for _, vp := range plan.Changed {
		var key datapath.VIP
		for k := range before {
			if k.String() == vp.VIP {
				key = k
			}
		}
		old, cur := before[key], after[key]
		if len(old) == 0 || len(cur) != int(vp.RingSize) {
			t.Fatalf("vip %s: rings of %d and %d slots, plan says %d", vp.VIP, len(old), len(cur), vp.RingSize)
		}
		moved := 0
		oldSlots, newSlots := map[netip.Addr]uint32{}, map[netip.Addr]uint32{}
		for i := range cur {
			if old[i] != cur[i] {
				moved++
			}
			oldSlots[old[i]]++
			newSlots[cur[i]]++
		}
		if uint32(moved) != vp.MovedSlots || moved == 0 {
			t.Errorf("vip %s: %d slots moved in the written ring, the plan said %d", vp.VIP, moved, vp.MovedSlots)
		}
		if want := float64(vp.MovedSlots) / float64(vp.RingSize); vp.MovedShare != want {
			t.Errorf("vip %s: moved share %v, want %v", vp.VIP, vp.MovedShare, want)
		}
		for _, b := range vp.Backends {
			if b.OldSlots != oldSlots[b.Address] || b.NewSlots != newSlots[b.Address] {
				t.Errorf("vip %s backend %s: plan says slots %d -> %d, the rings hold %d -> %d",
					vp.VIP, b.Address, b.OldSlots, b.NewSlots, oldSlots[b.Address], newSlots[b.Address])
			}
			wantChange := ""
			if b.NewWeight == 3 {
				wantChange = "weight"
			}
			if b.Change != wantChange || (b.OldWeight != 1) {
				t.Errorf("vip %s backend %s: change %q, weights %d -> %d; want %q from 1", vp.VIP, b.Address, b.Change, b.OldWeight, b.NewWeight, wantChange)
			}
		}
		if len(vp.Backends) != len(h.topo.Backends) {
			t.Errorf("vip %s: plan lists %d backends, want %d", vp.VIP, len(vp.Backends), len(h.topo.Backends))
		}
		t.Logf("vip %s: %d of %d slots moved (%.1f%%), as planned", vp.VIP, vp.MovedSlots, vp.RingSize, 100*vp.MovedShare)
	}
}
