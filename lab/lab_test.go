package lab

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// TestEchoReachable proves the client reaches the server's echo over IPv4
// and IPv6 from both of its addresses, and that the server's log records
// each source separately.
func TestEchoReachable(t *testing.T) {
	for _, delay := range []time.Duration{0, 2 * time.Millisecond} {
		t.Run("delay="+delay.String(), func(t *testing.T) {
			l := NewT(t, Config{Delay: delay})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cases := []struct {
				src netip.Addr
				dst netip.Addr
			}{
				{l.ClientBanned4, l.Server4},
				{l.ClientLegit4, l.Server4},
				{l.ClientBanned6, l.Server6},
				{l.ClientLegit6, l.Server6},
			}
			for i, c := range cases {
				n := i + 2 // distinct counts per source prove per-source bookkeeping
				res, err := l.Probe(ctx, ProbeConfig{Src: c.src, Dst: netip.AddrPortFrom(c.dst, EchoPort), Conns: n, Timeout: 3 * time.Second})
				if err != nil {
					t.Fatal(err)
				}
				if res.Completed != n || res.Total() != n {
					t.Fatalf("%s -> %s: %+v, want %d completed", c.src, c.dst, res, n)
				}
				got := l.Echo.Count(c.src)
				if got.Accepted != uint64(n) || got.Requests != uint64(n) {
					t.Fatalf("echo log for %s = %+v, want %d accepted and %d lines", c.src, got, n, n)
				}
			}
		})
	}
}

// TestCloseRemovesNamespaces proves Close removes every namespace the lab
// made and that a second Close is harmless.
func TestCloseRemovesNamespaces(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	l, err := New(Config{Delay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for ns := Client; ns < nsCount; ns++ {
		names = append(names, l.Name(ns))
		if _, err := os.Stat(filepath.Join(netnsDir, l.Name(ns))); err != nil {
			t.Fatalf("namespace %s missing while the lab is open: %v", ns, err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(netnsDir, n)); !os.IsNotExist(err) {
			t.Errorf("namespace %s still in %s after Close (stat: %v)", n, netnsDir, err)
		}
	}
}

// fakeTB is a TB whose Fatalf ends the goroutine like testing's does, and
// whose cleanups the test runs itself: it lets a test watch NewT's cleanup
// after a failure without failing itself.
type fakeTB struct {
	failed   bool
	cleanups []func()
}

func (f *fakeTB) Helper()                     {}
func (f *fakeTB) Skip(args ...any)            { runtime.Goexit() }
func (f *fakeTB) Errorf(string, ...any)       { f.failed = true }
func (f *fakeTB) Cleanup(fn func())           { f.cleanups = append(f.cleanups, fn) }
func (f *fakeTB) Fatalf(fmt string, a ...any) { f.failed = true; runtime.Goexit() }

// TestNewTCleansUpAfterFailure fails a "test" right after building its lab
// and checks the cleanup NewT registered removes every namespace.
func TestNewTCleansUpAfterFailure(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	f := &fakeTB{}
	var names []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		l := NewT(f, Config{Delay: time.Millisecond})
		for ns := Client; ns < nsCount; ns++ {
			names = append(names, l.Name(ns))
		}
		f.Fatalf("simulated failure")
		t.Error("Fatalf returned")
	}()
	<-done
	if !f.failed || len(names) != int(nsCount) {
		t.Fatalf("fake test did not build its lab and fail (failed=%v, %d namespaces)", f.failed, len(names))
	}
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(netnsDir, n)); err != nil {
			t.Fatalf("namespace %s missing before cleanup: %v", n, err)
		}
	}
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(netnsDir, n)); !os.IsNotExist(err) {
			t.Errorf("namespace %s still in %s after the failed test's cleanup (stat: %v)", n, netnsDir, err)
		}
	}
}

// TestTwoLabsAtOnce runs two labs side by side: same address plan, own
// namespaces, each server sees only its own client's connections.
func TestTwoLabsAtOnce(t *testing.T) {
	a := NewT(t, Config{})
	b := NewT(t, Config{Delay: time.Millisecond})
	if a.ID == b.ID || a.Name(Client) == b.Name(Client) {
		t.Fatalf("labs share names: %s and %s", a.Name(Client), b.Name(Client))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	results := make([]ProbeResult, 2)
	errs := make([]error, 2)
	for i, l := range []*Lab{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = l.Probe(ctx, ProbeConfig{Src: l.ClientLegit4, Dst: netip.AddrPortFrom(l.Server4, EchoPort), Conns: 10 * (i + 1)})
		}()
	}
	wg.Wait()
	for i, l := range []*Lab{a, b} {
		want := 10 * (i + 1)
		if errs[i] != nil || results[i].Completed != want {
			t.Fatalf("lab %d: %+v, %v; want %d completed", i, results[i], errs[i], want)
		}
		if got := l.Echo.Count(l.ClientLegit4).Accepted; got != uint64(want) {
			t.Errorf("lab %d server accepted %d connections, want %d (its own only)", i, got, want)
		}
	}
}

// TestDoRestoresNamespace checks Do runs in the requested namespace, never
// leaves the caller's thread elsewhere, reports errors, and re-raises
// panics on the caller's goroutine.
func TestDoRestoresNamespace(t *testing.T) {
	l := NewT(t, Config{})
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()

	var inside bool
	if err := l.Do(Server, func() error {
		cur, err := netns.Get()
		if err != nil {
			return err
		}
		defer cur.Close()
		inside = cur.Equal(l.Handle(Server))
		_, err = net.InterfaceByName(ServerIface)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !inside {
		t.Error("fn did not run in the server namespace")
	}
	sentinel := errors.New("sentinel")
	if err := l.Do(Router, func() error { return sentinel }); !errors.Is(err, sentinel) {
		t.Errorf("Do returned %v, want the function's error", err)
	}
	func() {
		defer func() {
			if p := recover(); p != "boom" {
				t.Errorf("recovered %v, want the function's panic", p)
			}
		}()
		l.Do(Sensor, func() error { panic("boom") })
	}()
	if err := l.Do(Client, func() error { runtime.Goexit(); return nil }); !errors.Is(err, errGoexit) {
		t.Errorf("Do after Goexit returned %v, want errGoexit", err)
	}
	if err := l.Do(DelayLine, func() error { return nil }); err == nil {
		t.Error("Do in the delay namespace of a lab without delay succeeded")
	}
	cur, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	if !cur.Equal(orig) {
		t.Fatal("the caller's thread changed namespace")
	}
}

// TestProbeOutcomes drives each outcome class on purpose: refused (closed
// port), reset (a server that aborts with SO_LINGER 0), timeout (a host
// that does not exist) and completed.
func TestProbeOutcomes(t *testing.T) {
	l := NewT(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var ln net.Listener
	if err := l.Do(Server, func() (err error) { ln, err = net.Listen("tcp", ":9"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 64)
			c.Read(buf) // wait for the line, then abort
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	}()
	for _, c := range []struct {
		dst  netip.AddrPort
		want func(ProbeResult) int
		name string
	}{
		{netip.AddrPortFrom(l.Server4, EchoPort), func(r ProbeResult) int { return r.Completed }, "completed"},
		{netip.AddrPortFrom(l.Server4, 1), func(r ProbeResult) int { return r.Refused }, "refused"},
		{netip.AddrPortFrom(l.Server4, 9), func(r ProbeResult) int { return r.Reset }, "reset"},
		{netip.AddrPortFrom(netip.MustParseAddr("10.77.2.99"), EchoPort), func(r ProbeResult) int { return r.Timeout }, "timeout"},
		{netip.AddrPortFrom(netip.MustParseAddr("fd00:77:2::99"), EchoPort), func(r ProbeResult) int { return r.Timeout }, "timeout6"},
	} {
		src := l.ClientBanned4
		if c.dst.Addr().Is6() {
			src = l.ClientBanned6
		}
		r, err := l.Probe(ctx, ProbeConfig{Src: src, Dst: c.dst, Conns: 3, Timeout: 300 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if c.want(r) != 3 || r.Total() != 3 {
			t.Errorf("%s: %+v, want 3 %s", c.dst, r, c.name)
		}
	}
}

// TestSessionsReportDeaths opens long-lived sessions, checks they stay up,
// then kills the server side and checks every death is timestamped after
// the kill; sessions closed by Close stay marked alive.
func TestSessionsReportDeaths(t *testing.T) {
	l := NewT(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	extra, err := l.ListenEcho(8007)
	if err != nil {
		t.Fatal(err)
	}
	victims, err := l.OpenSessions(ctx, SessionsConfig{Src: l.ClientBanned4, Dst: netip.AddrPortFrom(l.Server4, 8007), N: 100, Interval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer victims.Close()
	keep, err := l.OpenSessions(ctx, SessionsConfig{Src: l.ClientLegit6, Dst: netip.AddrPortFrom(l.Server6, EchoPort), N: 5, Interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond)
	if n := victims.Alive(); n != 100 {
		t.Fatalf("%d of 100 sessions alive before the kill", n)
	}
	kill := time.Now()
	extra.Close() // closes every server-side connection of port 8007
	if n := victims.WaitDead(ctx, 0); n != 0 {
		t.Fatalf("%d sessions still alive after their server closed", n)
	}
	for _, s := range victims.Snapshot() {
		if s.Died.Before(kill) || s.Echoes < 5 || s.Err == "" {
			t.Errorf("session %v: died %v (kill at %v), %d echoes, err %q", s.Local, s.Died, kill, s.Echoes, s.Err)
		}
	}
	final := keep.Close()
	for _, s := range final {
		if !s.Alive() || s.Echoes < 5 {
			t.Errorf("legit session %v: alive=%v echoes=%d err=%q", s.Local, s.Alive(), s.Echoes, s.Err)
		}
	}
}

// TestCleanupStale leaves a namespace behind as a crashed run would, and
// removes it by prefix, while a live lab with the same prefix survives; an
// empty prefix is refused.
func TestCleanupStale(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := CleanupStale(""); err == nil {
		t.Error("CleanupStale(\"\") did not refuse")
	}
	prefix := "cnpstale" + strconv.Itoa(os.Getpid()) + "x"
	live := NewT(t, Config{Prefix: prefix})
	h, err := newNamedNS(prefix + "client")
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	removed, err := CleanupStale(prefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0] != prefix+"client" {
		t.Errorf("removed %v, want [%sclient]", removed, prefix)
	}
	if _, err := os.Stat(filepath.Join(netnsDir, prefix+"client")); !os.IsNotExist(err) {
		t.Errorf("stale namespace still there: %v", err)
	}
	for ns := Client; ns < DelayLine; ns++ {
		if _, err := os.Stat(filepath.Join(netnsDir, live.Name(ns))); err != nil {
			t.Errorf("CleanupStale removed the live lab's %s namespace: %v", ns, err)
		}
	}
}
