package datapath

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
)

// loadProvisioned loads a datapath pinned in dir, with 8192 connection
// entries, and provisions the fixtures' VIPs.
func loadProvisioned(t *testing.T, dir string) *Datapath {
	t.Helper()
	d, err := Load(Options{ConntrackEntries: 8192, PinDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	provision(t, d)
	return d
}

// TestMigrateConntrackSize migrates pins whose connection tables have
// another size, with the desired state written in another order so that
// every VIP index and backend id differs from the old ones: each
// established flow keeps its backend through the translated entries, the
// ones a reweight took off the ring included, and the counters are kept.
func TestMigrateConntrackSize(t *testing.T) {
	dir := PinDir(newPinRoot(t), "test")
	d1 := loadProvisioned(t, dir)
	flows := flowsByBackend(t, d1, vipWeb4, client4, 200)
	// A reweight: the flows keep their backends by their entries alone.
	changed := reweightWeb4(t, d1)
	c1, err := d1.Counters()
	if err != nil {
		t.Fatal(err)
	}
	d1.Close()

	d2, err := Load(Options{ConntrackEntries: 16384, PinDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	from, to, reason, ok := d2.Migrating()
	if !ok || from.Version != LayoutVersion || to.Version != LayoutVersion || !strings.Contains(reason, "ct_v4: MaxEntries: 2048 changed to 4096") {
		t.Fatalf("Migrating() = %v, %v, %q, %v; want a migration within layout %d naming ct_v4's size", from, to, reason, ok, LayoutVersion)
	}
	// Another order, and a VIP first that takes index 0 and the first ids.
	extra := VIP{Addr: addr("203.0.113.99"), Port: 80, Proto: TCP}
	if err := d2.AddVIP(extra, VIPConfig{Mode: ModeDSR, RingSize: smallRing}, backends4); err != nil {
		t.Fatal(err)
	}
	state := fixtureState()
	slices.Reverse(state)
	for _, p := range state {
		bs := p.backends
		if p.vip == vipWeb4 {
			bs = changed
		}
		if err := d2.AddVIP(p.vip, p.cfg, bs); err != nil {
			t.Fatal(err)
		}
	}
	if d2.vips[vipWeb4].index == d1.vips[vipWeb4].index {
		t.Fatalf("vip %s kept index %d: the test does not translate anything", vipWeb4, d1.vips[vipWeb4].index)
	}
	rep, err := d2.CompleteMigration()
	if err != nil {
		t.Fatal(err)
	}
	if rep.Kept != 200 || rep.Dropped != 0 || len(rep.Reset) != 0 {
		t.Fatalf("report %+v, want 200 entries kept, none dropped, no counter reset", rep)
	}
	requireFlowsOn(t, d2, flows, "after the migration")
	offRing := 0
	for b, ports := range flows {
		for _, sport := range ports {
			if expectBackend(t, changed, 0, addr(client4), vipWeb4.Addr, sport, 80, TCP, false).Addr != b {
				offRing++
			}
		}
	}
	if offRing == 0 {
		t.Fatal("no flow is off the ring after the reweight: the test proves nothing")
	}
	t.Logf("%d of 200 flows off the ring kept their backends", offRing)
	c2, err := d2.Counters()
	if err != nil {
		t.Fatal(err)
	}
	// Counters carried over, plus the 200 packets sent since.
	if got, want := c2.Stat(StatTxDSR), c1.Stat(StatTxDSR)+200; got != want {
		t.Fatalf("tx_dsr after the migration = %d, want %d carried over plus 200", got, want)
	}
	if got, want := c2.VIPs[vipWeb4].Packets, c1.VIPs[vipWeb4].Packets+200; got != want {
		t.Fatalf("packets of %s after the migration = %d, want %d", vipWeb4, got, want)
	}

	for _, leftover := range []string{nextDir(dir), oldDir(dir)} {
		if _, err := os.Stat(leftover); !os.IsNotExist(err) {
			t.Fatalf("%s is still there after the migration: %v", leftover, err)
		}
	}
	if l, ok, err := ReadLayout(dir); err != nil || !ok || l.Version != LayoutVersion {
		t.Fatalf("ReadLayout after the migration = %v, %v, %v; want layout %d", l, ok, err, LayoutVersion)
	}
	d2.Close()
	d3, err := Load(Options{ConntrackEntries: 16384, PinDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer d3.Close()
	if _, _, _, ok := d3.Migrating(); ok || !d3.Adopted() {
		t.Fatal("loading the migrated pins with the same options migrated again instead of adopting them")
	}
}

// TestLayoutDowngradeRefused loads over pins of a newer layout: refused,
// with a message that says what to do, and the pins untouched.
func TestLayoutDowngradeRefused(t *testing.T) {
	dir := PinDir(newPinRoot(t), "test")
	loadProvisioned(t, dir).Close()
	newer := Layout{Version: LayoutVersion + 1, Release: "fulcrum v99"}
	if err := writeLayout(dir, newer); err != nil {
		t.Fatal(err)
	}
	_, err := Load(Options{ConntrackEntries: 8192, PinDir: dir})
	if err == nil {
		t.Fatal("loading over pins of a newer layout succeeded")
	}
	for _, want := range []string{"newer than this build's layout", "fulcrum v99", "downgrade", "start the release that wrote the pins", "fulcrum detach"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("err = %v\nwant it to say %q", err, want)
		}
	}
	if l, ok, err := ReadLayout(dir); err != nil || !ok || l != newer {
		t.Fatalf("ReadLayout after the refusal = %v, %v, %v; want %v untouched", l, ok, err, newer)
	}
	if _, err := os.Stat(nextDir(dir)); !os.IsNotExist(err) {
		t.Fatalf("the refusal left %s: %v", nextDir(dir), err)
	}
}

// TestMigrateRingArenaSize: pins whose ring arena has another capacity
// (ring_arena_slots changed across a restart) migrate like a connection
// table of another size, growing and shrinking: the established flows
// keep their backends, the rings are written anew into the new arena, and
// the next load with the same capacity adopts.
func TestMigrateRingArenaSize(t *testing.T) {
	dir := PinDir(newPinRoot(t), "test")
	d1, err := Load(Options{ConntrackEntries: 8192, RingSlots: 1 << 18, PinDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	provision(t, d1)
	flows := flowsByBackend(t, d1, vipWeb4, client4, 200)
	used := d1.RingArena().Used
	d1.Close()

	for _, step := range []struct {
		slots uint32
		why   string
	}{
		{1 << 19, "ring_arena: MaxEntries: 16384 changed to 32768"},
		{1 << 18, "ring_arena: MaxEntries: 32768 changed to 16384"},
	} {
		d, err := Load(Options{ConntrackEntries: 8192, RingSlots: step.slots, PinDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, reason, ok := d.Migrating(); !ok || !strings.Contains(reason, step.why) {
			d.Close()
			t.Fatalf("to %d slots: Migrating() = %q, %v; want a migration naming %q", step.slots, reason, ok, step.why)
		}
		provision(t, d)
		rep, err := d.CompleteMigration()
		if err != nil {
			d.Close()
			t.Fatal(err)
		}
		if rep.Kept != 200 || rep.Dropped != 0 {
			d.Close()
			t.Fatalf("to %d slots: report %+v, want the 200 entries kept, none dropped", step.slots, rep)
		}
		requireFlowsOn(t, d, flows, fmt.Sprintf("after the migration to %d slots", step.slots))
		if s := d.RingArena(); s.Slots != step.slots || s.Used != used {
			d.Close()
			t.Fatalf("after the migration to %d slots: %+v, want %d slots, %d used as before", step.slots, s, step.slots, used)
		}
		for _, p := range fixtureState() {
			if p.vip.Addr.Is4() { // checkLiveRing reads IPv4 keys
				checkLiveRing(t, d, d.vips[p.vip], fmt.Sprintf("after the migration to %d slots", step.slots))
			}
		}
		d.Close()
	}

	d3, err := Load(Options{ConntrackEntries: 8192, RingSlots: 1 << 18, PinDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer d3.Close()
	if _, _, _, ok := d3.Migrating(); ok || !d3.Adopted() {
		t.Fatal("loading the migrated pins with the same capacity migrated again instead of adopting them")
	}
	if s := d3.RingArena(); s.Slots != 1<<18 || s.Used != used {
		t.Fatalf("adopted: %+v, want %d slots, %d used", s, 1<<18, used)
	}
}
