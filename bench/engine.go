package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"syscall"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"canopy/capture"
	"canopy/rules"
	"canopy/sensor"
)

// runEngine measures the whole sensor per packet: a generated capture file
// replayed as fast as possible through capture.File → decode → flow table
// → rules match (against a store holding many bans) → verdict, in one
// worker, exactly as `canopy --read FILE` runs it. Nothing is injected (no
// sender; the traffic matches no ban).
func runEngine(ctx context.Context, o *options) (*Section, error) {
	flows, perFlow, bans, reps := 20000, 25, 100000, 5
	if o.quick {
		flows, bans, reps = 4000, 10000, 1
	}
	cmd := o.command("engine")
	s := &Section{Name: "engine", Title: "Engine: the whole sensor per packet (pcap replay)",
		Target:  "no allocations per packet on the hot path",
		Columns: []string{"workload", "packets", "ns/packet", "cpu-ns/packet", "allocs/packet", "B/packet", "runs"},
		Key:     1}
	dir, err := os.MkdirTemp("", "canopy-bench-engine-")
	if err != nil {
		return s, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "replay.pcap")
	n, err := writeReplay(path, flows, perFlow)
	if err != nil {
		return s, err
	}
	store, err := rules.Open(rules.Config{Logger: quietLog})
	if err != nil {
		return s, err
	}
	defer store.Close()
	t0 := time.Now()
	reqs := make([]rules.Request, bans)
	for i := range reqs {
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], 0xc6120000+uint32(i)) // 198.18.0.0/15, never in the replay
		reqs[i] = rules.Request{Kind: rules.KindBan, Value: netip.AddrFrom4(a).String(), Origin: rules.OriginFeed, Reason: "bench"}
	}
	for _, r := range store.AddBatch(reqs) {
		if r.Err != nil {
			return s, r.Err
		}
	}
	progress("engine: %d bans loaded in %v; replaying %d packets of %d flows, %d times…", bans, time.Since(t0).Round(time.Millisecond), n, flows, reps)
	var ns, cpu, allocs, bytes []float64
	for range reps {
		if ctx.Err() != nil {
			return s, ctx.Err()
		}
		src, err := capture.OpenFile(path, 0)
		if err != nil {
			return s, err
		}
		e, err := sensor.New(sensor.Config{Logger: quietLog, Source: path}, src, store)
		if err != nil {
			src.Close()
			return s, err
		}
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		c0 := cpuNanos()
		start := time.Now()
		err = e.Run(ctx)
		wall := time.Since(start)
		c1 := cpuNanos()
		runtime.ReadMemStats(&m1)
		src.Close()
		if err != nil {
			return s, err
		}
		sum := e.Summary()
		if sum.Packets != uint64(n) {
			return s, fmt.Errorf("engine saw %d of %d packets", sum.Packets, n)
		}
		p := float64(sum.Packets)
		ns = append(ns, float64(wall.Nanoseconds())/p)
		cpu = append(cpu, float64(c1-c0)/p)
		allocs = append(allocs, float64(m1.Mallocs-m0.Mallocs)/p)
		bytes = append(bytes, float64(m1.TotalAlloc-m0.TotalAlloc)/p)
	}
	s.add(cmd, fmt.Sprintf("%d TCP flows × %d packets, %d bans", flows, perFlow, bans), fmt.Sprint(n),
		fmtNum(median(ns)), fmtNum(median(cpu)), fmtNum(median(allocs)), fmtNum(median(bytes)), fmt.Sprint(reps))
	s.note("Medians of %d replays of one generated file (handshake, 10 data segments each way, FIN each way per flow; IPv4, 64-byte payloads). "+
		"ns/packet is wall time of Engine.Run from open to the file's end divided by packets; cpu-ns/packet is the whole process's CPU time (includes the file reader, GC and the snapshotter); "+
		"allocs and bytes per packet are the process's heap allocations during the run divided by packets — they include per-flow costs (new flows, snapshot ranking), not only the per-packet path.", reps)
	return s, nil
}

// writeReplay writes a pcap of flows TCP sessions and returns its packets.
func writeReplay(path string, flows, perFlow int) (int, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	w := pcapgo.NewWriter(bw)
	if err := w.WriteFileHeader(65536, layers.LinkTypeEthernet); err != nil {
		return 0, err
	}
	macA, macB := net.HardwareAddr{2, 0, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 2}
	payload := make([]byte, 64)
	ts := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	total := 0
	for i := range flows {
		a := net.IP{10, 1, byte(i >> 8), byte(i)}
		b := net.IP{10, 2, byte(i >> 12), byte(i >> 4)}
		sport, dport := layers.TCPPort(1024+i%60000), layers.TCPPort(443)
		seqA, seqB := uint32(1000*i), uint32(7000*i)
		send := func(fromA bool, syn, ack, fin bool, n int) error {
			eth := &layers.Ethernet{SrcMAC: macA, DstMAC: macB, EthernetType: layers.EthernetTypeIPv4}
			ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: a, DstIP: b}
			tcp := &layers.TCP{SrcPort: sport, DstPort: dport, Seq: seqA, Ack: seqB, SYN: syn, ACK: ack, FIN: fin, PSH: n > 0, Window: 65535}
			if !fromA {
				eth.SrcMAC, eth.DstMAC = macB, macA
				ip.SrcIP, ip.DstIP = b, a
				tcp.SrcPort, tcp.DstPort, tcp.Seq, tcp.Ack = dport, sport, seqB, seqA
			}
			tcp.SetNetworkLayerForChecksum(ip)
			if err := gopacket.SerializeLayers(buf, opts, eth, ip, tcp, gopacket.Payload(payload[:n])); err != nil {
				return err
			}
			adv := uint32(n)
			if syn || fin {
				adv++
			}
			if fromA {
				seqA += adv
			} else {
				seqB += adv
			}
			ts = ts.Add(2 * time.Microsecond)
			total++
			data := buf.Bytes()
			return w.WritePacket(gopacket.CaptureInfo{Timestamp: ts, CaptureLength: len(data), Length: len(data)}, data)
		}
		steps := []func() error{
			func() error { return send(true, true, false, false, 0) },
			func() error { return send(false, true, true, false, 0) },
			func() error { return send(true, false, true, false, 0) },
		}
		for k := 0; k < perFlow-5; k++ {
			steps = append(steps, func() error { return send(k%2 == 0, false, true, false, len(payload)) })
		}
		steps = append(steps,
			func() error { return send(true, false, true, true, 0) },
			func() error { return send(false, false, true, true, 0) })
		for _, st := range steps {
			if err := st(); err != nil {
				return 0, err
			}
		}
	}
	if err := bw.Flush(); err != nil {
		return 0, err
	}
	return total, f.Close()
}

// cpuNanos is this process's user+system CPU time.
func cpuNanos() int64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}
