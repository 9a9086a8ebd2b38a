package ui

import (
	"context"
	"errors"

	tea "charm.land/bubbletea/v2"
)

// Run shows the dashboard on the terminal (alternate screen) until the
// operator quits or ctx is cancelled; cancellation is not an error. It
// works under tmux and screen. Quitting the dashboard of an in-process
// sensor is the caller's cue to stop the sensor.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Backend == nil {
		return errNoBackend
	}
	m := New(cfg)
	m.ctx = ctx
	p := tea.NewProgram(m, tea.WithContext(ctx))
	_, err := p.Run()
	if err != nil && ctx.Err() != nil && errors.Is(err, tea.ErrProgramKilled) {
		return nil
	}
	return err
}
