# canopy tasks. Get `just` with: npm install -g rust-just
# Nothing here is required: each recipe is the plain command it runs.

# Build the static binary into ./canopy.
build:
    CGO_ENABLED=0 go build -trimpath -o canopy .

# The main job: a throw-away lab with live traffic and the dashboard on it (root).
demo:
    go run . demo

# The same, headless, for scripted checks.
demo-daemon:
    go run . demo --daemon

# The test suite, as CI runs it (root: the integration tests build namespaces).
test:
    go test -race -p 1 ./...

# gofmt, vet and a static build.
lint:
    test -z "$(gofmt -l $(git ls-files '*.go'))"
    go vet ./...
    CGO_ENABLED=0 go build -o /dev/null .

# Every fuzz target for TIME each (go test's -fuzztime: 30s, or e.g. 10000x):
# the decoders of packets, capture files and control messages, the block
# file, the API's requests, rule matching, reset building, the flow table
# and the config. A failure leaves its input under the package's testdata/fuzz.
fuzz time="30s":
    #!/usr/bin/env bash
    set -euo pipefail
    for pkg in $(go list ./...); do
      for f in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
        echo "== $pkg $f"
        go test -run '^$' -fuzz "^$f\$" -fuzztime {{time}} -fuzzminimizetime 5s "$pkg"
      done
    done

# Every benchmark in one table; rewrites BENCHMARKS.md (root, ~5-10 min).
# Installs the peers it measures canopy against (dsniff's tcpkill,
# netsniff-ng and trafgen) when they are missing.
bench:
    command -v tcpkill >/dev/null && command -v trafgen >/dev/null && command -v netsniff-ng >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dsniff netsniff-ng; }
    go run ./bench

# Only the block-efficacy benchmark (canopy vs tcpkill at 0, 1, 10 ms).
bench-block:
    go run ./bench -only block
