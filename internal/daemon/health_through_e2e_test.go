package daemon_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
	"github.com/fulcrum-lb/fulcrum/testenv"
)

// throughVIP is one VIP of throughConfig: its backends' family (v6be)
// may differ from its own in ipip mode.
type throughVIP struct {
	addr  netip.Addr
	port  int
	proto string
	check string
	v6be  bool
}

const throughTiming = "interval: 200ms, timeout: 150ms, rise: 2, fall: 2"

// throughVIPs checks the v4 and v6 echo VIPs, the v4 DNS VIP (udp) and
// the v6 web VIP (http) through the data path, and the v4 web VIP
// directly (tcp to the backends' own port 9000). With mixed set, the udp
// and http VIPs have backends of the other family (4in6 and 6in4 in ipip
// mode).
func throughVIPs(mixed bool) []throughVIP {
	return []throughVIP{
		{vip4, 9000, "tcp", "{type: tcp, " + throughTiming + ", through_datapath: true}", false},
		{vip6, 9000, "tcp", "{type: tcp, " + throughTiming + ", through_datapath: true}", true},
		{vip4, 53, "udp", "{type: udp, payload: hc, expect: hc, " + throughTiming + ", through_datapath: true}", mixed},
		{vip6, 80, "tcp", "{type: http, path: /, " + throughTiming + ", through_datapath: true}", !mixed},
		{vip4, 80, "tcp", "{type: tcp, port: 9000, " + throughTiming + "}", false},
	}
}

// throughConfig renders the daemon's config for throughVIPs in mode.
func (h *harness) throughConfig(mode string) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "instance: e2e\nbpffs: %s\ninterfaces:\n  - name: eth0\napi:\n  socket: %s\nmetrics:\n  address: 127.0.0.1:9542\n", h.dir, h.socket)
	if mode == "ipip" {
		fmt.Fprintf(&sb, "ipip:\n  source_v4: %s\n  source_v6: %s\n", testenv.EncapSourceV4, testenv.EncapSourceV6)
	}
	sb.WriteString("vips:\n")
	for _, v := range throughVIPs(mode == "ipip") {
		fmt.Fprintf(&sb, "  - address: %s\n    port: %d\n    protocol: %s\n    mode: %s\n    health_check: %s\n    backends:\n", v.addr, v.port, v.proto, mode, v.check)
		for _, b := range h.topo.Backends {
			a := b.IPv4
			if v.v6be {
				a = b.IPv6
			}
			fmt.Fprintf(&sb, "      - address: %s\n", a)
		}
	}
	return sb.String()
}

// setVIPsOnLo adds (on) or removes the VIPs from backend b's lo.
func setVIPsOnLo(t testing.TB, b *testenv.Host, on bool) {
	t.Helper()
	lo, err := b.Handle().LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []netip.Addr{vip4, vip6} {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: v.AsSlice(), Mask: net.CIDRMask(v.BitLen(), v.BitLen())}}
		if on {
			a.Flags = syscall.IFA_F_NODAD
			err = b.Handle().AddrAdd(lo, a)
		} else {
			err = b.Handle().AddrDel(lo, a)
		}
		if err != nil {
			t.Fatalf("%s: VIP %s on lo (on=%v): %v", b.Name, v, on, err)
		}
	}
}

// egressPrograms counts the TCX egress programs on lb1's eth0.
func (h *harness) egressPrograms() int {
	var n int
	if err := h.lb.Do(func() error {
		ifc, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		res, err := link.QueryPrograms(link.QueryOptions{Target: ifc.Index, Attach: ebpf.AttachTCXEgress})
		if err != nil {
			return err
		}
		n = len(res.Programs)
		return nil
	}); err != nil {
		h.t.Fatal(err)
	}
	return n
}

// TestHealthThroughDatapath takes the VIPs off backend2's lo while its host
// and servers stay up. The through-datapath checks (tcp v4 and v6, udp,
// http), whose probes are addressed to the VIP and steered to backend2 at
// lb1's tc egress, mark it down; a direct check of the same backend (its
// own address, port 9000) keeps saying up; backend1 and backend3 stay up
// throughout; new connections avoid backend2. With the VIPs back, it comes
// back. When the daemon stops, the steering program is detached.
func TestHealthThroughDatapath(t *testing.T) {
	h := newHarness(t)
	h.writeConfig(h.throughConfig("dsr"))
	h.startDaemon()
	h.throughDatapath()
}

// TestHealthThroughDatapathIPIP is TestHealthThroughDatapath in ipip mode:
// the backends sit behind the router and run `fulcrum decap`, and the
// probes are encapsulated at lb1's tc egress (4in4 and 6in6 tcp, 4in6 udp,
// 6in4 http).
func TestHealthThroughDatapathIPIP(t *testing.T) {
	h := newHarness(t, func(o *testenv.Options) { o.RemoteBackends = true })
	h.startDecap()
	h.writeConfig(h.throughConfig("ipip"))
	h.startDaemon()
	h.throughDatapath()
}

// startDecap runs `fulcrum decap` for both VIPs on every backend's eth0
// (ipip mode) and waits until each has attached.
func (h *harness) startDecap() {
	t := h.t
	for _, b := range h.topo.Backends {
		if _, err := b.Start(context.Background(), h.bin, "decap", "-i", "eth0", "--vip", vip4.String(), "--vip", vip6.String()); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range h.topo.Backends {
		require.Eventually(t, 5*time.Second, func() error {
			out, _ := b.Run(context.Background(), "ip", "link", "show", "eth0")
			if !strings.Contains(out, "xdp") {
				return fmt.Errorf("fulcrum decap did not attach on %s:\n%s", b.Name, out)
			}
			return nil
		})
	}
}

// throughDatapath is the body of the through-datapath tests, on a running
// daemon with throughConfig.
func (h *harness) throughDatapath() {
	t := h.t
	through := []api.VIPRef{
		{Protocol: "tcp", Address: vip4, Port: 9000},
		{Protocol: "tcp", Address: vip6, Port: 9000},
		{Protocol: "udp", Address: vip4, Port: 53},
		{Protocol: "tcp", Address: vip6, Port: 80},
	}
	direct := api.VIPRef{Protocol: "tcp", Address: vip4, Port: 80}
	all := append([]api.VIPRef{direct}, through...)
	names := []string{"backend1", "backend2", "backend3"}
	for _, ref := range all {
		for _, name := range names {
			h.waitHealth(ref, name, "up", 5*time.Second)
		}
	}
	if n := h.egressPrograms(); n != 1 {
		t.Fatalf("%d programs at tc egress of lb1 eth0, want the steering program", n)
	}
	if !strings.Contains(h.log(), "steering program attached") {
		t.Fatalf("daemon log does not say the steering program was attached:\n%s", h.log())
	}

	setVIPsOnLo(t, h.topo.Backends[1], false)
	start := time.Now()
	for _, ref := range through {
		h.waitHealth(ref, "backend2", "down", 5*time.Second)
	}
	t.Logf("backend2 without the VIPs: every through-datapath check says down after %s", time.Since(start).Round(time.Millisecond))
	// Give the direct check as long again to (wrongly) change its mind.
	// This wait is the test, not a stand-in for a condition: the point is
	// that nothing happens in it. It is at least fall probes long, since
	// the through-datapath checks, at the same interval and fall, needed
	// that to go down.
	time.Sleep(time.Since(start))
	for _, ref := range all {
		got := h.backendHealth(ref)
		for _, name := range names {
			want := "up"
			if name == "backend2" && ref != direct {
				want = "down"
			}
			if got[name].Health != want {
				t.Errorf("%s %s: %s (%s), want %s", ref, name, got[name].Health, got[name].HealthError, want)
			}
		}
		t.Logf("%-28s backend2 %-4s %s", ref.String(), got["backend2"].Health, got["backend2"].HealthError)
	}
	if e := h.backendHealth(through[0])["backend2"].HealthError; !strings.Contains(e, "through the data path") || !strings.Contains(e, vip4.String()) {
		t.Errorf("through-datapath error %q does not say it probed the VIP through the data path", e)
	}
	// One transition down per through-datapath VIP for backend2, none
	// for the others.
	for i, want := range []int{0, len(through), 0} {
		if n := h.downLines(i); n != want {
			t.Errorf("backend%d: %d transitions to down logged, want %d:\n%s", i+1, n, want, h.log())
		}
	}
	out, err := h.cli("backend", "list", "tcp/"+vip4.String()+":9000")
	b2 := h.topo.Backends[1]
	if err != nil || !regexp.MustCompile(regexp.QuoteMeta(b2.IPv4.String())+`\s.*down`).MatchString(out) {
		t.Errorf("backend list does not show backend2 down: %v\n%s", err, out)
	}
	metrics := h.scrape()
	for _, want := range []string{
		`fulcrum_backend_health{backend="` + b2.IPv4.String() + `",state="down",vip="tcp/203.0.113.10:9000"} 1`,
		`fulcrum_backend_health{backend="` + b2.IPv4.String() + `",state="up",vip="tcp/203.0.113.10:80"} 1`,
		`fulcrum_backend_health{backend="` + b2.IPv6.String() + `",state="down",vip="tcp/[2001:db8:ffff::10]:9000"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if m := regexp.MustCompile(`fulcrum_health_steer_packets_total\{result="steered"\} (\d+)`).FindStringSubmatch(metrics); m == nil || m[1] == "0" {
		t.Errorf("metrics show no steered probe packet (%v)", m)
	}
	for _, addr := range []netip.Addr{vip4, vip6} {
		for i, c := range h.openConns(20, addr) {
			if c.backend == "backend2" {
				t.Fatalf("new connection %d to %s reached backend2, which lacks the VIP", i, addr)
			}
		}
	}

	setVIPsOnLo(t, h.topo.Backends[1], true)
	for _, ref := range through {
		h.waitHealth(ref, "backend2", "up", 5*time.Second)
	}
	back := 0
	for _, c := range h.openConns(30, vip4) {
		if c.backend == "backend2" {
			back++
		}
	}
	if back == 0 {
		t.Error("no new connection reached backend2 after its VIPs came back")
	}

	// Stopping the daemon detaches the steering (and leaves the XDP
	// program, as always).
	if err := syscall.Kill(h.daemon.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	h.daemon.Wait()
	if n := h.egressPrograms(); n != 0 {
		t.Errorf("%d programs left at tc egress of lb1 eth0 after the daemon stopped", n)
	}
	m := regexp.MustCompile(`steering program detached.* steered=(\d+)`).FindStringSubmatch(h.log())
	if m == nil {
		t.Fatalf("daemon log does not report the steering program's detach:\n%s", h.log())
	}
	if n, _ := strconv.Atoi(m[1]); n == 0 {
		t.Errorf("the steering program steered no packet: %s", m[0])
	}
	t.Logf("daemon log: %s", m[0])
	if !h.xdpAttached() {
		t.Error("the XDP program went with the daemon")
	}
}

// downLines counts the daemon's "backend down" log lines for backend i
// (either address).
func (h *harness) downLines(i int) int {
	b := h.topo.Backends[i]
	n := 0
	for _, l := range strings.Split(h.log(), "\n") {
		if strings.Contains(l, `msg="backend down"`) &&
			(strings.Contains(l, "backend="+b.IPv4.String()+" ") || strings.Contains(l, "backend="+b.IPv6.String()+" ")) {
			n++
		}
	}
	return n
}
