package datapath

import (
	"runtime"
	"sync"

	"github.com/fulcrum-lb/fulcrum/pkg/maglev"
)

// fillAll fills the prepared VIPs (see fill) on up to one goroutine per
// CPU, each result in its pendingVIP's err. Filling a ring is a Maglev
// build (~1.5 ms at M = 65537) and a batched write of every slot into a new
// map (the larger part: the kernel copies the slots in one by one), and
// the VIPs are independent: a bulk change of a thousand VIPs takes about
// the time of a thousand divided by the CPUs. No table outlives its fill,
// so the Go memory is that of the goroutines' tables, whatever the count
// of VIPs; their rings stay in the kernel until swapped in.
func (d *Datapath) fillAll(pending []*pendingVIP) {
	workers := min(runtime.NumCPU(), len(pending))
	if workers <= 1 {
		for _, p := range pending {
			p.err = d.fill(p)
		}
		return
	}
	work := make(chan *pendingVIP)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				p.err = d.fill(p)
			}
		}()
	}
	for _, p := range pending {
		work <- p
	}
	close(work)
	wg.Wait()
}

// slotKeys returns the keys of a ring's slots, 0 to maglev.MaxSize-1,
// shared read-only by every fill; made at the first fill, not by every
// program that imports the package.
var slotKeys = sync.OnceValue(func() []uint32 {
	k := make([]uint32, maglev.MaxSize)
	for i := range k {
		k[i] = uint32(i)
	}
	return k
})
