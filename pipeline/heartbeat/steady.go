package heartbeat

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/schemas"
)

// Service is a cloud service a device keeps a connection to: its transport
// and server port, which a NAPT leaves as they are.
type Service struct {
	Transport uint8
	Port      int32
}

// Flow names one transport connection as an observer of either side of a
// NAPT tells them apart: beyond it every unit has the one address, but
// each of their connections gets an external port of its own (the NAPT
// needs that to route the answers back), so units holding one connection
// each are as many flows; on the LAN the unit's own address is in it too.
type Flow struct {
	Service  Service
	Src, Dst netip.Addr
	SrcPort  int32
}

// FlowPacket is one outbound packet and its flow.
type FlowPacket struct {
	TsNs int64
	Flow Flow
}

// FlowPacketOf is the flow packet of an outbound IP packet with ports;
// false for any other.
func FlowPacketOf(p *schemas.Packet) (FlowPacket, bool) {
	if p.Direction != schemas.DirOutbound || p.Transport == 0 || p.DPort == schemas.NoPort || p.SrcPort == schemas.NoPort {
		return FlowPacket{}, false
	}
	return FlowPacket{TsNs: p.TsNs, Flow: Flow{Service: Service{p.Transport, p.DPort}, Src: p.SrcIP, Dst: p.DstIP, SrcPort: p.SrcPort}}, true
}

// SteadyConfig says what a steady connection is. The same values hold for
// every device type: nothing here is fit to a type's captures.
type SteadyConfig struct {
	// MinPackets and MinSpan: a connection the device keeps, not one
	// request, sends at least MinPackets outbound packets spread over at
	// least MinSpan.
	MinPackets int
	MinSpan    time.Duration
	// Share is how many of a type's captures (a share) must show exactly
	// one steady connection of its service for the type to be counted by
	// them; Stray is the share of another type's captures above which
	// that type is taken to use the service too.
	Share, Stray float64
}

// DefaultSteady: 3 packets over 10 s; a type is counted by its steady
// connection when 90 % of its captures show exactly one, and another type
// shares the service when more than 10 % of its captures show one.
func DefaultSteady() SteadyConfig {
	return SteadyConfig{MinPackets: 3, MinSpan: 10 * time.Second, Share: 0.9, Stray: 0.1}
}

type span struct {
	first, last int64
	n           int
}

func flowSpans(pkts []FlowPacket, keep func(Flow) bool, fromNs, toNs int64) map[Flow]*span {
	out := map[Flow]*span{}
	for _, p := range pkts {
		if p.TsNs < fromNs || p.TsNs >= toNs || !keep(p.Flow) {
			continue
		}
		s := out[p.Flow]
		if s == nil {
			s = &span{first: p.TsNs, last: p.TsNs}
			out[p.Flow] = s
		}
		s.first, s.last = min(s.first, p.TsNs), max(s.last, p.TsNs)
		s.n++
	}
	return out
}

func (c SteadyConfig) steady(s *span) bool {
	return s.n >= c.MinPackets && s.last-s.first >= int64(c.MinSpan)
}

// Steady counts the steady connections to any of services between fromNs
// and toNs: the units there are, when each unit of the types that use
// them keeps one (what Eligibility checks). A unit that reconnects within
// the window counts twice; the count is of distinct connections over the
// window, not of those alive at one instant, since units of a home come
// and go.
func Steady(pkts []FlowPacket, services []Service, cfg SteadyConfig, fromNs, toNs int64) int {
	n := 0
	for _, s := range flowSpans(pkts, func(f Flow) bool { return slices.Contains(services, f.Service) }, fromNs, toNs) {
		if cfg.steady(s) {
			n++
		}
	}
	return n
}

// SteadyServices is how many steady connections of each service one
// capture of one device holds.
func SteadyServices(pkts []FlowPacket, cfg SteadyConfig) map[Service]int {
	out := map[Service]int{}
	for f, s := range flowSpans(pkts, func(Flow) bool { return true }, -1<<63, 1<<63-1) {
		if cfg.steady(s) {
			out[f.Service]++
		}
	}
	return out
}

// TypeService is what Eligibility found for one device type.
type TypeService struct {
	Device string
	// Service is the one most of its captures keep exactly one steady
	// connection to; One is how many do, of Captures.
	Service       Service
	One, Captures int
	// Eligible: the type is counted by its steady connections. Family is
	// every type counted with it (the types that share the service, each
	// itself eligible): a count of the service is a count of them all.
	Eligible bool
	Family   []string
	// Why says why a type is not eligible.
	Why string
}

// Eligibility decides, from each type's own captures (the device alone),
// which types steady connections count, before any home is counted. The
// rule: a type is eligible when at least cfg.Share of its captures show
// exactly one steady connection of one service, and every other type that
// shows a steady connection of that service in more than cfg.Stray of its
// captures is eligible by the same service; those types form its family.
// perCapture holds, per type, SteadyServices of each capture.
//
// A unit that shows none is missed, so cfg.Share bounds the error the
// rule admits: at 90 %, one unit in ten on average.
func Eligibility(perCapture map[string][]map[Service]int, cfg SteadyConfig) []TypeService {
	var names []string
	for d := range perCapture {
		names = append(names, d)
	}
	slices.Sort(names)
	best := map[string]TypeService{}
	for _, d := range names {
		caps := perCapture[d]
		ones := map[Service]int{}
		for _, c := range caps {
			for s, k := range c {
				if k == 1 {
					ones[s]++
				}
			}
		}
		ts := TypeService{Device: d, Captures: len(caps)}
		for s, k := range ones {
			if k > ts.One || k == ts.One && cmp.Or(cmp.Compare(s.Transport, ts.Service.Transport), cmp.Compare(s.Port, ts.Service.Port)) < 0 {
				ts.Service, ts.One = s, k
			}
		}
		switch {
		case len(caps) == 0 || ts.One == 0:
			ts.Why = "no capture keeps one steady connection"
		case float64(ts.One) < cfg.Share*float64(len(caps)):
			ts.Why = fmt.Sprintf("one steady connection of %s in %d of %d captures, under %.0f %%", ts.Service, ts.One, len(caps), 100*cfg.Share)
		default:
			ts.Eligible = true
		}
		best[d] = ts
	}
	var out []TypeService
	for _, d := range names {
		ts := best[d]
		if ts.Eligible {
			ts.Family = []string{d}
			for _, u := range names {
				if u == d {
					continue
				}
				shows := 0
				for _, c := range perCapture[u] {
					if c[ts.Service] > 0 {
						shows++
					}
				}
				if float64(shows) <= cfg.Stray*float64(len(perCapture[u])) {
					continue
				}
				if o := best[u]; !o.Eligible || o.Service != ts.Service {
					ts.Eligible = false
					ts.Why = fmt.Sprintf("%s also keeps steady connections of %s (%d of %d captures) and is not counted by them", u, ts.Service, shows, len(perCapture[u]))
					ts.Family = nil
					break
				}
				ts.Family = append(ts.Family, u)
			}
		}
		out = append(out, ts)
	}
	return out
}

// ReadFlows reads the outbound flow packets of a capture decoded with
// home; keep, when not nil, picks the packets (a device's MAC on a LAN tap).
func ReadFlows(ctx context.Context, path string, home features.HomeConfig, keep func(*schemas.Packet) bool) ([]FlowPacket, error) {
	return ReadAs(ctx, "flows", path, home, keep, FlowPacketOf)
}
