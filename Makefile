# loupe — build, generate, test, demo, bench.
SHELL := /bin/bash
GO ?= go
VERSION := $(shell cat VERSION)
LDFLAGS := -s -w -X github.com/loupe-project/loupe/internal/version.Version=$(VERSION)
BIN := bin
GOTEST_FLAGS ?= -count=1 -timeout 45m

.PHONY: all build generate check-generated deps test test-unit fuzz ui-deps demo bench bench-quick tools clean ui check-ui

all: build

deps:
	@if [ "$$(id -u)" = 0 ]; then scripts/install-deps.sh; else echo "deps: not root, skipping apt/mounts" >&2; fi

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

$(BIN)/tools/protoc-gen-go $(BIN)/tools/protoc-gen-go-grpc:
	$(GO) build -o $(BIN)/tools/ google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc

# Regenerates the BPF objects (bpf2go) and the endpoint API (protoc).
generate: $(BIN)/tools/protoc-gen-go $(BIN)/tools/protoc-gen-go-grpc
	$(GO) generate ./datapath/... ./api/...

# Fails when the committed generated files differ from a fresh generation.
check-generated: generate
	@git diff --exit-code --stat -- datapath api || { echo "generated files are stale: run make generate and commit" >&2; exit 1; }
	@test -z "$$(git status --porcelain --untracked-files=all -- datapath api)" || { git status --short -- datapath api; echo "untracked generated files: commit them" >&2; exit 1; }

# Rebuilds the web UI's embedded assets (ui/dist) from ui/web: needs node and
# npm, and installs the exact versions of ui/web/package-lock.json.
ui:
	cd ui/web && npm ci --no-audit --no-fund && npm run build

# Fails when the committed UI assets differ from a fresh build.
check-ui: ui
	@git diff --exit-code --stat -- ui/dist || { echo "ui/dist is stale: run make ui and commit" >&2; exit 1; }
	@test -z "$$(git status --porcelain --untracked-files=all -- ui/dist)" || { git status --short -- ui/dist; echo "untracked ui assets: commit them" >&2; exit 1; }

# Builds the stock hubble CLI and Hubble Relay (for compatibility tests), cached by
# version, and compiles the Hubble parser benchmark (bench/hubble) once, so that
# the harness's own test finds the cilium packages in the build cache.
tools:
	test/tools/build.sh
	cd bench/hubble && CGO_ENABLED=0 $(GO) test -c -trimpath -o /dev/null .

# The test command: installs what it needs, then runs every test. Privileged
# tests (TestPrivileged*) need root and skip without it. The Kubernetes
# end-to-end test runs last, on its own: it owns the node's CNI folders,
# cgroups and sysctls while it runs, and it is timed in seconds.
test: deps build tools ui-deps image k8s-bins
	LOUPE_BIN=$(CURDIR)/$(BIN) LOUPE_REQUIRE_TOOLS=$${LOUPE_REQUIRE_TOOLS:-1} \
	LOUPE_REQUIRE_BROWSER=$${LOUPE_REQUIRE_BROWSER:-1} $(GO) test $(GOTEST_FLAGS) ./...
	cd bench/hubble && CGO_ENABLED=0 $(GO) test -count=1 -trimpath -run 'TestContract' .
	$(K8S_E2E)

# playwright-core for the UI's browser tests (chromium itself comes from Debian).
ui-deps:
	cd ui/web && npm ci --no-audit --no-fund

test-unit:
	$(GO) test -count=1 -short ./...

# Every fuzz target of the module (found, not listed), one after another, for
# FUZZTIME each; one line per target, non-zero exit if any fails. A failing
# input lands in <pkg>/testdata/fuzz/<FuzzName>/: commit it with the fix.
FUZZTIME ?= 60s
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

demo: deps build
	scripts/demo.sh

# Performance harness (bench/): every benchmark for several rounds against a
# baseline measured in the same run; prints a table and writes
# bench/out/summary.json. Needs root. bench-quick: the same suite, fewer and
# shorter rounds. Every Go build here uses build's flags (CGO_ENABLED=0,
# -trimpath) so that a cold cache compiles each package once.
BENCH_FLAGS ?=
bench: deps build
	bench/plugins.sh bench/out/plugins
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/loupebench ./bench/cmd/loupebench
	$(BIN)/loupebench -bin $(BIN) -plugins bench/out/plugins -out bench/out $(BENCH_FLAGS)

bench-quick:
	$(MAKE) bench BENCH_FLAGS="-quick $(BENCH_FLAGS)"

clean:
	rm -rf $(BIN) bench/out

# --- Kubernetes: images and the end-to-end test (see install/ and test/k8s/) ---
.PHONY: image k8s-bins k8s-e2e
IMAGE_DIR := $(BIN)/images
IMAGE_TAG ?= $(VERSION)
LOUPE_BINS := loupe-agent loupe-cni loupe-relay loupe loupe-dns

# OCI/docker-archive images of the static binaries on an empty base, built
# without a container engine. Load with: ctr -n k8s.io images import FILE
image: build
	$(GO) run ./image/build -o $(IMAGE_DIR)/loupe.tar -t loupe:$(IMAGE_TAG) \
		-entrypoint /usr/bin/loupe-agent \
		$(foreach b,$(LOUPE_BINS),-file $(BIN)/$(b)=/usr/bin/$(b))

# The Kubernetes v1.34.4 binaries, built once and cached by version under
# ~/.cache/loupe-k8s (6-8 minutes cold on an idle 2-core machine).
k8s-bins:
	test/k8s/build-k8s.sh >/dev/null

# A single real Kubernetes node with loupe installed from install/kubernetes.
K8S_E2E = LOUPE_K8S_E2E=1 LOUPE_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 30m -v -run TestPrivilegedKubernetes ./test/k8s/
k8s-e2e: image k8s-bins
	$(K8S_E2E)
