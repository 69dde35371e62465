package daemon_test

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// TestRingArenaSlots runs the daemon with ring_arena_slots set just above
// what its five VIPs' rings (65537 slots each) take: the daemon loads the
// arena with that capacity (the scrape says so), so a reweight, whose new
// ring needs room beside the old one, is refused with an error naming
// the setting, and nothing changes. A reload that changes the setting is
// refused as restart-only; a restart with it migrates the pins to the new
// capacity, and then the reweight goes through.
func TestRingArenaSlots(t *testing.T) {
	h := newHarness(t)
	const small, large, used = 6 * 65536, 1 << 20, 5 * 65537
	withArena := func(slots int) string {
		return strings.Replace(h.config(), "vips:\n", fmt.Sprintf("ring_arena_slots: %d\nvips:\n", slots), 1)
	}
	// waitArena waits until the scrape says the arena holds the five
	// rings and the rest of capacity is free.
	waitArena := func(capacity int, when string) {
		t.Helper()
		require.Eventually(t, 10*time.Second, func() error {
			body := h.scrape()
			got := [3]float64{}
			for i, s := range []string{"used", "retired", "free"} {
				got[i] = metricValue(t, body, fmt.Sprintf(`fulcrum_ring_arena_slots{state=%q}`, s))
			}
			if want := [3]float64{used, 0, float64(capacity - used)}; got != want {
				return fmt.Errorf("%s: ring arena slots used, retired, free = %v, want %v", when, got, want)
			}
			return nil
		})
	}
	h.writeConfig(withArena(small))
	h.startDaemon()
	waitArena(small, "started")

	web := api.VIPRef{Protocol: "tcp", Address: vip4, Port: 9000}
	be := h.topo.Backends[0].IPv4
	err := h.client.SetWeight(bg(), web, be, 4)
	if err == nil || !strings.Contains(err.Error(), "ring arena is full") || !strings.Contains(err.Error(), "ring_arena_slots") {
		t.Fatalf("reweight in a full arena: err = %v, want the ring arena full, naming ring_arena_slots", err)
	}
	waitArena(small, "after the refused reweight")

	h.writeConfig(withArena(large))
	mark := len(h.log())
	h.daemon.Process.Signal(syscall.SIGHUP)
	require.Eventually(t, 5*time.Second, func() error {
		if log := h.log()[mark:]; !strings.Contains(log, "ring_arena_slots cannot change on reload; restart the daemon to change it") {
			return fmt.Errorf("the reload does not say ring_arena_slots is restart-only:\n%s", log)
		}
		return nil
	})
	waitArena(small, "after the refused reload")

	h.kill()
	mark = len(h.log())
	h.startDaemon()
	if log := h.log()[mark:]; !strings.Contains(log, "migrated the pinned fast path") || !strings.Contains(log, "ring_arena: MaxEntries: 24576 changed to 65536") {
		t.Fatalf("the restart with another ring_arena_slots did not migrate the pins:\n%s", log)
	}
	waitArena(large, "after the restart")
	if err := h.client.SetWeight(bg(), web, be, 4); err != nil {
		t.Fatalf("reweight after the arena grew: %v", err)
	}
	waitArena(large, "after the reweight") // the old ring freed
}
