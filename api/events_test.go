package api

import (
	"bufio"
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"canopy/sensor"
)

func netListen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

// waitFor polls cond until it holds or a generous deadline passes; it is
// not a timing assertion, only a bound on how long a broken build hangs.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func blockEvent(id uint64) sensor.Event {
	return sensor.Event{Type: sensor.EventBlock, Time: time.Now(), Block: &sensor.Block{
		ID: id, Proto: "tcp", Src: netip.MustParseAddr("203.0.113.7"), SrcPort: 40000,
		Dst: netip.MustParseAddr("192.0.2.10"), DstPort: 22, Outcome: sensor.OutcomePending, ToSrc: 1, ToDst: 1,
	}}
}

func TestEventsReceivesBlock(t *testing.T) {
	e := newEnv(t, false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	evs, err := e.client().Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the subscription", func() bool { return e.sens.subscribers() == 1 })
	e.sens.Publish(blockEvent(42))
	select {
	case ev := <-evs:
		if ev.Type != sensor.EventBlock || ev.Block == nil || ev.Block.ID != 42 || ev.Block.DstPort != 22 {
			t.Fatalf("event %+v", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event")
	}
	cancel()
	for range evs {
	}
	waitFor(t, "the subscription to end", func() bool { return e.sens.subscribers() == 0 })
}

func TestEventsWireFormat(t *testing.T) {
	e := newEnv(t, false)
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("GET /v1/events HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer " + roSecret + "\r\n\r\n"))
	br := bufio.NewReader(conn)
	waitFor(t, "the subscription", func() bool { return e.sens.subscribers() == 1 })
	e.sens.Publish(blockEvent(7))
	var lines []string
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream: %v (so far %q)", err, lines)
		}
		lines = append(lines, l)
		if strings.HasPrefix(l, "data: ") {
			break
		}
	}
	got := strings.Join(lines, "")
	if !strings.Contains(got, "Content-Type: text/event-stream") || !strings.Contains(got, "event: block\ndata: {\"type\":\"block\"") {
		t.Fatalf("stream:\n%s", got)
	}
}

// A client that stops reading must not hold up the sensor nor the other
// clients, and is cut off with a final event that says why.
func TestEventsSlowClientIsCut(t *testing.T) {
	e := newEnv(t, false)
	e.srv.eventQueue = 8
	e.srv.sseWrite = 200 * time.Millisecond

	// Healthy follower.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	healthy, err := e.client().Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Stuck follower: connects and never reads.
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(4096)
	conn.Write([]byte("GET /v1/events HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer " + roSecret + "\r\n\r\n"))
	waitFor(t, "two subscriptions", func() bool { return e.sens.subscribers() == 2 })

	// Big events fill the stuck client's socket buffers quickly. The
	// publisher must get through all of them regardless, and the healthy
	// follower must see every one. Publishing in lockstep with the healthy
	// follower keeps its queue short, so only the stuck client overflows.
	const n = 3000
	big := strings.Repeat("x", 4096)
	for i := 1; i <= n; i++ {
		ev := blockEvent(uint64(i))
		ev.Sent = []string{big}
		e.sens.Publish(ev)
		select {
		case got, ok := <-healthy:
			if !ok {
				t.Fatalf("healthy follower cut off after %d events", i-1)
			}
			if got.Block == nil || got.Block.ID != uint64(i) {
				t.Fatalf("healthy follower got %+v, want block %d", got, i)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("healthy follower stalled at event %d", i)
		}
	}
	waitFor(t, "the stuck client to be cut", func() bool { return e.sens.subscribers() == 1 })
}

// When the server notices the overflow while it can still write, the last
// event tells the client it was too slow.
func TestEventsSlowClientGetsReason(t *testing.T) {
	e := newEnv(t, false)
	e.srv.eventQueue = 4
	gate := make(chan struct{})
	first := true
	e.srv.sseHook = func() {
		if first { // the "connected" preamble goes through
			first = false
			return
		}
		<-gate
	}
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("GET /v1/events HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer " + roSecret + "\r\n\r\n"))
	waitFor(t, "the subscription", func() bool { return e.sens.subscribers() == 1 })
	for i := 1; i <= 100; i++ {
		e.sens.Publish(blockEvent(uint64(i)))
	}
	waitFor(t, "the client's queue to overflow", func() bool { return e.srv.stats.sseSlowCuts.Load() == 1 })
	close(gate)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var all strings.Builder
	br := bufio.NewReader(conn)
	sawClose := false
	for {
		l, err := br.ReadString('\n')
		all.WriteString(l)
		if err != nil || sawClose && strings.HasPrefix(l, "data:") {
			break
		}
		sawClose = sawClose || l == "event: close\n"
	}
	s := all.String()
	if !strings.Contains(s, "event: close\ndata: {\"reason\":\"client too slow") {
		t.Fatalf("no close event with the reason; stream tail:\n%s", tail(s, 600))
	}
	if e.srv.stats.sseSlowCuts.Load() != 1 {
		t.Errorf("slow cuts counted: %d", e.srv.stats.sseSlowCuts.Load())
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// The server's ReadTimeout must not end event streams that outlive it.
func TestEventsOutliveReadTimeout(t *testing.T) {
	r, s := newFakeRules(), newFakeSensor()
	srv, err := NewServer(Config{Addr: "127.0.0.1:0", Rules: r, Sensor: s})
	if err != nil {
		t.Fatal(err)
	}
	srv.readLimit = 100 * time.Millisecond
	ln, err := netListen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeListener(ctx, ln) }()
	defer func() { cancel(); <-done }()
	evs, err := NewClient(ln.Addr().String(), "").Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the subscription", func() bool { return s.subscribers() == 1 })
	time.Sleep(5 * srv.readLimit)
	s.Publish(blockEvent(1))
	select {
	case ev, ok := <-evs:
		if !ok {
			t.Fatal("the stream ended when the read timeout passed")
		}
		if ev.Block == nil || ev.Block.ID != 1 {
			t.Fatalf("event %+v", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event")
	}
}
