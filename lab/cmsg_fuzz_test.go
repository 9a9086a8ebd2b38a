package lab

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// auxCmsg builds a PACKET_AUXDATA control message carrying a VLAN tag.
func auxCmsg(tci, tpid uint16, status uint32) []byte {
	b := make([]byte, unix.CmsgSpace(int(unsafe.Sizeof(unix.TpacketAuxdata{}))))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = unix.SOL_PACKET, unix.PACKET_AUXDATA
	h.SetLen(unix.CmsgLen(int(unsafe.Sizeof(unix.TpacketAuxdata{}))))
	aux := (*unix.TpacketAuxdata)(unsafe.Pointer(&b[unix.CmsgLen(0)]))
	aux.Status, aux.Vlan_tci, aux.Vlan_tpid = status, tci, tpid
	return b
}

func TestParseCmsgs(t *testing.T) {
	for _, c := range []struct {
		name     string
		oob      []byte
		vlan     bool
		tci, tpd uint16
	}{
		{"none", nil, false, 0, 0},
		{"no tag", auxCmsg(0, 0, 0), false, 0, 0},
		{"c-tag", auxCmsg(0x202a, 0, unix.TP_STATUS_VLAN_VALID), true, 0x202a, 0x8100},
		{"s-tag", auxCmsg(7, 0x88a8, unix.TP_STATUS_VLAN_VALID|unix.TP_STATUS_VLAN_TPID_VALID), true, 7, 0x88a8},
		{"truncated", auxCmsg(7, 0, unix.TP_STATUS_VLAN_VALID)[:20], false, 0, 0},
	} {
		m := parseCmsgs(c.oob)
		if m.vlan != c.vlan || m.tci != c.tci || m.tpid != c.tpd {
			t.Errorf("%s: got vlan=%v tci=%#x tpid=%#x, want %v %#x %#x", c.name, m.vlan, m.tci, m.tpid, c.vlan, c.tci, c.tpd)
		}
	}
}

// FuzzParseCmsgs feeds arbitrary control buffers to the parser: it must
// neither panic nor loop. The seed corpus lives in testdata/fuzz.
func FuzzParseCmsgs(f *testing.F) {
	f.Add(auxCmsg(0x202a, 0x88a8, unix.TP_STATUS_VLAN_VALID|unix.TP_STATUS_VLAN_TPID_VALID))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, oob []byte) {
		parseCmsgs(oob)
	})
}
