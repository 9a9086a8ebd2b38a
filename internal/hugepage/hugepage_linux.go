//go:build linux

package hugepage

import "syscall"

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
