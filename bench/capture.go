package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"canopy/capture"
	"canopy/lab"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// trafgenConfig is the generator's frame: a 72-byte IPv4 TCP ACK with 18
// bytes of payload from random source ports (so the fanout hash spreads it
// over canopy's workers), addressed to nobody in the lab.
const trafgenConfig = `{
  eth(da=02:00:00:00:00:02, sa=02:00:00:00:00:01),
  ipv4(saddr=10.99.1.1, daddr=10.99.2.2, ttl=64),
  tcp(sport=drnd(), dport=443, seq=drnd(), ackseq=1, ack),
  fill(0x41, 18)
}
`

// countHandler decodes every frame of one capture worker and counts the
// generator's (by its destination MAC): the lab's own IPv6 chatter,
// mirrored from the client and server ports, is not part of the test.
type countHandler struct {
	frames, ok uint64
	p          capture.Packet
}

func (h *countHandler) Frame(b []byte, m *capture.Meta) {
	if capture.Decode(b, m, &h.p) == capture.OK && h.p.DstMAC == genDstMAC {
		h.frames++
	}
}

// genDstMAC is the destination MAC of trafgenConfig's frames.
var genDstMAC = [6]byte{2, 0, 0, 0, 0, 2}

func (h *countHandler) Idle(int64) {}

// captureRun is what one generator run was seen as.
type captureRun struct {
	label                   string
	sent                    uint64 // r-tap tx packets (generator)
	arrived, rxDropped      uint64 // tap0 rx packets and rx_dropped
	canopySeen, canopyDrops uint64
	canopyPackets           uint64 // kernel count (includes drops)
	nsSeen, nsDrops         uint64
	elapsed                 time.Duration
}

// runCapture compares canopy's live capture with netsniff-ng on the same
// frames: in a fresh lab, trafgen blasts frames from the router's end of the
// tap cable into the sensor's mirror port, where canopy (capture.OpenLive,
// 2 workers, TPACKET_V3 with fanout, decoding every frame) and
// `netsniff-ng --in tap0 --out /dev/null` capture at the same time.
func runCapture(ctx context.Context, o *options) ([]*Section, error) {
	var secs []*Section
	seq, err := runCaptureSequential(ctx, o)
	if seq != nil {
		secs = append(secs, seq)
	}
	if err != nil {
		return secs, err
	}
	sim, err := runCaptureSimultaneous(ctx, o)
	return append(secs, sim), err
}

// runCaptureSimultaneous runs both capturers on the same frames at once.
func runCaptureSimultaneous(ctx context.Context, o *options) (*Section, error) {
	cmd := o.command("capture")
	s := &Section{Name: "capture", Title: "Live capture: canopy and netsniff-ng on the same frames at the same time",
		Target:  "canopy drops nothing at a rate where netsniff-ng drops nothing (issue 3)",
		Columns: []string{"generator", "frames sent", "arrived at tap", "canopy seen", "canopy drops", "netsniff-ng seen", "netsniff-ng drops", "tap rx_dropped", "send rate"},
		Key:     1}
	for _, bin := range []string{"trafgen", "netsniff-ng"} {
		if _, err := exec.LookPath(bin); err != nil {
			return s, fmt.Errorf("%s not found (apt-get install netsniff-ng): %w", bin, err)
		}
	}
	blast := 2_000_000
	if o.quick {
		blast = 300_000
	}
	l, err := lab.New(lab.Config{Prefix: labPrefix})
	if err != nil {
		return s, err
	}
	defer l.Close()
	dir, cfgPath, err := trafgenFile("capture", trafgenConfig)
	if err != nil {
		return s, err
	}
	defer os.RemoveAll(dir)
	runs := []struct {
		label string
		n     int
		rate  int // pps; 0 = as fast as it goes
		cpus  int
	}{
		{"trafgen full speed, 1 CPU", blast, 0, 1},
		{"trafgen full speed, 2 CPUs", blast, 0, 2},
	}
	for _, r := range runs {
		progress("capture: %s, %d frames…", r.label, r.n)
		res, err := captureOnce(ctx, l, cfgPath, r.n, r.rate, r.cpus)
		if err != nil {
			return s, fmt.Errorf("%s: %w", r.label, err)
		}
		s.add(cmd, r.label, fmt.Sprint(res.sent), fmt.Sprint(res.arrived), fmt.Sprint(res.canopySeen), fmt.Sprint(res.canopyDrops),
			fmt.Sprint(res.nsSeen), fmt.Sprint(res.nsDrops), fmt.Sprint(res.rxDropped),
			fmt.Sprintf("%.0f pps", float64(res.sent)/res.elapsed.Seconds()))
	}
	s.note("Setup: a fresh lab; the generator is `trafgen --dev r-tap --cpus C -n N` in the router namespace writing 72-byte IPv4/TCP frames (random source ports) into the tap cable, so they arrive on the sensor's mirror port tap0 exactly as mirrored traffic does. " +
		"canopy: capture.OpenLive on tap0 with 2 workers (TPACKET_V3, fanout, default 256 KiB × 128 blocks per socket, 1 ms block timeout, no lane), every frame decoded; drops are the kernel's PACKET_STATISTICS. " +
		"netsniff-ng: `netsniff-ng --in tap0 --out /dev/null --silent --no-sock-mem --ring-size 64MiB` (the same ring memory as canopy's two 32 MiB worker rings) in the sensor namespace at the same time; seen = packets incoming − failed filter (out of space), from its exit summary. " +
		"frames sent = r-tap tx packets, arrived = tap0 rx packets (kernel interface counters); send rate = frames sent / the window in which r-tap's tx counter moved (sampled every millisecond through netlink). canopy counts only the generator's frames (by destination MAC); netsniff-ng counts every frame, which can add a few IPv6 neighbour-discovery frames the router mirrors from the client and server ports. Both capturers and the generator share this machine's 2 CPUs (with 2 generator CPUs the capturers fight it for every cycle: that row shows who drops first when starved).")
	return s, nil
}

// captureOnce runs one generator pass with both capturers listening.
func captureOnce(ctx context.Context, l *lab.Lab, cfgPath string, n, rate, cpus int) (captureRun, error) {
	var r captureRun
	var src *capture.Live
	err := l.Do(lab.Sensor, func() error {
		var err error
		src, err = capture.OpenLive(capture.LiveConfig{Ifaces: []string{l.TapIface}, Workers: 2, Promiscuous: true})
		return err
	})
	if err != nil {
		return r, err
	}
	cctx, cancel := context.WithCancel(ctx)
	hs := make([]*countHandler, src.Workers())
	var wg sync.WaitGroup
	errs := make([]error, len(hs))
	for i := range hs {
		hs[i] = &countHandler{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = src.Run(cctx, i, hs[i])
		}()
	}
	stopCanopy := func() error {
		cancel()
		wg.Wait()
		st := src.Stats()
		r.canopyDrops, r.canopyPackets = st.Drops, st.Packets
		for _, h := range hs {
			r.canopySeen += h.frames
		}
		return errors.Join(append(errs, src.Close())...)
	}

	ns := exec.Command("ip", "netns", "exec", l.Name(lab.Sensor), "netsniff-ng", "--in", l.TapIface, "--out", "/dev/null", "--silent", "--no-sock-mem", "--ring-size", "64MiB")
	ns.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var nsOut lockedBuffer
	ns.Stdout, ns.Stderr = &nsOut, &nsOut
	nsDone, err := startPinned(ns)
	if err != nil {
		stopCanopy()
		return r, fmt.Errorf("netsniff-ng: %w", err)
	}
	// netsniff-ng says "Running!" once its ring is set up; on a busy box
	// that can take a second or more.
	for deadline := time.Now().Add(15 * time.Second); !strings.Contains(nsOut.String(), "Running"); {
		if time.Now().After(deadline) {
			syscall.Kill(-ns.Process.Pid, syscall.SIGKILL)
			<-nsDone
			stopCanopy()
			return r, fmt.Errorf("netsniff-ng did not start: %s", tail(nsOut.String(), 5))
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)

	var g blastRun
	g, err = blast(ctx, l, "capture", cfgPath, n, rate, cpus)
	r.sent, r.arrived, r.rxDropped, r.elapsed = g.sent, g.arrived, g.rxDropped, g.elapsed
	syscall.Kill(-ns.Process.Pid, syscall.SIGINT)
	select {
	case <-nsDone:
	case <-time.After(5 * time.Second):
		syscall.Kill(-ns.Process.Pid, syscall.SIGKILL)
		<-nsDone
	}
	err = errors.Join(err, stopCanopy())
	if err != nil {
		return r, err
	}
	incoming, ok1 := findCount(nsOut.String(), `(\d+)\s+packets incoming`)
	dropped, ok2 := findCount(nsOut.String(), `(\d+)\s+packets failed filter`)
	if !ok1 || !ok2 {
		return r, fmt.Errorf("netsniff-ng: no summary in its output: %s", tail(nsOut.String(), 8))
	}
	r.nsSeen, r.nsDrops = incoming-dropped, dropped
	return r, nil
}

// trafgenFile writes the trafgen configuration cfg into a new temporary
// directory, which the caller removes, for the benchmark called name.
func trafgenFile(name, cfg string) (dir, path string, err error) {
	if dir, err = os.MkdirTemp("", "canopy-bench-"+name+"-"); err != nil {
		return "", "", err
	}
	path = filepath.Join(dir, "frames.cfg")
	if err = os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		os.RemoveAll(dir)
		return "", "", err
	}
	return dir, path, nil
}

// blastRun is what one trafgen run put on the tap cable.
type blastRun struct {
	sent, arrived, rxDropped uint64        // r-tap tx packets; tap0 rx packets and rx_dropped
	elapsed                  time.Duration // the window r-tap's tx counter moved in
}

// blast runs trafgen in the lab's router namespace, writing n frames of
// the configuration at cfgPath into the tap cable (rate pps, 0 as fast as
// it goes, on cpus CPUs), then waits a second for the rings to drain and
// reads what the interfaces counted. name labels its progress lines.
func blast(ctx context.Context, l *lab.Lab, name, cfgPath string, n, rate, cpus int) (blastRun, error) {
	var r blastRun
	routerH, sensorH := l.Handle(lab.Router), l.Handle(lab.Sensor)
	tx0, err := linkStats(routerH, lab.RouterTap)
	if err != nil {
		return r, err
	}
	rx0, err := linkStats(sensorH, l.TapIface)
	if err != nil {
		return r, err
	}
	args := []string{"netns", "exec", l.Name(lab.Router), "trafgen", "--dev", lab.RouterTap, "--in", cfgPath, "--cpus", strconv.Itoa(cpus), "-n", strconv.Itoa(n), "--no-cpu-stats", "--no-sock-mem"}
	if rate > 0 {
		args = append(args, "-b", fmt.Sprintf("%dpps", rate))
	}
	w := watchTx(routerH, lab.RouterTap, tx0.txPackets)
	t0 := time.Now()
	out, gerr := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	wall := time.Since(t0)
	r.elapsed = w.stop()
	progress("%s: trafgen ran %v, frames moved for %v", name, wall.Round(time.Millisecond), r.elapsed.Round(time.Millisecond))
	if gerr != nil {
		err = fmt.Errorf("trafgen: %v: %s", gerr, tail(string(out), 5))
	}
	time.Sleep(time.Second) // rings drain
	tx1, e1 := linkStats(routerH, lab.RouterTap)
	rx1, e2 := linkStats(sensorH, l.TapIface)
	r.sent = tx1.txPackets - tx0.txPackets
	r.arrived = rx1.rxPackets - rx0.rxPackets
	r.rxDropped = rx1.rxDropped - rx0.rxDropped
	return r, errors.Join(err, e1, e2)
}

// txWatch samples an interface's tx counter every millisecond to time the
// generator's sending window (first frame to last), leaving out the
// generator's start-up and exit.
type txWatch struct {
	stopc chan struct{}
	done  chan time.Duration
}

func watchTx(ns netns.NsHandle, iface string, base uint64) *txWatch {
	w := &txWatch{stopc: make(chan struct{}), done: make(chan time.Duration, 1)}
	go func() {
		var first, last time.Time
		prev := base
		h, err := netlink.NewHandleAt(ns)
		if err != nil {
			w.done <- 0
			return
		}
		defer h.Close()
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			stopping := false
			select {
			case <-w.stopc:
				stopping = true
			case <-t.C:
			}
			if c, err := readCounters(h, iface); err == nil && c.txPackets != prev {
				now := time.Now()
				if first.IsZero() {
					first = now
				}
				last, prev = now, c.txPackets
			}
			if stopping {
				w.done <- last.Sub(first)
				return
			}
		}
	}()
	return w
}

// stop ends the watch and returns the sending window.
func (w *txWatch) stop() time.Duration {
	close(w.stopc)
	return <-w.done
}

// linkCounters are an interface's kernel counters.
type linkCounters struct{ rxPackets, rxDropped, txPackets uint64 }

// linkStats reads an interface's counters in a namespace.
func linkStats(ns netns.NsHandle, iface string) (linkCounters, error) {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return linkCounters{}, err
	}
	defer h.Close()
	return readCounters(h, iface)
}

func readCounters(h *netlink.Handle, iface string) (linkCounters, error) {
	link, err := h.LinkByName(iface)
	if err != nil {
		return linkCounters{}, fmt.Errorf("counters of %s: %w", iface, err)
	}
	st := link.Attrs().Statistics
	if st == nil {
		return linkCounters{}, fmt.Errorf("counters of %s: none reported", iface)
	}
	return linkCounters{rxPackets: st.RxPackets, rxDropped: st.RxDropped, txPackets: st.TxPackets}, nil
}

// findCount returns the last number matched by re's first group in s.
func findCount(s, re string) (uint64, bool) {
	m := regexp.MustCompile(re).FindAllStringSubmatch(s, -1)
	if len(m) == 0 {
		return 0, false
	}
	v, err := strconv.ParseUint(m[len(m)-1][1], 10, 64)
	return v, err == nil
}

// lockedBuffer collects a child's output from its copying goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	return len(p), nil
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}

// liveBenchPattern selects the capture package's own side-by-side live
// benchmark (capture/bench_live_linux_test.go).
const liveBenchPattern = "^BenchmarkLiveVsNetsniff$"

var (
	liveHeader = regexp.MustCompile(`trafgen --cpus (\d+)\s*$`)
	liveLine   = regexp.MustCompile(`^\s*(canopy bulk\+lane, lane_nap 0s|canopy bulk\+lane|canopy bulk|netsniff-ng)\s*:\s*(?:\[lane: delivered (\d+), dropped (\d+)\])?sent (\d+) arrived\(rx_packets\) (\d+) seen (\d+) \(([\d.]+)%\) kernel drops (\d+) freezes (\d+) in (\S+) \(([\d.]+) kpps generated\)(?:\s*\[lane: delivered (\d+), dropped (\d+)\])?(?:\s*\[CPU (\d+) ns/frame\])?`)
)

// runCaptureSequential runs the capture package's BenchmarkLiveVsNetsniff
// (each capturer alone on its own 2M-frame burst) and tabulates its log.
func runCaptureSequential(ctx context.Context, o *options) (*Section, error) {
	args := []string{"test", "-run", "^$", "-bench", liveBenchPattern, "-benchtime", "1x", "-v", "./capture/"}
	cmdline := "go " + shellJoin(args)
	list, err := exec.CommandContext(ctx, "go", "test", "-list", liveBenchPattern, "./capture/").Output()
	if err != nil || !strings.Contains(string(list), "BenchmarkLiveVsNetsniff") {
		progress("capture: %s not found in ./capture/; only the simultaneous run", liveBenchPattern)
		return nil, nil
	}
	s := &Section{Name: "capture", Title: "Live capture: canopy vs netsniff-ng, each alone on the same burst (capture package's benchmark)",
		Target:  "canopy drops nothing at a rate where netsniff-ng drops nothing (issue 3)",
		Columns: []string{"generator", "capturer", "frames sent", "arrived", "seen", "seen %", "kernel drops", "queue freezes", "lane delivered / dropped", "generated", "capture CPU per frame"},
		Key:     2}
	progress("capture: %s", cmdline)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = o.root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return s, fmt.Errorf("%s: %v\n%s", cmdline, err, tail(string(out), 20))
	}
	cpus := ""
	for _, line := range strings.Split(string(out), "\n") {
		// Strip the testing log prefix ("    file.go:123: ").
		if i := strings.Index(line, ".go:"); i >= 0 {
			if j := strings.Index(line[i+4:], ": "); j >= 0 {
				line = line[i+4+j+2:]
			}
		}
		if m := liveHeader.FindStringSubmatch(line); m != nil {
			cpus = m[1]
			continue
		}
		m := liveLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		lane := "–" // the lane's figures come before "sent" or, since 300f7fa, at the end
		if m[2] != "" {
			lane = m[2] + " / " + m[3]
		} else if m[12] != "" {
			lane = m[12] + " / " + m[13]
		}
		gen := "trafgen full speed, " + cpus + " CPU"
		if cpus != "1" {
			gen += "s"
		}
		cpu := "–"
		if m[14] != "" {
			cpu = m[14] + " ns"
		}
		s.add(cmdline, gen, m[1], m[4], m[5], m[6], m[7]+" %", m[8], m[9], lane, m[11]+" kpps", cpu)
	}
	if len(s.Rows) == 0 {
		return s, fmt.Errorf("%s: no results in its log:\n%s", cmdline, tail(string(out), 20))
	}
	s.note("This is the capture package's own benchmark, run as is and its log tabulated: on a veth pair in a fresh namespace, trafgen sends 2,000,000 64-byte UDP frames as fast as 1 (then 2) CPUs can; canopy (capture.OpenLive, 2 workers, default rings, without the lane, with it, and with it and capture.lane_nap = 0s, i.e. a wake-up for every lane frame) and netsniff-ng (`--ring-size 64MiB`, the same ring memory) each capture their own burst, one after the other, so each has the machine to itself. seen excludes the lane's copies; kernel drops are PACKET_STATISTICS (netsniff-ng: 'failed filter (out of space)'); capture CPU per frame is the capturer's user and system CPU time over the burst and its drain (canopy: this test process's, trafgen being a process of its own; netsniff-ng: its process's) divided by the frames that arrived, so it shows what a lane costs when every frame takes it (the lane's wake-ups, which its naps cut: see capture.LiveConfig.LaneNap; the lane_nap 0s row shows what they would cost).")
	return s, nil
}
