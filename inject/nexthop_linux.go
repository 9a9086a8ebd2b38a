package inject

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// resolver reads and drives the kernel neighbour table for one interface.
// Its netlink socket belongs to the namespace it was created in, so it keeps
// working from goroutines running elsewhere.
type resolver struct {
	h     *netlink.Handle
	iface string
	index int
}

func newResolver(iface string) (*resolver, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("next hop on %s: open netlink socket: %w", iface, err)
	}
	link, err := h.LinkByName(iface)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("next hop on %s: look up interface: %w", iface, err)
	}
	return &resolver{h: h, iface: iface, index: link.Attrs().Index}, nil
}

func (r *resolver) close() { r.h.Close() }

// usable is the set of neighbour states whose address can be used now.
const usable = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY | netlink.NUD_PROBE | netlink.NUD_PERMANENT

// pollEvery is how often resolve re-reads the table while waiting.
const pollEvery = 10 * time.Millisecond

// retriggerEvery is how often resolve asks again while waiting: a FAILED
// entry stays failed until something asks.
const retriggerEvery = time.Second

// absent is lookup's state for "no entry".
const absent = -1

// resolve returns ip's MAC on r's interface from the kernel's neighbour
// table, asking the kernel to resolve it when the entry is missing or
// unusable and polling until it is usable or ctx ends.
//
// A STALE entry is returned as is, but the kernel is asked to re-verify it
// (STALE → DELAY → PROBE: a unicast probe to the old MAC), so that a moved
// next hop fails and gets re-resolved by a later call instead of staying
// stale forever on an interface that carries no other traffic. Entries the
// kernel is already verifying (DELAY, PROBE), fresh ones (REACHABLE) and
// static ones (PERMANENT) are never touched: on Linux ≥ 5.16 the "use"
// request canopy sends strips PERMANENT from an entry, which would undo an
// operator's static entry.
func (r *resolver) resolve(ctx context.Context, ip netip.Addr) ([6]byte, error) {
	var lastTrigger time.Time
	for {
		mac, st, err := r.lookup(ip)
		if err != nil {
			return mac, err
		}
		switch {
		case st == netlink.NUD_STALE:
			if err := r.trigger(ip); err != nil {
				return [6]byte{}, resolveErr(ip, r.iface, fmt.Sprintf("ask the kernel to verify its entry: %v", err))
			}
			return mac, nil
		case st != absent && st&usable != 0:
			return mac, nil
		case st == netlink.NUD_NOARP:
			// The kernel will never ARP for it: in a namespace without any
			// IPv4 address there is no local routing table, and every
			// address is classed as broadcast. Waiting cannot help.
			return mac, resolveErr(ip, r.iface, fmt.Sprintf("the kernel marks it NOARP, which happens when %s's network namespace has no IPv4 address; give %s an address on the next hop's subnet", r.iface, r.iface))
		}
		if time.Since(lastTrigger) >= retriggerEvery {
			if err := r.trigger(ip); err != nil {
				return [6]byte{}, resolveErr(ip, r.iface, fmt.Sprintf("ask the kernel to resolve it: %v", err))
			}
			lastTrigger = time.Now()
		}
		select {
		case <-ctx.Done():
			return [6]byte{}, resolveErr(ip, r.iface, fmt.Sprintf("%s when %v", describeState(st), ctx.Err()))
		case <-time.After(pollEvery):
		}
	}
}

// lookup reads ip's entry: its MAC and NUD state, or absent. An entry with
// no (or an all-zero) Ethernet address is reported as NUD_INCOMPLETE.
func (r *resolver) lookup(ip netip.Addr) (mac [6]byte, state int, err error) {
	fam := netlink.FAMILY_V4
	if ip.Is6() {
		fam = netlink.FAMILY_V6
	}
	var neighs []netlink.Neigh
	for try := 0; ; try++ {
		neighs, err = r.h.NeighList(r.index, fam)
		// A dump the table changed under (likely while an entry is being
		// resolved) may be inconsistent: read it again.
		if errors.Is(err, netlink.ErrDumpInterrupted) && try < 3 {
			continue
		}
		if err != nil {
			return mac, absent, fmt.Errorf("next hop %s on %s: read neighbour table: %w", ip, r.iface, err)
		}
		break
	}
	for _, n := range neighs {
		a, _ := netip.AddrFromSlice(n.IP)
		if a.Unmap() != ip {
			continue
		}
		if n.State&usable != 0 && (len(n.HardwareAddr) != 6 || isZero(n.HardwareAddr)) {
			return mac, netlink.NUD_INCOMPLETE, nil
		}
		copy(mac[:], n.HardwareAddr)
		return mac, n.State, nil
	}
	return mac, absent, nil
}

// trigger asks the kernel to (re-)resolve ip as if traffic were waiting for
// it: RTM_NEWNEIGH with NTF_USE runs neigh_event_send, which creates the
// entry if needed and sends ARP requests or neighbour solicitations. It
// needs no address on the interface itself and no route, unlike sending a
// datagram toward the next hop would. IPv4 needs some IPv4 address in the
// namespace, though (see resolve).
func (r *resolver) trigger(ip netip.Addr) error {
	fam := netlink.FAMILY_V4
	if ip.Is6() {
		fam = netlink.FAMILY_V6
	}
	return r.h.NeighSet(&netlink.Neigh{
		LinkIndex: r.index,
		Family:    fam,
		IP:        ip.AsSlice(),
		State:     netlink.NUD_NONE,
		Flags:     netlink.NTF_USE,
	})
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

func describeState(s int) string {
	switch s {
	case absent:
		return "no neighbour entry"
	case netlink.NUD_INCOMPLETE:
		return "neighbour state INCOMPLETE"
	case netlink.NUD_FAILED:
		return "neighbour state FAILED"
	case netlink.NUD_NONE:
		return "neighbour state NONE"
	}
	return fmt.Sprintf("neighbour state %#x", s)
}
