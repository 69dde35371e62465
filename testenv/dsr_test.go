package testenv

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/fulcrum-lb/fulcrum/internal/require"
)

// macRewriteProgram is a minimal DSR fast path: every IPv4 and IPv6 frame
// gets destination MAC dst and source MAC src and goes back out with XDP_TX;
// anything else (ARP) is passed.
func macRewriteProgram(dst, src net.HardwareAddr) (*ebpf.Program, error) {
	insns := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // data
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), // data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 14),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 12, asm.Half), // EtherType as stored (big endian)
		asm.JEq.Imm(asm.R5, 0x0008, "rewrite"),    // 0x0800 IPv4, read little endian
		asm.JEq.Imm(asm.R5, 0xdd86, "rewrite"),    // 0x86dd IPv6
		asm.Mov.Imm(asm.R0, 2).WithSymbol("pass"), // XDP_PASS
		asm.Return(),
	}
	for i, b := range dst {
		ins := asm.StoreImm(asm.R2, int16(i), int64(b), asm.Byte)
		if i == 0 {
			ins = ins.WithSymbol("rewrite")
		}
		insns = append(insns, ins)
	}
	for i, b := range src {
		insns = append(insns, asm.StoreImm(asm.R2, int16(6+i), int64(b), asm.Byte))
	}
	insns = append(insns, asm.Mov.Imm(asm.R0, 3), asm.Return()) // XDP_TX
	return ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "testenv_dsr", Type: ebpf.XDP, License: "GPL", Instructions: insns,
	})
}

// TestDSRSmoke checks that the canonical topology carries what it is for:
// client -> VIP -> router -> lb1, where an XDP program rewrites MACs and
// sends the frame back out with XDP_TX -> bridge -> backend1 (VIP on lo) ->
// reply straight to the client. It depends on the pass-through program on
// the bridge ports and on TX checksum offload being off on the client.
func TestDSRSmoke(t *testing.T) {
	require.Netns(t)
	require.Tool(t, "ip") // commands run in a namespace through `ip netns exec`
	topo := NewCanonical(t, Options{Backends: 2, VIPs: []netip.Addr{vip4, vip6}})
	lb, be := topo.LB1, topo.Backends[0]

	// lb1 bounces all IP traffic, neighbour discovery included, so the
	// router gets lb1's MAC statically.
	for _, ip := range []netip.Addr{LB1IPv4, LB1IPv6} {
		if err := topo.Router.AddNeighbor(MainIface, ip, lb.MAC); err != nil {
			t.Fatal(err)
		}
	}
	prog, err := macRewriteProgram(be.MAC, lb.MAC)
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	var xl link.Link
	if err := lb.Do(func() (err error) {
		// The ifindex resolves in the namespace of the calling thread.
		xl, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: lb.Ifindex, Flags: link.XDPDriverMode})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer xl.Close()

	for _, v := range []netip.Addr{vip4, vip6} {
		t.Run(v.String(), func(t *testing.T) {
			vip := netip.AddrPortFrom(v, 9000)
			var srv net.PacketConn
			if err := be.Do(func() (err error) {
				srv, err = net.ListenPacket("udp", vip.String())
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			go func() {
				buf := make([]byte, 1500)
				for {
					n, from, err := srv.ReadFrom(buf)
					if err != nil {
						return
					}
					srv.WriteTo(fmt.Appendf(nil, "%s:%s", be.Role(), buf[:n]), from)
				}
			}()

			var cl net.Conn
			if err := topo.Client.Do(func() (err error) {
				cl, err = net.Dial("udp", vip.String())
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			buf := make([]byte, 1500)
			for {
				if ctx.Err() != nil {
					t.Fatalf("no reply from %s through lb1\n%s", vip, dsrDiagnostics(topo))
				}
				if _, err := cl.Write([]byte("ping")); err != nil {
					t.Fatal(err)
				}
				cl.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
				n, err := cl.Read(buf)
				if err != nil {
					continue
				}
				if got, want := string(buf[:n]), be.Role()+":ping"; got != want {
					t.Fatalf("reply %q, want %q", got, want)
				}
				return
			}
		})
	}
}

// dsrDiagnostics collects what tells where DSR frames got lost: the XDP
// counters of lb1's veth and of its bridge-side peer, and backend1's UDP
// counters (InCsumErrors for partial checksums).
func dsrDiagnostics(topo *Topology) string {
	ctx := context.Background()
	var out string
	for _, c := range []struct {
		h    *Host
		args []string
	}{
		{topo.LB1, []string{"ethtool", "-S", MainIface}},
		{topo.Switch, []string{"ethtool", "-S", topo.SwitchPort(topo.LB1)}},
		{topo.Backends[0], []string{"cat", "/proc/net/snmp"}},
	} {
		s, err := c.h.Run(ctx, c.args[0], c.args[1:]...)
		if err != nil {
			s = err.Error()
		}
		out += fmt.Sprintf("--- %s: %v\n%s", c.h.Role(), c.args, s)
	}
	return out
}
