package lab

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// mirrorIngress copies every frame received on ifname to the egress of the
// interface with index tapIndex: `tc qdisc add dev IF clsact` and
// `tc filter add dev IF ingress u32 match u32 0 0 action mirred egress
// mirror dev TAP`, through netlink. u32 with an all-zero key is the
// match-all this kernel offers (no matchall, no flower). The action's
// verdict is "pipe", so the original frame carries on to the router's
// stack untouched. Call it inside the router namespace.
func mirrorIngress(ifname string, tapIndex int) error {
	link, err := netlink.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("mirror: find %s: %w", ifname, err)
	}
	idx := link.Attrs().Index
	q := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: idx,
			Handle:    netlink.MakeHandle(0xffff, 0),
			Parent:    netlink.HANDLE_CLSACT,
		},
		QdiscType: "clsact",
	}
	if err := netlink.QdiscAdd(q); err != nil {
		return fmt.Errorf("mirror: add clsact qdisc on %s: %w", ifname, err)
	}
	f := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: idx,
			Parent:    netlink.HANDLE_MIN_INGRESS,
			Priority:  1,
			Protocol:  unix.ETH_P_ALL,
		},
		// One key with mask 0 matches every frame.
		Sel: &netlink.TcU32Sel{
			Flags: netlink.TC_U32_TERMINAL,
			Keys:  []netlink.TcU32Key{{Mask: 0, Val: 0, Off: 0}},
		},
		Actions: []netlink.Action{&netlink.MirredAction{
			ActionAttrs:  netlink.ActionAttrs{Action: netlink.TC_ACT_PIPE},
			MirredAction: netlink.TCA_EGRESS_MIRROR,
			Ifindex:      tapIndex,
		}},
	}
	if err := netlink.FilterAdd(f); err != nil {
		return fmt.Errorf("mirror: add u32 match-all filter with mirred to the tap on %s ingress: %w", ifname, err)
	}
	return nil
}
