package ui

import (
	"context"
	"errors"

	tea "charm.land/bubbletea/v2"
)

// frameRate caps terminal writes. The renderer wakes at this rate even
// when idle; 30 Hz keeps key echo under 33 ms at about half the idle CPU
// of the default 60 (measured under tmux at 200×60 with a changing
// picture: 0.8% of a core at 60 Hz, 0.5% at 30 Hz, 0.4% at 20 Hz).
const frameRate = 30

// Run shows the dashboard on the terminal (alternate screen) until the
// operator quits or ctx is cancelled; cancellation is not an error. It
// works under tmux and screen. Quitting the dashboard of an in-process
// sensor is the caller's cue to stop the sensor.
func Run(ctx context.Context, cfg Config) error {
	return run(ctx, cfg)
}

// run is Run with extra program options, for tests that drive the program
// without a terminal.
func run(ctx context.Context, cfg Config, opts ...tea.ProgramOption) error {
	if cfg.Backend == nil {
		return errNoBackend
	}
	m := New(cfg)
	m.ctx = ctx
	opts = append([]tea.ProgramOption{tea.WithContext(ctx), tea.WithFPS(frameRate)}, opts...)
	_, err := tea.NewProgram(m, opts...).Run()
	if err != nil && ctx.Err() != nil && errors.Is(err, tea.ErrProgramKilled) {
		return nil
	}
	return err
}
