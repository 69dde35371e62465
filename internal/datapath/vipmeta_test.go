package datapath

import (
	"bytes"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/fulcrum-lb/fulcrum/internal/require"
)

// TestVIPMetaHammer proves that a packet never reads another VIP's meta,
// nor a half-written one, while Go republishes metas and VIPs come and go
// (docs/datapath.md, "VIP publication"). The kernel reuses a freed element
// of a hash map without BPF_F_NO_PREALLOC's grace period for the next
// insert on the same CPU (kernel/bpf/memalloc.c: bpf_mem_cache_free links
// the element into the CPU's free list, unit_alloc takes it from there),
// so a meta read through a hash map's value pointer could turn into
// another VIP's under a reader. A writer repeats: remove a VIP Y, flip
// VIP X's ring (a new meta: its new element takes the one Y freed, and
// X's old element is freed), add Y back (it takes X's old element).
// Meanwhile, on every CPU:
//   - the balancer forwards packets to X, each one BPF_PROG_RUN, and every
//     one must go to one of X's two backends;
//   - between them, a slowed-down reader (bpf/ringscan.c,
//     fulcrum_meta_hold: the balancer's meta lookup, then reads of the
//     meta before and after a spin inside its RCU read-side section) must
//     read X's meta both times: the spin is longer than the writer's
//     round, so a reuse before a grace period would show there.
func TestVIPMetaHammer(t *testing.T) {
	require.BPF(t)
	run, minRounds, minHolds := 3*time.Second, int64(500), int64(200)
	if testing.Short() {
		run, minRounds, minHolds = time.Second, 100, 50
	}
	// A hold spins some hundreds of microseconds: several writer rounds.
	const holdSpins = 200_000
	const holdEvery = 16 // one hold per this many balancer packets
	d, err := Load(Options{ConntrackEntries: 8192, RingSlots: 64 * smallRing})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	hold := loadMetaHold(t, d)

	be := func(last byte) Backend {
		return Backend{Addr: netip.AddrFrom4([4]byte{198, 18, 0, last}), MAC: []byte{2, 0, 0, 0, 0x0d, last}, Weight: 1}
	}
	x := VIP{Addr: addr("203.0.113.80"), Port: 80, Proto: UDP}
	xa, xb := be(21), be(22)
	xBackends := func(toB bool) []Backend {
		a, b := xa, xb
		a.Weight, b.Weight = 1, 0
		if toB {
			a.Weight, b.Weight = 0, 1
		}
		return []Backend{a, b}
	}
	cfg := VIPConfig{Mode: ModeDSR, RingSize: smallRing, NoConntrack: true}
	if err := d.AddVIP(x, cfg, xBackends(false)); err != nil {
		t.Fatal(err)
	}
	xIndex := uint32(d.vips[x].index)
	// The others: their own backends, so a packet that took one of their
	// rings leaves with a MAC that is not X's.
	var others []VIP
	for i := range 4 {
		y := VIP{Addr: netip.AddrFrom4([4]byte{203, 0, 113, byte(100 + i)}), Port: 80, Proto: UDP}
		if err := d.AddVIP(y, cfg, []Backend{be(byte(40 + i))}); err != nil {
			t.Fatal(err)
		}
		others = append(others, y)
	}

	var stop atomic.Bool
	var rounds atomic.Int64
	writerErr := make(chan error, 1)
	go func() {
		for i := 0; !stop.Load(); i++ {
			y := others[i%len(others)]
			err := d.RemoveVIP(y)
			if err == nil {
				err = d.SetVIP(x, cfg, xBackends(i%2 == 0))
			}
			if err == nil {
				err = d.AddVIP(y, cfg, []Backend{be(byte(40 + i%len(others)))})
			}
			if err != nil {
				writerErr <- err
				return
			}
			rounds.Add(1)
		}
		writerErr <- nil
	}()

	frames := make([][]byte, 64)
	for i := range frames {
		frames[i] = pkt(client4, x.Addr.String(), UDP, uint16(1024+i*211), 80).Build()
	}
	k := vipKey4(x)
	// struct hold_args: the key, then the spins.
	holdArgs := append(slotBytes([]uint32{k.Addr}), byte(k.Port), byte(k.Port>>8), k.Proto, 0)
	holdArgs = append(holdArgs, slotBytes([]uint32{holdSpins})...)
	holdArgs = append(holdArgs, make([]byte, 64-len(holdArgs))...)

	var packets, holds, seenA, seenB, wrongPackets, wrongHolds atomic.Int64
	var mu sync.Mutex
	var bad []string
	report := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		bad = append(bad, s)
	}
	var wg sync.WaitGroup
	for cpu := range runtime.NumCPU() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := onCPU(cpu, func() error {
				out := make([]byte, len(frames[0])+512)
				holdOut := make([]byte, 64+512)
				for n := 0; !stop.Load(); n++ {
					opts := ebpf.RunOptions{Data: frames[n%len(frames)], DataOut: out}
					v, err := d.Program().Run(&opts)
					if err != nil {
						return err
					}
					packets.Add(1)
					switch {
					case v != xdpTX:
						wrongPackets.Add(1)
						report(fmt.Sprintf("cpu %d: packet to %s: verdict %s", cpu, x, verdictNames[v]))
					case bytes.Equal(out[:6], xa.MAC):
						seenA.Add(1)
					case bytes.Equal(out[:6], xb.MAC):
						seenB.Add(1)
					default:
						wrongPackets.Add(1)
						report(fmt.Sprintf("cpu %d: packet to %s sent to MAC %x, neither of its backends", cpu, x, out[:6]))
					}
					if n%holdEvery != 0 {
						continue
					}
					opts = ebpf.RunOptions{Data: holdArgs, DataOut: holdOut}
					if _, err := hold.Run(&opts); err != nil {
						return err
					}
					holds.Add(1)
					var r [7]uint32 // struct hold_result
					copy(slotBytes(r[:]), holdOut)
					found, before, after := r[0], r[1], r[2]
					if found != 1 || before != xIndex || after != xIndex {
						wrongHolds.Add(1)
						report(fmt.Sprintf("cpu %d: held meta of %s (index %d): found=%d, index %d before the spin, %d after (ring %d+%d, then %d+%d)",
							cpu, x, xIndex, found, before, after, r[3], r[5], r[4], r[6]))
					}
				}
				return nil
			})
			if err != nil {
				report(fmt.Sprintf("cpu %d: %v", cpu, err))
			}
		}()
	}
	time.Sleep(run) // the test's length, not a wait for a condition
	stop.Store(true)
	wg.Wait()
	if err := <-writerErr; err != nil {
		t.Fatalf("writer: %v", err)
	}
	t.Logf("%d writer rounds; %d packets (%d to backend A, %d to B, %d wrong) and %d holds (%d saw another VIP's meta) on %d CPUs",
		rounds.Load(), packets.Load(), seenA.Load(), seenB.Load(), wrongPackets.Load(), holds.Load(), wrongHolds.Load(), runtime.NumCPU())
	for i, b := range bad {
		if i == 20 {
			t.Errorf("... and %d more", len(bad)-i)
			break
		}
		t.Error(b)
	}
	// The test proves something only if the metas changed under the
	// readers many times, and both of X's rings were seen.
	if rounds.Load() < minRounds || holds.Load() < minHolds || seenA.Load() == 0 || seenB.Load() == 0 {
		t.Fatalf("%d writer rounds, %d holds, %d packets to A and %d to B: want at least %d rounds, %d holds and both rings seen",
			rounds.Load(), holds.Load(), seenA.Load(), seenB.Load(), minRounds, minHolds)
	}
}

// loadMetaHold loads the slowed-down meta reader with d's maps.
func loadMetaHold(tb testing.TB, d *Datapath) *ebpf.Program {
	tb.Helper()
	spec, err := ebpf.LoadCollectionSpec("testprogs/ringscan.o")
	if err != nil {
		tb.Fatal(err)
	}
	spec.Maps[balancerMapRingArena].MaxEntries = d.objs.RingArena.MaxEntries()
	var objs struct {
		Hold *ebpf.Program `ebpf:"fulcrum_meta_hold"`
	}
	opts := ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{
		balancerMapVipsV4: d.objs.VipsV4, balancerMapVipMetas: d.objs.VipMetas, balancerMapRingArena: d.objs.RingArena}}
	if err := spec.LoadAndAssign(&objs, &opts); err != nil {
		tb.Fatalf("load meta hold: %v", err)
	}
	tb.Cleanup(func() { objs.Hold.Close() })
	return objs.Hold
}

// lookupMeta reads the meta vip's key names, as a packet would.
func lookupMeta(d *Datapath, vip VIP, m *balancerVipMeta) error {
	var slot uint32
	var err error
	if vip.Addr.Is4() {
		err = d.objs.VipsV4.Lookup(vipKey4(vip), &slot)
	} else {
		err = d.objs.VipsV6.Lookup(vipKey6(vip), &slot)
	}
	if err != nil {
		return err
	}
	var v balancerVipSlot
	if err := d.objs.VipMetas.Lookup(slot, &v); err != nil {
		return err
	}
	if v != vipSlotValue(vip, v.Meta) {
		return fmt.Errorf("vip %s names meta slot %d, which holds another vip's key", vip, slot)
	}
	*m = v.Meta
	return nil
}
