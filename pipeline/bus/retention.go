package bus

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/homemole/homemole/pipeline/campaign"
)

// Retention bounds what each stream keeps: JetStream removes messages older
// than MaxAge, and past MaxBytes refuses new ones (rather than drop old ones
// no worker has read yet): capture agents then keep their batches in their
// spool until the workers catch up or the limit is raised. Zero values set
// no limit, and a worker that sets none leaves the streams' limits as they
// are (capture agents may not change streams).
type Retention struct {
	MaxAge   time.Duration
	MaxBytes int64
	// WarnAt is the share of a limit past which the worker warns (default
	// 0.8), every CheckEvery (default 1 min).
	WarnAt     float64
	CheckEvery time.Duration
}

func (r Retention) set() bool { return r.MaxAge > 0 || r.MaxBytes > 0 }

// Env variables that override a campaign's retention.
const (
	EnvStreamMaxAge   = "HOMEMOLE_STREAM_MAX_AGE"
	EnvStreamMaxBytes = "HOMEMOLE_STREAM_MAX_BYTES"
)

// checkMaxAge holds a stream max age d, given as input (the campaign's
// retention.max_age, HOMEMOLE_STREAM_MAX_AGE or --stream-max-age, with the
// value), to the campaign's rule, campaign.Retention.Validate: at least 1h,
// or 0 for no limit; zero says what 0 means for that input. JetStream
// itself refuses a negative max age, or one shorter than the streams'
// duplicates window (1h by default), only when the streams are declared,
// with an error that names neither the input nor the fix.
func checkMaxAge(input string, d time.Duration, zero string) error {
	if (campaign.Retention{MaxAge: d}).Validate() == nil {
		return nil
	}
	return fmt.Errorf("%s: want at least 1h, such as 720h, or %s: a stream must keep traffic longer than a worker may be down", input, zero)
}

// RetentionFromEnv reads the retention the environment sets over r (its
// own values come from the campaign); parseBytes reads sizes such as 50GiB.
// HOMEMOLE_STREAM_MAX_AGE=0 removes the campaign's age limit.
func RetentionFromEnv(r Retention, parseBytes func(string) (int64, error)) (Retention, error) {
	if v := os.Getenv(EnvStreamMaxAge); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return r, fmt.Errorf("%s=%q: want a duration of at least 1h such as 720h, or 0 for no limit", EnvStreamMaxAge, v)
		}
		if err := checkMaxAge(fmt.Sprintf("%s=%q", EnvStreamMaxAge, v), d, "0 for no limit"); err != nil {
			return r, err
		}
		r.MaxAge = d
	}
	if v := os.Getenv(EnvStreamMaxBytes); v != "" {
		n, err := parseBytes(v)
		if err != nil {
			return r, fmt.Errorf("%s: %w", EnvStreamMaxBytes, err)
		}
		r.MaxBytes = n
	}
	return r, nil
}

// apply sets the limits on a stream's configuration.
func (r Retention) apply(sc *jetstream.StreamConfig) {
	if !r.set() {
		return
	}
	sc.MaxAge, sc.MaxBytes = r.MaxAge, r.MaxBytes
	if sc.MaxBytes == 0 {
		sc.MaxBytes = -1
	}
	sc.Discard = jetstream.DiscardNew
}

// satisfied reports whether a stream already has the limits asked for.
func (r Retention) satisfied(have jetstream.StreamConfig) bool {
	if !r.set() {
		return true
	}
	want := jetstream.StreamConfig{}
	r.apply(&want)
	return have.MaxAge == want.MaxAge && have.MaxBytes == want.MaxBytes && have.Discard == want.Discard
}

// RetentionWarnings says which limits of a stream are nearly reached: its
// bytes past warnAt of MaxBytes, or its oldest message past warnAt of
// MaxAge (JetStream will soon remove it, read or not).
func RetentionWarnings(info *jetstream.StreamInfo, warnAt float64, now time.Time) []string {
	var out []string
	cfg, st := info.Config, info.State
	if cfg.MaxBytes > 0 && float64(st.Bytes) >= warnAt*float64(cfg.MaxBytes) {
		out = append(out, fmt.Sprintf("stream %s holds %d of its %d bytes (%.0f%%): past them it refuses new batches and agents spool; raise its max bytes (%s) or let the workers catch up",
			cfg.Name, st.Bytes, cfg.MaxBytes, 100*float64(st.Bytes)/float64(cfg.MaxBytes), EnvStreamMaxBytes))
	}
	if cfg.MaxAge > 0 && st.Msgs > 0 && !st.FirstTime.IsZero() {
		if age := now.Sub(st.FirstTime); float64(age) >= warnAt*float64(cfg.MaxAge) {
			out = append(out, fmt.Sprintf("stream %s: its oldest message is %s old, and messages older than %s are removed whether read or not; raise its max age (%s) if a worker lags",
				cfg.Name, age.Round(time.Second), cfg.MaxAge, EnvStreamMaxAge))
		}
	}
	return out
}

// watchRetention warns while a stream's limits are nearly reached.
func (c *Conn) watchRetention(r Retention) {
	if r.WarnAt == 0 {
		r.WarnAt = 0.8
	}
	if r.CheckEvery == 0 {
		r.CheckEvery = time.Minute
	}
	t := time.NewTicker(r.CheckEvery)
	defer t.Stop()
	for {
		select {
		case <-c.closed:
			return
		case <-t.C:
		}
		for _, name := range streamNames {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			s, err := c.JS.Stream(ctx, name)
			var info *jetstream.StreamInfo
			if err == nil {
				info, err = s.Info(ctx)
			}
			cancel()
			if err != nil {
				continue // the connection's own handlers report outages
			}
			for _, w := range RetentionWarnings(info, r.WarnAt, time.Now()) {
				c.log.Warn("stream retention nearly reached", "stream", name, "detail", w)
			}
		}
	}
}

// RetentionFlags registers --stream-max-age and --stream-max-bytes on fs.
// The function it returns resolves a worker's retention: its flags over
// the environment (EnvStreamMaxAge, EnvStreamMaxBytes) over the campaign's.
func RetentionFlags(fs *flag.FlagSet) func(campaign.Retention) (Retention, error) {
	age := fs.Duration("stream-max-age", 0, "remove stream messages older than this, read or not; at least 1h (e.g. 720h); 0 takes "+EnvStreamMaxAge+", else the campaign's retention.max_age")
	size := fs.String("stream-max-bytes", "", "the most bytes each stream keeps; past it the stream refuses new batches and agents spool (e.g. 50GiB); empty takes "+EnvStreamMaxBytes+", else the campaign's retention.max_bytes")
	return func(c campaign.Retention) (Retention, error) {
		if err := checkMaxAge(fmt.Sprintf("campaign retention.max_age %s", c.MaxAge), c.MaxAge, "leave it out for no limit"); err != nil {
			return Retention{}, err
		}
		r := Retention{MaxAge: c.MaxAge}
		n, err := c.Bytes()
		if err != nil {
			return r, fmt.Errorf("campaign retention.max_bytes: %w", err)
		}
		r.MaxBytes = n
		if r, err = RetentionFromEnv(r, campaign.ParseBytes); err != nil {
			return r, err
		}
		if *age != 0 {
			if err := checkMaxAge(fmt.Sprintf("--stream-max-age %s", *age), *age, "leave it out for "+EnvStreamMaxAge+", else the campaign's retention.max_age"); err != nil {
				return r, err
			}
			r.MaxAge = *age
		}
		if *size != "" {
			if r.MaxBytes, err = campaign.ParseBytes(*size); err != nil {
				return r, fmt.Errorf("--stream-max-bytes: %w", err)
			}
		}
		return r, nil
	}
}
