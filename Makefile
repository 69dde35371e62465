# Fulcrum build. `make test` is what CI runs (as root: the fast-path and
# namespace tests load BPF programs).

GO ?= go
CLANG ?= clang-19
BPF_SOURCES := $(wildcard bpf/*.c bpf/*.h)
GENERATED := internal/datapath/balancer_bpfel.go internal/datapath/balancer_bpfel.o \
	internal/datapath/testprogs/testprogs_bpfel.go internal/datapath/testprogs/testprogs_bpfel.o \
	internal/decap/decap_bpfel.go internal/decap/decap_bpfel.o \
	internal/perf/perf_bpfel.go internal/perf/perf_bpfel.o \
	internal/healthsteer/healthsteer_bpfel.go internal/healthsteer/healthsteer_bpfel.o
BENCH_COUNT ?= 5

.PHONY: all generate build test bench vet check-generated clean demo fuzz-short test-vrrp-load

all: build

# generate compiles bpf/*.c with clang-19 and the libbpf-dev headers and
# writes the Go bindings (bpf2go). The output is committed.
generate:
	$(GO) generate ./internal/datapath/ ./internal/datapath/testprogs/ ./internal/decap/ ./internal/perf/ ./internal/healthsteer/

build:
	$(GO) build -o bin/fulcrum ./cmd/fulcrum

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
test: vet
	FULCRUM_TEST_STRICT=1 $(GO) test -count=1 -p 1 -timeout 30m ./...
	$(MAKE) fuzz-short

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
# ones), and writes bench/out/results.json and bench/out/rates.png.
bench:
	$(GO) test -count=1 -run '^$$' -bench . -benchmem ./pkg/maglev/
	$(GO) test -count=1 -run '^$$' -bench '^BenchmarkFastpath$$' -benchtime 1x ./internal/datapath/ -fastpath.rounds $(BENCH_COUNT)
	$(GO) test -count=1 -timeout 30m -run '^$$' -bench '^BenchmarkSuite$$' -benchtime 1x ./internal/perf/ -perf.runs $(BENCH_COUNT) -perf.out $(CURDIR)/bench/out

# check-generated fails if the committed bpf2go output differs from a
# fresh `make generate`.
check-generated: generate
	@git diff --exit-code --stat -- $(GENERATED) || (echo "generated BPF output is stale: run 'make generate' and commit" >&2; exit 1)

clean:
	rm -rf bin
