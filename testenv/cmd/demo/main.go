// Command demo is `make demo`: a newcomer's first run of Fulcrum. It builds
// the test topology (client, router, switch, lb1, three backends) in
// network namespaces, starts a fulcrum daemon on lb1 with an embedded
// configuration (an IPv4 and an IPv6 VIP over three HTTP backends that
// answer with their name), sends traffic from the client, shows where it
// went, drains a backend, and tears everything down.
package main

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"text/template"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
	"github.com/fulcrum-lb/fulcrum/testenv"
)

//go:embed demo.yaml
var configTemplate string

var (
	vip4 = netip.MustParseAddr("203.0.113.10")
	vip6 = netip.MustParseAddr("2001:db8:ffff::10")
)

func main() {
	fulcrum := flag.String("fulcrum", "bin/fulcrum", "the fulcrum binary")
	backend := flag.String("backend", "bin/fcbackend", "the fcbackend binary")
	requests := flag.Int("requests", 300, "HTTP requests per VIP")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: run as root (make demo): it creates network namespaces and loads BPF")
		os.Exit(2)
	}
	if err := run(*fulcrum, *backend, *requests); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) {
	fmt.Printf("\n==> "+format+"\n", args...)
}

func run(fulcrumBin, backendBin string, requests int) (err error) {
	for _, p := range []*string{&fulcrumBin, &backendBin} {
		if *p, err = filepath.Abs(*p); err != nil {
			return err
		}
	}
	step("building the topology: client - router - switch - {lb1, backend1..3}")
	topo, err := testenv.Build(testenv.Options{Backends: 3, VIPs: []netip.Addr{vip4, vip6}})
	if err != nil {
		return err
	}
	defer func() {
		step("tearing down")
		if cerr := topo.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	fmt.Printf("namespaces %s-*; VIPs %s and %s are routed to lb1 (%s)\n", topo.Prefix, vip4, vip6, topo.LB1.IPv4)

	work, err := os.MkdirTemp("", "fulcrum-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	// Pins live on a bpffs outside /sys, which `ip netns exec` remounts.
	pins := filepath.Join("/run", "fulcrum-demo-"+topo.Prefix)
	if err := datapath.EnsureBPFFS(pins); err != nil {
		return err
	}
	defer func() {
		exec.Command(fulcrumBin, "detach", "--instance", "demo", "--bpffs", pins, "--socket", "").Run()
		unix.Unmount(pins, unix.MNT_DETACH)
		os.Remove(pins)
	}()

	names := make(map[string]bool)
	for i, b := range topo.Backends {
		name := fmt.Sprintf("backend%d", i+1)
		names[name] = true
		if _, err := b.Start(context.Background(), backendBin, "-name", name, "-addr", vip4.String(), "-addr", vip6.String()); err != nil {
			return err
		}
	}

	socket := filepath.Join(work, "fulcrum.sock")
	cfgPath := filepath.Join(work, "fulcrum.yaml")
	if err := writeConfig(cfgPath, pins, socket, topo); err != nil {
		return err
	}
	cfg, _ := os.ReadFile(cfgPath)
	step("starting the fulcrum daemon on lb1 with this configuration")
	fmt.Print(string(cfg))
	logPath := filepath.Join(work, "daemon.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	daemon := topo.LB1.Command(context.Background(), fulcrumBin, "daemon", "--config", cfgPath)
	daemon.Stdout, daemon.Stderr = logf, logf
	if err := daemon.Start(); err != nil {
		return err
	}
	defer func() {
		daemon.Process.Signal(unix.SIGTERM)
		daemon.Wait()
	}()
	client := api.NewClient(socket)
	if err := waitReady(client, logPath); err != nil {
		return err
	}
	cli := func(args ...string) {
		cmd := exec.Command(fulcrumBin, append([]string{"--socket", socket}, args...)...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		fmt.Printf("$ fulcrum %s\n", strings.Join(args, " "))
		cmd.Run()
	}
	cli("vip", "list")

	for _, vip := range []netip.Addr{vip4, vip6} {
		step("%d HTTP requests from the client to %s, each a new connection", requests, vip)
		counts, err := httpRequests(topo.Client, vip, requests)
		if err != nil {
			return err
		}
		bars(counts, names)
	}
	if err := waitRates(client, time.Now()); err != nil {
		return err
	}
	cli("stats")

	step("draining backend2 of %s:80 while 30 long-lived connections are open", vip4)
	conns, err := openLongLived(topo.Client, vip4, 30)
	if err != nil {
		return err
	}
	before := map[string]int{}
	for _, c := range conns {
		before[c.backend]++
	}
	fmt.Println("long-lived connections per backend:")
	bars(before, names)
	cli("backend", "drain", "tcp/"+vip4.String()+":80", topo.Backends[1].IPv4.String())
	fmt.Println("\nnew requests after the drain:")
	counts, err := httpRequests(topo.Client, vip4, requests)
	if err != nil {
		return err
	}
	bars(counts, names)
	if counts["backend2"] != 0 {
		return fmt.Errorf("the drained backend2 got %d new connections", counts["backend2"])
	}
	still := 0
	for _, c := range conns {
		if c.backend == "backend2" {
			if _, err := c.get(); err != nil {
				return fmt.Errorf("an established connection to the drained backend2 broke: %w", err)
			}
			still++
		}
		c.conn.Close()
	}
	fmt.Printf("the %d connections already on backend2 were still served after the drain, then closed by the client\n", still)
	cli("backend", "list", "tcp/"+vip4.String()+":80")
	return nil
}

func writeConfig(path, pins, socket string, topo *testenv.Topology) error {
	type vip struct {
		Name     string
		Addr     netip.Addr
		Port     int
		Backends []netip.Addr
	}
	var data struct {
		Pins, Socket string
		VIPs         []vip
	}
	data.Pins, data.Socket = pins, socket
	web4, web6 := vip{Name: "web-v4", Addr: vip4, Port: 80}, vip{Name: "web-v6", Addr: vip6, Port: 80}
	for _, b := range topo.Backends {
		web4.Backends = append(web4.Backends, b.IPv4)
		web6.Backends = append(web6.Backends, b.IPv6)
	}
	data.VIPs = []vip{web4, web6}
	var buf bytes.Buffer
	if err := template.Must(template.New("cfg").Parse(configTemplate)).Execute(&buf, data); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o600)
}

func waitReady(c *api.Client, logPath string) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.Status(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logPath)
			return fmt.Errorf("the daemon did not come up: %v\n%s", err, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitRates waits until the daemon's counter snapshot was taken after
// since and its rates cover an interval (it samples every 2 s), so that
// `fulcrum stats` shows the requests' rates.
func waitRates(c *api.Client, since time.Time) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := c.Stats(ctx)
		cancel()
		if err == nil && st.Time.After(since) && st.Interval > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no counter snapshot with rates after %s: the last from %s (%v)", since.Format("15:04:05.000"), st.Time.Format("15:04:05.000"), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// dial opens a TCP connection from the client's namespace.
func dial(client *testenv.Host, vip netip.Addr, port uint16) (net.Conn, error) {
	var c net.Conn
	err := client.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp", netip.AddrPortFrom(vip, port).String(), 3*time.Second)
		return err
	})
	return c, err
}

// httpRequests sends n GETs, each on a new connection, and counts the
// answering backends.
func httpRequests(client *testenv.Host, vip netip.Addr, n int) (map[string]int, error) {
	counts := map[string]int{}
	for range n {
		c, err := dial(client, vip, 80)
		if err != nil {
			return nil, err
		}
		lc := &longLived{conn: c, r: bufio.NewReader(c), host: vip}
		name, err := lc.get()
		c.Close()
		if err != nil {
			return nil, err
		}
		counts[name]++
	}
	return counts, nil
}

// longLived is an HTTP/1.1 keep-alive connection.
type longLived struct {
	conn    net.Conn
	r       *bufio.Reader
	host    netip.Addr
	backend string
}

func (l *longLived) get() (string, error) {
	l.conn.SetDeadline(time.Now().Add(3 * time.Second))
	req, _ := http.NewRequest("GET", "http://"+netip.AddrPortFrom(l.host, 80).String()+"/", nil)
	if err := req.Write(l.conn); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(l.r, req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(body)), err
}

func openLongLived(client *testenv.Host, vip netip.Addr, n int) ([]*longLived, error) {
	var out []*longLived
	for range n {
		c, err := dial(client, vip, 80)
		if err != nil {
			return nil, err
		}
		l := &longLived{conn: c, r: bufio.NewReader(c), host: vip}
		if l.backend, err = l.get(); err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

func bars(counts map[string]int, names map[string]bool) {
	total := 0
	for _, c := range counts {
		total += c
	}
	var keys []string
	for n := range names {
		keys = append(keys, n)
	}
	sort.Strings(keys)
	for _, k := range keys {
		c := counts[k]
		width := 0
		if total > 0 {
			width = c * 50 / total
		}
		fmt.Printf("  %-9s %4d %s\n", k, c, strings.Repeat("█", width))
	}
}
