package apiserver

import (
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/netip"
	"strings"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

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
		st.Interfaces = []api.Interface{}
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
		vips = []api.VIP{}
	}
	for i := range vips {
		if vips[i].Backends == nil {
			vips[i].Backends = []api.Backend{}
		}
	}
	writeJSON(w, http.StatusOK, vips)
}

func (s *server) addVIP(w http.ResponseWriter, r *http.Request) {
	var v api.VIP
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
	w.Header().Set("Location", api.VIPPath(v.VIPRef))
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
	var b api.Backend
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
	w.Header().Set("Location", api.BackendPath(ref, b.Address))
	writeJSON(w, http.StatusCreated, b)
}

func (s *server) removeBackend(w http.ResponseWriter, r *http.Request) {
	ref, addr, ok := s.backendParams(w, r)
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

func (s *server) setWeight(w http.ResponseWriter, r *http.Request) {
	var req api.WeightRequest
	ref, addr, ok := s.backendRequest(w, r, &req)
	if !ok {
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
		st.VIPs = []api.VIPStats{}
	}
	for i := range st.VIPs {
		if st.VIPs[i].Backends == nil {
			st.VIPs[i].Backends = []api.BackendStats{}
		}
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *server) explain(w http.ResponseWriter, r *http.Request) {
	var req api.ExplainRequest
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
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, api.MaxApplyBody))
	if err != nil {
		s.bodyError(w, r, err, api.MaxApplyBody)
		return
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		s.fail(w, r, http.StatusBadRequest, "request body is empty: want the config file as YAML")
		return
	}
	if r.URL.Query().Has("dry_run") {
		s.plan(w, r, body)
		return
	}
	var res api.ApplyResult
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
func (s *server) vipParam(w http.ResponseWriter, r *http.Request) (api.VIPRef, bool) {
	ref, err := api.ParseVIPRef(r.PathValue("vip"))
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, "path: "+err.Error())
		return api.VIPRef{}, false
	}
	return ref, true
}

// backendParams parses the {vip} and {address} path segments.
func (s *server) backendParams(w http.ResponseWriter, r *http.Request) (api.VIPRef, netip.Addr, bool) {
	ref, ok := s.vipParam(w, r)
	if !ok {
		return api.VIPRef{}, netip.Addr{}, false
	}
	addr, ok := s.addressParam(w, r)
	return ref, addr, ok
}

// backendRequest parses the {vip} and {address} path segments and decodes
// the body into v.
func (s *server) backendRequest(w http.ResponseWriter, r *http.Request, v any) (api.VIPRef, netip.Addr, bool) {
	ref, addr, ok := s.backendParams(w, r)
	return ref, addr, ok && s.decode(w, r, v)
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
func checkVIP(v *api.VIP) string {
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

func checkBackend(b api.Backend, field string) string {
	if !b.Address.IsValid() {
		return fmt.Sprintf("field %q is required: want the backend's IPv4 or IPv6 address", field)
	}
	if b.Address.Zone() != "" {
		return fmt.Sprintf("field %q: %q has a zone, want a plain address", field, b.Address)
	}
	return ""
}

func checkExplain(req *api.ExplainRequest) string {
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
