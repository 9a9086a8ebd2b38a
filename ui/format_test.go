package ui

import (
	"testing"
	"time"
)

// The digits are internal/si's (tested there); this checks the unit switch.
func TestAppendRate(t *testing.T) {
	for _, c := range []struct {
		bits  float64
		bytes bool
		want  string
	}{
		{850e6, false, "850 Mb/s"},
		{850e6, true, "106 MB/s"},
	} {
		if got := string(appendRate(nil, c.bits, c.bytes)); got != c.want {
			t.Errorf("appendRate(%v, %v) = %q, want %q", c.bits, c.bytes, got, c.want)
		}
	}
}

func TestTTLRoundTrip(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Duration
		show string
	}{
		{"1h", time.Hour, "1h"},
		{"90m", 90 * time.Minute, "1h30m"},
		{"30s", 30 * time.Second, "30s"},
		{"7d", 7 * 24 * time.Hour, "7d"},
		{"never", 0, "never"},
		{"0", 0, "never"},
	} {
		d, err := parseTTL(c.in)
		if err != nil || d != c.want {
			t.Errorf("parseTTL(%q) = %v, %v; want %v", c.in, d, err, c.want)
			continue
		}
		if got := fmtTTL(d); got != c.show {
			t.Errorf("fmtTTL(%v) = %q, want %q", d, got, c.show)
		}
	}
	for _, bad := range []string{"", "soon", "-1h", "1x", "0d", "500ms"} {
		if _, err := parseTTL(bad); err == nil {
			t.Errorf("parseTTL(%q) accepted", bad)
		}
	}
}

func TestSpark(t *testing.T) {
	vals := make([]float32, 60)
	for i := range vals {
		vals[i] = float32(i)
	}
	if got := string(appendSpark(nil, vals, 8)); len([]rune(got)) != 8 {
		t.Fatalf("8 cells gave %q", got)
	}
	// 2 points per cell, maximum of each pair, scaled to the peak: the
	// first cell (0 and 1) is the lowest bar, the last is full.
	got := []rune(string(appendSpark(nil, vals, 30)))
	if len(got) != 30 || got[0] != '▁' || got[29] != '█' {
		t.Fatalf("ramp gave %q", string(got))
	}
	// Silence is blank, not the lowest bar.
	if got := string(appendSpark(nil, make([]float32, 60), 10)); got != "          " {
		t.Fatalf("silence gave %q", got)
	}
	// A one-second burst survives downsampling.
	burst := make([]float32, 60)
	burst[31] = 5
	if got := []rune(string(appendSpark(nil, burst, 10))); got[5] != '█' {
		t.Fatalf("burst lost: %q", string(got))
	}
}

func TestFmtRemaining(t *testing.T) {
	now := t0
	for _, c := range []struct {
		at   time.Time
		want string
	}{
		{time.Time{}, "never"},
		{now.Add(-time.Second), "expired"},
		{now.Add(45 * time.Second), "45s"},
		{now.Add(59*time.Minute + 12*time.Second), "59m12s"},
		{now.Add(3*time.Hour + 5*time.Minute), "3h05m"},
		{now.Add(50 * time.Hour), "2d02h"},
	} {
		if got := fmtRemaining(c.at, now); got != c.want {
			t.Errorf("fmtRemaining(+%v) = %q, want %q", c.at.Sub(now), got, c.want)
		}
	}
}
