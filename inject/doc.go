// Package inject crafts the frames canopy uses to kill banned sessions — TCP
// resets and ICMP/ICMPv6 destination-unreachable errors — and puts them on the
// wire from a transmit-only AF_PACKET socket.
//
// Frames are built into caller-owned, pre-sized buffers through typed
// byte-slice header views (Ethernet, VLAN, IPv4, IPv6, TCP, ICMPv4, ICMPv6, in
// the manner of gVisor's pkg/tcpip/header), with checksums computed in place:
// BuildReset, BuildUnreachable and PacketSender.Send do not allocate. The
// package also resolves the next hop's MAC address (NextHop, ResolveNextHop),
// caps the global injection rate (Ceiling), and offers a dry-run sink
// (Recorder) and a human-readable rendering of any frame it built (Describe).
//
// Deciding which frames to send — sequence numbers, budgets per flow,
// allowlists — belongs to package sensor, not here.
package inject
