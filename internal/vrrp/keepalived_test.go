package vrrp

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/testenv"
)

// Interoperation with keepalived (Debian's package): a generated
// configuration, VRRPv3 at advert_int 0.1 (10 cs), VRID 51, the same
// virtual address, no authentication.

func keepalivedBinary(t *testing.T) string {
	t.Helper()
	require.Tool(t, "ip") // keepalived runs in a namespace through `ip netns exec`
	return require.Tool(t, "keepalived")
}

type keepalived struct {
	name string
	cmd  *exec.Cmd
	log  string // its console output
	done chan struct{}
}

// startKeepalived runs keepalived's VRRP subsystem in h's namespace with
// the given priority, to the multicast group or, if peers are given, by
// unicast to them.
func startKeepalived(t *testing.T, h *testenv.Host, priority int, peers ...netip.Addr) *keepalived {
	t.Helper()
	bin := keepalivedBinary(t)
	dir := t.TempDir()
	unicast := ""
	if len(peers) > 0 {
		unicast = fmt.Sprintf("    unicast_src_ip %s\n    unicast_peer {\n", h.IPv4)
		for _, p := range peers {
			unicast += "        " + p.String() + "\n"
		}
		unicast += "    }\n"
	}
	conf := fmt.Sprintf(`global_defs {
    router_id fulcrum_test_%s
    vrrp_version 3
}
vrrp_instance VI_1 {
    state BACKUP
    interface %s
    virtual_router_id 51
    priority %d
    advert_int 0.1
    virtual_ipaddress {
        %s
    }
%s}
`, h.Role(), testenv.MainIface, priority, vip4, unicast)
	confPath := filepath.Join(dir, "keepalived.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	k := &keepalived{name: "keepalived@" + h.Role(), log: filepath.Join(dir, "keepalived.log"), done: make(chan struct{})}
	// keepalived's parent and its VRRP child both write to the log: append
	// mode keeps them from overwriting each other, and line buffering
	// (stdbuf, where there is one) makes each line appear when it is
	// logged.
	out, err := os.OpenFile(k.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	args := []string{"--dont-fork", "--log-console", "--log-detail", "--no-syslog", "--vrrp",
		"--use-file", confPath,
		"--pid", filepath.Join(dir, "keepalived.pid"),
		"--vrrp_pid", filepath.Join(dir, "vrrp.pid")}
	if stdbuf, err := exec.LookPath("stdbuf"); err == nil {
		k.cmd = h.Command(context.Background(), stdbuf, append([]string{"-oL", "-eL", bin}, args...)...)
	} else {
		k.cmd = h.Command(context.Background(), bin, args...)
	}
	k.cmd.Stdout, k.cmd.Stderr = out, out
	if err := k.cmd.Start(); err != nil {
		t.Fatalf("start keepalived: %v", err)
	}
	go func() {
		_ = k.cmd.Wait()
		close(k.done)
	}()
	t.Cleanup(func() {
		k.kill(t)
		if t.Failed() || os.Getenv("VRRP_KEEPALIVED_LOG") != "" {
			t.Logf("%s log:\n%s", k.name, k.output())
		}
	})
	return k
}

// stop ends keepalived with SIGTERM, as a clean shutdown (a master
// advertises priority 0), and waits for it. It returns when the signal was
// sent.
func (k *keepalived) stop(t *testing.T) time.Time {
	t.Helper()
	sent := time.Now()
	if err := k.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM %s (pid %d): %v", k.name, k.cmd.Process.Pid, err)
	}
	select {
	case <-k.done:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s did not exit within 5 s of SIGTERM", k.name)
	}
	return sent
}

// kill SIGKILLs keepalived's process group (it has a VRRP child).
func (k *keepalived) kill(t *testing.T) {
	select {
	case <-k.done:
		return
	default:
	}
	_ = syscall.Kill(-k.cmd.Process.Pid, syscall.SIGKILL)
	<-k.done
}

func (k *keepalived) output() string {
	b, _ := os.ReadFile(k.log)
	return string(b)
}

// count returns how many lines of keepalived's log contain s.
func (k *keepalived) count(s string) int { return strings.Count(k.output(), s) }

// waitLog waits until keepalived's log has n lines containing s.
func (k *keepalived) waitLog(t *testing.T, s string, n int, timeout time.Duration) time.Time {
	t.Helper()
	at, ok := k.tryWaitLog(s, n, timeout)
	if !ok {
		t.Fatalf("%s logged %q %d times within %v, want %d; log:\n%s", k.name, s, k.count(s), timeout, n, k.output())
	}
	return at
}

// tryWaitLog is waitLog that reports a timeout instead of failing.
func (k *keepalived) tryWaitLog(s string, n int, timeout time.Duration) (time.Time, bool) {
	deadline := time.Now().Add(timeout)
	for k.count(s) < n {
		if time.Now().After(deadline) {
			return time.Time{}, false
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Now(), true
}

const (
	kaBackup = "Entering BACKUP STATE"
	kaMaster = "Entering MASTER STATE"
)

// waitAdverts waits until keepalived has sent more advertisements than
// before (captured by capt): a backup sends none, so it is master. It
// returns when it saw them.
func (k *keepalived) waitAdverts(capt *capture, before int, timeout time.Duration) (time.Time, bool) {
	deadline := time.Now().Add(timeout)
	for len(capt.vrrpFrom(testenv.LB2IPv4)) <= before {
		if time.Now().After(deadline) {
			return time.Time{}, false
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Now(), true
}

// capture records frames seen on an interface of a namespace.
type capture struct {
	fd     int
	mu     sync.Mutex
	frames [][]byte
	done   chan struct{}
}

func startCapture(t *testing.T, h *testenv.Host, iface string) *capture {
	t.Helper()
	c := &capture{done: make(chan struct{})}
	err := h.Do(func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		c.fd = fd
		link, err := h.Link(iface)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: link.Attrs().Index}); err != nil {
			return err
		}
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 50000})
	})
	if err != nil {
		t.Fatalf("capture on %s %s: %v", h.Role(), iface, err)
	}
	stop := make(chan struct{})
	go func() {
		defer close(c.done)
		buf := make([]byte, 2048)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, _, err := unix.Recvfrom(c.fd, buf, 0)
			if err != nil {
				continue
			}
			c.mu.Lock()
			c.frames = append(c.frames, bytes.Clone(buf[:n]))
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-c.done
		unix.Close(c.fd)
	})
	return c
}

// vrrpFrom returns the IPv4 VRRP packets (from the IP header on) captured
// from src.
func (c *capture) vrrpFrom(src netip.Addr) [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out [][]byte
	for _, f := range c.frames {
		if len(f) < 14+20 || binary.BigEndian.Uint16(f[12:]) != unix.ETH_P_IP || f[14+9] != Protocol {
			continue
		}
		if netip.AddrFrom4([4]byte(f[14+12:14+16])) == src {
			out = append(out, f[14:])
		}
	}
	return out
}

// vrrpSummary describes the last n IPv4 advertisements captured: source,
// priority and interval, one per line.
func (c *capture) vrrpSummary(n int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var lines []string
	for _, f := range c.frames {
		if len(f) < 14+20+8 || binary.BigEndian.Uint16(f[12:]) != unix.ETH_P_IP || f[14+9] != Protocol {
			continue
		}
		ihl := int(f[14]&0x0f) * 4
		if len(f) < 14+ihl+8 {
			continue
		}
		msg := f[14+ihl:]
		lines = append(lines, fmt.Sprintf("  from %v vrid %d priority %d interval %d cs",
			netip.AddrFrom4([4]byte(f[14+12:14+16])), msg[1], msg[2], binary.BigEndian.Uint16(msg[4:])&0x0fff))
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

var broadcastMAC = []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// garpsFrom returns the broadcast ARP frames sent from mac.
func (c *capture) garpsFrom(mac []byte) [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out [][]byte
	for _, f := range c.frames {
		// Broadcast only: the kernel's unicast ARP replies (for a
		// virtual address while that node held it) are no announcements.
		if len(f) >= 42 && bytes.Equal(f[:6], broadcastMAC) && binary.BigEndian.Uint16(f[12:]) == unix.ETH_P_ARP && bytes.Equal(f[6:12], mac) {
			out = append(out, f)
		}
	}
	return out
}

// checkWire compares captured advertisements with what Marshal makes of
// the same fields, and their IP headers with keepalived's.
func checkWire(t *testing.T, who string, pkts [][]byte, src netip.Addr, priority uint8) {
	t.Helper()
	var seen bool
	for _, p := range pkts {
		ihl := int(p[0]&0x0f) * 4
		msg := p[ihl:int(binary.BigEndian.Uint16(p[2:]))]
		if msg[2] != priority {
			continue
		}
		seen = true
		if p[1] != 0xc0 || p[8] != 255 || netip.AddrFrom4([4]byte(p[16:20])) != GroupIPv4 {
			t.Errorf("%s: IP header % x: want TOS 0xc0, TTL 255, destination 224.0.0.18", who, p[:ihl])
		}
		a := Advert{VRID: 51, Priority: priority, MaxAdvertInterval: 10, Addresses: []netip.Addr{vip4.Addr()}}
		want, err := a.Marshal(src, GroupIPv4)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(msg, want) {
			t.Errorf("%s's advertisement at priority %d:\n got % x\nwant % x (Marshal)", who, priority, msg, want)
		}
		break
	}
	if !seen {
		t.Errorf("captured no advertisement of priority %d from %s (%d packets)", priority, who, len(pkts))
	}
}

// TestKeepalivedBackup: Fulcrum (lb1, priority 200) and keepalived (lb2,
// 100). keepalived starts first and is master; Fulcrum hears it, preempts
// it, and keepalived backs off; when Fulcrum stops keepalived takes over;
// when Fulcrum comes back it preempts again.
func TestKeepalivedBackup(t *testing.T) {
	require.Netns(t)
	keepalivedBinary(t)
	topo := testenv.NewCanonical(t, testenv.Options{SecondLB: true, Backends: 1})
	capt := startCapture(t, topo.Router, testenv.MainIface)

	ka := startKeepalived(t, topo.LB2, 100)
	ka.waitLog(t, kaMaster, 1, 5*time.Second)
	ping(t, topo.Router, vip4.Addr())

	r1 := start(t, topo.LB1, baseConfig(200, vip4))
	waitState(t, r1, Master, 2*time.Second)
	ka.waitLog(t, kaBackup, 2, 2*time.Second) // once at startup, once now
	ka.waitLog(t, "Master received advert from 198.18.0.2 with higher priority 200, ours 100", 1, time.Second)
	if s := r1.Stats(); s.AdvertsReceived == 0 {
		t.Errorf("Fulcrum heard no advertisement from keepalived: %+v", s)
	}
	waitNeighbour(t, topo.Router, vip4.Addr(), topo.LB1.MAC, time.Second)
	checkHolder(t, topo, topo.LB1, vip4)
	stays(t, r1, Master, 500*time.Millisecond)
	if n := ka.count(kaMaster); n != 1 {
		t.Errorf("keepalived entered MASTER %d times while Fulcrum was master, want 1 (at startup)", n)
	}
	checkNoDrops(t, r1)

	// Fulcrum stops (priority 0): keepalived takes over after its skew
	// time (~61 ms). Its own advertisements on the wire say so, and then
	// its log. (CI once saw keepalived stop right after the priority-0
	// advertisement: testenv started it with a Pdeathsig, which fired when
	// the OS thread that had forked it, later locked by the Router, ended.)
	kaAdverts := len(capt.vrrpFrom(testenv.LB2IPv4)) // a backup sends none
	masters := ka.count(kaMaster)
	stopped := r1.stop(t)
	took, ok := ka.waitAdverts(capt, kaAdverts, 5*time.Second)
	if !ok {
		t.Fatalf("keepalived sent no advertisement within 5 s of Fulcrum's priority 0; last advertisements on the wire:\n%s\nkeepalived log:\n%s",
			capt.vrrpSummary(12), ka.output())
	}
	ka.waitLog(t, kaMaster, masters+1, 2*time.Second)
	t.Logf("Fulcrum stopped → keepalived advertising as master %v later", took.Sub(stopped))
	waitNeighbour(t, topo.Router, vip4.Addr(), topo.LB2.MAC, time.Second)
	checkHolder(t, topo, topo.LB2, vip4)
	ping(t, topo.Router, vip4.Addr())

	// Fulcrum comes back and preempts again.
	backups := ka.count(kaBackup)
	r1 = start(t, topo.LB1, baseConfig(200, vip4))
	waitState(t, r1, Master, 2*time.Second)
	ka.waitLog(t, kaBackup, backups+1, 2*time.Second)
	waitNeighbour(t, topo.Router, vip4.Addr(), topo.LB1.MAC, time.Second)
	checkNoDrops(t, r1)
	if strings.Contains(strings.ToLower(ka.output()), "invalid") {
		t.Errorf("keepalived found something invalid:\n%s", ka.output())
	}

	// On the wire, each side's advertisements are what Marshal makes.
	checkWire(t, "keepalived", capt.vrrpFrom(testenv.LB2IPv4), testenv.LB2IPv4, 100)
	checkWire(t, "Fulcrum", capt.vrrpFrom(testenv.LB1IPv4), testenv.LB1IPv4, 200)
	checkWire(t, "Fulcrum", capt.vrrpFrom(testenv.LB1IPv4), testenv.LB1IPv4, 0)
	// keepalived's gratuitous ARPs and ours are the same frame but for the
	// MAC (keepalived may pad it to the Ethernet minimum).
	kaGARPs, ourGARPs := capt.garpsFrom(topo.LB2.MAC), capt.garpsFrom(topo.LB1.MAC)
	if len(kaGARPs) == 0 || len(ourGARPs) == 0 {
		t.Errorf("gratuitous ARPs captured: keepalived %d, Fulcrum %d; want some of each", len(kaGARPs), len(ourGARPs))
	} else {
		want := garpFrame(topo.LB2.MAC, vip4.Addr())
		if got := kaGARPs[0][:42]; !bytes.Equal(got, want) {
			t.Errorf("keepalived's gratuitous ARP:\n got % x\nwant % x (ours for its MAC)", got, want)
		}
		t.Logf("gratuitous ARPs seen: keepalived %d (%d bytes), Fulcrum %d (%d bytes)", len(kaGARPs), len(kaGARPs[0]), len(ourGARPs), len(ourGARPs[0]))
	}
}

// TestKeepalivedMaster: keepalived (lb2, priority 200) is master and
// Fulcrum (lb1, 100) its backup; when keepalived stops Fulcrum takes over,
// and when it comes back it preempts Fulcrum.
func TestKeepalivedMaster(t *testing.T) {
	require.Netns(t)
	keepalivedBinary(t)
	topo := testenv.NewCanonical(t, testenv.Options{SecondLB: true, Backends: 1})

	ka := startKeepalived(t, topo.LB2, 200)
	ka.waitLog(t, kaMaster, 1, 5*time.Second)
	ping(t, topo.Router, vip4.Addr())

	r1 := start(t, topo.LB1, baseConfig(100, vip4))
	waitState(t, r1, Backup, time.Second)
	stays(t, r1, Backup, time.Second)
	s := r1.Stats()
	if s.AdvertsReceived < 5 || s.Master != testenv.LB2IPv4 || s.MasterAdvertInterval != 10 {
		t.Errorf("Fulcrum as keepalived's backup: %+v; want advertisements from 198.18.0.3 at 10 cs", s)
	}
	checkNoDrops(t, r1)
	checkHolder(t, topo, topo.LB2, vip4)

	// keepalived stops cleanly (priority 0): Fulcrum takes over after its
	// skew time.
	stopped := ka.stop(t)
	took := waitState(t, r1, Master, time.Second)
	t.Logf("keepalived stopped → Fulcrum master %v later (from SIGTERM)", took.Sub(stopped))
	if s := r1.Stats(); s.PriorityZeroReceived == 0 {
		t.Errorf("Fulcrum saw no priority-0 advertisement from keepalived: %+v", s)
	}
	waitNeighbour(t, topo.Router, vip4.Addr(), topo.LB1.MAC, time.Second)
	checkHolder(t, topo, topo.LB1, vip4)
	ping(t, topo.Router, vip4.Addr())

	// keepalived comes back and preempts.
	ka = startKeepalived(t, topo.LB2, 200)
	ka.waitLog(t, kaMaster, 1, 5*time.Second)
	waitState(t, r1, Backup, time.Second)
	waitNeighbour(t, topo.Router, vip4.Addr(), topo.LB2.MAC, time.Second)
	checkNoDrops(t, r1)
	ka.waitLog(t, "received lower priority (100) advert from 198.18.0.2 - discarding", 1, time.Second)
	if s := r1.Stats(); s.AddressMismatches != 0 {
		t.Errorf("address lists differ: %+v", s)
	}

	// keepalived dies without a word (SIGKILL): Fulcrum takes over after
	// its master-down interval.
	killed := time.Now()
	ka.kill(t)
	took = waitState(t, r1, Master, 2*time.Second)
	t.Logf("keepalived killed → Fulcrum master %v later (master-down interval 360 ms)", took.Sub(killed))
	waitNeighbour(t, topo.Router, vip4.Addr(), topo.LB1.MAC, time.Second)
}

// TestKeepalivedUnicast: keepalived (lb2, 200) and Fulcrum (lb1, 100) with
// unicast peers instead of the group; each accepts the other's checksum,
// which covers the peer's address as destination.
func TestKeepalivedUnicast(t *testing.T) {
	require.Netns(t)
	keepalivedBinary(t)
	topo := testenv.NewCanonical(t, testenv.Options{SecondLB: true, Backends: 1})
	ka := startKeepalived(t, topo.LB2, 200, testenv.LB1IPv4)
	ka.waitLog(t, kaMaster, 1, 5*time.Second)

	cfg := baseConfig(100, vip4)
	cfg.UnicastPeers = []netip.Addr{testenv.LB2IPv4}
	r1 := start(t, topo.LB1, cfg)
	waitState(t, r1, Backup, time.Second)
	stays(t, r1, Backup, time.Second)
	if s := r1.Stats(); s.AdvertsReceived < 5 || s.Master != testenv.LB2IPv4 {
		t.Errorf("Fulcrum as keepalived's unicast backup: %+v", s)
	}
	checkNoDrops(t, r1)

	ka.stop(t)
	waitState(t, r1, Master, time.Second)
	ka = startKeepalived(t, topo.LB2, 200, testenv.LB1IPv4)
	// keepalived hears Fulcrum's unicast advertisements (and preempts).
	ka.waitLog(t, "received lower priority (100) advert from 198.18.0.2 - discarding", 1, 5*time.Second)
	ka.waitLog(t, kaMaster, 1, 5*time.Second)
	waitState(t, r1, Backup, time.Second)
	if strings.Contains(strings.ToLower(ka.output()), "invalid") {
		t.Errorf("keepalived found something invalid:\n%s", ka.output())
	}
	checkNoDrops(t, r1)
}
