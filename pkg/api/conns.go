package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Conn is one live connection entry (GET /v1/conns): a flow the table
// holds on a backend, not idle past its state's timeout.
type Conn struct {
	Protocol string         `json:"protocol"`
	Client   netip.AddrPort `json:"client"`
	// Dst is where the client connected: the VIP's address, and the port
	// it chose (an every-port VIP's Port is 0).
	Dst     netip.AddrPort `json:"dst"`
	VIP     VIPRef         `json:"vip"`
	Backend netip.Addr     `json:"backend"`
	// State is "syn", "established", "fin" or "closed" (UDP:
	// "established").
	State     string        `json:"state"`
	Idle      time.Duration `json:"idle_ns"`
	ExpiresIn time.Duration `json:"expires_in_ns"`
}

// ConnStateNames are the states a ConnFilter takes: IPVS's two classes
// (active = established; inactive = syn, fin, closed), or one state.
const ConnStateNames = "active, inactive, established, syn, fin or closed"

// ConnFilter selects connection entries: those of a VIP, of a backend
// (of any VIP unless VIP is set) and in a state; zero fields select all.
// Limit bounds a listing (0: no bound).
type ConnFilter struct {
	VIP     *VIPRef
	Backend netip.Addr
	State   string
	Limit   int
}

// Query renders f as the query string of /v1/conns.
func (f ConnFilter) Query() string {
	q := url.Values{}
	if f.VIP != nil {
		q.Set("vip", f.VIP.String())
	}
	if f.Backend.IsValid() {
		q.Set("backend", f.Backend.String())
	}
	if f.State != "" {
		q.Set("state", f.State)
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

// ParseConnFilter reads the query string of /v1/conns; errors name the
// parameter.
func ParseConnFilter(q url.Values) (ConnFilter, error) {
	var f ConnFilter
	for k := range q {
		switch k {
		case "vip", "backend", "state", "limit":
		default:
			return f, fmt.Errorf("query parameter %q: unknown; want vip, backend, state or limit", k)
		}
	}
	if s := q.Get("vip"); s != "" {
		ref, err := ParseVIPRef(s)
		if err != nil {
			return f, fmt.Errorf("query parameter vip: %v", err)
		}
		f.VIP = &ref
	}
	if s := q.Get("backend"); s != "" {
		a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"))
		if err != nil || a.Zone() != "" {
			return f, fmt.Errorf("query parameter backend: %q is not an IP address", s)
		}
		f.Backend = a
	}
	if s := q.Get("state"); s != "" {
		s = strings.ToLower(s)
		switch s {
		case "active", "inactive", "established", "syn", "fin", "closed":
			f.State = s
		default:
			return f, fmt.Errorf("query parameter state: %q, want %s", s, ConnStateNames)
		}
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return f, fmt.Errorf("query parameter limit: %q, want a whole number (0: no limit)", s)
		}
		f.Limit = n
	}
	return f, nil
}

// ConnLine is one line of the GET /v1/conns stream: an entry, or, as the
// last line, the error that ended the walk half way.
type ConnLine struct {
	*Conn
	Error string `json:"error,omitempty"`
}

// BackendConns is a backend's connection count, by a walk of the table
// made for the request (GET .../connections, POST .../drain).
type BackendConns struct {
	Active   uint64 `json:"active"`   // established
	Inactive uint64 `json:"inactive"` // syn, fin, closed
	// Empty is whether Active reached 0 (for a drain: within its wait);
	// Waited is how long the request waited for it.
	Empty  bool          `json:"empty"`
	Waited time.Duration `json:"waited_ns"`
}

// DrainRequest is the body of POST /v1/vips/{vip}/backends/{address}/drain.
type DrainRequest struct {
	// Wait is how long to wait for the backend's active count to reach 0
	// after its weight is set to 0; 0 answers at once.
	Wait time.Duration `json:"wait_ns"`
}

// MaxDrainWait bounds DrainRequest.Wait.
const MaxDrainWait = 24 * time.Hour

// FlushResult is the answer of DELETE /v1/conns.
type FlushResult struct {
	Deleted int `json:"deleted"`
}

// Conns lists the connection entries f selects, calling fn with each as
// the daemon's stream brings it: a listing of the whole table is never
// held in memory.
func (c *Client) Conns(ctx context.Context, f ConnFilter, fn func(Conn) error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://fulcrum/v1/conns"+f.Query(), nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.connError(ctx, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return statusError(resp, data)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		var line ConnLine
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return fmt.Errorf("decode the daemon's connection list: %w", err)
		}
		if line.Error != "" {
			return fmt.Errorf("the daemon's connection list ended early: %s", line.Error)
		}
		if line.Conn == nil {
			continue
		}
		if err := fn(*line.Conn); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return c.connError(ctx, err)
	}
	return nil
}

// FlushConns deletes the connection entries f selects (it must name a VIP
// or a backend) and returns how many.
func (c *Client) FlushConns(ctx context.Context, f ConnFilter) (int, error) {
	var res FlushResult
	err := c.do(ctx, http.MethodDelete, "/v1/conns"+f.Query(), nil, "", &res)
	return res.Deleted, err
}

// BackendConns counts a backend's connections now; with wait above zero
// the daemon waits up to wait for its active count to be 0 (Empty says
// whether it was).
func (c *Client) BackendConns(ctx context.Context, ref VIPRef, addr netip.Addr, wait time.Duration) (BackendConns, error) {
	var n BackendConns
	q := ""
	if wait > 0 {
		q = "?wait_ns=" + strconv.FormatInt(int64(wait), 10)
	}
	err := c.do(ctx, http.MethodGet, BackendPath(ref, addr)+"/connections"+q, nil, "", &n)
	return n, err
}

// DrainBackend sets a backend's weight to 0 and, with wait above zero,
// waits until its active count is 0 or wait has passed (Empty says which).
func (c *Client) DrainBackend(ctx context.Context, ref VIPRef, addr netip.Addr, wait time.Duration) (BackendConns, error) {
	var n BackendConns
	err := c.doJSON(ctx, http.MethodPost, BackendPath(ref, addr)+"/drain", DrainRequest{Wait: wait}, &n)
	return n, err
}
