// Package connsync keeps the connection tables of peer LB nodes in step,
// as the IPVS sync daemon does for IPVS: each node sends its new and
// changed connection entries to its peers in UDP datagrams, and installs
// theirs, so that a flow pinned to a backend survives a failover to a
// node that would not have chosen that backend itself.
//
// A Node batches the entries offered to it (Offer, which never blocks)
// into datagrams of at most MaxDatagram bytes, sent when full or
// FlushInterval after their first entry, to every configured peer. It
// accepts datagrams only from those peers, and only when their
// HMAC-SHA256 (over the whole datagram, with the shared key of LoadKey)
// matches and their sequence number is new (a sliding replay window per
// peer); a datagram failing any check is dropped, counted by reason, and
// installs nothing. Accepted entries go to the Installer, which owns the
// rule "never overwrite a fresher local entry".
//
// Every node sends a hello every HelloInterval. A peer heard for the first
// time, with a new epoch (it restarted), or again after PeerTimeout of
// silence, is sent a full resync: every entry of the Source, paced at
// ResyncRate, so that a restarted standby learns the flows that exist,
// not only the new ones.
//
// The wire format, security properties and limits are in
// docs/connections.md ("Sync") and at the top of wire.go.
package connsync
