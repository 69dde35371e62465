package perf

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/internal/testpacket"
	"github.com/fulcrum-lb/fulcrum/testenv"
)

// TestSYNFlood floods a VIP with TCP SYNs from the live-frame generator
// (on the router, towards lb1) while real connections through the same VIP
// are established: with a new-flow limit configured, the flood's flows get
// no connection entry (ct_guard counts them) and every established
// connection keeps working, during and after the flood.
func TestSYNFlood(t *testing.T) {
	require.BPF(t)
	require.Netns(t)
	vip := netip.MustParseAddr("203.0.113.10")
	topo := testenv.NewCanonical(t, testenv.Options{Backends: 3, VIPs: []netip.Addr{vip}})

	// Echo servers on every backend, bound to the VIP.
	for _, b := range topo.Backends {
		var ln net.Listener
		if err := b.Do(func() error {
			var err error
			ln, err = net.Listen("tcp4", netip.AddrPortFrom(vip, 9000).String())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		name := b.Role()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					sc := bufio.NewScanner(c)
					for sc.Scan() {
						fmt.Fprintf(c, "%s %s\n", name, sc.Text())
					}
				}()
			}
		}()
	}

	var d *datapath.Datapath
	if err := topo.LB1.Do(func() error {
		var err error
		if d, err = datapath.Load(datapath.Options{ConntrackEntries: 65536}); err != nil {
			return err
		}
		return d.Attach(topo.LB1.Ifindex, datapath.AttachNative)
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	var bs []datapath.Backend
	for _, b := range topo.Backends {
		bs = append(bs, datapath.Backend{Addr: b.IPv4, MAC: b.MAC, Weight: 1})
	}
	key := datapath.VIP{Addr: vip, Port: 9000, Proto: datapath.TCP}
	if err := d.AddVIP(key, datapath.VIPConfig{Mode: datapath.ModeDSR}, bs); err != nil {
		t.Fatal(err)
	}
	const limit = 1000
	if err := d.SetNewFlowLimit(limit); err != nil {
		t.Fatal(err)
	}

	// Established connections from the client.
	type conn struct {
		c       net.Conn
		r       *bufio.Reader
		backend string
	}
	exchange := func(c *conn, msg string) (string, error) {
		c.c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := fmt.Fprintln(c.c, msg); err != nil {
			return "", err
		}
		line, err := c.r.ReadString('\n')
		name, _, _ := strings.Cut(line, " ")
		return name, err
	}
	var conns []*conn
	for i := range 30 {
		var c net.Conn
		if err := topo.Client.Do(func() error {
			var err error
			c, err = net.DialTimeout("tcp4", netip.AddrPortFrom(vip, 9000).String(), 3*time.Second)
			return err
		}); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		cn := &conn{c: c, r: bufio.NewReader(c)}
		name, err := exchange(cn, "hello")
		if err != nil {
			t.Fatal(err)
		}
		cn.backend = name
		conns = append(conns, cn)
	}

	// The flood: SYNs from a spoofed client, one new source port per frame
	// (4096 per CPU), from the router's switch-side port to lb1's MAC.
	var objs perfObjects
	if err := loadPerfObjects(&objs, nil); err != nil {
		t.Fatal(err)
	}
	defer objs.Close()
	p := testpacket.Packet{SrcMAC: topo.Router.MAC, DstMAC: topo.LB1.MAC,
		Src: netip.MustParseAddr("198.19.1.99"), Dst: vip, Proto: layers.IPProtocolTCP,
		Sport: 1024, Dport: 9000, SYN: true}
	frame := p.Build()
	for len(frame) < genFrameLen {
		frame = append(frame, 0)
	}
	var plan perfGenPlan
	copy(plan.Frame[:], frame)
	plan.SportBase, plan.Flows = 1024, 4096
	if err := objs.GenConfig.Put(uint32(0), plan); err != nil {
		t.Fatal(err)
	}
	before, _ := d.Counters()
	done := make(chan error, 1)
	go func() {
		done <- topo.Router.Do(func() error {
			for range 10 {
				opts := ebpf.RunOptions{Data: frame, Repeat: 50_000, Flags: unix.BPF_F_TEST_XDP_LIVE_FRAMES,
					Context: perfXdpMd{DataEnd: uint32(len(frame)), IngressIfindex: uint32(topo.Router.Ifindex)}}
				if _, err := objs.GenFrames.Run(&opts); err != nil {
					return err
				}
			}
			return nil
		})
	}()
	// Established connections keep working during the flood...
	for round := 0; ; round++ {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("generator: %v", err)
			}
			goto after
		default:
		}
		for i, c := range conns {
			if got, err := exchange(c, fmt.Sprintf("r%d", round)); err != nil || got != c.backend {
				t.Fatalf("during the flood, connection %d (on %s): %q, %v", i, c.backend, got, err)
			}
		}
	}
after:
	// ... and after it.
	for i, c := range conns {
		if got, err := exchange(c, "after"); err != nil || got != c.backend {
			t.Fatalf("after the flood, connection %d (on %s): %q, %v", i, c.backend, got, err)
		}
	}
	after, _ := d.Counters()
	guard := after.Stat(datapath.StatCtGuard) - before.Stat(datapath.StatCtGuard)
	syn := after.Stat(datapath.StatCtSYN) - before.Stat(datapath.StatCtSYN)
	tx := after.Stat(datapath.StatTxDSR) - before.Stat(datapath.StatTxDSR)
	t.Logf("flood: 500000 SYN frames generated; LB forwarded %d, %d got an entry (ct_syn), %d over the limit of %d/s per CPU (ct_guard)", tx, syn, guard, limit)
	if guard == 0 {
		t.Fatal("ct_guard did not move: the new-flow guard never acted")
	}
}
