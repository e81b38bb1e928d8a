package realhome

import (
	"bytes"
	"context"
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/schemas"
)

// TestAssembleIPv6 assembles the same home over IPv4 and IPv6-only: every
// TCP and UDP segment but DHCP, and every ping, comes through with its
// port, payload and time, now IPv6 with a right checksum and the LAN's
// hosts in homegen.LANPrefix6; ARP, DHCP and IGMP are left out, and
// nothing decodes as IPv4.
func TestAssembleIPv6(t *testing.T) {
	v4, v6 := assembleTwice(t, Config{Devices: 6, Units: map[string]int{"WeMoSwitch": 2}, Duration: 5 * time.Minute, Seed: 5}, func(c *Config) { c.IPv6 = true })
	type seg struct {
		ts          int64
		transport   uint8
		dport       int32
		payload     uint32
		fromGateway bool
	}
	read := func(h *Home) ([]seg, []schemas.Packet) {
		var b bytes.Buffer
		if err := h.WritePcap(&b); err != nil {
			t.Fatal(err)
		}
		src, err := capture.NewReader(&b, "home")
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		var segs []seg
		var all []schemas.Packet
		if _, err := capture.Read(context.Background(), src, h.HomeConfig(), func(p *schemas.Packet) error {
			all = append(all, *p)
			tr := p.Transport
			if tr == 58 {
				tr = 1
			}
			dhcp := p.Transport == 17 && (p.DPort == 67 || p.DPort == 68)
			if (tr == 6 || tr == 17 || tr == 1) && !dhcp {
				segs = append(segs, seg{ts: p.TsNs, transport: tr, dport: p.DPort, payload: p.PayloadLen, fromGateway: p.SrcMAC == h.GatewayMAC})
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return segs, all
	}
	segs4, _ := read(v4)
	segs6, all6 := read(v6)
	// Pings other than echo have no twin; the rest must match.
	if len(segs6) == 0 || len(segs6) > len(segs4) || len(segs4)-len(segs6) > len(segs4)/50 {
		t.Fatalf("%d segments over IPv4, %d over IPv6: want all but other ICMP", len(segs4), len(segs6))
	}
	i := 0
	for _, s := range segs6 {
		for i < len(segs4) && segs4[i] != s {
			i++
		}
		if i == len(segs4) {
			t.Fatalf("IPv6 segment %+v has no IPv4 twin in order", s)
		}
		i++
	}
	if v6.Left6 == 0 || !v6.GatewayIP.Is6() {
		t.Errorf("IPv6 home: %d frames left out, gateway %s; want ARP and DHCP left out and an IPv6 gateway", v6.Left6, v6.GatewayIP)
	}
	for _, u := range v6.Units {
		if !homegen.LANPrefix6.Contains(u.IP) {
			t.Errorf("unit %s at %s, want it in %s", u.Name, u.IP, homegen.LANPrefix6)
		}
	}
	checked := 0
	for _, p := range all6 {
		if p.SrcIP.Is4() || p.DstIP.Is4() {
			t.Fatalf("IPv6 home holds an IPv4 packet: %+v", p)
		}
	}
	for _, p := range v6.Packets {
		if ok, tested := ipv6Checksum(p.Data); tested {
			checked++
			if !ok {
				t.Fatalf("frame with a wrong transport checksum: % x", p.Data[:min(len(p.Data), 80)])
			}
		}
	}
	if checked < len(segs6)/2 {
		t.Errorf("%d checksums checked of %d segments", checked, len(segs6))
	}
}

// ipv6Checksum checks a frame's TCP, UDP or ICMPv6 checksum over IPv6's
// pseudo-header, when the frame holds the whole segment.
func ipv6Checksum(b []byte) (ok, tested bool) {
	off, et := etherType(b)
	if et != 0x86dd || len(b) < off+40 {
		return false, false
	}
	ip := b[off:]
	n := int(binary.BigEndian.Uint16(ip[4:6]))
	if len(ip) < 40+n || (ip[6] != 6 && ip[6] != 17 && ip[6] != 58) {
		return false, false
	}
	var pseudo uint32
	for i := 8; i < 40; i += 2 {
		pseudo += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	pseudo += uint32(ip[6]) + uint32(n)
	return sum16(ip[40:40+n], pseudo) == 0xffff, true
}

// FuzzTo6 feeds arbitrary frames to the IPv6 translation, which reads
// captured headers: it must not panic, and what it makes is an IPv6 frame
// whose payload length fits it.
func FuzzTo6(f *testing.F) {
	ip := []byte{0, 1, 2, 3, 4, 5, 0x74, 0xda, 0x38, 1, 2, 3, 0x08, 0x00, 0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0,
		192, 168, 1, 7, 8, 8, 8, 8, 0x30, 0x39, 0, 53, 0, 8, 0x12, 0x34}
	ping := slices.Clone(ip)
	ping[23], ping[34] = 1, 8
	f.Add(ip)
	f.Add(ping)
	f.Add([]byte{0x81, 0x00})
	lan := netip.MustParsePrefix("192.168.1.0/24")
	f.Fuzz(func(t *testing.T, b []byte) {
		out, ok := to6(slices.Clone(b), func(a netip.Addr, _ schemas.MAC) netip.Addr { return map6(a, lan) })
		if !ok {
			return
		}
		off, et := etherType(out)
		if et != 0x86dd {
			if !bytes.Equal(out, b) {
				t.Fatalf("a frame that is no IPv4 changed")
			}
			return
		}
		if len(out) < off+40 || int(binary.BigEndian.Uint16(out[off+4:]))+off+40 < len(out) {
			t.Fatalf("IPv6 frame of %d bytes, payload length %d", len(out), binary.BigEndian.Uint16(out[off+4:]))
		}
	})
}

// TestAssembleSLAAC: with SLAAC an IPv6-only home's units send from the
// addresses autoconfiguration forms from their MACs, and are sent to at
// them, behind a repeater too; the gateway keeps ::1, and the frames are
// those of the home without it, addresses and checksums aside.
func TestAssembleSLAAC(t *testing.T) {
	for _, relay := range []bool{false, true} {
		cfg := Config{Devices: 5, Units: map[string]int{"D-LinkSiren": 2}, Duration: 3 * time.Minute, Seed: 3, IPv6: true, Relay: relay}
		plain, h := assembleTwice(t, cfg, func(c *Config) { c.SLAAC = true })
		if !h.SLAAC || len(h.Packets) != len(plain.Packets) || h.GatewayIP != plain.GatewayIP {
			t.Fatalf("relay %v: SLAAC %v, %d packets (%d without), gateway %s (%s without)", relay, h.SLAAC, len(h.Packets), len(plain.Packets), h.GatewayIP, plain.GatewayIP)
		}
		own := map[netip.Addr]bool{}
		for _, u := range h.Units {
			want := slaac(homegen.LANPrefix6, u.MAC)
			if u.IP != want {
				t.Errorf("relay %v: unit %s at %s, want %s from its MAC %s", relay, u.Name, u.IP, want, u.MAC)
			}
			own[want] = true
		}
		from, to := 0, 0
		for _, p := range h.Packets {
			b := p.Data
			if len(b) < 54 || binary.BigEndian.Uint16(b[12:14]) != 0x86dd {
				continue
			}
			src, dst := netip.AddrFrom16([16]byte(b[22:38])), netip.AddrFrom16([16]byte(b[38:54]))
			if schemas.MAC(b[6:12]) == h.FrameMAC(p.Unit) && homegen.LANPrefix6.Contains(src) {
				if src != h.Units[p.Unit].IP {
					t.Fatalf("relay %v: unit %s sends from %s, want %s", relay, h.Units[p.Unit].Name, src, h.Units[p.Unit].IP)
				}
				from++
			}
			if own[dst] {
				to++
			}
		}
		if from == 0 || to == 0 {
			t.Errorf("relay %v: %d frames from the units' SLAAC addresses, %d to them", relay, from, to)
		}
	}
}
