package inject

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

const auxdataLen = int(unsafe.Sizeof(unix.TpacketAuxdata{}))

func unsafePointer(b []byte) unsafe.Pointer { return unsafe.Pointer(&b[0]) }
