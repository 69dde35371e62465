// Package testenv builds network-namespace topologies for Fulcrum's
// end-to-end tests: namespaces joined by veth pairs and a Linux bridge.
//
// Everything lives inside namespaces the package creates. The root network
// namespace gets no address, route, link or XDP program: a veth pair is
// created through a netlink socket opened inside one test namespace, with its
// peer placed directly into another.
//
// Namespaces are named <prefix>-<role>, where the prefix is "fc" followed by
// six random hex digits (for example "fc3a9e01-client"), so that parallel runs
// do not collide. They are bind-mounted under /run/netns like `ip netns add`
// does, so `ip netns exec NAME ...` works on them. An Env (and therefore a
// Topology) registers its Close with testing.TB.Cleanup before it creates
// anything, so every namespace is removed and every process started through
// the package is killed even when a test fails.
//
// # Canonical topology
//
//	client ── router ── sw (bridge br0) ─┬─ lb1
//	                                     ├─ lb2        (Options.SecondLB)
//	                                     └─ backend1..N (Options.Backends, default 3)
//
// Interfaces: every host's main interface is "eth0". The router has two:
// "eth1" towards the client and "eth0" on the switch segment. In namespace
// "sw" the bridge is "br0" and the port towards each host is named after the
// host's role: "router", "lb1", "lb2", "backend1", ...
//
// With Options.RemoteBackends the backends are not on the LB's segment but
// on their own, behind the router, as for the load balancer's ipip mode:
//
//	client ── router ── sw (bridge br0) ─┬─ lb1
//	            │                        └─ lb2        (Options.SecondLB)
//	            └─ eth2 ── sw2 (bridge br1) ── backend1..N
//
// The router's third interface is "eth2"; namespace "sw2" holds bridge
// "br1", with ports "router", "backend1", ... Topology.BackendSwitch is sw2
// then (Switch otherwise), and Topology.RemoteBackends is set. Hosts come in
// the order client, router, sw, lb1, lb2, sw2, backends.
//
// # Addressing plan
//
//	client–router link     198.19.1.0/24          2001:db8:1::/64
//	  client  eth0         198.19.1.2             2001:db8:1::2
//	  router  eth1         198.19.1.1             2001:db8:1::1
//	switch segment         198.18.0.0/24          2001:db8:2::/64
//	  router  eth0         198.18.0.1             2001:db8:2::1
//	  lb1     eth0         198.18.0.2             2001:db8:2::2
//	  lb2     eth0         198.18.0.3             2001:db8:2::3
//	  backend i eth0       198.18.0.(10+i)        2001:db8:2::(10+i)
//	backend segment        198.18.2.0/24          2001:db8:3::/64   (RemoteBackends)
//	  router  eth2         198.18.2.1             2001:db8:3::1
//	  backend i eth0       198.18.2.(10+i)        2001:db8:3::(10+i)
//	encapsulation sources  198.18.1.0/24          2001:db8:4::/64   (on no interface)
//	IPv4 VIPs              203.0.113.0/24
//	IPv6 VIPs              2001:db8:ffff::/64
//
// The last IPv6 group repeats the decimal digits of the IPv4 last octet, read
// as hex: backend1 is 198.18.0.11 and 2001:db8:2::11 (that is ::0x11, not
// ::0xb); backend 12 is 198.18.0.22 and 2001:db8:2::22. BackendIPv4 and
// BackendIPv6 compute them. Remote backends follow the same rule on their
// segment (backend1 is 198.18.2.11 and 2001:db8:3::11); RemoteBackendIPv4
// and RemoteBackendIPv6 compute those. Either way, a backend Host's IPv4
// and IPv6 fields carry its actual addresses.
//
// MAC addresses are fixed and locally administered: 02:fc:SS:00:00:HH with
// SS = 01 on the client–router link, 02 on the switch segment and 03 on the
// backend segment, and HH the IPv4 last octet in hex (backend1 =
// 02:fc:02:00:00:0b, or 02:fc:03:00:00:0b behind the router; router eth2 =
// 02:fc:03:00:00:01). The bridge-side ports in sw and sw2 keep kernel-chosen
// addresses.
//
// Routing: the client's default routes point at the router (198.19.1.1,
// 2001:db8:1::1). The router forwards IPv4 and IPv6 and routes
// 203.0.113.0/24 via lb1 (198.18.0.2) and 2001:db8:ffff::/64 via lb1
// (2001:db8:2::2). With Options.VIPNextHop (VIPNextHop6) it routes them via
// that address instead: a VRRP virtual address, held by whichever load
// balancer is master, so that VIP traffic follows failover. Backends and
// load balancers have default routes via the router (198.18.0.1,
// 2001:db8:2::1), so a backend's reply (source = VIP) goes straight back to
// the client through the router, not through the LB (DSR).
//
// With RemoteBackends the router reaches 198.18.2.0/24 and 2001:db8:3::/64
// directly on eth2 (connected routes), the backends' default routes point at
// 198.18.2.1 and 2001:db8:3::1 (RemoteGatewayIPv4/IPv6), and lb1 and lb2
// reach the backends through their default routes via the router
// (198.18.0.1, 2001:db8:2::1): the backends are never their neighbours, and
// bpf_fib_lookup on the LB returns the router's MAC for them. IPv6
// forwarding is on for all, default and each of the router's interfaces,
// eth2 included.
//
// # Encapsulation source prefixes
//
// The load balancer's ipip mode sends its IP-in-IP packets (IPv4 protocol 4
// or 41, IPv6 next header 4 or 41) with an outer source taken from
// 198.18.1.0/24 (EncapSourceV4) or 2001:db8:4::/64 (EncapSourceV6), derived
// from the flow hash. These addresses are on no interface. The router routes
// both prefixes via lb1 (198.18.0.2, 2001:db8:2::2), or via
// Options.VIPNextHop and VIPNextHop6 when they are set, so that replies and
// ICMP errors about encapsulated packets (fragmentation needed, packet too
// big, unreachable) go back to the LB, and it runs with rp_filter=0 (all,
// default and each interface), so that forwarding them never depends on a
// reverse-path check. Plain IP forwarding carries them; the router needs no
// tunnel module (this kernel has none). These routes exist in both variants
// of the topology.
//
// Backends carry every VIP of Options.VIPs on lo (/32 or /128, IPv6 with
// nodad) and run with arp_ignore=1, arp_announce=2 and rp_filter=0 (all,
// default and eth0). rp_filter is 0 in every namespace.
//
// Kernel quirks handled here (see /work/shared/DESIGN.md):
//   - IPv6 duplicate address detection is off (accept_dad=0 on all and
//     default before any interface exists, and IFA_F_NODAD on every address);
//     the builder still waits until no address is tentative.
//   - TX checksum offload is off on the client's eth0, on the router's
//     interfaces (eth2 included) and on the backends' eth0, because XDP-forwarded packets that still
//     carry a partial checksum arrive corrupt.
//   - Every bridge-side port in sw (and sw2) carries a native-mode XDP program that
//     returns XDP_PASS, because XDP_TX from the LB into a veth whose peer has
//     no XDP program is lost. It is built with cilium/ebpf's asm package (no
//     clang) and attached through netlink, so it stays attached until the
//     namespace goes away.
//   - Bridge multicast snooping is off so that IPv6 neighbour discovery is
//     always flooded.
package testenv
