package flow

import (
	"syscall"
	"unsafe"
)

// hugePages lets a benchmark measure the table without the THP hint.
var hugePages = true

// adviseHuge asks the kernel to back a large array with transparent huge
// pages (MADV_HUGEPAGE; a no-op when THP is "never"). A 1M-flow table is
// ~270 MB: with 4 KiB pages every random flow lookup also misses the TLB,
// with 2 MiB pages it mostly does not. Errors are ignored: it is a hint.
func adviseHuge[T any](s []T) {
	if len(s) == 0 || !hugePages {
		return
	}
	const huge = 2 << 20
	size := uintptr(len(s)) * unsafe.Sizeof(s[0])
	if size < 2*huge {
		return
	}
	base := unsafe.Pointer(&s[0])
	start := uintptr(base)
	end := (start + size) &^ (huge - 1) // madvise needs page alignment: round inward to whole huge pages
	aligned := (start + huge - 1) &^ (huge - 1)
	if end <= aligned {
		return
	}
	b := unsafe.Slice((*byte)(unsafe.Add(base, aligned-start)), end-aligned)
	_ = syscall.Madvise(b, syscall.MADV_HUGEPAGE)
}
