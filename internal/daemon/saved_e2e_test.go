package daemon_test

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/require"
)

// ringDigests waits until the pinned rings hold exactly the backends the
// daemon's desired state gives weight (MACs resolve after a start, so a
// ring may wait for its backends), then returns each VIP's ring digest.
func (h *harness) ringDigests() map[string]uint64 {
	h.t.Helper()
	var out map[string]uint64
	require.Eventually(h.t, 10*time.Second, func() error {
		vips, rings, err := h.listedRings()
		if err != nil {
			return err
		}
		if len(rings) != len(vips) {
			return fmt.Errorf("%d rings pinned, %d VIPs desired", len(rings), len(vips))
		}
		out = make(map[string]uint64)
		for _, v := range vips {
			k := fmt.Sprintf("%s/%s:%d", v.Protocol, v.Address, v.Port)
			var want []netip.Addr
			for _, b := range v.Backends {
				if b.Weight > 0 {
					want = append(want, b.Address)
				}
			}
			ring := ringOf(rings, v)
			seen := map[netip.Addr]bool{}
			for _, a := range ring {
				seen[a] = true
			}
			got := slices.SortedFunc(maps.Keys(seen), netip.Addr.Compare)
			slices.SortFunc(want, netip.Addr.Compare)
			if !slices.Equal(got, want) {
				return fmt.Errorf("vip %s: the ring names %v, want %v", k, got, want)
			}
			out[k] = datapath.RingDigest(ring)
		}
		return nil
	})
	return out
}

// waitRing waits until the ring that the fast path holds for the VIP
// (its text form, tcp/203.0.113.10:9000), read from the pins, is want
// slot for slot.
func (h *harness) waitRing(vip string, want []netip.Addr) {
	h.t.Helper()
	require.Eventually(h.t, 5*time.Second, func() error {
		instance := cmp.Or(h.instance, "e2e")
		rings, err := datapath.ReadRings(datapath.PinDir(h.dir, instance))
		if err != nil {
			return err
		}
		var ring []netip.Addr
		for k, r := range rings {
			if k.String() == vip {
				ring = r
			}
		}
		if len(ring) != len(want) {
			return fmt.Errorf("the pinned ring of %s has %d slots, want %d", vip, len(ring), len(want))
		}
		differ := 0
		for i := range ring {
			if ring[i] != want[i] {
				differ++
			}
		}
		if differ != 0 {
			return fmt.Errorf("the pinned ring of %s differs from the one wanted in %d of %d slots", vip, differ, len(ring))
		}
		return nil
	})
}

// TestSavedConfig makes a series of changes with the CLI, each of which
// must warn that it is not saved; saves them with `fulcrum config show`,
// then restarts the daemon from that file on fresh maps (the pins
// removed, so nothing is adopted): every VIP's ring must be the same as
// before the restart, slot for slot (compared by digest).
func TestSavedConfig(t *testing.T) {
	h := newHarness(t)
	h.writeConfig(h.config())
	h.startDaemon()
	initial := h.ringDigests()

	b := h.topo.Backends
	for _, args := range [][]string{
		{"backend", "weight", "tcp/" + vip4.String() + ":80", b[0].IPv4.String(), "3"},
		{"backend", "drain", "tcp/" + vip4.String() + ":9000", b[1].IPv4.String()},
		{"backend", "remove", fmt.Sprintf("tcp/[%s]:80", vip6), b[2].IPv6.String()},
		{"vip", "remove", "udp/" + vip4.String() + ":53"},
		{"vip", "add", "tcp/" + vip4.String() + ":8080", "--ring-size", "251", "--backend", b[0].IPv4.String(), "--backend", b[2].IPv4.String() + ",weight=2"},
		{"backend", "add", "tcp/" + vip4.String() + ":8080", b[1].IPv4.String(), "--weight", "5"},
	} {
		out, err := h.cli(args...)
		if err != nil || strings.Count(out, "fulcrum config show > FILE") != 1 {
			t.Fatalf("fulcrum %s: %v; want success and one notice that points to 'fulcrum config show':\n%s", strings.Join(args, " "), err, out)
		}
	}
	changed := h.ringDigests()
	if len(changed) != len(initial) || changed["tcp/"+vip4.String()+":80"] == initial["tcp/"+vip4.String()+":80"] {
		t.Fatalf("the CLI changes did not change the rings: before %v, after %v", initial, changed)
	}

	saved, err := h.cli("config", "show")
	if err != nil {
		t.Fatalf("fulcrum config show: %v\n%s", err, saved)
	}
	path := filepath.Join(t.TempDir(), "saved.yaml")
	if err := os.WriteFile(path, []byte(saved), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := h.cli("check", "-f", path); err != nil {
		t.Fatalf("fulcrum check on the saved file: %v\n%s", err, out)
	}

	h.daemon.Process.Signal(syscall.SIGTERM)
	h.daemon.Wait()
	if out, err := h.lb.Run(bg(), h.bin, "detach", "--config", h.cfgPath); err != nil {
		t.Fatalf("fulcrum detach: %v\n%s", err, out)
	}
	h.cfgPath = path
	h.startDaemon()
	if st, err := h.client.Status(bg()); err != nil || st.Adopted {
		t.Fatalf("restarted daemon: status %+v, %v; want fresh maps (nothing adopted)", st, err)
	}
	restarted := h.ringDigests()
	if !maps.Equal(restarted, changed) {
		t.Errorf("ring digests after the restart from the saved file differ:\n got %v\nwant %v", restarted, changed)
	}
	// The saved file is the daemon's state again: showing it gives it back.
	if again, err := h.cli("config", "show"); err != nil || again != saved {
		t.Errorf("config show after the restart differs from the saved file (%v):\n%s\nsaved:\n%s", err, again, saved)
	}
	t.Logf("%d VIPs, rings identical after the restart from the saved file", len(restarted))
}
