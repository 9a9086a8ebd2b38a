package sensor

import (
	"testing"

	"canopy/capture"
)

const (
	rst    = capture.FlagRST
	rstAck = capture.FlagRST | capture.FlagACK
)

// The expected numbers below were worked out by hand from the receiver rules
// in RFC 5961 §3.2 and Linux's tcp_validate_incoming / tcp_check_req /
// tcp_rcv_synsent_state_process (research/peers_blocking.md §5).
func TestPlanResets(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    capture.Packet
		peer peerView
		want []shot
	}{
		{
			name: "bare SYN: refuse the client, drop the half-open server side",
			p:    capture.Packet{Seq: 1000, Flags: capture.FlagSYN},
			want: []shot{
				{toSender: true, seq: 0, ack: 1001, flags: rstAck},
				{toSender: false, seq: 1001, flags: rst},
			},
		},
		{
			name: "SYN-ACK from the server: exact for SYN-RECV and SYN-SENT",
			p:    capture.Packet{Seq: 5000, Ack: 1001, Flags: capture.FlagSYN | capture.FlagACK},
			want: []shot{
				{toSender: true, seq: 1001, ack: 5001, flags: rstAck},
				{toSender: false, seq: 5001, ack: 1001, flags: rstAck},
			},
		},
		{
			name: "data segment: chase the sender's ack, and the receiver's next byte",
			p:    capture.Packet{Seq: 1001, Ack: 5001, Flags: capture.FlagACK | capture.FlagPSH, PayloadLen: 12},
			peer: peerView{seen: true, nextSeq: 5001},
			want: []shot{
				{toSender: true, seq: 5001, ack: 1013, flags: rstAck},
				{toSender: false, seq: 1013, ack: 5001, flags: rstAck},
			},
		},
		{
			name: "peer sent data the sender has not acked yet: aim at both numbers",
			p:    capture.Packet{Seq: 1013, Ack: 5001, Flags: capture.FlagACK},
			peer: peerView{seen: true, nextSeq: 5013},
			want: []shot{
				{toSender: true, seq: 5001, ack: 1013, flags: rstAck},
				{toSender: true, seq: 5013, ack: 1013, flags: rstAck},
				{toSender: false, seq: 1013, ack: 5001, flags: rstAck},
			},
		},
		{
			name: "peer's stale next seq (behind the ack) is not aimed at",
			p:    capture.Packet{Seq: 1013, Ack: 6000, Flags: capture.FlagACK},
			peer: peerView{seen: true, nextSeq: 5013},
			want: []shot{
				{toSender: true, seq: 6000, ack: 1013, flags: rstAck},
				{toSender: false, seq: 1013, ack: 6000, flags: rstAck},
			},
		},
		{
			name: "FIN occupies one sequence number",
			p:    capture.Packet{Seq: 1013, Ack: 5001, Flags: capture.FlagACK | capture.FlagFIN},
			want: []shot{
				{toSender: true, seq: 5001, ack: 1014, flags: rstAck},
				{toSender: false, seq: 1014, ack: 5001, flags: rstAck},
			},
		},
		{
			name: "sequence numbers wrap at 2^32",
			p:    capture.Packet{Seq: 0xfffffffa, Ack: 7, Flags: capture.FlagACK, PayloadLen: 10},
			want: []shot{
				{toSender: true, seq: 7, ack: 4, flags: rstAck},
				{toSender: false, seq: 4, ack: 7, flags: rstAck},
			},
		},
		{
			name: "an RST is never answered",
			p:    capture.Packet{Seq: 1, Ack: 2, Flags: capture.FlagRST | capture.FlagACK},
		},
		{
			name: "no ACK outside the handshake: only the receiver can be aimed at",
			p:    capture.Packet{Seq: 300, Flags: capture.FlagPSH, PayloadLen: 5},
			want: []shot{{toSender: false, seq: 305, flags: rst}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out [maxShots]shot
			n := planResets(&tc.p, tc.peer, &out)
			if n != len(tc.want) {
				t.Fatalf("planned %d shots %v, want %d %v", n, out[:n], len(tc.want), tc.want)
			}
			for i := range tc.want {
				if out[i] != tc.want[i] {
					t.Errorf("shot %d = %+v, want %+v", i, out[i], tc.want[i])
				}
			}
		})
	}
}

func TestProactiveShots(t *testing.T) {
	// A long-lived session at rest: A (client) last acked 5013, B (server)
	// last acked 1013; each side's next seq equals what the other acked.
	var out [maxShots]shot
	n := proactiveShots([2]uint32{5013, 1013}, [2]uint32{1013, 5013}, [2]bool{true, true}, [2]bool{true, true}, &out)
	// toSender means "toward A"; the responder B is aimed at first.
	want := []shot{
		{toSender: false, seq: 1013, ack: 5013, flags: rstAck},
		{toSender: true, seq: 5013, ack: 1013, flags: rstAck},
	}
	if n != len(want) || out[0] != want[0] || out[1] != want[1] {
		t.Fatalf("at rest: got %v, want %v", out[:n], want)
	}

	// B sent 12 bytes A has not acknowledged yet: aim at both numbers for A.
	n = proactiveShots([2]uint32{5013, 1013}, [2]uint32{1013, 5025}, [2]bool{true, true}, [2]bool{true, true}, &out)
	if n != 3 || out[0].seq != 1013 || out[0].toSender || out[1].seq != 5013 || out[2].seq != 5025 || !out[2].toSender {
		t.Fatalf("data in flight: got %v", out[:n])
	}

	// Only A was ever seen (B silent, e.g. SYN only): B's side is aimed at
	// A's next seq, A has no ack to chase.
	n = proactiveShots([2]uint32{0, 0}, [2]uint32{1001, 0}, [2]bool{false, false}, [2]bool{true, false}, &out)
	if n != 1 || out[0].toSender || out[0].seq != 1001 {
		t.Fatalf("half-open: got %v", out[:n])
	}
}

func TestSeqAfter(t *testing.T) {
	for _, tc := range []struct {
		a, b uint32
		want bool
	}{
		{2, 1, true}, {1, 2, false}, {1, 1, false},
		{3, 0xfffffff0, true}, {0xfffffff0, 3, false},
	} {
		if got := seqAfter(tc.a, tc.b); got != tc.want {
			t.Errorf("seqAfter(%#x, %#x) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}
