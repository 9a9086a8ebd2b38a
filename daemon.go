package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"canopy/api"
	"canopy/config"
	"canopy/rules"
	"canopy/sensor"
)

// newLogger builds the structured logger; its level can change at run time.
func newLogger(cfg config.Config, w io.Writer) (*slog.Logger, *slog.LevelVar) {
	level := new(slog.LevelVar)
	_ = level.UnmarshalText([]byte(cfg.Log.Level)) // validated by config
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Log.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts)), level
	}
	return slog.New(slog.NewJSONHandler(w, opts)), level
}

// runDaemon runs the sensor headless with the HTTP API, the events stream
// and SIGHUP reloads, until SIGTERM/SIGINT (or the end of a --read file).
func runDaemon(ctx context.Context, cfg config.Config, o *options, stdout, stderr io.Writer) error {
	log, level := newLogger(cfg, stderr)
	s, err := openStack(ctx, cfg, o, log)
	if err != nil {
		return err
	}
	defer s.Close()
	return serve(ctx, s, o, level, stdout)
}

// serve runs an opened stack as a daemon: API, events, reloads.
func serve(ctx context.Context, s *stack, o *options, level *slog.LevelVar, stdout io.Writer) error {
	log, cfg := s.log, s.cfg
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }() // a --read run ends by itself: stop the API, events and reloads too

	// Events: JSON lines on stdout (not for a --read summary run, whose
	// stdout is the summary) and in --events FILE.
	var sinks []io.Writer
	if o.readFile == "" {
		sinks = append(sinks, stdout)
	}
	if cfg.Log.EventsFile != "" {
		f, err := openEventsFile(cfg.Log.EventsFile, log)
		if err != nil {
			return fmt.Errorf("events file: %w", err)
		}
		defer f.Close()
		sinks = append(sinks, f)
	}
	if len(sinks) > 0 {
		events, unsubscribe := s.engine.Subscribe()
		wg.Add(1)
		go func() {
			defer wg.Done()
			writeEvents(ctx, events, io.MultiWriter(sinks...), log)
		}()
		defer unsubscribe()
	}

	if o.readFile == "" {
		var tokens []api.Token
		if cfg.API.TokenFile != "" {
			var err error
			if tokens, err = api.LoadTokens(cfg.API.TokenFile); err != nil {
				return err
			}
		}
		srv, err := api.NewServer(api.Config{
			Addr: cfg.API.Listen, Tokens: tokens, Rules: s.store, Sensor: apiSensor{s},
			Version: version, Logger: log,
			SetLogLevel: func(l string) error {
				if err := level.UnmarshalText([]byte(l)); err != nil {
					return err
				}
				log.Info("log level changed", "level", l)
				return nil
			},
		})
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ctx); err != nil && ctx.Err() == nil {
				log.Error("API stopped", "err", err)
				cancel()
			}
		}()
		log.Info("canopy running", "version", version, "mode", s.engine.Mode(), "interfaces", cfg.Capture.Interfaces,
			"inject", cfg.Inject.Interface, "api", cfg.API.Listen, "state_dir", cfg.Rules.StateDir)
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				reload(s, o, log)
			}
		}
	}()

	err := s.run(ctx)
	if o.readFile != "" {
		b, _ := json.Marshal(s.engine.Summary())
		fmt.Fprintln(stdout, string(b))
	}
	log.Info("canopy stopped")
	return err
}

// reload re-reads the configuration and the block file. A configuration
// that does not load is rejected and the running one stays.
func reload(s *stack, o *options, log *slog.Logger) {
	next, err := loadConfig(o)
	if err != nil {
		log.Error("reload rejected, the running configuration stays", "err", err)
		_ = s.store.Audit(rules.AuditRecord{Time: time.Now(), Action: "reload", Who: "sighup", Detail: "rejected: " + err.Error()})
		return
	}
	if !slices.Equal(next.Capture.Interfaces, s.cfg.Capture.Interfaces) || next.Inject != s.cfg.Inject {
		log.Warn("capture and inject settings change only on restart; rules reloaded")
	}
	if next.Rules.BlockFile != s.cfg.Rules.BlockFile {
		log.Warn("block file path changed: the new file is applied now, but the watch stays on the old path until restart",
			"old", s.cfg.Rules.BlockFile, "new", next.Rules.BlockFile)
	}
	if err := syncConfigRules(s.store, next, log); err != nil {
		log.Error("some configured rules were refused", "err", err)
	}
	loadBlockFile(s.store, next.Rules.BlockFile, log)
	_ = s.store.Audit(rules.AuditRecord{Time: time.Now(), Action: "reload", Who: "sighup", Detail: "configuration and block file re-read"})
	log.Info("configuration reloaded", "config", o.configPath)
}

// writeEvents writes each event as one JSON line.
// eventsFile appends to the --events file and follows its rotation: at
// most once per check interval it makes sure the file at the path is still
// the one open (logrotate renames it), and opens a new one if not. Lines
// written in between land in the rotated file, not nowhere.
type eventsFile struct {
	mu    sync.Mutex // Close may come from the daemon while the writer writes
	path  string
	f     *os.File
	every time.Duration // how often to look at the path
	next  time.Time
	log   *slog.Logger
}

func openEventsFile(path string, log *slog.Logger) (*eventsFile, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, err
	}
	return &eventsFile{path: path, f: f, every: time.Second, next: time.Now().Add(time.Second), log: log}, nil
}

func (e *eventsFile) Write(b []byte) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if now := time.Now(); !now.Before(e.next) {
		e.next = now.Add(e.every)
		if st, err := os.Stat(e.path); err != nil || !sameFile(e.f, st) {
			if f, err := os.OpenFile(e.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640); err != nil {
				e.log.Error("events file was moved, and a new one cannot be opened; writing on into the moved file", "path", e.path, "err", err)
			} else {
				e.f.Close()
				e.f = f
				e.log.Info("events file was rotated; reopened", "path", e.path)
			}
		}
	}
	return e.f.Write(b)
}

func (e *eventsFile) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.f.Close()
}

// sameFile reports whether open file f is the file st describes.
func sameFile(f *os.File, st os.FileInfo) bool {
	cur, err := f.Stat()
	return err == nil && os.SameFile(cur, st)
}

func writeEvents(ctx context.Context, events <-chan sensor.Event, w io.Writer, log *slog.Logger) {
	enc := json.NewEncoder(w)
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			if err := enc.Encode(ev); err != nil {
				log.Warn("event not written", "err", err)
			}
		}
	}
}
