package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"

	"canopy/capture"
	"canopy/config"
	"canopy/flow"
	"canopy/inject"
	"canopy/rules"
	"canopy/sensor"
)

// stack is one running sensor: rule store, capture source, injector and
// engine, built from the configuration.
type stack struct {
	cfg     config.Config
	log     *slog.Logger
	store   *rules.Store
	src     capture.Source
	sender  *inject.PacketSender
	nextHop *inject.NextHop
	engine  *sensor.Engine
}

// openStack opens everything the sensor needs. For a live source it must
// run in the network namespace of the interfaces.
func openStack(ctx context.Context, cfg config.Config, o *options, log *slog.Logger) (_ *stack, err error) {
	s := &stack{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()

	var injection sensor.Injection
	source := "live"
	if o.readFile != "" {
		source = o.readFile
		if s.src, err = capture.OpenFile(o.readFile, o.replaySpeed); err != nil {
			return nil, err
		}
	} else {
		if len(cfg.Capture.Interfaces) == 0 {
			return nil, errors.New("no capture interface: pass --iface NAME (a mirror port), --read FILE.pcap, or try `canopy demo`")
		}
		nap := cfg.Capture.LaneNap
		if nap == 0 {
			nap = -1 // the config's 0 is "never"; capture's is its default
		}
		live, err := capture.OpenLive(capture.LiveConfig{
			Ifaces:       cfg.Capture.Interfaces,
			Workers:      cfg.Capture.Workers,
			BlockSize:    cfg.Capture.BlockSize,
			NumBlocks:    cfg.Capture.BlockCount,
			BlockTimeout: cfg.Capture.BlockTimeout,
			Lane:         cfg.Capture.Lane,
			LaneNap:      nap,
			Promiscuous:  cfg.Capture.Promiscuous,
		})
		if err != nil {
			return nil, err
		}
		s.src = live
		if injection, err = s.openInjection(ctx); err != nil {
			if cfg.Mode != "observe" {
				return nil, err
			}
			log.Warn("no injector: observing only", "err", err)
		}
	}

	implicit, err := s.implicitAllow()
	if err != nil {
		return nil, err
	}
	home := make([]netip.Prefix, 0, len(cfg.Rules.HomeNets))
	for _, n := range cfg.Rules.HomeNets {
		home = append(home, netip.MustParsePrefix(n)) // validated by config
	}
	if o.readFile != "" && !o.set["state-dir"] && o.configPath == "" {
		// A replay for triage needs no privileges and must not touch a
		// production sensor's bans: rules live in memory unless a state
		// directory (or a config naming one) is given.
		cfg.Rules.StateDir = ""
		s.cfg.Rules.StateDir = ""
	}
	if cfg.Rules.StateDir != "" {
		if err := os.MkdirAll(cfg.Rules.StateDir, 0o700); err != nil {
			return nil, fmt.Errorf("state dir: %w (run as root, or pass --state-dir DIR)", err)
		}
	}
	if s.store, err = rules.Open(rules.Config{
		StateDir:      cfg.Rules.StateDir,
		MaxPrefixV4:   cfg.Rules.MaxPrefixV4,
		MaxPrefixV6:   cfg.Rules.MaxPrefixV6,
		MaxEntries:    cfg.Rules.MaxEntries,
		ImplicitAllow: implicit,
		HomeNets:      home,
		Logger:        log,
	}); err != nil {
		return nil, err
	}
	if err := syncConfigRules(s.store, cfg, log); err != nil {
		return nil, err
	}
	loadBlockFile(s.store, cfg.Rules.BlockFile, log)

	workerNice, workerRT := cfg.Capture.WorkerNice, cfg.Capture.WorkerRTPriority
	if o.readFile != "" {
		workerNice, workerRT = 0, 0 // a replay races nobody
	}
	mode := sensor.ModeEnforce
	if cfg.Mode == "observe" {
		mode = sensor.ModeObserve
	}
	s.engine, err = sensor.New(sensor.Config{
		Mode: mode,
		Flow: flow.Config{
			MaxFlows:        cfg.Flow.MaxFlows,
			IdleEstablished: cfg.Flow.IdleEstablished,
			IdleHalfOpen:    cfg.Flow.IdleHalfOpen,
			IdleClosed:      cfg.Flow.IdleClosed,
			IdleUDP:         cfg.Flow.IdleUDP,
		},
		MaxResetsPerFlow: cfg.Inject.MaxResetsPerFlow,
		MinResetInterval: cfg.Inject.MinResetInterval,
		ConfirmAfter:     cfg.Inject.ConfirmAfter,
		FailAfter:        cfg.Inject.FailAfter,
		WorkerNice:       workerNice,
		WorkerRTPriority: workerRT,
		PrefaultFlows:    o.readFile == "", // live capture: no page faults on the first packets
		Injection:        injection,
		Version:          version,
		Source:           source,
		Ifaces:           cfg.Capture.Interfaces,
		Logger:           log,
	}, s.src, s.store)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// openInjection opens the transmit socket and resolves where frames go.
func (s *stack) openInjection(ctx context.Context) (sensor.Injection, error) {
	c := s.cfg.Inject
	inj := sensor.Injection{Ceiling: inject.NewCeiling(c.MaxPPS)}
	if c.UnreachableCode == "admin" {
		inj.Unreach = inject.UnreachAdmin
	}
	iface := c.Interface
	if iface == "" {
		if len(s.cfg.Capture.Interfaces) != 1 {
			return inj, errors.New("reflect mode (no --inject-iface) needs exactly one capture interface")
		}
		iface, inj.Reflect = s.cfg.Capture.Interfaces[0], true
	}
	sender, err := inject.OpenSender(inject.SenderConfig{Iface: iface, QdiscBypass: c.QdiscBypass})
	if err != nil {
		return inj, err
	}
	s.sender = sender
	inj.Sender, inj.Iface = sender, iface
	copy(inj.SrcMAC[:], sender.MAC())
	if !inj.Reflect {
		if c.NextHop == "" {
			return inj, fmt.Errorf("--inject-iface %s needs --next-hop IP|MAC: the router (or host) injected frames are addressed to", iface)
		}
		if s.nextHop, err = inject.NewNextHop(ctx, iface, c.NextHop, inject.DefaultRefresh); err != nil {
			return inj, err
		}
		inj.NextHop = s.nextHop
	}
	return inj, nil
}

// implicitAllow lists what canopy must never block: the addresses of its
// own interfaces and the next hop.
func (s *stack) implicitAllow() ([]rules.ImplicitAllow, error) {
	var out []rules.ImplicitAllow
	names := append([]string{}, s.cfg.Capture.Interfaces...)
	if s.cfg.Inject.Interface != "" {
		names = append(names, s.cfg.Inject.Interface)
	}
	for _, name := range names {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			continue // not here: a replay (--read) names no local interface
		}
		addrs, err := ifi.Addrs()
		if err != nil {
			return nil, fmt.Errorf("addresses of %s (to allowlist them): %w", name, err)
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipn.IP); ok && !ip.IsLinkLocalUnicast() {
					ip = ip.Unmap()
					out = append(out, rules.ImplicitAllow{Prefix: netip.PrefixFrom(ip, ip.BitLen()), Comment: "sensor address on " + name})
				}
			}
		}
	}
	if hop, err := netip.ParseAddr(s.cfg.Inject.NextHop); err == nil {
		out = append(out, rules.ImplicitAllow{Prefix: netip.PrefixFrom(hop.Unmap(), hop.Unmap().BitLen()), Comment: "next hop"})
	}
	return out, nil
}

// syncConfigRules makes the store's config-origin entries match the
// configuration: entries added to the file are added, removed ones lifted.
func syncConfigRules(store *rules.Store, cfg config.Config, log *slog.Logger) error {
	want := map[string]bool{}
	var errs []error
	add := func(req rules.Request) {
		req.Origin, req.RequestedBy = rules.OriginConfig, "config"
		e, _, err := store.Add(req)
		if err != nil {
			errs = append(errs, fmt.Errorf("config %s %s: %w", req.Kind, req.Value, err))
			return
		}
		want[string(e.Kind)+" "+e.Value.String()] = true
	}
	for _, a := range cfg.Rules.Allow {
		add(rules.Request{Kind: rules.KindAllow, Value: a.Value, Reason: a.Comment})
	}
	for _, b := range cfg.Rules.Ban {
		act := rules.ActionBlock
		if b.Action == "observe" {
			act = rules.ActionObserve
		}
		add(rules.Request{Kind: rules.KindBan, Value: b.Value, Reason: b.Reason, TTL: b.TTL, Action: act})
	}
	have, _ := store.List(rules.Filter{Origin: rules.OriginConfig})
	for _, e := range have {
		if e.Kind != rules.KindACL && !want[string(e.Kind)+" "+e.Value.String()] {
			if _, err := store.Remove(e.ID, "config", "removed from the configuration"); err != nil {
				errs = append(errs, err)
			} else {
				log.Info("config entry lifted", "kind", e.Kind, "value", e.Value)
			}
		}
	}
	return errors.Join(errs...)
}

// loadBlockFile applies the block file once (at start and on SIGHUP); a
// file that cannot be read is logged and the bans it gave stay in force.
func loadBlockFile(store *rules.Store, path string, log *slog.Logger) {
	if path == "" {
		return
	}
	if rep, err := store.LoadBlockFile(path); err != nil {
		log.Error("block file not applied", "file", path, "err", err)
	} else {
		log.Info("block file applied", "file", path, "report", rep)
	}
}

// run runs the store's expiry loop, the next-hop refresher, the block-file
// watcher and the engine until ctx is done or the source ends.
func (s *stack) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	bg := func(name string, fn func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(ctx); err != nil && ctx.Err() == nil {
				s.log.Error(name+" stopped", "err", err)
			}
		}()
	}
	bg("rule expiry", s.store.Run)
	if s.nextHop != nil {
		bg("next-hop refresh", s.nextHop.Run)
	}
	if f := s.cfg.Rules.BlockFile; f != "" {
		bg("block-file watch", func(ctx context.Context) error { return s.store.WatchBlockFile(ctx, f, s.log) })
	}
	defer s.engine.ReserveProcs()()
	err := s.engine.Run(ctx)
	cancel()
	wg.Wait()
	return err
}

// Close releases sockets and flushes the store.
func (s *stack) Close() error {
	var errs []error
	if s.src != nil {
		errs = append(errs, s.src.Close())
	}
	if s.sender != nil {
		errs = append(errs, s.sender.Close())
	}
	if s.nextHop != nil {
		errs = append(errs, s.nextHop.Close())
	}
	if s.store != nil {
		errs = append(errs, s.store.Close())
	}
	return errors.Join(errs...)
}
