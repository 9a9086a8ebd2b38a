package ui

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
)

func TestRunReturnsNilWhenContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	fb := newFake(demoSnapshot())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, Config{Backend: fb}, tea.WithInput(&bytes.Buffer{}), tea.WithOutput(io.Discard),
			tea.WithoutSignals(), tea.WithWindowSize(120, 40))
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		fb.mu.Lock()
		n := fb.fetches
		fb.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the program never fetched a snapshot")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context was cancelled")
	}
}

func TestRunRefusesNoBackend(t *testing.T) {
	if err := Run(context.Background(), Config{}); err == nil {
		t.Fatal("Run without a backend returned nil")
	}
}
