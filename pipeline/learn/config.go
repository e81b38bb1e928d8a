// Package learn trains and applies HomeMole's per-packet device classifier:
// the LSTM / BLSTM of the paper's Table 3 over traffic windows
// (schemas.Window), built on gotch (libtorch).
//
// Building it needs the patched gotch copy: run `go run ./tools/gotchsetup`
// (or `go tool task setup`) once; it writes the go.work that points the
// build at .build/gotch.
package learn

import (
	"fmt"
	"math"

	"github.com/homemole/homemole/internal/fieldcheck"
)

// Config holds the model's shape and the training schedule. The defaults are
// the paper's (Table 3) with the bidirectional variant, its best model.
type Config struct {
	Bidirectional bool    // BLSTM when true, LSTM otherwise
	Hidden        int     // LSTM hidden size per direction
	EmbedDim      int     // destination-port embedding size
	Dropout       float64 // on the LSTM outputs, training only
	LR            float64 // Adam learning rate
	Epochs        int
	BatchSize     int // windows per optimisation step
	MaxPorts      int // most frequent training ports that get their own embedding
	// LenEmbedDim adds an embedding of the exact frame length beside the
	// normalised one, over the MaxLens most frequent training lengths;
	// 0 gives the paper's model exactly.
	LenEmbedDim int
	MaxLens     int
	Seed        int64
	// HeaderFeatures adds TTL, TCP window, options length, payload length,
	// TCP flags and transport to the paper's inputs; false gives the
	// paper's inputs.
	HeaderFeatures bool
	// Context ContextStream gives each packet's output layer, beside its
	// own LSTM state, which kinds of packet (direction, exact frame
	// length) the stream it was cut from holds: one device's packets in
	// one capture session (kind ind), or the session's merged stream
	// (kind noise). Devices of one vendor share most of their traffic (a
	// firmware download, DNS, NTP) and differ in a few messages: one TLS
	// record, a DHCP request with a longer hostname, an announcement that
	// one of them never sends. A window rarely holds those; the stream
	// does. "" or ContextNone gives the paper's output layer.
	Context string
	// Balance weighs each class in the loss by its inverse share of the
	// training packets, so rare devices count as much as chatty ones.
	Balance bool
	// PortSessions keeps a destination port out of the embedding's
	// vocabulary unless it appears in at least this many training capture
	// sessions (window groups): an ephemeral port, or one server's port in
	// one session, would otherwise get a row that names that session, which
	// a later capture of the same device never reproduces. 0 or 1: every
	// port seen twice, as before.
	PortSessions int
	// LabelSmoothing spreads this share of each packet's target over the
	// other classes (0: none), so the model is less sure of the siblings
	// it cannot tell apart and a session's summed log-probabilities are not
	// swung by a few overconfident packets.
	LabelSmoothing float64
	// Threads sets libtorch's intra-op thread count (process-wide) when > 0;
	// 0 leaves libtorch's default.
	Threads int
	// Parallel is how Threads > 1 are used on the CPU: ParallelIntraOp
	// ("" too) or ParallelData. Not part of the model.
	Parallel string `json:"-"`
	// Device is where training runs: cpu, cuda, cuda:N, or auto ("" too:
	// the first GPU when libtorch sees one). Not part of the model: a
	// checkpoint loads on whichever device its user asks for.
	Device string `json:"-"`
}

// Context values.
const (
	ContextNone   = "none"
	ContextStream = "stream"
)

// DefaultConfig returns the paper's settings: BLSTM, hidden 64, port
// embedding 30, dropout 0.5, Adam at 0.001, 15 epochs.
func DefaultConfig() Config {
	return Config{
		Bidirectional: true,
		Hidden:        64,
		EmbedDim:      30,
		Dropout:       0.5,
		LR:            0.001,
		Epochs:        15,
		BatchSize:     64,
		MaxPorts:      512,
		LenEmbedDim:   16,
		MaxLens:       512,
		Seed:          1,
		Balance:       true,
		Context:       ContextStream,
	}
}

// Validate reports every field that cannot produce a model, not only the
// first one, so a bad configuration is fixed in one go.
func (c Config) Validate() error {
	var errs fieldcheck.Errors
	errs.Positive("Hidden", c.Hidden)
	errs.Positive("EmbedDim", c.EmbedDim)
	if math.IsNaN(c.Dropout) || c.Dropout < 0 || c.Dropout >= 1 {
		errs.Bad("Dropout", c.Dropout, "in [0, 1)")
	}
	if math.IsNaN(c.LR) || math.IsInf(c.LR, 0) || c.LR <= 0 {
		errs.Bad("LR", c.LR, "a finite number > 0")
	}
	errs.Positive("Epochs", c.Epochs)
	errs.Positive("BatchSize", c.BatchSize)
	errs.Positive("MaxPorts", c.MaxPorts)
	errs.NotNegative("PortSessions", c.PortSessions)
	if math.IsNaN(c.LabelSmoothing) || c.LabelSmoothing < 0 || c.LabelSmoothing >= 1 {
		errs.Bad("LabelSmoothing", c.LabelSmoothing, "in [0, 1)")
	}
	if c.LenEmbedDim < 0 {
		errs.Bad("LenEmbedDim", c.LenEmbedDim, ">= 0 (0 = no frame-length embedding, the paper's model)")
	}
	if (c.LenEmbedDim > 0 || c.Context == ContextStream) && c.MaxLens <= 0 {
		errs.Bad("MaxLens", c.MaxLens, "> 0 when LenEmbedDim > 0 or Context is stream (both read the frame-length vocabulary)")
	}
	switch c.Context {
	case "", ContextNone, ContextStream:
	default:
		errs.Bad("Context", fmt.Sprintf("%q", c.Context), fmt.Sprintf("%q or %q", ContextNone, ContextStream))
	}
	if err := CheckDevice(c.Device); err != nil {
		errs.Failed("Device", err)
	}
	switch c.Parallel {
	case "", ParallelIntraOp, ParallelData:
	default:
		errs.Bad("Parallel", fmt.Sprintf("%q", c.Parallel), fmt.Sprintf("%q or %q", ParallelIntraOp, ParallelData))
	}
	if c.Threads < 0 {
		errs.Bad("Threads", c.Threads, ">= 0 (0 = libtorch's default)")
	}
	return errs.Err("learn: invalid config")
}
