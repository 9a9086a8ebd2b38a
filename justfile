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

# Every benchmark in one table; rewrites BENCHMARKS.md (root, ~5-10 min).
# Installs the peers it measures canopy against (dsniff's tcpkill,
# netsniff-ng and trafgen) when they are missing.
bench:
    command -v tcpkill >/dev/null && command -v trafgen >/dev/null && command -v netsniff-ng >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dsniff netsniff-ng; }
    go run ./bench

# Only the block-efficacy benchmark (canopy vs tcpkill at 0, 1, 10 ms).
bench-block:
    go run ./bench -only block
