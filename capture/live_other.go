//go:build !linux

package capture

import (
	"context"
	"errors"
)

// Live is a Source reading AF_PACKET rings; it exists only on Linux.
type Live struct{}

var errNotLinux = errors.New("live capture needs Linux (AF_PACKET); use OpenFile to replay a capture")

// OpenLive fails outside Linux.
func OpenLive(cfg LiveConfig) (*Live, error) { return nil, errNotLinux }

// Workers is 0 outside Linux.
func (l *Live) Workers() int { return 0 }

// Run fails outside Linux.
func (l *Live) Run(ctx context.Context, worker int, h Handler) error { return errNotLinux }

// Wake does nothing outside Linux.
func (l *Live) Wake(worker int) {}

// Stats is empty outside Linux.
func (l *Live) Stats() Stats { return Stats{} }

// Close does nothing outside Linux.
func (l *Live) Close() error { return nil }
