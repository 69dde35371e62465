package datapath

import (
	"net/netip"
	"testing"
	"time"
)

// BenchmarkInstallSynced files a batch of 4096 synced entries (IPv4, a
// 64 Ki-entry table emptied before each batch: the empty-way case of a
// standby receiving its master's entries) and reports the cost per entry.
func BenchmarkInstallSynced(b *testing.B) {
	const batch = 4096
	d := newTestDatapath(b) // 8192 entries: half full after a batch
	provision(b, d)
	entries := make([]SyncEntry, batch)
	for i := range entries {
		f := Flow{Src: netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)}), Dst: vipWeb4.Addr,
			Sport: uint16(10000 + i), Dport: vipWeb4.Port, Proto: TCP}
		entries[i] = SyncEntry{Flow: f, VIP: vipWeb4, Backend: backends4[i%len(backends4)].Addr,
			State: ConnEstablished, Lifetime: time.Minute}
	}
	buckets, keys := ctTables(true, &d.objs)
	empty := newTableImage(buckets.MaxEntries(), true)
	installed := 0
	for b.Loop() {
		b.StopTimer()
		if err := empty.write(buckets, keys); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		res, err := d.InstallSynced(entries)
		if err != nil {
			b.Fatal(err)
		}
		installed += res.Installed
	}
	if installed < b.N*batch*9/10 {
		b.Fatalf("installed %d of %d entries (a full bucket skips one now and then, not more)", installed, b.N*batch)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/entry")
}
