package apiserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"reflect"
	"strings"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// decode reads exactly one JSON value into v, refusing unknown fields and
// bodies over api.MaxJSONBody. On failure it has written the error response.
func (s *server) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, api.MaxJSONBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		s.bodyError(w, r, err, api.MaxJSONBody)
		return false
	}
	if _, err := dec.Token(); err != io.EOF {
		if err == nil {
			err = errors.New("request body holds more than one JSON value: want a single object")
		}
		s.bodyError(w, r, err, api.MaxJSONBody)
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
	case errors.Is(err, api.ErrInvalid):
		code = http.StatusBadRequest
	case errors.Is(err, api.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, api.ErrConflict):
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
	writeJSON(w, code, api.Error{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		body, _ = json.Marshal(api.Error{Error: "encode response: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}
