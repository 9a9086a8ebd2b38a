package capture

import (
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/net/bpf"
)

// TestLaneFilter runs the lane program in bpf.VM on crafted frames. The
// "stripped" cases are what the kernel shows the filter after moving the
// outer tag to metadata: the same frame without that tag.
func TestLaneFilter(t *testing.T) {
	raw, err := laneFilter()
	if err != nil {
		t.Fatal(err)
	}
	prog := make([]bpf.Instruction, len(raw))
	for i, r := range raw {
		prog[i] = r.Disassemble()
	}
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatalf("lane filter rejected by bpf.VM: %v", err)
	}
	t.Logf("lane filter: %d instructions", len(raw))

	withPayload := func(f uint8, n int) []gopacket.SerializableLayer {
		return []gopacket.SerializableLayer{tcp(f), payload(n)}
	}
	v4 := func(l4 ...gopacket.SerializableLayer) []byte {
		return serialize(t, append([]gopacket.SerializableLayer{eth(layers.EthernetTypeIPv4), ipv4(layers.IPProtocolTCP)}, l4...)...)
	}
	v6 := func(l4 ...gopacket.SerializableLayer) []byte {
		return serialize(t, append([]gopacket.SerializableLayer{eth(layers.EthernetTypeIPv6), ipv6(layers.IPProtocolTCP)}, l4...)...)
	}
	tagged := func(inner layers.EthernetType, n int, rest ...gopacket.SerializableLayer) []byte {
		ls := []gopacket.SerializableLayer{}
		switch n {
		case 1:
			ls = append(ls, eth(layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 10, Type: inner})
		case 2:
			ls = append(ls, eth(layers.EthernetTypeQinQ), &layers.Dot1Q{VLANIdentifier: 10, Type: layers.EthernetTypeDot1Q}, &layers.Dot1Q{VLANIdentifier: 20, Type: inner})
		}
		return serialize(t, append(ls, rest...)...)
	}
	ackOnly := tcp(FlagACK)
	ackOpts := tcp(FlagACK)
	ackOpts.Options = []layers.TCPOption{{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: make([]byte, 8)}}
	frag := ipv4(layers.IPProtocolTCP)
	frag.Flags = layers.IPv4MoreFragments
	ip4opt := ipv4(layers.IPProtocolTCP)
	ip4opt.Options = []layers.IPv4Option{{OptionType: 0x94, OptionLength: 4, OptionData: []byte{0, 0}}}

	// A pure ACK padded to 60 bytes: padding must not look like payload.
	padded := v4(ackOnly)
	padded = append(padded, make([]byte, 60-len(padded))...)

	cases := []struct {
		name  string
		frame []byte
		pass  bool
	}{
		{"v4 syn", v4(tcp(FlagSYN)), true},
		{"v4 syn-ack", v4(tcp(FlagSYN | FlagACK)), true},
		{"v4 fin", v4(tcp(FlagFIN | FlagACK)), true},
		{"v4 rst", v4(tcp(FlagRST)), true},
		{"v4 data", v4(withPayload(FlagACK|FlagPSH, 1)...), true},
		{"v4 pure ack", v4(ackOnly), false},
		{"v4 pure ack padded to 60", padded, false},
		{"v4 pure ack with options", v4(ackOpts), false},
		{"v4 data with options", v4(ackOpts, payload(5)), true},
		{"v4 options + pure ack", serialize(t, eth(layers.EthernetTypeIPv4), ip4opt, tcp(FlagACK)), false},
		{"v4 options + data", serialize(t, eth(layers.EthernetTypeIPv4), ip4opt, tcp(FlagACK), payload(3)), true},
		{"v4 udp", serialize(t, eth(layers.EthernetTypeIPv4), ipv4(layers.IPProtocolUDP), udp(), payload(4)), true},
		{"v4 icmp", serialize(t, eth(layers.EthernetTypeIPv4), ipv4(layers.IPProtocolICMPv4), &layers.ICMPv4{}), false},
		{"v4 fragment syn", serialize(t, eth(layers.EthernetTypeIPv4), frag, tcp(FlagSYN)), false},
		{"v6 syn", v6(tcp(FlagSYN)), true},
		{"v6 data", v6(withPayload(FlagACK, 100)...), true},
		{"v6 pure ack", v6(ackOnly), false},
		{"v6 pure ack with options", v6(ackOpts), false},
		{"v6 udp", serialize(t, eth(layers.EthernetTypeIPv6), ipv6(layers.IPProtocolUDP), udp()), true},
		{"v6 icmpv6", serialize(t, eth(layers.EthernetTypeIPv6), ipv6(layers.IPProtocolICMPv6), &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(128, 0)}), false},
		{"v6 hop-by-hop", serialize(t, eth(layers.EthernetTypeIPv6), ipv6(layers.IPProtocolIPv6HopByHop), ipv6Ext{next: layers.IPProtocolTCP, body: 6}, tcp(FlagACK)), true},
		{"v6 fragment", serialize(t, eth(layers.EthernetTypeIPv6), ipv6(layers.IPProtocolIPv6Fragment), ipv6Frag{next: layers.IPProtocolTCP, more: true}, tcp(FlagSYN)), false},
		{"arp", serialize(t, eth(layers.EthernetTypeARP), payload(28)), false},
		{"1 tag v4 syn", tagged(layers.EthernetTypeIPv4, 1, ipv4(layers.IPProtocolTCP), tcp(FlagSYN)), true},
		{"1 tag v4 pure ack", tagged(layers.EthernetTypeIPv4, 1, ipv4(layers.IPProtocolTCP), tcp(FlagACK)), false},
		{"1 tag v4 data", tagged(layers.EthernetTypeIPv4, 1, ipv4(layers.IPProtocolTCP), tcp(FlagACK), payload(9)), true},
		{"1 tag v6 pure ack", tagged(layers.EthernetTypeIPv6, 1, ipv6(layers.IPProtocolTCP), tcp(FlagACK)), false},
		{"1 tag v6 rst", tagged(layers.EthernetTypeIPv6, 1, ipv6(layers.IPProtocolTCP), tcp(FlagRST)), true},
		{"2 tags v4 syn", tagged(layers.EthernetTypeIPv4, 2, ipv4(layers.IPProtocolTCP), tcp(FlagSYN)), true},
		{"2 tags v4 pure ack", tagged(layers.EthernetTypeIPv4, 2, ipv4(layers.IPProtocolTCP), tcp(FlagACK)), false},
		{"2 tags v6 data", tagged(layers.EthernetTypeIPv6, 2, ipv6(layers.IPProtocolTCP), tcp(FlagACK), payload(1)), true},
		{"2 tags v6 udp", tagged(layers.EthernetTypeIPv6, 2, ipv6(layers.IPProtocolUDP), udp()), true},
		{"2 tags arp", tagged(layers.EthernetTypeARP, 2, payload(28)), false},
		{"truncated", v4(tcp(FlagSYN))[:30], false},
	}
	for _, c := range cases {
		n, err := vm.Run(c.frame)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if got := n > 0; got != c.pass {
			t.Errorf("%s: filter returned %d, want pass=%v", c.name, n, c.pass)
		}
	}
}
