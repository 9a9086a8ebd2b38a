package capture

// Reason says why Decode could not produce a complete Packet. OK means it did.
// Reasons index counter arrays ([NumReasons]uint64), so they are dense.
type Reason uint8

// Decode outcomes. Every reason but OK and ReasonNotIP means the frame lied
// about its own structure or was cut short; ReasonNotIP is ordinary traffic
// (ARP, LLDP, …) that canopy does not track.
const (
	OK               Reason = iota // fully decoded
	ReasonNotIP                    // ether type is neither IPv4 nor IPv6 (not malformed)
	ReasonTruncEther               // shorter than an Ethernet (or cooked) header
	ReasonTruncVLAN                // a VLAN tag is cut short
	ReasonVLANDepth                // more VLAN tags than MaxVLANs: the stack could not be rebuilt
	ReasonTruncIPv4                // IPv4 header (with options) cut short
	ReasonBadIPv4                  // IPv4 version/IHL/total length inconsistent with the frame
	ReasonTruncIPv6                // IPv6 header or an extension header cut short by the capture
	ReasonBadIPv6                  // IPv6 version or payload length inconsistent with the frame
	ReasonBadIPv6Ext               // IPv6 extension header chain runs past the packet or is too long
	ReasonTruncTCP                 // fewer than 20 TCP header bytes in the IP payload or the capture
	ReasonBadTCP                   // TCP data offset below 5 words or beyond the IP payload
	ReasonTruncUDP                 // fewer than 8 UDP header bytes
	ReasonTruncICMP                // fewer than 4 ICMP/ICMPv6 header bytes

	NumReasons // number of Reason values, for counter arrays
)

var reasonNames = [NumReasons]string{
	OK:               "ok",
	ReasonNotIP:      "not-ip",
	ReasonTruncEther: "truncated-ethernet",
	ReasonTruncVLAN:  "truncated-vlan",
	ReasonVLANDepth:  "vlan-too-deep",
	ReasonTruncIPv4:  "truncated-ipv4",
	ReasonBadIPv4:    "bad-ipv4-header",
	ReasonTruncIPv6:  "truncated-ipv6",
	ReasonBadIPv6:    "bad-ipv6-header",
	ReasonBadIPv6Ext: "bad-ipv6-ext-header",
	ReasonTruncTCP:   "truncated-tcp",
	ReasonBadTCP:     "bad-tcp-header",
	ReasonTruncUDP:   "truncated-udp",
	ReasonTruncICMP:  "truncated-icmp",
}

// String returns the reason's stable, metric-friendly name ("truncated-tcp").
func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Malformed reports whether the reason means broken bytes (as opposed to OK
// or traffic canopy simply does not track).
func (r Reason) Malformed() bool { return r != OK && r != ReasonNotIP }
