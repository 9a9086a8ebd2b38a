package capture

import (
	"fmt"

	"golang.org/x/net/bpf"
)

// laneSnap is what the lane filter accepts of a frame; the V2 ring frame
// size truncates further. The worker only needs the headers.
const laneSnap = 0x40000

// laneFilter assembles the classic BPF program of the low-latency lane. It
// passes the frames that decide a reset race and nothing else:
//
//   - IPv4/IPv6 TCP segments with SYN, FIN or RST set, or carrying payload
//     (payload = IP length − IP header − TCP data offset, never the frame
//     length, which Ethernet pads);
//   - IPv4/IPv6 UDP;
//   - IPv6 packets whose first next-header is hop-by-hop, routing,
//     destination options or AH (rare; the worker decides);
//
// with 0, 1 or 2 VLAN tags still in the frame. IPv4 fragments are rejected:
// the bulk fanout group defragments before hashing (PACKET_FANOUT_FLAG_DEFRAG)
// and the lane group cannot (two defragmenting groups would steal each
// other's fragments from the one shared reassembly queue), so a fragment
// could hash to a different worker in the lane; the bulk ring delivers it.
//
// Why no SKF_AD_VLAN_TAG_PRESENT: by the time a packet socket's filter runs,
// the kernel has already moved the outer tag out of the frame (NIC offload, or
// skb_vlan_untag in __netif_receive_skb_core before taps are served), so
// the filter sees the bytes after it. Whether a tag was stripped changes no
// offset the program reads, so the ancillary load would add nothing; tags
// still in the frame (the inner tag of QinQ, or a driver that leaves them)
// are walked explicitly. This also keeps the program testable in bpf.VM,
// which implements no ancillary loads but the length.
func laneFilter() ([]bpf.RawInstruction, error) {
	var a bpfAsm
	a.ins(bpf.LoadAbsolute{Off: 12, Size: 2})
	a.jeq(etherTypeIPv4, "v4_14", "")
	a.jeq(etherTypeIPv6, "v6_14", "")
	a.jeq(etherTypeVLAN, "tag1", "")
	a.jeq(etherTypeQinQ, "tag1", "")
	a.jeq(etherTypeQinQv1, "tag1", "reject")

	a.label("tag1")
	a.ins(bpf.LoadAbsolute{Off: 16, Size: 2})
	a.jeq(etherTypeIPv4, "v4_18", "")
	a.jeq(etherTypeIPv6, "v6_18", "")
	a.jeq(etherTypeVLAN, "tag2", "")
	a.jeq(etherTypeQinQ, "tag2", "")
	a.jeq(etherTypeQinQv1, "tag2", "reject")

	a.label("tag2")
	a.ins(bpf.LoadAbsolute{Off: 20, Size: 2})
	a.jeq(etherTypeIPv4, "v4_22", "")
	a.jeq(etherTypeIPv6, "v6_22", "reject")

	for _, base := range []uint32{14, 18, 22} {
		laneIPv4(&a, base)
		laneIPv6(&a, base)
	}
	a.label("accept")
	a.ins(bpf.RetConstant{Val: laneSnap})
	a.label("reject")
	a.ins(bpf.RetConstant{Val: 0})
	return a.assemble()
}

// laneIPv4 emits the IPv4 part for a header at base.
func laneIPv4(a *bpfAsm, base uint32) {
	p := fmt.Sprint("v4_", base)
	a.label(p)
	a.ins(bpf.LoadAbsolute{Off: base + 6, Size: 2}) // flags + fragment offset
	a.jset(0x3fff, "reject", "")                    // MF or offset: a fragment
	a.ins(bpf.LoadAbsolute{Off: base + 9, Size: 1}) // protocol
	a.jeq(uint32(ProtoUDP), "accept", "")
	a.jeq(uint32(ProtoTCP), "", "reject")
	a.ins(bpf.LoadMemShift{Off: base})               // X = IHL*4
	a.ins(bpf.LoadIndirect{Off: base + 13, Size: 1}) // TCP flags
	a.jset(uint32(FlagSYN|FlagFIN|FlagRST), "accept", "")
	a.ins(bpf.LoadIndirect{Off: base + 12, Size: 1}) // data offset << 4
	a.ins(bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 2})
	a.ins(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0x3c}) // data offset in bytes
	a.ins(bpf.StoreScratch{Src: bpf.RegA, N: 0})
	a.ins(bpf.LoadAbsolute{Off: base + 2, Size: 2}) // total length
	a.ins(bpf.ALUOpX{Op: bpf.ALUOpSub})             // − IP header
	a.ins(bpf.LoadScratch{Dst: bpf.RegX, N: 0})
	a.ins(bpf.ALUOpX{Op: bpf.ALUOpSub}) // − TCP header
	// Unsigned: a lying header that underflows passes too; the decoder
	// rejects it, and the lane must never miss a real segment.
	a.jgt(0, "accept", "reject")
}

// laneIPv6 emits the IPv6 part for a header at base.
func laneIPv6(a *bpfAsm, base uint32) {
	p := fmt.Sprint("v6_", base)
	a.label(p)
	a.ins(bpf.LoadAbsolute{Off: base + 6, Size: 1}) // next header
	a.jeq(uint32(ProtoUDP), "accept", "")
	a.jeq(ipv6HopByHop, "accept", "")
	a.jeq(ipv6Routing, "accept", "")
	a.jeq(ipv6DestOpts, "accept", "")
	a.jeq(ipv6AH, "accept", "")
	a.jeq(uint32(ProtoTCP), "", "reject")
	a.ins(bpf.LoadAbsolute{Off: base + ipv6HeaderLen + 13, Size: 1})
	a.jset(uint32(FlagSYN|FlagFIN|FlagRST), "accept", "")
	a.ins(bpf.LoadAbsolute{Off: base + ipv6HeaderLen + 12, Size: 1})
	a.ins(bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 2})
	a.ins(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0x3c})
	a.ins(bpf.TAX{})
	a.ins(bpf.LoadAbsolute{Off: base + 4, Size: 2}) // payload length
	a.ins(bpf.ALUOpX{Op: bpf.ALUOpSub})
	a.jgt(0, "accept", "reject")
}

// bpfAsm is a tiny assembler with symbolic jump targets, so the program
// above reads like a listing and nobody counts skips by hand.
type bpfAsm struct {
	prog   []bpfIns
	labels map[string]int
}

type bpfIns struct {
	ins    bpf.Instruction
	jump   bpf.JumpTest
	val    uint32
	tTrue  string // "" = next instruction
	tFalse string
	isJump bool
}

func (a *bpfAsm) label(name string) {
	if a.labels == nil {
		a.labels = map[string]int{}
	}
	a.labels[name] = len(a.prog)
}

func (a *bpfAsm) ins(i bpf.Instruction) { a.prog = append(a.prog, bpfIns{ins: i}) }

func (a *bpfAsm) jmp(c bpf.JumpTest, v uint32, t, f string) {
	a.prog = append(a.prog, bpfIns{jump: c, val: v, tTrue: t, tFalse: f, isJump: true})
}
func (a *bpfAsm) jeq(v uint32, t, f string)  { a.jmp(bpf.JumpEqual, v, t, f) }
func (a *bpfAsm) jset(v uint32, t, f string) { a.jmp(bpf.JumpBitsSet, v, t, f) }
func (a *bpfAsm) jgt(v uint32, t, f string)  { a.jmp(bpf.JumpGreaterThan, v, t, f) }

func (a *bpfAsm) assemble() ([]bpf.RawInstruction, error) {
	out := make([]bpf.Instruction, len(a.prog))
	for pc, in := range a.prog {
		if !in.isJump {
			out[pc] = in.ins
			continue
		}
		skip := func(target string) (uint8, error) {
			if target == "" {
				return 0, nil
			}
			to, ok := a.labels[target]
			if !ok {
				return 0, fmt.Errorf("lane filter: unknown label %q", target)
			}
			d := to - pc - 1
			if d < 0 || d > 255 {
				return 0, fmt.Errorf("lane filter: jump from %d to %q (%d) out of range", pc, target, to)
			}
			return uint8(d), nil
		}
		t, err := skip(in.tTrue)
		if err != nil {
			return nil, err
		}
		f, err := skip(in.tFalse)
		if err != nil {
			return nil, err
		}
		out[pc] = bpf.JumpIf{Cond: in.jump, Val: in.val, SkipTrue: t, SkipFalse: f}
	}
	return bpf.Assemble(out)
}
