package main

import (
	"testing"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

func TestStats(t *testing.T) {
	d := startDaemon(t)
	d.run(t, "stats").checkGolden(t, "stats.golden")
	checkJSON(t, d.run(t, "stats", "-o", "json"), newFake().stats)

	d.fake.update(func(f *fakeController) { f.stats = api.Stats{} })
	d.run(t, "stats").check(t, 0, "VIP / BACKEND  PACKETS  BYTES  PACKET RATE  BYTE RATE  ACTIVE  INACTIVE\n(no VIPs)\n", "")
}
