package homegen

// The HomeMole paper's household (seeds/004, Section 3 and Table 2): ten
// IoT devices (three voice assistants, a hub, two cameras, three smart plugs
// and a story teller) and non-IoT phones and tablets as background.
//
// What comes from the paper, and only this:
//   - the device list and kinds (Table 2) and each device's maker's MAC
//     prefix (Table 2's MACs, first three bytes);
//   - the protocol mix (Table 1): Echo Dot, Google Home and Tmall almost all
//     TCP with 15 %, 27 % and 21 % TLS, Tmall 5.5 % HTTP, Google Home 1.5 %
//     UDP; the 360 camera 99.9 % UDP behind the gateway; the Orvibo plug TCP
//     without TLS; the Broadlink plug and the Xiaomi hub UDP; the TP-Link plug
//     TCP with about half the packets TLS;
//   - heartbeats (Section 3.1): Echo Dot a 95-byte TLS packet every 30 s,
//     Google Home two TLS packets of 135 and 104 bytes every 60 s;
//   - Section 4.4: the Orvibo plug's repeated three-packet TCP sequence of
//     224, 54 and 240 bytes within two seconds; the 360 camera's frequent
//     224-byte UDP packets; Echo Dot's answers in 1388-byte packets and
//     Google Home's in TLS packets of 108 and 105 bytes, both acknowledged
//     by 66-byte packets; the Xiaomi devices' 54-byte TCP packets;
//   - that the three plugs and the hub are sparse (Section 4.1, Dataset-Ind:
//     they fall short of 5,000 windows) and voice assistants and cameras
//     are the high-volume devices.
//
// Everything else is ours, chosen to be plausible, not measured: server
// ports other than 443/80/53/123 (the TP-Link cloud's 50443, Orvibo's
// 10001, Broadlink's 16384, Xiaomi's miIO 8053, the 360 relay's 7000, STUN
// 3478), every period the paper does not state, message sizes other than
// the ones above, burst lengths and rates, interaction rates and all
// round-trip times. All packet sizes the paper gives are whole frames
// (Ethernet header included), as the paper's "frame length" feature is;
// frames shorter than Ethernet's 60-byte minimum come out padded to it, as
// a tap on the wire sees them, so the paper's 54-byte bare ACKs are 60
// bytes here.

import (
	"fmt"
	"slices"
	"time"

	"github.com/homemole/homemole/pipeline/campaign"
)

// Households Generate knows.
const (
	HouseholdDemo  = "demo"
	HouseholdPaper = "paper"
)

// PaperIoT are the paper's ten IoT devices (Table 2) as device classes, in
// the paper's Table 4 column order.
var PaperIoT = []string{
	"echo-dot", "google-home", "tmall-assistant", "xiaomi-hub", "360-camera",
	"tplink-plug", "orvibo-plug", "mitu-story", "xiaobai-camera", "broadlink-plug",
}

// PaperNonIoT is the non-IoT background of the paper household: the
// paper's four phones and tablets, reduced to a phone and a tablet.
var PaperNonIoT = []string{"phone", "tablet"}

// HouseholdClasses lists the device classes of a household.
func HouseholdClasses(name string) ([]string, error) {
	switch name {
	case "", HouseholdDemo:
		return slices.Clone(DefaultClasses), nil
	case HouseholdPaper:
		return append(append([]string(nil), PaperIoT...), PaperNonIoT...), nil
	}
	return nil, fmt.Errorf("household %q: want %s or %s", name, HouseholdDemo, HouseholdPaper)
}

var paperBuilders = map[string]func(*layout){
	"echo-dot":        addEchoDot,
	"google-home":     addGoogleHome,
	"tmall-assistant": addTmall,
	"xiaomi-hub":      addXiaomiHub,
	"360-camera":      add360Camera,
	"xiaobai-camera":  addXiaobaiCamera,
	"tplink-plug":     addTplinkPlug,
	"orvibo-plug":     addOrviboPlug,
	"broadlink-plug":  addBroadlinkPlug,
	"mitu-story":      addMituStory,
	"tablet":          addTablet,
}

// Stacks of the paper household's devices that the demo home does not have.
var (
	// aliOS: Tmall's Linux without TCP timestamps.
	aliOS = stack{ttl: 64, window: 43690, mss: 1460, synOpts: "bsd", portLo: 40000, portHi: 60999}
	// esp: the ESP/RTOS stacks of the cheap plugs and the story teller.
	esp = stack{ttl: 128, window: 5744, mss: 1436, synOpts: "mss", portLo: 10000, portHi: 20000}
)

// frameTLS is a TLS record sized so that its TCP segment on conn c is a
// frame of exactly n bytes.
func (c *conn) frameTLS(n int) []byte {
	return c.s.tlsRecord(23, n-c.overhead())
}

// overhead is the Ethernet, IP and TCP header bytes of this connection's
// data segments.
func (c *conn) overhead() int {
	if c.ts {
		return 66
	}
	return 54
}

// put sends one data segment (PSH) in direction up, without its ACK.
func (c *conn) put(at time.Duration, up bool, payload []byte) {
	c.segment(at, up, "PA", payload, nil)
	c.bump(up, uint32(len(payload)))
}

// udpFrame is a payload for a UDP datagram that is a frame of n bytes.
func udpFrame(s *sim, n int) []byte { return s.bytes(max(0, n-42)) }

func addEchoDot(l *layout) {
	d := l.dev("echo-dot", campaign.CategoryIoT, vendorMAC(l.rng, 0x88, 0x71, 0xe5), linux, runEchoDot)
	// An MSS of 1334 makes the cloud's full segments 1388-byte frames
	// (1322 bytes of payload, 66 of headers with timestamps): the paper's
	// size of Echo Dot's answers.
	avs := l.server("avs-alexa.amazon.example", 20*time.Millisecond, 60*time.Millisecond)
	avs.stack.mss = 1334
	d.servers["avs"] = avs
	cdn := l.server("music.amazon.example", 10*time.Millisecond, 40*time.Millisecond)
	cdn.stack.mss = 1334
	d.servers["cdn"] = cdn
	d.period = 30 * time.Second // paper
	d.size["beatAck"] = l.between(90, 110)
}

// runEchoDot: one TLS connection to the voice cloud with the paper's 95-byte
// heartbeat every 30 s; each spoken request goes up in small chunks and the
// answer comes down in 1388-byte frames the device acknowledges with
// 66-byte ACKs; some answers start music from a CDN.
func runEchoDot(s *sim, d *device, h *home) {
	avs, cdn := d.servers["avs"], d.servers["cdn"]
	t := s.uniform(200*time.Millisecond, 3*time.Second)
	t = s.dnsLookup(t, d.host, h.gw, avs.name, avs.ip)
	s.ntpExchange(t+s.uniform(time.Millisecond, 20*time.Millisecond), d.host, d.servers["ntp"], 4)
	c, t := s.dial(t+s.uniform(time.Millisecond, 10*time.Millisecond), d.host, avs, 443)
	t = c.tlsHandshake(t, 517, s.between(4200, 4800), 80)
	beat := beats{first: t + s.uniform(0, d.period), period: d.period, frac: 0.01, send: func(at time.Duration) time.Duration {
		return c.exchange(at, c.frameTLS(95), c.frameTLS(d.size["beatAck"]), s.uniform(2*time.Millisecond, 10*time.Millisecond))
	}}
	s.beatsAmong(t, beat, t+s.exp(45*time.Second), func(_, at time.Duration) (time.Duration, time.Duration) {
		end := c.sendChunks(at, true, s.appRecords(20, 50, 300, 340), s.uniform(30*time.Millisecond, 40*time.Millisecond))
		free := c.send(end+s.uniform(400*time.Millisecond, 900*time.Millisecond), false, s.tlsStream(s.between(6_000, 30_000)), s.uniform(200*time.Microsecond, 600*time.Microsecond))
		if s.rng.IntN(4) == 0 {
			m := s.dnsLookup(free+s.uniform(50*time.Millisecond, 200*time.Millisecond), d.host, h.gw, cdn.name, cdn.ip)
			mc, m := s.dial(m, d.host, cdn, 443)
			m = mc.tlsHandshake(m, 517, s.between(3500, 4500), 80)
			m = mc.exchange(m, s.tlsRecord(23, s.between(400, 500)), s.tlsRecord(23, s.between(300, 400)), s.uniform(10*time.Millisecond, 40*time.Millisecond))
			// Music in 64 kB pieces a few seconds apart, as a player buffers.
			for range s.between(2, 5) {
				m = mc.send(m+s.uniform(2*time.Second, 5*time.Second), false, s.tlsStream(64*1024), s.uniform(300*time.Microsecond, 800*time.Microsecond))
			}
			mc.close(m+s.uniform(time.Second, 3*time.Second), true)
		}
		return free, free + s.uniform(10*time.Second, 20*time.Second) + s.exp(45*time.Second)
	})
}

func addGoogleHome(l *layout) {
	d := l.dev("google-home", campaign.CategoryIoT, vendorMAC(l.rng, 0xf4, 0xf5, 0xd8), linux, runGoogleHome)
	d.servers["assistant"] = l.server("embeddedassistant.google.example", 15*time.Millisecond, 40*time.Millisecond)
	d.servers["quic"] = l.server("www.google.example", 15*time.Millisecond, 40*time.Millisecond)
	d.period = 60 * time.Second // paper
}

// runGoogleHome: the paper's heartbeat of two TLS packets (135 and 104
// bytes) every 60 s on a TLS connection to the assistant; while a request
// is spoken, streaming results come back as TLS packets of 108 and 105
// bytes; the spoken answer follows; a QUIC ping now and then is its UDP.
func runGoogleHome(s *sim, d *device, h *home) {
	srv, q := d.servers["assistant"], d.servers["quic"]
	t := s.uniform(200*time.Millisecond, 3*time.Second)
	t = s.dnsLookup(t, d.host, h.gw, srv.name, srv.ip)
	c, t := s.dial(t+s.uniform(time.Millisecond, 10*time.Millisecond), d.host, srv, 443)
	t = c.tlsHandshake(t, 517, s.between(3000, 3600), 80)
	qport := s.ephemeral(d.host)
	for p := t + s.exp(5*time.Minute); p < s.dur; p += s.exp(5 * time.Minute) {
		s.udpExchange(p, d.host, q, qport, 443, udpFrame(s, s.between(75, 90)), udpFrame(s, s.between(70, 80)))
	}
	beat := beats{first: t + s.uniform(0, d.period), period: d.period, frac: 0.01, send: func(at time.Duration) time.Duration {
		c.put(at, true, c.frameTLS(135))
		at += s.uniform(200*time.Microsecond, 2*time.Millisecond)
		c.put(at, true, c.frameTLS(104))
		at += srv.rtt
		c.segment(at, false, "A", nil, nil)
		return at
	}}
	s.beatsAmong(t, beat, t+s.exp(45*time.Second), func(_, at time.Duration) (time.Duration, time.Duration) {
		// Audio frames every 100 ms; a streaming result every few of them.
		n := s.between(15, 40)
		for i := range n {
			c.put(at, true, s.tlsRecord(23, s.between(180, 260)))
			if i%3 == 2 {
				c.put(at+srv.rtt, false, c.frameTLS(108))
				c.segment(at+srv.rtt+s.uniform(time.Millisecond, 5*time.Millisecond), true, "A", nil, nil)
			} else if i%3 == 1 {
				c.segment(at+srv.rtt, false, "A", nil, nil)
			}
			at += s.jitter(100*time.Millisecond, 0.1)
		}
		c.put(at+srv.rtt, false, c.frameTLS(105))
		at += srv.rtt + s.uniform(300*time.Millisecond, 700*time.Millisecond)
		free := c.send(at, false, s.tlsStream(s.between(4_000, 20_000)), s.uniform(100*time.Microsecond, 400*time.Microsecond))
		return free, free + s.uniform(10*time.Second, 20*time.Second) + s.exp(45*time.Second)
	})
}

func addTmall(l *layout) {
	d := l.dev("tmall-assistant", campaign.CategoryIoT, vendorMAC(l.rng, 0x18, 0xbc, 0x5a), aliOS, runTmall)
	d.servers["accs"] = l.server("accs.aligenie.example", 30*time.Millisecond, 80*time.Millisecond)
	d.servers["tts"] = l.server("tts.aligenie.example", 30*time.Millisecond, 80*time.Millisecond)
	d.period = l.secs(44, 46)
	d.size["beat"], d.size["beatAck"] = l.between(140, 150), l.between(120, 130)
}

// runTmall: a TLS long connection with a keepalive every 45 s; spoken
// requests go up over it in large chunks, and the answer is an MP3 fetched
// over plain HTTP (the paper's 5.5 % HTTP).
func runTmall(s *sim, d *device, h *home) {
	accs, tts := d.servers["accs"], d.servers["tts"]
	t := s.uniform(time.Second, 5*time.Second)
	t = s.dnsLookup(t, d.host, h.gw, accs.name, accs.ip)
	c, t := s.dial(t, d.host, accs, 443)
	t = c.tlsHandshake(t, 260, s.between(2600, 3000), 60)
	beat := beats{first: t + s.uniform(0, d.period), period: d.period, frac: 0.02, send: func(at time.Duration) time.Duration {
		return c.exchange(at, c.frameTLS(d.size["beat"]), c.frameTLS(d.size["beatAck"]), s.uniform(5*time.Millisecond, 20*time.Millisecond))
	}}
	s.beatsAmong(t, beat, t+s.exp(50*time.Second), func(_, at time.Duration) (time.Duration, time.Duration) {
		end := c.sendChunks(at, true, s.appRecords(6, 15, 1000, 1300), s.uniform(150*time.Millisecond, 250*time.Millisecond))
		end = c.exchange(end+s.uniform(200*time.Millisecond, 500*time.Millisecond), s.tlsRecord(23, 90), s.tlsRecord(23, s.between(500, 900)), s.uniform(50*time.Millisecond, 200*time.Millisecond))
		hc, ht := s.dial(end+s.uniform(10*time.Millisecond, 50*time.Millisecond), d.host, tts, 80)
		get := fmt.Sprintf("GET /tts/%08x.mp3 HTTP/1.1\r\nHost: %s\r\nUser-Agent: AliGenie/3.2\r\n\r\n", s.rng.Uint32(), tts.name)
		n := s.between(10_000, 60_000)
		head := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\nContent-Length: %d\r\n\r\n", n)
		ht = hc.exchange(ht, []byte(get), []byte(head), s.uniform(10*time.Millisecond, 40*time.Millisecond))
		ht = hc.send(ht, false, s.bytes(n), s.uniform(150*time.Microsecond, 500*time.Microsecond))
		hc.close(ht+s.uniform(100*time.Millisecond, time.Second), false)
		return end, ht + s.uniform(10*time.Second, 20*time.Second) + s.exp(50*time.Second)
	})
}

func addXiaomiHub(l *layout) {
	d := l.dev("xiaomi-hub", campaign.CategoryIoT, vendorMAC(l.rng, 0x78, 0x11, 0xdc), rtos, runXiaomiHub)
	d.servers["ot"] = l.server("ot.io.mi.example", 40*time.Millisecond, 90*time.Millisecond)
	d.period = l.secs(20, 22)
}

// runXiaomiHub: the miIO protocol over UDP (the paper's 99.5 % UDP): a
// 32-byte header plus an AES payload in 16-byte blocks; a keepalive every
// 20 s and a report whenever one of its Zigbee sensors fires.
func runXiaomiHub(s *sim, d *device, h *home) {
	ot := d.servers["ot"]
	port := s.ephemeral(d.host)
	miio := func(blocks int) []byte { return s.tagged(32+16*blocks, 0x21, 0x31) }
	t := s.uniform(time.Second, 5*time.Second)
	t = s.dnsLookup(t, d.host, h.gw, ot.name, ot.ip)
	for k := t; k < s.dur; k += s.jitter(d.period, 0.02) {
		s.udpExchange(k, d.host, ot, port, 8053, miio(4), miio(2))
	}
	for e := t + s.exp(70*time.Second); e < s.dur; e += s.exp(70 * time.Second) {
		s.udpExchange(e, d.host, ot, port, 8053, miio(s.between(7, 9)), miio(3))
	}
}

func add360Camera(l *layout) {
	d := l.dev("360-camera", campaign.CategoryIoT, vendorMAC(l.rng, 0xb0, 0x59, 0x47), linux, run360Camera)
	d.servers["relay"] = l.server("relay.jia.360.example", 20*time.Millisecond, 60*time.Millisecond)
	d.period = 500 * time.Millisecond
}

// run360Camera: a UDP session with its relay (the paper's 99.9 % UDP):
// the paper's frequent 224-byte packets twice a second, answered by short
// acknowledgements, and video bursts of fixed-size datagrams on motion.
func run360Camera(s *sim, d *device, h *home) {
	relay := d.servers["relay"]
	port := s.ephemeral(d.host)
	t := s.uniform(500*time.Millisecond, 3*time.Second)
	t = s.dnsLookup(t, d.host, h.gw, relay.name, relay.ip)
	for k, i := t, 0; k < s.dur; k, i = k+s.jitter(d.period, 0.05), i+1 {
		s.udp(k, d.host, relay, port, 7000, udpFrame(s, 224))
		if i%2 == 1 {
			s.udp(k+relay.rtt, relay, d.host, 7000, port, udpFrame(s, 90))
		}
	}
	for m := t + s.exp(80*time.Second); m < s.dur; m += s.uniform(20*time.Second, 40*time.Second) + s.exp(80*time.Second) {
		dur := s.uniform(5*time.Second, 15*time.Second)
		for at := m; at < m+dur; at += s.jitter(40*time.Millisecond, 0.2) {
			s.udp(at, d.host, relay, port, 7000, udpFrame(s, 1114))
			if s.rng.IntN(8) == 0 {
				s.udp(at+relay.rtt, relay, d.host, 7000, port, udpFrame(s, 74))
			}
		}
	}
}

func addXiaobaiCamera(l *layout) {
	d := l.dev("xiaobai-camera", campaign.CategoryIoT, vendorMAC(l.rng, 0x78, 0x11, 0xdc), linux, runXiaobaiCamera)
	d.servers["api"] = l.server("api.io.mi.example", 30*time.Millisecond, 80*time.Millisecond)
	d.servers["upload"] = l.server("upload.camera.mi.example", 30*time.Millisecond, 80*time.Millisecond)
	d.servers["stun"] = l.server("stun.mi.example", 30*time.Millisecond, 80*time.Millisecond)
	d.period = l.secs(28, 32)
	d.size["beat"], d.size["beatAck"] = l.between(160, 180), l.between(110, 125)
}

// runXiaobaiCamera: the TCP camera (a contrast to the 360's UDP): a TLS
// control connection with a keepalive every half minute, a STUN binding
// refresh every 15 s for live view, and on motion a clip uploaded over
// HTTPS, full segments out and ACKs back.
func runXiaobaiCamera(s *sim, d *device, h *home) {
	api, up, stun := d.servers["api"], d.servers["upload"], d.servers["stun"]
	t := s.uniform(time.Second, 4*time.Second)
	t = s.dnsLookup(t, d.host, h.gw, api.name, api.ip)
	s.ntpExchange(t+s.uniform(time.Millisecond, 10*time.Millisecond), d.host, d.servers["ntp"], 4)
	c, t := s.dial(t+s.uniform(10*time.Millisecond, 50*time.Millisecond), d.host, api, 443)
	t = c.tlsHandshake(t, 300, s.between(3300, 3800), 80)
	sport := s.ephemeral(d.host)
	for k := t + s.uniform(0, 15*time.Second); k < s.dur; k += s.jitter(15*time.Second, 0.05) {
		s.udpExchange(k, d.host, stun, sport, 3478, udpFrame(s, 62), udpFrame(s, 74))
	}
	beat := beats{first: t + d.period, period: d.period, frac: 0.02, send: func(at time.Duration) time.Duration {
		return c.exchange(at, c.frameTLS(d.size["beat"]), c.frameTLS(d.size["beatAck"]), s.uniform(5*time.Millisecond, 20*time.Millisecond))
	}}
	s.beatsAmong(t, beat, t+s.exp(100*time.Second), func(_, at time.Duration) (time.Duration, time.Duration) {
		free := c.exchange(at, s.tlsRecord(23, s.between(300, 340)), s.tlsRecord(23, s.between(400, 450)), s.uniform(20*time.Millisecond, 60*time.Millisecond))
		uc, ut := s.dial(free+s.uniform(10*time.Millisecond, 50*time.Millisecond), d.host, up, 443)
		ut = uc.tlsHandshake(ut, 300, s.between(3300, 3800), 80)
		ut = uc.send(ut, true, s.tlsStream(s.between(60_000, 200_000)), s.uniform(2*time.Millisecond, 5*time.Millisecond))
		ut = uc.exchange(ut, s.tlsRecord(23, 60), s.tlsRecord(23, s.between(250, 300)), s.uniform(20*time.Millisecond, 80*time.Millisecond))
		uc.close(ut+s.uniform(100*time.Millisecond, 500*time.Millisecond), true)
		return free, ut + s.uniform(20*time.Second, 40*time.Second) + s.exp(45*time.Second)
	})
}

func addTplinkPlug(l *layout) {
	d := l.dev("tplink-plug", campaign.CategoryIoT, vendorMAC(l.rng, 0x30, 0x20, 0x10), lwip, runTplinkPlug)
	d.servers["cloud"] = l.server("devs.tplinkcloud.example", 40*time.Millisecond, 120*time.Millisecond)
	d.period = l.secs(60, 62)
	d.size["beat"], d.size["beatAck"] = l.between(230, 240), l.between(170, 180)
}

// runTplinkPlug: TLS to the cloud's port 50443 with a keepalive a minute,
// every record acknowledged on its own, so half the packets are TLS (the
// paper's 50.9 %); a switch command now and then.
func runTplinkPlug(s *sim, d *device, h *home) {
	cloud := d.servers["cloud"]
	t := s.uniform(time.Second, 8*time.Second)
	t = s.dnsLookup(t, d.host, h.gw, cloud.name, cloud.ip)
	c, t := s.dial(t, d.host, cloud, 50443)
	t = c.tlsHandshake(t, 180, s.between(2400, 2700), 126)
	rpc := func(at time.Duration, req, resp int) time.Duration {
		c.put(at, true, c.frameTLS(req))
		at += cloud.rtt
		c.segment(at, false, "A", nil, nil)
		at += s.uniform(20*time.Millisecond, 60*time.Millisecond)
		c.put(at, false, c.frameTLS(resp))
		at += s.uniform(time.Millisecond, 20*time.Millisecond)
		c.segment(at, true, "A", nil, nil)
		return at
	}
	beat := beats{first: t + s.uniform(0, d.period), period: d.period, frac: 0.005, send: func(at time.Duration) time.Duration {
		return rpc(at, d.size["beat"], d.size["beatAck"])
	}}
	s.beatsAmong(t, beat, t+s.exp(5*time.Minute), func(due, at time.Duration) (time.Duration, time.Duration) {
		return rpc(at, 310, 265), due + s.exp(5*time.Minute)
	})
}

func addOrviboPlug(l *layout) {
	d := l.dev("orvibo-plug", campaign.CategoryIoT, vendorMAC(l.rng, 0xb4, 0xe6, 0x2d), esp, runOrviboPlug)
	d.servers["cloud"] = l.server("cloud.orvibo.example", 60*time.Millisecond, 150*time.Millisecond)
	d.period = l.secs(30, 34)
}

// runOrviboPlug: plain TCP to port 10001 and the paper's sequence of 224,
// 54 and 240 bytes (its heartbeat: request, the cloud's bare ACK, the
// cloud's answer), repeated every half minute; the device's ACK of the
// answer rides on its next message.
func runOrviboPlug(s *sim, d *device, h *home) {
	cloud := d.servers["cloud"]
	t := s.uniform(time.Second, 8*time.Second)
	t = s.dnsLookup(t, d.host, h.gw, cloud.name, cloud.ip)
	c, t := s.dial(t, d.host, cloud, 10001)
	beat := t + s.uniform(0, d.period)
	for ; beat < s.dur; beat += s.jitter(d.period, 0.01) {
		c.put(beat, true, s.bytes(224-54))
		at := beat + cloud.rtt
		c.segment(at, false, "A", nil, nil)
		c.put(at+s.uniform(200*time.Millisecond, 1500*time.Millisecond), false, s.bytes(240-54))
	}
}

func addBroadlinkPlug(l *layout) {
	d := l.dev("broadlink-plug", campaign.CategoryIoT, vendorMAC(l.rng, 0x78, 0x0f, 0x77), esp, runBroadlinkPlug)
	d.servers["cloud"] = l.server("cloud.broadlink.example", 60*time.Millisecond, 150*time.Millisecond)
	d.period = l.secs(40, 44)
}

// runBroadlinkPlug: UDP to port 16384 (the paper's 99.7 % UDP): 56-byte
// header plus AES payload in 16-byte blocks, a keepalive every 40 s and an
// energy report every three minutes.
func runBroadlinkPlug(s *sim, d *device, h *home) {
	cloud := d.servers["cloud"]
	port := s.ephemeral(d.host)
	bl := func(blocks int) []byte { return s.tagged(56+16*blocks, 0x5a, 0xa5) }
	t := s.uniform(time.Second, 8*time.Second)
	t = s.dnsLookup(t, d.host, h.gw, cloud.name, cloud.ip)
	for k := t + s.uniform(0, d.period); k < s.dur; k += s.jitter(d.period, 0.01) {
		s.udpExchange(k, d.host, cloud, port, 16384, bl(2), bl(1))
	}
	for r := t + s.uniform(0, 3*time.Minute); r < s.dur; r += s.jitter(3*time.Minute, 0.02) {
		s.udpExchange(r, d.host, cloud, port, 16384, bl(5), bl(1))
	}
}

func addMituStory(l *layout) {
	d := l.dev("mitu-story", campaign.CategoryIoT, vendorMAC(l.rng, 0x28, 0x6c, 0x07), esp, runMituStory)
	d.servers["api"] = l.server("api.mitu.example", 30*time.Millisecond, 90*time.Millisecond)
	d.servers["media"] = l.server("media.mitu-cdn.example", 10*time.Millisecond, 50*time.Millisecond)
	d.period = l.secs(58, 62)
	d.size["beat"] = l.between(120, 135)
}

// runMituStory: an interactive story machine: a TLS keepalive a minute and,
// whenever a child presses a button, a story streamed over plain HTTP at
// its playback rate (8 kB pieces every second or so) for up to a few
// minutes.
func runMituStory(s *sim, d *device, h *home) {
	api, media := d.servers["api"], d.servers["media"]
	t := s.uniform(time.Second, 5*time.Second)
	t = s.dnsLookup(t, d.host, h.gw, api.name, api.ip)
	c, t := s.dial(t, d.host, api, 443)
	t = c.tlsHandshake(t, 220, s.between(2800, 3200), 75)
	for b := t + s.uniform(0, d.period); b < s.dur; b += s.jitter(d.period, 0.02) {
		c.exchange(b, c.frameTLS(d.size["beat"]), c.frameTLS(d.size["beat"]-16), s.uniform(5*time.Millisecond, 20*time.Millisecond))
	}
	for p := t + s.exp(2*time.Minute); p < s.dur; {
		at := s.dnsLookup(p, d.host, h.gw, media.name, media.ip)
		mc, at := s.dial(at, d.host, media, 80)
		get := fmt.Sprintf("GET /story/%05d.mp3 HTTP/1.1\r\nHost: %s\r\nRange: bytes=0-\r\n\r\n", s.between(1, 99999), media.name)
		at = mc.exchange(at, []byte(get), []byte("HTTP/1.1 206 Partial Content\r\nContent-Type: audio/mpeg\r\n\r\n"), s.uniform(10*time.Millisecond, 40*time.Millisecond))
		pieces := s.between(30, 150)
		for range pieces {
			at = mc.send(at+s.jitter(time.Second, 0.1), false, s.bytes(8192), s.uniform(200*time.Microsecond, 600*time.Microsecond))
		}
		mc.close(at+s.uniform(100*time.Millisecond, time.Second), true)
		p = at + s.uniform(10*time.Second, 30*time.Second) + s.exp(2*time.Minute)
	}
}

func addTablet(l *layout) {
	d := l.dev("tablet", campaign.CategoryNonIoT, randomMAC(l.rng), android, runTablet)
	d.servers["video"] = l.server("video.stream.example", 8*time.Millisecond, 40*time.Millisecond)
	d.servers["api"] = l.server("api.video.example", 20*time.Millisecond, 60*time.Millisecond)
	d.servers["push"] = l.server("push.tablet-os.example", 20*time.Millisecond, 60*time.Millisecond)
	d.period = l.secs(240, 300)
}

// runTablet: the other non-IoT background: a push connection, and spells of
// video watching, each a segment fetched every few seconds over HTTPS and an
// API call now and then.
func runTablet(s *sim, d *device, h *home) {
	video, api := d.servers["video"], d.servers["api"]
	pushChannel(s, d, h, d.servers["push"])
	for a := s.exp(2 * time.Minute); a < s.dur; {
		spell := s.uniform(30*time.Second, 3*time.Minute)
		at := s.dnsLookup(a, d.host, h.gw, video.name, video.ip)
		vc, at := s.dial(at, d.host, video, 443)
		at = vc.tlsHandshake(at, 517, s.between(3500, 5000), 80)
		for at < a+spell && at < s.dur {
			at = vc.exchange(at, s.tlsRecord(23, s.between(400, 600)), s.tlsRecord(23, s.between(300, 500)), s.uniform(5*time.Millisecond, 30*time.Millisecond))
			at = vc.send(at, false, s.tlsStream(s.between(40_000, 120_000)), s.uniform(40*time.Microsecond, 120*time.Microsecond))
			if s.rng.IntN(5) == 0 {
				ac, at2 := s.dial(at+s.uniform(10*time.Millisecond, 100*time.Millisecond), d.host, api, 443)
				at2 = ac.tlsHandshake(at2, 517, s.between(2500, 4000), 80)
				at2 = ac.exchange(at2, s.tlsRecord(23, s.between(300, 900)), s.tlsRecord(23, s.between(500, 3000)), s.uniform(20*time.Millisecond, 100*time.Millisecond))
				ac.close(at2+s.uniform(time.Second, 10*time.Second), true)
			}
			at += s.uniform(3*time.Second, 6*time.Second)
		}
		vc.close(at+s.uniform(time.Second, 5*time.Second), true)
		a = at + s.exp(2*time.Minute)
	}
}
