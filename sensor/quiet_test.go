package sensor

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"canopy/capture"
	"canopy/inject"
	"canopy/rules"
)

// TestSettleQuietWaitsTheWholeSilence: a blocked flow is confirmed only
// after ConfirmAfter of real silence since its latest packet. The flow
// table keeps the latest packet's time to the millisecond, rounded down,
// so the worker must not read that as the packet's time: a survivor
// packet 0.9 ms into a millisecond would otherwise be forgotten 0.9 ms
// early.
func TestSettleQuietWaitsTheWholeSilence(t *testing.T) {
	client := netip.MustParseAddrPort("198.51.100.7:40000")
	server := netip.MustParseAddrPort("192.0.2.10:80")
	store, err := rules.Open(rules.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if _, _, err := store.Add(rules.Request{Kind: rules.KindBan, Value: "198.51.100.7", Origin: rules.OriginAPI}); err != nil {
		t.Fatal(err)
	}
	rec := inject.NewRecorder(8)
	e, err := New(Config{MaxResetsPerFlow: 2, Injection: Injection{Sender: rec, NextHop: fixedMAC{}}}, &scriptSource{}, store)
	if err != nil {
		t.Fatal(err)
	}
	w := e.workers[0]
	after := int64(e.cfg.ConfirmAfter)
	base := time.Now().UnixNano() / 1e6 * 1e6
	frame := func(b []byte, ts int64) {
		m := capture.Meta{Timestamp: ts, WireLen: uint32(len(b))}
		w.Frame(b, &m)
	}
	frame(tcpFrame(t, client, server, 1000, 0, "S", "", 61), base) // two resets: the budget
	// A survivor's payload, 0.9 ms into its millisecond: its resets are
	// suppressed, so the flow's last reset is older than this packet.
	last := base + 100*int64(time.Millisecond) + 900*int64(time.Microsecond)
	frame(tcpFrame(t, client, server, 1001, 5001, "AP", strings.Repeat("x", 10), 61), last)
	if w.attempted.Load() != 1 || w.confirmed.Load() != 0 {
		t.Fatalf("attempted %d confirmed %d", w.attempted.Load(), w.confirmed.Load())
	}
	w.Idle(last + after - 500*int64(time.Microsecond)) // 0.5 ms short of ConfirmAfter
	if n := w.confirmed.Load(); n != 0 {
		t.Fatalf("confirmed after %v of silence, ConfirmAfter is %v", time.Duration(after-500_000), time.Duration(after))
	}
	w.Idle(last + after + housekeepEvery)
	if n := w.confirmed.Load(); n != 1 {
		t.Fatalf("not confirmed after %v of silence", time.Duration(after+housekeepEvery))
	}
}
