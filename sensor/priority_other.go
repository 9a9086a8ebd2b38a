//go:build !linux

package sensor

import "runtime"

// pinWorker locks the worker to its thread; thread priorities are set on
// Linux only.
func pinWorker(nice, rt int) error {
	runtime.LockOSThread()
	return nil
}
