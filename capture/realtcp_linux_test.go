package capture

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// mirrorNet is a client and a server namespace joined by a veth, with the
// server side mirroring both directions of that veth (tc clsact + u32 +
// mirred, as a SPAN port does) into a second veth whose far end is the
// capture port. Real kernel TCP runs between client and server.
type mirrorNet struct {
	client, server string // namespace names
	tap            string // capture interface, in the server namespace
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func newMirrorNet(t *testing.T) *mirrorNet {
	t.Helper()
	needRoot(t)
	for _, tool := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	sfx := fmt.Sprintf("%04x", rand.IntN(0x10000))
	m := &mirrorNet{client: "capture-cl-" + sfx, server: "capture-sv-" + sfx, tap: "captap" + sfx}
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", m.client).Run()
		exec.Command("ip", "netns", "del", m.server).Run()
	})
	c0, s0, m0 := "capc"+sfx, "caps"+sfx, "capm"+sfx
	ipCmd(t, "ip", "netns", "add", m.client)
	ipCmd(t, "ip", "netns", "add", m.server)
	ipCmd(t, "ip", "-n", m.client, "link", "add", c0, "type", "veth", "peer", "name", s0, "netns", m.server)
	ipCmd(t, "ip", "-n", m.server, "link", "add", m0, "type", "veth", "peer", "name", m.tap)
	for _, c := range [][]string{
		{"ip", "-n", m.client, "addr", "add", "10.77.0.1/24", "dev", c0},
		{"ip", "-n", m.client, "-6", "addr", "add", "fd77::1/64", "dev", c0, "nodad"},
		{"ip", "-n", m.server, "addr", "add", "10.77.0.2/24", "dev", s0},
		{"ip", "-n", m.server, "-6", "addr", "add", "fd77::2/64", "dev", s0, "nodad"},
		{"ip", "-n", m.client, "link", "set", c0, "up"},
		{"ip", "-n", m.client, "link", "set", "lo", "up"},
		{"ip", "-n", m.server, "link", "set", s0, "up"},
		{"ip", "-n", m.server, "link", "set", "lo", "up"},
		{"ip", "-n", m.server, "link", "set", m0, "up"},
		{"ip", "-n", m.server, "link", "set", m.tap, "up"},
		// Offloads off so the mirror carries wire-size segments, as a TAP would.
		{"ip", "netns", "exec", m.client, "ethtool", "-K", c0, "tso", "off", "gso", "off", "gro", "off"},
		{"ip", "netns", "exec", m.server, "ethtool", "-K", s0, "tso", "off", "gso", "off", "gro", "off"},
		{"ip", "netns", "exec", m.server, "tc", "qdisc", "add", "dev", s0, "clsact"},
		{"ip", "netns", "exec", m.server, "tc", "filter", "add", "dev", s0, "ingress", "protocol", "all", "u32", "match", "u32", "0", "0", "action", "mirred", "egress", "mirror", "dev", m0},
		{"ip", "netns", "exec", m.server, "tc", "filter", "add", "dev", s0, "egress", "protocol", "all", "u32", "match", "u32", "0", "0", "action", "mirred", "egress", "mirror", "dev", m0},
	} {
		if len(c) > 4 && c[4] == "ethtool" {
			if _, err := exec.LookPath("ethtool"); err != nil {
				continue
			}
		}
		ipCmd(t, c...)
	}
	return m
}

// inNS runs fn on a thread inside the named namespace; sockets created by fn
// stay there.
func inNS(t *testing.T, name string, fn func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with us
		ns, err := netns.GetFromName(name)
		if err != nil {
			errc <- err
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	if err := <-errc; err != nil {
		t.Fatalf("in namespace %s: %v", name, err)
	}
}

// flowKey is a direction-free 5-tuple.
type flowKey struct{ lo, hi netip.AddrPort }

func keyOf(p *Packet) flowKey {
	a, b := netip.AddrPortFrom(p.Src, p.SrcPort), netip.AddrPortFrom(p.Dst, p.DstPort)
	if b.Compare(a) < 0 {
		a, b = b, a
	}
	return flowKey{a, b}
}

// flowRecorder is a Handler noting, per flow and direction, which worker
// saw its frames through the bulk ring and through the lane.
type flowRecorder struct {
	worker int
	mu     sync.Mutex
	bulk   map[flowKey]map[netip.AddrPort]int // flow → sender → frames
	lane   map[flowKey]int
	p      Packet
}

func (r *flowRecorder) Frame(b []byte, m *Meta) {
	if Decode(b, m, &r.p) != OK || r.p.Proto != ProtoTCP {
		return
	}
	k := keyOf(&r.p)
	r.mu.Lock()
	defer r.mu.Unlock()
	if m.Lane {
		r.lane[k]++
		return
	}
	if r.bulk[k] == nil {
		r.bulk[k] = map[netip.AddrPort]int{}
	}
	r.bulk[k][netip.AddrPortFrom(r.p.Src, r.p.SrcPort)]++
}
func (r *flowRecorder) Idle(int64) {}

// TestLiveRealTCPFlowsStayOnOneWorker runs real kernel TCP connections over
// IPv4 and IPv6 (the kernel picks a flow label per connection and
// direction) between two namespaces, mirrors both directions into the
// capture port, and checks that each connection's frames, both directions,
// land on one worker in the bulk group and on the same worker in the lane
// group: the symmetric hash with one per-boot seed maps a flow to the same
// member index in both groups.
func TestLiveRealTCPFlowsStayOnOneWorker(t *testing.T) {
	mn := newMirrorNet(t)
	var l *Live
	inNS(t, mn.server, func() (err error) {
		l, err = OpenLive(LiveConfig{Ifaces: []string{mn.tap}, Workers: 3, Lane: true, NumBlocks: 16, BlockSize: 1 << 16})
		return err
	})
	defer l.Close()
	run := make([]*flowRecorder, l.Workers())
	stop := make(chan struct{})
	var wg sync.WaitGroup
	ctx, cancel := contextWithStop(stop)
	defer cancel()
	for i := range run {
		run[i] = &flowRecorder{worker: i, bulk: map[flowKey]map[netip.AddrPort]int{}, lane: map[flowKey]int{}}
		wg.Add(1)
		go func() { defer wg.Done(); l.Run(ctx, i, run[i]) }()
	}

	// An echo server on both families.
	var lns []net.Listener
	inNS(t, mn.server, func() error {
		for _, a := range []string{"10.77.0.2:7007", "[fd77::2]:7007"} {
			ln, err := net.Listen("tcp", a)
			if err != nil {
				return err
			}
			lns = append(lns, ln)
		}
		return nil
	})
	for _, ln := range lns {
		defer ln.Close()
		go func(ln net.Listener) {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { io.Copy(c, c); c.Close() }()
			}
		}(ln)
	}
	const conns = 24
	var conn []net.Conn
	inNS(t, mn.client, func() error {
		for i := 0; i < conns; i++ {
			dst := "10.77.0.2:7007"
			if i%2 == 1 {
				dst = "[fd77::2]:7007"
			}
			c, err := net.DialTimeout("tcp", dst, 5*time.Second)
			if err != nil {
				return err
			}
			conn = append(conn, c)
		}
		return nil
	})
	buf := make([]byte, 512)
	for round := 0; round < 3; round++ {
		for _, c := range conn {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write(buf[:100+round]); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c, buf[:100+round]); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, c := range conn {
		c.Close()
	}
	time.Sleep(300 * time.Millisecond) // FINs, last ACKs, retire timers
	close(stop)
	wg.Wait()

	owner := map[flowKey]int{}
	for _, r := range run {
		for k, senders := range r.bulk {
			if w, ok := owner[k]; ok {
				t.Errorf("flow %v–%v: bulk frames on workers %d and %d", k.lo, k.hi, w, r.worker)
			}
			owner[k] = r.worker
			if len(senders) != 2 {
				t.Errorf("flow %v–%v: worker %d saw %d direction(s), want both", k.lo, k.hi, r.worker, len(senders))
			}
		}
	}
	flows, v6, workers := 0, 0, map[int]bool{}
	for k, w := range owner {
		if k.lo.Port() != 7007 && k.hi.Port() != 7007 {
			continue
		}
		flows++
		if k.lo.Addr().Is6() {
			v6++
		}
		workers[w] = true
	}
	for _, r := range run {
		for k := range r.lane {
			if w, ok := owner[k]; ok && w != r.worker {
				t.Errorf("flow %v–%v: lane frames on worker %d, bulk on %d", k.lo, k.hi, r.worker, w)
			}
		}
	}
	if flows != conns {
		t.Fatalf("saw %d echo flows, want %d", flows, conns)
	}
	if len(workers) < 2 {
		t.Fatalf("all flows on %d worker(s): nothing proven", len(workers))
	}
	st := l.Stats()
	t.Logf("%d real TCP flows (%d IPv6) over %d workers; packets %d, lane %d, drops %d", flows, v6, len(workers), st.Packets, st.LanePackets, st.Drops)
}

// contextWithStop is a context cancelled when stop closes.
func contextWithStop(stop <-chan struct{}) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}
