//go:build !linux

package inject

import (
	"errors"
	"net"
)

// PacketSender sends frames out of one interface. Only Linux has AF_PACKET;
// elsewhere OpenSender fails and canopy can run in observe mode only.
type PacketSender struct{}

// OpenSender fails on this platform: injection needs Linux AF_PACKET.
func OpenSender(cfg SenderConfig) (*PacketSender, error) {
	return nil, &net.OpError{Op: "inject", Net: "packet", Err: errors.New("frame injection needs Linux (AF_PACKET)")}
}

// Send fails on this platform.
func (s *PacketSender) Send(frame []byte) error {
	return &net.OpError{Op: "inject", Net: "packet", Err: errors.ErrUnsupported}
}

// MAC is nil on this platform.
func (s *PacketSender) MAC() net.HardwareAddr { return nil }

// Iface is empty on this platform.
func (s *PacketSender) Iface() string { return "" }

// Close does nothing on this platform.
func (s *PacketSender) Close() error { return nil }
