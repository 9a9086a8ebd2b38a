package sensor_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"testing"
	"time"

	"canopy/capture"
	"canopy/inject"
	"canopy/lab"
	"canopy/rules"
	"canopy/sensor"
)

// running is a sensor started on a lab's tap and inject ports.
type running struct {
	e     *sensor.Engine
	store *rules.Store
	stop  func()
}

// startSensor runs a real engine in the lab's sensor namespace: live
// TPACKET rings on the tap, a transmit socket on the inject port addressed
// to the router.
func startSensor(t *testing.T, l *lab.Lab, mode sensor.Mode, opts ...func(*sensor.Config)) *running {
	t.Helper()
	var (
		src    *capture.Live
		sender *inject.PacketSender
		hop    *inject.NextHop
	)
	ctx, cancel := context.WithCancel(context.Background())
	err := l.Do(lab.Sensor, func() error {
		var err error
		if src, err = capture.OpenLive(capture.LiveConfig{Ifaces: []string{l.TapIface}, Workers: 2, Lane: true, Promiscuous: true}); err != nil {
			return err
		}
		if sender, err = inject.OpenSender(inject.DefaultSenderConfig(l.InjectIface)); err != nil {
			return err
		}
		hop, err = inject.NewNextHop(ctx, l.InjectIface, l.RouterInject4.String(), inject.DefaultRefresh)
		return err
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	store, err := rules.Open(rules.Config{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	inj := sensor.Injection{Sender: sender, Iface: l.InjectIface, NextHop: hop, Ceiling: inject.NewCeiling(100000)}
	copy(inj.SrcMAC[:], sender.MAC())
	// The lab's delay line runs at nice -10; the sensor's workers get the
	// same priority, as canopy's config gives them by default.
	cfg := sensor.Config{Mode: mode, Injection: inj, ConfirmAfter: 200 * time.Millisecond, WorkerNice: -10}
	for _, o := range opts {
		o(&cfg)
	}
	e, err := sensor.New(cfg, src, store)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	go store.Run(ctx)
	r := &running{e: e, store: store}
	r.stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("engine: %v", err)
		}
		src.Close()
		sender.Close()
		hop.Close()
		store.Close()
	}
	t.Cleanup(r.stop)
	for deadline := time.Now().Add(5 * time.Second); !e.Ready(); {
		if time.Now().After(deadline) {
			t.Fatal("sensor not ready after 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return r
}

func (r *running) ban(t *testing.T, value string) {
	t.Helper()
	if _, _, err := r.store.Add(rules.Request{Kind: rules.KindBan, Value: value, Origin: rules.OriginAPI, Reason: "lab test"}); err != nil {
		t.Fatal(err)
	}
}

// TestLabShortConnectionsBlocked runs the product's promise in small, with
// the sensor in this test process: with a WAN-like delay (10 ms each way,
// as in the benchmark) the banned addresses' connections die, every one
// with a block of its own (also when the client reuses a source port), and
// the legitimate address on the same host is untouched. In this process the
// sensor shares Go's scheduler and GC, under the race detector, with the
// lab's delay line, servers and probes, so a rare stall longer than two
// one-way delays can let one request through (about one run in twenty on a
// busy 2-core machine): the test allows 1 % and logs what the sensor did
// with each leaked connection. The zero-leak promise is asserted on a
// sensor process of its own (TestDaemonBlocksUnderAPILoad in the main
// package) and measured over 10,000 connections by `go run ./bench -only
// block`.
func TestLabShortConnectionsBlocked(t *testing.T) {
	l := lab.NewT(t, lab.Config{Delay: 10 * time.Millisecond})
	r := startSensor(t, l, sensor.ModeEnforce)
	r.ban(t, l.ClientBanned4.String())
	r.ban(t, l.ClientBanned6.String())

	ctx := context.Background()
	for _, tc := range []struct {
		src, dst netip.Addr
	}{{l.ClientBanned4, l.Server4}, {l.ClientBanned6, l.Server6}} {
		res, err := l.Probe(ctx, lab.ProbeConfig{Src: tc.src, Dst: netip.AddrPortFrom(tc.dst, lab.EchoPort),
			Conns: 300, Rate: 300, Concurrency: 64, Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("banned %s: %+v, server read %d lines", tc.src, res, l.Echo.Count(tc.src).Requests)
		got := l.Echo.Count(tc.src)
		for _, port := range got.ReadFrom {
			t.Logf("banned %s: leaked from port %d; sensor's record: %+v", tc.src, port, r.blockOf(port))
		}
		if res.Completed > res.Total()/100 {
			t.Errorf("banned %s: %d of %d connections got their echo", tc.src, res.Completed, res.Total())
		}
		if got.Requests > uint64(res.Total()/100) {
			t.Errorf("banned %s: the server read %d lines (accepted %d connections)", tc.src, got.Requests, got.Accepted)
		}
	}
	legit, err := l.Probe(ctx, lab.ProbeConfig{Src: l.ClientLegit4, Dst: netip.AddrPortFrom(l.Server4, lab.EchoPort),
		Conns: 300, Rate: 500, Concurrency: 64, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if legit.Completed != 300 {
		t.Errorf("legitimate client disturbed: %+v", legit)
	}
	time.Sleep(1500 * time.Millisecond) // one snapshot later
	st := r.e.Snapshot().Status
	t.Logf("blocks %+v", st.Blocks)
	if st.Blocks.Attempted != 600 {
		t.Errorf("attempted %d blocks for 600 banned connections", st.Blocks.Attempted)
	}
	if st.Blocks.Failed != 0 {
		t.Errorf("%d blocks failed", st.Blocks.Failed)
	}
}

// TestLabProactiveKill bans an address while it holds live sessions: every
// one must die at once, from the flow table's numbers, without waiting for
// the client's next line.
func TestLabProactiveKill(t *testing.T) {
	l := lab.NewT(t, lab.Config{})
	r := startSensor(t, l, sensor.ModeEnforce)
	ctx := context.Background()
	ss, err := l.OpenSessions(ctx, lab.SessionsConfig{Src: l.ClientBanned4, Dst: netip.AddrPortFrom(l.Server4, lab.EchoPort),
		N: 50, Interval: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	legit, err := l.OpenSessions(ctx, lab.SessionsConfig{Src: l.ClientLegit4, Dst: netip.AddrPortFrom(l.Server4, lab.EchoPort),
		N: 5, Interval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer legit.Close()
	time.Sleep(700 * time.Millisecond) // every session has exchanged a line and gone quiet
	banAt := time.Now()
	r.ban(t, l.ClientBanned4.String())
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if alive := ss.WaitDead(wctx, 0); alive != 0 {
		t.Fatalf("%d of 50 sessions still alive 2s after the ban", alive)
	}
	var lat []time.Duration
	for _, s := range ss.Snapshot() {
		lat = append(lat, s.Died.Sub(banAt))
		if s.Cause != lab.Reset {
			t.Errorf("session %v died of %v (%s), want a reset", s.Local, s.Cause, s.Err)
		}
	}
	slices.Sort(lat)
	t.Logf("ban → death of 50 idle sessions: p50 %v, max %v", lat[len(lat)/2], lat[len(lat)-1])
	// Every session must have died before its next line was due: the kill
	// was proactive, not triggered by the client's traffic.
	if lat[len(lat)-1] > 400*time.Millisecond {
		t.Errorf("slowest death %v after the ban: not proactive", lat[len(lat)-1])
	}
	if alive := legit.Alive(); alive != 5 {
		t.Errorf("legitimate sessions alive %d of 5", alive)
	}
}

// TestLabProactiveKillWaitsForTheCeiling bans an address holding more
// idle sessions than the injection ceiling's burst can reset at once:
// every one must still die within a second, at the ceiling's pace, with
// no reset held back, long before any sends its next line.
func TestLabProactiveKillWaitsForTheCeiling(t *testing.T) {
	l := lab.NewT(t, lab.Config{})
	const n, pps = 200, 1000 // a burst of 100 frames: about 40 sessions' resets at once
	r := startSensor(t, l, sensor.ModeEnforce, func(c *sensor.Config) { c.Injection.Ceiling = inject.NewCeiling(pps) })
	ctx := context.Background()
	ss, err := l.OpenSessions(ctx, lab.SessionsConfig{Src: l.ClientBanned4, Dst: netip.AddrPortFrom(l.Server4, lab.EchoPort),
		N: n, Interval: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	time.Sleep(300 * time.Millisecond) // every session has exchanged its first line and gone quiet
	banAt := time.Now()
	r.ban(t, l.ClientBanned4.String())
	// While the kill waits for the ceiling, status says a ban's sessions
	// are still being killed; once it is over, that none are.
	// (The kill needs 300 ms at this ceiling: the first 10 ms poll that
	// finds it running must say 1, however late the ban reached the
	// workers.)
	killing := 0
	for end := time.Now().Add(time.Second); killing == 0 && time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		killing = r.e.Refresh(ctx).Status.Blocks.Killing
	}
	if killing != 1 {
		t.Errorf("status showed %d kills in progress, want 1", killing)
	}
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	alive := ss.WaitDead(wctx, 0)
	for end := time.Now().Add(time.Second); r.e.Refresh(ctx).Status.Blocks.Killing != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("status still shows a kill in progress a second after the last session died")
		}
	}
	st := r.e.Refresh(ctx).Status.Blocks
	if alive != 0 {
		t.Fatalf("%d of %d sessions still alive 3s after the ban (resets sent %d, suppressed %d)", alive, n, st.ResetsSent, st.Suppressed)
	}
	var last time.Duration
	for _, s := range ss.Snapshot() {
		last = max(last, s.Died.Sub(banAt))
		if s.Cause != lab.Reset {
			t.Errorf("session %v died of %v (%s), want a reset", s.Local, s.Cause, s.Err)
		}
	}
	t.Logf("ban → death of %d idle sessions at %d resets/s: last after %v; resets sent %d, suppressed %d", n, pps, last, st.ResetsSent, st.Suppressed)
	if st.Suppressed != 0 {
		t.Errorf("%d resets suppressed: the kill spent the ceiling instead of waiting for it", st.Suppressed)
	}
	if last > 2*time.Second {
		t.Errorf("slowest death %v after the ban", last)
	}
}

// TestLabObserveSendsNothing runs the same banned traffic in observe mode:
// everything completes, and would-block events say what would have gone out.
func TestLabObserveSendsNothing(t *testing.T) {
	l := lab.NewT(t, lab.Config{})
	r := startSensor(t, l, sensor.ModeObserve)
	events, cancel := r.e.Subscribe()
	defer cancel()
	r.ban(t, l.ClientBanned4.String())
	res, err := l.Probe(context.Background(), lab.ProbeConfig{Src: l.ClientBanned4,
		Dst: netip.AddrPortFrom(l.Server4, lab.EchoPort), Conns: 50, Rate: 200})
	if err != nil {
		t.Fatal(err)
	}
	if res.Completed != 50 {
		t.Errorf("observe mode disturbed traffic: %+v", res)
	}
	would := 0
	for deadline := time.After(2 * time.Second); would < 50; {
		select {
		case ev := <-events:
			if ev.Type == sensor.EventWouldBlock && len(ev.Sent) > 0 {
				would++
			}
		case <-deadline:
			t.Fatalf("%d would-block events for 50 connections", would)
		}
	}
	time.Sleep(1100 * time.Millisecond)
	if st := r.e.Snapshot().Status.Blocks; st.ResetsSent != 0 || st.Observed < 50 {
		t.Errorf("observe mode stats %+v", st)
	}
}

// TestLabUDPRefused: a banned client's connected UDP socket gets
// ECONNREFUSED from the forged ICMP port unreachable.
func TestLabUDPRefused(t *testing.T) {
	l := lab.NewT(t, lab.Config{})
	r := startSensor(t, l, sensor.ModeEnforce)
	r.ban(t, l.ClientBanned4.String())
	var got error
	err := l.Do(lab.Client, func() error {
		c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(l.ClientBanned4, 0)),
			net.UDPAddrFromAddrPort(netip.AddrPortFrom(l.Server4, lab.UDPEchoPort)))
		if err != nil {
			return err
		}
		defer c.Close()
		// On a LAN the server's echo can beat the forged error: the
		// kernel then queues the echo and holds the error (sk_err) until
		// the receive queue is empty, so read once, let the error land,
		// and read again with nothing queued.
		buf := make([]byte, 64)
		c.Write([]byte("query"))
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, got = c.Read(buf); got == nil {
			time.Sleep(100 * time.Millisecond)
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			_, got = c.Read(buf)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(got, syscall.ECONNREFUSED) {
		t.Fatalf("banned UDP client read error %v, want ECONNREFUSED", got)
	}
}

// blockOf is the sensor's live-blocks record of the flow whose client used
// port, if it is still among the recent blocks.
func (r *running) blockOf(port uint16) *sensor.Block {
	for _, b := range r.e.Snapshot().Blocks {
		if b.SrcPort == port {
			return &b
		}
	}
	return nil
}
