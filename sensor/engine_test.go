package sensor

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"canopy/capture"
	"canopy/flow"
	"canopy/inject"
	"canopy/rules"
)

// scriptSource is a capture.Source that plays a fixed list of frames to one
// worker, then ends like a capture file. It stands in for the ring so the
// engine's decisions can be checked frame by frame; the live path is
// covered by the lab tests.
type scriptSource struct {
	frames [][]byte
	gaps   []time.Duration // per frame: pause before it (lets the test add bans mid-stream)
	ts     []int64
	hook   func(i int)
	batch  bool         // hand a BatchHandler the frames up to MaxBatch at a time, as a live ring does
	lane   []bool       // per frame: a lane copy (Meta.Lane; always through Frame)
	breaks map[int]bool // batched: a ring block ends before these frames (where a hook acts)
	stats  capture.Stats
	mu     sync.Mutex
}

func (s *scriptSource) isLane(i int) bool { return i < len(s.lane) && s.lane[i] }

func (s *scriptSource) Workers() int { return 1 }
func (s *scriptSource) Wake(int)     {}
func (s *scriptSource) Close() error { return nil }
func (s *scriptSource) Stats() capture.Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}
func (s *scriptSource) Run(ctx context.Context, _ int, h capture.Handler) error {
	if bh, ok := h.(capture.BatchHandler); ok && s.batch {
		// As the live ring does: lane frames one at a time through Frame,
		// bulk frames in blocks (ending at a lane frame or a break) handed
		// over up to MaxBatch at a time, control requests between them.
		ms := make([]capture.Meta, len(s.frames))
		for i := 0; i < len(s.frames); {
			if s.hook != nil {
				s.hook(i)
			}
			h.Idle(s.ts[i])
			if s.isLane(i) {
				ms[i] = capture.Meta{Timestamp: s.ts[i], WireLen: uint32(len(s.frames[i])), Lane: true}
				h.Frame(s.frames[i], &ms[i])
				i++
				continue
			}
			end := i + 1
			for end < len(s.frames) && end-i < capture.MaxBatch && !s.isLane(end) && !s.breaks[end] {
				end++
			}
			for j := i; j < end; j++ {
				ms[j] = capture.Meta{Timestamp: s.ts[j], WireLen: uint32(len(s.frames[j]))}
			}
			bh.Frames(s.frames[i:end], ms[i:end])
			s.mu.Lock()
			s.stats.Packets += uint64(end - i)
			s.mu.Unlock()
			i = end
		}
		h.Idle(s.ts[len(s.ts)-1] + int64(time.Second))
		return nil
	}
	for i, f := range s.frames {
		if s.hook != nil {
			s.hook(i)
		}
		h.Idle(s.ts[i]) // runs control requests queued by the hook
		m := capture.Meta{Timestamp: s.ts[i], WireLen: uint32(len(f)), Lane: s.isLane(i)}
		h.Frame(f, &m)
		s.mu.Lock()
		s.stats.Packets++
		s.mu.Unlock()
	}
	h.Idle(s.ts[len(s.ts)-1] + int64(time.Second))
	return nil
}

var (
	macClient = net.HardwareAddr{2, 0, 0, 0, 0, 1}
	macServer = net.HardwareAddr{2, 0, 0, 0, 0, 2}
)

// tcpFrame builds an Ethernet/IPv4-or-6/TCP frame.
func tcpFrame(t testing.TB, src, dst netip.AddrPort, seq, ack uint32, flags string, payload string, ttl uint8) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: macClient, DstMAC: macServer, EthernetType: layers.EthernetTypeIPv4}
	if strings.HasPrefix(src.Addr().String(), "192.0.2.") { // the server side
		eth.SrcMAC, eth.DstMAC = macServer, macClient
	}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()), Seq: seq, Ack: ack, Window: 502,
		SYN: strings.Contains(flags, "S"), ACK: strings.Contains(flags, "A"), FIN: strings.Contains(flags, "F"),
		RST: strings.Contains(flags, "R"), PSH: strings.Contains(flags, "P")}
	var net gopacket.NetworkLayer
	if src.Addr().Is4() {
		ip := &layers.IPv4{Version: 4, TTL: ttl, Protocol: layers.IPProtocolTCP, SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
		net = ip
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		net = &layers.IPv6{Version: 6, HopLimit: ttl, NextHeader: layers.IPProtocolTCP, SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
	}
	if err := tcp.SetNetworkLayerForChecksum(net); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, net.(gopacket.SerializableLayer), tcp, gopacket.Payload(payload))
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// frameScript collects a scriptSource's frames, gap apart in time.
type frameScript struct {
	frames    [][]byte
	ts        []int64
	base, gap int64
}

func newFrameScript(gap time.Duration) *frameScript {
	return &frameScript{base: time.Now().UnixNano(), gap: int64(gap)}
}

func (s *frameScript) add(f []byte) {
	s.frames = append(s.frames, f)
	s.ts = append(s.ts, s.base+int64(len(s.ts))*s.gap)
}

type harness struct {
	t     *testing.T
	store *rules.Store
	rec   *inject.Recorder
	e     *Engine
}

func newHarness(t *testing.T, src capture.Source, mode Mode) *harness {
	t.Helper()
	store, err := rules.Open(rules.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	rec := inject.NewRecorder(64)
	e, err := New(Config{
		Mode:      mode,
		Injection: Injection{Sender: rec, SrcMAC: [6]byte{2, 0, 0, 0, 0, 9}, NextHop: fixedMAC{2, 0, 0, 0, 0, 0xaa}},
	}, src, store)
	if err != nil {
		t.Fatal(err)
	}
	// These tests check decisions frame by frame, not pacing: a kill step
	// cut short by a slow run (the race detector) would end the kill
	// after other frames than in a fast one.
	for _, w := range e.workers {
		w.killStep = time.Hour
	}
	return &harness{t: t, store: store, rec: rec, e: e}
}

type fixedMAC [6]byte

func (m fixedMAC) MAC() [6]byte { return m }

func (h *harness) ban(value string) {
	h.t.Helper()
	if _, _, err := h.store.Add(rules.Request{Kind: rules.KindBan, Value: value, Origin: rules.OriginAPI, Reason: "test"}); err != nil {
		h.t.Fatal(err)
	}
}

// sent decodes every frame the recorder saw.
func sentResets(t *testing.T, rec *inject.Recorder) []string {
	t.Helper()
	return rec.Last()
}

func TestEngineResetsBannedHandshakeAndData(t *testing.T) {
	client := netip.MustParseAddrPort("198.51.100.7:40000")
	server := netip.MustParseAddrPort("192.0.2.10:7")
	base := time.Now().UnixNano()
	src := &scriptSource{
		frames: [][]byte{
			tcpFrame(t, client, server, 1000, 0, "S", "", 61),
			tcpFrame(t, server, client, 5000, 1001, "SA", "", 63),
			tcpFrame(t, client, server, 1001, 5001, "AP", "hello\n", 61),
		},
		ts: []int64{base, base + 50_000, base + 100_000},
	}
	h := newHarness(t, src, ModeEnforce)
	h.ban("198.51.100.7")
	if err := h.e.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := sentResets(t, h.rec)
	// Resets toward the responder (the server) always go first.
	want := []string{
		// SYN: drop the server's half-open side, refuse the client (ack = ISN+1).
		"RST 198.51.100.7:40000 > 192.0.2.10:7 seq=1001 ttl=61",
		"RST|ACK 192.0.2.10:7 > 198.51.100.7:40000 seq=0 ack=1001 ttl=64",
		// SYN-ACK: both sides' exact numbers (toward its sender, the server, first).
		"RST|ACK 198.51.100.7:40000 > 192.0.2.10:7 seq=1001 ack=5001 ttl=61",
		"RST|ACK 192.0.2.10:7 > 198.51.100.7:40000 seq=5001 ack=1001 ttl=63",
	}
	if len(got) < 6 {
		t.Fatalf("sent %d frames, want 6:\n%s", len(got), strings.Join(got, "\n"))
	}
	for i, w := range want {
		if !strings.HasPrefix(got[i], w) {
			t.Errorf("frame %d:\n got %s\nwant %s…", i, got[i], w)
		}
	}
	// Data: chase the client's ack (toward the client) and the byte after
	// its payload (toward the server).
	if !strings.HasPrefix(got[4], "RST|ACK 198.51.100.7:40000 > 192.0.2.10:7 seq=1007 ack=5001") ||
		!strings.HasPrefix(got[5], "RST|ACK 192.0.2.10:7 > 198.51.100.7:40000 seq=5001 ack=1007") {
		t.Errorf("data resets:\n%s\n%s", got[4], got[5])
	}
	s := h.e.Snapshot()
	if s.Status.Blocks.Attempted != 1 || s.Status.Blocks.ResetsSent != 6 {
		t.Errorf("block stats %+v", s.Status.Blocks)
	}
	if len(s.Blocks) != 1 || s.Blocks[0].ToSrc != 3 || s.Blocks[0].ToDst != 3 || s.Blocks[0].Src != client.Addr() {
		t.Errorf("live blocks %+v", s.Blocks)
	}
	if s.Status.Blocks.ReactionP99 <= 0 {
		t.Errorf("no reaction latency recorded")
	}
	if b := s.Status.Blocks; b.PickupCount != 1 || b.PickupSum <= 0 || b.PickupSum > b.ReactionSum {
		t.Errorf("pickup: %d recorded, sum %v; want 1, within the reaction's %v", b.PickupCount, b.PickupSum, b.ReactionSum)
	}
}

// TestEngineBatchedFramesSameAsOneByOne plays the same traffic (banned and
// unbanned sessions, interleaved, a train of one flow, a frame that does
// not decode) to one engine frame by frame and to another in batches, as
// the live ring hands them over: every reset and every counter must agree.
func TestEngineBatchedFramesSameAsOneByOne(t *testing.T) {
	server := netip.MustParseAddrPort("192.0.2.10:443")
	fs := newFrameScript(20 * time.Microsecond)
	add := fs.add
	for round := range 3 {
		for i := range 12 {
			c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), uint16(40000+i))
			if i%3 == 0 {
				c = netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), uint16(40000+i)) // banned
			}
			seq, ack := uint32(1000+round*10), uint32(5000+round*20)
			switch round {
			case 0:
				add(tcpFrame(t, c, server, seq, 0, "S", "", 61))
				add(tcpFrame(t, server, c, ack, seq+1, "SA", "", 63))
			default:
				add(tcpFrame(t, c, server, seq, ack, "AP", "0123456789", 61))
				add(tcpFrame(t, server, c, ack, seq+10, "AP", "abcdefghijklmnopqrst", 63))
			}
		}
		add([]byte{1, 2, 3}) // truncated: a decode error
		c := netip.MustParseAddrPort("198.51.100.200:50000")
		for k := range 20 { // a train
			add(tcpFrame(t, c, server, uint32(7000+100*k), 9000, "AP", strings.Repeat("x", 100), 61))
		}
	}
	run := func(batch bool) (*harness, []string) {
		src := &scriptSource{frames: fs.frames, ts: fs.ts, batch: batch}
		h := newHarness(t, src, ModeEnforce)
		h.ban("203.0.113.0/24")
		if err := h.e.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		return h, h.rec.Last()
	}
	sameRuns(t, run, 4, 3)
}

// sameRuns plays a script frame by frame and batched (run(false),
// run(true)) and requires the same resets, in order, and the same counts,
// with wantAttempted blocks and wantDecode decode errors.
func sameRuns(t *testing.T, run func(batch bool) (*harness, []string), wantAttempted, wantDecode uint64) (h1, h2 *harness) {
	t.Helper()
	h1, one := run(false)
	h2, batched := run(true)
	if len(one) == 0 || strings.Join(one, "\n") != strings.Join(batched, "\n") {
		t.Fatalf("frame by frame sent:\n%s\nbatched sent:\n%s", strings.Join(one, "\n"), strings.Join(batched, "\n"))
	}
	s1, s2 := h1.e.Snapshot().Status, h2.e.Snapshot().Status
	// Counts only: reaction and pickup latencies are wall-clock measurements.
	counts := func(b BlockStats) [10]uint64 {
		return [10]uint64{b.Attempted, b.Confirmed, b.Failed, b.Observed, b.ResetsSent, b.ICMPSent, b.Suppressed, b.SendErrors, b.ReactionCount, b.PickupCount}
	}
	b1, b2 := counts(s1.Blocks), counts(s2.Blocks)
	if b1 != b2 || b1[0] != wantAttempted || s1.DecodeErrors != wantDecode || s1.DecodeErrors != s2.DecodeErrors || s1.Flows != s2.Flows {
		t.Fatalf("status differs (want %d attempted, %d decode errors):\n%+v\n%+v", wantAttempted, wantDecode, s1, s2)
	}
	return h1, h2
}

// TestEngineBatchedLaneAndControlSameAsOneByOne is the batched test with
// what the live ring adds between blocks: lane copies of frames (handled
// first, through Frame; their bulk copies in the next block must be
// dropped as duplicates) and a ban arriving mid-stream, whose proactive
// kill runs as a control request between two blocks.
func TestEngineBatchedLaneAndControlSameAsOneByOne(t *testing.T) {
	server := netip.MustParseAddrPort("192.0.2.10:443")
	base := time.Now().UnixNano()
	var frames [][]byte
	var ts []int64
	var lane []bool
	add := func(f []byte, isLane bool) {
		frames = append(frames, f)
		ts = append(ts, base+int64(len(ts))*20_000)
		lane = append(lane, isLane)
	}
	banAt := 0
	for round := range 4 {
		if round == 2 {
			banAt = len(frames) // the ban lands here, between two blocks
		}
		client := func(i int) netip.AddrPort {
			if i%3 == 1 {
				return netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), uint16(40000+i)) // banned
			}
			return netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), uint16(40000+i))
		}
		seq, ack := uint32(1000+round*10), uint32(5000+round*20)
		fromClient := func(i int) []byte {
			if round == 0 {
				return tcpFrame(t, client(i), server, seq, 0, "S", "", 61)
			}
			return tcpFrame(t, client(i), server, seq, ack, "AP", "0123456789", 61)
		}
		// Lane copies of the round's first client frames: the bulk copies
		// below carry the same bytes and the same kernel timestamp.
		first := len(frames)
		for i := range 3 {
			add(fromClient(i), true)
		}
		for i := range 12 {
			add(fromClient(i), false)
			if i < 3 {
				ts[len(ts)-1] = ts[first+i]
			}
			if round == 0 {
				add(tcpFrame(t, server, client(i), ack, seq+1, "SA", "", 63), false)
			} else {
				add(tcpFrame(t, server, client(i), ack, seq+10, "AP", "abcdefghijklmnopqrst", 63), false)
			}
		}
		add([]byte{1, 2, 3}, false) // truncated: a decode error
	}
	run := func(batch bool) (*harness, []string) {
		var h *harness
		src := &scriptSource{frames: frames, ts: ts, lane: lane, batch: batch, breaks: map[int]bool{banAt: true}}
		src.hook = func(i int) {
			if i == banAt {
				h.ban("198.51.100.0/30") // live sessions of the lane-copied clients: killed proactively
				time.Sleep(20 * time.Millisecond)
			}
		}
		h = newHarness(t, src, ModeEnforce)
		h.ban("203.0.113.0/24")
		if err := h.e.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		return h, h.rec.Last()
	}
	// 4 banned clients from the start, 3 (198.51.100.0, .2 and .3) killed
	// proactively, one session each.
	h1, h2 := sameRuns(t, run, 7, 4)
	if bl1, bl2 := h1.e.Snapshot().Blocks, h2.e.Snapshot().Blocks; len(bl1) != 7 || len(bl2) != 7 {
		t.Fatalf("%d and %d blocks, want 7", len(bl1), len(bl2))
	}
	// The lane copies were handled and their bulk copies dropped: one
	// packet per round from each lane-copied client, not two.
	for _, h := range []*harness{h1, h2} {
		n := 0
		h.e.workers[0].table.ForEach(netip.MustParsePrefix("198.51.100.0/31"), func(f *flow.Flow) bool {
			n++
			if i := h.e.workers[0].table.Info(f); i.PktsAB != 4 || i.PktsBA != 4 {
				t.Errorf("flow %v: %d/%d packets, want 4/4", i.A, i.PktsAB, i.PktsBA)
			}
			return true
		})
		if n != 1 {
			t.Errorf("%d flows of 198.51.100.0/31, want 1", n)
		}
	}
}

func TestEngineLeavesUnbannedAndAllowlistedAlone(t *testing.T) {
	client := netip.MustParseAddrPort("198.51.100.8:40000")
	server := netip.MustParseAddrPort("192.0.2.10:7")
	base := time.Now().UnixNano()
	src := &scriptSource{
		frames: [][]byte{
			tcpFrame(t, client, server, 1000, 0, "S", "", 61),
			tcpFrame(t, server, client, 5000, 1001, "SA", "", 63),
		},
		ts: []int64{base, base + 50_000},
	}
	h := newHarness(t, src, ModeEnforce)
	h.ban("198.51.100.7") // a neighbour, not this client
	if _, _, err := h.store.Add(rules.Request{Kind: rules.KindAllow, Value: "192.0.2.0/24", Origin: rules.OriginConfig}); err != nil {
		t.Fatal(err)
	}
	h.ban("198.51.100.0/24") // covers the client, but the server is allowlisted
	if err := h.e.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := h.rec.Count(); n != 0 {
		t.Fatalf("sent %d frames into a flow with an allowlisted end: %v", n, h.rec.Last())
	}
}

func TestEngineObserveModeSendsNothingAndSaysWhat(t *testing.T) {
	client := netip.MustParseAddrPort("[2001:db8::7]:40000")
	server := netip.MustParseAddrPort("[2001:db8:1::10]:443")
	base := time.Now().UnixNano()
	src := &scriptSource{
		frames: [][]byte{
			tcpFrame(t, client, server, 1000, 0, "S", "", 61),
			tcpFrame(t, client, server, 1000, 0, "S", "", 61), // a retransmitted SYN: reported once
		},
		ts: []int64{base, base + 1_000_000},
	}
	h := newHarness(t, src, ModeObserve)
	events, cancel := h.e.Subscribe()
	defer cancel()
	h.ban("2001:db8::7")
	if err := h.e.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := h.rec.Count(); n != 0 {
		t.Fatalf("observe mode sent %d frames", n)
	}
	var would []Event
	for len(events) > 0 {
		if ev := <-events; ev.Type == EventWouldBlock {
			would = append(would, ev)
		}
	}
	if len(would) != 1 {
		t.Fatalf("got %d would-block events, want 1", len(would))
	}
	if len(would[0].Sent) != 2 || !strings.HasPrefix(would[0].Sent[0], "RST [2001:db8::7]:40000 > [2001:db8:1::10]:443 seq=1001") ||
		!strings.HasPrefix(would[0].Sent[1], "RST|ACK [2001:db8:1::10]:443 > [2001:db8::7]:40000 seq=0 ack=1001") {
		t.Errorf("would-block lists %q", would[0].Sent)
	}
	if h.e.Snapshot().Status.Blocks.Observed != 1 {
		t.Errorf("observed count %+v", h.e.Snapshot().Status.Blocks)
	}
}

func TestEngineProactiveKillOnBan(t *testing.T) {
	client := netip.MustParseAddrPort("198.51.100.9:40000")
	server := netip.MustParseAddrPort("192.0.2.10:7")
	base := time.Now().UnixNano()
	var h *harness
	src := &scriptSource{
		frames: [][]byte{
			tcpFrame(t, client, server, 1000, 0, "S", "", 61),
			tcpFrame(t, server, client, 5000, 1001, "SA", "", 63),
			tcpFrame(t, client, server, 1001, 5001, "A", "", 61),
			tcpFrame(t, client, server, 1001, 5001, "AP", "ping\n", 61),
			tcpFrame(t, server, client, 5001, 1006, "AP", "ping\n", 63),
			tcpFrame(t, client, server, 1006, 5006, "A", "", 61),
			// The ban lands here, while the session sits idle.
			tcpFrame(t, server, client, 9999, 1, "R", "", 63), // unrelated noise after the kill
		},
		ts: []int64{base, base + 1e5, base + 2e5, base + 3e5, base + 4e5, base + 5e5, base + 9e8},
	}
	src.hook = func(i int) {
		if i == 6 {
			h.ban("198.51.100.9")
			time.Sleep(20 * time.Millisecond) // let the store's change reach the engine and queue the kill
		}
	}
	h = newHarness(t, src, ModeEnforce)
	if err := h.e.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := h.rec.Last()
	if len(got) < 2 {
		t.Fatalf("proactive kill sent %v", got)
	}
	if !strings.HasPrefix(got[0], "RST|ACK 198.51.100.9:40000 > 192.0.2.10:7 seq=1006 ack=5006") ||
		!strings.HasPrefix(got[1], "RST|ACK 192.0.2.10:7 > 198.51.100.9:40000 seq=5006 ack=1006") {
		t.Errorf("proactive resets:\n%s", strings.Join(got, "\n"))
	}
	if bl := h.e.Snapshot().Blocks; len(bl) != 1 || !bl[0].Proactive {
		t.Errorf("blocks %+v", bl)
	}
}

// TestEngineProactiveKillInTinySteps kills three idle sessions with a kill
// step far too short for any work (a machine too slow for killStep): each
// step must still reset one session, so the kill ends while other traffic
// goes on, and no session is reset (or, observing, described) twice, also
// when the walk goes address by address and starts a list again after
// each pause.
func TestEngineProactiveKillInTinySteps(t *testing.T) {
	server := netip.MustParseAddrPort("192.0.2.10:7")
	other := netip.MustParseAddrPort("198.51.100.200:50000")
	for _, tc := range []struct {
		name string
		ban  string
		mode Mode
		port func(i int) netip.AddrPort // the client of session i
	}{
		{"three clients, by scan", "198.51.100.0/29", ModeEnforce, func(i int) netip.AddrPort {
			return netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(1 + i)}), 40000)
		}},
		{"one client, by address", "198.51.100.1", ModeEnforce, func(i int) netip.AddrPort {
			return netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, 1}), uint16(40000+i))
		}},
		{"one client, by address, observing", "198.51.100.1", ModeObserve, func(i int) netip.AddrPort {
			return netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, 1}), uint16(40000+i))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := newFrameScript(100 * time.Microsecond)
			// 40 bystanders, so that the table is large enough for a
			// walk by address of a single one.
			for i := range 40 {
				c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(100 + i)}), 30000)
				fs.add(tcpFrame(t, c, server, 1, 0, "S", "", 61))
			}
			for i := range 3 {
				c := tc.port(i)
				fs.add(tcpFrame(t, c, server, 1000, 0, "S", "", 61))
				fs.add(tcpFrame(t, server, c, 5000, 1001, "SA", "", 63))
				fs.add(tcpFrame(t, c, server, 1001, 5001, "A", "", 61))
			}
			banAt := len(fs.frames)
			for range 6 { // someone else's traffic, while the kill goes on
				fs.add(tcpFrame(t, other, server, 1, 1, "A", "", 61))
			}
			var h *harness
			src := &scriptSource{frames: fs.frames, ts: fs.ts}
			src.hook = func(i int) {
				if i == banAt {
					h.ban(tc.ban)
					time.Sleep(20 * time.Millisecond)
				}
			}
			h = newHarness(t, src, tc.mode)
			h.e.workers[0].killStep = time.Nanosecond
			events, cancel := h.e.Subscribe()
			defer cancel()
			if err := h.e.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			would := 0
			for len(events) > 0 {
				if ev := <-events; ev.Type == EventWouldBlock {
					would++
				}
			}
			bl := h.e.Snapshot().Blocks
			if len(bl) != 3 {
				t.Fatalf("%d blocks, want the 3 sessions: %+v", len(bl), bl)
			}
			for _, b := range bl {
				if tc.mode == ModeObserve {
					if !b.Proactive || b.Outcome != OutcomeObserved {
						t.Errorf("block of %v:%d: proactive %v, outcome %v", b.Src, b.SrcPort, b.Proactive, b.Outcome)
					}
				} else if !b.Proactive || b.ToSrc != 1 || b.ToDst != 1 {
					t.Errorf("block of %v:%d: proactive %v, resets %d/%d, want proactive and one each way", b.Src, b.SrcPort, b.Proactive, b.ToSrc, b.ToDst)
				}
			}
			if tc.mode == ModeObserve && (would != 3 || h.rec.Count() != 0) {
				t.Errorf("observing: %d would-block events for 3 sessions, %d frames sent", would, h.rec.Count())
			}
			if w := h.e.workers[0]; len(w.kills) != 0 || w.killing.Load() != 0 {
				t.Errorf("%d kills still in hand", len(w.kills))
			}
		})
	}
}

func TestEngineOutcomes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		spread time.Duration // how long the server's data keeps coming
		want   Outcome
	}{
		{"in-flight data drains, then silence", 50 * time.Millisecond, OutcomeConfirmed},
		{"data keeps flowing past FailAfter with the budget spent", 600 * time.Millisecond, OutcomeFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			blocks, rec := runOutcome(t, nil, tc.spread)
			if len(blocks) != 1 || blocks[0].Outcome != tc.want {
				t.Fatalf("blocks %+v, want one %s", blocks, tc.want)
			}
			if rec.Count() != 6 || blocks[0].Suppressed == 0 {
				t.Errorf("sent %d frames (budget 6), suppressed %d", rec.Count(), blocks[0].Suppressed)
			}
		})
	}
}

// runOutcome plays a banned client's handshake with the server (which
// draws resets), then extra (at 150 µs), then 40 data segments from the
// server spread over spread, under a 6-reset budget; it returns the live
// blocks and what was sent.
func runOutcome(t *testing.T, extra []byte, spread time.Duration) ([]Block, *inject.Recorder) {
	t.Helper()
	client := netip.MustParseAddrPort("198.51.100.7:40000")
	server := netip.MustParseAddrPort("192.0.2.10:80")
	base := time.Now().UnixNano()
	src := &scriptSource{
		frames: [][]byte{
			tcpFrame(t, client, server, 1000, 0, "S", "", 61),
			tcpFrame(t, server, client, 5000, 1001, "SA", "", 63),
		},
		ts: []int64{base, base + 1e5},
	}
	if extra != nil {
		src.frames, src.ts = append(src.frames, extra), append(src.ts, base+150_000)
	}
	for i := range 40 {
		seq := 5001 + uint32(i)*1000
		src.frames = append(src.frames, tcpFrame(t, server, client, seq, 1001, "AP", strings.Repeat("x", 1000), 63))
		src.ts = append(src.ts, base+2e5+int64(spread)*int64(i)/40)
	}
	store, err := rules.Open(rules.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	rec := inject.NewRecorder(8)
	e, err := New(Config{MaxResetsPerFlow: 6, Injection: Injection{Sender: rec, NextHop: fixedMAC{}}}, src, store)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.Add(rules.Request{Kind: rules.KindBan, Value: client.Addr().String(), Origin: rules.OriginAPI}); err != nil {
		t.Fatal(err)
	}
	if err := e.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	return e.Snapshot().Blocks, rec
}

// A banned client that reconnects from the same port opens a new session
// each time (new ISN). Each must be reset on its own budget: when sessions
// shared the killed flow's budget, the fifth one here went through with
// its resets suppressed. The killed sessions count as confirmed once the
// new one replaces them; a repeated SYN (same ISN) is not a new session.
func TestEngineResetsEverySessionOfAReusedPort(t *testing.T) {
	client := netip.MustParseAddrPort("198.51.100.7:40000")
	server := netip.MustParseAddrPort("192.0.2.10:7")
	base := time.Now().UnixNano()
	const sessions = 8
	src := &scriptSource{}
	for i := range sessions {
		isn, sisn := uint32(1000+i*7919), uint32(5000+i*104729)
		at := base + int64(i)*int64(20*time.Millisecond)
		src.frames = append(src.frames,
			tcpFrame(t, client, server, isn, 0, "S", "", 61),
			tcpFrame(t, server, client, sisn, isn+1, "SA", "", 63),
			tcpFrame(t, client, server, isn+1, sisn+1, "AP", "hello\n", 61),
			// The same SYN again, late (a mirror that shows it twice):
			// the same session, not a new one.
			tcpFrame(t, client, server, isn, 0, "S", "", 61))
		src.ts = append(src.ts, at, at+50_000, at+100_000, at+150_000)
	}
	h := newHarness(t, src, ModeEnforce)
	h.ban("198.51.100.7")
	if err := h.e.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := h.e.Snapshot().Status.Blocks
	if s.Attempted != sessions || s.Suppressed != 0 || s.ResetsSent != 8*sessions {
		t.Fatalf("want %d sessions each reset 8 times (6 + 2 for the repeated SYN), none suppressed: %+v", sessions, s)
	}
	if s.Confirmed < sessions-1 {
		t.Errorf("confirmed %d of the %d replaced sessions", s.Confirmed, sessions-1)
	}
}

// When the flow table's L2 dictionary is full, a banned flow's MACs are not
// stored. In next-hop mode its resets still go out (the next hop's MAC is
// known) with the impersonated side's real TTL; in reflect mode canopy has
// no MACs at all and must not send frames to 00:00:00:00:00:00.
func TestEngineResetsWithFullL2Dictionary(t *testing.T) {
	server := netip.MustParseAddrPort("192.0.2.10:7")
	banned := netip.MustParseAddrPort("198.51.100.7:40000")
	base := time.Now().UnixNano()
	src := &scriptSource{}
	// 1024 flows a worker give a 64-entry dictionary: fill it with SYNs
	// from 64 other hosts, each behind its own MAC.
	for i := range 64 {
		c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), 30000)
		fr := tcpFrame(t, c, server, 1000, 0, "S", "", 61)
		fr[11] = byte(i + 10) // source MAC
		src.frames = append(src.frames, fr)
		src.ts = append(src.ts, base+int64(i))
	}
	syn := tcpFrame(t, banned, server, 5000, 0, "S", "", 61)
	syn[11] = 200
	src.frames = append(src.frames, syn)
	src.ts = append(src.ts, base+1000)

	for _, reflect := range []bool{false, true} {
		store, err := rules.Open(rules.Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer store.Close()
		rec := inject.NewRecorder(8)
		e, err := New(Config{Flow: flow.Config{MaxFlows: 1024},
			Injection: Injection{Sender: rec, SrcMAC: [6]byte{2, 0, 0, 0, 0, 9}, NextHop: fixedMAC{2, 0, 0, 0, 0, 0xaa}, Reflect: reflect}}, src, store)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := store.Add(rules.Request{Kind: rules.KindBan, Value: banned.Addr().String(), Origin: rules.OriginAPI}); err != nil {
			t.Fatal(err)
		}
		if err := e.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		s := e.Snapshot()
		if s.Traffic.Totals.L2Full == 0 {
			t.Fatalf("reflect=%v: the dictionary never filled; the test does not test anything", reflect)
		}
		got := rec.Last()
		if !reflect {
			if len(got) != 2 || !strings.HasPrefix(got[0], "RST 198.51.100.7:40000 > 192.0.2.10:7 seq=5001 ttl=61") {
				t.Errorf("next-hop mode: want both resets, the server's with the client's TTL 61:\n%s", strings.Join(got, "\n"))
			}
		} else if len(got) != 0 || s.Status.Blocks.SendErrors != 2 {
			t.Errorf("reflect mode without MACs: sent %d frames, %d send errors; want 0 and 2:\n%s", len(got), s.Status.Blocks.SendErrors, strings.Join(got, "\n"))
		}
	}
}

// The mirror shows canopy's own resets back (the router forwards them past
// the tap). They say nothing about whether the hosts took them, so they
// must not confirm the kill: here the server ignores them and keeps
// sending, and the block has to end failed, not confirmed. A reset from
// the host itself still confirms at once.
func TestEngineOwnResetsDoNotConfirm(t *testing.T) {
	client := netip.MustParseAddrPort("198.51.100.7:40000")
	server := netip.MustParseAddrPort("192.0.2.10:80")
	for _, tc := range []struct {
		name string
		rst  []byte // the RST that follows canopy's resets
		want Outcome
	}{
		// Exactly what canopy sent toward the server for the SYN-ACK.
		{"canopy's own reset seen back", tcpFrame(t, client, server, 1001, 5001, "RA", "", 60), OutcomeFailed},
		{"the server's own reset", tcpFrame(t, server, client, 5001, 0, "R", "", 63), OutcomeConfirmed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The server ignores it all and keeps sending, past FailAfter.
			if blocks, _ := runOutcome(t, tc.rst, 600*time.Millisecond); len(blocks) != 1 || blocks[0].Outcome != tc.want {
				t.Fatalf("blocks %+v, want one %s", blocks, tc.want)
			}
		})
	}
}

// TestNewRejectsMoreFlowsThanATableHolds: a max_flows whose per-worker
// share is over what one flow table can index fails with an error that
// says what to change, instead of being cut down without a word.
func TestNewRejectsMoreFlowsThanATableHolds(t *testing.T) {
	store, err := rules.Open(rules.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	_, err = New(Config{Flow: flow.Config{MaxFlows: flow.MaxTableFlows + 1}}, &scriptSource{}, store)
	if err == nil || !strings.Contains(err.Error(), "capture.workers") {
		t.Fatalf("err %v, want one naming max_flows and capture.workers", err)
	}
	e, err := New(Config{Flow: flow.Config{MaxFlows: 1 << 12}}, &scriptSource{}, store)
	if err != nil || e == nil {
		t.Fatalf("a small max_flows: %v", err)
	}
}
