//go:build !unix

package flow

// cpuNanos is not measured off Unix; cpu-ns/op then reads 0.
func cpuNanos() int64 { return 0 }
