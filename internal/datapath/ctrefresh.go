package datapath

import "time"

// RefreshTimeout is the shortest idle timeout, over the VIPs that keep
// connection entries, of the states a flow stays in for long while it
// sends: TCP's established and UDP's. Connection sync re-sends busy
// entries within a third of it, so that no peer's copy expires before this
// node's entry. The other states are left out, as each refresh walks the
// whole table (seconds at 1 M entries): a flow leaves syn at its next
// packets (the change is exported); closed lasts seconds; and fin's 120 s
// would triple the walks for the rare flow that half-closes, then keeps
// sending past its fin timeout. It is 0 when no VIP keeps entries.
func (d *Datapath) RefreshTimeout() time.Duration {
	var least time.Duration
	for _, cv := range d.resolver().byVIP {
		t := cv.timeouts
		for _, s := range []time.Duration{t.Established, t.UDP} {
			if s > 0 && (least == 0 || s < least) {
				least = s
			}
		}
	}
	return least
}
