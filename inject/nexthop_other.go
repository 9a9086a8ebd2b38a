//go:build !linux

package inject

import (
	"context"
	"errors"
	"net/netip"
)

type resolver struct{}

func newResolver(iface string) (*resolver, error) { return nil, errNoResolver }

func (r *resolver) close() {}

func (r *resolver) resolve(ctx context.Context, ip netip.Addr) ([6]byte, error) {
	return [6]byte{}, errNoResolver
}

var errNoResolver = errors.New("next-hop resolution by IP needs Linux; pass --next-hop as a MAC address")
