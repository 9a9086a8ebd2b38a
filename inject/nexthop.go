package inject

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"
)

// DefaultRefresh is how often a NextHop re-reads the neighbour table when
// nothing went wrong: often enough to follow a failover of the next hop
// (VRRP moves its MAC in seconds) at a negligible cost.
const DefaultRefresh = 30 * time.Second

// ResolveNextHop returns the MAC address frames to hop must carry on iface.
// hop is either a MAC address (returned as is) or an IP address, which is
// looked up in the kernel's neighbour table for iface; when it is absent or
// unusable, ResolveNextHop asks the kernel to resolve it (ARP or neighbour
// discovery, as traffic to it would) and polls until the entry is usable
// (REACHABLE, STALE, DELAY, PROBE or PERMANENT) or ctx ends; a STALE entry
// is used at once and the kernel asked to re-verify it. Call it from
// the network namespace that holds iface. The error names the IP and the
// interface and tells the operator how to get past it.
func ResolveNextHop(ctx context.Context, iface string, hop string) (net.HardwareAddr, error) {
	if mac, ok, err := parseMAC(iface, hop); ok {
		return net.HardwareAddr(mac[:]), err
	}
	ip, err := parseHop(iface, hop)
	if err != nil {
		return nil, err
	}
	r, err := newResolver(iface)
	if err != nil {
		return nil, err
	}
	defer r.close()
	mac, err := r.resolve(ctx, ip)
	if err != nil {
		return nil, err
	}
	return net.HardwareAddr(mac[:]), nil
}

// parseMAC reports whether hop is an Ethernet (6-byte) address in any form
// net.ParseMAC knows; err is set when it is one but cannot be a next hop.
func parseMAC(iface, hop string) (m [6]byte, ok bool, err error) {
	hw, perr := net.ParseMAC(hop)
	if perr != nil || len(hw) != 6 {
		return m, false, nil
	}
	copy(m[:], hw)
	if m == [6]byte{} || m[0]&1 != 0 {
		// All-zero, or the group bit: resets would go nowhere or everywhere.
		return m, true, fmt.Errorf("next hop %s on %s: not a unicast MAC address", hop, iface)
	}
	return m, true, nil
}

func parseHop(iface, hop string) (netip.Addr, error) {
	ip, err := netip.ParseAddr(hop)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("next hop %q on %s: neither an IP address nor a MAC address", hop, iface)
	}
	ip = ip.WithZone("").Unmap() // a zone can only name iface, which we know
	if !ip.IsGlobalUnicast() && !ip.IsLinkLocalUnicast() {
		return netip.Addr{}, fmt.Errorf("next hop %s on %s: not a unicast address a router could have", ip, iface)
	}
	return ip, nil
}

// resolveErr is the operator-facing failure of a resolution.
func resolveErr(ip netip.Addr, iface, why string) error {
	return fmt.Errorf("next hop %s on %s: cannot resolve its MAC address (%s); check that %s is on %s's link and answers ARP/neighbour discovery, or pass --next-hop as a MAC address", ip, iface, why, ip, iface)
}

// NextHop keeps the next hop's MAC address current for the hot path: MAC
// is one atomic load. A NextHop built from a MAC never changes; one built
// from an IP re-resolves it every refresh interval and soon after
// Invalidate (call it when a send fails), while Run is running. A failed
// re-resolution keeps the last good MAC (an old MAC beats sending nothing)
// and is reported by Err.
type NextHop struct {
	mac   atomic.Pointer[[6]byte]
	err   atomic.Pointer[error]
	hop   string
	ip    netip.Addr // invalid for a static MAC
	res   *resolver  // nil for a static MAC
	every time.Duration
	kick  chan struct{}
}

// NewNextHop resolves hop on iface as ResolveNextHop does and returns a
// NextHop that re-resolves it every refresh (≤ 0 means DefaultRefresh)
// once Run is started. Call it from the network namespace that holds iface;
// the NextHop keeps working from any goroutine afterwards. Close it when
// done.
func NewNextHop(ctx context.Context, iface, hop string, refresh time.Duration) (*NextHop, error) {
	if refresh <= 0 {
		refresh = DefaultRefresh
	}
	n := &NextHop{hop: hop, every: refresh, kick: make(chan struct{}, 1)}
	if mac, ok, err := parseMAC(iface, hop); ok {
		if err != nil {
			return nil, err
		}
		n.mac.Store(&mac)
		return n, nil
	}
	ip, err := parseHop(iface, hop)
	if err != nil {
		return nil, err
	}
	r, err := newResolver(iface)
	if err != nil {
		return nil, err
	}
	mac, err := r.resolve(ctx, ip)
	if err != nil {
		r.close()
		return nil, err
	}
	n.ip, n.res = ip, r
	n.mac.Store(&mac)
	return n, nil
}

// MAC is the current next-hop MAC address. It never blocks or allocates.
func (n *NextHop) MAC() [6]byte { return *n.mac.Load() }

// Invalidate asks Run to re-resolve the next hop now, e.g. after a send
// error. It never blocks; calls while one is pending are merged.
func (n *NextHop) Invalidate() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// Err is the last re-resolution's error, nil once one succeeds.
func (n *NextHop) Err() error {
	if p := n.err.Load(); p != nil {
		return *p
	}
	return nil
}

// Run re-resolves the next hop every refresh interval and on Invalidate
// until ctx ends (it then returns nil). For a static MAC it just waits.
func (n *NextHop) Run(ctx context.Context) error {
	if n.res == nil {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(n.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-n.kick:
		}
		n.Refresh(ctx)
	}
}

// Refresh re-resolves the next hop once, now, waiting at most 3 seconds,
// and reports the outcome (also kept for Err). On failure the previous MAC
// stays in use.
func (n *NextHop) Refresh(ctx context.Context) error {
	if n.res == nil {
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	mac, err := n.res.resolve(rctx, n.ip)
	if err != nil {
		n.err.Store(&err)
		return err
	}
	n.mac.Store(&mac)
	n.err.Store(nil)
	return nil
}

// Close releases the netlink socket; call it after Run has returned. MAC
// keeps returning the last value.
func (n *NextHop) Close() error {
	if n.res != nil {
		n.res.close()
	}
	return nil
}

// String says where the MAC comes from, for logs.
func (n *NextHop) String() string {
	m := n.MAC()
	return fmt.Sprintf("%s (%s)", n.hop, net.HardwareAddr(m[:]))
}
