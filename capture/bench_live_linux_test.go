package capture

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// trafgenConf is 64-byte UDP frames with random source address byte and
// ports, so the fanout hash spreads them over the workers.
const trafgenConf = `{
  eth(da=02:cb:00:00:00:01, sa=02:ca:00:00:00:01),
  ipv4(sa=10.0.0.1, da=10.0.0.2, sa[3]=drnd(), ttl=64),
  udp(sp=drnd(1024, 65000), dp=53),
  fill(0x41, 18)
}
`

// counter is a Handler that decodes and counts, as a minimal sensor would.
type counter struct {
	n       atomic.Uint64
	p       Packet
	reasons [NumReasons]uint64
}

func (c *counter) Frame(b []byte, m *Meta) {
	c.reasons[Decode(b, m, &c.p)]++
	c.n.Add(1)
}
func (c *counter) Idle(int64) {}

// liveRun is the outcome of one generator burst against one capture.
type liveRun struct {
	sent, arrived, seen, drops, freezes uint64
	laneSeen, laneDrops                 uint64
	elapsed                             time.Duration
	cpu                                 time.Duration // the capturer's user+system CPU time over the burst and its drain
}

func (r liveRun) String() string {
	lane := ""
	if r.laneSeen > 0 {
		lane = fmt.Sprintf(" [lane: delivered %d, dropped %d]", r.laneSeen, r.laneDrops)
	}
	return fmt.Sprintf("sent %d arrived(rx_packets) %d seen %d (%.2f%%) kernel drops %d freezes %d in %v (%.0f kpps generated)",
		r.sent, r.arrived, r.seen, 100*float64(r.seen)/float64(max(r.arrived, 1)), r.drops, r.freezes, r.elapsed.Round(time.Millisecond),
		float64(r.sent)/r.elapsed.Seconds()/1e3) + lane +
		fmt.Sprintf(" [CPU %.0f ns/frame]", float64(r.cpu)/float64(max(r.arrived, 1)))
}

// selfCPU is this process's user+system CPU time so far: with canopy
// capturing in process, what capture costs (trafgen is a process of its
// own).
func selfCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// trafgen sends n frames out of iface inside the namespace at the highest
// rate one CPU manages and returns how many it reports sent.
func (tn *testNet) trafgen(tb testing.TB, iface string, n, cpus int) (uint64, time.Duration) {
	tb.Helper()
	conf := filepath.Join(tb.TempDir(), "udp.cfg")
	os.WriteFile(conf, []byte(trafgenConf), 0o644)
	start := time.Now()
	out, err := exec.Command("ip", "netns", "exec", tn.name, "trafgen", "--dev", iface, "--conf", conf,
		"--num", strconv.Itoa(n), "--cpus", strconv.Itoa(cpus), "--no-sock-mem").CombinedOutput()
	el := time.Since(start)
	if err != nil {
		tb.Fatalf("trafgen: %v\n%s", err, out)
	}
	ms := regexp.MustCompile(`(\d+) packets outgoing`).FindAllSubmatch(out, -1)
	if ms == nil {
		tb.Fatalf("trafgen output not understood:\n%s", out)
	}
	var sent uint64
	for _, m := range ms { // one line per generator process
		v, _ := strconv.ParseUint(string(m[1]), 10, 64)
		sent += v
	}
	return sent, el
}

// rxPackets reads an interface's rx_packets inside the namespace.
func (tn *testNet) rxPackets(tb testing.TB, iface string) uint64 {
	var n uint64
	tn.in(tb, func() {
		l, err := netlink.LinkByName(iface)
		if err == nil && l.Attrs().Statistics != nil {
			n = l.Attrs().Statistics.RxPackets
		}
	})
	return n
}

// runCanopy captures one burst with OpenLive (default ring, 2 workers).
func runCanopy(tb testing.TB, tn *testNet, n, cpus int, lane bool, nap time.Duration) liveRun {
	l := tn.openLiveIn(tb, LiveConfig{Ifaces: []string{tn.pairs[0][1]}, Workers: 2, Lane: lane, LaneNap: nap})
	defer l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cs := []*counter{{}, {}}
	var wg sync.WaitGroup
	for i := range cs {
		wg.Add(1)
		go func() { defer wg.Done(); l.Run(ctx, i, cs[i]) }()
	}
	rx0 := tn.rxPackets(tb, tn.pairs[0][1])
	cpu0 := selfCPU(tb)
	sent, el := tn.trafgen(tb, tn.pairs[0][0], n, cpus)
	arrived := tn.rxPackets(tb, tn.pairs[0][1]) - rx0
	// Let the rings drain: stop when the count stops moving.
	var last uint64
	for i := 0; i < 200; i++ {
		time.Sleep(20 * time.Millisecond)
		cur := cs[0].n.Load() + cs[1].n.Load()
		if cur == last && cur > 0 {
			break
		}
		last = cur
	}
	cancel()
	wg.Wait()
	cpu := selfCPU(tb) - cpu0
	st := l.Stats()
	r := liveRun{sent: sent, arrived: arrived, seen: cs[0].n.Load() + cs[1].n.Load() - st.LanePackets, drops: st.Drops, freezes: st.QueueFreezes, elapsed: el, laneSeen: st.LanePackets, cpu: cpu}
	for _, s := range st.Sockets {
		if s.Lane {
			r.laneDrops += s.Drops
		}
	}
	return r
}

var netsniffStat = regexp.MustCompile(`(\d+)\s+packets (incoming|passed filter|failed filter \(out of space\))`)

// runNetsniff captures one burst with netsniff-ng (counting only, no
// output file, 64 MiB ring = canopy's two 32 MiB worker rings).
func runNetsniff(tb testing.TB, tn *testNet, n, cpus int) liveRun {
	cmd := exec.Command("ip", "netns", "exec", tn.name, "netsniff-ng", "--in", tn.pairs[0][1], "--silent", "--no-sock-mem", "--ring-size", "64MiB")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		tb.Fatalf("netsniff-ng: %v", err)
	}
	time.Sleep(500 * time.Millisecond) // ring setup
	rx0 := tn.rxPackets(tb, tn.pairs[0][1])
	sent, el := tn.trafgen(tb, tn.pairs[0][0], n, cpus)
	arrived := tn.rxPackets(tb, tn.pairs[0][1]) - rx0
	time.Sleep(500 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGINT)
	cmd.Wait()
	r := liveRun{sent: sent, arrived: arrived, elapsed: el}
	if ps := cmd.ProcessState; ps != nil { // ip netns exec execs netsniff-ng: its usage is netsniff-ng's
		r.cpu = ps.UserTime() + ps.SystemTime()
	}
	for _, m := range netsniffStat.FindAllSubmatch(out.Bytes(), -1) {
		v, _ := strconv.ParseUint(string(m[1]), 10, 64)
		switch string(m[2]) {
		case "passed filter":
			r.seen = v
		case "failed filter (out of space)":
			r.drops = v
		}
	}
	if r.seen == 0 {
		tb.Fatalf("netsniff-ng output not understood:\n%s", out.String())
	}
	return r
}

// BenchmarkLiveVsNetsniff generates 64-byte frames with trafgen as fast as
// one CPU can onto a veth and captures them, first with canopy (OpenLive,
// 2 workers, defaults; without the lane, with it, and with it but never
// napping), then with netsniff-ng on the same traffic, and
// reports frames seen vs arrived and kernel drops side by side. Root only;
// needs trafgen and netsniff-ng (Debian: netsniff-ng). Reproduce with:
//
//	go test -run XXX -bench LiveVsNetsniff -benchtime 1x -v ./capture/
func BenchmarkLiveVsNetsniff(b *testing.B) {
	needRoot(b)
	for _, tool := range []string{"trafgen", "netsniff-ng", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Skipf("%s not installed (apt-get install netsniff-ng iproute2)", tool)
		}
	}
	const n = 2_000_000
	tn := newTestNet(b, 1)
	for b.Loop() {
		// One generator CPU leaves one for the capture; two generator
		// processes overload this 2-CPU box on purpose.
		for _, cpus := range []int{1, 2} {
			c := runCanopy(b, tn, n, cpus, false, 0)
			cl := runCanopy(b, tn, n, cpus, true, 0)
			cw := runCanopy(b, tn, n, cpus, true, -1) // what the lane's naps save
			ns := runNetsniff(b, tn, n, cpus)
			b.Logf("trafgen --cpus %d", cpus)
			b.Logf("  canopy bulk       : %v", c)
			b.Logf("  canopy bulk+lane  : %v", cl)
			b.Logf("  canopy bulk+lane, lane_nap 0s: %v", cw)
			b.Logf("  netsniff-ng       : %v", ns)
			if cpus == 1 {
				b.ReportMetric(float64(c.seen), "canopy-seen")
				b.ReportMetric(float64(c.drops), "canopy-drops")
				b.ReportMetric(float64(ns.seen), "netsniff-seen")
				b.ReportMetric(float64(ns.drops), "netsniff-drops")
			}
		}
	}
}
