package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
)

// DefaultSocket is where the daemon of the default instance listens
// unless its configuration says otherwise.
const DefaultSocket = socketDir + "/default.sock"

// socketDir holds the API sockets of every instance.
const socketDir = "/run/fulcrum"

// SocketPath returns where the daemon of instance listens unless its
// configuration sets api.socket; SocketPath("default") is DefaultSocket.
func SocketPath(instance string) string {
	return socketDir + "/" + instance + ".sock"
}

// Client talks to the daemon's API over its Unix socket, with one method
// per endpoint (the same methods the daemon implements behind the server).
// A Client is safe for concurrent use; its requests end when their ctx does.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client of the daemon listening on socketPath. It
// does not connect until the first call.
func NewClient(socketPath string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socketPath)
		},
		MaxIdleConns:       2,
		DisableCompression: true,
	}
	return &Client{socket: socketPath, hc: &http.Client{Transport: tr}}
}

// Socket returns the path of the socket the client connects to.
func (c *Client) Socket() string { return c.socket }

// StatusError is a non-2xx answer of the daemon. It unwraps to ErrInvalid,
// ErrNotFound or ErrConflict when the status code says which, so callers
// can test it with errors.Is.
type StatusError struct {
	Code    int    // HTTP status code
	Message string // the server's error message
}

func (e *StatusError) Error() string { return e.Message }

func (e *StatusError) Unwrap() error {
	switch e.Code {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusMethodNotAllowed, http.StatusUnsupportedMediaType:
		return ErrInvalid
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusConflict:
		return ErrConflict
	}
	return nil
}

// connError is a failure to talk to the daemon at all. Its message says
// what to do; it unwraps to the underlying network error.
type connError struct {
	msg string
	err error
}

func (e *connError) Error() string { return e.msg }
func (e *connError) Unwrap() error { return e.err }

func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, "", &st)
	return st, err
}

func (c *Client) ListVIPs(ctx context.Context) ([]VIP, error) {
	var vips []VIP
	err := c.do(ctx, http.MethodGet, "/v1/vips", nil, "", &vips)
	return vips, err
}

func (c *Client) AddVIP(ctx context.Context, v VIP) error {
	return c.doJSON(ctx, http.MethodPost, "/v1/vips", v, nil)
}

func (c *Client) RemoveVIP(ctx context.Context, ref VIPRef) error {
	return c.do(ctx, http.MethodDelete, VIPPath(ref), nil, "", nil)
}

func (c *Client) AddBackend(ctx context.Context, ref VIPRef, b Backend) error {
	return c.doJSON(ctx, http.MethodPost, VIPPath(ref)+"/backends", b, nil)
}

func (c *Client) RemoveBackend(ctx context.Context, ref VIPRef, addr netip.Addr) error {
	return c.do(ctx, http.MethodDelete, BackendPath(ref, addr), nil, "", nil)
}

// SetWeight changes a backend's weight; weight 0 drains it.
func (c *Client) SetWeight(ctx context.Context, ref VIPRef, addr netip.Addr, weight uint32) error {
	return c.doJSON(ctx, http.MethodPut, BackendPath(ref, addr)+"/weight", WeightRequest{Weight: &weight}, nil)
}

func (c *Client) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	err := c.do(ctx, http.MethodGet, "/v1/stats", nil, "", &st)
	return st, err
}

func (c *Client) Explain(ctx context.Context, req ExplainRequest) (Explanation, error) {
	var ex Explanation
	err := c.doJSON(ctx, http.MethodPost, "/v1/explain", req, &ex)
	return ex, err
}

// Apply sends a config file (YAML) to replace the desired state.
func (c *Client) Apply(ctx context.Context, config []byte) (ApplyResult, error) {
	var res ApplyResult
	err := c.do(ctx, http.MethodPost, "/v1/apply", config, "application/yaml", &res)
	return res, err
}

// Config returns the daemon's desired state as a config file.
func (c *Client) Config(ctx context.Context) (RunningConfig, error) {
	var rc RunningConfig
	err := c.do(ctx, http.MethodGet, "/v1/config", nil, "", &rc)
	return rc, err
}

// Plan asks what applying a config file (YAML) would change, without
// changing anything.
func (c *Client) Plan(ctx context.Context, config []byte) (Plan, error) {
	var p Plan
	err := c.do(ctx, http.MethodPost, "/v1/apply?dry_run=1", config, "application/yaml", &p)
	return p, err
}

// VRRP returns the failover state.
func (c *Client) VRRP(ctx context.Context) (VRRP, error) {
	var v VRRP
	err := c.do(ctx, http.MethodGet, "/v1/vrrp", nil, "", &v)
	return v, err
}

// VRRPHandover hands mastership over, or with resume lifts the hold.
func (c *Client) VRRPHandover(ctx context.Context, resume bool) error {
	path := "/v1/vrrp/handover"
	if resume {
		path = "/v1/vrrp/resume"
	}
	return c.do(ctx, http.MethodPost, path, nil, "", nil)
}

func (c *Client) doJSON(ctx context.Context, method, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("encode request: %w", err)
	}
	return c.do(ctx, method, path, body, "application/json", out)
}

// do sends one request and decodes a 2xx answer into out (if not nil).
func (c *Client) do(ctx context.Context, method, path string, body []byte, contentType string, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	// The host is a placeholder: every connection goes to the socket.
	req, err := http.NewRequestWithContext(ctx, method, "http://fulcrum"+path, rd)
	if err != nil {
		return err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.connError(ctx, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return c.connError(ctx, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return statusError(resp, data)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode the daemon's answer to %s %s: %w", method, path, err)
	}
	return nil
}

func statusError(resp *http.Response, data []byte) error {
	var e Error
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		return &StatusError{Code: resp.StatusCode, Message: e.Error}
	}
	msg := strings.TrimSpace(string(data))
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	if msg == "" {
		msg = "no error message"
	}
	return &StatusError{Code: resp.StatusCode, Message: fmt.Sprintf("daemon answered %s: %s", resp.Status, msg)}
}

// connError explains a failure to exchange a request with the daemon.
func (c *Client) connError(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("fulcrum daemon at %s: %w", c.socket, ctxErr)
	}
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ENOTSOCK):
		return &connError{
			msg: fmt.Sprintf("cannot reach the fulcrum daemon at %s: is it running? (fulcrum daemon --config FILE)", c.socket),
			err: err,
		}
	case errors.Is(err, fs.ErrPermission):
		return &connError{
			msg: fmt.Sprintf("permission denied on %s: the API is root-only, run as root", c.socket),
			err: err,
		}
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		// What net/http says when a fresh connection is closed before
		// the answer, as the server does to a peer it refuses.
		strings.Contains(err.Error(), "server closed idle connection"):
		return &connError{
			msg: fmt.Sprintf("the fulcrum daemon at %s closed the connection without answering (it only answers root; if you are root, see the daemon log)", c.socket),
			err: err,
		}
	}
	// Drop the url.Error prefix (`Post "http://fulcrum/v1/...":`).
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return &connError{msg: fmt.Sprintf("fulcrum daemon at %s: %v", c.socket, err), err: err}
}

// BGP returns the state of the BGP speaker.
func (c *Client) BGP(ctx context.Context) (BGP, error) {
	var b BGP
	err := c.do(ctx, http.MethodGet, "/v1/bgp", nil, "", &b)
	return b, err
}

// NodeDrain withdraws every VIP from BGP until NodeDrain with resume set.
func (c *Client) NodeDrain(ctx context.Context, resume bool) error {
	path := "/v1/node/drain"
	if resume {
		path = "/v1/node/resume"
	}
	return c.do(ctx, http.MethodPost, path, nil, "", nil)
}
