//go:build linux

package hugepage

import (
	"fmt"
	"runtime"
	"syscall"
	"unsafe"
)

const madvCollapse = 25 // MADV_COLLAPSE, Linux 6.1; not in package syscall

// Advise marks s's memory for huge pages before it is first written.
func Advise[T any](s []T) {
	if b := span(s); b != nil {
		_ = syscall.Madvise(b, syscall.MADV_HUGEPAGE)
	}
}

// Collapse moves s's contents onto huge pages now. Call it once s is
// filled; it copies the data, about 1 ms per 20 MiB.
func Collapse[T any](s []T) {
	if b := span(s); b != nil {
		_ = syscall.Madvise(b, syscall.MADV_HUGEPAGE)
		_ = syscall.Madvise(b, madvCollapse)
	}
}

const madvPopulateWrite = 23 // MADV_POPULATE_WRITE, Linux 5.14

// Populate makes s's memory resident now, as if every page had been
// written (on huge pages where Advise asked for them): the first use of a
// fresh page is a page fault, and on a virtual machine a fresh 2 MiB page
// can take milliseconds. It does not change s's contents. On a kernel
// without MADV_POPULATE_WRITE (before 5.14) it returns the error and the
// pages fault in on first use as before.
func Populate[T any](s []T) error {
	if cap(s) == 0 {
		return nil
	}
	var zero T
	n := uintptr(cap(s)) * unsafe.Sizeof(zero)
	p := uintptr(unsafe.Pointer(unsafe.SliceData(s)))
	const page = 4096
	start := p &^ (page - 1) // whole pages: the neighbours share them and are mapped too
	end := (p + n + page - 1) &^ (page - 1)
	// By address, not through a []byte: the rounded range reaches past s,
	// and a slice over it would be a bad pointer to the garbage collector.
	_, _, e := syscall.Syscall(syscall.SYS_MADVISE, start, end-start, madvPopulateWrite)
	runtime.KeepAlive(s)
	if e != 0 {
		return fmt.Errorf("madvise(MADV_POPULATE_WRITE): %w", e)
	}
	return nil
}

// Resident reports how much of s's memory is resident now, in percent of
// its pages (mincore). For tests and diagnostics.
func Resident[T any](s []T) (int, error) {
	if cap(s) == 0 {
		return 0, nil
	}
	var zero T
	p := uintptr(unsafe.Pointer(unsafe.SliceData(s)))
	const page = 4096
	start := p &^ (page - 1)
	n := (p + uintptr(cap(s))*unsafe.Sizeof(zero) - start + page - 1) / page
	vec := make([]byte, n)
	if _, _, e := syscall.Syscall(syscall.SYS_MINCORE, start, n*page, uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		return 0, e
	}
	runtime.KeepAlive(s)
	c := 0
	for _, v := range vec {
		c += int(v & 1)
	}
	return c * 100 / len(vec), nil
}
