package sensor

import "canopy/capture"

// A shot is one reset canopy decides to send: its direction and the TCP
// numbers that make the receiver accept it. MACs, VLANs and TTL are filled
// in by the caller from the trigger and the flow.
type shot struct {
	toSender bool   // toward the host that sent the trigger packet (else toward its peer)
	seq, ack uint32 // TCP sequence and acknowledgement numbers
	flags    uint8  // capture.FlagRST, optionally | capture.FlagACK
}

// peerView is what the flow table knows about the other direction of the
// trigger's flow (the peer → sender direction). It lets the planner aim a
// second reset at the sender's predicted RCV.NXT when the peer has sent data
// the sender had not yet acknowledged when it sent the trigger.
type peerView struct {
	seen    bool   // the peer has sent at least one packet in this flow
	nextSeq uint32 // the peer's next sequence number after its last segment
}

// maxShots bounds the resets one trigger can produce.
const maxShots = 4

// planResets computes the resets that kill the TCP session a trigger packet
// belongs to, by ACK-chasing (DESIGN.md, "How a session is killed"):
//
//   - Every packet host X sends carries, in its ACK field, the RCV.NXT that X
//     holds: an RST toward X with seq = that ack is exact (RFC 5961 §3.2).
//   - The receiver Y's RCV.NXT after the trigger is the trigger's seq plus
//     the sequence space it occupies.
//   - A bare SYN gives no ack: toward X an RST|ACK with ack = ISN+1 is what a
//     host in SYN-SENT accepts ("connection refused"); toward Y an RST with
//     seq = ISN+1 removes the half-open connection.
//   - A SYN-ACK gives both sides' exact numbers at once.
//
// It writes into out and returns how many shots it planned. RSTs are never
// answered (that is how reset loops start); the caller reads them as the
// hosts' own confirmation.
func planResets(p *capture.Packet, peer peerView, out *[maxShots]shot) int {
	if p.Flags&capture.FlagRST != 0 {
		return 0
	}
	next := p.Seq + p.SeqSpace()
	syn, ack := p.Flags&capture.FlagSYN != 0, p.Flags&capture.FlagACK != 0
	switch {
	case syn && !ack: // client → server, handshake not answered yet
		out[0] = shot{toSender: true, seq: 0, ack: next, flags: capture.FlagRST | capture.FlagACK}
		out[1] = shot{toSender: false, seq: next, flags: capture.FlagRST}
		return 2
	case syn && ack: // server → client: both ISNs are known
		// Toward the server (sender, SYN-RECV): seq = the client's ISN+1 it
		// expects, ack = its own ISN+1 (a request socket drops an RST whose
		// ACK does not acknowledge its SYN-ACK).
		out[0] = shot{toSender: true, seq: p.Ack, ack: next, flags: capture.FlagRST | capture.FlagACK}
		// Toward the client: valid in SYN-SENT (ack = its ISN+1) and right
		// after it turned ESTABLISHED (seq = its RCV.NXT).
		out[1] = shot{toSender: false, seq: next, ack: p.Ack, flags: capture.FlagRST | capture.FlagACK}
		return 2
	case !ack:
		// A segment without ACK outside the handshake tells nothing about
		// the sender's receive state: reset the receiver only.
		out[0] = shot{toSender: false, seq: next, flags: capture.FlagRST}
		return 1
	}
	n := 0
	out[n] = shot{toSender: true, seq: p.Ack, ack: next, flags: capture.FlagRST | capture.FlagACK}
	n++
	// The peer may have sent data after the sender emitted this ACK; once
	// it arrives the sender's RCV.NXT is the peer's next seq. Aim there too
	// (Linux checks rcv_nxt, BSD and XNU last_ack_sent: one of the two is
	// exact whichever stack the sender runs).
	if peer.seen && peer.nextSeq != p.Ack && seqAfter(peer.nextSeq, p.Ack) {
		out[n] = shot{toSender: true, seq: peer.nextSeq, ack: next, flags: capture.FlagRST | capture.FlagACK}
		n++
	}
	out[n] = shot{toSender: false, seq: next, ack: p.Ack, flags: capture.FlagRST | capture.FlagACK}
	n++
	return n
}

// seqAfter reports whether a comes after b in TCP sequence space (RFC 1982
// serial arithmetic), so wraparound at 2^32 is handled.
func seqAfter(a, b uint32) bool { return int32(a-b) > 0 }

// proactiveShots computes the resets for a live flow from the flow table's
// last known numbers, without a trigger packet (a ban was just added). For
// each side the exact number is what its last packet acknowledged; if the
// other side has sent more since, that side's next seq is also aimed at.
// lastAck and nextSeq are indexed by the direction that carried them: [0]
// is A→B, [1] is B→A; hasAck says whether that direction's last packet had
// the ACK flag.
func proactiveShots(lastAck, nextSeq [2]uint32, hasAck, seen [2]bool, out *[maxShots]shot) int {
	n := 0
	for _, side := range [2]int{1, 0} { // the responder (B) first, as for triggered resets
		other := 1 - side
		// A reset toward `side` must carry side's RCV.NXT.
		var seqs [2]uint32
		k := 0
		if hasAck[side] {
			seqs[k] = lastAck[side]
			k++
		}
		if seen[other] && (k == 0 || seqs[0] != nextSeq[other]) {
			seqs[k] = nextSeq[other]
			k++
		}
		for i := 0; i < k && n < maxShots; i++ {
			// toSender here means "toward A" (side 0).
			out[n] = shot{toSender: side == 0, seq: seqs[i], ack: nextSeq[side], flags: capture.FlagRST | capture.FlagACK}
			n++
		}
	}
	return n
}
