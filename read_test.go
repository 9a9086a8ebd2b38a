package main

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// writePcap writes a small capture: two TCP sessions (one answered both
// ways), one UDP datagram, and two frames that do not decode.
func writePcap(t *testing.T) (path string, frames int, bytesTotal int) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "triage.pcap")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := pcapgo.NewWriter(f)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 28, 3, 0, 0, 0, time.UTC)
	write := func(b []byte) {
		at = at.Add(time.Millisecond)
		if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: at, CaptureLength: len(b), Length: len(b)}, b); err != nil {
			t.Fatal(err)
		}
		frames++
		bytesTotal += len(b)
	}
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	tcp := func(src, dst string, sport, dport uint16, syn, ack bool) []byte {
		eth := &layers.Ethernet{SrcMAC: mac, DstMAC: mac, EthernetType: layers.EthernetTypeIPv4}
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst)}
		l4 := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), SYN: syn, ACK: ack, Seq: 1, Window: 100}
		l4.SetNetworkLayerForChecksum(ip)
		buf := gopacket.NewSerializeBuffer()
		gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, l4)
		return buf.Bytes()
	}
	write(tcp("192.0.2.1", "198.51.100.2", 40000, 443, true, false))
	write(tcp("198.51.100.2", "192.0.2.1", 443, 40000, true, true))
	write(tcp("192.0.2.1", "198.51.100.2", 40000, 443, false, true))
	write(tcp("192.0.2.1", "198.51.100.3", 40001, 22, true, false))
	eth := &layers.Ethernet{SrcMAC: mac, DstMAC: mac, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: net.ParseIP("192.0.2.1"), DstIP: net.ParseIP("192.0.2.53")}
	udp := &layers.UDP{SrcPort: 5353, DstPort: 53}
	udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, udp, gopacket.Payload("q"))
	write(buf.Bytes())
	write([]byte{1, 2, 3})                                                    // shorter than an Ethernet header
	write(append(append([]byte{}, mac...), append(mac, 0x08, 0x00, 0x45)...)) // IPv4 header cut short
	return path, frames, bytesTotal
}

// TestReadSummary is offline triage: `canopy --read FILE --daemon` reads
// the whole capture without privileges and prints one JSON summary line.
func TestReadSummary(t *testing.T) {
	path, frames, total := writePcap(t)
	var out, errb bytes.Buffer
	// No --state-dir: a replay keeps its rules in memory and needs no
	// writable /var/lib/canopy.
	code := run([]string{"--read", path, "--daemon", "--log-level", "warn"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d\nstderr: %s", code, errb.String())
	}
	var s struct {
		Packets      uint64            `json:"packets"`
		Bytes        uint64            `json:"bytes"`
		DecodeErrors map[string]uint64 `json:"decode_errors"`
		Flows        uint64            `json:"flows"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(out.Bytes()), &s); err != nil {
		t.Fatalf("stdout is not one JSON line: %v\n%q", err, out.String())
	}
	if s.Packets != uint64(frames) || s.Bytes != uint64(total) {
		t.Errorf("packets %d bytes %d, want %d and %d", s.Packets, s.Bytes, frames, total)
	}
	if s.Flows != 3 {
		t.Errorf("flows %d, want 3 (two TCP sessions and one UDP)", s.Flows)
	}
	var bad uint64
	for _, n := range s.DecodeErrors {
		bad += n
	}
	if bad != 2 {
		t.Errorf("decode errors %v, want 2 frames counted by reason", s.DecodeErrors)
	}
}
