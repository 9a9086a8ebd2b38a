// Command bench runs canopy's benchmark suite and writes BENCHMARKS.md from
// what it measured: block efficacy against dsniff's tcpkill in the lab at
// 0, 1 and 10 ms one-way delay, ban-to-death of live sessions, capture
// throughput against netsniff-ng, the library micro-benchmarks (medians of
// `go test -bench` runs), the whole engine's cost per packet, and the API's
// ban writes per second. It prints one table; every row names the command
// that reproduces it, and no figure in BENCHMARKS.md is typed by hand.
//
//	go run ./bench                      # everything, rewrites BENCHMARKS.md (root, ~6-10 min)
//	go run ./bench -only block          # one benchmark (or a comma list); prints only
//	go run ./bench -quick -out /tmp/B.md # smaller counts, for a CI smoke run
//
// With -only or -quick the report is written only where -out says.
//
// The lab benchmarks need root (network namespaces, AF_PACKET); the
// micro-benchmarks and the API load do not.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"canopy/lab"
)

// labPrefix names the benchmark's namespaces, apart from the tests' "cnp"
// labs that other people may be running on the same machine.
const labPrefix = "cnb"

// options are the command-line flags.
type options struct {
	only  []string
	quick bool
	out   string
	root  string // module root: go test runs there, BENCHMARKS.md lands there

	// block: which one-way delays and blockers to run (default: all)
	blockDelays   []time.Duration
	blockBlockers []string
}

// command is the command line that reproduces one benchmark.
func (o *options) command(name string) string {
	c := "go run ./bench -only " + name
	if o.quick {
		c += " -quick"
	}
	if name == "block" {
		c += o.blockFlags()
	}
	return c
}

// blockFlags is the -block-* flags of this run, as a command-line suffix.
func (o *options) blockFlags() string {
	var c string
	if len(o.blockDelays) > 0 {
		ds := make([]string, len(o.blockDelays))
		for i, d := range o.blockDelays {
			ds[i] = d.String()
		}
		c += " -block-delays " + strings.Join(ds, ",")
	}
	if len(o.blockBlockers) > 0 {
		c += " -block-blockers " + strings.Join(o.blockBlockers, ",")
	}
	return c
}

// parseBlock reads the -block-delays and -block-blockers flags.
func (o *options) parseBlock(delays, blockers string) error {
	if delays != "" {
		for _, f := range strings.Split(delays, ",") {
			d, err := time.ParseDuration(strings.TrimSpace(f))
			if err != nil || d < 0 {
				return fmt.Errorf("-block-delays: %q is not a duration such as 0s, 1ms or 10ms", f)
			}
			o.blockDelays = append(o.blockDelays, d)
		}
	}
	if blockers != "" {
		for _, f := range strings.Split(blockers, ",") {
			f = strings.TrimSpace(f)
			if f != "canopy" && f != "canopy-rt" && f != "tcpkill" {
				return fmt.Errorf("-block-blockers: unknown blocker %q; choose from canopy, canopy-rt (capture.worker_rt_priority = %d) and tcpkill", f, benchRT)
			}
			o.blockBlockers = append(o.blockBlockers, f)
		}
	}
	return nil
}

// benchmark is one named part of the suite.
type benchmark struct {
	name string
	root bool // needs root (labs, AF_PACKET)
	run  func(context.Context, *options) ([]*Section, error)
}

// one adapts a benchmark that fills a single section.
func one(f func(context.Context, *options) (*Section, error)) func(context.Context, *options) ([]*Section, error) {
	return func(ctx context.Context, o *options) ([]*Section, error) {
		s, err := f(ctx, o)
		if s == nil {
			return nil, err
		}
		return []*Section{s}, err
	}
}

// suite lists the benchmarks in the order they run and appear.
var suite = []benchmark{
	{"block", true, one(runBlock)},
	{"kill", true, one(runKill)},
	{"capture", true, runCapture},
	{"flood", true, runFlood},
	{"lane", true, one(runLane)},
	{"engine", false, one(runEngine)},
	{"decode", false, one(runMicro("decode"))},
	{"flow", false, one(runMicro("flow"))},
	{"rules", false, one(runMicro("rules"))},
	{"inject", false, one(runMicro("inject"))},
	{"ui", false, one(runMicro("ui"))},
	{"api", false, one(runAPI)},
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == childArg {
		if err := sensorChild(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "bench sensor:", err)
			os.Exit(1)
		}
		return
	}
	var only string
	o := &options{}
	flag.StringVar(&only, "only", "", "run only these benchmarks, comma-separated: "+names())
	flag.BoolVar(&o.quick, "quick", false, "smaller counts and single runs, for a CI smoke test")
	flag.StringVar(&o.out, "out", "BENCHMARKS.md", "Markdown report to rewrite (relative to the module root); \"-\" for none. With -only or -quick, the report is written only when -out is given, so a partial or smoke run never overwrites the full report")
	var delays, blockers string
	flag.StringVar(&delays, "block-delays", "", "block: run only these one-way delays, comma-separated (e.g. 0s,1ms); default 0s,1ms,10ms")
	flag.StringVar(&blockers, "block-blockers", "", "block: run only these blockers, comma-separated: canopy, canopy-rt (real-time capture workers), tcpkill; default all, canopy-rt on the LAN only")
	flag.Parse()
	if err := o.parseBlock(delays, blockers); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	outSet := false
	flag.Visit(func(f *flag.Flag) { outSet = outSet || f.Name == "out" })
	if only != "" {
		for _, n := range strings.Split(only, ",") {
			n = strings.TrimSpace(n)
			if !slices.ContainsFunc(suite, func(b benchmark) bool { return b.name == n }) {
				fmt.Fprintf(os.Stderr, "bench: unknown benchmark %q; choose from %s\n", n, names())
				os.Exit(2)
			}
			o.only = append(o.only, n)
		}
	}
	if (len(o.only) > 0 || o.quick) && !outSet {
		o.out = "-" // a partial or quick run never overwrites the full report by accident
	}
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	o.root = root
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func names() string {
	var ns []string
	for _, b := range suite {
		ns = append(ns, b.name)
	}
	return strings.Join(ns, ", ")
}

// run runs the selected benchmarks, prints the table and writes the report.
// A benchmark that fails is reported and the others still run.
func run(o *options) error {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	env := probeEnv()
	start := time.Now()
	needRoot := false
	for _, b := range suite {
		if o.selected(b.name) && b.root {
			needRoot = true
		}
	}
	if needRoot {
		if os.Geteuid() != 0 {
			return errors.New("the lab benchmarks need root (network namespaces, AF_PACKET): run with sudo, or pick others with -only")
		}
		if gone, err := lab.CleanupStale(labPrefix); err != nil {
			return err
		} else if len(gone) > 0 {
			progress("removed %d namespaces left by an earlier run: %s", len(gone), strings.Join(gone, " "))
		}
	}
	var secs []*Section
	var failures []string
	for _, b := range suite {
		if !o.selected(b.name) {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		t0 := time.Now()
		progress("== %s", b.name)
		ss, err := b.run(ctx, o)
		if err != nil {
			failures = append(failures, fmt.Sprintf("%s: %v", b.name, err))
			progress("%s FAILED: %v", b.name, err)
			if len(ss) == 0 {
				ss = []*Section{{Name: b.name, Title: b.name}}
			}
			ss[len(ss)-1].note("**This benchmark failed:** %v", err)
		}
		progress("%s took %v", b.name, time.Since(t0).Round(time.Second))
		secs = append(secs, ss...)
	}
	env.elapsed = time.Since(start)
	env.loadEnd = loadAvg3()
	fmt.Println()
	writeText(os.Stdout, []string{"benchmark", "case", "result", "command"}, summaryRows(secs))
	if len(failures) > 0 {
		fmt.Println()
		for _, f := range failures {
			fmt.Println("FAILED", f)
		}
	}
	if o.out != "-" {
		path := o.out
		if !filepath.IsAbs(path) {
			path = filepath.Join(o.root, path)
		}
		if err := writeReport(path, o, env, secs); err != nil {
			return err
		}
		progress("wrote %s", path)
	}
	if ctx.Err() != nil {
		return errors.New("interrupted")
	}
	if len(failures) > 0 {
		return fmt.Errorf("%d benchmark(s) failed", len(failures))
	}
	return nil
}

func (o *options) selected(name string) bool {
	return len(o.only) == 0 || slices.Contains(o.only, name)
}

// progress reports what the suite is doing, on stderr, so stdout holds
// only the table.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// moduleRoot finds the directory holding canopy's go.mod, from the working
// directory upwards.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && strings.HasPrefix(string(b), "module canopy\n") {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no canopy go.mod above %s: run from the repository", dir)
		}
	}
}

// env describes the machine a report was measured on.
type env struct {
	date, kernel, cpu, goVersion, load, loadEnd, commit string
	cpus                                                int
	elapsed                                             time.Duration
}

func probeEnv() env {
	e := env{date: time.Now().UTC().Format("2006-01-02 15:04 UTC"), goVersion: runtime.Version(), cpus: runtime.NumCPU()}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		e.kernel = cString(u.Sysname[:]) + " " + cString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				e.cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	e.load = loadAvg3()
	if out, err := runCmd("git", "rev-parse", "--short", "HEAD"); err == nil {
		e.commit = strings.TrimSpace(out)
		if st, err := runCmd("git", "status", "--porcelain", "--untracked-files=no"); err == nil && strings.TrimSpace(st) != "" {
			e.commit += " (with uncommitted changes)"
		}
	}
	return e
}

// loadAvg3 is the host's 1, 5 and 15 minute load averages.
func loadAvg3() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	if f := strings.Fields(string(b)); len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "?"
}

func cString(b []int8) string {
	var s []byte
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}

// writeReport rewrites the Markdown report.
func writeReport(path string, o *options, e env, secs []*Section) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# canopy benchmarks\n\n")
	fmt.Fprintf(&b, "Generated by `%s` — every figure below was measured by that run; nothing is typed by hand. ", invocation(o))
	fmt.Fprintf(&b, "Re-run it (as root) to reproduce; `go run ./bench -only NAME` reruns one part.\n\n")
	fmt.Fprintf(&b, "- Date: %s (the whole run took %v)\n", e.date, e.elapsed.Round(time.Second))
	fmt.Fprintf(&b, "- Kernel: %s\n", e.kernel)
	fmt.Fprintf(&b, "- CPU: %s, %d logical CPUs\n", e.cpu, e.cpus)
	fmt.Fprintf(&b, "- Go: %s\n", e.goVersion)
	fmt.Fprintf(&b, "- Commit: %s\n", e.commit)
	fmt.Fprintf(&b, "- Load average (1, 5, 15 min) when the run started: %s; when it ended: %s. This machine is shared: absolute figures are noisy; "+
		"the micro-benchmarks are medians of several runs, and the comparisons (canopy vs tcpkill, canopy vs netsniff-ng) were measured side by side in one run.\n\n", e.load, e.loadEnd)
	fmt.Fprintf(&b, "## Summary\n\n")
	writeMarkdown(&b, []string{"benchmark", "case", "result", "command"}, mapRows(summaryRows(secs), func(r []string) []string {
		r[3] = "`" + r[3] + "`"
		return r
	}))
	for _, s := range secs {
		fmt.Fprintf(&b, "\n## %s\n\n", s.Title)
		if s.Target != "" {
			fmt.Fprintf(&b, "Target: %s.\n\n", s.Target)
		}
		if len(s.Rows) > 0 {
			h, rows := sectionRows(s)
			writeMarkdown(&b, h, rows)
			b.WriteString("\n")
		}
		for _, n := range s.Notes {
			b.WriteString(n + "\n\n")
		}
	}
	return os.WriteFile(path, []byte(strings.TrimRight(b.String(), "\n")+"\n"), 0o644)
}

func invocation(o *options) string {
	c := "go run ./bench"
	if len(o.only) > 0 {
		c += " -only " + strings.Join(o.only, ",")
	}
	if o.quick {
		c += " -quick"
	}
	return c + o.blockFlags()
}

func mapRows(rows [][]string, f func([]string) []string) [][]string {
	for i := range rows {
		rows[i] = f(rows[i])
	}
	return rows
}
