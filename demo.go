package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"canopy/config"
	"canopy/lab"
)

// runDemo builds a throw-away lab (client with an attacker and a legitimate
// address, server with HTTP and echo services, a router that mirrors to the
// sensor), starts mixed traffic, and runs the sensor on it with the
// dashboard (or headless with --daemon). Everything it built is removed on
// exit; a lab left by a crash is removed at the next start.
func runDemo(ctx context.Context, cfg config.Config, o *options, stdout, stderr io.Writer) error {
	if os.Geteuid() != 0 {
		return errors.New("demo builds network namespaces: run it as root (sudo canopy demo)")
	}
	if gone, err := lab.CleanupStale(lab.DefaultPrefix); err != nil {
		fmt.Fprintf(stderr, "canopy demo: could not remove a previous lab: %v\n", err)
	} else if len(gone) > 0 {
		fmt.Fprintf(stderr, "canopy demo: removed %d namespaces left by an earlier run\n", len(gone))
	}
	fmt.Fprintf(stderr, "canopy demo: building the lab (client, server, router with SPAN, sensor; %s one-way delay)…\n", o.delay)
	l, err := lab.New(lab.Config{Delay: o.delay})
	if err != nil {
		return fmt.Errorf("building the lab: %w", err)
	}
	defer l.Close()

	stateDir, err := os.MkdirTemp("", "canopy-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stateDir)
	cfg.Capture.Interfaces = []string{l.TapIface}
	cfg.Inject.Interface = l.InjectIface
	cfg.Inject.NextHop = l.RouterInject4.String()
	if !o.set["state-dir"] {
		cfg.Rules.StateDir = stateDir
	}
	if !o.set["workers"] {
		cfg.Capture.Workers = 2
	}

	var s *stack
	logw, logPath := io.Writer(stderr), ""
	if !o.daemon {
		f, p := dashboardLog(cfg)
		logw, logPath = orDiscard(f), p
		if f != nil {
			defer f.Close()
		}
	}
	log, level := newLogger(cfg, logw)
	if err := l.Do(lab.Sensor, func() error {
		var err error
		s, err = openStack(ctx, cfg, o, log)
		return err
	}); err != nil {
		return fmt.Errorf("starting the sensor in the lab: %w", err)
	}
	defer s.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	fmt.Fprintf(stderr, "canopy demo: attacker %s is scanning ports and hammering http://%s/; legitimate clients %s and %s keep working.\n",
		l.ClientBanned4, l.Server4, l.ClientLegit4, l.ClientLegit6)
	if o.daemon {
		fmt.Fprintf(stderr, "canopy demo: headless. Ban the attacker from another shell:\n  canopy ban %s --for 10m --reason demo\nthen watch its blocks in the events below, or run: canopy --attach %s\n", l.ClientBanned4, cfg.API.Listen)
		// The capture rings are open: start the traffic just before the
		// sensor starts reading them, or the first seconds overflow them.
		startTraffic(ctx, &wg, l)
		return serve(ctx, s, o, level, stdout)
	}
	fmt.Fprintf(stderr, "canopy demo: in the dashboard select %s and press b to ban it; q quits and removes the lab.\n", l.ClientBanned4)
	time.Sleep(1500 * time.Millisecond) // let the operator read the line above
	startTraffic(ctx, &wg, l)
	return dashboardOn(ctx, s, cfg, logPath, stderr)
}

// startTraffic runs the demo's clients until ctx is done: a few legitimate
// HTTP users and long-lived echo sessions, and one noisy attacker that scans
// ports and hammers the HTTP service.
func startTraffic(ctx context.Context, wg *sync.WaitGroup, l *lab.Lab) {
	loop := func(every time.Duration, fn func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					fn()
				}
			}
		}()
	}
	client := func(src netip.Addr) *http.Client {
		return &http.Client{
			Timeout: 2 * time.Second,
			Transport: &http.Transport{
				DisableKeepAlives: true,
				DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
					return l.Dial(ctx, src, network, addr)
				},
			},
		}
	}
	url := func(dst netip.Addr, path string) string {
		return "http://" + netip.AddrPortFrom(dst, lab.HTTPPort).String() + path
	}
	done := func(resp *http.Response, err error) {
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	legit4, legit6, attacker := client(l.ClientLegit4), client(l.ClientLegit6), client(l.ClientBanned4)
	// Legitimate users: a page every 300 ms over IPv4, every 700 ms over
	// IPv6, and three chatty echo sessions.
	loop(300*time.Millisecond, func() { done(legit4.Get(url(l.Server4, "/bytes?n=20000"))) })
	loop(700*time.Millisecond, func() { done(legit6.Get(url(l.Server6, "/bytes?n=8000"))) })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			ss, err := l.OpenSessions(ctx, lab.SessionsConfig{Src: l.ClientLegit4,
				Dst: netip.AddrPortFrom(l.Server4, lab.EchoPort), N: 3, Interval: 200 * time.Millisecond})
			if err == nil {
				<-ctx.Done()
				ss.Close()
				return
			}
			sleep(ctx, time.Second)
		}
	}()
	// The attacker: eight connections at a time hammering HTTP with 12 KB
	// uploads (so it, not the server, tops the talkers), and a port scan.
	body := strings.Repeat("A", 12<<10)
	for i := 0; i < 8; i++ {
		loop(25*time.Millisecond, func() {
			done(attacker.Post(url(l.Server4, "/login"), "application/x-www-form-urlencoded", strings.NewReader(body)))
		})
	}
	port := 1
	loop(10*time.Millisecond, func() {
		port = port%2048 + 1
		dctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		if c, err := l.Dial(dctx, l.ClientBanned4, "tcp", netip.AddrPortFrom(l.Server4, uint16(port)).String()); err == nil {
			c.Close()
		}
	})
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
