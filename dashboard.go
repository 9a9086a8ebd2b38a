package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"canopy/api"
	"canopy/config"
	"canopy/ui"
)

// runDashboard runs the sensor in-process with the dashboard on top. Logs
// go to canopy.log in the state directory so they cannot tear the screen.
func runDashboard(ctx context.Context, cfg config.Config, o *options, stderr io.Writer) error {
	logw, path := dashboardLog(cfg)
	if logw != nil {
		defer logw.Close()
	}
	log, _ := newLogger(cfg, orDiscard(logw))
	s, err := openStack(ctx, cfg, o, log)
	if err != nil {
		return err
	}
	defer s.Close()
	return dashboardOn(ctx, s, cfg, path, stderr)
}

// dashboardOn runs the dashboard over an opened stack until the operator
// quits; capture and blocking stop with it.
func dashboardOn(ctx context.Context, s *stack, cfg config.Config, logPath string, stderr io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.run(ctx) }()
	uiErr := ui.Run(ctx, ui.Config{
		Backend:       localBackend{s},
		Ifaces:        cfg.Capture.Interfaces,
		DefaultBanTTL: cfg.Rules.DefaultBanTTL,
	})
	cancel()
	runErr := <-done
	if runErr != nil {
		if logPath != "" {
			fmt.Fprintf(stderr, "canopy: details in %s\n", logPath)
		}
		return runErr
	}
	return uiErr
}

// runAttach runs the dashboard on a daemon's API.
func runAttach(ctx context.Context, cfg config.Config, o *options) error {
	token, err := api.LoadClientToken(o.tokenFile) // "" reads $CANOPY_API_TOKEN
	if err != nil {
		return err
	}
	c := api.NewClient(o.attach, token)
	if _, err := c.Status(ctx); err != nil {
		return err
	}
	return ui.Run(ctx, ui.Config{Backend: attachBackend{c}, DefaultBanTTL: cfg.Rules.DefaultBanTTL, Attached: true})
}

func dashboardLog(cfg config.Config) (*os.File, string) {
	if cfg.Rules.StateDir == "" {
		return nil, ""
	}
	if err := os.MkdirAll(cfg.Rules.StateDir, 0o700); err != nil {
		return nil, ""
	}
	path := filepath.Join(cfg.Rules.StateDir, "canopy.log")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, ""
	}
	return f, path
}

func orDiscard(f *os.File) io.Writer {
	if f == nil {
		return io.Discard
	}
	return f
}
