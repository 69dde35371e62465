package config

import (
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/fulcrum-lb/fulcrum/internal/connsync"
)

// The sync section: connection sync with peer LB nodes (internal/connsync,
// docs/connections.md "Sync").

// Sync bounds and defaults.
const (
	DefaultSyncPort     = connsync.DefaultPort
	DefaultSyncInterval = connsync.DefaultFlushInterval
	// MaxSyncPeers bounds the peer list, and so the receive state a node
	// keeps (one replay window per peer).
	MaxSyncPeers     = 64
	MinSyncInterval  = time.Millisecond
	MaxSyncInterval  = time.Second
	syncPeerExample  = "198.18.0.3 or 198.18.0.3:8473 or [2001:db8::3]:8473"
	syncKeyFileHint  = "set the file holding the shared key (mode 0600), e.g. /etc/fulcrum/sync.key; sync never runs without one"
	syncPeersExample = "[198.18.0.3]"
)

var syncKeys = []string{"peers", "port", "address", "key_file", "interval"}

// Sync configures connection sync: this node sends its new and changed
// connection entries to its peers and installs theirs, authenticated with
// a shared key. Multicast is not supported: peers are listed.
type Sync struct {
	// Peers are the other LB nodes, each the address its datagrams come
	// from and the port it listens on (Port unless written addr:port).
	// Datagrams from anywhere else are dropped. 1..MaxSyncPeers.
	Peers []netip.AddrPort
	// Port is the UDP port this node listens on and sends from; default
	// DefaultSyncPort (8473).
	Port uint16
	// Address is the local address to listen on; unspecified (the
	// default) = every address.
	Address netip.Addr
	// KeyFile holds the shared HMAC key; required. The daemon reads and
	// checks it (connsync.LoadKey: mode 0600, at least 16 bytes) when it
	// starts; a missing or bad key file stops the start.
	KeyFile string
	// Interval is the longest an entry waits for its datagram to fill
	// before it is sent; default 50ms.
	Interval time.Duration
}

// Listen returns the local address and port to bind.
func (s *Sync) Listen() netip.AddrPort {
	a := s.Address
	if !a.IsValid() {
		a = netip.IPv6Unspecified() // dual-stack: IPv4 peers too
	}
	return netip.AddrPortFrom(a, s.Port)
}

func (d *decoder) sync(f *fields) *Sync {
	if !f.ok {
		return nil
	}
	s := &Sync{}
	s.Port = uint16(f.integer("port", DefaultSyncPort, 1, 65535))
	if a, ok := f.addr("address"); ok {
		if a.IsUnspecified() || checkUnicast(a) == "" {
			s.Address = a
		} else {
			f.errf("address", "%s %s; use one of this node's unicast addresses, or omit it to listen on all", a, checkUnicast(a))
		}
	}
	if f.require("key_file", syncKeyFileHint) {
		s.KeyFile = f.absPath("key_file")
	}
	s.Interval = f.duration("interval", DefaultSyncInterval, true)
	if s.Interval < MinSyncInterval || s.Interval > MaxSyncInterval {
		f.errf("interval", "%s is outside %s..%s; the default %s sends a batch within 50ms of its first entry", s.Interval, MinSyncInterval, MaxSyncInterval, DefaultSyncInterval)
	}

	items := f.seq("peers", "a list of peer addresses, e.g. "+syncPeersExample)
	seen := map[netip.AddrPort]int{}
	for i, it := range items {
		p := index(f.at("peers"), i)
		if i == MaxSyncPeers {
			d.add(p, it, "is one peer too many: at most %d peers may be listed", MaxSyncPeers)
			break
		}
		if it.Kind != yaml.ScalarNode {
			d.add(p, it, "want a peer address such as %s, got %s", syncPeerExample, describe(it))
			continue
		}
		ap, msg := parsePeer(it.Value, s.Port)
		if msg != "" {
			d.add(p, it, "%q %s", it.Value, msg)
			continue
		}
		if s.Address.IsValid() && !s.Address.IsUnspecified() && s.Address.Is4() != ap.Addr().Is4() {
			d.add(p, it, "%s is %s but sync.address %s is %s; a socket bound to one family cannot reach the other", ap.Addr(), family(ap.Addr()), s.Address, family(s.Address))
			continue
		}
		if j, dup := seen[ap]; dup {
			d.add(p, it, "%s is already sync.peers[%d]; list each peer once", ap, j)
			continue
		}
		seen[ap] = i
		s.Peers = append(s.Peers, ap)
	}
	if f.ok && len(items) == 0 {
		f.errf("peers", "missing or empty; list the other LB nodes, e.g. %s", syncPeersExample)
	}
	return s
}

// parsePeer reads "addr" (port def) or "addr:port" ("[v6]:port"); the
// message says what is wrong, "" if nothing.
func parsePeer(s string, def uint16) (netip.AddrPort, string) {
	s = strings.TrimSpace(s)
	var a netip.Addr
	port := def
	if ap, err := netip.ParseAddrPort(s); err == nil {
		a, port = ap.Addr(), ap.Port()
		if port == 0 {
			return netip.AddrPort{}, "has port 0; write the peer's sync port or omit it for sync.port"
		}
	} else if v, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")); err == nil {
		a = v
	} else {
		if h, p, ok := strings.Cut(s, ":"); ok && !strings.Contains(p, ":") {
			if _, err := netip.ParseAddr(h); err == nil {
				if _, err := strconv.ParseUint(p, 10, 16); err != nil {
					return netip.AddrPort{}, "has a bad port; write a port 1..65535, e.g. " + syncPeerExample
				}
			}
		}
		return netip.AddrPort{}, "is not an IP address or address:port; write e.g. " + syncPeerExample
	}
	if msg := addrProblem(a); msg != "" {
		return netip.AddrPort{}, msg
	}
	if msg := checkUnicast(a); msg != "" {
		return netip.AddrPort{}, a.String() + " " + msg + "; use the peer's unicast address"
	}
	return netip.AddrPortFrom(a, port), ""
}

// doc renders s for Marshal.
func (s *Sync) doc() map[string]any {
	peers := make([]string, len(s.Peers))
	for i, p := range s.Peers {
		peers[i] = p.String()
	}
	m := map[string]any{"peers": peers, "port": s.Port, "key_file": s.KeyFile, "interval": s.Interval.String()}
	if s.Address.IsValid() {
		m["address"] = s.Address.String()
	}
	return m
}

// absPath returns key as a clean absolute path; "" (with a problem
// recorded) when it is not one.
func (f *fields) absPath(key string) string {
	p := f.str(key, "")
	if msg := checkAbsPath(p); msg != "" {
		f.errf(key, "%q %s", p, msg)
		return ""
	}
	return filepath.Clean(p)
}
