# Fulcrum build. `make test` is what CI runs (as root: the fast-path and
# namespace tests load BPF programs).

GO ?= go
CLANG ?= clang-19
BPF_SOURCES := $(wildcard bpf/*.c bpf/*.h)
GENERATED := pkg/datapath/balancer_bpfel.go pkg/datapath/balancer_bpfel.o \
	pkg/datapath/testprogs_bpfel.go pkg/datapath/testprogs_bpfel.o \
	pkg/decap/decap_bpfel.go pkg/decap/decap_bpfel.o \
	pkg/perf/perf_bpfel.go pkg/perf/perf_bpfel.o \
	pkg/healthsteer/healthsteer_bpfel.go pkg/healthsteer/healthsteer_bpfel.o
BENCH_COUNT ?= 5

.PHONY: all generate build test bench vet check-generated clean demo fuzz-short test-vrrp-load

all: build

# generate compiles bpf/*.c with clang-19 and the libbpf-dev headers and
# writes the Go bindings (bpf2go). The output is committed.
generate:
	$(GO) generate ./pkg/datapath/ ./pkg/decap/ ./pkg/perf/ ./pkg/healthsteer/

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
# pkg/daemon alone takes about 5 minutes (2 of them VRRP under full packet
# load), hence the timeout above go test's default 10 minutes.
test: vet
	$(GO) test -count=1 -p 1 -timeout 30m ./...
	$(MAKE) fuzz-short

# test-vrrp-load (as root, ~2.5 minutes) runs only the test of issue 6 that
# takes longest, also part of test: VRRP at a 20 ms interval for 2 minutes
# while a live-frame generator keeps both CPUs busy with XDP work, then a
# failover under that load (docs/vrrp.md, "Under full packet load").
test-vrrp-load:
	$(GO) test -count=1 -run '^TestFailoverUnderLoad$$' -v ./pkg/daemon/

FUZZTIME ?= 15s

# fuzz-short fuzzes the fast path, the config parser and the API briefly;
# longer runs: make fuzz-short FUZZTIME=10m.
fuzz-short:
	$(GO) test -run '^$$' -fuzz '^FuzzBalancer$$' -fuzztime $(FUZZTIME) ./pkg/datapath/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./pkg/config/
	$(GO) test -run '^$$' -fuzz '^FuzzServer$$' -fuzztime $(FUZZTIME) ./pkg/api/

# bench measures the fast path through BPF_PROG_RUN and prints one line per
# path: `fastpath PATH ns/pkt=N x_floor=R`. Then the suite of pkg/perf (as
# root, a few minutes; see docs/performance.md) measures packet rates through
# veth against a ceiling and nftables, connection rates against HAProxy, the
# control plane and the fast path at full scale; it prints one table ending
# in one line per configuration, `e2e CONFIG mpps=N x_ceiling=R`, and writes
# bench/out/results.json and bench/out/rates.png.
bench:
	$(GO) test -count=1 -run '^$$' -bench . -benchmem ./pkg/maglev/
	$(GO) test -count=1 -run '^$$' -bench '^BenchmarkFastpath$$' -benchtime 1x ./pkg/datapath/ -fastpath.rounds $(BENCH_COUNT)
	$(GO) test -count=1 -timeout 30m -run '^$$' -bench '^BenchmarkSuite$$' -benchtime 1x ./pkg/perf/ -perf.runs $(BENCH_COUNT) -perf.out $(CURDIR)/bench/out

# check-generated fails if the committed bpf2go output differs from a
# fresh `make generate`.
check-generated: generate
	@git diff --exit-code --stat -- $(GENERATED) || (echo "generated BPF output is stale: run 'make generate' and commit" >&2; exit 1)

clean:
	rm -rf bin
