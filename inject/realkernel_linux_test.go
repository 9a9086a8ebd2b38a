package inject

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"canopy/capture"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// switchBed is the real-kernel proof's topology: client, server and inject
// namespaces, each with one veth whose peer sits in bridge br of a "switch"
// namespace. The inject port can thus put frames on the client's link with
// no routing, as a SPAN sensor's inject port does on a switch.
//
//	client  c<sfx>inj 10.77.0.1/24 fd77::1/64 ─┐
//	server  s<sfx>inj 10.77.0.2/24 fd77::2/64 ─┼─ br<sfx>inj (switch ns)
//	inject  i<sfx>inj (no address)            ─┘
type switchBed struct {
	client, server, inject, sw netns.NsHandle
	cIf, sIf, iIf              string
	clientMAC                  [6]byte
	sender                     *PacketSender
	sniff                      *sniffer // on the client's interface: both directions
}

var (
	bedClient4 = netip.MustParseAddr("10.77.0.1")
	bedServer4 = netip.MustParseAddr("10.77.0.2")
	bedClient6 = netip.MustParseAddr("fd77::1")
	bedServer6 = netip.MustParseAddr("fd77::2")
)

func newSwitchBed(t *testing.T) *switchBed {
	requireRoot(t)
	sfx := suffix(t)
	b := &switchBed{cIf: "c" + sfx + "inj", sIf: "s" + sfx + "inj", iIf: "i" + sfx + "inj"}
	b.sw = newNS(t, "w"+sfx+"inj")
	b.client = newNS(t, "c"+sfx+"inj")
	b.server = newNS(t, "s"+sfx+"inj")
	b.inject = newNS(t, "i"+sfx+"inj")

	hw := nlHandle(t, b.sw)
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br" + sfx + "inj"}}
	if err := hw.LinkAdd(br); err != nil {
		t.Fatalf("add bridge: %v", err)
	}
	if err := hw.LinkSetUp(br); err != nil {
		t.Fatal(err)
	}
	for _, end := range []struct {
		ns    netns.NsHandle
		name  string
		peer  string
		addrs []string
	}{
		{b.client, b.cIf, "pc" + sfx + "inj", []string{"10.77.0.1/24", "fd77::1/64"}},
		{b.server, b.sIf, "ps" + sfx + "inj", []string{"10.77.0.2/24", "fd77::2/64"}},
		{b.inject, b.iIf, "pi" + sfx + "inj", nil},
	} {
		l, p := vethPair(t, end.ns, end.name, b.sw, end.peer)
		if err := hw.LinkSetMaster(p, br); err != nil {
			t.Fatalf("enslave %s: %v", end.peer, err)
		}
		for _, a := range end.addrs {
			addAddr(t, end.ns, l, a)
		}
	}
	b.clientMAC = linkMAC(t, b.client, b.cIf)
	b.sniff = newSniffer(t, b.client, b.cIf)
	inNS(t, b.inject, func() error {
		var err error
		b.sender, err = OpenSender(DefaultSenderConfig(b.iIf))
		return err
	})
	t.Cleanup(func() { b.sender.Close() })
	return b
}

// decode parses a frame with canopy's decoder; ok is false for anything it
// does not fully decode.
func decode(f []byte) (capture.Packet, bool) {
	var p capture.Packet
	r := capture.Decode(f, &capture.Meta{WireLen: uint32(len(f))}, &p)
	return p, r == capture.OK
}

// deliver sends f from the inject namespace and waits
// until the client's interface has received it, so the test knows the frame
// reached the client's stack.
func (b *switchBed) deliver(t *testing.T, f []byte) {
	t.Helper()
	if err := b.sender.Send(f); err != nil {
		t.Fatal(err)
	}
	if _, err := b.sniff.await(2*time.Second, func(g []byte) bool { return bytes.Equal(g, f) }); err != nil {
		t.Fatalf("injected %s never reached the client's link: %v", Describe(f), err)
	}
}

func (b *switchBed) reset(t *testing.T, r Reset) []byte {
	t.Helper()
	r.DstMAC = b.clientMAC
	copy(r.SrcMAC[:], b.sender.MAC())
	buf := make([]byte, MaxFrameLen)
	n, err := BuildReset(buf, &r)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

// TestRealKernelReset proves the premise of the whole product against the
// Linux stack (RFC 5961): a reset whose sequence number is exactly the
// receiver's RCV.NXT kills its socket (ECONNRESET), one off by one does not
// (the receiver answers with a challenge ACK and the connection lives on).
func TestRealKernelReset(t *testing.T) {
	b := newSwitchBed(t)
	for _, fam := range []struct {
		name           string
		client, server netip.Addr
		flags          uint8
	}{
		{"ipv4 RST", bedClient4, bedServer4, capture.FlagRST},
		{"ipv6 RST|ACK", bedClient6, bedServer6, capture.FlagRST | capture.FlagACK},
	} {
		t.Run(fam.name, func(t *testing.T) { b.killTCP(t, fam.client, fam.server, fam.flags) })
	}
}

func (b *switchBed) killTCP(t *testing.T, clientIP, serverIP netip.Addr, flags uint8) {
	var ln net.Listener
	inNS(t, b.server, func() error {
		var err error
		ln, err = net.Listen("tcp", netip.AddrPortFrom(serverIP, 0).String())
		return err
	})
	defer ln.Close()
	var cli net.Conn
	inNS(t, b.client, func() error {
		var err error
		cli, err = net.DialTimeout("tcp", ln.Addr().String(), 3*time.Second)
		return err
	})
	defer cli.Close()
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cport := uint16(cli.LocalAddr().(*net.TCPAddr).Port)
	sport := uint16(ln.Addr().(*net.TCPAddr).Port)
	fromServer := func(p capture.Packet) bool {
		return p.IsTCP() && p.Src == serverIP && p.SrcPort == sport && p.DstPort == cport
	}
	fromClient := func(p capture.Packet) bool {
		return p.IsTCP() && p.Src == clientIP && p.SrcPort == cport && p.DstPort == sport
	}
	exchange := func(from, to net.Conn, msg string) {
		t.Helper()
		if _, err := from.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		to.SetReadDeadline(time.Now().Add(3 * time.Second))
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(to, got); err != nil || string(got) != msg {
			t.Fatalf("read %q, %v; want %q", got, err, msg)
		}
	}

	// The server talks; the tap (our sniffer on the client's link) sees the
	// segment, and seq+len of it is the client's RCV.NXT.
	exchange(srv, cli, "hello\n")
	var data capture.Packet
	if _, err := b.sniff.await(3*time.Second, func(f []byte) bool {
		p, ok := decode(f)
		if ok && fromServer(p) && p.PayloadLen > 0 {
			data = p
			return true
		}
		return false
	}); err != nil {
		t.Fatalf("server's data segment: %v", err)
	}
	rcvNxt := data.Seq + data.SeqSpace()
	ackOf := func(want uint32) func([]byte) bool {
		return func(f []byte) bool {
			p, ok := decode(f)
			return ok && fromClient(p) && p.Flags == capture.FlagACK && p.PayloadLen == 0 && p.Ack == want
		}
	}
	// The client's own ACK of that data, so the next such ACK is a challenge.
	if _, err := b.sniff.await(3*time.Second, ackOf(rcvNxt)); err != nil {
		t.Fatalf("client's ACK of the data: %v", err)
	}

	// Off by one: in window, not exact → challenge ACK, socket lives.
	spec := Reset{Src: serverIP, Dst: clientIP, SrcPort: sport, DstPort: cport, Seq: rcvNxt + 1, Ack: data.Ack,
		Flags: flags, TTL: data.TTL}
	b.deliver(t, b.reset(t, spec))
	if _, err := b.sniff.await(3*time.Second, ackOf(rcvNxt)); err != nil {
		t.Fatalf("no challenge ACK after the off-by-one reset: the reset was not even evaluated: %v", err)
	}
	exchange(srv, cli, "still\n")
	exchange(cli, srv, "alive\n")
	rcvNxt += uint32(len("still\n"))
	sndNxt := data.Ack + uint32(len("alive\n"))

	// Exact: the client's socket dies.
	spec.Seq, spec.Ack = rcvNxt, sndNxt
	f := b.reset(t, spec)
	t.Logf("sending %s", Describe(f))
	b.deliver(t, f)
	cli.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err = cli.Read(make([]byte, 16))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client read after the exact reset: %v, want ECONNRESET", err)
	}
}

// TestRealKernelUnreachable proves the UDP half: an ICMP/ICMPv6 error
// quoting a connected UDP socket's datagram makes its next receive fail
// with the errno the code promises, and one quoting another socket's
// datagram does nothing to it.
func TestRealKernelUnreachable(t *testing.T) {
	b := newSwitchBed(t)
	for _, tc := range []struct {
		name           string
		client, server netip.Addr
		code           UnreachCode
		want           syscall.Errno
	}{
		{"icmp port", bedClient4, bedServer4, UnreachPort, syscall.ECONNREFUSED},
		{"icmp admin", bedClient4, bedServer4, UnreachAdmin, syscall.EHOSTUNREACH},
		{"icmpv6 port", bedClient6, bedServer6, UnreachPort, syscall.ECONNREFUSED},
		{"icmpv6 admin", bedClient6, bedServer6, UnreachAdmin, syscall.EACCES},
	} {
		t.Run(tc.name, func(t *testing.T) { b.refuseUDP(t, tc.client, tc.server, tc.code, tc.want) })
	}
}

func (b *switchBed) refuseUDP(t *testing.T, clientIP, serverIP netip.Addr, code UnreachCode, want syscall.Errno) {
	// A real listener, so the server's own kernel never answers with ICMP.
	var srv net.PacketConn
	inNS(t, b.server, func() error {
		var err error
		srv, err = net.ListenPacket("udp", netip.AddrPortFrom(serverIP, 0).String())
		return err
	})
	defer srv.Close()
	var cli *net.UDPConn
	inNS(t, b.client, func() error {
		var err error
		cli, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(srv.LocalAddr().String())))
		return err
	})
	defer cli.Close()
	cport := uint16(cli.LocalAddr().(*net.UDPAddr).Port)

	if _, err := cli.Write([]byte("query")); err != nil {
		t.Fatal(err)
	}
	var p capture.Packet
	frame, err := b.sniff.await(3*time.Second, func(f []byte) bool {
		var ok bool
		p, ok = decode(f)
		return ok && p.IsUDP() && p.Src == clientIP && p.SrcPort == cport
	})
	if err != nil {
		t.Fatalf("client's datagram: %v", err)
	}
	quoted := bytes.Clone(frame[p.L3Offset:])

	build := func(q []byte) []byte {
		u := Unreachable{DstMAC: b.clientMAC, Src: serverIP, Dst: clientIP, TTL: p.TTL, Code: code}
		copy(u.SrcMAC[:], b.sender.MAC())
		buf := make([]byte, MaxFrameLen)
		n, err := BuildUnreachable(buf, &u, q)
		if err != nil {
			t.Fatal(err)
		}
		return buf[:n]
	}

	// Control: the same error about another port leaves this socket alone.
	other := bytes.Clone(quoted)
	l4 := IPv4(other).HeaderLen()
	if serverIP.Is6() {
		l4 = IPv6Len
	}
	other[l4], other[l4+1] = byte((cport+1)>>8), byte(cport+1)
	b.deliver(t, build(other))
	cli.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := cli.Read(make([]byte, 64)); !isTimeout(err) {
		t.Fatalf("after an error quoting another port: %v, want a timeout", err)
	}

	f := build(quoted)
	t.Logf("sending %s", Describe(f))
	b.deliver(t, f)
	cli.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err = cli.Read(make([]byte, 64))
	if !errors.Is(err, want) {
		t.Fatalf("client read after %v: %v, want %v", code, err, want)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestRealKernelResolveNextHop resolves a neighbour for IPv4 and IPv6
// (IPv6 from an interface with only its link-local address) and checks the
// operator-facing failures.
func TestRealKernelResolveNextHop(t *testing.T) {
	b := newSwitchBed(t)
	ctx := context.Background()

	// Nothing in the inject namespace has an IPv4 address yet: the kernel
	// will not ARP, and the error must say so at once, not at the deadline.
	inNS(t, b.inject, func() error {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		start := time.Now()
		_, err := ResolveNextHop(c, b.iIf, bedClient4.String())
		if err == nil || !strings.Contains(err.Error(), "no IPv4 address") || time.Since(start) > 2*time.Second {
			t.Errorf("IPv4 resolution without any IPv4 address: %v after %v; want a prompt explanation", err, time.Since(start))
		}
		t.Logf("no IPv4 address: %v", err)
		return nil
	})
	// The inject port is routed in the lab; give it its address.
	l, err := nlHandle(t, b.inject).LinkByName(b.iIf)
	if err != nil {
		t.Fatal(err)
	}
	addAddr(t, b.inject, l, "10.77.0.3/24")
	if err := nlHandle(t, b.inject).NeighDel(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: netlink.FAMILY_V4, IP: bedClient4.AsSlice()}); err != nil {
		t.Logf("drop the NOARP entry: %v", err)
	}

	for _, ip := range []netip.Addr{bedClient4, bedClient6} {
		var mac net.HardwareAddr
		inNS(t, b.inject, func() error {
			c, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			var err error
			start := time.Now()
			mac, err = ResolveNextHop(c, b.iIf, ip.String())
			t.Logf("resolved %s in %v", ip, time.Since(start))
			return err
		})
		if !bytes.Equal(mac, b.clientMAC[:]) {
			t.Errorf("ResolveNextHop(%s) = %v, want the client's %x", ip, mac, b.clientMAC)
		}
	}

	inNS(t, b.inject, func() error {
		c, cancel := context.WithTimeout(ctx, 400*time.Millisecond)
		defer cancel()
		_, err := ResolveNextHop(c, b.iIf, "10.77.0.99")
		if err == nil {
			return fmt.Errorf("resolved an address nobody has")
		}
		for _, want := range []string{"10.77.0.99", b.iIf, "--next-hop"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %q", err, want)
			}
		}
		t.Logf("unresolvable: %v", err)

		if mac, err := ResolveNextHop(ctx, b.iIf, "02:aa:bb:cc:dd:ee"); err != nil || mac.String() != "02:aa:bb:cc:dd:ee" {
			t.Errorf("MAC next hop: %v, %v", mac, err)
		}
		if _, err := ResolveNextHop(ctx, b.iIf, "gateway"); err == nil || !strings.Contains(err.Error(), "neither an IP address nor a MAC") {
			t.Errorf("garbage next hop: %v", err)
		}
		if _, err := ResolveNextHop(ctx, "nosuch0inj", "10.77.0.1"); err == nil || !strings.Contains(err.Error(), "nosuch0inj") {
			t.Errorf("missing interface: %v", err)
		}
		return nil
	})
}

// TestNextHopFollowsTable checks that a NextHop picks up a changed
// neighbour entry on Refresh and on Invalidate while Run runs, from a
// goroutine outside the namespace.
func TestNextHopFollowsTable(t *testing.T) {
	b := newSwitchBed(t)
	l, err := nlHandle(t, b.inject).LinkByName(b.iIf)
	if err != nil {
		t.Fatal(err)
	}
	addAddr(t, b.inject, l, "10.77.0.3/24")
	var nh *NextHop
	inNS(t, b.inject, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		nh, err = NewNextHop(ctx, b.iIf, bedClient4.String(), time.Hour)
		return err
	})
	defer nh.Close()
	if nh.MAC() != b.clientMAC {
		t.Fatalf("MAC %x, want %x", nh.MAC(), b.clientMAC)
	}
	h := nlHandle(t, b.inject)
	link, err := h.LinkByName(b.iIf)
	if err != nil {
		t.Fatal(err)
	}
	setNeigh := func(mac [6]byte) {
		if err := h.NeighSet(&netlink.Neigh{LinkIndex: link.Attrs().Index, Family: netlink.FAMILY_V4, IP: bedClient4.AsSlice(),
			HardwareAddr: net.HardwareAddr(mac[:]), State: netlink.NUD_PERMANENT}); err != nil {
			t.Fatal(err)
		}
	}
	moved := [6]byte{0x02, 0xde, 0xad, 0xbe, 0xef, 0x01}
	setNeigh(moved)
	if err := nh.Refresh(context.Background()); err != nil || nh.MAC() != moved {
		t.Fatalf("after Refresh: %x, %v; want %x", nh.MAC(), err, moved)
	}
	// Refreshing must not disturb an operator's static entry (an NTF_USE
	// request would strip its PERMANENT state on Linux ≥ 5.16).
	if nl, err := h.NeighList(link.Attrs().Index, netlink.FAMILY_V4); err != nil || len(nl) != 1 || nl[0].State != netlink.NUD_PERMANENT {
		t.Errorf("static entry after Refresh: %+v, %v", nl, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- nh.Run(ctx) }()
	again := [6]byte{0x02, 0xde, 0xad, 0xbe, 0xef, 0x02}
	setNeigh(again)
	nh.Invalidate()
	deadline := time.Now().Add(3 * time.Second)
	for nh.MAC() != again && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if nh.MAC() != again {
		t.Errorf("after Invalidate: %x, want %x", nh.MAC(), again)
	}
	if nh.Err() != nil {
		t.Errorf("Err = %v", nh.Err())
	}

	static, err := NewNextHop(context.Background(), "any", "02:00:00:00:00:09", 0)
	if err != nil || static.MAC() != [6]byte{2, 0, 0, 0, 0, 9} || static.Refresh(context.Background()) != nil {
		t.Errorf("static next hop: %v", err)
	}
}

// TestRealKernelResetSynSent proves the reset for a bare SYN: a host in
// SYN-SENT drops an RST without ACK, and takes RST|ACK with ack = ISN+1 as
// "connection refused".
func TestRealKernelResetSynSent(t *testing.T) {
	b := newSwitchBed(t)
	serverMAC := linkMAC(t, b.server, b.sIf)
	h := nlHandle(t, b.client)
	link, err := h.LinkByName(b.cIf)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name           string
		client, silent netip.Addr
		fam            int
	}{
		{"ipv4", bedClient4, netip.MustParseAddr("10.77.0.9"), netlink.FAMILY_V4},
		{"ipv6", bedClient6, netip.MustParseAddr("fd77::9"), netlink.FAMILY_V6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Nobody has the address; a static neighbour entry lets the
			// client's SYNs out (to the server's MAC, whose stack drops them).
			if err := h.NeighSet(&netlink.Neigh{LinkIndex: link.Attrs().Index, Family: tc.fam, IP: tc.silent.AsSlice(),
				HardwareAddr: net.HardwareAddr(serverMAC[:]), State: netlink.NUD_PERMANENT}); err != nil {
				t.Fatal(err)
			}
			dialed := make(chan error, 1)
			go func() {
				dialed <- onThread(func() error {
					if err := netns.Set(b.client); err != nil {
						return err
					}
					c, err := net.DialTimeout("tcp", netip.AddrPortFrom(tc.silent, 80).String(), 10*time.Second)
					if err == nil {
						c.Close()
					}
					return err
				})
			}()
			var syn capture.Packet
			if _, err := b.sniff.await(3*time.Second, func(f []byte) bool {
				p, ok := decode(f)
				if ok && p.IsTCP() && p.Src == tc.client && p.Dst == tc.silent && p.Flags == capture.FlagSYN {
					syn = p
					return true
				}
				return false
			}); err != nil {
				t.Fatalf("client's SYN: %v", err)
			}
			spec := Reset{Src: tc.silent, Dst: tc.client, SrcPort: 80, DstPort: syn.SrcPort, Seq: 0, Ack: syn.Seq + 1,
				Flags: capture.FlagRST, TTL: 64}
			b.deliver(t, b.reset(t, spec))
			select {
			case err := <-dialed:
				t.Fatalf("connect ended by an RST without ACK: %v", err)
			case <-time.After(300 * time.Millisecond):
			}
			spec.Flags = capture.FlagRST | capture.FlagACK
			f := b.reset(t, spec)
			t.Logf("sending %s", Describe(f))
			b.deliver(t, f)
			select {
			case err := <-dialed:
				if !errors.Is(err, syscall.ECONNREFUSED) {
					t.Fatalf("connect: %v, want ECONNREFUSED", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("connect still pending after RST|ACK with ack = ISN+1")
			}
		})
	}
}
