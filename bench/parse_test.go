package main

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseBenchMedians(t *testing.T) {
	out := `goos: linux
BenchmarkDecode/IPv4-TCP-2   	12345678	        17.0 ns/op	 0 B/op	       0 allocs/op
BenchmarkDecode/IPv4-TCP-2   	12345678	        15.0 ns/op	 0 B/op	       0 allocs/op
BenchmarkDecode/IPv4-TCP-2   	12345678	        99.0 ns/op	 0 B/op	       0 allocs/op
BenchmarkMemoryPerFlow-2     	       1	 603660000 ns/op	       199.94 heap-B/flow	282233664 B/op	      35 allocs/op
PASS
`
	res := parseBench(out)
	if len(res) != 2 {
		t.Fatalf("got %d benchmarks, want 2", len(res))
	}
	if res[0].name != "Decode/IPv4-TCP" || res[0].runs != 3 {
		t.Errorf("first = %q × %d", res[0].name, res[0].runs)
	}
	if got := res[0].timePerOp(); got != "17.0 ns" {
		t.Errorf("median ns/op = %q, want 17.0 ns (the median, not the mean)", got)
	}
	if got := res[1].others(); got != "199.9 heap-B/flow" { // one decimal near the 200-byte target
		t.Errorf("custom metrics = %q", got)
	}
	if got := res[1].bytesPerOp(); got != "282.2 MB" {
		t.Errorf("B/op = %q", got)
	}
	if got := res[1].timePerOp(); got != "603.66 ms" {
		t.Errorf("time/op = %q", got)
	}
}

func TestLiveLine(t *testing.T) {
	for _, line := range []string{
		"  canopy bulk       : sent 2000000 arrived(rx_packets) 2000000 seen 2000000 (100.00%) kernel drops 0 freezes 0 in 2.548s (785 kpps generated)",
		"  canopy bulk+lane  : [lane: delivered 1999950, dropped 50]sent 2000000 arrived(rx_packets) 2000000 seen 2000000 (100.00%) kernel drops 0 freezes 0 in 4.3s (462 kpps generated)",
		"  canopy bulk+lane  : sent 2000000 arrived(rx_packets) 2000000 seen 2000000 (100.00%) kernel drops 0 freezes 0 in 4.3s (462 kpps generated) [lane: delivered 1999950, dropped 50]",
		"  canopy bulk+lane  : sent 2000000 arrived(rx_packets) 2000000 seen 2000000 (100.00%) kernel drops 0 freezes 0 in 4.3s (462 kpps generated) [lane: delivered 1999950, dropped 50] [CPU 507 ns/frame]",
		"  canopy bulk+lane, lane_nap 0s: sent 2000000 arrived(rx_packets) 2000000 seen 2000000 (100.00%) kernel drops 0 freezes 0 in 4.3s (462 kpps generated) [lane: delivered 1999950, dropped 50] [CPU 507 ns/frame]",
	} {
		m := liveLine.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("not understood: %s", line)
			continue
		}
		if strings.Contains(line, "lane_nap") && m[1] != "canopy bulk+lane, lane_nap 0s" {
			t.Errorf("capturer %q, want the whole name", m[1])
		}
		if m[4] != "2000000" || m[8] != "0" {
			t.Errorf("%s: sent %s drops %s", line, m[4], m[8])
		}
		if strings.Contains(line, "lane:") && m[2]+m[12] != "1999950" {
			t.Errorf("lane %q %q", m[2], m[12])
		}
		if want := map[bool]string{true: "507"}[strings.Contains(line, "CPU")]; m[14] != want {
			t.Errorf("%s: CPU %q, want %q", line, m[14], want)
		}
	}
}

func TestRank(t *testing.T) {
	for _, c := range []struct {
		q    float64
		n    int
		want int
	}{{0.5, 100, 49}, {0.99, 100, 98}, {1, 100, 99}, {0.99, 1, 0}, {0.5, 2, 0}} {
		if got := rank(c.q, c.n); got != c.want {
			t.Errorf("rank(%v, %d) = %d, want %d", c.q, c.n, got, c.want)
		}
	}
}

func TestLaneLine(t *testing.T) {
	line := "    latency_linux_test.go:119: lane-v2+bg        send→handler p50     31µs p99    80µs max   1.2ms | kernel ts→handler p50     12µs p99    60µs max    1.1ms"
	m := laneLine.FindStringSubmatch(line)
	if m == nil {
		t.Fatal("no match")
	}
	want := []string{"lane-v2+bg", "31µs", "80µs", "1.2ms", "12µs", "60µs", "1.1ms"}
	for i, w := range want {
		if m[i+1] != w {
			t.Errorf("field %d = %q, want %q", i, m[i+1], w)
		}
	}
}

// TestProcCPU: procCPU reads this process's CPU time as getrusage counts
// it (user + system), within the 10 ms tick /proc counts in.
func TestProcCPU(t *testing.T) {
	rusage := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	for deadline := time.Now().Add(5 * time.Second); rusage() < 200*time.Millisecond && time.Now().Before(deadline); {
		// burn CPU, so there is something to count
	}
	before := rusage()
	got, err := procCPU(os.Getpid())
	after := rusage()
	if err != nil {
		t.Fatal(err)
	}
	if got < before-20*time.Millisecond || got > after+20*time.Millisecond {
		t.Fatalf("procCPU %v, getrusage %v..%v", got, before, after)
	}
	if _, err := procCPU(-1); err == nil {
		t.Fatal("procCPU of no process: no error")
	}
}
