package main

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// microRun is one `go test -bench` invocation of a micro-benchmark group.
type microRun struct {
	pkg       string // "./capture/"
	pattern   string // -bench regexp
	benchtime string // -benchtime; "" for the default (1s)
}

// microGroup is a section made of micro-benchmarks.
type microGroup struct {
	title, target string
	runs          []microRun
	notes         []string
}

// microGroups are the library benchmarks the issues ask for, by -only name.
var microGroups = map[string]microGroup{
	"decode": {
		title:  "Capture: decode and pcap replay",
		target: "decode ≤ 60 ns/packet for Ethernet/IPv4/TCP, 0 allocs (issue 3)",
		runs:   []microRun{{pkg: "./capture/", pattern: "^Benchmark(Decode|FileReplay)$"}},
	},
	"flow": {
		title:  "Flow table with 1M flows",
		target: "update ≤ 80 ns/packet with 1M live flows, 0 allocs; ≤ 200 bytes per flow (issue 4)",
		runs: []microRun{
			{pkg: "./flow/", pattern: "^Benchmark(Update|UpdateNoTalkers|UpdateNewFlows|BucketAdd|ExpireBatch|Snapshot|DRAMLine)$"},
			{pkg: "./flow/", pattern: "^BenchmarkMemoryPerFlow$", benchtime: "1x"},
			{pkg: "./sensor/", pattern: "^BenchmarkWorkerFrames?$/^flows=1000000$"},
		},
		notes: []string{"Update/random touches a uniformly random flow of the 1M per packet (an index line then the flow's lines from DRAM, and every packet the first of its direction in the second, so its four talker keys are looked up: the worst case); train8 sends 8 packets per flow in a row (a TCP burst); hot16k draws from 16,384 of the 1M (a busy link's active set); zipf draws the 1M with Zipf popularity (s = 1.1: heavy-tailed, like real links); NAME-batch32 is the same traffic 32 packets at a time with Table.Prefetch ahead of each batch and Table.UpdateAhead for its packets, as the sensor handles a capture block. UpdateNoTalkers/random-batch32 is Update/random-batch32 with talker accounting switched off (a measurement aid; the sensor always counts talkers): what the flow table itself costs, so the difference is what counting the packet into its source, destination, pair and port costs. UpdateNewFlows: every packet creates a flow in the full 1M table, so each evicts one (a SYN flood), one at a time and batch32. BucketAdd: talker accounting alone, with its maps in cache, for Update/random's packets (each its flow's first in the second, so its source, destination, pair and port are looked up; the source or destination is one of a million clients, which a full map turns away). ExpireBatch: one full Expire call (8192 slots examined, none due) on the 1M table, the longest expiry holds a worker. DRAMLine is the memory floor of the random case: ns per 64-byte line read at random in 192 MiB, as independent loads and as Prefetch fetches them (batches of 16 prefetched, then read); a random Update reads three such lines (its index line, then two of the flow). DRAMLine/chase-SIZE is the latency of one line that nothing overlaps in a working set of SIZE (a random cycle of dependent loads): which cache a set of flows fits on this machine (hot16k's 16,384 flows take 3 MiB). cpu-ns/op is process CPU time per op, which this shared machine's wall time overstates. MemoryPerFlow: heap and RSS growth of a table filled with 1M flows, divided by 1M (freed heap is returned to the OS first, so the RSS growth is the table's). WorkerFrame and WorkerFrames (package sensor) are a whole capture worker per frame with 1M sessions in its table: decode, lane dedup, Update, the cached verdict; sessions of a request and its reply come in a scattered order, their frames one after another as in a ring block; WorkerFrames hands them over 32 at a time as a ring block does (Prefetch, then each frame), WorkerFrame one at a time."},
	},
	"rules": {
		title:  "Rules: match with 1M bans, build 1M",
		target: "≤ 100 ns per lookup with 1M bans, 0 allocs; building a 1M-entry set ≤ 2 s (issue 5)",
		runs: []microRun{
			{pkg: "./rules/", pattern: "^BenchmarkMatch(Miss)?$/^v[46]$/^1000000$"},
			{pkg: "./rules/", pattern: "^BenchmarkMatchWithOverlay$"},
			{pkg: "./rules/", pattern: "^BenchmarkBuild1M$", benchtime: "1x"},
		},
		notes: []string{"Match: half the probes are banned addresses (90% of the v4 bans are /32s, 80% of the v6 bans /128s), half random; the dst is an unbanned server address. A full-length src match skips the dst lookup. MatchMiss: every probe unbanned: the common case for a sensor. MatchWithOverlay: Match (v4, 1M bans) between folds, with a full overlay of 4096 recent changes on top of the compiled set: the worst case while bans keep arriving. Build1M: one op compiles a 1M-prefix set (ns/op is the build time); MiB-kept is the heap the compiled set keeps."},
	},
	"inject": {
		title:  "Inject: crafting RSTs, and killing a new ban's live sessions",
		target: "BuildReset well under 100 ns, 0 allocs (issue 6)",
		runs: []microRun{
			{pkg: "./inject/", pattern: "^BenchmarkBuildReset"},
			{pkg: "./sensor/", pattern: "^BenchmarkProactiveKill$", benchtime: "3x"},
		},
		notes: []string{"ProactiveKill (package sensor): a ban whose prefix holds every session of a worker's table (10,000 or 100,000), killed from the table as the worker does it, a step at a time between blocks of frames, into a sender that drops the frames and under a ceiling that never waits: ns/op is the whole kill, ns/session its cost per session (verdict, block record, two resets crafted and sent), p99-hold-µs and max-hold-µs the longest the kill kept the worker from its frames at once (a step is at most 200 µs of sends; the maximum includes garbage collection and page faults). Before the kill went in steps it held the worker for the whole of it."},
	},
	"ui": {
		title:  "Dashboard: View with 1,000 talkers at 200×60",
		target: "a full frame ≤ 2 ms",
		runs:   []microRun{{pkg: "./ui/", pattern: "^Benchmark(ViewFrame1000Talkers200x60|ViewCached|SnapshotUpdateView|KeyMoveView)$"}},
	},
}

// runMicro returns the runner of a micro-benchmark section.
func runMicro(name string) func(context.Context, *options) (*Section, error) {
	return func(ctx context.Context, o *options) (*Section, error) {
		g := microGroups[name]
		s := &Section{Name: name, Title: g.title, Target: g.target,
			Columns: []string{"benchmark", "time/op", "B/op", "allocs/op", "other metrics", "runs"}, Key: 1}
		count := 5
		if o.quick {
			count = 1
		}
		for _, r := range g.runs {
			args := []string{"test", "-run", "^$", "-bench", r.pattern, "-benchmem", "-count", strconv.Itoa(count)}
			bt := r.benchtime
			if bt == "" && o.quick {
				bt = "100ms"
			}
			if bt != "" {
				args = append(args, "-benchtime", bt)
			}
			args = append(args, r.pkg)
			cmdline := "go " + shellJoin(args)
			progress("%s: %s", name, cmdline)
			cmd := exec.CommandContext(ctx, "go", args...)
			cmd.Dir = o.root
			out, err := cmd.CombinedOutput()
			if err != nil {
				return s, fmt.Errorf("%s: %v\n%s", cmdline, err, tail(string(out), 20))
			}
			res := parseBench(string(out))
			if len(res) == 0 {
				return s, fmt.Errorf("%s: no benchmark lines in the output:\n%s", cmdline, tail(string(out), 20))
			}
			for _, b := range res {
				s.add(cmdline, b.name, b.timePerOp(), b.bytesPerOp(), b.metric("allocs/op"), b.others(), fmt.Sprint(b.runs))
			}
		}
		s.note("Each figure is the median of the runs (`-count %d`) of `go test -bench`; custom metrics come from the benchmark's b.ReportMetric.", count)
		for _, n := range g.notes {
			s.note("%s", n)
		}
		return s, nil
	}
}

// benchResult is the median of several runs of one benchmark.
type benchResult struct {
	name   string
	runs   int
	units  []string // in first-seen order
	values map[string][]float64
}

func (b *benchResult) median(unit string) (float64, bool) {
	v := slices.Clone(b.values[unit])
	if len(v) == 0 {
		return 0, false
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2], true
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2, true
}

func (b *benchResult) metric(unit string) string {
	v, ok := b.median(unit)
	if !ok {
		return "–"
	}
	return fmtNum(v)
}

// timePerOp renders the median ns/op in ns below 10 µs and in a larger
// unit above (a 1M-entry build is easier read as "0.69 s").
func (b *benchResult) timePerOp() string {
	v, ok := b.median("ns/op")
	switch {
	case !ok:
		return "–"
	case v < 10_000:
		return fmtNum(v) + " ns"
	}
	return fmtDur(time.Duration(v))
}

// bytesPerOp renders the median B/op, in MB from a million up.
func (b *benchResult) bytesPerOp() string {
	v, ok := b.median("B/op")
	switch {
	case !ok:
		return "–"
	case v >= 1e6:
		return fmt.Sprintf("%.1f MB", v/1e6)
	}
	return fmtNum(v)
}

// others renders every metric but the standard three (and MB/s).
func (b *benchResult) others() string {
	var parts []string
	for _, u := range b.units {
		switch u {
		case "ns/op", "B/op", "allocs/op", "MB/s":
			continue
		}
		v, _ := b.median(u)
		if strings.HasSuffix(u, "-B/flow") {
			// Bytes per flow sit against a 200-byte target: one decimal
			// shows which side of it they are (199.9 would print 200).
			parts = append(parts, strconv.FormatFloat(v, 'f', 1, 64)+" "+u)
			continue
		}
		parts = append(parts, fmtNum(v)+" "+u)
	}
	return strings.Join(parts, ", ")
}

// fmtNum prints a figure with as many decimals as it deserves.
func fmtNum(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 1e6:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

var procSuffix = regexp.MustCompile(`-\d+$`)

// parseBench reads `go test -bench` output: lines of a name, an iteration
// count and value/unit pairs. Several runs of one name are merged.
func parseBench(out string) []*benchResult {
	var order []*benchResult
	byName := map[string]*benchResult{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		name := procSuffix.ReplaceAllString(strings.TrimPrefix(f[0], "Benchmark"), "")
		b := byName[name]
		if b == nil {
			b = &benchResult{name: name, values: map[string][]float64{}}
			byName[name] = b
			order = append(order, b)
		}
		b.runs++
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break
			}
			u := f[i+1]
			if _, seen := b.values[u]; !seen {
				b.units = append(b.units, u)
			}
			b.values[u] = append(b.values[u], v)
		}
	}
	return order
}

// shellJoin quotes arguments that a shell would split or expand.
func shellJoin(args []string) string {
	var out []string
	for _, a := range args {
		if a == "" || strings.ContainsAny(a, " ^$|()[]*?'\"\\") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out = append(out, a)
	}
	return strings.Join(out, " ")
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// runCmd runs a command and returns its standard output.
func runCmd(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).Output()
	return string(out), err
}
