package health

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/internal/config"
)

// maxBody is how much of an HTTP response body a probe reads.
const maxBody = 4 << 10

// userAgent is sent by HTTP(S) probes.
const userAgent = "fulcrum-health-check"

// prober holds what a target's probes reuse between runs: the HTTP client
// of an http(s) check. Its zero value serves tcp and udp checks.
type prober struct {
	client *http.Client
}

// newProber prepares the probes of check hc, whose sockets carry mark
// (0: none).
func newProber(hc config.HealthCheck, mark uint32) prober {
	if hc.Type != "http" && hc.Type != "https" {
		return prober{}
	}
	d := dialer(hc, mark)
	tr := &http.Transport{
		Proxy:                  nil, // never the environment's proxy
		DialContext:            d.DialContext,
		DisableKeepAlives:      true, // one connection per probe, closed after it
		DisableCompression:     true,
		MaxResponseHeaderBytes: 16 << 10,
	}
	if hc.Type == "https" {
		tr.TLSClientConfig = &tls.Config{
			InsecureSkipVerify: hc.SkipVerify, // the operator's choice, per check
			ServerName:         hostOnly(hc.Host),
			// Resume the last session: no certificate to sign and check
			// on every probe.
			ClientSessionCache: tls.NewLRUClientSessionCache(1),
		}
	}
	return prober{client: &http.Client{
		Transport: tr,
		// A redirect is an answer like any other: its status is judged
		// against the expected ones, the Location is not followed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// close releases the prober's idle connections (there should be none).
func (p prober) close() {
	if p.client != nil {
		p.client.CloseIdleConnections()
	}
}

// runProbe probes t once with its current check. A through-datapath
// probe is addressed to the VIP, from a socket with t's mark, after the
// steering of that mark to t's backend is in place.
func (c *Checker) runProbe(ctx context.Context, t *target) error {
	c.mu.Lock()
	hc, p, mark, tg := t.check, t.prober, t.mark, t.status.Target
	c.mu.Unlock()
	addr := netip.AddrPortFrom(t.key.backend, hc.Port)
	if hc.ThroughDatapath {
		addr = netip.AddrPortFrom(t.key.vip.Addr, hc.Port)
		if err := c.steerTarget(ctx, t, mark, tg); err != nil {
			return err
		}
	}
	var err error
	switch hc.Type {
	case "tcp":
		err = probeTCP(ctx, hc, mark, addr)
	case "http", "https":
		err = probeHTTP(ctx, p.client, hc, addr)
	case "udp":
		err = probeUDP(ctx, hc, mark, addr)
	default:
		err = fmt.Errorf("unknown check type %q", hc.Type)
	}
	if err != nil {
		// Steer again before the next probe: the route or the MAC the
		// steering uses may be what changed.
		t.steered = false
	}
	if err != nil && (errors.Is(ctx.Err(), context.DeadlineExceeded) || isTimeout(err)) {
		err = fmt.Errorf("%s %s: no answer within %s", hc.Type, addr, hc.Timeout)
	}
	if err != nil && hc.ThroughDatapath {
		err = fmt.Errorf("%w (through the data path to backend %s)", err, t.key.backend)
	}
	return err
}

// steerTarget puts the steering of t's mark in place unless it is.
func (c *Checker) steerTarget(ctx context.Context, t *target, mark uint32, tg Target) error {
	if t.steered {
		return nil
	}
	if c.steer == nil {
		return errors.New("through-datapath check: no steering program is loaded (only the daemon loads it)")
	}
	if mark == 0 {
		return errors.New("through-datapath check: the target has no socket mark")
	}
	if err := c.steer.Steer(ctx, mark, tg); err != nil {
		return fmt.Errorf("through-datapath check: steer mark %#x to %s: %w", mark, t.key.backend, err)
	}
	t.steered = true
	return nil
}

// isTimeout reports whether err is a deadline expiring, which the socket
// may see a moment before the context does.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// dialer returns a dialer that binds to the check's source address, if any,
// and marks its sockets with mark unless it is 0 (SO_MARK needs
// CAP_NET_ADMIN). Probes have no fallback delay (a single address) and no
// keep-alive.
func dialer(hc config.HealthCheck, mark uint32) *net.Dialer {
	d := &net.Dialer{KeepAlive: -1}
	if mark != 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
			}); err != nil {
				return err
			}
			if serr != nil {
				return fmt.Errorf("set socket mark %#x: %w", mark, serr)
			}
			return nil
		}
	}
	if hc.Source.IsValid() {
		switch hc.Type {
		case "udp":
			d.LocalAddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(hc.Source, 0))
		default:
			d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(hc.Source, 0))
		}
	}
	return d
}

// probeTCP connects to addr and closes the connection with a reset, so
// that a probe a second does not leave a socket in TIME_WAIT each time.
func probeTCP(ctx context.Context, hc config.HealthCheck, mark uint32, addr netip.AddrPort) error {
	conn, err := dialer(hc, mark).DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return fmt.Errorf("tcp connect %s: %w", addr, unwrapOp(err))
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
	return nil
}

// probeHTTP GETs the check's path from addr and checks the status.
func probeHTTP(ctx context.Context, client *http.Client, hc config.HealthCheck, addr netip.AddrPort) error {
	target := hc.Type + "://" + addr.String() + hc.Path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", hc.Type, err)
	}
	if hc.Host != "" {
		req.Host = hc.Host
	}
	req.Header.Set("User-Agent", userAgent)
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) { // drop its method and URL, said below
			err = ue.Err
		}
		return fmt.Errorf("%s get %s: %w", hc.Type, target, unwrapOp(err))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	_ = resp.Body.Close()
	if !slices.Contains(hc.ExpectStatus, resp.StatusCode) {
		return fmt.Errorf("%s get %s: status %d, want %s", hc.Type, target, resp.StatusCode, statuses(hc.ExpectStatus))
	}
	return nil
}

// bufs holds UDP receive buffers, big enough for any datagram.
var bufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// probeUDP sends the payload to addr from a connected socket and waits for
// a reply, which must contain the expected string if one is set. An ICMP
// port unreachable arrives on the connected socket as ECONNREFUSED and
// fails the probe at once.
func probeUDP(ctx context.Context, hc config.HealthCheck, mark uint32, addr netip.AddrPort) error {
	conn, err := dialer(hc, mark).DialContext(ctx, "udp", addr.String())
	if err != nil {
		return fmt.Errorf("udp %s: %w", addr, unwrapOp(err))
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// End a read at once when the probe is stopped.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()

	if _, err := conn.Write([]byte(hc.Payload)); err != nil {
		return udpError(addr, err)
	}
	bp := bufs.Get().(*[]byte)
	defer bufs.Put(bp)
	n, err := conn.Read(*bp)
	if err != nil {
		return udpError(addr, err)
	}
	if hc.Expect != "" && !strings.Contains(string((*bp)[:n]), hc.Expect) {
		return fmt.Errorf("udp %s: reply %s does not contain %q", addr, quoteShort((*bp)[:n]), hc.Expect)
	}
	return nil
}

func udpError(addr netip.AddrPort, err error) error {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("udp %s: connection refused (ICMP port unreachable)", addr)
	}
	return fmt.Errorf("udp %s: %w", addr, unwrapOp(err))
}

// unwrapOp drops a *net.OpError's repetition of the addresses, keeping the
// cause ("connection refused", "i/o timeout").
func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

// hostOnly strips a port from a Host header value, for TLS server names.
func hostOnly(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		return h
	}
	return host
}

func statuses(s []int) string {
	var b strings.Builder
	for i, v := range s {
		if i > 0 {
			b.WriteString(" or ")
		}
		fmt.Fprint(&b, v)
	}
	return b.String()
}

// quoteShort quotes at most the first 64 bytes of a reply.
func quoteShort(b []byte) string {
	if len(b) > 64 {
		return fmt.Sprintf("%q...", b[:64])
	}
	return fmt.Sprintf("%q", b)
}
