package features

import (
	"hash/fnv"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/homemole/homemole/schemas"
)

func TestNormalizeHostName(t *testing.T) {
	for name, want := range map[string]string{
		// Per-unit suffixes, as the IoT Sentinel devices send them.
		"ESP_07AEFB":      "esp",
		"Lightify-7B5F6B": "lightify",
		"GainSpanca9152":  "gainspan",
		"KEQ0817541":      "keq",
		// Model names stay whole.
		"DCH-S150":    "dch-s150",
		"HS110(EU)":   "hs110(eu)",
		"Philips-hue": "philips-hue",
		"DCS-930LB":   "dcs-930lb",
		"IoTHub":      "iothub",
		// Letters only, however hex they look, are a word, not a serial.
		"cafe-beef": "cafe-beef",
		// A name of nothing but a serial tells no type.
		"00112233aabb": "",
		"":             "",
	} {
		if got := NormalizeHostName(name); got != want {
			t.Errorf("NormalizeHostName(%q) = %q, want %q", name, got, want)
		}
	}
}

// dhcpFrame is a DHCP client's REQUEST with the options given.
func dhcpFrame(tb testing.TB, options ...layers.DHCPOption) []byte {
	m := &layers.DHCPv4{Operation: layers.DHCPOpRequest, HardwareType: layers.LinkTypeEthernet, HardwareLen: 6,
		ClientHWAddr: devMAC, Options: append([]layers.DHCPOption{layers.NewDHCPOption(layers.DHCPOptMessageType, []byte{3})}, options...)}
	return build(tb, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(68, 67), m)
}

func fnvOf(b []byte) uint32 {
	h := fnv.New32a()
	h.Write(b)
	return h.Sum32()
}

func decodeOne(tb testing.TB, data []byte) schemas.Packet {
	tb.Helper()
	var p schemas.Packet
	if err := NewDecoder(withGW).Decode(LinkTypeEthernet, data, gopacket.CaptureInfo{Length: len(data), CaptureLength: len(data)}, 0, &p); err != nil {
		tb.Fatal(err)
	}
	return p
}

// TestDHCPClient: the fingerprint is the hashes of the options, a split
// option hashes as one, and a message cut short or of a server gives none.
func TestDHCPClient(t *testing.T) {
	params := []byte{1, 3, 6, 12, 15, 28, 42}
	full := dhcpFrame(t, layers.NewDHCPOption(layers.DHCPOptParamsRequest, params),
		layers.NewDHCPOption(layers.DHCPOptClassID, []byte("udhcp 1.21.1")),
		layers.NewDHCPOption(layers.DHCPOptHostname, []byte("DCH-S150")))
	want := schemas.DHCPClient{Params: fnvOf(params), Vendor: fnvOf([]byte("udhcp 1.21.1")), Name: fnvOf([]byte("dch-s150"))}
	if got := decodeOne(t, full).DHCP; got != want {
		t.Errorf("fingerprint %+v, want %+v", got, want)
	}
	split := dhcpFrame(t, layers.NewDHCPOption(layers.DHCPOptParamsRequest, params[:3]),
		layers.NewDHCPOption(layers.DHCPOptHostname, []byte("ESP_07")),
		layers.NewDHCPOption(layers.DHCPOptParamsRequest, params[3:]),
		layers.NewDHCPOption(layers.DHCPOptHostname, []byte("AEFB")))
	if got := decodeOne(t, split).DHCP; got != (schemas.DHCPClient{Params: fnvOf(params), Name: fnvOf([]byte("esp"))}) {
		t.Errorf("split options: %+v", got)
	}
	// Cut inside the host name option: the IP and UDP lengths still say
	// the whole message, as a snap length leaves them.
	if got := decodeOne(t, full[:len(full)-6]).DHCP; !got.IsZero() {
		t.Errorf("a message cut short gave %+v", got)
	}
	// The address it asks for names it; a renewal names it in ciaddr.
	asks := dhcpFrame(t, layers.NewDHCPOption(layers.DHCPOptRequestIP, []byte{192, 168, 1, 77}))
	if got := decodeOne(t, asks).DHCP.RequestedAddr(); got != netip.MustParseAddr("192.168.1.77") {
		t.Errorf("a request for 192.168.1.77: requested %v", got)
	}
	renews := append([]byte(nil), full...)
	copy(renews[14+20+8+12:], []byte{10, 0, 0, 9})
	if got := decodeOne(t, renews).DHCP.RequestedAddr(); got != netip.MustParseAddr("10.0.0.9") {
		t.Errorf("a renewal from ciaddr 10.0.0.9: requested %v", got)
	}
	reply := append([]byte(nil), full...)
	reply[14+20+8] = 2 // BOOTREPLY
	if got := decodeOne(t, reply).DHCP; !got.IsZero() {
		t.Errorf("a BOOTREPLY gave %+v", got)
	}
}

// TestDHCPSentinel: on real captures, the fingerprints tell apart what
// tshark shows apart. The two Smarter appliances run one ESP8266 stack
// (one parameter list, names "ESP_07AEFB" and "ESP_06D902"), which the
// EdnetGateway's and Lightify's (1,3,28,6) are not; D-Link's sensor and
// siren share a list and differ in their model names.
func TestDHCPSentinel(t *testing.T) {
	files := sentinelFiles(t)
	fp := func(device string) schemas.DHCPClient {
		t.Helper()
		link, frames := readPcap(t, files[device][0])
		d := NewDecoder(sentinelHome)
		for i, fr := range frames {
			var p schemas.Packet
			if d.Decode(link, fr.data, fr.ci, uint64(i), &p) == nil && !p.DHCP.IsZero() {
				return p.DHCP
			}
		}
		t.Fatalf("%s: no DHCP client message in %s", device, filepath.Base(files[device][0]))
		return schemas.DHCPClient{}
	}
	esp := fnvOf([]byte{1, 3, 28, 6, 15, 44, 46, 47, 31, 33, 121, 43})
	coffee, kettle := fp("SmarterCoffee"), fp("iKettle2")
	if coffee.Params != esp || kettle.Params != esp || coffee.Name != fnvOf([]byte("esp")) || kettle.Name != coffee.Name {
		t.Errorf("Smarter appliances: %+v and %+v, want parameters %#x and the name \"esp\"", coffee, kettle, esp)
	}
	if gw := fp("EdnetGateway"); gw.Params != fnvOf([]byte{1, 3, 28, 6}) || gw.Params == esp {
		t.Errorf("EdnetGateway: %+v", gw)
	}
	sensor, siren := fp("D-LinkSensor"), fp("D-LinkSiren")
	if sensor.Params != siren.Params || sensor.Name != fnvOf([]byte("dch-s150")) || siren.Name != fnvOf([]byte("dch-s220")) {
		t.Errorf("D-Link sensor %+v and siren %+v: want one parameter list and the names dch-s150 and dch-s220", sensor, siren)
	}
}

// dhcp6Frame is a DHCPv6 client's message of type kind with the options
// given.
func dhcp6Frame(tb testing.TB, kind layers.DHCPv6MsgType, options ...layers.DHCPv6Option) []byte {
	m := &layers.DHCPv6{MsgType: kind, TransactionID: []byte{1, 2, 3}, Options: options}
	return build(tb, eth(devMAC, gwMAC, layers.EthernetTypeIPv6), ip6(dev6, cloud6, layers.IPProtocolUDP), udp(546, 547), m)
}

// fqdn is a client FQDN option's data: flags, then the name in labels.
func fqdn(labels ...string) []byte {
	b := []byte{0}
	for _, l := range labels {
		b = append(append(b, byte(len(l))), l...)
	}
	return append(b, 0)
}

// TestDHCP6Client: a DHCPv6 client's fingerprint is its option request
// option, vendor class and FQDN's first label, and that label names it as
// its DHCPv4 host name does; a server's message gives none.
func TestDHCP6Client(t *testing.T) {
	oro, vendor := []byte{0, 23, 0, 24, 0, 39}, []byte{0, 0, 0x01, 0x37, 0, 5, 'u', 'd', 'h', 'c', 'p'}
	opts := []layers.DHCPv6Option{layers.NewDHCPv6Option(layers.DHCPv6OptOro, oro), layers.NewDHCPv6Option(layers.DHCPv6OptVendorClass, vendor),
		layers.NewDHCPv6Option(layers.DHCPv6OptClientFQDN, fqdn("ESP_07AEFB", "home", "arpa"))}
	got := decodeOne(t, dhcp6Frame(t, layers.DHCPv6MsgTypeSolicit, opts...)).DHCP
	if want := (schemas.DHCPClient{Params: fnvOf(oro), Vendor: fnvOf(vendor), Name: fnvOf([]byte("esp"))}); got != want {
		t.Errorf("Solicit: fingerprint %+v, want %+v", got, want)
	}
	v4 := decodeOne(t, dhcpFrame(t, layers.NewDHCPOption(layers.DHCPOptHostname, []byte("ESP_06D902")))).DHCP
	if got.Name != v4.Name {
		t.Errorf("one name over DHCPv6 and DHCPv4: %#x and %#x", got.Name, v4.Name)
	}
	if got := decodeOne(t, dhcp6Frame(t, layers.DHCPv6MsgTypeReply, opts...)).DHCP; !got.IsZero() {
		t.Errorf("a server's Reply gave %+v", got)
	}
	cut := dhcp6Frame(t, layers.DHCPv6MsgTypeRequest, opts...)
	if got := decodeOne(t, cut[:len(cut)-3]).DHCP; !got.IsZero() {
		t.Errorf("a Request cut short gave %+v", got)
	}
}
