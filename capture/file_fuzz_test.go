package capture

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
)

// FuzzFile feeds damaged capture files through OpenFile and Run: an
// analyst's truncated or corrupt capture must produce an error, never a
// crash. Seeds are valid pcap and pcapng files; the fuzzer mutates them.
func FuzzFile(f *testing.F) {
	frames := randomFrames(f, 4)
	for _, ng := range []bool{false, true} {
		b, err := os.ReadFile(writeCapture(f, frames, time.Millisecond, ng, layers.LinkTypeEthernet))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	sll, _ := os.ReadFile(writeCapture(f, [][]byte{make([]byte, 20)}, 0, false, layers.LinkTypeLinuxSLL))
	f.Add(sll)
	sll2, _ := os.ReadFile(writeCapture(f, [][]byte{make([]byte, 30)}, 0, true, layers.LinkTypeLinuxSLL2))
	f.Add(sll2)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<16 || bytes.Count(data, []byte{0xff, 0xff, 0xff}) > 64 {
			return // keep each run small: huge declared lengths only test the allocator
		}
		path := filepath.Join(t.TempDir(), "f.pcap")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		src, err := OpenFile(path, 0)
		if err != nil {
			return
		}
		defer src.Close()
		var h nopHandler
		src.Run(context.Background(), 0, &h)
	})
}
