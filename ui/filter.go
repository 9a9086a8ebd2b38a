package ui

import (
	"net/netip"
	"strconv"
	"strings"

	"canopy/flow"
	"canopy/sensor"
)

// filterSpec is what the operator typed after `/`, understood once: an
// address, a prefix, a port, or (when it is none of those, e.g. "10.0.")
// plain text matched against addresses as typed. A bare number ("443",
// or "198" on the way to typing 198.51.100.23) is both: a port, or text in
// an address.
type filterSpec struct {
	raw    string
	addr   netip.Addr
	prefix netip.Prefix
	port   uint16
	text   string
}

// parseFilter reads "10.0.0.5", "10.0.0.0/8", ":443", "port 443",
// "tcp/443" (ports only), "443" (port or address text) or anything else as
// text.
func parseFilter(s string) filterSpec {
	f := filterSpec{raw: s}
	s = strings.TrimSpace(s)
	if s == "" {
		return f
	}
	if a, err := netip.ParseAddr(s); err == nil {
		f.addr = a.Unmap()
		return f
	}
	if p, err := netip.ParsePrefix(s); err == nil {
		f.prefix = p.Masked()
		return f
	}
	ps, explicit := s, false
	for _, pre := range [...]string{"port:", "port ", "tcp/", "udp/", ":"} {
		if after, ok := strings.CutPrefix(ps, pre); ok {
			ps, explicit = strings.TrimSpace(after), true
			break
		}
	}
	if n, err := strconv.ParseUint(ps, 10, 16); err == nil && n > 0 {
		f.port = uint16(n)
		if !explicit {
			f.text = ps
		}
		return f
	}
	f.text = strings.ToLower(s)
	return f
}

// active reports whether the filter hides anything.
func (f filterSpec) active() bool {
	return f.addr.IsValid() || f.prefix.IsValid() || f.port != 0 || f.text != ""
}

// describe names the filter for the pane title: `IP 10.0.0.5`.
func (f filterSpec) describe() string {
	switch {
	case f.addr.IsValid():
		return "IP " + f.addr.String()
	case f.prefix.IsValid():
		return "prefix " + f.prefix.String()
	case f.port != 0 && f.text != "":
		return "port " + strconv.Itoa(int(f.port)) + ` or "` + f.text + `" in an address`
	case f.port != 0:
		return "port " + strconv.Itoa(int(f.port))
	case f.text != "":
		return `text "` + f.text + `"`
	}
	return ""
}

// matchAddr applies an address, prefix or text filter to one address. A
// port filter never matches an address alone.
func (f filterSpec) matchAddr(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	switch {
	case f.addr.IsValid():
		return a.Unmap() == f.addr
	case f.prefix.IsValid():
		return f.prefix.Contains(a.Unmap())
	case f.text != "":
		return strings.Contains(a.String(), f.text)
	}
	return false
}

// matchTalker reports whether t passes the filter. Talker rows carry a port
// only in the by-port view, so a port filter hides every row of the other
// views (the pane says so and suggests `t`).
func (f filterSpec) matchTalker(t *flow.Talker) bool {
	if !f.active() {
		return true
	}
	if f.port != 0 && t.Port == f.port {
		return true
	}
	if t.Net.IsValid() {
		return f.matchNet(t.Net)
	}
	return f.matchAddr(t.Src) || f.matchAddr(t.Dst)
}

// matchNet applies an address, prefix or text filter to a network row:
// an address or prefix matches the networks it overlaps.
func (f filterSpec) matchNet(n netip.Prefix) bool {
	switch {
	case f.addr.IsValid():
		return n.Contains(f.addr)
	case f.prefix.IsValid():
		return n.Overlaps(f.prefix)
	case f.text != "":
		return strings.Contains(n.String(), f.text)
	}
	return false
}

// matchBlock reports whether b passes the filter.
func (f filterSpec) matchBlock(b *sensor.Block) bool {
	if !f.active() {
		return true
	}
	if f.port != 0 && (b.SrcPort == f.port || b.DstPort == f.port) {
		return true
	}
	return f.matchAddr(b.Src) || f.matchAddr(b.Dst)
}

// matchFlow reports whether i passes the filter.
func (f filterSpec) matchFlow(i *flow.Info) bool {
	if !f.active() {
		return true
	}
	if f.port != 0 && (i.APort == f.port || i.BPort == f.port) {
		return true
	}
	return f.matchAddr(i.A) || f.matchAddr(i.B)
}
