package main

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
)

// laneLine matches one path's figures in TestLiveLaneLatency's log:
//
//	lane-v2          send→handler p50 31µs p99 80µs max 1.2ms | kernel ts→handler p50 …
var laneLine = regexp.MustCompile(`(\S+)\s+send→handler p50\s+(\S+) p99\s+(\S+) max\s+(\S+) \| kernel ts→handler p50\s+(\S+) p99\s+(\S+) max\s+(\S+)`)

// runLane measures how long a packet that decides a race (a SYN) takes
// from the wire to the worker's handler at low traffic, through the V3
// bulk ring with its 1 ms block timeout, through the low-latency lane, and
// through a plain recvfrom socket: the capture package's own measurement,
// tabulated.
func runLane(ctx context.Context, o *options) (*Section, error) {
	s := &Section{Name: "lane", Title: "Capture latency: trigger on the wire → worker, bulk ring vs low-latency lane",
		Target:  "sub-millisecond delivery of the packets that decide a race (SYN, SYN-ACK, data), even at low traffic",
		Columns: []string{"path", "send→handler p50", "p99", "max", "kernel ts→handler p50", "p99", "max"}, Key: 1}
	args := []string{"test", "-run", "^TestLiveLaneLatency$", "-count", "1", "-v", "./capture/"}
	cmdline := "go " + shellJoin(args)
	progress("lane: %s", cmdline)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = o.root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return s, fmt.Errorf("%s: %v\n%s", cmdline, err, tail(string(out), 20))
	}
	for _, line := range strings.Split(string(out), "\n") {
		if m := laneLine.FindStringSubmatch(line); m != nil {
			s.add(cmdline, m[1:]...)
		}
	}
	if len(s.Rows) == 0 {
		return s, fmt.Errorf("%s: no latency lines in the output:\n%s", cmdline, tail(string(out), 20))
	}
	s.note("One SYN every 2 ms on a veth, 300 of them per path; \"+bg\" rows add ~20 kpps of pure ACKs (bulk traffic that never takes the lane). send→handler includes the sender's write; kernel ts→handler is what the sensor's reaction clock starts from. The V3 ring hands a block over only when it is full or its 1 ms timer fires, which is why canopy adds the lane.")
	return s, nil
}
