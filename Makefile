# The Makefile is the interface: CI and people call these targets only.
SHELL := /bin/bash
.DEFAULT_GOAL := help

GO          ?= go
BIN         := $(CURDIR)/bin
TOOLS       := $(BIN)/tools
MODULES      = $(shell $(GO) list -m -f '{{.Dir}}')
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
GOVULNCHECK := golang.org/x/vuln/cmd/govulncheck@v1.9.0
FUZZTIME    ?= 30s

.PHONY: help
help: ## List the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z0-9_-]+:.*## /{printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## Install what the tests need (Debian packages; idempotent)
	@bash scripts/test-deps.sh

.PHONY: build
build: ## Build every service binary into bin/
	@mkdir -p $(BIN)
	@for m in $(MODULES); do \
		cgo=0; case $$m in */data-access-api|*/fl-client) cgo=1;; esac; \
		if [ -d $$m/cmd ]; then echo "build $$m"; (cd $$m && CGO_ENABLED=$$cgo $(GO) build -trimpath -o $(BIN)/ ./cmd/...) || exit 1; fi; \
	done

.PHONY: test
test: deps ## Run every module's tests with the race detector (unit, end to end, fault runs) and fuzz the envelope
	@set -o pipefail; fail=0; for m in $(MODULES); do \
		echo "=== module $$m"; \
		(cd $$m && $(GO) test -race -count=1 -timeout 15m -v ./... 2>&1 | tee /tmp/flip-test-$$(basename $$m).log | grep -E '^(=== RUN|--- (PASS|FAIL|SKIP)|PASS|FAIL|ok|panic)|_test\.go:[0-9]+' ) || fail=1; \
	done; \
	echo "=== fuzz: envelope decoder for $(FUZZTIME)"; \
	(cd shared && $(GO) test -run '^$$' -fuzz '^FuzzOpen$$' -fuzztime $(FUZZTIME) ./envelope 2>&1 | tail -n 3) || fail=1; \
	echo "=== fuzz: SQL guard for $(FUZZTIME)"; \
	(cd services/data-access-api && $(GO) test -run '^$$' -fuzz '^FuzzCheck$$' -fuzztime $(FUZZTIME) ./internal/guard 2>&1 | tail -n 3) || fail=1; \
	bash scripts/test-summary.sh /tmp/flip-test-*.log; exit $$fail

.PHONY: fuzz
fuzz: ## Fuzz the envelope decoder and the SQL guard for FUZZTIME each (default 30s)
	cd shared && $(GO) test -run '^$$' -fuzz '^FuzzOpen$$' -fuzztime $(FUZZTIME) ./envelope
	cd services/data-access-api && $(GO) test -run '^$$' -fuzz '^FuzzCheck$$' -fuzztime $(FUZZTIME) ./internal/guard

.PHONY: check
check: ## gofmt, go vet, staticcheck, go mod tidy diff, import guard, govulncheck
	@bash scripts/check.sh

.PHONY: bench
bench: build ## Benchmarks with ratios to baselines measured in the same run (includes bench-dispatch)
	@for m in $(MODULES); do (cd $$m && $(GO) test -run '^$$' -bench . -benchmem ./...) || exit 1; done
	@$(MAKE) --no-print-directory bench-dispatch
	@$(MAKE) --no-print-directory bench-cohort
	@$(MAKE) --no-print-directory bench-imaging
	@$(MAKE) --no-print-directory bench-fl

.PHONY: bench-dispatch
bench-dispatch: build ## 2,000 no-op tasks dev-hub -> trust-api -> dev-hub: tasks/s, p50/p99 overhead, ratio to a bare round trip
	@$(BIN)/bench-dispatch -trust-api $(BIN)/trust-api -dev-hub $(BIN)/dev-hub -tasks 2000

.PHONY: bench-cohort
bench-cohort: build ## POST /cohort at 1M synthetic persons vs a bare count and client-side aggregation; service peak RSS
	@$(BIN)/bench-cohort -data-access-api $(BIN)/data-access-api -persons $${BENCH_PERSONS:-1000000}

.PHONY: bench-fl
bench-fl: build ## 1 GiB artifact get/put through fl-client vs raw HTTP io.Copy (ratio), fl-client peak RSS, a download cut three times
	@$(BIN)/bench-fl -fl-client $(BIN)/fl-client -size $${BENCH_FL_SIZE:-1073741824}

.PHONY: bench-imaging
bench-imaging: ## 1,000 instances PACS -> staging through imaging-api vs straight C-MOVEs; download vs Orthanc's archive endpoint
	@cd services/imaging-api && $(GO) run ./cmd/bench-imaging

.PHONY: demo
demo: deps build ## Two trust nodes and a dev hub as processes: cohort queries, airlock, imaging, FL with DP, ledgers (DEMO_DIR, DEMO_KEEP=1)
	@bash scripts/demo.sh

.PHONY: demo-down
demo-down: ## Stop what make demo left running and remove its folder (DEMO_DIR, default .demo)
	@bash scripts/demo.sh down

.PHONY: doctor
doctor: ## Pre-flight checks of every service's dependencies, one report (DOCTOR_ARGS="--stack flip" or "--compose trust1"; default: bin/ with this environment)
	@bash scripts/doctor.sh $(DOCTOR_ARGS)

.PHONY: e2e-swarm
e2e-swarm: ## The node as a Swarm stack with local images (make images first): healthy services, a cohort query via dev-hub, doctor; not part of make test
	@bash scripts/e2e-swarm.sh

.PHONY: base-images
base-images: ## Build the local stand-ins for the public base images (debootstrap + this host's Go; no pull; kept once built)
	@bash scripts/base-images.sh >/dev/null

.PHONY: images
images: ## Build every image (services and dev stores); IMAGES_BASES=public uses the public base images
	@bash scripts/images.sh

.PHONY: bundle
bundle: images ## Save the four service images into bin/bundle with a SHA-256 manifest (scripts/load-bundle.sh loads it)
	@bash scripts/bundle.sh bin/bundle

.PHONY: bundle-test
bundle-test: ## Show that a tampered image bundle is refused and nothing is loaded
	@bash scripts/bundle-test.sh

.PHONY: compose-config
compose-config: ## Check the compose files: invariants (compose-go) and docker-compose v1 config
	@cd compose && $(GO) test -count=1 ./...

.PHONY: e2e-compose
e2e-compose: ## Build the images, run compose.yaml + compose.dev.yaml, a cohort query and an imaging import from dev-hub, tear down
	@bash scripts/e2e-compose.sh

.PHONY: clean
clean: ## Remove build outputs
	rm -rf $(BIN)
