# Fulcrum build. `make test` is what CI runs (as root: the fast-path and
# namespace tests load BPF programs).

GO ?= go
CLANG ?= clang-19
BPF_SOURCES := $(wildcard bpf/*.c bpf/*.h)
GENERATED := internal/datapath/balancer_bpfel.go internal/datapath/balancer_bpfel.o \
	internal/datapath/testprogs/testprogs_bpfel.go internal/datapath/testprogs/testprogs_bpfel.o \
	internal/datapath/testprogs/ringscan.o \
	internal/decap/decap_bpfel.go internal/decap/decap_bpfel.o \
	internal/perf/perf_bpfel.go internal/perf/perf_bpfel.o \
	internal/healthsteer/healthsteer_bpfel.go internal/healthsteer/healthsteer_bpfel.o
BENCH_COUNT ?= 5

.PHONY: all generate build test bench vet check-generated clean demo fuzz-short bench-smoke test-vrrp-load \
	deps deps-check man package

all: build

# deps installs (as root, through apt) every package the build and the tests
# need; scripts/deps.sh holds the one list, which .ci/run uses too.
deps:
	scripts/deps.sh install

# deps-check, before every test run, takes a moment: as root with apt it
# installs what is missing; elsewhere it stops and lists every missing tool
# with the command that installs them.
deps-check:
	@scripts/deps.sh check

# generate compiles bpf/*.c with clang-19 and the libbpf-dev headers and
# writes the Go bindings (bpf2go). The output is committed.
generate:
	$(GO) generate ./internal/datapath/ ./internal/datapath/testprogs/ ./internal/decap/ ./internal/perf/ ./internal/healthsteer/

build:
	$(GO) build -o bin/fulcrum ./cmd/fulcrum

# The release version: the newest v* tag (v1.2.3 -> 1.2.3), else
# 0.0.0~git.COMMIT. It is Debian's version of the package, and the binary
# reports it (internal/version).
COMMIT ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
VERSION ?= $(or $(shell git describe --tags --match 'v[0-9]*' 2>/dev/null | sed 's/^v//'),0.0.0~git.$(COMMIT))
VERSION_PKG := github.com/fulcrum-lb/fulcrum/internal/version
# Where make package and make man write.
BUILD ?= build
# nfpm builds the .deb; run through `go run` at a pinned version, so that it
# needs no install and adds nothing to go.mod.
NFPM ?= $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2

# man writes fulcrum(8) and a page per command, generated from the CLI's
# own definitions, into BUILD/man/man8 (man -M build/man fulcrum).
man:
	$(GO) run ./cmd/fulcrum man-pages $(BUILD)/man

# package builds BUILD/fulcrum_VERSION_amd64.deb: the static binary (no
# cgo, version and commit linked in), the systemd unit, the example config
# as the conffile /etc/fulcrum/fulcrum.yaml, the man pages, bash and zsh
# completions, the docs and the monitoring files (deploy/nfpm.yaml).
package:
	rm -rf $(BUILD)/pkg
	mkdir -p $(BUILD)/pkg/completion $(BUILD)/pkg/doc/examples $(BUILD)/pkg/doc/monitoring
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath \
		-ldflags "-s -w -X $(VERSION_PKG).Version=$(VERSION) -X $(VERSION_PKG).Commit=$(COMMIT)" \
		-o $(BUILD)/pkg/fulcrum ./cmd/fulcrum
	$(BUILD)/pkg/fulcrum man-pages $(BUILD)/pkg/man
	gzip -9n $(BUILD)/pkg/man/man8/*.8
	$(BUILD)/pkg/fulcrum completion bash > $(BUILD)/pkg/completion/fulcrum.bash
	$(BUILD)/pkg/fulcrum completion zsh > $(BUILD)/pkg/completion/_fulcrum
	cp deploy/systemd/fulcrum.service $(BUILD)/pkg/
	cp docs/examples/fulcrum.yaml $(BUILD)/pkg/
	cp README.md docs/*.md $(BUILD)/pkg/doc/
	cp docs/examples/*.yaml $(BUILD)/pkg/doc/examples/
	cp deploy/grafana/fulcrum.json $(BUILD)/pkg/doc/monitoring/grafana-fulcrum.json
	cp deploy/prometheus/alerts.yaml $(BUILD)/pkg/doc/monitoring/prometheus-alerts.yaml
	cd $(BUILD)/pkg && VERSION='$(VERSION)' $(NFPM) package --config $(CURDIR)/deploy/nfpm.yaml \
		--packager deb --target '$(abspath $(BUILD))/fulcrum_$(VERSION)_amd64.deb'
	@ls -l '$(BUILD)/fulcrum_$(VERSION)_amd64.deb'

# demo (as root) builds the test topology in namespaces, runs a daemon with
# a v4 and a v6 VIP over three HTTP backends, shows the traffic spread and a
# drain, and tears everything down.
demo: build
	$(GO) build -o bin/fcbackend ./testenv/cmd/fcbackend
	$(GO) run ./testenv/cmd/demo -fulcrum bin/fulcrum -backend bin/fcbackend

vet:
	$(GO) vet ./...
	@# Not `tee /dev/stderr`: reopening stderr truncates a log file it goes to.
	@unformatted="$$(gofmt -l .)"; if [ -n "$$unformatted" ]; then echo "$$unformatted" >&2; echo "gofmt: files above need formatting" >&2; exit 1; fi
	$(GO) tool staticcheck ./...

# test runs every test, including the privileged BPF and namespace tests
# (the fuzz targets' seed corpora too), then a short fuzz of each target.
# FULCRUM_TEST_STRICT=1 makes a missing privilege, kernel feature or tool
# (keepalived, nft, haproxy...) a failure that names it, not a skip
# (internal/require).
# internal/daemon alone takes about 5 minutes (2 of them VRRP under full packet
# load), hence the timeout above go test's default 10 minutes.
test: deps-check vet
	FULCRUM_TEST_STRICT=1 $(GO) test -count=1 -p 1 -timeout 30m ./...
	$(MAKE) fuzz-short
	$(MAKE) bench-smoke

# bench-smoke runs every path of BenchmarkFastpath once, briefly, so that
# make test catches a benchmark whose setup or proof is broken (each path's
# verdict counters must prove every repeat took it); its figures mean
# nothing at this size.
bench-smoke:
	FULCRUM_TEST_STRICT=1 $(GO) test -count=1 -run '^$$' -bench '^BenchmarkFastpath$$' -benchtime 1x ./internal/datapath/ -fastpath.rounds 1 -fastpath.repeat 20000

# test-vrrp-load (as root, ~2.5 minutes) runs only the test of issue 6 that
# takes longest, also part of test: VRRP at a 20 ms interval for 2 minutes
# while a live-frame generator keeps both CPUs busy with XDP work, then a
# failover under that load (docs/vrrp.md, "Under full packet load").
test-vrrp-load:
	$(GO) test -count=1 -run '^TestFailoverUnderLoad$$' -v ./internal/daemon/

FUZZTIME ?= 15s

# fuzz-short fuzzes the fast path, the config parser and the API briefly;
# longer runs: make fuzz-short FUZZTIME=10m.
fuzz-short:
	FULCRUM_TEST_STRICT=1 $(GO) test -run '^$$' -fuzz '^FuzzBalancer$$' -fuzztime $(FUZZTIME) ./internal/datapath/
	FULCRUM_TEST_STRICT=1 $(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./internal/config/
	FULCRUM_TEST_STRICT=1 $(GO) test -run '^$$' -fuzz '^FuzzServer$$' -fuzztime $(FUZZTIME) ./internal/apiserver/

# bench measures the fast path through BPF_PROG_RUN and prints one line per
# path: `fastpath PATH ns/pkt=N x_floor=R`. Then the suite of internal/perf (as
# root, a few minutes; see docs/performance.md) measures packet rates through
# veth against a ceiling and nftables, connection rates against HAProxy, the
# control plane and the fast path at full scale; it prints one table ending
# in one line per configuration, `e2e CONFIG mpps=N x_ceiling=R`, and one per
# control-plane figure, `control FIGURE ms=N` (api-live-1vip, api-live-1000vip,
# apply-1000vip, startup-1000vip; pkg/maglev's benchmark prints the maglev-*
# ones), and writes bench/out/results.json and bench/out/rates.png. Then the
# BGP figures, and `sync entries/s=N`: connection-sync entries one node sends
# and a peer installs per second over loopback (internal/connsync).
bench:
	$(GO) test -count=1 -run '^$$' -bench . -benchmem ./pkg/maglev/
	$(GO) test -count=1 -run '^$$' -bench '^BenchmarkFastpath$$' -benchtime 1x ./internal/datapath/ -fastpath.rounds $(BENCH_COUNT)
	$(GO) test -count=1 -timeout 30m -run '^$$' -bench '^BenchmarkSuite$$' -benchtime 1x ./internal/perf/ -perf.runs $(BENCH_COUNT) -perf.out $(CURDIR)/bench/out
	$(GO) test -count=1 -run '^$$' -bench '^BenchmarkBGP$$' -benchtime 5x ./internal/daemon/
	$(GO) test -count=1 -run '^$$' -bench '^BenchmarkSync$$' -benchtime 5x ./internal/connsync/

# check-generated fails if the committed bpf2go output differs from a
# fresh `make generate`.
check-generated: generate
	@git diff --exit-code --stat -- $(GENERATED) || (echo "generated BPF output is stale: run 'make generate' and commit" >&2; exit 1)

clean:
	rm -rf bin $(BUILD)
