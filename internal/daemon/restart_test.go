package daemon

import (
	"testing"

	"github.com/fulcrum-lb/fulcrum/internal/config"
)

// TestRingArenaRestartOnly: a reload may not change ring_arena_slots (the
// arena is allocated at load), and the plan of an apply lists it among the
// settings that need a restart.
func TestRingArenaRestartOnly(t *testing.T) {
	old := &config.Config{RingArenaSlots: 1 << 26}
	if err := restartOnly(old, &config.Config{RingArenaSlots: 1 << 26}); err != nil {
		t.Fatalf("the same capacity: %v", err)
	}
	const want = "ring_arena_slots cannot change on reload; restart the daemon to change it"
	cur := &config.Config{RingArenaSlots: 1 << 27}
	if err := restartOnly(old, cur); err == nil || err.Error() != want {
		t.Fatalf("another capacity: err = %v, want %q", err, want)
	}
	if got := restartReasons(old, cur); len(got) != 1 || got[0] != want {
		t.Fatalf("restartReasons = %q, want [%q]", got, want)
	}
}
