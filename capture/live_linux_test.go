package capture

import (
	"context"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// marker starts the payload of every test frame, followed by a 4-byte id.
var marker = []byte("CANOPYCAP")

// seen is one frame as a worker's handler got it.
type seen struct {
	id     uint32
	worker int
	order  int // position in its worker's delivery sequence
	m      Meta
	p      Packet
	at     int64 // wall clock when the handler saw it
}

// collector is a Handler for one worker; it keeps only marked frames.
type collector struct {
	worker int
	got    []seen
	idles  atomic.Int64
	total  *atomic.Int64
	p      Packet
}

func (c *collector) Frame(b []byte, m *Meta) {
	at := time.Now().UnixNano()
	if Decode(b, m, &c.p) != OK {
		return
	}
	end := len(b)
	if int(m.WireLen)-len(b) > 4 { // lane frames may be cut short
		return
	}
	start := end - int(c.p.PayloadLen)
	if c.p.PayloadLen < uint16(len(marker)+4) || string(b[start:start+len(marker)]) != string(marker) {
		return
	}
	id := be.Uint32(b[start+len(marker):])
	c.got = append(c.got, seen{id: id, worker: c.worker, order: len(c.got), m: *m, p: c.p, at: at})
	c.total.Add(1)
}

func (c *collector) Idle(int64) { c.idles.Add(1) }

// runner runs every worker of a source into collectors.
type runner struct {
	t      *testing.T
	cs     []*collector
	total  atomic.Int64
	cancel context.CancelFunc
	wg     sync.WaitGroup
	errs   chan error
}

// startAll starts every worker of src; stop with wait.
func startAll(t *testing.T, src Source) *runner {
	ctx, cancel := context.WithCancel(context.Background())
	r := &runner{t: t, cancel: cancel, cs: make([]*collector, src.Workers()), errs: make(chan error, src.Workers())}
	for i := range r.cs {
		r.cs[i] = &collector{worker: i, total: &r.total}
		r.wg.Add(1)
		go func(i int) {
			defer r.wg.Done()
			r.errs <- src.Run(ctx, i, r.cs[i])
		}(i)
	}
	t.Cleanup(func() { cancel(); r.wg.Wait() })
	return r
}

// wait waits until want marked frames arrived or the deadline passed (then
// a little longer, so duplicates would show), stops the workers and
// returns the collectors.
func (r *runner) wait(want int64, deadline time.Duration) []*collector {
	r.t.Helper()
	end := time.Now().Add(deadline)
	for r.total.Load() < want && time.Now().Before(end) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	r.cancel()
	r.wg.Wait()
	close(r.errs)
	for err := range r.errs {
		if err != nil {
			r.t.Errorf("Run: %v", err)
		}
	}
	return r.cs
}

// flow is one test connection.
type flow struct {
	v6         bool
	a, b       net.IP
	aMAC, bMAC net.HardwareAddr
	aPort      uint16
	bPort      uint16
	labelAB    uint32 // IPv6 flow labels, different per direction
	labelBA    uint32
}

func randomFlow(r *rand.Rand, v6 bool) flow {
	f := flow{v6: v6, aPort: uint16(1024 + r.IntN(60000)), bPort: uint16(1 + r.IntN(1023)),
		aMAC: net.HardwareAddr{0x02, 0xca, 0, 0, 0, byte(r.Uint32())}, bMAC: net.HardwareAddr{0x02, 0xcb, 0, 0, 0, byte(r.Uint32())}}
	if v6 {
		f.a, f.b = make(net.IP, 16), make(net.IP, 16)
		fillRand(r, f.a)
		fillRand(r, f.b)
		f.a[0], f.b[0] = 0x20, 0x20
		f.labelAB, f.labelBA = uint32(r.IntN(1<<20)), uint32(r.IntN(1<<20))
	} else {
		f.a = net.IP{10, byte(r.IntN(256)), byte(r.IntN(256)), byte(1 + r.IntN(254))}
		f.b = net.IP{10, byte(r.IntN(256)), byte(r.IntN(256)), byte(1 + r.IntN(254))}
	}
	return f
}

// frame builds a TCP segment of the flow; reverse swaps the direction.
// The payload is the marker, the id and pad bytes; pad 0 with no SYN/FIN/RST
// still carries the marker, so for "pure ACK" frames use pureACK.
func (f flow) frame(tb testing.TB, reverse bool, flags uint8, id uint32, pad int, vlans ...*layers.Dot1Q) []byte {
	src, dst, smac, dmac, sp, dp, label := f.a, f.b, f.aMAC, f.bMAC, f.aPort, f.bPort, f.labelAB
	if reverse {
		src, dst, smac, dmac, sp, dp, label = f.b, f.a, f.bMAC, f.aMAC, f.bPort, f.aPort, f.labelBA
	}
	et := layers.EthernetTypeIPv4
	if f.v6 {
		et = layers.EthernetTypeIPv6
	}
	var ls []gopacket.SerializableLayer
	first := et
	if len(vlans) > 0 {
		first = layers.EthernetTypeDot1Q
		if len(vlans) == 2 {
			first = layers.EthernetTypeQinQ
		}
		for i, v := range vlans {
			v.Type = layers.EthernetTypeDot1Q
			if i == len(vlans)-1 {
				v.Type = et
			}
		}
	}
	ls = append(ls, &layers.Ethernet{SrcMAC: smac, DstMAC: dmac, EthernetType: first})
	for _, v := range vlans {
		ls = append(ls, v)
	}
	if f.v6 {
		ls = append(ls, &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP, SrcIP: src, DstIP: dst, FlowLabel: label})
	} else {
		ls = append(ls, &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: src, DstIP: dst})
	}
	t := tcp(flags)
	t.SrcPort, t.DstPort = layers.TCPPort(sp), layers.TCPPort(dp)
	pl := append([]byte(nil), marker...)
	pl = be.AppendUint32(pl, id)
	pl = append(pl, make([]byte, pad)...)
	return serialize(tb, append(ls, t, gopacket.Payload(pl))...)
}

// TestLiveEveryFrameOnceBothDirectionsSameWorker sends a mix of IPv4 and
// IPv6 flows over two veth "TAP legs" (client→server on leg 0,
// server→client on leg 1, some flows entirely on leg 0) and checks: every
// frame reaches exactly one worker through the bulk rings; both directions
// of a flow, on both legs, reach the same worker; the lane delivers exactly
// the race-deciding frames, on the same worker, before the bulk copy and
// with its kernel timestamp; Meta.Port names the leg.
func TestLiveEveryFrameOnceBothDirectionsSameWorker(t *testing.T) {
	tn := newTestNet(t, 2)
	l := tn.openLiveIn(t, LiveConfig{Ifaces: []string{tn.pairs[0][1], tn.pairs[1][1]}, Workers: 3, Lane: true, NumBlocks: 64, BlockSize: 1 << 16})
	tx := []*txSock{tn.openTx(t, tn.pairs[0][0]), tn.openTx(t, tn.pairs[1][0])}
	run := startAll(t, l)

	r := rand.New(rand.NewPCG(11, uint64(time.Now().UnixNano())))
	type sent struct {
		flow   int
		leg    int
		lane   bool
		labels [2]uint32
	}
	var flows []flow
	var want []sent
	var id uint32
	for fi := 0; fi < 48; fi++ {
		f := randomFlow(r, fi%2 == 1)
		flows = append(flows, f)
		tapLegs := fi%3 != 0 // two thirds use both legs, like a TAP
		// SYN, SYN-ACK, ACK, data both ways, pure ACKs, FIN, RST.
		script := []struct {
			rev   bool
			flags uint8
			pad   int
		}{
			{false, FlagSYN, 0}, {true, FlagSYN | FlagACK, 0}, {false, FlagACK, -1},
			{false, FlagACK | FlagPSH, 100}, {true, FlagACK, -1}, {true, FlagACK | FlagPSH, 1000},
			{false, FlagACK, -1}, {false, FlagFIN | FlagACK, 0}, {true, FlagRST, 0},
		}
		for _, s := range script {
			leg := 0
			if s.rev && tapLegs {
				leg = 1
			}
			var fr []byte
			lane := s.flags&(FlagSYN|FlagFIN|FlagRST) != 0 || s.pad >= 0
			if s.pad < 0 {
				// A pure ACK: no payload. Its id goes into the TCP
				// timestamp option so the collector can't see it as
				// marked; the lane must not pass it, the bulk must.
				fr = f.frame(t, s.rev, s.flags, id, 0)
				fr = pureACK(t, fr)
			} else {
				fr = f.frame(t, s.rev, s.flags, id, s.pad)
			}
			want = append(want, sent{flow: fi, leg: leg, lane: lane})
			tx[leg].send(t, fr)
			id++
		}
	}
	marked := 0
	laneWant := 0
	for _, w := range want {
		if w.lane {
			marked++
			laneWant++
		}
	}
	// Marked frames are the ones with payload or SYN/FIN/RST (all carry the
	// marker); pure ACKs are counted through Stats below.
	cs := run.wait(int64(marked+laneWant), 5*time.Second)

	bulk := map[uint32]seen{}
	laneSeen := map[uint32]seen{}
	for _, c := range cs {
		for _, s := range c.got {
			dst := bulk
			if s.m.Lane {
				dst = laneSeen
			}
			if prev, dup := dst[s.id]; dup {
				t.Fatalf("frame %d delivered twice (lane=%v): workers %d and %d", s.id, s.m.Lane, prev.worker, s.worker)
			}
			dst[s.id] = s
		}
	}
	flowWorker := map[int]int{}
	for i, w := range want {
		if !w.lane {
			continue
		}
		b, ok := bulk[uint32(i)]
		if !ok {
			st := l.Stats()
			t.Fatalf("frame %d (flow %d) never arrived through the bulk ring (kernel drops %d, queue freezes %d)", i, w.flow, st.Drops, st.QueueFreezes)
		}
		if int(b.m.Port) != w.leg {
			t.Errorf("frame %d: Meta.Port %d, sent on leg %d", i, b.m.Port, w.leg)
		}
		if fw, ok := flowWorker[w.flow]; ok && fw != b.worker {
			t.Errorf("flow %d (v6=%v) split: frames on workers %d and %d", w.flow, flows[w.flow].v6, fw, b.worker)
		}
		flowWorker[w.flow] = b.worker
		ln, ok := laneSeen[uint32(i)]
		if !ok {
			t.Errorf("frame %d (flags %#x) missing from the lane", i, b.p.Flags)
			continue
		}
		if ln.worker != b.worker {
			t.Errorf("frame %d: lane worker %d, bulk worker %d", i, ln.worker, b.worker)
		}
		if ln.order > b.order {
			t.Errorf("frame %d: bulk copy delivered before the lane copy", i)
		}
		if ln.m.Timestamp != b.m.Timestamp {
			t.Errorf("frame %d: lane timestamp %d != bulk timestamp %d (dedup key broken)", i, ln.m.Timestamp, b.m.Timestamp)
		}
		if ln.p.Src != b.p.Src || ln.p.Seq != b.p.Seq || ln.p.Flags != b.p.Flags || ln.p.PayloadLen != b.p.PayloadLen {
			t.Errorf("frame %d: lane and bulk decode differently", i)
		}
	}
	used := map[int]bool{}
	for _, w := range flowWorker {
		used[w] = true
	}
	if len(used) < 2 {
		t.Fatalf("all %d flows landed on %d worker(s): the symmetry check proves nothing", len(flows), len(used))
	}
	st := l.Stats()
	if st.Drops != 0 || st.QueueFreezes != 0 {
		t.Errorf("kernel drops %d, freezes %d", st.Drops, st.QueueFreezes)
	}
	if st.Packets < uint64(len(want)) {
		t.Errorf("Stats.Packets %d < %d frames sent", st.Packets, len(want))
	}
	if st.LanePackets != uint64(laneWant) {
		t.Errorf("Stats.LanePackets %d, want %d (pure ACKs must not use the lane)", st.LanePackets, laneWant)
	}
	if n := len(st.Sockets); n != 2*3*2 {
		t.Errorf("%d sockets in Stats, want 12 (2 legs × 3 workers × bulk+lane)", n)
	}
	t.Logf("%d frames, %d flows over %d workers; stats: packets %d lane %d bytes %d", len(want), len(flows), len(used), st.Packets, st.LanePackets, st.Bytes)
}

// pureACK strips the payload from a marked frame, keeping it a valid
// segment with no payload (and so unmarked for the collector).
func pureACK(tb testing.TB, fr []byte) []byte {
	var p Packet
	if r := Decode(fr, &Meta{}, &p); r != OK {
		tb.Fatal(r)
	}
	n := len(fr) - int(p.PayloadLen)
	out := append([]byte(nil), fr[:n]...)
	off := int(p.L3Offset)
	if p.IPVersion == 4 {
		be.PutUint16(out[off+2:], p.IPLen-p.PayloadLen)
		out[off+10], out[off+11] = 0, 0
		var sum uint32
		for i := 0; i < 20; i += 2 {
			sum += uint32(be.Uint16(out[off+i:]))
		}
		for sum > 0xffff {
			sum = sum&0xffff + sum>>16
		}
		be.PutUint16(out[off+10:], ^uint16(sum))
	} else {
		be.PutUint16(out[off+4:], p.IPLen-40-p.PayloadLen)
	}
	return out
}

// TestLiveVLANStackRecovered writes 802.1Q and QinQ frames onto a veth. The
// receiving kernel moves the outer tag into the ring header; the frame must
// come out of Decode with the whole stack, outermost first.
func TestLiveVLANStackRecovered(t *testing.T) {
	tn := newTestNet(t, 1)
	l := tn.openLiveIn(t, LiveConfig{Ifaces: []string{tn.pairs[0][1]}, Workers: 2, Lane: true, NumBlocks: 4, BlockSize: 1 << 16})
	tx := tn.openTx(t, tn.pairs[0][0])
	run := startAll(t, l)
	r := rand.New(rand.NewPCG(5, 6))
	f := randomFlow(r, false)
	g := randomFlow(r, true)
	tx.send(t, f.frame(t, false, FlagSYN, 0, 0, &layers.Dot1Q{VLANIdentifier: 100, Priority: 3}))
	tx.send(t, g.frame(t, false, FlagSYN, 1, 0, &layers.Dot1Q{VLANIdentifier: 100, Priority: 3}))
	tx.send(t, f.frame(t, false, FlagSYN, 2, 0, &layers.Dot1Q{VLANIdentifier: 200}, &layers.Dot1Q{VLANIdentifier: 300, Priority: 5}))
	tx.send(t, g.frame(t, false, FlagACK, 3, 10, &layers.Dot1Q{VLANIdentifier: 4000}, &layers.Dot1Q{VLANIdentifier: 7}))
	cs := run.wait(8, 5*time.Second)
	want := map[uint32][]VLAN{
		0: {{0x8100, 3<<13 | 100}},
		1: {{0x8100, 3<<13 | 100}},
		2: {{0x88a8, 200}, {0x8100, 5<<13 | 300}},
		3: {{0x88a8, 4000}, {0x8100, 7}},
	}
	n := 0
	for _, c := range cs {
		for _, s := range c.got {
			n++
			w := want[s.id]
			if !s.m.HasVLAN {
				t.Errorf("frame %d (lane=%v): kernel did not report the stripped tag", s.id, s.m.Lane)
			}
			if int(s.p.NumVLANs) != len(w) || s.p.VLANs[0] != w[0] || len(w) == 2 && s.p.VLANs[1] != w[1] {
				t.Errorf("frame %d (lane=%v): tags %v (n=%d), want %v", s.id, s.m.Lane, s.p.VLANs, s.p.NumVLANs, w)
			}
			if s.p.SrcPort == 0 || s.p.IPVersion == 0 {
				t.Errorf("frame %d: not decoded past the tags: %+v", s.id, s.p)
			}
		}
	}
	if n != 8 {
		t.Fatalf("%d deliveries, want 8 (4 frames × bulk + lane)", n)
	}
}

// TestLiveIgnoresOutgoing sends frames out of the capture interface itself
// (as the injector does in reflect mode) and checks the capture never sees
// them, while it does see what arrives.
func TestLiveIgnoresOutgoing(t *testing.T) {
	t.Run("fanout flag", testIgnoresOutgoing)
	t.Run("pkttype fallback for kernels before 6.1", func(t *testing.T) {
		tryFanoutIgnoreOutgoing = false
		defer func() { tryFanoutIgnoreOutgoing = true }()
		testIgnoresOutgoing(t)
	})
}

func testIgnoresOutgoing(t *testing.T) {
	tn := newTestNet(t, 1)
	l := tn.openLiveIn(t, LiveConfig{Ifaces: []string{tn.pairs[0][1]}, Workers: 2, Lane: true, NumBlocks: 4, BlockSize: 1 << 16})
	out := tn.openTx(t, tn.pairs[0][1]) // from the capture port
	in := tn.openTx(t, tn.pairs[0][0])  // towards it
	run := startAll(t, l)
	f := randomFlow(rand.New(rand.NewPCG(1, 1)), false)
	for i := uint32(0); i < 20; i++ {
		out.send(t, f.frame(t, false, FlagRST, i, 0))
	}
	in.send(t, f.frame(t, true, FlagSYN, 100, 0))
	cs := run.wait(2, 5*time.Second)
	for _, c := range cs {
		for _, s := range c.got {
			if s.id != 100 {
				t.Fatalf("captured our own outgoing frame %d (lane=%v)", s.id, s.m.Lane)
			}
		}
	}
	if n := len(cs[0].got) + len(cs[1].got); n != 2 {
		t.Fatalf("%d deliveries of the incoming frame, want 2 (bulk + lane)", n)
	}
}

// TestLiveWakeStopClose checks the control paths: Wake gets an Idle call
// promptly from a busy or idle worker, ctx cancel ends Run with nil, Close
// stops a running Run and later Runs fail.
func TestLiveWakeStopClose(t *testing.T) {
	tn := newTestNet(t, 1)
	l := tn.openLiveIn(t, LiveConfig{Ifaces: []string{tn.pairs[0][1]}, Workers: 1, Lane: true, NumBlocks: 4, BlockSize: 1 << 16})
	var total atomic.Int64
	c := &collector{total: &total}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- l.Run(ctx, 0, c) }()

	// Idle within 100 ms of silence happens on its own; Wake must add one
	// promptly. Wait for the first periodic Idle, then Wake.
	waitFor(t, "periodic Idle", func() bool { return c.idles.Load() >= 1 })
	if err := l.Run(context.Background(), 0, c); err == nil {
		t.Fatal("a second concurrent Run of worker 0 was allowed")
	}
	before := c.idles.Load()
	l.Wake(0)
	l.Wake(0) // coalesces
	waitFor(t, "Idle after Wake", func() bool { return c.idles.Load() > before })
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Run after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	// Close while running.
	go func() { errc <- l.Run(context.Background(), 0, c) }()
	time.Sleep(20 * time.Millisecond)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Run ended by Close returned %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not stop Run")
	}
	if err := l.Run(context.Background(), 0, c); err == nil {
		t.Fatal("Run after Close succeeded")
	}
	l.Wake(0) // must not touch a closed fd
	_ = l.Stats()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestLiveConfigErrors(t *testing.T) {
	for _, c := range []LiveConfig{
		{},
		{Ifaces: []string{"a", "a"}},
		{Ifaces: []string{"a"}, BlockSize: 5000},
		{Ifaces: []string{"a"}, NumBlocks: 1},
		{Ifaces: []string{"a"}, Workers: -1},
		{Ifaces: []string{"a"}, BlockTimeout: -time.Millisecond},
	} {
		if _, err := OpenLive(c); err == nil {
			t.Errorf("OpenLive(%+v) succeeded", c)
		}
	}
	needRoot(t)
	if _, err := OpenLive(LiveConfig{Ifaces: []string{"nonexistent-if0"}}); err == nil {
		t.Error("OpenLive on a missing interface succeeded")
	}
}

// latencies returns p50, p99 and max of d.
func latencies(d []time.Duration) (p50, p99, mx time.Duration) {
	if len(d) == 0 {
		return
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2], s[len(s)*99/100], s[len(s)-1]
}

// TestLiveSurvivesLinkFlapFailsOnRemoval takes the capture port down and up
// (a mirror port flapping must not stop the sensor) and then deletes it
// (which must end Run with an error naming the interface).
func TestLiveSurvivesLinkFlapFailsOnRemoval(t *testing.T) {
	tn := newTestNet(t, 1)
	l := tn.openLiveIn(t, LiveConfig{Ifaces: []string{tn.pairs[0][1]}, Workers: 2, Lane: true, NumBlocks: 4, BlockSize: 1 << 16})
	tx := tn.openTx(t, tn.pairs[0][0])
	var total atomic.Int64
	cs := []*collector{{worker: 0, total: &total}, {worker: 1, total: &total}}
	errc := make(chan error, 2)
	for i := range cs {
		go func() { errc <- l.Run(context.Background(), i, cs[i]) }()
	}
	setLink := func(up bool) {
		tn.in(t, func() {
			lk, err := netlink.LinkByName(tn.pairs[0][1])
			if err == nil {
				if up {
					err = netlink.LinkSetUp(lk)
				} else {
					err = netlink.LinkSetDown(lk)
				}
			}
			if err != nil {
				t.Errorf("link up=%v: %v", up, err)
			}
		})
	}
	f := randomFlow(rand.New(rand.NewPCG(4, 4)), false)
	tx.send(t, f.frame(t, false, FlagSYN, 1, 0))
	waitFor(t, "frame before the flap", func() bool { return total.Load() == 2 })
	setLink(false)
	time.Sleep(50 * time.Millisecond)
	setLink(true)
	time.Sleep(50 * time.Millisecond)
	select {
	case err := <-errc:
		t.Fatalf("Run ended on a link flap: %v", err)
	default:
	}
	tx.send(t, f.frame(t, false, FlagSYN, 2, 0))
	waitFor(t, "frame after the flap", func() bool { return total.Load() == 4 })
	var downs uint64
	for _, s := range l.Stats().Sockets {
		downs += s.LinkDowns
	}
	if downs == 0 {
		t.Error("the flap is not visible in SocketStats.LinkDowns")
	}

	tn.in(t, func() {
		lk, err := netlink.LinkByName(tn.pairs[0][1])
		if err == nil {
			err = netlink.LinkDel(lk)
		}
		if err != nil {
			t.Errorf("delete link: %v", err)
		}
	})
	for i := 0; i < 2; i++ {
		select {
		case err := <-errc:
			if err == nil || !strings.Contains(err.Error(), "removed") {
				t.Errorf("Run after the interface was deleted = %v, want an error saying it was removed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Run kept running on a deleted interface")
		}
	}
}

// slowCounter is a Handler slow enough (a few µs per frame) that a flood
// keeps its rings from ever running dry.
type slowCounter struct {
	frames, idles atomic.Int64
}

func (s *slowCounter) Frame([]byte, *Meta) {
	end := time.Now().Add(3 * time.Microsecond)
	for time.Now().Before(end) {
	}
	s.frames.Add(1)
}
func (s *slowCounter) Idle(int64) { s.idles.Add(1) }

// TestLiveWakeUnderLoad floods a worker that cannot keep up, so its rings
// never run dry and it never goes idle, and checks a Wake still gets an
// Idle call while the backlog is being worked off (the wake flag is
// checked between blocks, not only when polling).
func TestLiveWakeUnderLoad(t *testing.T) {
	tn := newTestNet(t, 1)
	l := tn.openLiveIn(t, LiveConfig{Ifaces: []string{tn.pairs[0][1]}, Workers: 1, NumBlocks: 64, BlockSize: 1 << 16})
	tx := tn.openTx(t, tn.pairs[0][0])
	frame := randomFlow(rand.New(rand.NewPCG(2, 2)), false).frame(t, false, FlagACK, 0, 200)
	// Fill the ring before the worker starts: a backlog of full blocks.
	for i := 0; i < 20000; i++ {
		tx.send(t, frame)
	}
	h := &slowCounter{}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- l.Run(ctx, 0, h) }()
	waitFor(t, "worker busy", func() bool { return h.frames.Load() > 100 })
	if h.idles.Load() != 0 {
		t.Fatalf("Idle called %d times with a backlog: the worker was not busy, test proves nothing", h.idles.Load())
	}
	l.Wake(0)
	waitFor(t, "Idle after Wake under load", func() bool { return h.idles.Load() > 0 })
	backlogLeft := h.frames.Load()
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	st := l.Stats()
	if backlogLeft >= int64(st.Packets-st.Drops) {
		t.Fatalf("Idle came only after the backlog was drained (%d of %d frames handled)", backlogLeft, st.Packets-st.Drops)
	}
	t.Logf("Wake served after %d of %d backlog frames", backlogLeft, st.Packets-st.Drops)
}

// TestLiveLaneNaps checks when a worker naps instead of polling (see
// napRate): never for lane frames that come one at a time, whose latency
// decides a reset's race on a quiet link, and while they come as fast as
// a sender can write them; never at all with LaneNap negative. Stats
// counts the naps.
func TestLiveLaneNaps(t *testing.T) {
	for _, c := range []struct {
		name string
		nap  time.Duration
	}{
		{"default", 0},
		{"off", -1},
	} {
		t.Run(c.name, func(t *testing.T) {
			lone, flood := laneNaps(t, c.nap)
			if lone.naps != 0 {
				t.Errorf("%d naps after lane frames that came one at a time, want 0: a lone frame must be handled at once", lone.naps)
			}
			if flood.stats != flood.naps {
				t.Errorf("Stats().LaneNaps = %d, the worker took %d", flood.stats, flood.naps)
			}
			// A worker that wakes per frame slows the sender sharing its
			// CPUs, so "off" needs only a rate the default would nap at.
			switch {
			case c.nap < 0 && flood.rate < napRate, c.nap == 0 && flood.rate < 2*napRate:
				t.Skipf("the sender managed %.0f frames/s, too few to be sure the worker should nap", flood.rate)
			case c.nap < 0 && flood.naps != 0:
				t.Errorf("%d naps in %v of a lane flood with napping off, want 0", flood.naps, flood.took)
			case c.nap == 0 && flood.naps < uint64(flood.took/(10*DefaultLaneNap)):
				t.Errorf("%d naps in %v of a lane flood, want at least one per %v: the worker polled for each frame", flood.naps, flood.took, 10*DefaultLaneNap)
			}
			t.Logf("%d naps in %v of lane frames at %.0f/s", flood.naps, flood.took, flood.rate)
		})
	}
}

// napCount is what a worker did with one phase of lane frames.
type napCount struct {
	naps, stats uint64 // the worker's naps, and Stats().LaneNaps, after the phase
	took        time.Duration
	rate        float64 // frames a second the sender managed
}

// laneNaps runs one worker with the given LaneNap through 40 SYNs 3 ms
// apart, then a flood of 100,000 back to back, and counts its naps after
// each.
func laneNaps(t *testing.T, nap time.Duration) (lone, flood napCount) {
	tn := newTestNet(t, 1)
	l := tn.openLiveIn(t, LiveConfig{Ifaces: []string{tn.pairs[0][1]}, Workers: 1, Lane: true, LaneNap: nap})
	tx := tn.openTx(t, tn.pairs[0][0])
	f := randomFlow(rand.New(rand.NewPCG(4, 4)), false)
	h := &laneBulkCounter{}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- l.Run(ctx, 0, h) }()
	defer func() {
		cancel()
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}()
	w := l.workers[0]
	// send writes n SYNs (the lane takes SYNs) back to back and waits
	// until the worker has both copies of each, lane and bulk, or the
	// kernel counted them dropped (a busy machine can starve the worker
	// of a flood's lane frames).
	seq := uint32(0)
	var want [2]uint64 // bulk, lane
	send := func(n int) {
		want[0] += uint64(n)
		want[1] += uint64(n)
		for range n {
			seq++
			tx.send(t, f.frame(t, false, FlagSYN, seq, 0))
		}
		waitFor(t, "the lane and bulk copies", func() bool {
			got := [2]uint64{h.n[0].Load(), h.n[1].Load()}
			for _, so := range l.Stats().Sockets {
				got[b2i(so.Lane)] += so.Drops
			}
			return got[0] >= want[0] && got[1] >= want[1]
		})
	}
	count := func(start time.Time, n int) napCount {
		el := time.Since(start)
		return napCount{naps: w.naps.Load(), stats: l.Stats().LaneNaps, took: el.Round(time.Millisecond), rate: float64(n) / el.Seconds()}
	}
	start := time.Now()
	for range 40 {
		send(1)
		time.Sleep(3 * time.Millisecond)
	}
	lone = count(start, 40)
	start = time.Now()
	send(100_000)
	return lone, count(start, 100_000)
}

// laneBulkCounter counts bulk frames in n[0] and lane frames in n[1].
type laneBulkCounter struct{ n [2]atomic.Uint64 }

func (c *laneBulkCounter) Frame(_ []byte, m *Meta) { c.n[b2i(m.Lane)].Add(1) }
func (c *laneBulkCounter) Idle(int64)              {}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestLivePromiscuous checks Promiscuous puts the port in promiscuous mode
// while capture is open and Close takes it out again.
func TestLivePromiscuous(t *testing.T) {
	tn := newTestNet(t, 1)
	promisc := func() (on bool) {
		tn.in(t, func() {
			lk, err := netlink.LinkByName(tn.pairs[0][1])
			if err != nil {
				t.Error(err)
				return
			}
			on = lk.Attrs().Promisc > 0 // IFLA_PROMISCUITY: socket memberships do not show in the flags
		})
		return on
	}
	var l *Live
	var err error
	tn.in(t, func() {
		l, err = OpenLive(LiveConfig{Ifaces: []string{tn.pairs[0][1]}, Workers: 2, Promiscuous: true, NumBlocks: 4, BlockSize: 1 << 16})
	})
	if err != nil {
		t.Fatal(err)
	}
	if !promisc() {
		t.Error("port not promiscuous while capturing")
	}
	l.Close()
	if promisc() {
		t.Error("port still promiscuous after Close")
	}
}

// TestLiveDefragmentsBeforeFanout sends one TCP segment as two IPv4
// fragments. The bulk group (PACKET_FANOUT_FLAG_DEFRAG) must deliver it
// once, reassembled, so the worker sees ports and the whole payload; the
// lane must not deliver the fragments (its group cannot defragment, so a
// fragment could hash to another worker there).
func TestLiveDefragmentsBeforeFanout(t *testing.T) {
	tn := newTestNet(t, 1)
	l := tn.openLiveIn(t, LiveConfig{Ifaces: []string{tn.pairs[0][1]}, Workers: 2, Lane: true, NumBlocks: 4, BlockSize: 1 << 16})
	tx := tn.openTx(t, tn.pairs[0][0])
	run := startAll(t, l)

	f := randomFlow(rand.New(rand.NewPCG(8, 8)), false)
	whole := f.frame(t, false, FlagACK|FlagPSH, 77, 600)
	var p Packet
	if Decode(whole, &Meta{}, &p) != OK {
		t.Fatal("bad test frame")
	}
	ipHdr := whole[14 : 14+20]
	l4 := whole[14+20:] // TCP header + payload, 8-byte aligned split below
	split := 304
	frag := func(data []byte, offset int, more bool) []byte {
		out := append([]byte(nil), whole[:14]...)
		h := append([]byte(nil), ipHdr...)
		be.PutUint16(h[2:], uint16(20+len(data)))
		v := uint16(offset / 8)
		if more {
			v |= 0x2000
		}
		be.PutUint16(h[6:], v)
		be.PutUint16(h[4:], 0x4242) // IP id
		h[10], h[11] = 0, 0
		var sum uint32
		for i := 0; i < 20; i += 2 {
			sum += uint32(be.Uint16(h[i:]))
		}
		for sum > 0xffff {
			sum = sum&0xffff + sum>>16
		}
		be.PutUint16(h[10:], ^uint16(sum))
		return append(append(out, h...), data...)
	}
	tx.send(t, frag(l4[:split], 0, true))
	tx.send(t, frag(l4[split:], split, false))

	cs := run.wait(1, 5*time.Second)
	var got []seen
	for _, c := range cs {
		got = append(got, c.got...)
	}
	if len(got) != 1 {
		t.Fatalf("%d marked deliveries, want exactly 1 (the reassembled segment, bulk only)", len(got))
	}
	s := got[0]
	if s.m.Lane || s.id != 77 || s.p.Frag != FragNone || s.p.PayloadLen != p.PayloadLen || s.p.SrcPort != p.SrcPort {
		t.Fatalf("delivered %+v (lane=%v), want the reassembled segment", s.p, s.m.Lane)
	}
	if st := l.Stats(); st.LanePackets != 0 {
		t.Errorf("lane delivered %d frames; fragments must stay out of it", st.LanePackets)
	}
}

// TestLiveExplicitFanoutIDs checks a configured FanoutID is used (two ids
// per interface) and that a second capture on the same ids with other
// settings is refused with an error naming the fix, instead of silently
// joining (and splitting) the first one's flows.
func TestLiveExplicitFanoutIDs(t *testing.T) {
	tn := newTestNet(t, 1)
	const id = 4242
	l := tn.openLiveIn(t, LiveConfig{Ifaces: []string{tn.pairs[0][1]}, Workers: 2, Lane: true, FanoutID: id, NumBlocks: 4, BlockSize: 1 << 16})
	for _, w := range l.workers {
		for _, s := range append(append([]*sock{}, w.bulk...), w.lane...) {
			v, err := unix.GetsockoptInt(s.fd, unix.SOL_PACKET, unix.PACKET_FANOUT)
			if err != nil {
				t.Fatal(err)
			}
			want := uint16(id)
			if s.lane {
				want++
			}
			if uint16(v) != want {
				t.Errorf("socket (lane=%v) in fanout group %d, want %d", s.lane, uint16(v), want)
			}
		}
	}
	var err error
	tn.in(t, func() {
		var l2 *Live
		// Same ids, but another BlockSize is fine for the kernel; what it
		// refuses is a different flag set, e.g. the lane group (no DEFRAG)
		// id used as a bulk group (DEFRAG).
		l2, err = OpenLive(LiveConfig{Ifaces: []string{tn.pairs[0][1]}, Workers: 1, FanoutID: id + 1, NumBlocks: 4, BlockSize: 1 << 16})
		if err == nil {
			l2.Close()
		}
	})
	if err == nil || !strings.Contains(err.Error(), "FanoutID") {
		t.Fatalf("OpenLive on a fanout id in use with other settings = %v, want an error naming FanoutID", err)
	}
}

// TestLiveNoStartupDuplicates sends a stream of frames while OpenLive is
// building the fanout groups. A socket that is bound but not yet in its
// group gets a copy of every frame, so without the drop-all start-up
// filter early frames would reach two workers.
func TestLiveNoStartupDuplicates(t *testing.T) {
	tn := newTestNet(t, 1)
	tx := tn.openTx(t, tn.pairs[0][0])
	r := rand.New(rand.NewPCG(6, 6))
	var frames [][]byte
	for i := 0; i < 64; i++ {
		frames = append(frames, randomFlow(r, i%2 == 0).frame(t, false, FlagSYN, 0, 0))
	}
	stop := make(chan struct{})
	sent := make(chan uint32)
	go func() {
		var id uint32
		defer func() { sent <- id }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			fr := frames[id%64]
			be.PutUint32(fr[len(fr)-4:], id) // the marker's id field
			tx.send(t, fr)
			id++
		}
	}()
	time.Sleep(20 * time.Millisecond)
	l := tn.openLiveIn(t, LiveConfig{Ifaces: []string{tn.pairs[0][1]}, Workers: 4, Lane: true, NumBlocks: 64, BlockSize: 1 << 16})
	time.Sleep(20 * time.Millisecond)
	close(stop)
	n := <-sent
	cs := startAll(t, l).wait(1<<62, 500*time.Millisecond)
	bulk := map[uint32]int{}
	lane := map[uint32]int{}
	for _, c := range cs {
		for _, s := range c.got {
			if s.m.Lane {
				lane[s.id]++
			} else {
				bulk[s.id]++
			}
		}
	}
	for id, k := range bulk {
		if k > 1 {
			t.Fatalf("frame %d delivered %d times through the bulk rings", id, k)
		}
	}
	for id, k := range lane {
		if k > 1 {
			t.Fatalf("frame %d delivered %d times through the lane", id, k)
		}
	}
	if len(bulk) == 0 {
		t.Fatalf("none of the %d frames sent during start-up was captured", n)
	}
	t.Logf("%d frames sent around OpenLive, %d captured once each (bulk), %d (lane)", n, len(bulk), len(lane))
}
