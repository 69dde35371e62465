package datapath

// FuzzBalancer fuzzes the XDP balancer through BPF_PROG_RUN.
//
// # Inputs
//
// A fuzz input is (shape uint64, ports uint32, edit uint64, corrupt
// uint64, payload []byte, extra []byte). Go's fuzzer mutates those values,
// not a frame, so most inputs stay close to valid packets for the
// provisioned VIPs:
//
//   - structured mode (shape bit 63 clear): shape picks a destination (a VIP
//     of every kind, or an address that has none), VLAN tags (0-3, 802.1Q
//     or 802.1ad outside), the L4 protocol, TCP flags, the client, IPv4
//     options and fragment bits, or an IPv6 extension-header chain (up to
//     five of hop-by-hop, routing, destination options, AH, fragment), and
//     can pad the payload to a size (up to 1512 bytes, so that sizes around
//     the MTU are one mutation away); ports are the source and destination
//     ports. testpacket builds that packet, with valid lengths and
//     checksums. Then edit overrides header fields the builder keeps
//     consistent (IHL, total/payload length, version, TCP data offset, UDP
//     length, the protocol byte, an extension header's length, trailing
//     bytes after the IP packet), and corrupt sets the TOS, flips or sets
//     up to two bytes anywhere and truncates the frame. A zero edit and
//     corrupt leave a well-formed packet. payload is the L4 payload; extra
//     fills IPv4 options, extension-header bodies and trailing bytes.
//   - raw mode (shape bit 63 set): payload is the frame, byte for byte.
//
// The bit layouts are the shape*, edit* and corrupt* helpers below (and
// their s*, e*, c* twins that build the seeds). The seeds are every target
// plain, as a SYN, tagged, with the other protocol and ICMP; IPv4 options,
// IPv6 extension chains, fragments, each malformation edit can make, sizes
// around the ipip MTU; and raw frames (fixture packets, ARP, truncations,
// broadcast and multicast destinations).
//
// # State
//
// One datapath per fuzzing process, loaded before f.Fuzz inside the ipip
// test namespace (newIPIPEnv: its FIB resolves the ipip backends' next
// hops), provisioned with the dsr fixture VIPs, the ipip VIPs and a few
// fuzz-only VIPs (fuzzVIPs). Every input runs there: BPF_PROG_RUN with an
// xdp_md whose ingress is the namespace's eth0, from one goroutine locked
// to a thread inside the namespace (ifindexes resolve in the caller's
// namespace). Each fuzzing worker is its own process with its own
// namespace and datapath, so -parallel needs no limit. The connection
// table and the per-CPU next-hop cache carry over from one input to the
// next; the oracle reads the connection table itself (Predict), so the
// checks do not depend on the order of inputs, and the seed corpus gives
// the same result on every run.
//
// # Coverage
//
// Go's fuzzer is guided by the coverage of Go code only: the builder's and
// strictParse's branches stand for the shape of the input, and coverBPF
// turns each counter the program moved (its verdict and connection-table
// events) into a Go branch, so new program paths count as new coverage.
//
// # Invariants, for every input
//
//  1. The verdict is XDP_PASS, XDP_DROP, XDP_TX or XDP_REDIRECT, never
//     XDP_ABORTED or anything else.
//  2. XDP_PASS and XDP_DROP leave the frame byte-identical.
//  3. Exactly one verdict counter moves, by one, and it is of the verdict's
//     kind (pass_*, drop_*, tx_dsr or tx_ipip by the VIP's mode). Counters
//     that this fixed configuration cannot move stay: ct_stale (no backend
//     or VIP changes), drop_bad_mode, drop_encap (256 bytes of headroom),
//     fib_gateway (no gateway MAC).
//  4. A frame whose IP destination is no VIP's address (or that is not IP)
//     is passed to the host.
//  5. Nothing that is not a well-formed packet for a VIP is transmitted. On
//     XDP_TX/REDIRECT, strictParse (below, independent of the C parser)
//     must accept the input: Ethernet with at most two VLAN tags; IPv4 with
//     version 4, IHL >= 5, IHL*4 <= total length <= the frame, not a
//     fragment; or IPv6 with version 6, 40 + payload length <= the frame,
//     at most four extension headers (hop-by-hop, routing, destination
//     options, AH, atomic fragment) each inside the packet and ending by
//     byte 512; then a TCP header (data offset >= 5, options inside the IP
//     packet) or UDP header (8 <= length <= what the IP packet holds) inside
//     the IP packet's own length, not merely inside the frame. Its (dst,
//     proto, dport) must match a VIP, exactly or by a port-0 VIP, that has
//     a backend, and the transmitted frame's source MAC must be unicast.
//     Not checked (the balancer is not a firewall, and the backend's stack
//     judges these): the IPv4 header checksum, L4 checksums, addresses,
//     TTL, IPv4 option contents and extension-header order.
//  6. A forwarded packet reaches the backend Predict gives, and the frame is
//     exactly the expected one. The oracle is Predict called BEFORE the
//     packet runs, with syn = TCP SYN without ACK: before the run, the
//     connection table holds what the program will look up (an entry made
//     by an earlier input, or none), so Predict returns the entry's backend
//     on a hit and the ring's on a miss, a SYN or a VIP without
//     conntrack, computed in Go from the ring Go wrote and the Go flow hash.
//     Predicting after the run would read the entry the program just wrote
//     and so agree with any backend the program chose on a miss. After the
//     run, for a VIP with conntrack, Predict must find an entry naming the
//     backend the packet went to.
//     dsr: the output is the input with the destination MAC set to the
//     backend's and the source MAC set to the input's destination MAC.
//     ipip: the output is the input's L2 header (MACs from the FIB, the
//     innermost EtherType the outer family), an outer IPv4 header (version
//     4, IHL 5, the inner TOS, total length = 20 + the inner packet's
//     length, DF, TTL 64, protocol 4 or 41, a header checksum that
//     verifies, source from the encapsulation prefix and the flow hash,
//     destination the predicted backend) or IPv6 header (the inner traffic
//     class, the hash's flow label, payload length = the inner packet's,
//     next header 4 or 41, hop limit 64), then the input from its IP header
//     on, byte for byte, so the inner L4 checksum is the input's. The
//     encapsulated frame must fit the egress MTU.
//  7. The converse of 5: a well-formed packet for a VIP with backends, sent
//     to a unicast MAC, is forwarded (dsr: XDP_TX; ipip: XDP_TX, or
//     XDP_DROP when the outer packet would exceed the egress MTU, when the
//     bytes the frame holds past the IP packet would take it over the MTU,
//     or when the backend has no next hop); for a VIP without backends it
//     is dropped.
//
// Frames are 14 to maxFuzzFrame bytes: BPF_PROG_RUN refuses shorter ones,
// and longer ones would not fit one page (the program is not frags-aware).

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket/layers"

	"github.com/fulcrum-lb/fulcrum/internal/testpacket"
	"github.com/fulcrum-lb/fulcrum/pkg/flowhash"
)

const (
	// maxFuzzFrame is the longest frame the fuzzer sends: the data room of
	// one page in BPF_PROG_RUN for XDP is 4096 - 256 (headroom) - 320
	// (skb_shared_info).
	maxFuzzFrame = 3500
	// maxPayload bounds the L4 payload in structured mode.
	maxPayload = 3000
	// fuzzV6ExtMax and fuzzV6ExtBytes are the program's IPv6 walk limits
	// (IPV6_MAX_EXT_HEADERS, IPV6_MAX_EXT_BYTES in bpf/).
	fuzzV6ExtMax   = 4
	fuzzV6ExtBytes = 512
	// fuzzVLANMax is MAX_VLAN_TAGS.
	fuzzVLANMax = 2
)

// Fuzz-only VIPs, beside the dsr fixtures and the ipip VIPs.
var (
	// vipAll6IPIP: ipip to backends of both families, every UDP port,
	// source hash, no conntrack.
	vipAll6IPIP = VIP{Addr: addr("2001:db8:ffff::82"), Port: 0, Proto: UDP}
	// vipPass6: dsr, passes fragments and malformed packets to the host.
	vipPass6 = VIP{Addr: addr("2001:db8:ffff::30"), Port: 80, Proto: TCP}
	// vipShared4: dsr, on the address of the 4in4 ipip VIP.
	vipShared4 = VIP{Addr: addr("203.0.113.80"), Port: 443, Proto: TCP}
)

// fuzzVIPs is the provisioned state of the fuzzer, in a fixed order (the
// order of targets).
func fuzzVIPs() []provisioned {
	ps := fixtureState()
	ipipCfg := VIPConfig{Mode: ModeIPIP, RingSize: smallRing}
	for _, v := range []VIP{vip4in4, vip6in6, vip4in6, vip6in4, vipNoHop} {
		ps = append(ps, provisioned{v, ipipCfg, ipipVIPs[v]})
	}
	return append(ps,
		provisioned{vipAll6IPIP, VIPConfig{Mode: ModeIPIP, RingSize: smallRing, SourceHash: true, NoConntrack: true}, append(append([]Backend{}, remote4...), remote6...)},
		provisioned{vipPass6, VIPConfig{Mode: ModeDSR, PassUnparseable: true, RingSize: smallRing}, backends6},
		provisioned{vipShared4, VIPConfig{Mode: ModeDSR, RingSize: smallRing}, backends4},
	)
}

// fuzzTarget is a destination of structured mode.
type fuzzTarget struct {
	dst   netip.Addr
	proto Proto
	port  uint16 // the VIP's port, or a default where the VIP has port 0
}

// fuzzer is the per-process state: the namespace, the datapath and the
// runner.
type fuzzer struct {
	env     *ipipEnv
	mtu     int
	vips    map[VIP]provisioned
	addrs   map[netip.Addr]bool // every VIP address
	targets []fuzzTarget
	reqs    chan fuzzRun
}

type fuzzRun struct {
	in    []byte
	reply chan fuzzResult
}

type fuzzResult struct {
	verdict uint32
	out     []byte
	err     error
}

func newFuzzer(f *testing.F) *fuzzer {
	env := newIPIPEnv(f) // loads the datapath with the ipip VIPs
	fz := &fuzzer{env: env, vips: make(map[VIP]provisioned), addrs: make(map[netip.Addr]bool)}
	for _, p := range fuzzVIPs() {
		fz.vips[p.vip] = p
		fz.addrs[p.vip.Addr] = true
		if p.cfg.Mode == ModeIPIP && ipipVIPs[p.vip] != nil {
			continue // newIPIPEnv added it
		}
		if err := env.d.AddVIP(p.vip, p.cfg, p.backends); err != nil {
			f.Fatalf("AddVIP(%s): %v", p.vip, err)
		}
	}
	for _, p := range fuzzVIPs() {
		port := p.vip.Port
		if port == 0 {
			port = 8080
		}
		fz.targets = append(fz.targets, fuzzTarget{p.vip.Addr, p.vip.Proto, port})
	}
	fz.targets = append(fz.targets,
		fuzzTarget{addr("203.0.113.99"), TCP, 80},      // no VIP
		fuzzTarget{addr("2001:db8:ffff::99"), UDP, 53}, // no VIP
		fuzzTarget{addr("198.18.0.2"), TCP, 22},        // the LB's own address
	)
	l, err := env.lb.Link("eth0")
	if err != nil {
		f.Fatal(err)
	}
	fz.mtu = l.Attrs().MTU

	// One goroutine, locked to a thread inside the namespace, runs every
	// input: the context's ingress ifindex resolves in the caller's
	// namespace, and entering it once per input would cost more than
	// the run.
	fz.reqs = make(chan fuzzRun)
	done := make(chan error, 1)
	prog, ifindex := env.d.Program(), uint32(env.ifindex)
	go func() {
		done <- env.lb.Do(func() error {
			for r := range fz.reqs {
				opts := ebpf.RunOptions{Data: r.in, DataOut: make([]byte, len(r.in)+256),
					Context: xdpMD{DataEnd: uint32(len(r.in)), IngressIfindex: ifindex}}
				ret, err := prog.Run(&opts)
				r.reply <- fuzzResult{ret, opts.DataOut, err}
			}
			return nil
		})
	}()
	f.Cleanup(func() {
		close(fz.reqs)
		if err := <-done; err != nil {
			f.Errorf("runner: %v", err)
		}
	})
	return fz
}

func (fz *fuzzer) run(in []byte) (uint32, []byte, error) {
	reply := make(chan fuzzResult, 1)
	fz.reqs <- fuzzRun{in: bytes.Clone(in), reply: reply}
	r := <-reply
	return r.verdict, r.out, r.err
}

// Bit fields of the fuzz inputs.
func field(v uint64, off, n uint) uint64 { return (v >> off) & (1<<n - 1) }

// shape
func shapeTarget(s uint64) int          { return int(field(s, 0, 8)) }
func shapeVLANs(s uint64) int           { return int(field(s, 8, 2)) }
func shapeQinQ(s uint64) bool           { return field(s, 10, 1) == 1 }
func shapeL4(s uint64) int              { return int(field(s, 11, 2)) } // 0,1 target's; 2 the other; 3 ICMP
func shapeTCPFlags(s uint64) uint64     { return field(s, 13, 4) }      // SYN ACK FIN RST
func shapeFuzzedDport(s uint64) bool    { return field(s, 17, 1) == 1 }
func shapeClient(s uint64) byte         { return byte(field(s, 18, 8)) }
func shapeMF(s uint64) bool             { return field(s, 26, 1) == 1 }
func shapeFragOffset(s uint64) bool     { return field(s, 27, 1) == 1 }
func shapeOptWords(s uint64) int        { return min(int(field(s, 28, 4)), 10) }
func shapeExt(s uint64, i uint) int     { return int(field(s, 32+3*i, 3)) } // i < 5; 0 ends the chain
func shapeExtSize(s uint64, i uint) int { return int(field(s, 47+2*i, 2)) + 1 }
func shapePadTo(s uint64) int           { return 24 * int(field(s, 57, 6)) } // 0: the payload as given
func shapeRaw(s uint64) bool            { return field(s, 63, 1) == 1 }

// IPv6 extension codes of shapeExt.
const (
	extEnd = iota
	extHopByHop
	extDestOpts
	extRouting
	extAtomicFrag // fragment header, offset 0, no M: a whole packet
	extFragMore   // fragment header with M
	extAH
	extFragOffset // fragment header with an offset
)

// edit: each override has an enable bit.
type fieldEdit struct {
	on  bool
	val uint64
}

func editIHL(e uint64) fieldEdit     { return fieldEdit{field(e, 0, 1) == 1, field(e, 1, 4)} }
func editIPLen(e uint64) fieldEdit   { return fieldEdit{field(e, 5, 1) == 1, field(e, 6, 8)} } // int8 delta
func editVersion(e uint64) fieldEdit { return fieldEdit{field(e, 14, 1) == 1, field(e, 15, 4)} }
func editDoff(e uint64) fieldEdit    { return fieldEdit{field(e, 19, 1) == 1, field(e, 20, 4)} }
func editUDPLen(e uint64) fieldEdit  { return fieldEdit{field(e, 24, 1) == 1, field(e, 25, 8)} } // int8 delta
func editProto(e uint64) fieldEdit   { return fieldEdit{field(e, 33, 1) == 1, field(e, 34, 8)} }
func editExtLen(e uint64) (fieldEdit, int) {
	return fieldEdit{field(e, 42, 1) == 1, field(e, 46, 8)}, int(field(e, 43, 3))
}
func editTail(e uint64) fieldEdit { return fieldEdit{field(e, 54, 1) == 1, field(e, 55, 7)} }

// corrupt
func corruptTOS(c uint64) byte { return byte(field(c, 56, 8)) }

// extraBytes hands out the bytes of extra in turn, cycling, zeros if empty.
type extraBytes struct {
	b []byte
	i int
}

func (x *extraBytes) next(n int) []byte {
	out := make([]byte, n)
	if len(x.b) == 0 {
		return out
	}
	for i := range out {
		out[i] = x.b[x.i%len(x.b)]
		x.i++
	}
	return out
}

// buildFuzzFrame turns a fuzz input into a frame; nil if there is none to
// send (shorter than an Ethernet header).
func (fz *fuzzer) buildFuzzFrame(shape uint64, ports uint32, edit, corrupt uint64, payload, extra []byte) []byte {
	var b []byte
	if shapeRaw(shape) {
		b = bytes.Clone(payload)
	} else {
		b = fz.buildStructured(shape, ports, edit, corrupt, payload, extra)
	}
	if len(b) > maxFuzzFrame {
		b = b[:maxFuzzFrame]
	}
	if len(b) < 14 {
		return nil
	}
	return b
}

func (fz *fuzzer) buildStructured(shape uint64, ports uint32, edit, corrupt uint64, payload, extra []byte) []byte {
	tg := fz.targets[shapeTarget(shape)%len(fz.targets)]
	x := &extraBytes{b: extra}
	v6 := tg.dst.Is6()
	var src netip.Addr
	if v6 {
		a := addr(client6).As16()
		a[15] = shapeClient(shape)
		src = netip.AddrFrom16(a)
	} else {
		a := addr(client4).As4()
		a[3] = shapeClient(shape)
		src = netip.AddrFrom4(a)
	}
	sport, dport := uint16(ports>>16), uint16(ports)
	if !shapeFuzzedDport(shape) {
		dport = tg.port
	}
	proto := layers.IPProtocol(tg.proto)
	switch shapeL4(shape) {
	case 2:
		proto = layers.IPProtocolTCP
		if tg.proto == TCP {
			proto = layers.IPProtocolUDP
		}
	case 3:
		proto = layers.IPProtocolICMPv4
		if v6 {
			proto = layers.IPProtocolICMPv6
		}
	}
	p := pkt(client4, client4, TCP, sport, dport)
	p.Src, p.Dst, p.Proto = src, tg.dst, proto
	p.Payload = payload[:min(len(payload), maxPayload)]
	if n := shapePadTo(shape); len(p.Payload) < n {
		// Sizes around the MTU without growing the []byte by chance.
		p.Payload = append(bytes.Clone(p.Payload), x.next(n-len(p.Payload))...)
	}
	fl := shapeTCPFlags(shape)
	p.SYN, p.ACK, p.FIN, p.RST = fl&1 != 0, fl&2 != 0, fl&4 != 0, fl&8 != 0
	for i := range shapeVLANs(shape) {
		p.VLANs = append(p.VLANs, uint16(100+i))
	}
	var extOffs []int // of each extension header, from the IP header
	if !v6 {
		p.MoreFragments = shapeMF(shape)
		if shapeFragOffset(shape) {
			p.FragOffset = 185
		}
		if n := shapeOptWords(shape) * 4; n > 0 {
			opts := x.next(n)
			if opts[0] < 2 { // 0 and 1 are one-byte options to gopacket
				opts[0] = 0x94 // router alert
			}
			p.IPv4Options = opts
		}
	} else {
		off := 40
		for i := range uint(5) {
			code := shapeExt(shape, i)
			if code == extEnd {
				break
			}
			var h testpacket.IPv6Ext
			size := shapeExtSize(shape, i) * 8
			switch code {
			case extHopByHop, extDestOpts, extRouting:
				h = testpacket.IPv6Ext{Type: map[int]uint8{extHopByHop: 0, extDestOpts: 60, extRouting: 43}[code], Body: x.next(size - 1)}
				h.Body[0] = byte(size/8 - 1)
			case extAH:
				h = testpacket.IPv6Ext{Type: 51, Body: x.next(size - 1)}
				h.Body[0] = byte(size/4 - 2)
			case extAtomicFrag:
				h, size = testpacket.Fragment(0, false), 8
			case extFragMore:
				h, size = testpacket.Fragment(0, true), 8
			case extFragOffset:
				h, size = testpacket.Fragment(185, false), 8
			}
			p.IPv6Ext = append(p.IPv6Ext, h)
			extOffs = append(extOffs, off)
			off += size
		}
	}
	b := p.Build()

	l3 := 14 + 4*len(p.VLANs)
	if shapeQinQ(shape) && len(p.VLANs) > 0 {
		binary.BigEndian.PutUint16(b[12:], 0x88a8)
	}
	ip := b[l3:]
	var l4, protoOff int // from the IP header
	if !v6 {
		l4 = 20 + len(p.IPv4Options)
		protoOff = 9
	} else {
		l4 = 40
		protoOff = 6
		for i, off := range extOffs {
			l4 = off + len(p.IPv6Ext[i].Body) + 1
			protoOff = off
		}
	}
	tos := corruptTOS(corrupt)
	if !v6 {
		ip[1] = tos
	} else {
		ip[0] = 0x60 | tos>>4
		ip[1] = tos<<4 | ip[1]&0x0f
	}
	if e := editIHL(edit); e.on && !v6 {
		ip[0] = ip[0]&0xf0 | byte(e.val)
	}
	if e := editVersion(edit); e.on {
		ip[0] = byte(e.val)<<4 | ip[0]&0x0f
	}
	if e := editIPLen(edit); e.on {
		lenOff := 2
		if v6 {
			lenOff = 4
		}
		binary.BigEndian.PutUint16(ip[lenOff:], binary.BigEndian.Uint16(ip[lenOff:])+uint16(int8(e.val)))
	}
	if e := editProto(edit); e.on {
		ip[protoOff] = byte(e.val)
	}
	if e, i := editExtLen(edit); e.on && len(extOffs) > 0 {
		ip[extOffs[i%len(extOffs)]+1] = byte(e.val)
	}
	if e := editDoff(edit); e.on && proto == layers.IPProtocolTCP && len(ip) >= l4+20 {
		ip[l4+12] = byte(e.val)<<4 | ip[l4+12]&0x0f
	}
	if e := editUDPLen(edit); e.on && proto == layers.IPProtocolUDP && len(ip) >= l4+8 {
		binary.BigEndian.PutUint16(ip[l4+4:], binary.BigEndian.Uint16(ip[l4+4:])+uint16(int8(e.val)))
	}
	if !v6 { // keep the header checksum right for what was edited on purpose
		if hlen := int(ip[0]&0x0f) * 4; hlen >= 20 && hlen <= len(ip) {
			binary.BigEndian.PutUint16(ip[10:], 0)
			binary.BigEndian.PutUint16(ip[10:], ^ipv4HeaderSum(ip[:hlen]))
		}
	}
	if e := editTail(edit); e.on {
		b = append(b, x.next(int(e.val))...)
	}
	// Blind corruption: up to two bytes anywhere, then a cut.
	if field(corrupt, 0, 1) == 1 {
		i := int(field(corrupt, 1, 12)) % len(b)
		if field(corrupt, 21, 1) == 1 {
			b[i] ^= byte(field(corrupt, 13, 8))
		} else {
			b[i] = byte(field(corrupt, 13, 8))
		}
	}
	if field(corrupt, 22, 1) == 1 {
		b[int(field(corrupt, 23, 12))%len(b)] ^= byte(field(corrupt, 35, 8))
	}
	if field(corrupt, 43, 1) == 1 {
		b = b[:max(14, int(field(corrupt, 44, 12))%(len(b)+1))]
	}
	return b
}

// wellFormed is what strictParse reads from a frame the balancer may
// forward.
type wellFormed struct {
	l2len        int
	v6           bool
	l3len        int // the IP packet's length by its header
	src, dst     netip.Addr
	proto        Proto
	sport, dport uint16
	syn          bool // TCP SYN without ACK
	tos          uint8
}

// strictParse accepts a frame only if it is a well-formed TCP or UDP
// packet by the rules of invariant 5, and says why not otherwise. It
// shares no code with bpf/parse.h.
func strictParse(b []byte) (*wellFormed, error) {
	if len(b) < 14 {
		return nil, fmt.Errorf("%d bytes: shorter than an Ethernet header", len(b))
	}
	w := &wellFormed{}
	etype := binary.BigEndian.Uint16(b[12:])
	off := 14
	for tags := 0; etype == 0x8100 || etype == 0x88a8; tags++ {
		if tags == fuzzVLANMax {
			return nil, fmt.Errorf("more than %d VLAN tags", fuzzVLANMax)
		}
		if len(b) < off+4 {
			return nil, errors.New("truncated VLAN tag")
		}
		etype = binary.BigEndian.Uint16(b[off+2:])
		off += 4
	}
	w.l2len = off
	ip := b[off:]
	var l4 []byte
	switch etype {
	case 0x0800:
		if len(ip) < 20 {
			return nil, fmt.Errorf("IPv4 header truncated: %d bytes", len(ip))
		}
		if v := ip[0] >> 4; v != 4 {
			return nil, fmt.Errorf("IPv4 EtherType, version field %d", v)
		}
		hlen := int(ip[0]&0x0f) * 4
		tot := int(binary.BigEndian.Uint16(ip[2:]))
		switch {
		case hlen < 20:
			return nil, fmt.Errorf("IPv4 IHL %d below 5", hlen/4)
		case tot < hlen:
			return nil, fmt.Errorf("IPv4 total length %d below the header length %d", tot, hlen)
		case tot > len(ip):
			return nil, fmt.Errorf("IPv4 total length %d beyond the frame's %d bytes", tot, len(ip))
		}
		if frag := binary.BigEndian.Uint16(ip[6:]); frag&0x3fff != 0 {
			return nil, fmt.Errorf("IPv4 fragment (flags/offset %#04x)", frag)
		}
		w.src, w.dst = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
		w.proto, w.tos, w.l3len = Proto(ip[9]), ip[1], tot
		l4 = ip[hlen:tot]
	case 0x86dd:
		w.v6 = true
		if len(ip) < 40 {
			return nil, fmt.Errorf("IPv6 header truncated: %d bytes", len(ip))
		}
		if v := ip[0] >> 4; v != 6 {
			return nil, fmt.Errorf("IPv6 EtherType, version field %d", v)
		}
		tot := 40 + int(binary.BigEndian.Uint16(ip[4:]))
		if tot > len(ip) {
			return nil, fmt.Errorf("IPv6 payload length %d beyond the frame's %d bytes", tot-40, len(ip)-40)
		}
		pk := ip[:tot]
		w.src, w.dst = netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
		w.tos, w.l3len = ip[0]<<4|ip[1]>>4, tot
		next, off := ip[6], 40
		for n := 0; ; n++ {
			size := 0
			switch next {
			case 0, 43, 60, 44, 51:
			default:
				size = -1
			}
			if size < 0 {
				break
			}
			if n == fuzzV6ExtMax {
				return nil, fmt.Errorf("more than %d IPv6 extension headers", fuzzV6ExtMax)
			}
			if off+8 > len(pk) {
				return nil, fmt.Errorf("IPv6 extension header %d (type %d) runs past the packet", n, next)
			}
			switch next {
			case 44:
				if v := binary.BigEndian.Uint16(pk[off+2:]); v>>3 != 0 || v&1 != 0 {
					return nil, fmt.Errorf("IPv6 fragment (offset %d, M %d)", v>>3, v&1)
				}
				size = 8
			case 51:
				size = (int(pk[off+1]) + 2) * 4
			default:
				size = (int(pk[off+1]) + 1) * 8
			}
			if off+size > len(pk) {
				return nil, fmt.Errorf("IPv6 extension header %d (type %d, %d bytes) runs past the packet", n, next, size)
			}
			next, off = pk[off], off+size
			if off > fuzzV6ExtBytes {
				return nil, fmt.Errorf("IPv6 extension headers end at byte %d, past the bound %d", off, fuzzV6ExtBytes)
			}
		}
		w.proto = Proto(next)
		l4 = pk[off:]
	default:
		return nil, fmt.Errorf("EtherType %#04x is not IP", etype)
	}
	switch w.proto {
	case TCP:
		if len(l4) < 20 {
			return nil, fmt.Errorf("TCP header truncated: %d bytes left in the IP packet", len(l4))
		}
		doff := int(l4[12]>>4) * 4
		if doff < 20 {
			return nil, fmt.Errorf("TCP data offset %d below 5", doff/4)
		}
		if doff > len(l4) {
			return nil, fmt.Errorf("TCP header of %d bytes (data offset) beyond the %d bytes left in the IP packet", doff, len(l4))
		}
		w.syn = l4[13]&0x02 != 0 && l4[13]&0x10 == 0
	case UDP:
		if len(l4) < 8 {
			return nil, fmt.Errorf("UDP header truncated: %d bytes left in the IP packet", len(l4))
		}
		ulen := int(binary.BigEndian.Uint16(l4[4:]))
		if ulen < 8 {
			return nil, fmt.Errorf("UDP length %d below 8", ulen)
		}
		if ulen > len(l4) {
			return nil, fmt.Errorf("UDP length %d beyond the %d bytes left in the IP packet", ulen, len(l4))
		}
	default:
		return nil, fmt.Errorf("protocol %d is neither TCP nor UDP", w.proto)
	}
	w.sport, w.dport = binary.BigEndian.Uint16(l4[0:]), binary.BigEndian.Uint16(l4[2:])
	return w, nil
}

// ipDestination reads the IP destination the way any parser must find it
// (at most two tags, the fixed IP header present), for invariant 4.
func ipDestination(b []byte) (netip.Addr, bool) {
	etype := binary.BigEndian.Uint16(b[12:])
	off := 14
	for tags := 0; etype == 0x8100 || etype == 0x88a8; tags++ {
		if tags == fuzzVLANMax || len(b) < off+4 {
			return netip.Addr{}, false
		}
		etype = binary.BigEndian.Uint16(b[off+2:])
		off += 4
	}
	switch {
	case etype == 0x0800 && len(b) >= off+20:
		return netip.AddrFrom4([4]byte(b[off+16 : off+20])), true
	case etype == 0x86dd && len(b) >= off+40:
		return netip.AddrFrom16([16]byte(b[off+24 : off+40])), true
	}
	return netip.Addr{}, false
}

// lookupVIP finds the VIP of a well-formed packet: exact port, else port 0.
func (fz *fuzzer) lookupVIP(w *wellFormed) (provisioned, bool) {
	if p, ok := fz.vips[VIP{w.dst, w.dport, w.proto}]; ok {
		return p, true
	}
	p, ok := fz.vips[VIP{w.dst, 0, w.proto}]
	return p, ok
}

func (fz *fuzzer) verdictStats(t *testing.T) [numStats]uint64 {
	t.Helper()
	var perCPU []balancerStatTable
	if err := fz.env.d.objs.Stats.Lookup(uint32(0), &perCPU); err != nil {
		t.Fatalf("read stats: %v", err)
	}
	var sum [numStats]uint64
	for _, cpu := range perCPU {
		for i := range sum {
			sum[i] += cpu.Count[i]
		}
	}
	return sum
}

func backendOf(p provisioned, a netip.Addr) (Backend, bool) {
	for _, b := range p.backends {
		if b.Addr == a {
			return b, true
		}
	}
	return Backend{}, false
}

// check runs one frame and asserts the invariants.
func (fz *fuzzer) check(t *testing.T, in []byte) {
	w, perr := strictParse(in)
	var (
		vip    provisioned
		hasVIP bool
		pred   Prediction
	)
	if perr == nil {
		if vip, hasVIP = fz.lookupVIP(w); hasVIP {
			var err error
			// Before the run: see invariant 6.
			pred, err = fz.env.d.Predict(Flow{Src: w.src, Dst: w.dst, Sport: w.sport, Dport: w.dport, Proto: w.proto}, w.syn)
			if err != nil {
				t.Fatalf("Predict: %v", err)
			}
			if pred.VIP != vip.vip {
				t.Fatalf("Predict matched VIP %s, the test's lookup %s", pred.VIP, vip.vip)
			}
		}
	}
	describe := func() string {
		s := fmt.Sprintf("input (%d bytes):\n%s", len(in), hex.Dump(in[:min(len(in), 256)]))
		if len(in) > 256 {
			s += fmt.Sprintf("(%d more bytes)\n", len(in)-256)
		}
		if perr != nil {
			return s + "strict parse: " + perr.Error()
		}
		s += fmt.Sprintf("strict parse: %s:%d -> %s:%d/%s syn=%v l2=%d l3len=%d", w.src, w.sport, w.dst, w.dport, w.proto, w.syn, w.l2len, w.l3len)
		if hasVIP {
			s += fmt.Sprintf("; vip %s (%s); predicted %s (ring %s, conntrack %v)", vip.vip, vip.cfg.Mode, pred.Backend, pred.RingBackend, pred.Conntrack)
		}
		return s
	}

	before := fz.verdictStats(t)
	verdict, out, err := fz.run(in)
	if err != nil {
		t.Fatalf("BPF_PROG_RUN: %v\n%s", err, describe())
	}
	after := fz.verdictStats(t)

	// 1. Verdict.
	switch verdict {
	case xdpDrop, xdpPass, xdpTX, xdpRedirect:
	default:
		t.Fatalf("verdict %d (%s)\n%s", verdict, verdictNames[verdict], describe())
	}
	// 3. Exactly one verdict counter, of the verdict's kind.
	var moved []Stat
	for s := range numStats {
		if Stat(s).IsVerdict() && after[s] != before[s] {
			for range after[s] - before[s] {
				moved = append(moved, Stat(s))
			}
		}
	}
	if len(moved) != 1 || !verdictCounterFits(moved[0], verdict) {
		t.Fatalf("verdict %s moved verdict counters %v, want exactly one of its kind\n%s", verdictNames[verdict], moved, describe())
	}
	for _, s := range []Stat{StatCtStale, StatDropBadMode, StatDropEncap, StatFibGateway} {
		if after[s] != before[s] {
			t.Fatalf("counter %s moved: impossible with the fuzzer's fixed configuration\n%s", s, describe())
		}
	}
	coverBPF(before, after)

	forwarded := verdict == xdpTX || verdict == xdpRedirect
	if !forwarded {
		// 2. Untouched.
		if !bytes.Equal(out, in) {
			t.Fatalf("%s changed the frame:\n%s%s", verdictNames[verdict], hexDiff(out, in), describe())
		}
		// 4. Host traffic.
		if dst, ok := ipDestination(in); (!ok || !fz.addrs[dst]) && verdict != xdpPass {
			t.Fatalf("frame to no VIP address: %s, want XDP_PASS\n%s", verdictNames[verdict], describe())
		}
		// 7. Well-formed VIP packets are forwarded.
		if perr != nil || !hasVIP || in[0]&1 != 0 {
			return
		}
		want, why := uint32(xdpTX), "a well-formed packet for a VIP with backends"
		switch {
		case !pred.RingBackend.IsValid():
			want, why = xdpDrop, "the VIP has no backend"
		case vip.cfg.Mode == ModeIPIP && fz.ipipTooBig(w, pred.Backend):
			want, why = xdpDrop, "the encapsulated packet exceeds the egress MTU"
		case vip.cfg.Mode == ModeIPIP && neverResolves(pred.Backend):
			want, why = xdpDrop, "the backend's next hop never resolves"
		}
		// Bytes past the IP packet that would take the encapsulated
		// frame over the MTU: a drop is right too (the other way is
		// to trim them and forward).
		junkTooBig := vip.cfg.Mode == ModeIPIP && len(in)-w.l2len+outerLen(pred.Backend) > fz.mtu
		if verdict != want && !(want == xdpTX && verdict == xdpDrop && junkTooBig) {
			t.Fatalf("verdict %s, want %s: %s\n%s", verdictNames[verdict], verdictNames[want], why, describe())
		}
		return
	}

	// 5. Only well-formed packets for a VIP with a backend.
	if perr != nil {
		t.Fatalf("%s of a frame that is not a well-formed packet: %v\n%s", verdictNames[verdict], perr, describe())
	}
	if !hasVIP {
		t.Fatalf("%s of a packet that matches no VIP\n%s", verdictNames[verdict], describe())
	}
	if !pred.Backend.IsValid() {
		t.Fatalf("%s for a VIP without backends\n%s", verdictNames[verdict], describe())
	}
	if len(out) < 12 || out[6]&1 != 0 {
		t.Fatalf("%s with a group source MAC %x (the input's destination MAC)\n%s", verdictNames[verdict], out[6:12], describe())
	}
	if wantTx := map[Mode]Stat{ModeDSR: StatTxDSR, ModeIPIP: StatTxIPIP}[vip.cfg.Mode]; moved[0] != wantTx {
		t.Fatalf("%s vip forwarded and counted %s, want %s\n%s", vip.cfg.Mode, moved[0], wantTx, describe())
	}
	// 6. The predicted backend, the exact frame.
	switch vip.cfg.Mode {
	case ModeDSR:
		if verdict != xdpTX {
			t.Fatalf("dsr: verdict %s, want XDP_TX\n%s", verdictNames[verdict], describe())
		}
		be, ok := backendOf(vip, pred.Backend)
		if !ok {
			t.Fatalf("predicted backend %s is not the VIP's\n%s", pred.Backend, describe())
		}
		if want := dsrRewrite(in, be.MAC); !bytes.Equal(out, want) {
			t.Fatalf("dsr output is not the input with the MACs of backend %s:\n%s%s", be.Addr, hexDiff(out, want), describe())
		}
	case ModeIPIP:
		if verdict != xdpTX { // every next hop is out of the ingress port
			t.Fatalf("ipip: verdict %s, want XDP_TX\n%s", verdictNames[verdict], describe())
		}
		fz.checkEncap(t, in, out, w, pred.Backend, describe)
	default:
		t.Fatalf("vip %s has mode %s", vip.vip, vip.cfg.Mode)
	}
	// The connection entry now names where the packet went.
	if !vip.cfg.NoConntrack {
		now, err := fz.env.d.Predict(Flow{Src: w.src, Dst: w.dst, Sport: w.sport, Dport: w.dport, Proto: w.proto}, false)
		if err != nil {
			t.Fatalf("Predict after the run: %v", err)
		}
		if !now.Conntrack || now.Backend != pred.Backend {
			t.Fatalf("after forwarding to %s the connection entry says %s (conntrack %v)\n%s", pred.Backend, now.Backend, now.Conntrack, describe())
		}
	}
}

// fuzzSink is written by coverBPF so that its branches are not empty.
var fuzzSink uint64

// coverBPF gives every counter the program moved its own Go basic block.
// Go's fuzzer sees only the coverage of Go code; through this, an input
// that makes the program take a verdict or a connection-table path it had
// not taken before counts as new coverage and joins the corpus.
func coverBPF(before, after [numStats]uint64) {
	for i := range numStats {
		if after[i] == before[i] {
			continue
		}
		switch Stat(i) {
		case StatPassNotIP:
			fuzzSink += 1
		case StatPassNoVIP:
			fuzzSink += 2
		case StatPassNotL4:
			fuzzSink += 3
		case StatPassUnparseable:
			fuzzSink += 4
		case StatDropFragment:
			fuzzSink += 5
		case StatDropMalformed:
			fuzzSink += 6
		case StatDropNoBackend:
			fuzzSink += 7
		case StatDropTooBig:
			fuzzSink += 8
		case StatDropNoRoute:
			fuzzSink += 9
		case StatTxDSR:
			fuzzSink += 10
		case StatTxIPIP:
			fuzzSink += 11
		case StatCtHit:
			fuzzSink += 12
		case StatCtMiss:
			fuzzSink += 13
		case StatCtSYN:
			fuzzSink += 14
		case StatCtInsertFailed:
			fuzzSink += 15
		case StatCtBypass:
			fuzzSink += 16
		default: // counters added later
			fuzzSink += 100 + uint64(i)
		}
	}
}

// neverResolves reports whether an ipip backend is one whose next hop the
// namespace's FIB never resolves (ipipEnv's 198.18.9.0/24 route).
func neverResolves(backend netip.Addr) bool {
	for _, b := range unreach {
		if b.Addr == backend {
			return true
		}
	}
	return false
}

func verdictCounterFits(s Stat, verdict uint32) bool {
	name := s.String()
	switch verdict {
	case xdpPass:
		return strings.HasPrefix(name, "pass_")
	case xdpDrop:
		return strings.HasPrefix(name, "drop_")
	default:
		return strings.HasPrefix(name, "tx_")
	}
}

func outerLen(backend netip.Addr) int {
	if backend.Is4() {
		return 20
	}
	return 40
}

// ipipTooBig reports whether the encapsulated packet would exceed the
// egress MTU.
func (fz *fuzzer) ipipTooBig(w *wellFormed, backend netip.Addr) bool {
	return w.l3len+outerLen(backend) > fz.mtu
}

// checkEncap checks an ipip output against invariant 6. Bytes after the
// inner packet's length (Ethernet padding, or junk a sender appended) may
// stay after it or be trimmed; either way the frame must fit the MTU.
func (fz *fuzzer) checkEncap(t *testing.T, in, out []byte, w *wellFormed, backend netip.Addr, describe func() string) {
	t.Helper()
	ol := outerLen(backend)
	pktEnd := w.l2len + w.l3len // of the input
	if len(out) != len(in)+ol && len(out) != pktEnd+ol {
		t.Fatalf("ipip output is %d bytes, want %d (L2 + outer + inner) or %d (and the input's %d bytes past the inner packet)\n%s",
			len(out), pktEnd+ol, len(in)+ol, len(in)-pktEnd, describe())
	}
	if fz.ipipTooBig(w, backend) {
		t.Fatalf("ipip sent a %d-byte outer packet over the egress MTU %d\n%s", w.l3len+ol, fz.mtu, describe())
	}
	if n := len(out) - w.l2len; n > fz.mtu {
		t.Fatalf("ipip frame carries %d bytes after L2 (outer packet %d, then %d bytes past the inner packet): over the egress MTU %d\n%s",
			n, w.l3len+ol, len(out)-w.l2len-ol-w.l3len, fz.mtu, describe())
	}
	o := out[w.l2len : w.l2len+ol]
	innerProto := byte(4) // IPPROTO_IPIP
	if w.v6 {
		innerProto = 41 // IPPROTO_IPV6
	}
	hash := flowhash.Flow(w.src, w.dst, w.sport, w.dport, uint8(w.proto))
	src := OuterSource(ipipEncap, hash, backend.Is6())
	// Explicit checks first, for readable failures; the byte comparison
	// below covers every field.
	if backend.Is4() {
		if sum := ipv4HeaderSum(o); sum != 0xffff {
			t.Fatalf("outer IPv4 header checksum does not verify (sum %#04x)\n%s", sum, describe())
		}
		if got := int(binary.BigEndian.Uint16(o[2:])); got != 20+w.l3len {
			t.Fatalf("outer total length %d, want 20 + %d\n%s", got, w.l3len, describe())
		}
		if o[9] != innerProto || netip.AddrFrom4([4]byte(o[16:20])) != backend {
			t.Fatalf("outer protocol %d to %s, want %d to %s\n%s", o[9], netip.AddrFrom4([4]byte(o[16:20])), innerProto, backend, describe())
		}
	} else {
		if got := int(binary.BigEndian.Uint16(o[4:])); got != w.l3len {
			t.Fatalf("outer payload length %d, want %d\n%s", got, w.l3len, describe())
		}
		if o[6] != innerProto || netip.AddrFrom16([16]byte(o[24:40])) != backend {
			t.Fatalf("outer next header %d to %s, want %d to %s\n%s", o[6], netip.AddrFrom16([16]byte(o[24:40])), innerProto, backend, describe())
		}
	}
	// The inner packet, so its L4 checksum too, is the input's.
	if got, want := out[w.l2len+ol:w.l2len+ol+w.l3len], in[w.l2len:pktEnd]; !bytes.Equal(got, want) {
		t.Fatalf("ipip inner packet differs from the input's IP packet:\n%s%s", hexDiff(got, want), describe())
	}

	want := make([]byte, 0, len(out))
	l2 := bytes.Clone(in[:w.l2len])
	dmac, etype := gwMAC4, uint16(0x0800)
	if backend.Is6() {
		dmac, etype = gwMAC6, 0x86dd
	}
	copy(l2[0:6], dmac)
	copy(l2[6:12], fz.env.ourMAC)
	binary.BigEndian.PutUint16(l2[w.l2len-2:], etype)
	want = append(want, l2...)
	h := make([]byte, ol)
	if backend.Is4() {
		h[0], h[1] = 0x45, w.tos
		binary.BigEndian.PutUint16(h[2:], uint16(20+w.l3len))
		binary.BigEndian.PutUint16(h[6:], 0x4000) // DF
		h[8], h[9] = 64, innerProto
		s4, d4 := src.As4(), backend.As4()
		copy(h[12:], s4[:])
		copy(h[16:], d4[:])
		binary.BigEndian.PutUint16(h[10:], ^ipv4HeaderSum(h))
	} else {
		binary.BigEndian.PutUint32(h[0:], 6<<28|uint32(w.tos)<<20|hash&0xfffff)
		binary.BigEndian.PutUint16(h[4:], uint16(w.l3len))
		h[6], h[7] = innerProto, 64
		s6, d6 := src.As16(), backend.As16()
		copy(h[8:], s6[:])
		copy(h[24:], d6[:])
	}
	want = append(want, h...)
	want = append(want, in[w.l2len:pktEnd]...)
	if len(out) > len(want) {
		want = append(want, in[pktEnd:]...)
	}
	if !bytes.Equal(out, want) {
		t.Fatalf("ipip output to %s differs:\n%s%s", backend, hexDiff(out, want), describe())
	}
}

// fuzzSeed is one f.Add.
type fuzzSeed struct {
	shape          uint64
	ports          uint32
	edit, corrupt  uint64
	payload, extra []byte
}

// Shape and edit builders for the seeds.
func sTarget(i int) uint64   { return uint64(i) }
func sVLANs(n int) uint64    { return uint64(n) << 8 }
func sQinQ() uint64          { return 1 << 10 }
func sL4(c int) uint64       { return uint64(c) << 11 }
func sSYN() uint64           { return 1 << 13 }
func sACK() uint64           { return 1 << 14 }
func sFIN() uint64           { return 1 << 15 }
func sRST() uint64           { return 1 << 16 }
func sFuzzedDport() uint64   { return 1 << 17 }
func sClient(c byte) uint64  { return uint64(c) << 18 }
func sMF() uint64            { return 1 << 26 }
func sFragOffset() uint64    { return 1 << 27 }
func sOptWords(n int) uint64 { return uint64(n) << 28 }
func sPadTo(n int) uint64    { return uint64(n/24) << 57 }
func sRaw() uint64           { return 1 << 63 }
func sExt(codes ...int) uint64 {
	var v uint64
	for i, c := range codes {
		v |= uint64(c) << (32 + 3*i)
	}
	return v
}
func sExtSize(i, units int) uint64 { return uint64(units-1) << (47 + 2*i) }

func eIHL(v int) uint64     { return 1 | uint64(v)<<1 }
func eIPLen(d int8) uint64  { return 1<<5 | uint64(uint8(d))<<6 }
func eVersion(v int) uint64 { return 1<<14 | uint64(v)<<15 }
func eDoff(v int) uint64    { return 1<<19 | uint64(v)<<20 }
func eUDPLen(d int8) uint64 { return 1<<24 | uint64(uint8(d))<<25 }
func eProto(p uint8) uint64 { return 1<<33 | uint64(p)<<34 }
func eExtLen(i int, v uint8) uint64 {
	return 1<<42 | uint64(i)<<43 | uint64(v)<<46
}
func eTail(n int) uint64 { return 1<<54 | uint64(n)<<55 }

func cSet(off int, v byte) uint64 { return 1 | uint64(off)<<1 | uint64(v)<<13 }
func cXor(off int, v byte) uint64 { return 1 | uint64(off)<<1 | uint64(v)<<13 | 1<<21 }
func cCut(n int) uint64           { return 1<<43 | uint64(n)<<44 }
func cTOS(v byte) uint64          { return uint64(v) << 56 }

// fuzzSeeds are the fixture cases in the fuzzer's terms: every target
// plain, as a SYN and tagged; options, extension headers, fragments,
// malformed headers, sizes around the ipip MTU; and raw frames.
func fuzzSeeds(nTargets int) []fuzzSeed {
	pl := []byte("fulcrum")
	var seeds []fuzzSeed
	add := func(shape uint64, edit, corrupt uint64, payload []byte) {
		seeds = append(seeds, fuzzSeed{shape, uint32(40000+len(seeds))<<16 | 8080, edit, corrupt, payload, []byte{0x94, 4, 0, 0, 1, 2, 3, 4}})
	}
	for i := range nTargets {
		add(sTarget(i), 0, 0, pl)
		add(sTarget(i)|sSYN(), 0, 0, pl)
		add(sTarget(i)|sVLANs(1), 0, 0, pl)
		add(sTarget(i)|sVLANs(2)|sQinQ()|sSYN(), 0, cTOS(0xb8), pl)
		add(sTarget(i)|sFuzzedDport(), 0, 0, pl)
		add(sTarget(i)|sL4(2), 0, 0, pl)
		add(sTarget(i)|sL4(3), 0, 0, pl)
		add(sTarget(i)|sPadTo(1440), 0, 0, pl)
	}
	// By fuzzVIPs order: 0 web4 (tcp 80), 1 dns4 (udp, no ct), 2 all4, 3
	// pass4, 4 empty4, 5 src4, 6 web6, 7 dns6, 8 4in4, 9 6in6, 10 4in6, 11
	// 6in4, 12 nohop, 13 all6 ipip, 14 pass6, 15 shared4, 16-18 no VIP.
	for _, tg := range []int{0, 3, 8} {
		add(sTarget(tg)|sOptWords(2)|sSYN(), 0, 0, pl)
		add(sTarget(tg)|sOptWords(10), 0, 0, pl)
		add(sTarget(tg)|sMF(), 0, 0, pl)
		add(sTarget(tg)|sFragOffset(), 0, 0, pl)
		add(sTarget(tg)|sMF()|sFragOffset(), 0, 0, pl)
		add(sTarget(tg), eIHL(4), 0, pl)
		add(sTarget(tg), eIHL(15), 0, pl)
		add(sTarget(tg), eIPLen(100), 0, pl)
		add(sTarget(tg), eIPLen(-20), 0, pl)
		add(sTarget(tg), eIPLen(-8), 0, pl)
		add(sTarget(tg), eVersion(6), 0, pl)
		add(sTarget(tg), eDoff(4), 0, pl)
		add(sTarget(tg), eDoff(15), 0, pl)
		add(sTarget(tg), eProto(1), 0, pl)
		add(sTarget(tg), eTail(40), 0, pl)
		add(sTarget(tg), eIPLen(-27)|eTail(20), 0, pl)
		add(sTarget(tg)|sVLANs(3), 0, 0, pl)
		add(sTarget(tg), 0, cCut(14+19), pl)
		add(sTarget(tg), 0, cCut(14+20+19), pl)
		add(sTarget(tg)|sACK()|sFIN()|sRST(), 0, 0, pl)
	}
	for _, tg := range []int{1, 4, 10, 13} {
		add(sTarget(tg), eUDPLen(-1), 0, pl)
		add(sTarget(tg), eUDPLen(10), 0, pl)
		add(sTarget(tg), eUDPLen(-8), 0, pl)
		add(sTarget(tg)|sMF(), 0, 0, pl)
	}
	for _, tg := range []int{6, 7, 9, 11, 13, 14} {
		add(sTarget(tg)|sExt(extHopByHop, extDestOpts)|sSYN(), 0, 0, pl)
		add(sTarget(tg)|sExt(extAtomicFrag), 0, 0, pl)
		add(sTarget(tg)|sExt(extFragMore), 0, 0, pl)
		add(sTarget(tg)|sExt(extFragOffset), 0, 0, pl)
		add(sTarget(tg)|sExt(extRouting, extAH)|sExtSize(0, 3)|sExtSize(1, 2), 0, 0, pl)
		add(sTarget(tg)|sExt(extHopByHop, extDestOpts, extDestOpts, extDestOpts), 0, 0, pl)
		add(sTarget(tg)|sExt(extHopByHop, extDestOpts, extDestOpts, extDestOpts, extDestOpts), 0, 0, pl)
		add(sTarget(tg)|sExt(extDestOpts, extDestOpts, extDestOpts, extDestOpts)|sExtSize(0, 4)|sExtSize(1, 4)|sExtSize(2, 4)|sExtSize(3, 4), eExtLen(3, 40), 0, pl)
		add(sTarget(tg)|sExt(extHopByHop), eExtLen(0, 200), 0, pl)
		add(sTarget(tg), eIPLen(100), 0, pl)
		add(sTarget(tg), eIPLen(-1), 0, pl)
		add(sTarget(tg), eVersion(4), 0, pl)
		add(sTarget(tg), eProto(58), 0, pl)
		add(sTarget(tg), 0, cCut(14+39), pl)
	}
	// Other clients, and single-byte corruptions: the destination MAC made
	// broadcast, the IPv6 next header turned into hop-by-hop.
	add(sTarget(0)|sClient(7)|sSYN(), 0, 0, pl)
	add(sTarget(9)|sClient(200), 0, 0, pl)
	add(sTarget(0), 0, cSet(0, 0xff), pl)
	add(sTarget(8), 0, cSet(0, 0x01), pl)
	add(sTarget(6), 0, cXor(14+6, 6), pl)
	// Around the ipip MTU: inner 1480 + 20 = 1500 fits, one more does not.
	big := bytes.Repeat([]byte{0xab}, 1500-20-20-20)
	add(sTarget(8), 0, 0, big)
	add(sTarget(8), 0, 0, append(bytes.Clone(big), 0))
	add(sTarget(9), 0, 0, big[:1500-40-20-40])
	add(sTarget(9), 0, 0, big[:1500-40-20-40+1])
	add(sTarget(10), 0, 0, big[:1500-20-8-40])
	add(sTarget(10), 0, 0, big[:1500-20-8-40+1])
	add(sTarget(0), 0, 0, bytes.Repeat([]byte{0xcd}, 2900))
	add(sTarget(8), eIPLen(-100)|eTail(100), 0, big)
	// Raw frames: fixture-like packets and their malformed forms.
	raw := func(b []byte) {
		seeds = append(seeds, fuzzSeed{sRaw(), 0, 0, 0, b, nil})
	}
	syn4 := pkt(client4, "203.0.113.10", TCP, 40001, 80)
	syn4.SYN = true
	b := syn4.Build()
	raw(b)
	raw(b[:14])
	arp := bytes.Clone(b[:42])
	arp[12], arp[13] = 0x08, 0x06
	raw(arp)
	v := syn4
	v.VLANs = []uint16{5}
	raw(v.Build()[:16])
	raw(b[:14+19])
	bc := bytes.Clone(b)
	copy(bc[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	raw(bc)
	mc := bytes.Clone(b)
	copy(mc[0:6], []byte{0x01, 0x00, 0x5e, 0x00, 0x00, 0x01})
	raw(mc)
	u6 := pkt(client6, "2001:db8:ffff::10", UDP, 41003, 53).Build()
	raw(u6)
	raw(u6[:14+39])
	i6 := pkt(client6, "2001:db8:ffff::80", TCP, 50011, 80)
	i6.SYN = true
	raw(i6.Build())
	i4 := pkt(client4, "203.0.113.81", UDP, 50021, 53)
	i4.VLANs = []uint16{9}
	raw(i4.Build())
	return seeds
}

func FuzzBalancer(f *testing.F) {
	fz := newFuzzer(f)
	for _, s := range fuzzSeeds(len(fz.targets)) {
		f.Add(s.shape, s.ports, s.edit, s.corrupt, s.payload, s.extra)
	}
	f.Fuzz(func(t *testing.T, shape uint64, ports uint32, edit, corrupt uint64, payload, extra []byte) {
		in := fz.buildFuzzFrame(shape, ports, edit, corrupt, payload, extra)
		if in == nil {
			return
		}
		fz.check(t, in)
	})
}
