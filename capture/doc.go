// Package capture owns canopy's view of the wire: it turns frames from a live
// mirror port (AF_PACKET TPACKET_V3 rings joined in a symmetric fanout group,
// plus an optional TPACKET_V2 low-latency lane for the segments that decide a
// reset race) or from a pcap/pcapng file into calls on a per-worker Handler,
// and decodes each frame without allocating into a small Packet value (MACs,
// VLAN stack, IP addresses, ports, TCP sequence state, kernel timestamp). It
// also keeps the capture counters (packets, kernel drops, queue freezes) that
// tell an operator whether the sensor is seeing everything.
package capture
