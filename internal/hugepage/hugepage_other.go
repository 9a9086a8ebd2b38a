//go:build !linux

package hugepage

import "errors"

// Advise is a no-op off Linux.
func Advise[T any](s []T) {}

// Collapse is a no-op off Linux.
func Collapse[T any](s []T) {}

// Populate is a no-op off Linux.
func Populate[T any](s []T) error { return nil }

// Resident is not measured off Linux.
func Resident[T any](s []T) (int, error) { return 0, errors.ErrUnsupported }
