//go:build !linux

package capture

import (
	"errors"
	"fmt"
	"io"
	"runtime"
)

// Live capture reads Linux AF_PACKET sockets, which no other system has.
// This file keeps the API of live_linux.go, so that code using it builds for
// a developer's laptop.

// errLiveUnsupported wraps errors.ErrUnsupported, which callers test for.
var errLiveUnsupported = fmt.Errorf("live capture is implemented for Linux only (AF_PACKET), not %s: %w", runtime.GOOS, errors.ErrUnsupported)

// LiveSource is the Source OpenLive returns on Linux; here none is ever made.
type LiveSource struct{}

// OpenLive fails outside Linux.
func OpenLive(iface string, opts LiveOptions) (Source, error) {
	return nil, fmt.Errorf("live capture on %s: %w: run the agent on the Linux gateway, or record there with `tcpdump -i %s -w FILE` and read the file with OpenFile", iface, errLiveUnsupported, iface)
}

func (s *LiveSource) Next() (Frame, error)      { return Frame{}, io.EOF }
func (s *LiveSource) Close() error              { return nil }
func (s *LiveSource) Stats() (LiveStats, error) { return LiveStats{}, nil }
func (s *LiveSource) Mechanism() string         { return "none: " + errLiveUnsupported.Error() }

// liveNFLOGStats: no live source here.
func liveNFLOGStats(Source) NFLOGStats { return NFLOGStats{} }
