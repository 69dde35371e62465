package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/config"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// probe runs one probe of hc against backend with a fresh prober, as a
// checker's target would.
func probe(t *testing.T, hc config.HealthCheck, backend netip.Addr) error {
	t.Helper()
	hc, err := resolve(Target{Backend: backend, Check: hc})
	if err != nil {
		t.Fatalf("resolve: %v", err)
	}
	c := New(Options{})
	tg := &target{key: key{backend: backend}, check: hc, prober: newProber(hc, 0)}
	defer tg.prober.close()
	ctx, cancel := context.WithTimeout(context.Background(), hc.Timeout)
	defer cancel()
	return c.runProbe(ctx, tg)
}

func check(typ string, port uint16) config.HealthCheck {
	return config.HealthCheck{Type: typ, Port: port, Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3}
}

// listenTCP returns a listener on addr:0 that accepts and closes every
// connection, and the port it got.
func listenTCP(t *testing.T, addr string) (net.Listener, uint16) {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln, port(t, ln.Addr())
}

func port(t *testing.T, a net.Addr) uint16 {
	t.Helper()
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		t.Fatal(err)
	}
	return ap.Port()
}

// closedPort returns a port of network ("tcp" or "udp") on 127.0.0.1 that
// was just in use and is now closed.
func closedPort(t *testing.T, network string) uint16 {
	t.Helper()
	var a net.Addr
	if network == "udp" {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		a = pc.LocalAddr()
		pc.Close()
	} else {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		a = ln.Addr()
		ln.Close()
	}
	return port(t, a)
}

func wantErr(t *testing.T, err error, substr string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one containing %q", substr)
	}
	if !strings.Contains(err.Error(), substr) {
		t.Fatalf("got error %q, want one containing %q", err, substr)
	}
}

func TestTCPProbe(t *testing.T) {
	ln, p := listenTCP(t, "127.0.0.1")
	if err := probe(t, check("tcp", p), loopback); err != nil {
		t.Fatalf("listening: got %v, want success", err)
	}
	ln.Close()
	wantErr(t, probe(t, check("tcp", p), loopback), "connection refused")
}

func TestTCPProbeSource(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	from := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		from <- c.RemoteAddr().String()
		c.Close()
	}()
	hc := check("tcp", port(t, ln.Addr()))
	hc.Source = netip.MustParseAddr("127.0.0.2")
	if err := probe(t, hc, loopback); err != nil {
		t.Fatal(err)
	}
	if got := <-from; !strings.HasPrefix(got, "127.0.0.2:") {
		t.Fatalf("server saw the probe from %s, want 127.0.0.2", got)
	}
}

// httpServer records what each request asked for and answers by path.
type httpServer struct {
	*httptest.Server
	mu    sync.Mutex
	hosts []string
	paths []string
	froms []string
	open  atomic.Int64 // connections not yet closed
}

func newHTTPServer(t *testing.T, tls bool) *httpServer {
	s := &httpServer{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.hosts = append(s.hosts, r.Host)
		s.paths = append(s.paths, r.URL.RequestURI())
		s.froms = append(s.froms, r.RemoteAddr)
		s.mu.Unlock()
		switch r.URL.Path {
		case "/healthz":
			fmt.Fprintln(w, "ok")
		case "/fail":
			http.Error(w, "broken", http.StatusInternalServerError)
		case "/redirect":
			http.Redirect(w, r, "/healthz", http.StatusFound)
		case "/big":
			chunk := strings.Repeat("x", 64<<10)
			for range 64 { // 4 MiB, far more than a probe reads
				if _, err := fmt.Fprint(w, chunk); err != nil {
					return
				}
			}
		case "/slow":
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		default:
			http.NotFound(w, r)
		}
	})
	s.Server = httptest.NewUnstartedServer(h)
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // the failed handshakes are expected
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			s.open.Add(1)
		case http.StateClosed, http.StateHijacked:
			s.open.Add(-1)
		}
	}
	if tls {
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	return s
}

func (s *httpServer) port(t *testing.T) uint16 { return port(t, s.Listener.Addr()) }

func (s *httpServer) last() (host, path, from string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.hosts) - 1
	return s.hosts[n], s.paths[n], s.froms[n]
}

func TestHTTPProbe(t *testing.T) {
	s := newHTTPServer(t, false)
	p := s.port(t)
	hc := func(path string, expect ...int) config.HealthCheck {
		c := check("http", p)
		c.Path, c.ExpectStatus = path, expect
		return c
	}

	if err := probe(t, hc("/healthz", 200), loopback); err != nil {
		t.Fatalf("/healthz: got %v, want success", err)
	}
	host, path, _ := s.last()
	if want := fmt.Sprintf("127.0.0.1:%d", p); host != want || path != "/healthz" {
		t.Fatalf("server saw host %q path %q, want %q and /healthz", host, path, want)
	}

	wantErr(t, probe(t, hc("/fail", 200), loopback), "status 500, want 200")
	if err := probe(t, hc("/fail", 200, 500), loopback); err != nil {
		t.Fatalf("/fail expecting 200 or 500: got %v, want success", err)
	}
	wantErr(t, probe(t, hc("/nothing", 200, 204), loopback), "status 404, want 200 or 204")
	wantErr(t, probe(t, hc("/redirect", 200), loopback), "status 302") // not followed
	if err := probe(t, hc("/big", 200), loopback); err != nil {
		t.Fatalf("/big: got %v, want success", err)
	}

	withHost := hc("/healthz?full=1", 200)
	withHost.Host = "www.example.test"
	withHost.Source = netip.MustParseAddr("127.0.0.3")
	if err := probe(t, withHost, loopback); err != nil {
		t.Fatalf("with a host: got %v, want success", err)
	}
	host, path, from := s.last()
	if host != "www.example.test" || path != "/healthz?full=1" || !strings.HasPrefix(from, "127.0.0.3:") {
		t.Fatalf("server saw host %q path %q from %s, want www.example.test, /healthz?full=1 and 127.0.0.3",
			host, path, from)
	}

	slow := hc("/slow", 200)
	slow.Timeout = 100 * time.Millisecond
	wantErr(t, probe(t, slow, loopback), "no answer within 100ms")

	// Every probe closed its connection.
	deadline := time.Now().Add(5 * time.Second)
	for s.open.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := s.open.Load(); n != 0 {
		t.Fatalf("%d connections still open after the probes, want 0", n)
	}
}

func TestHTTPSProbe(t *testing.T) {
	s := newHTTPServer(t, true) // httptest's self-signed certificate
	hc := check("https", s.port(t))
	hc.Path, hc.ExpectStatus = "/healthz", []int{200}

	wantErr(t, probe(t, hc, loopback), "certificate")

	hc.SkipVerify = true
	if err := probe(t, hc, loopback); err != nil {
		t.Fatalf("skip_verify: got %v, want success", err)
	}
	hc.Host = "www.example.test"
	if err := probe(t, hc, loopback); err != nil {
		t.Fatalf("skip_verify with a host: got %v, want success", err)
	}
	if host, _, _ := s.last(); host != "www.example.test" {
		t.Fatalf("server saw host %q, want www.example.test", host)
	}
	hc.Path = "/fail"
	wantErr(t, probe(t, hc, loopback), "status 500")
}

// udpEcho answers every datagram with "pong " and the datagram, and
// reports the source of the last one.
func udpEcho(t *testing.T) (uint16, func() string) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	var mu sync.Mutex
	var last string
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			mu.Lock()
			last = from.String()
			mu.Unlock()
			_, _ = pc.WriteTo(append([]byte("pong "), buf[:n]...), from)
		}
	}()
	return port(t, pc.LocalAddr()), func() string { mu.Lock(); defer mu.Unlock(); return last }
}

func TestUDPProbe(t *testing.T) {
	p, last := udpEcho(t)
	hc := check("udp", p)
	hc.Payload = "ping"

	if err := probe(t, hc, loopback); err != nil {
		t.Fatalf("any reply: got %v, want success", err)
	}
	hc.Expect = "pong ping"
	if err := probe(t, hc, loopback); err != nil {
		t.Fatalf("matching reply: got %v, want success", err)
	}
	hc.Expect = "PONG"
	wantErr(t, probe(t, hc, loopback), `reply "pong ping" does not contain "PONG"`)

	hc.Expect = ""
	hc.Source = netip.MustParseAddr("127.0.0.4")
	if err := probe(t, hc, loopback); err != nil {
		t.Fatalf("with a source: got %v, want success", err)
	}
	if got := last(); !strings.HasPrefix(got, "127.0.0.4:") {
		t.Fatalf("server saw the probe from %s, want 127.0.0.4", got)
	}
}

func TestUDPProbeRefused(t *testing.T) {
	hc := check("udp", closedPort(t, "udp"))
	hc.Payload = "ping"
	hc.Timeout = 5 * time.Second
	start := time.Now()
	err := probe(t, hc, loopback)
	wantErr(t, err, "connection refused (ICMP port unreachable)")
	// The refusal, not the timeout, ended the probe: it is the error, so the
	// duration is only logged.
	t.Logf("refused after %s: %v", time.Since(start), err)
}

func TestUDPProbeTimeout(t *testing.T) {
	// A socket that never answers.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	hc := check("udp", port(t, pc.LocalAddr()))
	hc.Payload = "ping"
	hc.Timeout = 100 * time.Millisecond
	wantErr(t, probe(t, hc, loopback), "no answer within 100ms")
}

func TestProbeStopsWithContext(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	hc := check("udp", port(t, pc.LocalAddr()))
	hc.Payload = "ping"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	done := make(chan error, 1)
	go func() { done <- probeUDP(ctx, hc, 0, netip.AddrPortFrom(loopback, hc.Port)) }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("got success from a cancelled probe, want an error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a cancelled udp probe did not return")
	}
}

func TestResolve(t *testing.T) {
	vip := vipOn(80)
	hc, err := resolve(Target{VIP: vip, Backend: loopback, Check: config.HealthCheck{Type: "http"}})
	if err != nil {
		t.Fatal(err)
	}
	if hc.Port != 80 || hc.Interval != config.DefaultHealthInterval || hc.Timeout != config.DefaultHealthTimeout ||
		hc.Rise != config.DefaultHealthRise || hc.Fall != config.DefaultHealthFall || hc.Path != "/" ||
		len(hc.ExpectStatus) != 1 || hc.ExpectStatus[0] != 200 {
		t.Fatalf("got %+v, want the VIP's port and config's defaults", hc)
	}
	for _, tc := range []struct {
		name string
		t    Target
		want string
	}{
		{"no port", Target{VIP: vipOn(0), Backend: loopback, Check: config.HealthCheck{Type: "tcp"}}, "no port"},
		{"type none", Target{VIP: vip, Backend: loopback, Check: config.HealthCheck{Type: "none"}}, `unknown check type "none"`},
		{"no backend", Target{VIP: vip, Check: config.HealthCheck{Type: "tcp"}}, "no backend"},
	} {
		if _, err := resolve(tc.t); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestUnwrapOp(t *testing.T) {
	err := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("boom")}
	if got := unwrapOp(err).Error(); got != "boom" {
		t.Fatalf("got %q, want boom", got)
	}
}
