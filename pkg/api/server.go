package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Request body limits. A body over the limit is refused with 413.
const (
	MaxJSONBody  = 1 << 20 // 1 MiB for JSON requests
	MaxApplyBody = 4 << 20 // 4 MiB for a config file sent to /v1/apply
)

// server adapts a Controller to HTTP.
type server struct {
	c   Controller
	log *slog.Logger
	// mu serialises every call that changes state, so that concurrent
	// changes apply one after another, each as a whole.
	mu sync.Mutex
}

type route struct {
	method, path string
	handle       func(*server, http.ResponseWriter, *http.Request)
}

// routes is the whole API; docs/api.md documents each entry.
var routes = []route{
	{"GET", "/v1/status", (*server).status},
	{"GET", "/v1/vips", (*server).listVIPs},
	{"POST", "/v1/vips", (*server).addVIP},
	{"DELETE", "/v1/vips/{vip}", (*server).removeVIP},
	{"POST", "/v1/vips/{vip}/backends", (*server).addBackend},
	{"DELETE", "/v1/vips/{vip}/backends/{address}", (*server).removeBackend},
	{"PUT", "/v1/vips/{vip}/backends/{address}/weight", (*server).setWeight},
	{"GET", "/v1/stats", (*server).stats},
	{"POST", "/v1/explain", (*server).explain},
	{"POST", "/v1/apply", (*server).apply},
	{"GET", "/v1/vrrp", (*server).vrrp},
	{"POST", "/v1/vrrp/handover", (*server).vrrpHandover},
	{"POST", "/v1/vrrp/resume", (*server).vrrpResume},
}

// NewServer returns the HTTP handler of the control API, backed by c.
// Calls that change state are serialised; reads run concurrently, so c
// must be safe for concurrent use. Lists in answers are [] rather than
// null when empty. A nil log discards log messages.
func NewServer(c Controller, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &server{c: c, log: log}

	mux := http.NewServeMux()
	// paths answers "which methods does this path take?" for 405s.
	paths := http.NewServeMux()
	allowed := map[string][]string{}
	for _, rt := range routes {
		mux.HandleFunc(rt.method+" "+rt.path, func(w http.ResponseWriter, r *http.Request) {
			rt.handle(s, w, r)
		})
		if _, ok := allowed[rt.path]; !ok {
			paths.Handle(rt.path, http.NotFoundHandler())
		}
		allowed[rt.path] = append(allowed[rt.path], rt.method)
	}
	for _, methods := range allowed {
		sort.Strings(methods)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := paths.Handler(r); pattern != "" {
			methods := allowed[pattern]
			w.Header().Set("Allow", strings.Join(methods, ", "))
			s.fail(w, r, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s: want %s", r.Method, r.URL.Path, strings.Join(methods, " or ")))
			return
		}
		s.fail(w, r, http.StatusNotFound, fmt.Sprintf("no endpoint %s %s (the API is described in docs/api.md)", r.Method, r.URL.Path))
	})
	// ServeMux answers a path with "." or ".." elements or doubled slashes
	// with a redirect to its clean form; an API client gets a JSON 404
	// that names the path instead.
	clean := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; p == "" || path.Clean(p) != p {
			s.fail(w, r, http.StatusNotFound, fmt.Sprintf("no endpoint %s %q: the path is not in clean form (no '.', '..' or '//' elements)", r.Method, p))
			return
		}
		mux.ServeHTTP(w, r)
	})
	return s.recoverPanics(clean)
}

// recoverPanics turns a panic in a handler (or the Controller under it)
// into a logged 500, so that one bad request cannot take the daemon down.
func (s *server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rw := &trackingWriter{ResponseWriter: w}
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.Error("api: panic while serving a request", "method", r.Method, "path", r.URL.Path, "panic", v, "stack", string(debug.Stack()))
			if !rw.wroteHeader {
				writeJSON(rw, http.StatusInternalServerError, Error{Error: fmt.Sprintf("internal error while serving %s %s: %v (see the daemon log)", r.Method, r.URL.Path, v)})
			}
		}()
		next.ServeHTTP(rw, r)
	})
}

// trackingWriter records whether the response header has been sent.
type trackingWriter struct {
	http.ResponseWriter
	wroteHeader bool
}

func (w *trackingWriter) WriteHeader(code int) {
	w.wroteHeader = true
	w.ResponseWriter.WriteHeader(code)
}

func (w *trackingWriter) Write(b []byte) (int, error) {
	w.wroteHeader = true
	return w.ResponseWriter.Write(b)
}

func (w *trackingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// mutate runs f with the change lock held.
func (s *server) mutate(f func() error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return f()
}

func (s *server) vrrp(w http.ResponseWriter, r *http.Request) {
	st, err := s.c.VRRP(r.Context())
	if err != nil {
		s.controllerError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *server) vrrpHandover(w http.ResponseWriter, r *http.Request) { s.handover(w, r, false) }
func (s *server) vrrpResume(w http.ResponseWriter, r *http.Request)   { s.handover(w, r, true) }

func (s *server) handover(w http.ResponseWriter, r *http.Request, resume bool) {
	if err := s.mutate(func() error { return s.c.VRRPHandover(r.Context(), resume) }); err != nil {
		s.controllerError(w, r, err)
		return
	}
	s.log.Info("api: vrrp", "handover", !resume, "resume", resume)
	w.WriteHeader(http.StatusNoContent)
}

func (s *server) status(w http.ResponseWriter, r *http.Request) {
	st, err := s.c.Status(r.Context())
	if err != nil {
		s.controllerError(w, r, err)
		return
	}
	if st.Interfaces == nil {
		st.Interfaces = []Interface{}
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *server) listVIPs(w http.ResponseWriter, r *http.Request) {
	vips, err := s.c.ListVIPs(r.Context())
	if err != nil {
		s.controllerError(w, r, err)
		return
	}
	if vips == nil {
		vips = []VIP{}
	}
	for i := range vips {
		if vips[i].Backends == nil {
			vips[i].Backends = []Backend{}
		}
	}
	writeJSON(w, http.StatusOK, vips)
}

func (s *server) addVIP(w http.ResponseWriter, r *http.Request) {
	var v VIP
	if !s.decode(w, r, &v) {
		return
	}
	if msg := checkVIP(&v); msg != "" {
		s.fail(w, r, http.StatusBadRequest, msg)
		return
	}
	if err := s.mutate(func() error { return s.c.AddVIP(r.Context(), v) }); err != nil {
		s.controllerError(w, r, err)
		return
	}
	s.log.Info("api: vip added", "vip", v.VIPRef.String(), "backends", len(v.Backends))
	w.Header().Set("Location", "/v1/vips/"+pathEscapeVIP(v.VIPRef))
	writeJSON(w, http.StatusCreated, v)
}

func (s *server) removeVIP(w http.ResponseWriter, r *http.Request) {
	ref, ok := s.vipParam(w, r)
	if !ok {
		return
	}
	if err := s.mutate(func() error { return s.c.RemoveVIP(r.Context(), ref) }); err != nil {
		s.controllerError(w, r, err)
		return
	}
	s.log.Info("api: vip removed", "vip", ref.String())
	w.WriteHeader(http.StatusNoContent)
}

func (s *server) addBackend(w http.ResponseWriter, r *http.Request) {
	ref, ok := s.vipParam(w, r)
	if !ok {
		return
	}
	var b Backend
	if !s.decode(w, r, &b) {
		return
	}
	if msg := checkBackend(b, "address"); msg != "" {
		s.fail(w, r, http.StatusBadRequest, msg)
		return
	}
	b.Health = "" // observed, not desired state
	if err := s.mutate(func() error { return s.c.AddBackend(r.Context(), ref, b) }); err != nil {
		s.controllerError(w, r, err)
		return
	}
	s.log.Info("api: backend added", "vip", ref.String(), "backend", b.Address, "weight", b.Weight)
	w.Header().Set("Location", "/v1/vips/"+pathEscapeVIP(ref)+"/backends/"+escapeSegment(b.Address.String()))
	writeJSON(w, http.StatusCreated, b)
}

func (s *server) removeBackend(w http.ResponseWriter, r *http.Request) {
	ref, ok := s.vipParam(w, r)
	if !ok {
		return
	}
	addr, ok := s.addressParam(w, r)
	if !ok {
		return
	}
	if err := s.mutate(func() error { return s.c.RemoveBackend(r.Context(), ref, addr) }); err != nil {
		s.controllerError(w, r, err)
		return
	}
	s.log.Info("api: backend removed", "vip", ref.String(), "backend", addr)
	w.WriteHeader(http.StatusNoContent)
}

// WeightRequest is the body of PUT /v1/vips/{vip}/backends/{address}/weight.
type WeightRequest struct {
	Weight *uint32 `json:"weight"`
}

func (s *server) setWeight(w http.ResponseWriter, r *http.Request) {
	ref, ok := s.vipParam(w, r)
	if !ok {
		return
	}
	addr, ok := s.addressParam(w, r)
	if !ok {
		return
	}
	var req WeightRequest
	if !s.decode(w, r, &req) {
		return
	}
	if req.Weight == nil {
		s.fail(w, r, http.StatusBadRequest, `field "weight" is required: want {"weight": N}, 0 to drain`)
		return
	}
	weight := *req.Weight
	if err := s.mutate(func() error { return s.c.SetWeight(r.Context(), ref, addr, weight) }); err != nil {
		s.controllerError(w, r, err)
		return
	}
	s.log.Info("api: backend weight set", "vip", ref.String(), "backend", addr, "weight", weight)
	writeJSON(w, http.StatusOK, map[string]uint32{"weight": weight})
}

func (s *server) stats(w http.ResponseWriter, r *http.Request) {
	st, err := s.c.Stats(r.Context())
	if err != nil {
		s.controllerError(w, r, err)
		return
	}
	if st.Verdicts == nil {
		st.Verdicts = map[string]uint64{}
	}
	if st.VIPs == nil {
		st.VIPs = []VIPStats{}
	}
	for i := range st.VIPs {
		if st.VIPs[i].Backends == nil {
			st.VIPs[i].Backends = []BackendStats{}
		}
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *server) explain(w http.ResponseWriter, r *http.Request) {
	var req ExplainRequest
	if !s.decode(w, r, &req) {
		return
	}
	if msg := checkExplain(&req); msg != "" {
		s.fail(w, r, http.StatusBadRequest, msg)
		return
	}
	ex, err := s.c.Explain(r.Context(), req)
	if err != nil {
		s.controllerError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ex)
}

// yamlTypes are the Content-Types /v1/apply takes: YAML, or anything a
// tool sends for a plain file. JSON is a subset of YAML, so a JSON config
// file is accepted too. Form uploads (multipart) are refused.
var yamlTypes = map[string]bool{
	"":                   true,
	"application/yaml":   true,
	"application/x-yaml": true,
	"text/yaml":          true,
	"text/x-yaml":        true,
	"application/json":   true,
	"text/plain":         true,
	// What curl sends for --data-binary without -H.
	"application/x-www-form-urlencoded": true,
	"application/octet-stream":          true,
}

func (s *server) apply(w http.ResponseWriter, r *http.Request) {
	ct := r.Header.Get("Content-Type")
	if ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil {
			mt = ct
		}
		ct = mt
	}
	if !yamlTypes[ct] {
		s.fail(w, r, http.StatusUnsupportedMediaType, fmt.Sprintf("content type %q: apply takes the config file as YAML (Content-Type: application/yaml)", ct))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxApplyBody))
	if err != nil {
		s.bodyError(w, r, err, MaxApplyBody)
		return
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		s.fail(w, r, http.StatusBadRequest, "request body is empty: want the config file as YAML")
		return
	}
	var res ApplyResult
	err = s.mutate(func() error {
		var err error
		res, err = s.c.Apply(r.Context(), body)
		return err
	})
	if err != nil {
		s.controllerError(w, r, err)
		return
	}
	for _, l := range []*[]string{&res.Added, &res.Removed, &res.Changed} {
		if *l == nil {
			*l = []string{}
		}
	}
	s.log.Info("api: config applied", "added", len(res.Added), "removed", len(res.Removed), "changed", len(res.Changed), "unchanged", res.Unchanged)
	writeJSON(w, http.StatusOK, res)
}

// vipParam parses the {vip} path segment, the text form of a VIPRef.
func (s *server) vipParam(w http.ResponseWriter, r *http.Request) (VIPRef, bool) {
	ref, err := ParseVIPRef(r.PathValue("vip"))
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, "path: "+err.Error())
		return VIPRef{}, false
	}
	return ref, true
}

// addressParam parses the {address} path segment; IPv6 may be bracketed.
func (s *server) addressParam(w http.ResponseWriter, r *http.Request) (netip.Addr, bool) {
	text := r.PathValue("address")
	addr, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(text, "["), "]"))
	if err != nil || addr.Zone() != "" {
		s.fail(w, r, http.StatusBadRequest, fmt.Sprintf("path: backend address %q: want an IPv4 or IPv6 address, e.g. 198.18.0.12 or 2001:db8::12", text))
		return netip.Addr{}, false
	}
	return addr, true
}

// checkVIP normalises the protocol, drops backends' health (which is
// observed, not set) and reports what makes v unusable, in
// terms of its JSON fields; the Controller checks the rest.
func checkVIP(v *VIP) string {
	v.Protocol = strings.ToLower(v.Protocol)
	switch {
	case v.Protocol != "tcp" && v.Protocol != "udp":
		return fmt.Sprintf(`field "protocol": %q, want "tcp" or "udp"`, v.Protocol)
	case !v.Address.IsValid():
		return `field "address" is required: want the VIP's IPv4 or IPv6 address`
	case v.Address.Zone() != "":
		return fmt.Sprintf(`field "address": %q has a zone, want a plain address`, v.Address)
	}
	for i, b := range v.Backends {
		if msg := checkBackend(b, fmt.Sprintf("backends[%d].address", i)); msg != "" {
			return msg
		}
		v.Backends[i].Health = "" // observed, not desired state
	}
	return ""
}

func checkBackend(b Backend, field string) string {
	if !b.Address.IsValid() {
		return fmt.Sprintf("field %q is required: want the backend's IPv4 or IPv6 address", field)
	}
	if b.Address.Zone() != "" {
		return fmt.Sprintf("field %q: %q has a zone, want a plain address", field, b.Address)
	}
	return ""
}

func checkExplain(req *ExplainRequest) string {
	req.Protocol = strings.ToLower(req.Protocol)
	switch {
	case req.Protocol != "tcp" && req.Protocol != "udp":
		return fmt.Sprintf(`field "protocol": %q, want "tcp" or "udp"`, req.Protocol)
	case !req.Src.IsValid():
		return `field "src" is required: want the packet's source address`
	case !req.Dst.IsValid():
		return `field "dst" is required: want the packet's destination address (a VIP)`
	case req.Src.Is4() != req.Dst.Is4():
		return fmt.Sprintf(`fields "src" and "dst": %s and %s are of different IP families`, req.Src, req.Dst)
	}
	return ""
}

// decode reads exactly one JSON value into v, refusing unknown fields and
// bodies over MaxJSONBody. On failure it has written the error response.
func (s *server) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxJSONBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		s.bodyError(w, r, err, MaxJSONBody)
		return false
	}
	if _, err := dec.Token(); err != io.EOF {
		if err == nil {
			err = errors.New("request body holds more than one JSON value: want a single object")
		}
		s.bodyError(w, r, err, MaxJSONBody)
		return false
	}
	return true
}

// bodyError answers a request whose body could not be read or decoded.
func (s *server) bodyError(w http.ResponseWriter, r *http.Request, err error, limit int64) {
	var (
		tooBig *http.MaxBytesError
		syntax *json.SyntaxError
		typ    *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &tooBig):
		s.fail(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body too large: the limit for %s is %s", r.URL.Path, formatLimit(limit)))
	case errors.As(err, &syntax):
		s.fail(w, r, http.StatusBadRequest, fmt.Sprintf("malformed JSON at byte %d: %v", syntax.Offset, strings.TrimPrefix(syntax.Error(), "json: ")))
	case errors.As(err, &typ):
		field := jsonField(typ.Field)
		if field == "" {
			field = "(top level)"
		}
		s.fail(w, r, http.StatusBadRequest, fmt.Sprintf("field %q: got %s, want %s", field, typ.Value, describeType(typ.Type)))
	case err == io.EOF:
		s.fail(w, r, http.StatusBadRequest, "request body is empty: want a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		s.fail(w, r, http.StatusBadRequest, "malformed JSON: the body ends in the middle of a value")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		s.fail(w, r, http.StatusBadRequest, strings.TrimPrefix(err.Error(), "json: ")+": not part of this request (see docs/api.md)")
	case isAddrError(err):
		s.fail(w, r, http.StatusBadRequest, "bad address in request body: "+err.Error())
	default:
		s.fail(w, r, http.StatusBadRequest, "bad request body: "+strings.TrimPrefix(err.Error(), "json: "))
	}
}

// jsonField drops Go names of embedded structs (VIP's "VIPRef") from a
// decoder's field path, leaving the JSON names, which are all lowercase.
func jsonField(path string) string {
	parts := strings.Split(path, ".")
	kept := parts[:0]
	for _, p := range parts {
		if p != "" && p[0] >= 'A' && p[0] <= 'Z' {
			continue
		}
		kept = append(kept, p)
	}
	return strings.Join(kept, ".")
}

// isAddrError reports whether err came from parsing a netip.Addr, which
// encoding/json returns unwrapped and without the field name.
func isAddrError(err error) bool {
	return strings.HasPrefix(err.Error(), "ParseAddr(")
}

var addrType = reflect.TypeFor[netip.Addr]()

// describeType says in words what JSON value a Go type takes.
func describeType(t reflect.Type) string {
	if t == addrType {
		return "an IP address string"
	}
	switch t.Kind() {
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return fmt.Sprintf("a whole number from 0 to %d", uint64(1)<<(t.Bits())-1)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Pointer:
		return describeType(t.Elem())
	}
	return t.String()
}

func formatLimit(n int64) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

// controllerError maps a Controller error to a status code: ErrInvalid
// 400, ErrNotFound 404, ErrConflict 409, anything else 500.
func (s *server) controllerError(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrInvalid):
		code = http.StatusBadRequest
	case errors.Is(err, ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, ErrConflict):
		code = http.StatusConflict
	}
	if code == http.StatusInternalServerError {
		level := slog.LevelError
		if r.Context().Err() != nil {
			level = slog.LevelDebug // the client went away
		}
		s.log.Log(r.Context(), level, "api: request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	s.fail(w, r, code, err.Error())
}

// fail writes an Error body.
func (s *server) fail(w http.ResponseWriter, r *http.Request, code int, msg string) {
	if code < 500 {
		s.log.Debug("api: request refused", "method", r.Method, "path", r.URL.Path, "status", code, "err", msg)
	}
	writeJSON(w, code, Error{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		body, _ = json.Marshal(Error{Error: "encode response: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}

// pathEscapeVIP is the {vip} path segment for ref.
func pathEscapeVIP(ref VIPRef) string {
	return escapeSegment(ref.String())
}

// escapeSegment escapes s for use as one path segment, '/' included.
func escapeSegment(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~:", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

// allowPeer decides from a connecting process's uid whether it may use
// the API: root, or the user the daemon itself runs as (only for tests
// and unprivileged development runs; a real daemon is root).
var allowPeer = func(uid uint32) bool {
	return uid == 0 || uid == uint32(os.Geteuid())
}

// Listen listens on the Unix socket at path for the API, which only root
// may use:
//   - the parent directory is created (0755) if missing;
//   - a socket file left by a daemon that is gone is removed, but if a
//     daemon still answers on it Listen fails ("another daemon is
//     listening on PATH"), and a file that is not a socket is left alone;
//   - the socket is chmod 0600, so only its owner (root) can connect;
//   - every accepted connection's peer credentials (SO_PEERCRED) are
//     checked, and a connection from another uid is closed before any
//     request is read and logged (once per uid) through slog.Default.
//
// Closing the listener removes the socket file.
func Listen(path string) (net.Listener, error) {
	if path == "" {
		return nil, errors.New("api socket: empty path")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("api socket: %w", err)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("api socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("api socket: %w", err)
	}
	return &peerListener{Listener: l, path: path, allow: allowPeer, logged: map[uint32]bool{}}, nil
}

// removeStale removes a socket file at path that nothing answers on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("api socket: %w", err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("api socket: %s exists and is not a socket; remove it or choose another path", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("api socket: another daemon is listening on %s", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("api socket: cannot tell whether a daemon listens on %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("api socket: remove stale %s: %w", path, err)
	}
	return nil
}

// peerListener accepts only connections whose peer passes allowPeer.
type peerListener struct {
	net.Listener
	path  string
	allow func(uid uint32) bool

	mu     sync.Mutex
	logged map[uint32]bool // uids already logged as refused
}

func (l *peerListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uid, err := peerUID(c)
		if err == nil && l.allow(uid) {
			return c, nil
		}
		c.Close()
		l.refused(uid, err)
	}
}

func (l *peerListener) refused(uid uint32, err error) {
	if err != nil {
		slog.Default().Warn("api: refused a connection whose peer credentials cannot be read", "socket", l.path, "err", err)
		return
	}
	l.mu.Lock()
	seen := l.logged[uid]
	if !seen && len(l.logged) < 1024 {
		l.logged[uid] = true
	}
	l.mu.Unlock()
	if !seen {
		slog.Default().Warn("api: refused a connection from a non-root user (further refusals of this uid are not logged)", "socket", l.path, "uid", uid)
	}
}

// peerUID returns the uid of the process at the other end of a Unix
// socket connection, from SO_PEERCRED.
func peerUID(c net.Conn) (uint32, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, fmt.Errorf("connection of type %T has no peer credentials", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, fmt.Errorf("SO_PEERCRED: %w", credErr)
	}
	return cred.Uid, nil
}
