package inject_test

import (
	"fmt"
	"net/netip"
	"time"

	"canopy/capture"
	"canopy/inject"
)

// A worker owns one MaxFrameLen buffer, builds each reset into it and hands
// it to the shared Sender within the shared Ceiling. Here the sender is the
// dry-run Recorder; in production it is an *inject.PacketSender from
// inject.OpenSender(inject.DefaultSenderConfig("eth1")), with DstMAC from a
// NextHop and SrcMAC from the sender's MAC.
func Example() {
	var (
		sender  inject.Sender = inject.NewRecorder(16)
		ceiling               = inject.NewCeiling(inject.DefaultCeilingPPS)
		buf     [inject.MaxFrameLen]byte
	)
	// The server 10.0.0.1:80 last acked 1001 to the client 10.0.0.2:5555:
	// that is the client's RCV.NXT, so the reset toward the client carries it.
	r := inject.Reset{
		DstMAC:   [6]byte{0x02, 0, 0, 0, 0, 0x02},
		SrcMAC:   [6]byte{0x02, 0, 0, 0, 0, 0x01},
		VLANs:    [capture.MaxVLANs]capture.VLAN{{TPID: 0x8100, TCI: 100}},
		NumVLANs: 1,
		Src:      netip.MustParseAddr("10.0.0.1"), SrcPort: 80,
		Dst: netip.MustParseAddr("10.0.0.2"), DstPort: 5555,
		Seq: 1001, Ack: 2002, Flags: capture.FlagRST | capture.FlagACK,
		TTL: 61, // as observed on the server's own packets
	}
	n, err := inject.BuildReset(buf[:], &r)
	if err != nil {
		panic(err) // a bug in the spec, never the traffic
	}
	if ceiling.Allow(time.Now().UnixNano()) {
		if err := sender.Send(buf[:n]); err != nil {
			fmt.Println("send:", err)
		}
	}
	fmt.Println(inject.Describe(buf[:n]))
	// Output: RST|ACK 10.0.0.1:80 > 10.0.0.2:5555 seq=1001 ack=2002 ttl=61 vlan=[100]
}
