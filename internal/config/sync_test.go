package config

import (
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

const syncDoc = `
interfaces: [{name: eth0}]
sync:
  peers: [198.18.0.3, "198.18.0.4:9000", "2001:db8:2::3", "[2001:db8:2::4]:8474"]
  key_file: /etc/fulcrum/sync.key
vips:
  - {address: 203.0.113.10, port: 80, protocol: tcp, backends: [{address: 198.18.0.11}]}
`

func TestSync(t *testing.T) {
	c := mustParse(t, syncDoc)
	want := &Sync{
		Peers: []netip.AddrPort{
			netip.MustParseAddrPort("198.18.0.3:8473"), netip.MustParseAddrPort("198.18.0.4:9000"),
			netip.MustParseAddrPort("[2001:db8:2::3]:8473"), netip.MustParseAddrPort("[2001:db8:2::4]:8474"),
		},
		Port: DefaultSyncPort, KeyFile: "/etc/fulcrum/sync.key", Interval: 50 * time.Millisecond,
	}
	if !reflect.DeepEqual(c.Sync, want) {
		t.Fatalf("sync:\n got %+v\nwant %+v", c.Sync, want)
	}
	if got := c.Sync.Listen(); got != netip.MustParseAddrPort("[::]:8473") {
		t.Errorf("listen = %s, want [::]:8473", got)
	}

	// Set values, and the peers' default port following sync.port.
	doc := strings.Replace(syncDoc, "  key_file:", "  port: 9999\n  address: 198.18.0.2\n  interval: 10ms\n  key_file:", 1)
	c = mustParse(t, strings.ReplaceAll(doc, `, "2001:db8:2::3", "[2001:db8:2::4]:8474"`, ""))
	if s := c.Sync; s.Port != 9999 || s.Interval != 10*time.Millisecond || s.Listen() != netip.MustParseAddrPort("198.18.0.2:9999") ||
		!reflect.DeepEqual(s.Peers, []netip.AddrPort{netip.MustParseAddrPort("198.18.0.3:9999"), netip.MustParseAddrPort("198.18.0.4:9000")}) {
		t.Errorf("sync with values set = %+v", s)
	}

	// Marshal writes the address when set (TestRoundTrip parses the full
	// example's sync section back).
	if got := c.Sync.doc()["address"]; got != "198.18.0.2" {
		t.Errorf("marshalled address = %v, want 198.18.0.2", got)
	}

	if c := mustParse(t, "interfaces: [{name: eth0}]\n"); c.Sync != nil {
		t.Errorf("sync without a sync section = %+v, want nil (off)", c.Sync)
	}
}

// syncWith is a config whose sync section has the given peers and other
// lines (each "key: value"); key_file is added unless a line names it.
func syncWith(peers string, lines ...string) string {
	var b strings.Builder
	b.WriteString("interfaces: [{name: eth0}]\nsync:\n")
	if peers != "" {
		b.WriteString("  peers: " + peers + "\n")
	}
	if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "key_file") }) {
		lines = append(lines, "key_file: /etc/fulcrum/sync.key")
	}
	for _, l := range lines {
		if l != "" {
			b.WriteString("  " + l + "\n")
		}
	}
	return b.String()
}

func TestSyncProblems(t *testing.T) {
	const peers = `[198.18.0.3, "198.18.0.4:9000", "2001:db8:2::3", "[2001:db8:2::4]:8474"]`
	for _, tc := range []struct {
		peers, line string // the sync section: peers and one more line
		path, msg   string // a problem expected
	}{
		{"[198.18.0.3, x]", "", "sync.peers[1]", `"x" is not an IP address or address:port`},
		{"[198.18.0.3, 198.18.0.4/24]", "", "sync.peers[1]", "is not an IP address"},
		{`["198.18.0.3:70000"]`, "", "sync.peers[0]", "bad port"},
		{`["198.18.0.3:0"]`, "", "sync.peers[0]", "port 0"},
		{`[198.18.0.3, "198.18.0.3:8473"]`, "", "sync.peers[1]", "already sync.peers[0]"},
		{"[224.0.0.81]", "", "sync.peers[0]", "is multicast"},
		{"[127.0.0.1]", "", "sync.peers[0]", "loopback"},
		{`["::ffff:198.18.0.3"]`, "", "sync.peers[0]", "IPv4-mapped"},
		{"[{address: 198.18.0.3}]", "", "sync.peers[0]", "want a peer address"},
		{"[]", "", "sync.peers", "missing or empty"},
		{"", "", "sync.peers", "missing or empty"},
		{"198.18.0.3", "", "sync.peers", "want a list of peer addresses"},
		{peers, "key_file:", "sync.key_file", "missing; set the file holding the shared key"},
		{peers, "key_file: sync.key", "sync.key_file", "not an absolute path"},
		{peers, "port: 0", "sync.port", "below the minimum 1"},
		{peers, "port: 65536", "sync.port", "over the maximum 65535"},
		{peers, "interval: 0s", "sync.interval", "must be above zero"},
		{peers, "interval: 2s", "sync.interval", "outside 1ms..1s"},
		{peers, "interval: 50", "sync.interval", "no unit"},
		{peers, "address: 224.0.0.1", "sync.address", "is multicast"},
		{peers, "address: 198.18.0.2", "sync.peers[2]", "2001:db8:2::3 is IPv6 but sync.address 198.18.0.2 is IPv4"},
		{peers, "multicast: 224.0.0.81", "sync.multicast", "unknown field"},
	} {
		ps := problems(t, syncWith(tc.peers, tc.line))
		if !slices.ContainsFunc(ps, func(p Problem) bool { return p.Path == tc.path && strings.Contains(p.Message, tc.msg) }) {
			t.Errorf("peers %s, %q: problems %v, want %s: ...%s...", tc.peers, tc.line, ps, tc.path, tc.msg)
		}
	}
	// The peer list is bounded.
	var b strings.Builder
	for i := range MaxSyncPeers + 1 {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(netip.AddrFrom4([4]byte{198, 18, 1, byte(i + 1)}).String())
	}
	ps := problems(t, syncWith("["+b.String()+"]"))
	if len(ps) != 1 || ps[0].Path != "sync.peers[64]" || !strings.Contains(ps[0].Message, "one peer too many: at most 64") {
		t.Errorf("%d peers: problems %v, want only sync.peers[64] refused", MaxSyncPeers+1, ps)
	}
	// The valid document is valid.
	mustParse(t, syncWith(peers))
}

func TestFullExampleSync(t *testing.T) {
	c := mustLoad(t, fullExample)
	want := &Sync{Peers: []netip.AddrPort{netip.MustParseAddrPort("198.18.0.3:8473")}, Port: 8473,
		KeyFile: "/etc/fulcrum/sync.key", Interval: 50 * time.Millisecond}
	if !reflect.DeepEqual(c.Sync, want) {
		t.Fatalf("sync:\n got %+v\nwant %+v", c.Sync, want)
	}
}
