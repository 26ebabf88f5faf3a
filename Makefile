# persona's vocabulary: run, test, bench, generate, lint.
GO          ?= go
BIN         := bin/persona
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
PROTOC_GEN_GO := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12

.PHONY: build run cluster test lint unit dendrite complement bench generate clean

build:
	$(GO) build -o $(BIN) ./cmd/persona

# Starts one node on 127.0.0.1:8008 with its data in ./data, writing a
# default persona.yaml first when there is none.
run: build
	@[ -f persona.yaml ] || { ./$(BIN) generate-config > persona.yaml && echo "wrote persona.yaml"; }
	./$(BIN) serve --config persona.yaml

# Starts a cluster of three nodes on loopback (clients on 127.0.0.1:8008,
# 8018 and 8028), its config and data in ./cluster-data; Ctrl-C stops it.
cluster: build
	deploy/local-cluster.sh

# Every test: the linters, the Go tests with the race detector, then
# Complement (the Matrix conformance suite in ../shared/complement) against
# fresh nodes, its client tests and its federation tests, failing on any
# failure not in docs/complement-skips.txt or
# docs/complement-federation-skips.txt.
test: lint unit complement

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# Tests that start protoactor's remote in the test process are built
# without -race (protoactor races on grpc's global logger), so they run in
# a second pass.
unit: dendrite
	$(GO) test -race -count=1 -timeout 15m ./...
	$(GO) test -count=1 -run Remote ./host

# Builds the Dendrite peer the federation tests run (internal/dendrite) into
# build/dendrite-<version>, once: later runs find it there. The first build
# downloads Dendrite's modules and compiles it with cgo (sqlite); `go test`
# alone builds it too, on the first test that needs it.
dendrite:
	$(GO) run ./internal/dendrite/cmd/ensure

complement: build
	.ci/complement $(BIN)

# Micro-benchmarks; `persona bench` loads a running node (docs/BENCHMARKS.md).
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# Regenerates the protobuf code (committed, so a build needs no generator).
generate:
	@command -v protoc >/dev/null || { echo "needs protoc: apt-get install -y protobuf-compiler"; exit 1; }
	$(GO) install $(PROTOC_GEN_GO)
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" protoc -I wire --go_out=wire --go_opt=paths=source_relative wire/*.proto

clean:
	rm -rf bin
