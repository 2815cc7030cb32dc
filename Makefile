# aigw-sidecar: one venv (.venv), everything else runs inside it.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
RUNTIME = $(VENV)/.runtime
STAMP   = $(VENV)/.installed
# Quiet installs: setuptools' "editable installation" notice is not for users.
PIP     = PYTHONWARNINGS=ignore $(PY) -m pip install --quiet
# google/api/annotations.proto (the HTTP rules of keys.proto) ships with googleapis-common-protos.
GOOGLEAPIS = $(shell $(PY) -c 'import google.api, pathlib; print(pathlib.Path(google.api.__file__).parents[2])' 2>/dev/null)
PROTOS  = $(wildcard protos/aigw_sidecar/api/v1/*.proto) \
          $(wildcard protos/aigw_sidecar/api/envoy/v3/*.proto)
# The aigw.v1 protos again as a descriptor set with their comments (source info), which
# the *_pb2 modules do not carry: aigw-admin reads its flags' help from it.
DESC_PROTOS = $(wildcard protos/aigw_sidecar/api/v1/*.proto)
DESC        = aigw_sidecar/api/v1/aigw_api.desc

## The container image (docs/container.md). No image registry is needed: the base is a
## debootstrapped Debian made here once (clients/container/make-base.sh) and kept in
## podman's storage; FORCE_BASE=1 makes it again.
IMAGE      ?= localhost/aigw-sidecar:latest
BASE_IMAGE ?= localhost/aigw-base:bookworm
# podman's settings for this project's machines (runc, cgroupfs, rlimits it may set, the
# host's network; each reason is in the file). Empty: the system's (PODMAN_CONF=).
PODMAN_CONF ?= clients/container/containers.conf
PODMAN_ENV  = CONTAINERS_CONF=$(if $(PODMAN_CONF),$(abspath $(PODMAN_CONF)))
# The CA bundle pip trusts inside the build, the host's: pip's own setting, else the
# system bundle. A build secret, so it is in no layer; proxy variables pass through.
PIP_CA     ?= $(or $(PIP_CERT),$(shell $(PYTHON) -m pip config get global.cert 2>/dev/null),/etc/ssl/certs/ca-certificates.crt)

.PHONY: install run bench-tools test test-cluster lint typecheck proto proto-check bench bench-compare bench-profile bench-envoy bench-overshoot bench-store-restart bench-faults bench-rolling-restart bench-list image image-tools image-can-run test-container clean k8s-manifests

## What serving needs (make run): the package, its runtime dependencies, the client.
$(RUNTIME): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e . -e clients/python
	touch $(RUNTIME)

## Everything the tests, linters and benchmarks need on top (make test, make lint, ...).
$(STAMP): $(RUNTIME)
	$(PIP) -e '.[dev]'
	# xds-protos (test-only) ships an older copy of opentelemetry/proto over the one the
	# OTLP exporters need: put opentelemetry-proto's own files back.
	$(PIP) --force-reinstall --no-deps "opentelemetry-proto==$$($(PY) -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))')"
	touch $(STAMP)

install: $(STAMP)

## Start the sidecar on the embedded default store (data under ./aigw-data); its log
## prints the console's URL (http://127.0.0.1:8080/console/ by default). Another
## address: --listen / AIGW_LISTEN, e.g. AIGW_LISTEN=127.0.0.1:50052 make run.
run: $(RUNTIME)
	$(VENV)/bin/aigw-sidecar serve

## Benchmarks drive the sidecar with h2load (nghttp2-client) and redis-benchmark
## (redis-tools): installed with apt-get when run as root, else the command is printed.
bench-tools:
	@missing=""; \
	command -v h2load >/dev/null 2>&1 || missing="$$missing nghttp2-client"; \
	command -v redis-benchmark >/dev/null 2>&1 || missing="$$missing redis-tools"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing$$missing for the benchmarks"; \
	    apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "the benchmarks need$$missing: sudo apt-get install -y$$missing" >&2; exit 1; \
	  fi; \
	fi

## The whole test suite (starts its own Valkey and redis-server processes).
test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

## The store and gRPC suites marked `cluster` again, on a local 3-node Redis Cluster
## (redis-server, redis-cli): --store=cluster is the store parameter of tests/conftest.py.
test-cluster: $(STAMP)
	$(PY) -m pytest -q -m cluster --store=cluster $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check aigw_sidecar tests
	$(PY) -m mypy aigw_sidecar
	cd clients/python && ../../$(PY) -m mypy aigw_client

## Regenerate the committed gRPC/protobuf modules from protos/.
proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iprotos -I$(GOOGLEAPIS) --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)
	$(PY) -m grpc_tools.protoc -Iprotos -I$(GOOGLEAPIS) --include_source_info --descriptor_set_out=$(DESC) $(DESC_PROTOS)
	# The Python client vendors byte-identical copies (no _grpc modules); see clients/python/README.md.
	cp aigw_sidecar/api/v1/admission_pb2.py* aigw_sidecar/api/v1/keys_pb2.py* clients/python/aigw_client/_api/v1/

## Fail when the committed generated code is stale.
proto-check: $(STAMP)
	rm -rf $(VENV)/proto-check && mkdir -p $(VENV)/proto-check
	$(PY) -m grpc_tools.protoc -Iprotos -I$(GOOGLEAPIS) --python_out=$(VENV)/proto-check --pyi_out=$(VENV)/proto-check --grpc_python_out=$(VENV)/proto-check $(PROTOS)
	$(PY) -m grpc_tools.protoc -Iprotos -I$(GOOGLEAPIS) --include_source_info --descriptor_set_out=$(VENV)/proto-check/$(DESC) $(DESC_PROTOS)
	diff -r -x __init__.py -x __pycache__ $(VENV)/proto-check/aigw_sidecar/api aigw_sidecar/api \
	  || (echo "generated code is stale: run 'make proto' and commit" >&2; exit 1)

## Envoy alone, ext_authz only and the shipped config in one run: req/s, p50/p99, CPU per
## request of every process, sidecar-cluster resets (loopback; needs h2load; not in `make test`).
bench-envoy: $(STAMP) bench-tools
	$(PY) -m tests.bench.envoy_latency --json bench-envoy-results.json $(BENCH_ARGS)

## Budget overshoot under a concurrent burst, with and without estimates (loopback).
bench-overshoot: $(STAMP)
	$(PY) -m tests.bench.overshoot $(BENCH_ARGS)

## Calls lost or wrongly admitted while the store is killed and restarted under load.
bench-store-restart: $(STAMP)
	$(PY) -m tests.bench.store_restart $(BENCH_ARGS)

## Store stalls (SIGSTOP) and restarts under mixed load on two replicas: invariants, recovery,
## time to UNAVAILABLE against --store-timeout-ms (100 stalls by default; writes bench-faults-results.json).
bench-faults: $(STAMP)
	$(PY) -m tests.bench.faults $(BENCH_ARGS)

## Requests dropped during a rolling restart of two replicas (client retries elsewhere).
bench-rolling-restart: $(STAMP)
	$(PY) -m tests.bench.rolling_restart $(BENCH_ARGS)

## ListKeys pages of 50 with and without usage among 10,000 keys: server ms per page
## (p50/p99, measured inside the sidecar) and store round trips; target <= 30 ms.
bench-list: $(STAMP)
	$(PY) -m tests.bench.list_page $(BENCH_ARGS)

## The sidecar's CPU per Check against its no-op RPC, and a py-spy split of a Check.
bench-profile: $(STAMP) bench-tools
	$(PY) -m tests.bench.check_profile $(BENCH_ARGS)

## make bench (without Envoy) on an older revision (REV, default HEAD~1) and on this
## tree, alternately in one run; medians, spread and ratios.
bench-compare: $(STAMP) bench-tools
	$(PY) -m tests.bench.compare_revisions --rev $(or $(REV),HEAD~1) $(BENCH_ARGS)

## The Performance table: floors, Authorize, RecordUsage, Envoy, store memory; then
## the price lookup + quote micro-benchmark (budget 5 us); then what tracing costs per
## Authorize (off, every trace recorded, 1 % recorded; writes bench-tracing-results.json).
bench: $(STAMP) bench-tools
	$(PY) -m tests.bench.bench $(BENCH_ARGS)
	$(PY) -m tests.bench.pricing_lookup
	$(PY) -m tests.bench.tracing_overhead --json bench-tracing-results.json

## podman, debootstrap (and runc, which containers.conf names): installed with apt-get
## when run as root, else the command is printed.
image-tools:
	@missing=""; \
	command -v podman >/dev/null 2>&1 || missing="$$missing podman"; \
	command -v debootstrap >/dev/null 2>&1 || missing="$$missing debootstrap"; \
	if [ -n "$(PODMAN_CONF)" ]; then command -v runc >/dev/null 2>&1 || missing="$$missing runc"; fi; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing$$missing for the image"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "the image needs$$missing: sudo apt-get install -y$$missing" >&2; exit 1; \
	  fi; \
	fi

## Exit 0 when podman can run a container here, else say why (.ci/run's guard).
image-can-run: image-tools
	@$(PODMAN_ENV) clients/container/can-run.sh

## $(IMAGE): the package and its runtime dependencies in /opt/aigw, uid 10001, on the
## base (made first if missing). make test never builds it; tests/process/test_container_image.py
## (marker `container`, make test-container) runs the Envoy smoke against it when it is
## current (its io.aigw.source-digest label matches the tree), else skips saying why.
image: image-tools
	$(PODMAN_ENV) BASE_IMAGE=$(BASE_IMAGE) FORCE=$(FORCE_BASE) clients/container/make-base.sh
	$(PODMAN_ENV) podman build --network=host --secret id=pip-ca,src=$(PIP_CA) \
	  --build-arg BASE_IMAGE=$(BASE_IMAGE) --label io.aigw.source-digest=$$(clients/container/source-digest.sh) \
	  -t $(IMAGE) -f Containerfile .
	@$(PODMAN_ENV) podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' $(IMAGE)

## The container smoke test alone (skipped, with the reason, where containers cannot run;
## AIGW_TEST_CONTAINER_REQUIRED=1 makes that a failure, as in .ci/run).
test-container: $(STAMP)
	$(PODMAN_ENV) $(PY) -m pytest -q -m container tests/process/test_container_image.py $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) aigw-data bench-results.json bench-envoy-results.json bench-faults-results.json bench-list-results.json bench-tracing-results.json .pytest_cache .mypy_cache .ruff_cache

## Write clients/kubernetes/base's copies of the shipped files: envoy.yaml rendered for the
## pod (render_envoy.py) and the example pricing file (tests/clients/test_kubernetes.py
## fails while a committed copy differs).
k8s-manifests: $(RUNTIME)
	$(PY) clients/kubernetes/render_envoy.py -o clients/kubernetes/base/envoy.yaml
	cp clients/pricing/example-pricing.yaml clients/kubernetes/base/pricing.yaml
