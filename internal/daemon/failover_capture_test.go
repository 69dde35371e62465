package daemon_test

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/testenv"
)

// advertCapture records the VRRP advertisements (IPv4, protocol 112) that
// cross one interface, with the kernel's timestamps: when they reached the
// interface (received) or left through it (sent). It is the test's own
// witness of the protocol's timing, independent of the daemons' counters.
type advertCapture struct {
	where string
	fd    int
	done  chan struct{}
	wg    sync.WaitGroup

	mu      sync.Mutex
	adverts []capturedAdvert
}

type capturedAdvert struct {
	at       time.Time
	src      netip.Addr
	priority int
	outgoing bool
}

// captureAdverts starts capturing on iface in host's namespace until the
// test ends (or stop).
func captureAdverts(t testing.TB, host *testenv.Host, iface string) *advertCapture {
	t.Helper()
	c := &advertCapture{where: host.Role() + "/" + iface, fd: -1, done: make(chan struct{})}
	err := host.Do(func() error {
		ifi, err := host.Link(iface)
		if err != nil {
			return err
		}
		// ETH_P_ALL: only such taps see outgoing frames, and frames
		// received on a bridge port (the bridge consumes them before
		// protocol-specific taps are served).
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons16(unix.ETH_P_ALL)))
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		c.fd = fd
		// Only protocol 112 reaches the socket: the capture must not
		// fall behind (or cost CPU) under a flood of data packets.
		filter := []unix.SockFilter{
			{Code: 0x30, K: 14 + 9},            // ldb [23]: IPv4 protocol
			{Code: 0x15, Jt: 0, Jf: 1, K: 112}, // jeq #112
			{Code: 0x06, K: 0xffff},            // ret: accept
			{Code: 0x06, K: 0},                 // ret: drop
		}
		prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
		if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err != nil {
			return fmt.Errorf("SO_ATTACH_FILTER: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons16(unix.ETH_P_ALL), Ifindex: ifi.Attrs().Index}); err != nil {
			return fmt.Errorf("bind to %s: %w", iface, err)
		}
		for _, o := range []struct{ level, opt, v int }{
			{unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1},
			{unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4 << 20},
		} {
			if err := unix.SetsockoptInt(fd, o.level, o.opt, o.v); err != nil {
				return fmt.Errorf("setsockopt %d: %w", o.opt, err)
			}
		}
		// A timeout, so that the reader notices stop: close does not
		// wake a blocked recvmsg.
		tv := unix.Timeval{Usec: 100_000}
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	})
	if err != nil {
		if c.fd >= 0 {
			unix.Close(c.fd)
		}
		t.Fatalf("capture on %s: %v", c.where, err)
	}
	c.wg.Add(1)
	go c.read()
	t.Cleanup(c.stop)
	return c
}

func htons16(v uint16) uint16 { return v<<8 | v>>8 }

func (c *advertCapture) read() {
	defer c.wg.Done()
	buf := make([]byte, 256)
	oob := make([]byte, 128)
	for {
		select {
		case <-c.done:
			return
		default:
		}
		n, oobn, _, from, err := unix.Recvmsg(c.fd, buf, oob, 0)
		if err != nil {
			continue // timeout (or EINTR): look at done again
		}
		f := buf[:n]
		if n < 14+20+4 {
			continue
		}
		ihl := int(f[14]&0x0f) * 4
		if n < 14+ihl+4 {
			continue
		}
		a := capturedAdvert{
			at:       time.Now(),
			src:      netip.AddrFrom4([4]byte(f[26:30])),
			priority: int(f[14+ihl+2]),
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok {
			a.outgoing = ll.Pkttype == unix.PACKET_OUTGOING
		}
		if cms, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, cm := range cms {
				if cm.Header.Level == unix.SOL_SOCKET && cm.Header.Type == unix.SCM_TIMESTAMPNS && len(cm.Data) >= int(unsafe.Sizeof(unix.Timespec{})) {
					ts := (*unix.Timespec)(unsafe.Pointer(&cm.Data[0]))
					a.at = time.Unix(ts.Unix())
				}
			}
		}
		c.mu.Lock()
		c.adverts = append(c.adverts, a)
		c.mu.Unlock()
	}
}

func (c *advertCapture) stop() {
	select {
	case <-c.done:
		return
	default:
	}
	close(c.done)
	c.wg.Wait()
	unix.Close(c.fd)
}

// from returns the capture times of src's advertisements of a priority
// other than 0, in [start, end).
func (c *advertCapture) from(src netip.Addr, start, end time.Time) []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []time.Time
	for _, a := range c.adverts {
		if a.src == src && a.priority != 0 && !a.at.Before(start) && a.at.Before(end) {
			out = append(out, a.at)
		}
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}
