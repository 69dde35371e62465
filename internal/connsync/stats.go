package connsync

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// Stats is a snapshot of a Node's counters, for status, the API and
// metrics. Counters only grow while the Node lives.
type Stats struct {
	// SentDatagrams and SentEntries count what was sent, once per peer
	// (an entry sent to two peers counts twice), resyncs included.
	SentDatagrams uint64 `json:"sent_datagrams"`
	SentEntries   uint64 `json:"sent_entries"`
	// SendErrors counts datagrams the socket refused to send.
	SendErrors uint64 `json:"send_errors"`
	// ReceivedDatagrams and ReceivedEntries count what was accepted
	// (authenticated, fresh, well formed); hellos are datagrams without
	// entries.
	ReceivedDatagrams uint64 `json:"received_datagrams"`
	ReceivedEntries   uint64 `json:"received_entries"`
	// Installed counts the received entries the Installer installed.
	Installed uint64 `json:"installed"`
	// Dropped counts the datagrams dropped, by reason (every reason is
	// present, 0 or not).
	Dropped map[string]uint64 `json:"dropped"`
	// QueueOverflow counts entries Offer dropped because the queue was
	// full; Invalid the entries offered (or snapshotted) that cannot be
	// sent (Entry fields out of range).
	QueueOverflow uint64 `json:"queue_overflow"`
	Invalid       uint64 `json:"invalid"`
	// Queued is how many entries wait in the queue now.
	Queued int `json:"queued"`
	// Resyncs counts the full resyncs sent to peers, ResyncEntries the
	// entries they carried.
	Resyncs       uint64 `json:"resyncs"`
	ResyncEntries uint64 `json:"resync_entries"`
	// Refreshes counts the refresh walks (Config.RefreshInterval),
	// RefreshEntries the entries they re-sent (once each, whatever the
	// number of peers).
	Refreshes      uint64 `json:"refreshes"`
	RefreshEntries uint64 `json:"refresh_entries"`
	// SendLag is the time from Offer to its datagram's send (the
	// batching delay plus the queue's) of one offered entry in 16 (a
	// sample: reading the clock for each would cost more than the rest
	// of Offer). Resyncs are not in it.
	SendLag Lag `json:"send_lag"`
	// ReceiveAge is each accepted datagram's age at receipt, from the
	// sender's timestamp: meaningful as far as the nodes' clocks agree
	// (negative ages, from skew, count as 0).
	ReceiveAge Lag         `json:"receive_age"`
	Peers      []PeerStats `json:"peers"`
}

// Lag summarises durations as a Prometheus summary does: Count and Sum
// (so that rates and means can be taken), and the Max seen. It is the
// API's type, which status shows as it is.
type Lag = api.Lag

// PeerStats is one configured peer as this node sees it.
type PeerStats struct {
	Address netip.AddrPort `json:"address"`
	// Up: an authenticated datagram came from the peer within the peer
	// timeout.
	Up bool `json:"up"`
	// LastHeard is when the peer's last accepted datagram came; zero if
	// never.
	LastHeard time.Time `json:"last_heard"`
	// Epoch is the peer's sender id: its daemon's start time (Unix ns).
	Epoch uint64 `json:"epoch"`
}

// counters are a Node's statistics, updated without a lock on the paths
// that run per datagram or per entry.
type counters struct {
	sentDatagrams, sentEntries, sendErrors atomic.Uint64
	receivedDatagrams, receivedEntries     atomic.Uint64
	installed, overflow, invalid           atomic.Uint64
	resyncs, resyncEntries                 atomic.Uint64
	refreshes, refreshEntries              atomic.Uint64
	dropped                                [numReasons]atomic.Uint64
	sendLag, receiveAge                    lagCounter
}

// lagCounter accumulates a Lag; updated once per datagram, so a mutex is
// cheap enough.
type lagCounter struct {
	mu sync.Mutex
	l  Lag
}

// add records n durations whose sum is sum and largest is m.
func (c *lagCounter) add(n uint64, sum, m time.Duration) {
	c.mu.Lock()
	c.l.Count += n
	c.l.Sum += sum
	c.l.Max = max(c.l.Max, m)
	c.mu.Unlock()
}

func (c *lagCounter) get() Lag {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.l
}
