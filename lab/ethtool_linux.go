package lab

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Offloads are switched off with the legacy ethtool ioctls (SIOCETHTOOL
// with ETHTOOL_S*), which every kernel still maps onto netdev features; the
// netlink ethtool family would need a generic-netlink client for four bits.
//
// Why: veth does TSO/GSO by default, so a client's 64 KB send crosses the
// veth as one giant skb; the router's tc mirror would hand the tap that
// super-frame with one sequence number instead of wire-sized segments, and
// the delay line could not write it back out (AF_PACKET refuses frames over
// the MTU). GRO could merge segments on receive in the same way. With
// checksum offload on, frames carry partial checksums until a NIC would fix
// them, which never happens on veth, so the tap would see wrong checksums.

// ethtoolValue is struct ethtool_value from <linux/ethtool.h>.
type ethtoolValue struct {
	cmd  uint32
	data uint32
}

// ifreqPtr is struct ifreq with the ifr_data pointer member.
type ifreqPtr struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

// offload names one offload switch for error messages.
type offload struct {
	name string
	cmd  uint32
}

var (
	offTSO    = offload{"tso", unix.ETHTOOL_STSO}
	offGSO    = offload{"gso", unix.ETHTOOL_SGSO}
	offGRO    = offload{"gro", unix.ETHTOOL_SGRO}
	offTxCsum = offload{"tx-checksum", unix.ETHTOOL_STXCSUM}
)

// disableOffloads turns the given offloads off on ifname; call it inside
// the interface's namespace.
func disableOffloads(ifname string, offs ...offload) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("ethtool socket: %w", err)
	}
	defer unix.Close(fd)
	for _, o := range offs {
		if err := ethtoolSet(fd, ifname, o.cmd, 0); err != nil {
			return fmt.Errorf("turn %s off on %s: %w", o.name, ifname, err)
		}
	}
	return nil
}

func ethtoolSet(fd int, ifname string, cmd, value uint32) error {
	ev := ethtoolValue{cmd: cmd, data: value}
	var ifr ifreqPtr
	copy(ifr.name[:unix.IFNAMSIZ-1], ifname)
	ifr.data = unsafe.Pointer(&ev)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(&ev)
	if errno != 0 {
		return errno
	}
	return nil
}
