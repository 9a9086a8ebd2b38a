package inject

import (
	"context"
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

// resolve returns ip's MAC on r's interface, triggering resolution first
// when force is set or when the table has no usable entry, and polling until
// one appears or ctx ends.
func (r *resolver) resolve(ctx context.Context, ip netip.Addr, force bool) ([6]byte, error) {
	state := "no neighbour entry"
	if !force {
		if mac, st, ok, err := r.lookup(ip); err != nil {
			return mac, err
		} else if ok {
			return mac, nil
		} else if st != "" {
			state = st
		}
	}
	lastTrigger := time.Time{}
	for {
		// Re-trigger now and then: a FAILED entry stays failed until asked again.
		if time.Since(lastTrigger) >= time.Second {
			if err := r.trigger(ip); err != nil {
				return [6]byte{}, resolveErr(ip, r.iface, fmt.Sprintf("ask the kernel to resolve it: %v", err))
			}
			lastTrigger = time.Now()
		}
		mac, st, ok, err := r.lookup(ip)
		if err != nil {
			return mac, err
		}
		if ok {
			return mac, nil
		}
		if st != "" {
			state = st
		}
		select {
		case <-ctx.Done():
			return [6]byte{}, resolveErr(ip, r.iface, fmt.Sprintf("%s when %v", state, ctx.Err()))
		case <-time.After(pollEvery):
		}
	}
}

// lookup reads ip's entry; ok is set when it is usable. st names the state
// of an unusable entry.
func (r *resolver) lookup(ip netip.Addr) (mac [6]byte, st string, ok bool, err error) {
	fam := netlink.FAMILY_V4
	if ip.Is6() {
		fam = netlink.FAMILY_V6
	}
	neighs, err := r.h.NeighList(r.index, fam)
	if err != nil {
		return mac, "", false, fmt.Errorf("next hop %s on %s: read neighbour table: %w", ip, r.iface, err)
	}
	for _, n := range neighs {
		a, _ := netip.AddrFromSlice(n.IP)
		if a.Unmap() != ip {
			continue
		}
		if n.State&usable == 0 || len(n.HardwareAddr) != 6 || isZero(n.HardwareAddr) {
			return mac, "neighbour state " + neighState(n.State), false, nil
		}
		copy(mac[:], n.HardwareAddr)
		return mac, "", true, nil
	}
	return mac, "", false, nil
}

// trigger asks the kernel to (re-)resolve ip as if traffic were waiting for
// it: RTM_NEWNEIGH with NTF_USE runs neigh_event_send, which creates the
// entry if needed and sends ARP requests or neighbour solicitations. It
// needs no address on the interface and no route, unlike sending a
// datagram toward the next hop.
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

func neighState(s int) string {
	switch s {
	case netlink.NUD_INCOMPLETE:
		return "INCOMPLETE"
	case netlink.NUD_FAILED:
		return "FAILED"
	case netlink.NUD_NOARP:
		return "NOARP"
	case netlink.NUD_NONE:
		return "NONE"
	}
	return fmt.Sprintf("%#x", s)
}
