package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

const bgpDoc = `
interfaces: [{name: eth0}]
bgp:
  asn: 65010
  router_id: 198.18.0.2
  communities: ["65000:100", no-export]
  med: 10
  peers:
    - {address: 198.18.0.1, asn: 65000, password_file: /etc/fulcrum/bgp.key, hold_time: 30s, multihop: 2}
    - {address: "2001:db8:2::1", asn: 65010}
  vips:
    - {address: 203.0.113.10, communities: ["65000:200"], med: 50}
vips:
  - {address: 203.0.113.10, port: 80, protocol: tcp, backends: [{address: 198.18.0.11}]}
`

func TestBGP(t *testing.T) {
	c, err := Parse([]byte(bgpDoc))
	if err != nil {
		t.Fatal(err)
	}
	b := c.BGP
	if b == nil || b.ASN != 65010 || b.RouterID.String() != "198.18.0.2" || b.ListenPort != 0 {
		t.Fatalf("bgp = %+v", b)
	}
	if len(b.Peers) != 2 {
		t.Fatalf("peers = %+v", b.Peers)
	}
	p0, p1 := b.Peers[0], b.Peers[1]
	if p0.HoldTime != 30*time.Second || p0.Keepalive != 3*time.Second || p0.Multihop != 2 || p0.PasswordFile != "/etc/fulcrum/bgp.key" || p0.IBGP(b.ASN) {
		t.Errorf("peers[0] = %+v", p0)
	}
	if p1.HoldTime != DefaultBGPHoldTime || p1.Keepalive != DefaultBGPKeepalive || !p1.IBGP(b.ASN) {
		t.Errorf("peers[1] = %+v", p1)
	}
	comm, med := b.AttributesOf(c.VIPs[0].Address)
	if len(comm) != 1 || comm[0].String() != "65000:200" || med == nil || *med != 50 {
		t.Errorf("attributes of the listed VIP = %v %v", comm, med)
	}
	comm, med = b.AttributesOf(c.VIPs[0].Backends[0].Address)
	if len(comm) != 2 || comm[0].String() != "65000:100" || comm[1].String() != "no-export" || *med != 10 {
		t.Errorf("default attributes = %v %v", comm, med)
	}

	out, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	c2, err := Parse(out)
	if err != nil {
		t.Fatalf("marshalled bgp does not parse: %v\n%s", err, out)
	}
	if !reflect.DeepEqual(c.BGP, c2.BGP) {
		t.Fatalf("round trip differs:\n%+v\n%+v\n%s", c.BGP, c2.BGP, out)
	}
}

func TestBGPHoldTimeZero(t *testing.T) {
	c, err := Parse([]byte(strings.Replace(bgpDoc, "hold_time: 30s", "hold_time: 0s", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if p := c.BGP.Peers[0]; p.HoldTime != 0 || p.Keepalive != 0 {
		t.Errorf("peer = %+v, want hold and keepalive 0", p)
	}
}

func TestBGPProblems(t *testing.T) {
	for _, tc := range []struct{ old, new, path, msg string }{
		{"asn: 65010\n", "asn: 0\n", "bgp.asn", "below the minimum 1"},
		{"asn: 65010\n", "asn: 23456\n", "bgp.asn", "AS_TRANS"},
		{"asn: 65010\n", "asn: 4294967296\n", "bgp.asn", "over the maximum"},
		{"  asn: 65010\n", "", "bgp.asn", "missing"},
		{"router_id: 198.18.0.2", "router_id: 2001:db8::2", "bgp.router_id", "not IPv4"},
		{"router_id: 198.18.0.2", "router_id: 0.0.0.0", "bgp.router_id", "cannot identify"},
		{"router_id: 198.18.0.2", "", "bgp.router_id", "missing"},
		{"med: 10", "med: -1", "bgp.med", "below the minimum 0"},
		{"med: 10", "listen_port: 70000", "bgp.listen_port", "over the maximum 65535"},
		{`"65000:100", no-export`, `"65000:100", "65000:100"`, "bgp.communities[1]", "listed twice"},
		{`"65000:100", no-export`, `"65536:1"`, "bgp.communities[0]", "is not a community"},
		{`"65000:100", no-export`, `[1]`, "bgp.communities[0]", "want a community"},
		{"asn: 65000, password", "asn: 65000, pasword", "bgp.peers[0].pasword_file", "did you mean password_file"},
		{"password_file: /etc/fulcrum/bgp.key", "password_file: bgp.key", "bgp.peers[0].password_file", "not an absolute path"},
		{"hold_time: 30s", "hold_time: 2s", "bgp.peers[0].hold_time", "outside 3s..65535s"},
		{"hold_time: 30s", "hold_time: 30", "bgp.peers[0].hold_time", "no unit"},
		{"hold_time: 30s", "hold_time: 3500ms", "bgp.peers[0].hold_time", "not whole seconds"},
		{"hold_time: 30s", "hold_time: 9s, keepalive: 9s", "bgp.peers[0].keepalive", "below hold_time"},
		{"hold_time: 30s", "hold_time: 0s, keepalive: 1s", "bgp.peers[0].keepalive", "turns keepalives off"},
		{"multihop: 2", "multihop: 256", "bgp.peers[0].multihop", "over the maximum 255"},
		{"multihop: 2", "multihop: 1", "bgp.peers[0].multihop", "directly connected"},
		{`asn: 65010}`, `asn: 65010, multihop: 3}`, "bgp.peers[1].multihop", "iBGP"},
		{`address: "2001:db8:2::1"`, `address: 198.18.0.1`, "bgp.peers[1].address", "already bgp.peers[0]"},
		{`address: "2001:db8:2::1"`, `address: 224.0.0.1`, "bgp.peers[1].address", "is multicast"},
		{"address: 198.18.0.1, asn: 65000", "address: 198.18.0.1", "bgp.peers[0].asn", "missing"},
		{"- {address: 203.0.113.10, communities", "- {address: 203.0.113.10/32, communities", "bgp.vips[0].address", "is a prefix"},
		{"med: 50}", "med: 50}\n    - {address: 203.0.113.10}", "bgp.vips[1].address", "already bgp.vips[0]"},
		{"  vips:\n    - {address: 203.0.113.10, communities", "  prefixes:\n    - {address: 203.0.113.10, communities", "bgp.prefixes", "unknown field"},
	} {
		doc := strings.Replace(bgpDoc, tc.old, tc.new, 1)
		if doc == bgpDoc {
			t.Fatalf("%q is not in the document", tc.old)
		}
		_, err := Parse([]byte(doc))
		if err == nil || !strings.Contains(err.Error(), tc.path+":") || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s → %s: err = %v, want %s: ...%s...", tc.old, tc.new, err, tc.path, tc.msg)
		}
	}
}

func TestBGPWithVRRP(t *testing.T) {
	doc := bgpDoc + "vrrp: {interface: eth0, vrid: 51, virtual_addresses: [198.18.0.100/24]}\n"
	if _, err := Parse([]byte(doc)); err == nil || !strings.Contains(err.Error(), "bgp: cannot be combined with vrrp") {
		t.Errorf("err = %v", err)
	}
}

func TestBGPNoPeers(t *testing.T) {
	for _, peers := range []string{"peers: []", ""} {
		doc := "interfaces: [{name: eth0}]\nbgp: {asn: 65010, router_id: 198.18.0.2}\n"
		if peers != "" {
			doc = "interfaces: [{name: eth0}]\nbgp: {asn: 65010, router_id: 198.18.0.2, " + peers + "}\n"
		}
		_, err := Parse([]byte(doc))
		if err == nil || !strings.Contains(err.Error(), "bgp.peers: is empty") {
			t.Errorf("%q: err = %v", peers, err)
		}
	}
}

func TestParseCommunity(t *testing.T) {
	for in, want := range map[string]string{"65000:100": "65000:100", "0:0": "0:0", "NO-EXPORT": "no-export", "blackhole": "blackhole", "65535:65535": "65535:65535"} {
		c, err := ParseCommunity(in)
		if err != nil || c.String() != want {
			t.Errorf("ParseCommunity(%q) = %v, %v; want %s", in, c, err, want)
		}
	}
	for _, in := range []string{"", "65000", "a:b", "1:2:3", "-1:5", "65000:65536"} {
		if _, err := ParseCommunity(in); err == nil {
			t.Errorf("ParseCommunity(%q) accepted", in)
		}
	}
}
