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
// of a hash map for the next insert on the same CPU at once
// (kernel/bpf/memalloc.c: bpf_mem_cache_free links it into the CPU's free
// list, unit_alloc takes it from there), so a meta read through a hash
// map's value pointer, as layout 4 read it, could turn into another VIP's
// under a reader; a vip_metas slot reused before a grace period would do
// the same. A writer repeats: remove a VIP Y, flip VIP X's ring (a new
// meta: X's new element takes the one Y's removal freed, and X's old
// element and slot are freed or retired), add Y back (its element takes
// X's old one, its meta the first free slot). Meanwhile, on every CPU:
//   - the balancer forwards packets to X, each one BPF_PROG_RUN, and every
//     one must go to one of X's two backends;
//   - between them, a slowed-down reader (bpf/ringscan.c,
//     fulcrum_meta_hold: the balancer's meta lookup, then reads of the
//     meta before and after a spin inside its RCU read-side section) must
//     read X's meta both times: the spin is longer than the writer's
//     round, so a reuse before a grace period would show there.
func TestVIPMetaHammer(t *testing.T) {
	require.BPF(t)
	// The hammer runs until the writer did minRounds rounds and the
	// readers minHolds holds (a few seconds here): freeing retired slots
	// at once made some 1 hold in 65 see another VIP's meta.
	minRounds, minHolds := int64(3000), int64(1500)
	if testing.Short() {
		minRounds, minHolds = 1000, 500
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
	writerDone := make(chan struct{})
	var writerErr error
	go func() {
		defer close(writerDone)
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
				writerErr = err
				return
			}
			rounds.Add(1)
		}
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
	var readerFailed atomic.Bool
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
				readerFailed.Store(true)
				report(fmt.Sprintf("cpu %d: %v", cpu, err))
			}
		}()
	}
	_, enough := require.Poll(2*time.Minute, func() error {
		select {
		case <-writerDone: // failed: no more rounds will come
			return nil
		default:
		}
		if readerFailed.Load() {
			return nil
		}
		if r, h := rounds.Load(), holds.Load(); r < minRounds || h < minHolds {
			return fmt.Errorf("%d writer rounds and %d holds, want %d and %d", r, h, minRounds, minHolds)
		}
		return nil
	})
	stop.Store(true)
	wg.Wait()
	<-writerDone
	if writerErr != nil {
		t.Fatalf("writer: %v", writerErr)
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
	if enough != nil {
		t.Fatal(enough)
	}
	if seenA.Load() == 0 || seenB.Load() == 0 {
		t.Fatalf("%d packets to A and %d to B: want both rings seen", seenA.Load(), seenB.Load())
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

// TestVIPSlotKeyChecked proves the fast path's check of a slot's key: a
// VIP key whose element names another VIP's slot (what a packet reads
// from an element the kernel reused for the other VIP between its lookup
// and its read) is not taken for the other VIP. The packet then falls to
// the address's every-port VIP if there is one, else passes, as if the
// key were not there; on the second lookup a real packet would find the
// key's own slot.
func TestVIPSlotKeyChecked(t *testing.T) {
	d := newTestDatapath(t)
	cfg := VIPConfig{Mode: ModeDSR, RingSize: smallRing, NoConntrack: true}
	for _, fam := range []struct {
		name         string
		x, y, any    VIP
		client       string
		xb, yb, anyb []Backend
	}{
		{"v4", VIP{Addr: addr("203.0.113.80"), Port: 80, Proto: UDP}, VIP{Addr: addr("203.0.113.81"), Port: 80, Proto: UDP},
			VIP{Addr: addr("203.0.113.80"), Port: 0, Proto: UDP}, client4, backends4[:1], backends4[1:2], backends4[2:3]},
		{"v6", VIP{Addr: addr("2001:db8:ffff::80"), Port: 80, Proto: UDP}, VIP{Addr: addr("2001:db8:ffff::81"), Port: 80, Proto: UDP},
			VIP{Addr: addr("2001:db8:ffff::80"), Port: 0, Proto: UDP}, client6, backends6[:1], backends6[1:2], backends6[2:3]},
	} {
		t.Run(fam.name, func(t *testing.T) {
			for _, v := range []struct {
				vip VIP
				bs  []Backend
			}{{fam.x, fam.xb}, {fam.y, fam.yb}} {
				if err := d.AddVIP(v.vip, cfg, v.bs); err != nil {
					t.Fatal(err)
				}
			}
			toX := pkt(fam.client, fam.x.Addr.String(), UDP, 40000, 80)
			if got := sendTo(t, d, toX); got != fam.xb[0].Addr {
				t.Fatalf("before: packet to %s went to %s, want %s", fam.x, got, fam.xb[0].Addr)
			}
			// X's key names Y's slot, as a reused element would.
			put := func(slot uint32) {
				t.Helper()
				var err error
				if fam.x.Addr.Is4() {
					err = d.objs.VipsV4.Put(vipKey4(fam.x), slot)
				} else {
					err = d.objs.VipsV6.Put(vipKey6(fam.x), slot)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			put(d.vips[fam.y].slot)
			if v, _ := runProg(t, d.Program(), toX.Build()); v != xdpPass {
				t.Fatalf("key of %s naming %s's slot: verdict %s, want XDP_PASS (no vip)", fam.x, fam.y, verdictNames[v])
			}
			if err := d.AddVIP(fam.any, cfg, fam.anyb); err != nil {
				t.Fatal(err)
			}
			if got := sendTo(t, d, toX); got != fam.anyb[0].Addr {
				t.Fatalf("key of %s naming %s's slot, with %s there: packet went to %s, want %s", fam.x, fam.y, fam.any, got, fam.anyb[0].Addr)
			}
			put(d.vips[fam.x].slot)
			if got := sendTo(t, d, toX); got != fam.xb[0].Addr {
				t.Fatalf("after: packet to %s went to %s, want %s", fam.x, got, fam.xb[0].Addr)
			}
			for _, err := range d.RemoveVIPs([]VIP{fam.x, fam.y, fam.any}) {
				if err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
