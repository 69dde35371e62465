package reconcile

import (
	"context"
	"fmt"
	"testing"

	"github.com/fulcrum-lb/fulcrum/internal/config"
)

// TestServesMatchesRing: Serves (what BGP announces by) says a VIP serves
// exactly when the ring the reconciler writes for it holds a backend with
// weight, over every on_down, all_down, weight and health of two checked
// backends, and with one unchecked.
func TestServesMatchesRing(t *testing.T) {
	ctx := context.Background()
	healths := []Health{Unknown, Up, Down}
	var serves, not int
	for _, onDown := range []config.OnDown{config.OnDownRehash, config.OnDownDrain} {
		for _, allDown := range []config.AllDown{config.AllDownDrop, config.AllDownFailOpen} {
			for _, w := range [][2]uint32{{0, 0}, {0, 1}, {1, 0}, {1, 2}} {
				for _, h1 := range healths {
					for _, h2 := range healths {
						for _, checked2 := range []bool{true, false} {
							name := fmt.Sprintf("%s/%s/weights %v/health %s %s/checked %v", onDown, allDown, w, h1, h2, checked2)
							r, f := newRec(t)
							v := vip("203.0.113.10", 80, be("198.18.0.11", w[0], "02:00:00:00:00:11"), be("198.18.0.12", w[1], "02:00:00:00:00:12"))
							v.HealthCheck = &config.HealthCheck{Type: "tcp", OnDown: onDown, AllDown: allDown}
							v.Backends[0].HealthCheck = v.HealthCheck
							if checked2 {
								v.Backends[1].HealthCheck = v.HealthCheck
							}
							if _, err := r.Apply(ctx, State{VIPs: []config.VIP{v}}); err != nil {
								t.Fatalf("%s: %v", name, err)
							}
							k := Key(v)
							for i, h := range []Health{h1, h2} {
								if err := r.SetHealth(ctx, k, v.Backends[i].Address, h); err != nil {
									t.Fatalf("%s: %v", name, err)
								}
							}
							ring := false
							for _, b := range f.vips[k].Backends {
								ring = ring || b.Weight > 0
							}
							got := Serves(v, r.HealthOf()[k])
							if got != ring {
								t.Errorf("%s: Serves %v, but the ring written is %v", name, got, f.vips[k].Backends)
							}
							if got {
								serves++
							} else {
								not++
							}
						}
					}
				}
			}
		}
	}
	if serves == 0 || not == 0 {
		t.Fatalf("%d cases serve, %d do not: the cases miss one side", serves, not)
	}
}
