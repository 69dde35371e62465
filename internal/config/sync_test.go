package config

import (
	"net/netip"
	"reflect"
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

	for _, doc := range []string{syncDoc, strings.Replace(syncDoc, "  key_file:", "  address: 198.18.0.2\n  key_file:", 1)} {
		doc = strings.ReplaceAll(doc, `, "2001:db8:2::3", "[2001:db8:2::4]:8474"`, "")
		c := mustParse(t, doc)
		out, err := c.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		c2, err := Parse(out)
		if err != nil {
			t.Fatalf("marshalled sync does not parse: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(c.Sync, c2.Sync) {
			t.Fatalf("round trip differs:\n%+v\n%+v\n%s", c.Sync, c2.Sync, out)
		}
	}

	if c := mustParse(t, "interfaces: [{name: eth0}]\n"); c.Sync != nil {
		t.Errorf("sync without a sync section = %+v, want nil (off)", c.Sync)
	}
}

func TestSyncProblems(t *testing.T) {
	const peers = `[198.18.0.3, "198.18.0.4:9000", "2001:db8:2::3", "[2001:db8:2::4]:8474"]`
	for _, tc := range []struct{ old, new, path, msg string }{
		{peers, "[198.18.0.3, x]", "sync.peers[1]", `"x" is not an IP address or address:port`},
		{peers, "[198.18.0.3, 198.18.0.4/24]", "sync.peers[1]", "is not an IP address"},
		{peers, `["198.18.0.3:70000"]`, "sync.peers[0]", "bad port"},
		{peers, `["198.18.0.3:0"]`, "sync.peers[0]", "port 0"},
		{peers, `[198.18.0.3, "198.18.0.3:8473"]`, "sync.peers[1]", "already sync.peers[0]"},
		{peers, "[224.0.0.81]", "sync.peers[0]", "is multicast"},
		{peers, "[127.0.0.1]", "sync.peers[0]", "loopback"},
		{peers, `["::ffff:198.18.0.3"]`, "sync.peers[0]", "IPv4-mapped"},
		{peers, "[{address: 198.18.0.3}]", "sync.peers[0]", "want a peer address"},
		{peers, "[]", "sync.peers", "missing or empty"},
		{peers, "198.18.0.3", "sync.peers", "want a list of peer addresses"},
		{"  key_file: /etc/fulcrum/sync.key\n", "", "sync.key_file", "missing; set the file holding the shared key"},
		{"key_file: /etc/fulcrum/sync.key", "key_file: sync.key", "sync.key_file", "not an absolute path"},
		{"key_file:", "port: 0\n  key_file:", "sync.port", "below the minimum 1"},
		{"key_file:", "port: 65536\n  key_file:", "sync.port", "over the maximum 65535"},
		{"key_file:", "interval: 0s\n  key_file:", "sync.interval", "must be above zero"},
		{"key_file:", "interval: 2s\n  key_file:", "sync.interval", "outside 1ms..1s"},
		{"key_file:", "interval: 50\n  key_file:", "sync.interval", "no unit"},
		{"key_file:", "address: 224.0.0.1\n  key_file:", "sync.address", "is multicast"},
		{"key_file:", "address: 198.18.0.2\n  key_file:", "sync.peers[2]", "2001:db8:2::3 is IPv6 but sync.address 198.18.0.2 is IPv4"},
		{"key_file:", "multicast: 224.0.0.81\n  key_file:", "sync.multicast", "unknown field"},
	} {
		doc := strings.Replace(syncDoc, tc.old, tc.new, 1)
		if doc == syncDoc {
			t.Fatalf("%q is not in the document", tc.old)
		}
		_, err := Parse([]byte(doc))
		if err == nil || !strings.Contains(err.Error(), tc.path+":") || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s → %s: err = %v, want %s: ...%s...", tc.old, tc.new, err, tc.path, tc.msg)
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
	_, err := Parse([]byte(strings.Replace(syncDoc, peers, "["+b.String()+"]", 1)))
	if err == nil || !strings.Contains(err.Error(), "sync.peers[64]: is one peer too many: at most 64") {
		t.Errorf("%d peers: err = %v, want sync.peers[64] refused", MaxSyncPeers+1, err)
	}
}

func TestFullExampleSync(t *testing.T) {
	c := mustLoad(t, fullExample)
	want := &Sync{Peers: []netip.AddrPort{netip.MustParseAddrPort("198.18.0.3:8473")}, Port: 8473,
		KeyFile: "/etc/fulcrum/sync.key", Interval: 50 * time.Millisecond}
	if !reflect.DeepEqual(c.Sync, want) {
		t.Fatalf("sync:\n got %+v\nwant %+v", c.Sync, want)
	}
}
