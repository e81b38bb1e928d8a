package homegen

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/google/gopacket/layers"

	"github.com/homemole/homemole/pipeline/campaign"
)

// device is a LAN host with its servers and the per-device constants of its
// behaviour (drawn once per home, so a device keeps its rhythm and message
// sizes across sessions the way real firmware does).
type device struct {
	*host
	servers map[string]*host
	period  time.Duration  // heartbeat or keepalive period
	size    map[string]int // fixed message sizes
	run     func(s *sim, d *device, h *home)
}

// home is the generated household: gateway, multicast groups, devices.
type home struct {
	lan     netip.Prefix
	gw      *host
	ssdp    *host // 239.255.255.250:1900
	mdns    *host // 224.0.0.251:5353
	devices []*device
}

// Stacks of the devices and servers.
var (
	lwip    = stack{ttl: 255, window: 5840, mss: 1460, synOpts: "mss", portLo: 49152, portHi: 65535}
	rtos    = stack{ttl: 64, window: 2920, mss: 1460, synOpts: "mss", portLo: 1024, portHi: 5000}
	linux   = stack{ttl: 64, window: 29200, mss: 1460, synOpts: "linux", portLo: 32768, portHi: 60999}
	busybox = stack{ttl: 64, window: 14600, mss: 1460, synOpts: "bsd", portLo: 32768, portHi: 60999}
	android = stack{ttl: 64, window: 65535, mss: 1460, synOpts: "linux", portLo: 32768, portHi: 60999}
)

// publicFirstOctets are first octets of public address space servers are
// drawn from; none is private, shared or reserved.
var publicFirstOctets = []byte{3, 13, 18, 23, 34, 35, 44, 52, 54, 99, 104, 142, 151, 157, 185, 199}

// layout draws a home: its addresses, servers and per-device constants,
// all from one generator so that a seed always gives the same home.
type layout struct {
	rng  *rand.Rand
	h    *home
	used map[byte]bool
	ntp  *host
}

func (l *layout) lanIP() netip.Addr {
	for {
		b := byte(20 + l.rng.IntN(230))
		if !l.used[b] {
			l.used[b] = true
			return netip.AddrFrom4([4]byte{192, 168, 1, b})
		}
	}
}

// server draws a public server with a round trip in [rttLo, rttHi).
func (l *layout) server(name string, rttLo, rttHi time.Duration) *host {
	rng := l.rng
	ip := [4]byte{publicFirstOctets[rng.IntN(len(publicFirstOctets))], byte(rng.IntN(256)), byte(rng.IntN(256)), byte(1 + rng.IntN(254))}
	// Servers are mostly Linux (initial TTL 64), some Windows (128),
	// seen 6 to 20 hops away.
	ttl := 64
	if rng.IntN(5) == 0 {
		ttl = 128
	}
	return &host{name: name, ip: netip.AddrFrom4(ip),
		stack: stack{ttl: uint8(ttl - 6 - rng.IntN(15)), window: []uint16{65535, 64240, 26847, 28960}[rng.IntN(4)], mss: []uint16{1460, 1440, 1380}[rng.IntN(3)]},
		rtt:   rttLo + time.Duration(rng.Int64N(int64(rttHi-rttLo)))}
}

// dev adds a device to the home.
func (l *layout) dev(name, category string, mac net.HardwareAddr, st stack, run func(*sim, *device, *home)) *device {
	d := &device{host: &host{name: name, mac: mac, ip: l.lanIP(), stack: st, category: category},
		servers: map[string]*host{"ntp": l.ntp}, size: map[string]int{}, run: run}
	l.h.devices = append(l.h.devices, d)
	return d
}

func (l *layout) between(lo, hi int) int { return lo + l.rng.IntN(hi-lo+1) }

func (l *layout) secs(lo, hi int) time.Duration {
	return time.Duration(l.between(lo, hi)) * time.Second
}

// demoBuilders add the demo home's devices.
var demoBuilders = map[string]func(*layout){
	"smart-plug": addSmartPlug, "smart-plug-mqtt": addMQTTPlug, "camera": addCamera,
	"voice-assistant": addVoice, "hub": addHub, "story-teller": addStoryTeller, "phone": addPhone,
}

// classBuilders add one device of each class to a home being laid out.
var classBuilders = mergeBuilders(demoBuilders, paperBuilders)

func mergeBuilders(sets ...map[string]func(*layout)) map[string]func(*layout) {
	out := map[string]func(*layout){}
	for _, set := range sets {
		for name, b := range set {
			out[name] = b
		}
	}
	return out
}

// DefaultClasses are the device classes of the demo home, in the order they
// are laid out (the order is part of what a seed means).
var DefaultClasses = []string{"smart-plug", "smart-plug-mqtt", "camera", "voice-assistant", "hub", "story-teller", "phone"}

// Classes lists every device class Generate knows, sorted.
func Classes() []string {
	out := make([]string, 0, len(classBuilders))
	for name := range classBuilders {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

func newHome(seed uint64, classes []string) (*home, error) {
	if len(classes) == 0 {
		classes = DefaultClasses
	}
	seen := map[string]bool{}
	for _, c := range classes {
		if classBuilders[c] == nil {
			return nil, fmt.Errorf("device class %q: want one of %s", c, strings.Join(Classes(), ", "))
		}
		if seen[c] {
			return nil, fmt.Errorf("device class %q given twice", c)
		}
		seen[c] = true
	}
	rng := rand.New(rand.NewPCG(seed, layoutStream))
	lan := netip.MustParsePrefix("192.168.1.0/24")
	h := &home{
		lan: lan,
		gw: &host{name: "gateway", mac: vendorMAC(rng, 0xa0, 0x63, 0x91), ip: netip.AddrFrom4([4]byte{192, 168, 1, 1}),
			stack: stack{ttl: 64, window: 65535, mss: 1460}, rtt: time.Millisecond},
		ssdp: &host{mac: net.HardwareAddr{0x01, 0x00, 0x5e, 0x7f, 0xff, 0xfa}, ip: netip.AddrFrom4([4]byte{239, 255, 255, 250}), stack: stack{ttl: 4}},
		mdns: &host{mac: net.HardwareAddr{0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb}, ip: netip.AddrFrom4([4]byte{224, 0, 0, 251}), stack: stack{ttl: 255}},
	}
	l := &layout{rng: rng, h: h, used: map[byte]bool{1: true}}
	l.ntp = l.server("ntp.example", 10*time.Millisecond, 60*time.Millisecond)
	for _, c := range classes {
		classBuilders[c](l)
	}
	return h, nil
}

func addSmartPlug(l *layout) {
	plug := l.dev("smart-plug", campaign.CategoryIoT, vendorMAC(l.rng, 0x50, 0xc7, 0xbf), lwip, runPlugTLS)
	plug.servers["cloud"] = l.server("devs.plug-cloud.example", 30*time.Millisecond, 90*time.Millisecond)
	plug.period = l.secs(30, 60)
	plug.size["hello"], plug.size["beat"], plug.size["beatAck"] = l.between(170, 200), l.between(100, 130), l.between(80, 95)
	plug.size["state"], plug.size["cmd"] = l.between(140, 160), l.between(170, 190)
}

func addMQTTPlug(l *layout) {
	mqttPlug := l.dev("smart-plug-mqtt", campaign.CategoryIoT, vendorMAC(l.rng, 0xd8, 0xf1, 0x5b), rtos, runPlugMQTT)
	mqttPlug.servers["broker"] = l.server("mqtt.switch-cloud.example", 40*time.Millisecond, 150*time.Millisecond)
	mqttPlug.period = l.secs(50, 70)
}

func addCamera(l *layout) {
	cam := l.dev("camera", campaign.CategoryIoT, vendorMAC(l.rng, 0x2c, 0xaa, 0x8e), linux, runCamera)
	cam.servers["dns"] = &host{name: "public-resolver", ip: netip.AddrFrom4([4]byte{8, 8, 8, 8}), stack: stack{ttl: 121}, rtt: 12 * time.Millisecond}
	cam.servers["api"] = l.server("api.cam-cloud.example", 20*time.Millisecond, 80*time.Millisecond)
	cam.servers["relay"] = l.server("relay.cam-cloud.example", 20*time.Millisecond, 80*time.Millisecond)
	cam.period = l.secs(9, 12)
	cam.size["keepalive"], cam.size["beat"], cam.size["beatAck"] = l.between(40, 56), l.between(150, 180), l.between(120, 140)
	cam.size["relayPort"] = l.between(10000, 20000)
}

func addVoice(l *layout) {
	voice := l.dev("voice-assistant", campaign.CategoryIoT, vendorMAC(l.rng, 0x68, 0x54, 0xfd), linux, runVoice)
	voice.servers["avs"] = l.server("avs.voice-cloud.example", 20*time.Millisecond, 60*time.Millisecond)
	for i := range 3 {
		voice.servers[fmt.Sprintf("media%d", i)] = l.server(fmt.Sprintf("media%d.voice-cdn.example", i), 10*time.Millisecond, 50*time.Millisecond)
	}
	voice.period = l.secs(28, 32)
}

func addHub(l *layout) {
	hub := l.dev("hub", campaign.CategoryIoT, vendorMAC(l.rng, 0x00, 0x17, 0x88), busybox, runHub)
	hub.servers["broker"] = l.server("broker.hub-cloud.example", 30*time.Millisecond, 100*time.Millisecond)
	hub.period = l.secs(55, 65)
	hub.size["report"] = l.between(150, 200)
}

func addStoryTeller(l *layout) {
	story := l.dev("story-teller", campaign.CategoryIoT, vendorMAC(l.rng, 0x24, 0x0a, 0xc4), rtos, runStoryTeller)
	story.servers["content"] = l.server("content.story-cloud.example", 30*time.Millisecond, 120*time.Millisecond)
	story.period = l.secs(290, 310)
	story.size["poll"] = l.between(180, 220)
}

func addPhone(l *layout) {
	phone := l.dev("phone", campaign.CategoryNonIoT, randomMAC(l.rng), android, runPhone)
	phone.servers["push"] = l.server("push.phone-os.example", 20*time.Millisecond, 60*time.Millisecond)
	for i, name := range []string{"www.news", "cdn.news", "api.social", "img.social", "www.shop", "static.shop", "video.stream", "www.search", "mail.web", "maps.web"} {
		srv := l.server(name+".example", 8*time.Millisecond, 90*time.Millisecond)
		srv.quic = i%3 != 2 // two thirds of the sites also speak HTTP/3
		phone.servers[fmt.Sprintf("web%d", i)] = srv
	}
	phone.period = l.secs(200, 280)
}

// runStoryTeller: a children's story player (the paper's "story teller"):
// plain-HTTP polls of its content server every five minutes, and now and
// then a story, downloaded whole as one large HTTP response.
func runStoryTeller(s *sim, d *device, h *home) {
	srv := d.servers["content"]
	poll := fmt.Sprintf("POST /api/v1/poll HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n\r\n", srv.name)
	for t := s.uniform(time.Second, d.period); t < s.dur; t += s.jitter(d.period, 0.03) {
		t0 := s.dnsLookup(t, d.host, h.gw, srv.name, srv.ip)
		c, t1 := s.dial(t0, d.host, srv, 80)
		req := append([]byte(poll), s.bytes(max(0, d.size["poll"]-len(poll)))...)
		t1 = c.exchange(t1, req, []byte("HTTP/1.1 204 No Content\r\nServer: story\r\n\r\n"), s.uniform(5*time.Millisecond, 20*time.Millisecond))
		c.close(t1+s.uniform(10*time.Millisecond, 100*time.Millisecond), true)
	}
	for a := s.exp(15 * time.Minute); a < s.dur; a += s.exp(20 * time.Minute) {
		a0 := s.dnsLookup(a, d.host, h.gw, srv.name, srv.ip)
		c, a1 := s.dial(a0, d.host, srv, 80)
		get := fmt.Sprintf("GET /stories/%04d.mp3 HTTP/1.1\r\nHost: %s\r\nRange: bytes=0-\r\n\r\n", s.between(1, 2000), srv.name)
		n := s.between(100_000, 400_000) // a few minutes of low-bitrate speech
		head := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\nContent-Length: %d\r\n\r\n", n)
		a1 = c.exchange(a1, []byte(get), append([]byte(head), s.bytes(1200)...), s.uniform(20*time.Millisecond, 80*time.Millisecond))
		a1 = c.send(a1, false, s.bytes(n), s.uniform(150*time.Microsecond, 400*time.Microsecond))
		c.close(a1+s.uniform(time.Second, 3*time.Second), true)
	}
}

// layoutStream is the PCG stream of the home's layout; sessions use 1, 2, ...
const layoutStream = 0x686f6d65

// vendorMAC is an address under a fixed OUI, so a device's MAC looks like
// its maker's.
func vendorMAC(rng *rand.Rand, a, b, c byte) net.HardwareAddr {
	return net.HardwareAddr{a, b, c, byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256))}
}

// randomMAC is a locally administered unicast address, as phones use when
// they randomise their MAC per network.
func randomMAC(rng *rand.Rand) net.HardwareAddr {
	m := net.HardwareAddr{byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256))}
	m[0] = m[0]&^1 | 2
	return m
}

// runPlugTLS: a smart plug on one long-lived TLS connection to its cloud,
// sending a fixed-size heartbeat every period and, rarely, answering an
// on/off command pushed by the cloud.
func runPlugTLS(s *sim, d *device, h *home) {
	cloud := d.servers["cloud"]
	t := s.uniform(300*time.Millisecond, 5*time.Second)
	t = s.dnsLookup(t, d.host, h.gw, cloud.name, cloud.ip)
	s.ntpExchange(t+s.uniform(10*time.Millisecond, 100*time.Millisecond), d.host, d.servers["ntp"], 3)
	c, t := s.dial(t+s.uniform(100*time.Millisecond, 300*time.Millisecond), d.host, cloud, 443)
	t = c.tlsHandshake(t, d.size["hello"], s.between(2900, 3300), 126)
	t = c.exchange(t, s.tlsRecord(23, 229), s.tlsRecord(23, 101), s.uniform(10*time.Millisecond, 40*time.Millisecond))
	// One connection carries everything, so its messages are sent one after
	// the other: a message due while another is in flight waits (free).
	beat, event, free := t+d.period, t+s.exp(4*time.Minute), t
	for beat < s.dur || event < s.dur {
		if event < beat {
			s.interaction(max(event, free), d, InteractionSwitch)
			free = c.push(max(event, free), s.tlsRecord(23, d.size["cmd"]), s.tlsRecord(23, d.size["state"]))
			event += s.exp(4 * time.Minute)
			continue
		}
		free = c.exchange(max(beat, free), s.tlsRecord(23, d.size["beat"]), s.tlsRecord(23, d.size["beatAck"]), s.uniform(5*time.Millisecond, 30*time.Millisecond))
		beat += s.jitter(d.period, 0.01)
	}
}

// MQTT 3.1.1 control packets, sized to what the device sends.
func mqttPacket(typ byte, body []byte) []byte {
	// Remaining length, 7 bits per byte.
	out := []byte{typ}
	for n := len(body); ; {
		b := byte(n & 0x7f)
		if n >>= 7; n > 0 {
			out = append(out, b|0x80)
			continue
		}
		out = append(out, b)
		break
	}
	return append(out, body...)
}

func mqttString(b []byte, s string) []byte {
	return append(append(b, byte(len(s)>>8), byte(len(s))), s...)
}

func mqttConnect(clientID string, keepalive time.Duration) []byte {
	body := mqttString(nil, "MQTT")
	body = append(body, 4, 0x02, byte(int(keepalive.Seconds())>>8), byte(int(keepalive.Seconds())))
	return mqttPacket(0x10, mqttString(body, clientID))
}

func mqttPublish(topic, payload string) []byte {
	return mqttPacket(0x30, append(mqttString(nil, topic), payload...))
}

func mqttSubscribe(id uint16, topic string) []byte {
	return mqttPacket(0x82, append(mqttString([]byte{byte(id >> 8), byte(id)}, topic), 1))
}

// runPlugMQTT: a plug that speaks MQTT in the clear: 2-byte pings every
// keepalive, telemetry every five minutes, commands now and then.
func runPlugMQTT(s *sim, d *device, h *home) {
	broker := d.servers["broker"]
	id := fmt.Sprintf("sw-%x", []byte(d.mac[3:]))
	t := s.uniform(time.Second, 8*time.Second)
	t = s.dnsLookup(t, d.host, h.gw, broker.name, broker.ip)
	c, t := s.dial(t+s.uniform(50*time.Millisecond, 200*time.Millisecond), d.host, broker, 1883)
	t = c.exchange(t, mqttConnect(id, d.period), []byte{0x20, 0x02, 0x00, 0x00}, s.uniform(2*time.Millisecond, 20*time.Millisecond))
	t = c.exchange(t+s.uniform(time.Millisecond, 10*time.Millisecond), mqttSubscribe(1, "cmnd/"+id+"/POWER"), []byte{0x90, 0x03, 0x00, 0x01, 0x01}, 5*time.Millisecond)
	ping, report, cmd, free := t+d.period, t+s.uniform(time.Minute, 5*time.Minute), t+s.exp(5*time.Minute), t
	for ping < s.dur || report < s.dur || cmd < s.dur {
		switch next := min(ping, report, cmd); next {
		case ping:
			free = c.exchange(max(ping, free), []byte{0xc0, 0x00}, []byte{0xd0, 0x00}, time.Millisecond)
			ping += s.jitter(d.period, 0.005)
		case report:
			watts := 3 + s.rng.Float64()*40
			msg := fmt.Sprintf(`{"Time":"%s","ENERGY":{"Power":%.1f,"Voltage":%d,"Current":%.3f}}`,
				s.wall.Add(report).Format("2006-01-02T15:04:05"), watts, s.between(228, 234), watts/230)
			free = c.send(max(report, free), true, mqttPublish("tele/"+id+"/SENSOR", msg), 0)
			report += s.jitter(5*time.Minute, 0.02)
		default:
			state := []string{"ON", "OFF"}[s.rng.IntN(2)]
			free = c.push(max(cmd, free), mqttPublish("cmnd/"+id+"/POWER", state), mqttPublish("stat/"+id+"/POWER", state))
			cmd += s.exp(5 * time.Minute)
		}
	}
}

// runCamera: a camera holding a UDP session with its relay (keepalives
// every few seconds) and a TLS control connection, uploading a UDP video
// burst whenever it sees motion.
func runCamera(s *sim, d *device, h *home) {
	resolver, api, relay := d.servers["dns"], d.servers["api"], d.servers["relay"]
	t := s.uniform(500*time.Millisecond, 4*time.Second)
	t = s.dnsLookup(t, d.host, resolver, api.name, api.ip)
	t = s.dnsLookup(t+s.uniform(time.Millisecond, 5*time.Millisecond), d.host, resolver, relay.name, relay.ip)
	s.ntpExchange(t, d.host, d.servers["ntp"], 4)
	c, ct := s.dial(t+s.uniform(10*time.Millisecond, 50*time.Millisecond), d.host, api, 443)
	ct = c.tlsHandshake(ct, 290, s.between(3800, 4400), 93)
	c.exchange(ct, s.tlsRecord(23, 350), s.tlsRecord(23, 212), 30*time.Millisecond)

	port, relayPort := uint16(d.size["relayPort"]), uint16(32100)
	keepalive := func(at time.Duration) {
		s.udpExchange(at, d.host, relay, port, relayPort, s.tagged(d.size["keepalive"], 0xf1, 0xe0), s.tagged(d.size["keepalive"], 0xf1, 0xe1))
	}
	for k := t + s.uniform(0, d.period); k < s.dur; k += s.jitter(d.period, 0.03) {
		keepalive(k)
	}
	beat := beats{first: ct + time.Minute, period: time.Minute, frac: 0.02, send: func(at time.Duration) time.Duration {
		return c.exchange(at, s.tlsRecord(23, d.size["beat"]), s.tlsRecord(23, d.size["beatAck"]), s.uniform(5*time.Millisecond, 20*time.Millisecond))
	}}
	s.beatsAmong(ct, beat, t+10*time.Second+s.exp(100*time.Second), func(due, at time.Duration) (time.Duration, time.Duration) {
		end := c.exchange(at, s.tlsRecord(23, s.between(400, 440)), s.tlsRecord(23, 90), s.uniform(20*time.Millisecond, 60*time.Millisecond))
		cameraBurst(s, d, relay, port, relayPort, at+s.uniform(50*time.Millisecond, 200*time.Millisecond), s.uniform(8*time.Second, 20*time.Second))
		return end, due + s.uniform(20*time.Second, 40*time.Second) + s.exp(80*time.Second)
	})
}

// cameraBurst streams video frames to the relay: a key frame of many full
// datagrams every two seconds, small delta frames in between, receiver
// reports coming back twice a second.
func cameraBurst(s *sim, d *device, relay *host, port, relayPort uint16, at, dur time.Duration) {
	const fps = 15
	frame := time.Second / fps
	for i := 0; time.Duration(i)*frame < dur; i++ {
		ft := at + time.Duration(i)*frame + s.uniform(0, 3*time.Millisecond)
		n, size := 1+s.rng.IntN(2), func() int { return s.between(200, 1100) }
		if i%(2*fps) == 0 {
			n, size = s.between(8, 12), func() int { return s.between(1300, 1400) }
		}
		for k := range n {
			b := s.bytes(size())
			b[0] = 0x80 // RTP version 2
			s.udp(ft+time.Duration(k)*400*time.Microsecond, d.host, relay, port, relayPort, b)
		}
		if i%(fps/2) == 0 {
			// RTCP receiver report: header, sender SSRC, one report block.
			r := s.bytes(32)
			r[0], r[1], r[2], r[3] = 0x81, 201, 0, 7
			s.udp(ft+relay.rtt, relay, d.host, relayPort, port, r)
		}
	}
}

// runVoice: a voice assistant: one TLS connection to its cloud with a ping
// every half minute, NTP every few minutes, and on each interaction a voice
// upload, a spoken answer and sometimes a media fetch from a CDN.
func runVoice(s *sim, d *device, h *home) {
	avs := d.servers["avs"]
	t := s.uniform(200*time.Millisecond, 3*time.Second)
	t = s.dnsLookup(t, d.host, h.gw, avs.name, avs.ip)
	c, t := s.dial(t+s.uniform(time.Millisecond, 10*time.Millisecond), d.host, avs, 443)
	t = c.tlsHandshake(t, 517, s.between(4200, 4800), 80)
	t = c.exchange(t, s.tlsRecord(23, 620), s.tlsRecord(23, 380), 40*time.Millisecond)
	for n := t + s.uniform(0, time.Minute); n < s.dur; n += s.jitter(5*time.Minute, 0.1) {
		n = s.dnsLookup(n, d.host, h.gw, d.servers["ntp"].name, d.servers["ntp"].ip)
		s.ntpExchange(n, d.host, d.servers["ntp"], 4)
	}
	ping := beats{first: t + d.period, period: d.period, frac: 0.02, send: func(at time.Duration) time.Duration {
		return c.exchange(at, s.tlsRecord(23, 39), s.tlsRecord(23, 39), s.uniform(time.Millisecond, 5*time.Millisecond))
	}}
	s.beatsAmong(t, ping, t+s.exp(140*time.Second), func(_, at time.Duration) (time.Duration, time.Duration) {
		// The spoken request goes up in small audio chunks, one every 40-60 ms.
		end := c.sendChunks(at, true, s.appRecords(25, 60, 320, 660), s.uniform(40*time.Millisecond, 60*time.Millisecond))
		answer := end + s.uniform(300*time.Millisecond, 800*time.Millisecond)
		free := c.send(answer, false, s.tlsStream(s.between(8_000, 40_000)), s.uniform(100*time.Microsecond, 300*time.Microsecond))
		if s.rng.IntN(10) < 3 {
			media := d.servers[fmt.Sprintf("media%d", s.rng.IntN(3))]
			m := s.dnsLookup(free+s.uniform(50*time.Millisecond, 300*time.Millisecond), d.host, h.gw, media.name, media.ip)
			mc, m := s.dial(m, d.host, media, 443)
			m = mc.tlsHandshake(m, 517, s.between(3000, 5000), 80)
			m = mc.exchange(m, s.tlsRecord(23, s.between(200, 600)), s.tlsRecord(23, s.between(300, 900)), s.uniform(10*time.Millisecond, 50*time.Millisecond))
			m = mc.send(m+s.uniform(time.Millisecond, 10*time.Millisecond), false, s.tlsStream(s.between(10_000, 120_000)), s.uniform(80*time.Microsecond, 200*time.Microsecond))
			mc.close(m+s.uniform(time.Second, 5*time.Second), true)
		}
		return free, free + s.uniform(5*time.Second, 15*time.Second) + s.exp(140*time.Second)
	})
}

// runHub: a smart-home hub: MQTT over TLS on 8883 with keepalives and
// sensor reports, and the LAN chatter of a UPnP/Bonjour device (SSDP
// NOTIFY, mDNS announcements, answers to M-SEARCH).
func runHub(s *sim, d *device, h *home) {
	broker := d.servers["broker"]
	t := s.uniform(time.Second, 6*time.Second)
	t = s.dnsLookup(t, d.host, h.gw, broker.name, broker.ip)
	s.ntpExchange(t+s.uniform(time.Millisecond, 50*time.Millisecond), d.host, d.servers["ntp"], 4)
	c, t := s.dial(t+s.uniform(100*time.Millisecond, 500*time.Millisecond), d.host, broker, 8883)
	t = c.tlsHandshake(t, 240, s.between(3600, 4000), 75)
	t = c.exchange(t, s.tlsRecord(23, 120), s.tlsRecord(23, 35), 10*time.Millisecond)
	ping := beats{first: t + d.period, period: d.period, frac: 0.005, send: func(at time.Duration) time.Duration {
		return c.exchange(at, s.tlsRecord(23, 31), s.tlsRecord(23, 31), s.uniform(time.Millisecond, 5*time.Millisecond))
	}}
	s.beatsAmong(t, ping, t+s.exp(45*time.Second), func(due, at time.Duration) (time.Duration, time.Duration) {
		end := c.exchange(at, s.tlsRecord(23, d.size["report"]+s.between(-20, 60)), s.tlsRecord(23, 35), s.uniform(2*time.Millisecond, 10*time.Millisecond))
		return end, due + s.exp(45*time.Second)
	})

	uuid := fmt.Sprintf("2f402f80-da50-11e1-9b23-%x", []byte(d.mac))
	for n := s.uniform(0, 30*time.Second); n < s.dur; n += s.jitter(60*time.Second, 0.02) {
		for i, nt := range []string{"upnp:rootdevice", "uuid:" + uuid, "urn:schemas-upnp-org:device:basic:1"} {
			usn := "uuid:" + uuid
			if !strings.HasPrefix(nt, "uuid:") {
				usn += "::" + nt
			}
			msg := "NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nCACHE-CONTROL: max-age=100\r\n" +
				"LOCATION: http://" + d.ip.String() + ":80/description.xml\r\nSERVER: Linux/3.14.0 UPnP/1.0 IpBridge/1.50.0\r\n" +
				"NTS: ssdp:alive\r\nNT: " + nt + "\r\nUSN: " + usn + "\r\n\r\n"
			s.udp(n+time.Duration(i)*s.uniform(80*time.Millisecond, 120*time.Millisecond), d.host, h.ssdp, 1900, 1900, []byte(msg))
		}
	}
	for n := s.uniform(0, 2*time.Minute); n < s.dur; n += s.jitter(2*time.Minute, 0.05) {
		name := fmt.Sprintf("hub-%02x%02x.local", d.mac[4], d.mac[5])
		ans := layers.DNSResourceRecord{Name: []byte(name), Type: layers.DNSTypeA, Class: layers.DNSClassIN | 0x8000, TTL: 120, IP: d.ip.AsSlice()}
		s.udp(n, d.host, h.mdns, 5353, 5353, dnsBytes(s, &layers.DNS{QR: true, AA: true, Answers: []layers.DNSResourceRecord{ans}}))
	}
}

// pushChannel is a phone's or tablet's push connection (port 5228, as
// Google's): opened soon after the session starts and kept alive by a
// small record each way every d.period.
func pushChannel(s *sim, d *device, h *home, push *host) {
	t := s.uniform(100*time.Millisecond, 10*time.Second)
	t = s.dnsLookup(t, d.host, h.gw, push.name, push.ip)
	c, t := s.dial(t, d.host, push, 5228)
	t = c.tlsHandshake(t, 517, s.between(3000, 3600), 80)
	for p := t + s.uniform(0, d.period); p < s.dur; p += s.jitter(d.period, 0.05) {
		c.exchange(p, s.tlsRecord(23, 31), s.tlsRecord(23, 31), s.uniform(time.Millisecond, 10*time.Millisecond))
	}
}

// runPhone: the non-IoT background: a phone alternating between idle (only
// its push connection) and browsing, each page load a few DNS lookups
// followed by HTTPS or QUIC fetches of widely varying size.
func runPhone(s *sim, d *device, h *home) {
	pushChannel(s, d, h, d.servers["push"])
	for a := s.exp(time.Minute); a < s.dur; {
		active := s.exp(3 * time.Minute)
		for p := a + s.exp(5*time.Second); p < a+active && p < s.dur; p += s.exp(20 * time.Second) {
			pageLoad(s, d, h, p)
			if s.rng.IntN(12) == 0 {
				mSearch(s, d, h, p)
			}
		}
		a += active + s.exp(2*time.Minute)
	}
}

func pageLoad(s *sim, d *device, h *home, at time.Duration) {
	for range s.between(1, 3) {
		srv := d.servers[fmt.Sprintf("web%d", s.rng.IntN(10))]
		t := at + s.uniform(0, 300*time.Millisecond)
		if s.rng.IntN(10) < 7 { // the rest is in the phone's DNS cache
			t = s.dnsLookup(t, d.host, h.gw, srv.name, srv.ip)
		}
		size := int(1000 * (5 + s.rng.ExpFloat64()*60)) // mostly tens of kB, sometimes hundreds
		if srv.quic && s.rng.IntN(10) < 6 {
			quicFetch(s, d, srv, t, size)
			continue
		}
		c, t := s.dial(t, d.host, srv, 443)
		t = c.tlsHandshake(t, 517, s.between(2500, 5000), 80)
		t = c.exchange(t, s.tlsRecord(23, s.between(300, 900)), s.tlsRecord(23, s.between(200, 600)), s.uniform(20*time.Millisecond, 200*time.Millisecond))
		t = c.send(t+s.uniform(time.Millisecond, 20*time.Millisecond), false, s.tlsStream(size), s.uniform(50*time.Microsecond, 150*time.Microsecond))
		c.close(t+s.uniform(5*time.Second, 30*time.Second), s.rng.IntN(2) == 0)
	}
}

// quicFetch is an HTTP/3 fetch: padded Initial packets both ways, then
// short-header packets, the client acknowledging every few.
func quicFetch(s *sim, d *device, srv *host, at time.Duration, size int) {
	port := s.ephemeral(d.host)
	long := func(n int) []byte {
		b := s.bytes(n)
		b[0] = 0xc0 | b[0]&0x0f
		b[1], b[2], b[3], b[4] = 0, 0, 0, 1
		return b
	}
	short := func(n int) []byte {
		b := s.bytes(n)
		b[0] = 0x40 | b[0]&0x3f
		return b
	}
	s.udp(at, d.host, srv, port, 443, long(1252))
	at += srv.rtt
	s.udp(at, srv, d.host, 443, port, long(1252))
	s.udp(at+100*time.Microsecond, srv, d.host, 443, port, long(s.between(900, 1252)))
	at += s.uniform(time.Millisecond, 3*time.Millisecond)
	s.udp(at, d.host, srv, port, 443, long(1252))
	s.udp(at+200*time.Microsecond, d.host, srv, port, 443, short(s.between(80, 400)))
	at += srv.rtt + s.uniform(5*time.Millisecond, 80*time.Millisecond)
	gap := s.uniform(60*time.Microsecond, 200*time.Microsecond)
	for i := 0; size > 0; i++ {
		n := min(size, s.between(1200, 1350))
		s.udp(at, srv, d.host, 443, port, short(n))
		size -= n
		if i%3 == 2 || size <= 0 {
			s.udp(at+s.uniform(200*time.Microsecond, 2*time.Millisecond), d.host, srv, port, 443, short(s.between(38, 60)))
		}
		at += gap
	}
}

// mSearch is an app on the phone looking for UPnP devices; the hub answers.
func mSearch(s *sim, d *device, h *home, at time.Duration) {
	port := s.ephemeral(d.host)
	msg := []byte("M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\nST: ssdp:all\r\n\r\n")
	s.udp(at, d.host, h.ssdp, port, 1900, msg)
	s.udp(at+s.uniform(100*time.Millisecond, 300*time.Millisecond), d.host, h.ssdp, port, 1900, msg)
	for _, dev := range h.devices {
		if dev.name != "hub" {
			continue
		}
		reply := "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=100\r\nEXT:\r\nLOCATION: http://" + dev.ip.String() +
			":80/description.xml\r\nSERVER: Linux/3.14.0 UPnP/1.0 IpBridge/1.50.0\r\nST: upnp:rootdevice\r\nUSN: uuid:hub::upnp:rootdevice\r\n\r\n"
		s.udp(at+s.uniform(10*time.Millisecond, time.Second), dev.host, d.host, 1900, port, []byte(reply))
	}
}
