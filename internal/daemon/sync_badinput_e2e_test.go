package daemon_test

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/connsync"
	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
	"github.com/fulcrum-lb/fulcrum/testenv"
)

// syncKey is the key of the sync tests' nodes; otherKey is not it.
var (
	syncKey  = []byte("0123456789abcdef0123456789abcdef")
	otherKey = []byte("fedcba9876543210fedcba9876543210")
)

// strangerAddr is an address of lb1's segment that no node names as a
// sync peer; the bad-input test sends from it too.
var strangerAddr = netip.MustParseAddr("198.18.0.250")

// TestSyncBadInput plays lb1 against a real lb2 daemon whose sync names
// lb1 (198.18.0.2:8473) as its peer: the test binds lb1's sync address in
// lb1's namespace (no daemon runs there) and sends datagrams it builds.
// One good datagram installs its 5 entries (so the path works); then a
// replay of it, a forged one (its MAC altered), a truncated, an oversized
// and a wrong-version one, one sealed with a wrong key, and a good one
// from an address that is not a peer. Each is counted under its reason in
// lb2's API status (the drop counters `fulcrum status` and the metrics
// show), and after each lb2's table, as `fulcrum conn list` lists it
// (GET /v1/conns), is unchanged and lb2's installed counter too. Then a
// flood: 20 000 garbage datagrams (random bytes, and well-framed ones with
// random sequence numbers, epochs and MACs), from the peer's address and
// from 32 ports of the stranger's: every one is counted as dropped (the
// counters' sum grows by exactly the number sent), nothing is installed,
// and the daemon's resident memory grows by less than 16 MiB (the
// receiver keeps a fixed state per configured peer and none per source).
func TestSyncBadInput(t *testing.T) {
	h := newHarness(t, func(o *testenv.Options) { o.SecondLB = true; o.VIPNextHop = virtualAddr })
	lb2 := h.node(h.topo.LB2)
	lb2.instance = "lb2"
	key := filepath.Join(t.TempDir(), "sync.key")
	if err := os.WriteFile(key, append(slices.Clone(syncKey), '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	lb2.writeConfig(withSync(lb2.vrrpConfig("lb2", 100), testenv.LB1IPv4, key))
	lb2.startDaemon()
	if err := h.topo.LB1.AddAddr(testenv.MainIface, netip.PrefixFrom(strangerAddr, 24)); err != nil {
		t.Fatal(err)
	}
	to := netip.AddrPortFrom(testenv.LB2IPv4, connsync.DefaultPort)
	peer := udpOn(t, h.topo.LB1, netip.AddrPortFrom(testenv.LB1IPv4, connsync.DefaultPort))
	stranger := udpOn(t, h.topo.LB1, netip.AddrPortFrom(strangerAddr, connsync.DefaultPort))
	send := func(c *net.UDPConn, b []byte) {
		t.Helper()
		if _, err := c.WriteToUDPAddrPort(b, to); err != nil {
			t.Fatalf("send %d bytes from %s: %v", len(b), c.LocalAddr(), err)
		}
	}

	entries := func(first int) []connsync.Entry {
		var out []connsync.Entry
		for i := first; i < first+5; i++ {
			out = append(out, connsync.Entry{
				Client:   netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 19, 200, byte(i)}), uint16(40000+i)),
				VIP:      netip.AddrPortFrom(vip4, 9000),
				Proto:    connsync.ProtoTCP,
				Backend:  h.topo.Backends[i%len(h.topo.Backends)].IPv4,
				State:    connsync.StateEstablished,
				Lifetime: 10 * time.Minute,
			})
		}
		return out
	}
	epoch := uint64(time.Now().UnixNano())
	build := func(k []byte, seq uint64, es []connsync.Entry) []byte {
		t.Helper()
		b, err := connsync.Datagram(k, epoch, seq, time.Now(), es)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	// The good one.
	good := build(syncKey, 1, entries(1))
	send(peer, good)
	require.Eventually(t, 5*time.Second, func() error {
		if s := lb2.syncStatus(); s.Installed != 5 {
			return fmt.Errorf("lb2 installed %d entries, want the good datagram's 5", s.Installed)
		}
		return nil
	})
	table := lb2.connTable()
	if len(table) != 5 {
		t.Fatalf("lb2's table after the good datagram: %v; want its 5 entries", table)
	}

	// Each bad one, counted under its reason, changing nothing else.
	next := build(syncKey, 2, entries(10))
	forged := slices.Clone(next)
	forged[len(forged)-1] ^= 1
	altered := slices.Clone(next)
	altered[connsync.HeaderLen+11] ^= 1 // an entry's lifetime, still in range: only the MAC says
	wrongVersion := slices.Clone(next)
	wrongVersion[4] = connsync.Version + 1
	oversized := append(slices.Clone(next), make([]byte, connsync.MaxDatagram+1-len(next))...)
	for _, c := range []struct {
		what, reason string
		from         *net.UDPConn
		b            []byte
	}{
		{"a replay of the good datagram", "replay", peer, good},
		{"a forged datagram (its MAC altered)", "bad_mac", peer, forged},
		{"an altered datagram (an entry's lifetime changed after sealing)", "bad_mac", peer, altered},
		{"a truncated datagram (its last 10 bytes cut)", "truncated", peer, next[:len(next)-10]},
		{"a truncated datagram (half a header)", "truncated", peer, next[:20]},
		{"an oversized datagram (1401 bytes)", "oversized", peer, oversized},
		{"a wrong-version datagram", "bad_version", peer, wrongVersion},
		{"a datagram sealed with a wrong key", "bad_mac", peer, build(otherKey, 3, entries(20))},
		{"a good datagram from an address that is not a peer", "unknown_peer", stranger, build(syncKey, 4, entries(30))},
	} {
		before := lb2.syncStatus()
		send(c.from, c.b)
		var after *api.SyncStatus
		require.Eventually(t, 5*time.Second, func() error {
			after = lb2.syncStatus()
			if after.Dropped[c.reason] == before.Dropped[c.reason] {
				return fmt.Errorf("%s: lb2's drops %v, want one more %s", c.what, nonZeroDrops(after.Dropped), c.reason)
			}
			return nil
		})
		for r, n := range after.Dropped {
			want := before.Dropped[r]
			if r == c.reason {
				want++
			}
			if n != want {
				t.Errorf("%s: dropped[%s] went from %d to %d, want %d", c.what, r, before.Dropped[r], n, want)
			}
		}
		// The test's lb1 is a socket: no hellos, so nothing is accepted.
		if after.Installed != before.Installed || after.ReceivedDatagrams != before.ReceivedDatagrams {
			t.Errorf("%s: lb2 installed %d → %d, accepted %d → %d datagrams; want nothing installed or accepted", c.what,
				before.Installed, after.Installed, before.ReceivedDatagrams, after.ReceivedDatagrams)
		}
		if got := lb2.connTable(); !slices.Equal(got, table) {
			t.Errorf("%s changed lb2's table: %v, was %v", c.what, got, table)
		}
		t.Logf("%s: dropped as %s, nothing installed", c.what, c.reason)
	}

	// The flood.
	strangers := make([]*net.UDPConn, 32)
	for i := range strangers {
		strangers[i] = udpOn(t, h.topo.LB1, netip.AddrPortFrom(strangerAddr, 0))
	}
	rssBefore := rss(t, lb2.daemon.Process.Pid)
	before := lb2.syncStatus()
	rng := rand.New(rand.NewPCG(1, 2))
	const flood, burst = 20000, 500
	frame := slices.Clone(next)
	for sent := 0; sent < flood; {
		for range burst {
			var b []byte
			switch sent % 3 {
			case 0: // random bytes, random size up to 1500
				b = make([]byte, rng.IntN(1501))
				for i := range b {
					b[i] = byte(rng.Uint32())
				}
			default: // well framed, random epoch, sequence number and MAC
				b = frame
				for i := 8; i < 24; i++ {
					b[i] = byte(rng.Uint32())
				}
				for i := len(b) - connsync.MACLen; i < len(b); i++ {
					b[i] = byte(rng.Uint32())
				}
			}
			from := peer
			if sent%2 == 1 {
				from = strangers[rng.IntN(len(strangers))]
			}
			send(from, b)
			sent++
		}
		// Let the receiver catch up, so that no datagram is lost to a
		// full socket buffer and every one must be counted.
		require.Eventually(t, 10*time.Second, func() error {
			if d := dropSum(lb2.syncStatus()) - dropSum(before); d != uint64(sent) {
				return fmt.Errorf("after %d garbage datagrams lb2 counts %d dropped", sent, d)
			}
			return nil
		})
	}
	after := lb2.syncStatus()
	rssAfter := rss(t, lb2.daemon.Process.Pid)
	t.Logf("flood of %d garbage datagrams: lb2 dropped %d (%v more), installed %d more; daemon RSS %d KiB → %d KiB",
		flood, dropSum(after)-dropSum(before), diffDrops(before, after), after.Installed-before.Installed, rssBefore>>10, rssAfter>>10)
	if after.Installed != before.Installed {
		t.Errorf("the flood installed %d entries", after.Installed-before.Installed)
	}
	if got := lb2.connTable(); !slices.Equal(got, table) {
		t.Errorf("the flood changed lb2's table: %d entries, was %d", len(got), len(table))
	}
	if rssAfter > rssBefore+16<<20 {
		t.Errorf("lb2's resident memory grew from %d to %d KiB over the flood; want less than 16 MiB more", rssBefore>>10, rssAfter>>10)
	}
	if len(after.Peers) != 1 || after.Peers[0].Address != netip.AddrPortFrom(testenv.LB1IPv4, connsync.DefaultPort) {
		t.Errorf("lb2's peers after the flood: %+v; want only the configured one", after.Peers)
	}
}

// udpOn binds a UDP socket to a in host's namespace, closed with the test.
func udpOn(t *testing.T, host *testenv.Host, a netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := host.Do(func() error {
		var err error
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(a))
		return err
	})
	if err != nil {
		t.Fatalf("bind %s in %s: %v", a, host, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// connTable is node's connection table as `fulcrum conn list` lists it,
// one sorted line an entry, without the idle and expiry times (which
// move).
func (n *harness) connTable() []string {
	n.t.Helper()
	var out []string
	err := n.client.Conns(bg(), api.ConnFilter{}, func(c api.Conn) error {
		out = append(out, fmt.Sprintf("%s %s -> %s via %s %s", c.Protocol, c.Client, c.Dst, c.Backend, c.State))
		return nil
	})
	if err != nil {
		n.t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// dropSum is every drop counted.
func dropSum(s *api.SyncStatus) uint64 {
	var n uint64
	for _, v := range s.Dropped {
		n += v
	}
	return n
}

func diffDrops(a, b *api.SyncStatus) map[string]uint64 {
	out := map[string]uint64{}
	for r, v := range b.Dropped {
		if d := v - a.Dropped[r]; d != 0 {
			out[r] = d
		}
	}
	return out
}

// rss is process pid's resident memory, in bytes (/proc/pid/status).
func rss(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.Lines(string(b)) {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "VmRSS:" && f[2] == "kB" {
			kb, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}
