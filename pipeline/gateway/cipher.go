package gateway

import (
	"fmt"
	"strings"
)

// Cipher is a VPN's data-channel configuration: an OpenVPN cipher, or
// WireGuard's one fixed construction. It fixes how much bigger a packet
// gets when it is tunnelled.
type Cipher string

// The ciphers whose overhead the emulator and the pairing know.
const (
	AES256GCM Cipher = "aes-256-gcm"
	// AES256CBC is AES-256-CBC with HMAC-SHA1 authentication (OpenVPN's
	// "--cipher AES-256-CBC --auth SHA1").
	AES256CBC Cipher = "aes-256-cbc"
	// WireGuard is a WireGuard tunnel's transport data message.
	WireGuard Cipher = "wireguard"
)

// Ciphers lists the known ciphers, in the order auto-detection tries them.
var Ciphers = []Cipher{AES256GCM, AES256CBC, WireGuard}

// ParseCipher accepts a cipher name in any case.
func ParseCipher(s string) (Cipher, error) {
	c := Cipher(strings.ToLower(strings.TrimSpace(s)))
	for _, k := range Ciphers {
		if c == k {
			return c, nil
		}
	}
	return "", fmt.Errorf("cipher %q: want %s, %s or %s", s, AES256GCM, AES256CBC, WireGuard)
}

// Overhead sizes of OpenVPN's data channel, per packet.
const (
	opcodeLen   = 1  // opcode (5 bits) and key id (3 bits)
	peerIDLen   = 3  // P_DATA_V2 peer id
	packetIDLen = 4  // replay-protection counter
	gcmTagLen   = 16 // AES-GCM authentication tag
	hmacSHA1Len = 20
	aesBlock    = 16 // AES block, also the CBC IV length
)

// OuterUDPOverhead is what the outer IPv4 and UDP headers add to the
// OpenVPN payload.
const OuterUDPOverhead = 20 + 8

// PayloadSize is the UDP payload length OpenVPN sends for an inner IP packet
// of inner bytes (its IP total length):
//
//   - AES-256-GCM: opcode/key id 1 + peer id 3 + packet id 4 + tag 16 +
//     inner, i.e. inner + 24. The packet id travels in the clear as the
//     AEAD nonce's tail, and GCM is a stream mode, so there is no padding.
//
//   - AES-256-CBC + HMAC-SHA1: opcode/key id 1 + peer id 3 + HMAC 20 +
//     IV 16 + CBC(packet id 4 + inner), the plaintext padded to whole
//     16-byte blocks with PKCS#7, which always adds 1 to 16 bytes. So 16
//     inner sizes share one outer size, and the outer size minus 40 is a
//     multiple of 16. OpenVPN 2.6 in client-server mode sends P_DATA_V2,
//     with the peer id, for CBC too: the real gateway lab
//     (tools/gatewaylab) found every CBC packet 3 bytes longer than the
//     formula without it.
//
//   - WireGuard: a transport data message, type 4 with three reserved
//     bytes, the receiver's index 4 and a counter 8 in the clear, then the
//     ChaCha20-Poly1305 ciphertext of the inner packet zero-padded to a
//     multiple of 16 bytes, and the tag 16: 32 + inner rounded up to 16.
//     A keepalive is the message of an empty packet, 32 bytes.
//
// It returns 0 for an unknown cipher.
func PayloadSize(c Cipher, inner int) int {
	switch c {
	case AES256GCM:
		return opcodeLen + peerIDLen + packetIDLen + gcmTagLen + inner
	case AES256CBC:
		plain := packetIDLen + inner
		padded := (plain/aesBlock + 1) * aesBlock
		return opcodeLen + peerIDLen + hmacSHA1Len + aesBlock + padded
	case WireGuard:
		return WireGuardHeaderLen + (inner+15)/16*16 + poly1305TagLen
	}
	return 0
}

// WireGuard's transport data message.
const (
	// WireGuardHeaderLen: type (4) and 3 reserved bytes, the receiver
	// index, the 64-bit little-endian counter.
	WireGuardHeaderLen = 16
	poly1305TagLen     = 16
	// WireGuardData is the message type of transport data.
	WireGuardData = 4
	// WireGuardPort is WireGuard's customary listening port.
	WireGuardPort = 51820
)
